//! Frame builders for the XDP packet tests: Ethernet (802.1Q and QinQ tags), ARP, IPv4
//! (options, fragments), IPv6 (extension headers, fragments), TCP, UDP and ICMP / ICMPv6, with
//! lengths and the IPv4 and ICMP checksums computed (TCP/UDP checksums are left zero: the XDP
//! programs never read them). Expected frames are assembled with the same builders,
//! independently of the eBPF code. Malformed headers are built by overriding one computed
//! field (`V4::with_version`, `with_ihl`, `with_total_len`, `V6::with_payload_len`, …).

use balancer_common::IPPROTO_ICMPV6;

use crate::traffic::internet_checksum;

pub type Mac = [u8; 6];

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_LLDP: u16 = 0x88cc;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPV4_DF: u16 = 0x4000;
pub const IPV4_MF: u16 = 0x2000;
/// IPv6 extension headers (RFC 8200 §4).
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_AUTH: u8 = 51;
pub const IPV6_DEST_OPTIONS: u8 = 60;

/// An Ethernet header: MACs, an optional 802.1Q tag, then EtherType and payload.
#[derive(Clone, Copy)]
pub struct Frame {
    pub dst: Mac,
    pub src: Mac,
    /// One 802.1Q tag (TCI), after `outer_tags`.
    pub tci: Option<u16>,
    /// Tags (TPID, TCI) before the 802.1Q one, outermost first: an 802.1ad service tag
    /// makes QinQ.
    pub outer_tags: &'static [(u16, u16)],
}

impl Frame {
    pub const fn new(dst: Mac, src: Mac) -> Frame {
        Frame {
            dst,
            src,
            tci: None,
            outer_tags: &[],
        }
    }

    pub const fn tagged(self, tci: u16) -> Frame {
        Frame {
            tci: Some(tci),
            ..self
        }
    }

    /// The tags (TPID, TCI), outermost first, that come before the 802.1Q one set by
    /// `tagged` (or stand alone without it): a stack of any TPIDs, e.g. an 802.1ad tag alone,
    /// or two 802.1ad tags.
    pub const fn stacked(self, outer_tags: &'static [(u16, u16)]) -> Frame {
        Frame { outer_tags, ..self }
    }

    pub fn with(&self, ether_type: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(18 + payload.len());
        frame.extend_from_slice(&self.dst);
        frame.extend_from_slice(&self.src);
        for (tpid, tci) in self.outer_tags {
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&tci.to_be_bytes());
        }
        if let Some(tci) = self.tci {
            frame.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            frame.extend_from_slice(&tci.to_be_bytes());
        }
        frame.extend_from_slice(&ether_type.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    pub fn ipv4(&self, packet: &[u8]) -> Vec<u8> {
        self.with(ETH_P_IPV4, packet)
    }

    pub fn ipv6(&self, packet: &[u8]) -> Vec<u8> {
        self.with(ETH_P_IPV6, packet)
    }
}

/// An IPv4 header (checksum computed; total length from the payload).
#[derive(Clone)]
pub struct V4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub protocol: u8,
    pub tos: u8,
    pub id: u16,
    /// Flags (DF, MF) and the fragment offset in 8-byte units.
    pub frag_off: u16,
    pub ttl: u8,
    pub options: Vec<u8>,
    /// The version field, 4 unless a test wants a bad header.
    pub version: u8,
    /// Overrides the IHL computed from the options.
    pub ihl: Option<u8>,
    /// Overrides the total length computed from header + payload.
    pub total_len: Option<u16>,
}

impl V4 {
    pub fn new(src: [u8; 4], dst: [u8; 4], protocol: u8) -> V4 {
        V4 {
            src,
            dst,
            protocol,
            tos: 0,
            id: 0x1234,
            frag_off: IPV4_DF,
            ttl: 61,
            options: Vec::new(),
            version: 4,
            ihl: None,
            total_len: None,
        }
    }

    /// The header an encapsulating balancer writes: id 0, no flags, TTL 64.
    pub fn outer(src: [u8; 4], dst: [u8; 4], protocol: u8, tos: u8) -> V4 {
        V4 {
            tos,
            id: 0,
            frag_off: 0,
            ttl: 64,
            ..V4::new(src, dst, protocol)
        }
    }

    pub fn with_ttl(self, ttl: u8) -> V4 {
        V4 { ttl, ..self }
    }

