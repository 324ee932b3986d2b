//! One state per backend host for both halves: a pool server whose URL names an IP address that
//! is also a VIP backend shares that backend's fate. An operator's drain, enable or disable of
//! either is applied to the other, and the proxy's health verdict on the server (active checks,
//! passive ejection) takes the VIP backend out of the Maglev table while it is down.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    config::ServerUrl,
    dataplane::{AdminState, LinkedHealth, SharedControl},
    proxy::{handler::Shared, server_state::Operator},
};

/// How often the proxy's verdicts are copied to the data plane: well inside one check interval.
const SYNC_EVERY: Duration = Duration::from_millis(250);

/// The IP address a pool server's URL names, if it is a literal (names and unix sockets cannot
/// be VIP backends).
pub fn server_address(url: &ServerUrl) -> Option<IpAddr> {
    match url {
        ServerUrl::Http { host, .. } | ServerUrl::Https { host, .. } => host.parse().ok(),
        ServerUrl::Unix(_) => None,
    }
}

/// After an operator change of a pool server or a VIP backend: the same for the VIP backends
/// at its address. Returns the VIPs changed.
pub fn operator_to_vips(
    control: &SharedControl,
    address: IpAddr,
    operator: Operator,
) -> Vec<String> {
    let result = control
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .set_admin_at(address, operator);
    match result {
        Ok(vips) => vips,
        Err(err) => {
            tracing::error!(backend = %address, "applying the operator state to the VIP backends at this address failed: {err}");
            Vec::new()
        }
    }
}

/// After an operator change of a VIP backend: the same for the pool servers at its address.
/// Returns "pool/server" of each server changed.
pub fn operator_to_pools(
    proxy: &Shared,
    address: IpAddr,
    admin: AdminState,
    cause: &str,
) -> Vec<String> {
    let state = proxy.state.load();
    let mut changed = Vec::new();
    for pool in state.pools.values() {
        for (index, server) in pool.servers.iter().enumerate() {
            if server_address(&server.config.url) == Some(address) {
                pool.set_operator(index, admin, cause);
                changed.push(format!("{}/{}", pool.config.name, server.admin_id()));
            }
        }
    }
    if !changed.is_empty() {
        crate::proxy::operator_file::save_configured(&state);
    }
    changed
}

/// The proxy's verdict per address: down when any server there with health checks is down or
/// ejected, with the reason of the first such server.
fn pool_verdicts(proxy: &Shared, now: Instant) -> BTreeMap<IpAddr, LinkedHealth> {
    let state = proxy.state.load();
    let mut verdicts: BTreeMap<IpAddr, LinkedHealth> = BTreeMap::new();
    let mut pools: Vec<_> = state.pools.values().collect();
    pools.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    for pool in pools {
        for (index, server) in pool.servers.iter().enumerate() {
            let Some(address) = server_address(&server.config.url) else {
                continue;
            };
            let view = pool.view(index, now);
            let up = view.health_up && !view.ejected;
            let entry = verdicts.entry(address).or_insert_with(|| LinkedHealth {
                up: true,
                reason: String::new(),
            });
            if entry.up && !up {
                let why = if view.ejected {
                    view.last_ejection
                        .clone()
                        .unwrap_or_else(|| "ejected".to_string())
                } else {
                    view.health_reason.clone()
                };
                *entry = LinkedHealth {
                    up: false,
                    reason: format!(
                        "pool {} server {}: {why}",
                        pool.config.name,
                        server.admin_id()
                    ),
                };
            } else if entry.up && entry.reason.is_empty() {
                entry.reason =
                    format!("pool {} server {}: up", pool.config.name, server.admin_id());
            }
        }
    }
    verdicts
}

/// Copies the proxy's verdicts into the data plane until `shutdown`.
pub async fn sync_health(
    proxy: Arc<Shared>,
    control: SharedControl,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(SYNC_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let verdicts = pool_verdicts(&proxy, Instant::now());
        let mut control = control.lock().unwrap_or_else(PoisonError::into_inner);
        for (address, linked) in verdicts {
            let up = linked.up;
            let reason = linked.reason.clone();
            match control.set_pool_health(address, linked) {
                Ok(vips) if !vips.is_empty() => {
                    tracing::info!(backend = %address, up, vips = ?vips, "VIP backend follows its pool server: {reason}");
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::error!(backend = %address, "writing the pool server's health to the data plane failed: {err}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_literal_urls_name_a_backend_address() {
        let http = |host: &str| ServerUrl::Http {
            host: host.to_string(),
            port: 8000,
        };
        assert_eq!(
            server_address(&http("198.18.1.2")),
            Some("198.18.1.2".parse().expect("ip"))
        );
        assert_eq!(
            server_address(&http("2001:2::5")),
            Some("2001:2::5".parse().expect("ip"))
        );
        assert_eq!(server_address(&http("app.internal")), None);
        assert_eq!(
            server_address(&ServerUrl::Unix("/run/app.sock".into())),
            None
        );
    }
}
