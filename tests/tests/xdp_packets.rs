//! Packet fixtures for the `balancer_lb` XDP program, run through the kernel's
//! `BPF_PROG_TEST_RUN` (aya's `TestRun`): input frame → verdict, output frame
//! and counter deltas.
//!
//! Every case asserts that the program returns `XDP_PASS`, leaves the frame
//! untouched, and counts it exactly once: +1 packet and +frame-length bytes on
//! the expected `PacketReason` and nothing on any other reason; +1/+length on
//! the expected VIP's `Pass` slot of the per-VIP stats and nothing on any other
//! slot.
//!
//! Frames shorter than an Ethernet header (measured on Linux 6.18): the
//! kernel's XDP test run refuses any `data_in` with fewer than `ETH_HLEN` (14)
//! bytes of packet with `EINVAL` before the program runs — also when the bytes
//! come behind XDP metadata (`xdp_md.data` > 0): the check counts packet bytes
//! after the metadata. The harness asserts both refusals, and that no counter
//! moved, for every length 0..=13. It then still executes the program on such
//! a frame: `data_in` = the n-byte frame plus filler up to 14 bytes, with
//! `xdp_md.data_end = n`. The kernel puts the first n bytes in the linear
//! buffer and the rest in a fragment, and the program (not frags-aware: it
//! only ever reads `data..data_end`) sees exactly an n-byte frame, which is
//! what the `truncated_ethernet` path is for, and counts n bytes (the expected
//! byte delta of such a case is its linear length). `linear_part_sweep` checks
//! that this split view classifies exactly like a frame cut to the same length.
//!
//! Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON) and a kernel with BPF: the
//! tests fail, never skip, without them.

use balancer_tests::{
    packets::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_LLDP, Frame, IPV6_AUTH, IPV6_FRAGMENT, Mac, V4,
        V6, arp_request, icmp, ipv6_auth, ipv6_fragment, ipv6_options, pad_to_60, payload, tcp,
        udp,
    },
    traffic::internet_checksum,
};
use std::fmt::Write as _;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp},
};
use balancer::dataplane::EBPF_OBJECT;
use balancer_common::{
    Action, Counter, FORWARD_LOCAL, IPPROTO_TCP, IPPROTO_UDP, MAP_REASON_STATS, MAP_VIP_STATS,
    MAP_VIPS, PROGRAM_LB, PacketReason, VipKey, VipMeta,
};

/// `XDP_PASS` from `enum xdp_action`.
const XDP_PASS: u32 = 2;
const ETH_HLEN: usize = 14;
/// Bytes of XDP metadata used to show the kernel still refuses short frames behind it.
const META_LEN: usize = 16;
/// VIP capacity the test loads the object with: keeps the per-VIP stats array
/// small enough to compare whole after every case.
const MAX_VIPS: u32 = 8;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_GRE: u8 = 47;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_NONE: u8 = 59;

// ---------------------------------------------------------------------------
// VIPs written into the map.

