//! `bench_protect`: what protecting the app servers costs and buys, side by side with nginx,
//! for `cargo xtask bench` (its JSON on stdout becomes the report's section).
//!
//! - **Slow clients:** gunicorn with 2 sync workers serving the Django acceptance app; 10
//!   clients upload 4 KiB at 100 bytes/s while a normal client asks `/healthz/` every 100 ms.
//!   How long the normal requests wait, through balancer (default config) and through nginx
//!   (its defaults buffer bodies too) side by side, the normal client taking turns between
//!   them; then through balancer with `request_buffering = false`.
//! - **Uploads of 1 MB:** `wrk -c50` POSTing 1 MB bodies through balancer, buffered (the
//!   default) and streamed: requests/s and the process's peak RSS.
//! - **Memory under 200 concurrent 5 MB uploads and downloads** (buffered): the peak RSS
//!   growth, next to what `body_buffer` and `response_buffer` allow.
//!
//! Everything runs in a namespace of its own, torn down at the end.

use std::{
    process::{Command, ExitCode},
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use balancer_tests::{
    Backend, BalancerProcess, Client, L7Net, Nginx, Request,
    django::{DjangoSite, SiteSettings, Workers},
    slow_clients::{Crowd, slow_upload},
};
use clap::Parser;
use serde_json::{Value, json};

const PUBLIC_HOST: &str = "www.example.test";
const LISTEN_IP: &str = "198.18.0.1";
const BALANCER: &str = "198.18.0.1:8080";
const NGINX: &str = "198.18.0.1:8081";
const BACKEND_IP: &str = "198.18.1.1";
const GUNICORN: &str = "198.18.1.1:8001";
const L7_BACKEND: &str = "198.18.1.1:8002";
/// `body_buffer` and `response_buffer` defaults, KiB.
const BODY_BUFFER_KIB: u64 = 64;
const RESPONSE_BUFFER_KIB: u64 = 256;

/// What protecting the app servers costs and buys (see the module doc).
#[derive(Parser)]
#[command(name = "bench_protect", args_override_self = true)]
struct Args {
    /// Shorter measurements.
    #[arg(long)]
    quick: bool,
}

fn main() -> ExitCode {
    let quick = Args::parse().quick;
    match run(quick) {
        Ok(result) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&result).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench_protect: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(quick: bool) -> anyhow::Result<Value> {
    let net = L7Net::new("bench-protect")?;
    for address in [LISTEN_IP, BACKEND_IP] {
        net.ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"])?;
    }
    let slow = slow_clients(&net, quick).context("slow clients")?;
    let uploads = uploads(&net, quick).context("1 MB uploads")?;
    let memory = memory(&net, quick).context("memory under 200 concurrent bodies")?;
    Ok(json!({
        "slow_clients": slow,
        "uploads": uploads,
        "memory": memory,
    }))
}

// ---- Slow clients ------------------------------------------------------------------------

fn slow_clients(net: &L7Net, quick: bool) -> anyhow::Result<Value> {
    let site = DjangoSite::create(SiteSettings {
        public_host: PUBLIC_HOST.into(),
        public_origin: format!("http://{PUBLIC_HOST}"),
        trusted_proxies: vec![BACKEND_IP.into()],
    })?;
    let gunicorn = site.start_backend_with(net, "a", &[GUNICORN], Workers::Sync(2))?;
    let span = Duration::from_secs(if quick { 4 } else { 10 });
    // Warm the workers first (Django's first requests in a worker import and connect): the
    // first proxy measured must not pay for it.
    let direct = Client::tcp(net, GUNICORN).timeout(Duration::from_secs(5));
    for _ in 0..20 {
        direct.send(&Request::get("/healthz/").host(PUBLIC_HOST))?;
    }
    let mut runs = serde_json::Map::new();
    let balancer_config = |route_keys: &str| {
        format!(
            "[[listener]]\nname = \"web\"\nbind = \"{BALANCER}\"\n[[route]]\npool = \"django\"\n{route_keys}\n\
             [pool.django]\nservers = [{{ url = \"{}\" }}]\n",
            gunicorn.url()
        )
    };
    // balancer and nginx run side by side, each with its own slow uploaders, and the normal
    // client takes turns between them: both are measured under the same machine load at the
    // same moments (on 2 shared CPUs, one after the other would compare two different
    // machines). Both buffer the uploads, so gunicorn sees only the normal requests.
    let balancer = net.start_balancer(&balancer_config(""))?;
    // nginx as gunicorn's deployment guide configures it: its defaults buffer bodies too, and
    // the app gets the client's address and scheme as it does through balancer.
    let nginx = Nginx::start(
        net,
        &format!(
            "server {{ listen {NGINX}; location / {{ proxy_pass http://{GUNICORN}; \
             proxy_set_header Host $http_host; \
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; \
             proxy_set_header X-Forwarded-Proto $scheme; proxy_redirect off; }} }}"
        ),
    )?;
    let [through_balancer, through_nginx] = waits_under_slow_uploads(net, [BALANCER, NGINX], span)?;
    runs.insert("balancer".into(), through_balancer);
    runs.insert("nginx".into(), through_nginx);
    drop(nginx);
    drop(balancer);
    // Last: streamed uploads leave the workers busy until their clients are gone.
    let balancer = net.start_balancer(&balancer_config("request_buffering = false"))?;
    let [streamed] = waits_under_slow_uploads(net, [BALANCER], span)?;
    runs.insert("balancer_streamed".into(), streamed);
    drop(balancer);
    drop(gunicorn);
    Ok(json!({
        "workers": 2,
        "slow_uploads": 10,
        "upload_bytes": 4096,
        "upload_rate_bytes_per_s": 100,
        "seconds": span.as_secs(),
        "interleaved": true,
        "runs": runs,
    }))
}

/// 10 slow uploads to each proxy in `addrs`, and meanwhile a normal client's GET /healthz/
/// every 100 ms, to each proxy in turn: their times (ms) and failures, per proxy.
fn waits_under_slow_uploads<const N: usize>(
    net: &L7Net,
    addrs: [&str; N],
    span: Duration,
) -> anyhow::Result<[Value; N]> {
    let crowds: Vec<Crowd> = addrs
        .iter()
        .map(|addr| {
            Crowd::start(net, addr, 10, |stream, stop: &AtomicBool| {
                slow_upload(stream, stop, PUBLIC_HOST)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let clients = addrs.map(|addr| Client::tcp(net, addr).timeout(Duration::from_secs(5)));
    let started = Instant::now();
    let mut times: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
    let mut failed = [0u64; N];
    let mut round = 0;
    while started.elapsed() < span {
        // Alternate which goes first, so neither always follows the other.
        for step in 0..N {
            let which = if round % 2 == 0 { step } else { N - 1 - step };
            let sent = Instant::now();
            match clients[which].send(&Request::get("/healthz/").host(PUBLIC_HOST)) {
                Ok(reply) if reply.status == 200 => {
                    times[which].push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                _ => failed[which] += 1,
            }
            std::thread::sleep(Duration::from_millis(100) / N as u32);
        }
        round += 1;
    }
    drop(crowds);
    Ok(std::array::from_fn(|which| {
        let times = &mut times[which];
        times.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            times
                .get(((times.len() as f64 - 1.0) * q).round() as usize)
                .copied()
        };
        json!({
            "requests": times.len() as u64 + failed[which],
            "failed": failed[which],
            "p50_ms": pick(0.5),
            "p99_ms": pick(0.99),
            "max_ms": times.last().copied(),
        })
    }))
}

// ---- Uploads -----------------------------------------------------------------------------

fn uploads(net: &L7Net, quick: bool) -> anyhow::Result<Value> {
    let backend = Backend::start(net, "sink", &[L7_BACKEND])?;
    let seconds = if quick { 3 } else { 10 };
    let script = net.dir().join("post.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", 1048576)\n\
         wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n",
    )?;
    let mut runs = serde_json::Map::new();
    for (key, route_keys) in [("buffered", ""), ("streamed", "request_buffering = false")] {
        let balancer = start_balancer(net, &backend.url(), route_keys)?;
        let pid = balancer.pid().context("balancer pid")?;
        let before = status_kib(pid, "VmRSS:")?;
        let wrk = wrk(net, &script, 50, seconds, "/sink")?;
        let peak = status_kib(pid, "VmHWM:")?;
        runs.insert(
            key.into(),
            json!({
                "requests_per_s": wrk.requests_per_s,
                "errors": wrk.errors,
                "rss_before_kib": before,
                "peak_rss_kib": peak,
            }),
        );
        drop(balancer);
    }
    Ok(json!({ "body_bytes": 1_048_576, "connections": 50, "seconds": seconds, "runs": runs }))
}

// ---- Memory ------------------------------------------------------------------------------

fn memory(net: &L7Net, quick: bool) -> anyhow::Result<Value> {
    let backend = Backend::start(net, "mem", &["198.18.1.1:8003"])?;
    let seconds = if quick { 3 } else { 8 };
    let script = net.dir().join("post5.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", 5242880)\n",
    )?;
    let mut runs = serde_json::Map::new();
    for (key, path, script) in [
        ("uploads", "/sink", Some(&script)),
        ("downloads", "/bytes/5242880", None),
    ] {
        let balancer = start_balancer(net, &backend.url(), "")?;
        let pid = balancer.pid().context("balancer pid")?;
        let before = status_kib(pid, "VmRSS:")?;
        let wrk = match script {
            Some(script) => wrk(net, script, 200, seconds, path)?,
            None => wrk_get(net, 200, seconds, path)?,
        };
        let peak = status_kib(pid, "VmHWM:")?;
        let allowed = 200
            * if key == "uploads" {
                BODY_BUFFER_KIB
            } else {
                RESPONSE_BUFFER_KIB
            };
        runs.insert(
            key.into(),
            json!({
                "requests_per_s": wrk.requests_per_s,
                "errors": wrk.errors,
                "rss_before_kib": before,
                "peak_rss_kib": peak,
                "growth_kib": peak.saturating_sub(before),
                "buffers_allow_kib": allowed,
            }),
        );
        drop(balancer);
    }
    Ok(json!({ "connections": 200, "body_bytes": 5_242_880, "seconds": seconds, "runs": runs }))
}

// ---- Parts -------------------------------------------------------------------------------

fn start_balancer(net: &L7Net, url: &str, route_keys: &str) -> anyhow::Result<BalancerProcess> {
    net.start_balancer(&format!(
        "[proxy]\nworkers = 1\n[[listener]]\nname = \"web\"\nbind = \"{BALANCER}\"\n\
         max_connections = 1000\n[[route]]\npool = \"app\"\nmax_body_size = \"64MiB\"\n{route_keys}\n\
         [pool.app]\nservers = [{{ url = \"{url}\" }}]\n"
    ))
}

struct WrkResult {
    requests_per_s: f64,
    errors: u64,
}

fn wrk(
    net: &L7Net,
    script: &std::path::Path,
    connections: u32,
    seconds: u32,
    path: &str,
) -> anyhow::Result<WrkResult> {
    let script = script.display().to_string();
    run_wrk(net, &["-s", &script], connections, seconds, path)
}

fn wrk_get(net: &L7Net, connections: u32, seconds: u32, path: &str) -> anyhow::Result<WrkResult> {
    run_wrk(net, &[], connections, seconds, path)
}

fn run_wrk(
    net: &L7Net,
    extra: &[&str],
    connections: u32,
    seconds: u32,
    path: &str,
) -> anyhow::Result<WrkResult> {
    let url = format!("http://{BALANCER}{path}");
    let output = Command::new("ip")
        .args(["netns", "exec", net.name(), "wrk", "-t2"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "10s", "-H", "Host: app.test"])
        .args(extra)
        .arg(&url)
        .output()
        .context("running wrk (Debian package wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let requests_per_s = text
        .lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))?;
    // "Non-2xx or 3xx responses: N" and "Socket errors: connect A, read B, write C, timeout D".
    let mut errors = 0;
    for line in text.lines() {
        if let Some(count) = line.trim().strip_prefix("Non-2xx or 3xx responses:") {
            errors += count.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(counts) = line.trim().strip_prefix("Socket errors:") {
            errors += counts
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Ok(WrkResult {
        requests_per_s,
        errors,
    })
}

/// A `/proc/PID/status` line in KiB (`VmRSS:`, `VmHWM:` the peak).
fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}
