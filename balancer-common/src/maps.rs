//! Map names, sizes, and the key/value layouts of the VIP map.

/// Name of the XDP program on the edge host.
pub const PROGRAM_LB: &str = "balancer_lb";
/// Name of the trivial `XDP_PASS` program for the far end of veths that receive `XDP_TX`.
pub const PROGRAM_PASS: &str = "balancer_pass";
/// Name of the XDP program for backends: strips IPIP / IP6IP6 outer headers.
pub const PROGRAM_DECAP: &str = "balancer_decap";
/// Bare parse + MAC swap + `XDP_TX`: the floor the benchmark compares against.
pub const PROGRAM_FLOOR: &str = "balancer_floor";

/// Map names, as declared in the eBPF object.
pub const MAP_VIPS: &str = "VIPS";
pub const MAP_VIP_STATS: &str = "VIP_STATS";
pub const MAP_REASON_STATS: &str = "REASON_STATS";
pub const MAP_BACKENDS: &str = "BACKENDS";
pub const MAP_MAGLEV: &str = "MAGLEV";
pub const MAP_FLOWS: &str = "FLOWS";
pub const MAP_FLOW_HASH_KEY: &str = "FLOW_HASH_KEY";
pub const MAP_BACKEND_STATS: &str = "BACKEND_STATS";
pub const MAP_FLOW_STATS: &str = "FLOW_STATS";
pub const MAP_ACL_V4: &str = "ACL_V4";
pub const MAP_ACL_V6: &str = "ACL_V6";
pub const MAP_TX_PORTS: &str = "TX_PORTS";
pub const MAP_DECAP_ADDRS: &str = "DECAP_ADDRS";
pub const MAP_DECAP_STATS: &str = "DECAP_STATS";
pub const MAP_GRACE: &str = "GRACE";
pub const MAP_FRAGMENTS: &str = "FRAGMENTS";

/// Globals in the eBPF object's read-only data, set by the loader.
pub const GLOBAL_LOG_LEVEL: &str = "AYA_LOG_LEVEL";
pub const GLOBAL_TABLE_SIZE: &str = "TABLE_SIZE";
/// Sets of the connection table (`flow_sets(xdp.max_connections)`, the `FLOWS` array's size).
pub const GLOBAL_FLOW_SETS: &str = "FLOW_SETS";
/// `VIP_FLAG_ACL_*` bits for the global ACL scope.
pub const GLOBAL_ACL_FLAGS: &str = "ACL_GLOBAL_FLAGS";

/// Default capacity of the VIP map; `xdp.max_vips` overrides it at load time.
/// Every VIP owns two Maglev tables in one array (`max_vips × table_size × 2` slots), so this
/// stays modest: 64 VIPs × 65 537 slots × 2 × 4 bytes = 32 MiB.
pub const DEFAULT_MAX_VIPS: u32 = 64;
/// Default Maglev table size per VIP (prime).
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
/// Default and hard limit of backends per VIP (`xdp.max_backends`).
pub const DEFAULT_BACKENDS_PER_VIP: u32 = 128;
pub const MAX_BACKENDS_PER_VIP_LIMIT: u32 = 4_096;
/// Default capacity of the connection table (`xdp.max_connections`); the table has
/// `FLOW_ENTRIES_PER_CONNECTION` entries per connection (see `flows`).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 262_144;
/// Entries of each ACL trie (per family): `xdp.max_acl_rules`.
pub const DEFAULT_MAX_ACL_RULES: u32 = 4_096;
/// Entries of the decap program's local address map.
pub const MAX_DECAP_ADDRS: u32 = 256;
/// Egress interfaces `XDP_REDIRECT` can reach (devmap).
pub const MAX_TX_PORTS: u32 = 64;
/// Datagrams whose fragments the edge program keeps track of at once (`FRAGMENTS`, LRU).
pub const MAX_FRAGMENTED_DATAGRAMS: u32 = 8_192;
/// How long the later fragments of a datagram follow its first fragment's verdict: Linux's
/// own reassembly timeout (`net.ipv4.ipfrag_time`, 30 s).
pub const FRAGMENT_TIMEOUT_NS: u64 = 30_000_000_000;
/// IPv6 extension headers (hop-by-hop, routing, fragment, destination options) the edge
/// program parses past before the upper-layer header; a packet with more is dropped.
pub const MAX_IPV6_EXTENSIONS: usize = 4;

