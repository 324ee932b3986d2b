//! The engine's pure HTTP/1.1 framing modules, compiled from their place in balancer-user so
//! the fuzz targets test exactly the code the proxy runs, without building the proxy itself.

#[path = "../../balancer-user/src/proxy/h1/head.rs"]
pub mod head;

#[path = "../../balancer-user/src/proxy/h1/chunked.rs"]
pub mod chunked;

#[path = "../../balancer-user/src/proxy/h1/spare_maps.rs"]
pub mod spare_maps;

/// The pure helpers the framing modules take from balancer-user's `http` module, at the same
/// paths (`crate::http::…`) as there: tokens, and which response fields are hop-by-hop.
pub mod http {
    pub use super::{connection, hop_by_hop, token};
}

#[path = "../../balancer-user/src/http/connection.rs"]
pub mod connection;

#[path = "../../balancer-user/src/http/hop_by_hop.rs"]
pub mod hop_by_hop;

#[path = "../../balancer-user/src/http/token.rs"]
pub mod token;

use head::HeadLimits;

/// Head limits chosen by a byte of the fuzz input, so the limit checks run as often as the
/// parsing: small ones that short inputs can exceed, ordinary ones, and more header slots than
/// head.rs keeps on the stack (its heap path).
pub fn limits(selector: u8) -> HeadLimits {
    const LIMITS: [HeadLimits; 3] = [
        HeadLimits {
            max_head_bytes: 128,
            max_headers: 4,
            max_uri_bytes: 32,
        },
        HeadLimits {
            max_head_bytes: 4096,
            max_headers: 32,
            max_uri_bytes: 1024,
        },
        HeadLimits {
            max_head_bytes: 8192,
            max_headers: 200,
            max_uri_bytes: 8192,
        },
    ];
    LIMITS[usize::from(selector) % LIMITS.len()]
}
