//! Packet parsing: Ethernet (one optional 802.1Q tag) → IPv4/IPv6 → TCP/UDP,
//! down to the VIP key and the flow tuple. All packet access goes through
//! `header_at` / `header_mut`.
//!
//! `packet` is the common path. What it turns away as a stacked VLAN, a fragment, an IPv6
//! extension header or another protocol goes to `unusual`, which parses QinQ, IPv6
//! extension headers, fragments and the packet an ICMP error quotes: its cost is only
//! ever paid by those packets.

use core::{mem::size_of, ptr::read_volatile};

use aya_ebpf::programs::XdpContext;
use balancer_common::{
    FAMILY_IPV4, FAMILY_IPV6, FlowKey, FragmentKey, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
    IPPROTO_UDP, MAX_IPV6_EXTENSIONS, PacketReason, VipKey, ipv4_in_16,
};

use crate::headers::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, EthHdr, ICMP_DEST_UNREACH,
    ICMP_PARAMETER_PROBLEM, ICMP_TIME_EXCEEDED, ICMPV6_ERROR_FIRST, ICMPV6_ERROR_LAST, IPV4_DF,
    IPV4_MF_AND_OFFSET, IPV4_OFFSET, IPV6_DEST_OPTIONS, IPV6_FRAGMENT, IPV6_HOP_BY_HOP,
    IPV6_OFFSET, IPV6_ROUTING, IcmpHdr, Ipv4Hdr, Ipv6ExtHdr, Ipv6FragHdr, Ipv6Hdr, L4Ports,
    TCP_ACK, TCP_SYN, TcpHdr, UdpHdr, VlanHdr, is_ipv6_extension,
};

/// The one bounds-checked accessor: a pointer to a `T` at `offset` bytes into
/// the packet, or `None` if the packet is too short to hold it.
#[inline(always)]
pub fn header_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    header_mut(ctx, offset).map(|ptr| ptr as *const T)
}

/// As `header_at`, for writing.
#[inline(always)]
pub fn header_mut<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

#[inline(always)]
pub fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

/// What the edge program needs to know about a well-formed TCP/UDP packet.
#[derive(Clone, Copy)]
pub struct Packet {
    /// Destination (address, port, protocol): the VIP lookup key.
    pub vip: VipKey,
    /// The client → VIP tuple: the connection-table key.
    pub flow: FlowKey,
    /// Ethernet header length: 14, 18 with one VLAN tag, 22 with two (`unusual` only).
    pub l3_offset: usize,
    /// Length of the IP datagram (IPv4 total length, IPv6 40 + payload length).
    pub ip_len: usize,
    /// A TCP SYN without ACK: the first packet of a connection.
    pub tcp_syn: bool,
    /// IPv4 "don't fragment" set (IPv6: always true, routers never fragment).
    pub dont_fragment: bool,
    /// IPv4 header carries options (IHL > 5).
    pub ipv4_options: bool,
    /// IPv4 TOS / IPv6 traffic class, copied to the outer header on encapsulation.
    pub tos: u8,
}

/// Parses the packet far enough to build its VIP key and flow tuple. Anything
/// that is not a well-formed TCP/UDP packet comes back as the reason it is not.
#[inline(always)]
pub fn packet(ctx: &XdpContext) -> Result<Packet, PacketReason> {
    let (ether_type, l3_offset) = ethernet(ctx)?;
    match ether_type {
        ETH_P_IPV4 => ipv4(ctx, l3_offset),
        ETH_P_IPV6 => ipv6(ctx, l3_offset),
        _ => Err(PacketReason::NotIp),
    }
}

