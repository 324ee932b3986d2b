//! Picking a server in a pool: one [`Selector`] per pool, built by [`selector`] from the pool's
//! `balance`. Pure: the caller passes the servers as they are at this instant ([`Candidate`]s,
//! in pool order) and gets an index back; the selectors keep only their own small state.
//!
//! - round-robin: nginx's smooth weighted round-robin (weights 5,1,1 → a a b a c a a).
//! - least-conn: fewest in-flight requests relative to weight; ties take turns by smooth
//!   weighted round-robin among the tied (so an idle pool still spreads, by weight).
//! - p2c: two distinct candidates drawn at random by weight; the less loaded (relative to
//!   weight) wins.
//! - hash: weighted rendezvous hashing (highest random weight) of the key and each server's
//!   stable id, with fixed SipHash keys: every process maps a key to the same server, and a key
//!   only moves when its server leaves (or a server with a higher score for it arrives). No key:
//!   round-robin.
//!
//! Candidates that are not eligible or have weight 0 are never chosen.

use std::{
    cmp::Ordering,
    hash::Hasher,
    net::IpAddr,
    sync::{Mutex, PoisonError},
};

use hyper::http::{HeaderMap, header::COOKIE};
use rand::Rng;
use siphasher::sip::SipHasher13;

use crate::{
    config::{Balance, HashOn, ServerUrl},
    sticky::cookie,
};

/// Fixed SipHash keys (any constants work; they must never change, or every key would move to
/// another server on upgrade, and balancers of different versions would disagree).
const KEY_HASH_KEY: (u64, u64) = (0x6261_6c61_6e63_6572, 0x6c37_6861_7368_6b79);
const SCORE_KEY: (u64, u64) = (0x6261_6c61_6e63_6572, 0x6c37_7363_6f72_6573);
const SERVER_ID_KEY: (u64, u64) = (0x6261_6c61_6e63_6572, 0x6c37_7365_7276_6964);

/// A server as the selector sees it at this instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Stable identity of the server, e.g. a hash of its URL ([`server_id`]): the same server
    /// has the same id in every process and after any change to the rest of the pool. Used by
    /// `hash` pools; ids should be unique within a pool.
    pub id: u64,
    pub weight: u32,
    /// Requests being forwarded to the server now.
    pub in_flight: u32,
    /// false: skip it (down, failed recently, draining...).
    pub eligible: bool,
}

impl Candidate {
    fn usable(&self) -> bool {
        self.eligible && self.weight > 0
    }
}

/// One selection policy per pool; implementations keep their own state (thread-safe).
pub trait Selector: Send + Sync {
    /// The index of the chosen candidate, or None when no candidate is eligible with weight > 0.
    /// `key` is the hash key for `hash` pools (None: no key in this request); other policies
    /// ignore it.
    fn select(&self, candidates: &[Candidate], key: Option<&[u8]>) -> Option<usize>;
}

/// The selector for a pool's `balance`.
pub fn selector(balance: &Balance) -> Box<dyn Selector> {
    match balance {
        Balance::RoundRobin => Box::new(RoundRobin::default()),
        Balance::LeastConn => Box::new(LeastConn::default()),
        Balance::P2c => Box::new(PowerOfTwoChoices),
        Balance::Hash(_) => Box::new(RendezvousHash::default()),
    }
}

/// A stable [`Candidate::id`] for a server: a fixed-key hash of its URL, the same in every
/// process.
pub fn server_id(url: &ServerUrl) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(SERVER_ID_KEY.0, SERVER_ID_KEY.1);
    hasher.write(url.to_string().as_bytes());
    hasher.finish()
}

