//! The "protecting the app servers" section, from `bench_protect`'s JSON: how long a normal
//! request waits while slow clients upload to gunicorn's sync workers (balancer, balancer with
//! streamed bodies, nginx), what buffering costs on 1 MB uploads, and the memory 200
//! concurrent 5 MB bodies take next to what the buffers allow.

use std::fmt::Write as _;

use serde_json::Value;

/// The target: a normal request's wait under slow uploads at most nginx's.
const WAIT_TARGET_NGINX: f64 = 1.0;

pub fn render(md: &mut String, raw: &Value) -> anyhow::Result<()> {
    render_slow_clients(md, &raw["slow_clients"]);
    render_uploads(md, &raw["uploads"]);
    render_memory(md, &raw["memory"]);
    Ok(())
}

fn ms(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "—".to_string(), |ms| format!("{ms:.1} ms"))
}

fn render_slow_clients(md: &mut String, slow: &Value) {
    let _ = writeln!(
        md,
        "\n### Slow uploads in front of gunicorn sync workers\n\n\
         gunicorn runs {} sync workers of the Django acceptance app; {} clients upload {} bytes \
         at {} bytes/s to each proxy while a normal client asks each proxy for `/healthz/` \
         every 100 ms for {} s (each request on a new connection, 5 s timeout). balancer and \
         nginx run side by side and the normal client takes turns between them, so both are \
         measured under the same load at the same moments; the streamed run comes after. \
         balancer runs the config a new user writes; nginx the `proxy_pass` block of \
         gunicorn's deployment guide (`Host`, `X-Forwarded-For`, `X-Forwarded-Proto`), whose \
         defaults buffer request bodies too.\n",
        slow["workers"],
        slow["slow_uploads"],
        slow["upload_bytes"],
        slow["upload_rate_bytes_per_s"],
        slow["seconds"]
    );
    md.push_str("| proxy | normal requests | failed or timed out | p50 | p99 | max |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|\n");
    let runs = &slow["runs"];
    for (key, label) in [
        ("balancer", "balancer (default: `request_buffering = true`)"),
        ("balancer_streamed", "balancer, `request_buffering = false`"),
        ("nginx", "nginx"),
    ] {
        let run = &runs[key];
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} |",
            run["requests"],
            run["failed"],
            ms(&run["p50_ms"]),
            ms(&run["p99_ms"]),
            ms(&run["max_ms"])
        );
    }
    // The median: at 100 samples, a p99 is one request, at the mercy of the scheduler.
    let wait = |key: &str, quantile: &str| runs[key][quantile].as_f64();
    let failed = runs["balancer"]["failed"].as_u64().unwrap_or(0);
    if let (Some(balancer), Some(nginx)) = (wait("balancer", "p50_ms"), wait("nginx", "p50_ms")) {
        let ratio = balancer / nginx;
        let met = ratio <= WAIT_TARGET_NGINX && failed == 0;
        let p99 = match (wait("balancer", "p99_ms"), wait("nginx", "p99_ms")) {
            (Some(b), Some(n)) => format!("; p99 {:.2}×", b / n),
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "\nTarget: a normal request waits no longer than through nginx. Median wait \
             {ratio:.2}× nginx's ({balancer:.2} ms against {nginx:.2} ms{p99}), {failed} \
             failed: **{}**. Both answer in milliseconds (Django's own time), where streamed \
             bodies leave the normal client waiting for a worker until the uploads end.",
            if met { "met" } else { "missed" }
        );
    }
}

fn render_uploads(md: &mut String, uploads: &Value) {
    let _ = writeln!(
        md,
        "\n### 1 MB uploads, buffered and streamed\n\n\
         `wrk -t2 -c{} -d{}s` POSTing {}-byte bodies through balancer (one worker) to \
         `l7_backend`, which reads each body whole. Peak RSS is the process's `VmHWM`.\n",
        uploads["connections"], uploads["seconds"], uploads["body_bytes"]
    );
    md.push_str("| balancer | requests/s | errors | RSS before | peak RSS |\n");
    md.push_str("|---|---:|---:|---:|---:|\n");
    for (key, label) in [
        ("buffered", "buffered (default)"),
        ("streamed", "`request_buffering = false`"),
    ] {
        let run = &uploads["runs"][key];
        let _ = writeln!(
            md,
            "| {label} | {:.1} | {} | {} KiB | {} KiB |",
            run["requests_per_s"].as_f64().unwrap_or(0.0),
            run["errors"],
            run["rss_before_kib"],
            run["peak_rss_kib"]
        );
    }
    let buffered = uploads["runs"]["buffered"]["requests_per_s"].as_f64();
    let streamed = uploads["runs"]["streamed"]["requests_per_s"].as_f64();
    if let (Some(buffered), Some(streamed)) = (buffered, streamed) {
        let _ = writeln!(
            md,
            "\nBuffering runs at {:.2}× the streamed rate: the body goes through memory \
             (64 KiB) and an unlinked temporary file before the server gets it.",
            buffered / streamed
        );
    }
}

