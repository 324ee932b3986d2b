//! `bench_l4`: the L4 benchmark driver that `cargo xtask bench` runs (as root).
//!
//! ```text
//! bench_l4 [--quick] [--calls N] [--rounds N] [--seconds S] [--skip-xdp] [--skip-e2e]
//! ```
//!
//! 1. **ns per packet** of `balancer_lb` through `BPF_PROG_TEST_RUN`, side by side with the
//!    object's bare `XDP_PASS` (`balancer_pass`) and bare parse + MAC swap + `XDP_TX`
//!    (`balancer_floor`) programs. Each program is attached (driver mode) to its own veth
//!    in a fresh namespace first, so the kernel calls it directly as a driver would. Every
//!    call runs one packet (`repeat = 1`: with more, the kernel reruns the program on the
//!    packet the previous repetition already encapsulated); the reported durations are
//!    averaged per round, and the median round is the result. Every verdict and output
//!    length is checked, and the connection-table counters must show that a "hit" case hit
//!    and a "miss" case missed on every call: any other outcome aborts the benchmark.
//! 2. **End to end** in the [`L4Topology`] (client, lb, three backends on one bridge): UDP
//!    packets per second delivered to the backends and TCP connections per second, first
//!    through an nftables DNAT balancer (`numgen inc mod 3`) in the lb namespace, then
//!    through a real `balancer run` with an `ipip` VIP (backends run `balancer decap`),
//!    then, as a diagnostic, UDP through nftables again with bare `XDP_PASS` programs on the
//!    veths where the balancer's path runs XDP. Each measurement runs for a fixed time
//!    (at most 5 s) and stops by itself.
//!
//! Prints one JSON document on stdout (what `cargo xtask bench` turns into the report);
//! progress goes to stderr. Everything it creates (namespaces, processes, XDP programs,
//! nftables rules inside those namespaces) is removed on every path, also on Ctrl-C.

use std::{
    collections::BTreeMap,
    io::Read,
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp, XdpMode},
};
use balancer_common::{
    Action, BACKEND_FLAG_HEALTHY, BACKEND_FLAG_RESOLVED, BACKEND_UP, BackendInfo, FAMILY_IPV4,
    FLOW_WAYS, FORWARD_IPIP, FlowEvent, FlowHashKey, FlowKey, FlowTable, GLOBAL_FLOW_SETS,
    GLOBAL_LOG_LEVEL, GLOBAL_TABLE_SIZE, IPIP_OVERHEAD_V4, IPPROTO_TCP, IPPROTO_UDP,
    MAP_BACKEND_STATS, MAP_BACKENDS, MAP_FLOW_HASH_KEY, MAP_FLOW_STATS, MAP_FLOWS, MAP_MAGLEV,
    MAP_REASON_STATS, MAP_VIP_STATS, MAP_VIPS, PROGRAM_FLOOR, PROGRAM_LB, PROGRAM_PASS,
    PacketReason, VipKey, VipMeta, backend_index, flow_sets, maglev_table_base,
};
use balancer_tests::{
    BalancerProcess, Family, L4Topology, Netns, cleanup_everything, l4topology::ebpf_object,
    l4topology::set_sysctls, run_in, unique_suffix,
};
use clap::Parser;
use serde_json::{Value, json};

/// The L4 benchmark driver (see the module doc).
#[derive(Parser)]
#[command(name = "bench_l4", args_override_self = true)]
struct Cli {
    /// Fewer calls, rounds and seconds (the defaults below are the full run's).
    #[arg(long)]
    quick: bool,
    /// `BPF_PROG_TEST_RUN` calls per round [default: 1000000, 100000 with --quick].
    #[arg(long)]
    calls: Option<u64>,
    /// Rounds per case [default: 5, 2 with --quick].
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per end-to-end measurement, at most 5 [default: 5, 2 with --quick].
    #[arg(long)]
    seconds: Option<f64>,
    /// Leave out the ns-per-packet part.
    #[arg(long)]
    skip_xdp: bool,
    /// Leave out the end-to-end part.
    #[arg(long)]
    skip_e2e: bool,
    /// Only these `BPF_PROG_TEST_RUN` cases, `KEY,KEY` (for profiling one path).
    #[arg(long)]
    cases: Option<String>,
}

struct Args {
    calls: u64,
    rounds: usize,
    seconds: f64,
    xdp: bool,
    e2e: bool,
    /// `--cases`: only these `BPF_PROG_TEST_RUN` cases (for profiling one path); all by default.
    cases: Vec<Case>,
}

