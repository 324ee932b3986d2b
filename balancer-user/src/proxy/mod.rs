//! The L7 reverse proxy: listeners (plain and TLS), routing, pools of servers, forwarding,
//! WebSocket tunnels, errors and access logs. A request passes explicit phases (see
//! handler.rs); header trust, rewriting and sticky sessions slot in as phases.
//!
//! `Proxy` owns the bound listeners and the current `ProxyState`; a reload builds a new state
//! (refusing the reload if any file it names is unusable), binds new listeners, then swaps the
//! state in one step: connections keep running, new requests see the new config.

pub mod access_log;
pub mod activity;
pub mod balance;
pub mod buffering;
pub mod checks;
pub mod client_connection;
pub mod coalesce;
pub mod compress;
pub mod config_error;
pub mod error;
pub mod h1;
pub mod h1_server;
pub mod handler;
pub mod html;
pub mod in_place;
pub mod listener;
pub mod log_file;
pub mod metrics;
pub mod operator_file;
pub mod pool;
pub mod process_log;
pub mod proxy_state;
pub mod read_buffers;
pub mod retry_budget;
pub mod route;
pub mod server_health;
pub mod static_files;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod upstream_tls;
pub mod wait_timer;
pub mod workers;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, combinators::BoxBody};
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

use crate::config::L7Config;
use config_error::ProxyConfigError;
use handler::Shared;
use listener::AcceptLoop;
use metrics::HttpMetrics;
use pool::StateChanges;
use proxy_state::ProxyState;

/// Any error a body or a phase can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response the proxy builds or forwards.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body of these bytes, whole.
pub fn full_body(bytes: Bytes) -> Body {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed()
}

/// A body with no bytes.
pub fn empty_body() -> Body {
    full_body(Bytes::new())
}

pub struct Proxy {
    shared: Arc<Shared>,
    /// The threads that serve connections (declared after `shared`... dropped last: see Drop).
    workers: workers::Workers,
    /// By bind address: a reload keeps the socket of an address that stays configured.
    listeners: HashMap<SocketAddr, RunningListener>,
    tracker: TaskTracker,
    /// Every pool activated tells it of its servers' changes.
    changes: StateChanges,
}

/// What the rest of the process sees of the proxy (the admin API, the VIP backends that follow
/// the pool servers at their addresses): its live state, its metrics and the changes of its
/// servers.
#[derive(Clone)]
pub struct ProxyView {
    shared: Arc<Shared>,
    changes: StateChanges,
}

impl ProxyView {
    /// The live state (its pools).
    pub fn state(&self) -> Arc<ProxyState> {
        self.shared.state.load_full()
    }

    pub fn metrics(&self) -> &HttpMetrics {
        &self.shared.metrics
    }

    /// Changes on every change of a server's state, every active check result and every reload.
    pub fn changes(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }
}

