//! The L7 section of the report, from `bench_l7`'s JSON: one table per load case (rows
//! direct, balancer, nginx, HAProxy, then the balancer's ratios to the two peers), the
//! default-config runs with their new upstream connections, the memory tables (plain and
//! TLS), and each issue's targets next to the measured ratios.

use std::fmt::Write as _;

use serde_json::Value;

use super::group;

const PROXIES: [(&str, &str); 3] = [
    ("balancer", "balancer"),
    ("nginx", "nginx"),
    ("haproxy", "HAProxy"),
];
const ROWS: [(&str, &str); 7] = [
    ("direct", "direct to the backend"),
    ("relay", "floor: `l7_relay`, a byte relay (no HTTP)"),
    ("balancer", "balancer"),
    ("nginx", "nginx"),
    ("haproxy", "HAProxy"),
    ("balancer_logged", "balancer, access log to a file"),
    ("nginx_logged", "nginx, access log to a file"),
];
/// (logged row, its twin without logging, label).
const LOGGED: [(&str, &str, &str); 2] = [
    ("balancer_logged", "balancer", "balancer"),
    ("nginx_logged", "nginx", "nginx"),
];
/// Logging may cost at most this share of the CPU-per-request throughput.
const LOGGING_TARGET: f64 = 0.95;
const PEERS: [(&str, &str); 2] = [("nginx", "nginx"), ("haproxy", "HAProxy")];

/// The idle-connection memory target, KiB per connection.
const MEMORY_TARGET_KIB: f64 = 16.0;

/// The rows of the default-config runs: balancer as a new user configures it, then the three
/// proxies with their bench configs.
const DEFAULT_ROWS: [(&str, &str); 4] = [
    ("balancer_default", "balancer, **default config**"),
    ("balancer", "balancer, bench config"),
    ("nginx", "nginx"),
    ("haproxy", "HAProxy"),
];
/// (case key, wrk connections) of the default-config runs.
const DEFAULT_CASES: [(&str, u32); 2] =
    [("default_config_c64", 64), ("default_config_c1000", 1000)];

/// The L7 engine issue's targets: balancer's user CPU per request at most this share of
/// nginx's (HTTP/1.1 keep-alive, plain), its whole CPU per request no more than nginx's,
/// its requests/s per core this many times HAProxy's.
const ENGINE_USER_CPU: f64 = 0.8;
const ENGINE_CPU: f64 = 1.0;
const ENGINE_PER_CORE_HAPROXY: f64 = 1.15;
/// Requests/s over TLS as multiples of the peers': HTTP/1.1 of nginx's, h2 of nginx's and
/// HAProxy's.
const ENGINE_TLS_HTTP1_NGINX: f64 = 1.2;
const ENGINE_H2_NGINX: f64 = 1.2;
const ENGINE_H2_HAPROXY: f64 = 1.0;
/// KiB per idle plain connection; per idle TLS connection as a multiple of nginx's.
const ENGINE_PLAIN_KIB: f64 = 1.5;
const ENGINE_TLS_MEMORY_NGINX: f64 = 1.5;
/// New upstream connections per 1000 requests with the default config.
const ENGINE_NEW_UPSTREAM_PER_1000: f64 = 1.0;

pub fn render(md: &mut String, raw: &Value) -> anyhow::Result<()> {
    render_setup(md, raw);
    render_failures(md, raw);
    let cases = &raw["cases"];
    render_case(
        md,
        raw,
        &cases["http1_keepalive"],
        &format!(
            "HTTP/1.1 keep-alive (`wrk -t1 -c{} -d{}s --latency`, plain HTTP)",
            raw["wrk_connections"], raw["seconds_per_run"]
        ),
        "requests/s",
        "Latencies are wrk's (request written to response read). The floor row is a relay \
         that copies bytes between each client connection and its own upstream connection, \
         with no HTTP in it, pinned like the proxies: the same four socket calls per request \
         that every proxy here makes (read the request, write it upstream, read the response, \
         write it back), and nothing else.",
    );
    render_floor(md, &cases["http1_keepalive"]);
    render_logging(md, &cases["http1_keepalive"]);
    render_case(
        md,
        raw,
        &cases["http1_tls_keepalive"],
        &format!(
            "HTTP/1.1 keep-alive over TLS (`wrk -t1 -c{} -d{}s --latency`, HTTPS)",
            raw["wrk_connections"], raw["seconds_per_run"]
        ),
        "requests/s",
        "The HTTP/1.1 case against each proxy's HTTPS port: wrk (OpenSSL) offers no ALPN, so \
         every proxy speaks HTTP/1.1 inside TLS 1.3 connections that are opened once and kept, \
         and the difference from the plain case is the record layer (decrypting each request, \
         encrypting each response). The backend has no TLS: no direct row.",
    );
    render_case(
        md,
        raw,
        &cases["h2"],
        &format!(
            "h2 over TLS (`h2load -c{} -m{} -t1 -D {}`; direct: h2c with prior knowledge)",
            raw["h2_connections"], raw["h2_streams_per_connection"], raw["seconds_per_run"]
        ),
        "requests/s",
        "h2load reports min/max/mean/sd of request times only: p50 and p99 here are computed \
         from its `--log-file` (every request's time from sending it to the end of its \
         response); the mean h2load printed is in the raw numbers.",
    );
    render_case(
        md,
        raw,
        &cases["tls_new_connections"],
        &format!(
            "New TLS connections, as wrk makes them (`wrk -t1 -c{} -d{}s -H 'Connection: close'`, \
             HTTPS; direct: plain HTTP, the backend has no TLS)",
            raw["wrk_tls_connections"], raw["seconds_per_run"]
        ),
        "connections/s",
        &format!(
            "One request per connection. wrk (OpenSSL) offers the session ticket of its previous \
             connection on each new one, so these handshakes are **resumed** TLS 1.3 handshakes \
             (PSK with ECDHE: no certificate signature) wherever the proxy resumes: {}. \
             Latencies are wrk's and leave out the connect and the handshake.",
            resumption_summary(&raw["tls_resumption"])
        ),
    );
    render_case(
        md,
        raw,
        &cases["tls_full_handshakes"],
        &format!(
            "New TLS connections, full handshakes ({} concurrent loops of this driver's rustls \
             client, session resumption off, for {} s)",
            raw["wrk_tls_connections"], raw["seconds_per_run"]
        ),
        "connections/s",
        "Each connection: connect, full TLS 1.3 handshake (X25519, ECDSA P-256 certificate, \
         ALPN http/1.1), one GET with `Connection: close`, the response, close. The client checks \
         the handshake signature but not the certificate (as wrk and `curl -k` do). Latency is \
         the whole connection, from connect to the end of the response.",
    );
    render_default_config(md, raw);
    render_instructions(md, raw);
    render_memory(md, raw);
    render_targets(md, raw);
    render_engine_targets(md, raw);
    Ok(())
}

