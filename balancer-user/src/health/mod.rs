//! Active health checks, shared by the L4 data plane and the L7 proxy.
//!
//! A check probes one target every `interval` ([`probe_once`]) and passes the
//! result through rise/fall hysteresis ([`RiseFall`]); every up/down
//! transition becomes a [`HealthEvent`] for the owner of the target, which
//! decides what "down" means (a BPF map entry, a pool member).
//! Targets start down: the first event of a healthy target is its transition to up.

mod probe;
mod rise_fall;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

pub use probe::{AcceptStatus, CheckOutcome, Probe, USER_AGENT_VALUE, accepts_2xx_3xx, probe_once};
pub use rise_fall::RiseFall;

/// One check: what to probe, how often, and how many results flip the state.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    pub target: SocketAddr,
    pub probe: Probe,
    /// Time between the starts of two probes (the first one runs at once).
    /// Zero counts as 1ms.
    pub interval: Duration,
    /// Bound on one whole probe.
    pub timeout: Duration,
    /// Consecutive passes that bring a down target up (0 counts as 1).
    pub rise: u32,
    /// Consecutive failures that bring an up target down (0 counts as 1).
    pub fall: u32,
    /// Start up rather than down: for a target already known healthy (e.g. from
    /// a previous run), so only `fall` failures take it down.
    pub initially_up: bool,
}

/// An up/down transition of the check the caller numbered `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub id: usize,
    pub up: bool,
    /// E.g. `2 checks passed in a row` or `3 checks failed in a row, last: status 503`.
    pub reason: String,
}

/// The current view of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckStatus {
    pub up: bool,
    /// The last outcome: `passed`, a failure reason, or `not checked yet`.
    pub last: String,
    /// How many checks in a row had the same result as the last one.
    pub consecutive: u32,
}

impl CheckStatus {
    fn initial() -> CheckStatus {
        CheckStatus {
            up: false,
            last: "not checked yet".to_owned(),
            consecutive: 0,
        }
    }
}

/// The latest [`CheckStatus`] of every check, by the caller's id. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<RwLock<HashMap<usize, CheckStatus>>>);

impl StatusBoard {
    pub fn get(&self, id: usize) -> Option<CheckStatus> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    pub fn snapshot(&self) -> HashMap<usize, CheckStatus> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, id: usize, status: CheckStatus) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, status);
    }
}

/// Starts one task per spec (must be called inside a tokio runtime). Each
/// sends a [`HealthEvent`] on every up/down transition and stops when
/// `shutdown` becomes true or its sender is dropped. Dropping the returned
/// set aborts the checks. Send errors (receiver gone) are ignored.
pub fn spawn_checks(
    specs: Vec<(usize, CheckSpec)>,
    events: mpsc::UnboundedSender<HealthEvent>,
    shutdown: watch::Receiver<bool>,
) -> JoinSet<()> {
    spawn_checks_with_status(specs, events, shutdown).0
}

/// [`spawn_checks`], plus a board with the latest status of every check
/// (filled with "not checked yet" entries before this returns).
pub fn spawn_checks_with_status(
    specs: Vec<(usize, CheckSpec)>,
    events: mpsc::UnboundedSender<HealthEvent>,
    shutdown: watch::Receiver<bool>,
) -> (JoinSet<()>, StatusBoard) {
    let board = StatusBoard::default();
    let mut tasks = JoinSet::new();
    for (id, spec) in specs {
        board.set(
            id,
            CheckStatus {
                up: spec.initially_up,
                ..CheckStatus::initial()
            },
        );
        tasks.spawn(run_check(
            id,
            spec,
            events.clone(),
            shutdown.clone(),
            board.clone(),
        ));
    }
    (tasks, board)
}

/// One check loop, for callers that manage their own tasks (e.g. adding a
/// server on reload). Returns when `shutdown` becomes true or its sender is dropped.
pub async fn run_check(
    id: usize,
    spec: CheckSpec,
    events: mpsc::UnboundedSender<HealthEvent>,
    mut shutdown: watch::Receiver<bool>,
    board: StatusBoard,
) {
    let mut state = RiseFall::starting(spec.rise, spec.fall, spec.initially_up);
    let mut ticker = tokio::time::interval(spec.interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let outcome = tokio::select! {
            biased;
            () = shutdown_requested(&mut shutdown) => return,
            outcome = async {
                ticker.tick().await;
                probe_once(spec.target, &spec.probe, spec.timeout).await
            } => outcome,
        };
        let passed = outcome.passed();
        let transition = state.record(passed);
        let consecutive = state.consecutive();
        board.set(
            id,
            CheckStatus {
                up: state.is_up(),
                last: outcome.to_string(),
                consecutive,
            },
        );
        if let Some(up) = transition {
            let reason = if up {
                format!("{} passed in a row", checks(consecutive))
            } else {
                format!("{} failed in a row, last: {outcome}", checks(consecutive))
            };
            let _ = events.send(HealthEvent { id, up, reason });
        }
    }
}

/// Resolves once the value is true or the sender is gone.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

