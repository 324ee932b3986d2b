//! One HTTP/1.1 exchange with a server, on a connection of ours: the request head, the body
//! pulled from the client as the server takes it, the response head, then a response body
//! that gives the connection back to its pool once read to its end.
//!
//! Everything runs in the task of the client connection that made the request: no task per
//! upstream connection, no channel, no lock on the way. The socket is driven by poll functions
//! that, while a body is being written, also read what the server answers meanwhile (a server
//! that answers before it has read the whole body, then stops reading, would otherwise leave
//! us blocked on a full socket). Plain sockets are read with `try_read_buf` straight into the
//! response buffer; TLS streams (https:// servers) through rustls.

use std::{
    future::{Future, poll_fn},
    io::{self, IoSlice},
    pin::Pin,
    sync::Weak,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use hyper::{
    HeaderMap, Request, Response, StatusCode,
    body::{Frame, SizeHint},
    header::{self, HeaderValue},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpStream, UnixStream},
};
use tokio_rustls::client::TlsStream;

use super::{ServerConnections, quiet::QuietTimer};
use crate::proxy::BoxError;
use crate::proxy::h1::{
    TakeOnce,
    chunked::{self, ChunkedDecoder},
    head::{self, Framing, HeadLimits, ResponseHead},
    request_body::{BodyError, BodyLength, RequestBody},
};
use crate::proxy::read_buffers;

/// Response heads larger than this are refused (502): nginx's default proxy buffer is 4–8 KiB;
/// we allow more, as apps set many cookies.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_RESPONSE_HEADERS: usize = 200;
/// How much a read asks the kernel for at most.
const READ_CHUNK: usize = 16 * 1024;
/// Body pieces up to this size are copied out of the read buffer rather than shared with it.
const COPY_OUT_MAX: usize = 4 * 1024;

/// A connected socket to a server.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// An https:// server. Boxed: rustls's state is kilobytes; the plain variants stay small.
    Tls(Box<TlsStream<TlsIo>>),
}

/// The TCP socket under a TLS stream. In an `Option` so that it can be re-registered with
/// another worker's reactor in place, under the same rustls session: tokio-rustls has no way
/// to build a stream around an existing session.
#[derive(Debug)]
pub struct TlsIo(Option<TcpStream>);

impl TlsIo {
    pub fn new(stream: TcpStream) -> TlsIo {
        TlsIo(Some(stream))
    }

    /// The socket; `NotConnected` only after a failed move between runtimes (the stream is
    /// dropped then).
    fn socket(&mut self) -> io::Result<&mut TcpStream> {
        self.0
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().socket()?).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().socket()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().socket()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().socket()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().socket()?).poll_shutdown(cx)
    }
}