/// The EtherType after at most one VLAN tag, and where the L3 header starts.
#[inline(always)]
pub fn ethernet(ctx: &XdpContext) -> Result<(u16, usize), PacketReason> {
    let eth = header_at::<EthHdr>(ctx, 0).ok_or(PacketReason::TruncatedEthernet)?;
    // SAFETY (all derefs in this module): `header_at` checked the whole header is inside the packet.
    let mut ether_type = be16(unsafe { (*eth).ether_type_be });
    let mut l3_offset = size_of::<EthHdr>();
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let vlan = header_at::<VlanHdr>(ctx, l3_offset).ok_or(PacketReason::TruncatedVlan)?;
        ether_type = be16(unsafe { (*vlan).ether_type_be });
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            return Err(PacketReason::StackedVlan);
        }
        l3_offset += size_of::<VlanHdr>();
    }
    Ok((ether_type, l3_offset))
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, l3_offset: usize) -> Result<Packet, PacketReason> {
    let ip = header_at::<Ipv4Hdr>(ctx, l3_offset).ok_or(PacketReason::TruncatedIpv4)?;
    let version_ihl = unsafe { (*ip).version_ihl };
    // The mask tells the verifier the header length is bounded (≤ 60 bytes).
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || header_len < size_of::<Ipv4Hdr>() {
        return Err(PacketReason::BadIpHeader);
    }
    let total_len = be16(unsafe { (*ip).total_len_be }) as usize;
    if total_len < header_len {
        return Err(PacketReason::BadIpHeader);
    }
    if ctx.data() + l3_offset + total_len > ctx.data_end() {
        return Err(PacketReason::TruncatedIpv4);
    }
    let frag_off = be16(unsafe { (*ip).frag_off_be });
    if frag_off & IPV4_MF_AND_OFFSET != 0 {
        return Err(PacketReason::Fragment);
    }
    let protocol = unsafe { (*ip).protocol };
    let ports = ports(ctx, l3_offset + header_len, l3_offset + total_len, protocol)?;
    let daddr = unsafe { (*ip).daddr };
    let flow = FlowKey {
        src: ipv4_in_16(unsafe { (*ip).saddr }),
        dst: ipv4_in_16(daddr),
        src_port_be: ports.source_be,
        dst_port_be: ports.dest_be,
        protocol,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    };
    Ok(Packet {
        vip: VipKey::v4(daddr, u16::from_be(ports.dest_be), protocol),
        flow,
        l3_offset,
        ip_len: total_len,
        tcp_syn: ports.syn,
        dont_fragment: frag_off & IPV4_DF != 0,
        ipv4_options: header_len != size_of::<Ipv4Hdr>(),
        tos: unsafe { (*ip).tos },
    })
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, l3_offset: usize) -> Result<Packet, PacketReason> {
    let ip = header_at::<Ipv6Hdr>(ctx, l3_offset).ok_or(PacketReason::TruncatedIpv6)?;
    let first = unsafe { (*ip).version_class_flow };
    if first[0] >> 4 != 6 {
        return Err(PacketReason::BadIpHeader);
    }
    let payload_len = be16(unsafe { (*ip).payload_len_be }) as usize;
    if ctx.data() + l3_offset + size_of::<Ipv6Hdr>() + payload_len > ctx.data_end() {
        return Err(PacketReason::TruncatedIpv6);
    }
    let next_header = unsafe { (*ip).next_header };
    if is_ipv6_extension(next_header) {
        return Err(PacketReason::Ipv6ExtensionHeader);
    }
    let l4_offset = l3_offset + size_of::<Ipv6Hdr>();
    let ports = ports(ctx, l4_offset, l4_offset + payload_len, next_header)?;
    let daddr = unsafe { (*ip).daddr };
    Ok(Packet {
        vip: VipKey::v6(daddr, u16::from_be(ports.dest_be), next_header),
        flow: FlowKey {
            src: unsafe { (*ip).saddr },
            dst: daddr,
            src_port_be: ports.source_be,
            dst_port_be: ports.dest_be,
            protocol: next_header,
            family: FAMILY_IPV6,
            _pad: [0; 2],
        },
        l3_offset,
        ip_len: size_of::<Ipv6Hdr>() + payload_len,
        tcp_syn: ports.syn,
        dont_fragment: true,
        ipv4_options: false,
        tos: (first[0] << 4) | (first[1] >> 4),
    })
}

