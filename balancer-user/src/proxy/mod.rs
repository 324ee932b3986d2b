//! The L7 reverse proxy: listeners (plain and TLS), routing, pools of servers, forwarding,
//! WebSocket tunnels, errors and access logs. A request passes explicit phases (accept → route
//! → request filters → pick server → forward → response filters → log); header trust, rewriting
//! and sticky sessions slot in as phases.

pub mod balance;
pub mod route;
pub mod static_files;
pub mod tls;
pub mod upstream;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Any error a body or a phase can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response the proxy builds or forwards.
pub type Body = BoxBody<Bytes, BoxError>;
