//! `GET /api/state`: the balancer's state as JSON.

use serde_json::json;

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
        .map_or(serde_json::Value::Null, |proxy| pools(&proxy.state.load()));
    let state = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime,
        "xdp": xdp,
        "pools": pools,
    });
    Ok(serde_json::to_string_pretty(&state).expect("JSON values serialize") + "\n")
}

/// Every pool with its servers' live counters.
fn pools(state: &crate::proxy::state::ProxyState) -> serde_json::Value {
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
                .map(|server| {
                    json!({
                        "url": server.label,
                        "weight": server.config.weight,
                        "route": server.config.route,
                        "failing": server.failing(now),
                        "in_flight": server.in_flight(),
                        "requests": server.requests.load(std::sync::atomic::Ordering::Relaxed),
                        "connect_failures": server.connect_failures.load(std::sync::atomic::Ordering::Relaxed),
                        "connections_opened": server.connections.connections_opened(),
                        "idle_connections": server.connections.idle_connections(),
                    })
                })
                .collect();
            json!({ "name": name, "servers": servers })
        })
        .collect();
    serde_json::Value::Array(pools)
}
