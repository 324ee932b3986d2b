//! The L4 part of the demo: an `ipip` VIP over three backends (weights 1, 1, 2)
//! on one L2 segment, backends running `balancer decap`, real TCP connections
//! from a client, then a drain and a dead server.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::{Context, bail};
use balancer_tests::{BalancerProcess, Family, L4Topology};

const VIP: &str = "198.18.100.1";
const PORT: u16 = 8080;
const ADMIN: &str = "127.0.0.1:9100";
const CONNECTIONS: usize = 300;

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
"#,
        iface = topology.lb_interface(),
        backends = topology.backends_toml(Family::V4, &[1, 1, 2])
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
    let config_path = dir.join("l4.toml");
    std::fs::write(&config_path, config(&topology))?;
    let balancer = BalancerProcess::start(topology.lb(), &config_path, ADMIN)?;
    let vip = SocketAddr::new(VIP.parse()?, PORT);

    wait_states(&balancer, &["up", "up", "up"])?;
    print_states(&balancer, "all three backends passed their first TCP check")?;

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
    let names = topology.connect_many(vip, 100, None)?;
    print_spread("100 new connections while b2 drains", &names);
    on_b2.ping()?;
    println!("  an open connection on b2 still answers: draining keeps established flows");

    topology.stop_name_server(3)?;
    println!("\ndemo: stopped b3's server");
    wait_states(&balancer, &["up", "draining", "down"])?;
    print_states(&balancer, "b3 failed 2 checks (fall = 2)")?;
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