struct Ports {
    /// Both in network byte order, as the flow key stores them.
    source_be: u16,
    dest_be: u16,
    syn: bool,
}

/// Ports of a TCP or UDP header at `l4_offset`. The header must end within the
/// IP datagram (`l4_end`, from the IP length field), not just within the frame:
/// bytes after the datagram (Ethernet padding, trailing junk) are not part of
/// the packet the stack will see.
///
/// The fields are read (volatile) between the packet bounds check and the
/// `l4_end` test: otherwise LLVM, knowing `l4_end` is within the frame, folds
/// the bounds check into the `l4_end` test, and the verifier, which cannot
/// follow that reasoning, rejects the reads.
#[inline(always)]
fn ports(
    ctx: &XdpContext,
    l4_offset: usize,
    l4_end: usize,
    protocol: u8,
) -> Result<Ports, PacketReason> {
    match protocol {
        IPPROTO_TCP => {
            let tcp = header_at::<TcpHdr>(ctx, l4_offset).ok_or(PacketReason::TruncatedL4)?;
            // SAFETY: `header_at` checked the header is inside the packet, and it is
            // 2-byte aligned (headers.rs), so its halfwords can be read as such.
            let (source_be, dest_be, flags) = unsafe {
                (
                    read_volatile(tcp.cast::<u16>()),
                    read_volatile(tcp.cast::<u16>().add(1)),
                    read_volatile(&raw const (*tcp).doff_flags_be[1]),
                )
            };
            if l4_offset + size_of::<TcpHdr>() > l4_end {
                return Err(PacketReason::TruncatedL4);
            }
            Ok(Ports {
                source_be,
                dest_be,
                syn: flags & (TCP_SYN | TCP_ACK) == TCP_SYN,
            })
        }
        IPPROTO_UDP => {
            let udp = header_at::<UdpHdr>(ctx, l4_offset).ok_or(PacketReason::TruncatedL4)?;
            // SAFETY: as for TCP above.
            let (source_be, dest_be) = unsafe {
                (
                    read_volatile(udp.cast::<u16>()),
                    read_volatile(udp.cast::<u16>().add(1)),
                )
            };
            if l4_offset + size_of::<UdpHdr>() > l4_end {
                return Err(PacketReason::TruncatedL4);
            }
            Ok(Ports {
                source_be,
                dest_be,
                syn: false,
            })
        }
        _ => Err(PacketReason::OtherL4),
    }
}

// ---------------------------------------------------------------------------
// The unusual packets: only ever parsed after `packet` turned them away.

/// TCP/UDP behind two VLAN tags or IPv6 extension headers: routed as `packet`'s are.
pub const KIND_PLAIN: u8 = 0;
/// An ICMP / ICMPv6 error: `vip` and `flow` are those of the client → VIP packet the
/// quoted VIP → client packet answers (the quoted tuple reversed).
pub const KIND_ICMP_ERROR: u8 = 1;
/// The first fragment of a datagram (offset 0, ports present): routed as usual, and its
/// verdict remembered under `fragment` for the later ones.
pub const KIND_FIRST_FRAGMENT: u8 = 2;
/// A later fragment: no ports, so `vip` is unset and `flow` has only addresses and
/// protocol; it follows its first fragment (`fragment`).
pub const KIND_LATER_FRAGMENT: u8 = 3;

/// What `unusual` found: the packet as `packet` would describe it, and what kind it is.
pub struct Unusual {
    pub pkt: Packet,
    pub kind: u8,
    /// The datagram's key (fragments only).
    pub fragment: FragmentKey,
}

impl Unusual {
    /// Clears what a parse may leave unset; `unusual` writes the rest before anything
    /// reads it. (The value lives in a per-CPU scratch map, see `maps::UNUSUAL`, so it
    /// holds the previous packet's fields until then.)
    #[inline(always)]
    pub fn reset(&mut self) {
        self.kind = KIND_PLAIN;
        self.pkt.tcp_syn = false;
        self.pkt.dont_fragment = false;
        self.pkt.ipv4_options = false;
        self.pkt.flow.src_port_be = 0;
        self.pkt.flow.dst_port_be = 0;
        self.pkt.flow._pad = [0; 2];
    }
}