    /// Flags (`IPV4_DF`, `IPV4_MF`) and fragment offset (8-byte units), as one field.
    pub fn with_frag_off(self, frag_off: u16) -> V4 {
        V4 { frag_off, ..self }
    }

    /// Options that make the header `ihl` 32-bit words long (5..=15): a Router Alert option
    /// (RFC 2113), then NOPs, the last byte an End of Options List.
    pub fn with_options_to_ihl(self, ihl: u8) -> V4 {
        assert!((5..=15).contains(&ihl));
        let len = (usize::from(ihl) - 5) * 4;
        let mut options = Vec::with_capacity(len);
        if len >= 4 {
            options.extend_from_slice(&[0x94, 0x04, 0, 0]);
        }
        options.resize(len, 0x01);
        if let Some(last) = options.last_mut() {
            *last = 0x00;
        }
        V4 { options, ..self }
    }

    /// Writes `version` instead of 4.
    pub fn with_version(self, version: u8) -> V4 {
        V4 { version, ..self }
    }

    /// Writes `ihl` (low 4 bits) instead of the header's length: the options stay.
    pub fn with_ihl(self, ihl: u8) -> V4 {
        V4 {
            ihl: Some(ihl),
            ..self
        }
    }

    /// Writes `total_len` instead of header + payload length.
    pub fn with_total_len(self, total_len: u16) -> V4 {
        V4 {
            total_len: Some(total_len),
            ..self
        }
    }

    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        assert!(self.options.len().is_multiple_of(4) && self.options.len() <= 40);
        let header_len = 20 + self.options.len();
        let ihl = self.ihl.unwrap_or((header_len / 4) as u8);
        let total_len = self
            .total_len
            .unwrap_or_else(|| u16::try_from(header_len + payload.len()).expect("fits"));
        let mut packet = vec![(self.version << 4) | (ihl & 0x0f), self.tos];
        packet.extend_from_slice(&total_len.to_be_bytes());
        packet.extend_from_slice(&self.id.to_be_bytes());
        packet.extend_from_slice(&self.frag_off.to_be_bytes());
        packet.extend_from_slice(&[self.ttl, self.protocol, 0, 0]);
        packet.extend_from_slice(&self.src);
        packet.extend_from_slice(&self.dst);
        packet.extend_from_slice(&self.options);
        let check = internet_checksum(&packet);
        packet[10..12].copy_from_slice(&check.to_be_bytes());
        packet.extend_from_slice(payload);
        packet
    }
}

/// An IPv6 header (payload length from the payload).
#[derive(Clone)]
pub struct V6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub next_header: u8,
    pub class: u8,
    pub label: u32,
    pub hop_limit: u8,
    /// The version field, 6 unless a test wants a bad header.
    pub version: u8,
    /// Overrides the payload length computed from the payload.
    pub payload_len: Option<u16>,
}

impl V6 {
    pub fn new(src: [u8; 16], dst: [u8; 16], next_header: u8) -> V6 {
        V6 {
            src,
            dst,
            next_header,
            class: 0,
            label: 0x1_2345,
            hop_limit: 61,
            version: 6,
            payload_len: None,
        }
    }

    pub fn with_hop_limit(self, hop_limit: u8) -> V6 {
        V6 { hop_limit, ..self }
    }

    /// Writes `version` (low 4 bits) instead of 6.
    pub fn with_version(self, version: u8) -> V6 {
        V6 { version, ..self }
    }

    /// Writes `payload_len` instead of the payload's length.
    pub fn with_payload_len(self, payload_len: u16) -> V6 {
        V6 {
            payload_len: Some(payload_len),
            ..self
        }
    }

    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        assert!(self.label <= 0xf_ffff);
        let first =
            (u32::from(self.version & 0x0f) << 28) | (u32::from(self.class) << 20) | self.label;
        let mut packet = first.to_be_bytes().to_vec();
        let payload_len = self
            .payload_len
            .unwrap_or_else(|| u16::try_from(payload.len()).expect("fits"));
        packet.extend_from_slice(&payload_len.to_be_bytes());
        packet.extend_from_slice(&[self.next_header, self.hop_limit]);
        packet.extend_from_slice(&self.src);
        packet.extend_from_slice(&self.dst);
        packet.extend_from_slice(payload);
        packet
    }
}

