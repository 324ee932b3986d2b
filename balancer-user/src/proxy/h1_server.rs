//! Our HTTP/1.x server side: one task per client connection reads a request head, runs the
//! request through the handler (which drives the server exchange itself, in this task),
//! writes the response, and waits for the next request.
//!
//! - **Memory.** While a keep-alive connection waits for its next request it holds no buffer:
//!   the read buffer is allocated when bytes arrive and freed when a response is done and
//!   nothing is left to parse. The request's future (handler, upstream exchange) is boxed per
//!   request, so the connection's own task stays small.
//! - **Framing.** Heads are parsed by `head::parse_request` (strict, RFC 9112); the body is read
//!   by [`ClientBody`] as the server side pulls it. A request whose body was not read to its
//!   end leaves the connection closed after the response, so its bytes are never parsed as a
//!   next request.
//! - **Clocks.** `header_read_timeout` runs from the first byte of a head (or the accept) to
//!   its end; `keepalive_timeout` is the wait for the next request's first byte.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode, Version,
    body::Body as _,
    header::{self, HeaderValue},
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::clock;
use crate::http::connection;
use crate::proxy::h1::{
    chunked::{self, ChunkedDecoder},
    head::{self, Framing, HeadLimits},
    request_body::{BodyError, BodyLength, RequestBody},
    spare_maps,
};
use crate::proxy::{
    access_log::LoggedBody,
    buffering::request::ForwardBody,
    client_connection::{CloseReason, Closing, ConnHold, ConnLimits},
    handler::{self, ConnInfo, Shared},
    in_place, read_buffers,
    tunnel::{self, TunnelSlot},
    wait_timer::WaitTimer,
};

/// How much one read asks for while a message is in flight.
const READ_CHUNK: usize = 8 * 1024;
/// The longest gap between two reads of a request body until the route sets its own
/// (`client_body_timeout`, nginx's name and default).
const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Response data up to this size is copied into the head's write buffer (one write for head
/// and body); larger frames are written as they are.
const COALESCE: usize = 16 * 1024;

/// A client connection's socket, as the engine needs it: bytes in and out, and a way to wait
/// for the next request without holding a buffer.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Resolves when bytes can be read (or the peer closed).
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Bytes already read from the socket and held in a lower layer (TLS plaintext).
    fn has_buffered(&mut self) -> bool {
        false
    }
    /// Whether closing sends something of its own first (TLS's close_notify): then an
    /// orderly close shuts the stream down before dropping it.
    const CLOSE_NOTIFY: bool = false;
}

/// A borrowed stream is a stream: a request's future borrows the connection's.
impl<T: ClientStream> ClientStream for &mut T {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        (**self).wait_readable()
    }

    fn has_buffered(&mut self) -> bool {
        (**self).has_buffered()
    }
    const CLOSE_NOTIFY: bool = T::CLOSE_NOTIFY;
}

/// The connection as a request in flight sees it: its stream, its read buffer and the state
/// of the request's body. Built per request (see `serve`).
pub struct ClientConn<S> {
    stream: S,
    buf: BytesMut,
    body: BodyReader,
    /// The version of the request in flight: 1xx responses go to HTTP/1.1 clients only.
    version: Version,
}

/// The request body: its framing state, what was read ahead, and the route's limit.
#[derive(Default)]
struct BodyReader {
    framing: ReadFraming,
    /// `Expect: 100-continue` and no 100 sent yet.
    expect_continue: bool,
    limit: Option<u64>,
    seen: u64,
    /// The route's `client_body_timeout` (`None`: [`CLIENT_BODY_TIMEOUT`]).
    gap: Option<Duration>,
    /// Data was handed out: the body cannot be sent again.
    streamed: bool,
    failed: bool,
}

#[derive(Default)]
enum ReadFraming {
    Length(u64),
    Chunked(ChunkedDecoder),
    #[default]
    Done,
}

impl<S: ClientStream> ClientConn<S> {
    /// Reads more bytes into the buffer; 0 at the end of the stream.
    async fn read_more(&mut self) -> io::Result<usize> {
        read_buffers::make_room(&mut self.buf, READ_CHUNK);
        self.stream.read_buf(&mut self.buf).await
    }