fn checks(n: u32) -> String {
    if n == 1 {
        "1 check".to_owned()
    } else {
        format!("{n} checks")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::net::TcpListener;
    use tokio::time::{Instant, timeout};

    const INTERVAL: Duration = Duration::from_millis(50);
    const BOUND: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_target_known_up_goes_down_after_fall_failures() {
        // A closed port: every probe fails.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let spec = CheckSpec {
            initially_up: true,
            ..tcp_spec(addr, 1, 2)
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let _tasks = spawn_checks(vec![(7, spec)], tx, stop_rx);
        let event = timeout(BOUND, rx.recv()).await.unwrap().unwrap();
        assert_eq!((event.id, event.up), (7, false), "{event:?}");
    }

    fn tcp_spec(target: SocketAddr, rise: u32, fall: u32) -> CheckSpec {
        CheckSpec {
            target,
            probe: Probe::Tcp,
            interval: INTERVAL,
            timeout: Duration::from_millis(500),
            rise,
            fall,
            initially_up: false,
        }
    }

    async fn next_event(rx: &mut mpsc::UnboundedReceiver<HealthEvent>) -> HealthEvent {
        timeout(BOUND, rx.recv())
            .await
            .expect("no health event within the bound")
            .expect("event channel closed")
    }

    #[tokio::test(start_paused = true)]
    async fn up_then_down_when_the_listener_goes_away() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio::spawn(async move {
            loop {
                drop(listener.accept().await.unwrap());
            }
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (rise, fall) = (2, 3);
        let (tasks, board) =
            spawn_checks_with_status(vec![(7, tcp_spec(addr, rise, fall))], tx, stop_rx);
        assert_eq!(board.get(7), Some(CheckStatus::initial()));

        let up = next_event(&mut rx).await;
        assert_eq!(
            up,
            HealthEvent {
                id: 7,
                up: true,
                reason: "2 checks passed in a row".into()
            }
        );
        assert!(board.get(7).unwrap().up);

        // Close the listener: awaiting the aborted task guarantees it is dropped.
        acceptor.abort();
        let _ = acceptor.await;
        let closed_at = Instant::now();

        let down = next_event(&mut rx).await;
        let elapsed = closed_at.elapsed();
        assert_eq!((down.id, down.up), (7, false));
        assert!(
            down.reason.starts_with("3 checks failed in a row, last: ")
                && down.reason.contains("refused"),
            "{}",
            down.reason
        );
        // `fall` failures need at least (fall - 1) intervals after the first
        // one; allow tokio's 5ms tick slack per interval.
        let at_least = (INTERVAL - Duration::from_millis(5)) * (fall - 1);
        assert!(elapsed >= at_least, "down after {elapsed:?}");

        let status = board.get(7).unwrap();
        assert!(!status.up);
        assert!(status.last.contains("refused"), "{}", status.last);
        assert!(status.consecutive >= fall);

        stop_tx.send(true).unwrap();
        timeout(BOUND, tasks.join_all()).await.unwrap();
        // No flapping in between; the channel closes with the tasks.
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_target_that_never_passes_sends_nothing() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (tasks, board) = spawn_checks_with_status(vec![(0, tcp_spec(addr, 1, 1))], tx, stop_rx);
        tokio::time::sleep(INTERVAL * 4).await;
        assert!(rx.try_recv().is_err());
        let status = board.get(0).unwrap();
        assert!(!status.up);
        assert!(status.last.contains("refused"), "{}", status.last);
        assert!(status.consecutive >= 2, "{status:?}");
        stop_tx.send(true).unwrap();
        timeout(BOUND, tasks.join_all()).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn several_checks_report_their_own_ids() {
        let good = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good_addr = good.local_addr().unwrap();
        let bad_addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let tasks = spawn_checks(
            vec![
                (1, tcp_spec(bad_addr, 1, 1)),
                (2, tcp_spec(good_addr, 1, 1)),
            ],
            tx,
            stop_rx,
        );
        assert_eq!(tasks.len(), 2);
        let event = next_event(&mut rx).await;
        assert_eq!((event.id, event.up), (2, true));
        assert_eq!(event.reason, "1 check passed in a row");
        stop_tx.send(true).unwrap();
        timeout(BOUND, tasks.join_all()).await.unwrap();
        drop(good);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_shutdown_sender_stops_the_checks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let tasks = spawn_checks(vec![(0, tcp_spec(addr, 1, 1))], tx, stop_rx);
        drop(stop_tx);
        timeout(BOUND, tasks.join_all()).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_a_slow_probe() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Never answers HTTP; the probe would wait for its whole timeout.
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                held.push(listener.accept().await.unwrap().0);
            }
        });
        let spec = CheckSpec {
            probe: Probe::http("/", None),
            timeout: Duration::from_secs(60),
            ..tcp_spec(addr, 1, 1)
        };
        let (tx, _rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let tasks = spawn_checks(vec![(0, spec)], tx, stop_rx);
        tokio::time::sleep(INTERVAL).await;
        stop_tx.send(true).unwrap();
        timeout(BOUND, tasks.join_all()).await.unwrap();
        holder.abort();
    }
}
