//! Counters: the per-CPU stats layouts, verdict actions and named packet reasons.

/// Packets and bytes (whole frame, Ethernet header included).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    pub fn add(&mut self, other: &Counter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

const _: () = assert!(core::mem::size_of::<Counter>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), two u64, no padding, any bit pattern valid.
unsafe impl aya::Pod for Counter {}

/// The XDP verdict a VIP packet got. The per-VIP stats array has one row per
/// VIP and one column per action: index `vip_id * Action::COUNT + action`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pass = 0,
    Drop = 1,
    Tx = 2,
    Redirect = 3,
}

impl Action {
    pub const COUNT: u32 = 4;
    pub const ALL: [Action; 4] = [Action::Pass, Action::Drop, Action::Tx, Action::Redirect];

    /// The `action` label in metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Tx => "tx",
            Action::Redirect => "redirect",
        }
    }

    pub const fn vip_stats_index(self, vip_id: u32) -> u32 {
        vip_id * Action::COUNT + self as u32
    }
}

/// Why a packet got its verdict. Every packet the program sees is counted
/// under exactly one reason (index into the reason stats array).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketReason {
    /// Not IPv4/IPv6 (ARP, LLDP, …): passed.
    NotIp = 0,
    /// IP, but no VIP matches (address, port, protocol): passed untouched.
    NotVip = 1,
    /// For a VIP whose forwarding mode is `local`: passed to the local stack.
    VipLocal = 2,
    /// Frame shorter than an Ethernet header: passed (the stack drops it).
    TruncatedEthernet = 3,
    /// 802.1Q tag cut short: passed.
    TruncatedVlan = 4,
    /// More than two VLAN tags (one 802.1ad + 802.1Q pair, QinQ, is parsed): dropped.
    StackedVlan = 5,
    /// Shorter than its IPv4 header or total length: passed.
    TruncatedIpv4 = 6,
    /// IP header with a version that does not match its EtherType, an IPv4 IHL < 5, or an
    /// IPv4 total length below its header length: passed.
    BadIpHeader = 7,
    /// Shorter than the 40-byte IPv6 header or its payload length: passed.
    TruncatedIpv6 = 8,
    /// TCP or UDP header cut short: passed.
    TruncatedL4 = 9,
    /// IPv4 / IPv6 fragment that is not for an `ipip` / `l2-dsr` VIP (the first fragment of
    /// a datagram to no VIP or to a `local` one, and the later fragments that follow it): passed.
    Fragment = 10,
    /// IPv6 with an extension header the program does not parse past (AH, mobility, HIP,
    /// shim6, experimental; hop-by-hop, routing, destination options and fragment are parsed):
    /// passed.
    Ipv6ExtensionHeader = 11,
    /// Neither TCP nor UDP nor an ICMP / ICMPv6 error (ICMP echo, GRE, …): passed.
    OtherL4 = 12,
    /// For an `ipip` / `l2-dsr` VIP: sent to a backend (`XDP_TX` or `XDP_REDIRECT`).
    VipForwarded = 13,
    /// Source denied by a VIP or global ACL: dropped.
    AclDenied = 14,
    /// The VIP has no backend up: dropped.
    NoBackend = 15,
    /// Too big to encapsulate: an ICMP "fragmentation needed" / "packet too big" went back.
    TooBigIcmpSent = 16,
    /// Too big to encapsulate and no ICMP possible (IPv4 without DF, IPv4 options): dropped.
    TooBigDropped = 17,
    /// The backend's next hop (MAC, interface) is not resolved yet: dropped.
    NextHopUnresolved = 18,
    /// The kernel refused to grow or shrink the packet: dropped.
    AdjustFailed = 19,
    /// An ICMP / ICMPv6 error (destination unreachable, fragmentation needed / packet too
    /// big, time exceeded, parameter problem) quoting a packet of a VIP flow: encapsulated to
    /// that flow's backend, so path MTU discovery works under direct server return.
    IcmpErrorForwarded = 20,
    /// An ICMP / ICMPv6 error that quotes no TCP/UDP packet from a VIP (the host's own
    /// traffic, or a VIP with no such port): passed.
    IcmpErrorNotVip = 21,
    /// A fragment of a datagram to an `ipip` / `l2-dsr` VIP: sent to the backend its first
    /// fragment (the one with the ports) went to.
    FragmentForwarded = 22,
    /// A later fragment (no ports) with no first fragment seen within
    /// `FRAGMENT_TIMEOUT_NS`: it cannot be placed, dropped.
    FragmentOrphan = 23,
    /// IPv6 with more than `MAX_IPV6_EXTENSIONS` extension headers: dropped.
    Ipv6ExtensionLimit = 24,
}

