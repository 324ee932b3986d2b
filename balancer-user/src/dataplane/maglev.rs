//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, §3.4), weighted:
//! builds the lookup table the XDP program indexes with a flow hash. Pure: no I/O.
//!
//! Each backend walks its own permutation of the table (offset and skip from
//! two hashes of its identity) and claims the next free slot on its turn; a
//! backend of weight `w` takes `w` turns per round, so its share of slots is
//! proportional to its weight. The hashes use fixed keys: the same backends
//! give the same table in every process on every host, so several balancers
//! (and a restarted one) agree on where a flow goes.

use siphasher::sip::SipHasher13;
use std::hash::Hasher;

/// The default table size: prime, and large enough that 100+ backends each own hundreds of slots.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// Fixed SipHash keys for the two permutation hashes (any constants work; they must never change,
/// or every balancer would re-map every flow on upgrade).
const OFFSET_KEY: (u64, u64) = (0x6261_6c61_6e63_6572, 0x6d61_676c_6576_6f66);
const SKIP_KEY: (u64, u64) = (0x6261_6c61_6e63_6572, 0x6d61_676c_6576_736b);

/// A backend as Maglev sees it: a stable identity (e.g. its address as text) and a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevBackend<'a> {
    pub identity: &'a [u8],
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    #[error("Maglev table size {0} is not a prime number")]
    SizeNotPrime(u32),
    #[error(
        "Maglev table size {size} is too small for {backends} backends (needs more slots than backends)"
    )]
    SizeTooSmall { size: u32, backends: usize },
    #[error("no backend with a weight above 0")]
    NoBackends,
}

/// Builds the lookup table: entry `i` is the index (into `backends`) of the
/// backend that owns slot `i`. Backends of weight 0 own no slot.
pub fn build_table(backends: &[MaglevBackend<'_>], size: u32) -> Result<Vec<u32>, MaglevError> {
    if !is_prime(size) {
        return Err(MaglevError::SizeNotPrime(size));
    }
    if backends.len() >= size as usize {
        return Err(MaglevError::SizeTooSmall {
            size,
            backends: backends.len(),
        });
    }
    let size_u64 = u64::from(size);
    let mut walkers: Vec<Walker> = backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.weight > 0)
        .map(|(index, b)| Walker {
            index: index as u32,
            weight: b.weight,
            offset: hash(OFFSET_KEY, b.identity) % size_u64,
            skip: hash(SKIP_KEY, b.identity) % (size_u64 - 1) + 1,
            next: 0,
        })
        .collect();
    if walkers.is_empty() {
        return Err(MaglevError::NoBackends);
    }
    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; size as usize];
    let mut filled = 0usize;
    loop {
        for walker in &mut walkers {
            for _ in 0..walker.weight {
                // Every permutation visits every slot (skip < size, size prime), so this ends.
                let slot = loop {
                    let candidate = walker.slot(size_u64);
                    walker.next += 1;
                    if table[candidate] == EMPTY {
                        break candidate;
                    }
                };
                table[slot] = walker.index;
                filled += 1;
                if filled == table.len() {
                    return Ok(table);
                }
            }
        }
    }
}

struct Walker {
    index: u32,
    weight: u32,
    offset: u64,
    skip: u64,
    next: u64,
}

impl Walker {
    fn slot(&self, size: u64) -> usize {
        ((self.offset + (self.next % size) * self.skip) % size) as usize
    }
}

