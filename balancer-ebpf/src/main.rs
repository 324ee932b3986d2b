//! XDP programs of the balancer. Entry points only: each is a thin wrapper that
//! classifies the packet, counts it once, and returns one verdict.
#![no_std]
#![no_main]

mod headers;
mod maps;
mod parse;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use balancer_common::{Action, PacketReason};

/// The edge program: packets for a VIP are counted and handled by the VIP's
/// forwarding mode; everything else passes untouched.
#[xdp]
pub fn balancer_lb(ctx: XdpContext) -> u32 {
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    let (reason, vip_id) = classify(&ctx);
    let action = Action::Pass;
    stats::count_reason(reason, frame_len);
    if let Some(vip_id) = vip_id {
        stats::count_vip(vip_id, action, frame_len);
    }
    if is_malformed(reason) {
        // Off unless userspace raises AYA_LOG_LEVEL to debug: a flood of bad
        // packets must not become a flood of log records.
        debug!(&ctx, "malformed packet passed: reason {}", reason as u32);
    }
    xdp_action::XDP_PASS
}

/// For the far end of a veth that receives `XDP_TX` frames: the kernel only
/// delivers them when the peer has an XDP program too.
#[xdp]
pub fn balancer_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Which reason the packet is counted under, and the VIP it belongs to.
#[inline(always)]
fn classify(ctx: &XdpContext) -> (PacketReason, Option<u32>) {
    let key = match parse::vip_key(ctx) {
        Ok(key) => key,
        Err(reason) => return (reason, None),
    };
    // SAFETY: the map value is a plain Copy struct read once.
    match unsafe { maps::VIPS.get(&key) } {
        None => (PacketReason::NotVip, None),
        // Only local delivery exists so far: the control plane refuses other modes.
        Some(meta) => (PacketReason::VipLocal, Some(meta.id)),
    }
}

#[inline(always)]
fn is_malformed(reason: PacketReason) -> bool {
    !matches!(
        reason,
        PacketReason::NotIp | PacketReason::NotVip | PacketReason::VipLocal | PacketReason::OtherL4
    )
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: the verifier rejects any program that could get here.
    loop {}
}
