//! The maps the edge program owns. Sizes here are defaults: userspace sets the
//! real capacities from the config at load time.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use balancer_common::{Action, Counter, DEFAULT_MAX_VIPS, PacketReason, VipKey, VipMeta};

/// VIP (address, port, protocol) → id and forwarding mode. Written by
/// userspace on start and reload; read per packet.
#[map]
pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(DEFAULT_MAX_VIPS, 0);

/// Per-CPU packet/byte counters, one row per VIP id and one column per
/// `Action`. Written per packet; summed over CPUs by userspace for metrics.
#[map]
pub static VIP_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_VIPS * Action::COUNT, 0);

/// Per-CPU packet/byte counters per `PacketReason`. Written per packet; summed by userspace.
#[map]
pub static REASON_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(PacketReason::COUNT, 0);
