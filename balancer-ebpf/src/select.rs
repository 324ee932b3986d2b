//! Who may reach a VIP (ACL) and which backend a flow goes to (connection
//! table first, then the VIP's Maglev table), with the backend's health state.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_jiffies64,
    maps::lpm_trie::Key,
};
use balancer_common::{
    ACL_DENY, ACL_SCOPE_GLOBAL, BACKEND_DOWN, BACKEND_UP, BackendInfo, FAMILY_IPV4, FlowEvent,
    FlowValue, IPPROTO_UDP, NO_BACKEND, PacketReason, VIP_FLAG_ACL_ALLOW_LIST, VIP_FLAG_ACL_RULES,
    VIP_FLAG_UDP_HASH_SOURCE, VipMeta, acl_key_v4, acl_key_v6,
};

use crate::{
    maps::{ACL_V4, ACL_V6, BACKENDS, FLOWS, MAGLEV},
    parse::Packet,
};

/// Maglev slots per VIP table (`xdp.table_size`), set by the loader.
#[unsafe(no_mangle)]
static TABLE_SIZE: u32 = balancer_common::DEFAULT_TABLE_SIZE;

/// `VIP_FLAG_ACL_*` bits of the global scope, set by the loader.
#[unsafe(no_mangle)]
static ACL_GLOBAL_FLAGS: u8 = 0;

/// The error `bpf_map_update_elem` gives an existing key with `BPF_NOEXIST`.
const EEXIST: i32 = 17;

/// A flow's last-seen time is refreshed at most this often (0.25 to 2.5 s
/// depending on the kernel's HZ): a write per packet would bounce the entry's
/// cache line between CPUs.
const LAST_SEEN_GRANULARITY_JIFFIES: u64 = 256;

#[inline(always)]
fn global<T: Copy>(value: &T) -> T {
    // SAFETY: a read of a loader-set constant; volatile so the compiler does not
    // fold the default value in.
    unsafe { core::ptr::read_volatile(value) }
}

/// Whether the source may reach this VIP: the global scope and the VIP's scope
/// must both allow it. In each scope the longest matching prefix decides; with
/// no match, a scope that has allow rules denies and one without allows.
#[inline(always)]
pub fn acl_allows(pkt: &Packet, meta: &VipMeta) -> bool {
    scope_allows(pkt, ACL_SCOPE_GLOBAL, global(&ACL_GLOBAL_FLAGS))
        && scope_allows(pkt, meta.id, meta.flags)
}

#[inline(always)]
fn scope_allows(pkt: &Packet, scope: u32, flags: u8) -> bool {
    if flags & VIP_FLAG_ACL_RULES == 0 {
        return true;
    }
    let verdict = if pkt.flow.family == FAMILY_IPV4 {
        let mut addr = [0u8; 4];
        addr.copy_from_slice(&pkt.flow.src[..4]);
        ACL_V4.get(Key::new(64, acl_key_v4(scope, addr))).copied()
    } else {
        ACL_V6
            .get(Key::new(160, acl_key_v6(scope, pkt.flow.src)))
            .copied()
    };
    match verdict {
        Some(action) => action != ACL_DENY,
        None => flags & VIP_FLAG_ACL_ALLOW_LIST == 0,
    }
}

/// The backend chosen for a packet: its slot and its data.
pub struct Choice {
    pub index: u32,
    pub backend: &'static BackendInfo,
    pub event: FlowEvent,
}

