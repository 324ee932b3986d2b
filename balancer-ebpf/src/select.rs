//! Who may reach a VIP (ACL) and which backend a flow goes to (connection
//! table first, then the VIP's Maglev table), with the backend's health state.

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    maps::lpm_trie::Key,
};
use balancer_common::{
    ACL_DENY, ACL_SCOPE_GLOBAL, BACKEND_DOWN, BACKEND_UP, BackendInfo, FAMILY_IPV4,
    FRAGMENT_TIMEOUT_NS, FlowEvent, FragmentKey, FragmentValue, IPPROTO_TCP, IPPROTO_UDP,
    NO_BACKEND, PacketReason, VIP_FLAG_ACL_ALLOW_LIST, VIP_FLAG_ACL_RULES,
    VIP_FLAG_UDP_HASH_SOURCE, VipMeta, acl_key_v4, acl_key_v6, flow_maglev_hash, flow_set_index,
    flow_source_hash, flow_table_hash, flow_tag, flow_tick, grace_active, grace_keeps,
    maglev_table_base, previous_half,
};

use crate::{
    maps::{ACL_V4, ACL_V6, BACKENDS, FLOW_HASH_KEY, FLOWS, FRAGMENTS, GRACE, MAGLEV},
    parse::{Packet, Unusual},
};

/// Maglev slots per VIP table (`xdp.table_size`), set by the loader.
#[unsafe(no_mangle)]
static TABLE_SIZE: u32 = balancer_common::DEFAULT_TABLE_SIZE;

/// Sets of the connection table (`FLOWS`), set by the loader.
#[unsafe(no_mangle)]
static FLOW_SETS: u32 = balancer_common::flow_sets(balancer_common::DEFAULT_MAX_CONNECTIONS);

