//! The maps the programs own. Sizes here are defaults: userspace sets the real
//! capacities from the config at load time, and pins them when `xdp.pin_path` is set.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use balancer_common::{
    AclKeyV4, AclKeyV6, Action, AddrKey, BackendInfo, Counter, DEFAULT_BACKENDS_PER_VIP,
    DEFAULT_MAX_ACL_RULES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_VIPS, DEFAULT_TABLE_SIZE,
    DecapReason, FlowEvent, FlowHashKey, FlowSet, FragmentKey, FragmentValue, MAX_DECAP_ADDRS,
    MAX_FRAGMENTED_DATAGRAMS, MAX_TX_PORTS, PacketReason, VipKey, VipMeta, flow_sets,
};

use crate::parse::Unusual;

/// VIP (address, port, protocol) → id, forwarding mode, flags, active table.
/// Written by userspace on start and reload; read per packet.
#[map]
pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(DEFAULT_MAX_VIPS, 0);

/// Backends, `max_backends` slots per VIP id (`backend_index`): address, next hop, state.
#[map]
pub static BACKENDS: Array<BackendInfo> =
    Array::with_max_entries(DEFAULT_MAX_VIPS * DEFAULT_BACKENDS_PER_VIP, 0);

/// Two Maglev tables per VIP (`maglev_table_base`), each `TABLE_SIZE` backend indexes.
#[map]
pub static MAGLEV: Array<u32> =
    Array::with_max_entries(DEFAULT_MAX_VIPS * 2 * DEFAULT_TABLE_SIZE, 0);

/// Per VIP id: until when (`bpf_ktime_get_ns`) the VIP's other Maglev table half is its
/// previous table, for non-SYN TCP misses (`xdp.flow_grace`); 0: no previous table.
/// Written by userspace around each table switch; read per non-SYN TCP miss.
#[map]
pub static GRACE: Array<u64> = Array::with_max_entries(DEFAULT_MAX_VIPS, 0);

/// The connection table: client tuple → backend, shared by all CPUs so a flow
/// keeps its backend whichever queue its packets arrive on. Sets of
/// `FLOW_WAYS` entries, LRU within a set (`balancer_common::flows` says why
/// not the kernel's LRU hash). Mmapable only for its layout: the kernel then
/// page-aligns the elements, so every set starts a cache line.
#[map]
pub static FLOWS: Array<FlowSet> =
    Array::with_max_entries(flow_sets(DEFAULT_MAX_CONNECTIONS), BPF_F_MMAPABLE);

/// The secret that keys the connection table's hash, one entry. Userspace
/// writes a random one when the table is new; pinned with `FLOWS`.
#[map]
pub static FLOW_HASH_KEY: Array<FlowHashKey> = Array::with_max_entries(1, 0);

/// Fragmented datagrams: where each one's first fragment (the one with the ports) went, so
/// its later fragments follow. Written and read only for fragments, never on the common path.
#[map]
pub static FRAGMENTS: LruHashMap<FragmentKey, FragmentValue> =
    LruHashMap::with_max_entries(MAX_FRAGMENTED_DATAGRAMS, 0);

/// Scratch space for `parse::unusual` (one per CPU): the BPF stack is too small to hold it
/// beside everything the routing after it needs.
#[map]
pub static UNUSUAL: PerCpuArray<Unusual> = PerCpuArray::with_max_entries(1, 0);

/// ACL rules: (scope, source prefix) → `ACL_ALLOW` / `ACL_DENY`, longest prefix wins.
#[map]
pub static ACL_V4: LpmTrie<AclKeyV4, u8> = LpmTrie::with_max_entries(DEFAULT_MAX_ACL_RULES, 0);
#[map]
pub static ACL_V6: LpmTrie<AclKeyV6, u8> = LpmTrie::with_max_entries(DEFAULT_MAX_ACL_RULES, 0);

/// Egress interfaces other than the receiving one, for `XDP_REDIRECT`, keyed by ifindex.
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_TX_PORTS, 0);

/// Per-CPU packet/byte counters, one row per VIP id and one column per `Action`.
#[map]
pub static VIP_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_VIPS * Action::COUNT, 0);

/// Per-CPU packet/byte counters per `PacketReason`.
#[map]
pub static REASON_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(PacketReason::COUNT, 0);

/// Per-CPU packet/byte counters per backend slot (same index as `BACKENDS`).
#[map]
pub static BACKEND_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_VIPS * DEFAULT_BACKENDS_PER_VIP, 0);

/// Per-CPU packet counts per `FlowEvent` (connection-table hits, misses, re-picks).
#[map]
pub static FLOW_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(FlowEvent::COUNT, 0);

/// `balancer_decap`: the outer destination addresses it strips (this host's own).
#[map]
pub static DECAP_ADDRS: HashMap<AddrKey, u8> = HashMap::with_max_entries(MAX_DECAP_ADDRS, 0);

/// `balancer_decap`: per-CPU packet/byte counters per `DecapReason`.
#[map]
pub static DECAP_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(DecapReason::COUNT, 0);
