//! The VIP traffic the common path does not parse, through the kernel's `BPF_PROG_TEST_RUN`:
//! ICMP / ICMPv6 errors about a VIP flow, fragments, IPv6 extension headers and QinQ. The
//! maps are written by the balancer's own writer (`Control`, from a parsed config) for `ipip`
//! VIPs, and each frame's backend is read from the outer destination the program wrote.
//!
//! No namespace is touched: a test run without `ctx_in` enters on the loopback (ifindex 1),
//! which the next hops here name, so the program answers `XDP_TX` and nothing leaves.
//! Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON): the tests fail, never skip.

mod lb_support;

use std::net::IpAddr;

use aya::Ebpf;
use balancer::{
    config::Config,
    dataplane::{
        Control,
        layout::{self, TableMember},
        nexthop::NextHop,
    },
    operator::Operator,
};
use balancer_common::{
    BACKEND_DOWN, BACKEND_UP, FAMILY_IPV4, FlowEvent, FlowKey, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_TCP, IPPROTO_UDP, MAP_REASON_STATS, NO_BACKEND, PROGRAM_LB,
    PacketReason, flow_maglev_hash, ipv4_in_16,
};
use balancer_tests::packets::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, Frame, IPV6_DEST_OPTIONS, IPV6_FRAGMENT,
    IPV6_HOP_BY_HOP, IPV6_ROUTING, Mac, V4, V6, icmp, ipv4_fragments, ipv6_fragment, ipv6_options,
    payload, tcp, udp,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const TABLE_SIZE: u32 = 65_537;
const PER_VIP: u32 = 8;
const MAX_CONNECTIONS: u32 = 65_536;
const LOOPBACK: u32 = 1;
const MAX_VIPS: u32 = 4;
const BACKENDS: usize = 3;

const VIP4: [u8; 4] = [10, 0, 0, 10];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const TCP_PORT: u16 = 80;
const UDP_PORT: u16 = 53;
const TCP6_PORT: u16 = 443;
/// An `l2-dsr` TCP VIP on the IPv4 address.
const DSR_PORT: u16 = 8080;
const OUTER_SRC4: [u8; 4] = [10, 1, 0, 254];
const OUTER_SRC6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe,
];
/// A router on the path back to the client: the source of the ICMP errors.
const ROUTER4: [u8; 4] = [198, 51, 100, 1];
const ROUTER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];
const LB_MAC: Mac = [0x02, 0, 0, 0, 0, 0x1b];
const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0xc1];
const EGRESS_MAC: Mac = [0x02, 0, 0, 0, 0xee, 0x01];
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// What clients and routers send: to the balancer's MAC.
const CLIENT: Frame = Frame::new(LB_MAC, CLIENT_MAC);

/// Backend `i` (0-based) of the IPv4 VIPs: 10.1.0.(i+1).
fn backend4(i: usize) -> [u8; 4] {
    [10, 1, 0, u8::try_from(i + 1).expect("few backends")]
}

/// Backend `i` of the IPv6 VIP: 2001:db8:2::(i+1).
fn backend6(i: usize) -> [u8; 16] {
    let mut addr = OUTER_SRC6;
    addr[15] = u8::try_from(i + 1).expect("few backends");
    addr
}

fn backend_mac(i: usize) -> Mac {
    [0x02, 0, 0, 0, 0xb0, u8::try_from(i + 1).expect("few")]
}

/// A client numbered `n`: 100.64.x.y / 2001:db8:1::x:y.
fn client4(n: u16) -> [u8; 4] {
    let [a, b] = n.to_be_bytes();
    [100, 64, a, b]
}

fn client6(n: u16) -> [u8; 16] {
    let mut addr = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    addr[14..].copy_from_slice(&n.to_be_bytes());
    addr
}

