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
use balancer_common::{
    Action, BACKEND_DOWN, BACKEND_FLAG_RESOLVED, BackendInfo, FORWARD_IPIP, FORWARD_L2_DSR,
    FORWARD_LOCAL, FRAGMENT_PASS, NO_BACKEND, PacketReason,
};

use crate::{
    forward::Sent,
    headers::{ETH_P_IPV4, ETH_P_IPV6, EthHdr},
    parse::{Packet, header_mut},
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
        Err(
            PacketReason::StackedVlan
            | PacketReason::Fragment
            | PacketReason::Ipv6ExtensionHeader
            | PacketReason::OtherL4,
        ) => return unusual(ctx, vip_id),
        Err(reason) => return pass(reason),
    };
    let mut chosen = Chosen::NONE;
    route::<false>(ctx, &pkt, vip_id, &mut chosen)
}

/// The backend a packet was sent to, for `unusual` (the common path never reads it).
struct Chosen {
    index: u32,
    forward: u8,
}

impl Chosen {
    const NONE: Chosen = Chosen {
        index: NO_BACKEND,
        forward: FORWARD_LOCAL,
    };
}

/// From the VIP lookup to the verdict: ACL, forwarding mode, backend choice, encapsulation.
/// `QINQ`: the packet may carry two VLAN tags (`unusual` only).
#[inline(always)]
fn route<const QINQ: bool>(
    ctx: &XdpContext,
    pkt: &Packet,
    vip_id: &mut Option<u32>,
    chosen: &mut Chosen,
) -> Sent {
    // SAFETY: the map value is a plain Copy struct read once.
    let meta = match unsafe { maps::VIPS.get(&pkt.vip) } {
        Some(meta) => *meta,
        None => return pass(PacketReason::NotVip),
    };
    *vip_id = Some(meta.id);
    if !select::acl_allows(pkt, &meta) {
        return drop(PacketReason::AclDenied);
    }
    if meta.forward != FORWARD_IPIP && meta.forward != FORWARD_L2_DSR {
        return pass(PacketReason::VipLocal);
    }
    let choice = match select::choose_backend(pkt, &meta) {
        Ok(choice) => choice,
        Err(reason) => return drop(reason),
    };
    stats::count_flow_event(choice.event);
    if choice.backend.flags & BACKEND_FLAG_RESOLVED == 0 {
        return drop(PacketReason::NextHopUnresolved);
    }
    chosen.index = choice.index;
    chosen.forward = meta.forward;
    send::<QINQ>(ctx, pkt, meta.forward, choice.index, choice.backend)
}

/// Encapsulates or rewrites towards `backend` (slot `index`) by the VIP's `forward` mode.
#[inline(always)]
fn send<const QINQ: bool>(
    ctx: &XdpContext,
    pkt: &Packet,
    forward: u8,
    index: u32,
    backend: &BackendInfo,
) -> Sent {
    let result = if forward == FORWARD_IPIP {
        forward::ipip::<QINQ>(ctx, pkt, backend)
    } else {
        forward::l2_dsr(ctx, backend)
    };
    match result {
        Ok(sent) => {
            if sent.reason == PacketReason::VipForwarded {
                stats::count_backend(index, (ctx.data_end() - ctx.data()) as u64);
            }
            sent
        }
        Err(reason) => drop(reason),
    }
}

/// What the common path turned away (two VLAN tags, fragments, IPv6 extension headers,
/// protocols other than TCP/UDP): parsed again further by `parse::unusual`, then routed
/// as the common path routes, or, for later fragments, sent where their first went.
/// Not inlined: its parsing and its stack frame stay off the common path.
#[inline(never)]
fn unusual(ctx: &XdpContext, vip_id: &mut Option<u32>) -> Sent {
    let Some(found) = maps::UNUSUAL.get_ptr_mut(0) else {
        return pass(PacketReason::OtherL4);
    };
    // SAFETY: this CPU's own slot of the scratch map; nothing else runs on it meanwhile.
    let found = unsafe { &mut *found };
    found.reset();
    let parsed = parse::unusual(ctx, found);
    if found.kind == parse::KIND_LATER_FRAGMENT {
        return later_fragment(ctx, found, vip_id);
    }
    let mut chosen = Chosen::NONE;
    let mut sent = match parsed {
        Ok(()) => route::<true>(ctx, &found.pkt, vip_id, &mut chosen),
        Err(reason @ (PacketReason::StackedVlan | PacketReason::Ipv6ExtensionLimit)) => {
            drop(reason)
        }
        Err(reason) => pass(reason),
    };
    let forwarded = sent.reason == PacketReason::VipForwarded;
    match found.kind {
        parse::KIND_ICMP_ERROR => {
            if forwarded {
                sent.reason = PacketReason::IcmpErrorForwarded;
            } else if sent.reason == PacketReason::NotVip {
                sent.reason = PacketReason::IcmpErrorNotVip;
            }
        }
        parse::KIND_FIRST_FRAGMENT => {
            if forwarded {
                sent.reason = PacketReason::FragmentForwarded;
                select::remember_fragment(found, vip_id.unwrap_or(0), chosen.index, chosen.forward);
            } else if sent.action == Action::Pass {
                sent.reason = PacketReason::Fragment;
                select::remember_fragment(found, 0, NO_BACKEND, FRAGMENT_PASS);
            }
        }
        _ => {}
    }
    sent
}

/// A fragment without ports: where its datagram's first fragment went, if that was seen
/// within `FRAGMENT_TIMEOUT_NS`; dropped otherwise (it could reach no one who can use it).
#[inline(always)]
fn later_fragment(ctx: &XdpContext, found: &mut parse::Unusual, vip_id: &mut Option<u32>) -> Sent {
    let Some(first) = select::first_fragment(&found.fragment) else {
        return drop(PacketReason::FragmentOrphan);
    };
    if first.forward == FRAGMENT_PASS {
        return pass(PacketReason::Fragment);
    }
    *vip_id = Some(first.vip_id);
    let backend = match maps::BACKENDS.get(first.backend) {
        Some(backend) if backend.state != BACKEND_DOWN => backend,
        _ => return drop(PacketReason::NoBackend),
    };
    if backend.flags & BACKEND_FLAG_RESOLVED == 0 {
        return drop(PacketReason::NextHopUnresolved);
    }
    // The outer IPv6 flow label: the same as the first fragment's.
    found.pkt.flow.src_port_be = first.src_port_be;
    let mut sent = send::<true>(ctx, &found.pkt, first.forward, first.backend, backend);
    if sent.reason == PacketReason::VipForwarded {
        sent.reason = PacketReason::FragmentForwarded;
    }
    sent
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
#[expect(
    clippy::manual_swap,
    reason = "the floor's MAC swap stays two plain copies through the packet pointer, the code \
              the benchmark's floor has always measured"
)]
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
