//! Accepting client connections: bind, the per-listener connection limit, the TLS handshake,
//! then our HTTP/1.x engine (h1_server.rs) or hyper's HTTP/2 server (by ALPN, or the
//! prior-knowledge preface on plain connections), our header-read and keep-alive clocks for
//! HTTP/2, and graceful close.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};

use http_body_util::BodyExt;
use hyper::{server::conn::http2, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};
use tokio_util::task::TaskTracker;

use crate::clock;

use super::{
    BoxError,
    activity::{Activity, WatchedIo},
    buffering::request::ForwardBody,
    client_connection::{CloseReason, Closing, ConnHold, ConnLimits},
    coalesce::Coalesced,
    h1::request_body::BoxedBody,
    h1_server::ClientStream,
    handler::{self, ConnInfo, Shared},
    in_place,
    wait_timer::WaitTimer,
};

/// Connections waiting to be accepted: enough for bursts of new TLS connections.
const BACKLOG: i32 = 4096;

/// Binds the `count` listening sockets of `address`, one per worker, in one `SO_REUSEPORT`
/// group: the kernel spreads new connections over them, so an idle worker never wakes for a
/// connection another one takes (one shared socket wakes every worker's reactor).
///
/// `SO_REUSEPORT` would also let a second process bind the address and take part of its
/// connections silently. So the address is first bound without it: anything listening there
/// already is an error, as it is without the group.
pub fn bind_group(
    address: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    if address.port() != 0 {
        drop(new_socket(address, false)?);
    }
    let first = listen(address)?;
    // Port 0: the others join the port the first one got.
    let address = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count.max(1) {
        sockets.push(listen(address)?);
    }
    Ok(sockets)
}

/// Another socket in the `SO_REUSEPORT` group of `address` (which must exist): for a worker
/// the sockets taken over from an older process do not cover.
pub fn join_group(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    listen(address)
}

/// Whether `socket` was bound with `SO_REUSEPORT`, so that another may join its group (not so
/// for sockets handed over by a balancer older than the per-worker sockets).
pub fn reuses_port(socket: &std::net::TcpListener) -> bool {
    socket2::SockRef::from(socket).reuse_port().unwrap_or(false)
}

/// A listening socket in the `SO_REUSEPORT` group of `address`.
fn listen(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = new_socket(address, true)?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A non-blocking socket bound to `address`. IPv6 sockets are IPv6-only so that `0.0.0.0:443`
/// and `[::]:443` can both be configured.
fn new_socket(address: SocketAddr, reuse_port: bool) -> std::io::Result<socket2::Socket> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

/// Sets `TCP_NODELAY` (responses go out as they are written) on the listening socket rather
/// than on each accepted connection: Linux copies it to every connection the socket accepts,
/// one system call per connection fewer.
fn accept_with_nodelay(socket: &std::net::TcpListener) -> std::io::Result<()> {
    socket2::SockRef::from(socket).set_tcp_nodelay(true)
}

/// A bound listener and what its accept loop needs.
pub struct AcceptLoop {
    /// The configured address: what identifies the listener in the current state (a reload
    /// may rename the listener of an address).
    pub bind: SocketAddr,
    pub limit: Arc<Semaphore>,
    pub shared: Arc<Shared>,
    pub tracker: TaskTracker,
    /// Set when the listener stops: accept no more, and tell its connections why.
    pub stop: watch::Receiver<Option<CloseReason>>,
}

impl AcceptLoop {
    /// Accepts on `socket` (registered with the runtime this runs on) until stopped.
    pub async fn run(mut self, socket: std::net::TcpListener) {
        // Here rather than at bind, so that sockets handed over by an older process get it too.
        if let Err(err) = accept_with_nodelay(&socket) {
            tracing::warn!(bind = %self.bind, "cannot set TCP_NODELAY on the listening socket: {err}");
        }
        let listener = match TcpListener::from_std(socket) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(bind = %self.bind, "cannot accept on the listening socket: {err}");
                return;
            }
        };
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors or similar: back off instead of spinning.
                        tracing::warn!("accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = self.stop.changed() => return,
            };
            // Accepted first, then held until the listener's limit lets it in: each worker
            // accepts on its own socket, and a permit taken before accepting could sit with a
            // worker whose socket gets no connection while another's waits. Each accept loop
            // holds at most one connection beyond the limit; the rest wait in the kernel.
            // Not given up when the listener stops: an accepted connection dropped here would
            // be reset, where after a handover it must still be served by this process.
            let Ok(permit) = self.limit.clone().acquire_owned().await else {
                return;
            };
            // What the connection needs from the current state, read here (a borrow, not a
            // count on the state): its limits, its TLS config and its listener's counters (kept
            // by the listener's state, not looked up by label per connection).
            let state = self.shared.state.load();
            let Some(listener) = state.listener_at(self.bind) else {
                continue;
            };
            let metrics = &self.shared.metrics;
            listener.metrics.accepted(metrics).inc();
            let open = listener.metrics.open(metrics).clone();
            open.inc();
            let accepted = Accepted {
                bind: self.bind,
                peer,
                limits: ConnLimits::of(&listener.config),
                tls: listener.tls.clone(),
                hold: ConnHold::new(permit, open),
            };
            drop(state);
            let shared = self.shared.clone();
            let closing = Closing::new(self.stop.clone());
            // The task is `serve_connection`'s future itself, not a block around it that
            // would hold a second copy of its arguments for the connection's whole life.
            self.tracker.spawn(clock::per_poll(serve_connection(
                shared, stream, accepted, closing,
            )));
        }
    }
}

