//! Several balancer hosts behind one router that spreads a VIP over them with ECMP (issue 18,
//! "scale-out"): the topology of `announce_ecmp.rs`, `scaleout_survival.rs` and the demo's
//! scale-out part.
//!
//! ```text
//!                           ┌── r1 ── lb1 (balancer + BIRD, AS 65001) ──┐
//!   client ── rc  router ───┼── r2 ── lb2                               │ IPIP via the router
//!   (4 addresses)  (BIRD,   └── r3 ── lb3                               │
//!                  AS 65000) ─ b1 ── backend 1 (balancer decap, echo) ◄─┘
//!                            ─ b2 ── backend 2 …
//! ```
//!
//! - The client has [`CLIENT_ADDRESSES`] addresses (198.18.250.2…) on `c0`, the router
//!   198.18.250.1/24 on `rc`; the client's tx checksum offload is off (a frame a balancer sends
//!   back with `XDP_TX` must carry a complete checksum).
//! - Host `k` (1-based): `up0` 198.18.251.(4k+2)/30, the router's `rk` .(4k+1). Each host runs
//!   BIRD with `packaging/bird.conf` and an eBGP session to the router (hold time 3 s), and
//!   `balancer run` with a config of the test's ([`EcmpTopology::forwarding_config`] for an
//!   `ipip` VIP over the backends).
//! - The router runs BIRD (`merge paths on`: one ECMP route over every host announcing the
//!   VIP) and hashes on the 5-tuple (`fib_multipath_hash_policy=3`,
//!   `fib_multipath_hash_fields=0x0037`). With backends, its `rk` interfaces carry an
//!   `XDP_PASS` program, so the IPIP frames a host sends back with `XDP_TX` are delivered; it
//!   routes them to the backends.
//! - Backend `k`: `veth0` 198.18.252.(4k+2)/30, the router's `bk` .(4k+1); the VIP on `lo`,
//!   `balancer decap` on `veth0`, and `name_server` (greets with `bK`, then echoes) bound to
//!   [`VIP`]:[`PORT`]. Backends answer the client directly (through the router).
//!
//! Everything (processes, XDP programs, namespaces, nftables rules, the scratch directory) is
//! removed on drop, also on panic.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    BalancerProcess, Netns,
    bird::{Bird, host_routes, packaged_snippet},
    l4topology::{NameServer, XdpAttachment, disable_tx_checksum, set_sysctls},
    netns::unique_suffix,
    process::run_in,
};

pub const VIP: &str = "198.18.60.20";
pub const PORT: u16 = 80;
pub const ADMIN: &str = "127.0.0.1:9100";
/// The VIP's name in [`EcmpTopology::forwarding_config`].
pub const VIP_NAME: &str = "web";
/// The client's source addresses: 198.18.250.2 … .(1 + CLIENT_ADDRESSES).
pub const CLIENT_ADDRESSES: usize = 4;
const ROUTER_TO_CLIENT: &str = "198.18.250.1";
const HOST_INTERFACE: &str = "up0";
const BACKEND_INTERFACE: &str = "veth0";

/// Client address `i` (0-based).
pub fn client_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        198,
        18,
        250,
        u8::try_from(2 + i).expect("few client addresses"),
    )
}

/// The router's end of host `k`'s link.
pub fn router_side(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 251, u8::try_from(4 * k + 1).expect("few hosts"))
}

/// Host `k`'s address (its `up0`, BGP session and BIRD router id).
pub fn host_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 251, u8::try_from(4 * k + 2).expect("few hosts"))
}

/// Backend `k`'s address.
pub fn backend_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 252, u8::try_from(4 * k + 2).expect("few backends"))
}

fn router_to_backend(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 252, u8::try_from(4 * k + 1).expect("few backends"))
}

/// A scratch directory removed on drop.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One balancer host; its processes stop before its namespace goes (field order).
struct EcmpHost {
    balancer: Option<BalancerProcess>,
    bird: Option<Bird>,
    netns: Netns,
}

/// See the module documentation. Field order is drop order.
pub struct EcmpTopology {
    hosts: Vec<EcmpHost>,
    _servers: Vec<NameServer>,
    _decaps: Vec<BalancerProcess>,
    _passes: Vec<XdpAttachment>,
    router_bird: Option<Bird>,
    backends: Vec<Netns>,
    router: Netns,
    client: Netns,
    dir: ScratchDir,
}

