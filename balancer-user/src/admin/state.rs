//! `GET /api/state`: the balancer's state as JSON.

use serde_json::json;

use super::AdminContext;

pub fn render(context: &AdminContext) -> Result<String, aya::maps::MapError> {
    let uptime = context.started.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    let xdp = match &context.xdp {
        None => serde_json::Value::Null,
        Some(xdp) => {
            let stats = xdp.stats.read()?;
            let vips: Vec<_> = stats
                .vips
                .iter()
                .map(|vip| {
                    let total = vip.total();
                    let mut value = serde_json::to_value(vip).expect("plain data serializes");
                    value["packets"] = json!(total.packets);
                    value["bytes"] = json!(total.bytes);
                    value
                })
                .collect();
            json!({
                "interface": xdp.interface,
                "mode": xdp.mode,
                "vips": vips,
                "by_reason": serde_json::to_value(&stats).expect("plain data serializes")["by_reason"],
            })
        }
    };
    let state = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime,
        "xdp": xdp,
    });
    Ok(serde_json::to_string_pretty(&state).expect("JSON values serialize") + "\n")
}
