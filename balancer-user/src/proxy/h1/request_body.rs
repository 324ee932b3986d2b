//! A request body as the upstream side pulls it: from our own HTTP/1.1 client connection
//! (`server::ClientBody`, read in the connection's own task) or from any boxed body (HTTP/2
//! streams from hyper's server, health checks, tests).
//!
//! The upstream writer pulls data only when it can write it, so a body is never read faster
//! than the server takes it; what the client sent wrong (a malformed chunk, a body over the
//! route's limit, a slow or aborted upload) comes back as a [`BodyError`] that says it was the
//! client's doing, never the server's.

use std::{future::Future, time::Duration};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::http::HeaderMap;

use crate::proxy::{Body, BoxError};

/// The length of a body as known before it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLength {
    /// Exactly this many bytes (0: no body).
    Exact(u64),
    /// Not known in advance: sent chunked.
    Unknown,
}

/// Why a request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More than the route's `max_body_size`: 413.
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// Broken framing (RFC 9112 §7.1): 400.
    #[error("malformed request body: {0}")]
    Malformed(&'static str),
    /// The client paused longer than the body timeout between two reads: 408.
    #[error("request body stalled")]
    Timeout,
    /// The client closed or reset the connection before the body ended.
    #[error("client closed the connection during the request body")]
    Aborted,
    /// Any other body error (an HTTP/2 stream reset, an I/O error).
    #[error("request body failed: {0}")]
    Other(BoxError),
    /// The proxy could not keep the body (its temporary file): not the client's fault.
    #[error("request body could not be buffered: {0}")]
    Spool(String),
}

/// A request body the upstream side can pull from. Implemented by our HTTP/1.1 engine's client
/// body (borrowing its connection) and by [`Body`].
pub trait RequestBody: Send {
    /// The length of what is still to come, as known now.
    fn length(&self) -> BodyLength;

    /// The next piece of data, or `None` at the end.
    fn next_data(&mut self) -> impl Future<Output = Option<Result<Bytes, BodyError>>> + Send;

    /// Caps the body at `limit` bytes: a declared length over it is refused now (the caller
    /// answers 413 before anything is sent), a streamed body fails when it passes it.
    fn limit(&mut self, limit: u64) -> Result<(), BodyError>;

    /// The longest wait for the next piece of the body (the route's `client_body_timeout`);
    /// past it `next_data` fails with [`BodyError::Timeout`].
    fn gap_timeout(&mut self, gap: Duration);

    /// Whether the whole body can still be sent (again) from its start: nothing was pulled
    /// yet, or it is whole in memory. What a retry on a new connection needs.
    fn replayable(&self) -> bool;

    /// Starts the body over from its first byte; only after [`RequestBody::replayable`] said
    /// yes.
    fn rewind(&mut self);

    /// An informational (1xx) response of the server other than 100 and 101, passed on to
    /// the client where its protocol can carry it (RFC 9110 §15.2).
    fn informational(
        &mut self,
        status: u16,
        headers: &HeaderMap,
    ) -> impl Future<Output = ()> + Send {
        let _ = (status, headers);
        async {}
    }
}

/// A boxed body (HTTP/2 client streams, health checks): pulled frame by frame; trailers are
/// not forwarded (the server speaks HTTP/1.1, where we send none).
pub struct BoxedBody {
    body: Body,
    pulled: bool,
    limit: Option<u64>,
    seen: u64,
    gap: Option<Duration>,
}

impl BoxedBody {
    pub fn new(body: Body) -> BoxedBody {
        BoxedBody {
            body,
            pulled: false,
            limit: None,
            seen: 0,
            gap: None,
        }
    }
}

impl RequestBody for BoxedBody {
    fn length(&self) -> BodyLength {
        match hyper::body::Body::size_hint(&self.body).exact() {
            Some(length) => BodyLength::Exact(length),
            None => BodyLength::Unknown,
        }
    }

    async fn next_data(&mut self) -> Option<Result<Bytes, BodyError>> {
        self.pulled = true;
        loop {
            let frame = match self.gap {
                Some(gap) => match tokio::time::timeout(gap, self.body.frame()).await {
                    Ok(frame) => frame,
                    Err(_) => return Some(Err(BodyError::Timeout)),
                },
                None => self.body.frame().await,
            };
            let frame = match frame? {
                Ok(frame) => frame,
                Err(err) => return Some(Err(BodyError::Other(err))),
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.seen += data.len() as u64;
            if let Some(limit) = self.limit
                && self.seen > limit
            {
                return Some(Err(BodyError::TooLarge { limit }));
            }
            if !data.is_empty() {
                return Some(Ok(data));
            }
        }
    }

    fn limit(&mut self, limit: u64) -> Result<(), BodyError> {
        if let BodyLength::Exact(length) = self.length()
            && length > limit
        {
            return Err(BodyError::TooLarge { limit });
        }
        self.limit = Some(limit);
        Ok(())
    }

    fn gap_timeout(&mut self, gap: Duration) {
        self.gap = Some(gap);
    }

    fn replayable(&self) -> bool {
        !self.pulled
    }

    fn rewind(&mut self) {}
}
