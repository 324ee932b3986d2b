//! Fragmented datagrams to a VIP, end to end: a client sends UDP datagrams larger than its
//! link's MTU (1500) to `ipip` VIPs (IPv4 and IPv6); its kernel fragments them; a real
//! `balancer run` with XDP sends every fragment to the backend the first one (the one with
//! the ports) went to; the backend (`balancer decap`, then its own stack) reassembles the
//! datagram and the name server answers the client directly. Without that, only the first
//! fragment could be placed and no datagram would ever be reassembled.
//!
//! The balancer and the backends have 1600-byte links, so that a full-sized fragment still
//! fits once encapsulated (IPv4 fragments carry no DF: one that did not fit would be dropped,
//! as the README says); the client's link stays at 1500.

use std::{
    fs,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use anyhow::{Context, ensure};
use balancer_tests::{
    BalancerProcess, Family, L4Topology,
    l4topology::{IpipParts, TestVip, UDP_VIP4, VIP_ADMIN as ADMIN, VIP_PORT as PORT},
};

const UDP_VIP6: &str = "2001:2:0:100::2";
const INNER_MTU: &str = "1600";
/// Three fragments at a 1500-byte MTU.
const DATAGRAM_LEN: usize = 3000;
const DATAGRAMS: usize = 20;

/// Dropped in field order: the processes stop before their pins and namespaces go.
struct Setup {
    balancer: BalancerProcess,
    _parts: IpipParts,
    topology: L4Topology,
}

fn setup(tag: &str) -> anyhow::Result<Setup> {
    let mut topology = L4Topology::new(tag, 2)?;
    for vip in [UDP_VIP4, UDP_VIP6] {
        topology.add_vip(vip.parse()?)?;
    }
    // Larger links behind the client: the balancer's, the backends', and their bridge ports.
    topology
        .lb()
        .ip(&["link", "set", "veth0", "mtu", INNER_MTU])?;
    for port in ["p-lb", "p-b1", "p-b2"] {
        topology
            .bridge()
            .ip(&["link", "set", port, "mtu", INNER_MTU])?;
    }
    for k in 1..=2 {
        topology
            .backend(k)
            .ip(&["link", "set", "veth0", "mtu", INNER_MTU])?;
    }
    topology.start_name_servers(PORT)?;
    let parts = topology.start_ipip_parts(tag)?;
    let config = topology.xdp_config(
        ADMIN,
        &parts.pins.0,
        &[
            TestVip::new(
                "dns4",
                (UDP_VIP4, PORT),
                "udp",
                "ipip",
                topology.backends_toml(Family::V4, &[1, 1]),
            ),
            TestVip::new(
                "dns6",
                (UDP_VIP6, PORT),
                "udp",
                "ipip",
                topology.backends_toml(Family::V6, &[1, 1]),
            ),
        ],
    );
    let config_path = parts.dir.join("balancer.toml");
    fs::write(&config_path, config)?;
    let balancer = BalancerProcess::start(topology.lb(), &config_path, ADMIN)?;
    Ok(Setup {
        balancer,
        _parts: parts,
        topology,
    })
}

fn metric(setup: &Setup, reason: &str) -> anyhow::Result<u64> {
    let (status, body) = setup.balancer.admin_get("/metrics")?;
    ensure!(status == 200, "/metrics answered {status}");
    let prefix = format!("balancer_xdp_reason_packets_total{{reason=\"{reason}\"}} ");
    Ok(body
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0))
}

/// `DATAGRAMS` datagrams of `DATAGRAM_LEN` bytes from the client to `vip`, each from its own
/// socket (so its own flow); the names of the backends that answered.
fn send_big_datagrams(topology: &L4Topology, vip: IpAddr) -> anyhow::Result<Vec<String>> {
    let target = SocketAddr::new(vip, PORT);
    topology
        .client()
        .run(move || -> anyhow::Result<Vec<String>> {
            let mut names = Vec::new();
            for i in 0..DATAGRAMS {
                let local: SocketAddr = if vip.is_ipv4() {
                    "0.0.0.0:0".parse()?
                } else {
                    "[::]:0".parse()?
                };
                let socket = UdpSocket::bind(local)?;
                socket.connect(target)?;
                socket.set_read_timeout(Some(Duration::from_secs(1)))?;
                let datagram = vec![b'x'; DATAGRAM_LEN];
                let mut buf = [0u8; 256];
                let mut answer = None;
                for _ in 0..3 {
                    socket.send(&datagram)?;
                    if let Ok(n) = socket.recv(&mut buf) {
                        answer = Some(String::from_utf8_lossy(&buf[..n]).trim().to_string());
                        break;
                    }
                }
                names.push(answer.with_context(|| {
                    format!("datagram {i} ({DATAGRAM_LEN} bytes) to {target}: no answer in 3 tries")
                })?);
            }
            Ok(names)
        })?
}

fn fragments_through_the_balancer(vip: &str, tag: &str) -> anyhow::Result<()> {
    let setup = setup(tag)?;
    let vip: IpAddr = vip.parse()?;
    let before = metric(&setup, "fragment_forwarded")?;
    let orphans = metric(&setup, "fragment_orphan")?;
    let names = send_big_datagrams(&setup.topology, vip)
        .with_context(|| format!("balancer log:\n{}", setup.balancer.log()))?;
    let forwarded = metric(&setup, "fragment_forwarded")? - before;
    ensure!(
        forwarded >= 3 * DATAGRAMS as u64,
        "{vip}: {forwarded} fragments forwarded for {DATAGRAMS} datagrams of 3 fragments"
    );
    ensure!(
        metric(&setup, "fragment_orphan")? == orphans,
        "{vip}: fragments were dropped as orphans"
    );
    for name in ["b1", "b2"] {
        ensure!(
            names.iter().any(|n| n == name),
            "{vip}: {name} answered none of the datagrams: {names:?}"
        );
    }
    println!(
        "{vip}: {DATAGRAMS} datagrams of {DATAGRAM_LEN} bytes answered ({names:?}); {forwarded} fragments forwarded"
    );
    Ok(())
}

#[test]
fn ipv4_fragments_reach_one_backend_and_are_reassembled() -> anyhow::Result<()> {
    fragments_through_the_balancer(UDP_VIP4, "frag4")
}

#[test]
fn ipv6_fragments_reach_one_backend_and_are_reassembled() -> anyhow::Result<()> {
    fragments_through_the_balancer(UDP_VIP6, "frag6")
}