fn parse_args() -> anyhow::Result<Args> {
    let cli = Cli::parse();
    let quick = cli.quick;
    let cases = match cli.cases {
        None => Case::ALL.to_vec(),
        Some(keys) => keys
            .split(',')
            .map(|key| {
                Case::ALL
                    .into_iter()
                    .find(|case| case.key() == key)
                    .with_context(|| format!("--cases: no case {key:?}"))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let args = Args {
        calls: cli.calls.unwrap_or(if quick { 100_000 } else { 1_000_000 }),
        rounds: cli.rounds.unwrap_or(if quick { 2 } else { 5 }),
        seconds: cli.seconds.unwrap_or(if quick { 2.0 } else { 5.0 }),
        xdp: !cli.skip_xdp,
        e2e: !cli.skip_e2e,
        cases,
    };
    ensure!(
        args.calls > 0 && args.rounds > 0,
        "--calls and --rounds must be > 0"
    );
    ensure!(
        args.seconds > 0.0 && args.seconds <= 5.0,
        "--seconds must be in (0, 5]: load is bounded"
    );
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("bench_l4: {err:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = ctrlc::set_handler(|| {
        eprintln!("\nbench_l4: interrupted, tearing down");
        cleanup_everything();
        std::process::exit(130);
    }) {
        eprintln!("bench_l4: cannot install the Ctrl-C handler: {err}");
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(result) => {
            println!("{result:#}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench_l4: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<Value> {
    let xdp = if args.xdp {
        xdp_bench(args.calls, args.rounds, &args.cases)?
    } else {
        Value::Null
    };
    let e2e = if args.e2e {
        e2e_bench(Duration::from_secs_f64(args.seconds))?
    } else {
        Value::Null
    };
    Ok(json!({ "test_run": xdp, "end_to_end": e2e }))
}

// ===========================================================================
// 1. ns per packet through BPF_PROG_TEST_RUN

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const LB_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 0x01];
const BACKEND_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 0x0b];
const LB_ADDR: [u8; 4] = [198, 18, 0, 2];
const BACKEND_ADDR: [u8; 4] = [198, 18, 0, 11];
const VIP_ADDR: [u8; 4] = [198, 18, 0, 10];
const NON_VIP_ADDR: [u8; 4] = [198, 18, 0, 99];
/// The one established client flow of the table-hit case (outside the miss cases' 10/8).
const HIT_CLIENT: [u8; 4] = [192, 0, 2, 1];
const HIT_CLIENT_PORT: u16 = 40_000;
const VIP_TCP_PORT: u16 = 80;
const VIP_UDP_PORT: u16 = 53;
const VIP_TCP_ID: u32 = 0;
const VIP_UDP_ID: u32 = 1;

/// Map sizes of the test-run object (the fixtures' small sizes; a prime Maglev table).
const MAX_VIPS: u32 = 4;
const BACKENDS_PER_VIP: u32 = 8;
const TABLE_SIZE: u32 = 251;
/// Connection-table capacity (`xdp.max_connections`). The miss cases fill every set
/// during their warm-up, so every measured insert evicts, as on a balancer under a
/// stream of new flows.
const MAX_FLOWS: u32 = 65_536;
/// `balancer run`'s default eBPF log level (warn): the same program paths as in production.
const LOG_LEVEL_WARN: u8 = 2;

/// Loopback's ifindex in a fresh namespace: BPF_PROG_TEST_RUN's ingress device, so a
/// backend on it makes the program answer `XDP_TX` (not a redirect).
const TEST_RUN_IFINDEX: u32 = 1;

/// What one benchmark case runs. The miss cases come in two kinds: a new client flow per
/// call on a full connection table (what a balancer under a stream of new flows does:
/// every insert evicts, and touches a cold set), and one flow whose entry is deleted
/// between calls (cache-hot, as a benchmark that replays one fixed packet measures).
/// `TcpSynReplayed` is that replay itself: the same SYN every call, so every call after
/// the first finds its tuple and re-picks (port reuse).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Pass,
    Floor,
    TcpHit,
    TcpSyn,
    Udp,
    NonVip,
    TcpSynOneFlow,
    TcpSynReplayed,
    UdpOneFlow,
    UdpHit,
}

impl Case {
    const ALL: [Case; 10] = [
        Case::Pass,
        Case::Floor,
        Case::TcpHit,
        Case::TcpSyn,
        Case::Udp,
        Case::NonVip,
        Case::TcpSynOneFlow,
        Case::TcpSynReplayed,
        Case::UdpOneFlow,
        Case::UdpHit,
    ];

    fn key(self) -> &'static str {
        match self {
            Case::Pass => "pass",
            Case::Floor => "floor",
            Case::TcpHit => "tcp_hit",
            Case::TcpSyn => "tcp_syn",
            Case::Udp => "udp",
            Case::NonVip => "non_vip",
            Case::TcpSynOneFlow => "tcp_syn_one_flow",
            Case::TcpSynReplayed => "tcp_syn_replayed",
            Case::UdpOneFlow => "udp_one_flow",
            Case::UdpHit => "udp_hit",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Case::Pass => PROGRAM_PASS,
            Case::Floor => PROGRAM_FLOOR,
            _ => PROGRAM_LB,
        }
    }

    fn verdict(self) -> u32 {
        match self {
            Case::Pass | Case::NonVip => XDP_PASS,
            _ => XDP_TX,
        }
    }

    /// Bytes the program adds to the frame (IPIP encapsulation).
    fn growth(self) -> usize {
        match self {
            Case::TcpHit
            | Case::TcpSyn
            | Case::Udp
            | Case::TcpSynOneFlow
            | Case::TcpSynReplayed
            | Case::UdpOneFlow
            | Case::UdpHit => usize::from(IPIP_OVERHEAD_V4),
            _ => 0,
        }
    }

    /// The frames the case runs on: one fixed frame, or a new client flow per call.
    fn frames(self) -> Frames {
        let tcp = |flags| L4::Tcp { flags };
        match self {
            Case::Pass | Case::Floor | Case::TcpHit => Frames::Fixed(frame(
                HIT_CLIENT,
                HIT_CLIENT_PORT,
                VIP_ADDR,
                VIP_TCP_PORT,
                tcp(TCP_ACK),
            )),
            Case::NonVip => Frames::Fixed(frame(
                HIT_CLIENT,
                HIT_CLIENT_PORT,
                NON_VIP_ADDR,
                VIP_TCP_PORT,
                tcp(TCP_ACK),
            )),
            Case::TcpSyn => Frames::NewFlows {
                frame: frame([10, 0, 0, 0], 1024, VIP_ADDR, VIP_TCP_PORT, tcp(TCP_SYN)),
                next: 0,
            },
            Case::Udp => Frames::NewFlows {
                frame: frame([10, 0, 0, 0], 1024, VIP_ADDR, VIP_UDP_PORT, L4::Udp),
                next: 0,
            },
            Case::TcpSynOneFlow => Frames::Fixed(frame(
                HIT_CLIENT,
                HIT_CLIENT_PORT + 1,
                VIP_ADDR,
                VIP_TCP_PORT,
                tcp(TCP_SYN),
            )),
            Case::TcpSynReplayed => Frames::Fixed(frame(
                HIT_CLIENT,
                HIT_CLIENT_PORT + 2,
                VIP_ADDR,
                VIP_TCP_PORT,
                tcp(TCP_SYN),
            )),
            Case::UdpOneFlow => Frames::Fixed(frame(
                HIT_CLIENT,
                HIT_CLIENT_PORT + 1,
                VIP_ADDR,
                VIP_UDP_PORT,
                L4::Udp,
            )),
            Case::UdpHit => Frames::Fixed(frame(
                HIT_CLIENT,
                HIT_CLIENT_PORT,
                VIP_ADDR,
                VIP_UDP_PORT,
                L4::Udp,
            )),
        }
    }

    /// The connection-table entry to delete after every call (outside the measured time).
    fn delete_after_call(self) -> Option<FlowKey> {
        match self {
            Case::TcpSynOneFlow => Some(flow(HIT_CLIENT_PORT + 1, VIP_TCP_PORT, IPPROTO_TCP)),
            Case::UdpOneFlow => Some(flow(HIT_CLIENT_PORT + 1, VIP_UDP_PORT, IPPROTO_UDP)),
            _ => None,
        }
    }
}

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const ETH_LEN: usize = 14;
const UDP_PAYLOAD: usize = 32;

enum L4 {
    Tcp { flags: u8 },
    Udp,
}

/// An Ethernet + IPv4 (checksummed) + TCP/UDP frame from the client to `dst`. TCP/UDP
/// checksums stay zero: neither the programs nor BPF_PROG_TEST_RUN look at them.
fn frame(src: [u8; 4], src_port: u16, dst: [u8; 4], dst_port: u16, l4: L4) -> Vec<u8> {
    let mut transport = Vec::new();
    transport.extend_from_slice(&src_port.to_be_bytes());
    transport.extend_from_slice(&dst_port.to_be_bytes());
    let protocol = match l4 {
        L4::Tcp { flags } => {
            transport.extend_from_slice(&0x0100_0000u32.to_be_bytes()); // seq
            let ack = if flags & TCP_ACK != 0 {
                0x2000_0000u32
            } else {
                0
            };
            transport.extend_from_slice(&ack.to_be_bytes());
            transport.extend_from_slice(&[0x50, flags]); // data offset 5, flags
            transport.extend_from_slice(&65_535u16.to_be_bytes()); // window
            transport.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            IPPROTO_TCP
        }
        L4::Udp => {
            let len = u16::try_from(8 + UDP_PAYLOAD).expect("fits");
            transport.extend_from_slice(&len.to_be_bytes());
            transport.extend_from_slice(&[0, 0]);
            transport.extend_from_slice(&[0x5a; UDP_PAYLOAD]);
            IPPROTO_UDP
        }
    };
    let total_len = u16::try_from(20 + transport.len()).expect("fits");
    let mut packet = Vec::with_capacity(ETH_LEN + usize::from(total_len));
    packet.extend_from_slice(&LB_MAC);
    packet.extend_from_slice(&CLIENT_MAC);
    packet.extend_from_slice(&0x0800u16.to_be_bytes());
    packet.extend_from_slice(&[0x45, 0]);
    packet.extend_from_slice(&total_len.to_be_bytes());
    packet.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, protocol, 0, 0]); // id, DF, TTL
    packet.extend_from_slice(&src);
    packet.extend_from_slice(&dst);
    packet.extend_from_slice(&transport);
    fix_ipv4_checksum(&mut packet);
    packet
}

