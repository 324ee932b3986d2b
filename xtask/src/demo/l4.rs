//! The L4 part of the demo: an `ipip` VIP over three backends (weights 1, 1, 2)
//! on one L2 segment, backends running `balancer decap`, real TCP connections
//! from a client, then a drain and a dead server. The same hosts also serve HTTP to the
//! balancer's L7 pool (sticky sessions, health checks): one state per host, so a drain or a
//! death shows in the proxy and in the XDP maps alike, and sticky sessions move off a dead
//! server.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::{Context, bail, ensure};
use balancer_tests::{Backend, BalancerProcess, Family, L4Topology, curl};

const VIP: &str = "198.18.100.1";
const PORT: u16 = 8080;
const ADMIN: &str = "127.0.0.1:9100";
const CONNECTIONS: usize = 300;
/// The backends' HTTP servers for the L7 pool, and the balancer's listener in front of them.
const APP_PORT: u16 = 8000;
const LISTEN_PORT: u16 = 8081;

fn config(topology: &L4Topology) -> String {
    format!(
        r#"[admin]
listen = "{ADMIN}"

[xdp]
interface = "{iface}"
max_vips = 4

[[vip]]
name = "web"
address = "{VIP}"
port = {PORT}
protocol = "tcp"
forward = "ipip"
backends = {backends}
health = {{ check = "tcp", interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }}

[[listener]]
name = "http"
bind = "{lb}:{LISTEN_PORT}"

# No `listener`: a route serves every listener, as a newcomer's first config expects.
[[route]]
pool = "app"

[pool.app]
servers = [ {servers} ]
sticky = {{ mode = "insert", key = "demo-key-0123456789abcdef" }}
health = {{ path = "/", interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }}
"#,
        iface = topology.lb_interface(),
        backends = topology.backends_toml(Family::V4, &[1, 1, 2]),
        lb = topology.lb_addr_v4(),
        servers = (1..=3)
            .map(|k| format!(
                "{{ url = \"http://{}:{APP_PORT}\", route = \"b{k}\" }}",
                topology.backend_addr_v4(k)
            ))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

pub fn run(dir: &std::path::Path) -> anyhow::Result<()> {
    println!("\n== L4: an ipip VIP over three backends ==");
    println!(
        "demo: client 198.18.0.1, balancer 198.18.0.2, backends b1..b3 = 198.18.0.11..13 on one bridge;\n\
         \x20     VIP {VIP}:{PORT} on the backends' lo; weights b1=1 b2=1 b3=2; backends run `balancer decap`"
    );
    let mut topology = L4Topology::new("demo", 3)?;
    topology.add_vip(VIP.parse()?)?;
    topology.start_name_servers(PORT)?;
    topology.attach_pass_on_lb_peer()?;
    let mut decap = Vec::new();
    for k in 1..=3 {
        let log = dir.join(format!("decap-b{k}.log"));
        decap.push(BalancerProcess::start_decap(
            topology.backend(k),
            "veth0",
            &log,
        )?);
    }
    let mut apps = Vec::new();
    for k in 1..=3 {
        let listen = format!("{}:{APP_PORT}", topology.backend_addr_v4(k));
        apps.push(Some(Backend::start(
            topology.backend(k),
            &format!("b{k}"),
            &[&listen],
        )?));
    }
    println!(
        "      the same hosts serve HTTP on :{APP_PORT} to the L7 pool \"app\" behind {}:{LISTEN_PORT}\n\
         \x20     (sticky = insert, HTTP health checks every 200ms, fall 2)",
        topology.lb_addr_v4()
    );
    let config_path = dir.join("l4.toml");
    std::fs::write(&config_path, config(&topology))?;
    let balancer = BalancerProcess::start(topology.lb(), &config_path, ADMIN)?;
    let vip = SocketAddr::new(VIP.parse()?, PORT);

    wait_states(&balancer, &["up", "up", "up"])?;
    print_states(&balancer, "all three backends passed their first TCP check")?;
    let jar = dir.join("cookies");
    let sticky_on = sticky_requests(&topology, &jar, 10)?;
    println!(
        "\nL7: 10 requests from one client with a cookie jar all went to {sticky_on} (insert cookie);"
    );
    let mut fresh = BTreeMap::new();
    for _ in 0..9 {
        *fresh.entry(app_request(&topology, None)?).or_insert(0) += 1;
    }
    println!("    9 clients without a cookie: {fresh:?}");

    let names = topology.connect_many(vip, CONNECTIONS, None)?;
    print_spread(&format!("{CONNECTIONS} new connections"), &names);

    let mut on_b2 = None;
    for _ in 0..40 {
        let conn = topology.open_long_lived(vip)?;
        if conn.backend() == "b2" {
            on_b2 = Some(conn);
            break;
        }
    }
    let mut on_b2 = on_b2.context("no connection landed on b2")?;
    let (status, body) = balancer.admin_post(&format!(
        "/api/vips/web/backends/{}/drain",
        topology.backend_addr(2, Family::V4)
    ))?;
    if status != 200 {
        bail!("drain answered {status}: {body}");
    }
    print_states(&balancer, "POST /api/vips/web/backends/198.18.0.12/drain")?;
    print_pool(&balancer, "the pool server on the same host follows")?;
    let names = topology.connect_many(vip, 100, None)?;
    print_spread("100 new connections while b2 drains", &names);
    on_b2.ping()?;
    println!("  an open connection on b2 still answers: draining keeps established flows");

    let jar3 = session_on(&topology, dir, "b3")?;
    let cookie_before = std::fs::read_to_string(&jar3)?;
    topology.stop_name_server(3)?;
    if let Some(app) = apps[2].take() {
        app.stop()?;
    }
    println!("\ndemo: stopped b3's servers (TCP and HTTP)");
    wait_states(&balancer, &["up", "draining", "down"])?;
    print_states(&balancer, "b3 failed 2 checks (fall = 2)")?;
    wait_pool_down(&balancer, "b3")?;
    print_pool(&balancer, "the proxy's own checks agree")?;
    let (status, body) = balancer.admin_get("/healthz")?;
    println!("  GET /healthz → {status} {}", body.trim());
    // The session stuck to b3 moves to a live server, gets a new cookie, and stays there.
    let moved_to = app_request(&topology, Some(&jar3))?;
    let cookie_after = std::fs::read_to_string(&jar3)?;
    let again = app_request(&topology, Some(&jar3))?;
    println!(
        "\nL7: the session stuck to b3 moved to {moved_to} (new cookie: {}), and stays: next request → {again}",
        cookie_after != cookie_before
    );
    ensure!(
        moved_to != "b3" && again == moved_to && cookie_after != cookie_before,
        "the session on b3 did not move as expected"
    );
    let names = topology.connect_many(vip, 100, None)?;
    print_spread("100 new connections with b3 down and b2 draining", &names);

    let (_, metrics) = balancer.admin_get("/metrics")?;
    println!("\nPer-backend packets the XDP program forwarded (GET /metrics):");
    for line in metrics.lines().filter(|l| {
        l.starts_with("balancer_xdp_backend_packets_total")
            || l.starts_with("balancer_xdp_flow_events_total")
    }) {
        println!("  {line}");
    }
    drop(on_b2);
    drop(balancer);
    drop(decap);
    drop(topology);
    println!("\ndemo: L4 part torn down");
    Ok(())
}

/// One HTTP request to the L7 listener from the client host; the name of the server that
/// answered. With `jar`, cookies are kept (curl's cookie jar).
fn app_request(topology: &L4Topology, jar: Option<&std::path::Path>) -> anyhow::Result<String> {
    let url = format!("http://{}:{LISTEN_PORT}/who", topology.lb_addr_v4());
    let jar_text = jar.map(|path| path.display().to_string());
    let mut args = vec!["--http1.1"];
    if let Some(jar) = &jar_text {
        args.extend_from_slice(&["-b", jar, "-c", jar]);
    }
    args.push(&url);
    let reply = curl(topology.client(), &args)?;
    ensure!(reply.status == 200, "GET {url}: {}", reply.status);
    let seen: serde_json::Value = serde_json::from_slice(&reply.body)?;
    Ok(seen["server"].as_str().unwrap_or("?").to_string())
}

/// `count` requests with one cookie jar: the server they all went to.
fn sticky_requests(
    topology: &L4Topology,
    jar: &std::path::Path,
    count: usize,
) -> anyhow::Result<String> {
    std::fs::write(jar, "")?;
    let first = app_request(topology, Some(jar))?;
    for _ in 1..count {
        let next = app_request(topology, Some(jar))?;
        ensure!(
            next == first,
            "a sticky session moved from {first} to {next}"
        );
    }
    Ok(first)
}

/// A cookie jar whose session is stuck to `target`: fresh sessions until one lands there.
fn session_on(
    topology: &L4Topology,
    dir: &std::path::Path,
    target: &str,
) -> anyhow::Result<std::path::PathBuf> {
    for attempt in 0..20 {
        let jar = dir.join(format!("cookies-{target}-{attempt}"));
        std::fs::write(&jar, "")?;
        if app_request(topology, Some(&jar))? == target {
            return Ok(jar);
        }
    }
    bail!("no new session landed on {target}")
}

fn pool_servers(balancer: &BalancerProcess) -> anyhow::Result<Vec<serde_json::Value>> {
    let (_, body) = balancer.admin_get("/api/state")?;
    let state: serde_json::Value = serde_json::from_str(&body)?;
    let pools = state["pools"].as_array().context("pools in /api/state")?;
    let app = pools
        .iter()
        .find(|pool| pool["name"] == "app")
        .context("pool app in /api/state")?;
    Ok(app["servers"].as_array().cloned().unwrap_or_default())
}

fn print_pool(balancer: &BalancerProcess, why: &str) -> anyhow::Result<()> {
    println!("\nServers of pool \"app\" in the proxy ({why}):");
    for server in pool_servers(balancer)? {
        println!(
            "  {:<26} {:<9} {:<9} {}",
            server["url"].as_str().unwrap_or("?"),
            server["state"].as_str().unwrap_or("?"),
            server["operator"].as_str().unwrap_or("?"),
            server["health_reason"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn wait_pool_down(balancer: &BalancerProcess, route: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        if pool_servers(balancer)?
            .iter()
            .any(|s| s["route"] == route && s["takes_new_sessions"] == false)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("pool server {route} never went down")
}

fn backend_states(balancer: &BalancerProcess) -> anyhow::Result<Vec<(String, String, u64)>> {
    let (_, body) = balancer.admin_get("/api/state")?;
    let state: serde_json::Value = serde_json::from_str(&body)?;
    let backends = state["xdp"]["vips"][0]["backends"]
        .as_array()
        .context("backends in /api/state")?;
    Ok(backends
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap_or("?").to_string(),
                b["state"].as_str().unwrap_or("?").to_string(),
                b["packets"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

fn wait_states(balancer: &BalancerProcess, want: &[&str]) -> anyhow::Result<()> {
    for _ in 0..200 {
        let states = backend_states(balancer)?;
        if states
            .iter()
            .map(|(_, s, _)| s.as_str())
            .eq(want.iter().copied())
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "backends never reached {want:?}: {:?}",
        backend_states(balancer)?
    )
}

fn print_states(balancer: &BalancerProcess, why: &str) -> anyhow::Result<()> {
    println!("\nBackend states in the XDP maps ({why}):");
    for (address, state, packets) in backend_states(balancer)? {
        println!("  {address:<14} {state:<9} {packets:>7} packets forwarded");
    }
    Ok(())
}

fn print_spread(what: &str, names: &[String]) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for name in names {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    println!("\n{what}, by the backend that answered:");
    for backend in ["b1", "b2", "b3"] {
        let n = counts.get(backend).copied().unwrap_or(0);
        println!(
            "  {backend}  {n:>4}  {}",
            "#".repeat(n * 40 / names.len().max(1))
        );
    }
}