/// The hash key a request offers for `hash_on`. `ClientAddress`: the address's bytes (4 for
/// IPv4, also when it arrives IPv4-mapped on an IPv6 socket; 16 for IPv6). `Header`: the values
/// of every field with that name (any case), joined with ", ". `Cookie`: the first cookie of that
/// name (case-sensitive) in any Cookie header, surrounding double quotes removed. None when
/// absent or empty.
pub fn hash_key(on: &HashOn, headers: &HeaderMap, client: IpAddr) -> Option<Vec<u8>> {
    match on {
        HashOn::ClientAddress => Some(match client.to_canonical() {
            IpAddr::V4(addr) => addr.octets().to_vec(),
            IpAddr::V6(addr) => addr.octets().to_vec(),
        }),
        HashOn::Header(name) => {
            let mut key = Vec::new();
            for (i, value) in headers.get_all(name.as_str()).iter().enumerate() {
                if i > 0 {
                    key.extend_from_slice(b", ");
                }
                key.extend_from_slice(value.as_bytes());
            }
            (!key.is_empty()).then_some(key)
        }
        HashOn::Cookie(name) => headers
            .get_all(COOKIE)
            .iter()
            .find_map(|value| {
                cookie::values(value.as_bytes(), name.as_bytes()).find(|value| !value.is_empty())
            })
            .map(<[u8]>::to_vec),
    }
}

/// Compares the loads `in_flight / weight` of two usable candidates (weight > 0), exactly.
fn load_cmp(a: &Candidate, b: &Candidate) -> Ordering {
    let a_load = u64::from(a.in_flight) * u64::from(b.weight);
    let b_load = u64::from(b.in_flight) * u64::from(a.weight);
    a_load.cmp(&b_load)
}

/// nginx's smooth weighted round-robin state: one current weight per candidate. Candidates left
/// out of a pick keep their current weight, so the others' sequence goes on undisturbed and a
/// returning candidate resumes where it was. A candidate list of another length (pool reload)
/// starts over.
#[derive(Debug, Default)]
struct Swrr {
    current: Mutex<Vec<i64>>,
}

impl Swrr {
    /// Picks among the usable candidates for which `take` holds.
    fn pick(
        &self,
        candidates: &[Candidate],
        mut take: impl FnMut(&Candidate) -> bool,
    ) -> Option<usize> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.len() != candidates.len() {
            current.clear();
            current.resize(candidates.len(), 0);
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, candidate) in candidates.iter().enumerate() {
            if !candidate.usable() || !take(candidate) {
                continue;
            }
            let weight = i64::from(candidate.weight);
            current[i] += weight;
            total += weight;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }
}

#[derive(Debug, Default)]
struct RoundRobin {
    rr: Swrr,
}

impl Selector for RoundRobin {
    fn select(&self, candidates: &[Candidate], _key: Option<&[u8]>) -> Option<usize> {
        self.rr.pick(candidates, |_| true)
    }
}

#[derive(Debug, Default)]
struct LeastConn {
    /// Takes turns among the least loaded.
    rr: Swrr,
}

impl Selector for LeastConn {
    fn select(&self, candidates: &[Candidate], _key: Option<&[u8]>) -> Option<usize> {
        let least = *candidates
            .iter()
            .filter(|c| c.usable())
            .min_by(|a, b| load_cmp(a, b))?;
        self.rr
            .pick(candidates, |c| load_cmp(c, &least) == Ordering::Equal)
    }
}

#[derive(Debug)]
struct PowerOfTwoChoices;

impl PowerOfTwoChoices {
    /// The usable candidate (other than `skip`) at `point` in the line of weights.
    fn at(candidates: &[Candidate], skip: Option<usize>, mut point: u64) -> Option<usize> {
        let mut last = None;
        for (i, candidate) in candidates.iter().enumerate() {
            if !candidate.usable() || Some(i) == skip {
                continue;
            }
            let weight = u64::from(candidate.weight);
            if point < weight {
                return Some(i);
            }
            point -= weight;
            last = Some(i);
        }
        last
    }
}

impl Selector for PowerOfTwoChoices {
    fn select(&self, candidates: &[Candidate], _key: Option<&[u8]>) -> Option<usize> {
        let total: u64 = candidates
            .iter()
            .filter(|c| c.usable())
            .map(|c| u64::from(c.weight))
            .sum();
        if total == 0 {
            return None;
        }
        let mut rng = rand::rng();
        let first = Self::at(candidates, None, rng.random_range(0..total))?;
        let rest = total - u64::from(candidates[first].weight);
        if rest == 0 {
            return Some(first);
        }
        let second = Self::at(candidates, Some(first), rng.random_range(0..rest))?;
        // Equal loads: the first draw, itself random.
        Some(
            if load_cmp(&candidates[second], &candidates[first]) == Ordering::Less {
                second
            } else {
                first
            },
        )
    }
}