fn fix_ipv4_checksum(frame: &mut [u8]) {
    let header = ETH_LEN..ETH_LEN + 20;
    frame[ETH_LEN + 10] = 0;
    frame[ETH_LEN + 11] = 0;
    let mut sum: u32 = frame[header]
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Source ports per source address in the miss cases.
const PORTS_PER_SOURCE: u64 = 64_000;

enum Frames {
    Fixed(Vec<u8>),
    /// Call `n` comes from 10.x.y.z:(1024 + n mod 64000), a tuple no earlier call used.
    NewFlows {
        frame: Vec<u8>,
        next: u64,
    },
}

impl Frames {
    fn next(&mut self) -> &[u8] {
        match self {
            Frames::Fixed(frame) => frame,
            Frames::NewFlows { frame, next } => {
                let n = *next;
                *next += 1;
                let source = n / PORTS_PER_SOURCE;
                let port = 1024 + (n % PORTS_PER_SOURCE) as u16;
                let [_, a, b, c] = (source as u32).to_be_bytes();
                frame[ETH_LEN + 12..ETH_LEN + 16].copy_from_slice(&[10, a, b, c]);
                frame[ETH_LEN + 20..ETH_LEN + 22].copy_from_slice(&port.to_be_bytes());
                fix_ipv4_checksum(frame);
                frame
            }
        }
    }
}

/// The veth each program is attached to (its peer stays without a program).
fn veth_for(program: &str) -> &'static str {
    match program {
        PROGRAM_LB => "bx-lb",
        PROGRAM_FLOOR => "bx-floor",
        _ => "bx-pass",
    }
}

fn xdp_bench(calls: u64, rounds: usize, cases: &[Case]) -> anyhow::Result<Value> {
    let netns = Netns::new(format!("bl-bench-xdp-{}", unique_suffix()))?;
    for program in [PROGRAM_LB, PROGRAM_FLOOR, PROGRAM_PASS] {
        let veth = veth_for(program);
        let peer = format!("{veth}-p");
        netns.ip(&["link", "add", veth, "type", "veth", "peer", "name", &peer])?;
        netns.ip(&["link", "set", veth, "up"])?;
        netns.ip(&["link", "set", &peer, "up"])?;
    }
    eprintln!(
        "bench_l4: BPF_PROG_TEST_RUN in namespace {}: {rounds} rounds × {calls} calls per case",
        netns.name()
    );
    let object = ebpf_object();
    ensure!(
        object.is_file(),
        "the eBPF object {} does not exist: build it with `cargo xtask build`",
        object.display()
    );
    let cases = cases.to_vec();
    let result = netns.run(move || test_run_cases(&object, calls, rounds, &cases))?;
    drop(netns);
    result
}

/// Handles on the loaded object's programs and the maps the cases read or refill.
struct Loaded {
    ebpf: Ebpf,
    flows: FlowTable<MapData>,
    flow_stats: PerCpuArray<MapData, u64>,
    reason_stats: PerCpuArray<MapData, balancer_common::Counter>,
}

impl Loaded {
    fn program(&self, name: &str) -> anyhow::Result<&Xdp> {
        Ok(self
            .ebpf
            .program(name)
            .with_context(|| format!("the object has no program {name}"))?
            .try_into()?)
    }

    fn flow_events(&self, event: FlowEvent) -> anyhow::Result<u64> {
        Ok(self
            .flow_stats
            .get(&(event as u32), 0)
            .context("reading FLOW_STATS")?
            .iter()
            .sum())
    }

    fn reason_packets(&self, reason: PacketReason) -> anyhow::Result<u64> {
        Ok(self
            .reason_stats
            .get(&(reason as u32), 0)
            .context("reading REASON_STATS")?
            .iter()
            .map(|c| c.packets)
            .sum())
    }