const VIP4: [u8; 4] = [10, 0, 0, 10];
const OTHER4: [u8; 4] = [10, 0, 0, 11];
const CLIENT4: [u8; 4] = [192, 0, 2, 1];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const OTHER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11,
];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The v4 VIP's address as the v4 key stores it (first four bytes, rest zero),
/// used as an IPv6 destination: must not match the v4 VIP (family differs).
const VIP4_AS_V6: [u8; 16] = [10, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

const V4_TCP_PORT: u16 = 80;
const V4_UDP_PORT: u16 = 53;
const V6_TCP_PORT: u16 = 443;
const V6_UDP_PORT: u16 = 5353;
const CLIENT_PORT: u16 = 40_000;

// Non-zero, non-contiguous ids so an indexing mistake shows up as a wrong slot.
const ID_V4_TCP: u32 = 1;
const ID_V4_UDP: u32 = 2;
const ID_V6_TCP: u32 = 3;
const ID_V6_UDP: u32 = 6;

fn vips() -> [(VipKey, VipMeta); 4] {
    let meta = |id| VipMeta {
        id,
        forward: FORWARD_LOCAL,
        flags: 0,
        table_half: 0,
        _pad: 0,
    };
    [
        (VipKey::v4(VIP4, V4_TCP_PORT, IPPROTO_TCP), meta(ID_V4_TCP)),
        (VipKey::v4(VIP4, V4_UDP_PORT, IPPROTO_UDP), meta(ID_V4_UDP)),
        (VipKey::v6(VIP6, V6_TCP_PORT, IPPROTO_TCP), meta(ID_V6_TCP)),
        (VipKey::v6(VIP6, V6_UDP_PORT, IPPROTO_UDP), meta(ID_V6_UDP)),
    ]
}

// ---------------------------------------------------------------------------
// Frames, built with `balancer_tests::packets`: the client's side of every packet.

const DST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
const SRC_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
const ETH: Frame = Frame::new(DST_MAC, SRC_MAC);
/// One 802.1Q tag, VLAN 100.
const DOT1Q: Frame = ETH.tagged(100);
/// QinQ: an 802.1ad tag (VLAN 100), then an 802.1Q one (VLAN 101).
const QINQ: Frame = ETH.stacked(&[(ETH_P_8021AD, 100)]).tagged(101);
const TCP_SYN: u8 = 0x02;

/// An IPv4 header from the client, TTL 64.
fn v4(dst: [u8; 4], protocol: u8) -> V4 {
    V4::new(CLIENT4, dst, protocol).with_ttl(64)
}

/// An IPv6 header from the client, hop limit 64.
fn v6(dst: [u8; 16], next_header: u8) -> V6 {
    V6::new(CLIENT6, dst, next_header).with_hop_limit(64)
}

/// A TCP SYN from the client's port.
fn syn_to(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    tcp(CLIENT_PORT, dst_port, TCP_SYN, payload)
}

/// A UDP datagram from the client's port.
fn udp_to(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    udp(CLIENT_PORT, dst_port, payload)
}

/// An ICMP (`kind` 8) or ICMPv6 (`kind` 128) echo request, checksummed without the
/// ICMPv6 pseudo-header (the program never reads it).
fn echo_request(kind: u8) -> Vec<u8> {
    icmp(kind, 0, [0x12, 0x34, 0, 1], b"ping", None)
}

// ---------------------------------------------------------------------------
// Cases.

struct Case {
    name: String,
    /// Everything handed to the kernel (`data_in`).
    frame: Vec<u8>,
    /// If set, only this many first bytes are in the linear buffer the program
    /// sees (`xdp_md.data_end`); the rest goes into a fragment.
    linear: Option<usize>,
    verdict: u32,
    reason: PacketReason,
    vip: Option<u32>,
}

impl Case {
    /// The length the program sees, and counts as the packet's bytes.
    fn seen_len(&self) -> usize {
        self.linear.unwrap_or(self.frame.len())
    }
}

fn case(name: impl Into<String>, frame: Vec<u8>, reason: PacketReason, vip: Option<u32>) -> Case {
    Case {
        name: name.into(),
        frame,
        linear: None,
        verdict: XDP_PASS,
        reason,
        vip,
    }
}

fn v4_tcp_vip() -> Vec<u8> {
    v4_frame(
        ETH,
        &v4(VIP4, IPPROTO_TCP),
        &syn_to(V4_TCP_PORT, &payload(16)),
    )
}

fn v4_udp_vip() -> Vec<u8> {
    v4_frame(
        ETH,
        &v4(VIP4, IPPROTO_UDP),
        &udp_to(V4_UDP_PORT, &payload(16)),
    )
}

fn v6_frame(eth: Frame, ip: &V6, l4: &[u8]) -> Vec<u8> {
    eth.ipv6(&ip.packet(l4))
}

fn v4_frame(eth: Frame, ip: &V4, l4: &[u8]) -> Vec<u8> {
    eth.ipv4(&ip.packet(l4))
}

fn fixture_cases() -> Vec<Case> {
    use PacketReason::*;
    let tcp_v4 = v4(VIP4, IPPROTO_TCP);
    let udp_v4 = v4(VIP4, IPPROTO_UDP);
    let tcp_v6 = v6(VIP6, IPPROTO_TCP);
    let udp_v6 = v6(VIP6, IPPROTO_UDP);
    let data = payload(16);
    let tcp80 = syn_to(V4_TCP_PORT, &data);
    let udp53 = udp_to(V4_UDP_PORT, &data);
    let tcp443 = syn_to(V6_TCP_PORT, &data);
    let udp5353 = udp_to(V6_UDP_PORT, &data);
    let arp = arp_request(SRC_MAC, CLIENT4, VIP4);

    let mut cases = vec![
        // To a VIP.
        case("v4 tcp to vip", v4_tcp_vip(), VipLocal, Some(ID_V4_TCP)),
        case("v4 udp to vip", v4_udp_vip(), VipLocal, Some(ID_V4_UDP)),
        case(
            "v6 tcp to vip",
            v6_frame(ETH, &tcp_v6, &tcp443),
            VipLocal,
            Some(ID_V6_TCP),
        ),
        case(
            "v6 udp to vip",
            v6_frame(ETH, &udp_v6, &udp5353),
            VipLocal,
            Some(ID_V6_UDP),
        ),
        case(
            "v4 tcp to vip, no payload, padded to 60",
            pad_to_60(v4_frame(ETH, &tcp_v4, &syn_to(V4_TCP_PORT, &[]))),
            VipLocal,
            Some(ID_V4_TCP),
        ),
        case(
            "v4 udp to vip, no payload, padded to 60",
            pad_to_60(v4_frame(ETH, &udp_v4, &udp_to(V4_UDP_PORT, &[]))),
            VipLocal,
            Some(ID_V4_UDP),
        ),
        case(
            "v4 tcp to vip, 1400-byte payload",
            v4_frame(ETH, &tcp_v4, &syn_to(V4_TCP_PORT, &payload(1400))),
            VipLocal,
            Some(ID_V4_TCP),
        ),
        case(
            "v6 udp to vip, 1200-byte payload",
            v6_frame(ETH, &udp_v6, &udp_to(V6_UDP_PORT, &payload(1200))),
            VipLocal,
            Some(ID_V6_UDP),
        ),
        case(
            "v4 tcp to vip, DF set (not a fragment)",
            v4_frame(ETH, &tcp_v4, &tcp80),
            VipLocal,
            Some(ID_V4_TCP),
        ),
        case(
            "v4 tcp to vip, no flags",
            v4_frame(ETH, &tcp_v4.clone().with_frag_off(0), &tcp80),
            VipLocal,
            Some(ID_V4_TCP),
        ),
        // VIP address, but not a VIP's port or protocol.
        case(
            "v4 tcp to vip address, wrong port",
            v4_frame(ETH, &tcp_v4, &syn_to(81, &data)),
            NotVip,
            None,
        ),
        case(
            "v4 udp to vip address, wrong port",
            v4_frame(ETH, &udp_v4, &udp_to(54, &data)),
            NotVip,
            None,
        ),
        case(
            "v6 tcp to vip address, wrong port",
            v6_frame(ETH, &tcp_v6, &syn_to(444, &data)),
            NotVip,
            None,
        ),
        case(
            "v6 udp to vip address, wrong port",
            v6_frame(ETH, &udp_v6, &udp_to(5354, &data)),
            NotVip,
            None,
        ),
        case(
            "v4 tcp to the udp vip's port",
            v4_frame(ETH, &tcp_v4, &syn_to(V4_UDP_PORT, &data)),
            NotVip,
            None,
        ),
        case(
            "v4 udp to the tcp vip's port",
            v4_frame(ETH, &udp_v4, &udp_to(V4_TCP_PORT, &data)),
            NotVip,
            None,
        ),
        case(
            "v6 tcp to the udp vip's port",
            v6_frame(ETH, &tcp_v6, &syn_to(V6_UDP_PORT, &data)),
            NotVip,
            None,
        ),
        case(
            "v6 udp to the tcp vip's port",
            v6_frame(ETH, &udp_v6, &udp_to(V6_TCP_PORT, &data)),
            NotVip,
            None,
        ),
        // Not a VIP address.
        case(
            "v4 tcp to non-vip address",
            v4_frame(ETH, &v4(OTHER4, IPPROTO_TCP), &tcp80),
            NotVip,
            None,
        ),
        case(
            "v4 udp to non-vip address",
            v4_frame(ETH, &v4(OTHER4, IPPROTO_UDP), &udp53),
            NotVip,
            None,
        ),
        case(
            "v6 tcp to non-vip address",
            v6_frame(ETH, &v6(OTHER6, IPPROTO_TCP), &tcp443),
            NotVip,
            None,
        ),
        case(
            "v6 udp to non-vip address",
            v6_frame(ETH, &v6(OTHER6, IPPROTO_UDP), &udp5353),
            NotVip,
            None,
        ),
        case(
            "v6 tcp to the v4 vip's key bytes (family differs)",
            v6_frame(ETH, &v6(VIP4_AS_V6, IPPROTO_TCP), &tcp80),
            NotVip,
            None,
        ),
        // Not IP.
        case("arp request", ETH.with(ETH_P_ARP, &arp), NotIp, None),
        case("lldp", ETH.with(ETH_P_LLDP, &payload(40)), NotIp, None),
        case(
            "802.1q-tagged arp",
            DOT1Q.with(ETH_P_ARP, &arp),
            NotIp,
            None,
        ),
        case(
            "ethernet header only, arp type",
            ETH.with(ETH_P_ARP, &[]),
            NotIp,
            None,
        ),
        // VLAN.
        case(
            "802.1q v4 tcp to vip",
            v4_frame(DOT1Q, &tcp_v4, &tcp80),
            VipLocal,
            Some(ID_V4_TCP),
        ),
        case(
            "802.1q v4 udp to vip",
            v4_frame(DOT1Q, &udp_v4, &udp53),
            VipLocal,
            Some(ID_V4_UDP),
        ),
        case(
            "802.1q v6 tcp to vip",
            v6_frame(DOT1Q, &tcp_v6, &tcp443),
            VipLocal,
            Some(ID_V6_TCP),
        ),
        case(
            "802.1q v6 udp to vip",
            v6_frame(DOT1Q, &udp_v6, &udp5353),
            VipLocal,
            Some(ID_V6_UDP),
        ),
        case(
            "single 802.1ad tag, v4 udp to vip",
            v4_frame(ETH.stacked(&[(ETH_P_8021AD, 100)]), &udp_v4, &udp53),
            VipLocal,
            Some(ID_V4_UDP),
        ),
        case(
            "802.1q v4 tcp to non-vip",
            v4_frame(DOT1Q, &v4(OTHER4, IPPROTO_TCP), &tcp80),
            NotVip,
            None,
        ),
        case(
            "qinq 802.1ad+802.1q v4 tcp to vip",
            v4_frame(QINQ, &tcp_v4, &tcp80),
            VipLocal,
            Some(ID_V4_TCP),
        ),
        case(
            "qinq 802.1q+802.1q v6 udp to vip",
            v6_frame(
                ETH.stacked(&[(ETH_P_8021Q, 100)]).tagged(101),
                &udp_v6,
                &udp5353,
            ),
            VipLocal,
            Some(ID_V6_UDP),
        ),
        case(
            "qinq 802.1ad+802.1ad arp",
            ETH.stacked(&[(ETH_P_8021AD, 100), (ETH_P_8021AD, 101)])
                .with(ETH_P_ARP, &arp),
            NotIp,
            None,
        ),
        case(
            "qinq tags only (18 bytes)",
            ETH.stacked(&[(ETH_P_8021AD, 100)]).with(ETH_P_8021Q, &[]),
            TruncatedVlan,
            None,
        ),
    ];

    // IPv4 options: every IHL from 6 to 15, to both v4 VIPs.
    for ihl in 6..=15 {
        cases.push(case(
            format!("v4 tcp to vip, ihl {ihl}"),
            v4_frame(ETH, &tcp_v4.clone().with_options_to_ihl(ihl), &tcp80),
            VipLocal,
            Some(ID_V4_TCP),
        ));
        cases.push(case(
            format!("802.1q v4 udp to vip, ihl {ihl}"),
            v4_frame(DOT1Q, &udp_v4.clone().with_options_to_ihl(ihl), &udp53),
            VipLocal,
            Some(ID_V4_UDP),
        ));
    }

    // Bad IPv4 headers.
    for ihl in 0..=4 {
        cases.push(case(
            format!("v4 ihl {ihl} (< 5)"),
            v4_frame(ETH, &tcp_v4.clone().with_ihl(ihl), &tcp80),
            BadIpHeader,
            None,
        ));
    }
    for version in [0, 5, 6, 15] {
        cases.push(case(
            format!("ipv4 ethertype, version {version}"),
            v4_frame(ETH, &tcp_v4.clone().with_version(version), &tcp80),
            BadIpHeader,
            None,
        ));
    }
    for version in [0, 4, 7, 15] {
        cases.push(case(
            format!("ipv6 ethertype, version {version}"),
            v6_frame(ETH, &tcp_v6.clone().with_version(version), &tcp443),
            BadIpHeader,
            None,
        ));
    }
    for (name, ip) in [
        ("v4 total length 0", tcp_v4.clone().with_total_len(0)),
        (
            "v4 total length 19 (< 20)",
            tcp_v4.clone().with_total_len(19),
        ),
        (
            "v4 ihl 6, total length 20 (< 24)",
            tcp_v4.clone().with_options_to_ihl(6).with_total_len(20),
        ),
        (
            "v4 ihl 15, total length 59 (< 60)",
            tcp_v4.clone().with_options_to_ihl(15).with_total_len(59),
        ),
    ] {
        cases.push(case(name, v4_frame(ETH, &ip, &tcp80), BadIpHeader, None));
    }

    // IPv4 total length vs the frame.
    let full_v4 = 20 + tcp80.len() as u16;
    for (name, total_len) in [
        ("v4 total length one beyond the frame", full_v4 + 1),
        ("v4 total length 65535", 0xffff),
    ] {
        cases.push(case(
            name,
            v4_frame(ETH, &tcp_v4.clone().with_total_len(total_len), &tcp80),
            TruncatedIpv4,
            None,
        ));
    }
    cases.push(case(
        "v4 total length shorter than the frame (trailing bytes)",
        v4_frame(ETH, &tcp_v4.clone().with_total_len(full_v4 - 10), &tcp80),
        VipLocal,
        Some(ID_V4_TCP),
    ));
    cases.push(case(
        "v4 total length = header length, tcp (no l4 bytes)",
        v4_frame(ETH, &tcp_v4, &[]),
        TruncatedL4,
        None,
    ));
    cases.push(case(
        "v4 udp header only 7 bytes",
        v4_frame(ETH, &udp_v4, &udp53[..7]),
        TruncatedL4,
        None,
    ));

    // An L4 header that the IP length cuts short must not be read from the bytes
    // after the IP datagram (Ethernet padding or trailing junk).
    for (name, frame) in [
        (
            "v4 tcp to vip, total length covers 4 tcp bytes, rest of header after it",
            v4_frame(
                ETH,
                &tcp_v4.clone().with_total_len(24),
                &syn_to(V4_TCP_PORT, &[]),
            ),
        ),
        (
            "v4 udp to vip, total length covers 4 udp bytes, padded to 60",
            pad_to_60(v4_frame(
                ETH,
                &udp_v4.clone().with_total_len(24),
                &udp_to(V4_UDP_PORT, &[]),
            )),
        ),
        (
            "v6 tcp to vip, payload length 4, rest of tcp header after it",
            v6_frame(
                ETH,
                &tcp_v6.clone().with_payload_len(4),
                &syn_to(V6_TCP_PORT, &[]),
            ),
        ),
        (
            "v6 udp to vip, payload length 0, udp header after it",
            v6_frame(
                ETH,
                &udp_v6.clone().with_payload_len(0),
                &udp_to(V6_UDP_PORT, &[]),
            ),
        ),
    ] {
        cases.push(case(name, frame, TruncatedL4, None));
    }

    // Fragments: the first one (offset 0) is routed as its flow (to a `local` VIP: passed,
    // counted for the VIP) and remembered; the later ones of the same datagram (same
    // addresses, id and protocol) follow it, so they pass too. (A later fragment no first
    // one was seen for is dropped: `xdp_l4_completeness.rs`.)
    for (name, frag_off, vip) in [
        ("v4 first fragment (MF, offset 0)", 0x2000, Some(ID_V4_TCP)),
        ("v4 middle fragment (MF, offset 185)", 0x2000 | 185, None),
        ("v4 last fragment (offset 185, no MF)", 185, None),
        ("v4 fragment offset 1, DF set", 0x4000 | 1, None),
        ("v4 fragment, maximum offset", 0x1fff, None),
    ] {
        cases.push(case(
            name,
            v4_frame(ETH, &tcp_v4.clone().with_frag_off(frag_off), &tcp80),
            Fragment,
            vip,
        ));
    }
    cases.push(case(
        "802.1q v4 udp first fragment to vip",
        v4_frame(DOT1Q, &udp_v4.clone().with_frag_off(0x2000), &udp53),
        Fragment,
        Some(ID_V4_UDP),
    ));
    cases.push(case(
        "v4 fragment with options",
        v4_frame(
            ETH,
            &udp_v4.clone().with_options_to_ihl(9).with_frag_off(0x2000),
            &udp53,
        ),
        Fragment,
        Some(ID_V4_UDP),
    ));

    // IPv6 extension headers (the ones the program lists): hop-by-hop, routing and
    // destination options are parsed past, a fragment header (here offset 0: a first
    // fragment) too; the others pass unparsed.
    for kind in [0u8, 43, 44, 51, 60, 135, 139, 140, 253, 254] {
        let mut l4 = match kind {
            // Offset 0, M flag set.
            IPV6_FRAGMENT => ipv6_fragment(IPPROTO_TCP, 0, true, 0xdead_beef),
            IPV6_AUTH => ipv6_auth(IPPROTO_TCP, 0x1001),
            // Hop-by-hop, routing, destination options, …: 8 bytes of PadN.
            _ => ipv6_options(IPPROTO_TCP, 0),
        };
        l4.extend_from_slice(&tcp443);
        let (reason, vip) = match kind {
            0 | 43 | 60 => (VipLocal, Some(ID_V6_TCP)),
            44 => (Fragment, Some(ID_V6_TCP)),
            _ => (Ipv6ExtensionHeader, None),
        };
        cases.push(case(
            format!("v6 extension header {kind} then tcp to vip"),
            v6_frame(ETH, &v6(VIP6, kind), &l4),
            reason,
            vip,
        ));
    }
    let mut frag_udp = ipv6_fragment(IPPROTO_UDP, 0, true, 0xdead_beef);
    frag_udp.extend_from_slice(&udp5353);
    cases.push(case(
        "802.1q v6 fragment header then udp to vip",
        v6_frame(DOT1Q, &v6(VIP6, 44), &frag_udp),
        Fragment,
        Some(ID_V6_UDP),
    ));

    // Other L4.
    cases.push(case(
        "v4 icmp echo to vip address",
        v4_frame(ETH, &v4(VIP4, IPPROTO_ICMP), &echo_request(8)),
        OtherL4,
        None,
    ));
    cases.push(case(
        "v4 gre to vip address",
        v4_frame(ETH, &v4(VIP4, IPPROTO_GRE), &payload(24)),
        OtherL4,
        None,
    ));
    cases.push(case(
        "v6 icmpv6 echo to vip address",
        v6_frame(ETH, &v6(VIP6, IPPROTO_ICMPV6), &echo_request(128)),
        OtherL4,
        None,
    ));
    cases.push(case(
        "v6 no next header",
        v6_frame(ETH, &v6(VIP6, IPPROTO_NONE), &[]),
        OtherL4,
        None,
    ));
    cases.push(case(
        "802.1q v4 icmp to non-vip",
        v4_frame(DOT1Q, &v4(OTHER4, IPPROTO_ICMP), &echo_request(8)),
        OtherL4,
        None,
    ));

    // IPv6 payload length vs the frame.
    for (name, payload_len) in [
        (
            "v6 payload length one beyond the frame",
            tcp443.len() as u16 + 1,
        ),
        ("v6 payload length 65535", 0xffff),
    ] {
        cases.push(case(
            name,
            v6_frame(ETH, &tcp_v6.clone().with_payload_len(payload_len), &tcp443),
            TruncatedIpv6,
            None,
        ));
    }
    cases.push(case(
        "v6 payload length 0, tcp (no l4 bytes)",
        v6_frame(ETH, &tcp_v6, &[]),
        TruncatedL4,
        None,
    ));
    cases.push(case(
        "v6 payload length shorter than the frame (trailing bytes)",
        v6_frame(ETH, &tcp_v6.clone().with_payload_len(20), &tcp443),
        VipLocal,
        Some(ID_V6_TCP),
    ));

    cases
}

// ---------------------------------------------------------------------------
// Truncation sweeps: the expected reason of a frame cut to `len` bytes,
// computed from where its headers are.

#[derive(Clone, Copy)]
enum L3 {
    /// IPv4 with this header length (IHL × 4) and total-length field.
    V4 { header_len: usize, total_len: usize },
    /// IPv6 with this payload-length field.
    V6 { payload_len: usize },
}

#[derive(Clone, Copy)]
struct Layout {
    /// VLAN tags before the L3 header.
    tags: usize,
    l3: L3,
    /// Length of the fixed L4 header the program reads (TCP 20, UDP 8).
    l4_header: usize,
    /// What the complete frame is counted as.
    complete: (PacketReason, Option<u32>),
}

impl Layout {
    fn expect(&self, len: usize) -> (PacketReason, Option<u32>) {
        use PacketReason::*;
        if len < ETH_HLEN {
            return (TruncatedEthernet, None);
        }
        if len < ETH_HLEN + 4 * self.tags {
            return (TruncatedVlan, None);
        }
        let l3 = ETH_HLEN + 4 * self.tags;
        let (l4, l4_end) = match self.l3 {
            L3::V4 {
                header_len,
                total_len,
            } => {
                if len < l3 + 20 {
                    return (TruncatedIpv4, None);
                }
                if total_len < header_len {
                    return (BadIpHeader, None);
                }
                if len < l3 + total_len {
                    return (TruncatedIpv4, None);
                }
                (l3 + header_len, l3 + total_len)
            }
            L3::V6 { payload_len } => {
                if len < l3 + 40 || len < l3 + 40 + payload_len {
                    return (TruncatedIpv6, None);
                }
                (l3 + 40, l3 + 40 + payload_len)
            }
        };
        if l4 + self.l4_header > l4_end {
            return (TruncatedL4, None);
        }
        self.complete
    }
}

/// The frame cut at every length from 0 to its full length − 1, headers unchanged.
fn cut_sweep(name: &str, frame: &[u8], layout: Layout) -> Vec<Case> {
    (0..frame.len())
        .map(|len| {
            let (reason, vip) = layout.expect(len);
            case(
                format!("{name}, cut to {len}"),
                frame[..len].to_vec(),
                reason,
                vip,
            )
        })
        .collect()
}

/// The frame cut at every length from 0 to its full length, with the IP length
/// field rewritten to match the cut (IPv4 checksum recomputed when the whole
/// header is there): "consistently" truncated packets, which reach the L4 checks.
fn consistent_sweep(name: &str, frame: &[u8], layout: Layout) -> Vec<Case> {
    let l3 = ETH_HLEN + 4 * layout.tags;
    (0..=frame.len())
        .map(|len| {
            let mut cut = frame[..len].to_vec();
            let mut at_len = layout;
            match &mut at_len.l3 {
                L3::V4 {
                    header_len,
                    total_len,
                } if len >= l3 + 20 => {
                    *total_len = len - l3;
                    cut[l3 + 2..l3 + 4].copy_from_slice(&(*total_len as u16).to_be_bytes());
                    if len >= l3 + *header_len {
                        cut[l3 + 10..l3 + 12].fill(0);
                        let check = internet_checksum(&cut[l3..l3 + *header_len]);
                        cut[l3 + 10..l3 + 12].copy_from_slice(&check.to_be_bytes());
                    }
                }
                L3::V6 { payload_len } if len >= l3 + 40 => {
                    *payload_len = len - l3 - 40;
                    cut[l3 + 4..l3 + 6].copy_from_slice(&(*payload_len as u16).to_be_bytes());
                }
                _ => {}
            }
            let (reason, vip) = at_len.expect(len);
            case(
                format!("{name}, consistently cut to {len}"),
                cut,
                reason,
                vip,
            )
        })
        .collect()
}

/// The frames the sweeps cut, with their layouts.
fn sweep_frames() -> Vec<(&'static str, Vec<u8>, Layout)> {
    use PacketReason::*;
    let data = payload(16);
    let v4_layout = |frame: Vec<u8>, tags: usize, header_len: usize, l4_header: usize, complete| {
        let layout = Layout {
            tags,
            l3: L3::V4 {
                header_len,
                total_len: frame.len() - ETH_HLEN - 4 * tags,
            },
            l4_header,
            complete,
        };
        (frame, layout)
    };
    let v6_layout = |frame: Vec<u8>, tags: usize, l4_header: usize, complete| {
        let layout = Layout {
            tags,
            l3: L3::V6 {
                payload_len: frame.len() - ETH_HLEN - 4 * tags - 40,
            },
            l4_header,
            complete,
        };
        (frame, layout)
    };
    let named = |name, (frame, layout)| (name, frame, layout);
    vec![
        named(
            "v4 tcp to vip",
            v4_layout(v4_tcp_vip(), 0, 20, 20, (VipLocal, Some(ID_V4_TCP))),
        ),
        named(
            "v4 udp to vip",
            v4_layout(v4_udp_vip(), 0, 20, 8, (VipLocal, Some(ID_V4_UDP))),
        ),
        named(
            "802.1q v6 tcp to vip",
            v6_layout(
                v6_frame(DOT1Q, &v6(VIP6, IPPROTO_TCP), &syn_to(V6_TCP_PORT, &data)),
                1,
                20,
                (VipLocal, Some(ID_V6_TCP)),
            ),
        ),
        named(
            "v6 udp to vip",
            v6_layout(
                v6_frame(ETH, &v6(VIP6, IPPROTO_UDP), &udp_to(V6_UDP_PORT, &data)),
                0,
                8,
                (VipLocal, Some(ID_V6_UDP)),
            ),
        ),
        named(
            "802.1q v4 udp to vip, ihl 7",
            v4_layout(
                v4_frame(
                    DOT1Q,
                    &v4(VIP4, IPPROTO_UDP).with_options_to_ihl(7),
                    &udp_to(V4_UDP_PORT, &data),
                ),
                1,
                28,
                8,
                (VipLocal, Some(ID_V4_UDP)),
            ),
        ),
        named(
            "v4 tcp to non-vip, ihl 15",
            v4_layout(
                v4_frame(
                    ETH,
                    &v4(OTHER4, IPPROTO_TCP).with_options_to_ihl(15),
                    &syn_to(V4_TCP_PORT, &data),
                ),
                0,
                60,
                20,
                (NotVip, None),
            ),
        ),
        named(
            "qinq v4 tcp to vip",
            v4_layout(
                v4_frame(QINQ, &v4(VIP4, IPPROTO_TCP), &syn_to(V4_TCP_PORT, &data)),
                2,
                20,
                20,
                (VipLocal, Some(ID_V4_TCP)),
            ),
        ),
    ]
}

/// Every sweep frame cut at every length, as is and with consistent lengths.
fn sweep_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (name, frame, layout) in sweep_frames() {
        cases.extend(cut_sweep(name, &frame, layout));
        cases.extend(consistent_sweep(name, &frame, layout));
    }
    cases
}

