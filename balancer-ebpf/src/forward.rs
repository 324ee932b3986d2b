//! Sending a VIP packet to its backend: IPIP / IP6IP6 encapsulation or an L2
//! (MAC) rewrite, and the ICMP "too big" answer when encapsulation would
//! exceed the egress MTU.

use core::mem::{offset_of, size_of};

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use balancer_common::{
    Action, BackendInfo, FAMILY_IPV4, IPIP_OVERHEAD_V4, IPIP_OVERHEAD_V6, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_TCP, IPPROTO_UDP, PacketReason,
};

use crate::{
    csum,
    headers::{
        ETH_P_IPV4, ETH_P_IPV6, EthHdr, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMPV6_PACKET_TOO_BIG,
        IcmpHdr, Ipv4Hdr, Ipv6Hdr, VlanHdr,
    },
    maps::TX_PORTS,
    parse::{Packet, header_at, header_mut},
};

const ETH_LEN: usize = size_of::<EthHdr>();
const DEFAULT_TTL: u8 = 64;

/// What happened to a packet that left (or tried to leave) the program.
pub struct Sent {
    pub xdp: u32,
    pub action: Action,
    pub reason: PacketReason,
}

/// Encapsulates towards the backend, or answers "too big" to the client. `QINQ`: the frame
/// may carry two VLAN tags (only packets `parse::unusual` parsed can); both are kept.
#[inline(always)]
pub fn ipip<const QINQ: bool>(
    ctx: &XdpContext,
    pkt: &Packet,
    backend: &BackendInfo,
) -> Result<Sent, PacketReason> {
    let overhead = if backend.family == FAMILY_IPV4 {
        IPIP_OVERHEAD_V4
    } else {
        IPIP_OVERHEAD_V6
    };
    if backend.mtu != 0 && pkt.ip_len + overhead as usize > backend.mtu as usize {
        let mtu = backend.mtu.saturating_sub(overhead);
        if pkt.flow.family == FAMILY_IPV4 {
            too_big_v4(ctx, pkt, mtu)?;
        } else {
            too_big_v6(ctx, pkt, mtu)?;
        }
        return Ok(Sent {
            xdp: xdp_action::XDP_TX,
            action: Action::Tx,
            reason: PacketReason::TooBigIcmpSent,
        });
    }
    // `unusual` packets live in a map, so the verifier knows nothing of their offset: bound
    // it (14, 18 or 22) before it points into the packet.
    let l3_offset = if QINQ {
        if pkt.l3_offset > ETH_LEN + 2 * size_of::<VlanHdr>() {
            return Err(PacketReason::AdjustFailed);
        }
        pkt.l3_offset
    } else {
        pkt.l3_offset
    };
    let tag = vlan_tag(ctx, pkt.l3_offset)?;
    let inner_tag = if QINQ {
        inner_vlan_tag(ctx, pkt.l3_offset)?
    } else {
        None
    };
    if backend.family == FAMILY_IPV4 {
        adjust_head(ctx, -(IPIP_OVERHEAD_V4 as i32))?;
        write_l2(ctx, backend, tag, ETH_P_IPV4)?;
        if QINQ {
            write_inner_tag(ctx, inner_tag, ETH_P_IPV4)?;
        }
        let mut outer = Ipv4Hdr {
            version_ihl: 0x45,
            tos: pkt.tos,
            total_len_be: ((pkt.ip_len + IPIP_OVERHEAD_V4 as usize) as u16).to_be_bytes(),
            id_be: [0; 2],
            frag_off_be: [0; 2],
            ttl: DEFAULT_TTL,
            protocol: if pkt.flow.family == FAMILY_IPV4 {
                IPPROTO_IPIP
            } else {
                IPPROTO_IPV6
            },
            check_be: [0; 2],
            saddr: first4(&backend.outer_src),
            daddr: first4(&backend.addr),
        };
        outer.check_be = ipv4_checksum(&outer).to_be_bytes();
        let ip = header_mut::<Ipv4Hdr>(ctx, l3_offset).ok_or(PacketReason::AdjustFailed)?;
        // SAFETY: `header_mut` checked the header is inside the packet.
        unsafe { *ip = outer };
    } else {
        adjust_head(ctx, -(IPIP_OVERHEAD_V6 as i32))?;
        write_l2(ctx, backend, tag, ETH_P_IPV6)?;
        if QINQ {
            write_inner_tag(ctx, inner_tag, ETH_P_IPV6)?;
        }
        // The flow label gives routers and NIC queues per-flow entropy.
        let label = (pkt.flow.src_port_be as u32 ^ u32::from_ne_bytes(first4(&pkt.flow.src[12..])))
            & 0x000f_ffff;
        let outer = Ipv6Hdr {
            version_class_flow: [
                0x60 | (pkt.tos >> 4),
                (pkt.tos << 4) | (label >> 16) as u8,
                (label >> 8) as u8,
                label as u8,
            ],
            payload_len_be: (pkt.ip_len as u16).to_be_bytes(),
            next_header: if pkt.flow.family == FAMILY_IPV4 {
                IPPROTO_IPIP
            } else {
                IPPROTO_IPV6
            },
            hop_limit: DEFAULT_TTL,
            saddr: backend.outer_src,
            daddr: backend.addr,
        };
        let ip = header_mut::<Ipv6Hdr>(ctx, l3_offset).ok_or(PacketReason::AdjustFailed)?;
        // SAFETY: `header_mut` checked the header is inside the packet.
        unsafe { *ip = outer };
    }
    Ok(transmit(ctx, backend))
}

