//! Path MTU discovery under direct server return, end to end: a client, a real
//! `balancer run` with XDP (`ipip`), two backends running `balancer decap`, and a router.
//! The backends answer the client through the router, whose route to the client has a
//! lower MTU (1400) than every link (1500). A large reply's full-sized segments make the
//! router send an ICMP "fragmentation needed" / ICMPv6 "packet too big" to their source,
//! the VIP, which it routes via the balancer: the balancer's XDP program must send that
//! error to the backend of the flow, encapsulated, so the backend lowers its path MTU and
//! the reply gets through. Without that the error dies on the balancer host, the backend
//! keeps sending segments the router drops, and the transfer stalls.
//!
//! ```text
//!   client ─┐   br0     client → VIP: via lb (XDP, ipip) → b1 / b2 (decap, VIP on lo)
//!   lb ─────┤           b1 / b2 → client: via rt (mtu 1400 towards the client)
//!   rt ─────┤           rt → VIP (its ICMP errors): via lb
//!   b1, b2 ─┘
//! ```

use std::{
    fs,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use balancer_tests::{
    BalancerProcess, Family, L4Topology, Netns,
    l4topology::{IpipParts, TestVip, VIP_ADMIN as ADMIN, VIP4, VIP6, set_sysctls},
    run_in,
};

const PORT: u16 = 9000;
const ROUTER_BYTE: u8 = 250;
const ROUTE_MTU: u32 = 1400;
/// The reply: many full-sized segments.
const REPLY_LEN: usize = 512 * 1024;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(15);

/// Dropped in field order: the processes stop before their pins and namespaces go.
struct Setup {
    balancer: BalancerProcess,
    _parts: IpipParts,
    topology: L4Topology,
}

fn router_addr(family: Family) -> IpAddr {
    match family {
        Family::V4 => [198, 18, 0, ROUTER_BYTE].into(),
        Family::V6 => format!("2001:2::{ROUTER_BYTE:x}")
            .parse()
            .expect("an address"),
    }
}

fn vip(family: Family) -> IpAddr {
    match family {
        Family::V4 => VIP4.parse().expect("VIP4"),
        Family::V6 => VIP6.parse().expect("VIP6"),
    }
}

fn host(address: IpAddr) -> String {
    match address {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn setup(tag: &str) -> anyhow::Result<Setup> {
    let mut topology = L4Topology::new(tag, 2)?;
    let addrs: Vec<(Family, IpAddr, IpAddr)> = [Family::V4, Family::V6]
        .into_iter()
        .map(|family| {
            (
                family,
                topology.client_addr(family),
                topology.lb_addr(family),
            )
        })
        .collect();
    let router = topology.add_host("rt", ROUTER_BYTE)?;
    set_sysctls(
        router,
        &[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            // It forwards out of the interface packets came in on: no redirects.
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.default.send_redirects", "0"),
            ("net.ipv4.conf.veth0.send_redirects", "0"),
        ],
    )?;
    for (family, client, lb) in addrs {
        let mtu = ROUTE_MTU.to_string();
        // The lower-MTU hop: the router's route to the client.
        router.ip(&[
            "route",
            "replace",
            &host(client),
            "dev",
            "veth0",
            "mtu",
            "lock",
            &mtu,
        ])?;
        // Its ICMP errors to the VIP go where the client's packets to the VIP go.
        router.ip(&[
            "route",
            "replace",
            &host(vip(family)),
            "via",
            &lb.to_string(),
        ])?;
    }
    let router_v4 = router_addr(Family::V4).to_string();
    let router_v6 = router_addr(Family::V6).to_string();
    for family in [Family::V4, Family::V6] {
        topology.add_vip(vip(family))?;
    }
    for k in 1..=2 {
        let backend = topology.backend(k);
        backend.ip(&[
            "route",
            "replace",
            &host(topology.client_addr(Family::V4)),
            "via",
            &router_v4,
        ])?;
        backend.ip(&[
            "route",
            "replace",
            &host(topology.client_addr(Family::V6)),
            "via",
            &router_v6,
        ])?;
    }
    let parts = topology.start_ipip_parts(tag)?;
    let config = topology.xdp_config(
        ADMIN,
        &parts.pins.0,
        &[
            TestVip::new(
                "big4",
                (VIP4, PORT),
                "tcp",
                "ipip",
                topology.backends_toml(Family::V4, &[1, 1]),
            ),
            TestVip::new(
                "big6",
                (VIP6, PORT),
                "tcp",
                "ipip",
                topology.backends_toml(Family::V6, &[1, 1]),
            ),
        ],
    );
    let config_path = parts.dir.join("balancer.toml");
    fs::write(&config_path, config)?;
    let balancer = BalancerProcess::start(topology.lb(), &config_path, ADMIN)?;
    Ok(Setup {
        topology,
        balancer,
        _parts: parts,
    })
}

/// On every backend, a server on VIP:PORT that sends `REPLY_LEN` bytes to each connection,
/// reporting which backend (1-based) accepted it. Its threads stop when it drops.
struct BigServers {
    accepted: mpsc::Receiver<usize>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BigServers {
    fn start(topology: &L4Topology, vip: IpAddr) -> anyhow::Result<BigServers> {
        let (accepted, receiver) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for k in 1..=2 {
            let address = SocketAddr::new(vip, PORT);
            let listener = topology
                .backend(k)
                .run(move || TcpListener::bind(address))?
                .with_context(|| format!("binding {address} on b{k}"))?;
            listener.set_nonblocking(true)?;
            let (accepted, stop) = (accepted.clone(), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                let mut writers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut stream, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let _ = accepted.send(k);
                    writers.push(std::thread::spawn(move || {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_write_timeout(Some(TRANSFER_TIMEOUT));
                        let reply: Vec<u8> = (0..REPLY_LEN).map(|i| (i % 251) as u8).collect();
                        let _ = stream.write_all(&reply);
                    }));
                }
                for writer in writers {
                    let _ = writer.join();
                }
            }));
        }
        Ok(BigServers {
            accepted: receiver,
            stop,
            threads,
        })
    }
}

impl Drop for BigServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Connects from the client to VIP:PORT and reads the whole reply (or fails after
/// `TRANSFER_TIMEOUT`): how many bytes arrived.
fn fetch(client: &Netns, vip: IpAddr) -> anyhow::Result<usize> {
    let address = SocketAddr::new(vip, PORT);
    let mut stream = client
        .run(move || TcpStream::connect_timeout(&address, Duration::from_secs(3)))?
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let deadline = Instant::now() + TRANSFER_TIMEOUT;
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while total < REPLY_LEN && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(err) => return Err(err).context("reading the reply"),
        }
    }
    Ok(total)
}