// ---------------------------------------------------------------------------
// Harness.

/// Fails loudly, naming what is missing, if this process cannot load XDP programs.
fn require_bpf_privileges() {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    // CAP_SYS_ADMIN stands in for both (bpf_capable / perfmon_capable).
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    assert!(
        missing.is_empty(),
        "these XDP tests need root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON) to load the \
         program and run BPF_PROG_TEST_RUN; running as uid {euid} with effective capabilities \
         {cap_eff:#x}, missing: {}",
        missing.join(", ")
    );
}

struct Harness {
    ebpf: Ebpf,
}

/// Counters summed over CPUs: one per reason, one per per-VIP stats slot.
#[derive(Clone, PartialEq, Eq)]
struct Snapshot {
    reasons: Vec<Counter>,
    vips: Vec<Counter>,
}

impl Harness {
    fn load() -> Self {
        require_bpf_privileges();
        // No aya_log::EbpfLogger: its AYA_LOGS ring buffer just exists and fills
        // up unread. AYA_LOG_LEVEL keeps the object's default (every level), so
        // the verifier checks, and malformed cases execute, the debug-log path.
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_VIPS, MAX_VIPS)
            .map_max_entries(MAP_VIP_STATS, MAX_VIPS * Action::COUNT)
            .load(EBPF_OBJECT)
            .unwrap_or_else(|err| {
                panic!(
                    "loading the balancer eBPF object failed (is BPF available and are we \
                     privileged: CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON?): {}",
                    error_chain(&err)
                )
            });
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_LB)
            .unwrap_or_else(|| panic!("the object has no program {PROGRAM_LB}"))
            .try_into()
            .expect("balancer_lb is an XDP program");
        program.load().unwrap_or_else(|err| {
            panic!(
                "loading {PROGRAM_LB} into the kernel failed (verifier, or missing CAP_BPF / \
                 CAP_NET_ADMIN / CAP_PERFMON): {}",
                error_chain(&err)
            )
        });
        let mut vip_map: HashMap<_, VipKey, VipMeta> =
            HashMap::try_from(ebpf.map_mut(MAP_VIPS).expect("VIPS map"))
                .expect("VIPS is a hash map");
        for (key, meta) in vips() {
            assert!(meta.id < MAX_VIPS);
            vip_map.insert(key, meta, 0).expect("writing a VIP");
        }
        Self { ebpf }
    }

    fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_LB)
            .expect("balancer_lb")
            .try_into()
            .expect("XDP program")
    }

    fn counters(&self, name: &str) -> PerCpuArray<&MapData, Counter> {
        PerCpuArray::try_from(self.ebpf.map(name).expect("stats map")).expect("per-CPU array")
    }

    fn snapshot(&self) -> Snapshot {
        let read = |array: &PerCpuArray<&MapData, Counter>, count: u32| -> Vec<Counter> {
            (0..count)
                .map(|index| {
                    let mut total = Counter::default();
                    for value in array.get(&index, 0).expect("reading a counter").iter() {
                        total.add(value);
                    }
                    total
                })
                .collect()
        };
        Snapshot {
            reasons: read(&self.counters(MAP_REASON_STATS), PacketReason::COUNT),
            vips: read(&self.counters(MAP_VIP_STATS), MAX_VIPS * Action::COUNT),
        }
    }

    /// Runs the program once on `data_in`: behind `meta` bytes of XDP
    /// metadata if `meta` > 0, with only `linear` bytes in the linear buffer if
    /// set. Returns the verdict and the output (metadata and fragments included).
    fn run(
        &self,
        meta: usize,
        data_in: &[u8],
        linear: Option<usize>,
    ) -> Result<(u32, Vec<u8>), ProgramError> {
        let mut input = vec![0xa5; meta];
        input.extend_from_slice(data_in);
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
        let md: Option<Vec<u8>> = (meta > 0 || linear.is_some()).then(|| {
            let data_end = meta + linear.unwrap_or(data_in.len());
            [meta as u32, data_end as u32, 0, 0, 0, 0]
                .iter()
                .flat_map(|word| word.to_ne_bytes())
                .collect()
        });
        let mut data_out = vec![0u8; input.len() + 256];
        let result = self.program().test_run(TestRunOptions {
            data_in: Some(&input),
            data_out: Some(&mut data_out),
            ctx_in: md.as_deref(),
            repeat: 1,
            ..TestRunOptions::default()
        })?;
        data_out.truncate(result.data_size_out as usize);
        Ok((result.return_value, data_out))
    }

    /// Asserts the kernel refuses a frame shorter than `ETH_HLEN`, plain and
    /// behind metadata, without running the program.
    fn check_refused(&self, case: &Case, fail: &mut dyn FnMut(String)) {
        let before = self.snapshot();
        for (meta, how) in [(0, "plain"), (META_LEN, "behind metadata")] {
            match self.run(meta, &case.frame, None) {
                Err(err) if is_einval(&err) => {}
                Err(err) => fail(format!(
                    "expected BPF_PROG_TEST_RUN ({how}) to refuse a frame shorter than \
                     ETH_HLEN with EINVAL, got {}",
                    error_chain(&err)
                )),
                Ok((verdict, _)) => fail(format!(
                    "expected BPF_PROG_TEST_RUN ({how}) to refuse a frame shorter than \
                     ETH_HLEN with EINVAL, but it ran (verdict {verdict})"
                )),
            }
        }
        if self.snapshot() != before {
            fail("counters moved although the kernel refused the run".into());
        }
    }

    /// Runs one case and appends every mismatch to `failures`.
    fn check(&self, case: &Case, failures: &mut Vec<String>) {
        let what = match case.linear {
            None => format!("case `{}` ({}-byte frame)", case.name, case.frame.len()),
            Some(linear) => format!(
                "case `{}` ({}-byte frame, {linear} bytes linear)",
                case.name,
                case.frame.len()
            ),
        };
        let mut fail = |msg: String| failures.push(format!("{what}: {msg}"));

        // Too short for the kernel: assert that, then run it as the linear part
        // of a 14-byte buffer (see the module comment).
        let short;
        let case = if case.frame.len() < ETH_HLEN && case.linear.is_none() {
            self.check_refused(case, &mut fail);
            let mut frame = case.frame.clone();
            frame.resize(ETH_HLEN, 0x5a);
            short = Case {
                name: case.name.clone(),
                frame,
                linear: Some(case.frame.len()),
                ..*case
            };
            &short
        } else {
            case
        };
        let len = case.seen_len();

        let before = self.snapshot();
        let (verdict, output) = match self.run(0, &case.frame, case.linear) {
            Ok(result) => result,
            Err(err) => {
                fail(format!("BPF_PROG_TEST_RUN failed: {}", error_chain(&err)));
                return;
            }
        };
        if verdict != case.verdict {
            fail(format!("expected verdict {}, got {verdict}", case.verdict));
        }
        if output != case.frame {
            fail(format!(
                "expected the {} input bytes back untouched, got {} bytes, first difference at byte {}",
                case.frame.len(),
                output.len(),
                output
                    .iter()
                    .zip(&case.frame)
                    .position(|(a, b)| a != b)
                    .unwrap_or(output.len().min(case.frame.len()))
            ));
        }

        let after = self.snapshot();
        let one = Counter {
            packets: 1,
            bytes: len as u64,
        };
        for reason in PacketReason::ALL {
            let index = reason as usize;
            let expected = if reason == case.reason {
                one
            } else {
                Counter::default()
            };
            let got = delta(&before.reasons[index], &after.reasons[index]);
            if got != expected {
                fail(format!(
                    "reason {} (expected reason {}): expected +{} packets/+{} bytes, got +{}/+{}",
                    reason.label(),
                    case.reason.label(),
                    expected.packets,
                    expected.bytes,
                    got.packets,
                    got.bytes
                ));
            }
        }
        let expected_slot = case.vip.map(|id| Action::Pass.vip_stats_index(id) as usize);
        for (slot, (b, a)) in before.vips.iter().zip(&after.vips).enumerate() {
            let expected = if Some(slot) == expected_slot {
                one
            } else {
                Counter::default()
            };
            let got = delta(b, a);
            if got != expected {
                let vip = slot as u32 / Action::COUNT;
                let action = Action::ALL[slot % Action::COUNT as usize].label();
                fail(format!(
                    "vip {vip} action {action} (expected vip {:?} pass): expected +{} packets/+{} bytes, got +{}/+{}",
                    case.vip, expected.packets, expected.bytes, got.packets, got.bytes
                ));
            }
        }
    }

    fn check_all(&self, cases: &[Case]) {
        let mut failures = Vec::new();
        for case in cases {
            self.check(case, &mut failures);
        }
        if !failures.is_empty() {
            let mut report = format!(
                "{} of {} cases' checks failed:\n",
                failures.len(),
                cases.len()
            );
            for failure in &failures {
                let _ = writeln!(report, "  {failure}");
            }
            panic!("{report}");
        }
        println!("{} cases passed", cases.len());
    }
}

