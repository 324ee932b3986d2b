//! Wire layouts of the headers the programs read. Multi-byte fields are byte
//! arrays in network order, so no field is ever read with the wrong endianness
//! by accident.
//!
//! Every header is declared 2-byte aligned: frames start at an even address in
//! every XDP path, and every header we read starts at an even offset (14 or 18,
//! then multiples of 4). Knowing that, the compiler reads and writes the packet
//! in halfwords and words instead of bytes.

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

#[repr(C, align(2))]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type_be: [u8; 2],
}

/// The 802.1Q tag after the source MAC: TCI, then the inner EtherType.
#[repr(C, align(2))]
pub struct VlanHdr {
    pub tci_be: [u8; 2],
    pub ether_type_be: [u8; 2],
}

#[repr(C, align(2))]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len_be: [u8; 2],
    pub id_be: [u8; 2],
    pub frag_off_be: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub check_be: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

/// IPv4 flags+offset: "more fragments" bit and the 13-bit offset (RFC 791 §3.1).
pub const IPV4_MF_AND_OFFSET: u16 = 0x3fff;
/// IPv4 "don't fragment" flag.
pub const IPV4_DF: u16 = 0x4000;

/// TCP flag bits in the low byte of `doff_flags_be`.
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// ICMP "destination unreachable / fragmentation needed" (RFC 792, RFC 1191).
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 "packet too big" (RFC 4443 §3.2).
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// ICMP "time exceeded" and "parameter problem" (RFC 792): errors that quote the packet too.
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// ICMPv6 error messages are types 1 (destination unreachable), 2 (packet too big),
/// 3 (time exceeded) and 4 (parameter problem) (RFC 4443 §2.1).
pub const ICMPV6_ERROR_FIRST: u8 = 1;
pub const ICMPV6_ERROR_LAST: u8 = 4;

/// IPv4 fragment offset (in 8-byte units): non-zero on every fragment but the first.
pub const IPV4_OFFSET: u16 = 0x1fff;

/// IPv6 extension headers the edge program parses past (RFC 8200 §4): hop-by-hop options,
/// routing, fragment, destination options.
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_DEST_OPTIONS: u8 = 60;

/// The common start of hop-by-hop, routing and destination options headers: the next
/// header and the length in 8-byte units, not counting the first 8 bytes.
#[repr(C, align(2))]
pub struct Ipv6ExtHdr {
    pub next_header: u8,
    pub len: u8,
}

/// The IPv6 fragment header (RFC 8200 §4.5): offset (13 bits, 8-byte units) and the M flag
/// in `frag_off_be`, and the identification all fragments of a datagram share.
#[repr(C, align(2))]
pub struct Ipv6FragHdr {
    pub next_header: u8,
    pub reserved: u8,
    pub frag_off_be: [u8; 2],
    pub id: [u8; 4],
}

/// IPv6 fragment header: the offset bits of `frag_off_be` (non-zero on later fragments).
pub const IPV6_OFFSET: u16 = 0xfff8;

/// The ports of a TCP or UDP header: the 8 bytes an ICMP error quotes hold them.
#[repr(C, align(2))]
pub struct L4Ports {
    pub source_be: [u8; 2],
    pub dest_be: [u8; 2],
}

/// The first 8 bytes of an ICMP / ICMPv6 message; `rest_be` carries the MTU for
/// "fragmentation needed" (low 16 bits) and "packet too big" (all 32 bits).
#[repr(C, align(2))]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check_be: [u8; 2],
    pub rest_be: [u8; 4],
}

#[repr(C, align(2))]
pub struct Ipv6Hdr {
    pub version_class_flow: [u8; 4],
    pub payload_len_be: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// The fixed part of a TCP header (RFC 9293 §3.1).
#[repr(C, align(2))]
pub struct TcpHdr {
    pub source_be: [u8; 2],
    pub dest_be: [u8; 2],
    pub seq_be: [u8; 4],
    pub ack_seq_be: [u8; 4],
    pub doff_flags_be: [u8; 2],
    pub window_be: [u8; 2],
    pub check_be: [u8; 2],
    pub urg_ptr_be: [u8; 2],
}

#[repr(C, align(2))]
pub struct UdpHdr {
    pub source_be: [u8; 2],
    pub dest_be: [u8; 2],
    pub len_be: [u8; 2],
    pub check_be: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<EthHdr>() == 14);
const _: () = assert!(core::mem::size_of::<VlanHdr>() == 4);
const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == 20);
const _: () = assert!(core::mem::size_of::<Ipv6Hdr>() == 40);
const _: () = assert!(core::mem::size_of::<TcpHdr>() == 20);
const _: () = assert!(core::mem::size_of::<UdpHdr>() == 8);
const _: () = assert!(core::mem::size_of::<IcmpHdr>() == 8);
const _: () = assert!(core::mem::size_of::<Ipv6FragHdr>() == 8);
const _: () = assert!(core::mem::size_of::<L4Ports>() == 4);

/// IPv6 next-header values that are extension headers (RFC 8200 §4, IANA registry).
/// ESP (50) is left out on purpose: everything after it is encrypted, so it is
/// counted as an upper-layer protocol (`other_l4`), not a header we could skip.
#[inline(always)]
pub fn is_ipv6_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        0 | 43 | 44 | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}