#[derive(Debug, Default)]
struct RendezvousHash {
    /// For requests without a key.
    rr: Swrr,
}

impl RendezvousHash {
    /// The score of a server of `weight` and `id` for a key hashed to `key_hash`:
    /// `weight / -ln(u)` with `u` uniform in (0, 1) from the hash of both. The highest score
    /// wins; each server wins a share of keys proportional to its weight.
    fn score(key_hash: u64, id: u64, weight: u32) -> f64 {
        let mut hasher = SipHasher13::new_with_keys(SCORE_KEY.0, SCORE_KEY.1);
        hasher.write_u64(key_hash);
        hasher.write_u64(id);
        // 52 bits, so that u is at most 1 - 2^-53 (representable: ln(u) < 0).
        let bits = hasher.finish() >> 12;
        let u = (bits as f64 + 0.5) / (1u64 << 52) as f64;
        f64::from(weight) / -u.ln()
    }
}

impl Selector for RendezvousHash {
    fn select(&self, candidates: &[Candidate], key: Option<&[u8]>) -> Option<usize> {
        let Some(key) = key else {
            return self.rr.pick(candidates, |_| true);
        };
        let mut hasher = SipHasher13::new_with_keys(KEY_HASH_KEY.0, KEY_HASH_KEY.1);
        hasher.write(key);
        let key_hash = hasher.finish();
        let mut best: Option<(usize, f64)> = None;
        for (i, candidate) in candidates.iter().enumerate() {
            if !candidate.usable() {
                continue;
            }
            let score = Self::score(key_hash, candidate.id, candidate.weight);
            if best.is_none_or(|(_, best_score)| score > best_score) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::http::{HeaderName, HeaderValue};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn cand(weight: u32, in_flight: u32) -> Candidate {
        Candidate {
            id: 0,
            weight,
            in_flight,
            eligible: true,
        }
    }

    fn weighted(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Candidate {
                id: 1000 + i as u64,
                ..cand(w, 0)
            })
            .collect()
    }

    fn picks(s: &dyn Selector, candidates: &[Candidate], n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| s.select(candidates, None).unwrap())
            .collect()
    }

    fn counts(s: &dyn Selector, candidates: &[Candidate], n: usize) -> Vec<usize> {
        let mut counts = vec![0; candidates.len()];
        for _ in 0..n {
            counts[s.select(candidates, None).unwrap()] += 1;
        }
        counts
    }

    // ---- round-robin ----

    #[test]
    fn rr_smooth_sequence() {
        let s = selector(&Balance::RoundRobin);
        let c = weighted(&[5, 1, 1]);
        let cycle = [0, 0, 1, 0, 2, 0, 0];
        assert_eq!(picks(&*s, &c, 14), [cycle, cycle].concat());
        let s = selector(&Balance::RoundRobin);
        assert_eq!(picks(&*s, &weighted(&[1, 1, 1]), 6), [0, 1, 2, 0, 1, 2]);
        let s = selector(&Balance::RoundRobin);
        assert_eq!(picks(&*s, &weighted(&[2, 1]), 6), [0, 1, 0, 0, 1, 0]);
    }

    #[test]
    fn rr_long_run_shares_are_exact() {
        let s = selector(&Balance::RoundRobin);
        let c = weighted(&[3, 2, 1, 0, 4]);
        assert_eq!(counts(&*s, &c, 10_000), [3000, 2000, 1000, 0, 4000]);
    }

    #[test]
    fn rr_skips_ineligible_and_resumes() {
        let s = selector(&Balance::RoundRobin);
        let mut c = weighted(&[1, 1, 1]);
        assert_eq!(picks(&*s, &c, 3), [0, 1, 2]);
        c[1].eligible = false;
        // The other two keep alternating, undisturbed.
        assert_eq!(picks(&*s, &c, 6), [0, 2, 0, 2, 0, 2]);
        c[1].eligible = true;
        assert_eq!(picks(&*s, &c, 6), [0, 1, 2, 0, 1, 2]);
        // Weighted, with a server leaving mid-cycle: the rest keep their ratio, and after it
        // returns everyone gets their exact share again.
        let s = selector(&Balance::RoundRobin);
        let mut c = weighted(&[3, 2, 1]);
        picks(&*s, &c, 4);
        c[0].eligible = false;
        let shares = counts(&*s, &c, 300);
        assert_eq!(shares[0], 0);
        for (got, want) in shares.iter().zip([0, 200, 100]) {
            assert!(got.abs_diff(want) <= 2, "{shares:?}");
        }
        c[0].eligible = true;
        let shares = counts(&*s, &c, 600);
        for (got, want) in shares.iter().zip([300, 200, 100]) {
            assert!(got.abs_diff(want) <= 2, "{shares:?}");
        }
    }