fn config() -> Config {
    let list4: Vec<String> = (0..BACKENDS)
        .map(|i| format!("{{ address = \"{}\" }}", IpAddr::from(backend4(i))))
        .collect();
    let list6: Vec<String> = (0..BACKENDS)
        .map(|i| format!("{{ address = \"{}\" }}", IpAddr::from(backend6(i))))
        .collect();
    let (list4, list6) = (list4.join(", "), list6.join(", "));
    let text = format!(
        "[xdp]\ninterface = \"lo\"\nmax_vips = {MAX_VIPS}\ntable_size = {TABLE_SIZE}\n\
         max_backends = {PER_VIP}\nmax_connections = {MAX_CONNECTIONS}\n\n\
         [[vip]]\nname = \"web4\"\naddress = \"10.0.0.10\"\nport = {TCP_PORT}\nprotocol = \"tcp\"\n\
         forward = \"ipip\"\nbackends = [ {list4} ]\n\n\
         [[vip]]\nname = \"dns4\"\naddress = \"10.0.0.10\"\nport = {UDP_PORT}\nprotocol = \"udp\"\n\
         forward = \"ipip\"\nbackends = [ {list4} ]\n\n\
         [[vip]]\nname = \"dsr4\"\naddress = \"10.0.0.10\"\nport = {DSR_PORT}\nprotocol = \"tcp\"\n\
         forward = \"l2-dsr\"\nbackends = [ {list4} ]\n\n\
         [[vip]]\nname = \"web6\"\naddress = \"{vip6}\"\nport = {TCP6_PORT}\nprotocol = \"tcp\"\n\
         forward = \"ipip\"\nbackends = [ {list6} ]\n",
        vip6 = IpAddr::from(VIP6),
    );
    Config::parse(&text, "l4.toml").unwrap_or_else(|err| panic!("{text}\ndoes not parse: {err}"))
}

/// The program, loaded with the config's map sizes, and the writer of its maps.
struct Rig {
    ebpf: Ebpf,
    control: Control,
}

/// What one frame got: the verdict and the frame as the program left it.
struct Run {
    verdict: u32,
    out: Vec<u8>,
}

impl Rig {
    fn new() -> Rig {
        let config = config();
        let xdp = config.xdp.as_ref().expect("[xdp]");
        let (ebpf, maps) = lb_support::load(lb_support::LbSizes {
            max_vips: MAX_VIPS,
            per_vip: PER_VIP,
            table_size: TABLE_SIZE,
            max_connections: MAX_CONNECTIONS,
        });
        let hop = |i: usize, src_addr: IpAddr| NextHop {
            ifindex: LOOPBACK,
            interface: "lo".into(),
            src_mac: EGRESS_MAC,
            dst_mac: backend_mac(i),
            src_addr,
            mtu: 1500,
            via_gateway: None,
        };
        let mut hops = Vec::new();
        for i in 0..BACKENDS {
            hops.push((IpAddr::from(backend4(i)), Ok(hop(i, OUTER_SRC4.into()))));
            hops.push((IpAddr::from(backend6(i)), Ok(hop(i, OUTER_SRC6.into()))));
        }
        let control = Control::new(maps, xdp, &config.vips, LOOPBACK, &hops)
            .unwrap_or_else(|err| panic!("writing the maps: {err}"));
        Rig { ebpf, control }
    }

    fn run(&self, frame: &[u8]) -> Run {
        let ran = lb_support::run_once(&self.ebpf, PROGRAM_LB, "balancer_lb", frame);
        Run {
            verdict: ran.verdict,
            out: ran.out,
        }
    }

    /// Sends `frame`, expects `XDP_TX` encapsulated towards a backend; returns the backend
    /// and the inner packet (everything after the outer IP header).
    fn forwarded(&self, what: &str, frame: &[u8]) -> (usize, Vec<u8>) {
        let run = self.run(frame);
        assert_eq!(
            run.verdict, XDP_TX,
            "{what}: expected XDP_TX towards a backend, got {}",
            run.verdict
        );
        encapsulated(what, &run.out)
    }

    /// The per-reason packet counters, summed over CPUs.
    fn reasons(&self) -> Vec<u64> {
        lb_support::counters(&self.ebpf, MAP_REASON_STATS, PacketReason::COUNT)
            .iter()
            .map(|counter| counter.packets)
            .collect()
    }

    /// Runs `send` and asserts it moved exactly one reason counter, `reason`, by one.
    fn counted<T>(&self, reason: PacketReason, send: impl FnOnce() -> T) -> T {
        let before = self.reasons();
        let result = send();
        let after = self.reasons();
        for (i, label) in PacketReason::ALL.iter().enumerate() {
            let expected = before[i] + u64::from(*label == reason);
            assert_eq!(
                after[i],
                expected,
                "counter {} (expected +1 on {})",
                label.label(),
                reason.label()
            );
        }
        result
    }

    fn set_admin4(&mut self, i: usize, admin: Operator) {
        self.control
            .set_admin_at(IpAddr::from(backend4(i)), admin)
            .unwrap_or_else(|err| panic!("setting backend {i} {admin:?}: {err}"));
    }
}