/// An accepted connection as its task gets it from the accept loop.
struct Accepted {
    bind: SocketAddr,
    peer: SocketAddr,
    limits: ConnLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Counted in the listener's open connections and its limit until the connection ends.
    hold: ConnHold,
}

/// An accepted connection's task: TLS or HTTP/2 to the end, or a plain HTTP/1.x connection's
/// start (sniffing its first bytes) and then its HTTP/1.x loop. One task for the connection's
/// whole life, without the loop's state sitting beside the start's (see [`ConnectionTask`]).
fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    accepted: Accepted,
    closing: Closing,
) -> ConnectionTask<impl Future<Output = Option<Http1Start>>, impl Future<Output = ()>> {
    ConnectionTask::Starting {
        start: start_connection(shared, stream, accepted, closing),
        serve: serve_http1,
    }
}

/// What a plain connection that speaks HTTP/1.x takes into the engine's loop.
struct Http1Start {
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    limits: ConnLimits,
    stream: TcpStream,
    first: BytesMut,
    closing: Closing,
    hold: ConnHold,
}

fn serve_http1(start: Http1Start) -> impl Future<Output = ()> {
    super::h1_server::serve(
        start.shared,
        start.info,
        start.limits,
        start.stream,
        start.first,
        start.closing,
        start.hold,
    )
}

pin_project_lite::pin_project! {
    /// The two stages of a connection's task, one after the other in the same place: an
    /// `async fn` that awaited the loop after the start would hold the start's locals (moved
    /// into the loop, so never overlapped with it) beside the loop for the connection's life,
    /// 400 bytes more per idle connection; a second task for the loop costs a spawn, and a
    /// turn of the scheduler on the first request's path.
    #[project = ConnectionStage]
    enum ConnectionTask<S, F> {
        Starting { #[pin] start: S, serve: fn(Http1Start) -> F },
        Serving { #[pin] serve: F },
    }
}

impl<S, F> Future for ConnectionTask<S, F>
where
    S: Future<Output = Option<Http1Start>>,
    F: Future<Output = ()>,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.as_mut().project() {
                ConnectionStage::Starting { start, serve } => match start.poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Ready(Some(http1)) => {
                        // The start's future is dropped here, in place, as the loop's takes
                        // its room.
                        let serve = (*serve)(http1);
                        self.set(ConnectionTask::Serving { serve });
                    }
                },
                ConnectionStage::Serving { serve } => return serve.poll(cx),
            }
        }
    }
}

