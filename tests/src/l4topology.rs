//! The L4 (XDP) end-to-end topology: a client, a balancer host and N backends on one
//! L2 segment (a Linux bridge in its own namespace), with real `name_server` backends
//! and client-side traffic helpers.
//!
//! ```text
//!   client ─┐                      198.18.0.0/24, 2001:2::/64
//!   lb ─────┤ br0 (namespace br)   client .1 / ::1, lb .2 / ::2,
//!   b1 ─────┤                      backend K .(10+K) / ::(10+K in hex)
//!   bN ─────┘
//! ```
//!
//! Every host has `veth0`; its peer is a port of `br0` in the `br` namespace, named
//! `p-client`, `p-lb`, `p-bK`. VIPs ([`L4Topology::add_vip`]) sit on the backends' `lo`
//! (classic direct server return: `arp_ignore=1`, `arp_announce=2`, `rp_filter=0`) and are
//! routed from the client via the lb, which does not hold them: the XDP program forwards
//! them. MAC addresses are fixed (`02:00:c6:12:00:XX`, XX = the last address byte), so
//! a balancer config can name backends by MAC.
//!
//! The client's `veth0` sends fully checksummed packets (tx checksum offload off):
//! a frame that an XDP program sends back with `XDP_TX` loses the skb's "checksum to be
//! completed" state, so a partial checksum would reach the backend as a bad one.
//!
//! Everything (processes, XDP programs, namespaces) is removed on drop, also on panic,
//! and is recorded for [`crate::cleanup_everything`].

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    Family,
    child::ChildGuard,
    netns::{Netns, unique_suffix},
    process::{BalancerProcess, balancer_binary},
};

/// Every host's interface towards the bridge.
const HOST_INTERFACE: &str = "veth0";
const BRIDGE_INTERFACE: &str = "br0";
const LB_PEER: &str = "p-lb";
/// Backend K gets 198.18.0.(10+K): at most 200 backends keeps every address in the /24.
pub const MAX_BACKENDS: usize = 200;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const GREETING_TIMEOUT: Duration = Duration::from_secs(3);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
const UDP_TIMEOUT: Duration = Duration::from_secs(1);
const UDP_ATTEMPTS: usize = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Parallel connections in [`L4Topology::connect_many`].
const CONNECT_WORKERS: usize = 4;

/// The `name_server` binary: `$BALANCER_NAME_SERVER`, else the one next to
/// [`balancer_binary`], else the workspace's debug build (cargo builds it before this
/// package's integration tests).
pub fn name_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BALANCER_NAME_SERVER") {
        return PathBuf::from(path);
    }
    let beside = balancer_binary().with_file_name("name_server");
    if beside.is_file() {
        return beside;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/name_server")
}