/// The backend an encapsulated frame goes to (by its outer destination and MAC) and its
/// inner packet. The Ethernet header may carry VLAN tags: they are skipped.
fn encapsulated(what: &str, out: &[u8]) -> (usize, Vec<u8>) {
    let mut l3 = 12;
    while [ETH_P_8021Q, ETH_P_8021AD].contains(&u16::from_be_bytes([out[l3], out[l3 + 1]])) {
        l3 += 4;
    }
    let ether_type = u16::from_be_bytes([out[l3], out[l3 + 1]]);
    l3 += 2;
    let (backend, inner) = match ether_type {
        ETH_P_IPV4 => {
            assert!(
                [IPPROTO_IPIP, IPPROTO_IPV6].contains(&out[l3 + 9]),
                "{what}: outer protocol {}",
                out[l3 + 9]
            );
            assert_eq!(out[l3 + 12..l3 + 16], OUTER_SRC4, "{what}: outer source");
            let dst = &out[l3 + 16..l3 + 20];
            let i = (0..BACKENDS)
                .find(|&i| dst == backend4(i))
                .unwrap_or_else(|| panic!("{what}: sent to an unknown address {dst:?}"));
            (i, out[l3 + 20..].to_vec())
        }
        ETH_P_IPV6 => {
            assert_eq!(out[l3 + 8..l3 + 24], OUTER_SRC6, "{what}: outer source");
            let dst = &out[l3 + 24..l3 + 40];
            let i = (0..BACKENDS)
                .find(|&i| dst == backend6(i))
                .unwrap_or_else(|| panic!("{what}: sent to an unknown address {dst:?}"));
            (i, out[l3 + 40..].to_vec())
        }
        other => panic!("{what}: outer EtherType {other:#06x}"),
    };
    assert_eq!(out[..6], backend_mac(backend), "{what}: destination MAC");
    (backend, inner)
}

/// A client's TCP packet to the IPv4 VIP.
fn tcp4(client: u16, port: u16, flags: u8) -> Vec<u8> {
    V4::new(client4(client), VIP4, IPPROTO_TCP).packet(&tcp(port, TCP_PORT, flags, &payload(32)))
}

fn tcp6(client: u16, port: u16, flags: u8) -> Vec<u8> {
    V6::new(client6(client), VIP6, IPPROTO_TCP).packet(&tcp(port, TCP6_PORT, flags, &payload(32)))
}

/// A router's ICMP "fragmentation needed" (MTU `mtu`) about the backend's reply to `client`
/// (VIP → client, the flow reversed), quoting its IPv4 header and 8 bytes of TCP.
fn frag_needed4(client: u16, port: u16, mtu: u16) -> Vec<u8> {
    let reply = V4::new(VIP4, client4(client), IPPROTO_TCP).packet(&tcp(
        TCP_PORT,
        port,
        TCP_ACK,
        &payload(1400),
    ));
    let [hi, lo] = mtu.to_be_bytes();
    let message = icmp(3, 4, [0, 0, hi, lo], &reply[..28], None);
    V4::new(ROUTER4, VIP4, IPPROTO_ICMP).packet(&message)
}

/// A router's ICMPv6 "packet too big" about the backend's reply to `client`, quoting as
/// much of it as fits in 1280 bytes.
fn too_big6(client: u16, port: u16, mtu: u32) -> Vec<u8> {
    let reply = V6::new(VIP6, client6(client), IPPROTO_TCP).packet(&tcp(
        TCP6_PORT,
        port,
        TCP_ACK,
        &payload(1400),
    ));
    let quoted = &reply[..1280 - 48];
    let message = icmp(2, 0, mtu.to_be_bytes(), quoted, Some((ROUTER6, VIP6)));
    V6::new(ROUTER6, VIP6, IPPROTO_ICMPV6).packet(&message)
}

