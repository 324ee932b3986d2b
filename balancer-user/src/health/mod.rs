//! Active health checks, one checker for the L4 data plane and the L7 proxy.
//!
//! A check probes one target every `interval` ([`probe_once`]: a TCP connect, or an HTTP GET
//! over TCP, TLS, a unix socket or h2c) and delivers every result to its [`Subscriber`], which
//! passes it through rise/fall ([`RiseFall`]) and decides what "down" means: a pool server's
//! state (with its passive checks and re-admission), or [`Transitions`], whose up/down
//! [`HealthEvent`]s go to the VIP maps. Checks stop when their `stop` token is cancelled or
//! their subscriber is gone.

mod check_tls;
mod probe;
mod rise_fall;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

#[cfg(test)]
pub(crate) use check_tls::AnyCertificate;
pub use check_tls::{CheckTlsError, check_tls_config};
pub use probe::{
    CheckOutcome, CheckRequest, Connector, HttpProbe, HttpVia, Probe, ProbeError, accepts_2xx_3xx,
    probe_once,
};
pub use rise_fall::RiseFall;

/// One check: what to probe, and how often.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    pub probe: Probe,
    /// Time between the starts of two probes (the first one runs at once: a new target is
    /// checked as soon as it is configured). Zero counts as 1ms.
    pub interval: Duration,
    /// Bound on one whole probe.
    pub timeout: Duration,
}

/// Who gets the results of checks.
pub trait Subscriber: Send + Sync + 'static {
    /// One result of the check the caller numbered `id`. False when nobody follows the check
    /// any more: it stops.
    fn deliver(&self, id: usize, outcome: &CheckOutcome) -> bool;
}

/// Starts one task per spec (must be called inside a tokio runtime), delivering every result
/// to `subscriber`, until `stop` is cancelled or the subscriber is gone. Dropping the returned
/// set aborts the checks (`detach_all` lets them run).
pub fn spawn_checks(
    specs: Vec<(usize, CheckSpec)>,
    subscriber: &Arc<dyn Subscriber>,
    stop: &CancellationToken,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    for (id, spec) in specs {
        tasks.spawn(run_check(id, spec, subscriber.clone(), stop.clone()));
    }
    tasks
}

/// One check loop.
async fn run_check(
    id: usize,
    spec: CheckSpec,
    subscriber: Arc<dyn Subscriber>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(spec.interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let outcome = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            outcome = async {
                ticker.tick().await;
                probe_once(&spec.probe, spec.timeout).await
            } => outcome,
        };
        if !subscriber.deliver(id, &outcome) {
            return;
        }
    }
}

/// An up/down transition of the check the caller numbered `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub id: usize,
    pub up: bool,
    /// E.g. `2 checks passed in a row` or `3 checks failed in a row, last: status 503`.
    pub reason: String,
}

/// A subscriber that passes each check's results through its own rise/fall and sends every
/// up/down transition as a [`HealthEvent`]. Results of checks it does not follow are dropped.
pub struct Transitions {
    checks: Mutex<HashMap<usize, RiseFall>>,
    events: mpsc::UnboundedSender<HealthEvent>,
}

impl Transitions {
    /// Follows the checks numbered as in `checks`, each starting in its state.
    pub fn new(
        checks: impl IntoIterator<Item = (usize, RiseFall)>,
        events: mpsc::UnboundedSender<HealthEvent>,
    ) -> Transitions {
        Transitions {
            checks: Mutex::new(checks.into_iter().collect()),
            events,
        }
    }

    /// The event a result of check `id` brings, if any.
    fn record(&self, id: usize, outcome: &CheckOutcome) -> Option<HealthEvent> {
        let mut checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        let state = checks.get_mut(&id)?;
        let up = state.record(outcome.passed())?;
        let consecutive = state.consecutive();
        let reason = if up {
            format!("{} passed in a row", checks_text(consecutive))
        } else {
            format!(
                "{} failed in a row, last: {outcome}",
                checks_text(consecutive)
            )
        };
        Some(HealthEvent { id, up, reason })
    }
}

impl Subscriber for Transitions {
    fn deliver(&self, id: usize, outcome: &CheckOutcome) -> bool {
        match self.record(id, outcome) {
            Some(event) => self.events.send(event).is_ok(),
            None => !self.events.is_closed(),
        }
    }
}