    /// The counter a case must move by exactly one per call (none for the bare programs).
    fn case_counter(&self, case: Case) -> anyhow::Result<Option<u64>> {
        Ok(match case {
            Case::Pass | Case::Floor => None,
            Case::TcpHit | Case::UdpHit => Some(self.flow_events(FlowEvent::TableHit)?),
            Case::TcpSyn | Case::Udp | Case::TcpSynOneFlow | Case::UdpOneFlow => {
                Some(self.flow_events(FlowEvent::TableMiss)?)
            }
            // A SYN for a tuple the table knows: port reuse, picked again.
            Case::TcpSynReplayed => Some(self.flow_events(FlowEvent::SynRepick)?),
            Case::NonVip => Some(self.reason_packets(PacketReason::NotVip)?),
        })
    }
}

fn load(object: &Path) -> anyhow::Result<Loaded> {
    let backend_slots = MAX_VIPS * BACKENDS_PER_VIP;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(MAP_VIPS, MAX_VIPS)
        .map_max_entries(MAP_VIP_STATS, MAX_VIPS * Action::COUNT)
        .map_max_entries(MAP_BACKENDS, backend_slots)
        .map_max_entries(MAP_BACKEND_STATS, backend_slots)
        .map_max_entries(MAP_MAGLEV, MAX_VIPS * 2 * TABLE_SIZE)
        .map_max_entries(MAP_FLOWS, flow_sets(MAX_FLOWS))
        .override_global(GLOBAL_FLOW_SETS, &flow_sets(MAX_FLOWS), true)
        .override_global(GLOBAL_TABLE_SIZE, &TABLE_SIZE, true)
        .override_global(GLOBAL_LOG_LEVEL, &LOG_LEVEL_WARN, true)
        .load_file(object)
        .with_context(|| {
            format!(
                "loading {} (needs root: CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)",
                object.display()
            )
        })?;
    let mut take = |name: &str| {
        ebpf.take_map(name)
            .with_context(|| format!("the object has no map {name}"))
    };
    let mut vips: HashMap<MapData, VipKey, VipMeta> = HashMap::try_from(take(MAP_VIPS)?)?;
    let mut backends: Array<MapData, BackendInfo> = Array::try_from(take(MAP_BACKENDS)?)?;
    let mut maglev: Array<MapData, u32> = Array::try_from(take(MAP_MAGLEV)?)?;
    // A random table key, as `balancer run` writes before attaching.
    let secret = FlowHashKey::random();
    let mut flow_hash_key: Array<MapData, FlowHashKey> = Array::try_from(take(MAP_FLOW_HASH_KEY)?)?;
    flow_hash_key.set(0, secret, 0)?;
    let flows = FlowTable::new(Array::try_from(take(MAP_FLOWS)?)?, secret);
    let flow_stats = PerCpuArray::try_from(take(MAP_FLOW_STATS)?)?;
    let reason_stats = PerCpuArray::try_from(take(MAP_REASON_STATS)?)?;

    let mut backend_addr = [0u8; 16];
    backend_addr[..4].copy_from_slice(&BACKEND_ADDR);
    let mut outer_src = [0u8; 16];
    outer_src[..4].copy_from_slice(&LB_ADDR);
    let backend = BackendInfo {
        addr: backend_addr,
        outer_src,
        dst_mac: BACKEND_MAC,
        src_mac: LB_MAC,
        ifindex: TEST_RUN_IFINDEX,
        mtu: 1500,
        family: FAMILY_IPV4,
        state: BACKEND_UP,
        flags: BACKEND_FLAG_RESOLVED | BACKEND_FLAG_HEALTHY,
        admin: 0,
        _pad: [0; 2],
    };
    for (id, port, protocol) in [
        (VIP_TCP_ID, VIP_TCP_PORT, IPPROTO_TCP),
        (VIP_UDP_ID, VIP_UDP_PORT, IPPROTO_UDP),
    ] {
        let meta = VipMeta {
            id,
            forward: FORWARD_IPIP,
            flags: 0,
            table_half: 0,
            _pad: 0,
        };
        vips.insert(VipKey::v4(VIP_ADDR, port, protocol), meta, 0)?;
        let slot = backend_index(id, 0, BACKENDS_PER_VIP);
        backends.set(slot, backend, 0)?;
        let base = maglev_table_base(id, 0, TABLE_SIZE);
        for i in 0..TABLE_SIZE {
            maglev.set(base + i, slot, 0)?;
        }
    }

    for name in [PROGRAM_LB, PROGRAM_FLOOR, PROGRAM_PASS] {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("the object has no program {name}"))?
            .try_into()?;
        program
            .load()
            .with_context(|| format!("loading {name} (verifier)"))?;
        program
            .attach(veth_for(name), XdpMode::Driver)
            .with_context(|| format!("attaching {name} to {} (driver mode)", veth_for(name)))?;
    }
    Ok(Loaded {
        ebpf,
        flows,
        flow_stats,
        reason_stats,
    })
}

/// A flow from `HIT_CLIENT` to the VIP, as the program builds its key.
fn flow(src_port: u16, dst_port: u16, protocol: u8) -> FlowKey {
    let mut key = FlowKey {
        src: [0; 16],
        dst: [0; 16],
        src_port_be: src_port.to_be(),
        dst_port_be: dst_port.to_be(),
        protocol,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    };
    key.src[..4].copy_from_slice(&HIT_CLIENT);
    key.dst[..4].copy_from_slice(&VIP_ADDR);
    key
}