#[test]
fn icmp_errors_about_a_vip_flow_reach_its_backend() {
    let mut rig = Rig::new();
    // Flows of clients 1..=20, each placed by its SYN.
    let placed: Vec<usize> = (1..=20)
        .map(|n| {
            rig.forwarded("v4 SYN", &CLIENT.ipv4(&tcp4(n, 40_000, TCP_SYN)))
                .0
        })
        .collect();
    // Drain every backend but one: the Maglev table now names only that one, so only the
    // connection table (the reversed tuple) can send an error to any other.
    let keep = placed[0];
    for i in (0..BACKENDS).filter(|&i| i != keep) {
        rig.set_admin4(i, Operator::Draining);
    }
    assert!(
        placed.iter().any(|&b| b != keep),
        "20 flows all on one backend: {placed:?}"
    );
    for (n, &backend) in (1..=20).zip(&placed) {
        let error = frag_needed4(n, 40_000, 1400);
        let (got, inner) = rig.counted(PacketReason::IcmpErrorForwarded, || {
            rig.forwarded("frag needed", &CLIENT.ipv4(&error))
        });
        assert_eq!(
            got, backend,
            "client {n}: the error goes to its flow's backend"
        );
        assert_eq!(inner, error, "client {n}: the ICMP packet arrives intact");
    }

    // Time exceeded (type 11) quoting a UDP reply of the UDP VIP: forwarded too.
    let reply = V4::new(VIP4, client4(7), IPPROTO_UDP).packet(&udp(UDP_PORT, 5353, &payload(8)));
    let error = V4::new(ROUTER4, VIP4, IPPROTO_ICMP).packet(&icmp(11, 0, [0; 4], &reply, None));
    rig.counted(PacketReason::IcmpErrorForwarded, || {
        rig.forwarded("time exceeded", &CLIENT.ipv4(&error))
    });
}

#[test]
fn icmpv6_packet_too_big_about_a_vip_flow_reaches_its_backend() {
    let rig = Rig::new();
    for n in 1..=12 {
        let (backend, _) = rig.forwarded("v6 SYN", &CLIENT.ipv6(&tcp6(n, 41_000, TCP_SYN)));
        let error = too_big6(n, 41_000, 1280);
        let (got, inner) = rig.counted(PacketReason::IcmpErrorForwarded, || {
            rig.forwarded("packet too big", &CLIENT.ipv6(&error))
        });
        assert_eq!(
            got, backend,
            "client {n}: the error goes to its flow's backend"
        );
        assert_eq!(inner, error, "client {n}: the ICMPv6 packet arrives intact");
    }
}

#[test]
fn icmp_errors_about_no_vip_flow_pass_and_echo_passes() {
    let rig = Rig::new();
    let pass = |what: &str, frame: Vec<u8>, reason: PacketReason| {
        let run = rig.counted(reason, || rig.run(&frame));
        assert_eq!(run.verdict, XDP_PASS, "{what}");
        assert_eq!(run.out, frame, "{what}: untouched");
    };
    // Quoting a packet from a VIP address but a port that is no VIP's.
    let reply = V4::new(VIP4, client4(1), IPPROTO_TCP).packet(&tcp(8081, 40_000, TCP_ACK, &[]));
    let error = V4::new(ROUTER4, VIP4, IPPROTO_ICMP).packet(&icmp(
        3,
        4,
        [0, 0, 5, 0x78],
        &reply[..28],
        None,
    ));
    pass(
        "v4 error, unknown VIP port",
        CLIENT.ipv4(&error),
        PacketReason::IcmpErrorNotVip,
    );
    // Addressed to the host itself, quoting the host's own packet.
    let host = [10, 0, 0, 99];
    let reply = V4::new(host, client4(1), IPPROTO_TCP).packet(&tcp(22, 40_000, TCP_ACK, &[]));
    let error = V4::new(ROUTER4, host, IPPROTO_ICMP).packet(&icmp(
        3,
        4,
        [0, 0, 5, 0x78],
        &reply[..28],
        None,
    ));
    pass(
        "v4 error to the host",
        CLIENT.ipv4(&error),
        PacketReason::IcmpErrorNotVip,
    );
    // ICMPv6 too big about a VIP address's packet from an unknown port.
    let reply = V6::new(VIP6, client6(1), IPPROTO_TCP).packet(&tcp(8443, 41_000, TCP_ACK, &[]));
    let message = icmp(2, 0, 1280u32.to_be_bytes(), &reply, Some((ROUTER6, VIP6)));
    let error = V6::new(ROUTER6, VIP6, IPPROTO_ICMPV6).packet(&message);
    pass(
        "v6 error, unknown VIP port",
        CLIENT.ipv6(&error),
        PacketReason::IcmpErrorNotVip,
    );
    // Echo requests to a VIP keep today's behaviour: passed, as another protocol.
    let echo = V4::new(client4(1), VIP4, IPPROTO_ICMP).packet(&icmp(
        8,
        0,
        [0x12, 0x34, 0, 1],
        b"ping",
        None,
    ));
    pass(
        "v4 echo to the VIP",
        CLIENT.ipv4(&echo),
        PacketReason::OtherL4,
    );
}

