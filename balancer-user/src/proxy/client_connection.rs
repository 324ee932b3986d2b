//! What an accepted client connection holds from its listener for its whole life: the close
//! signal, a compact copy of the listener's limits, and its place under `max_connections`.
//! The listener makes them; the protocol loops (`h1_server`, HTTP/2 in `listener`) use them.

use std::time::Duration;

use tokio::sync::watch;

use crate::config::ListenerConfig;

/// What makes a connection close once its requests in flight are answered: the proxy shutting
/// down, a reload removing its listener (whose requests would find no routes any more), or a
/// new process taking the listeners over.
///
/// One channel per listener carries all three: every idle connection waits on it, and each
/// channel waited on costs a connection's task about 130 bytes.
pub struct Closing {
    signal: watch::Receiver<Option<CloseReason>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CloseReason {
    /// Shutdown or a removed listener (or a sender gone, which means the same).
    Close,
    /// The listeners went to a new process: HTTP/2 connections get GOAWAY (their clients open
    /// new ones, to the new process); HTTP/1.x ones end after their next response
    /// (`Shared::draining`).
    Handover,
}

impl Closing {
    pub fn new(signal: watch::Receiver<Option<CloseReason>>) -> Closing {
        Closing { signal }
    }

    /// Whether the proxy is shutting down or the listener was removed (a connection then
    /// closes after the response in flight).
    pub fn closed_now(&self) -> bool {
        *self.signal.borrow() == Some(CloseReason::Close)
    }

    /// Waits for the listener's next signal: a handover, then possibly a close.
    pub async fn signalled(&mut self) -> CloseReason {
        loop {
            if self.signal.changed().await.is_err() {
                return CloseReason::Close;
            }
            if let Some(reason) = *self.signal.borrow_and_update() {
                return reason;
            }
        }
    }
}

/// What a connection's task keeps of its listener's config (a copy of the whole
/// `ListenerConfig` per idle connection would be memory for nothing), in 16 bytes rather than
/// 48: every idle connection's task carries it, and its size decides the allocation's size
/// class (tasks are allocated in multiples of 128 bytes).
#[derive(Clone, Copy)]
pub struct ConnLimits {
    header_read_timeout_ms: u32,
    keepalive_timeout_ms: u32,
    max_header_bytes: u32,
    max_headers: u32,
}

impl ConnLimits {
    pub fn of(config: &ListenerConfig) -> ConnLimits {
        let millis = |duration: Duration| u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
        let count = |value: usize| u32::try_from(value).unwrap_or(u32::MAX);
        ConnLimits {
            header_read_timeout_ms: millis(config.header_read_timeout),
            keepalive_timeout_ms: millis(config.keepalive_timeout),
            max_header_bytes: count(config.max_header_bytes),
            max_headers: count(config.max_headers),
        }
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms.into())
    }

    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms.into())
    }

    pub fn max_header_bytes(&self) -> usize {
        self.max_header_bytes as usize
    }

    pub fn max_headers(&self) -> usize {
        self.max_headers as usize
    }
}

/// What an accepted connection holds until it closes: its place under the listener's
/// `max_connections`, and its count in the open-connections gauge.
pub struct ConnHold {
    _permit: tokio::sync::OwnedSemaphorePermit,
    open: prometheus_client::metrics::gauge::Gauge,
}

impl ConnHold {
    pub fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        open: prometheus_client::metrics::gauge::Gauge,
    ) -> ConnHold {
        ConnHold {
            _permit: permit,
            open,
        }
    }
}

impl Drop for ConnHold {
    fn drop(&mut self) {
        self.open.dec();
    }
}
