//! The L7 part of the demo: an HTTPS listener (SNI certificate, h2 and http/1.1) in front of
//! the demo backends, routing by prefix and host, a unix-socket server, static files, the
//! plain listener's redirect to https, a WebSocket through the proxy, and what the backends saw.

use std::collections::BTreeMap;

use anyhow::{Context, ensure};
use balancer_tests::{Backend, Certs, L7Net, TlsOptions, curl, websocket_echo};

const ADMIN: &str = "127.0.0.1:9100";
/// The address the header demo's "trusted proxy" sends from.
const TRUSTED_PROXY: &str = "198.18.5.2";

/// The forwarded headers a backend shows in the header demo, in this order.
const SHOWN_HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "forwarded",
    "x-real-ip",
    "remote-user",
    "x_forwarded_for",
    "authorization",
    "x-request-id",
];

pub fn run() -> anyhow::Result<()> {
    println!("\n== L7: the HTTPS proxy ==");
    let net = L7Net::new("demo")?;
    let certs = Certs::new()?;
    let site = certs.issue("site", &["www.example.test", "*.example.test"])?;
    let app1 = Backend::start(&net, "app-1", &["127.0.0.1:8001"])?;
    let app2 = Backend::start(&net, "app-2", &["127.0.0.1:8002"])?;
    let api_socket = net.dir().join("api.sock");
    let api = Backend::start(&net, "api-1", &[&format!("unix:{}", api_socket.display())])?;
    let static_dir = net.dir().join("static");
    std::fs::create_dir_all(&static_dir)?;
    std::fs::write(
        static_dir.join("index.html"),
        "<h1>static, served by balancer</h1>\n",
    )?;

    let config = format!(
        r#"[admin]
listen = "{ADMIN}"

[[listener]]
name = "https"
bind = "127.0.0.1:443"
tls = {{ certificates = [ {site} ] }}
trusted_proxies = ["{TRUSTED_PROXY}"]
trusted_headers = ["X-Forwarded-For", "X-Forwarded-Proto"]
allowed_hosts = ["www.example.test", "api.example.test"]

[[listener]]
name = "http"
bind = "127.0.0.1:80"
redirect_https = true

[[route]]
name = "app"
listener = "https"
host = "www.example.test"
path = "/app/"
strip_prefix = true
pool = "app"

[[route]]
name = "static"
listener = "https"
host = "www.example.test"
path = "/static/"
strip_prefix = true
static_dir = "{static_dir}"

[[route]]
name = "api"
listener = "https"
host = "api.example.test"
pool = "api"

[pool.app]
balance = "round-robin"
servers = [ {{ url = "{app1}", weight = 1 }}, {{ url = "{app2}", weight = 2 }} ]

[pool.api]
servers = [ {{ url = "{api}" }} ]
"#,
        site = site.toml(),
        static_dir = static_dir.display(),
        app1 = app1.url(),
        app2 = app2.url(),
        api = api.url(),
    );
    println!(
        "  config: listeners https (127.0.0.1:443, SNI cert for www/*.example.test) and http (:80, redirect_https)"
    );
    println!(
        "          routes www.example.test/app/ → pool app (app-1 ×1, app-2 ×2, strip_prefix), /static/ → files,"
    );
    println!("          api.example.test → pool api (a unix socket)");
    println!(
        "          header trust: only {TRUSTED_PROXY} may send X-Forwarded-For/-Proto; allowed_hosts www/api.example.test"
    );
    // The "trusted proxy" of the header demo is a second address of the namespace.
    net.ip(&["addr", "add", &format!("{TRUSTED_PROXY}/32"), "dev", "lo"])?;
    let balancer = net.start_balancer(&config)?;

    let ca = certs.ca_path().display().to_string();
    let get = |version: &str, url: &str, extra: &[&str]| {
        let mut args = vec![
            version,
            "--cacert",
            &ca,
            "--resolve",
            "www.example.test:443:127.0.0.1",
            "--resolve",
            "api.example.test:443:127.0.0.1",
            "--resolve",
            "www.example.test:80:127.0.0.1",
        ];
        args.extend_from_slice(extra);
        args.push(url);
        curl(&net, &args)
    };

    println!("\n  curl --http2   https://www.example.test/app/hello?q=1");
    println!("  curl --http1.1 https://www.example.test/app/hello?q=1");
    for version in ["--http2", "--http1.1"] {
        let reply = get(version, "https://www.example.test/app/hello?q=1", &[])?;
        let seen: serde_json::Value =
            serde_json::from_slice(&reply.body).context("backend answer")?;
        println!(
            "    HTTP/{:<3} {}  answered by {}: it saw `{} {}` (Host {})",
            reply.http_version,
            reply.status,
            seen["server"].as_str().unwrap_or("?"),
            seen["method"].as_str().unwrap_or("?"),
            seen["uri"].as_str().unwrap_or("?"),
            // One Host: HTTP/2 requests are forwarded as HTTP/1.1 too.
            header_value(&seen, "host"),
        );
    }

    let mut spread = BTreeMap::new();
    for _ in 0..30 {
        let reply = get("--http2", "https://www.example.test/app/", &[])?;
        let seen: serde_json::Value = serde_json::from_slice(&reply.body)?;
        *spread
            .entry(seen["server"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    println!("\n  30 requests to /app/ (smooth weighted round-robin 1:2): {spread:?}");

    let slash = get("--http2", "https://www.example.test/app?x=1", &[])?;
    println!(
        "  GET /app          → {} Location: {}",
        slash.status,
        slash.header("location").unwrap_or("-")
    );
    let plain = get("--http1.1", "http://www.example.test/app/page?x=1", &[])?;
    println!(
        "  GET http://…/app/page?x=1 → {} Location: {}",
        plain.status,
        plain.header("location").unwrap_or("-")
    );
    let files = get("--http2", "https://www.example.test/static/", &[])?;
    println!(
        "  GET /static/      → {} {} {:?}",
        files.status,
        files.header("content-type").unwrap_or("-"),
        files.text().trim()
    );
    let api_reply = get("--http2", "https://api.example.test/v1/items", &[])?;
    let seen: serde_json::Value = serde_json::from_slice(&api_reply.body)?;
    println!(
        "  GET https://api.example.test/v1/items → {} from {} over a unix socket (peer {})",
        api_reply.status,
        seen["server"].as_str().unwrap_or("?"),
        seen["peer"].as_str().unwrap_or("?")
    );
    let misdirected = get(
        "--http2",
        "https://www.example.test/app/",
        &["-H", "Host: api.example.test"],
    )?;
    println!(
        "  SNI www.example.test with Host api.example.test → {} (misdirected)",
        misdirected.status
    );

    let tls = TlsOptions::new(certs.ca_path()).sni("www.example.test");
    let echo = websocket_echo(
        &net,
        "127.0.0.1:443",
        "wss://www.example.test/app/ws",
        Some(&tls),
        &["hello", "through", "the proxy"],
    )?;
    println!(
        "  WebSocket wss://www.example.test/app/ws → {} and echoes {:?}",
        echo.status, echo.echoes
    );

    header_view(&get)?;

    for backend in [&app1, &app2] {
        let stats = backend.stats()?;
        println!(
            "  {} saw {} requests on {} connection(s): the proxy keeps upstream connections alive",
            backend.name(),
            stats.requests,
            stats.connections
        );
    }
    let (_, metrics) = balancer.admin_get("/metrics")?;
    println!("\n  GET /metrics (balancer_http_requests_total):");
    for line in metrics
        .lines()
        .filter(|line| line.starts_with("balancer_http_requests_total"))
    {
        println!("    {line}");
    }
    ensure!(
        spread.len() == 2 && misdirected.status == 421 && echo.echoes.len() == 3,
        "the L7 demo did not behave as expected (see above)"
    );
    drop(balancer);
    println!("\n  L7 demo done; tearing down the namespace");
    Ok(())
}

/// What a backend sees from a spoofing client and from a trusted proxy, side by side; then a
/// redirect of the backend and a disallowed host.
/// A curl request through the demo's listeners: (HTTP version flag, URL, extra arguments).
type Get<'a> = &'a dyn Fn(&str, &str, &[&str]) -> anyhow::Result<balancer_tests::CurlReply>;

fn header_view(get: Get<'_>) -> anyhow::Result<()> {
    let spoofed = [
        "-H",
        "X-Forwarded-For: 6.6.6.6",
        "-H",
        "X-Forwarded-Proto: http",
        "-H",
        "X-Real-IP: 6.6.6.6",
        "-H",
        "Remote-User: admin",
        "-H",
        "X_Forwarded_For: 6.6.6.6",
        "-H",
        "Authorization: Basic  dXNlcjpwYXNz",
        "-H",
        "X-Request-ID: spoofed-1",
    ];
    let from_proxy = [
        "--interface",
        TRUSTED_PROXY,
        "-H",
        "X-Forwarded-For: 6.6.6.6, 198.18.9.9",
        "-H",
        "X-Forwarded-Proto: https",
        "-H",
        "Remote-User: admin",
        "-H",
        "Authorization: Basic  dXNlcjpwYXNz",
        "-H",
        "X-Request-ID: edge-7f3a",
    ];
    let url = "https://www.example.test/app/who";
    let seen = |extra: &[&str]| -> anyhow::Result<serde_json::Value> {
        let reply = get("--http1.1", url, extra)?;
        ensure!(reply.status == 200, "{url}: {}", reply.status);
        Ok(serde_json::from_slice(&reply.body)?)
    };
    let client = seen(&spoofed)?;
    let proxy = seen(&from_proxy)?;
    println!(
        "
  What the backend sees (header trust, request hygiene):"
    );
    println!(
        "    a spoofing client at 127.0.0.1 sends X-Forwarded-For: 6.6.6.6, X-Forwarded-Proto: http,"
    );
    println!(
        "      X-Real-IP: 6.6.6.6, Remote-User: admin, X_Forwarded_For: 6.6.6.6, Authorization,"
    );
    println!("      X-Request-ID: spoofed-1");
    println!(
        "    the trusted proxy {TRUSTED_PROXY} sends X-Forwarded-For: 6.6.6.6, 198.18.9.9 (6.6.6.6 is what 198.18.9.9 claimed),"
    );
    println!(
        "      X-Forwarded-Proto: https, Remote-User: admin, Authorization, X-Request-ID: edge-7f3a"
    );
    println!(
        "    {:<20} {:<48} from the trusted proxy",
        "header", "from the spoofing client"
    );
    for name in SHOWN_HEADERS {
        println!(
            "    {:<20} {:<48} {}",
            name,
            header_value(&client, name),
            header_value(&proxy, name)
        );
    }
    ensure!(
        header_value(&client, "x-forwarded-for") == "127.0.0.1"
            && header_value(&proxy, "x-forwarded-for") == "198.18.9.9, 198.18.5.2"
            && header_value(&client, "remote-user") == "-"
            && header_value(&client, "x_forwarded_for") == "-",
        "the backend saw forwarded headers it must not see (above)"
    );
    // A client's request ID is replaced by a new one; the trusted proxy's is kept.
    ensure!(
        !["-", "spoofed-1"].contains(&header_value(&client, "x-request-id").as_str())
            && header_value(&proxy, "x-request-id") == "edge-7f3a",
        "X-Request-ID was not replaced for the client or not kept for the trusted proxy (above)"
    );

    let redirect = get("--http1.1", "https://www.example.test/app/redirect", &[])?;
    println!(
        "
  The backend answers /redirect with 302 Location: http://127.0.0.1:800x/target;"
    );
    println!(
        "    through the route /app/ (strip_prefix) the client gets {} Location: {}",
        redirect.status,
        redirect.header("location").unwrap_or("-")
    );
    let other = get(
        "--http1.1",
        "https://www.example.test/app/",
        &["-H", "Host: evil.example.test"],
    )?;
    println!(
        "  Host evil.example.test (not in allowed_hosts) → {} before any backend sees it",
        other.status
    );
    ensure!(
        redirect.header("location") == Some("https://www.example.test/app/target")
            && other.status == 421,
        "rewriting or allowed_hosts did not behave as expected (above)"
    );
    Ok(())
}

/// A header's values as the backend's JSON echo lists them ("-" when absent).
fn header_value(seen: &serde_json::Value, name: &str) -> String {
    let values: Vec<&str> = seen["headers"]
        .as_array()
        .map(|headers| {
            headers
                .iter()
                .filter(|pair| pair[0].as_str() == Some(name))
                .filter_map(|pair| pair[1].as_str())
                .collect()
        })
        .unwrap_or_default();
    if values.is_empty() {
        "-".to_string()
    } else {
        values.join(" | ")
    }
}