async fn start_connection(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    accepted: Accepted,
    closing: Closing,
) -> Option<Http1Start> {
    let Accepted {
        bind,
        peer,
        limits,
        tls,
        hold,
    } = accepted;
    let activity = Activity::new();
    match tls {
        None => {
            // Built before the sniffing, not after: the addresses are then not held beside its
            // timer, which keeps this start stage smaller than the HTTP/1.x loop that takes its
            // place (and so every idle connection's task no larger than the loop's state).
            let info = Arc::new(ConnInfo {
                bind,
                peer,
                sni: None,
                tls: false,
                activity,
            });
            // Which protocol: see `first_bytes`.
            let sniffed =
                tokio::time::timeout(limits.header_read_timeout(), first_bytes(&mut stream)).await;
            if let Ok(Ok((first, h2))) = sniffed {
                if h2 {
                    info.activity.set_http2();
                    let io = WatchedIo::new(
                        Prefixed {
                            first: first.freeze(),
                            stream,
                        },
                        info.activity.clone(),
                    );
                    // Boxed: HTTP/2's connection state is the larger, and every HTTP/1.1
                    // connection's task would otherwise reserve room for it.
                    Box::pin(serve_h2(shared, limits, info, io, closing)).await;
                } else {
                    return Some(Http1Start {
                        shared,
                        info,
                        limits,
                        stream,
                        first,
                        closing,
                        hold,
                    });
                }
            }
        }
        // Boxed: the handshake and the TLS stream are large, and a plain connection's task
        // would otherwise reserve room for them for its whole life.
        Some(tls) => {
            let io = WatchedIo::new(stream, activity.clone());
            Box::pin(serve_tls(
                shared, limits, tls, bind, peer, io, activity, closing, hold,
            ))
            .await;
        }
    }
    None
}