/// `VIP_FLAG_ACL_*` bits of the global scope, set by the loader.
#[unsafe(no_mangle)]
static ACL_GLOBAL_FLAGS: u8 = 0;

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
/// which only ever lists up backends, and a TCP SYN always picks (port reuse).
/// A non-SYN TCP packet with no entry at all is of a flow placed before the VIP's
/// last table change (on another host, or evicted here): within `xdp.flow_grace`
/// it goes where the previous table sends it, if that backend is still usable
/// (see [`grace_pick`]).
#[inline(always)]
pub fn choose_backend(pkt: &Packet, meta: &VipMeta) -> Result<Choice, PacketReason> {
    // SAFETY: reading jiffies has no preconditions.
    let now = flow_tick(unsafe { bpf_jiffies64() });
    // The key's one entry is always there; without it the table is skipped.
    let (tag, mut set) = match FLOW_HASH_KEY.get(0) {
        Some(secret) => {
            let hash = flow_table_hash(&pkt.flow, secret);
            // SAFETY: a pointer to a live element of the array map; other CPUs may
            // write the same set, which `FlowSet` tolerates (see `balancer_common::flows`).
            let set = FLOWS
                .get_ptr_mut(flow_set_index(hash, global(&FLOW_SETS)))
                .map(|set| unsafe { &mut *set });
            (flow_tag(hash), set)
        }
        None => (0, None),
    };
    let mut event = FlowEvent::TableMiss;
    let mut known_way = None;
    if let Some(set) = set.as_deref_mut()
        && let Some((way, index)) = set.find(&pkt.flow, tag)
    {
        known_way = Some(way);
        if pkt.tcp_syn {
            event = FlowEvent::SynRepick;
        } else if let Some(backend) = BACKENDS.get(index) {
            if backend.state != BACKEND_DOWN {
                set.touch(way, now);
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
    let slot = maglev_hash(pkt, meta) % table_size;
    let mut index = match MAGLEV.get(meta.table_base(table_size) + slot) {
        Some(&index) if index != NO_BACKEND => index,
        _ => return Err(PacketReason::NoBackend),
    };
    let mut backend = match BACKENDS.get(index) {
        // Userspace removes a backend from the table before it marks it
        // draining or down; this guards the moment in between.
        Some(backend) if backend.state == BACKEND_UP => backend,
        _ => return Err(PacketReason::NoBackend),
    };
    // Only a packet with no entry at all: a known flow whose backend went down
    // re-picks at once, and a SYN starts a new flow.
    if known_way.is_none()
        && pkt.flow.protocol == IPPROTO_TCP
        && !pkt.tcp_syn
        && let Some((previous, previous_backend)) = grace_pick(meta, table_size, slot, index)
    {
        index = previous;
        backend = previous_backend;
        event = FlowEvent::GraceHit;
    }
    if let Some(set) = set {
        match known_way {
            Some(way) => set.repoint(way, tag, index, now),
            // A full set evicts its least recently seen flow.
            None => set.store(set.victim(now), &pkt.flow, tag, index, now),
        }
    }
    Ok(Choice {
        index,
        backend,
        event,
    })
}

/// The backend the VIP's previous Maglev table has in `slot`, while the VIP's
/// grace lasts and when it differs from `current` and is still usable
/// (`grace_keeps`). Userspace zeroes the VIP's `GRACE` entry before it rewrites
/// the previous half, so a valid deadline means the half holds a whole table.
#[inline(always)]
fn grace_pick(
    meta: &VipMeta,
    table_size: u32,
    slot: u32,
    current: u32,
) -> Option<(u32, &'static BackendInfo)> {
    let deadline = *GRACE.get(meta.id)?;
    if deadline == 0 {
        return None;
    }
    // SAFETY: reading the monotonic clock has no preconditions.
    if !grace_active(deadline, unsafe { bpf_ktime_get_ns() }) {
        return None;
    }
    let base = maglev_table_base(meta.id, previous_half(meta.table_half), table_size);
    let previous = *MAGLEV.get(base + slot)?;
    let backend = BACKENDS.get(previous)?;
    grace_keeps(previous, current, backend.state).then_some((previous, backend))
}

/// The Maglev slot hash: unkeyed, so every balancer in front of the same
/// backends picks the same one. By default the whole tuple (the VIP side of
/// the key is the same for every flow of a VIP); UDP VIPs may hash the source
/// address only, so one client's datagrams from many ports reach one backend.
#[inline(always)]
fn maglev_hash(pkt: &Packet, meta: &VipMeta) -> u32 {
    let hash = if pkt.flow.protocol == IPPROTO_UDP && meta.flags & VIP_FLAG_UDP_HASH_SOURCE != 0 {
        flow_source_hash(&pkt.flow)
    } else {
        flow_maglev_hash(&pkt.flow)
    };
    (hash >> 32) as u32 ^ hash as u32
}

/// Remembers where a datagram's first fragment went (`backend` of VIP `vip_id`, by the
/// VIP's `forward` mode), or that it was passed (`FRAGMENT_PASS`), for its later fragments.
#[inline(always)]
pub fn remember_fragment(found: &Unusual, vip_id: u32, backend: u32, forward: u8) {
    let value = FragmentValue {
        // SAFETY: reading the monotonic clock has no preconditions.
        seen_ns: unsafe { bpf_ktime_get_ns() },
        backend,
        vip_id,
        src_port_be: found.pkt.flow.src_port_be,
        forward,
        _pad: [0; 5],
    };
    // A full map evicts its least recently used datagram: at worst a later fragment of
    // that one is dropped as an orphan.
    let _ = FRAGMENTS.insert(&found.fragment, &value, 0);
}

/// Where the first fragment of `key`'s datagram went, if it was seen within
/// `FRAGMENT_TIMEOUT_NS`.
#[inline(always)]
pub fn first_fragment(key: &FragmentKey) -> Option<FragmentValue> {
    // SAFETY: a plain lookup of a Copy value.
    let value = *unsafe { FRAGMENTS.get(key) }?;
    // SAFETY: reading the monotonic clock has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    (now.wrapping_sub(value.seen_ns) < FRAGMENT_TIMEOUT_NS).then_some(value)
}
