//! Client-connection timeouts that hyper cannot express: a slow request head (slowloris) and an
//! idle keep-alive connection are two different clocks. hyper's own header timer also runs while
//! a keep-alive connection waits for its next request, so it would cap the keep-alive time; we
//! track activity on the socket ourselves instead.
//!
//! `WatchedIo` stamps the time of the first byte read while no request is in flight;
//! `Activity::deadline` says when the connection must be closed.
//!
//! On an HTTP/2 connection, bytes that arrive while no stream is open are frames such as PING,
//! SETTINGS or WINDOW_UPDATE, not the start of a request head: they do not start the header
//! clock (else a client that pings an idle connection would be cut at `header_read_timeout`
//! instead of `keepalive_timeout`). Such a connection is closed `keepalive_timeout` after its
//! last stream ended, whatever control frames it sends meanwhile.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection is doing, shared by its socket wrapper, its requests and its watchdog.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Requests (or streams) whose response is not finished.
    in_flight: AtomicU32,
    /// Requests started on this connection.
    started: AtomicU32,
    /// When the connection last became idle (ms since `epoch`).
    idle_since: AtomicU64,
    /// The first byte read since it became idle, plus one (0: none yet).
    first_byte_plus_one: AtomicU64,
    /// The connection speaks HTTP/2: idle bytes do not start the header clock.
    http2: AtomicBool,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            started: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            first_byte_plus_one: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        })
    }

    /// The connection speaks HTTP/2 (ALPN "h2", or the prior-knowledge preface).
    pub fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Acquire)
    }

    pub fn set_http2(&self) {
        self.http2.store(true, Ordering::Release);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(
            crate::clock::now()
                .saturating_duration_since(self.epoch)
                .as_millis(),
        )
        .unwrap_or(u64::MAX)
    }

    /// A request began: no timeout of ours applies until it is finished.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.started.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && !self.http2.load(Ordering::Acquire)
            && self.first_byte_plus_one.load(Ordering::Relaxed) == 0
        {
            let _ = self.first_byte_plus_one.compare_exchange(
                0,
                self.now_ms() + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// When the connection must be closed, or `None` while a request is in flight. A connection
    /// that started a request head has `header_read` to finish it; an idle one, `keepalive` (or
    /// `header_read` before its first request, like nginx's client_header_timeout).
    pub fn deadline(&self, header_read: Duration, keepalive: Duration) -> Option<Instant> {
        let served_any = self.started.load(Ordering::Relaxed) > 0;
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let first_byte = self.first_byte_plus_one.load(Ordering::Acquire);
        let deadline_ms = if first_byte > 0 {
            first_byte - 1 + ms(header_read)
        } else {
            let idle_since = self.idle_since.load(Ordering::Acquire);
            idle_since
                + if served_any {
                    ms(keepalive)
                } else {
                    ms(header_read)
                }
        };
        Some(self.epoch + Duration::from_millis(deadline_ms))
    }
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX / 2)
}

/// Held by a request until its response body is finished (or dropped).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity
                .idle_since
                .store(activity.now_ms(), Ordering::Release);
            activity.first_byte_plus_one.store(0, Ordering::Release);
        }
    }
}

pin_project_lite::pin_project! {
    /// A client socket that reports reads to its `Activity`.
    pub struct WatchedIo<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
        // Whether the first bytes were checked for the HTTP/2 preface.
        sniffed: bool,
    }
}

/// The start of the HTTP/2 connection preface (RFC 9113 §3.4), as hyper's auto server detects
/// prior-knowledge HTTP/2.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl<T> WatchedIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            sniffed: false,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead> AsyncRead for WatchedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            if !*this.sniffed {
                *this.sniffed = true;
                if buf.filled()[before..].starts_with(H2_PREFACE) {
                    this.activity.set_http2();
                }
            }
            this.activity.bytes_read();
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const KEEPALIVE: Duration = Duration::from_secs(75);

    #[test]
    fn a_new_connection_has_the_header_timeout_and_an_idle_one_the_keepalive_timeout() {
        let activity = Activity::new();
        let fresh = activity.deadline(HEADER, KEEPALIVE).expect("idle");
        assert!(fresh <= activity.epoch + HEADER);
        let request = activity.request_started();
        assert_eq!(activity.deadline(HEADER, KEEPALIVE), None);
        drop(request);
        let idle = activity.deadline(HEADER, KEEPALIVE).expect("idle");
        assert!(idle >= activity.epoch + KEEPALIVE);
    }

    #[test]
    fn bytes_of_a_new_head_start_the_header_clock_and_only_the_first_byte_counts() {
        let activity = Activity::new();
        drop(activity.request_started());
        activity.bytes_read();
        let first = activity.deadline(HEADER, KEEPALIVE).expect("reading");
        assert!(first <= Instant::now() + HEADER);
        std::thread::sleep(Duration::from_millis(5));
        activity.bytes_read();
        assert_eq!(activity.deadline(HEADER, KEEPALIVE), Some(first));
    }

    #[test]
    fn idle_bytes_of_an_http2_connection_do_not_start_the_header_clock() {
        let activity = Activity::new();
        activity.set_http2();
        drop(activity.request_started());
        let idle = activity.deadline(HEADER, KEEPALIVE).expect("idle");
        activity.bytes_read();
        assert_eq!(activity.deadline(HEADER, KEEPALIVE), Some(idle));
        assert!(idle >= activity.epoch + KEEPALIVE);
    }

    #[test]
    fn bytes_read_during_a_request_do_not_start_the_header_clock() {
        let activity = Activity::new();
        let request = activity.request_started();
        activity.bytes_read();
        drop(request);
        let idle = activity.deadline(HEADER, KEEPALIVE).expect("idle");
        assert!(idle >= activity.epoch + KEEPALIVE);
    }
}
