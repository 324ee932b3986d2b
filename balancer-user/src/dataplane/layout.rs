//! Where each VIP and backend lives in the BPF arrays and what a VIP's next
//! Maglev table is (the state each backend shows the data plane is
//! `Operator::service`'s). Pure: no I/O.
//!
//! Slots must survive a restart: the connection table (pinned) stores backend
//! slot numbers, so a restarted balancer reuses the ids and slots it finds in
//! the pinned maps before handing out free ones.

use std::net::IpAddr;

use balancer_common::{BACKEND_UP, NO_BACKEND};

use super::maglev::{self, MaglevBackend, MaglevError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("more VIPs ({wanted}) than xdp.max_vips ({max}) allows")]
    TooManyVips { wanted: usize, max: u32 },
    #[error("more backends ({wanted}) than xdp.max_backends ({max}) allows")]
    TooManyBackends { wanted: usize, max: u32 },
    #[error(transparent)]
    Maglev(#[from] MaglevError),
}

/// Ids for `wanted` VIPs: one already present (`existing`, from a pinned map)
/// keeps its id; the others get the lowest ids nobody holds. Returns, per
/// wanted VIP, its id and whether it was present.
pub fn assign_ids<K: PartialEq>(
    wanted: &[K],
    existing: &[(K, u32)],
    capacity: u32,
) -> Result<Vec<(u32, bool)>, usize> {
    let mut taken = vec![false; capacity as usize];
    let mut result: Vec<Option<(u32, bool)>> = wanted
        .iter()
        .map(|key| {
            existing
                .iter()
                .find(|(k, id)| k == key && *id < capacity)
                .map(|(_, id)| {
                    taken[*id as usize] = true;
                    (*id, true)
                })
        })
        .collect();
    let mut free = (0..capacity).filter(|id| !taken[*id as usize]);
    for slot in result.iter_mut().filter(|slot| slot.is_none()) {
        *slot = Some((free.next().ok_or(wanted.len())?, false));
    }
    Ok(result
        .into_iter()
        .map(|slot| slot.expect("filled"))
        .collect())
}

/// A backend as the table builder sees it.
#[derive(Debug, Clone, Copy)]
pub struct TableMember {
    pub address: IpAddr,
    pub weight: u32,
    /// Its slot in `BACKENDS` (what the table stores).
    pub slot: u32,
    pub state: u8,
}

/// The VIP's Maglev table over its up backends: each entry a `BACKENDS` slot,
/// or `NO_BACKEND` everywhere when none is up.
pub fn build_vip_table(members: &[TableMember], size: u32) -> Result<Vec<u32>, LayoutError> {
    let mut up: Vec<&TableMember> = members
        .iter()
        .filter(|m| m.state == BACKEND_UP && m.weight > 0)
        .collect();
    // Maglev breaks ties by input order: sorting makes the table a function of
    // the backend set alone, whatever order the config lists them in.
    up.sort_by_key(|m| m.address);
    if up.is_empty() {
        return Ok(vec![NO_BACKEND; size as usize]);
    }
    // Identity is the address text: the same backends give the same table
    // whatever their order in the config or their slots.
    let identities: Vec<String> = up.iter().map(|m| m.address.to_string()).collect();
    let input: Vec<MaglevBackend<'_>> = up
        .iter()
        .zip(&identities)
        .map(|(m, id)| MaglevBackend {
            identity: id.as_bytes(),
            weight: m.weight,
        })
        .collect();
    let table = maglev::build_table(&input, size)?;
    Ok(table.into_iter().map(|i| up[i as usize].slot).collect())
}

/// The slots of `next` that differ from `current` (all of them when the
/// current content is unknown), as (index, value).
pub fn changed_slots<'a>(
    current: Option<&'a [u32]>,
    next: &'a [u32],
) -> impl Iterator<Item = (u32, u32)> + 'a {
    next.iter().enumerate().filter_map(move |(i, &value)| {
        let same = current.is_some_and(|current| current.get(i) == Some(&value));
        (!same).then_some((i as u32, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use balancer_common::{BACKEND_DOWN, BACKEND_DRAINING};

    #[test]
    fn existing_ids_are_kept_and_new_ones_fill_gaps() {
        let existing = [("b", 0), ("c", 2)];
        let ids = assign_ids(&["a", "b", "c", "d"], &existing, 8).unwrap();
        assert_eq!(ids, vec![(1, false), (0, true), (2, true), (3, false)]);
    }

    #[test]
    fn ids_run_out_at_capacity() {
        assert_eq!(assign_ids(&["a", "b", "c"], &[], 2), Err(3));
        // An existing id beyond a (smaller) capacity is not reused.
        let ids = assign_ids(&["a"], &[("a", 9)], 4).unwrap();
        assert_eq!(ids, vec![(0, false)]);
    }

    fn member(last: u8, slot: u32, state: u8) -> TableMember {
        TableMember {
            address: IpAddr::from([198, 18, 0, last]),
            weight: 1,
            slot,
            state,
        }
    }

    #[test]
    fn table_lists_only_up_backends_by_slot() {
        let members = [
            member(11, 40, BACKEND_UP),
            member(12, 41, BACKEND_DRAINING),
            member(13, 42, BACKEND_UP),
            member(14, 43, BACKEND_DOWN),
        ];
        let table = build_vip_table(&members, 251).unwrap();
        assert!(table.iter().all(|s| *s == 40 || *s == 42));
        let forty = table.iter().filter(|s| **s == 40).count();
        assert!((120..=131).contains(&forty), "{forty}");
    }

    #[test]
    fn table_does_not_depend_on_slots_or_order() {
        let a = build_vip_table(&[member(11, 0, BACKEND_UP), member(12, 1, BACKEND_UP)], 251);
        let b = build_vip_table(&[member(12, 7, BACKEND_UP), member(11, 3, BACKEND_UP)], 251);
        let a: Vec<u32> = a.unwrap();
        let b: Vec<u32> = b
            .unwrap()
            .into_iter()
            .map(|s| if s == 3 { 0 } else { 1 })
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn no_up_backend_gives_an_empty_table() {
        let table = build_vip_table(&[member(11, 0, BACKEND_DOWN)], 251).unwrap();
        assert!(table.iter().all(|s| *s == NO_BACKEND));
    }

    #[test]
    fn only_changed_slots_are_written() {
        let current = [1, 2, 3, 4];
        let next = [1, 9, 3, 8];
        let changed: Vec<_> = changed_slots(Some(&current), &next).collect();
        assert_eq!(changed, vec![(1, 9), (3, 8)]);
        assert_eq!(changed_slots(None, &next).count(), 4);
    }
}