/// Runs on a thread inside the benchmark namespace (test runs use its loopback).
fn test_run_cases(
    object: &Path,
    calls: u64,
    rounds: usize,
    cases: &[Case],
) -> anyhow::Result<Value> {
    let mut loaded = load(object)?;
    let mut frames: Vec<Frames> = cases.iter().map(|c| c.frames()).collect();
    let mut output = vec![0u8; 2048];
    let mut averages: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];

    // Warm-up, not recorded: caches, the dispatcher, and a full connection table.
    for (i, case) in cases.iter().enumerate() {
        let warm = if matches!(case, Case::TcpSyn | Case::Udp) {
            // 32 inserts per set on average, 4 times its ways: every set full.
            4 * u64::from(flow_sets(MAX_FLOWS)) * FLOW_WAYS as u64
        } else {
            calls.min(20_000)
        };
        run_case(&mut loaded, *case, &mut frames[i], warm, &mut output)?;
    }
    for round in 1..=rounds {
        let mut line = format!("bench_l4:   round {round}/{rounds}:");
        for (i, case) in cases.iter().enumerate() {
            let average = run_case(&mut loaded, *case, &mut frames[i], calls, &mut output)?;
            averages[i].push(average);
            line.push_str(&format!(" {} {average:.1} ns", case.key()));
        }
        eprintln!("{line}");
    }

    let cases: Vec<Value> = cases
        .iter()
        .zip(&averages)
        .map(|(case, rounds)| {
            json!({
                "case": case.key(),
                "program": case.program(),
                "verdict": if case.verdict() == XDP_TX { "XDP_TX" } else { "XDP_PASS" },
                "round_avg_ns": rounds,
                "median_ns": median(rounds),
            })
        })
        .collect();
    Ok(json!({
        "calls_per_round": calls,
        "rounds": rounds,
        "repeat_per_call": 1,
        "maglev_table_size": TABLE_SIZE,
        "flow_table_entries": MAX_FLOWS,
        "attach": "driver mode, one veth per program, in a fresh namespace",
        "cases": cases,
    }))
}

/// `calls` test runs of one case; the average reported duration in ns. Fails on the
/// first unexpected verdict or output length, and when the case's counter did not move
/// by exactly `calls` (a hit that missed, a miss that hit).
fn run_case(
    loaded: &mut Loaded,
    case: Case,
    frames: &mut Frames,
    calls: u64,
    output: &mut [u8],
) -> anyhow::Result<f64> {
    // The flow a case expects the table to know.
    let known_flow = match case {
        Case::TcpHit => Some((VIP_TCP_ID, HIT_CLIENT_PORT, VIP_TCP_PORT, IPPROTO_TCP)),
        Case::UdpHit => Some((VIP_UDP_ID, HIT_CLIENT_PORT, VIP_UDP_PORT, IPPROTO_UDP)),
        Case::TcpSynReplayed => Some((VIP_TCP_ID, HIT_CLIENT_PORT + 2, VIP_TCP_PORT, IPPROTO_TCP)),
        _ => None,
    };
    if let Some((vip_id, src_port, port, protocol)) = known_flow {
        // The miss cases' inserts may have evicted it from the full table.
        loaded.flows.insert(
            &flow(src_port, port, protocol),
            backend_index(vip_id, 0, BACKENDS_PER_VIP),
            0,
        )?;
    }
    let delete = case.delete_after_call();
    if let Some(key) = &delete {
        loaded.flows.remove(key)?;
    }
    let before = loaded.case_counter(case)?;
    let mut total_ns: u64 = 0;
    for call in 0..calls {
        let data_in = frames.next();
        let result = loaded
            .program(case.program())?
            .test_run(TestRunOptions {
                data_in: Some(data_in),
                data_out: Some(&mut *output),
                repeat: 1,
                ..TestRunOptions::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN of {} ({})", case.program(), case.key()))?;
        let expected_len = data_in.len() + case.growth();
        if result.return_value != case.verdict() || result.data_size_out as usize != expected_len {
            bail!(
                "case {} call {call}: verdict {} with {} bytes out, expected {} with {expected_len} \
                 bytes: the program did not take the path this case measures",
                case.key(),
                result.return_value,
                result.data_size_out,
                case.verdict()
            );
        }
        total_ns += result.duration.as_nanos() as u64;
        if let Some(key) = &delete {
            let removed = loaded
                .flows
                .remove(key)
                .with_context(|| format!("case {}: deleting the flow it inserted", case.key()))?;
            ensure!(removed, "case {}: the call inserted no entry", case.key());
        }
    }
    if let (Some(before), Some(after)) = (before, loaded.case_counter(case)?) {
        ensure!(
            after - before == calls,
            "case {}: its counter moved by {} over {calls} calls: {}",
            case.key(),
            after - before,
            match case {
                Case::TcpHit | Case::UdpHit => "not every call was a connection-table hit",
                Case::TcpSyn | Case::Udp | Case::TcpSynOneFlow | Case::UdpOneFlow => {
                    "not every call was a connection-table miss"
                }
                Case::TcpSynReplayed => "not every call re-picked a known tuple",
                _ => "not every call was counted as not-for-a-VIP",
            }
        );
    }
    Ok(total_ns as f64 / calls as f64)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

// ===========================================================================
// 2. End to end: nftables DNAT and balancer on the same topology

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const TCP_PORT: u16 = 8080;
/// No server listens here: every backend counts and drops these datagrams in nftables.
const UDP_PORT: u16 = 9053;
const ADMIN: &str = "127.0.0.1:9100";
const BACKENDS: usize = 3;
/// UDP sockets (source ports) per sender thread; one sender thread per CPU.
const SOCKETS_PER_SENDER: usize = 64;
const SEND_BATCH: usize = 32;
const TCP_WORKERS: usize = 4;
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for queued packets to reach the backends after the senders stop.
const DRAIN: Duration = Duration::from_millis(300);
const WARM_UP: Duration = Duration::from_millis(300);

const BACKEND_RULES: &str = r#"table inet bench_backend {
    counter udp_in {
    }
    chain input {
        type filter hook input priority filter; policy accept;
        udp dport UDP_PORT counter name "udp_in" drop
    }
}
"#;

fn lb_rules(topology: &L4Topology) -> String {
    let map = (1..=BACKENDS)
        .map(|k| format!("{} : {}", k - 1, topology.backend_addr_v4(k)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "table ip bench_lb {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {VIP} tcp dport {TCP_PORT} dnat to numgen inc mod {BACKENDS} map {{ {map} }}
        ip daddr {VIP} udp dport {UDP_PORT} dnat to numgen inc mod {BACKENDS} map {{ {map} }}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
    }}
}}
"
    )
}