/// Why the proxy refused a config, at the start or on a reload (nothing of it applied).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ProxyConfigError),
    #[error("proxy.access_log_file {}: {source}", path.display())]
    AccessLog {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("proxy.temp_dir: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("listener {listener}: cannot listen on {bind}: {source}")]
    Listen {
        listener: String,
        bind: SocketAddr,
        source: std::io::Error,
    },
}

/// SIGUSR1 could not open the access-log file anew (the one open before stays in use).
#[derive(Debug, thiserror::Error)]
#[error("reopening {}: {source}", path.display())]
pub struct ReopenError {
    path: std::path::PathBuf,
    source: std::io::Error,
}

struct RunningListener {
    limit: Arc<Semaphore>,
    max_connections: usize,
    /// Why the listener stopped (none while it serves): removed or shut down, or handed over.
    stop: watch::Sender<Option<client_connection::CloseReason>>,
    /// The listening sockets (one per worker; other descriptors of them), for
    /// `balancer upgrade` to take.
    sockets: Vec<std::net::TcpListener>,
}

impl Proxy {
    /// Opens every file `config` names (certificates, keys, error pages, static directories)
    /// without binding anything: what `check-config` and a reload verify first.
    pub fn check(config: &L7Config) -> Result<(), ProxyConfigError> {
        ProxyState::build(config, None).map(|_| ())
    }

    /// Builds the state and binds every listener (or takes it from `inherited`, the sockets
    /// of the process being upgraded); nothing is served if one fails.
    pub fn start(
        config: &L7Config,
        metrics: HttpMetrics,
        inherited: Option<&mut crate::upgrade::Inherited>,
    ) -> anyhow::Result<Proxy> {
        // First: per-worker state (idle upstream connections) is sized by the worker count.
        let workers = workers::Workers::start(config.proxy.worker_count())?;
        let mut state = ProxyState::build(config, None).map_err(anyhow::Error::msg)?;
        state.access_log_file = open_access_log(config, None).map_err(anyhow::Error::msg)?;
        check_temp_dir(&state.temp_dir).map_err(anyhow::Error::msg)?;
        if let Some(path) = &config.proxy.state_file {
            let kept = operator_file::restore(path, &state).map_err(anyhow::Error::msg)?;
            if kept > 0 {
                tracing::info!(file = %path.display(), servers = kept, "operator state of pool servers kept from before the restart");
            }
        }
        let tracker = TaskTracker::new();
        let mut proxy = Proxy {
            shared: Arc::new(Shared {
                state: ArcSwap::from_pointee(state),
                metrics: Arc::new(metrics),
                tracker: tracker.clone(),
                draining: std::sync::atomic::AtomicBool::new(false),
            }),
            workers,
            listeners: HashMap::new(),
            tracker,
            changes: StateChanges::default(),
        };
        let bound = bind_all(
            config,
            &proxy.listeners,
            inherited,
            proxy.sockets_per_listener(),
        )
        .map_err(anyhow::Error::msg)?;
        for pool in proxy.shared.state.load().pools.values() {
            pool.activate(&proxy.changes);
        }
        proxy.spawn_listeners(bound);
        Ok(proxy)
    }

    /// What the rest of the process sees of the proxy.
    pub fn view(&self) -> ProxyView {
        ProxyView {
            shared: self.shared.clone(),
            changes: self.changes.clone(),
        }
    }

    /// Applies `config`: either all of it or, on any error, none of it.
    pub fn reload(&mut self, config: &L7Config) -> Result<(), ReloadError> {
        let previous = self.shared.state.load_full();
        let mut state = ProxyState::build(config, Some(&previous))?;
        state.access_log_file = open_access_log(config, previous.access_log_file.as_ref())?;
        check_temp_dir(&state.temp_dir)?;
        let bound = bind_all(config, &self.listeners, None, self.sockets_per_listener())?;
        self.shared.state.store(Arc::new(state));

        let wanted: HashMap<SocketAddr, &crate::config::ListenerConfig> = config
            .listeners
            .iter()
            .map(|listener| (listener.bind, listener))
            .collect();
        self.listeners
            .retain(|bind, running| match wanted.get(bind) {
                Some(listener) => {
                    resize(running, listener.max_connections);
                    true
                }
                None => {
                    tracing::info!(%bind, "listener removed: no longer accepting");
                    let _ = running
                        .stop
                        .send(Some(client_connection::CloseReason::Close));
                    false
                }
            });
        self.spawn_listeners(bound);
        // Pools that were replaced keep serving their in-flight requests; their idle
        // connections and their checkers are no longer needed. New pools start checking.
        let current = self.shared.state.load();
        for (name, pool) in &previous.pools {
            if !current
                .pools
                .get(name)
                .is_some_and(|kept| Arc::ptr_eq(kept, pool))
            {
                pool.deactivate();
                pool.close_idle();
            }
        }
        for pool in current.pools.values() {
            pool.activate(&self.changes);
        }
        Ok(())
    }

    /// One listening socket per worker and address: each worker accepts on its own.
    fn sockets_per_listener(&self) -> usize {
        self.workers.runtimes().len()
    }

    fn spawn_listeners(&mut self, bound: Vec<Bound>) {
        let runtimes = self.workers.runtimes();
        for Bound { config, sockets } in bound {
            let limit = Arc::new(Semaphore::new(config.max_connections));
            let (stop, stop_rx) = watch::channel(None);
            tracing::info!(listener = %config.name, bind = %config.bind, tls = config.is_tls(), sockets = sockets.len(), "listening");
            for (index, runtime) in runtimes.iter().enumerate() {
                // Each worker accepts on the sockets `index`, `index + workers`, …: more
                // sockets than workers when an older process with more workers handed them
                // over. With fewer (sockets that could not join a group), workers share one.
                let mine: Vec<&std::net::TcpListener> = if sockets.len() > index {
                    sockets.iter().skip(index).step_by(runtimes.len()).collect()
                } else {
                    sockets.get(index % sockets.len()).into_iter().collect()
                };
                for socket in mine {
                    // The accept loop owns its descriptor; another one is kept for a handover.
                    let socket = match socket.try_clone() {
                        Ok(socket) => socket,
                        Err(err) => {
                            tracing::error!(listener = %config.name, "cannot give a worker its listening socket: {err}");
                            continue;
                        }
                    };
                    let accept = AcceptLoop {
                        bind: config.bind,
                        limit: limit.clone(),
                        shared: self.shared.clone(),
                        tracker: self.tracker.clone(),
                        stop: stop_rx.clone(),
                    };
                    runtime.spawn(accept.run(socket));
                }
            }
            self.listeners.insert(
                config.bind,
                RunningListener {
                    limit,
                    max_connections: config.max_connections,
                    stop,
                    sockets,
                },
            );
        }
    }

    /// SIGUSR1: writes the access-log lines gathered so far to the file open now, then opens
    /// `proxy.access_log_file` anew (logrotate renamed the old one).
    pub fn reopen_access_log(&self) -> Result<(), ReopenError> {
        match &self.shared.state.load().access_log_file {
            Some(file) => file.reopen().map_err(|source| ReopenError {
                path: file.path().to_path_buf(),
                source,
            }),
            None => Ok(()),
        }
    }

    /// The listening sockets, by address (one per worker), for a handover to a new process.
    pub fn listener_sockets(&self) -> Vec<(SocketAddr, std::os::fd::RawFd)> {
        use std::os::fd::AsRawFd;
        self.listeners
            .iter()
            .flat_map(|(address, running)| {
                running
                    .sockets
                    .iter()
                    .map(|socket| (*address, socket.as_raw_fd()))
            })
            .collect()
    }

    /// After a new process took the listeners over: stops accepting (the sockets stay open
    /// in the new process, so nothing is refused), ends each HTTP/1.x keep-alive connection
    /// after its next response and sends GOAWAY on HTTP/2 ones, and waits up to `timeout`
    /// for requests in flight and open WebSocket tunnels. Idle connections that send nothing
    /// more are closed at `timeout`.
    pub async fn drain_after_handover(self, timeout: Duration) {
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Stops the accept loops too. A handover, not a close: a close also ends idle
        // HTTP/1.x connections at once, which could race a request the client is sending.
        for running in self.listeners.values() {
            let _ = running
                .stop
                .send(Some(client_connection::CloseReason::Handover));
        }
        self.finish(timeout).await;
    }

    /// Stops accepting, asks every connection to close after its current request, and waits
    /// up to `timeout` for them.
    pub async fn shutdown(mut self, timeout: Duration) {
        // Dropped here, with the descriptor kept for a handover: once the accept loops have
        // dropped theirs too, the sockets close and new connections are refused.
        for (_, running) in std::mem::take(&mut self.listeners) {
            let _ = running
                .stop
                .send(Some(client_connection::CloseReason::Close));
        }
        self.finish(timeout).await;
    }

    /// The end of a shutdown or a handover, once the connections were told: the pools stop
    /// checking, connections get up to `timeout` to finish, the access log is written out.
    async fn finish(&self, timeout: Duration) {
        for pool in self.shared.state.load().pools.values() {
            pool.deactivate();
        }
        self.tracker.close();
        if tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = self.tracker.len(),
                "shutdown timeout reached: closing the remaining connections"
            );
        }
        if let Some(file) = &self.shared.state.load().access_log_file {
            file.flush();
        }
    }
}