fn render_setup(md: &mut String, raw: &Value) {
    let tools = &raw["tools"];
    let tool = |name: &str| short_version(name, tools[name].as_str().unwrap_or("?"));
    let _ = writeln!(
        md,
        "\nOne run, one network namespace with only `lo` (127.0.0.1). The backend is `l7_backend` \
         (hyper, one runtime thread; `/bench` answers 200 `hello, world\\n`, 13 bytes). In front \
         of it, configured alike and started side by side (each idle while another is \
         measured): **balancer** (`TOKIO_WORKER_THREADS=1`), **nginx** (`worker_processes 1`) \
         and **HAProxy** (`nbthread 1`), each listening for plain HTTP on one port and HTTPS on \
         another (TLS 1.3, one self-signed ECDSA P-256 certificate, ALPN h2 and http/1.1), \
         routing `/` to the backend over HTTP/1.1 with upstream keep-alive (balancer's default \
         pool, nginx `keepalive 1024`, HAProxy `http-reuse always`: none of them closes an \
         idle upstream connection below the runs' peak concurrency of 1000), no access log.\n\n\
         **Per core**: each proxy is pinned to CPU {proxy_cpu} (`taskset -c {proxy_cpu}`); the \
         load generator and the backend share CPU {load_cpu}, so the \"direct\" rows (backend \
         and load generator on one core) are also the most CPU {load_cpu} can drive: a proxy \
         close to them is held back by the load generator, not by its own core. Everything \
         measured runs at `nice -n {nice}`, ahead of whatever else runs on this shared \
         {cpus}-CPU machine (see the load average above), which still shows in the tails. Each \
         case runs {rounds} round(s) of {seconds} s per target (rounds interleave the \
         targets), after a warm-up; the figures are the medians over the rounds. \"Proxy CPU\" \
         is the proxy's own CPU time per request or connection (user + system of all its \
         threads and processes, from `/proc/PID/stat`, which includes the kernel's network \
         work done while it runs): its inverse is the rate one core would sustain. \"CPU \
         {proxy_cpu} busy\" is the whole core's busy share during the run (proxy, kernel and \
         anything else scheduled there).\n\n\
         Tools: {wrk}; {h2load}; {nginx}; {haproxy}; {openssl}.",
        proxy_cpu = raw["proxy_cpu"],
        load_cpu = raw["load_cpu"],
        cpus = raw["cpus"],
        rounds = raw["rounds"],
        seconds = raw["seconds_per_run"],
        nice = raw["nice"],
        wrk = tool("wrk"),
        h2load = tool("h2load"),
        nginx = tool("nginx"),
        haproxy = tool("haproxy"),
        openssl = tool("openssl"),
    );
    let mut bad = Vec::new();
    if let Some(checks) = raw["checks"].as_object() {
        for (target, probes) in checks {
            for (probe, result) in probes.as_object().into_iter().flatten() {
                let expected_version = if probe.ends_with("h2") || probe.ends_with("h2c") {
                    "2"
                } else {
                    "1.1"
                };
                if result["status"] != 200
                    || result["body_ok"] != true
                    || result["http_version"] != expected_version
                {
                    bad.push(format!("{target} {probe}: {result}"));
                }
            }
        }
    }
    if bad.is_empty() {
        let _ = writeln!(
            md,
            "\nChecked first with curl: every target answers `/bench` with 200 and the \
             expected body over plain HTTP/1.1, and every proxy over TLS with h2 and with \
             http/1.1 as ALPN chose."
        );
    } else {
        let _ = writeln!(
            md,
            "\n**The checks before measuring found problems** (curl):\n\n```text\n{}\n```",
            bad.join("\n")
        );
    }
}

/// The first line of a tool's version output, without the noise: "wrk debian/4.1.0-3+b2",
/// "nginx/1.22.1", "HAProxy 2.6.12-1+deb12u4", "OpenSSL 3.0.19".
fn short_version(tool: &str, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let pick = |indices: &[usize]| -> String {
        let picked: Vec<&str> = indices
            .iter()
            .filter_map(|&i| words.get(i).copied())
            .collect();
        if picked.len() == indices.len() {
            picked.join(" ")
        } else {
            line.to_string()
        }
    };
    match tool {
        "wrk" | "openssl" => pick(&[0, 1]),
        "nginx" => words
            .last()
            .map_or_else(|| line.to_string(), |w| (*w).to_string()),
        "haproxy" => pick(&[0, 2]),
        _ => line.to_string(),
    }
}

fn render_failures(md: &mut String, raw: &Value) {
    let Some(failures) = raw["failures"].as_object() else {
        return;
    };
    for (target, message) in failures {
        let _ = writeln!(
            md,
            "\n**{target} failed**: {}",
            code_block(message.as_str().unwrap_or("?"))
        );
    }
    // Whatever the proxies wrote to their logs (warnings, errors).
    if let Some(logs) = raw["logs"].as_object() {
        for (target, log) in logs {
            let tail = log["log_tail"].as_str().unwrap_or("").trim();
            if !tail.is_empty() {
                let _ = writeln!(
                    md,
                    "\n{target} logged (last lines):\n\n```text\n{tail}\n```"
                );
            }
        }
    }
}

fn code_block(text: &str) -> String {
    if text.contains('\n') {
        format!("\n\n```text\n{}\n```", text.trim())
    } else {
        format!("`{}`", text.trim())
    }
}

fn resumption_summary(resumption: &Value) -> String {
    let Some(map) = resumption.as_object() else {
        return "not checked".into();
    };
    let parts: Vec<String> = PROXIES
        .iter()
        .filter_map(|(key, label)| {
            let entry = map.get(*key)?;
            Some(match entry["resumed"].as_bool() {
                Some(true) => format!("{label} resumes"),
                Some(false) => format!("{label} does not resume"),
                None => format!("{label} unknown ({})", entry["error"]),
            })
        })
        .collect();
    if parts.is_empty() {
        "not checked".into()
    } else {
        format!(
            "{} (`openssl s_client -sess_out` then `-sess_in`)",
            parts.join(", ")
        )
    }
}

