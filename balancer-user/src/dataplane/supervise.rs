//! The data plane's background work: health checks of VIP backends and
//! next-hop resolution, both feeding `Control`.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};

use super::{Control, HopError, nexthop};
use crate::{
    config::{ForwardMode, HealthCheckConfig, HealthCheckKind, VipConfig},
    health::{self, CheckSpec, Probe},
};

/// Shared by the supervisors and the admin API.
pub type SharedControl = Arc<Mutex<Control>>;

/// How often resolved next hops are re-checked (neighbour entries age out and change).
const NEXT_HOP_REFRESH: Duration = Duration::from_secs(5);
/// How often unresolved ones are retried.
const NEXT_HOP_RETRY: Duration = Duration::from_millis(500);
/// How long a start waits for neighbours that are not resolved yet before it writes the
/// maps and takes the program over (unresolved ones are then retried every `NEXT_HOP_RETRY`).
const NEXT_HOP_PATIENCE_AT_START: Duration = Duration::from_secs(1);

/// The next hops of every forwarding backend of `vips`, resolved before the data plane
/// starts (see [`super::Control::new`]): with pinned maps, the program keeps forwarding
/// with the previous run's hops until these replace them.
pub async fn resolve_before_start(vips: &[VipConfig]) -> Vec<nexthop::Resolved> {
    let backends: Vec<std::net::IpAddr> = vips
        .iter()
        .filter(|vip| *vip.forward.get_ref() != ForwardMode::Local)
        .flat_map(|vip| vip.backends.iter().map(|backend| backend.address))
        .collect();
    if backends.is_empty() {
        return Vec::new();
    }
    tokio::task::spawn_blocking(move || nexthop::resolve_all(&backends, NEXT_HOP_PATIENCE_AT_START))
        .await
        .unwrap_or_default()
}

/// Health-check ids carry (VIP index, backend index).
const ID_STRIDE: usize = 1 << 16;

/// Starts the health checks and the next-hop resolver; they stop when `shutdown` turns true.
pub fn spawn(control: SharedControl, shutdown: watch::Receiver<bool>) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let specs = health_specs(&lock(&control));
    if !specs.is_empty() {
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let checks = health::spawn_checks(specs, events_tx, shutdown.clone());
        let control = control.clone();
        tasks.spawn(async move {
            // Keeps the check tasks alive for as long as events are handled.
            let _checks = checks;
            while let Some(event) = events_rx.recv().await {
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

fn health_specs(control: &Control) -> Vec<(usize, CheckSpec)> {
    let mut specs = Vec::new();
    for (v, vip) in control.vips().iter().enumerate() {
        let Some(health) = &vip.health else { continue };
        for (b, backend) in vip.backends.iter().enumerate() {
            let port = health.port.unwrap_or(vip.info.port);
            let mut spec = check_spec(SocketAddr::new(backend.address, port), health);
            // Known healthy from a previous run (pinned maps): only `fall`
            // failures take it down, so established flows are not moved for nothing.
            spec.initially_up = backend.healthy;
            specs.push((v * ID_STRIDE + b, spec));
        }
    }
    specs
}

/// A health check as configured, for one target.
pub fn check_spec(target: SocketAddr, health: &HealthCheckConfig) -> CheckSpec {
    let probe = match &health.kind {
        HealthCheckKind::Tcp => Probe::Tcp,
        HealthCheckKind::Http { path, host, .. } => {
            let config = health.clone();
            Probe::Http {
                path: path.clone(),
                host: host.clone(),
                accepts: Arc::new(move |status| config.accepts_status(status)),
            }
        }
    };
    CheckSpec {
        target,
        probe,
        interval: health.interval,
        timeout: health.timeout,
        rise: health.rise,
        fall: health.fall,
        initially_up: false,
    }
}

/// Keeps every forwarding backend's next hop (interface, MACs, source, MTU)
/// current: retries unresolved ones quickly, re-checks resolved ones slowly.
async fn resolve_next_hops(control: SharedControl, mut shutdown: watch::Receiver<bool>) {
    loop {
        let targets: Vec<(usize, usize, std::net::IpAddr)> = lock(&control)
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
        let resolved = tokio::task::spawn_blocking(move || {
            targets
                .into_iter()
                .map(|(v, b, address)| {
                    let result = nexthop::resolve(address);
                    if result.is_err() {
                        nexthop::solicit(address);
                    }
                    (v, b, result)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut all_resolved = true;
        {
            let mut control = lock(&control);
            for (v, b, result) in &resolved {
                all_resolved &= result.is_ok();
                let hop = result.as_ref().map_err(HopError::from);
                if let Err(err) = control.set_next_hop(*v, *b, hop) {
                    tracing::error!("writing a next hop failed: {err}");
                }
            }
        }
        let wait = if all_resolved {
            NEXT_HOP_REFRESH
        } else {
            NEXT_HOP_RETRY
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}