/// L2 direct server return: the backend carries the VIP itself, so only the
/// MACs change.
#[inline(always)]
pub fn l2_dsr(ctx: &XdpContext, backend: &BackendInfo) -> Result<Sent, PacketReason> {
    let eth = header_mut::<EthHdr>(ctx, 0).ok_or(PacketReason::TruncatedEthernet)?;
    // SAFETY: `header_mut` checked the header is inside the packet.
    unsafe { write_macs(eth, backend) };
    Ok(transmit(ctx, backend))
}

/// Out of the receiving interface with `XDP_TX`, or to another one through the devmap.
#[inline(always)]
fn transmit(ctx: &XdpContext, backend: &BackendInfo) -> Sent {
    if backend.ifindex == ctx.ingress_ifindex() as u32 {
        return Sent {
            xdp: xdp_action::XDP_TX,
            action: Action::Tx,
            reason: PacketReason::VipForwarded,
        };
    }
    match TX_PORTS.redirect(backend.ifindex, 0) {
        Ok(xdp) => Sent {
            xdp,
            action: Action::Redirect,
            reason: PacketReason::VipForwarded,
        },
        Err(_) => Sent {
            xdp: xdp_action::XDP_DROP,
            action: Action::Drop,
            reason: PacketReason::NextHopUnresolved,
        },
    }
}

/// A VLAN tag as it is on the wire: (TPID, TCI), both big-endian.
type VlanTag = ([u8; 2], [u8; 2]);

/// The VLAN tag (TPID, TCI) of a tagged frame, kept on the encapsulated one.
#[inline(always)]
fn vlan_tag(ctx: &XdpContext, l3_offset: usize) -> Result<Option<VlanTag>, PacketReason> {
    if l3_offset == ETH_LEN {
        return Ok(None);
    }
    let eth = header_at::<EthHdr>(ctx, 0).ok_or(PacketReason::TruncatedEthernet)?;
    let vlan = header_at::<VlanHdr>(ctx, ETH_LEN).ok_or(PacketReason::TruncatedVlan)?;
    // SAFETY: both headers were bounds-checked above.
    Ok(Some(unsafe { ((*eth).ether_type_be, (*vlan).tci_be) }))
}