/// Parses what `packet` does not: up to two VLAN tags, IPv4 fragments, IPv6 extension
/// headers (hop-by-hop, routing, fragment, destination options; at most
/// `MAX_IPV6_EXTENSIONS`), and ICMP / ICMPv6 errors down to the ports they quote. Fills
/// `out` as far as it got: on an error, `out.kind` still says whether this was a first
/// fragment (whose verdict the later ones follow).
///
/// Not inlined: its stack frame is gone before the routing after it needs one.
#[inline(never)]
pub fn unusual(ctx: &XdpContext, out: &mut Unusual) -> Result<(), PacketReason> {
    // A volatile read of the context pointer: otherwise LLVM passes `data` and `data_end`
    // as arguments instead, and the verifier refuses the arithmetic it then does on them.
    // SAFETY: a read of a field of a live reference.
    let ctx = &XdpContext::new(unsafe { read_volatile(&ctx.ctx) });
    let (ether_type, l3_offset) = ethernet_qinq(ctx)?;
    out.pkt.l3_offset = l3_offset;
    match ether_type {
        ETH_P_IPV4 => ipv4_unusual(ctx, l3_offset, out),
        ETH_P_IPV6 => ipv6_unusual(ctx, l3_offset, out),
        _ => Err(PacketReason::NotIp),
    }
}

#[inline(always)]
fn is_vlan(ether_type: u16) -> bool {
    ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD
}

/// The EtherType after at most two VLAN tags (802.1ad + 802.1Q, or two 802.1Q), and where
/// the L3 header starts. A third tag is `StackedVlan`.
#[inline(always)]
pub fn ethernet_qinq(ctx: &XdpContext) -> Result<(u16, usize), PacketReason> {
    let eth = header_at::<EthHdr>(ctx, 0).ok_or(PacketReason::TruncatedEthernet)?;
    let mut ether_type = be16(unsafe { (*eth).ether_type_be });
    let mut l3_offset = size_of::<EthHdr>();
    if is_vlan(ether_type) {
        let vlan = header_at::<VlanHdr>(ctx, l3_offset).ok_or(PacketReason::TruncatedVlan)?;
        ether_type = be16(unsafe { (*vlan).ether_type_be });
        l3_offset += size_of::<VlanHdr>();
        if is_vlan(ether_type) {
            let vlan = header_at::<VlanHdr>(ctx, l3_offset).ok_or(PacketReason::TruncatedVlan)?;
            ether_type = be16(unsafe { (*vlan).ether_type_be });
            l3_offset += size_of::<VlanHdr>();
            if is_vlan(ether_type) {
                return Err(PacketReason::StackedVlan);
            }
        }
    }
    Ok((ether_type, l3_offset))
}

