//! Counting: every packet once under its reason, VIP packets also per VIP and verdict.

use balancer_common::{Action, PacketReason};

use crate::maps::{REASON_STATS, VIP_STATS};

#[inline(always)]
pub fn count_reason(reason: PacketReason, frame_len: u64) {
    if let Some(counter) = REASON_STATS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, so no other writer runs concurrently.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += frame_len;
        }
    }
}

#[inline(always)]
pub fn count_vip(vip_id: u32, action: Action, frame_len: u64) {
    if let Some(counter) = VIP_STATS.get_ptr_mut(action.vip_stats_index(vip_id)) {
        // SAFETY: per-CPU slot, so no other writer runs concurrently.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += frame_len;
        }
    }
}
