//! `cargo xtask demo`: the balancer on namespace topologies with real traffic:
//! local VIPs and what the XDP program counted, then L4 forwarding to three
//! backends with a drain and a dead server, then the HTTPS proxy, then three balancer
//! hosts behind an ECMP router losing one.

use std::{
    collections::BTreeMap,
    net::{TcpListener, UdpSocket},
    time::Duration,
};

use anyhow::Context;
use balancer_tests::{
    BalancerProcess, ClientBalancer, cleanup_everything,
    traffic::{send_raw_frames, socket_addr, spawn_echo_server, tcp_ping_pong},
};

use crate::build;

mod l4;
mod l7;
mod scaleout;

const CONFIG: &str = include_str!("demo.toml");
const VIP4: &str = "198.18.0.10";
const VIP6: &str = "2001:2::10";
const TCP_CONNECTIONS: usize = 5;
const ROUND_TRIPS: usize = 10;
const UDP_DATAGRAMS: usize = 100;
const NON_VIP_DATAGRAMS: usize = 20;

pub fn run() -> anyhow::Result<()> {
    // Everything the demo runs is built here, and found through the environment rather
    // than next to some earlier build: a fresh clone must get this far with nothing built.
    let binary = build::all(false)?;
    let helpers = build::helpers()?;
    // SAFETY-free: on Ctrl-C or SIGTERM, stop children and delete namespaces before exiting.
    ctrlc::set_handler(|| {
        eprintln!("\ndemo: interrupted, tearing down");
        cleanup_everything();
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")?;
    // SAFETY: no other thread reads the environment concurrently at this point.
    unsafe {
        std::env::set_var("BALANCER_BIN", &binary);
        std::env::set_var("BALANCER_L7_BACKEND", &helpers.l7_backend);
        std::env::set_var("BALANCER_NAME_SERVER", &helpers.name_server);
        std::env::set_var("BALANCER_EBPF_OBJECT", build::ebpf_object());
    }

    println!(
        "demo: building the topology  client (198.18.0.1, 2001:2::1) ── veth ── balancer (VIPs {VIP4}, {VIP6})"
    );
    let topology = ClientBalancer::new("demo", &[VIP4, VIP6])?;
    let dir = std::env::temp_dir().join(format!("balancer-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("demo.toml");
    std::fs::write(
        &config,
        CONFIG.replace("{interface}", &topology.balancer_if),
    )?;

    println!(
        "demo: starting balancer with the built-in config ({})",
        config.display()
    );
    let mut balancer = BalancerProcess::start(&topology.balancer, &config, "127.0.0.1:9100")?;

    let (tcp4, tcp6, udp4, udp6) = topology.balancer.run(|| -> anyhow::Result<_> {
        Ok((
            TcpListener::bind(socket_addr(VIP4, 80))?,
            TcpListener::bind(socket_addr(VIP6, 80))?,
            UdpSocket::bind(socket_addr(VIP4, 53))?,
            UdpSocket::bind(socket_addr(VIP6, 53))?,
        ))
    })??;
    spawn_echo_server(tcp4);
    spawn_echo_server(tcp6);

    println!(
        "demo: sending, per family: {TCP_CONNECTIONS} TCP connections × {ROUND_TRIPS} round trips, \
         {UDP_DATAGRAMS} UDP datagrams; {NON_VIP_DATAGRAMS} datagrams to a non-VIP address; 3 malformed frames"
    );
    let client_if = topology.client_if.clone();
    topology.client.run(move || -> anyhow::Result<()> {
        for vip in [VIP4, VIP6] {
            for _ in 0..TCP_CONNECTIONS {
                tcp_ping_pong(socket_addr(vip, 80), ROUND_TRIPS)?;
            }
            let socket = UdpSocket::bind(if vip.contains(':') {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            })?;
            for _ in 0..UDP_DATAGRAMS {
                socket.send_to(b"demo query", socket_addr(vip, 53))?;
            }
        }
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        for _ in 0..NON_VIP_DATAGRAMS {
            socket.send_to(
                b"not for a VIP",
                socket_addr(ClientBalancer::BALANCER_V4, 9),
            )?;
        }
        send_raw_frames(&client_if, &malformed_frames())
    })??;
    for socket in [&udp4, &udp6] {
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 64];
        for _ in 0..UDP_DATAGRAMS {
            socket
                .recv(&mut buf)
                .context("a UDP datagram to a VIP did not arrive")?;
        }
    }
    std::thread::sleep(Duration::from_millis(300));

    let (_, metrics) = balancer.admin_get("/metrics")?;
    print_report(&parse_metrics(&metrics));

    let status = balancer.stop()?;
    println!("demo: balancer stopped ({status}); XDP detached; tearing down the namespaces");
    drop(topology);
    let result = l4::run(&dir)
        .and_then(|()| l7::run())
        .and_then(|()| scaleout::run());
    let _ = std::fs::remove_dir_all(dir);
    result
}

/// Three frames the XDP program must count, not choke on: the first two pass, the orphan
/// fragment is dropped.
fn malformed_frames() -> Vec<Vec<u8>> {
    let ethernet = |ether_type: [u8; 2]| {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        frame.extend_from_slice(&ether_type);
        frame
    };
    // IPv4 header cut after 10 bytes.
    let mut truncated = ethernet([0x08, 0x00]);
    truncated.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6]);
    // IHL 3 (< 5): not a valid IPv4 header.
    let mut bad_ihl = ethernet([0x08, 0x00]);
    bad_ihl.extend_from_slice(&[
        0x43, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 10,
    ]);
    // A non-first fragment to the VIP whose first fragment never came: no ports to match,
    // no backend to follow (`fragment_orphan`).
    let mut fragment = ethernet([0x08, 0x00]);
    fragment.extend_from_slice(&[
        0x45, 0, 0, 28, 0, 1, 0x00, 0x10, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 10,
    ]);
    fragment.extend_from_slice(&[0; 8]);
    vec![truncated, bad_ihl, fragment]
}

/// `name{labels} value` lines → (name, labels) → value.
fn parse_metrics(text: &str) -> BTreeMap<(String, String), u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            Some((
                (name.to_string(), labels.trim_end_matches('}').to_string()),
                value.parse().ok()?,
            ))
        })
        .collect()
}