    /// The next piece of body data from the wire (past anything prefetched).
    async fn read_body(&mut self) -> Option<Result<Bytes, BodyError>> {
        if self.body.failed {
            return Some(Err(BodyError::Aborted));
        }
        let result = self.read_body_inner().await;
        if let Some(Err(_)) = &result {
            self.body.failed = true;
        }
        result
    }

    async fn read_body_inner(&mut self) -> Option<Result<Bytes, BodyError>> {
        loop {
            match &mut self.body.framing {
                ReadFraming::Done => return None,
                ReadFraming::Length(remaining) if !self.buf.is_empty() => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len());
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.body.framing = ReadFraming::Done;
                    }
                    let data = self.buf.split_to(take).freeze();
                    return Some(self.count(data));
                }
                ReadFraming::Chunked(decoder) if !self.buf.is_empty() => {
                    let decoded = match decoder.decode(&self.buf) {
                        Ok(decoded) => decoded,
                        Err(err) => return Some(Err(BodyError::Malformed(err.0))),
                    };
                    let mut used = self.buf.split_to(decoded.consumed);
                    if decoded.done {
                        self.body.framing = ReadFraming::Done;
                    }
                    if !decoded.data.is_empty() {
                        let data = used.split_off(decoded.data.start).freeze();
                        return Some(self.count(data));
                    }
                    continue;
                }
                _ => {}
            }
            if self.body.expect_continue {
                // The client waits for our go-ahead before it sends the body (RFC 9110
                // §10.1.1): given now that the body is wanted.
                self.body.expect_continue = false;
                if self.version == Version::HTTP_11 {
                    let sent = async {
                        self.stream
                            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                            .await?;
                        self.stream.flush().await
                    };
                    if sent.await.is_err() {
                        return Some(Err(BodyError::Aborted));
                    }
                }
            }
            let gap = self.body.gap.unwrap_or(CLIENT_BODY_TIMEOUT);
            match tokio::time::timeout(gap, self.read_more()).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(Err(BodyError::Aborted)),
                Ok(Ok(_)) => {}
                Err(_) => return Some(Err(BodyError::Timeout)),
            }
        }
    }

    fn count(&mut self, data: Bytes) -> Result<Bytes, BodyError> {
        self.body.seen += data.len() as u64;
        match self.body.limit {
            Some(limit) if self.body.seen > limit => Err(BodyError::TooLarge { limit }),
            _ => Ok(data),
        }
    }

    fn body_finished(&self) -> bool {
        matches!(self.body.framing, ReadFraming::Done) && !self.body.failed
    }
}

/// The request body as the handler and the upstream side see it: a borrow of the connection.
pub struct ClientBody<'a, S> {
    conn: &'a mut ClientConn<S>,
}

impl<S: ClientStream> RequestBody for ClientBody<'_, S> {
    fn length(&self) -> BodyLength {
        match &self.conn.body.framing {
            ReadFraming::Done => BodyLength::Exact(0),
            ReadFraming::Length(remaining) => BodyLength::Exact(*remaining),
            ReadFraming::Chunked(_) => BodyLength::Unknown,
        }
    }

    async fn next_data(&mut self) -> Option<Result<Bytes, BodyError>> {
        self.conn.body.streamed = true;
        self.conn.read_body().await
    }

    fn limit(&mut self, limit: u64) -> Result<(), BodyError> {
        if let BodyLength::Exact(length) = self.length()
            && length > limit
        {
            return Err(BodyError::TooLarge { limit });
        }
        self.conn.body.limit = Some(limit);
        Ok(())
    }

    fn gap_timeout(&mut self, gap: Duration) {
        self.conn.body.gap = Some(gap);
    }

    /// Only before any of it was read: what was read is gone (`buffering::ForwardBody` keeps
    /// what it read ahead).
    fn replayable(&self) -> bool {
        !self.conn.body.streamed
    }

    fn rewind(&mut self) {}

    async fn informational(&mut self, status: u16, headers: &HeaderMap) {
        if self.conn.version != Version::HTTP_11 {
            return;
        }
        let Ok(status) = StatusCode::from_u16(status) else {
            return;
        };
        let mut out = Vec::with_capacity(256);
        head::write_response_head(&mut out, Version::HTTP_11, status, headers);
        let _ = self.conn.stream.write_all(&out).await;
        let _ = self.conn.stream.flush().await;
    }
}