#[inline(always)]
fn ipv4_unusual(ctx: &XdpContext, l3_offset: usize, out: &mut Unusual) -> Result<(), PacketReason> {
    let ip = header_at::<Ipv4Hdr>(ctx, l3_offset).ok_or(PacketReason::TruncatedIpv4)?;
    let version_ihl = unsafe { (*ip).version_ihl };
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || header_len < size_of::<Ipv4Hdr>() {
        return Err(PacketReason::BadIpHeader);
    }
    let total_len = be16(unsafe { (*ip).total_len_be }) as usize;
    if total_len < header_len {
        return Err(PacketReason::BadIpHeader);
    }
    if ctx.data() + l3_offset + total_len > ctx.data_end() {
        return Err(PacketReason::TruncatedIpv4);
    }
    let frag_off = be16(unsafe { (*ip).frag_off_be });
    let protocol = unsafe { (*ip).protocol };
    let saddr = unsafe { (*ip).saddr };
    let daddr = unsafe { (*ip).daddr };
    let id = unsafe { (*ip).id_be };
    let pkt = &mut out.pkt;
    pkt.ip_len = total_len;
    pkt.dont_fragment = frag_off & IPV4_DF != 0;
    pkt.ipv4_options = header_len != size_of::<Ipv4Hdr>();
    pkt.tos = unsafe { (*ip).tos };
    pkt.flow.src = ipv4_in_16(saddr);
    pkt.flow.dst = ipv4_in_16(daddr);
    pkt.flow.protocol = protocol;
    pkt.flow.family = FAMILY_IPV4;
    if frag_off & IPV4_MF_AND_OFFSET != 0 {
        out.fragment = FragmentKey {
            src: ipv4_in_16(saddr),
            dst: ipv4_in_16(daddr),
            id: [id[0], id[1], 0, 0],
            protocol,
            family: FAMILY_IPV4,
            _pad: [0; 2],
        };
        if frag_off & IPV4_OFFSET != 0 {
            out.kind = KIND_LATER_FRAGMENT;
            return Ok(());
        }
        out.kind = KIND_FIRST_FRAGMENT;
    }
    let l4_offset = l3_offset + header_len;
    let l4_end = l3_offset + total_len;
    if protocol == IPPROTO_ICMP && out.kind == KIND_PLAIN {
        return icmp_v4(ctx, l4_offset, l4_end, daddr, out);
    }
    let ports = ports(ctx, l4_offset, l4_end, protocol)?;
    let pkt = &mut out.pkt;
    pkt.vip = VipKey::v4(daddr, u16::from_be(ports.dest_be), protocol);
    pkt.flow.src_port_be = ports.source_be;
    pkt.flow.dst_port_be = ports.dest_be;
    pkt.tcp_syn = ports.syn;
    Ok(())
}

/// An ICMP error whose quoted IPv4 packet left a VIP (its source is the address the error
/// came to): the VIP key and client flow of that packet. Anything else is `OtherL4` (not
/// an error) or `IcmpErrorNotVip`.
#[inline(always)]
fn icmp_v4(
    ctx: &XdpContext,
    l4_offset: usize,
    l4_end: usize,
    daddr: [u8; 4],
    out: &mut Unusual,
) -> Result<(), PacketReason> {
    let icmp = header_at::<IcmpHdr>(ctx, l4_offset).ok_or(PacketReason::TruncatedL4)?;
    let kind = unsafe { (*icmp).kind };
    if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED && kind != ICMP_PARAMETER_PROBLEM {
        return Err(PacketReason::OtherL4);
    }
    let inner_offset = l4_offset + size_of::<IcmpHdr>();
    let inner = header_at::<Ipv4Hdr>(ctx, inner_offset).ok_or(PacketReason::IcmpErrorNotVip)?;
    let version_ihl = unsafe { (*inner).version_ihl };
    let inner_len = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || inner_len < size_of::<Ipv4Hdr>() {
        return Err(PacketReason::IcmpErrorNotVip);
    }
    let protocol = unsafe { (*inner).protocol };
    let vip = unsafe { (*inner).saddr };
    let client = unsafe { (*inner).daddr };
    if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP) || vip != daddr {
        return Err(PacketReason::IcmpErrorNotVip);
    }
    let (vip_port_be, client_port_be) = quoted_ports(ctx, inner_offset + inner_len, l4_end)?;
    out.kind = KIND_ICMP_ERROR;
    let pkt = &mut out.pkt;
    pkt.vip = VipKey::v4(vip, u16::from_be(vip_port_be), protocol);
    pkt.flow = FlowKey {
        src: ipv4_in_16(client),
        dst: ipv4_in_16(vip),
        src_port_be: client_port_be,
        dst_port_be: vip_port_be,
        protocol,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    };
    Ok(())
}

