//! Header policy, pure (no I/O): which forwarded headers to trust and what to tell the server
//! (`trust`, `forwarded`, `hygiene`), and how to make the server's answer point at the public
//! URL (`rewrite`). The proxy applies them as request and response phases (proxy/handler.rs).

pub mod compression;
pub mod edits;
pub mod forwarded;
pub mod hygiene;
pub mod request_id;
pub mod rewrite;
pub mod trust;