#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one accepted connection"
)]
async fn serve_tls(
    shared: Arc<Shared>,
    limits: ConnLimits,
    tls: Arc<rustls::ServerConfig>,
    bind: SocketAddr,
    peer: SocketAddr,
    io: WatchedIo<TcpStream>,
    activity: Arc<Activity>,
    closing: Closing,
    hold: ConnHold,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handshake = tokio::time::timeout(limits.header_read_timeout(), acceptor.accept(io)).await;
    match handshake {
        Ok(Ok(stream)) => {
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                activity.set_http2();
            }
            let sni = stream
                .get_ref()
                .1
                .server_name()
                .map(str::to_ascii_lowercase);
            let info = Arc::new(ConnInfo {
                bind,
                peer,
                sni,
                tls: true,
                activity,
            });
            if info.activity.is_http2() {
                serve_h2(shared, limits, info, stream, closing).await;
            } else {
                // A task of its own: an idle connection keeps the loop's state and the TLS
                // stream, not the handshake's room.
                let tracker = shared.tracker.clone();
                tracker.spawn(clock::per_poll(super::h1_server::serve(
                    shared,
                    info,
                    limits,
                    stream,
                    BytesMut::new(),
                    closing,
                    hold,
                )));
            }
        }
        Ok(Err(err)) => tracing::debug!(%peer, "TLS handshake failed: {err}"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4): a plain connection that starts with it speaks
/// HTTP/2 with prior knowledge.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much the first read of a plain connection asks for (the HTTP/1.1 engine's read size).
const FIRST_READ: usize = 8 * 1024;

/// The first bytes of a plain connection, and whether they are the HTTP/2 preface. They are
/// read, not peeked (one system call fewer per connection), and handed to the protocol's
/// engine. Empty when the client closed before sending anything. The buffer is one of the
/// thread's kept read buffers: the HTTP/1.x engine reads on in it and hands it back between
/// requests, so a new buffer per connection was a new allocation (and, one connection at a
/// time, a fresh allocator page) for every connection.
async fn first_bytes(stream: &mut TcpStream) -> std::io::Result<(BytesMut, bool)> {
    let mut first = super::read_buffers::take(FIRST_READ);
    loop {
        // Through `AsyncRead`, not `try_read_buf`: a short read then clears the socket's
        // readiness, so the engine's wait for the next request does not wake at once.
        if stream.read_buf(&mut first).await? == 0 {
            return Ok((first, false));
        }
        let seen = first.len().min(H2_PREFACE.len());
        if first[..seen] != H2_PREFACE[..seen] {
            return Ok((first, false));
        }
        if seen == H2_PREFACE.len() {
            return Ok((first, true));
        }
        // A part of the preface so far: read on.
    }
}

/// A stream whose first bytes were already read: they are read again first.
struct Prefixed {
    first: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.first.is_empty() {
            let take = self.first.len().min(buf.remaining());
            buf.put_slice(&self.first.split_to(take));
            if self.first.is_empty() {
                // An empty slice still holds the first read's whole buffer: let it go.
                self.first = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// An HTTP/2 connection (plain with prior knowledge, or TLS with ALPN h2): hyper's server.
async fn serve_h2<I>(
    shared: Arc<Shared>,
    limits: ConnLimits,
    info: Arc<ConnInfo>,
    io: I,
    signal: Closing,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = info.activity.clone();
    let service = service_fn(
        move |request: hyper::Request<hyper::body::Incoming>| -> HandlerFuture {
            let shared = shared.clone();
            let info = info.clone();
            in_place::boxed(|| async move {
                let mut request = request.map(|body| {
                    ForwardBody::new(BoxedBody::new(body.map_err(BoxError::from).boxed()))
                });
                // Each stream is a task of its own: a timer of its own for its one request.
                let timer = std::pin::pin!(WaitTimer::new());
                Ok(handler::handle(&shared, &info, &mut request, timer).await)
            })
        },
    );
    let connection =
        http2_builder(&limits).serve_connection(TokioIo::new(Coalesced::new(io)), service);
    drive(
        connection,
        |c| c.graceful_shutdown(),
        &activity,
        limits,
        signal,
    )
    .await;
}

/// Spawns the tasks hyper's HTTP/2 server runs a stream's request in, each with the time
/// cached per poll as a connection's task has it (clock.rs).
#[derive(Clone, Copy)]
struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        // Boxed once, here: tokio moves a task's future several times while it spawns it
        // (and writes its whole stage again when it ends), and hyper's stream future is a few
        // hundred bytes; a pointer moves for nothing (callgrind: `memcpy` under
        // `execute_h2stream`, `raw::poll` and `Harness::complete`).
        tokio::spawn(clock::per_poll(Box::pin(stream)));
    }
}

fn http2_builder(limits: &ConnLimits) -> http2::Builder<StreamExecutor> {
    let mut builder = http2::Builder::new(StreamExecutor);
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes()).unwrap_or(u32::MAX))
        // RFC 8441: WebSockets over HTTP/2 streams.
        .enable_connect_protocol();
    builder
}

/// Runs a served connection to its end under our clocks (activity.rs): closes it when its
/// header or keep-alive time is up, and asks it (`graceful`) to finish the requests in flight
/// and close when the proxy shuts down or the listener is removed.
async fn drive<C, E>(
    connection: C,
    graceful: fn(Pin<&mut C>),
    activity: &Activity,
    limits: ConnLimits,
    mut signal: Closing,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut connection = std::pin::pin!(connection);
    let mut closing = false;
    loop {
        let deadline = activity
            .deadline(limits.header_read_timeout(), limits.keepalive_timeout())
            .unwrap_or_else(|| std::time::Instant::now() + limits.header_read_timeout());
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!("client connection ended: {err}");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                let expired = activity
                    .deadline(limits.header_read_timeout(), limits.keepalive_timeout())
                    .is_some_and(|deadline| deadline <= std::time::Instant::now());
                if expired {
                    // Nothing is in flight: dropping the connection loses no response.
                    return;
                }
            }
            reason = signal.signalled(), if !closing => {
                // After a handover an HTTP/1.x connection is left to end after its next
                // response (`Connection: close`); closing it while idle could race a request
                // the client is sending. HTTP/2 has GOAWAY for exactly this.
                if reason == CloseReason::Close || activity.is_http2() {
                    closing = true;
                    graceful(connection.as_mut());
                }
            }
        }
    }
}

