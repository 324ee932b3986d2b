//! Our own HTTP/1.1: the pure, strict framing rules (head.rs, chunked.rs) and the request body
//! abstraction (request_body.rs) both sides use. The connections that drive them are the
//! client's (`proxy::h1_server`) and the server's (`proxy::upstream::client`); this module
//! depends on neither, so the protocol rules stay a leaf the rest of the proxy builds on.
//!
//! Why not hyper here (it stays for HTTP/2): a client connection is one task that drives its
//! upstream exchange itself, reads a body only as fast as the server takes it, holds no buffer
//! while idle, and knows exactly which bytes reached the server. RFC 9112 §6 and §7 are
//! applied strictly (see head.rs): a message whose framing two parsers could read differently
//! is refused, never forwarded.

pub mod chunked;
pub mod head;
pub mod request_body;
pub mod spare_maps;

/// A value handed from one phase to another through response extensions, which must be
/// `Clone`: shared, and taken once (a server's connection after its 101, a pending tunnel).
pub struct TakeOnce<T>(std::sync::Arc<std::sync::Mutex<Option<T>>>);

impl<T> TakeOnce<T> {
    pub fn new(value: T) -> TakeOnce<T> {
        TakeOnce(std::sync::Arc::new(std::sync::Mutex::new(Some(value))))
    }

    pub fn take(&self) -> Option<T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl<T> Clone for TakeOnce<T> {
    fn clone(&self) -> Self {
        TakeOnce(self.0.clone())
    }
}