fn render_case(
    md: &mut String,
    raw: &Value,
    rows: &Value,
    title: &str,
    rate_name: &str,
    note: &str,
) {
    let _ = writeln!(md, "\n### {title}\n\n{note}\n");
    if rows.as_object().is_none_or(|m| m.is_empty()) {
        let _ = writeln!(md, "Not measured.");
        return;
    }
    let per = if rate_name == "requests/s" {
        "request"
    } else {
        "connection"
    };
    let _ = writeln!(
        md,
        "| | {rate_name} | p50 | p99 | errors | proxy CPU per {per} | of it user / kernel | \
         CPU {} busy |\n|---|---:|---:|---:|---:|---:|---:|---:|",
        raw["proxy_cpu"]
    );
    for (key, label) in ROWS {
        let row = &rows[key];
        if row.is_null() {
            continue;
        }
        if row["requests_per_second"].is_null() {
            let _ = writeln!(
                md,
                "| {label} | failed: {} | | | | | | |",
                one_line(&row["first_failure"])
            );
            continue;
        }
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} | {} | {} |",
            row["requests_per_second"]
                .as_f64()
                .map_or("?".into(), |v| group(v.round() as u64)),
            latency(&row["p50_us"]),
            latency(&row["p99_us"]),
            errors(row),
            row["proxy_cpu_us_per_request"]
                .as_f64()
                .map_or("".into(), |v| format!("{v:.1} µs")),
            cpu_split(row).unwrap_or_default(),
            row["proxy_core_busy"]
                .as_f64()
                .map_or("".into(), |v| format!("{:.0} %", v * 100.0)),
        );
    }
    for (peer, label) in PEERS {
        let ratio = |key: &str| ratio(&rows["balancer"][key], &rows[peer][key]);
        let _ = writeln!(
            md,
            "| **balancer / {label}** | **{}** | {} | {} | | {} | | |",
            ratio("requests_per_second"),
            ratio("p50_us"),
            ratio("p99_us"),
            ratio("proxy_cpu_us_per_request"),
        );
    }
    // Over the same protocol as the proxies, "direct" is what the load generator's core can
    // drive at most.
    if let Some(direct) = rows["direct"]["requests_per_second"].as_f64()
        && rate_name == "requests/s"
    {
        let capped: Vec<&str> = PROXIES
            .iter()
            .filter(|(key, _)| {
                rows[*key]["requests_per_second"]
                    .as_f64()
                    .is_some_and(|r| r >= 0.9 * direct)
            })
            .map(|(_, label)| *label)
            .collect();
        if !capped.is_empty() {
            let _ = writeln!(
                md,
                "\n{} within 10 % of the direct rate: held back by the load generator's core \
                 rather than its own; the proxy CPU per request tells the cores apart.",
                capped.join(" and "),
            );
        }
    }
}

/// What the relay floor leaves each proxy, and what 1.2× nginx's rate per core would leave.
fn render_floor(md: &mut String, rows: &Value) {
    let cpu = |key: &str| rows[key]["proxy_cpu_us_per_request"].as_f64();
    let (Some(floor), Some(nginx)) = (cpu("relay"), cpu("nginx")) else {
        return;
    };
    let above: Vec<String> = PROXIES
        .iter()
        .filter_map(|(key, label)| {
            let all = cpu(key)?;
            let user = rows[*key]["proxy_user_us_per_request"].as_f64()?;
            Some(format!(
                "{label} {:+.1} µs ({user:.1} µs of user time)",
                all - floor
            ))
        })
        .collect();
    let budget = nginx / 1.2;
    let headroom = if budget >= floor {
        format!("which leaves {:.1} µs above the floor", budget - floor)
    } else {
        format!(
            "{:.1} µs below the floor itself: not even the relay reaches it, let alone",
            floor - budget
        )
    };
    let floor_kernel = rows["relay"]["proxy_kernel_us_per_request"]
        .as_f64()
        .map_or(String::new(), |k| {
            format!(", {k:.1} µs of it in the kernel")
        });
    let _ = writeln!(
        md,
        "\nWhere the time goes: the floor costs {floor:.1} µs of CPU per request{floor_kernel} \
         (TCP over loopback: each write also runs the receiving side's processing and wakes the \
         peer). Above the floor: {}. 1.2× nginx's rate per core is {budget:.1} µs per request, \
         {headroom} for everything a proxy does with HTTP; nginx itself takes {:.1} µs above it.",
        above.join(", "),
        nginx - floor,
    );
}

/// One chart per load case: each target's CPU per request (or per connection), user and
/// kernel time stacked. Returns (file name, title, SVG).
pub fn charts(raw: &Value) -> Vec<(String, String, String)> {
    let cases = [
        ("http1_keepalive", "HTTP/1.1 keep-alive", "request"),
        (
            "http1_tls_keepalive",
            "HTTP/1.1 keep-alive over TLS",
            "request",
        ),
        ("h2", "h2 over TLS", "request"),
        (
            "tls_new_connections",
            "New TLS connections (resumed)",
            "connection",
        ),
        (
            "tls_full_handshakes",
            "New TLS connections (full handshakes)",
            "connection",
        ),
    ];
    let mut out = Vec::new();
    for (key, name, per) in cases {
        let rows = &raw["cases"][key];
        let bars: Vec<super::plot::Bar> = ROWS
            .iter()
            .filter_map(|(row, label)| {
                let user = rows[*row]["proxy_user_us_per_request"].as_f64()?;
                let kernel = rows[*row]["proxy_kernel_us_per_request"].as_f64()?;
                Some(super::plot::Bar {
                    label: label.replace('`', ""),
                    segments: vec![
                        super::plot::Segment {
                            value: user,
                            series: 0,
                        },
                        super::plot::Segment {
                            value: kernel,
                            series: 1,
                        },
                    ],
                })
            })
            .collect();
        if bars.is_empty() {
            continue;
        }
        let title = format!("{name}: proxy CPU per {per}, lower is better");
        out.push((
            format!("l7-{key}.svg"),
            title.clone(),
            super::plot::horizontal_bars(&title, "µs", &["user", "kernel"], &bars),
        ));
    }
    out
}