fn delta(before: &Counter, after: &Counter) -> Counter {
    Counter {
        packets: after.packets.wrapping_sub(before.packets),
        bytes: after.bytes.wrapping_sub(before.bytes),
    }
}

fn is_einval(err: &ProgramError) -> bool {
    matches!(err, ProgramError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EINVAL))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------
// Tests.

/// The builders themselves, without BPF: checksum and length fields.
#[test]
fn packet_builders_are_well_formed() {
    // RFC 1071-style known vector (the classic 192.168.0.1 → .199 UDP header).
    let header = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];
    assert_eq!(internet_checksum(&header), 0xb861);

    for ihl in 5..=15u8 {
        let packet = v4(VIP4, IPPROTO_UDP)
            .with_options_to_ihl(ihl)
            .packet(&udp_to(53, &[1, 2, 3]));
        let header_len = usize::from(ihl) * 4;
        assert_eq!(packet[0], 0x40 | ihl);
        assert_eq!(packet.len(), header_len + 11);
        assert_eq!(
            u16::from_be_bytes([packet[2], packet[3]]) as usize,
            packet.len()
        );
        assert_eq!(
            internet_checksum(&packet[..header_len]),
            0,
            "ihl {ihl}: checksum verifies"
        );
        assert_eq!(&packet[16..20], &VIP4);
        assert_eq!(
            u16::from_be_bytes([packet[header_len + 4], packet[header_len + 5]]),
            11
        );
    }
    let packet = v6(VIP6, IPPROTO_TCP).packet(&syn_to(443, &[0; 5]));
    assert_eq!(packet.len(), 65);
    assert_eq!(u16::from_be_bytes([packet[4], packet[5]]), 25);
    assert_eq!(&packet[24..40], &VIP6);
    assert_eq!(u16::from_be_bytes([packet[42], packet[43]]), 443);

    let frame = QINQ.ipv4(&[]);
    assert_eq!(
        &frame[12..],
        &[0x88, 0xa8, 0, 100, 0x81, 0x00, 0, 101, 0x08, 0x00]
    );
}