/// A TCP segment with a 20-byte header (checksum left zero: nothing here reads it).
pub fn tcp(src_port: u16, dst_port: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut segment = Vec::with_capacity(20 + payload.len());
    segment.extend_from_slice(&src_port.to_be_bytes());
    segment.extend_from_slice(&dst_port.to_be_bytes());
    segment.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
    segment.extend_from_slice(&0u32.to_be_bytes()); // ack
    segment.extend_from_slice(&[0x50, flags]); // data offset 5
    segment.extend_from_slice(&0xffffu16.to_be_bytes()); // window
    segment.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    segment.extend_from_slice(payload);
    segment
}

/// A UDP datagram (checksum left zero).
pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::with_capacity(8 + payload.len());
    datagram.extend_from_slice(&src_port.to_be_bytes());
    datagram.extend_from_slice(&dst_port.to_be_bytes());
    datagram.extend_from_slice(
        &u16::try_from(8 + payload.len())
            .expect("fits")
            .to_be_bytes(),
    );
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    datagram
}

pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// Ethernet's minimum frame (without FCS) is 60 bytes: shorter frames arrive zero-padded.
pub fn pad_to_60(mut frame: Vec<u8>) -> Vec<u8> {
    if frame.len() < 60 {
        frame.resize(60, 0);
    }
    frame
}

/// An ARP request (RFC 826, Ethernet + IPv4): who has `target_ip`, tell `sender_mac` /
/// `sender_ip`.
pub fn arp_request(sender_mac: Mac, sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    arp.extend_from_slice(&sender_mac);
    arp.extend_from_slice(&sender_ip);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target_ip);
    arp
}

/// An ICMP (`pseudo` None) or ICMPv6 (`pseudo` = source, destination) message,
/// checksum over the message, for ICMPv6 behind the RFC 8200 pseudo-header.
pub fn icmp(
    kind: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
    pseudo: Option<([u8; 16], [u8; 16])>,
) -> Vec<u8> {
    let mut message = vec![kind, code, 0, 0];
    message.extend_from_slice(&rest);
    message.extend_from_slice(body);
    let mut summed = Vec::new();
    if let Some((src, dst)) = pseudo {
        summed.extend_from_slice(&src);
        summed.extend_from_slice(&dst);
        summed.extend_from_slice(&u32::try_from(message.len()).expect("fits").to_be_bytes());
        summed.extend_from_slice(&[0, 0, 0, IPPROTO_ICMPV6]);
    }
    summed.extend_from_slice(&message);
    let check = internet_checksum(&summed);
    message[2..4].copy_from_slice(&check.to_be_bytes());
    message
}

/// An IPv6 hop-by-hop, routing or destination options header of `8 * (1 + len)` bytes
/// (PadN filling it), followed by `next_header`.
pub fn ipv6_options(next_header: u8, len: u8) -> Vec<u8> {
    let size = 8 * (1 + usize::from(len));
    let mut header = vec![next_header, len, 1, u8::try_from(size - 4).expect("small")];
    header.resize(size, 0);
    header
}

/// An IPv6 fragment header: `offset` in 8-byte units, `more` the M flag.
pub fn ipv6_fragment(next_header: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
    let mut header = vec![next_header, 0];
    header.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    header.extend_from_slice(&id.to_be_bytes());
    header
}

/// An IPv6 Authentication Header (RFC 4302) of 8 bytes, payload length 0 (no sequence
/// number, no ICV), followed by `next_header`.
pub fn ipv6_auth(next_header: u8, spi: u32) -> Vec<u8> {
    let mut header = vec![next_header, 0, 0, 0];
    header.extend_from_slice(&spi.to_be_bytes());
    header
}

/// Splits an IPv4 packet into fragments whose payloads hold `first` bytes (a multiple of
/// 8), then the rest: the header's flags and offset are set, the checksum recomputed.
pub fn ipv4_fragments(ip: &V4, payload: &[u8], first: usize) -> [Vec<u8>; 2] {
    assert!(first.is_multiple_of(8) && first < payload.len());
    let one = V4 {
        frag_off: IPV4_MF,
        ..ip.clone()
    }
    .packet(&payload[..first]);
    let two = V4 {
        frag_off: u16::try_from(first / 8).expect("fits"),
        ..ip.clone()
    }
    .packet(&payload[first..]);
    [one, two]
}