/// Hard upper bound for `xdp.max_vips` (the per-VIP stats array is `max_vips × Action::COUNT`).
pub const MAX_VIPS_LIMIT: u32 = 65_536;

pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// IANA protocol numbers, as found in the IPv4 protocol / IPv6 next-header field.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Forwarding modes (`VipMeta::forward`).
pub const FORWARD_LOCAL: u8 = 0;
pub const FORWARD_IPIP: u8 = 1;
pub const FORWARD_L2_DSR: u8 = 2;

/// `VipMeta::flags`: UDP flows hash on the source address only (not the 5-tuple).
pub const VIP_FLAG_UDP_HASH_SOURCE: u8 = 1;
/// `VipMeta::flags`: the VIP has allow rules, so a source no rule matches is denied.
pub const VIP_FLAG_ACL_ALLOW_LIST: u8 = 2;
/// `VipMeta::flags`: the VIP has ACL rules at all (skip the trie lookup otherwise).
pub const VIP_FLAG_ACL_RULES: u8 = 4;

/// Sentinel Maglev slot value: no backend is up.
pub const NO_BACKEND: u32 = u32::MAX;

/// Backend states (`BackendInfo::state`).
/// Up: new and existing flows.
pub const BACKEND_UP: u8 = 0;
/// Draining: existing flows keep it, new flows never get it.
pub const BACKEND_DRAINING: u8 = 1;
/// Down (failed checks or disabled): even existing flows re-pick at once.
pub const BACKEND_DOWN: u8 = 2;

/// `BackendInfo::flags`: next hop resolved; the MACs and ifindex are valid.
pub const BACKEND_FLAG_RESOLVED: u8 = 1;
/// `BackendInfo::flags`: the last health verdict was "healthy" (userspace bookkeeping,
/// kept in the pinned map so a restarted balancer starts from it).
pub const BACKEND_FLAG_HEALTHY: u8 = 2;

/// `BackendInfo::admin`: what the operator asked for.
pub const ADMIN_ENABLED: u8 = 0;
pub const ADMIN_DRAINING: u8 = 1;
pub const ADMIN_DISABLED: u8 = 2;

/// ACL verdicts (LPM-trie values).
pub const ACL_ALLOW: u8 = 1;
pub const ACL_DENY: u8 = 2;
/// ACL scope of the global rules (VIP rules use the VIP id).
pub const ACL_SCOPE_GLOBAL: u32 = u32::MAX;

/// Outer header sizes added by encapsulation.
pub const IPIP_OVERHEAD_V4: u16 = 20;
pub const IPIP_OVERHEAD_V6: u16 = 40;

/// Key of the VIP map: what a packet's destination must match to be a VIP's.
///
/// `addr` holds the address in network byte order; an IPv4 address fills the
/// first four bytes and the rest stay zero, so v4 and v6 never collide
/// (`family` differs too).
///
/// Aligned to 4 (no padding either way) so the XDP program builds and copies
/// it in words, not bytes.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr: [u8; 16],
    /// Destination port, network byte order.
    pub port_be: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u8,
    /// `FAMILY_IPV4` or `FAMILY_IPV6`.
    pub family: u8,
}