/// Serves HTTP/1.x on `stream` until the client closes, a clock runs out, or the proxy asks
/// the connection to close.
///
/// This future is what an idle connection costs (a task holds its largest state): it keeps
/// only the connection and the wait for the next request. Each request runs in a future of
/// its own, boxed for as long as the request lives.
pub async fn serve<S: ClientStream>(
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    limits: ConnLimits,
    mut stream: S,
    // Bytes read past the last request (pipelining), or the connection's first bytes (read
    // to tell HTTP/2 from HTTP/1.1); no capacity while idle.
    mut buf: BytesMut,
    mut closing: Closing,
    // Held until the connection ends.
    _hold: ConnHold,
) {
    let mut first = true;
    // Every wait of this connection's own (the next request, the rest of a head, the server's
    // answer) runs on this one timer.
    let mut timer = std::pin::pin!(WaitTimer::new());
    loop {
        // Wait for the next request without a buffer.
        if buf.is_empty() && !stream.has_buffered() {
            let wait = if first {
                limits.header_read_timeout()
            } else {
                limits.keepalive_timeout()
            };
            let ready = tokio::select! {
                ready = timer.as_mut().run(clock::tokio_now() + wait, stream.wait_readable()) => ready,
                reason = closing.signalled() => {
                    if reason == CloseReason::Close {
                        return;
                    }
                    // A handover: this connection ends after its next response (the
                    // handler says `Connection: close` while draining); closing it idle
                    // could race a request the client is sending.
                    continue;
                }
            };
            if !matches!(ready, Ok(Ok(()))) {
                return;
            }
        }
        first = false;
        let outcome = in_place::recycled(|| {
            one_request(
                &shared,
                &info,
                &limits,
                &mut stream,
                &mut buf,
                &closing,
                timer.as_mut(),
            )
        })
        .await;
        if outcome != Written::KeepAlive {
            // A client that said this was its last request, all of it read, sends nothing
            // more: closing leaves no unread bytes to turn the close into a reset, and
            // lingering would only cost a wake-up and a read per connection (nginx lingers
            // only when bytes may still come, too).
            let staged =
                !(outcome == Written::Finished && buf.is_empty() && !stream.has_buffered());
            read_buffers::give_back(buf, READ_CHUNK);
            if staged || S::CLOSE_NOTIFY {
                let _ = stream.shutdown().await;
            }
            if staged && !closing.closed_now() {
                // Boxed: its read state would otherwise be part of every idle connection's task.
                in_place::boxed(|| linger(&mut stream, &mut closing)).await;
            }
            return;
        }
        if buf.is_empty() {
            // Idle from here: no buffer held while waiting (the next request on this thread,
            // this connection's or another's, takes it).
            read_buffers::give_back(std::mem::take(&mut buf), READ_CHUNK);
        }
    }
}

/// The longest a closing connection keeps reading what the client still sends, and the
/// longest gap between two reads (nginx: `lingering_time` 30 s, `lingering_timeout` 5 s).
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_GAP: Duration = Duration::from_secs(2);

/// The second half of a staged close (RFC 9112 §9.6), after the write side is shut down:
/// reads and discards what the client still sends until it closes, goes quiet for
/// [`LINGER_GAP`], [`LINGER_TIME`] is up, or the listener closes. Closing with unread bytes
/// in the socket sends a reset, and a client that is still sending (an upload refused with
/// 413, a request refused mid-body, pipelined requests after `Connection: close`) may then
/// lose the response it has not read yet: the reset discards it on many stacks. A client
/// that has closed already ends this at once (the first read sees its end).
async fn linger<S: ClientStream>(stream: &mut S, closing: &mut Closing) {
    let until = tokio::time::Instant::now() + LINGER_TIME;
    let mut scratch = read_buffers::take(READ_CHUNK);
    loop {
        scratch.clear();
        let gap_ends = (tokio::time::Instant::now() + LINGER_GAP).min(until);
        let read = tokio::select! {
            read = tokio::time::timeout_at(gap_ends, stream.read_buf(&mut scratch)) => read,
            reason = closing.signalled() => {
                if reason == CloseReason::Close {
                    break;
                }
                continue;
            }
        };
        if !matches!(read, Ok(Ok(read)) if read > 0) {
            break;
        }
    }
    scratch.clear();
    read_buffers::give_back(scratch, READ_CHUNK);
}

