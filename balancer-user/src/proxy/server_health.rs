//! The state of one pool server, pure (time is a parameter): its health (active checks through
//! rise/fall, or up when the pool has none), the operator's choice (enabled, draining,
//! disabled), the passive checks (a short skip after a failed connect; ejection after
//! `passive.failures` failures within `passive.window`) and the slow-start weight ramp.
//!
//! Every change that matters to an operator comes back as a [`Change`] with its cause, for the
//! caller to log and count. Kept across reloads, keyed by (pool, server url).

use std::time::{Duration, Instant};

use crate::config::{PassiveHealthConfig, PoolConfig};
use crate::health::RiseFall;
use crate::operator::{Operator, Service};

/// The transition an operator change is reported as.
fn transition(operator: Operator) -> Transition {
    match operator {
        Operator::Enabled => Transition::Enabled,
        Operator::Draining => Transition::Draining,
        Operator::Disabled => Transition::Disabled,
    }
}

/// Where a change went: the `to` label of `balancer_backend_state_changes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
    Ejected,
    Enabled,
    Draining,
    Disabled,
}

impl Transition {
    pub const ALL: [Transition; 6] = [
        Transition::Up,
        Transition::Down,
        Transition::Ejected,
        Transition::Enabled,
        Transition::Draining,
        Transition::Disabled,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Transition::Up => "up",
            Transition::Down => "down",
            Transition::Ejected => "ejected",
            Transition::Enabled => "enabled",
            Transition::Draining => "draining",
            Transition::Disabled => "disabled",
        }
    }

    /// Whether it takes the server (partly) out of service: logged as a warning.
    pub fn is_loss(self) -> bool {
        matches!(
            self,
            Transition::Down | Transition::Ejected | Transition::Disabled
        )
    }
}

/// One change of a server's state, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub to: Transition,
    pub cause: String,
}

/// How a pool judges its servers: what [`ServerState`] needs from the pool's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthRules {
    /// `(rise, fall)` of the active checks; `None`: the pool has no `health`.
    pub active: Option<(u32, u32)>,
    pub passive: PassiveHealthConfig,
    /// `retry.after_failure`: how long a failed connect skips the server, and how long a
    /// passive ejection lasts at least.
    pub eject_for: Duration,
    /// `slow_start` (zero: off).
    pub slow_start: Duration,
}

impl HealthRules {
    pub fn of(pool: &PoolConfig) -> HealthRules {
        HealthRules {
            active: pool.health.as_ref().map(|check| (check.rise, check.fall)),
            passive: pool.passive,
            eject_for: pool.retry.after_failure,
            slow_start: pool.slow_start,
        }
    }
}

/// What one forwarded request told about its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No connection could be made (nothing was sent).
    ConnectFailed,
    /// The request was sent but no response came (reset, timeout).
    NoResponse,
    /// A response with this status; 5xx counts as a failure.
    Status(u16),
}

impl Outcome {
    fn failed(self) -> bool {
        match self {
            Outcome::ConnectFailed | Outcome::NoResponse => true,
            Outcome::Status(status) => status >= 500,
        }
    }
}

/// The slow-start weight of a server that just came up, in thousandths of its weight.
pub const RAMP_START_PERMILLE: u32 = 100;
pub const FULL_PERMILLE: u32 = 1000;

#[derive(Debug, Clone)]
pub struct ServerState {
    rules: HealthRules,
    operator: Operator,
    /// `None` without active checks: health is then always up.
    checks: Option<RiseFall>,
    /// Why the health is what it is, e.g. "2 checks passed in a row".
    health_reason: String,
    /// The last active check's result ("passed" or why it failed).
    last_check: Option<String>,
    /// Consecutive failed requests, and when the first of them happened.
    failures: u32,
    failures_since: Option<Instant>,
    /// A failed connect skips the server until then.
    connect_failed_until: Option<Instant>,
    /// Passively ejected, at least until then; with active checks, until a check passes after
    /// it.
    ejected_until: Option<Instant>,
    ejections: u64,
    last_ejection: Option<String>,
    /// When the server last came (back) into service: the slow-start ramp starts there.
    ramp_from: Option<Instant>,
}

