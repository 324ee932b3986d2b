//! Counting: every packet once under its reason, VIP packets also per VIP and
//! verdict, forwarded packets per backend and per connection-table event.

use aya_ebpf::maps::PerCpuArray;
use balancer_common::{Action, Counter, DecapReason, FlowEvent, PacketReason};

use crate::maps::{BACKEND_STATS, DECAP_STATS, FLOW_STATS, REASON_STATS, VIP_STATS};

#[inline(always)]
fn add(map: &PerCpuArray<Counter>, index: u32, frame_len: u64) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, so no other writer runs concurrently.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += frame_len;
        }
    }
}

#[inline(always)]
pub fn count_reason(reason: PacketReason, frame_len: u64) {
    add(&REASON_STATS, reason as u32, frame_len);
}

#[inline(always)]
pub fn count_vip(vip_id: u32, action: Action, frame_len: u64) {
    add(&VIP_STATS, action.vip_stats_index(vip_id), frame_len);
}

/// `frame_len`: the frame as it leaves, encapsulated (what the backend's link carries).
#[inline(always)]
pub fn count_backend(backend: u32, frame_len: u64) {
    add(&BACKEND_STATS, backend, frame_len);
}

#[inline(always)]
pub fn count_decap(reason: DecapReason, frame_len: u64) {
    add(&DECAP_STATS, reason as u32, frame_len);
}

#[inline(always)]
pub fn count_flow_event(event: FlowEvent) {
    if let Some(counter) = FLOW_STATS.get_ptr_mut(event as u32) {
        // SAFETY: per-CPU slot, so no other writer runs concurrently.
        unsafe { *counter += 1 };
    }
}