/// Value of the VIP map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipMeta {
    /// Dense index of the VIP: its row in the per-VIP stats array, its block of backend slots
    /// and its pair of Maglev tables. Stable across restarts (reused from the pinned map).
    pub id: u32,
    /// One of the `FORWARD_*` modes.
    pub forward: u8,
    /// `VIP_FLAG_*` bits.
    pub flags: u8,
    /// Which of the VIP's two Maglev tables (0 or 1) new flows read. Userspace writes the other
    /// one, then flips this, so a half-written table is never read.
    pub table_half: u8,
    pub _pad: u8,
}

impl VipMeta {
    /// First slot of this VIP's active Maglev table in the `MAGLEV` array.
    pub const fn table_base(&self, table_size: u32) -> u32 {
        maglev_table_base(self.id, self.table_half, table_size)
    }
}

/// The half of a VIP's Maglev tables that is not `table_half`: the table new flows read
/// before the last switch, i.e. the VIP's previous table while `GRACE` says it is valid.
pub const fn previous_half(table_half: u8) -> u8 {
    table_half ^ 1
}

/// Whether a VIP's previous Maglev table still counts at `now_ns`: its `GRACE` entry holds
/// the `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`) time it stops counting, and 0 when there is
/// none (never switched, `xdp.flow_grace = "0s"`, or the half is being rewritten).
pub const fn grace_active(deadline_ns: u64, now_ns: u64) -> bool {
    now_ns < deadline_ns
}

/// Whether a flow missing from the connection table may go to `previous`, the backend its
/// VIP's previous table names, rather than `current`, the current table's pick, given the
/// state of `previous`. Only while that backend is still usable: up, or draining (a non-SYN
/// packet belongs to an established flow, and draining keeps established flows, as the
/// connection table does); never a down one. The same pick needs no grace.
pub const fn grace_keeps(previous: u32, current: u32, previous_state: u8) -> bool {
    previous != NO_BACKEND
        && previous != current
        && (previous_state == BACKEND_UP || previous_state == BACKEND_DRAINING)
}

/// First slot of one of a VIP's two Maglev tables in the `MAGLEV` array.
pub const fn maglev_table_base(vip_id: u32, half: u8, table_size: u32) -> u32 {
    (vip_id * 2 + half as u32) * table_size
}

/// Index of a VIP's backend in the `BACKENDS` array (and the backend stats array).
pub const fn backend_index(vip_id: u32, local_index: u32, backends_per_vip: u32) -> u32 {
    vip_id * backends_per_vip + local_index
}

/// Value of the backend array: where and how to send a VIP's packets for one backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    /// The backend's address (IPv4 in the first four bytes).
    pub addr: [u8; 16],
    /// Outer source address for IPIP (the balancer's address on the egress interface).
    pub outer_src: [u8; 16],
    /// Next-hop MAC (the backend itself on-link, else the gateway).
    pub dst_mac: [u8; 6],
    /// MAC of the egress interface.
    pub src_mac: [u8; 6],
    /// Egress interface; `XDP_TX` when it is the receiving one, else `XDP_REDIRECT`.
    pub ifindex: u32,
    /// MTU of the egress interface (the limit for encapsulated packets).
    pub mtu: u16,
    /// `FAMILY_IPV4` / `FAMILY_IPV6`; 0 for an unused slot.
    pub family: u8,
    /// One of `BACKEND_UP`, `BACKEND_DRAINING`, `BACKEND_DOWN`.
    pub state: u8,
    /// `BACKEND_FLAG_*` bits.
    pub flags: u8,
    /// Operator's choice (`ADMIN_*`): kept here so a restarted balancer keeps it.
    pub admin: u8,
    pub _pad: [u8; 2],
}

/// Key of the connection table: one direction of a flow, as the client sends it.
/// Aligned to 8 (no padding either way): compared and hashed as five words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub protocol: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// LPM-trie key data for IPv4 ACL rules: scope (VIP id or `ACL_SCOPE_GLOBAL`, big endian)
/// followed by the address. Prefix length counts the 32 scope bits.
pub type AclKeyV4 = [u8; 8];
/// As `AclKeyV4`, for IPv6.
pub type AclKeyV6 = [u8; 20];