fn balancer_config(topology: &L4Topology) -> String {
    let backends = topology.backends_toml(Family::V4, &[1; BACKENDS]);
    format!(
        r#"[admin]
listen = "{ADMIN}"

[xdp]
interface = "{iface}"
max_vips = 4
max_backends = 8
max_connections = 262144

[[vip]]
name = "bench-tcp"
address = "{VIP}"
port = {TCP_PORT}
protocol = "tcp"
forward = "ipip"
backends = {backends}
health = {{ check = "tcp", interval = "1s", timeout = "500ms", rise = 1, fall = 3 }}

[[vip]]
name = "bench-udp"
address = "{VIP}"
port = {UDP_PORT}
protocol = "udp"
forward = "ipip"
backends = {backends}
"#,
        iface = topology.lb_interface(),
    )
}

/// A scratch directory (configs, logs) removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> anyhow::Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!("balancer-bench-{}", unique_suffix()));
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn e2e_bench(duration: Duration) -> anyhow::Result<Value> {
    eprintln!("bench_l4: end to end: building the topology (client, lb, b1..b{BACKENDS})");
    let mut topology = L4Topology::new("bench", BACKENDS)?;
    // The VIP on every backend's lo (the balancer's DSR needs it; DNAT ignores it, as the
    // packets it forwards are addressed to the backend itself) and routed via the lb.
    topology.add_vip(VIP.into())?;
    topology.start_name_servers(TCP_PORT)?;
    let dir = ScratchDir::new()?;
    // The bridge namespace stands for a switch: no netfilter on bridged frames (on by
    // default in every namespace where the kernel has br_netfilter built in). It is on
    // both paths alike; off, the part that differs (the lb) weighs more.
    let bridge_netfilter = [
        "net.bridge.bridge-nf-call-iptables",
        "net.bridge.bridge-nf-call-ip6tables",
        "net.bridge.bridge-nf-call-arptables",
    ];
    let present: Vec<(&str, &str)> = bridge_netfilter
        .iter()
        .filter(|key| Path::new(&format!("/proc/sys/{}", key.replace('.', "/"))).exists())
        .map(|key| (*key, "0"))
        .collect();
    set_sysctls(topology.bridge(), &present)?;
    // Thousands of short connections a second: every port usable, TIME_WAIT ports reusable.
    set_sysctls(
        topology.client(),
        &[
            ("net.ipv4.ip_local_port_range", "1024 65535"),
            ("net.ipv4.tcp_tw_reuse", "1"),
        ],
    )?;
    let backend_rules = BACKEND_RULES.replace("UDP_PORT", &UDP_PORT.to_string());
    for k in 1..=BACKENDS {
        nft_apply(topology.backend(k), &dir.0, &backend_rules)?;
    }

    // nftables first: the balancer part attaches XDP programs (lb, lb's bridge port,
    // backends) that the topology only removes when it drops.
    eprintln!("bench_l4: end to end through nftables DNAT (numgen inc mod {BACKENDS})");
    let nftables = with_nftables(&topology, &dir.0, || {
        measure(&topology, "nftables", duration)
    })?;
    eprintln!("bench_l4: end to end through balancer (XDP, ipip, backends run balancer decap)");
    let balancer = with_balancer(&topology, &dir.0, || {
        measure(&topology, "balancer", duration)
    })?;
    // Diagnostic: the veth cost of XDP itself. On a veth, an attached XDP program moves
    // receive into NAPI and, for an skb from the stack without XDP headroom, copies the
    // packet into a fresh page first; the balancer's path has XDP on three veths per packet
    // (lb, lb's bridge port for XDP_TX, backend). Same DNAT, with bare XDP_PASS there.
    eprintln!(
        "bench_l4: diagnostic: nftables DNAT again, with bare XDP_PASS programs on the veths \
         where the balancer's path runs XDP"
    );
    topology.attach_xdp(topology.lb(), topology.lb_interface(), PROGRAM_PASS)?;
    for k in 1..=BACKENDS {
        topology.attach_xdp(topology.backend(k), "veth0", PROGRAM_PASS)?;
    }
    let nftables_veth_xdp = with_nftables(&topology, &dir.0, || {
        Ok(json!({ "udp": measure_udp(&topology, "nftables + veth XDP_PASS", duration)? }))
    })?;
    Ok(json!({
        "seconds": duration.as_secs_f64(),
        "backends": BACKENDS,
        "udp_senders": sender_threads(),
        "udp_source_ports": sender_threads() * SOCKETS_PER_SENDER,
        "udp_payload_bytes": UDP_PAYLOAD,
        "tcp_workers": TCP_WORKERS,
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "nftables": nftables,
        "balancer": balancer,
        "nftables_with_veth_xdp_pass": nftables_veth_xdp,
    }))
}

/// DNAT in the lb; backends answer through it (a host route to the client via the lb), so
/// the lb's conntrack translates replies back. Undone before returning, on every path.
fn with_nftables(
    topology: &L4Topology,
    dir: &Path,
    f: impl FnOnce() -> anyhow::Result<Value>,
) -> anyhow::Result<Value> {
    let lb = topology.lb();
    let client = L4Topology::CLIENT_V4.to_string();
    let lb_addr = L4Topology::LB_V4.to_string();
    let setup = || -> anyhow::Result<()> {
        // Replies leave the lb by the interface they came in on: no ICMP redirects, or the
        // backends would answer the client directly, around the translation.
        set_sysctls(
            lb,
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.send_redirects", "0"),
                ("net.ipv4.conf.veth0.send_redirects", "0"),
            ],
        )?;
        nft_apply(lb, dir, &lb_rules(topology))?;
        for k in 1..=BACKENDS {
            topology.backend(k).ip(&[
                "route",
                "replace",
                &format!("{client}/32"),
                "via",
                &lb_addr,
            ])?;
        }
        Ok(())
    };
    let result = setup().and_then(|()| f());
    let _ = run_in(&lb.path(), "nft", &["delete", "table", "ip", "bench_lb"]);
    let _ = set_sysctls(lb, &[("net.ipv4.ip_forward", "0")]);
    for k in 1..=BACKENDS {
        let _ = topology
            .backend(k)
            .ip(&["route", "del", &format!("{client}/32")]);
    }
    result
}