impl EcmpTopology {
    /// Namespaces, links and addresses for `hosts` balancer hosts and `backends` backends,
    /// the router's BIRD, and on each backend the VIP, `balancer decap` and a name server.
    /// The hosts run nothing yet: see [`Self::start_hosts`]. `tag` goes into the namespace
    /// names (`bl-TAG-rt-SUFFIX`, …): keep it short.
    pub fn new(tag: &str, hosts: usize, backends: usize) -> anyhow::Result<EcmpTopology> {
        ensure!((1..=8).contains(&hosts), "1..=8 hosts, got {hosts}");
        ensure!(backends <= 16, "at most 16 backends, got {backends}");
        let suffix = unique_suffix();
        let dir = ScratchDir(std::env::temp_dir().join(format!("balancer-{tag}-{suffix}")));
        std::fs::create_dir_all(&dir.0)?;
        let client = Netns::new(format!("bl-{tag}-cl-{suffix}"))?;
        let router = Netns::new(format!("bl-{tag}-rt-{suffix}"))?;
        let no_rp_filter = [
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ];
        set_sysctls(
            &router,
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.fib_multipath_hash_policy", "3"),
                ("net.ipv4.fib_multipath_hash_fields", "0x0037"),
                no_rp_filter[0],
                no_rp_filter[1],
            ],
        )?;
        veth(
            &router,
            "rc",
            ROUTER_TO_CLIENT,
            24,
            &client,
            "c0",
            client_addr(0),
        )?;
        for i in 1..CLIENT_ADDRESSES {
            client.ip(&[
                "addr",
                "add",
                &format!("{}/24", client_addr(i)),
                "dev",
                "c0",
            ])?;
        }
        client.ip(&["route", "add", "default", "via", ROUTER_TO_CLIENT])?;
        client
            .run(|| disable_tx_checksum("c0"))?
            .context("turning tx checksum offload off on the client's c0")?;

        let mut host_list = Vec::new();
        let mut passes = Vec::new();
        for k in 1..=hosts {
            let netns = Netns::new(format!("bl-{tag}-lb{k}-{suffix}"))?;
            set_sysctls(&netns, &no_rp_filter)?;
            let router_if = format!("r{k}");
            veth(
                &router,
                &router_if,
                &router_side(k).to_string(),
                30,
                &netns,
                HOST_INTERFACE,
                host_addr(k),
            )?;
            netns.ip(&[
                "route",
                "add",
                "default",
                "via",
                &router_side(k).to_string(),
            ])?;
            if backends > 0 {
                passes.push(XdpAttachment::attach(
                    &router,
                    &router_if,
                    balancer_common::PROGRAM_PASS,
                )?);
            }
            host_list.push(EcmpHost {
                balancer: None,
                bird: None,
                netns,
            });
        }

