//! Client connections to ONE server of a pool: connect (TCP or unix socket), HTTP/1.1 keep-alive
//! with a bounded idle list, or one shared HTTP/2 prior-knowledge (h2c) connection.
//!
//! Our own pool rather than hyper-util's legacy `Client`, because the proxy must know whether a
//! request was written before a failure (then it must not be retried on another server) and
//! must count connections.
//!
//! # Sent or not sent
//!
//! [`ServerConnections::checkout`] failing means nothing was sent. [`Checkout::send`] uses
//! hyper's `try_send_request`, which hands back a request that was never written to the
//! connection. A reused idle connection can have been closed by the server just before (the
//! keep-alive race): when such a connection gives the request back, it is sent again, ONCE, on
//! a brand-new connection to the same server. [`SendError::NotSent`] is returned only when that
//! new connection cannot be made (or closes before the request is written): the caller may
//! then send the request to another server. [`SendError::Failed`] means the request may have
//! reached the server.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::{TrySendError, http1, http2};
use hyper::header::{CONNECTION, HOST, HeaderMap};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tracing::debug;

use super::{Body, BoxError};
use crate::config::{KeepaliveConfig, ServerUrl};

/// The longest a checkout waits for an idle HTTP/1.1 connection to be ready for its next
/// request (it normally is at once: the previous response was read to its end).
const READY_WAIT: Duration = Duration::from_secs(1);

/// Why no connection could be made. Nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out")]
    Timeout,
    #[error("connection refused")]
    Refused(io::Error),
    #[error("connect failed: {0}")]
    Io(io::Error),
    #[error("cannot resolve server address: {0}")]
    Resolve(io::Error),
    /// The HTTP handshake failed, or a new connection closed before its first request was
    /// written.
    #[error("HTTP connection failed: {0}")]
    Handshake(hyper::Error),
}

impl From<io::Error> for ConnectError {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::ConnectionRefused {
            ConnectError::Refused(error)
        } else {
            ConnectError::Io(error)
        }
    }
}

/// Why [`Checkout::send`] gave no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The request was not written to any connection (the reused connection was closed and
    /// the one retry on a new connection failed): it may be sent to another server.
    #[error("request not sent: {0}")]
    NotSent(ConnectError),
    /// Failed after (part of) the request may have been written. The hyper error is the
    /// source, so that a caller can find what caused it (e.g. the request body's own error,
    /// such as the route's body limit, which the handler turns into 413).
    #[error("request failed: {0}")]
    Failed(#[source] hyper::Error),
}

impl SendError {
    /// Whether the request may have reached the server.
    pub fn request_sent(&self) -> bool {
        matches!(self, SendError::Failed(_))
    }
}

/// The connections to one server. Shared as `Arc`; one per server of a pool.
pub struct ServerConnections {
    url: ServerUrl,
    keepalive: KeepaliveConfig,
    connect_timeout: Duration,
    h2c: bool,
    opened: AtomicU64,
    /// HTTP/1.1 idle connections, oldest first (checkout takes the newest).
    idle: Mutex<VecDeque<Idle>>,
    /// h2c: the shared connection.
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    /// h2c: held while a new shared connection is made, so that one is made at a time.
    h2_connecting: tokio::sync::Mutex<()>,
}

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

impl std::fmt::Debug for ServerConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConnections")
            .field("url", &self.url)
            .field("h2c", &self.h2c)
            .field("opened", &self.connections_opened())
            .field("idle", &self.idle_connections())
            .finish_non_exhaustive()
    }
}

