//! Packet parsing: Ethernet (one optional 802.1Q tag) → IPv4/IPv6 → TCP/UDP,
//! down to the VIP key. All packet access goes through `header_at`.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use balancer_common::{IPPROTO_TCP, IPPROTO_UDP, PacketReason, VipKey};

use crate::headers::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, EthHdr, IPV4_MF_AND_OFFSET, Ipv4Hdr,
    Ipv6Hdr, TcpHdr, UdpHdr, VlanHdr, is_ipv6_extension,
};

/// The one bounds-checked accessor: a pointer to a `T` at `offset` bytes into
/// the packet, or `None` if the packet is too short to hold it.
#[inline(always)]
fn header_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

/// Parses the packet far enough to build its VIP key (destination address,
/// destination port, protocol). Anything that is not a well-formed TCP/UDP
/// packet comes back as the reason it is not.
#[inline(always)]
pub fn vip_key(ctx: &XdpContext) -> Result<VipKey, PacketReason> {
    let eth = header_at::<EthHdr>(ctx, 0).ok_or(PacketReason::TruncatedEthernet)?;
    // SAFETY (all derefs below): `header_at` checked the whole header is inside the packet.
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
    match ether_type {
        ETH_P_IPV4 => ipv4_key(ctx, l3_offset),
        ETH_P_IPV6 => ipv6_key(ctx, l3_offset),
        _ => Err(PacketReason::NotIp),
    }
}

#[inline(always)]
fn ipv4_key(ctx: &XdpContext, l3_offset: usize) -> Result<VipKey, PacketReason> {
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
    if be16(unsafe { (*ip).frag_off_be }) & IPV4_MF_AND_OFFSET != 0 {
        return Err(PacketReason::Fragment);
    }
    let protocol = unsafe { (*ip).protocol };
    let port = dest_port(ctx, l3_offset + header_len, l3_offset + total_len, protocol)?;
    Ok(VipKey::v4(unsafe { (*ip).daddr }, port, protocol))
}

#[inline(always)]
fn ipv6_key(ctx: &XdpContext, l3_offset: usize) -> Result<VipKey, PacketReason> {
    let ip = header_at::<Ipv6Hdr>(ctx, l3_offset).ok_or(PacketReason::TruncatedIpv6)?;
    if unsafe { (*ip).version_class_flow[0] } >> 4 != 6 {
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
    let port = dest_port(ctx, l4_offset, l4_offset + payload_len, next_header)?;
    Ok(VipKey::v6(unsafe { (*ip).daddr }, port, next_header))
}

/// Destination port (host order) of a TCP or UDP header at `l4_offset`. The
/// header must end within the IP datagram (`l4_end`, from the IP length field),
/// not just within the frame: bytes after the datagram (Ethernet padding,
/// trailing junk) are not part of the packet the stack will see.
///
/// The packet bounds check must come first: checked after the `l4_end` test,
/// LLVM proves it redundant (`l4_end` is within the frame) and drops it, and
/// the verifier, which cannot follow that reasoning, rejects the read.
#[inline(always)]
fn dest_port(
    ctx: &XdpContext,
    l4_offset: usize,
    l4_end: usize,
    protocol: u8,
) -> Result<u16, PacketReason> {
    match protocol {
        IPPROTO_TCP => {
            let tcp = header_at::<TcpHdr>(ctx, l4_offset).ok_or(PacketReason::TruncatedL4)?;
            if l4_offset + size_of::<TcpHdr>() > l4_end {
                return Err(PacketReason::TruncatedL4);
            }
            Ok(be16(unsafe { (*tcp).dest_be }))
        }
        IPPROTO_UDP => {
            let udp = header_at::<UdpHdr>(ctx, l4_offset).ok_or(PacketReason::TruncatedL4)?;
            if l4_offset + size_of::<UdpHdr>() > l4_end {
                return Err(PacketReason::TruncatedL4);
            }
            Ok(be16(unsafe { (*udp).dest_be }))
        }
        _ => Err(PacketReason::OtherL4),
    }
}
