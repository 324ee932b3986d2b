//! Response buffering: the server's response is read as fast as the server sends it, into
//! memory up to `proxy.response_buffer` and then an unlinked temporary file, up to
//! `proxy.max_response_buffer` in all; the client reads it at its own pace. The server's
//! connection goes back to its pool, and the server's request slot (`max_conns`) is freed, as
//! soon as the response has been read whole, not when a slow client has it.
//!
//! A response that is already whole when its head arrives (most are: small bodies come in the
//! same reads as the head) is passed on from memory with no task. A longer one gets a pump
//! task that reads the server while the client side reads the spool.

use std::{
    collections::VecDeque,
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{
    HeaderMap,
    body::{Body as _, Frame, SizeHint},
    header::{self, HeaderName},
};
use tokio::sync::Notify;

use super::spool::{open_unlinked, read_piece};
use crate::proxy::{Body, BoxError, pool::ServerLoad};

/// nginx's per-response switch, honoured the same way: `no` streams this response.
pub const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// How much a response is held for a slow client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// In memory (`proxy.response_buffer`).
    pub memory: usize,
    /// Memory and file together (`proxy.max_response_buffer`); past it the server is read
    /// only as fast as the client reads.
    pub total: u64,
}

/// Whether a response with these headers is buffered on a route with `response_buffering`:
/// never an event stream (each event must reach the client when it is sent) nor one the
/// server marks `X-Accel-Buffering: no`. The marker is the proxy's, and is removed here.
pub fn wanted(headers: &mut HeaderMap) -> bool {
    // One lookup: `remove` hands back the first value, as `get` would.
    let opted_out = headers
        .remove(&X_ACCEL_BUFFERING)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"no"));
    let event_stream = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"));
    !opted_out && !event_stream
}

/// The response body the client gets, reading `body` from the server ahead of the client.
/// `load` (the server's request slot) is released when the server's body has been read.
/// A file, if one is needed, goes in `dir` (`proxy.temp_dir`).
pub fn buffer(body: Body, load: Option<ServerLoad>, limits: Limits, dir: &Path) -> Body {
    let mut body = body;
    // Usually one piece: kept apart, so that the common case allocates no queue.
    let mut first: Option<Bytes> = None;
    let mut early = VecDeque::new();
    let mut early_bytes = 0;
    // What the server sent already, read without waiting: usually the whole body.
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if early_bytes >= limits.memory {
            break;
        }
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    early_bytes += data.len();
                    match first {
                        None => first = Some(data),
                        Some(_) => early.push_back(data),
                    }
                }
            }
            Poll::Ready(None) => {
                return Body::new(Whole {
                    first,
                    rest: early,
                    error: None,
                    ended: Some((body, load)),
                });
            }
            // The error reaches the client where it happened, after the data before it.
            Poll::Ready(Some(Err(err))) => {
                return Body::new(Whole {
                    first,
                    rest: early,
                    error: Some(err),
                    ended: Some((body, load)),
                });
            }
            Poll::Pending => break,
        }
    }
    let total = body
        .size_hint()
        .exact()
        .map(|rest| rest + early_bytes as u64);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            memory: {
                if let Some(first) = first {
                    early.push_front(first);
                }
                early
            },
            in_memory: early_bytes,
            file: None,
            file_written: 0,
            file_read: 0,
            end: None,
            reader: None,
            reader_gone: false,
            spill_failed: false,
        }),
        room: Notify::new(),
    });
    tokio::spawn(pump(body, load, shared.clone(), limits, dir.to_path_buf()));
    Body::new(Spooled {
        shared,
        total,
        sent: 0,
    })
}

/// A body that is whole in memory (and may end with the server's error).
struct Whole {
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
    error: Option<BoxError>,
    /// The server's body, read to its end, and the server's request slot. The connection is
    /// already back in its pool, or is one to close. Both go (the connection first, so that a
    /// request waiting for the slot never finds the server with one connection too many)
    /// once the data has been handed on, without waiting for the client: the close is not on
    /// the way of the client's response.
    ended: Option<(Body, Option<ServerLoad>)>,
}

impl hyper::body::Body for Whole {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(data) = self.first.take().or_else(|| self.rest.pop_front()) {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        self.ended = None;
        Poll::Ready(self.error.take().map(Err))
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_empty() && self.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.error.is_some() {
            return SizeHint::default();
        }
        let first = self.first.as_ref().map_or(0, Bytes::len);
        let rest: usize = self.rest.iter().map(Bytes::len).sum();
        SizeHint::with_exact((first + rest) as u64)
    }
}

struct Shared {
    state: Mutex<State>,
    /// The client side read something: the pump may have room again.
    room: Notify,
}

struct State {
    /// Data in memory, in order before anything in the file that is unread.
    memory: VecDeque<Bytes>,
    in_memory: usize,
    file: Option<File>,
    /// The file holds unread data in `file_read..file_written`.
    file_written: u64,
    file_read: u64,
    /// The server's body ended: cleanly, or with this error.
    end: Option<Result<(), String>>,
    reader: Option<Waker>,
    /// The client side is gone: the pump stops (the server's connection closes).
    reader_gone: bool,
    /// The file could not be made or written: the pump keeps to memory from then on.
    spill_failed: bool,
}