fn print_report(metrics: &BTreeMap<(String, String), u64>) {
    let value = |name: &str, labels: &str| {
        metrics
            .get(&(name.to_string(), labels.to_string()))
            .copied()
            .unwrap_or(0)
    };
    println!("\nWhat the XDP program counted, per VIP (from GET /metrics):");
    println!(
        "  {:<8} {:<18} {:>5}  {:>8} {:>10}  verdict",
        "VIP", "address", "proto", "packets", "bytes"
    );
    for (name, address, proto) in [
        ("web-v4", "198.18.0.10:80", "tcp"),
        ("dns-v4", "198.18.0.10:53", "udp"),
        ("web-v6", "[2001:2::10]:80", "tcp"),
        ("dns-v6", "[2001:2::10]:53", "udp"),
    ] {
        let labels = format!("vip=\"{name}\",action=\"pass\"");
        println!(
            "  {name:<8} {address:<18} {proto:>5}  {:>8} {:>10}  pass (local)",
            value("balancer_xdp_packets_total", &labels),
            value("balancer_xdp_bytes_total", &labels)
        );
    }
    println!("\nEvery packet the XDP program saw, by reason:");
    for ((name, labels), packets) in metrics {
        if name == "balancer_xdp_reason_packets_total" && *packets > 0 {
            let reason = labels.trim_start_matches("reason=\"").trim_end_matches('"');
            println!("  {reason:<24} {packets:>8} packets");
        }
    }
    println!();
}