impl PacketReason {
    pub const COUNT: u32 = 25;
    pub const ALL: [PacketReason; 25] = [
        PacketReason::NotIp,
        PacketReason::NotVip,
        PacketReason::VipLocal,
        PacketReason::TruncatedEthernet,
        PacketReason::TruncatedVlan,
        PacketReason::StackedVlan,
        PacketReason::TruncatedIpv4,
        PacketReason::BadIpHeader,
        PacketReason::TruncatedIpv6,
        PacketReason::TruncatedL4,
        PacketReason::Fragment,
        PacketReason::Ipv6ExtensionHeader,
        PacketReason::OtherL4,
        PacketReason::VipForwarded,
        PacketReason::AclDenied,
        PacketReason::NoBackend,
        PacketReason::TooBigIcmpSent,
        PacketReason::TooBigDropped,
        PacketReason::NextHopUnresolved,
        PacketReason::AdjustFailed,
        PacketReason::IcmpErrorForwarded,
        PacketReason::IcmpErrorNotVip,
        PacketReason::FragmentForwarded,
        PacketReason::FragmentOrphan,
        PacketReason::Ipv6ExtensionLimit,
    ];

    /// The `reason` label in metrics.
    pub const fn label(self) -> &'static str {
        match self {
            PacketReason::NotIp => "not_ip",
            PacketReason::NotVip => "not_vip",
            PacketReason::VipLocal => "vip_local",
            PacketReason::TruncatedEthernet => "truncated_ethernet",
            PacketReason::TruncatedVlan => "truncated_vlan",
            PacketReason::StackedVlan => "stacked_vlan",
            PacketReason::TruncatedIpv4 => "truncated_ipv4",
            PacketReason::BadIpHeader => "bad_ip_header",
            PacketReason::TruncatedIpv6 => "truncated_ipv6",
            PacketReason::TruncatedL4 => "truncated_l4",
            PacketReason::Fragment => "fragment",
            PacketReason::Ipv6ExtensionHeader => "ipv6_extension_header",
            PacketReason::OtherL4 => "other_l4",
            PacketReason::VipForwarded => "vip_forwarded",
            PacketReason::AclDenied => "acl_denied",
            PacketReason::NoBackend => "no_backend",
            PacketReason::TooBigIcmpSent => "too_big_icmp_sent",
            PacketReason::TooBigDropped => "too_big_dropped",
            PacketReason::NextHopUnresolved => "next_hop_unresolved",
            PacketReason::AdjustFailed => "adjust_failed",
            PacketReason::IcmpErrorForwarded => "icmp_error_forwarded",
            PacketReason::IcmpErrorNotVip => "icmp_error_not_vip",
            PacketReason::FragmentForwarded => "fragment_forwarded",
            PacketReason::FragmentOrphan => "fragment_orphan",
            PacketReason::Ipv6ExtensionLimit => "ipv6_extension_limit",
        }
    }
}

/// How a forwarded VIP packet found its backend (index into the flow stats array).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowEvent {
    /// Connection-table hit on an up or draining backend.
    TableHit = 0,
    /// No entry: a new flow, picked from the Maglev table.
    TableMiss = 1,
    /// A TCP SYN for a tuple already in the table (port reuse): re-picked.
    SynRepick = 2,
    /// The table's backend is down: re-picked at once.
    DownRepick = 3,
    /// No entry, not a SYN (TCP): a flow another host (or this one, before its entry was
    /// evicted) placed before the VIP's last table change, kept on the backend its previous
    /// Maglev table names (`xdp.flow_grace`). Counted only where that differs from the pick of
    /// the current table.
    GraceHit = 4,
}

impl FlowEvent {
    pub const COUNT: u32 = 5;
    pub const ALL: [FlowEvent; 5] = [
        FlowEvent::TableHit,
        FlowEvent::TableMiss,
        FlowEvent::SynRepick,
        FlowEvent::DownRepick,
        FlowEvent::GraceHit,
    ];

    /// The `event` label in metrics.
    pub const fn label(self) -> &'static str {
        match self {
            FlowEvent::TableHit => "hit",
            FlowEvent::TableMiss => "miss",
            FlowEvent::SynRepick => "syn_repick",
            FlowEvent::DownRepick => "down_repick",
            FlowEvent::GraceHit => "grace_hit",
        }
    }
}

/// What `balancer_decap` did with a packet (index into its stats array).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapReason {
    /// Not IPIP / IP6IP6 (or not IP at all): passed untouched.
    NotEncapsulated = 0,
    /// Encapsulated, outer destination is ours: outer header stripped, inner passed.
    Decapsulated = 1,
    /// Encapsulated but addressed to another host: passed untouched.
    NotLocal = 2,
    /// Cut short or malformed: passed untouched.
    Malformed = 3,
    /// The kernel refused to move the packet head: dropped.
    AdjustFailed = 4,
}

impl DecapReason {
    pub const COUNT: u32 = 5;
    pub const ALL: [DecapReason; 5] = [
        DecapReason::NotEncapsulated,
        DecapReason::Decapsulated,
        DecapReason::NotLocal,
        DecapReason::Malformed,
        DecapReason::AdjustFailed,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            DecapReason::NotEncapsulated => "not_encapsulated",
            DecapReason::Decapsulated => "decapsulated",
            DecapReason::NotLocal => "not_local",
            DecapReason::Malformed => "malformed",
            DecapReason::AdjustFailed => "adjust_failed",
        }
    }
}

const _: () = assert!(PacketReason::ALL.len() as u32 == PacketReason::COUNT);
const _: () = assert!(Action::ALL.len() as u32 == Action::COUNT);
const _: () = assert!(FlowEvent::ALL.len() as u32 == FlowEvent::COUNT);
const _: () = assert!(DecapReason::ALL.len() as u32 == DecapReason::COUNT);
