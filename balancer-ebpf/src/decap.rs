//! `balancer_decap` on backends: strips the outer IPv4 / IPv6 header of IPIP,
//! IP6IP6 (and 4in6 / 6in4) packets addressed to this host, so the inner
//! packet (to a VIP on `lo`) reaches the local stack.

use core::mem::size_of;

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use balancer_common::{
    AddrKey, DecapReason, FAMILY_IPV4, FAMILY_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, ipv4_in_16,
};

use crate::{
    headers::{ETH_P_IPV4, ETH_P_IPV6, EthHdr, Ipv4Hdr, Ipv6Hdr, VlanHdr},
    maps::DECAP_ADDRS,
    parse::{be16, ethernet_qinq, header_at, header_mut},
};

const ETH_LEN: usize = size_of::<EthHdr>();

/// Decapsulates if the packet is for us; the reason says what happened.
#[inline(always)]
pub fn decapsulate(ctx: &XdpContext) -> DecapReason {
    // Up to two VLAN tags: `balancer_lb` keeps a QinQ frame's both tags on encapsulation.
    let (ether_type, l3_offset) = match ethernet_qinq(ctx) {
        Ok(found) => found,
        Err(_) => return DecapReason::Malformed,
    };
    let (outer_len, inner_protocol, dst) = match ether_type {
        ETH_P_IPV4 => match outer_v4(ctx, l3_offset) {
            Ok(Some(found)) => found,
            Ok(None) => return DecapReason::NotEncapsulated,
            Err(reason) => return reason,
        },
        ETH_P_IPV6 => match outer_v6(ctx, l3_offset) {
            Ok(Some(found)) => found,
            Ok(None) => return DecapReason::NotEncapsulated,
            Err(reason) => return reason,
        },
        _ => return DecapReason::NotEncapsulated,
    };
    // SAFETY: a plain lookup of a Copy value.
    if unsafe { DECAP_ADDRS.get(&dst) }.is_none() {
        return DecapReason::NotLocal;
    }
    let inner_type = if inner_protocol == IPPROTO_IPIP {
        ETH_P_IPV4
    } else {
        ETH_P_IPV6
    };
    match strip(ctx, l3_offset, outer_len, inner_type) {
        Ok(()) => DecapReason::Decapsulated,
        Err(reason) => reason,
    }
}

/// For an encapsulating IPv4 header: its length, the inner protocol and the outer destination.
#[inline(always)]
fn outer_v4(
    ctx: &XdpContext,
    l3_offset: usize,
) -> Result<Option<(usize, u8, AddrKey)>, DecapReason> {
    let ip = header_at::<Ipv4Hdr>(ctx, l3_offset).ok_or(DecapReason::Malformed)?;
    // SAFETY (all derefs): bounds-checked by `header_at`.
    let version_ihl = unsafe { (*ip).version_ihl };
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    let protocol = unsafe { (*ip).protocol };
    if protocol != IPPROTO_IPIP && protocol != IPPROTO_IPV6 {
        return Ok(None);
    }
    if version_ihl >> 4 != 4 || header_len < size_of::<Ipv4Hdr>() {
        return Err(DecapReason::Malformed);
    }
    // A fragmented tunnel packet cannot be stripped piecewise; the stack drops it.
    if be16(unsafe { (*ip).frag_off_be }) & 0x3fff != 0 {
        return Err(DecapReason::Malformed);
    }
    let key = AddrKey {
        addr: ipv4_in_16(unsafe { (*ip).daddr }),
        family: FAMILY_IPV4,
        _pad: [0; 3],
    };
    Ok(Some((header_len, protocol, key)))
}

