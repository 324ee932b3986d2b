//! Our own HTTP/1.1, on both sides of the proxy: the client connection (server.rs) and the
//! connection to a server (client.rs), with pure, strict framing rules (head.rs, chunked.rs).
//!
//! Why not hyper here (it stays for HTTP/2): a client connection is one task that drives its
//! upstream exchange itself, reads a body only as fast as the server takes it, holds no buffer
//! while idle, and knows exactly which bytes reached the server. RFC 9112 §6 and §7 are
//! applied strictly (see head.rs): a message whose framing two parsers could read differently
//! is refused, never forwarded.

pub mod chunked;
pub mod client;
pub mod head;
pub mod request_body;
pub mod server;

/// The line that starts a chunk of `len` bytes (RFC 9112 §7.1): the size in hex, CRLF.
pub fn write_chunk_header(out: &mut Vec<u8>, len: usize) {
    use std::io::Write;
    let _ = write!(out, "{len:x}\r\n");
}

/// The last chunk and the end of a chunked body, without trailers (RFC 9112 §7.1).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