/// The second VLAN tag (TPID, TCI) of a frame with two (`l3_offset` 22).
#[inline(always)]
fn inner_vlan_tag(ctx: &XdpContext, l3_offset: usize) -> Result<Option<VlanTag>, PacketReason> {
    const TWO_TAGS: usize = ETH_LEN + 2 * size_of::<VlanHdr>();
    if l3_offset != TWO_TAGS {
        return Ok(None);
    }
    let outer = header_at::<VlanHdr>(ctx, ETH_LEN).ok_or(PacketReason::TruncatedVlan)?;
    let vlan = header_at::<VlanHdr>(ctx, ETH_LEN + size_of::<VlanHdr>())
        .ok_or(PacketReason::TruncatedVlan)?;
    // SAFETY: bounds-checked above.
    Ok(Some(unsafe { ((*outer).ether_type_be, (*vlan).tci_be) }))
}

/// After `write_l2` wrote the outer tag: the outer tag's EtherType becomes the inner tag's
/// TPID, the inner tag follows, then the encapsulating header's EtherType.
#[inline(always)]
fn write_inner_tag(
    ctx: &XdpContext,
    inner: Option<VlanTag>,
    ether_type: u16,
) -> Result<(), PacketReason> {
    let Some((tpid, tci)) = inner else {
        return Ok(());
    };
    let outer = header_mut::<VlanHdr>(ctx, ETH_LEN).ok_or(PacketReason::AdjustFailed)?;
    let vlan = header_mut::<VlanHdr>(ctx, ETH_LEN + size_of::<VlanHdr>())
        .ok_or(PacketReason::AdjustFailed)?;
    // SAFETY: `header_mut` checked both tags are inside the packet.
    unsafe {
        (*outer).ether_type_be = tpid;
        *vlan = VlanHdr {
            tci_be: tci,
            ether_type_be: ether_type.to_be_bytes(),
        };
    }
    Ok(())
}

#[inline(always)]
fn write_l2(
    ctx: &XdpContext,
    backend: &BackendInfo,
    tag: Option<VlanTag>,
    ether_type: u16,
) -> Result<(), PacketReason> {
    let eth = header_mut::<EthHdr>(ctx, 0).ok_or(PacketReason::AdjustFailed)?;
    // SAFETY (all writes): `header_mut` checked the headers are inside the packet.
    unsafe { write_macs(eth, backend) };
    match tag {
        None => unsafe { (*eth).ether_type_be = ether_type.to_be_bytes() },
        Some((tpid, tci)) => {
            let vlan = header_mut::<VlanHdr>(ctx, ETH_LEN).ok_or(PacketReason::AdjustFailed)?;
            unsafe {
                (*eth).ether_type_be = tpid;
                *vlan = VlanHdr {
                    tci_be: tci,
                    ether_type_be: ether_type.to_be_bytes(),
                };
            }
        }
    }
    Ok(())
}

/// The backend's destination and source MACs into the Ethernet header, as three
/// word copies: `BackendInfo` keeps them side by side in the header's order. (Field by
/// field, the compiler cannot tell the map value from the packet and goes through a
/// stack copy or a byte-wise memmove.)
///
/// # Safety
/// `eth` must point at an Ethernet header inside the packet.
#[inline(always)]
unsafe fn write_macs(eth: *mut EthHdr, backend: &BackendInfo) {
    const MACS: usize = offset_of!(BackendInfo, dst_mac);
    const {
        assert!(offset_of!(BackendInfo, src_mac) == MACS + 6);
        assert!(
            MACS.is_multiple_of(4) && offset_of!(EthHdr, dst) == 0 && offset_of!(EthHdr, src) == 6
        );
    };
    let from = core::ptr::from_ref(backend)
        .cast::<u8>()
        .wrapping_add(MACS)
        .cast::<u32>();
    let to = eth.cast::<u32>();
    // SAFETY: 12 bytes inside `backend` (the asserts above), 4-aligned as the map value
    // is; the destination is the 12 MAC bytes of a header the caller vouched for, written
    // unaligned (misaligned access is on, see xtask's build).
    unsafe {
        for word in 0..3 {
            to.add(word).write_unaligned(from.add(word).read());
        }
    }
}

/// "Fragmentation needed" frame: Ethernet, IPv4, ICMP, then the client's IPv4
/// header and first 8 payload bytes (RFC 792), which are already in place
/// once the head grows by the new headers.
#[repr(C)]
struct FragNeededV4 {
    eth: EthHdr,
    ip: Ipv4Hdr,
    icmp: IcmpHdr,
    quoted: [u8; 28],
}