/// The fixture table: one frame per behaviour.
#[test]
fn fixture_table() {
    let harness = Harness::load();
    let mut cases = fixture_cases();
    // Shorter than an Ethernet header: refused by the kernel, then run as a
    // short linear part (see the module comment).
    cases.push(case(
        "empty frame",
        Vec::new(),
        PacketReason::TruncatedEthernet,
        None,
    ));
    cases.push(case(
        "1-byte frame",
        vec![0xff],
        PacketReason::TruncatedEthernet,
        None,
    ));
    cases.push(case(
        "13-byte frame (v4 vip frame cut)",
        v4_tcp_vip()[..13].to_vec(),
        PacketReason::TruncatedEthernet,
        None,
    ));
    harness.check_all(&cases);

    // XDP metadata in front of the packet changes nothing the program sees or counts.
    let frame = v4_tcp_vip();
    let before = harness.snapshot();
    let (verdict, output) = harness
        .run(META_LEN, &frame, None)
        .unwrap_or_else(|err| panic!("v4 tcp vip behind metadata: {}", error_chain(&err)));
    let after = harness.snapshot();
    assert_eq!(verdict, XDP_PASS, "v4 tcp vip behind metadata: verdict");
    assert_eq!(
        &output[META_LEN..],
        &frame[..],
        "v4 tcp vip behind metadata: output"
    );
    let slot = Action::Pass.vip_stats_index(ID_V4_TCP) as usize;
    let vip = delta(&before.vips[slot], &after.vips[slot]);
    assert_eq!(
        (vip.packets, vip.bytes),
        (1, frame.len() as u64),
        "v4 tcp vip behind metadata: expected +1 packet/+{} bytes (metadata not counted) \
         on the vip's pass slot",
        frame.len()
    );
    let local = PacketReason::VipLocal as usize;
    let reason = delta(&before.reasons[local], &after.reasons[local]);
    assert_eq!(
        (reason.packets, reason.bytes),
        (1, frame.len() as u64),
        "v4 tcp vip behind metadata: expected +1 packet/+{} bytes on vip_local",
        frame.len()
    );
}

