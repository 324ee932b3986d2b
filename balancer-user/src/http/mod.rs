//! HTTP syntax, pure (no I/O): the one home of the rules that the proxy, the header policy,
//! sticky sessions, health checks and config validation share, so they cannot drift apart.
//! Each concern is one module; none depends on the rest of the crate.

pub mod authority;
pub mod conditional;
pub mod connection;
pub mod date;
pub mod field_value;
pub mod hop_by_hop;
pub mod percent;
pub mod set_cookie;
pub mod token;