/// The (source, destination) ports of the quoted packet's L4 header at `offset`, which
/// must lie within the ICMP datagram (`end`). Read as `ports` reads them (see there).
#[inline(always)]
fn quoted_ports(ctx: &XdpContext, offset: usize, end: usize) -> Result<(u16, u16), PacketReason> {
    let l4 = header_at::<L4Ports>(ctx, offset).ok_or(PacketReason::IcmpErrorNotVip)?;
    // SAFETY: `header_at` checked the header is inside the packet; 2-byte aligned.
    let (source_be, dest_be) = unsafe {
        (
            read_volatile(l4.cast::<u16>()),
            read_volatile(l4.cast::<u16>().add(1)),
        )
    };
    if offset + size_of::<L4Ports>() > end {
        return Err(PacketReason::IcmpErrorNotVip);
    }
    Ok((source_be, dest_be))
}

#[inline(always)]
fn ipv6_unusual(ctx: &XdpContext, l3_offset: usize, out: &mut Unusual) -> Result<(), PacketReason> {
    let ip = header_at::<Ipv6Hdr>(ctx, l3_offset).ok_or(PacketReason::TruncatedIpv6)?;
    let first = unsafe { (*ip).version_class_flow };
    if first[0] >> 4 != 6 {
        return Err(PacketReason::BadIpHeader);
    }
    let payload_len = be16(unsafe { (*ip).payload_len_be }) as usize;
    if ctx.data() + l3_offset + size_of::<Ipv6Hdr>() + payload_len > ctx.data_end() {
        return Err(PacketReason::TruncatedIpv6);
    }
    // SAFETY: both addresses are inside the header `header_at` checked.
    let saddr = unsafe { load16(&raw const (*ip).saddr) };
    let daddr = unsafe { load16(&raw const (*ip).daddr) };
    let l4_end = l3_offset + size_of::<Ipv6Hdr>() + payload_len;
    {
        let pkt = &mut out.pkt;
        pkt.ip_len = size_of::<Ipv6Hdr>() + payload_len;
        pkt.dont_fragment = true;
        pkt.tos = (first[0] << 4) | (first[1] >> 4);
        store16(&mut pkt.flow.src, saddr);
        store16(&mut pkt.flow.dst, daddr);
        pkt.flow.family = FAMILY_IPV6;
    }
    let mut next_header = unsafe { (*ip).next_header };
    let mut offset = l3_offset + size_of::<Ipv6Hdr>();
    let mut headers = 0;
    while headers < MAX_IPV6_EXTENSIONS {
        if next_header == IPV6_FRAGMENT {
            let frag = header_at::<Ipv6FragHdr>(ctx, offset).ok_or(PacketReason::TruncatedIpv6)?;
            let frag_off = be16(unsafe { (*frag).frag_off_be });
            next_header = unsafe { (*frag).next_header };
            if out.kind != KIND_PLAIN {
                // Two fragment headers: nothing sends that.
                return Err(PacketReason::BadIpHeader);
            }
            store16(&mut out.fragment.src, saddr);
            store16(&mut out.fragment.dst, daddr);
            out.fragment.id = unsafe { (*frag).id };
            out.fragment.protocol = next_header;
            out.fragment.family = FAMILY_IPV6;
            out.fragment._pad = [0; 2];
            if frag_off & IPV6_OFFSET != 0 {
                out.kind = KIND_LATER_FRAGMENT;
                out.pkt.flow.protocol = next_header;
                return Ok(());
            }
            out.kind = KIND_FIRST_FRAGMENT;
            offset += size_of::<Ipv6FragHdr>();
        } else if next_header == IPV6_HOP_BY_HOP
            || next_header == IPV6_ROUTING
            || next_header == IPV6_DEST_OPTIONS
        {
            let ext = header_at::<Ipv6ExtHdr>(ctx, offset).ok_or(PacketReason::TruncatedIpv6)?;
            next_header = unsafe { (*ext).next_header };
            offset += (unsafe { (*ext).len } as usize + 1) * 8;
        } else {
            break;
        }
        headers += 1;
    }
    if matches!(
        next_header,
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_DEST_OPTIONS
    ) {
        return Err(PacketReason::Ipv6ExtensionLimit);
    }
    if is_ipv6_extension(next_header) {
        return Err(PacketReason::Ipv6ExtensionHeader);
    }
    if offset > l4_end {
        return Err(PacketReason::TruncatedIpv6);
    }
    out.pkt.flow.protocol = next_header;
    if next_header == IPPROTO_ICMPV6 && out.kind == KIND_PLAIN {
        return icmp_v6(ctx, offset, l4_end, daddr, out);
    }
    let ports = ports(ctx, offset, l4_end, next_header)?;
    let pkt = &mut out.pkt;
    store16(&mut pkt.vip.addr, daddr);
    pkt.vip.port_be = ports.dest_be;
    pkt.vip.protocol = next_header;
    pkt.vip.family = FAMILY_IPV6;
    pkt.flow.src_port_be = ports.source_be;
    pkt.flow.dst_port_be = ports.dest_be;
    pkt.tcp_syn = ports.syn;
    Ok(())
}