/// A real `balancer run` (no pinning) with the TCP and UDP VIPs over the backends, which
/// run `balancer decap`. Stopped before returning.
fn with_balancer(
    topology: &L4Topology,
    dir: &Path,
    f: impl FnOnce() -> anyhow::Result<Value>,
) -> anyhow::Result<Value> {
    topology.attach_pass_on_lb_peer()?;
    let mut decap = Vec::new();
    for k in 1..=BACKENDS {
        decap.push(BalancerProcess::start_decap(
            topology.backend(k),
            "veth0",
            &dir.join(format!("decap-b{k}.log")),
        )?);
    }
    let config = dir.join("balancer.toml");
    std::fs::write(&config, balancer_config(topology))?;
    let mut balancer = BalancerProcess::start(topology.lb(), &config, ADMIN)?;
    let result = wait_backends_up(&balancer)
        .and_then(|()| f())
        .and_then(|mut value| {
            value["xdp_metrics"] = xdp_metrics(&balancer)?;
            Ok(value)
        })
        .with_context(|| format!("balancer log:\n{}", balancer.log()));
    let _ = balancer.stop();
    for mut process in decap {
        let _ = process.stop();
    }
    result
}

fn wait_backends_up(balancer: &BalancerProcess) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = balancer.admin_get("/api/state")?;
        let state: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let states: Vec<String> = state["xdp"]["vips"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|vip| vip["backends"].as_array().into_iter().flatten())
            .map(|b| b["state"].as_str().unwrap_or("?").to_string())
            .collect();
        if status == 200 && states.len() == 2 * BACKENDS && states.iter().all(|s| s == "up") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the VIPs' backends did not all come up within 20 s: {status} {body}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The XDP program's own per-VIP packet counts, from `/metrics`.
fn xdp_metrics(balancer: &BalancerProcess) -> anyhow::Result<Value> {
    let (_, metrics) = balancer.admin_get("/metrics")?;
    let mut counts = serde_json::Map::new();
    for line in metrics.lines() {
        if line.starts_with("balancer_xdp_packets_total{")
            && let Some((series, value)) = line.rsplit_once(' ')
            && let Ok(value) = value.parse::<f64>()
        {
            counts.insert(series.to_string(), json!(value));
        }
    }
    Ok(Value::Object(counts))
}

/// UDP packets per second and TCP connections per second through whatever balances
/// the VIP right now.
fn measure(topology: &L4Topology, label: &str, duration: Duration) -> anyhow::Result<Value> {
    let udp = measure_udp(topology, label, duration)?;
    let tcp = measure_tcp(topology, label, duration)?;
    Ok(json!({ "udp": udp, "tcp": tcp }))
}

/// UDP datagrams per second that reach the backends' input hooks (counted and dropped
/// there by nftables, so nothing answers).
fn measure_udp(topology: &L4Topology, label: &str, duration: Duration) -> anyhow::Result<Value> {
    let target = SocketAddr::new(VIP.into(), UDP_PORT);
    // Warm-up: neighbours resolved, flows known, every backend reachable.
    let before = udp_counters(topology)?;
    topology
        .client()
        .run(move || udp_blast(target, WARM_UP))??;
    std::thread::sleep(DRAIN);
    let after = udp_counters(topology)?;
    for k in 1..=BACKENDS {
        ensure!(
            after[k - 1] > before[k - 1],
            "{label}: backend b{k} received no UDP datagram during the warm-up \
             (per backend before {before:?}, after {after:?})"
        );
    }

    let before = udp_counters(topology)?;
    let cpu_before = cpu_times()?;
    let start = Instant::now();
    let sent = topology
        .client()
        .run(move || udp_blast(target, duration))??;
    let elapsed = start.elapsed().as_secs_f64();
    std::thread::sleep(DRAIN);
    let cpu = cpu_times()?.since(&cpu_before);
    let after = udp_counters(topology)?;
    let per_backend: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let delivered: u64 = per_backend.iter().sum();
    let pps = delivered as f64 / elapsed;
    eprintln!(
        "bench_l4:   {label}: UDP {pps:.0} packets/s delivered ({delivered} of {sent} sent in \
         {elapsed:.2} s; per backend {per_backend:?})"
    );
    let ns_per_packet = if delivered > 0 {
        cpu.busy_seconds() * 1e9 / delivered as f64
    } else {
        0.0
    };
    Ok(json!({
        "packets_per_second": pps,
        "sent": sent,
        "delivered": delivered,
        "delivered_per_backend": per_backend,
        "seconds": elapsed,
        "cpu_busy_seconds": cpu.busy_seconds(),
        "cpu_busy_fraction": cpu.busy_fraction(),
        "cpu_ns_per_packet": ns_per_packet,
    }))
}

/// TCP connections per second: connect, read the backend's greeting, close.
fn measure_tcp(topology: &L4Topology, label: &str, duration: Duration) -> anyhow::Result<Value> {
    let target = SocketAddr::new(VIP.into(), TCP_PORT);
    let warm = topology
        .client()
        .run(move || tcp_connections(target, WARM_UP))?;
    ensure!(
        warm.ok > 0 && warm.failed == 0,
        "{label}: TCP warm-up: {} connections, {} failed (first error: {})",
        warm.ok,
        warm.failed,
        warm.first_error.as_deref().unwrap_or("-")
    );
    let cpu_before = cpu_times()?;
    let tcp = topology
        .client()
        .run(move || tcp_connections(target, duration))?;
    let cpu = cpu_times()?.since(&cpu_before);
    let cps = tcp.ok as f64 / tcp.elapsed;
    eprintln!(
        "bench_l4:   {label}: TCP {cps:.0} connections/s ({} in {:.2} s, {} failed; per backend {:?})",
        tcp.ok, tcp.elapsed, tcp.failed, tcp.per_backend
    );
    let us_per_connection = if tcp.ok > 0 {
        cpu.busy_seconds() * 1e6 / tcp.ok as f64
    } else {
        0.0
    };
    Ok(json!({
        "connections_per_second": cps,
        "connections": tcp.ok,
        "failed": tcp.failed,
        "first_error": tcp.first_error,
        "per_backend": tcp.per_backend,
        "seconds": tcp.elapsed,
        "cpu_busy_seconds": cpu.busy_seconds(),
        "cpu_busy_fraction": cpu.busy_fraction(),
        "cpu_us_per_connection": us_per_connection,
    }))
}

