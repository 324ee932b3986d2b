//! The data plane's background work: health checks of VIP backends and
//! next-hop resolution, both feeding `Control`.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::{Control, HopError, nexthop};
use crate::{
    config::{ForwardMode, HealthCheckConfig, HealthCheckKind, VipConfig},
    health::{self, CheckSpec, HttpProbe, HttpVia, Probe, RiseFall, Subscriber, Transitions},
};

/// Shared by the supervisors and the admin API.
pub type SharedControl = Arc<Mutex<Control>>;

/// How often resolved next hops are re-checked in full, as a safety net: every neighbour,
/// route and link change already triggers a resolution (see `resolve_next_hops`).
const NEXT_HOP_REFRESH: Duration = Duration::from_secs(30);
/// How often they are re-checked when the change notifications are not available.
const NEXT_HOP_REFRESH_WITHOUT_EVENTS: Duration = Duration::from_secs(5);
/// How often unresolved ones are solicited and retried.
const NEXT_HOP_RETRY: Duration = Duration::from_millis(500);
/// After a change notification, how long to let the ones that come with it arrive
/// before resolving (a moved route or a link going down brings several).
const NEXT_HOP_SETTLE: Duration = Duration::from_millis(5);
/// How long a start waits for neighbours that are not resolved yet before it writes the
/// maps and takes the program over (unresolved ones are then retried every `NEXT_HOP_RETRY`).
const NEXT_HOP_PATIENCE_AT_START: Duration = Duration::from_secs(1);

/// The next hops of every forwarding backend of `vips`, resolved before the data plane
/// starts (see [`super::Control::new`]): with pinned maps, the program keeps forwarding
/// with the previous run's hops until these replace them.
pub async fn resolve_before_start(vips: &[VipConfig]) -> Vec<nexthop::Resolved> {
    let backends: Vec<IpAddr> = vips
        .iter()
        .filter(|vip| *vip.forward.get_ref() != ForwardMode::Local)
        .flat_map(|vip| vip.backends.iter().map(|backend| backend.address))
        .collect();
    if backends.is_empty() {
        return Vec::new();
    }
    nexthop::resolve_all(&backends, NEXT_HOP_PATIENCE_AT_START).await
}

/// Health-check ids carry (VIP index, backend index).
const ID_STRIDE: usize = 1 << 16;

/// Starts the health checks and the next-hop resolver; they stop when `shutdown` turns true.
pub fn spawn(control: SharedControl, shutdown: watch::Receiver<bool>) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let checks = health_checks(&lock(&control));
    if !checks.is_empty() {
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let (specs, states): (Vec<_>, Vec<_>) = checks
            .into_iter()
            .map(|(id, spec, state)| ((id, spec), (id, state)))
            .unzip();
        let transitions: Arc<dyn Subscriber> = Arc::new(Transitions::new(states, events_tx));
        let stop = CancellationToken::new();
        let checks = health::spawn_checks(specs, &transitions, &stop);
        drop(transitions);
        let control = control.clone();
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            // Keeps the check tasks alive for as long as events are handled; stops them on
            // shutdown.
            let _checks = checks;
            let _stop = stop.drop_guard();
            loop {
                let event = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|&stop| stop) => return,
                    event = events_rx.recv() => match event {
                        Some(event) => event,
                        None => return,
                    },
                };
                let (vip, backend) = (event.id / ID_STRIDE, event.id % ID_STRIDE);
                let mut control = lock(&control);
                let name = control.vips()[vip].info.name.clone();
                let address = control.vips()[vip].backends[backend].address;
                tracing::info!(vip = %name, backend = %address, up = event.up, "health: {}", event.reason);
                if let Err(err) = control.set_health(vip, backend, event.up, event.reason) {
                    tracing::error!(vip = %name, backend = %address, "writing the health state failed: {err}");
                }
            }
        });
    }
    tasks.spawn(resolve_next_hops(control, shutdown));
    tasks
}

fn lock(control: &SharedControl) -> std::sync::MutexGuard<'_, Control> {
    control.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The check of every VIP backend with its rise/fall state, by id.
fn health_checks(control: &Control) -> Vec<(usize, CheckSpec, RiseFall)> {
    let mut checks = Vec::new();
    for (v, vip) in control.vips().iter().enumerate() {
        let Some(health) = &vip.health else { continue };
        for (b, backend) in vip.backends.iter().enumerate() {
            let port = health.port.unwrap_or(vip.info.port);
            let spec = check_spec(SocketAddr::new(backend.address, port), health);
            // Known healthy from a previous run (pinned maps): only `fall`
            // failures take it down, so established flows are not moved for nothing.
            let state = RiseFall::starting(health.rise, health.fall, backend.healthy);
            checks.push((v * ID_STRIDE + b, spec, state));
        }
    }
    checks
}