#[inline(always)]
fn outer_v6(
    ctx: &XdpContext,
    l3_offset: usize,
) -> Result<Option<(usize, u8, AddrKey)>, DecapReason> {
    let ip = header_at::<Ipv6Hdr>(ctx, l3_offset).ok_or(DecapReason::Malformed)?;
    // SAFETY (all derefs): bounds-checked by `header_at`.
    let next_header = unsafe { (*ip).next_header };
    if next_header != IPPROTO_IPIP && next_header != IPPROTO_IPV6 {
        return Ok(None);
    }
    if unsafe { (*ip).version_class_flow[0] } >> 4 != 6 {
        return Err(DecapReason::Malformed);
    }
    let key = AddrKey {
        addr: unsafe { (*ip).daddr },
        family: FAMILY_IPV6,
        _pad: [0; 3],
    };
    Ok(Some((size_of::<Ipv6Hdr>(), next_header, key)))
}

/// Moves the Ethernet header (and VLAN tags) forward over the outer IP header
/// and drops the bytes before it.
#[inline(always)]
fn strip(
    ctx: &XdpContext,
    l3_offset: usize,
    outer_len: usize,
    inner_type: u16,
) -> Result<(), DecapReason> {
    // The header reads come before the length check below: after it, LLVM
    // drops their bounds checks as redundant and the verifier rejects them.
    let eth = header_at::<EthHdr>(ctx, 0).ok_or(DecapReason::Malformed)?;
    // SAFETY: bounds-checked above.
    let (dst, src, outer_type) = unsafe { ((*eth).dst, (*eth).src, (*eth).ether_type_be) };
    let tci = if l3_offset == ETH_LEN {
        None
    } else {
        let vlan = header_at::<VlanHdr>(ctx, ETH_LEN).ok_or(DecapReason::Malformed)?;
        // SAFETY: bounds-checked above.
        Some(unsafe { (*vlan).tci_be })
    };
    // A second tag (QinQ): the first tag's EtherType is its TPID.
    let inner_tag = if l3_offset == ETH_LEN + 2 * size_of::<VlanHdr>() {
        let outer = header_at::<VlanHdr>(ctx, ETH_LEN).ok_or(DecapReason::Malformed)?;
        let vlan = header_at::<VlanHdr>(ctx, ETH_LEN + size_of::<VlanHdr>())
            .ok_or(DecapReason::Malformed)?;
        // SAFETY: bounds-checked above.
        Some(unsafe { ((*outer).ether_type_be, (*vlan).tci_be) })
    } else {
        None
    };
    // The inner packet must at least start with its own IP header.
    if ctx.data() + l3_offset + outer_len + size_of::<Ipv4Hdr>() > ctx.data_end() {
        return Err(DecapReason::Malformed);
    }
    // SAFETY: the helper validates the delta against the frame.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, (outer_len & 0xff) as i32) } != 0 {
        return Err(DecapReason::AdjustFailed);
    }
    let eth = header_mut::<EthHdr>(ctx, 0).ok_or(DecapReason::AdjustFailed)?;
    // SAFETY (both writes): bounds-checked by `header_mut`.
    match tci {
        None => unsafe {
            *eth = EthHdr {
                dst,
                src,
                ether_type_be: inner_type.to_be_bytes(),
            };
        },
        Some(tci) => {
            let vlan = header_mut::<VlanHdr>(ctx, ETH_LEN).ok_or(DecapReason::AdjustFailed)?;
            unsafe {
                *eth = EthHdr {
                    dst,
                    src,
                    ether_type_be: outer_type,
                };
                *vlan = VlanHdr {
                    tci_be: tci,
                    ether_type_be: inner_type.to_be_bytes(),
                };
            }
        }
    }
    if let Some((tpid, tci)) = inner_tag {
        let outer = header_mut::<VlanHdr>(ctx, ETH_LEN).ok_or(DecapReason::AdjustFailed)?;
        let vlan = header_mut::<VlanHdr>(ctx, ETH_LEN + size_of::<VlanHdr>())
            .ok_or(DecapReason::AdjustFailed)?;
        // SAFETY: bounds-checked by `header_mut`.
        unsafe {
            (*outer).ether_type_be = tpid;
            *vlan = VlanHdr {
                tci_be: tci,
                ether_type_be: inner_type.to_be_bytes(),
            };
        }
    }
    Ok(())
}