/// A server's state at one instant, for `/api/state`.
#[derive(Debug, Clone, PartialEq)]
pub struct StateView {
    pub health_up: bool,
    pub health_reason: String,
    pub last_check: Option<String>,
    pub operator: Operator,
    pub ejected: bool,
    /// Time left of a passive ejection (zero: waiting for a passing check).
    pub ejected_for: Option<Duration>,
    pub ejections: u64,
    pub last_ejection: Option<String>,
    /// Inside the skip after a failed connect.
    pub failing: bool,
    pub takes_new: bool,
    pub takes_sticky: bool,
    pub weight_permille: u32,
}

impl StateView {
    /// Health up and not ejected, whatever the operator chose: the verdict the VIP backends
    /// at the server's address follow (`ServerState::in_service` at the view's instant).
    pub fn in_service(&self) -> bool {
        self.health_up && !self.ejected
    }
}

/// Whether a server takes requests now, and its slow-start share of its weight.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub takes_new: bool,
    pub takes_sticky: bool,
    pub weight_permille: u32,
}

impl ServerState {
    /// A server just configured: with active checks it starts down until its first check
    /// passes (rise applies only after it has once been up); without, it is up.
    pub fn new(rules: HealthRules) -> ServerState {
        ServerState {
            rules,
            operator: Operator::Enabled,
            checks: rules.active.map(|(_, fall)| RiseFall::new(1, fall)),
            health_reason: if rules.active.is_some() {
                "not checked yet".to_string()
            } else {
                "no active checks".to_string()
            },
            last_check: None,
            failures: 0,
            failures_since: None,
            connect_failed_until: None,
            ejected_until: None,
            ejections: 0,
            last_ejection: None,
            ramp_from: None,
        }
    }