impl ServerConnections {
    /// Connections to `url`. Called inside a tokio runtime, this starts a light sweep task
    /// dropping expired idle connections; it ends when the `ServerConnections` is dropped.
    pub fn new(
        url: ServerUrl,
        keepalive: KeepaliveConfig,
        connect_timeout: Duration,
        h2c: bool,
    ) -> Arc<Self> {
        let this = Arc::new(Self {
            url,
            keepalive,
            connect_timeout,
            h2c,
            opened: AtomicU64::new(0),
            idle: Mutex::new(VecDeque::new()),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
        });
        if this.keeps_idle()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let every = (keepalive.idle_timeout / 2)
                .clamp(Duration::from_millis(50), Duration::from_secs(5));
            runtime.spawn(sweep_idle(Arc::downgrade(&this), every));
        }
        this
    }

    pub fn url(&self) -> &ServerUrl {
        &self.url
    }

    /// Connections made since start (TCP or unix connect plus HTTP handshake succeeded).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// HTTP/1.1: the idle connections (open and not expired). h2c: 1 while the shared
    /// connection is open, else 0.
    pub fn idle_connections(&self) -> usize {
        if self.h2c {
            return usize::from(lock(&self.h2).as_ref().is_some_and(|s| !s.is_closed()));
        }
        let timeout = self.keepalive.idle_timeout;
        lock(&self.idle)
            .iter()
            .filter(|e| e.since.elapsed() < timeout && !e.sender.is_closed())
            .count()
    }

    /// Drops every idle connection (server removed or drained on reload); h2c: forgets the
    /// shared connection, which closes when its requests in flight are done.
    pub fn close_idle(&self) {
        let idle = std::mem::take(&mut *lock(&self.idle));
        let shared = lock(&self.h2).take();
        drop((idle, shared));
    }

    /// A connection ready to take one request: an idle one when `reuse` (checking it is still
    /// open), else a new one. An error here means nothing was sent: the caller may retry the
    /// request on another server.
    pub async fn checkout(self: &Arc<Self>) -> Result<Checkout, ConnectError> {
        if self.h2c {
            // The shared connection without a future; boxed only to make one (rare).
            let (sender, reused) = match self.open_shared_h2() {
                Some(sender) => (sender, true),
                None => Box::pin(self.shared_h2()).await?,
            };
            return Ok(Checkout {
                server: Arc::clone(self),
                conn: Conn::H2(sender),
                reused,
            });
        }
        if let Some(sender) = self.take_idle().await {
            return Ok(Checkout {
                server: Arc::clone(self),
                conn: Conn::H1(sender),
                reused: true,
            });
        }
        // Boxed, as every connect below: connecting is the rare path, and its state would
        // otherwise enlarge every request's future (moved and copied per request).
        let sender = Box::pin(self.open_h1()).await?;
        Ok(Checkout {
            server: Arc::clone(self),
            conn: Conn::H1(sender),
            reused: false,
        })
    }

    fn keeps_idle(&self) -> bool {
        !self.h2c && self.keepalive.reuse && self.keepalive.max_idle > 0
    }

    /// The newest idle connection still open and ready, dropping expired and closed ones.
    async fn take_idle(&self) -> Option<http1::SendRequest<Body>> {
        if !self.keeps_idle() {
            return None;
        }
        loop {
            let mut entry = {
                let mut idle = lock(&self.idle);
                self.prune_expired(&mut idle);
                idle.pop_back()?
            };
            if entry.sender.is_closed() {
                continue;
            }
            // Normally ready at once: no timer is armed for that (a per-request cost).
            let ready = std::future::poll_fn(|cx| Poll::Ready(entry.sender.poll_ready(cx))).await;
            let ready = match ready {
                Poll::Ready(ready) => Ok(ready),
                Poll::Pending => tokio::time::timeout(READY_WAIT, entry.sender.ready()).await,
            };
            match ready {
                Ok(Ok(())) => return Some(entry.sender),
                Ok(Err(error)) => debug!(server = %self.url, %error, "idle connection closed"),
                Err(_) => debug!(server = %self.url, "idle connection not ready, dropped"),
            }
        }
    }

    /// Drops expired (from the front: oldest first) and closed idle connections.
    fn prune(&self, idle: &mut VecDeque<Idle>) {
        self.prune_expired(idle);
        idle.retain(|e| !e.sender.is_closed());
    }

    /// Drops expired idle connections only: what a checkout or a release can afford (closed
    /// ones are skipped when taken, and swept in the background).
    fn prune_expired(&self, idle: &mut VecDeque<Idle>) {
        let timeout = self.keepalive.idle_timeout;
        while idle.front().is_some_and(|e| e.since.elapsed() >= timeout) {
            idle.pop_front();
        }
    }

    /// Puts a connection whose response has been read to its end back on the idle list.
    fn release(&self, sender: http1::SendRequest<Body>) {
        if !self.keeps_idle() || sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        self.prune_expired(&mut idle);
        while idle.len() >= self.keepalive.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// The shared h2c connection, made if there is none open; `true` when it already existed.
    async fn shared_h2(&self) -> Result<(http2::SendRequest<Body>, bool), ConnectError> {
        if let Some(sender) = self.open_shared_h2() {
            return Ok((sender, true));
        }
        let _connecting = self.h2_connecting.lock().await;
        // Another checkout may have made it while this one waited.
        if let Some(sender) = self.open_shared_h2() {
            return Ok((sender, true));
        }
        let sender = self.open_h2().await?;
        *lock(&self.h2) = Some(sender.clone());
        Ok((sender, false))
    }

    fn open_shared_h2(&self) -> Option<http2::SendRequest<Body>> {
        let mut shared = lock(&self.h2);
        match shared.as_ref() {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                *shared = None;
                None
            }
            None => None,
        }
    }

    /// A new connection for the retry of a request a reused connection gave back.
    async fn reconnect(&self) -> Result<Conn, ConnectError> {
        if self.h2c {
            // The shared connection is the one that failed (or a new one another request made).
            Ok(Conn::H2(Box::pin(self.shared_h2()).await?.0))
        } else {
            Ok(Conn::H1(Box::pin(self.open_h1()).await?))
        }
    }

    async fn open_h1(&self) -> Result<http1::SendRequest<Body>, ConnectError> {
        let sender = tokio::time::timeout(self.connect_timeout, async {
            match self.connect().await? {
                Stream::Tcp(stream) => handshake_h1(stream).await,
                Stream::Unix(stream) => handshake_h1(stream).await,
            }
        })
        .await
        .map_err(|_| ConnectError::Timeout)??;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    async fn open_h2(&self) -> Result<http2::SendRequest<Body>, ConnectError> {
        let sender = tokio::time::timeout(self.connect_timeout, async {
            match self.connect().await? {
                Stream::Tcp(stream) => handshake_h2(stream).await,
                Stream::Unix(stream) => handshake_h2(stream).await,
            }
        })
        .await
        .map_err(|_| ConnectError::Timeout)??;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    /// TCP (resolving the name each time, trying each address in turn) or unix connect.
    async fn connect(&self) -> Result<Stream, ConnectError> {
        match &self.url {
            ServerUrl::Http { host, port } => {
                let addrs = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(ConnectError::Resolve)?;
                let mut last = None;
                for addr in addrs {
                    match TcpStream::connect(addr).await {
                        Ok(stream) => {
                            stream.set_nodelay(true)?;
                            return Ok(Stream::Tcp(stream));
                        }
                        Err(error) => {
                            debug!(server = %self.url, %addr, %error, "connect failed");
                            last = Some(error);
                        }
                    }
                }
                Err(match last {
                    Some(error) => error.into(),
                    None => ConnectError::Resolve(io::Error::new(
                        io::ErrorKind::NotFound,
                        "no address found",
                    )),
                })
            }
            ServerUrl::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Drops expired idle connections every `every` until the `ServerConnections` is gone.
async fn sweep_idle(server: Weak<ServerConnections>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(server) = server.upgrade() else {
            return;
        };
        let expired = {
            let mut idle = lock(&server.idle);
            let before = idle.len();
            server.prune(&mut idle);
            before - idle.len()
        };
        if expired > 0 {
            debug!(server = %server.url, expired, "idle connections closed");
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// HTTP/1.1 handshake; the connection task (with upgrades) ends when the `SendRequest` and
/// any response body are dropped.
async fn handshake_h1<T>(io: T) -> Result<http1::SendRequest<Body>, ConnectError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            debug!(%error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// HTTP/2 prior-knowledge handshake; the connection task ends when every clone of the
/// `SendRequest` and every response body are dropped.
async fn handshake_h2<T>(io: T) -> Result<http2::SendRequest<Body>, ConnectError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            debug!(%error, "upstream h2c connection ended with an error");
        }
    });
    Ok(sender)
}

enum Conn {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Conn {
    async fn try_send(
        &mut self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, TrySendError<Request<Body>>> {
        match self {
            Conn::H1(sender) => sender.try_send_request(request).await,
            Conn::H2(sender) => sender.try_send_request(request).await,
        }
    }
}

/// A connection checked out of [`ServerConnections`], ready to take one request.
pub struct Checkout {
    server: Arc<ServerConnections>,
    conn: Conn,
    reused: bool,
}

impl std::fmt::Debug for Checkout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkout")
            .field("server", &self.server.url)
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

impl Checkout {
    /// Whether the connection already carried requests (h2c: the shared connection existed).
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Sends the request. The response body is wrapped so that the connection goes back to the
    /// idle list when the body has been read to its end (and reuse is on, the idle list has room,
    /// and the response did not say `Connection: close`); a body dropped early discards it.
    /// Response extensions are preserved, so `hyper::upgrade::on(&mut response)` works for a 101.
    ///
    /// When a reused connection gives the request back unwritten (closed by the server in the
    /// meantime), it is sent once more on a brand-new connection; see the module docs.
    ///
    /// h2c: a request in origin-form gets the `http` scheme and an authority (from `Host`, else
    /// the server's address), as HTTP/2 requires.
    pub async fn send(self, mut request: Request<Body>) -> Result<Response<Body>, SendError> {
        let Checkout {
            server,
            mut conn,
            reused,
        } = self;
        if server.h2c {
            absolute_form(&mut request, &server.url);
        }
        let may_keep = request.method() != Method::CONNECT;
        let response = match conn.try_send(request).await {
            Ok(response) => response,
            Err(mut error) => match error.take_message() {
                None => return Err(SendError::Failed(error.into_error())),
                Some(request) if reused => {
                    debug!(
                        server = %server.url,
                        error = %error.error(),
                        "reused connection closed before the request was written; retrying on a new connection"
                    );
                    conn = Box::pin(server.reconnect())
                        .await
                        .map_err(SendError::NotSent)?;
                    match conn.try_send(request).await {
                        Ok(response) => response,
                        Err(error) => return Err(unsent_or_failed(error)),
                    }
                }
                Some(_) => {
                    return Err(SendError::NotSent(ConnectError::Handshake(
                        error.into_error(),
                    )));
                }
            },
        };
        let keep = match conn {
            Conn::H1(sender)
                if may_keep
                    && response.status() != StatusCode::SWITCHING_PROTOCOLS
                    && !says_close(response.headers()) =>
            {
                Some(sender)
            }
            _ => None,
        };
        let weak = Arc::downgrade(&server);
        Ok(response.map(|incoming| {
            let mut body = PooledBody {
                inner: incoming,
                back_to: keep.map(|sender| (weak, sender)),
            };
            if body.inner.is_end_stream() {
                body.release();
            }
            BoxBody::new(body)
        }))
    }
}

fn unsent_or_failed(error: TrySendError<Request<Body>>) -> SendError {
    if error.message().is_some() {
        SendError::NotSent(ConnectError::Handshake(error.into_error()))
    } else {
        SendError::Failed(error.into_error())
    }
}

/// Whether a `Connection` header carries the `close` token.
fn says_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

/// HTTP/2 needs `:scheme` and `:authority`: fills them into an origin-form URI.
fn absolute_form(request: &mut Request<Body>, url: &ServerUrl) {
    let uri = request.uri();
    if request.method() == Method::CONNECT || (uri.scheme().is_some() && uri.authority().is_some())
    {
        return;
    }
    let authority = request
        .headers()
        .get(HOST)
        .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        .or_else(|| Authority::try_from(url.authority()).ok());
    let Some(authority) = authority else {
        return;
    };
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

/// A response body that gives its HTTP/1.1 connection back to the idle list once read to its
/// end, and drops it (closing it) when dropped before.
struct PooledBody {
    inner: Incoming,
    back_to: Option<(Weak<ServerConnections>, http1::SendRequest<Body>)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((server, sender)) = self.back_to.take()
            && let Some(server) = server.upgrade()
        {
            server.release(sender);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            None => this.release(),
            Some(Ok(_)) if this.inner.is_end_stream() => this.release(),
            Some(Ok(_)) => {}
            Some(Err(_)) => this.back_to = None,
        }
        Poll::Ready(frame.map(|result| result.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A consumer may stop at the last frame without polling for the end.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::convert::Infallible;
    use std::future::Future;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;

    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, UnixListener};
    use tokio::sync::{Barrier, watch};

    type Handler = Arc<
        dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
            + Send
            + Sync,
    >;

    #[derive(Clone, Copy)]
    enum Proto {
        H1 { keep_alive: bool },
        H2,
    }

    /// A hyper server counting the connections it accepted; removes its unix socket dir.
    struct TestServer {
        url: ServerUrl,
        accepted: Arc<AtomicUsize>,
        dir: Option<PathBuf>,
    }

    impl TestServer {
        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::SeqCst)
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            if let Some(dir) = &self.dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    const BIG: usize = 256 * 1024;

    /// `/big` → 256 KiB, `/empty` → 204, `/upgrade` → 101 then echoes bytes, else "hello".
    fn default_handler() -> Handler {
        Arc::new(|mut req: Request<Incoming>| {
            Box::pin(async move {
                match req.uri().path() {
                    "/big" => Response::new(Full::new(Bytes::from(vec![b'x'; BIG]))),
                    "/empty" => Response::builder()
                        .status(StatusCode::NO_CONTENT)
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                    "/upgrade" => {
                        let on_upgrade = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let mut io = TokioIo::new(on_upgrade.await.unwrap());
                            let mut buf = [0u8; 1024];
                            loop {
                                match io.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        if io.write_all(&buf[..n]).await.is_err() {
                                            break;
                                        }
                                    }
                                }
                            }
                        });
                        Response::builder()
                            .status(StatusCode::SWITCHING_PROTOCOLS)
                            .header(CONNECTION, "upgrade")
                            .header(hyper::header::UPGRADE, "echo")
                            .body(Full::new(Bytes::new()))
                            .unwrap()
                    }
                    _ => Response::new(Full::new(Bytes::from_static(b"hello"))),
                }
            })
        })
    }

    fn serve_connection<IO>(io: IO, proto: Proto, handler: Handler)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let service = service_fn(move |req| {
            let handler = Arc::clone(&handler);
            async move { Ok::<_, Infallible>(handler(req).await) }
        });
        tokio::spawn(async move {
            let io = TokioIo::new(io);
            let _ = match proto {
                Proto::H1 { keep_alive } => {
                    hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(io, service)
                        .with_upgrades()
                        .await
                }
                Proto::H2 => {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await
                }
            };
        });
    }

    async fn tcp_server(proto: Proto, handler: Handler) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                serve_connection(stream, proto, Arc::clone(&handler));
            }
        });
        TestServer {
            url: ServerUrl::Http {
                host: "127.0.0.1".into(),
                port,
            },
            accepted,
            dir: None,
        }
    }

    async fn unix_server(proto: Proto, handler: Handler) -> TestServer {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "balancer-upstream-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                serve_connection(stream, proto, Arc::clone(&handler));
            }
        });
        TestServer {
            url: ServerUrl::Unix(path),
            accepted,
            dir: Some(dir),
        }
    }

    fn keepalive(reuse: bool, max_idle: usize, idle_timeout: Duration) -> KeepaliveConfig {
        KeepaliveConfig {
            reuse,
            idle_timeout,
            max_idle,
        }
    }

    const CONNECT: Duration = Duration::from_secs(3);
    const LONG: Duration = Duration::from_secs(60);

    fn get(path: &str) -> Request<Body> {
        Request::builder()
            .uri(path)
            .header(HOST, "test.local")
            .body(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap()
    }

    /// Checkout, send, read the body to its end.
    async fn fetch(server: &Arc<ServerConnections>, path: &str) -> (StatusCode, Bytes) {
        let checkout = server.checkout().await.unwrap();
        let response = checkout.send(get(path)).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }

    async fn sequential(server: &TestServer, keepalive: KeepaliveConfig) -> Arc<ServerConnections> {
        let conns = ServerConnections::new(server.url.clone(), keepalive, CONNECT, false);
        for _ in 0..20 {
            let (status, body) = fetch(&conns, "/").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(&body[..], b"hello");
        }
        conns
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let server = tcp_server(Proto::H1 { keep_alive: true }, default_handler()).await;
        let conns = sequential(&server, keepalive(true, 32, LONG)).await;
        assert_eq!(conns.connections_opened(), 1);
        assert_eq!(server.accepted(), 1);
        assert_eq!(conns.idle_connections(), 1);
        let checkout = conns.checkout().await.unwrap();
        assert!(checkout.reused());
    }

    #[tokio::test]
    async fn reuse_off_opens_one_connection_per_request() {
        let server = tcp_server(Proto::H1 { keep_alive: true }, default_handler()).await;
        let conns = sequential(&server, keepalive(false, 32, LONG)).await;
        assert_eq!(conns.connections_opened(), 20);
        assert_eq!(server.accepted(), 20);
        assert_eq!(conns.idle_connections(), 0);
    }

    #[tokio::test]
    async fn max_idle_zero_opens_one_connection_per_request() {
        let server = tcp_server(Proto::H1 { keep_alive: true }, default_handler()).await;
        let conns = sequential(&server, keepalive(true, 0, LONG)).await;
        assert_eq!(conns.connections_opened(), 20);
        assert_eq!(server.accepted(), 20);
        assert_eq!(conns.idle_connections(), 0);
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_and_max_idle_keeps_some() {
        let barrier = Arc::new(Barrier::new(5));
        let handler: Handler = Arc::new(move |_req| {
            let barrier = Arc::clone(&barrier);
            Box::pin(async move {
                // Every request is in flight at once: each needs its own connection.
                barrier.wait().await;
                Response::new(Full::new(Bytes::from_static(b"hello")))
            })
        });
        let server = tcp_server(Proto::H1 { keep_alive: true }, handler).await;
        let conns =
            ServerConnections::new(server.url.clone(), keepalive(true, 2, LONG), CONNECT, false);
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let conns = Arc::clone(&conns);
                tokio::spawn(async move { fetch(&conns, "/").await })
            })
            .collect();
        for task in tasks {
            let (status, body) = task.await.unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(&body[..], b"hello");
        }
        assert_eq!(conns.connections_opened(), 5);
        assert_eq!(server.accepted(), 5);
        assert_eq!(conns.idle_connections(), 2);
    }

    #[tokio::test]
    async fn expired_idle_connection_is_not_reused() {
        let server = tcp_server(Proto::H1 { keep_alive: true }, default_handler()).await;
        let conns = ServerConnections::new(
            server.url.clone(),
            keepalive(true, 32, Duration::from_millis(200)),
            CONNECT,
            false,
        );
        fetch(&conns, "/").await;
        assert_eq!(conns.idle_connections(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(conns.idle_connections(), 0);
        // The sweep dropped it from the list.
        assert!(lock(&conns.idle).is_empty());
        let checkout = conns.checkout().await.unwrap();
        assert!(!checkout.reused());
        let response = checkout.send(get("/")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(conns.connections_opened(), 2);
        assert_eq!(server.accepted(), 2);
    }

    #[tokio::test]
    async fn server_without_keep_alive_gets_a_connection_per_request() {
        let server = tcp_server(Proto::H1 { keep_alive: false }, default_handler()).await;
        let conns = sequential(&server, keepalive(true, 32, LONG)).await;
        assert_eq!(conns.connections_opened(), 20);
        assert_eq!(server.accepted(), 20);
        assert_eq!(conns.idle_connections(), 0);
    }

    /// A raw HTTP/1.1 server answering one request per connection WITHOUT `Connection: close`,
    /// then closing the connection once `close` is set. Stops listening (further connects are
    /// refused) after `max_accepts` connections.
    async fn closing_server(
        close: watch::Receiver<bool>,
        max_accepts: usize,
    ) -> (ServerUrl, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let last = count.fetch_add(1, Ordering::SeqCst) + 1 >= max_accepts;
                tokio::spawn(answer_once_then_close(stream, close.clone()));
                if last {
                    return;
                }
            }
        });
        let url = ServerUrl::Http {
            host: "127.0.0.1".into(),
            port,
        };
        (url, accepted)
    }

    async fn answer_once_then_close(mut stream: TcpStream, mut close: watch::Receiver<bool>) {
        if !read_request_head(&mut stream).await {
            return;
        }
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if stream.write_all(answer).await.is_err() {
            return;
        }
        let _ = close.wait_for(|close| *close).await;
    }

    /// Reads up to the end of a request head; false when the connection ends before.
    async fn read_request_head(stream: &mut TcpStream) -> bool {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        true
    }

    #[tokio::test]
    async fn reused_connection_closed_by_server_is_retried_on_a_new_one() {
        let (close, closed) = watch::channel(false);
        let (url, accepted) = closing_server(closed, usize::MAX).await;
        let conns = ServerConnections::new(url, keepalive(true, 32, LONG), CONNECT, false);
        let (status, body) = fetch(&conns, "/").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
        let checkout = conns.checkout().await.unwrap();
        assert!(checkout.reused());
        // The server closes the idle connection while the checkout holds it.
        close.send_replace(true);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let response = checkout.send(get("/")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(conns.connections_opened(), 2);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connection_closed_by_server_is_skipped_at_checkout() {
        let (close, closed) = watch::channel(false);
        let (url, accepted) = closing_server(closed, usize::MAX).await;
        let conns = ServerConnections::new(url, keepalive(true, 32, LONG), CONNECT, false);
        fetch(&conns, "/").await;
        close.send_replace(true);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(conns.idle_connections(), 0);
        let checkout = conns.checkout().await.unwrap();
        assert!(!checkout.reused());
        let response = checkout.send(get("/")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refused_connect_fails_quickly() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = ServerUrl::Http {
            host: "127.0.0.1".into(),
            port,
        };
        let conns = ServerConnections::new(url, KeepaliveConfig::default(), CONNECT, false);
        let started = Instant::now();
        let error = conns.checkout().await.unwrap_err();
        assert!(matches!(error, ConnectError::Refused(_)), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(conns.connections_opened(), 0);
    }

    #[tokio::test]
    async fn unresolvable_name_is_a_resolve_error() {
        let url = ServerUrl::Http {
            host: "no-such-host.invalid".into(),
            port: 80,
        };
        let conns = ServerConnections::new(url, KeepaliveConfig::default(), CONNECT, false);
        match conns.checkout().await.unwrap_err() {
            ConnectError::Resolve(_) | ConnectError::Timeout => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn missing_unix_socket_fails_to_connect() {
        let path = std::env::temp_dir().join(format!(
            "balancer-upstream-test-missing-{}.sock",
            std::process::id()
        ));
        let url = ServerUrl::Unix(path);
        let conns = ServerConnections::new(url, KeepaliveConfig::default(), CONNECT, false);
        let error = conns.checkout().await.unwrap_err();
        assert!(matches!(error, ConnectError::Io(_)), "{error:?}");
    }

    #[tokio::test]
    async fn unix_socket_server_with_reuse() {
        let server = unix_server(Proto::H1 { keep_alive: true }, default_handler()).await;
        let conns = sequential(&server, keepalive(true, 32, LONG)).await;
        assert_eq!(conns.connections_opened(), 1);
        assert_eq!(server.accepted(), 1);
    }

    #[tokio::test]
    async fn h2c_shares_one_connection() {
        let barrier = Arc::new(Barrier::new(5));
        let handler: Handler = Arc::new(move |req| {
            let barrier = Arc::clone(&barrier);
            Box::pin(async move {
                assert_eq!(req.version(), hyper::Version::HTTP_2);
                barrier.wait().await;
                let host = req
                    .uri()
                    .authority()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                Response::new(Full::new(Bytes::from(host)))
            })
        });
        let server = tcp_server(Proto::H2, handler).await;
        let conns = ServerConnections::new(
            server.url.clone(),
            KeepaliveConfig::default(),
            CONNECT,
            true,
        );
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let conns = Arc::clone(&conns);
                tokio::spawn(async move { fetch(&conns, "/").await })
            })
            .collect();
        for task in tasks {
            let (status, body) = task.await.unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(&body[..], b"test.local");
        }
        assert_eq!(conns.connections_opened(), 1);
        assert_eq!(server.accepted(), 1);
        assert_eq!(conns.idle_connections(), 1);
        assert!(conns.checkout().await.unwrap().reused());
    }

    #[tokio::test]
    async fn h2c_reconnects_after_close() {
        let server = unix_server(Proto::H2, default_handler()).await;
        let conns = ServerConnections::new(
            server.url.clone(),
            KeepaliveConfig::default(),
            CONNECT,
            true,
        );
        fetch(&conns, "/").await;
        conns.close_idle();
        assert_eq!(conns.idle_connections(), 0);
        let (status, body) = fetch(&conns, "/").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
        assert_eq!(conns.connections_opened(), 2);
        assert_eq!(server.accepted(), 2);
    }

    #[tokio::test]
    async fn body_dropped_early_discards_the_connection() {
        let server = tcp_server(Proto::H1 { keep_alive: true }, default_handler()).await;
        let conns = ServerConnections::new(
            server.url.clone(),
            keepalive(true, 32, LONG),
            CONNECT,
            false,
        );
        let checkout = conns.checkout().await.unwrap();
        let mut response = checkout.send(get("/big")).await.unwrap();
        let first = response.body_mut().frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(response);
        assert_eq!(conns.idle_connections(), 0);
        let (_, body) = fetch(&conns, "/big").await;
        assert_eq!(body.len(), BIG);
        assert_eq!(conns.connections_opened(), 2);
        assert_eq!(server.accepted(), 2);
        assert_eq!(conns.idle_connections(), 1);
    }

    #[tokio::test]
    async fn empty_body_returns_the_connection_without_being_read() {
        let server = tcp_server(Proto::H1 { keep_alive: true }, default_handler()).await;
        let conns = ServerConnections::new(
            server.url.clone(),
            keepalive(true, 32, LONG),
            CONNECT,
            false,
        );
        let response = conns
            .checkout()
            .await
            .unwrap()
            .send(get("/empty"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        drop(response);
        assert_eq!(conns.idle_connections(), 1);
        fetch(&conns, "/").await;
        assert_eq!(conns.connections_opened(), 1);
        assert_eq!(server.accepted(), 1);
    }

    #[tokio::test]
    async fn close_idle_drops_idle_connections() {
        let server = tcp_server(Proto::H1 { keep_alive: true }, default_handler()).await;
        let conns = sequential(&server, keepalive(true, 32, LONG)).await;
        assert_eq!(conns.idle_connections(), 1);
        conns.close_idle();
        assert_eq!(conns.idle_connections(), 0);
        fetch(&conns, "/").await;
        assert_eq!(conns.connections_opened(), 2);
    }

    #[tokio::test]
    async fn upgrade_gives_a_byte_tunnel() {
        let server = tcp_server(Proto::H1 { keep_alive: true }, default_handler()).await;
        let conns = ServerConnections::new(
            server.url.clone(),
            keepalive(true, 32, LONG),
            CONNECT,
            false,
        );
        let mut request = get("/upgrade");
        request
            .headers_mut()
            .insert(CONNECTION, "upgrade".parse().unwrap());
        request
            .headers_mut()
            .insert(hyper::header::UPGRADE, "echo".parse().unwrap());
        let mut response = conns.checkout().await.unwrap().send(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
        drop(response);
        let mut tunnel = TokioIo::new(upgraded);
        tunnel.write_all(b"ping pong").await.unwrap();
        let mut echoed = [0u8; 9];
        tunnel.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping pong");
        assert_eq!(conns.idle_connections(), 0);
        // The next request needs a new connection.
        fetch(&conns, "/").await;
        assert_eq!(conns.connections_opened(), 2);
    }

    #[tokio::test]
    async fn sweep_task_ends_when_connections_are_dropped() {
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        let conns = ServerConnections::new(
            ServerUrl::Unix("/nonexistent".into()),
            keepalive(true, 32, Duration::from_millis(100)),
            CONNECT,
            false,
        );
        assert_eq!(metrics.num_alive_tasks(), before + 1);
        drop(conns);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(metrics.num_alive_tasks(), before);
    }

    #[tokio::test]
    async fn retry_that_cannot_connect_is_not_sent() {
        let (close, closed) = watch::channel(false);
        let (url, accepted) = closing_server(closed, 1).await;
        let conns = ServerConnections::new(url, keepalive(true, 32, LONG), CONNECT, false);
        fetch(&conns, "/").await;
        let checkout = conns.checkout().await.unwrap();
        assert!(checkout.reused());
        close.send_replace(true);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let error = checkout.send(get("/")).await.unwrap_err();
        assert!(
            matches!(error, SendError::NotSent(ConnectError::Refused(_))),
            "{error:?}"
        );
        assert!(!error.request_sent());
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn server_closing_after_reading_the_request_is_a_failure_after_sending() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    read_request_head(&mut stream).await;
                });
            }
        });
        let url = ServerUrl::Http {
            host: "127.0.0.1".into(),
            port,
        };
        let conns = ServerConnections::new(url, keepalive(true, 32, LONG), CONNECT, false);
        let error = conns
            .checkout()
            .await
            .unwrap()
            .send(get("/"))
            .await
            .unwrap_err();
        assert!(matches!(error, SendError::Failed(_)), "{error:?}");
        assert!(error.request_sent());
    }
}
