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
    let state = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime,
        "xdp": xdp,
    });
    Ok(serde_json::to_string_pretty(&state).expect("JSON values serialize") + "\n")
}