impl State {
    fn unread(&self) -> u64 {
        self.in_memory as u64 + (self.file_written - self.file_read)
    }

    /// Appends `data` after everything unread: to memory while nothing waits in the file and
    /// it fits, else to the file (made at the first spill). `Err` gives `data` back when it
    /// has to wait for room.
    fn push(&mut self, data: Bytes, limits: &Limits, dir: &Path) -> Result<(), Bytes> {
        let file_unread = self.file_written > self.file_read;
        if !file_unread && self.in_memory + data.len() <= limits.memory {
            self.in_memory += data.len();
            self.memory.push_back(data);
            return Ok(());
        }
        if self.spill_failed || self.unread() + data.len() as u64 > limits.total {
            // Room comes as the client reads; a piece larger than the whole allowance goes
            // out alone once everything before it is read.
            if self.unread() == 0 {
                self.in_memory += data.len();
                self.memory.push_back(data);
                return Ok(());
            }
            return Err(data);
        }
        match self.write_file(&data, dir) {
            Ok(()) => Ok(()),
            Err(err) => {
                tracing::warn!(dir = %dir.display(), "response buffering: {err}; the rest of this response is kept in memory only");
                self.spill_failed = true;
                Err(data)
            }
        }
    }

    fn write_file(&mut self, data: &[u8], dir: &Path) -> io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(open_unlinked(dir)?),
        };
        file.write_all_at(data, self.file_written)?;
        self.file_written += data.len() as u64;
        Ok(())
    }

    /// The next piece for the client: memory first, then the file.
    fn take(&mut self) -> io::Result<Option<Bytes>> {
        if let Some(data) = self.memory.pop_front() {
            self.in_memory -= data.len();
            return Ok(Some(data));
        }
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let Some(piece) = read_piece(file, self.file_read, self.file_written)? else {
            return Ok(None);
        };
        self.file_read += piece.len() as u64;
        if self.file_read == self.file_written {
            // Read up: the file is written from its start again, so it never grows past the
            // allowance however long the response.
            self.file_read = 0;
            self.file_written = 0;
        }
        Ok(Some(piece))
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads the server's body into the spool as fast as it comes (and room allows).
async fn pump(
    mut body: Body,
    load: Option<ServerLoad>,
    shared: Arc<Shared>,
    limits: Limits,
    dir: PathBuf,
) {
    let end = loop {
        let frame = match body.frame().await {
            None => break Ok(()),
            Some(Err(err)) => break Err(err.to_string()),
            Some(Ok(frame)) => frame,
        };
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        loop {
            let room = shared.room.notified();
            let pushed = {
                let mut state = lock(&shared);
                if state.reader_gone {
                    return;
                }
                let pushed = state.push(data, &limits, &dir);
                if let Some(reader) = state.reader.take() {
                    reader.wake();
                }
                pushed
            };
            match pushed {
                Ok(()) => break,
                Err(back) => {
                    data = back;
                    room.await;
                }
            }
        }
    };
    // The server's part is over: its connection went back to the pool (or closed) as the
    // body ended, and its request slot is free now.
    drop(body);
    drop(load);
    let mut state = lock(&shared);
    state.end = Some(end);
    if let Some(reader) = state.reader.take() {
        reader.wake();
    }
}

/// The client's side of a spooled response.
struct Spooled {
    shared: Arc<Shared>,
    /// The whole length, when the server declared it.
    total: Option<u64>,
    /// Bytes handed out.
    sent: u64,
}

impl hyper::body::Body for Spooled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let taken = {
            let mut state = lock(&self.shared);
            match state.take() {
                Ok(Some(data)) => Ok(Some(data)),
                Ok(None) => match &state.end {
                    Some(Ok(())) => Ok(None),
                    Some(Err(err)) => Err(BoxError::from(err.clone())),
                    None => {
                        state.reader = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                },
                Err(err) => Err(BoxError::from(format!("response buffer file: {err}"))),
            }
        };
        match taken {
            Ok(Some(data)) => {
                self.sent += data.len() as u64;
                self.shared.room.notify_one();
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Ok(None) => Poll::Ready(None),
            Err(err) => Poll::Ready(Some(Err(err))),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.total {
            Some(total) => SizeHint::with_exact(total.saturating_sub(self.sent)),
            None => SizeHint::default(),
        }
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        lock(&self.shared).reader_gone = true;
        self.shared.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::Ordering, time::Duration};

    use http_body_util::StreamBody;
    use tokio::sync::mpsc;

    use super::*;
    use crate::{
        config::Config,
        proxy::{error::ErrorPages, pool::Pool},
    };

    fn pool() -> Arc<Pool> {
        let text = "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\n\
                    [[route]]\npool = \"app\"\n[pool.app]\n\
                    servers = [{ url = \"http://10.0.0.1:80\", max_conns = 1 }]\n";
        let config = Config::parse(text, "test.toml").expect("valid config");
        Arc::new(Pool::new(
            &config.l7.pools[0],
            Arc::new(ErrorPages::default()),
            None,
            None,
        ))
    }

    /// A server body fed through a channel of one piece: the test sees how far it was read.
    fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|data| (Ok::<_, BoxError>(Frame::data(data)), rx))
        });
        (tx, Body::new(StreamBody::new(stream)))
    }

    async fn read_all(mut body: Body) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                out.extend_from_slice(&data);
            }
        }
        out
    }

    fn piece(n: usize) -> Bytes {
        Bytes::from(vec![(n % 251) as u8; 16 * 1024])
    }

    const LIMITS: Limits = Limits {
        memory: 64 * 1024,
        total: 8 << 20,
    };

    #[tokio::test]
    async fn a_response_already_whole_frees_the_server_at_once() {
        let pool = pool();
        let load = pool.pick_with(None, None, None).unwrap();
        let body = Body::new(
            http_body_util::Full::new(Bytes::from_static(b"hello")).map_err(|never| match never {}),
        );
        let mut body = buffer(body, Some(load), LIMITS, &std::env::temp_dir());
        assert_eq!(body.size_hint().exact(), Some(5));
        // The data is handed on first; the server is free as soon as the body's end is
        // polled, with no task and no wait for the client.
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("the data at once");
        };
        assert_eq!(frame.into_data().ok(), Some(Bytes::from_static(b"hello")));
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
        assert_eq!(pool.servers[0].in_flight(), 0);
    }

    #[tokio::test]
    async fn a_slow_reader_does_not_hold_the_server() {
        let pool = pool();
        let load = pool.pick_with(None, None, None).unwrap();
        let (tx, server_body) = channel_body();
        let body = buffer(server_body, Some(load), LIMITS, &std::env::temp_dir());
        // The server sends 1 MiB while nobody reads: it all goes into memory and the file.
        let mut expected = Vec::new();
        for n in 0..64 {
            let data = piece(n);
            expected.extend_from_slice(&data);
            tokio::time::timeout(Duration::from_secs(5), tx.send(data))
                .await
                .expect("the pump reads ahead of the client")
                .unwrap();
        }
        drop(tx);
        // The server's part ends: its slot is free before the client read a byte.
        tokio::time::timeout(Duration::from_secs(5), async {
            while pool.servers[0].in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the slot is released when the server's body ends");
        assert_eq!(read_all(body).await, expected);
    }

    #[tokio::test]
    async fn past_the_allowance_the_server_is_read_as_fast_as_the_client() {
        let pool = pool();
        let load = pool.pick_with(None, None, None).unwrap();
        let (tx, server_body) = channel_body();
        let limits = Limits {
            memory: 32 * 1024,
            total: 128 * 1024,
        };
        let body = buffer(server_body, Some(load), limits, &std::env::temp_dir());
        let sender = tokio::spawn(async move {
            let mut sent = Vec::new();
            for n in 0..64 {
                let data = piece(n);
                sent.extend_from_slice(&data);
                tx.send(data).await.unwrap();
            }
            sent
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Held: at most the allowance (8 pieces), plus one in the pump and one in the channel.
        assert!(!sender.is_finished(), "the pump must stop at the allowance");
        assert_eq!(pool.servers[0].in_flight(), 1);
        let received = read_all(body).await;
        assert_eq!(received, sender.await.unwrap());
        assert_eq!(pool.servers[0].in_flight(), 0);
    }

    #[tokio::test]
    async fn a_client_that_goes_away_stops_the_pump_and_frees_the_server() {
        let pool = pool();
        let load = pool.pick_with(None, None, None).unwrap();
        let (tx, server_body) = channel_body();
        let limits = Limits {
            memory: 16 * 1024,
            total: 32 * 1024,
        };
        let body = buffer(server_body, Some(load), limits, &std::env::temp_dir());
        for n in 0..3 {
            tx.send(piece(n)).await.unwrap();
        }
        drop(body);
        // The pump notices at its next piece and drops the server's body and slot.
        let _ = tx.send(piece(3)).await;
        let _ = tx.send(piece(4)).await;
        tokio::time::timeout(Duration::from_secs(5), async {
            while pool.servers[0].in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the slot is released");
        assert_eq!(pool.queue_stats.timeouts.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn event_streams_and_x_accel_buffering_no_are_not_buffered() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/html".parse().unwrap());
        assert!(wanted(&mut headers));
        headers.insert(
            header::CONTENT_TYPE,
            "Text/Event-Stream; charset=utf-8".parse().unwrap(),
        );
        assert!(!wanted(&mut headers));
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        headers.insert(X_ACCEL_BUFFERING, "no".parse().unwrap());
        assert!(!wanted(&mut headers));
        assert!(
            !headers.contains_key(X_ACCEL_BUFFERING),
            "the marker is removed"
        );
        headers.insert(X_ACCEL_BUFFERING, "yes".parse().unwrap());
        assert!(wanted(&mut headers));
    }
}
