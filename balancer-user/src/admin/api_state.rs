//! `GET /api/state`: the balancer's state as JSON.

use std::{sync::atomic::Ordering, time::Instant};

use serde_json::json;

use crate::operator::Operator;
use crate::proxy::{
    pool::{Pool, Server},
    server_health::{StateView, Transition},
};

use super::AdminContext;

pub fn render(context: &AdminContext) -> Result<String, aya::maps::MapError> {
    let uptime = context.started.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    let xdp = match &context.xdp {
        None => serde_json::Value::Null,
        Some(xdp) => {
            let stats = xdp.read()?;
            // One serialization of the counters; each VIP then gets its totals over all verdicts.
            let mut value = serde_json::to_value(&stats).expect("plain data serializes");
            for (vip, entry) in stats
                .vips
                .iter()
                .zip(value["vips"].as_array_mut().expect("vips array"))
            {
                let total = vip.total();
                entry["packets"] = json!(total.packets);
                entry["bytes"] = json!(total.bytes);
            }
            value["interface"] = json!(xdp.interface);
            value["mode"] = json!(xdp.mode);
            value
        }
    };
    let pools = context
        .proxy
        .as_ref()
        .map_or(serde_json::Value::Null, |proxy| pools(&proxy.state()));
    let announce = context
        .announce
        .as_ref()
        .map_or(serde_json::Value::Null, |announcer| {
            serde_json::to_value(announcer.view()).expect("plain data serializes")
        });
    let state = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime,
        "xdp": xdp,
        "pools": pools,
        "announce": announce,
    });
    Ok(serde_json::to_string_pretty(&state).expect("JSON values serialize") + "\n")
}

/// Every pool with its servers' state and live counters.
fn pools(state: &crate::proxy::proxy_state::ProxyState) -> serde_json::Value {
    let now = std::time::Instant::now();
    let mut names: Vec<&String> = state.pools.keys().collect();
    names.sort();
    let pools: Vec<serde_json::Value> = names
        .into_iter()
        .map(|name| {
            let pool = &state.pools[name];
            let servers: Vec<serde_json::Value> = pool
                .servers
                .iter()
                .enumerate()
                .map(|(index, server)| server_json(pool, index, server, now))
                .collect();
            let stats = &pool.queue_stats;
            let count = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
            let queue = json!({
                "depth": pool.queue_depth(),
                "waited": count(&stats.waited),
                "wait_seconds_total": count(&stats.wait_micros) as f64 / 1e6,
                "timeouts": count(&stats.timeouts),
            });
            let retries = json!({
                "made": count(&pool.retry_budget.made),
                "refused_by_budget": count(&pool.retry_budget.refused),
            });
            json!({ "name": name, "servers": servers, "queue": queue, "retries": retries })
        })
        .collect();
    serde_json::Value::Array(pools)
}

fn server_json(pool: &Pool, index: usize, server: &Server, now: Instant) -> serde_json::Value {
    let view = pool.view(index, now);
    let changes: serde_json::Map<String, serde_json::Value> = Transition::ALL
        .iter()
        .map(|&to| (to.label().to_string(), json!(server.health.changes(to))))
        .collect();
    let count = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    json!({
        "url": &*server.label,
        "route": server.config.route,
        "weight": server.config.weight,
        "backup": server.config.backup,
        "max_conns": server.config.max_conns,
        "effective_weight": f64::from(server.config.weight) * f64::from(view.weight_permille) / 1000.0,
        "state": summary(&view),
        "health": if view.health_up { "up" } else { "down" },
        "health_reason": view.health_reason,
        "last_check": view.last_check,
        "operator": view.operator.label(),
        "takes_new_sessions": view.takes_new,
        "takes_sticky_requests": view.takes_sticky,
        "ejected": view.ejected,
        "ejected_for_ms": view.ejected_for.map(|left| u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
        "passive_ejections": view.ejections,
        "last_ejection": view.last_ejection,
        "failing": view.failing,
        "state_changes": changes,
        "in_flight": server.in_flight(),
        // Each request in flight holds one upstream connection (HTTP/1.1).
        "active_connections": server.in_flight(),
        "requests": count(&server.requests),
        "sticky_requests": count(&server.sticky_requests),
        "connect_failures": count(&server.connect_failures),
        "connections_opened": server.connections.connections_opened(),
        "idle_connections": server.connections.idle_connections(),
    })
}

/// One word for the server's state: why it does not take new sessions, or "up".
fn summary(view: &StateView) -> &'static str {
    if !view.health_up {
        "down"
    } else if view.ejected {
        "ejected"
    } else if view.failing {
        "failing"
    } else {
        match view.operator {
            Operator::Enabled => "up",
            other => other.label(),
        }
    }
}