#[test]
fn fragments_follow_their_first_fragment() {
    let rig = Rig::new();
    for n in 1..=8u16 {
        let ip = V4 {
            id: 0x4000 + n,
            frag_off: 0,
            ..V4::new(client4(n), VIP4, IPPROTO_UDP)
        };
        let datagram = udp(20_000 + n, UDP_PORT, &payload(2000));
        let [first, later] = ipv4_fragments(&ip, &datagram, 1200);
        // The whole datagram's pick: a datagram of the same flow that is not fragmented.
        let (whole, _) = rig.forwarded(
            "v4 whole datagram",
            &CLIENT.ipv4(&V4::new(client4(n), VIP4, IPPROTO_UDP).packet(&datagram[..100])),
        );
        let (one, inner) = rig.counted(PacketReason::FragmentForwarded, || {
            rig.forwarded("v4 first fragment", &CLIENT.ipv4(&first))
        });
        assert_eq!(
            one, whole,
            "client {n}: the first fragment is placed as its flow"
        );
        assert_eq!(inner, first);
        let (two, inner) = rig.counted(PacketReason::FragmentForwarded, || {
            rig.forwarded("v4 later fragment", &CLIENT.ipv4(&later))
        });
        assert_eq!(two, one, "client {n}: the later fragment follows the first");
        assert_eq!(inner, later);
    }

    // IPv6: a fragment header (after a hop-by-hop header in the first one).
    for n in 1..=8u16 {
        let segment = tcp(30_000 + n, TCP6_PORT, TCP_ACK, &payload(1600));
        let (whole, _) = rig.forwarded("v6 whole", &CLIENT.ipv6(&tcp6(n, 30_000 + n, TCP_SYN)));
        let id = 0xdead_0000 + u32::from(n);
        let first = V6::new(client6(n), VIP6, IPV6_HOP_BY_HOP).packet(
            &[
                ipv6_options(IPV6_FRAGMENT, 0),
                ipv6_fragment(IPPROTO_TCP, 0, true, id),
                segment[..1200].to_vec(),
            ]
            .concat(),
        );
        let later = V6::new(client6(n), VIP6, IPV6_FRAGMENT).packet(
            &[
                ipv6_fragment(IPPROTO_TCP, 150, false, id),
                segment[1200..].to_vec(),
            ]
            .concat(),
        );
        let (one, inner) = rig.counted(PacketReason::FragmentForwarded, || {
            rig.forwarded("v6 first fragment", &CLIENT.ipv6(&first))
        });
        assert_eq!(
            one, whole,
            "client {n}: the first fragment is placed as its flow"
        );
        assert_eq!(inner, first);
        let (two, inner) = rig.counted(PacketReason::FragmentForwarded, || {
            rig.forwarded("v6 later fragment", &CLIENT.ipv6(&later))
        });
        assert_eq!(two, one, "client {n}: the later fragment follows the first");
        assert_eq!(inner, later);
    }
}

#[test]
fn orphan_fragments_are_dropped_and_counted() {
    let rig = Rig::new();
    let ip = V4 {
        id: 0x7777,
        frag_off: 0,
        ..V4::new(client4(1), VIP4, IPPROTO_UDP)
    };
    let [_, later] = ipv4_fragments(&ip, &udp(20_000, UDP_PORT, &payload(2000)), 1480);
    let run = rig.counted(PacketReason::FragmentOrphan, || {
        rig.run(&CLIENT.ipv4(&later))
    });
    assert_eq!(run.verdict, XDP_DROP, "a later fragment with no first one");
    let later = V6::new(client6(1), VIP6, IPV6_FRAGMENT).packet(
        &[
            ipv6_fragment(IPPROTO_TCP, 150, false, 0x1234_5678),
            payload(64),
        ]
        .concat(),
    );
    let run = rig.counted(PacketReason::FragmentOrphan, || {
        rig.run(&CLIENT.ipv6(&later))
    });
    assert_eq!(
        run.verdict, XDP_DROP,
        "a later IPv6 fragment with no first one"
    );

    // The host's own fragmented traffic keeps working: the first fragment of a datagram to
    // no VIP passes, and so do its later fragments.
    let ip = V4 {
        id: 0x8888,
        frag_off: 0,
        ..V4::new(client4(1), [10, 0, 0, 99], IPPROTO_UDP)
    };
    let [first, later] = ipv4_fragments(&ip, &udp(20_000, 9999, &payload(2000)), 1480);
    for (what, packet) in [("first", first), ("later", later)] {
        let frame = CLIENT.ipv4(&packet);
        let run = rig.counted(PacketReason::Fragment, || rig.run(&frame));
        assert_eq!(run.verdict, XDP_PASS, "{what} fragment to the host");
        assert_eq!(run.out, frame);
    }
}