/// One request: its head, the handler (which drives the server exchange), the response, and
/// the tunnel after a 101. The bytes read past the request stay in `buf`.
async fn one_request<S: ClientStream>(
    shared: &Arc<Shared>,
    info: &Arc<ConnInfo>,
    limits: &ConnLimits,
    stream: &mut S,
    buf: &mut BytesMut,
    closing: &Closing,
    timer: Pin<&mut WaitTimer>,
) -> Written {
    let mut conn = ClientConn {
        stream,
        buf: std::mem::take(buf),
        body: BodyReader::default(),
        version: Version::HTTP_11,
    };
    let written = exchange(shared, info, limits, &mut conn, closing, timer).await;
    let written = match written {
        Ok(Outcome::KeepAlive) => Written::KeepAlive,
        Ok(Outcome::Close) | Err(_) => Written::Close,
        Ok(Outcome::Finished) => Written::Finished,
        Ok(Outcome::Tunnel(slot)) => {
            run_tunnel(conn, slot).await;
            return Written::Close;
        }
    };
    *buf = conn.buf;
    written
}

async fn exchange<S: ClientStream>(
    shared: &Arc<Shared>,
    info: &Arc<ConnInfo>,
    limits: &ConnLimits,
    conn: &mut ClientConn<S>,
    closing: &Closing,
    mut timer: Pin<&mut WaitTimer>,
) -> io::Result<Outcome> {
    let head_limits = HeadLimits {
        max_head_bytes: limits.max_header_bytes(),
        max_headers: limits.max_headers(),
        max_uri_bytes: limits.max_header_bytes().min(MAX_URI),
    };
    let deadline = clock::now() + limits.header_read_timeout();
    let (request_head, length) = loop {
        match head::parse_request(&conn.buf, &head_limits) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(err) => {
                refuse(conn, shared, info, err.status, err.reason).await;
                return Ok(Outcome::Close);
            }
        }
        match timer.as_mut().run(deadline.into(), conn.read_more()).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ok(Outcome::Close),
            Ok(Ok(_)) => {}
        }
    };
    conn.buf.advance(length);

    let head::RequestHead {
        method,
        uri,
        version,
        mut headers,
        framing,
        keep_alive,
        expect_continue,
    } = request_head;
    headers.remove(header::EXPECT);
    conn.version = version;
    conn.body = BodyReader {
        framing: match framing {
            Framing::Length(0) | Framing::Empty | Framing::CloseDelimited => ReadFraming::Done,
            Framing::Length(length) => ReadFraming::Length(length),
            Framing::Chunked => ReadFraming::Chunked(ChunkedDecoder::new()),
        },
        expect_continue,
        ..BodyReader::default()
    };
    let is_head = method == Method::HEAD;
    // Dropped in place at the end of the block (`drop(request)` moved it first).
    let mut response = {
        let mut request = Request::new(ForwardBody::new(ClientBody { conn: &mut *conn }));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = version;
        *request.headers_mut() = headers;
        handler::handle(shared, info, &mut request, timer).await
    };

    let keep = keep_alive && conn.body_finished() && !closing.closed_now();
    // Written from where it lies; dropped (its log line, its counts) when this returns, before
    // any tunnel runs.
    let outcome = write_response(conn, &mut response, version, is_head, keep).await?;
    Ok(match outcome {
        // The client asked for the close (RFC 9112 §9.6) and sent nothing past its request.
        Outcome::Close if !keep_alive && conn.body_finished() => Outcome::Finished,
        outcome => outcome,
    })
}

/// Request targets longer than this get 414 (nginx's large_client_header_buffers: 8 KiB).
const MAX_URI: usize = 8 * 1024;

/// How a request left the connection.
#[derive(PartialEq, Eq)]
enum Written {
    KeepAlive,
    Close,
    /// Closing because the client asked to, with its whole request read.
    Finished,
}

/// How a response left the connection.
enum Outcome {
    KeepAlive,
    Close,
    /// Closing because the client asked to, with its whole request read.
    Finished,
    Tunnel(TunnelSlot),
}

/// Answers a request whose head is refused, then the connection closes (its framing can no
/// longer be trusted).
async fn refuse<S: ClientStream>(
    conn: &mut ClientConn<S>,
    shared: &Shared,
    info: &ConnInfo,
    status: u16,
    reason: &'static str,
) {
    tracing::debug!(peer = %info.peer, status, "request refused: {reason}");
    shared.count_malformed(info, status);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = crate::proxy::error::default_body(status);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    insert_date(&mut headers);
    let mut out = Vec::with_capacity(256);
    head::write_response_head(&mut out, Version::HTTP_11, status, &headers);
    out.extend_from_slice(body.as_bytes());
    let _ = conn.stream.write_all(&out).await;
    let _ = conn.stream.shutdown().await;
}

