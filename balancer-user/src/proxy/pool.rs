//! A pool at run time: its servers with their connections, in-flight counts and health state
//! (server_health.rs), and the selection policy. Kept across reloads while its config is
//! unchanged, so idle connections and counters survive; when its config changes, the new pool's
//! servers take over the health state of the old pool's servers with the same url.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hyper::header::HeaderValue;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{
    balance::{self, Candidate, Selector},
    checks::{CheckedPool, check_spec},
    error::ErrorPages,
    retry_budget::RetryBudget,
    server_health::{Admission, Change, HealthRules, Outcome, ServerState, StateView, Transition},
    upstream::{ConnTimeouts, ServerConnections},
    upstream_tls::{ServerTls, TlsFiles},
};
use crate::clock;
use crate::config::{InitialState, PoolConfig, ServerConfig};
use crate::health::{self, CheckOutcome, Subscriber};
use crate::operator::Operator;
use crate::sticky::{ServerIdentity, StickyPolicy};

/// How often a queued request looks again for a slot that no release handed to it.
const QUEUE_RECHECK: Duration = Duration::from_millis(500);

pub struct Pool {
    pub config: PoolConfig,
    /// `config.name`, shared with the access records of its requests.
    pub name: Arc<str>,
    pub servers: Vec<Server>,
    selector: Box<dyn Selector>,
    pub error_pages: Arc<ErrorPages>,
    /// Cancelled when the pool stops serving new requests (replaced on reload, shutdown):
    /// ends its active checkers.
    checks: CancellationToken,
    activated: AtomicBool,
    /// Told of every change of its servers' states once the pool is activated.
    changes: std::sync::OnceLock<StateChanges>,
    /// `sticky`: which server a request is stuck to, and the cookies that say so.
    pub sticky: Option<StickyPolicy>,
    /// The insert-mode key the policy was built with (a reload re-reads its file).
    sticky_key: Option<Vec<u8>>,
    /// `health.tls`: the TLS client config of the active checks.
    pub check_tls: Option<Arc<rustls::ClientConfig>>,
    /// The `health.tls_ca_file` content `check_tls` was built with (a reload re-reads it).
    check_ca: Option<Vec<u8>>,
    /// https:// servers: the pool's TLS client config (its connections and their checks use
    /// it), and the files it was built from (a reload re-reads them).
    pub server_tls: Option<Arc<rustls::ClientConfig>>,
    server_tls_files: Option<TlsFiles>,
    /// Requests waiting for a server below its `max_conns`, oldest first.
    queue: Mutex<VecDeque<Waiter>>,
    /// `queue.len()`, readable without the lock (a release checks it on every request).
    queued: AtomicUsize,
    /// Requests that waited in the queue, how long in total, and how many gave up.
    pub queue_stats: QueueStats,
    /// `retry.budget`: how many requests that reached a server may go to another.
    pub retry_budget: RetryBudget,
}

/// Signals every change of the live pools' servers (health, ejection, operator), every active
/// check result (the reason of a down server can change without a transition) and every
/// activation of a pool, to whoever follows them (the VIP backends at the same addresses).
/// Cheap to clone.
#[derive(Clone)]
pub struct StateChanges(Arc<watch::Sender<()>>);

impl Default for StateChanges {
    fn default() -> StateChanges {
        StateChanges(Arc::new(watch::Sender::new(())))
    }
}

impl StateChanges {
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.0.subscribe()
    }

    fn signal(&self) {
        self.0.send_replace(());
    }
}

/// A request in the queue: the slot of a server is handed to it directly when one frees up,
/// so a request that arrives later cannot take it first (FIFO).
struct Waiter {
    /// Its session's server: it waits for that one only.
    preferred: Option<usize>,
    /// A server it must not get (it failed this request already).
    exclude: Option<usize>,
    handoff: oneshot::Sender<ServerLoad>,
}

#[derive(Default)]
pub struct QueueStats {
    pub waited: AtomicU64,
    pub wait_micros: AtomicU64,
    pub timeouts: AtomicU64,
}

/// Why [`Pool::pick_with`] found no server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPick {
    /// No server can take the request (down, drained, disabled, excluded, weight 0).
    NoServer,
    /// Servers could take it, but each is at its `max_conns`: the request may wait.
    Full,
}