#[test]
fn ipv6_extension_headers_are_parsed_past() {
    let rig = Rig::new();
    for n in 1..=8u16 {
        let (backend, _) = rig.forwarded("v6 SYN", &CLIENT.ipv6(&tcp6(n, 42_000, TCP_SYN)));
        let packet = V6::new(client6(n), VIP6, IPV6_HOP_BY_HOP).packet(
            &[
                ipv6_options(IPV6_DEST_OPTIONS, 0),
                ipv6_options(IPPROTO_TCP, 1),
                tcp(42_000, TCP6_PORT, TCP_ACK, &payload(100)),
            ]
            .concat(),
        );
        let (got, inner) = rig.counted(PacketReason::VipForwarded, || {
            rig.forwarded("hop-by-hop + destination options", &CLIENT.ipv6(&packet))
        });
        assert_eq!(got, backend, "client {n}: the flow's backend");
        assert_eq!(inner, packet, "the packet arrives intact");
    }
    // Four headers are parsed; a fifth is beyond the bound.
    let chain = |count: usize| {
        let kinds = [
            IPV6_HOP_BY_HOP,
            IPV6_DEST_OPTIONS,
            IPV6_ROUTING,
            IPV6_DEST_OPTIONS,
            IPV6_DEST_OPTIONS,
        ];
        let mut body = Vec::new();
        for i in 0..count {
            let next = if i + 1 < count {
                kinds[i + 1]
            } else {
                IPPROTO_TCP
            };
            body.extend(ipv6_options(next, 0));
        }
        body.extend(tcp(42_000, TCP6_PORT, TCP_ACK, &payload(10)));
        CLIENT.ipv6(&V6::new(client6(1), VIP6, kinds[0]).packet(&body))
    };
    rig.counted(PacketReason::VipForwarded, || {
        rig.forwarded("four headers", &chain(4))
    });
    let run = rig.counted(PacketReason::Ipv6ExtensionLimit, || rig.run(&chain(5)));
    assert_eq!(run.verdict, XDP_DROP, "five extension headers");
}

#[test]
fn qinq_is_forwarded_with_both_tags_and_a_third_tag_is_dropped() {
    let rig = Rig::new();
    const QINQ: Frame = Frame {
        outer_tags: &[(ETH_P_8021AD, 0x0123)],
        ..CLIENT.tagged(0x2064)
    };
    for n in 1..=8u16 {
        let (backend, _) = rig.forwarded("plain", &CLIENT.ipv4(&tcp4(n, 43_000, TCP_SYN)));
        let packet = tcp4(n, 43_000, TCP_ACK);
        let run = rig.counted(PacketReason::VipForwarded, || rig.run(&QINQ.ipv4(&packet)));
        assert_eq!(run.verdict, XDP_TX, "client {n}: QinQ forwarded");
        let (got, inner) = encapsulated("QinQ", &run.out);
        assert_eq!(got, backend, "client {n}: the flow's backend");
        assert_eq!(inner, packet, "the packet arrives intact");
        assert_eq!(
            run.out[12..22],
            [0x88, 0xa8, 0x01, 0x23, 0x81, 0x00, 0x20, 0x64, 0x08, 0x00],
            "both tags kept, then the outer IPv4 header"
        );
    }
    let triple = Frame {
        outer_tags: &[(ETH_P_8021AD, 0x0123), (ETH_P_8021Q, 0x0456)],
        ..CLIENT.tagged(0x2064)
    };
    let run = rig.counted(PacketReason::StackedVlan, || {
        rig.run(&triple.ipv4(&tcp4(1, 43_000, TCP_ACK)))
    });
    assert_eq!(run.verdict, XDP_DROP, "three tags");
}