/// Builds ACL trie key data: big-endian scope, then the address bytes.
pub const fn acl_key_v4(scope: u32, addr: [u8; 4]) -> AclKeyV4 {
    let s = scope.to_be_bytes();
    [s[0], s[1], s[2], s[3], addr[0], addr[1], addr[2], addr[3]]
}

pub const fn acl_key_v6(scope: u32, addr: [u8; 16]) -> AclKeyV6 {
    let s = scope.to_be_bytes();
    let mut key = [0u8; 20];
    key[0] = s[0];
    key[1] = s[1];
    key[2] = s[2];
    key[3] = s[3];
    let mut i = 0;
    while i < 16 {
        key[4 + i] = addr[i];
        i += 1;
    }
    key
}

/// An IPv4 address in a 16-byte address field: its four bytes, then zeros. Built
/// from words so the XDP programs store four words instead of calling a byte-wise memset.
#[inline(always)]
pub const fn ipv4_in_16(addr: [u8; 4]) -> [u8; 16] {
    let words = [u32::from_ne_bytes(addr), 0, 0, 0];
    // SAFETY: same size, and every bit pattern is a valid byte array.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(words) }
}

/// Key of the fragment map: one IP datagram, as its fragments all carry it (RFC 791 /
/// RFC 8200 §4.5: source, destination, identification, protocol). Aligned to 4, no padding.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The identification field as it is in the packet (IPv4: 16 bits, the rest zero).
    pub id: [u8; 4],
    /// IPv4 protocol / IPv6 upper-layer next header.
    pub protocol: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// `FragmentValue::forward` of a datagram whose first fragment was passed: its later
/// fragments are passed too (the host's own fragmented traffic keeps working).
pub const FRAGMENT_PASS: u8 = 0xff;

/// Value of the fragment map: where the first fragment of a datagram went.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentValue {
    /// `bpf_ktime_get_ns` when the first fragment was seen.
    pub seen_ns: u64,
    /// Index into `BACKENDS` (unused for `FRAGMENT_PASS`).
    pub backend: u32,
    /// The VIP's id (per-VIP counters).
    pub vip_id: u32,
    /// The client's source port, network byte order (the outer IPv6 flow label).
    pub src_port_be: u16,
    /// The VIP's `FORWARD_*` mode, or `FRAGMENT_PASS`.
    pub forward: u8,
    pub _pad: [u8; 5],
}

/// Key of the decap program's map of local addresses (outer destinations it accepts).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddrKey {
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 3],
}

impl VipKey {
    pub const fn v4(addr: [u8; 4], port: u16, protocol: u8) -> Self {
        Self {
            addr: ipv4_in_16(addr),
            port_be: port.to_be(),
            protocol,
            family: FAMILY_IPV4,
        }
    }

    pub const fn v6(addr: [u8; 16], port: u16, protocol: u8) -> Self {
        Self {
            addr,
            port_be: port.to_be(),
            protocol,
            family: FAMILY_IPV6,
        }
    }
}

const _: () = assert!(core::mem::size_of::<VipKey>() == 20);
const _: () = assert!(core::mem::size_of::<VipMeta>() == 8);
const _: () = assert!(core::mem::size_of::<BackendInfo>() == 56);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<AddrKey>() == 20);
const _: () = assert!(core::mem::size_of::<FragmentKey>() == 40);
const _: () = assert!(core::mem::size_of::<FragmentValue>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both types are repr(C), Copy, have no padding (size-asserted above)
    // and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipMeta {}
    unsafe impl aya::Pod for super::BackendInfo {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for crate::flows::FlowSet {}
    unsafe impl aya::Pod for crate::flows::FlowHashKey {}
    unsafe impl aya::Pod for super::AddrKey {}
    unsafe impl aya::Pod for super::FragmentKey {}
    unsafe impl aya::Pod for super::FragmentValue {}
}