/// "Packet too big" frame: Ethernet, IPv6, ICMPv6, then the client's IPv6
/// header and first 8 payload bytes: enough for its stack to find the socket.
#[repr(C)]
struct TooBigV6 {
    eth: EthHdr,
    ip: Ipv6Hdr,
    icmp: IcmpHdr,
    quoted: [u8; 48],
}

/// Answers an IPv4 packet that would not fit once encapsulated. Only plain
/// frames with DF set and no IP options get an answer (without DF a router
/// would fragment, which XDP cannot); the rest are dropped and counted.
// Not inlined: a call gets its own stack frame, and the edge program's is full.
#[inline(never)]
fn too_big_v4(ctx: &XdpContext, pkt: &Packet, mtu: u16) -> Result<(), PacketReason> {
    if pkt.l3_offset != ETH_LEN || pkt.ipv4_options || !pkt.dont_fragment {
        return Err(PacketReason::TooBigDropped);
    }
    // Only about TCP / UDP: never an ICMP error about an ICMP error (RFC 1122 §3.2.2).
    let ip = header_at::<Ipv4Hdr>(ctx, ETH_LEN).ok_or(PacketReason::TruncatedIpv4)?;
    // SAFETY: bounds-checked above.
    let protocol = unsafe { (*ip).protocol };
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return Err(PacketReason::TooBigDropped);
    }
    let (client_mac, our_mac) = macs(ctx)?;
    // The new Ethernet header takes the old one's place: only IP + ICMP are added.
    let grow = size_of::<Ipv4Hdr>() + size_of::<IcmpHdr>();
    adjust_head(ctx, -(grow as i32))?;
    truncate(ctx, size_of::<FragNeededV4>())?;
    let frame = header_mut::<FragNeededV4>(ctx, 0).ok_or(PacketReason::AdjustFailed)?;
    // SAFETY: `header_mut` checked the whole frame is inside the packet; the
    // fields written and the quoted bytes read never overlap.
    unsafe {
        let frame = &mut *frame;
        frame.eth = EthHdr {
            dst: client_mac,
            src: our_mac,
            ether_type_be: ETH_P_IPV4.to_be_bytes(),
        };
        let ip = &mut frame.ip;
        ip.version_ihl = 0x45;
        ip.tos = 0;
        ip.total_len_be = ((size_of::<FragNeededV4>() - ETH_LEN) as u16).to_be_bytes();
        ip.id_be = [0; 2];
        ip.frag_off_be = [0; 2];
        ip.ttl = DEFAULT_TTL;
        ip.protocol = IPPROTO_ICMP;
        ip.check_be = [0; 2];
        ip.saddr.copy_from_slice(&frame.quoted[16..20]);
        ip.daddr.copy_from_slice(&frame.quoted[12..16]);
        ip.check_be = ipv4_checksum(ip).to_be_bytes();
        let icmp = &mut frame.icmp;
        icmp.kind = ICMP_DEST_UNREACH;
        icmp.code = ICMP_FRAG_NEEDED;
        icmp.check_be = [0; 2];
        icmp.rest_be = [0, 0, (mtu >> 8) as u8, mtu as u8];
        let sum = csum::add_words(0, as_bytes::<_, 8>(icmp));
        icmp.check_be = csum::finish(csum::add_words(sum, &frame.quoted)).to_be_bytes();
    }
    Ok(())
}

