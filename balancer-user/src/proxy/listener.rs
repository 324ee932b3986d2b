//! Accepting client connections: bind, the per-listener connection limit, the TLS handshake,
//! hyper's HTTP/1.1 + HTTP/2 server, our header-read and keep-alive clocks, and graceful close.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};
use tokio_util::task::TaskTracker;

use super::{
    activity::{Activity, WatchedIo},
    handler::{self, ConnInfo, Shared},
    metrics::ListenerLabels,
};
use crate::config::ListenerConfig;

/// Connections waiting to be accepted: enough for bursts of new TLS connections.
const BACKLOG: i32 = 4096;

/// Binds a listening socket. IPv6 sockets are IPv6-only so that `0.0.0.0:443` and `[::]:443`
/// can both be configured.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// A bound listener and what its accept loop needs.
pub struct AcceptLoop {
    pub listener: TcpListener,
    /// The configured address: what identifies the listener in the current state (a reload
    /// may rename the listener of an address).
    pub bind: SocketAddr,
    pub limit: Arc<Semaphore>,
    pub shared: Arc<Shared>,
    pub tracker: TaskTracker,
    /// Turns true when the listener is removed or the proxy shuts down: stop accepting, and
    /// close its connections once their requests finish.
    pub stop: watch::Receiver<bool>,
    /// Turns true when the proxy shuts down: close connections once their requests finish.
    pub shutdown: watch::Receiver<bool>,
}

impl AcceptLoop {
    pub async fn run(mut self) {
        loop {
            let permit = tokio::select! {
                permit = self.limit.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                _ = self.stop.changed() => return,
            };
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
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
            let _ = stream.set_nodelay(true);
            let bind = self.bind;
            let shared = self.shared.clone();
            let closing = Closing {
                shutdown: self.shutdown.clone(),
                removed: self.stop.clone(),
            };
            self.tracker.spawn(async move {
                serve_connection(shared, bind, stream, peer, closing).await;
                drop(permit);
            });
        }
    }
}

/// What makes a connection close once its requests in flight are answered: the proxy shutting
/// down, or a reload removing its listener (whose requests would find no routes any more).
struct Closing {
    shutdown: watch::Receiver<bool>,
    removed: watch::Receiver<bool>,
}

impl Closing {
    /// Resolves on either signal (or when a sender is gone, which also means closing).
    async fn signalled(&mut self) {
        tokio::select! {
            _ = self.shutdown.changed() => {}
            _ = self.removed.changed() => {}
        }
    }
}

/// What a connection's task keeps of its listener's config (a copy of the whole
/// `ListenerConfig` per idle connection would be memory for nothing).
#[derive(Clone, Copy)]
struct ConnLimits {
    header_read_timeout: Duration,
    keepalive_timeout: Duration,
    max_header_bytes: usize,
    max_headers: usize,
}

impl ConnLimits {
    fn of(config: &ListenerConfig) -> ConnLimits {
        ConnLimits {
            header_read_timeout: config.header_read_timeout,
            keepalive_timeout: config.keepalive_timeout,
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
        }
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    bind: SocketAddr,
    stream: TcpStream,
    peer: SocketAddr,
    closing: Closing,
) {
    let state = shared.state.load_full();
    let Some(listener) = state.listener_at(bind) else {
        return;
    };
    let limits = ConnLimits::of(&listener.config);
    let tls = listener.tls.clone();
    let labels = ListenerLabels {
        listener: listener.config.name.clone(),
    };
    drop(state);
    shared
        .metrics
        .connections_accepted
        .get_or_create(&labels)
        .inc();
    let open = shared.metrics.connections.get_or_create(&labels).clone();
    drop(labels);
    open.inc();

    let activity = Activity::new();
    let io = WatchedIo::new(stream, activity.clone());
    match tls {
        None => {
            let info = ConnInfo {
                bind,
                peer,
                sni: None,
                tls: false,
                activity,
            };
            serve_http(shared, limits, info, io, closing).await;
        }
        // Boxed: the handshake and the TLS stream are large, and a plain connection's task
        // would otherwise reserve room for them for its whole life.
        Some(tls) => {
            Box::pin(serve_tls(
                shared, limits, tls, bind, peer, io, activity, closing,
            ))
            .await
        }
    }
    open.dec();
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
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handshake = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io)).await;
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
            let info = ConnInfo {
                bind,
                peer,
                sni,
                tls: true,
                activity,
            };
            serve_http(shared, limits, info, stream, closing).await;
        }
        Ok(Err(err)) => tracing::debug!(%peer, "TLS handshake failed: {err}"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
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

async fn serve_http<I>(
    shared: Arc<Shared>,
    config: ConnLimits,
    info: ConnInfo,
    io: I,
    mut signal: Closing,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = info.activity.clone();
    let info = Arc::new(info);
    let service = service_fn(move |request| -> HandlerFuture {
        Box::pin(handler::handle(shared.clone(), info.clone(), request))
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Our own clocks (activity.rs) replace hyper's header timer, which would also cut
        // keep-alive waits short.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(config.max_header_bytes.max(8192));
    // hyper's own default is 100 on the stack; an explicit limit costs a heap array per
    // parsed head.
    if config.max_headers != ListenerConfig::DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(config.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        // RFC 8441: WebSockets over HTTP/2 streams.
        .enable_connect_protocol();
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);

    let mut closing = false;
    loop {
        let deadline = activity
            .deadline(config.header_read_timeout, config.keepalive_timeout)
            .unwrap_or_else(|| std::time::Instant::now() + config.header_read_timeout);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!("client connection ended: {err}");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                let expired = activity
                    .deadline(config.header_read_timeout, config.keepalive_timeout)
                    .is_some_and(|deadline| deadline <= std::time::Instant::now());
                if expired {
                    // Nothing is in flight: dropping the connection loses no response.
                    return;
                }
            }
            () = signal.signalled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
