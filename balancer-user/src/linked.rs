//! One state per backend host for both halves: a pool server whose URL names an IP address that
//! is also a VIP backend shares that backend's fate. An operator's drain, enable or disable of
//! either is applied to the other, and the proxy's health verdict on the server (active checks,
//! passive ejection) takes the VIP backend out of the Maglev table while it is down: the verdicts
//! are copied to the data plane whenever a pool server's state changes (the pools signal every
//! change and every check result), and when a passive ejection runs out.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::PoisonError,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    config::ServerUrl,
    dataplane::{LinkedHealth, SharedControl},
    operator::Operator,
    proxy::{ProxyView, proxy_state::ProxyState},
};

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
    state: &ProxyState,
    address: IpAddr,
    admin: Operator,
    cause: &str,
) -> Vec<String> {
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
        crate::proxy::operator_file::save_configured(state);
    }
    changed
}

/// The proxy's verdict per address: down when any server there with health checks is down or
/// ejected, with the reason of the first such server. Also how long until the first passive
/// ejection of such a server runs out (its end changes a verdict without a signal).
fn pool_verdicts(
    state: &ProxyState,
    now: Instant,
) -> (BTreeMap<IpAddr, LinkedHealth>, Option<Duration>) {
    let mut verdicts: BTreeMap<IpAddr, LinkedHealth> = BTreeMap::new();
    let mut next_end: Option<Duration> = None;
    let mut pools: Vec<_> = state.pools.values().collect();
    pools.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    for pool in pools {
        for (index, server) in pool.servers.iter().enumerate() {
            let Some(address) = server_address(&server.config.url) else {
                continue;
            };
            let view = pool.view(index, now);
            if let Some(left) = view.ejected_for.filter(|left| !left.is_zero()) {
                next_end = Some(next_end.map_or(left, |next| next.min(left)));
            }
            let up = view.in_service();
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
    (verdicts, next_end)
}

/// Copies the proxy's verdicts into the data plane, at once and after every change of the
/// pools' servers, until `shutdown`.
pub async fn sync_health(
    proxy: ProxyView,
    control: SharedControl,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = proxy.changes();
    loop {
        // Seen before reading: a change while the verdicts are computed wakes the next wait.
        changes.mark_unchanged();
        let (verdicts, next_end) = pool_verdicts(&proxy.state(), Instant::now());
        apply(&control, verdicts);
        let ejection_over = async {
            match next_end {
                Some(left) => tokio::time::sleep(left).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = ejection_over => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn apply(control: &SharedControl, verdicts: BTreeMap<IpAddr, LinkedHealth>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::Config;
    use crate::proxy::{pool::Pool, server_health::Outcome};

    /// The L7 state of a config with one pool "app" of `servers`, and `pool` keys.
    fn state(servers: &str, pool: &str) -> ProxyState {
        let text = format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\n\n\
             [[route]]\nname = \"main\"\nlistener = \"web\"\npool = \"app\"\n\n\
             [pool.app]\nservers = [ {servers} ]\n{pool}\n"
        );
        let config = Config::parse(&text, "test.toml").expect("valid config");
        ProxyState::build(&config.l7, None).expect("a state")
    }

    #[test]
    fn a_passive_ejection_takes_the_address_down_and_says_when_it_ends() {
        let state = state(
            "{ url = \"http://198.18.1.2:8000\", route = \"a\" }, { url = \"unix:/run/app.sock\" }",
            "passive = { failures = 2, window = \"10s\" }\nretry = { after_failure = \"5s\" }",
        );
        let address: IpAddr = "198.18.1.2".parse().expect("ip");
        let now = Instant::now();
        let (verdicts, next_end) = pool_verdicts(&state, now);
        assert_eq!(
            verdicts.get(&address),
            Some(&LinkedHealth {
                up: true,
                reason: "pool app server a: up".to_string()
            }),
            "only IP literals have a verdict: {verdicts:?}"
        );
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        assert_eq!(next_end, None);

        let pool: &std::sync::Arc<Pool> = &state.pools["app"];
        for _ in 0..2 {
            let load = pool.pick_with(None, Some(1), None).expect("server a");
            pool.report_outcome(&load, Outcome::Status(502));
        }
        let (verdicts, next_end) = pool_verdicts(&state, Instant::now());
        let down = &verdicts[&address];
        assert!(!down.up, "{down:?}");
        assert!(
            down.reason
                .starts_with("pool app server a: passive: 2 failures"),
            "{down:?}"
        );
        let left = next_end.expect("the ejection's end");
        assert!(
            left <= Duration::from_secs(5) && left > Duration::from_secs(4),
            "{left:?}"
        );
    }

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