/// Bodies spill into `proxy.temp_dir`: one that cannot take a file refuses the start or the
/// reload, rather than failing uploads later.
fn check_temp_dir(dir: &std::path::Path) -> Result<(), ReloadError> {
    buffering::spool::open_unlinked(dir)
        .map(drop)
        .map_err(ReloadError::TempDir)
}

/// The access-log file of `config`: the one open now if the path did not change (its pending
/// lines and its reopen state carry over), else opened anew; a path that cannot be opened
/// refuses the start or the reload.
fn open_access_log(
    config: &L7Config,
    current: Option<&Arc<log_file::AccessLogFile>>,
) -> Result<Option<Arc<log_file::AccessLogFile>>, ReloadError> {
    let Some(path) = &config.proxy.access_log_file else {
        return Ok(None);
    };
    if let Some(current) = current.filter(|file| file.path() == path) {
        return Ok(Some(current.clone()));
    }
    log_file::AccessLogFile::open(path)
        .map(Some)
        .map_err(|source| ReloadError::AccessLog {
            path: path.clone(),
            source,
        })
}

/// A listener to start serving, with its listening sockets.
struct Bound {
    config: crate::config::ListenerConfig,
    sockets: Vec<std::net::TcpListener>,
}

/// Binds the listeners of `config` whose address is not bound yet (`per_listener` sockets
/// each, one per worker), or takes their sockets from `inherited`, the process being upgraded.
fn bind_all(
    config: &L7Config,
    running: &HashMap<SocketAddr, RunningListener>,
    mut inherited: Option<&mut crate::upgrade::Inherited>,
    per_listener: usize,
) -> Result<Vec<Bound>, ReloadError> {
    let mut bound = Vec::new();
    for listener in &config.listeners {
        if running.contains_key(&listener.bind) {
            continue;
        }
        let cannot = |source| ReloadError::Listen {
            listener: listener.name.clone(),
            bind: listener.bind,
            source,
        };
        let mut sockets = inherited
            .as_deref_mut()
            .map(|inherited| inherited.take(listener.bind))
            .unwrap_or_default();
        if sockets.is_empty() {
            sockets = listener::bind_group(listener.bind, per_listener).map_err(cannot)?;
        } else if sockets.len() < per_listener && listener::reuses_port(&sockets[0]) {
            // The old process ran fewer workers: the others join its group. Its sockets are
            // all kept, with the connections queued on them.
            let address = sockets[0].local_addr().map_err(cannot)?;
            while sockets.len() < per_listener {
                match listener::join_group(address) {
                    Ok(socket) => sockets.push(socket),
                    Err(err) => {
                        tracing::warn!(listener = %listener.name, "workers share the sockets taken over: cannot add one: {err}");
                        break;
                    }
                }
            }
        }
        bound.push(Bound {
            config: listener.clone(),
            sockets,
        });
    }
    Ok(bound)
}

/// Another descriptor of `socket`, as a std listener (never polled: only passed on to a new
/// process by `balancer upgrade`).
pub(crate) fn duplicate(
    socket: &tokio::net::TcpListener,
) -> std::io::Result<std::net::TcpListener> {
    use std::os::fd::AsFd;
    let fd = socket.as_fd().try_clone_to_owned()?;
    Ok(std::net::TcpListener::from(fd))
}

/// Applies a changed `max_connections` to a running listener.
fn resize(running: &mut RunningListener, max_connections: usize) {
    if max_connections > running.max_connections {
        running
            .limit
            .add_permits(max_connections - running.max_connections);
    } else if max_connections < running.max_connections {
        // Permits held by open connections are taken back as those connections close.
        let excess = running.max_connections - max_connections;
        let limit = running.limit.clone();
        tokio::spawn(async move {
            if let Ok(permits) = limit
                .acquire_many_owned(u32::try_from(excess).unwrap_or(u32::MAX))
                .await
            {
                permits.forget();
            }
        });
    }
    running.max_connections = max_connections;
}