        let mut backend_list = Vec::new();
        for k in 1..=backends {
            let netns = Netns::new(format!("bl-{tag}-b{k}-{suffix}"))?;
            set_sysctls(&netns, &no_rp_filter)?;
            veth(
                &router,
                &format!("b{k}"),
                &router_to_backend(k).to_string(),
                30,
                &netns,
                BACKEND_INTERFACE,
                backend_addr(k),
            )?;
            netns.ip(&[
                "route",
                "add",
                "default",
                "via",
                &router_to_backend(k).to_string(),
            ])?;
            netns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            backend_list.push(netns);
        }
        let decaps = backend_list
            .iter()
            .enumerate()
            .map(|(i, netns)| {
                let log = dir.0.join(format!("decap-b{}.log", i + 1));
                BalancerProcess::start_decap(netns, BACKEND_INTERFACE, &log)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // The echo servers listen on the VIP itself (held on lo), not on a wildcard.
        let vip_listen = format!("{VIP}:{PORT}");
        let servers = backend_list
            .iter()
            .enumerate()
            .map(|(i, netns)| NameServer::start_on(netns, &format!("b{}", i + 1), &vip_listen))
            .collect::<anyhow::Result<Vec<_>>>()?;

        let router_bird = Bird::start(&router, &dir.0, "router", &router_bird_config(hosts))?;
        Ok(EcmpTopology {
            hosts: host_list,
            _servers: servers,
            _decaps: decaps,
            _passes: passes,
            router_bird: Some(router_bird),
            backends: backend_list,
            router,
            client,
            dir,
        })
    }

    /// Starts BIRD and `balancer run` (with `config(k)`) on every host, then waits until the
    /// router's session with each is established.
    pub fn start_hosts(&mut self, config: impl Fn(usize) -> String) -> anyhow::Result<()> {
        for k in 1..=self.hosts.len() {
            self.start_host(k, &config(k))?;
        }
        let router = self.router_bird.as_ref().expect("router BIRD");
        for k in 1..=self.hosts.len() {
            router.wait_established(&format!("lb{k}"), Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// Starts BIRD and `balancer run` with `config` on host `k`.
    pub fn start_host(&mut self, k: usize, config: &str) -> anyhow::Result<()> {
        let dir = self.dir.0.clone();
        let host = self.host_mut(k);
        if host.bird.is_none() {
            host.bird = Some(Bird::start(
                &host.netns,
                &dir,
                &format!("lb{k}"),
                &host_bird_config(k),
            )?);
        }
        let path = dir.join(format!("balancer-lb{k}.toml"));
        std::fs::write(&path, config)?;
        host.balancer = Some(BalancerProcess::start(&host.netns, &path, ADMIN)?);
        Ok(())
    }

    /// `balancer run`'s config for host `k`: the `ipip` VIP [`VIP`]:[`PORT`] over the first
    /// `backends` backends (weight 1, no health check: they stay up), `[announce]` with a
    /// 1 s withdraw delay, and `extra_xdp` lines added to `[xdp]` (e.g. `flow_grace = "0s"`).
    pub fn forwarding_config(&self, k: usize, backends: usize, extra_xdp: &str) -> String {
        let list: Vec<String> = (1..=backends)
            .map(|b| format!("{{ address = \"{}\" }}", backend_addr(b)))
            .collect();
        format!(
            r#"
[admin]
listen = "{ADMIN}"

[xdp]
interface = "{HOST_INTERFACE}"
max_vips = 2
max_backends = 8
max_connections = 65536
{extra_xdp}

[announce]
withdraw_delay = "1s"
state_file = "{state}"

[[vip]]
name = "{VIP_NAME}"
address = "{VIP}"
port = {PORT}
protocol = "tcp"
forward = "ipip"
backends = [ {list} ]
"#,
            state = self.dir.0.join(format!("announce-lb{k}.json")).display(),
            list = list.join(", "),
        )
    }

    // ---- accessors ----

    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    fn host(&self, k: usize) -> &EcmpHost {
        assert!((1..=self.hosts.len()).contains(&k), "no host {k}");
        &self.hosts[k - 1]
    }

    fn host_mut(&mut self, k: usize) -> &mut EcmpHost {
        assert!((1..=self.hosts.len()).contains(&k), "no host {k}");
        &mut self.hosts[k - 1]
    }

    /// Host `k`'s balancer; fails when it was stopped.
    pub fn balancer(&self, k: usize) -> anyhow::Result<&BalancerProcess> {
        self.host(k)
            .balancer
            .as_ref()
            .with_context(|| format!("the balancer of lb{k} is not running"))
    }

    pub fn host_netns(&self, k: usize) -> &Netns {
        &self.host(k).netns
    }

    pub fn backend_netns(&self, k: usize) -> &Netns {
        &self.backends[k - 1]
    }

    pub fn client(&self) -> &Netns {
        &self.client
    }

    pub fn router(&self) -> &Netns {
        &self.router
    }

    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    // ---- the router's view ----

    /// The router's route to the VIP, as `ip route show` prints it.
    pub fn route(&self) -> anyhow::Result<String> {
        host_routes(&self.router.path(), VIP.parse()?, "main")
    }

    /// Waits until the router's route to the VIP has `hops` next hops; returns how long that
    /// took.
    pub fn wait_next_hops(&self, hops: usize, limit: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let route = self.route()?;
            if next_hops(&route) == hops {
                return Ok(start.elapsed());
            }
            ensure!(
                start.elapsed() < limit,
                "the router's route to {VIP} should have {hops} next hops within {limit:?}:\n{route}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The host the router sends the TCP flow `source` → VIP:PORT to, by the kernel's own
    /// multipath hash (`ip route get … iif rc ipproto tcp sport … dport …` builds the packet
    /// the forwarding path would hash).
    pub fn host_of(&self, source: SocketAddrV4) -> anyhow::Result<usize> {
        let out = run_in(
            &self.router.path(),
            "ip",
            &[
                "-j",
                "route",
                "get",
                VIP,
                "from",
                &source.ip().to_string(),
                "iif",
                "rc",
                "ipproto",
                "tcp",
                "sport",
                &source.port().to_string(),
                "dport",
                &PORT.to_string(),
            ],
        )?;
        let routes: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("ip -j route get: {out}"))?;
        let dev = routes[0]["dev"]
            .as_str()
            .with_context(|| format!("no dev in {out}"))?;
        dev.strip_prefix('r')
            .and_then(|k| k.parse().ok())
            .filter(|k| (1..=self.hosts.len()).contains(k))
            .with_context(|| format!("the route to {VIP} from {source} goes via {dev}: {out}"))
    }

    // ---- each host's view ----

    fn state(&self, k: usize) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self.balancer(k)?.admin_get("/api/state")?;
        ensure!(status == 200, "/api/state on lb{k}: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// Packets of the VIP seen by host `k`'s XDP program.
    pub fn vip_packets(&self, k: usize) -> anyhow::Result<u64> {
        self.state(k)?["xdp"]["vips"][0]["packets"]
            .as_u64()
            .context("xdp.vips[0].packets")
    }

    /// Host `k`'s connection-table events (`hit`, `miss`, `grace_hit`, …).
    pub fn flow_event(&self, k: usize, event: &str) -> anyhow::Result<u64> {
        let state = self.state(k)?;
        state["xdp"]["flow_events"][event]
            .as_u64()
            .with_context(|| format!("xdp.flow_events.{event} in {}", state["xdp"]))
    }

    /// Waits until every backend of host `k`'s VIP has a resolved next hop and
    /// `up` of them are up.
    pub fn wait_backends(&self, k: usize, up: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.state(k)?;
            let backends = state["xdp"]["vips"][0]["backends"]
                .as_array()
                .context("xdp.vips[0].backends")?
                .clone();
            let resolved = backends.iter().all(|b| !b["next_hop"].is_null());
            let count = backends.iter().filter(|b| b["state"] == "up").count();
            if resolved && count == up {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "lb{k}: backends not resolved with {up} up within 20 s: {backends:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `POST /api/vips/web/backends/ADDR/ACTION` on host `k` (`enable`, `disable`, `drain`).
    pub fn backend_action(&self, k: usize, backend: usize, action: &str) -> anyhow::Result<()> {
        let path = format!(
            "/api/vips/{VIP_NAME}/backends/{}/{action}",
            backend_addr(backend)
        );
        let (status, body) = self.balancer(k)?.admin_post(&path)?;
        ensure!(status == 200, "POST {path} on lb{k}: {status} {body}");
        Ok(())
    }

    // ---- losing a host ----

    /// SIGTERM to host `k`'s balancer, as an operator stops it: it withdraws its routes,
    /// waits `announce.withdraw_delay`, exits. Returns at once; [`Self::wait_host_exit`] reaps
    /// it. BIRD keeps running.
    pub fn sigterm_host(&mut self, k: usize) -> anyhow::Result<()> {
        self.host_mut(k)
            .balancer
            .as_mut()
            .with_context(|| format!("the balancer of lb{k} is not running"))?
            .signal(libc::SIGTERM)
    }

    /// Waits for host `k`'s balancer to exit (after [`Self::sigterm_host`]); fails unless it
    /// exits successfully within 20 s.
    pub fn wait_host_exit(&mut self, k: usize) -> anyhow::Result<()> {
        let mut balancer = self
            .host_mut(k)
            .balancer
            .take()
            .with_context(|| format!("the balancer of lb{k} is not running"))?;
        let status = balancer.wait_exit(Duration::from_secs(20))?;
        ensure!(
            status.success(),
            "balancer on lb{k} exited with {status}; its log:\n{}",
            balancer.log()
        );
        Ok(())
    }

    /// [`Self::sigterm_host`], then [`Self::wait_host_exit`].
    pub fn terminate_host(&mut self, k: usize) -> anyhow::Result<()> {
        self.sigterm_host(k)?;
        self.wait_host_exit(k)
    }

    /// Host `k` dies: from now on nothing enters or leaves it (nftables drops every frame on
    /// `up0`'s ingress and every packet it sends), then its balancer and BIRD are killed with
    /// SIGKILL. The link stays up, so the router learns only when its BGP hold timer expires.
    pub fn kill_host(&mut self, k: usize) -> anyhow::Result<()> {
        let path = self.host(k).netns.path();
        let drop_all = [
            "add table netdev dead".to_string(),
            format!(
                "add chain netdev dead in {{ type filter hook ingress device \"{HOST_INTERFACE}\" priority -500; policy drop; }}"
            ),
            "add table inet dead".to_string(),
            "add chain inet dead out { type filter hook output priority -500; policy drop; }"
                .to_string(),
        ];
        for rule in &drop_all {
            run_in(&path, "nft", &[rule.as_str()])
                .context("nftables (Debian package nftables; `cargo xtask setup` installs it)")?;
        }
        let host = self.host_mut(k);
        if let Some(mut balancer) = host.balancer.take() {
            balancer.signal(libc::SIGKILL)?;
            let _ = balancer.wait_exit(Duration::from_secs(10))?;
        }
        if let Some(bird) = host.bird.as_mut() {
            bird.kill();
        }
        Ok(())
    }

    // ---- client traffic ----

    /// Opens `count` TCP connections to the VIP from the client, connection `i` from client
    /// address `i % CLIENT_ADDRESSES` and an ephemeral port, and reads each one's greeting
    /// (its backend). Each waits `timeout` for an echo (see [`EchoLoad`]).
    pub fn open_flows(&self, count: usize, timeout: Duration) -> anyhow::Result<Vec<EchoFlow>> {
        let target = SocketAddr::new(VIP.parse::<IpAddr>()?, PORT);
        self.client.run(move || {
            (0..count)
                .map(|i| {
                    EchoFlow::open(client_addr(i % CLIENT_ADDRESSES), target, timeout)
                        .with_context(|| format!("connection {i} of {count} to {target}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?
    }

    /// Opens `count` new TCP flows from the client to the VIP (each from a new source port)
    /// and counts those the other end refused (a reset): for a `local` VIP nothing listens on.
    pub fn refused_flows(&self, count: usize) -> anyhow::Result<usize> {
        let target = SocketAddr::new(VIP.parse::<IpAddr>()?, PORT);
        self.client.run(move || {
            (0..count)
                .filter(|_| {
                    matches!(
                        TcpStream::connect_timeout(&target, Duration::from_secs(2)),
                        Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused
                    )
                })
                .count()
        })
    }
}

impl Drop for EcmpTopology {
    fn drop(&mut self) {
        // Every balancer gets SIGTERM first (each then withdraws and waits its delay at the
        // same time); each is reaped as its host drops.
        for host in &mut self.hosts {
            if let Some(balancer) = host.balancer.as_mut() {
                let _ = balancer.signal(libc::SIGTERM);
            }
        }
        for host in &mut self.hosts {
            if let Some(mut balancer) = host.balancer.take() {
                let _ = balancer.wait_exit(Duration::from_secs(10));
            }
        }
        // The rest goes with the fields, in order.
    }
}

/// Next hops of a route as `ip route show` prints it: one per "nexthop" line, or 1.
pub fn next_hops(route: &str) -> usize {
    if route.trim().is_empty() {
        0
    } else {
        route.matches("nexthop").count().max(1)
    }
}

/// A veth pair `a_name` (in `a`, `a_address/prefix`) ↔ `b_name` (in `b`), both up.
fn veth(
    a: &Netns,
    a_name: &str,
    a_address: &str,
    prefix: u8,
    b: &Netns,
    b_name: &str,
    b_address: Ipv4Addr,
) -> anyhow::Result<()> {
    a.ip(&[
        "link",
        "add",
        a_name,
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ])?;
    a.ip(&[
        "addr",
        "add",
        &format!("{a_address}/{prefix}"),
        "dev",
        a_name,
    ])?;
    b.ip(&[
        "addr",
        "add",
        &format!("{b_address}/{prefix}"),
        "dev",
        b_name,
    ])?;
    a.ip(&["link", "set", a_name, "up"])?;
    b.ip(&["link", "set", b_name, "up"])?;
    Ok(())
}

fn bgp_timers() -> &'static str {
    "hold time 3; connect retry time 1; connect delay time 1; error wait time 1, 2;"
}

fn router_bird_config(hosts: usize) -> String {
    let mut config = format!(
        "router id {ROUTER_TO_CLIENT};\nprotocol device {{}}\n\
         protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n"
    );
    for k in 1..=hosts {
        config.push_str(&format!(
            "protocol bgp lb{k} {{\n    local {r} as 65000; neighbor {h} as 65001;\n    {timers}\n    \
             ipv4 {{ import all; export none; }};\n}}\n",
            r = router_side(k),
            h = host_addr(k),
            timers = bgp_timers(),
        ));
    }
    config
}

fn host_bird_config(k: usize) -> String {
    format!(
        "router id {h};\nprotocol device {{}}\ninclude \"{snippet}\";\n\
         protocol bgp router4 from balancer_peer {{\n    local {h} as 65001; neighbor {r} as 65000;\n    {timers}\n}}\n",
        h = host_addr(k),
        r = router_side(k),
        snippet = packaged_snippet().display(),
        timers = bgp_timers(),
    )
}

// ---- long-lived echo flows ----

/// A TCP connection from the client to the VIP, kept open, that echoes.
pub struct EchoFlow {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    local: SocketAddrV4,
    backend: String,
}

impl EchoFlow {
    /// Connects from `source` (ephemeral port) in the calling thread's namespace and reads
    /// the greeting.
    fn open(source: Ipv4Addr, target: SocketAddr, timeout: Duration) -> anyhow::Result<EchoFlow> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::from((source, 0)).into())?;
        socket.connect_timeout(&target.into(), Duration::from_secs(3))?;
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.set_nodelay(true)?;
        let mut greeting = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            let n = stream.read(&mut byte).context("reading the greeting")?;
            ensure!(n == 1, "closed before the greeting ended");
            if byte[0] == b'\n' {
                break;
            }
            greeting.push(byte[0]);
            ensure!(greeting.len() <= 64, "greeting too long");
        }
        stream.set_read_timeout(Some(timeout))?;
        let SocketAddr::V4(local) = stream.local_addr()? else {
            bail!("an IPv4 connection has an IPv6 local address")
        };
        Ok(EchoFlow {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
            local,
            backend: String::from_utf8_lossy(&greeting).into_owned(),
        })
    }

    pub fn local(&self) -> SocketAddrV4 {
        self.local
    }

    /// The backend's greeting, e.g. `b2`.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Sends line `n` and expects it back.
    fn echo(&mut self, n: u64) -> anyhow::Result<()> {
        let line = format!("ping {n}\n");
        self.writer.write_all(line.as_bytes())?;
        let mut echo = String::new();
        let got = self.reader.read_line(&mut echo)?;
        ensure!(got > 0, "connection closed");
        ensure!(echo == line, "expected {line:?} back, got {echo:?}");
        Ok(())
    }
}

/// What one flow of an [`EchoLoad`] saw.
#[derive(Debug, Clone)]
pub struct FlowReport {
    pub local: SocketAddrV4,
    pub backend: String,
    pub echoes: u64,
    /// The longest time between two echoes (or from the start to the first), pauses included.
    pub longest_stall: Duration,
    /// The first failure (reset, close, a wrong or missing echo within the timeout); the flow
    /// stopped there.
    pub error: Option<String>,
}

/// Every flow on its own thread, echoing a line, then pausing `period(i)`, until stopped.
pub struct EchoLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<FlowReport>>,
}

impl EchoLoad {
    pub fn start(flows: Vec<EchoFlow>, period: impl Fn(usize) -> Duration) -> EchoLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = flows
            .into_iter()
            .enumerate()
            .map(|(i, mut flow)| {
                let stop = stop.clone();
                let pause = period(i);
                std::thread::spawn(move || {
                    let mut report = FlowReport {
                        local: flow.local,
                        backend: flow.backend.clone(),
                        echoes: 0,
                        longest_stall: Duration::ZERO,
                        error: None,
                    };
                    let mut last = Instant::now();
                    loop {
                        // One more echo after the stop: every flow is checked at the end.
                        let stopping = stop.load(Ordering::Relaxed);
                        if let Err(err) = flow.echo(report.echoes + 1) {
                            report.error = Some(format!(
                                "{err:#} (after {} echoes, {:?} since the last)",
                                report.echoes,
                                last.elapsed()
                            ));
                            break;
                        }
                        let now = Instant::now();
                        report.longest_stall = report.longest_stall.max(now - last);
                        last = now;
                        report.echoes += 1;
                        if stopping {
                            break;
                        }
                        std::thread::sleep(pause);
                    }
                    report
                })
            })
            .collect();
        EchoLoad { stop, threads }
    }

    /// Stops the load: every flow echoes once more, then reports.
    pub fn finish(self) -> Vec<FlowReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|thread| thread.join().expect("echo thread panicked"))
            .collect()
    }
}

/// The default pause of flow `i`: 50 to 100 ms, so the flows do not echo in step.
pub fn echo_period(i: usize) -> Duration {
    Duration::from_millis(50 + (i as u64 * 7) % 51)
}