/// The service's future, boxed per request: hyper keeps room for one in-flight future for
/// the connection's whole life, and the handler's is several KiB.
type HandlerFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    hyper::Response<super::access_log::LoggedBody>,
                    std::convert::Infallible,
                >,
            > + Send,
    >,
>;

// `poll_read_ready` rather than `readable()`: it parks the waker in the socket's own reader
// slot, where `readable()`'s future carries a waiter node of its own. An idle connection's
// task holds this future, and the node made it 160 bytes larger (and the task a size class
// larger).
impl ClientStream for TcpStream {
    fn wait_readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        std::future::poll_fn(|cx| self.poll_read_ready(cx))
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<WatchedIo<TcpStream>> {
    const CLOSE_NOTIFY: bool = true;

    fn wait_readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        let socket = self.get_ref().0.get_ref();
        std::future::poll_fn(|cx| socket.poll_read_ready(cx))
    }

    fn has_buffered(&mut self) -> bool {
        // Plaintext rustls decrypted already (a pipelined request) is not on the socket any
        // more: waiting for the socket would stall it.
        self.get_mut()
            .1
            .process_new_packets()
            .map_or(true, |state| state.plaintext_bytes_to_read() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of a function's future, from the function alone.
    fn future_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle plain connection's task holds its stage of the two: the start must not be the
    /// larger, or every idle keep-alive connection would pay for it (the memory target is
    /// 1.5 KiB per connection, task included).
    #[test]
    fn the_start_stage_is_no_larger_than_the_http1_loop() {
        fn loop_size<A, B, C, D, E, G, H, F>(_: fn(A, B, C, D, E, G, H) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let start = future_size(start_connection);
        let serve = loop_size(super::super::h1_server::serve::<TcpStream>);
        let task = future_size(serve_connection);
        assert!(start <= serve, "start stage {start} bytes, loop {serve}");
        assert!(
            task <= serve + 16,
            "the connection's task {task} bytes against the loop's {serve}"
        );
        // tokio 1.54 allocates a task in 128-byte steps: 104 bytes of header, scheduler, id,
        // stage tag and trailer around the future. Up to 664 bytes of future, an idle
        // connection's task takes 768 bytes; one byte more costs every idle connection 128
        // (bench_l7's idle row went from 1.49 to 1.59 KiB per connection when a close-signal
        // wait kept for the connection's life added 56 bytes to the loop).
        assert!(
            task <= 664,
            "the connection's task is {task} bytes: past 664, an idle connection takes 896"
        );
    }

    #[test]
    fn accepted_connections_inherit_nodelay_from_the_listening_socket() {
        for address in ["127.0.0.1:0", "[::1]:0"] {
            let address: SocketAddr = address.parse().unwrap();
            let Ok(mut sockets) = bind_group(address, 1) else {
                // No IPv6 loopback on this host.
                continue;
            };
            let socket = sockets.remove(0);
            socket.set_nonblocking(false).unwrap();
            accept_with_nodelay(&socket).unwrap();
            let _client = std::net::TcpStream::connect(socket.local_addr().unwrap()).unwrap();
            let (accepted, _) = socket.accept().unwrap();
            assert!(
                accepted.nodelay().unwrap(),
                "{address}: TCP_NODELAY not inherited"
            );
        }
    }
}