    #[test]
    fn rr_none_without_usable_candidates() {
        let s = selector(&Balance::RoundRobin);
        assert_eq!(s.select(&[], None), None);
        let mut c = weighted(&[0, 1]);
        c[1].eligible = false;
        assert_eq!(s.select(&c, None), None);
        c[1].eligible = true;
        assert_eq!(s.select(&c, None), Some(1));
    }

    #[test]
    fn rr_resets_when_the_pool_changes_size() {
        let s = selector(&Balance::RoundRobin);
        picks(&*s, &weighted(&[5, 1, 1]), 3);
        assert_eq!(picks(&*s, &weighted(&[1, 3]), 4), [1, 0, 1, 1]);
        assert_eq!(picks(&*s, &weighted(&[5, 1, 1]), 7), [0, 0, 1, 0, 2, 0, 0]);
    }

    // ---- least-conn ----

    #[test]
    fn lc_picks_the_least_loaded() {
        let s = selector(&Balance::LeastConn);
        let c = [cand(1, 5), cand(1, 2), cand(1, 7)];
        assert!(picks(&*s, &c, 10).iter().all(|&i| i == 1));
        // The least loaded but ineligible, or weight 0, is skipped.
        let mut c = [cand(1, 5), cand(1, 0), cand(0, 0), cand(1, 3)];
        c[1].eligible = false;
        assert!(picks(&*s, &c, 10).iter().all(|&i| i == 3));
        assert_eq!(s.select(&[cand(0, 0)], None), None);
        assert_eq!(s.select(&[], None), None);
    }

    #[test]
    fn lc_respects_weights() {
        let s = selector(&Balance::LeastConn);
        // 3/4 < 1/1.
        assert_eq!(s.select(&[cand(4, 3), cand(1, 1)], None), Some(0));
        // 5/4 > 1/1.
        assert_eq!(s.select(&[cand(4, 5), cand(1, 1)], None), Some(1));
        // Large numbers: no overflow, no rounding (u32::MAX-1 / MAX < 1).
        let c = [cand(u32::MAX, u32::MAX - 1), cand(1, 1)];
        assert_eq!(s.select(&c, None), Some(0));
    }

    #[test]
    fn lc_ties_rotate_by_weight() {
        let s = selector(&Balance::LeastConn);
        assert_eq!(picks(&*s, &weighted(&[1, 1, 1]), 6), [0, 1, 2, 0, 1, 2]);
        let s = selector(&Balance::LeastConn);
        assert_eq!(counts(&*s, &weighted(&[3, 1]), 400), [300, 100]);
        // Ties among the least loaded only: 4/4 == 1/1 < 3/1.
        let s = selector(&Balance::LeastConn);
        let c = [cand(4, 4), cand(1, 1), cand(1, 3)];
        assert_eq!(counts(&*s, &c, 500), [400, 100, 0]);
    }

    // ---- p2c ----

    #[test]
    fn p2c_of_two_always_the_less_loaded() {
        let s = selector(&Balance::P2c);
        let c = [cand(1, 3), cand(1, 1)];
        assert!(picks(&*s, &c, 1000).iter().all(|&i| i == 1));
        // Weighted: 3/2 < 2/1.
        let c = [cand(2, 3), cand(1, 2)];
        assert!(picks(&*s, &c, 1000).iter().all(|&i| i == 0));
    }

    #[test]
    fn p2c_never_the_most_loaded_and_favours_low_load() {
        let s = selector(&Balance::P2c);
        let c = [cand(1, 1), cand(1, 5), cand(1, 9), cand(1, 3)];
        let n = 12_000;
        let got = counts(&*s, &c, n);
        assert_eq!(got[2], 0, "{got:?}");
        // Every pair is drawn with probability 1/6; a candidate wins against the more loaded:
        // expected 3/6, 1/6, 0, 2/6 of the picks.
        for (got, want) in got.iter().zip([6000, 2000, 0, 4000]) {
            assert!(got.abs_diff(want) < 400, "{got} vs {want}");
        }
    }