pub struct Server {
    pub config: ServerConfig,
    /// `url` as text, for logs, metrics and access records (shared, not copied, per request).
    pub label: Arc<str>,
    /// The `Host` sent without `preserve_host` (`ServerUrl::authority`, built once).
    pub authority: String,
    /// `authority` as the header value, shared by every request's Host.
    pub host: HeaderValue,
    pub connections: Arc<ServerConnections>,
    /// Stable identity for consistent hashing: a fixed-key hash of the URL.
    id: u64,
    in_flight: AtomicU32,
    /// Shared with the server of the same url in the pool this one replaced.
    pub health: Arc<ServerHealth>,
    pub requests: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Requests that went to this server because their session sticks to it.
    pub sticky_requests: AtomicU64,
    /// Woken when checks mark the server down: requests waiting on it stop (`on_down`).
    pub marked_down: Notify,
}

/// A server's state and how often it changed, by where it went.
pub struct ServerHealth {
    state: Mutex<ServerState>,
    changes: [AtomicU64; Transition::ALL.len()],
}

impl ServerHealth {
    fn new(rules: HealthRules) -> ServerHealth {
        ServerHealth {
            state: Mutex::new(ServerState::new(rules)),
            changes: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The operator's state of the server (what the admin API set).
    pub fn operator(&self) -> Operator {
        self.lock().operator()
    }

    /// Changes to `to` since the server was first configured.
    pub fn changes(&self, to: Transition) -> u64 {
        self.changes[to as usize].load(Ordering::Relaxed)
    }
}

impl Server {
    fn new(
        pool: &PoolConfig,
        config: &ServerConfig,
        health: Arc<ServerHealth>,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Server {
        let label = Arc::from(config.url.to_string());
        let tls = tls.and_then(|tls| ServerTls::new(&config.url, &pool.tls, tls));
        let authority = config.url.authority();
        // A URL's authority is always a valid field value (host, or [IPv6], and port).
        let host =
            HeaderValue::from_str(&authority).unwrap_or_else(|_| HeaderValue::from_static(""));
        Server {
            connections: ServerConnections::with_tls(
                config.url.clone(),
                pool.keepalive,
                ConnTimeouts {
                    connect: pool.timeouts.connect,
                    body_gap: pool.timeouts.response,
                },
                pool.h2c,
                tls,
            ),
            id: balance::server_id(&config.url),
            label,
            authority,
            host,
            config: config.clone(),
            in_flight: AtomicU32::new(0),
            health,
            requests: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            sticky_requests: AtomicU64::new(0),
            marked_down: Notify::new(),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether `in_flight` requests fill the server's `max_conns`.
    fn at_limit(&self, in_flight: u32) -> bool {
        self.config.max_conns > 0 && in_flight >= self.config.max_conns
    }

    /// The id the admin API knows the server by: its `route`, else its url.
    pub fn admin_id(&self) -> &str {
        self.config.route.as_deref().unwrap_or(&self.label)
    }
}

/// Counts a request against its server until dropped (the response read whole from the
/// server, or sent to the client).
pub struct ServerLoad {
    pool: Arc<Pool>,
    index: usize,
    preferred: bool,
    /// false: the count was handed to a waiting request (or never taken); dropping does
    /// nothing.
    armed: bool,
}

impl ServerLoad {
    pub fn server(&self) -> &Server {
        &self.pool.servers[self.index]
    }

    /// Whether the server is the `preferred` one given to [`Pool::pick_with`] (the session's
    /// sticky server), rather than a new pick.
    pub fn used_preferred(&self) -> bool {
        self.preferred
    }
}

impl Drop for ServerLoad {
    fn drop(&mut self) {
        if self.armed {
            self.pool.release_slot(self.index);
        }
    }
}

impl Pool {
    /// A pool for `config`; servers also in `previous` (the pool of the same name in the config
    /// being replaced) keep their health state, new ones start fresh (down if the pool has
    /// active checks). `server_tls`: the TLS client config of the pool's https:// servers and
    /// the files it was built from.
    pub fn new(
        config: &PoolConfig,
        error_pages: Arc<ErrorPages>,
        previous: Option<&Pool>,
        server_tls: Option<(TlsFiles, Arc<rustls::ClientConfig>)>,
    ) -> Pool {
        let (server_tls_files, server_tls) = server_tls.unzip();
        let rules = HealthRules::of(config);
        Pool {
            servers: config
                .servers
                .iter()
                .map(|server| {
                    let health = previous
                        .and_then(|pool| pool.servers.iter().find(|s| s.config.url == server.url))
                        .map_or_else(
                            || {
                                // A server new to this process starts as configured.
                                let health = ServerHealth::new(rules);
                                let initial = match server.state {
                                    InitialState::Enabled => Operator::Enabled,
                                    InitialState::Draining => Operator::Draining,
                                    InitialState::Disabled => Operator::Disabled,
                                };
                                if initial != Operator::Enabled {
                                    health.lock().set_operator(initial, "config (state)");
                                }
                                Arc::new(health)
                            },
                            |kept| kept.health.clone(),
                        );
                    Server::new(config, server, health, server_tls.as_ref())
                })
                .collect(),
            selector: balance::selector(&config.balance),
            name: Arc::from(config.name.as_str()),
            config: config.clone(),
            error_pages,
            checks: CancellationToken::new(),
            activated: AtomicBool::new(false),
            changes: std::sync::OnceLock::new(),
            sticky: None,
            sticky_key: None,
            check_tls: None,
            check_ca: None,
            queue: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            queue_stats: QueueStats::default(),
            retry_budget: RetryBudget::new(config.retry.budget_permille),
            server_tls,
            server_tls_files,
        }
    }

    /// The TLS files the pool's https:// servers' config was built from.
    pub fn server_tls_files(&self) -> Option<&TlsFiles> {
        self.server_tls_files.as_ref()
    }

    /// Adds the TLS client config of the pool's checks when `health.tls` is set, verifying
    /// with `ca` (the content of `tls_ca_file`).
    pub fn with_check_tls(
        mut self,
        ca: Option<Vec<u8>>,
    ) -> Result<Pool, crate::health::CheckTlsError> {
        if let Some(tls) = self.config.health.as_ref().and_then(|h| h.tls.as_ref()) {
            let ca_file = tls.ca_file.as_deref().zip(ca.as_deref());
            self.check_tls = Some(crate::health::check_tls_config(ca_file)?);
        }
        self.check_ca = ca;
        Ok(self)
    }

    pub fn check_ca(&self) -> Option<&[u8]> {
        self.check_ca.as_deref()
    }

    /// Adds the pool's sticky policy (from its config; `key` for insert mode).
    pub fn with_sticky(mut self, key: Option<Vec<u8>>) -> Result<Pool, crate::sticky::StickyError> {
        if let Some(config) = &self.config.sticky {
            let servers: Vec<ServerIdentity> =
                self.config.servers.iter().map(ServerIdentity::of).collect();
            self.sticky = Some(StickyPolicy::new(config, &servers, key.as_deref())?);
        }
        self.sticky_key = key;
        Ok(self)
    }

    pub fn sticky_key(&self) -> Option<&[u8]> {
        self.sticky_key.as_deref()
    }

    /// The pool starts serving (it is in the live state): applies its health rules to the
    /// servers it took over, starts its active checkers and tells `changes` of every change of
    /// its servers from now on. Once; needs a tokio runtime.
    pub fn activate(self: &Arc<Self>, changes: &StateChanges) {
        if self.activated.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.changes.set(changes.clone());
        changes.signal();
        let rules = HealthRules::of(&self.config);
        let now = Instant::now();
        for server in &self.servers {
            let change = server.health.lock().reconfigure(rules, now);
            self.note(server, change);
        }
        if let Some(check) = &self.config.health {
            let checked = CheckedPool {
                config: &self.config,
                check_tls: self.check_tls.as_ref(),
                server_tls: self.server_tls.as_ref(),
            };
            let specs = self
                .servers
                .iter()
                .enumerate()
                .map(|(index, server)| (index, check_spec(&checked, &server.config.url, check)))
                .collect();
            let subscriber: Arc<dyn Subscriber> = Arc::new(Arc::downgrade(self));
            // They end with `deactivate` or when the pool is dropped.
            health::spawn_checks(specs, &subscriber, &self.checks).detach_all();
        }
    }

    /// The pool no longer takes new requests (replaced, or shutdown): its checkers stop.
    pub fn deactivate(&self) {
        self.checks.cancel();
    }

    fn signal_change(&self) {
        if let Some(changes) = self.changes.get() {
            changes.signal();
        }
    }

    /// Logs, counts and signals a change of `server`.
    fn note(&self, server: &Server, change: Option<Change>) {
        let Some(change) = change else {
            return;
        };
        self.signal_change();
        server.health.changes[change.to as usize].fetch_add(1, Ordering::Relaxed);
        if change.to == Transition::Down {
            server.marked_down.notify_waiters();
        }
        let (pool, to, cause) = (&self.config.name, change.to.label(), &change.cause);
        if change.to.is_loss() {
            tracing::warn!(%pool, server = %server.label, %to, %cause, "server state changed");
        } else {
            tracing::info!(%pool, server = %server.label, %to, %cause, "server state changed");
        }
    }

    /// The state of server `index` at `now` (letting time pass first: an ejection may be over).
    pub fn view(&self, index: usize, now: Instant) -> StateView {
        self.with_state(index, now, |state| state.view(now))
    }

    /// What a pick needs of server `index` at `now` (time passed first, as in [`Self::view`]).
    fn admission(&self, index: usize, now: Instant) -> Admission {
        self.with_state(index, now, |state| state.admission(now))
    }

    fn with_state<T>(&self, index: usize, now: Instant, read: impl FnOnce(&ServerState) -> T) -> T {
        let server = &self.servers[index];
        let mut state = server.health.lock();
        let change = state.tick(now);
        let value = read(&state);
        drop(state);
        self.note(server, change);
        value
    }

    /// Picks a server for a request with hash `key`, never one in `exclude`, and counts the
    /// request on it; the session's sticky server `preferred` is used when it takes sticky
    /// requests (enabled or draining, healthy, not ejected) and is not `exclude`d, otherwise
    /// a normal pick among the servers taking new sessions ([`ServerLoad::used_preferred`]
    /// tells which). Servers at their `max_conns` are skipped; when that leaves none (or the
    /// sticky server is full), the answer is [`NoPick::Full`].
    pub fn pick_with(
        self: &Arc<Self>,
        key: Option<&[u8]>,
        exclude: Option<usize>,
        preferred: Option<usize>,
    ) -> Result<ServerLoad, NoPick> {
        let now = clock::now();
        let sticky = preferred.filter(|&index| {
            Some(index) != exclude
                && index < self.servers.len()
                && self.admission(index, now).takes_sticky
        });
        if let Some(index) = sticky {
            // A session waits for its own server rather than going elsewhere when it is full.
            return self.acquire(index, true).ok_or(NoPick::Full);
        }
        // A slot taken between the selection and the count (another request won it) means
        // selecting again; a few rounds settle any race, then the request queues.
        for _ in 0..4 {
            let mut full = false;
            let mut candidates: Vec<Candidate> = self
                .servers
                .iter()
                .enumerate()
                .map(|(index, server)| {
                    let admission = self.admission(index, now);
                    let in_flight = server.in_flight();
                    let usable = Some(index) != exclude && admission.takes_new;
                    let at_limit = server.at_limit(in_flight);
                    full |= usable && at_limit && server.config.weight > 0;
                    Candidate {
                        id: server.id,
                        // Scaled by the slow-start share (all by 1000: ratios are unchanged).
                        weight: server
                            .config
                            .weight
                            .saturating_mul(admission.weight_permille),
                        in_flight,
                        eligible: usable && !at_limit,
                    }
                })
                .collect();
            // Backups take new requests only when no other server can.
            if self.servers.iter().any(|server| server.config.backup) {
                let primary_can = candidates
                    .iter()
                    .zip(&self.servers)
                    .any(|(c, server)| !server.config.backup && c.eligible && c.weight > 0);
                if primary_can {
                    for (candidate, server) in candidates.iter_mut().zip(&self.servers) {
                        if server.config.backup {
                            candidate.eligible = false;
                        }
                    }
                }
            }
            let Some(index) = self.selector.select(&candidates, key) else {
                return Err(if full { NoPick::Full } else { NoPick::NoServer });
            };
            if let Some(load) = self.acquire(index, false) {
                return Ok(load);
            }
        }
        Err(NoPick::Full)
    }

    /// Counts a request on server `index` if it is below its `max_conns`.
    fn acquire(self: &Arc<Self>, index: usize, preferred: bool) -> Option<ServerLoad> {
        let server = &self.servers[index];
        let limit = server.config.max_conns;
        if limit == 0 {
            server.in_flight.fetch_add(1, Ordering::SeqCst);
        } else {
            server
                .in_flight
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |count| {
                    (count < limit).then_some(count + 1)
                })
                .ok()?;
        }
        server.requests.fetch_add(1, Ordering::Relaxed);
        Some(ServerLoad {
            pool: self.clone(),
            index,
            preferred,
            armed: true,
        })
    }

    /// After [`Pool::pick_with`] said [`NoPick::Full`]: waits in the pool's queue up to `wait`
    /// for a slot. `Err(Full)` after that: the caller answers 503.
    pub async fn wait_for_slot(
        self: &Arc<Self>,
        key: Option<&[u8]>,
        exclude: Option<usize>,
        preferred: Option<usize>,
        wait: Duration,
    ) -> Result<ServerLoad, NoPick> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        let (handoff, mut slot) = oneshot::channel();
        {
            let mut queue = lock(&self.queue);
            queue.push_back(Waiter {
                preferred,
                exclude,
                handoff,
            });
            self.queued.store(queue.len(), Ordering::SeqCst);
        }
        self.queue_stats.waited.fetch_add(1, Ordering::Relaxed);
        let result = loop {
            // Queued first, picked again after: a slot freed in between is either seen here
            // or handed over by its release (which sees the queue). Then again every so often,
            // for what frees a server without a release (its health, the operator, a sticky
            // server going down).
            match self.pick_with(key, exclude, preferred) {
                Err(NoPick::Full) => {}
                other => break other,
            }
            let tick = (tokio::time::Instant::now() + QUEUE_RECHECK).min(deadline);
            match tokio::time::timeout_at(tick, &mut slot).await {
                Ok(Ok(load)) => break Ok(load),
                // The pool dropped the waiter (it is being replaced): pick again, then wait.
                Ok(Err(_)) => {
                    (_, slot) = oneshot::channel();
                    if tokio::time::Instant::now() >= deadline {
                        break Err(NoPick::Full);
                    }
                    tokio::time::sleep_until(tick).await;
                }
                Err(_) if tokio::time::Instant::now() >= deadline => break Err(NoPick::Full),
                Err(_) => {}
            }
        };
        // Out of the queue; a slot handed over meanwhile goes back (to the next waiter).
        slot.close();
        if let Ok(extra) = slot.try_recv() {
            drop(extra);
        }
        self.forget_closed_waiters();
        self.queue_stats
            .wait_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        if matches!(result, Err(NoPick::Full)) {
            self.queue_stats.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Requests waiting now.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn forget_closed_waiters(&self) {
        let mut queue = lock(&self.queue);
        queue.retain(|waiter| !waiter.handoff.is_closed());
        self.queued.store(queue.len(), Ordering::SeqCst);
    }

    /// A request on server `index` is done: its slot goes to the oldest waiting request that
    /// may use that server, or is freed.
    fn release_slot(self: &Arc<Self>, index: usize) {
        let server = &self.servers[index];
        // Freed first, the queue read after (both SeqCst, as a waiter queues then picks): a
        // request queueing now either sees this slot free or is seen here.
        server.in_flight.fetch_sub(1, Ordering::SeqCst);
        if server.config.max_conns == 0 || self.queued.load(Ordering::SeqCst) == 0 {
            return;
        }
        let now = clock::now();
        let admission = self.admission(index, now);
        let mut queue = lock(&self.queue);
        queue.retain(|waiter| !waiter.handoff.is_closed());
        let fits = |waiter: &Waiter| {
            Some(index) != waiter.exclude
                && match waiter.preferred {
                    Some(preferred) if preferred == index => admission.takes_sticky,
                    // Waits for its own server while that one takes it.
                    Some(preferred)
                        if preferred < self.servers.len()
                            && self.admission(preferred, now).takes_sticky =>
                    {
                        false
                    }
                    _ => admission.takes_new && server.config.weight > 0,
                }
        };
        while let Some(position) = queue.iter().position(&fits) {
            let Some(waiter) = queue.remove(position) else {
                break;
            };
            // Taken again for the waiter (a request arriving meanwhile may have won it).
            let Some(load) = self.acquire(index, waiter.preferred == Some(index)) else {
                queue.push_front(waiter);
                break;
            };
            match waiter.handoff.send(load) {
                Ok(()) => break,
                // The waiter gave up just now: the count is undone here (its drop would
                // come back for this lock), and the next one in line may take the slot.
                Err(mut returned) => {
                    returned.armed = false;
                    server.in_flight.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        self.queued.store(queue.len(), Ordering::SeqCst);
    }

    /// What the request on `load` told about its server (passive health checks).
    pub fn report_outcome(&self, load: &ServerLoad, outcome: Outcome) {
        let server = &self.servers[load.index];
        let change = server.health.lock().record_outcome(clock::now(), outcome);
        self.note(server, change);
    }

    /// A connect to the server of `load` failed: counted, skipped for `retry.after_failure`,
    /// and a failure for the passive checks.
    pub fn connect_failed(&self, load: &ServerLoad) {
        self.servers[load.index]
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
        self.report_outcome(load, Outcome::ConnectFailed);
    }

    /// The request on `load` was routed by its session's stickiness.
    pub fn count_sticky(&self, load: &ServerLoad) {
        self.servers[load.index]
            .sticky_requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// One active check result of server `index`.
    pub fn record_check(&self, index: usize, passed: bool, result: &str) {
        let server = &self.servers[index];
        let change = server
            .health
            .lock()
            .record_check(Instant::now(), passed, result);
        self.note(server, change);
        // Its reason may have changed even without a transition.
        self.signal_change();
    }

    /// Sets the operator state of server `index`; false when it already was.
    pub fn set_operator(&self, index: usize, operator: Operator, cause: &str) -> bool {
        let server = &self.servers[index];
        let change = server.health.lock().set_operator(operator, cause);
        let changed = change.is_some();
        self.note(server, change);
        changed
    }

    /// The index of the server whose `route` is `route`.
    pub fn route_index(&self, route: &str) -> Option<usize> {
        self.servers
            .iter()
            .position(|server| server.config.route.as_deref() == Some(route))
    }

    /// The index of the server named `id` in the admin API: its `route`, or its url.
    pub fn find_server(&self, id: &str) -> Option<usize> {
        self.route_index(id)
            .or_else(|| self.servers.iter().position(|server| *server.label == *id))
    }

    /// Whether at least one server takes new sessions or sticky requests now.
    pub fn can_serve(&self, now: Instant) -> bool {
        (0..self.servers.len()).any(|index| {
            let admission = self.admission(index, now);
            admission.takes_new || admission.takes_sticky
        })
    }

    pub fn index_of(load: &ServerLoad) -> usize {
        load.index
    }

    /// Drops idle upstream connections (the pool is being replaced).
    pub fn close_idle(&self) {
        for server in &self.servers {
            server.connections.close_idle();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A pool's active checks deliver their results to its servers' states, while the pool lives.
impl Subscriber for Weak<Pool> {
    fn deliver(&self, index: usize, outcome: &CheckOutcome) -> bool {
        let Some(pool) = self.upgrade() else {
            return false;
        };
        pool.record_check(index, outcome.passed(), &outcome.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Pool "app" of a config with `keys` (servers included), round-robin.
    fn pool(keys: &str) -> Arc<Pool> {
        Arc::new(rebuilt(keys, None))
    }

    /// Pool "app" of a config with `keys`, built as a reload builds it over `previous`.
    fn rebuilt(keys: &str, previous: Option<&Pool>) -> Pool {
        let text = format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\n\n\
             [[route]]\nname = \"main\"\nlistener = \"web\"\npool = \"app\"\n\n[pool.app]\n{keys}\n"
        );
        let config = Config::parse(&text, "test.toml").expect("valid config");
        Pool::new(
            &config.l7.pools[0],
            Arc::new(ErrorPages::default()),
            previous,
            None,
        )
    }

    const THREE: &str = "servers = [ { url = \"http://10.0.0.1:80\", route = \"a\" }, \
                         { url = \"http://10.0.0.2:80\", route = \"b\" }, \
                         { url = \"http://10.0.0.3:80\", route = \"c\" } ]";

    /// (index, used preferred) of one pick.
    fn pick(
        pool: &Arc<Pool>,
        exclude: Option<usize>,
        preferred: Option<usize>,
    ) -> Option<(usize, bool)> {
        pool.pick_with(None, exclude, preferred)
            .ok()
            .map(|load| (Pool::index_of(&load), load.used_preferred()))
    }

    const TWO_LIMITED: &str = "servers = [ { url = \"http://10.0.0.1:80\", route = \"a\", max_conns = 1 }, \
                               { url = \"http://10.0.0.2:80\", route = \"b\", max_conns = 2 } ]";

    #[test]
    fn servers_at_max_conns_are_skipped_then_the_pool_is_full() {
        let pool = pool(TWO_LIMITED);
        let mut loads: Vec<ServerLoad> = (0..3)
            .map(|_| pool.pick_with(None, None, None).unwrap())
            .collect();
        let mut counts = [0, 0];
        for load in &loads {
            counts[Pool::index_of(load)] += 1;
        }
        assert_eq!(counts, [1, 2]);
        assert_eq!(pool.pick_with(None, None, None).err(), Some(NoPick::Full));
        // A sticky request waits for its own server, even when another has room.
        let on_b = loads
            .iter()
            .position(|load| Pool::index_of(load) == 1)
            .unwrap();
        drop(loads.remove(on_b));
        assert_eq!(
            pool.pick_with(None, None, Some(0)).err(),
            Some(NoPick::Full)
        );
        assert_eq!(
            pool.pick_with(None, None, Some(1))
                .map(|l| Pool::index_of(&l))
                .ok(),
            Some(1)
        );
    }

    #[test]
    fn a_pool_with_every_server_excluded_has_no_server_rather_than_a_queue() {
        let pool = pool("servers = [ { url = \"http://10.0.0.1:80\", max_conns = 1 } ]");
        assert_eq!(
            pool.pick_with(None, Some(0), None).err(),
            Some(NoPick::NoServer)
        );
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_oldest_waiter_first() {
        let pool = pool("servers = [ { url = \"http://10.0.0.1:80\", max_conns = 1 } ]");
        let held = pool.pick_with(None, None, None).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for n in 0..3 {
            let (pool, order) = (pool.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let load = pool
                    .wait_for_slot(None, None, None, Duration::from_secs(30))
                    .await
                    .unwrap();
                order.lock().unwrap().push(n);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(load);
            }));
            // Queued in this order.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(pool.queue_depth(), 3);
        drop(held);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
        assert_eq!(pool.queue_depth(), 0);
        assert_eq!(pool.servers[0].in_flight(), 0);
        assert_eq!(pool.queue_stats.waited.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_waiter_gives_up_at_the_queue_timeout_and_its_slot_is_not_lost() {
        let pool = pool("servers = [ { url = \"http://10.0.0.1:80\", max_conns = 1 } ]");
        let held = pool.pick_with(None, None, None).unwrap();
        let timed_out = pool
            .wait_for_slot(None, None, None, Duration::from_millis(200))
            .await;
        assert_eq!(timed_out.err(), Some(NoPick::Full));
        assert_eq!(pool.queue_stats.timeouts.load(Ordering::Relaxed), 1);
        assert_eq!(pool.queue_depth(), 0);
        drop(held);
        assert_eq!(pool.servers[0].in_flight(), 0);
        assert!(pool.pick_with(None, None, None).is_ok());
    }

    #[test]
    fn a_preferred_server_is_used_while_it_takes_sticky_requests() {
        let pool = pool(THREE);
        assert_eq!(pool.route_index("b"), Some(1));
        assert_eq!(pool.find_server("http://10.0.0.3:80"), Some(2));
        assert_eq!(pool.find_server("c"), Some(2));
        assert_eq!(pool.find_server("d"), None);
        assert_eq!(pick(&pool, None, Some(1)), Some((1, true)));
        // Draining: still for its sticky requests, never for new ones.
        assert!(pool.set_operator(1, Operator::Draining, "test"));
        assert!(!pool.set_operator(1, Operator::Draining, "test"));
        assert_eq!(pick(&pool, None, Some(1)), Some((1, true)));
        for _ in 0..10 {
            let (index, preferred) = pick(&pool, None, None).expect("a pick");
            assert!(index != 1 && !preferred);
        }
        // Excluded (its connect failed) or disabled: a normal pick elsewhere.
        let (index, preferred) = pick(&pool, Some(1), Some(1)).expect("a pick");
        assert!(index != 1 && !preferred);
        pool.set_operator(1, Operator::Disabled, "test");
        let (index, preferred) = pick(&pool, None, Some(1)).expect("a pick");
        assert!(index != 1 && !preferred);
        // Out of range: ignored.
        assert!(pick(&pool, None, Some(7)).is_some_and(|(_, preferred)| !preferred));
        assert_eq!(pool.servers[1].health.changes(Transition::Disabled), 1);
        assert!(pool.can_serve(Instant::now()));
        for index in [0, 2] {
            pool.set_operator(index, Operator::Disabled, "test");
        }
        assert!(!pool.can_serve(Instant::now()));
        assert_eq!(pick(&pool, None, None), None);
    }

    #[test]
    fn servers_with_checks_start_down_and_carry_their_state_to_a_rebuilt_pool() {
        let checked = format!("{THREE}\nhealth = {{ path = \"/\" }}");
        let old = pool(&checked);
        assert!(!old.can_serve(Instant::now()), "down until checked");
        assert_eq!(pick(&old, None, Some(0)), None);
        old.record_check(0, true, "passed");
        assert_eq!(pick(&old, None, None).map(|(index, _)| index), Some(0));
        old.set_operator(2, Operator::Draining, "test");
        // The same urls in a new pool (another balance): their state comes along.
        let new = rebuilt(&format!("balance = \"least-conn\"\n{checked}"), Some(&old));
        let now = Instant::now();
        assert!(new.view(0, now).takes_new);
        assert!(!new.view(1, now).health_up);
        assert_eq!(new.view(2, now).operator, Operator::Draining);
    }

    #[tokio::test]
    async fn an_activated_pool_signals_every_change_and_check_result() {
        let pool = pool(THREE);
        let changes = StateChanges::default();
        let mut seen = changes.subscribe();
        pool.set_operator(0, Operator::Draining, "test");
        assert!(!seen.has_changed().unwrap(), "not activated yet");
        pool.activate(&changes);
        assert!(seen.has_changed().unwrap(), "activation");
        seen.mark_unchanged();
        // A check result that changes nothing may still change the reason shown.
        pool.record_check(1, false, "connect refused");
        assert!(seen.has_changed().unwrap(), "a check result");
        seen.mark_unchanged();
        pool.set_operator(2, Operator::Disabled, "test");
        assert!(seen.has_changed().unwrap(), "an operator change");
        seen.mark_unchanged();
        assert!(!pool.set_operator(2, Operator::Disabled, "test"));
        assert!(!seen.has_changed().unwrap(), "no change");
        pool.deactivate();
    }

    #[test]
    fn a_backup_gets_new_requests_only_when_no_other_server_can() {
        let pool = pool(
            "servers = [ { url = \"http://10.0.0.1:80\", route = \"a\" }, \
             { url = \"http://10.0.0.2:80\", route = \"b\" }, \
             { url = \"http://10.0.0.3:80\", route = \"c\", backup = true } ]",
        );
        let picks = |pool: &Arc<Pool>| -> Vec<usize> {
            (0..6)
                .map(|_| pick(pool, None, None).expect("a server").0)
                .collect()
        };
        assert!(picks(&pool).iter().all(|&i| i < 2), "primaries only");
        assert!(pool.set_operator(0, Operator::Draining, "test"));
        assert!(picks(&pool).iter().all(|&i| i == 1), "one primary left");
        assert!(pool.set_operator(1, Operator::Disabled, "test"));
        assert!(
            picks(&pool).iter().all(|&i| i == 2),
            "no primary: the backup"
        );
        // A sticky session on a draining primary still goes there.
        assert_eq!(pick(&pool, None, Some(0)), Some((0, true)));
        assert!(pool.set_operator(1, Operator::Enabled, "test"));
        assert!(picks(&pool).iter().all(|&i| i == 1), "back to the primary");
    }

    #[test]
    fn servers_start_in_their_configured_state_and_a_reload_keeps_the_operators_choice() {
        let keys = "servers = [ { url = \"http://10.0.0.1:80\" }, \
                    { url = \"http://10.0.0.2:80\", state = \"draining\" }, \
                    { url = \"http://10.0.0.3:80\", state = \"disabled\" } ]";
        let old = pool(keys);
        let now = Instant::now();
        let operators: Vec<Operator> = (0..3).map(|i| old.view(i, now).operator).collect();
        assert_eq!(
            operators,
            [Operator::Enabled, Operator::Draining, Operator::Disabled]
        );
        assert!(old.view(0, now).takes_new && !old.view(1, now).takes_new);
        assert!(
            old.view(1, now).takes_sticky,
            "a draining server keeps its sessions"
        );
        // The operator enables the draining one; a reload of the same config keeps that.
        assert!(old.set_operator(1, Operator::Enabled, "test"));
        let new = rebuilt(&format!("balance = \"least-conn\"\n{keys}"), Some(&old));
        assert_eq!(new.view(1, now).operator, Operator::Enabled);
    }
}