/// What writing the access log costs each proxy: CPU per request with it, less without it,
/// and the CPU-per-request throughput kept (target ≥ 0.95×).
fn render_logging(md: &mut String, rows: &Value) {
    let cpu = |key: &str, field: &str| rows[key][field].as_f64();
    let lines: Vec<String> = LOGGED
        .iter()
        .filter_map(|(logged, plain, label)| {
            let on = cpu(logged, "proxy_cpu_us_per_request")?;
            let off = cpu(plain, "proxy_cpu_us_per_request")?;
            let user = cpu(logged, "proxy_user_us_per_request")?
                - cpu(plain, "proxy_user_us_per_request")?;
            let kept = off / on;
            let verdict = if kept >= LOGGING_TARGET {
                "met"
            } else {
                "missed"
            };
            Some(format!(
                "{label} {:+.2} µs per request ({user:+.2} µs user), throughput per core \
                 {kept:.3}× of logging off (target ≥ {LOGGING_TARGET}×: **{verdict}**)",
                on - off
            ))
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nWhat the access log costs (nginx's combined format into a file, buffered 64 KiB and \
         flushed every second, the same for both): {}.",
        lines.join("; ")
    );
}

/// The callgrind counts: user-space instructions per HTTP/1.1 keep-alive request, beside
/// nginx's. Unlike the CPU times above they do not move with the machine's load.
fn render_instructions(md: &mut String, raw: &Value) {
    let Some(counts) = raw["instructions"].as_object().filter(|c| !c.is_empty()) else {
        return;
    };
    let _ = writeln!(
        md,
        "\n### User-space instructions per request (callgrind)\n\n\
         HTTP/1.1 keep-alive, `h2load --h1 -c{}`: {} requests counted after as many to warm \
         up, in an instance of each proxy started for it (its bench config on another port; \
         nginx as one process). A count is the same on every run, where CPU time moves with \
         the machine's load; it leaves out the kernel's share and what cache misses cost.\n\n\
         | proxy | instructions per request | vs nginx |\n|---|---:|---:|",
        raw["instruction_connections"], raw["instruction_requests"]
    );
    let nginx = &counts.get("nginx").cloned().unwrap_or(Value::Null)["per_request"];
    for (target, row) in counts {
        let cell = match (row["per_request"].as_f64(), row["error"].as_str()) {
            (Some(count), _) => format!("{count:.0}"),
            (None, Some(error)) => format!("error: {}", one_line(&Value::from(error))),
            (None, None) => "–".into(),
        };
        let _ = writeln!(
            md,
            "| {target} | {cell} | {} |",
            ratio(&row["per_request"], nginx)
        );
    }
}

fn one_line(value: &Value) -> String {
    let text = value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string);
    let first = text.lines().next().unwrap_or("").trim();
    format!("`{}`", first.replace('|', "\\|").replace('`', "'"))
}

/// µs → "812 µs" or "1.23 ms".
fn latency(value: &Value) -> String {
    match value.as_f64() {
        None => "".into(),
        Some(us) if us < 1000.0 => format!("{us:.0} µs"),
        Some(us) if us < 100_000.0 => format!("{:.2} ms", us / 1000.0),
        Some(us) => format!("{:.0} ms", us / 1000.0),
    }
}

fn ratio(a: &Value, b: &Value) -> String {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

fn render_memory(md: &mut String, raw: &Value) {
    let memory = &raw["memory"];
    let requested = raw["idle_connections_requested"].as_u64().unwrap_or(0);
    let used = raw["idle_connections"].as_u64().unwrap_or(0);
    let _ = writeln!(
        md,
        "\n### Memory with {} idle keep-alive connections\n\n\
         Before any load, this driver opens the connections to each proxy's plain port in \
         turn ({} at a time); each sends one `GET /bench`, reads the response and stays open. \
         Resident memory (`VmRSS` of the proxy's processes: nginx's master and worker) is read \
         before and 1 s after; the connections are then reset, and as many are opened again \
         (\"second batch\": flat RSS means the first batch's memory was freed and reused; \
         growth means part of it could not be reused, or is still held). The backend, a bare \
         hyper server, is measured the same way for reference. Kernel memory (socket \
         buffers) is not in RSS.{}\n",
        group(used),
        100,
        if used < requested {
            format!(
                " The open-file hard limit here is {} and cannot be raised (no \
                 CAP_SYS_RESOURCE); HAProxy needs two descriptors per connection of its \
                 `maxconn` ({}) and refuses to start otherwise, so every proxy is measured \
                 with {} connections instead of {}.",
                group(raw["open_file_limit"].as_u64().unwrap_or(0)),
                group(raw["haproxy_maxconn"].as_u64().unwrap_or(0)),
                group(used),
                group(requested)
            )
        } else {
            String::new()
        }
    );
    if memory.as_object().is_none_or(|m| m.is_empty()) {
        let _ = writeln!(md, "Not measured.");
        return;
    }
    let _ = writeln!(
        md,
        "| | connections held | RSS before | RSS with them | per connection | RSS after closing \
         | RSS with a second batch |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let reference = [("direct", "direct: `l7_backend` (hyper alone, reference)")];
    for (key, label) in PROXIES.into_iter().chain(reference) {
        let row = &memory[key];
        if row.is_null() {
            continue;
        }
        if let Some(err) = row["error"].as_str() {
            let _ = writeln!(
                md,
                "| {label} | failed: {} | | | | | |",
                one_line(&Value::from(err))
            );
            continue;
        }
        let kib = |key: &str| kib_cell(row, key);
        let failed = row["failed"].as_u64().unwrap_or(0);
        let _ = writeln!(
            md,
            "| {label} | {}{} | {} | {} | **{:.2} KiB** | {} | {} |",
            group(row["connections"].as_u64().unwrap_or(0)),
            if failed > 0 {
                format!(" ({failed} failed: {})", one_line(&row["first_error"]))
            } else {
                String::new()
            },
            kib("rss_before_kib"),
            kib("rss_after_kib"),
            row["kib_per_connection"].as_f64().unwrap_or(0.0),
            kib("rss_after_close_kib"),
            kib("rss_with_second_batch_kib"),
        );
    }
    for (peer, label) in PEERS {
        let _ = writeln!(
            md,
            "| **balancer / {label}** | | | | **{}** | | |",
            ratio(
                &memory["balancer"]["kib_per_connection"],
                &memory[peer]["kib_per_connection"]
            )
        );
    }
    render_tls_memory(md, memory);
}

/// A memory figure of `row` as a table cell: grouped KiB, or `?` when missing.
fn kib_cell(row: &Value, key: &str) -> String {
    row[key]
        .as_u64()
        .map_or("?".into(), |v| format!("{} KiB", group(v)))
}

/// The same idle connections over TLS, beside each proxy's figure for plain ones.
fn render_tls_memory(md: &mut String, memory: &Value) {
    if PROXIES.iter().all(|(key, _)| memory[*key]["tls"].is_null()) {
        return;
    }
    let _ = writeln!(
        md,
        "
Then as many idle connections to each proxy's HTTPS port, opened the same way over \
         TLS: a full TLS 1.3 handshake (no resumption, ALPN http/1.1), one `GET /bench`, its \
         response, and the connection kept open. This driver then drops its own TLS state \
         without a `close_notify`, so each proxy still holds a live TLS connection (its keys \
         and whatever buffers it keeps while idle) for each.\n\n\
         | | TLS connections held | RSS before | RSS with them | per TLS connection | per plain \
         connection (above) | TLS / plain | RSS after closing |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (key, label) in PROXIES {
        let row = &memory[key]["tls"];
        if row.is_null() {
            continue;
        }
        if let Some(err) = row["error"].as_str() {
            let _ = writeln!(
                md,
                "| {label} | failed: {} | | | | | | |",
                one_line(&Value::from(err))
            );
            continue;
        }
        let kib = |key: &str| kib_cell(row, key);
        let failed = row["failed"].as_u64().unwrap_or(0);
        let plain = &memory[key]["kib_per_connection"];
        let _ = writeln!(
            md,
            "| {label} | {}{} | {} | {} | **{:.2} KiB** | {} | {} | {} |",
            group(row["connections"].as_u64().unwrap_or(0)),
            if failed > 0 {
                format!(" ({failed} failed: {})", one_line(&row["first_error"]))
            } else {
                String::new()
            },
            kib("rss_before_kib"),
            kib("rss_after_kib"),
            row["kib_per_connection"].as_f64().unwrap_or(0.0),
            plain
                .as_f64()
                .map_or(String::new(), |v| format!("{v:.2} KiB")),
            ratio(&row["kib_per_connection"], plain),
            kib("rss_after_close_kib"),
        );
    }
    for (peer, label) in PEERS {
        let _ = writeln!(
            md,
            "| **balancer / {label}** | | | | **{}** | | | |",
            ratio(
                &memory["balancer"]["tls"]["kib_per_connection"],
                &memory[peer]["tls"]["kib_per_connection"]
            )
        );
    }
}

fn render_targets(md: &mut String, raw: &Value) {
    let h1 = &raw["cases"]["http1_keepalive"];
    let rate = |t: &str| h1[t]["requests_per_second"].as_f64();
    let cpu = |t: &str| h1[t]["proxy_cpu_us_per_request"].as_f64();
    let p99 = |t: &str| h1[t]["p99_us"].as_f64();
    let memory = raw["memory"]["balancer"]["kib_per_connection"].as_f64();
    let _ = writeln!(
        md,
        "\n### Targets\n\n\
         | target | measured | met |\n|---|---|---|"
    );
    let mut row = |target: &str, measured: Option<(String, bool)>| {
        let (text, met) = match measured {
            Some((text, met)) => (text, if met { "yes" } else { "**no**" }),
            None => ("not measured".to_string(), "–"),
        };
        let _ = writeln!(md, "| {target} | {text} | {met} |");
    };
    for (peer, label, wanted) in [("nginx", "nginx", 1.2), ("haproxy", "HAProxy", 1.0)] {
        row(
            &format!("HTTP/1.1 keep-alive requests/s per core ≥ {wanted:.1}× {label}"),
            rate("balancer").zip(rate(peer)).map(|(b, p)| {
                let r = b / p;
                let per_cpu = cpu("balancer")
                    .zip(cpu(peer))
                    .map_or(String::new(), |(b, p)| {
                        format!("; per CPU-second of the proxy {:.2}×", p / b)
                    });
                (
                    format!(
                        "{r:.2}× ({} vs {} requests/s{per_cpu})",
                        group(b.round() as u64),
                        group(p.round() as u64)
                    ),
                    r >= wanted,
                )
            }),
        );
    }
    row(
        "HTTP/1.1 keep-alive p99 no worse than nginx",
        p99("balancer").zip(p99("nginx")).map(|(b, n)| {
            (
                format!(
                    "{:.2}× ({} vs {})",
                    b / n,
                    latency(&b.into()),
                    latency(&n.into())
                ),
                b <= n,
            )
        }),
    );
    row(
        &format!("≤ {MEMORY_TARGET_KIB:.0} KiB per idle keep-alive connection"),
        memory.map(|m| (format!("{m:.2} KiB"), m <= MEMORY_TARGET_KIB)),
    );
    let _ = writeln!(
        md,
        "\nMeasured, never asserted: a missed target does not fail the run. The p99s come from \
         the same closed-loop wrk runs (50 connections), so each proxy's is taken at its own \
         top rate; tails also reflect whatever else the machine scheduled on the cores."
    );
}

/// The default-config runs: requests/s and new upstream connections per 1000 requests at
/// 64 and at 1000 connections, balancer with a new user's config beside the bench configs.
fn render_default_config(md: &mut String, raw: &Value) {
    let cases = &raw["cases"];
    let seconds = raw["seconds_per_run"].as_u64().unwrap_or(0);
    let _ = writeln!(
        md,
        "\n### Default config: requests/s and new upstream connections (`wrk -t1 -c64` and \
         `-c1000`, {seconds} s, plain HTTP)\n\n\
         balancer as a new user starts it: the config below (a listener, a route, a pool of \
         one server; no keep-alive table, no limits, so its access log is on and goes to \
         stderr, here a file) and no environment but `RUST_LOG`'s default (`info`), beside \
         balancer, nginx and HAProxy with their bench configs (upstream keep-alive: balancer's \
         default pool, nginx `keepalive 1024`, HAProxy `http-reuse always`; no access log). Only `[admin] listen` differs from what a new user writes: the other \
         balancer holds the default address. Each run follows a warm-up of {} s at the same \
         number of connections, so the upstream connections that concurrency needs are \
         already open; \"new upstream connections\" are the ones the backend accepted during \
         the measured run (its `/stats`), per 1000 requests it answered in it, and for \
         balancer also its own count of connections it opened (`connections_opened`, \
         `/api/state`).\n\n```toml\n{}```\n",
        seconds.min(2),
        raw["default_config"].as_str().unwrap_or("(not reported)\n"),
    );
    if DEFAULT_CASES
        .iter()
        .all(|(key, _)| cases[*key].as_object().is_none_or(|m| m.is_empty()))
    {
        let _ = writeln!(md, "Not measured.");
        return;
    }
    let _ = writeln!(
        md,
        "| | connections | requests/s | p99 | errors | proxy CPU per request | of it user / \
         kernel | new upstream connections | per 1000 requests | balancer's own count |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (key, connections) in DEFAULT_CASES {
        let rows = &cases[key];
        for (target, label) in DEFAULT_ROWS {
            let row = &rows[target];
            if row.is_null() {
                continue;
            }
            if row["requests_per_second"].is_null() {
                let _ = writeln!(
                    md,
                    "| {label} | {connections} | failed: {} | | | | | | | |",
                    one_line(&row["first_failure"])
                );
                continue;
            }
            let count = |field: &str| {
                row[field]
                    .as_f64()
                    .map_or(String::new(), |v| group(v.round() as u64))
            };
            let per_1000 = |field: &str| {
                row[field]
                    .as_f64()
                    .map_or(String::new(), |v| format!("{v:.2}"))
            };
            let own = if row["balancer_connections_opened"].is_null() {
                String::new()
            } else {
                format!(
                    "{} ({} per 1000)",
                    count("balancer_connections_opened"),
                    per_1000("balancer_connections_opened_per_1000_requests")
                )
            };
            let _ = writeln!(
                md,
                "| {label} | {connections} | {} | {} | {} | {} | {} | {} | **{}** | {own} |",
                count("requests_per_second"),
                latency(&row["p99_us"]),
                errors(row),
                row["proxy_cpu_us_per_request"]
                    .as_f64()
                    .map_or(String::new(), |v| format!("{v:.1} µs")),
                cpu_split(row).unwrap_or_default(),
                count("new_upstream_connections"),
                per_1000("upstream_connections_per_1000_requests"),
            );
        }
        for (peer, label) in PEERS.into_iter().filter(|(peer, _)| !rows[*peer].is_null()) {
            let _ = writeln!(
                md,
                "| **default config / {label}** | {connections} | **{}** | {} | | {} | | | | |",
                ratio(
                    &rows["balancer_default"]["requests_per_second"],
                    &rows[peer]["requests_per_second"]
                ),
                ratio(&rows["balancer_default"]["p99_us"], &rows[peer]["p99_us"]),
                ratio(
                    &rows["balancer_default"]["proxy_cpu_us_per_request"],
                    &rows[peer]["proxy_cpu_us_per_request"]
                ),
            );
        }
    }
}

/// A ratio to two decimals, or to as many more (up to four) as it takes not to round it onto
/// its target: a 0.9995× shown as "1.00×" beside "missed" would read as a contradiction.
fn against(ratio: f64, target: f64) -> String {
    let digits = (2..4)
        .find(|&d| ratio == target || format!("{ratio:.d$}") != format!("{target:.d$}"))
        .unwrap_or(4);
    format!("{ratio:.digits$}×")
}

/// "1.2 / 3.4 µs": user and kernel CPU time per request of a load row.
fn cpu_split(row: &Value) -> Option<String> {
    let user = row["proxy_user_us_per_request"].as_f64()?;
    let kernel = row["proxy_kernel_us_per_request"].as_f64()?;
    Some(format!("{user:.1} / {kernel:.1} µs"))
}

/// A load row's error count, bold when not zero, with the runs that failed.
fn errors(row: &Value) -> String {
    let errors = row["errors"].as_u64().unwrap_or(0);
    let failed_runs = row["failed_runs"].as_u64().unwrap_or(0);
    if failed_runs > 0 {
        format!("**{errors}** ({failed_runs} runs failed)")
    } else if errors > 0 {
        format!("**{}**", group(errors))
    } else {
        "0".into()
    }
}

/// The targets of the L7 engine issue (HTTP/1.1 engine of our own), each met or missed with
/// the measured ratio and, where it is about CPU, the user / kernel split behind it.
fn render_engine_targets(md: &mut String, raw: &Value) {
    let cases = &raw["cases"];
    let h1 = &cases["http1_keepalive"];
    let num = |rows: &Value, target: &str, field: &str| rows[target][field].as_f64();
    let split = |rows: &Value, target: &str, label: &str| {
        cpu_split(&rows[target]).map_or(String::new(), |s| format!("{label} {s}"))
    };
    let splits = |rows: &Value, peer: &str, label: &str| {
        [
            split(rows, "balancer", "balancer"),
            split(rows, peer, label),
        ]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
    };
    let _ = writeln!(
        md,
        "\n### Targets (L7 engine issue)\n\n\
         | target | measured | user / kernel CPU per request | met |\n|---|---|---|---|"
    );
    let mut row = |target: String, measured: Option<(String, bool)>, split: String| {
        let (text, met) = match measured {
            Some((text, met)) => (text, if met { "met" } else { "**missed**" }),
            None => ("not measured".to_string(), "–"),
        };
        let _ = writeln!(md, "| {target} | {text} | {split} | {met} |");
    };

    // HTTP/1.1 keep-alive, plain: CPU per request against the peers'.
    row(
        format!("HTTP/1.1 keep-alive: proxy user CPU per request ≤ {ENGINE_USER_CPU}× nginx's"),
        num(h1, "balancer", "proxy_user_us_per_request")
            .zip(num(h1, "nginx", "proxy_user_us_per_request"))
            .map(|(b, n)| {
                (
                    format!("{} ({b:.1} vs {n:.1} µs)", against(b / n, ENGINE_USER_CPU)),
                    b / n <= ENGINE_USER_CPU,
                )
            }),
        splits(h1, "nginx", "nginx"),
    );
    row(
        format!(
            "HTTP/1.1 keep-alive: total CPU per request ≤ {ENGINE_CPU:.1}× nginx's \
             (requests/s per core ≥ {ENGINE_CPU:.1}× nginx)"
        ),
        num(h1, "balancer", "proxy_cpu_us_per_request")
            .zip(num(h1, "nginx", "proxy_cpu_us_per_request"))
            .map(|(b, n)| {
                (
                    format!(
                        "{} ({b:.1} vs {n:.1} µs; per core {:.2}×)",
                        against(b / n, ENGINE_CPU),
                        n / b
                    ),
                    b / n <= ENGINE_CPU,
                )
            }),
        splits(h1, "nginx", "nginx"),
    );
    row(
        format!("HTTP/1.1 keep-alive: requests/s per core ≥ {ENGINE_PER_CORE_HAPROXY}× HAProxy"),
        num(h1, "balancer", "proxy_cpu_us_per_request")
            .zip(num(h1, "haproxy", "proxy_cpu_us_per_request"))
            .map(|(b, h)| {
                (
                    format!(
                        "{} ({b:.1} vs {h:.1} µs per request)",
                        against(h / b, ENGINE_PER_CORE_HAPROXY)
                    ),
                    h / b >= ENGINE_PER_CORE_HAPROXY,
                )
            }),
        splits(h1, "haproxy", "HAProxy"),
    );
    row(
        "HTTP/1.1 keep-alive: p99 ≤ nginx's".to_string(),
        num(h1, "balancer", "p99_us")
            .zip(num(h1, "nginx", "p99_us"))
            .map(|(b, n)| {
                (
                    format!(
                        "{:.2}× ({} vs {})",
                        b / n,
                        latency(&b.into()),
                        latency(&n.into())
                    ),
                    b <= n,
                )
            }),
        String::new(),
    );

    // Requests/s over TLS against the peers'.
    let tls_rate = |key: &str, peer: &str, wanted: f64| {
        let rows = &cases[key];
        num(rows, "balancer", "requests_per_second")
            .zip(num(rows, peer, "requests_per_second"))
            .map(|(b, p)| {
                let per_core = num(rows, "balancer", "proxy_cpu_us_per_request")
                    .zip(num(rows, peer, "proxy_cpu_us_per_request"))
                    .map_or(String::new(), |(bc, pc)| {
                        format!("; per core {:.2}×", pc / bc)
                    });
                (
                    format!(
                        "{} ({} vs {} requests/s{per_core})",
                        against(b / p, wanted),
                        group(b.round() as u64),
                        group(p.round() as u64)
                    ),
                    b / p >= wanted,
                )
            })
    };
    for (key, name, peer, label, wanted) in [
        (
            "http1_tls_keepalive",
            "HTTP/1.1 keep-alive over TLS",
            "nginx",
            "nginx",
            ENGINE_TLS_HTTP1_NGINX,
        ),
        ("h2", "h2 over TLS", "haproxy", "HAProxy", ENGINE_H2_HAPROXY),
        ("h2", "h2 over TLS", "nginx", "nginx", ENGINE_H2_NGINX),
    ] {
        row(
            format!("{name}: requests/s ≥ {wanted:.1}× {label}"),
            tls_rate(key, peer, wanted),
            splits(&cases[key], peer, label),
        );
    }

    // Idle keep-alive memory.
    let memory = &raw["memory"];
    row(
        format!("Idle keep-alive memory ≤ {ENGINE_PLAIN_KIB} KiB per plain connection"),
        memory["balancer"]["kib_per_connection"]
            .as_f64()
            .map(|m| (format!("{m:.2} KiB"), m <= ENGINE_PLAIN_KIB)),
        String::new(),
    );
    row(
        format!("Idle keep-alive memory per TLS connection ≤ {ENGINE_TLS_MEMORY_NGINX}× nginx's"),
        memory["balancer"]["tls"]["kib_per_connection"]
            .as_f64()
            .zip(memory["nginx"]["tls"]["kib_per_connection"].as_f64())
            .map(|(b, n)| {
                (
                    format!(
                        "{} ({b:.2} vs {n:.2} KiB)",
                        against(b / n, ENGINE_TLS_MEMORY_NGINX)
                    ),
                    b <= ENGINE_TLS_MEMORY_NGINX * n,
                )
            }),
        String::new(),
    );

    // Upstream connection reuse with the default config.
    for (key, connections) in DEFAULT_CASES {
        let rows = &cases[key];
        row(
            format!(
                "Default config, {connections} connections: ≤ {ENGINE_NEW_UPSTREAM_PER_1000:.0} \
                 new upstream connection per 1000 requests"
            ),
            num(
                rows,
                "balancer_default",
                "upstream_connections_per_1000_requests",
            )
            .map(|n| {
                let rate = num(rows, "balancer_default", "requests_per_second")
                    .zip(num(rows, "nginx", "requests_per_second"))
                    .map_or(String::new(), |(b, p)| {
                        format!("; requests/s {:.2}× nginx", b / p)
                    });
                (
                    format!(
                        "{n:.2} ({} new for {} requests{rate})",
                        group(
                            num(rows, "balancer_default", "new_upstream_connections").unwrap_or(0.0)
                                as u64
                        ),
                        group(
                            num(rows, "balancer_default", "backend_requests").unwrap_or(0.0) as u64
                        ),
                    ),
                    n <= ENGINE_NEW_UPSTREAM_PER_1000,
                )
            }),
            split(rows, "balancer_default", "default config"),
        );
    }
    let _ = writeln!(
        md,
        "\nMeasured, never asserted, like the table above. \"Per core\" is the inverse ratio of \
         the proxies' CPU time per request (each is pinned to one core): the rate each would \
         sustain on a core of its own. The CPU split column is each proxy's user / kernel time \
         per request in the same runs."
    );
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn renders_a_minimal_document() {
        let row = |rps: f64, p99: f64| {
            json!({
                "requests_per_second": rps, "p50_us": 500.0, "p99_us": p99, "errors": 0,
                "failed_runs": 0, "proxy_cpu_us_per_request": 1e6 / rps,
                "proxy_user_us_per_request": 4.0, "proxy_kernel_us_per_request": 1e6 / rps - 4.0,
                "proxy_core_busy": 0.99,
            })
        };
        let raw = json!({
            "proxy_cpu": 1, "load_cpu": 0, "cpus": 2, "nice": -10, "rounds": 1, "seconds_per_run": 3,
            "wrk_connections": 50, "wrk_tls_connections": 20, "h2_connections": 10,
            "h2_streams_per_connection": 10, "idle_connections": 9850,
            "idle_connections_requested": 10000, "open_file_limit": 20000, "haproxy_maxconn": 9950,
            "tools": {}, "checks": {}, "failures": {"haproxy": "did not start: boom"}, "logs": {},
            "tls_resumption": {"nginx": {"resumed": true}},
            "cases": {"http1_keepalive": {
                "direct": row(60000.0, 900.0),
                "relay": row(50000.0, 600.0),
                "balancer": row(30000.0, 1500.0),
                "nginx": row(25000.0, 2000.0),
            }},
            "memory": {"balancer": {"connections": 9850, "failed": 0, "rss_before_kib": 10000,
                "rss_after_kib": 60000, "kib_per_connection": 5.07, "rss_after_close_kib": 20000}},
            "instruction_requests": 5000, "instruction_connections": 10,
            "instructions": {"balancer": {"instructions": 164_150_000u64, "per_request": 32830.0},
                "nginx": {"instructions": 88_830_000u64, "per_request": 17766.0}},
        });
        let mut md = String::new();
        render(&mut md, &raw).unwrap();
        assert!(
            md.contains("`h2load --h1 -c10`: 5000 requests counted"),
            "{md}"
        );
        assert!(md.contains("| balancer | 32830 | 1.85× |"), "{md}");
        assert!(md.contains("| nginx | 17766 | 1.00× |"), "{md}");
        assert!(md.contains("| **balancer / nginx** | **1.20×** |"), "{md}");
        assert!(
            md.contains("| balancer | 30 000 | 500 µs | 1.50 ms | 0 | 33.3 µs | 4.0 / 29.3 µs |"),
            "{md}"
        );
        assert!(
            md.contains("the floor costs 20.0 µs of CPU per request, 16.0 µs of it in the kernel"),
            "{md}"
        );
        assert!(
            md.contains(
                "Above the floor: balancer +13.3 µs (4.0 µs of user time), nginx +20.0 µs (4.0 µs \
                 of user time). 1.2× nginx's rate per core is 33.3 µs per request, which leaves \
                 13.3 µs above the floor"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "≥ 1.2× nginx | 1.20× (30 000 vs 25 000 requests/s; per CPU-second of the \
                 proxy 1.20×) | yes |"
            ),
            "{md}"
        );
        assert!(
            md.contains("p99 no worse than nginx | 0.75× (1.50 ms vs 2.00 ms) | yes |"),
            "{md}"
        );
        assert!(md.contains("≥ 1.0× HAProxy | not measured | – |"), "{md}");
        assert!(md.contains("**5.07 KiB**"), "{md}");
        assert!(
            md.contains("**haproxy failed**: `did not start: boom`"),
            "{md}"
        );
        assert!(
            md.contains("with 9 850 connections instead of 10 000"),
            "{md}"
        );
    }

    #[test]
    fn renders_the_engine_targets() {
        let row = |rps: f64, cpu: f64, user: f64| {
            json!({
                "requests_per_second": rps, "p50_us": 400.0, "p99_us": 1e6 / rps, "errors": 0,
                "failed_runs": 0, "proxy_cpu_us_per_request": cpu,
                "proxy_user_us_per_request": user, "proxy_kernel_us_per_request": cpu - user,
            })
        };
        let default_row = |rps: f64, new: f64, requests: f64| {
            let mut r = row(rps, 20.0, 5.0);
            r["new_upstream_connections"] = json!(new);
            r["backend_requests"] = json!(requests);
            r["upstream_connections_per_1000_requests"] = json!(new * 1000.0 / requests);
            r
        };
        let memory = |plain: f64, tls: f64| {
            json!({"connections": 1000, "failed": 0, "rss_before_kib": 1000,
                "rss_after_kib": 1000 + (plain * 1000.0) as u64, "kib_per_connection": plain,
                "tls": {"connections": 1000, "failed": 0, "rss_before_kib": 2000,
                    "rss_after_kib": 2000 + (tls * 1000.0) as u64, "kib_per_connection": tls}})
        };
        let mut c1000 = json!({
            "balancer_default": default_row(30000.0, 150.0, 90000.0),
            "nginx": default_row(25000.0, 9000.0, 75000.0),
        });
        c1000["balancer_default"]["balancer_connections_opened"] = json!(150.0);
        c1000["balancer_default"]["balancer_connections_opened_per_1000_requests"] =
            json!(150.0 / 90.0);
        let raw = json!({
            "proxy_cpu": 1, "seconds_per_run": 5, "wrk_connections": 50,
            "default_config": "[[listener]]\nname = \"web\"\n",
            "cases": {
                "http1_keepalive": {
                    "balancer": row(40000.0, 20.0, 6.0),
                    "nginx": row(36000.0, 25.0, 10.0),
                    "haproxy": row(30000.0, 24.0, 9.0),
                },
                "http1_tls_keepalive": {
                    "balancer": row(30000.0, 30.0, 12.0),
                    "nginx": row(27000.0, 33.0, 15.0),
                },
                "h2": {
                    "balancer": row(50000.0, 18.0, 12.0),
                    "haproxy": row(45000.0, 20.0, 13.0),
                    "nginx": row(40000.0, 22.0, 14.0),
                },
                "default_config_c64": {"balancer_default": default_row(35000.0, 0.0, 100000.0)},
                "default_config_c1000": c1000,
            },
            "memory": {"balancer": memory(1.2, 30.0), "nginx": memory(2.5, 25.0)},
        });
        let mut md = String::new();
        render_default_config(&mut md, &raw);
        render_memory(&mut md, &raw);
        render_engine_targets(&mut md, &raw);
        for expected in [
            "```toml\n[[listener]]\nname = \"web\"\n```",
            "| balancer, **default config** | 64 | 35 000 | 29 µs | 0 | 20.0 µs | 5.0 / 15.0 µs \
             | 0 | **0.00** |  |",
            "| balancer, **default config** | 1000 | 30 000 | 33 µs | 0 | 20.0 µs | 5.0 / 15.0 \
             µs | 150 | **1.67** | 150 (1.67 per 1000) |",
            "| **default config / nginx** | 1000 | **1.20×** | 0.83× | | 1.00× |",
            "| 1000 | 25 000 | 40 µs | 0 | 20.0 µs | 5.0 / 15.0 µs | 9 000 | **120.00** |  |",
            "| balancer | 1 000 | 2 000 KiB | 32 000 KiB | **30.00 KiB** | 1.20 KiB | 25.00× |",
            "| **balancer / nginx** | | | | **1.20×** | | | |",
            "| HTTP/1.1 keep-alive: proxy user CPU per request ≤ 0.8× nginx's | 0.60× (6.0 vs \
             10.0 µs) | balancer 6.0 / 14.0 µs; nginx 10.0 / 15.0 µs | met |",
            "total CPU per request ≤ 1.0× nginx's (requests/s per core ≥ 1.0× nginx) | 0.80× \
             (20.0 vs 25.0 µs; per core 1.25×) |",
            "requests/s per core ≥ 1.15× HAProxy | 1.20× (20.0 vs 24.0 µs per request) |",
            "| HTTP/1.1 keep-alive over TLS: requests/s ≥ 1.2× nginx | 1.11× (30 000 vs 27 000 \
             requests/s; per core 1.10×) | balancer 12.0 / 18.0 µs; nginx 15.0 / 18.0 µs | \
             **missed** |",
            "| h2 over TLS: requests/s ≥ 1.0× HAProxy | 1.11× (50 000 vs 45 000 requests/s; per \
             core 1.11×) |",
            "| h2 over TLS: requests/s ≥ 1.2× nginx | 1.25× (",
            "≤ 1.5 KiB per plain connection | 1.20 KiB |  | met |",
            "per TLS connection ≤ 1.5× nginx's | 1.20× (30.00 vs 25.00 KiB) |  | met |",
            "| Default config, 64 connections: ≤ 1 new upstream connection per 1000 requests | \
             0.00 (0 new for 100 000 requests) | default config 5.0 / 15.0 µs | met |",
            "| Default config, 1000 connections: ≤ 1 new upstream connection per 1000 requests | \
             1.67 (150 new for 90 000 requests; requests/s 1.20× nginx) |",
        ] {
            assert!(md.contains(expected), "{expected}\n\n{md}");
        }
    }

    #[test]
    fn shows_a_third_decimal_only_next_to_the_target() {
        assert_eq!(against(0.999497, 1.0), "0.999×");
        assert_eq!(against(0.99996, 1.0), "1.0000×");
        assert_eq!(against(0.9949, 1.0), "0.99×");
        assert_eq!(against(1.0, 1.0), "1.00×");
        assert_eq!(against(1.151, 1.15), "1.151×");
        assert_eq!(against(1.2, 1.15), "1.20×");
    }

    #[test]
    fn says_when_the_budget_is_below_the_floor() {
        let row =
            |cpu: f64| json!({"proxy_cpu_us_per_request": cpu, "proxy_user_us_per_request": 1.0});
        let rows = json!({"relay": row(14.7), "nginx": row(16.7), "balancer": row(22.4)});
        let mut md = String::new();
        render_floor(&mut md, &rows);
        assert!(
            md.contains(
                "1.2× nginx's rate per core is 13.9 µs per request, 0.8 µs below the floor \
                 itself: not even the relay reaches it"
            ),
            "{md}"
        );
    }

    #[test]
    fn shortens_versions() {
        let v = |tool, line| short_version(tool, line);
        assert_eq!(
            v(
                "wrk",
                "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer"
            ),
            "wrk debian/4.1.0-3+b2"
        );
        assert_eq!(v("nginx", "nginx version: nginx/1.22.1"), "nginx/1.22.1");
        assert_eq!(
            v(
                "haproxy",
                "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"
            ),
            "HAProxy 2.6.12-1+deb12u4"
        );
        assert_eq!(
            v("openssl", "OpenSSL 3.0.19 27 Jan 2026 (Library: …)"),
            "OpenSSL 3.0.19"
        );
        assert_eq!(
            v("h2load", "h2load nghttp2/1.52.0"),
            "h2load nghttp2/1.52.0"
        );
    }
}
