//! Bodies held by the proxy so that slow clients cost the proxy, not the server: requests
//! read whole before a server is chosen (`request.rs`), responses read as fast as the server
//! sends them while the client takes its time (`response.rs`), both in memory up to a limit
//! and then in unlinked temporary files (`spool.rs`).

pub mod request;
pub mod response;
pub mod spool;