fn checks_text(n: u32) -> String {
    if n == 1 {
        "1 check".to_owned()
    } else {
        format!("{n} checks")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddr;

    use tokio::net::TcpListener;
    use tokio::time::{Instant, timeout};

    const INTERVAL: Duration = Duration::from_millis(50);
    const BOUND: Duration = Duration::from_secs(10);

    fn tcp_spec(target: SocketAddr) -> CheckSpec {
        CheckSpec {
            probe: Probe::Tcp(target),
            interval: INTERVAL,
            timeout: Duration::from_millis(500),
        }
    }

    /// Checks of `specs` (id, spec, rise, fall) through [`Transitions`], starting down.
    fn spawn_with_transitions(
        specs: Vec<(usize, CheckSpec, u32, u32)>,
        stop: &CancellationToken,
    ) -> (JoinSet<()>, mpsc::UnboundedReceiver<HealthEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let states = specs
            .iter()
            .map(|(id, _, rise, fall)| (*id, RiseFall::new(*rise, *fall)));
        let subscriber: Arc<dyn Subscriber> = Arc::new(Transitions::new(states, tx));
        let specs = specs
            .into_iter()
            .map(|(id, spec, _, _)| (id, spec))
            .collect();
        (spawn_checks(specs, &subscriber, stop), rx)
    }

    /// Every result, for the tests that look at them all.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(usize, CheckOutcome)>>);

    impl Subscriber for Recorder {
        fn deliver(&self, id: usize, outcome: &CheckOutcome) -> bool {
            self.0.lock().unwrap().push((id, outcome.clone()));
            true
        }
    }

    async fn next_event(rx: &mut mpsc::UnboundedReceiver<HealthEvent>) -> HealthEvent {
        timeout(BOUND, rx.recv())
            .await
            .expect("no health event within the bound")
            .expect("event channel closed")
    }

    #[tokio::test(start_paused = true)]
    async fn a_target_known_up_goes_down_after_fall_failures() {
        // A closed port: every probe fails.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let subscriber: Arc<dyn Subscriber> =
            Arc::new(Transitions::new([(7, RiseFall::starting(1, 2, true))], tx));
        let stop = CancellationToken::new();
        let _tasks = spawn_checks(vec![(7, tcp_spec(addr))], &subscriber, &stop);
        let event = timeout(BOUND, rx.recv()).await.unwrap().unwrap();
        assert_eq!((event.id, event.up), (7, false), "{event:?}");
        assert_eq!(
            event.reason, "2 checks failed in a row, last: connect refused",
            "{event:?}"
        );
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
        let stop = CancellationToken::new();
        let (rise, fall) = (2, 3);
        let (tasks, mut rx) = spawn_with_transitions(vec![(7, tcp_spec(addr), rise, fall)], &stop);

        let up = next_event(&mut rx).await;
        assert_eq!(
            up,
            HealthEvent {
                id: 7,
                up: true,
                reason: "2 checks passed in a row".into()
            }
        );

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

        stop.cancel();
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
        let stop = CancellationToken::new();
        let (tasks, mut rx) = spawn_with_transitions(vec![(0, tcp_spec(addr), 1, 1)], &stop);
        let recorder = Arc::new(Recorder::default());
        let subscriber: Arc<dyn Subscriber> = recorder.clone();
        let recorded = spawn_checks(vec![(0, tcp_spec(addr))], &subscriber, &stop);
        tokio::time::sleep(INTERVAL * 4).await;
        assert!(rx.try_recv().is_err());
        let results = recorder.0.lock().unwrap().clone();
        assert!(results.len() >= 2, "{results:?}");
        for (id, outcome) in results {
            assert_eq!(id, 0);
            assert!(outcome.to_string().contains("refused"), "{outcome}");
        }
        stop.cancel();
        timeout(BOUND, tasks.join_all()).await.unwrap();
        timeout(BOUND, recorded.join_all()).await.unwrap();
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
        let stop = CancellationToken::new();
        let (tasks, mut rx) = spawn_with_transitions(
            vec![
                (1, tcp_spec(bad_addr), 1, 1),
                (2, tcp_spec(good_addr), 1, 1),
            ],
            &stop,
        );
        assert_eq!(tasks.len(), 2);
        let event = next_event(&mut rx).await;
        assert_eq!((event.id, event.up), (2, true));
        assert_eq!(event.reason, "1 check passed in a row");
        stop.cancel();
        timeout(BOUND, tasks.join_all()).await.unwrap();
        drop(good);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_stops_when_its_subscriber_is_gone() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let (tasks, rx) = spawn_with_transitions(vec![(0, tcp_spec(addr), 1, 1)], &stop);
        drop(rx);
        timeout(BOUND, tasks.join_all()).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_interrupts_a_slow_probe() {
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
            probe: Probe::http(addr, "/", None),
            timeout: Duration::from_secs(60),
            ..tcp_spec(addr)
        };
        let stop = CancellationToken::new();
        let (tasks, _rx) = spawn_with_transitions(vec![(0, spec, 1, 1)], &stop);
        tokio::time::sleep(INTERVAL).await;
        stop.cancel();
        timeout(BOUND, tasks.join_all()).await.unwrap();
        holder.abort();
    }
}
