//! Client connections to ONE server of a pool: connect (TCP, TLS over TCP for https://, or unix
//! socket), HTTP/1.1 keep-alive on our own engine (upstream/client.rs) with an idle list, or one
//! shared HTTP/2 connection through hyper: prior knowledge (h2c), or an https:// server that
//! picked `h2` by ALPN (the pool's `h2 = true`).
//!
//! # Sent or not sent
//!
//! [`ServerConnections::checkout`] failing means nothing was sent. An idle connection is
//! checked at checkout (one non-blocking peek): a server that closed it is seen then, before
//! anything is written. A server can still close a reused connection as our request crosses
//! its close (the keep-alive race, RFC 9112 §9.3.1): when a reused connection ends without a
//! byte of response, the request is sent again, ONCE, on a brand-new connection to the same
//! server — if its body can be sent again, and, once any of it was written, only for
//! idempotent methods. [`SendError::NotSent`] is returned only when that new connection cannot
//! be made: the caller may then send the request to another server. [`SendError::NoResponse`]
//! means the request was sent and the connection ended before any answer (the caller may retry
//! it elsewhere when that is safe); [`SendError::Failed`] that it may have reached the server;
//! [`SendError::Body`] that the client's body failed.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Frame, SizeHint};
use hyper::client::conn::http2;
use hyper::header::{HOST, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tracing::debug;

pub mod client;
mod quiet;
pub mod raw_fields;

use raw_fields::RawFields;

use quiet::QuietTimer;

use super::h1::request_body::{BodyError, RequestBody};
use super::upstream_tls::ServerTls;
use super::{Body, BoxError};
use crate::clock;
use crate::config::{KeepaliveConfig, ServerUrl};
use client::{self as h1, ExchangeError, H1Conn, Stream};

/// How long an idle connection is trusted without a liveness check at checkout.
const FRESH: Duration = Duration::from_millis(250);

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
    /// The HTTP/2 handshake failed.
    #[error("HTTP connection failed: {0}")]
    Handshake(hyper::Error),
    /// The TLS handshake with an https:// server failed: rustls's reason (the certificate's
    /// issuer unknown, expired, not for the name; no common protocol) is in the error.
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
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
    /// the one retry on a new connection could not connect): it may be sent to another server.
    #[error("request not sent: {0}")]
    NotSent(ConnectError),
    /// The connection closed or was reset after the request was written, before a byte of
    /// response: the request may be retried elsewhere when that is safe (idempotent,
    /// replayable).
    #[error("connection closed before any response: {0}")]
    NoResponse(io::Error),
    /// Failed after (part of) the request may have been written.
    #[error("request failed: {0}")]
    Failed(BoxError),
    /// The client's request body failed (too large, malformed, aborted): not the server's
    /// doing.
    #[error("{0}")]
    Body(BodyError),
}

/// How long a server may take: to be connected to, and to go on with a response body.
#[derive(Clone, Copy, Debug)]
pub struct ConnTimeouts {
    /// TCP or unix connect, with the TLS handshake of an https:// server and the HTTP/2
    /// handshake of h2c or ALPN h2 (`timeouts.connect`).
    pub connect: Duration,
    /// The longest a response body may go without data from the server (`timeouts.response`,
    /// as nginx's `proxy_read_timeout` and HAProxy's `timeout server` are also the gap between
    /// two reads): past it the body ends in an error, so that a server that stops in the
    /// middle of a body does not hold the client, the connection and the server's request
    /// slot for ever.
    pub body_gap: Duration,
}

/// The connections to one server. Shared as `Arc`; one per server of a pool.
pub struct ServerConnections {
    url: ServerUrl,
    keepalive: KeepaliveConfig,
    timeouts: ConnTimeouts,
    h2c: bool,
    /// https:// servers: the pool's TLS client config and the name to verify.
    tls: Option<ServerTls>,
    /// The server picked `h2` by ALPN on the last connection made: checkouts share one
    /// HTTP/2 connection (as with h2c) instead of taking idle HTTP/1.1 ones.
    alpn_h2: AtomicBool,
    opened: AtomicU64,
    /// HTTP/1.1 idle connections, oldest first (checkout takes the newest): one list per
    /// worker (workers.rs), so a connection is reused by the thread whose reactor it is
    /// registered with, and a list's lock is only ever taken by its own worker (and the
    /// sweep), never contended on the request path.
    idle: Box<[Mutex<VecDeque<Idle>>]>,
    /// h2c or ALPN h2: the shared connection.
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    /// h2c or ALPN h2: held while a new shared connection is made, so that one is made at a time.
    h2_connecting: tokio::sync::Mutex<()>,
}

struct Idle {
    conn: H1Conn,
    /// tokio's clock (std's outside tests), so that tests on paused time see idle connections
    /// age and expire.
    since: tokio::time::Instant,
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
    /// Bodies may pause for up to 60 s (the default `timeouts.response`).
    #[cfg(test)]
    pub fn new(
        url: ServerUrl,
        keepalive: KeepaliveConfig,
        connect_timeout: Duration,
        h2c: bool,
    ) -> Arc<Self> {
        let timeouts = ConnTimeouts {
            connect: connect_timeout,
            body_gap: Duration::from_secs(60),
        };
        Self::with_tls(url, keepalive, timeouts, h2c, None)
    }