/// Connection table first: an entry whose backend is up or draining keeps the
/// flow there. A missing entry or a down backend picks from the Maglev table,
/// which only ever lists up backends. A TCP SYN always picks (port reuse) and
/// skips the lookup: its insert tells a new tuple from a known one.
#[inline(always)]
pub fn choose_backend(pkt: &Packet, meta: &VipMeta) -> Result<Choice, PacketReason> {
    // SAFETY: reading jiffies has no preconditions.
    let now = unsafe { bpf_jiffies64() };
    let mut event = FlowEvent::TableMiss;
    if !pkt.tcp_syn
        && let Some(entry) = FLOWS.get_ptr_mut(&pkt.flow)
    {
        // SAFETY: the pointer is to a live map value; a racing update of
        // last_seen from another CPU only loses a timestamp refresh.
        let index = unsafe { (*entry).backend };
        if let Some(backend) = BACKENDS.get(index) {
            if backend.state != BACKEND_DOWN {
                unsafe {
                    if now.wrapping_sub((*entry).last_seen) > LAST_SEEN_GRANULARITY_JIFFIES {
                        (*entry).last_seen = now;
                    }
                }
                return Ok(Choice {
                    index,
                    backend,
                    event: FlowEvent::TableHit,
                });
            }
            event = FlowEvent::DownRepick;
        }
    }

    let table_size = global(&TABLE_SIZE);
    if table_size == 0 {
        return Err(PacketReason::NoBackend);
    }
    let slot = flow_hash(pkt, meta) % table_size;
    let index = match MAGLEV.get(meta.table_base(table_size) + slot) {
        Some(&index) if index != NO_BACKEND => index,
        _ => return Err(PacketReason::NoBackend),
    };
    let backend = match BACKENDS.get(index) {
        // Userspace removes a backend from the table before it marks it
        // draining or down; this guards the moment in between.
        Some(backend) if backend.state == BACKEND_UP => backend,
        _ => return Err(PacketReason::NoBackend),
    };
    let value = FlowValue {
        backend: index,
        _pad: 0,
        last_seen: now,
    };
    // A full table evicts its least recently used entry; a failed insert only
    // means the next packet picks again, from the same Maglev slot.
    if pkt.tcp_syn {
        // One insert for the common case (a new tuple); only port reuse pays for
        // a second one, which replaces the old entry.
        if FLOWS.insert(&pkt.flow, &value, BPF_NOEXIST.into()).err() == Some(-EEXIST) {
            event = FlowEvent::SynRepick;
            let _ = FLOWS.insert(&pkt.flow, &value, BPF_ANY.into());
        }
    } else {
        let _ = FLOWS.insert(&pkt.flow, &value, BPF_ANY.into());
    }
    Ok(Choice {
        index,
        backend,
        event,
    })
}

/// Hash of the client side of the flow (the VIP side is the same for every
/// flow of a VIP). UDP VIPs may hash the source address only, so one client's
/// datagrams from many ports reach one backend.
#[inline(always)]
fn flow_hash(pkt: &Packet, meta: &VipMeta) -> u32 {
    let src = &pkt.flow.src;
    let mut hash = 0x9747_b28c_u32;
    hash = mix(hash, u32::from_ne_bytes([src[0], src[1], src[2], src[3]]));
    hash = mix(hash, u32::from_ne_bytes([src[4], src[5], src[6], src[7]]));
    hash = mix(hash, u32::from_ne_bytes([src[8], src[9], src[10], src[11]]));
    hash = mix(
        hash,
        u32::from_ne_bytes([src[12], src[13], src[14], src[15]]),
    );
    let source_only =
        pkt.flow.protocol == IPPROTO_UDP && meta.flags & VIP_FLAG_UDP_HASH_SOURCE != 0;
    if !source_only {
        hash = mix(
            hash,
            (pkt.flow.src_port_be as u32) << 16 | pkt.flow.dst_port_be as u32,
        );
        hash = mix(hash, pkt.flow.protocol as u32);
    }
    finish(hash)
}

/// One MurmurHash3 block step.
#[inline(always)]
fn mix(hash: u32, word: u32) -> u32 {
    let k = word
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (hash ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// MurmurHash3's finalizer: every input bit affects every output bit.
#[inline(always)]
fn finish(mut hash: u32) -> u32 {
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^ (hash >> 16)
}