/// As `icmp_v4`, for ICMPv6 errors quoting an IPv6 packet (no extension headers in it).
#[inline(always)]
fn icmp_v6(
    ctx: &XdpContext,
    l4_offset: usize,
    l4_end: usize,
    daddr: [u32; 4],
    out: &mut Unusual,
) -> Result<(), PacketReason> {
    let icmp = header_at::<IcmpHdr>(ctx, l4_offset).ok_or(PacketReason::TruncatedL4)?;
    let kind = unsafe { (*icmp).kind };
    if !(ICMPV6_ERROR_FIRST..=ICMPV6_ERROR_LAST).contains(&kind) {
        return Err(PacketReason::OtherL4);
    }
    let inner_offset = l4_offset + size_of::<IcmpHdr>();
    let inner = header_at::<Ipv6Hdr>(ctx, inner_offset).ok_or(PacketReason::IcmpErrorNotVip)?;
    let protocol = unsafe { (*inner).next_header };
    // SAFETY: both addresses are inside the header `header_at` checked.
    let vip = unsafe { load16(&raw const (*inner).saddr) };
    let same =
        (vip[0] ^ daddr[0]) | (vip[1] ^ daddr[1]) | (vip[2] ^ daddr[2]) | (vip[3] ^ daddr[3]);
    if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP) || same != 0 {
        return Err(PacketReason::IcmpErrorNotVip);
    }
    let client = unsafe { load16(&raw const (*inner).daddr) };
    let (vip_port_be, client_port_be) =
        quoted_ports(ctx, inner_offset + size_of::<Ipv6Hdr>(), l4_end)?;
    out.kind = KIND_ICMP_ERROR;
    let pkt = &mut out.pkt;
    store16(&mut pkt.vip.addr, vip);
    pkt.vip.port_be = vip_port_be;
    pkt.vip.protocol = protocol;
    pkt.vip.family = FAMILY_IPV6;
    store16(&mut pkt.flow.src, client);
    store16(&mut pkt.flow.dst, vip);
    pkt.flow.src_port_be = client_port_be;
    pkt.flow.dst_port_be = vip_port_be;
    pkt.flow.protocol = protocol;
    Ok(())
}

/// An IPv6 address as four words, read from the packet (2-byte aligned).
///
/// # Safety
/// `src` must point at 16 readable bytes.
#[inline(always)]
unsafe fn load16(src: *const [u8; 16]) -> [u32; 4] {
    let words = src.cast::<u32>();
    // SAFETY: the caller vouches for the 16 bytes; unaligned reads.
    unsafe {
        [
            words.read_unaligned(),
            words.add(1).read_unaligned(),
            words.add(2).read_unaligned(),
            words.add(3).read_unaligned(),
        ]
    }
}

/// Stores an address `load16` read, word by word: the scratch value is in a map, and a
/// byte-array copy there may become a `memcpy` call the verifier refuses.
#[inline(always)]
fn store16(dst: &mut [u8; 16], words: [u32; 4]) {
    let to = dst.as_mut_ptr().cast::<u32>();
    // SAFETY: 16 bytes of `dst`; volatile so LLVM keeps four word stores.
    unsafe {
        for (i, word) in words.into_iter().enumerate() {
            to.add(i).write_volatile(word);
        }
    }
}