    /// The pool's config changed (reload): the server keeps its state under the new rules.
    pub fn reconfigure(&mut self, rules: HealthRules, now: Instant) -> Option<Change> {
        if rules == self.rules {
            return None;
        }
        let before = self.in_service(now);
        if rules.active != self.rules.active {
            let up = self.health_up();
            self.checks = rules
                .active
                .map(|(rise, fall)| RiseFall::starting(rise, fall, up));
            if self.checks.is_none() {
                self.health_reason = "no active checks".to_string();
            }
        }
        self.rules = rules;
        self.service_change(before, now, "active checks removed by reload")
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn health_up(&self) -> bool {
        self.checks.as_ref().is_none_or(RiseFall::is_up)
    }

    fn ejected(&self, now: Instant) -> bool {
        self.ejected_until
            .is_some_and(|until| now < until || self.checks.is_some())
    }

    fn failing(&self, now: Instant) -> bool {
        self.connect_failed_until.is_some_and(|until| now < until)
    }

    /// Health up and not ejected: what the checks say, whatever the operator chose.
    fn in_service(&self, now: Instant) -> bool {
        self.health_up() && !self.ejected(now)
    }

    /// What the health, the passive checks (in service, not inside the skip after a failed
    /// connect) and the operator add up to: the rule the VIP backends follow too.
    fn service(&self, now: Instant) -> Service {
        self.operator
            .service(self.in_service(now) && !self.failing(now))
    }

    /// Whether a new session (a request without stickiness) may go to the server.
    pub fn takes_new(&self, now: Instant) -> bool {
        self.service(now).takes_new()
    }

    /// Whether a request sticky to the server may go to it.
    pub fn takes_sticky(&self, now: Instant) -> bool {
        self.service(now).takes_existing()
    }

    /// The change from "in service" `before` to now, if any, with `cause`; starts the
    /// slow-start ramp on the way up.
    fn service_change(&mut self, before: bool, now: Instant, cause: &str) -> Option<Change> {
        let after = self.in_service(now);
        if before == after {
            return None;
        }
        if after {
            self.ramp_from = Some(now);
        }
        Some(Change {
            to: if after {
                Transition::Up
            } else {
                Transition::Down
            },
            cause: cause.to_string(),
        })
    }

    /// Lets time pass: ends a passive ejection that is over (without active checks) and the
    /// skip after a failed connect.
    pub fn tick(&mut self, now: Instant) -> Option<Change> {
        if self.connect_failed_until.is_some_and(|until| now >= until) {
            self.connect_failed_until = None;
        }
        match self.ejected_until {
            Some(until) if self.checks.is_none() && now >= until => {
                self.ejected_until = None;
                if self.health_up() {
                    self.ramp_from = Some(until);
                }
                Some(Change {
                    to: Transition::Up,
                    cause: format!(
                        "re-admitted: passive ejection over after {:?}",
                        self.rules.eject_for
                    ),
                })
            }
            _ => None,
        }
    }

    /// One active check result: `passed`, and `result` ("passed" or why it failed).
    pub fn record_check(&mut self, now: Instant, passed: bool, result: &str) -> Option<Change> {
        let before = self.in_service(now);
        self.last_check = Some(result.to_string());
        let checks = self.checks.as_mut()?;
        let flipped = checks.record(passed);
        let streak = checks.consecutive();
        let (rise, fall) = self.rules.active.unwrap_or((1, 1));
        // A new server starts with rise 1 (its first passing check brings it up); once up, the
        // configured rise applies.
        if flipped == Some(true) && rise > 1 {
            let up = checks.is_up();
            *checks = RiseFall::starting(rise, fall, up);
        }
        self.health_reason = match (flipped, passed) {
            (Some(true), _) if streak == 1 => "first check passed".to_string(),
            (Some(true), _) => format!("{streak} checks passed in a row"),
            (Some(false), _) => format!("{streak} checks failed in a row, last: {result}"),
            (None, true) if !self.health_up() => {
                format!("{streak} of {rise} checks passed")
            }
            (None, false) if !self.health_up() => format!("check failed: {result}"),
            (None, _) => std::mem::take(&mut self.health_reason),
        };
        let mut cause = self.health_reason.clone();
        if passed && self.ejected_until.is_some_and(|until| now >= until) {
            self.ejected_until = None;
            cause = "re-admitted by a passing active check".to_string();
        }
        self.service_change(before, now, &cause)
    }

    /// What a forwarded request told about the server.
    pub fn record_outcome(&mut self, now: Instant, outcome: Outcome) -> Option<Change> {
        if outcome == Outcome::ConnectFailed && !self.rules.eject_for.is_zero() {
            self.connect_failed_until = Some(now + self.rules.eject_for);
        }
        let passive = self.rules.passive;
        if passive.failures == 0 {
            return None;
        }
        if !outcome.failed() {
            self.failures = 0;
            self.failures_since = None;
            return None;
        }
        match self.failures_since {
            Some(since) if now.duration_since(since) <= passive.window => self.failures += 1,
            _ => {
                self.failures_since = Some(now);
                self.failures = 1;
            }
        }
        if self.failures < passive.failures || self.ejected(now) {
            return None;
        }
        self.failures = 0;
        self.failures_since = None;
        self.ejected_until = Some(now + self.rules.eject_for);
        self.ejections += 1;
        let cause = format!(
            "passive: {} failures in {:?}",
            passive.failures, passive.window
        );
        self.last_ejection = Some(cause.clone());
        // Without checks and without an ejection time, the ejection ends at once: nothing to
        // report.
        self.ejected(now).then_some(Change {
            to: Transition::Ejected,
            cause,
        })
    }

    /// The operator's choice; `None` when it is already so.
    pub fn set_operator(&mut self, operator: Operator, cause: &str) -> Option<Change> {
        if operator == self.operator {
            return None;
        }
        self.operator = operator;
        Some(Change {
            to: transition(operator),
            cause: cause.to_string(),
        })
    }

    /// The share of its configured weight the server gets now, in thousandths: 1000, or during
    /// slow start a linear ramp from 100 (10%) to 1000 over `slow_start`.
    pub fn weight_permille(&self, now: Instant) -> u32 {
        let slow_start = self.rules.slow_start;
        let Some(from) = self.ramp_from else {
            return FULL_PERMILLE;
        };
        if slow_start.is_zero() {
            return FULL_PERMILLE;
        }
        let elapsed = now.saturating_duration_since(from);
        if elapsed >= slow_start {
            return FULL_PERMILLE;
        }
        let span = u128::from(FULL_PERMILLE - RAMP_START_PERMILLE);
        let ramped = span * elapsed.as_nanos() / slow_start.as_nanos();
        RAMP_START_PERMILLE + u32::try_from(ramped).unwrap_or(FULL_PERMILLE)
    }

    /// What picking a server for a request needs of its state at `now`, without copying the
    /// rest of the view.
    pub fn admission(&self, now: Instant) -> Admission {
        Admission {
            takes_new: self.takes_new(now),
            takes_sticky: self.takes_sticky(now),
            weight_permille: self.weight_permille(now),
        }
    }

    pub fn view(&self, now: Instant) -> StateView {
        let ejected = self.ejected(now);
        StateView {
            health_up: self.health_up(),
            health_reason: self.health_reason.clone(),
            last_check: self.last_check.clone(),
            operator: self.operator,
            ejected,
            ejected_for: self
                .ejected_until
                .filter(|_| ejected)
                .map(|until| until.saturating_duration_since(now)),
            ejections: self.ejections,
            last_ejection: self.last_ejection.clone(),
            failing: self.failing(now),
            takes_new: self.takes_new(now),
            takes_sticky: self.takes_sticky(now),
            weight_permille: self.weight_permille(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn rules(active: Option<(u32, u32)>) -> HealthRules {
        HealthRules {
            active,
            passive: PassiveHealthConfig {
                failures: 3,
                window: Duration::from_secs(10),
            },
            eject_for: Duration::from_secs(5),
            slow_start: Duration::ZERO,
        }
    }

    /// (takes_new, takes_sticky) at `now`.
    fn flags(state: &ServerState, now: Instant) -> (bool, bool) {
        (state.takes_new(now), state.takes_sticky(now))
    }

    fn to(change: Option<Change>) -> Option<Transition> {
        change.map(|c| c.to)
    }

    #[test]
    fn starts_up_without_checks_and_down_with_them() {
        let t0 = Instant::now();
        let plain = ServerState::new(rules(None));
        assert_eq!(flags(&plain, t0), (true, true));
        assert_eq!(plain.view(t0).health_reason, "no active checks");
        let checked = ServerState::new(rules(Some((2, 3))));
        assert_eq!(flags(&checked, t0), (false, false));
        assert_eq!(checked.view(t0).health_reason, "not checked yet");
    }

    #[test]
    fn first_pass_brings_a_new_server_up_then_rise_and_fall_apply() {
        let t0 = Instant::now();
        let mut state = ServerState::new(rules(Some((2, 3))));
        // A failed first check keeps it down; the first pass brings it up.
        assert_eq!(state.record_check(t0, false, "connection refused"), None);
        assert_eq!(
            state.view(t0).health_reason,
            "check failed: connection refused"
        );
        let change = state.record_check(t0, true, "passed").expect("up");
        assert_eq!(change.to, Transition::Up);
        assert_eq!(change.cause, "first check passed");
        // (passes as 'P', fails as 'F') → transitions, with fall 3 and rise 2 from now on.
        let cases = [
            ("FFP", "..."),
            ("FPFF", "...."),
            ("F", "D"),
            ("PP", ".U"),
            ("PFFFP", "...D."),
            ("P", "U"),
        ];
        for (results, want) in cases {
            let got: String = results
                .chars()
                .map(|c| {
                    let passed = c == 'P';
                    match to(state.record_check(
                        t0,
                        passed,
                        if passed { "passed" } else { "status 503" },
                    )) {
                        Some(Transition::Up) => 'U',
                        Some(Transition::Down) => 'D',
                        Some(other) => panic!("unexpected {other:?}"),
                        None => '.',
                    }
                })
                .collect();
            assert_eq!(got, want, "results {results}");
        }
        assert!(state.takes_new(t0));
        assert_eq!(state.view(t0).health_reason, "2 checks passed in a row");
        for _ in 0..3 {
            state.record_check(t0, false, "status 503");
        }
        assert_eq!(
            state.view(t0).health_reason,
            "3 checks failed in a row, last: status 503"
        );
        assert_eq!(state.view(t0).last_check.as_deref(), Some("status 503"));
    }

    #[test]
    fn operator_states_and_effective_flags() {
        let t0 = Instant::now();
        let cases = [
            // (operator, health checks pass, (takes_new, takes_sticky))
            (Operator::Enabled, true, (true, true)),
            (Operator::Draining, true, (false, true)),
            (Operator::Disabled, true, (false, false)),
            (Operator::Enabled, false, (false, false)),
            (Operator::Draining, false, (false, false)),
            (Operator::Disabled, false, (false, false)),
        ];
        for (operator, healthy, want) in cases {
            let mut state = ServerState::new(rules(Some((1, 1))));
            state.record_check(t0, healthy, "x");
            let change = state.set_operator(operator, "admin API");
            assert_eq!(
                to(change),
                (operator != Operator::Enabled).then(|| transition(operator))
            );
            assert_eq!(state.set_operator(operator, "admin API"), None, "no-op");
            assert_eq!(flags(&state, t0), want, "{operator:?} healthy={healthy}");
        }
        assert_eq!(Operator::parse_action("drain"), Some(Operator::Draining));
        assert_eq!(Operator::parse_action("enable"), Some(Operator::Enabled));
        assert_eq!(Operator::parse_action("disable"), Some(Operator::Disabled));
        assert_eq!(Operator::parse_action("up"), None);
    }

    #[test]
    fn passive_ejection_without_checks_ends_with_its_time() {
        let t0 = Instant::now();
        let mut state = ServerState::new(rules(None));
        // Failures, a success in between resets the count; 4xx are not failures.
        let outcomes = [
            Outcome::Status(502),
            Outcome::NoResponse,
            Outcome::Status(200),
            Outcome::Status(404),
            Outcome::Status(500),
            Outcome::Status(503),
        ];
        for outcome in outcomes {
            assert_eq!(state.record_outcome(t0, outcome), None, "{outcome:?}");
        }
        assert!(state.takes_new(t0));
        let change = state
            .record_outcome(t0, Outcome::Status(504))
            .expect("third failure in a row ejects");
        assert_eq!(change.to, Transition::Ejected);
        assert_eq!(change.cause, "passive: 3 failures in 10s");
        assert_eq!(flags(&state, t0 + 4 * SECOND), (false, false));
        assert_eq!(state.view(t0 + 4 * SECOND).ejected_for, Some(SECOND));
        assert_eq!(state.tick(t0 + 4 * SECOND), None);
        // Over: back without any check.
        assert_eq!(flags(&state, t0 + 5 * SECOND), (true, true));
        assert_eq!(to(state.tick(t0 + 5 * SECOND)), Some(Transition::Up));
        assert_eq!(state.tick(t0 + 6 * SECOND), None);
        assert_eq!(state.view(t0).ejections, 1);
    }

    #[test]
    fn passive_failures_must_fall_within_the_window() {
        let t0 = Instant::now();
        let mut state = ServerState::new(rules(None));
        state.record_outcome(t0, Outcome::Status(500));
        state.record_outcome(t0 + 6 * SECOND, Outcome::Status(500));
        // 11 s after the first: the count starts over.
        assert_eq!(
            state.record_outcome(t0 + 11 * SECOND, Outcome::Status(500)),
            None
        );
        assert_eq!(
            state.record_outcome(t0 + 12 * SECOND, Outcome::Status(500)),
            None
        );
        assert_eq!(
            to(state.record_outcome(t0 + 13 * SECOND, Outcome::ConnectFailed)),
            Some(Transition::Ejected)
        );
        // Passive checks off: never ejected.
        let mut off = ServerState::new(HealthRules {
            passive: PassiveHealthConfig {
                failures: 0,
                window: SECOND,
            },
            ..rules(None)
        });
        for _ in 0..10 {
            assert_eq!(off.record_outcome(t0, Outcome::Status(500)), None);
        }
        assert!(off.takes_new(t0));
    }

    #[test]
    fn with_checks_an_ejected_server_needs_a_passing_check_after_its_time() {
        let t0 = Instant::now();
        let mut state = ServerState::new(rules(Some((2, 3))));
        state.record_check(t0, true, "passed");
        for _ in 0..2 {
            state.record_outcome(t0, Outcome::Status(500));
        }
        assert_eq!(
            to(state.record_outcome(t0, Outcome::Status(500))),
            Some(Transition::Ejected)
        );
        // Inside the ejection time a passing check does not bring it back.
        assert_eq!(state.record_check(t0 + SECOND, true, "passed"), None);
        assert!(!state.takes_new(t0 + SECOND));
        // After it, time alone does not either...
        assert_eq!(state.tick(t0 + 6 * SECOND), None);
        assert!(!state.takes_new(t0 + 6 * SECOND));
        assert_eq!(
            state.view(t0 + 6 * SECOND).ejected_for,
            Some(Duration::ZERO)
        );
        // ...a failing check neither; a passing one does.
        assert_eq!(
            state.record_check(t0 + 6 * SECOND, false, "status 500"),
            None
        );
        let change = state
            .record_check(t0 + 7 * SECOND, true, "passed")
            .expect("re-admitted");
        assert_eq!(change.to, Transition::Up);
        assert_eq!(change.cause, "re-admitted by a passing active check");
        assert!(state.takes_new(t0 + 7 * SECOND));
    }

    #[test]
    fn a_failed_connect_skips_the_server_for_its_window() {
        let t0 = Instant::now();
        let mut state = ServerState::new(rules(None));
        assert_eq!(state.record_outcome(t0, Outcome::ConnectFailed), None);
        assert_eq!(flags(&state, t0 + SECOND), (false, false));
        assert!(state.view(t0 + SECOND).failing);
        assert_eq!(flags(&state, t0 + 5 * SECOND), (true, true));
        // No window: never skipped.
        let mut state = ServerState::new(HealthRules {
            eject_for: Duration::ZERO,
            ..rules(None)
        });
        state.record_outcome(t0, Outcome::ConnectFailed);
        assert!(state.takes_new(t0));
    }

    #[test]
    fn slow_start_ramps_the_weight_after_coming_up() {
        let t0 = Instant::now();
        let slow = HealthRules {
            slow_start: Duration::from_secs(10),
            ..rules(Some((1, 1)))
        };
        let mut state = ServerState::new(slow);
        // Up from the start without a ramp point: full weight.
        assert_eq!(state.weight_permille(t0), FULL_PERMILLE);
        state.record_check(t0, true, "passed");
        let cases = [
            (0, 100),
            (1, 190),
            (5, 550),
            (9, 910),
            (10, 1000),
            (60, 1000),
        ];
        for (seconds, want) in cases {
            assert_eq!(
                state.weight_permille(t0 + seconds * SECOND),
                want,
                "after {seconds}s"
            );
        }
        // Down and up again: the ramp starts over.
        let t1 = t0 + 100 * SECOND;
        assert_eq!(
            to(state.record_check(t1, false, "x")),
            Some(Transition::Down)
        );
        assert_eq!(
            to(state.record_check(t1, true, "passed")),
            Some(Transition::Up)
        );
        assert_eq!(state.weight_permille(t1 + 5 * SECOND), 550);
        // After a passive ejection without checks, the ramp starts when it ends.
        let mut plain = ServerState::new(HealthRules {
            slow_start: Duration::from_secs(10),
            ..rules(None)
        });
        for _ in 0..3 {
            plain.record_outcome(t0, Outcome::Status(500));
        }
        plain.tick(t0 + 7 * SECOND);
        assert_eq!(plain.weight_permille(t0 + 10 * SECOND), 550);
        // Slow start off: always full.
        let mut off = ServerState::new(rules(Some((1, 1))));
        off.record_check(t0, true, "passed");
        assert_eq!(off.weight_permille(t0), FULL_PERMILLE);
    }

    #[test]
    fn reconfigure_keeps_the_state() {
        let t0 = Instant::now();
        // Checks added to a serving server: it stays up until they fail.
        let mut state = ServerState::new(rules(None));
        state.set_operator(Operator::Draining, "admin API");
        assert_eq!(state.reconfigure(rules(Some((2, 2))), t0), None);
        assert_eq!(flags(&state, t0), (false, true));
        assert_eq!(state.record_check(t0, false, "x"), None);
        assert_eq!(
            to(state.record_check(t0, false, "x")),
            Some(Transition::Down)
        );
        // Checks removed from a down server: it is up.
        assert_eq!(to(state.reconfigure(rules(None), t0)), Some(Transition::Up));
        assert_eq!(state.operator(), Operator::Draining);
        // A down server whose rise/fall change stays down.
        let mut down = ServerState::new(rules(Some((2, 2))));
        assert_eq!(down.reconfigure(rules(Some((3, 3))), t0), None);
        assert!(!down.health_up());
    }
}