fn sender_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sends small datagrams to `target` for `duration` from one thread per CPU, each cycling
/// through its own sockets (source ports) in `sendmmsg` batches. Returns datagrams sent.
/// Runs on a thread inside the client namespace (the threads it spawns inherit it).
fn udp_blast(target: SocketAddr, duration: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + duration;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..sender_threads())
            .map(|_| scope.spawn(move || udp_sender(target, deadline)))
            .collect();
        let mut total = 0;
        for handle in handles {
            total += handle.join().expect("UDP sender panicked")?;
        }
        Ok(total)
    })
}

fn udp_sender(target: SocketAddr, deadline: Instant) -> anyhow::Result<u64> {
    let sockets = (0..SOCKETS_PER_SENDER)
        .map(|_| -> anyhow::Result<UdpSocket> {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.connect(target)?;
            Ok(socket)
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .context("opening the UDP senders' sockets")?;
    let payload = [0x5au8; UDP_PAYLOAD];
    // SAFETY: iovec is a plain C struct; all-zero is a valid value.
    let mut iov: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
    for entry in &mut iov {
        entry.iov_base = payload.as_ptr() as *mut libc::c_void;
        entry.iov_len = payload.len();
    }
    // SAFETY: mmsghdr is a plain C struct; all-zero is a valid value.
    let mut messages: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    for (message, entry) in messages.iter_mut().zip(iov.iter_mut()) {
        message.msg_hdr.msg_iov = entry;
        message.msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0u64;
    while Instant::now() < deadline {
        for socket in &sockets {
            // SAFETY: connected socket (no address needed); `messages` points into `iov`
            // and `payload`, which outlive the call; the kernel only reads them.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    messages.as_mut_ptr(),
                    SEND_BATCH as libc::c_uint,
                    0,
                )
            };
            if n > 0 {
                sent += n as u64;
            }
        }
    }
    Ok(sent)
}

#[derive(Default)]
struct TcpResult {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    per_backend: BTreeMap<String, u64>,
    elapsed: f64,
}

/// `TCP_WORKERS` threads connect, read the backend's greeting and close, over and over,
/// for `duration`. Runs on a thread inside the client namespace.
fn tcp_connections(target: SocketAddr, duration: Duration) -> TcpResult {
    let start = Instant::now();
    let deadline = start + duration;
    let stop = AtomicBool::new(false);
    let results: Vec<TcpResult> = std::thread::scope(|scope| {
        let stop = &stop;
        let handles: Vec<_> = (0..TCP_WORKERS)
            .map(|_| {
                scope.spawn(move || {
                    let mut result = TcpResult::default();
                    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                        match one_connection(target) {
                            Ok(name) => {
                                result.ok += 1;
                                *result.per_backend.entry(name).or_insert(0) += 1;
                            }
                            Err(err) => {
                                result.failed += 1;
                                result.first_error.get_or_insert_with(|| format!("{err:#}"));
                                if result.failed > 100 {
                                    stop.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("TCP worker panicked"))
            .collect()
    });
    let mut total = TcpResult {
        elapsed: start.elapsed().as_secs_f64(),
        ..TcpResult::default()
    };
    for result in results {
        total.ok += result.ok;
        total.failed += result.failed;
        if total.first_error.is_none() {
            total.first_error = result.first_error;
        }
        for (name, count) in result.per_backend {
            *total.per_backend.entry(name).or_insert(0) += count;
        }
    }
    total
}

/// Connect, read the `NAME\n` greeting, close (FIN). Returns the name.
fn one_connection(target: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&target, IO_TIMEOUT).context("connect")?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut greeting = Vec::with_capacity(16);
    let mut buf = [0u8; 64];
    while !greeting.contains(&b'\n') {
        let n = stream.read(&mut buf).context("reading the greeting")?;
        ensure!(n > 0, "closed before the greeting ended");
        greeting.extend_from_slice(&buf[..n]);
        ensure!(greeting.len() <= 256, "greeting longer than 256 bytes");
    }
    Ok(String::from_utf8_lossy(&greeting).trim().to_string())
}

/// Each backend's count of UDP datagrams to `UDP_PORT` that reached its input hook.
fn udp_counters(topology: &L4Topology) -> anyhow::Result<Vec<u64>> {
    (1..=BACKENDS)
        .map(|k| {
            let out = run_in(
                &topology.backend(k).path(),
                "nft",
                &["-j", "list", "counter", "inet", "bench_backend", "udp_in"],
            )?;
            let value: Value = serde_json::from_str(&out).context("nft -j output")?;
            value["nftables"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|entry| entry["counter"]["packets"].as_u64())
                .with_context(|| format!("no udp_in counter in b{k}: {out}"))
        })
        .collect()
}

/// Loads an nftables ruleset into `netns` (through a file: `nft -f`).
fn nft_apply(netns: &Netns, dir: &Path, rules: &str) -> anyhow::Result<()> {
    let file = dir.join(format!("{}.nft", netns.name()));
    std::fs::write(&file, rules)?;
    run_in(&netns.path(), "nft", &["-f", &file.to_string_lossy()])
        .with_context(|| format!("nft -f in {}:\n{rules}", netns.name()))?;
    Ok(())
}

/// Machine-wide CPU time from `/proc/stat`, in clock ticks (USER_HZ).
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            busy: self.busy - earlier.busy,
            total: self.total - earlier.total,
        }
    }

    /// Busy time summed over all CPUs (USER_HZ is 100 on Linux).
    fn busy_seconds(&self) -> f64 {
        self.busy as f64 / 100.0
    }

    /// Share of all CPUs' time that was busy.
    fn busy_fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.busy as f64 / self.total as f64
        }
    }
}

fn cpu_times() -> anyhow::Result<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no cpu line")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    ensure!(fields.len() >= 5, "unexpected /proc/stat cpu line: {line}");
    // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields[4];
    Ok(CpuTimes {
        busy: total - idle,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_valid_ipv4_checksums_and_new_flows_differ() {
        let mut frames = Case::TcpSyn.frames();
        let first = frames.next().to_vec();
        let second = frames.next().to_vec();
        assert_ne!(first, second);
        for frame in [&first, &second] {
            let mut sum: u32 = frame[ETH_LEN..ETH_LEN + 20]
                .chunks(2)
                .map(|p| u32::from(u16::from_be_bytes([p[0], p[1]])))
                .sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            assert_eq!(sum, 0xffff, "IPv4 header checksum");
        }
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