/// The eBPF object (for its pass and decap programs): `$BALANCER_EBPF_OBJECT` (set by `cargo xtask`),
/// else where `cargo xtask build` puts it.
pub fn ebpf_object() -> PathBuf {
    if let Some(path) = std::env::var_os("BALANCER_EBPF_OBJECT") {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ebpf/bpfel-unknown-none/release/balancer")
}

/// Client, balancer host, bridge and backends; see the module documentation.
pub struct L4Topology {
    // Dropped explicitly first (see Drop): servers, then the XDP programs; then the
    // namespaces as fields, in this order.
    servers: Vec<Option<NameServer>>,
    server_port: Option<u16>,
    xdp: Mutex<Vec<AttachedXdp>>,
    client: Netns,
    lb: Netns,
    backends: Vec<Netns>,
    /// Hosts added with [`L4Topology::add_host`] (routers, …).
    extra: Vec<Netns>,
    bridge: Netns,
}

impl L4Topology {
    pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    pub const LB_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
    pub const LB_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);

    /// Builds the namespaces, the bridge and the addresses; no VIP, no server yet.
    /// `tag` goes into the namespace names (`bl-TAG-cl-SUFFIX`, …): keep it short.
    pub fn new(tag: &str, backend_count: usize) -> anyhow::Result<L4Topology> {
        ensure!(
            (1..=MAX_BACKENDS).contains(&backend_count),
            "backend_count must be 1..={MAX_BACKENDS}, got {backend_count}"
        );
        let suffix = unique_suffix();
        // If anything below fails, the namespaces made so far are dropped (and deleted).
        let bridge = Netns::new(format!("bl-{tag}-br-{suffix}"))?;
        let client = Netns::new(format!("bl-{tag}-cl-{suffix}"))?;
        let lb = Netns::new(format!("bl-{tag}-lb-{suffix}"))?;
        let backends = (1..=backend_count)
            .map(|k| Netns::new(format!("bl-{tag}-b{k}-{suffix}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let topology = L4Topology {
            servers: (0..backend_count).map(|_| None).collect(),
            server_port: None,
            xdp: Mutex::new(Vec::new()),
            client,
            lb,
            backends,
            extra: Vec::new(),
            bridge,
        };
        topology
            .wire()
            .with_context(|| format!("building the L4 topology bl-{tag}-*-{suffix}"))?;
        Ok(topology)
    }

    fn wire(&self) -> anyhow::Result<()> {
        // The bridge namespace only switches frames: no IPv6 of its own (no RS/MLD noise).
        set_sysctls(
            &self.bridge,
            &[
                ("net.ipv6.conf.all.disable_ipv6", "1"),
                ("net.ipv6.conf.default.disable_ipv6", "1"),
            ],
        )?;
        // Defaults first, so veth0 inherits them when it is created.
        let host = [
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.default.dad_transmits", "0"),
            ("net.ipv6.conf.all.accept_ra", "0"),
            ("net.ipv6.conf.default.accept_ra", "0"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ];
        set_sysctls(&self.client, &host)?;
        set_sysctls(&self.lb, &host)?;
        let mut backend = host.to_vec();
        backend.extend([
            // Classic DSR: the VIP on lo is never announced or answered for on veth0.
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.all.arp_announce", "2"),
        ]);
        for netns in &self.backends {
            set_sysctls(netns, &backend)?;
        }

        // STP off and no forward delay: ports forward as soon as they are up. No multicast
        // snooping: neighbour solicitations are flooded from the first frame on.
        self.bridge.ip(&[
            "link",
            "add",
            BRIDGE_INTERFACE,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        self.bridge.ip(&["link", "set", BRIDGE_INTERFACE, "up"])?;

        self.plug(&self.client, "p-client", 1)?;
        self.plug(&self.lb, LB_PEER, 2)?;
        for k in 1..=self.backends.len() {
            self.plug(self.backend(k), &format!("p-b{k}"), host_byte(k))?;
        }

        let interface = HOST_INTERFACE.to_string();
        self.client
            .run(move || disable_tx_checksum(&interface))?
            .context("turning tx checksum offload off on the client's veth0")?;
        Ok(())
    }

    /// veth0 in `netns` (with a fixed MAC and the addresses .BYTE / ::BYTE), its peer
    /// `peer` a port of the bridge; both up.
    fn plug(&self, netns: &Netns, peer: &str, byte: u8) -> anyhow::Result<()> {
        self.bridge.ip(&[
            "link",
            "add",
            peer,
            "type",
            "veth",
            "peer",
            "name",
            HOST_INTERFACE,
            "address",
            &mac(byte),
            "netns",
            netns.name(),
        ])?;
        self.bridge
            .ip(&["link", "set", peer, "master", BRIDGE_INTERFACE, "up"])?;
        netns.ip(&[
            "addr",
            "add",
            &format!("{}/24", Ipv4Addr::new(198, 18, 0, byte)),
            "dev",
            HOST_INTERFACE,
        ])?;
        netns.ip(&[
            "addr",
            "add",
            &format!("{}/64", v6_host(byte)),
            "dev",
            HOST_INTERFACE,
            "nodad",
        ])?;
        netns.ip(&["link", "set", HOST_INTERFACE, "up"])?;
        Ok(())
    }

    /// One more host on the segment (a router, …): namespace `bl-TAG-NAME-SUFFIX` of this
    /// topology's tag and suffix, `veth0` with 198.18.0.BYTE/24 and 2001:2::BYTE/64 (hex)
    /// and the MAC `02:00:c6:12:00:BYTE`, plugged into the bridge as `p-NAME`. `byte` must be
    /// free: not 1 or 2, nor a backend's (10 + K). Removed with the topology.
    pub fn add_host(&mut self, name: &str, byte: u8) -> anyhow::Result<&Netns> {
        let taken =
            |b: u8| b == 1 || b == 2 || (11..=10 + self.backends.len()).contains(&usize::from(b));
        ensure!(
            !taken(byte) && byte != 0 && byte != 255,
            "address byte {byte} is taken"
        );
        let netns_name = self.client.name().replacen("-cl-", &format!("-{name}-"), 1);
        let netns = Netns::new(netns_name)?;
        set_sysctls(
            &netns,
            &[
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv6.conf.default.dad_transmits", "0"),
                ("net.ipv6.conf.all.accept_ra", "0"),
                ("net.ipv6.conf.default.accept_ra", "0"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ],
        )?;
        self.plug(&netns, &format!("p-{name}"), byte)?;
        self.extra.push(netns);
        Ok(self.extra.last().expect("just pushed"))
    }

    /// Puts `vip` on `lo` of every backend and routes it from the client via the lb.
    pub fn add_vip(&self, vip: IpAddr) -> anyhow::Result<()> {
        let prefix = host_prefix(vip);
        for netns in &self.backends {
            netns.ip(&["addr", "replace", &prefix, "dev", "lo"])?;
        }
        self.route_vip_via(vip, self.lb_addr(family(vip)))
    }

    /// Routes `vip` (as a host route) from the client via `next_hop`, replacing any
    /// earlier route: e.g. straight at a backend, to test without a balancer.
    pub fn route_vip_via(&self, vip: IpAddr, next_hop: IpAddr) -> anyhow::Result<()> {
        ensure!(
            vip.is_ipv4() == next_hop.is_ipv4(),
            "VIP {vip} and next hop {next_hop} are of different families"
        );
        self.client.ip(&[
            "route",
            "replace",
            &host_prefix(vip),
            "via",
            &next_hop.to_string(),
        ])
    }

    /// Attaches the eBPF object's `XDP_PASS` program to the lb's peer in the bridge
    /// namespace (`p-lb`), in driver mode: without it, frames the balancer sends back with
    /// `XDP_TX` are never delivered. Kept until the topology drops; calling again is a no-op.
    pub fn attach_pass_on_lb_peer(&self) -> anyhow::Result<()> {
        self.attach_xdp(&self.bridge, LB_PEER, balancer_common::PROGRAM_PASS)
    }

    /// Loads the eBPF object ([`ebpf_object`]) and attaches its XDP program `program`
    /// (e.g. `balancer_common::PROGRAM_DECAP` on a backend's `veth0`) to `interface` in
    /// `netns`, in driver mode, with the object's maps as created at load. Kept until the
    /// topology drops; attaching the same program to the same interface again is a no-op.
    pub fn attach_xdp(&self, netns: &Netns, interface: &str, program: &str) -> anyhow::Result<()> {
        let mut attached = self.xdp.lock().unwrap_or_else(|e| e.into_inner());
        let path = netns.path();
        if attached
            .iter()
            .any(|a| a.netns_path == path && a.interface == interface && a.program == program)
        {
            return Ok(());
        }
        let attachment = XdpAttachment::attach(netns, interface, program)?;
        attached.push(AttachedXdp {
            netns_path: path,
            interface: interface.to_string(),
            program: program.to_string(),
            _attachment: attachment,
        });
        Ok(())
    }

    /// Whether an XDP program is attached to `p-lb` (per `ip -d link`).
    pub fn lb_peer_has_xdp(&self) -> anyhow::Result<bool> {
        let link = crate::run_in(&self.bridge.path(), "ip", &["-d", "link", "show", LB_PEER])?;
        Ok(link.contains("prog/xdp"))
    }

    // ---- accessors ----

    pub fn client(&self) -> &Netns {
        &self.client
    }

    pub fn lb(&self) -> &Netns {
        &self.lb
    }

    pub fn bridge(&self) -> &Netns {
        &self.bridge
    }

    /// Backend `k`, 1-based. Panics when out of range.
    pub fn backend(&self, k: usize) -> &Netns {
        self.check_backend(k);
        &self.backends[k - 1]
    }

    pub fn backend_count(&self) -> usize {
        self.backends.len()
    }

    /// `b1`, `b2`, …: the names the name servers answer with.
    pub fn backend_names(&self) -> Vec<String> {
        (1..=self.backends.len()).map(backend_name).collect()
    }

    /// The interface the balancer attaches to, in the lb namespace.
    pub fn lb_interface(&self) -> &str {
        HOST_INTERFACE
    }

    /// The lb's peer, a bridge port in the bridge namespace.
    pub fn lb_peer_interface(&self) -> &str {
        LB_PEER
    }

    pub fn client_addr_v4(&self) -> Ipv4Addr {
        Self::CLIENT_V4
    }

    pub fn client_addr_v6(&self) -> Ipv6Addr {
        Self::CLIENT_V6
    }

    pub fn lb_addr_v4(&self) -> Ipv4Addr {
        Self::LB_V4
    }

    pub fn lb_addr_v6(&self) -> Ipv6Addr {
        Self::LB_V6
    }

    pub fn client_addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => Self::CLIENT_V4.into(),
            Family::V6 => Self::CLIENT_V6.into(),
        }
    }

    pub fn lb_addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => Self::LB_V4.into(),
            Family::V6 => Self::LB_V6.into(),
        }
    }

    /// 198.18.0.(10+k).
    pub fn backend_addr_v4(&self, k: usize) -> Ipv4Addr {
        self.check_backend(k);
        Ipv4Addr::new(198, 18, 0, host_byte(k))
    }

    /// 2001:2::(10+k), e.g. 2001:2::b for backend 1.
    pub fn backend_addr_v6(&self, k: usize) -> Ipv6Addr {
        self.check_backend(k);
        v6_host(host_byte(k))
    }

    pub fn backend_addr(&self, k: usize, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.backend_addr_v4(k).into(),
            Family::V6 => self.backend_addr_v6(k).into(),
        }
    }

    /// Fixed MAC of backend `k`'s veth0: `02:00:c6:12:00:XX`, XX = 10+k in hex.
    /// The `backends = [ … ]` array of a balancer config: backend K with `weights[K-1]`.
    pub fn backends_toml(&self, family: Family, weights: &[u32]) -> String {
        let entries: Vec<String> = weights
            .iter()
            .enumerate()
            .map(|(i, weight)| {
                format!(
                    "{{ address = \"{}\", weight = {weight} }}",
                    self.backend_addr(i + 1, family)
                )
            })
            .collect();
        format!("[ {} ]", entries.join(", "))
    }

    pub fn backend_mac(&self, k: usize) -> String {
        self.check_backend(k);
        mac(host_byte(k))
    }

    pub fn client_mac(&self) -> String {
        mac(1)
    }

    pub fn lb_mac(&self) -> String {
        mac(2)
    }

    fn check_backend(&self, k: usize) {
        assert!(
            (1..=self.backends.len()).contains(&k),
            "backend {k} does not exist (1..={})",
            self.backends.len()
        );
    }

    // ---- name servers ----

    /// Starts `name_server --name bK` in every backend (those not already running),
    /// listening on `[::]:port` (dual stack) for TCP and UDP; returns once all say `ready`.
    pub fn start_name_servers(&mut self, port: u16) -> anyhow::Result<()> {
        self.server_port = Some(port);
        for k in 1..=self.backends.len() {
            if self.servers[k - 1].is_none() {
                self.start_name_server(k)?;
            }
        }
        Ok(())
    }

    /// (Re)starts backend `k`'s name server on the port given to [`Self::start_name_servers`].
    pub fn start_name_server(&mut self, k: usize) -> anyhow::Result<()> {
        self.check_backend(k);
        let port = self
            .server_port
            .context("call start_name_servers first (it sets the port)")?;
        ensure!(
            self.servers[k - 1].is_none(),
            "the name server of b{k} is already running"
        );
        let server = NameServer::start(&self.backends[k - 1], &backend_name(k), port)?;
        self.servers[k - 1] = Some(server);
        Ok(())
    }

    /// Stops backend `k`'s name server (SIGTERM, reaped; SIGKILL after 5 s).
    pub fn stop_name_server(&mut self, k: usize) -> anyhow::Result<ExitStatus> {
        self.check_backend(k);
        let server = self.servers[k - 1]
            .take()
            .with_context(|| format!("the name server of b{k} is not running"))?;
        server.stop()
    }

    pub fn name_server_running(&self, k: usize) -> bool {
        self.check_backend(k);
        self.servers[k - 1].is_some()
    }

    // ---- client traffic ----

    /// Opens `count` TCP connections to `vip` from the client (up to 4 at a time), reads
    /// each one's greeting and closes it; returns the backend names in connection order.
    ///
    /// With `source_port_base`, connection `i` uses source port `base + i` and is closed
    /// with a reset (SO_LINGER 0), leaving no TIME_WAIT, so the same 5-tuples can be used
    /// again at once. Fails on the first failed connection, naming it.
    pub fn connect_many(
        &self,
        vip: SocketAddr,
        count: usize,
        source_port_base: Option<u16>,
    ) -> anyhow::Result<Vec<String>> {
        if let Some(base) = source_port_base {
            ensure!(
                base != 0 && usize::from(base) + count <= 65536,
                "source ports {base}..{base}+{count} do not fit in 1..=65535"
            );
        }
        self.client
            .run(move || connect_many_here(vip, count, source_port_base))?
    }

    /// One TCP connection to `vip` that stays open (read its backend with
    /// [`LongLived::backend`], check it with [`LongLived::ping`]).
    pub fn open_long_lived(&self, vip: SocketAddr) -> anyhow::Result<LongLived> {
        let (stream, backend) = self
            .client
            .run(move || -> anyhow::Result<(TcpStream, String)> {
                let mut stream = connect(vip, None)?;
                let backend = read_greeting(&mut stream)?;
                Ok((stream, backend))
            })?
            .with_context(|| format!("long-lived connection to {vip}"))?;
        stream.set_read_timeout(Some(PING_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        Ok(LongLived {
            reader: BufReader::new(stream),
            writer,
            backend,
            vip,
            pings: 0,
        })
    }

    /// Sends `count` UDP datagrams to `vip` from the client, each from a fresh socket
    /// (fresh source port), connected to the VIP so only a reply from the VIP counts.
    /// A datagram without reply within 1 s is sent again, up to 3 times in all.
    pub fn udp_names(&self, vip: SocketAddr, count: usize) -> anyhow::Result<Vec<String>> {
        self.client.run(move || {
            (0..count)
                .map(|i| udp_name(vip).with_context(|| format!("datagram {i} of {count}")))
                .collect()
        })?
    }
}

impl Drop for L4Topology {
    fn drop(&mut self) {
        // All servers get SIGTERM first, then each is reaped.
        let mut servers: Vec<NameServer> =
            self.servers.iter_mut().filter_map(Option::take).collect();
        for server in &mut servers {
            server.terminate();
        }
        for server in servers {
            let _ = server.stop();
        }
        // Detach inside each program's namespace (a netlink-attached program would be
        // detached by ifindex in the calling thread's namespace).
        drop(std::mem::take(
            self.xdp.get_mut().unwrap_or_else(|e| e.into_inner()),
        ));
        // The namespaces (and with them every veth and the bridge) go with the fields.
    }
}

/// An XDP program attached by [`L4Topology::attach_xdp`].
struct AttachedXdp {
    netns_path: String,
    interface: String,
    program: String,
    _attachment: XdpAttachment,
}

/// One program of the eBPF object ([`ebpf_object`]) attached to an interface of a namespace
/// in driver mode, with the object's maps as created at load (e.g. `PROGRAM_PASS` on the far
/// end of a veth that receives `XDP_TX` frames, or `PROGRAM_DECAP`). Detached on drop, inside
/// its namespace (a netlink-attached program is detached by ifindex in the calling thread's
/// namespace).
pub struct XdpAttachment {
    netns_path: String,
    ebpf: Option<aya::Ebpf>,
}

impl XdpAttachment {
    pub fn attach(netns: &Netns, interface: &str, program: &str) -> anyhow::Result<XdpAttachment> {
        let object = ebpf_object();
        ensure!(
            object.is_file(),
            "the eBPF object {} does not exist: build it with `cargo xtask build` \
             (or set BALANCER_EBPF_OBJECT)",
            object.display()
        );
        let (name, iface) = (program.to_string(), interface.to_string());
        let ebpf = netns
            .run(move || -> anyhow::Result<aya::Ebpf> {
                use aya::programs::{Xdp, XdpMode};
                let mut ebpf = aya::Ebpf::load_file(&object)
                    .with_context(|| format!("loading {}", object.display()))?;
                let program: &mut Xdp = ebpf
                    .program_mut(&name)
                    .with_context(|| format!("{} has no program {name}", object.display()))?
                    .try_into()
                    .with_context(|| format!("{name} is not an XDP program"))?;
                program.load().with_context(|| format!("loading {name}"))?;
                program
                    .attach(&iface, XdpMode::Driver)
                    .with_context(|| format!("attaching {name} to {iface} (driver mode)"))?;
                Ok(ebpf)
            })?
            .with_context(|| format!("in {}", netns.name()))?;
        Ok(XdpAttachment {
            netns_path: netns.path(),
            ebpf: Some(ebpf),
        })
    }
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        if let Some(ebpf) = self.ebpf.take() {
            let _ = crate::in_netns(&self.netns_path, move || drop(ebpf));
        }
    }
}

/// A TCP connection to a VIP from the client, kept open.
pub struct LongLived {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    backend: String,
    vip: SocketAddr,
    pings: u64,
}

impl LongLived {
    /// The backend's greeting, e.g. `b2`.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.writer.local_addr()?)
    }

    /// How long [`Self::ping`] waits for its echo (2 s unless set): a test that measures
    /// stalls sets it longer, so that a long stall is measured rather than a failure.
    pub fn set_ping_timeout(&mut self, timeout: Duration) -> anyhow::Result<()> {
        Ok(self.reader.get_ref().set_read_timeout(Some(timeout))?)
    }

    /// Sends a line and expects it echoed within 2 s (see [`Self::set_ping_timeout`]).
    pub fn ping(&mut self) -> anyhow::Result<()> {
        self.pings += 1;
        let line = format!("ping {}\n", self.pings);
        let context = || {
            format!(
                "ping {} on the connection to {} (backend {})",
                self.pings, self.vip, self.backend
            )
        };
        self.writer
            .write_all(line.as_bytes())
            .with_context(context)?;
        let mut echo = String::new();
        let n = self.reader.read_line(&mut echo).with_context(context)?;
        ensure!(n > 0, "{}: connection closed", context());
        ensure!(
            echo == line,
            "{}: expected {line:?} back, got {echo:?}",
            context()
        );
        Ok(())
    }
}

/// One `name_server` process in a backend namespace (greets with its name, then echoes);
/// SIGTERM and reaped on drop.
pub struct NameServer {
    child: ChildGuard,
}

impl NameServer {
    /// Starts `name_server --name NAME` in `netns` on `[::]:port` (TCP and UDP, dual stack);
    /// returns once it says `ready`.
    pub fn start(netns: &Netns, name: &str, port: u16) -> anyhow::Result<NameServer> {
        Self::start_on(netns, name, &format!("[::]:{port}"))
    }

    /// Starts `name_server --name NAME` in `netns` on `listen` (`ADDR:PORT`, TCP and UDP),
    /// e.g. a VIP held on the namespace's `lo`; returns once it says `ready`.
    pub fn start_on(netns: &Netns, name: &str, listen: &str) -> anyhow::Result<NameServer> {
        let binary = name_server_binary();
        ensure!(
            binary.is_file(),
            "{} does not exist: build it with `cargo build -p balancer-tests --bin name_server` \
             (cargo test builds it) or set BALANCER_NAME_SERVER",
            binary.display()
        );
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", netns.path()))
            .arg(&binary)
            .args(["--name", name, "--listen", listen, "--udp", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting name_server under nsenter (package util-linux)")?;
        let stdout = child.stdout.take().expect("piped");
        let server = NameServer {
            child: ChildGuard::new(child, format!("name server {name}"), Duration::from_secs(5)),
        };
        // The first line is `ready`; the rest is drained until the process ends.
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = sender.send(lines.next());
            for _ in lines {}
        });
        match receiver.recv_timeout(READY_TIMEOUT) {
            Ok(Some(Ok(line))) if line.trim() == "ready" => Ok(server),
            other => {
                let status = server.stop();
                bail!(
                    "name_server {name} in {} did not get ready on {listen} ({}; exit: {:?})",
                    netns.name(),
                    match other {
                        Ok(Some(Ok(line))) => format!("printed {line:?}"),
                        Ok(Some(Err(err))) => format!("reading its output: {err}"),
                        Ok(None) => "exited without a word".to_string(),
                        Err(_) => format!("nothing within {READY_TIMEOUT:?}"),
                    },
                    status.ok()
                )
            }
        }
    }

    fn terminate(&mut self) {
        let _ = self.child.signal(libc::SIGTERM);
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL. Returns the exit status. Drop does the same.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        Ok(self.child.stop()?.status)
    }
}

// ---- client side, run on a thread inside the client namespace ----

fn connect_many_here(
    vip: SocketAddr,
    count: usize,
    source_port_base: Option<u16>,
) -> anyhow::Result<Vec<String>> {
    let workers = CONNECT_WORKERS.min(count).max(1);
    let failed = AtomicBool::new(false);
    // Threads spawned here inherit this thread's network namespace.
    let mut results: Vec<(usize, anyhow::Result<String>)> = std::thread::scope(|scope| {
        let failed = &failed;
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                scope.spawn(move || {
                    let mut done = Vec::new();
                    for i in (worker..count).step_by(workers) {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        // Checked by the caller: base + i fits in a port.
                        let port = source_port_base.map(|base| base + i as u16);
                        let result = connect(vip, port)
                            .and_then(|mut stream| read_greeting(&mut stream))
                            .with_context(|| {
                                let from =
                                    port.map_or(String::new(), |p| format!(" from port {p}"));
                                format!("connection {i} of {count} to {vip}{from}")
                            });
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        done.push((i, result));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("connect worker panicked"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    let names = results
        .into_iter()
        .map(|(_, result)| result)
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(
        names.len() == count,
        "only {} of {count} connections made",
        names.len()
    );
    Ok(names)
}

/// A TCP connection to `target`, from `source_port` when given (then closed with a reset).
fn connect(target: SocketAddr, source_port: Option<u16>) -> anyhow::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if let Some(port) = source_port {
        socket.set_reuse_address(true)?;
        let local: SocketAddr = if target.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, port).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, port).into()
        };
        socket
            .bind(&local.into())
            .with_context(|| format!("binding source port {port}"))?;
        socket.set_linger(Some(Duration::ZERO))?;
    }
    socket
        .connect_timeout(&target.into(), CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {target}"))?;
    Ok(socket.into())
}

/// Reads the `NAME\n` greeting byte by byte (nothing beyond it is consumed).
fn read_greeting(stream: &mut TcpStream) -> anyhow::Result<String> {
    stream.set_read_timeout(Some(GREETING_TIMEOUT))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = stream
            .read(&mut byte)
            .with_context(|| format!("reading the greeting (within {GREETING_TIMEOUT:?})"))?;
        ensure!(n == 1, "connection closed before the greeting ended");
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
        ensure!(line.len() <= 256, "greeting longer than 256 bytes");
    }
    Ok(String::from_utf8_lossy(&line).trim().to_string())
}

fn udp_name(vip: SocketAddr) -> anyhow::Result<String> {
    let local: SocketAddr = if vip.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(vip)?;
    socket.set_read_timeout(Some(UDP_TIMEOUT))?;
    let mut buf = [0u8; 512];
    let mut last_error = None;
    for _ in 0..UDP_ATTEMPTS {
        socket.send(b"name?\n")?;
        match socket.recv(&mut buf) {
            Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.expect("at least one attempt")).with_context(|| {
        format!("no reply from {vip} ({UDP_ATTEMPTS} tries, {UDP_TIMEOUT:?} each)")
    })
}

// ---- helpers ----

fn backend_name(k: usize) -> String {
    format!("b{k}")
}

/// Last address byte of backend `k`.
fn host_byte(k: usize) -> u8 {
    u8::try_from(10 + k).expect("at most MAX_BACKENDS backends")
}

fn v6_host(byte: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, u16::from(byte))
}

fn mac(byte: u8) -> String {
    format!("02:00:c6:12:00:{byte:02x}")
}

fn family(address: IpAddr) -> Family {
    if address.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

fn host_prefix(address: IpAddr) -> String {
    match address {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// Writes `/proc/sys/…` from a thread inside `netns` (net sysctls are per namespace).
pub fn set_sysctls(netns: &Netns, settings: &[(&str, &str)]) -> anyhow::Result<()> {
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let name = netns.name().to_string();
    netns.run(move || -> anyhow::Result<()> {
        for (key, value) in settings {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, &value)
                .with_context(|| format!("setting {key}={value} in {name}"))?;
        }
        Ok(())
    })?
}

/// `ethtool -K IF tx off` with the legacy ETHTOOL_STXCSUM ioctl, in the calling thread's
/// namespace (no ethtool package needed).
pub fn disable_tx_checksum(interface: &str) -> anyhow::Result<()> {
    const ETHTOOL_STXCSUM: u32 = 0x17;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    ensure!(interface.len() < libc::IFNAMSIZ, "interface name too long");
    // SAFETY: a zeroed ifreq with a NUL-terminated name and a pointer to `value`, which
    // outlives the ioctl; the socket is closed below.
    unsafe {
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(interface.bytes()) {
            *slot = byte as libc::c_char;
        }
        request.ifr_ifru.ifru_data = (&raw mut value).cast();
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let rc = libc::ioctl(fd, libc::SIOCETHTOOL, &raw mut request);
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        ensure!(rc == 0, "ETHTOOL_STXCSUM on {interface}: {error}");
    }
    Ok(())
}

/// The VIPs of the L4 forwarding tests (l4_forwarding.rs, restart_noloss.rs): a TCP VIP per
/// family and a UDP VIP, all on [`VIP_PORT`], admin API on [`VIP_ADMIN`].
pub const VIP_PORT: u16 = 8080;
pub const VIP_ADMIN: &str = "127.0.0.1:9100";
pub const VIP4: &str = "198.18.100.1";
pub const VIP6: &str = "2001:2:0:100::1";
pub const UDP_VIP4: &str = "198.18.100.2";

/// A bpffs pin directory (program, link and maps), removed on drop, also when a test fails.
/// Beside `balancer run` in an `ipip` test: `balancer decap` on every backend, the pin
/// directory, and a scratch directory for configs and logs (removed when dropped). Dropped in
/// field order: the decap processes stop before their pins go.
pub struct IpipParts {
    pub decap: Vec<BalancerProcess>,
    pub pins: PinDir,
    pub dir: PathBuf,
}

impl Drop for IpipParts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct PinDir(pub std::path::PathBuf);

impl PinDir {
    /// A fresh directory name under /sys/fs/bpf for test `tag` (`balancer run` creates it).
    pub fn new(tag: &str) -> PinDir {
        PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/balancer-test-{tag}-{}",
            unique_suffix()
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `[[vip]]` of a test's `balancer run` config.
pub struct TestVip<'a> {
    pub name: &'a str,
    pub address: &'a str,
    pub port: u16,
    pub protocol: &'a str,
    pub forward: &'a str,
    /// The TOML array of backends ([`L4Topology::backends_toml`]).
    pub backends: String,
    /// An inline `health = { ... }` table, if any.
    pub health: Option<&'a str>,
}

impl<'a> TestVip<'a> {
    /// A VIP without health checks.
    pub fn new(
        name: &'a str,
        (address, port): (&'a str, u16),
        protocol: &'a str,
        forward: &'a str,
        backends: String,
    ) -> TestVip<'a> {
        TestVip {
            name,
            address,
            port,
            protocol,
            forward,
            backends,
            health: None,
        }
    }
}

impl L4Topology {
    /// `balancer run`'s config over this topology: the admin API on `admin`, XDP on the lb's
    /// interface with its maps pinned in `pin_dir`, and `vips`.
    pub fn xdp_config(&self, admin: &str, pin_dir: &Path, vips: &[TestVip]) -> String {
        let mut config = format!(
            "[admin]\nlisten = \"{admin}\"\n\n[xdp]\ninterface = \"{}\"\npin_path = \"{}\"\n\
             max_vips = 4\nmax_backends = 8\nmax_connections = 65536\n",
            self.lb_interface(),
            pin_dir.display()
        );
        for vip in vips {
            config.push_str(&format!(
                "\n[[vip]]\nname = \"{}\"\naddress = \"{}\"\nport = {}\nprotocol = \"{}\"\n\
                 forward = \"{}\"\nbackends = {}\n",
                vip.name, vip.address, vip.port, vip.protocol, vip.forward, vip.backends
            ));
            if let Some(health) = vip.health {
                config.push_str(&format!("health = {health}\n"));
            }
        }
        config
    }

    /// `balancer run`'s config for the three forwarding-test VIPs over this topology's
    /// backends (`weights` of b1, b2, b3), `forward` mode, maps pinned in `pin_dir`, TCP
    /// health checks on the TCP VIPs.
    pub fn vips_config(&self, forward: &str, pin_dir: &std::path::Path, weights: &[u32]) -> String {
        let health =
            "{ check = \"tcp\", interval = \"200ms\", timeout = \"150ms\", rise = 1, fall = 2 }";
        let vip = |name, address, protocol, family, health| TestVip {
            health,
            ..TestVip::new(
                name,
                (address, VIP_PORT),
                protocol,
                forward,
                self.backends_toml(family, weights),
            )
        };
        self.xdp_config(
            VIP_ADMIN,
            pin_dir,
            &[
                vip("web4", VIP4, "tcp", Family::V4, Some(health)),
                vip("web6", VIP6, "tcp", Family::V6, Some(health)),
                vip("dns4", UDP_VIP4, "udp", Family::V4, None),
            ],
        )
    }

    /// The pass program on the lb's bridge port, then [`IpipParts`] for test `tag`: what an
    /// `ipip` test runs beside `balancer run`.
    pub fn start_ipip_parts(&self, tag: &str) -> anyhow::Result<IpipParts> {
        self.attach_pass_on_lb_peer()?;
        let dir = std::env::temp_dir().join(format!("balancer-{tag}-{}", unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        let decap = self.start_decaps(&dir)?;
        Ok(IpipParts {
            decap,
            pins: PinDir::new(tag),
            dir,
        })
    }

    /// `balancer decap` on every backend's `veth0` (backends of `ipip` VIPs), each logging
    /// into `dir`; they stop when dropped.
    pub fn start_decaps(&self, dir: &Path) -> anyhow::Result<Vec<BalancerProcess>> {
        (1..=self.backend_count())
            .map(|k| {
                BalancerProcess::start_decap(
                    self.backend(k),
                    "veth0",
                    &dir.join(format!("decap-b{k}.log")),
                )
            })
            .collect()
    }
}