fn render_memory(md: &mut String, memory: &Value) {
    let _ = writeln!(
        md,
        "\n### Memory under {} concurrent {}-byte bodies\n\n\
         `wrk -c{}` for {} s, buffered. What the buffers allow is the connections times \
         `body_buffer` (uploads) or `response_buffer` (downloads); the rest of each body is in \
         temporary files. The growth beyond that is per-connection state and the allocator.\n",
        memory["connections"], memory["body_bytes"], memory["connections"], memory["seconds"]
    );
    md.push_str(
        "| bodies | requests/s | errors | RSS before | peak RSS | growth | buffers allow |\n",
    );
    md.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for key in ["uploads", "downloads"] {
        let run = &memory["runs"][key];
        let _ = writeln!(
            md,
            "| {key} | {:.1} | {} | {} KiB | {} KiB | {} KiB | {} KiB |",
            run["requests_per_s"].as_f64().unwrap_or(0.0),
            run["errors"],
            run["rss_before_kib"],
            run["peak_rss_kib"],
            run["growth_kib"],
            run["buffers_allow_kib"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_three_tables_and_the_target() {
        let raw = serde_json::json!({
            "slow_clients": {
                "workers": 2, "slow_uploads": 10, "upload_bytes": 4096,
                "upload_rate_bytes_per_s": 100, "seconds": 4,
                "runs": {
                    "balancer": { "requests": 39, "failed": 0, "p50_ms": 2.8, "p99_ms": 8.2, "max_ms": 8.2 },
                    "balancer_streamed": { "requests": 1, "failed": 1, "p50_ms": null, "p99_ms": null, "max_ms": null },
                    "nginx": { "requests": 39, "failed": 0, "p50_ms": 2.2, "p99_ms": 5.2, "max_ms": 5.2 }
                }
            },
            "uploads": {
                "body_bytes": 1048576, "connections": 50, "seconds": 3,
                "runs": {
                    "buffered": { "requests_per_s": 477.7, "errors": 0, "rss_before_kib": 10460, "peak_rss_kib": 15512 },
                    "streamed": { "requests_per_s": 489.5, "errors": 0, "rss_before_kib": 10780, "peak_rss_kib": 16804 }
                }
            },
            "memory": {
                "connections": 200, "body_bytes": 5242880, "seconds": 3,
                "runs": {
                    "uploads": { "requests_per_s": 43.6, "errors": 0, "rss_before_kib": 10880, "peak_rss_kib": 28648, "growth_kib": 17768, "buffers_allow_kib": 12800 },
                    "downloads": { "requests_per_s": 81.5, "errors": 0, "rss_before_kib": 10500, "peak_rss_kib": 55728, "growth_kib": 45228, "buffers_allow_kib": 51200 }
                }
            }
        });
        let mut md = String::new();
        render(&mut md, &raw).unwrap();
        assert!(
            md.contains("| nginx | 39 | 0 | 2.2 ms | 5.2 ms | 5.2 ms |"),
            "{md}"
        );
        assert!(
            md.contains("| balancer, `request_buffering = false` | 1 | 1 | — | — | — |"),
            "{md}"
        );
        assert!(
            md.contains("Median wait 1.27× nginx's") && md.contains("**missed**"),
            "{md}"
        );
        assert!(
            md.contains("| buffered (default) | 477.7 | 0 | 10460 KiB | 15512 KiB |"),
            "{md}"
        );
        assert!(
            md.contains("| downloads | 81.5 | 0 | 10500 KiB | 55728 KiB | 45228 KiB | 51200 KiB |"),
            "{md}"
        );
    }
}