/// The Maglev table `Control` builds for the IPv4 backends (`up[i]`: backend `i` is up), as
/// backend numbers (`None`: no backend).
fn table(up: &[bool]) -> Vec<Option<usize>> {
    let members: Vec<TableMember> = up
        .iter()
        .enumerate()
        .map(|(i, &up)| TableMember {
            address: IpAddr::from(backend4(i)),
            weight: 1,
            slot: u32::try_from(i).expect("few"),
            state: if up { BACKEND_UP } else { BACKEND_DOWN },
        })
        .collect();
    layout::build_vip_table(&members, TABLE_SIZE)
        .expect("a table")
        .into_iter()
        .map(|slot| (slot != NO_BACKEND).then_some(slot as usize))
        .collect()
}

/// The Maglev slot of client `n`'s TCP flow from `port` to the IPv4 VIP (select.rs).
fn slot4(n: u16, port: u16) -> usize {
    let key = FlowKey {
        src: ipv4_in_16(client4(n)),
        dst: ipv4_in_16(VIP4),
        src_port_be: port.to_be(),
        dst_port_be: TCP_PORT.to_be(),
        protocol: IPPROTO_TCP,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    };
    let hash = flow_maglev_hash(&key);
    (((hash >> 32) as u32 ^ hash as u32) % TABLE_SIZE) as usize
}

/// An error about a flow the connection table does not know is routed as a data packet of
/// that flow would be: it is not a SYN, so within `flow_grace` after a backend-set change it
/// goes to the backend the previous Maglev table names.
#[test]
fn an_icmp_error_about_an_unknown_flow_follows_the_grace_table() {
    let mut rig = Rig::new();
    rig.set_admin4(2, Operator::Disabled);
    let previous = table(&[true, true, false]);
    rig.set_admin4(2, Operator::Enabled);
    let current = table(&[true, true, true]);
    let port = 40_000;
    let n = (1..10_000u16)
        .find(|&n| {
            previous[slot4(n, port)].is_some()
                && previous[slot4(n, port)] != current[slot4(n, port)]
        })
        .expect("a flow the change moved");
    let grace_hits = || lb_support::flow_events(&rig.ebpf)[FlowEvent::GraceHit as usize];
    let before = grace_hits();
    let (got, _) = rig.counted(PacketReason::IcmpErrorForwarded, || {
        rig.forwarded(
            "frag needed, unknown flow",
            &CLIENT.ipv4(&frag_needed4(n, port, 1400)),
        )
    });
    assert_eq!(
        Some(got),
        previous[slot4(n, port)],
        "client {n}: the previous table's backend (the current one says {:?})",
        current[slot4(n, port)]
    );
    assert_eq!(grace_hits(), before + 1, "counted as a grace hit");
}

/// An `l2-dsr` VIP: the error goes to the flow's backend with only the MACs rewritten.
#[test]
fn icmp_errors_about_an_l2_dsr_flow_reach_its_backend() {
    let rig = Rig::new();
    let backend_of = |out: &[u8]| {
        (0..BACKENDS)
            .find(|&i| out[..6] == backend_mac(i))
            .unwrap_or_else(|| panic!("sent to an unknown MAC {:02x?}", &out[..6]))
    };
    for n in 1..=8u16 {
        let syn =
            V4::new(client4(n), VIP4, IPPROTO_TCP).packet(&tcp(44_000, DSR_PORT, TCP_SYN, &[]));
        let run = rig.run(&CLIENT.ipv4(&syn));
        assert_eq!(run.verdict, XDP_TX, "client {n}: SYN");
        let backend = backend_of(&run.out);
        let reply = V4::new(VIP4, client4(n), IPPROTO_TCP).packet(&tcp(
            DSR_PORT,
            44_000,
            TCP_ACK,
            &payload(1400),
        ));
        let error = V4::new(ROUTER4, VIP4, IPPROTO_ICMP).packet(&icmp(
            3,
            4,
            [0, 0, 5, 0x78],
            &reply[..28],
            None,
        ));
        let frame = CLIENT.ipv4(&error);
        let run = rig.counted(PacketReason::IcmpErrorForwarded, || rig.run(&frame));
        assert_eq!(run.verdict, XDP_TX, "client {n}: the error");
        assert_eq!(
            backend_of(&run.out),
            backend,
            "client {n}: the flow's backend"
        );
        assert_eq!(run.out[6..12], EGRESS_MAC, "source MAC");
        assert_eq!(run.out[12..], frame[12..], "nothing but the MACs changes");
    }
}