/// Writes a response: head, then the body with the framing the client's version allows.
/// Whether the connection may carry another request.
async fn write_response<S: ClientStream>(
    conn: &mut ClientConn<S>,
    response: &mut Response<LoggedBody>,
    version: Version,
    is_head: bool,
    mut keep: bool,
) -> io::Result<Outcome> {
    let status = response.status();
    // One walk over the fields instead of a lookup, removal or insertion per framing field:
    // `Connection` and `Transfer-Encoding` are ours to write, so they are skipped when the
    // head is written, and what we add goes after the rest (as an insertion would).
    let mut has_date = false;
    let mut content_length: Option<Option<u64>> = None;
    for (name, value) in response.headers() {
        if name == header::CONNECTION {
            if connection::value_lists(value, "close") {
                keep = false;
            }
        } else if name == header::DATE {
            has_date = true;
        } else if name == header::CONTENT_LENGTH && content_length.is_none() {
            // The first value, as `HeaderMap::get` gives it.
            content_length = Some(value.to_str().ok().and_then(|text| text.parse().ok()));
        }
    }
    let mut extra = AddedFields::new();
    if !has_date && let Some(date) = current_date() {
        extra.push(header::DATE, date);
    }

    if status == StatusCode::SWITCHING_PROTOCOLS
        && let Some(slot) = response.extensions_mut().remove::<TunnelSlot>()
    {
        extra.push(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let mut out = Vec::with_capacity(512);
        extra.write_head(&mut out, status, response.headers());
        conn.stream.write_all(&out).await?;
        conn.stream.flush().await?;
        return Ok(Outcome::Tunnel(slot));
    }

    let no_body = is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    enum Out {
        None,
        Length(u64),
        Chunked,
        UntilClose,
    }
    let framing = if no_body {
        Out::None
    } else if let Some(Some(length)) = content_length {
        Out::Length(length)
    } else if let Some(length) = response.body().size_hint().exact() {
        // A Content-Length the map had but that is not a number is replaced in its place.
        if content_length.is_some() {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        } else {
            extra.push(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        Out::Length(length)
    } else if version == Version::HTTP_11 {
        extra.push(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        Out::Chunked
    } else {
        keep = false;
        Out::UntilClose
    };
    if !keep {
        if version == Version::HTTP_11 {
            extra.push(header::CONNECTION, HeaderValue::from_static("close"));
        }
    } else if version == Version::HTTP_10 {
        extra.push(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    let mut out = read_buffers::WriteBuf::take();
    extra.write_head(&mut out, status, response.headers());
    spare_maps::give_back(std::mem::take(response.headers_mut()));

    // Polled where it lies (it is `Unpin`): moving it into a local of its own copied its few
    // hundred bytes once more per response.
    let mut body = Pin::new(response.body_mut());
    let mut sent: u64 = 0;
    let expected = match framing {
        Out::Length(length) => Some(length),
        _ => None,
    };
    if !matches!(framing, Out::None) {
        loop {
            let polled = std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await;
            let frame = match polled {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    // Nothing more for now (a streaming response): what we have goes out.
                    if !out.is_empty() {
                        conn.stream.write_all(&out).await?;
                        out.clear();
                    }
                    conn.stream.flush().await?;
                    std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(err)) => {
                    tracing::debug!("response body failed: {err}");
                    // The client cannot tell a cut body from a whole one unless the
                    // connection ends before the framing does.
                    if !out.is_empty() {
                        conn.stream.write_all(&out).await?;
                    }
                    return Ok(Outcome::Close);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            if data.is_empty() {
                continue;
            }
            let mut data = data;
            if let Some(expected) = expected {
                let room = expected.saturating_sub(sent);
                if data.len() as u64 > room {
                    data.truncate(usize::try_from(room).unwrap_or(usize::MAX));
                    keep = false;
                }
            }
            sent += data.len() as u64;
            let chunked = matches!(framing, Out::Chunked);
            if chunked {
                out.extend_from_slice(&chunked::chunk_header(data.len()));
            }
            if data.len() <= COALESCE {
                out.extend_from_slice(&data);
            } else {
                conn.stream.write_all(&out).await?;
                out.clear();
                conn.stream.write_all(&data).await?;
            }
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
            if out.len() >= 64 * 1024 {
                conn.stream.write_all(&out).await?;
                out.clear();
            } else if expected == Some(sent) {
                // The whole body is here. It goes to the client before the body's end is
                // polled: that end writes the access log, records the metrics and closes or
                // pools the server's connection, none of which the client should wait for.
                write_now(&mut conn.stream, &mut out)?;
            }
        }
        match framing {
            Out::Chunked => out.extend_from_slice(chunked::LAST_CHUNK),
            Out::Length(length) if sent != length => keep = false,
            Out::UntilClose => keep = false,
            _ => {}
        }
    }
    if !out.is_empty() {
        conn.stream.write_all(&out).await?;
    }
    conn.stream.flush().await?;
    Ok(if keep {
        Outcome::KeepAlive
    } else {
        Outcome::Close
    })
}

/// Writes as much of `out` as the socket takes without waiting, and removes it from `out`;
/// the rest goes out with the next awaited write.
fn write_now<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut Vec<u8>) -> io::Result<()> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut written = 0;
    while written < out.len() {
        match Pin::new(&mut *stream).poll_write(&mut cx, &out[written..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => written += n,
            Poll::Ready(Err(err)) => return Err(err),
            Poll::Pending => break,
        }
    }
    if written == out.len()
        && let Poll::Ready(Err(err)) = Pin::new(&mut *stream).poll_flush(&mut cx)
    {
        return Err(err);
    }
    out.drain(..written);
    Ok(())
}

/// After a 101: the bytes each side sent past its head go to the other first, then bytes are
/// copied both ways until one side closes or the tunnel is idle.
async fn run_tunnel<S: ClientStream>(conn: ClientConn<S>, slot: TunnelSlot) {
    let ClientConn {
        mut stream, buf, ..
    } = conn;
    let Some(pending) = slot.take() else {
        return;
    };
    let (mut upstream, leftover) = pending.upstream;
    let forwarded = async {
        if !leftover.is_empty() {
            stream.write_all(&leftover).await?;
            stream.flush().await?;
        }
        if !buf.is_empty() {
            upstream.write_all(&buf).await?;
        }
        io::Result::Ok(())
    };
    if forwarded.await.is_err() {
        return;
    }
    tunnel::relay(stream, upstream, pending.idle).await;
    drop(pending.load);
}

/// Sets `Date` (RFC 9110 §6.6.1).
fn insert_date(headers: &mut HeaderMap) {
    if let Some(value) = current_date() {
        headers.insert(header::DATE, value);
    }
}

/// The `Date` value (RFC 9110 §6.6.1), formatted once per second per thread.
fn current_date() -> Option<HeaderValue> {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, Option<HeaderValue>)> =
            const { std::cell::RefCell::new((0, None)) };
    }
    let now = clock::wall_now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second || cached.1.is_none() {
            let text = httpdate::fmt_http_date(now);
            cached.1 = HeaderValue::from_str(&text).ok();
            cached.0 = second;
        }
        cached.1.clone()
    })
}

/// The fields the engine adds to a response head (`Date`, framing, `Connection`): at most
/// three, kept inline rather than in a vector allocated per response.
struct AddedFields {
    fields: [(header::HeaderName, HeaderValue); 3],
    len: usize,
}

impl AddedFields {
    fn new() -> AddedFields {
        AddedFields {
            fields: [const { (header::DATE, HeaderValue::from_static("")) }; 3],
            len: 0,
        }
    }

    fn push(&mut self, name: header::HeaderName, value: HeaderValue) {
        debug_assert!(self.len < self.fields.len(), "more added fields than room");
        if let Some(slot) = self.fields.get_mut(self.len) {
            *slot = (name, value);
            self.len += 1;
        }
    }

    /// Writes the response head: `headers` without the fields the engine writes itself
    /// (`Connection`, `Transfer-Encoding`), then these. Consumed, so that none of it is held
    /// while the head is sent.
    fn write_head(self, out: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap) {
        let ours = |name: &header::HeaderName| {
            name == header::CONNECTION || name == header::TRANSFER_ENCODING
        };
        head::write_response_head_with(
            out,
            Version::HTTP_11,
            status,
            headers,
            ours,
            &self.fields[..self.len],
        );
    }
}
