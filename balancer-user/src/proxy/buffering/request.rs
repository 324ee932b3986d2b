//! The request body on its way to a server: read from the client before a server is chosen,
//! whole (`request_buffering`, the default) or its first part (a read-ahead), then sent from
//! memory or a temporary file, and the rest, if any, streamed.
//!
//! Buffered whole, a slow upload holds no server's worker: gunicorn's and mod_wsgi's sync
//! workers would otherwise wait for every byte of it (gunicorn's docs ask for a buffering proxy
//! in front for exactly this). A malformed, oversized or stalled body is answered by the proxy
//! and never reaches a server, and the body can be sent again on a retry.

use std::{path::Path, time::Duration};

use bytes::Bytes;
use futures_util::FutureExt;
use hyper::http::HeaderMap;

use super::spool::{Cursor, Spool};
use crate::proxy::h1::request_body::{BodyError, BodyLength, RequestBody};

/// A client's request body with what was read of it ahead.
pub struct ForwardBody<B> {
    client: B,
    spool: Spool,
    cursor: Cursor,
    /// The spool holds the whole body: the client has nothing more to send.
    whole: bool,
    /// Data past the spool was handed out: the body cannot be sent again.
    streamed: bool,
}

impl<B: RequestBody> ForwardBody<B> {
    pub fn new(client: B) -> ForwardBody<B> {
        ForwardBody {
            client,
            spool: Spool::new(0),
            cursor: Cursor::default(),
            whole: false,
            streamed: false,
        }
    }

    /// Reads the whole body from the client: `memory` bytes in memory, the rest in a temporary
    /// file in `dir`. The client's limit (`max_body_size`) and gap timeout apply as it is read.
    pub async fn buffer_whole(&mut self, memory: usize, dir: &Path) -> Result<(), BodyError> {
        self.spool = Spool::new(memory);
        loop {
            match self.client.next_data().await {
                Some(Ok(data)) => self
                    .spool
                    .push(data, dir)
                    .map_err(|err| BodyError::Spool(err.to_string()))?,
                Some(Err(err)) => return Err(err),
                None => break,
            }
        }
        self.whole = true;
        Ok(())
    }

    /// Takes up to about `up_to` bytes of what the client has sent already, without waiting
    /// for more: a body that came whole with its head (most do) is then whole here (sent with
    /// its length, checked before any server sees it, and replayable); the rest of a longer or
    /// slower one is streamed to the server as it comes (`request_buffering = false`).
    pub fn read_ahead(&mut self, up_to: usize) -> Result<(), BodyError> {
        self.spool = Spool::new(usize::MAX);
        while self.spool.in_memory() < up_to {
            // Polled once: reading from a socket is cancel-safe, and what is not there yet is
            // the server's to wait for.
            let Some(next) = self.client.next_data().now_or_never() else {
                break;
            };
            match next {
                Some(Ok(data)) => self
                    .spool
                    .push(data, Path::new("/"))
                    .map_err(|err| BodyError::Spool(err.to_string()))?,
                Some(Err(err)) => return Err(err),
                None => {
                    self.whole = true;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Bytes held for the server (memory and file).
    #[cfg(test)]
    pub fn buffered(&self) -> u64 {
        self.spool.len()
    }

    /// Whether part of the body is in a temporary file.
    #[cfg(test)]
    pub fn spilled(&self) -> bool {
        self.spool.spilled()
    }
}

impl<B: RequestBody> RequestBody for ForwardBody<B> {
    fn length(&self) -> BodyLength {
        if self.whole {
            return BodyLength::Exact(self.spool.len());
        }
        match self.client.length() {
            BodyLength::Exact(rest) => BodyLength::Exact(self.spool.len() + rest),
            BodyLength::Unknown => BodyLength::Unknown,
        }
    }

    async fn next_data(&mut self) -> Option<Result<Bytes, BodyError>> {
        match self.spool.read(&mut self.cursor) {
            Ok(Some(data)) => return Some(Ok(data)),
            Ok(None) => {}
            Err(err) => return Some(Err(BodyError::Spool(err.to_string()))),
        }
        if self.whole {
            return None;
        }
        self.streamed = true;
        self.client.next_data().await
    }

    fn limit(&mut self, limit: u64) -> Result<(), BodyError> {
        self.client.limit(limit)
    }

    fn gap_timeout(&mut self, gap: Duration) {
        self.client.gap_timeout(gap);
    }

    /// Until data past what was read ahead went out: the read-ahead part is kept, and the
    /// client's stream is untouched beyond it.
    fn replayable(&self) -> bool {
        self.whole || !self.streamed
    }

    fn rewind(&mut self) {
        self.cursor = Cursor::default();
    }

    async fn informational(&mut self, status: u16, headers: &HeaderMap) {
        self.client.informational(status, headers).await;
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;
    use crate::proxy::{BoxError, h1::request_body::BoxedBody};

    fn streamed(pieces: &[&'static [u8]]) -> BoxedBody {
        let frames = pieces
            .iter()
            .map(|piece| Ok::<_, BoxError>(hyper::body::Frame::data(Bytes::from_static(piece))))
            .collect::<Vec<_>>();
        BoxedBody::new(StreamBody::new(futures_util::stream::iter(frames)).boxed())
    }

    async fn drain<B: RequestBody>(body: &mut B) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(piece) = body.next_data().await {
            out.extend_from_slice(&piece.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_buffered_body_has_its_length_and_can_be_sent_twice() {
        let dir = std::env::temp_dir();
        let mut body = ForwardBody::new(streamed(&[b"abc", b"defgh", b"ij"]));
        assert_eq!(body.length(), BodyLength::Unknown);
        body.buffer_whole(4, &dir).await.unwrap();
        assert!(body.spilled());
        assert_eq!(body.length(), BodyLength::Exact(10));
        assert_eq!(drain(&mut body).await, b"abcdefghij");
        assert!(body.replayable());
        body.rewind();
        assert_eq!(drain(&mut body).await, b"abcdefghij");
    }

    #[tokio::test]
    async fn a_read_ahead_streams_the_rest_and_then_cannot_be_replayed() {
        let mut body = ForwardBody::new(streamed(&[b"abc", b"def", b"ghi"]));
        body.read_ahead(4).unwrap();
        assert_eq!(body.buffered(), 6);
        assert!(body.replayable());
        assert_eq!(drain(&mut body).await, b"abcdefghi");
        assert!(!body.replayable());
    }

    #[tokio::test]
    async fn a_short_body_read_ahead_is_whole() {
        let mut body = ForwardBody::new(streamed(&[b"abc"]));
        body.read_ahead(64).unwrap();
        assert_eq!(body.length(), BodyLength::Exact(3));
        assert_eq!(drain(&mut body).await, b"abc");
        assert!(body.replayable());
    }

    #[tokio::test]
    async fn the_client_limit_applies_while_buffering() {
        let mut body = ForwardBody::new(streamed(&[b"abcdef", b"ghijkl"]));
        body.limit(8).unwrap();
        let err = body
            .buffer_whole(64, &std::env::temp_dir())
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit: 8 }), "{err}");
    }
}