impl Stream {
    /// Reads what is there into `buf`'s spare capacity (the caller reserves it); `Ok(0)` is
    /// the end of the stream.
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        // Through `AsyncRead` rather than `try_read_buf`: a short read then clears the
        // socket's readiness, so the read after the next request waits for the server instead
        // of first failing with `EAGAIN` (one system call per request fewer).
        match self {
            Stream::Tcp(s) => tokio_util::io::poll_read_buf(Pin::new(s), cx, buf),
            Stream::Unix(s) => tokio_util::io::poll_read_buf(Pin::new(s), cx, buf),
            Stream::Tls(s) => tokio_util::io::poll_read_buf(Pin::new(s), cx, buf),
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    /// Plain sockets have nothing to flush; rustls may hold records the socket had no room
    /// for when a write returned.
    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(_) | Stream::Unix(_) => Poll::Ready(Ok(())),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    /// The same socket, registered with the calling thread's runtime (a connection that moves
    /// from one worker to another). TLS keeps its rustls session: only the socket under it
    /// moves.
    pub fn into_current_runtime(self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(TcpStream::from_std(s.into_std()?)?),
            Stream::Unix(s) => Stream::Unix(UnixStream::from_std(s.into_std()?)?),
            Stream::Tls(mut s) => {
                let io = &mut s.get_mut().0;
                let socket = io.0.take().ok_or(io::ErrorKind::NotConnected)?;
                io.0 = Some(TcpStream::from_std(socket.into_std()?)?);
                Stream::Tls(s)
            }
        })
    }

    /// Whether nothing was received past what has been read: always for plain sockets (their
    /// unread bytes stay in the kernel, where `idle_usable` looks); for TLS, rustls may hold
    /// records it read from the socket beyond the response (bytes nobody asked for, or the
    /// server's close_notify), which make the connection one not to reuse. No I/O.
    fn nothing_pending(&mut self) -> bool {
        match self {
            Stream::Tcp(_) | Stream::Unix(_) => true,
            Stream::Tls(s) => s.get_mut().1.process_new_packets().is_ok_and(|state| {
                state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed()
            }),
        }
    }

    /// Whether the server picked `h2` by ALPN (TLS only).
    pub fn alpn_h2(&self) -> bool {
        match self {
            Stream::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
            Stream::Tcp(_) | Stream::Unix(_) => false,
        }
    }

    /// Whether an idle connection is still usable: open, and with nothing unread (a server
    /// that closed it, or sent bytes nobody asked for, makes it unusable). One non-blocking
    /// peek; the keep-alive race (RFC 9112 §9.3.1) is mostly caught here. For TLS the peek is
    /// on the socket under it: a server's close_notify or a late TLS 1.3 session ticket both
    /// show as bytes there, and either makes the connection one not to reuse (a ticket only
    /// costs a new connection). Records rustls already took from the socket were checked when
    /// the connection went idle (`nothing_pending`).
    pub fn idle_usable(&self) -> bool {
        let mut byte = [0u8; 1];
        use std::os::fd::AsRawFd;
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tls(s) => match &s.get_ref().0.0 {
                Some(socket) => socket.as_raw_fd(),
                None => return false,
            },
        };
        // tokio has no non-blocking peek for unix sockets: ask the socket directly.
        // SAFETY: recv with MSG_PEEK | MSG_DONTWAIT into a valid one-byte buffer of ours.
        let n = unsafe {
            libc::recv(
                fd,
                byte.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let peeked = if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n)
        };
        matches!(peeked, Err(err) if err.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes all of `parts` (a vectored write: head and body go in one call), waiting for
    /// room as needed. With `early` (the response buffer), what the server sends meanwhile is
    /// read into it: a server may answer, and stream its answer, before it has read the whole
    /// request (an echo does), and would block on its own writes if nobody read them.
    /// `Ok(false)`: the server closed its side (or has no room left in `early`) while we still
    /// had bytes to write; the rest is not sent.
    async fn write_all_watching(
        &mut self,
        parts: &mut [&[u8]],
        mut early: Option<&mut BytesMut>,
    ) -> io::Result<bool> {
        poll_fn(|cx| self.poll_write_all_watching(cx, parts, early.as_deref_mut())).await
    }

    fn poll_write_all_watching(
        &mut self,
        cx: &mut Context<'_>,
        parts: &mut [&[u8]],
        mut early: Option<&mut BytesMut>,
    ) -> Poll<io::Result<bool>> {
        loop {
            let first = parts
                .iter()
                .position(|part| !part.is_empty())
                .unwrap_or(parts.len());
            let progress = if first == parts.len() {
                match self.poll_flush_tls(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Ok(true)),
                    Poll::Ready(Err(err)) if early.is_some() && is_reset(&err) => {
                        return Poll::Ready(Ok(false));
                    }
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => Poll::Pending,
                }
            } else {
                let mut slices = [IoSlice::new(&[]); 4];
                let count = (parts.len() - first).min(slices.len());
                for (slice, part) in slices.iter_mut().zip(&parts[first..first + count]) {
                    *slice = IoSlice::new(part);
                }
                self.poll_write_vectored(cx, &slices[..count])
            };
            match progress {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(mut written)) => {
                    for part in parts[first..].iter_mut() {
                        let take = written.min(part.len());
                        *part = &part[take..];
                        written -= take;
                        if written == 0 {
                            break;
                        }
                    }
                }
                Poll::Ready(Err(err)) if early.is_some() && is_reset(&err) => {
                    return Poll::Ready(Ok(false));
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                // No room: read what the server sends meanwhile, if we may.
                Poll::Pending => match early.as_deref_mut() {
                    Some(response) if response.len() < MAX_EARLY_RESPONSE => {
                        match self.poll_read_early(cx, response) {
                            Poll::Ready(Ok(true)) => {}
                            Poll::Ready(Ok(false)) => return Poll::Ready(Ok(false)),
                            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    _ => return Poll::Pending,
                },
            }
        }
    }

    /// Reads what the server sent while the request is still being written. `false` when it
    /// closed its side.
    fn poll_read_early(
        &mut self,
        cx: &mut Context<'_>,
        response: &mut BytesMut,
    ) -> Poll<io::Result<bool>> {
        if response.capacity() - response.len() < 1024 {
            response.reserve(READ_CHUNK);
        }
        match std::task::ready!(self.poll_read_buf(cx, response)) {
            Ok(0) => Poll::Ready(Ok(false)),
            Ok(_) => Poll::Ready(Ok(true)),
            Err(err) if is_reset(&err) => Poll::Ready(Ok(false)),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

/// How much of a response is read into memory while its request is still being sent.
const MAX_EARLY_RESPONSE: usize = 1024 * 1024;

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// An HTTP/1.1 connection to a server, between exchanges. Holds no buffer while idle.
#[derive(Debug)]
pub struct H1Conn {
    pub stream: Stream,
}

/// The server's switch to another protocol (101): the connection, with whatever the server
/// sent after its 101 head, for the client side to tunnel.
pub type UpstreamUpgrade = TakeOnce<(Stream, Bytes)>;

/// How an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Nothing of the request reached the server, or the server closed a reused connection
    /// without a byte of response: the request may go out again on another connection.
    #[error("connection closed before the request was answered: {0}")]
    Closed(io::Error),
    /// The client's body failed (its fault): no server failure.
    #[error("{0}")]
    Body(BodyError),
    /// The server broke the exchange after the request (or part of it) was sent.
    #[error("{0}")]
    Server(String),
    #[error("{0}")]
    Io(io::Error),
}

/// What an exchange gives back: the response head, the connection and the bytes already read
/// past the head.
pub struct Answer {
    pub head: ResponseHead,
    pub conn: H1Conn,
    pub buf: BytesMut,
    /// The server answered before the whole request body was sent: the connection cannot
    /// carry another request.
    pub body_unfinished: bool,
}

/// Sends one request on `conn` and reads the response head. The request target is the URI's
/// path and query; `headers` are sent as they are, with the framing headers set here from the
/// body's length, then `added` (complete field lines, raw_fields.rs).
pub async fn exchange<B: RequestBody>(
    mut conn: H1Conn,
    request: &mut Request<B>,
    added: &[u8],
) -> Result<Answer, ExchangeError> {
    let mut head = read_buffers::WriteBuf::take();
    let length = request.body().length();
    let (chunked, framing) = frame_request(request.headers_mut(), length);
    // An empty path is `/` in origin-form (RFC 9112 §3.2.1), also before a query.
    let target = match request.uri().path_and_query().map(|target| target.as_str()) {
        Some(target) if target.starts_with('?') => std::borrow::Cow::Owned(format!("/{target}")),
        Some(target) if !target.is_empty() => std::borrow::Cow::Borrowed(target),
        _ => std::borrow::Cow::Borrowed("/"),
    };
    head::write_request_head(
        &mut head,
        request.method(),
        &target,
        request.headers(),
        &[added, framing.as_deref().unwrap_or_default()],
    );
    let body = request.body_mut();

    let stream = &mut conn.stream;
    // A body that is whole in memory goes out with the head in one write.
    let mut first = None;
    let mut ended = length == BodyLength::Exact(0);
    if !ended && length != BodyLength::Unknown {
        match body.next_data().await {
            Some(Ok(data)) => first = Some(data),
            Some(Err(err)) => return Err(ExchangeError::Body(err)),
            None => ended = true,
        }
    }
    // A chunked body (length unknown) is never pulled here: the first data goes unframed.
    let first_data = first.as_deref().unwrap_or_default();
    let head_written = stream
        .write_all_watching(&mut [&head[..], first_data], None)
        .await
        .map_err(ExchangeError::Closed)?;
    debug_assert!(head_written);
    let mut buf = BytesMut::new();
    let mut unfinished = false;
    if !ended {
        unfinished = !write_body(stream, body, chunked, &mut buf).await?;
    }
    let limits = HeadLimits {
        max_head_bytes: MAX_RESPONSE_HEAD,
        max_headers: MAX_RESPONSE_HEADERS,
        max_uri_bytes: MAX_RESPONSE_HEAD,
    };
    loop {
        match head::parse_response(&buf, request.method(), &limits) {
            Ok(Some((response, length))) => {
                buf.advance(length);
                let status = response.status.as_u16();
                if status == 100 {
                    // Our own `Expect` handling answered the client already (we never pass
                    // `Expect` on); a server that sends 100 anyway is skipped.
                    continue;
                }
                if (102..200).contains(&status) {
                    request
                        .body_mut()
                        .informational(status, &response.headers)
                        .await;
                    continue;
                }
                return Ok(Answer {
                    head: response,
                    conn,
                    buf,
                    body_unfinished: unfinished,
                });
            }
            Ok(None) => {}
            Err(err) => return Err(ExchangeError::Server(err.reason.to_string())),
        }
        let read = read_some(&mut conn.stream, &mut buf).await;
        match read {
            Ok(0) if buf.is_empty() => {
                return Err(ExchangeError::Closed(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => {
                return Err(ExchangeError::Server(
                    "connection closed in the response head".into(),
                ));
            }
            Ok(_) => {}
            // A TLS server that closes without close_notify reads as an unexpected end.
            Err(err)
                if buf.is_empty()
                    && (is_reset(&err) || err.kind() == io::ErrorKind::UnexpectedEof) =>
            {
                return Err(ExchangeError::Closed(err));
            }
            Err(err) => return Err(ExchangeError::Io(err)),
        }
    }
}

/// Sets the request's framing headers from the body length (RFC 9112 §6): `Content-Length`
/// when known (an empty body keeps the client's own `Content-Length: 0`, and gets none
/// otherwise, as the client sent it), else `Transfer-Encoding: chunked`. A `Content-Length` the
/// request has keeps its place; a framing field it did not have comes back as a head line, to
/// go last, after the fields the proxy adds (as a field appended to the map last would).
/// Whether the body goes chunked.
fn frame_request(
    headers: &mut HeaderMap,
    length: BodyLength,
) -> (bool, Option<std::borrow::Cow<'static, [u8]>>) {
    headers.remove(header::TRANSFER_ENCODING);
    match length {
        BodyLength::Exact(0) => {
            if headers.contains_key(header::CONTENT_LENGTH) {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            }
            (false, None)
        }
        BodyLength::Exact(length) => {
            if headers.contains_key(header::CONTENT_LENGTH) {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
                return (false, None);
            }
            (
                false,
                Some(format!("content-length: {length}\r\n").into_bytes().into()),
            )
        }
        BodyLength::Unknown => {
            headers.remove(header::CONTENT_LENGTH);
            (true, Some((&b"transfer-encoding: chunked\r\n"[..]).into()))
        }
    }
}

/// Writes the rest of the body, reading what the server answers meanwhile into `response`.
/// `Ok(false)`: the server closed its side first (the rest is not sent).
async fn write_body<B: RequestBody>(
    stream: &mut Stream,
    body: &mut B,
    chunked: bool,
    response: &mut BytesMut,
) -> Result<bool, ExchangeError> {
    loop {
        // Waiting for the client: the server may answer meanwhile. The pull is not cancelled
        // for that (a pull may be writing a 100 Continue to the client).
        let next = {
            let mut pull = std::pin::pin!(body.next_data());
            let waited = poll_fn(|cx| {
                if let Poll::Ready(next) = pull.as_mut().poll(cx) {
                    return Poll::Ready(Ok(Some(next)));
                }
                while response.len() < MAX_EARLY_RESPONSE {
                    match std::task::ready!(stream.poll_read_early(cx, response)) {
                        Ok(true) => {}
                        Ok(false) => return Poll::Ready(Ok(None)),
                        Err(err) => return Poll::Ready(Err(err)),
                    }
                }
                Poll::Pending
            })
            .await;
            match waited.map_err(ExchangeError::Io)? {
                Some(next) => next,
                // The server closed its side first.
                None => return Ok(false),
            }
        };
        let end = next.is_none();
        let written = match next {
            Some(Ok(data)) => {
                if chunked {
                    let header = chunked::chunk_header(data.len());
                    stream
                        .write_all_watching(&mut [&header, &data, chunked::CRLF], Some(response))
                        .await
                } else {
                    stream
                        .write_all_watching(&mut [&data], Some(response))
                        .await
                }
            }
            Some(Err(err)) => return Err(ExchangeError::Body(err)),
            None if chunked => {
                stream
                    .write_all_watching(&mut [chunked::LAST_CHUNK], Some(response))
                    .await
            }
            None => return Ok(true),
        };
        match written {
            Ok(true) if end => return Ok(true),
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(err) => return Err(ExchangeError::Io(err)),
        }
    }
}

async fn read_some(stream: &mut Stream, buf: &mut BytesMut) -> io::Result<usize> {
    read_buffers::make_room(buf, READ_CHUNK);
    poll_fn(|cx| stream.poll_read_buf(cx, buf)).await
}

fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Turns an answer into the response the proxy passes on: a 101 carries the connection for the
/// tunnel (`UpstreamUpgrade`), anything else a body that reads the connection (waiting at most
/// `gap`, the server's `body_gap`, for each read) and gives it back to `server`'s pool when
/// `keep` and read to its end.
pub fn into_response(
    answer: Answer,
    server: Option<Weak<ServerConnections>>,
    keep: bool,
    gap: Duration,
) -> Response<crate::proxy::Body> {
    let Answer {
        head,
        conn,
        buf,
        body_unfinished,
    } = answer;
    let mut response = Response::new(crate::proxy::empty_body());
    *response.status_mut() = head.status;
    *response.version_mut() = hyper::Version::HTTP_11;
    *response.headers_mut() = head.headers;
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        let upgrade = UpstreamUpgrade::new((conn.stream, buf.freeze()));
        response.extensions_mut().insert(upgrade);
        return response;
    }
    let keep = keep && head.keep_alive && !body_unfinished;
    let state = match head.framing {
        Framing::Empty | Framing::Length(0) => BodyState::Done,
        Framing::Length(length) => BodyState::Length(length),
        Framing::Chunked => BodyState::Chunked(ChunkedDecoder::new()),
        Framing::CloseDelimited => BodyState::UntilClose,
    };
    let mut body = UpstreamBody {
        conn: Some(conn),
        buf,
        state,
        server,
        keep,
        quiet: QuietTimer::new(gap),
    };
    if matches!(body.state, BodyState::Done) {
        body.finish();
        return response;
    }
    *response.body_mut() = http_body_util::combinators::BoxBody::new(body);
    response
}

enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A server's response body, read from its connection as the client side asks for it.
pub struct UpstreamBody {
    conn: Option<H1Conn>,
    buf: BytesMut,
    state: BodyState,
    /// Where the connection goes back to (when `keep`), and who is named when it stalls.
    server: Option<Weak<ServerConnections>>,
    keep: bool,
    /// The longest wait for the next data (`ConnTimeouts::body_gap`).
    quiet: QuietTimer,
}

impl UpstreamBody {
    /// The body has been read to its end: the connection goes back to its pool, if it may
    /// carry another request (nothing unread after the body). One that may not is closed
    /// when the body is dropped, after its data has been handed on: the close is not on the
    /// way of the client's response.
    fn finish(&mut self) {
        self.state = BodyState::Done;
        self.quiet.stop();
        if let (Some(conn), Some(pool)) = (self.conn.as_mut(), self.server.as_ref())
            && std::mem::take(&mut self.keep)
            && self.buf.is_empty()
            && conn.stream.nothing_pending()
            && let Some(pool) = pool.upgrade()
            && let Some(conn) = self.conn.take()
        {
            // What the pool does not keep is closed with the body, after the client has its
            // response: a close here would come before the response is written.
            self.conn = pool.release(conn);
        }
        // Kept for the thread's next response unless a body chunk handed on still shares it.
        read_buffers::give_back(std::mem::take(&mut self.buf), READ_CHUNK);
    }

    /// The next data from what is buffered, if any; advances the framing.
    fn take_buffered(&mut self) -> Result<Option<Bytes>, BoxError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        match &mut self.state {
            BodyState::Length(remaining) => {
                let take = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                // A small piece is copied out, so that the read buffer stays unshared and is
                // kept for the thread's next response (`read_buffers`); a large one is handed
                // on without a copy.
                let data = if take <= COPY_OUT_MAX {
                    let data = Bytes::copy_from_slice(&self.buf[..take]);
                    self.buf.advance(take);
                    data
                } else {
                    self.buf.split_to(take).freeze()
                };
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.finish();
                }
                Ok(Some(data))
            }
            BodyState::Chunked(_) => loop {
                let BodyState::Chunked(decoder) = &mut self.state else {
                    return Ok(None);
                };
                let decoded = decoder
                    .decode(&self.buf)
                    .map_err(|err| BoxError::from(format!("server's chunked body: {}", err.0)))?;
                let mut used = self.buf.split_to(decoded.consumed);
                if decoded.done {
                    self.finish();
                }
                if !decoded.data.is_empty() {
                    return Ok(Some(used.split_off(decoded.data.start).freeze()));
                }
                if decoded.done || self.buf.is_empty() {
                    return Ok(None);
                }
            },
            BodyState::UntilClose => Ok(Some(self.buf.split().freeze())),
            BodyState::Done => Ok(None),
        }
    }

    /// The body's error for a server quiet for longer than the gap.
    fn stalled(&mut self) -> BoxError {
        let server = self.server.as_ref().and_then(Weak::upgrade);
        let name = server.as_ref().map_or(String::new(), |s| s.url.to_string());
        self.conn = None;
        self.state = BodyState::Done;
        self.quiet.expired(&name)
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match this.take_buffered() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => {}
                Err(err) => {
                    this.conn = None;
                    this.state = BodyState::Done;
                    return Poll::Ready(Some(Err(err)));
                }
            }
            if matches!(this.state, BodyState::Done) {
                return Poll::Ready(None);
            }
            let Some(conn) = &mut this.conn else {
                return Poll::Ready(None);
            };
            let want = match this.state {
                BodyState::Length(remaining) => usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(READ_CHUNK),
                _ => READ_CHUNK,
            };
            if this.buf.capacity() - this.buf.len() < want.min(1024) {
                this.buf.reserve(want);
            }
            let read = match conn.stream.poll_read_buf(cx, &mut this.buf) {
                Poll::Ready(read) => read,
                Poll::Pending => {
                    if this.quiet.poll_expired(cx).is_ready() {
                        return Poll::Ready(Some(Err(this.stalled())));
                    }
                    return Poll::Pending;
                }
            };
            match read {
                Ok(0) => {
                    let state = std::mem::replace(&mut this.state, BodyState::Done);
                    this.conn = None;
                    return Poll::Ready(match state {
                        BodyState::UntilClose => None,
                        _ => Some(Err(
                            "server closed the connection in the response body".into()
                        )),
                    });
                }
                Ok(_) => this.quiet.saw_data(),
                Err(err) => {
                    this.conn = None;
                    this.state = BodyState::Done;
                    return Poll::Ready(Some(Err(err.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Length(remaining) => SizeHint::with_exact(remaining),
            BodyState::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