    #[test]
    fn p2c_skips_unusable_and_draws_by_weight() {
        let s = selector(&Balance::P2c);
        let mut c = [cand(0, 0), cand(1, 9), cand(1, 0), cand(2, 8)];
        c[2].eligible = false;
        let got = counts(&*s, &c, 2000);
        assert_eq!((got[0], got[2]), (0, 0));
        // Candidate 1 only wins when drawn... never: 9/1 > 8/2 — both always drawn, 3 wins.
        assert_eq!(got[3], 2000);
        // One usable: it.
        assert_eq!(s.select(&[cand(0, 0), cand(3, 100)], None), Some(1));
        assert_eq!(s.select(&[cand(0, 0)], None), None);
        assert_eq!(s.select(&[], None), None);
        // Idle, weights 3:1: equal loads keep the first draw, which is weighted.
        let got = counts(&*s, &[cand(3, 0), cand(1, 0)], 20_000);
        assert!(got[0].abs_diff(15_000) < 600, "{got:?}");
    }

    // ---- hash ----

    fn hash_pool(n: u64) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                id: 0xabc0 + i,
                ..cand(1, 0)
            })
            .collect()
    }

    fn key(i: u32) -> Vec<u8> {
        format!("client-{i}").into_bytes()
    }

    #[test]
    fn hash_is_stable_across_instances_and_processes() {
        let pool = hash_pool(7);
        let a = selector(&Balance::Hash(HashOn::ClientAddress));
        let b = selector(&Balance::Hash(HashOn::Cookie("sid".to_string())));
        for i in 0..2000 {
            let k = key(i);
            let first = a.select(&pool, Some(&k));
            assert!(first.is_some());
            assert_eq!(first, a.select(&pool, Some(&k)));
            assert_eq!(first, b.select(&pool, Some(&k)));
        }
        // Pinned: fixed SipHash keys, no per-process seed. Changing these moves every key.
        let got: Vec<usize> = (0..12)
            .map(|i| a.select(&pool, Some(&key(i))).unwrap())
            .collect();
        assert_eq!(got, PINNED);
    }

    const PINNED: [usize; 12] = [0, 5, 2, 0, 1, 3, 4, 1, 4, 6, 3, 3];

    #[test]
    fn hash_moves_only_the_keys_of_a_leaving_server() {
        let s = selector(&Balance::Hash(HashOn::ClientAddress));
        let pool = hash_pool(5);
        let before: Vec<u64> = (0..10_000)
            .map(|i| pool[s.select(&pool, Some(&key(i))).unwrap()].id)
            .collect();
        let gone = pool[2].id;
        // Leaving by becoming ineligible, or by removal (the indexes shift).
        let mut ineligible = pool.clone();
        ineligible[2].eligible = false;
        let mut removed = pool.clone();
        removed.remove(2);
        for after_pool in [&ineligible, &removed] {
            let mut moved = 0;
            for (i, &was) in before.iter().enumerate() {
                let now = after_pool[s.select(after_pool, Some(&key(i as u32))).unwrap()].id;
                assert_ne!(now, gone);
                if was != gone {
                    assert_eq!(now, was, "key {i} moved off a server that stayed");
                } else {
                    moved += 1;
                }
            }
            // About a fifth were on it.
            assert!((1500..2500).contains(&moved), "{moved}");
        }
        // Coming back brings exactly its keys back.
        for (i, &was) in before.iter().enumerate() {
            assert_eq!(pool[s.select(&pool, Some(&key(i as u32))).unwrap()].id, was);
        }
    }

    #[test]
    fn hash_shares_follow_weights() {
        let s = selector(&Balance::Hash(HashOn::ClientAddress));
        let mut pool = hash_pool(5);
        for (c, w) in pool.iter_mut().zip([1, 2, 3, 4, 0]) {
            c.weight = w;
        }
        let n = 100_000;
        let mut got = [0usize; 5];
        for i in 0..n {
            got[s.select(&pool, Some(&key(i))).unwrap()] += 1;
        }
        assert_eq!(got[4], 0);
        for (i, w) in [1, 2, 3, 4].into_iter().enumerate() {
            let want = n as usize * w / 10;
            // Within 3% of the expected count (the standard deviation is below 0.5%).
            assert!(got[i].abs_diff(want) * 100 < want * 3, "{got:?}");
        }
    }

    #[test]
    fn hash_without_key_is_round_robin() {
        let s = selector(&Balance::Hash(HashOn::Header("x-user".to_string())));
        let c = weighted(&[5, 1, 1]);
        assert_eq!(picks(&*s, &c, 7), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(s.select(&[], None), None);
        assert_eq!(s.select(&[], Some(b"k")), None);
        let mut c = hash_pool(2);
        c[0].eligible = false;
        c[1].weight = 0;
        assert_eq!(s.select(&c, Some(b"k")), None);
    }

    #[test]
    fn server_ids_are_stable_and_distinct() {
        let a = ServerUrl::Http {
            host: "10.0.0.1".to_string(),
            port: 8080,
        };
        let b = ServerUrl::Http {
            host: "10.0.0.1".to_string(),
            port: 8081,
        };
        let u = ServerUrl::Unix("/run/app.sock".into());
        assert_eq!(server_id(&a), server_id(&a.clone()));
        assert_ne!(server_id(&a), server_id(&b));
        assert_ne!(server_id(&a), server_id(&u));
    }

    // ---- hash_key ----

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn hash_key_client_address() {
        let none = HeaderMap::new();
        let on = HashOn::ClientAddress;
        assert_eq!(hash_key(&on, &none, V4), Some(vec![192, 0, 2, 7]));
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            hash_key(&on, &none, IpAddr::V6(v6)),
            Some(v6.octets().to_vec())
        );
        // IPv4-mapped (a dual-stack socket) hashes like IPv4.
        let mapped: Ipv6Addr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            hash_key(&on, &none, IpAddr::V6(mapped)),
            Some(vec![192, 0, 2, 7])
        );
    }

    #[test]
    fn hash_key_header() {
        let map = headers(&[("X-User", "alice"), ("other", "x")]);
        let want = Some(b"alice".to_vec());
        assert_eq!(hash_key(&HashOn::Header("x-user".into()), &map, V4), want);
        assert_eq!(hash_key(&HashOn::Header("X-USER".into()), &map, V4), want);
        let map = headers(&[("x-user", "a"), ("x-other", "b"), ("X-User", "c")]);
        assert_eq!(
            hash_key(&HashOn::Header("x-user".into()), &map, V4),
            Some(b"a, c".to_vec())
        );
        assert_eq!(hash_key(&HashOn::Header("x-none".into()), &map, V4), None);
        let map = headers(&[("x-user", "")]);
        assert_eq!(hash_key(&HashOn::Header("x-user".into()), &map, V4), None);
    }

    #[test]
    fn hash_key_cookie() {
        let on = HashOn::Cookie("sid".into());
        let map = headers(&[("cookie", "a=1; sid=abc; b=2")]);
        assert_eq!(hash_key(&on, &map, V4), Some(b"abc".to_vec()));
        // Several Cookie headers; names that merely contain "sid" do not count.
        let map = headers(&[
            ("cookie", "xsid=no; sidx=no"),
            ("Cookie", "theme=dark;sid=\"q1\" ; z=1"),
            ("cookie", "sid=second"),
        ]);
        assert_eq!(hash_key(&on, &map, V4), Some(b"q1".to_vec()));
        // Empty values are skipped; names are case-sensitive.
        let map = headers(&[("cookie", "sid=; SID=upper"), ("cookie", "sid=later")]);
        assert_eq!(hash_key(&on, &map, V4), Some(b"later".to_vec()));
        // Missing.
        let map = headers(&[("cookie", "a=1; SID=2; flag"), ("x-sid", "3")]);
        assert_eq!(hash_key(&on, &map, V4), None);
        assert_eq!(hash_key(&on, &HeaderMap::new(), V4), None);
        // A value may hold '='.
        let map = headers(&[("cookie", "sid=a=b")]);
        assert_eq!(hash_key(&on, &map, V4), Some(b"a=b".to_vec()));
    }
}