/// A health check as configured, for one target.
pub fn check_spec(target: SocketAddr, health: &HealthCheckConfig) -> CheckSpec {
    let probe = match &health.kind {
        HealthCheckKind::Tcp => Probe::Tcp(target),
        HealthCheckKind::Http { path, host, .. } => {
            let config = health.clone();
            Probe::Http(HttpProbe {
                via: HttpVia::Tcp(target),
                path: path.clone(),
                host: host.clone(),
                accepts: Arc::new(move |status| config.accepts_status(status)),
            })
        }
    };
    CheckSpec {
        probe,
        interval: health.interval,
        timeout: health.timeout,
    }
}

/// Keeps every forwarding backend's next hop (interface, MACs, source, MTU) current:
/// resolves them again whenever the kernel notifies a neighbour, route or link change
/// that can move one, retries unresolved ones quickly (soliciting their neighbours), and
/// re-checks everything slowly in case a notification was missed.
async fn resolve_next_hops(control: SharedControl, mut shutdown: watch::Receiver<bool>) {
    // Subscribed before the first resolution: a change in between is not missed.
    let mut changes = match nexthop::watch_changes() {
        Ok(changes) => Some(changes),
        Err(err) => {
            tracing::warn!(
                "next hops: no change notifications ({err}); re-checking every {}s",
                NEXT_HOP_REFRESH_WITHOUT_EVENTS.as_secs()
            );
            None
        }
    };
    let resolver = loop {
        match nexthop::Resolver::open() {
            Ok(resolver) => break resolver,
            Err(err) => {
                tracing::error!("next hops: {err}; trying again in 5s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    loop {
        let targets: Vec<(usize, usize, IpAddr)> = lock(&control)
            .vips()
            .iter()
            .enumerate()
            .filter(|(_, vip)| vip.forwards())
            .flat_map(|(v, vip)| {
                vip.backends
                    .iter()
                    .enumerate()
                    .map(move |(b, backend)| (v, b, backend.address))
            })
            .collect();
        // One resolution per address, whatever the number of VIPs it backs.
        let mut resolved: HashMap<IpAddr, Result<nexthop::NextHop, nexthop::NextHopError>> =
            HashMap::new();
        for (_, _, address) in &targets {
            if !resolved.contains_key(address) {
                let result = resolver.resolve(*address).await;
                if result.is_err() {
                    nexthop::solicit(*address);
                }
                resolved.insert(*address, result);
            }
        }
        let all_resolved = resolved.values().all(Result::is_ok);
        {
            let mut control = lock(&control);
            for (v, b, address) in &targets {
                let hop = resolved[address].as_ref().map_err(HopError::from);
                if let Err(err) = control.set_next_hop(*v, *b, hop) {
                    tracing::error!("writing a next hop failed: {err}");
                }
            }
        }
        let watched = nexthop::watched_neighbours(
            resolved
                .iter()
                .map(|(address, result)| (*address, Some(result))),
        );
        let wait = match (all_resolved, &changes) {
            (false, _) => NEXT_HOP_RETRY,
            (true, Some(_)) => NEXT_HOP_REFRESH,
            (true, None) => NEXT_HOP_REFRESH_WITHOUT_EVENTS,
        };
        let woken = tokio::select! {
            _ = tokio::time::sleep(wait) => None,
            change = next_change(changes.as_mut(), &watched) => Some(change),
            _ = shutdown.changed() => return,
        };
        match woken {
            Some(Some(change)) => {
                tracing::debug!(?change, "next hops: re-resolving after a change");
            }
            Some(None) => {
                tracing::warn!(
                    "next hops: the change notifications stopped; re-checking every {}s",
                    NEXT_HOP_REFRESH_WITHOUT_EVENTS.as_secs()
                );
                changes = None;
            }
            None => {}
        }
    }
}

/// The next change that concerns `watched`; never, without a subscription.
async fn next_change(
    changes: Option<&mut nexthop::ChangeStream>,
    watched: &std::collections::HashSet<IpAddr>,
) -> Option<nexthop::Change> {
    match changes {
        Some(changes) => changes.next(watched, NEXT_HOP_SETTLE).await,
        None => std::future::pending().await,
    }
}