/// Every cut of several frames, at every length, and the same frames with
/// their IP length fields rewritten to each cut.
#[test]
fn truncation_at_every_length() {
    let harness = Harness::load();
    let cases = sweep_cases();
    // Every reason the sweeps are meant to reach is reached.
    for reason in [
        PacketReason::TruncatedEthernet,
        PacketReason::TruncatedVlan,
        PacketReason::TruncatedIpv4,
        PacketReason::TruncatedIpv6,
        PacketReason::TruncatedL4,
        PacketReason::BadIpHeader,
        PacketReason::VipLocal,
    ] {
        assert!(
            cases.iter().any(|case| case.reason == reason),
            "the sweeps never expect {}",
            reason.label()
        );
    }
    harness.check_all(&cases);
}

/// Whole frames of which the program sees only the first n bytes (the rest
/// in a fragment), for every n: must classify exactly like the frame cut to n
/// bytes. Validates the way frames shorter than 14 bytes are run, and covers
/// every header boundary a second time.
#[test]
fn linear_part_sweep() {
    let harness = Harness::load();
    let mut cases = Vec::new();
    for (name, frame, layout) in sweep_frames() {
        for linear in 0..=frame.len() {
            let (reason, vip) = layout.expect(linear);
            cases.push(Case {
                linear: Some(linear),
                ..case(
                    format!("{name}, first {linear} bytes linear"),
                    frame.clone(),
                    reason,
                    vip,
                )
            });
        }
    }
    harness.check_all(&cases);
}