/// The path MTU backend `k` has cached towards the client for replies from the VIP.
fn cached_mtu(topology: &L4Topology, k: usize, family: Family) -> anyhow::Result<Option<u32>> {
    let client = topology.client_addr(family).to_string();
    let from = vip(family).to_string();
    let route = run_in(
        &topology.backend(k).path(),
        "ip",
        &["route", "get", &client, "from", &from],
    )?;
    let mut words = route.split_whitespace();
    while let Some(word) = words.next() {
        if word == "mtu" {
            return Ok(words.next().and_then(|mtu| mtu.parse().ok()));
        }
    }
    Ok(None)
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

fn pmtu_through_the_balancer(family: Family, tag: &str) -> anyhow::Result<()> {
    let setup = setup(tag)?;
    let topology = &setup.topology;
    let vip = vip(family);
    let servers = BigServers::start(topology, vip)?;
    for k in 1..=2 {
        ensure!(
            cached_mtu(topology, k, family)?.is_none(),
            "b{k} starts with no cached path MTU"
        );
    }
    let before = metric(&setup, "icmp_error_forwarded")?;
    let got = fetch(topology.client(), vip)?;
    let backend = servers
        .accepted
        .recv_timeout(Duration::from_secs(1))
        .context("no backend accepted the connection")?;
    ensure!(
        got == REPLY_LEN,
        "{family:?}: {got} of {REPLY_LEN} bytes arrived through the {ROUTE_MTU}-byte hop in \
         {TRANSFER_TIMEOUT:?} (the backend never learned the path MTU?)\nbalancer log:\n{}",
        setup.balancer.log()
    );
    let forwarded = metric(&setup, "icmp_error_forwarded")? - before;
    ensure!(
        forwarded >= 1,
        "{family:?}: the balancer forwarded no ICMP error"
    );
    let other = 3 - backend;
    ensure!(
        cached_mtu(topology, backend, family)? == Some(ROUTE_MTU),
        "{family:?}: b{backend}, which served the flow, has no path MTU {ROUTE_MTU} cached \
         towards the client"
    );
    ensure!(
        cached_mtu(topology, other, family)?.is_none(),
        "{family:?}: b{other}, which did not serve the flow, got the error too"
    );
    println!(
        "{family:?}: {got} bytes through the {ROUTE_MTU}-byte hop from b{backend}; {forwarded} \
         ICMP error(s) forwarded by the balancer"
    );
    Ok(())
}

#[test]
fn ipv4_fragmentation_needed_reaches_the_flows_backend() -> anyhow::Result<()> {
    pmtu_through_the_balancer(Family::V4, "pmtu4")
}

#[test]
fn ipv6_packet_too_big_reaches_the_flows_backend() -> anyhow::Result<()> {
    pmtu_through_the_balancer(Family::V6, "pmtu6")
}
