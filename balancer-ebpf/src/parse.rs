//! Packet parsing: Ethernet (one optional 802.1Q tag) → IPv4/IPv6 → TCP/UDP,
//! down to the VIP key and the flow tuple. All packet access goes through
//! `header_at` / `header_mut`.

use core::{mem::size_of, ptr::read_volatile};

use aya_ebpf::programs::XdpContext;
use balancer_common::{
    FAMILY_IPV4, FAMILY_IPV6, FlowKey, IPPROTO_TCP, IPPROTO_UDP, PacketReason, VipKey, ipv4_in_16,
};

use crate::headers::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, EthHdr, IPV4_DF, IPV4_MF_AND_OFFSET,
    Ipv4Hdr, Ipv6Hdr, TCP_ACK, TCP_SYN, TcpHdr, UdpHdr, VlanHdr, is_ipv6_extension,
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
pub struct Packet {
    /// Destination (address, port, protocol): the VIP lookup key.
    pub vip: VipKey,
    /// The client → VIP tuple: the connection-table key.
    pub flow: FlowKey,
    /// Ethernet header length: 14, or 18 with one VLAN tag.
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