/// Answers an IPv6 packet that would not fit once encapsulated (plain frames only).
#[inline(never)]
fn too_big_v6(ctx: &XdpContext, pkt: &Packet, mtu: u16) -> Result<(), PacketReason> {
    if pkt.l3_offset != ETH_LEN {
        return Err(PacketReason::TooBigDropped);
    }
    // Only about plain TCP / UDP: never about an ICMPv6 error (RFC 4443 §2.4), and the
    // 48 quoted bytes must reach the ports.
    let ip = header_at::<Ipv6Hdr>(ctx, ETH_LEN).ok_or(PacketReason::TruncatedIpv6)?;
    // SAFETY: bounds-checked above.
    let next_header = unsafe { (*ip).next_header };
    if next_header != IPPROTO_TCP && next_header != IPPROTO_UDP {
        return Err(PacketReason::TooBigDropped);
    }
    let (client_mac, our_mac) = macs(ctx)?;
    let grow = size_of::<Ipv6Hdr>() + size_of::<IcmpHdr>();
    adjust_head(ctx, -(grow as i32))?;
    truncate(ctx, size_of::<TooBigV6>())?;
    let frame = header_mut::<TooBigV6>(ctx, 0).ok_or(PacketReason::AdjustFailed)?;
    let payload_len = (size_of::<IcmpHdr>() + 48) as u16;
    // SAFETY: `header_mut` checked the whole frame is inside the packet; the
    // fields written and the quoted bytes read never overlap.
    unsafe {
        let frame = &mut *frame;
        frame.eth = EthHdr {
            dst: client_mac,
            src: our_mac,
            ether_type_be: ETH_P_IPV6.to_be_bytes(),
        };
        let ip = &mut frame.ip;
        ip.version_class_flow = [0x60, 0, 0, 0];
        ip.payload_len_be = payload_len.to_be_bytes();
        ip.next_header = IPPROTO_ICMPV6;
        ip.hop_limit = DEFAULT_TTL;
        ip.saddr.copy_from_slice(&frame.quoted[24..40]);
        ip.daddr.copy_from_slice(&frame.quoted[8..24]);
        let icmp = &mut frame.icmp;
        icmp.kind = ICMPV6_PACKET_TOO_BIG;
        icmp.code = 0;
        icmp.check_be = [0; 2];
        icmp.rest_be = (mtu as u32).to_be_bytes();
        // Pseudo-header (RFC 8200 §8.1): source, destination, length, next header.
        let mut sum = csum::add_words(0, &frame.ip.saddr);
        sum = csum::add_words(sum, &frame.ip.daddr);
        sum += payload_len as u32 + IPPROTO_ICMPV6 as u32;
        sum = csum::add_words(sum, as_bytes::<_, 8>(&frame.icmp));
        frame.icmp.check_be = csum::finish(csum::add_words(sum, &frame.quoted)).to_be_bytes();
    }
    Ok(())
}

/// The frame's (source, destination) MACs: the client's and ours.
#[inline(always)]
fn macs(ctx: &XdpContext) -> Result<([u8; 6], [u8; 6]), PacketReason> {
    let eth = header_at::<EthHdr>(ctx, 0).ok_or(PacketReason::TruncatedEthernet)?;
    // SAFETY: bounds-checked above.
    Ok(unsafe { ((*eth).src, (*eth).dst) })
}

#[inline(always)]
fn adjust_head(ctx: &XdpContext, delta: i32) -> Result<(), PacketReason> {
    // SAFETY: the helper validates the delta against the headroom itself.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return Err(PacketReason::AdjustFailed);
    }
    Ok(())
}

/// Shrinks the frame to `len` bytes.
#[inline(always)]
fn truncate(ctx: &XdpContext, len: usize) -> Result<(), PacketReason> {
    let current = ctx.data_end() - ctx.data();
    if current < len {
        return Err(PacketReason::AdjustFailed);
    }
    // SAFETY: the helper validates the delta against the frame itself.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -((current - len) as i32)) } != 0 {
        return Err(PacketReason::AdjustFailed);
    }
    Ok(())
}

#[inline(always)]
fn ipv4_checksum(header: &Ipv4Hdr) -> u16 {
    csum::finish(csum::add_words(0, as_bytes::<_, 20>(header)))
}

/// A header struct as its wire bytes (all header structs are byte arrays, no padding).
#[inline(always)]
fn as_bytes<T, const N: usize>(header: &T) -> &[u8; N] {
    const { assert!(size_of::<T>() == N) };
    // SAFETY: same size, alignment 1 target, and every header field is bytes.
    unsafe { &*(header as *const T as *const [u8; N]) }
}

#[inline(always)]
fn first4(bytes: &[u8]) -> [u8; 4] {
    [bytes[0], bytes[1], bytes[2], bytes[3]]
}