    /// As [`ServerConnections::new`]; `tls` for an https:// server (without it, connecting to
    /// one fails).
    pub fn with_tls(
        url: ServerUrl,
        keepalive: KeepaliveConfig,
        timeouts: ConnTimeouts,
        h2c: bool,
        tls: Option<ServerTls>,
    ) -> Arc<Self> {
        let this = Arc::new(Self {
            url,
            keepalive,
            timeouts,
            h2c,
            tls,
            alpn_h2: AtomicBool::new(false),
            opened: AtomicU64::new(0),
            idle: (0..super::workers::slots())
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
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

    /// Connections made since start (TCP or unix connect succeeded; h2c: and its handshake).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// HTTP/1.1: the idle connections (open and not expired). h2c: 1 while the shared
    /// connection is open, else 0; ALPN h2: both.
    pub fn idle_connections(&self) -> usize {
        let shared = usize::from(lock(&self.h2).as_ref().is_some_and(|s| !s.is_closed()));
        if self.h2c {
            return shared;
        }
        let timeout = self.keepalive.idle_timeout;
        shared
            + self
                .idle
                .iter()
                .map(|idle| {
                    lock(idle)
                        .iter()
                        .filter(|e| e.since.elapsed() < timeout && e.conn.stream.idle_usable())
                        .count()
                })
                .sum::<usize>()
    }

    /// Drops every idle connection (server removed or drained on reload); h2c: forgets the
    /// shared connection, which closes when its requests in flight are done.
    pub fn close_idle(&self) {
        for idle in &self.idle {
            let idle = std::mem::take(&mut *lock(idle));
            drop(idle);
        }
        let shared = lock(&self.h2).take();
        drop(shared);
    }

    /// A connection ready to take one request: an idle one when `reuse` (checking it is still
    /// open), else a new one. An error here means nothing was sent: the caller may retry the
    /// request on another server.
    pub async fn checkout(self: &Arc<Self>) -> Result<Checkout, ConnectError> {
        if self.h2c || self.alpn_h2.load(Ordering::Relaxed) {
            // The shared connection without a future; boxed only to make one (rare).
            let (conn, reused) = match self.open_shared_h2() {
                Some(sender) => (Conn::H2(sender), true),
                None => Box::pin(self.shared_h2()).await?,
            };
            return Ok(Checkout {
                server: Arc::clone(self),
                conn,
                reused,
            });
        }
        if let Some(conn) = self.take_idle() {
            return Ok(Checkout {
                server: Arc::clone(self),
                conn: Conn::H1(conn),
                reused: true,
            });
        }
        // Boxed, as every connect below: connecting is the rare path, and its state would
        // otherwise enlarge every request's future (moved and copied per request).
        let conn = Box::pin(self.open()).await?;
        if let Conn::H2(sender) = &conn {
            // An https:// server picked h2: later checkouts share this connection.
            self.share_h2(sender);
        }
        Ok(Checkout {
            server: Arc::clone(self),
            conn,
            reused: false,
        })
    }

    /// The calling worker's idle list.
    fn own_idle(&self) -> &Mutex<VecDeque<Idle>> {
        let slot = super::workers::current_slot().min(self.idle.len() - 1);
        &self.idle[slot]
    }

    fn keeps_idle(&self) -> bool {
        !self.h2c && self.keepalive.reuse && self.keepalive.max_idle > 0
    }

    /// The newest idle connection still open, dropping expired and closed ones.
    fn take_idle(&self) -> Option<H1Conn> {
        if !self.keeps_idle() {
            return None;
        }
        let own = super::workers::current_slot().min(self.idle.len() - 1);
        if let Some(conn) = self.take_idle_from(own) {
            return Some(conn);
        }
        // None of our own: another worker's idle connection beats a new one (a server's
        // connections are few and its workers slow to accept). It moves to this worker's
        // reactor (TLS: the socket under the same rustls session); under load every worker
        // has its own and this is not reached.
        (0..self.idle.len())
            .filter(|&slot| slot != own)
            .find_map(|slot| self.take_idle_from(slot))
            .and_then(|conn| match conn.stream.into_current_runtime() {
                Ok(stream) => Some(H1Conn { stream }),
                Err(error) => {
                    debug!(server = %self.url, %error, "idle connection could not move to this worker");
                    None
                }
            })
    }

    /// The newest usable idle connection of one worker's list.
    fn take_idle_from(&self, slot: usize) -> Option<H1Conn> {
        let now = clock::tokio_now();
        loop {
            let entry = {
                let mut idle = lock(&self.idle[slot]);
                self.prune_expired(&mut idle, now);
                idle.pop_back()?
            };
            // A connection back for less than `FRESH` is not checked: servers close idle
            // connections after a keep-alive timeout of seconds (gunicorn's is the shortest, 2 s),
            // and under load a connection is idle for microseconds; the check is a system call
            // per request. A server that closes one anyway (a restart) costs the one retry of
            // `Checkout::send`.
            if now.duration_since(entry.since) < FRESH || entry.conn.stream.idle_usable() {
                return Some(entry.conn);
            }
            debug!(server = %self.url, "idle connection closed by the server");
        }
    }

    /// Drops expired (from the front: oldest first) and closed idle connections.
    fn prune(&self, idle: &mut VecDeque<Idle>) {
        self.prune_expired(idle, tokio::time::Instant::now());
        idle.retain(|e| e.conn.stream.idle_usable());
    }

    /// Drops expired idle connections only: what a checkout or a release can afford (closed
    /// ones are skipped when taken, and swept in the background).
    fn prune_expired(&self, idle: &mut VecDeque<Idle>, now: tokio::time::Instant) {
        let timeout = self.keepalive.idle_timeout;
        while idle
            .front()
            .is_some_and(|e| now.duration_since(e.since) >= timeout)
        {
            idle.pop_front();
        }
    }

    /// Puts a connection whose response has been read to its end back on the idle list. Gives
    /// back what it does not keep (this connection when reuse is off, else the oldest idle
    /// one past `max_idle`), for the caller to close where the close keeps nobody waiting.
    pub(crate) fn release(&self, conn: H1Conn) -> Option<H1Conn> {
        if !self.keeps_idle() {
            return Some(conn);
        }
        let now = clock::tokio_now();
        let mut idle = lock(self.own_idle());
        self.prune_expired(&mut idle, now);
        let mut evicted = None;
        while idle.len() >= self.keepalive.max_idle {
            evicted = idle.pop_front().map(|idle| idle.conn);
        }
        idle.push_back(Idle { conn, since: now });
        evicted
    }

    /// The shared HTTP/2 connection, made if there is none open; `true` when it already
    /// existed. An https:// server that no longer picks h2 gives an HTTP/1.1 connection.
    async fn shared_h2(&self) -> Result<(Conn, bool), ConnectError> {
        if let Some(sender) = self.open_shared_h2() {
            return Ok((Conn::H2(sender), true));
        }
        let _connecting = self.h2_connecting.lock().await;
        // Another checkout may have made it while this one waited.
        if let Some(sender) = self.open_shared_h2() {
            return Ok((Conn::H2(sender), true));
        }
        let conn = self.open().await?;
        if let Conn::H2(sender) = &conn {
            *lock(&self.h2) = Some(sender.clone());
        }
        Ok((conn, false))
    }

    /// Makes `sender` the shared connection unless one is open already.
    fn share_h2(&self, sender: &http2::SendRequest<Body>) {
        let mut shared = lock(&self.h2);
        if shared.as_ref().is_none_or(http2::SendRequest::is_closed) {
            *shared = Some(sender.clone());
        }
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

    /// A new connection: HTTP/2 for h2c or an https:// server that picked `h2` by ALPN (its
    /// handshake made), else HTTP/1.1.
    async fn open(&self) -> Result<Conn, ConnectError> {
        let conn = tokio::time::timeout(self.timeouts.connect, async {
            let stream = self.connect().await?;
            if !self.h2c && !stream.alpn_h2() {
                return Ok(Conn::H1(H1Conn { stream }));
            }
            let sender = match stream {
                Stream::Tcp(stream) => handshake_h2(stream).await,
                Stream::Unix(stream) => handshake_h2(stream).await,
                Stream::Tls(stream) => handshake_h2(stream).await,
            }?;
            Ok::<_, ConnectError>(Conn::H2(sender))
        })
        .await
        .map_err(|_| ConnectError::Timeout)??;
        self.opened.fetch_add(1, Ordering::Relaxed);
        if self.tls.as_ref().is_some_and(|tls| tls.offers_h2) {
            self.alpn_h2
                .store(matches!(conn, Conn::H2(_)), Ordering::Relaxed);
        }
        Ok(conn)
    }

    /// TCP (resolving the name each time, trying each address in turn), then TLS for an
    /// https:// server; or unix connect.
    async fn connect(&self) -> Result<Stream, ConnectError> {
        match &self.url {
            ServerUrl::Http { host, port } => Ok(Stream::Tcp(self.connect_tcp(host, *port).await?)),
            ServerUrl::Https { host, port } => {
                let tcp = self.connect_tcp(host, *port).await?;
                let Some(tls) = &self.tls else {
                    return Err(ConnectError::Tls(io::Error::other(
                        "no TLS settings for this https:// server",
                    )));
                };
                let stream = tls
                    .connector
                    .connect(tls.name.clone(), h1::TlsIo::new(tcp))
                    .await
                    .map_err(ConnectError::Tls)?;
                Ok(Stream::Tls(Box::new(stream)))
            }
            ServerUrl::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        }
    }

    /// Resolves `host` with the system resolver (so /etc/hosts counts) at each connect, and
    /// tries its addresses in turn.
    async fn connect_tcp(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(ConnectError::Resolve)?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Err(error) => {
                    debug!(server = %self.url, %addr, %error, "connect failed");
                    last = Some(error);
                }
            }
        }
        Err(match last {
            Some(error) => error.into(),
            None => {
                ConnectError::Resolve(io::Error::new(io::ErrorKind::NotFound, "no address found"))
            }
        })
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
        let mut expired = 0;
        for idle in &server.idle {
            let mut idle = lock(idle);
            let before = idle.len();
            server.prune(&mut idle);
            expired += before - idle.len();
        }
        if expired > 0 {
            debug!(server = %server.url, expired, "idle connections closed");
        }
    }
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
    H1(H1Conn),
    H2(http2::SendRequest<Body>),
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
    #[cfg(test)]
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Sends the request. An HTTP/1.1 response body gives the connection back to the idle list
    /// when read to its end (and reuse is on, and the response allows it); a body dropped
    /// early discards it. A 101 carries the connection in an `h1::UpstreamUpgrade` extension.
    ///
    /// When a reused connection ends without answering, the request is sent once more on a
    /// brand-new connection; see the module docs.
    ///
    /// h2c: a request in origin-form gets the `http` scheme and an authority (from `Host`, else
    /// the server's address), as HTTP/2 requires.
    pub async fn send<B: RequestBody>(
        self,
        request: &mut Request<B>,
    ) -> Result<Response<Body>, SendError> {
        self.send_with(request, &RawFields::default()).await
    }

    /// [`Checkout::send`] with `added` after the request's own fields.
    pub async fn send_with<B: RequestBody>(
        self,
        request: &mut Request<B>,
        added: &RawFields,
    ) -> Result<Response<Body>, SendError> {
        let Checkout {
            server,
            conn,
            reused,
        } = self;
        let mut conn = match conn {
            Conn::H2(sender) => {
                absolute_form(request, &server.url);
                return Box::pin(send_h2(sender, request, added, &server)).await;
            }
            Conn::H1(conn) => conn,
        };
        let mut reused = reused;
        loop {
            match h1::exchange(conn, request, added.as_bytes()).await {
                Ok(answer) => {
                    let keep = request.method() != Method::CONNECT;
                    let gap = server.timeouts.body_gap;
                    let server = Arc::downgrade(&server);
                    return Ok(h1::into_response(answer, Some(server), keep, gap));
                }
                Err(ExchangeError::Closed(error))
                    if reused
                        && request.body().replayable()
                        && (request.method().is_idempotent()
                            || request.body().length()
                                == super::h1::request_body::BodyLength::Exact(0)) =>
                {
                    debug!(
                        server = %server.url,
                        %error,
                        "reused connection closed without an answer; retrying on a new connection"
                    );
                    request.body_mut().rewind();
                    match Box::pin(server.open()).await.map_err(SendError::NotSent)? {
                        Conn::H1(new) => conn = new,
                        // An https:// server that picked h2 this time.
                        Conn::H2(sender) => {
                            server.share_h2(&sender);
                            absolute_form(request, &server.url);
                            return Box::pin(send_h2(sender, request, added, &server)).await;
                        }
                    }
                    reused = false;
                }
                Err(ExchangeError::Body(error)) => return Err(SendError::Body(error)),
                Err(ExchangeError::Closed(error)) => return Err(SendError::NoResponse(error)),
                Err(error) => return Err(SendError::Failed(error.to_string().into())),
            }
        }
    }
}

/// An h2c exchange: hyper takes a boxed body, fed from ours as the stream's flow control
/// allows. A body that stops early (the server answered first) is ended with an error, never
/// a clean end, so the server cannot take a cut body for a whole one.
async fn send_h2<B: RequestBody>(
    mut sender: http2::SendRequest<Body>,
    request: &mut Request<B>,
    added: &RawFields,
    server: &Arc<ServerConnections>,
) -> Result<Response<Body>, SendError> {
    let mut parts = Request::new(()).into_parts().0;
    parts.method = request.method().clone();
    parts.uri = request.uri().clone();
    parts.version = request.version();
    parts.headers = request.headers().clone();
    for (name, value) in added.fields() {
        // Our own names and checked values (raw_fields.rs): both always parse.
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            parts.headers.append(name, value);
        }
    }
    // The authority travels as :authority (`absolute_form` took it from Host): a Host beside
    // it is one that servers such as nginx refuse as a duplicate (RFC 9113 §8.3.1).
    if parts.uri.authority().is_some() {
        parts.headers.remove(HOST);
    }
    let body = request.body_mut();
    let (feed, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(4);
    let boxed = BoxBody::new(ChannelBody {
        receiver,
        length: match body.length() {
            super::h1::request_body::BodyLength::Exact(length) => Some(length),
            super::h1::request_body::BodyLength::Unknown => None,
        },
        ended: false,
    });
    let request = Request::from_parts(parts, boxed);
    let pump = async {
        loop {
            match body.next_data().await {
                Some(Ok(data)) => {
                    if feed.send(Ok(data)).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Err(err)) => {
                    let _ = feed.send(Err("client body failed".into())).await;
                    return Err(err);
                }
                None => {
                    // The end: an empty frame marks it (a dropped sender alone is a cut).
                    let _ = feed.send(Ok(Bytes::new())).await;
                    return Ok(());
                }
            }
        }
    };
    let send = async {
        sender
            .ready()
            .await
            .map_err(|err| SendError::Failed(err.into()))?;
        sender
            .send_request(request)
            .await
            .map_err(|err| SendError::Failed(err.into()))
    };
    let mut pump = std::pin::pin!(pump);
    let mut send = std::pin::pin!(send);
    let mut pumped = false;
    loop {
        tokio::select! {
            response = &mut send => {
                let response = response?;
                return Ok(response.map(|incoming| {
                    BoxBody::new(H2Body {
                        incoming,
                        quiet: QuietTimer::new(server.timeouts.body_gap),
                        server: Arc::downgrade(server),
                    })
                }));
            }
            result = &mut pump, if !pumped => {
                pumped = true;
                if let Err(err) = result {
                    return Err(SendError::Body(err));
                }
            }
        }
    }
}

/// A server's HTTP/2 response body, with the same longest pause as an HTTP/1.1 one.
struct H2Body {
    incoming: hyper::body::Incoming,
    quiet: QuietTimer,
    /// Named in the log when the body stalls (no name per response on the way).
    server: Weak<ServerConnections>,
}

impl hyper::body::Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.quiet.saw_data();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.quiet.stop();
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Ready(None) => {
                this.quiet.stop();
                Poll::Ready(None)
            }
            Poll::Pending => match this.quiet.poll_expired(cx) {
                Poll::Ready(()) => {
                    let name = this.server.upgrade().map(|server| server.url.to_string());
                    Poll::Ready(Some(Err(this.quiet.expired(&name.unwrap_or_default()))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// The body hyper's h2 client reads: frames from [`send_h2`]'s pump. An empty frame is the
/// end; the channel closing without it is an error.
struct ChannelBody {
    receiver: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
    length: Option<u64>,
    ended: bool,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended || self.length == Some(0) {
            return Poll::Ready(None);
        }
        match std::task::ready!(self.receiver.poll_recv(cx)) {
            Some(Ok(data)) if data.is_empty() => {
                self.ended = true;
                Poll::Ready(None)
            }
            Some(Ok(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Some(Err(err)) => Poll::Ready(Some(Err(err))),
            None => Poll::Ready(Some(Err("request body cut off".into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.length == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}

/// HTTP/2 needs `:scheme` and `:authority`: fills them into an origin-form URI.
fn absolute_form<B>(request: &mut Request<B>, url: &ServerUrl) {
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
    parts.scheme = Some(if url.is_https() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    });
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
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
    use hyper::StatusCode;
    use hyper::body::Incoming;
    use hyper::header::CONNECTION;
    use hyper::service::service_fn;

    use crate::proxy::h1::request_body::BoxedBody;
    use client::UpstreamUpgrade;
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

    /// An `Upgrade: echo` request through `conns`: the tunnel its 101 gives, with nothing
    /// read past the head.
    async fn upgraded(conns: &Arc<ServerConnections>) -> Stream {
        let mut request = get("/upgrade");
        request
            .headers_mut()
            .insert(CONNECTION, "upgrade".parse().unwrap());
        request
            .headers_mut()
            .insert(hyper::header::UPGRADE, "echo".parse().unwrap());
        let mut response = conns
            .checkout()
            .await
            .unwrap()
            .send(&mut request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let (tunnel, leftover) = response
            .extensions_mut()
            .remove::<UpstreamUpgrade>()
            .expect("a 101 carries the connection")
            .take()
            .expect("once");
        assert!(leftover.is_empty());
        tunnel
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

    fn get(path: &str) -> Request<BoxedBody> {
        Request::builder()
            .uri(path)
            .header(HOST, "test.local")
            .body(BoxedBody::new(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed(),
            ))
            .unwrap()
    }

    /// Checkout, send, read the body to its end.
    async fn fetch(server: &Arc<ServerConnections>, path: &str) -> (StatusCode, Bytes) {
        let checkout = server.checkout().await.unwrap();
        let response = checkout.send(&mut get(path)).await.unwrap();
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

    /// What `release` does not keep comes back to the caller, which closes it after the
    /// client's response (a close inside `release` came before the response was written).
    #[tokio::test]
    async fn release_hands_back_what_the_pool_does_not_keep() {
        let server = tcp_server(Proto::H1 { keep_alive: true }, default_handler()).await;
        let ServerUrl::Http { host, port } = &server.url else {
            panic!("a TCP server");
        };
        let address = format!("{host}:{port}");
        let connect = || async {
            H1Conn {
                stream: Stream::Tcp(TcpStream::connect(&address).await.expect("connect")),
            }
        };

        let no_reuse = ServerConnections::new(
            server.url.clone(),
            keepalive(false, 32, LONG),
            CONNECT,
            false,
        );
        assert!(no_reuse.release(connect().await).is_some(), "reuse off");
        assert_eq!(no_reuse.idle_connections(), 0);

        let one =
            ServerConnections::new(server.url.clone(), keepalive(true, 1, LONG), CONNECT, false);
        assert!(one.release(connect().await).is_none(), "kept");
        assert!(
            one.release(connect().await).is_some(),
            "the oldest idle one, past max_idle"
        );
        assert_eq!(one.idle_connections(), 1);
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

    #[tokio::test(start_paused = true)]
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
        assert!(conns.idle.iter().all(|idle| lock(idle).is_empty()));
        let checkout = conns.checkout().await.unwrap();
        assert!(!checkout.reused());
        let response = checkout.send(&mut get("/")).await.unwrap();
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

    #[tokio::test(start_paused = true)]
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
        let response = checkout.send(&mut get("/")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(conns.connections_opened(), 2);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_closed_by_server_is_skipped_at_checkout() {
        let (close, closed) = watch::channel(false);
        let (url, accepted) = closing_server(closed, usize::MAX).await;
        let conns = ServerConnections::new(url, keepalive(true, 32, LONG), CONNECT, false);
        fetch(&conns, "/").await;
        close.send_replace(true);
        // Past `FRESH`: the connection is checked before it is handed out.
        tokio::time::sleep(FRESH + Duration::from_millis(100)).await;
        assert_eq!(conns.idle_connections(), 0);
        let checkout = conns.checkout().await.unwrap();
        assert!(!checkout.reused());
        let response = checkout.send(&mut get("/")).await.unwrap();
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
        let started = std::time::Instant::now();
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
        let mut response = checkout.send(&mut get("/big")).await.unwrap();
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
            .send(&mut get("/empty"))
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
        let mut tunnel = upgraded(&conns).await;
        tunnel.write_all(b"ping pong").await.unwrap();
        let mut echoed = [0u8; 9];
        tunnel.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping pong");
        assert_eq!(conns.idle_connections(), 0);
        // The next request needs a new connection.
        fetch(&conns, "/").await;
        assert_eq!(conns.connections_opened(), 2);
    }

    #[tokio::test(start_paused = true)]
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

    #[tokio::test(start_paused = true)]
    async fn retry_that_cannot_connect_is_not_sent() {
        let (close, closed) = watch::channel(false);
        let (url, accepted) = closing_server(closed, 1).await;
        let conns = ServerConnections::new(url, keepalive(true, 32, LONG), CONNECT, false);
        fetch(&conns, "/").await;
        let checkout = conns.checkout().await.unwrap();
        assert!(checkout.reused());
        close.send_replace(true);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let error = checkout.send(&mut get("/")).await.unwrap_err();
        assert!(
            matches!(error, SendError::NotSent(ConnectError::Refused(_))),
            "{error:?}"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// A raw server on 127.0.0.1 that reads each connection's request head and then runs
    /// `answer` on the connection.
    async fn raw_server<F, A>(answer: F) -> ServerUrl
    where
        F: Fn(TcpStream) -> A + Send + Sync + 'static,
        A: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = Arc::clone(&answer);
                tokio::spawn(async move {
                    read_request_head(&mut stream).await;
                    answer(stream).await;
                });
            }
        });
        ServerUrl::Http {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[tokio::test]
    async fn server_closing_after_reading_the_request_is_no_response_after_sending() {
        let url = raw_server(|_closed| async {}).await;
        let conns = ServerConnections::new(url, keepalive(true, 32, LONG), CONNECT, false);
        let error = conns
            .checkout()
            .await
            .unwrap()
            .send(&mut get("/"))
            .await
            .unwrap_err();
        // Sent, then closed without a byte of answer: the caller may retry it elsewhere
        // when that is safe, and it is the server's failure.
        assert!(matches!(error, SendError::NoResponse(_)), "{error:?}");
    }

    /// A server that answers every request with a 10-byte body, one byte every `every`
    /// after the head; after `stop_after` bytes it goes quiet (keeping the connection open).
    async fn dripping_server(every: Duration, stop_after: usize) -> ServerUrl {
        raw_server(move |mut stream| async move {
            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n";
            stream.write_all(head).await.unwrap();
            for byte in b"0123456789".iter().take(stop_after) {
                tokio::time::sleep(every).await;
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await
    }

    fn with_body_gap(url: ServerUrl, body_gap: Duration) -> Arc<ServerConnections> {
        let timeouts = ConnTimeouts {
            connect: CONNECT,
            body_gap,
        };
        ServerConnections::with_tls(url, keepalive(true, 32, LONG), timeouts, false, None)
    }

    #[tokio::test]
    async fn a_body_that_stops_coming_ends_in_an_error_after_the_gap() {
        let conns = with_body_gap(dripping_server(Duration::ZERO, 4).await, GAP);
        let response = conns.checkout().await.unwrap().send(&mut get("/")).await;
        let mut body = response.unwrap().into_body();
        let started = std::time::Instant::now();
        let mut got = Vec::new();
        let error = loop {
            match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
                Ok(Some(Ok(frame))) => got.extend_from_slice(&frame.into_data().unwrap()),
                Ok(Some(Err(error))) => break error,
                Ok(None) => panic!("a cut body must not end as if whole"),
                Err(_) => panic!("still waiting after 5 s: the gap is {GAP:?}"),
            }
        };
        assert_eq!(got, b"0123");
        assert!(
            error.to_string().contains("sent nothing for 300ms"),
            "{error}"
        );
        assert!(started.elapsed() >= GAP, "{:?}", started.elapsed());
        assert_eq!(conns.idle_connections(), 0, "a cut connection is not kept");
    }

    #[tokio::test]
    async fn a_slow_body_with_gaps_shorter_than_the_limit_is_read_whole() {
        // 10 × 100 ms: a second in all, over three times the gap, but never 300 ms quiet.
        let every = Duration::from_millis(100);
        let conns = with_body_gap(dripping_server(every, 10).await, GAP);
        let response = conns.checkout().await.unwrap().send(&mut get("/")).await;
        let body = response.unwrap().into_body().collect().await;
        assert_eq!(&body.unwrap().to_bytes()[..], b"0123456789");
        assert_eq!(conns.idle_connections(), 1, "read whole: back in the pool");
    }

    const GAP: Duration = Duration::from_millis(300);
    const TIMEOUTS: ConnTimeouts = ConnTimeouts {
        connect: CONNECT,
        body_gap: Duration::from_secs(60),
    };

    // ---- https:// servers ----------------------------------------------------------------

    /// A TLS server on 127.0.0.1 with a self-signed certificate for "localhost" and
    /// 127.0.0.1, offering `alpn`; it speaks h2 when that is what was negotiated. The
    /// certificate's PEM comes back for the client's roots.
    async fn tls_server(alpn: &[&[u8]], handler: Handler) -> (TestServer, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        // Its own issuer name: another server's certificate is then of an unknown issuer.
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("test server {port}"));
        let cert = params.self_signed(&key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let proto = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        Proto::H2
                    } else {
                        Proto::H1 { keep_alive: true }
                    };
                    serve_connection(stream, proto, handler);
                });
            }
        });
        let server = TestServer {
            url: ServerUrl::Https {
                host: "127.0.0.1".into(),
                port,
            },
            accepted,
            dir: None,
        };
        (server, cert.pem())
    }

    /// What connections to an https:// server trusting `ca` (PEM) need, offering h2 or not.
    fn server_tls(ca: &str, name: &str, h2: bool) -> ServerTls {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        ServerTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name: rustls_pki_types::ServerName::try_from(name.to_string()).unwrap(),
            offers_h2: h2,
        }
    }

    use rustls_pki_types::pem::PemObject;

    /// `/big` and `/upgrade` as [`default_handler`]; `/length` answers the request body's size.
    fn length_handler() -> Handler {
        let default = default_handler();
        Arc::new(move |req: Request<Incoming>| {
            let default = Arc::clone(&default);
            Box::pin(async move {
                if req.uri().path() != "/length" {
                    return default(req).await;
                }
                let version = format!("{:?}", req.version());
                let body = req.into_body().collect().await.unwrap().to_bytes();
                Response::new(Full::new(Bytes::from(format!("{} {version}", body.len()))))
            })
        })
    }

    fn post(path: &str, body: Vec<u8>) -> Request<BoxedBody> {
        Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, "test.local")
            .body(BoxedBody::new(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            ))
            .unwrap()
    }

    #[tokio::test]
    async fn tls_keeps_one_connection_carries_bodies_both_ways_and_tunnels() {
        let (server, ca) = tls_server(&[b"http/1.1"], length_handler()).await;
        let conns = ServerConnections::with_tls(
            server.url.clone(),
            keepalive(true, 32, LONG),
            TIMEOUTS,
            false,
            Some(server_tls(&ca, "127.0.0.1", false)),
        );
        for _ in 0..5 {
            let (status, body) = fetch(&conns, "/").await;
            assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
        }
        let (_, body) = fetch(&conns, "/big").await;
        assert_eq!(body.len(), BIG);
        // A body larger than the socket and rustls buffers: written as the server reads it.
        let response = conns
            .checkout()
            .await
            .unwrap()
            .send(&mut post("/length", vec![b'y'; 3 * 1024 * 1024]))
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"3145728 HTTP/1.1");
        assert_eq!((conns.connections_opened(), server.accepted()), (1, 1));
        assert_eq!(conns.idle_connections(), 1);

        // A 101 over TLS: the tunnel carries bytes both ways.
        let mut tunnel = upgraded(&conns).await;
        tunnel.write_all(b"ping over tls").await.unwrap();
        let mut echoed = [0u8; 13];
        tunnel.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping over tls");
    }

    #[tokio::test]
    async fn tls_name_or_issuer_mismatch_is_a_tls_connect_error() {
        let (server, ca) = tls_server(&[b"http/1.1"], default_handler()).await;
        let (_, other_ca) = tls_server(&[b"http/1.1"], default_handler()).await;
        for (ca, name, reason) in [
            (
                &other_ca,
                "127.0.0.1",
                "invalid peer certificate: UnknownIssuer",
            ),
            (
                &ca,
                "other.test",
                "certificate not valid for name \"other.test\"",
            ),
        ] {
            let conns = ServerConnections::with_tls(
                server.url.clone(),
                KeepaliveConfig::default(),
                TIMEOUTS,
                false,
                Some(server_tls(ca, name, false)),
            );
            match conns.checkout().await {
                Err(error @ ConnectError::Tls(_)) => {
                    let text = error.to_string();
                    assert!(
                        text.starts_with("TLS handshake failed: ") && text.contains(reason),
                        "{text}"
                    );
                }
                other => panic!("expected a TLS error naming {reason:?}, got {other:?}"),
            }
            assert_eq!(conns.connections_opened(), 0);
        }
        // Without TLS settings an https:// server cannot be spoken to.
        let conns = ServerConnections::new(
            server.url.clone(),
            KeepaliveConfig::default(),
            CONNECT,
            false,
        );
        assert!(matches!(conns.checkout().await, Err(ConnectError::Tls(_))));
    }

    #[tokio::test]
    async fn alpn_h2_shares_one_connection_and_http11_is_the_fallback() {
        let (h2_server, ca) = tls_server(&[b"h2", b"http/1.1"], length_handler()).await;
        let conns = ServerConnections::with_tls(
            h2_server.url.clone(),
            keepalive(true, 32, LONG),
            TIMEOUTS,
            false,
            Some(server_tls(&ca, "localhost", true)),
        );
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let conns = Arc::clone(&conns);
                tokio::spawn(async move {
                    let checkout = conns.checkout().await.unwrap();
                    let response = checkout
                        .send(&mut post("/length", vec![b'z'; 100]))
                        .await
                        .unwrap();
                    response.into_body().collect().await.unwrap().to_bytes()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(&task.await.unwrap()[..], b"100 HTTP/2.0");
        }
        for _ in 0..3 {
            let response = conns
                .checkout()
                .await
                .unwrap()
                .send(&mut post("/length", vec![b'z'; 10]))
                .await
                .unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"10 HTTP/2.0");
        }
        // The first concurrent checkouts may each have opened one; after that, one is shared.
        let opened = conns.connections_opened();
        assert!((1..=5).contains(&opened), "{opened}");
        assert!(conns.checkout().await.unwrap().reused());
        assert_eq!(conns.connections_opened(), opened);

        let (h1_server, ca) = tls_server(&[b"http/1.1"], length_handler()).await;
        let conns = ServerConnections::with_tls(
            h1_server.url.clone(),
            keepalive(true, 32, LONG),
            TIMEOUTS,
            false,
            Some(server_tls(&ca, "localhost", true)),
        );
        for _ in 0..3 {
            let response = conns
                .checkout()
                .await
                .unwrap()
                .send(&mut post("/length", vec![b'z'; 10]))
                .await
                .unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"10 HTTP/1.1");
        }
        assert_eq!((conns.connections_opened(), h1_server.accepted()), (1, 1));
    }

    /// A POST whose body (`chunks` of `size` bytes) is of unknown length: it goes out chunked,
    /// pulled chunk by chunk as the server takes it.
    fn streamed_post(path: &str, chunks: usize, size: usize) -> Request<BoxedBody> {
        let frames = (0..chunks).map(move |_| {
            Ok::<_, BoxError>(hyper::body::Frame::data(Bytes::from(vec![b'u'; size])))
        });
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, "test.local")
            .body(BoxedBody::new(BoxBody::new(body)))
            .unwrap()
    }

    #[tokio::test]
    async fn tls_server_answering_before_reading_the_body_is_heard() {
        // A server of our own: it reads the head only, answers 413, ends its TLS side and
        // stops reading. 32 MiB of body cannot fit in the socket buffers: the answer is only
        // heard if it is read while the body waits to be written.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "early answer");
        let cert = params.self_signed(&key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = acceptor.accept(stream).await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the head arrives");
                seen.extend_from_slice(&buf[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!")
                .await
                .unwrap();
            stream.shutdown().await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let conns = ServerConnections::with_tls(
            ServerUrl::Https {
                host: "127.0.0.1".into(),
                port,
            },
            keepalive(true, 32, LONG),
            TIMEOUTS,
            false,
            Some(server_tls(&cert.pem(), "127.0.0.1", false)),
        );
        let send = async {
            conns
                .checkout()
                .await
                .unwrap()
                .send(&mut streamed_post("/upload", 512, 64 * 1024))
                .await
                .unwrap()
        };
        let response = tokio::time::timeout(Duration::from_secs(5), send)
            .await
            .expect("the early answer is read while the body cannot be written");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"big!");
        assert_eq!(conns.idle_connections(), 0);
    }

    /// An idle connection moves to another worker's runtime (`take_idle` does it when a worker
    /// has none of its own): for TLS the socket under the same rustls session moves, and the
    /// connection carries the next request there, after the runtime that made it is gone.
    #[test]
    fn idle_tls_connection_moves_to_another_runtime() {
        let current = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let servers = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (server, ca) = servers.block_on(tls_server(&[b"http/1.1"], default_handler()));
        let first = current();
        let (conns, conn) = first.block_on(async {
            let conns = ServerConnections::with_tls(
                server.url.clone(),
                keepalive(true, 32, LONG),
                TIMEOUTS,
                false,
                Some(server_tls(&ca, "127.0.0.1", false)),
            );
            fetch(&conns, "/").await;
            let conn = conns.take_idle_from(0).expect("an idle connection");
            (conns, conn)
        });
        assert!(matches!(conn.stream, Stream::Tls(_)));
        // Its reactor is gone: the connection works on only if it moved.
        drop(first);
        let body = current().block_on(async move {
            let stream = conn.stream.into_current_runtime().expect("moved");
            assert!(stream.idle_usable());
            let mut request = get("/");
            let answer = h1::exchange(H1Conn { stream }, &mut request, &[])
                .await
                .expect("answered on the moved connection");
            let response = h1::into_response(answer, None, false, Duration::from_secs(60));
            response.into_body().collect().await.unwrap().to_bytes()
        });
        assert_eq!(&body[..], b"hello");
        assert_eq!((conns.connections_opened(), server.accepted()), (1, 1));
    }
}
