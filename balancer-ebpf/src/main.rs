//! XDP programs of the balancer. Entry points only: each is a thin wrapper that
//! classifies the packet, counts it once, and returns one verdict.
#![no_std]
#![no_main]

mod csum;
mod decap;
mod forward;
mod headers;
mod maps;
mod parse;
mod select;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use balancer_common::{Action, BACKEND_FLAG_RESOLVED, FORWARD_IPIP, FORWARD_L2_DSR, PacketReason};

use crate::{
    forward::Sent,
    headers::{ETH_P_IPV4, ETH_P_IPV6, EthHdr},
    parse::header_mut,
};

/// The edge program: packets for a VIP are checked against the ACLs, then
/// passed to the local stack or sent to a backend; everything else passes
/// untouched.
#[xdp]
pub fn balancer_lb(ctx: XdpContext) -> u32 {
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    let mut vip_id = None;
    let sent = handle(&ctx, &mut vip_id);
    stats::count_reason(sent.reason, frame_len);
    if let Some(vip_id) = vip_id {
        stats::count_vip(vip_id, sent.action, frame_len);
    }
    if is_malformed(sent.reason) {
        // Off unless userspace raises AYA_LOG_LEVEL to debug: a flood of bad
        // packets must not become a flood of log records.
        debug!(
            &ctx,
            "malformed packet passed: reason {}", sent.reason as u32
        );
    }
    sent.xdp
}

#[inline(always)]
fn handle(ctx: &XdpContext, vip_id: &mut Option<u32>) -> Sent {
    let pkt = match parse::packet(ctx) {
        Ok(pkt) => pkt,
        Err(reason) => return pass(reason),
    };
    // SAFETY: the map value is a plain Copy struct read once.
    let meta = match unsafe { maps::VIPS.get(&pkt.vip) } {
        Some(meta) => *meta,
        None => return pass(PacketReason::NotVip),
    };
    *vip_id = Some(meta.id);
    if !select::acl_allows(&pkt, &meta) {
        return drop(PacketReason::AclDenied);
    }
    if meta.forward != FORWARD_IPIP && meta.forward != FORWARD_L2_DSR {
        return pass(PacketReason::VipLocal);
    }
    let choice = match select::choose_backend(&pkt, &meta) {
        Ok(choice) => choice,
        Err(reason) => return drop(reason),
    };
    stats::count_flow_event(choice.event);
    if choice.backend.flags & BACKEND_FLAG_RESOLVED == 0 {
        return drop(PacketReason::NextHopUnresolved);
    }
    let result = if meta.forward == FORWARD_IPIP {
        forward::ipip(ctx, &pkt, choice.backend)
    } else {
        forward::l2_dsr(ctx, choice.backend)
    };
    match result {
        Ok(sent) => {
            if sent.reason == PacketReason::VipForwarded {
                stats::count_backend(choice.index, (ctx.data_end() - ctx.data()) as u64);
            }
            sent
        }
        Err(reason) => drop(reason),
    }
}

#[inline(always)]
fn pass(reason: PacketReason) -> Sent {
    Sent {
        xdp: xdp_action::XDP_PASS,
        action: Action::Pass,
        reason,
    }
}

#[inline(always)]
fn drop(reason: PacketReason) -> Sent {
    Sent {
        xdp: xdp_action::XDP_DROP,
        action: Action::Drop,
        reason,
    }
}

/// For the far end of a veth that receives `XDP_TX` frames: the kernel only
/// delivers them when the peer has an XDP program too.
#[xdp]
pub fn balancer_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Backends: strips IPIP / IP6IP6 outer headers addressed to this host.
#[xdp]
pub fn balancer_decap(ctx: XdpContext) -> u32 {
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    let reason = decap::decapsulate(&ctx);
    stats::count_decap(reason, frame_len);
    if reason == balancer_common::DecapReason::AdjustFailed {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

/// The benchmark floor: the least an XDP forwarder does (parse to IP, swap
/// MACs, `XDP_TX`), to compare `balancer_lb` against on the same machine.
#[xdp]
pub fn balancer_floor(ctx: XdpContext) -> u32 {
    let Some(eth) = header_mut::<EthHdr>(&ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: `header_mut` checked the header is inside the packet.
    unsafe {
        let ether_type = u16::from_be_bytes((*eth).ether_type_be);
        if ether_type != ETH_P_IPV4 && ether_type != ETH_P_IPV6 {
            return xdp_action::XDP_PASS;
        }
        let dst = (*eth).dst;
        (*eth).dst = (*eth).src;
        (*eth).src = dst;
    }
    xdp_action::XDP_TX
}

#[inline(always)]
fn is_malformed(reason: PacketReason) -> bool {
    matches!(
        reason,
        PacketReason::TruncatedEthernet
            | PacketReason::TruncatedVlan
            | PacketReason::StackedVlan
            | PacketReason::TruncatedIpv4
            | PacketReason::BadIpHeader
            | PacketReason::TruncatedIpv6
            | PacketReason::TruncatedL4
    )
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: the verifier rejects any program that could get here.
    loop {}
}