fn hash(key: (u64, u64), identity: &[u8]) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(key.0, key.1);
    hasher.write(identity);
    hasher.finish()
}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identities(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("198.18.{}.{}", 1 + i / 250, 2 + i % 250))
            .collect()
    }

    fn backends<'a>(ids: &'a [String], weights: &[u32]) -> Vec<MaglevBackend<'a>> {
        ids.iter()
            .zip(weights)
            .map(|(id, &weight)| MaglevBackend {
                identity: id.as_bytes(),
                weight,
            })
            .collect()
    }

    fn shares(table: &[u32], n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        table.iter().for_each(|&b| counts[b as usize] += 1);
        counts
    }

    /// Each backend's share of slots is within 1% of its weighted share.
    fn assert_weighted_shares(weights: &[u32]) {
        let ids = identities(weights.len());
        let table = build_table(&backends(&ids, weights), DEFAULT_TABLE_SIZE).unwrap();
        let total: u32 = weights.iter().sum();
        for (i, count) in shares(&table, weights.len()).into_iter().enumerate() {
            let expected = f64::from(DEFAULT_TABLE_SIZE) * f64::from(weights[i]) / f64::from(total);
            let error = (count as f64 - expected).abs() / expected;
            assert!(
                error <= 0.01,
                "weights {weights:?}: backend {i} owns {count} slots, expected {expected:.1} (±1%)"
            );
        }
    }

    #[test]
    fn equal_weights_share_within_one_percent() {
        for n in [2, 3, 10, 100] {
            assert_weighted_shares(&vec![1; n]);
        }
    }

    #[test]
    fn weighted_shares_within_one_percent() {
        for weights in [
            vec![1, 2],
            vec![1, 2, 3],
            vec![5, 1, 1, 1, 2, 10, 3, 1, 1, 7],
        ] {
            assert_weighted_shares(&weights);
        }
    }

    /// Plain Maglev moves ~1.0/N of the slots at N=10 and ~1.57/N at N=100 when one backend leaves.
    #[test]
    fn removing_one_backend_moves_at_most_1_6_over_n() {
        for n in [2, 3, 10, 100] {
            let ids = identities(n);
            let before = build_table(&backends(&ids, &vec![1; n]), DEFAULT_TABLE_SIZE).unwrap();
            let removed = n / 2;
            let remaining: Vec<String> = ids
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != removed)
                .map(|(_, s)| s.clone())
                .collect();
            let after =
                build_table(&backends(&remaining, &vec![1; n - 1]), DEFAULT_TABLE_SIZE).unwrap();
            let changed = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| ids[**b as usize] != remaining[**a as usize])
                .count();
            let fraction_times_n = changed as f64 / f64::from(DEFAULT_TABLE_SIZE) * n as f64;
            println!(
                "N={n}: removing one backend changed {changed} slots = {fraction_times_n:.3}/N"
            );
            assert!(
                fraction_times_n <= 1.6,
                "N={n}: {fraction_times_n:.3}/N of the slots changed (limit 1.6/N)"
            );
        }
    }

    const PINNED_FIRST_SLOTS: &[u32] = &[4, 0, 6, 6, 5, 2, 1, 4, 3, 7, 3, 8, 6, 1, 4, 9];

    #[test]
    fn same_inputs_same_table() {
        let ids = identities(10);
        let table = build_table(&backends(&ids, &[1; 10]), DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(
            table,
            build_table(&backends(&ids, &[1; 10]), DEFAULT_TABLE_SIZE).unwrap()
        );
        // Pinned values: a change here would re-map every flow of every deployed balancer.
        assert_eq!(&table[..16], PINNED_FIRST_SLOTS);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let ids = identities(3);
        assert_eq!(
            build_table(&backends(&ids, &[1, 1, 1]), 65_536),
            Err(MaglevError::SizeNotPrime(65_536))
        );
        assert_eq!(
            build_table(&backends(&ids, &[1, 1, 1]), 3),
            Err(MaglevError::SizeTooSmall {
                size: 3,
                backends: 3
            })
        );
        assert_eq!(
            build_table(&backends(&ids, &[0, 0, 0]), 7),
            Err(MaglevError::NoBackends)
        );
        assert_eq!(build_table(&[], 7), Err(MaglevError::NoBackends));
        let table = build_table(&backends(&ids, &[0, 1, 0]), 7).unwrap();
        assert!(
            table.iter().all(|&b| b == 1),
            "weight-0 backends own no slot"
        );
    }

    #[test]
    fn primality() {
        assert!(is_prime(65_537) && is_prime(2) && is_prime(13));
        assert!(!is_prime(0) && !is_prime(1) && !is_prime(65_536) && !is_prime(65_535));
    }
}
