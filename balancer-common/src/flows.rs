//! The connection table: a set-associative array of flows, LRU within each set.
//!
//! Why not the kernel's LRU hash map: its insert alone costs about two
//! `BPF_PROG_TEST_RUN` floors (list pops, a bucket lock, a second hash), which
//! puts every new flow far above the per-packet budget. Here a flow's hash
//! picks one set of `FLOW_WAYS` entries in a plain array map: a lookup reads
//! one cache line of heads, an insert overwrites the set's least recently seen
//! entry, and neither takes a lock.
//!
//! Concurrent writers (two CPUs inserting into one set) can interleave their
//! key bytes. A reader still never pairs a flow with another flow's backend:
//! each head packs the key's tag, the backend and the last-seen tick into one
//! 8-byte word, written and read whole, and an entry counts only when both
//! that tag and the full key match. A torn entry is a miss, and a miss picks
//! from the VIP's Maglev table, which gives the same backend while the backend
//! set is unchanged.
//!
//! The set index and tag come from a hash keyed with a random secret
//! (`FlowHashKey`, made when the table is), so nobody outside can compute which
//! tuples share a set and aim flows at one to evict the flows in it: NH, the
//! inner hash of UMAC (2^-32-almost-universal for keys of one length), then
//! MurmurHash3's finalizer. The Maglev hash stays unkeyed: every balancer in
//! front of the same backends must pick the same one for a flow.
//!
//! A set is exactly six cache lines and the array is page-aligned
//! (`BPF_F_MMAPABLE`), so the heads are one line: a hit reads that line and
//! one or two lines of its key; an insert picks its victim from the heads
//! alone and writes one or two key lines.
//!
//! Both the XDP program and userspace (tests, the benchmark) use this code, so
//! the layout and hashing cannot drift.

use crate::FlowKey;

/// Entries per set. Eight heads fill one 64-byte cache line.
pub const FLOW_WAYS: usize = 8;

/// Entries the table holds per configured connection (`xdp.max_connections`):
/// at half load, flows hashed into one set rarely outnumber its ways (a
/// Poisson(4) set exceeds 8 about 2 % of the time, and then evicts its least
/// recently seen flow, as a full LRU table would).
pub const FLOW_ENTRIES_PER_CONNECTION: u32 = 2;

/// Last-seen times are kept in ticks of 2^8 jiffies (0.25 to 2.5 s depending on
/// the kernel's HZ): a head is rewritten at most once per tick, since a write
/// per packet would bounce the set's cache line between CPUs. Sixteen bits of
/// ticks order flows idle for up to 2^15 ticks (2.3 h at HZ=1000); an older
/// flow may count as recent when its set has to evict.
pub const FLOW_TICK_SHIFT: u32 = 8;

/// Bits of a head given to the backend index: `BACKENDS` may have at most
/// `1 << FLOW_BACKEND_BITS` slots (the config enforces it).
pub const FLOW_BACKEND_BITS: u32 = 23;
const BACKEND_MASK: u64 = (1 << FLOW_BACKEND_BITS) - 1;
/// Bits of a head given to the tag: the rest after the backend and the tick.
const TAG_SHIFT: u32 = 16 + FLOW_BACKEND_BITS;

/// One set of the connection table (one `FLOWS` array element).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSet {
    /// Per way: tag (25 bits) | backend index into `BACKENDS` (23) | last-seen
    /// tick (16); 0 for an empty way (tags are never 0).
    pub heads: [u64; FLOW_WAYS],
    pub keys: [FlowKey; FLOW_WAYS],
}

const _: () = assert!(core::mem::size_of::<FlowSet>() == 6 * 64);

/// What an entry says about its flow (userspace's view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    pub backend: u32,
    /// The tick (`flow_tick`) the flow was last seen in.
    pub last_seen: u16,
}

/// Sets of a table sized for `max_connections` flows.
pub const fn flow_sets(max_connections: u32) -> u32 {
    let entries = max_connections as u64 * FLOW_ENTRIES_PER_CONNECTION as u64;
    entries.div_ceil(FLOW_WAYS as u64) as u32
}

/// The table's clock: `bpf_jiffies64()` in ticks, wrapping at 16 bits.
#[inline(always)]
pub const fn flow_tick(jiffies: u64) -> u16 {
    (jiffies >> FLOW_TICK_SHIFT) as u16
}

/// The secret that keys the table's hash: one word per 32 bits of a `FlowKey`.
/// Random per table (the `FLOW_HASH_KEY` map, pinned beside `FLOWS` so that a
/// restarted balancer finds its flows where it left them).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowHashKey {
    pub words: [u32; KEY_WORDS * 2],
}

const _: () = assert!(core::mem::size_of::<FlowHashKey>() == core::mem::size_of::<FlowKey>());

impl FlowHashKey {
    /// The map's zero fill: no key made yet.
    pub fn is_unset(&self) -> bool {
        self.words == [0; KEY_WORDS * 2]
    }

    /// A key from `rand`'s OS-seeded generator, never the "unset" zero key.
    #[cfg(feature = "user")]
    pub fn random() -> FlowHashKey {
        loop {
            let secret = FlowHashKey {
                words: rand::random(),
            };
            if !secret.is_unset() {
                return secret;
            }
        }
    }
}

/// The table's 64-bit hash of a flow (set index and tag), keyed with `secret`.
#[inline(always)]
pub fn flow_table_hash(key: &FlowKey, secret: &FlowHashKey) -> u64 {
    nh_hash(key_words(key), secret)
}

/// The Maglev hash's fixed key (the fractional digits of pi): public, the same
/// in every balancer.
const MAGLEV_KEY: FlowHashKey = FlowHashKey {
    words: [
        0x243f_6a88,
        0x85a3_08d3,
        0x1319_8a2e,
        0x0370_7344,
        0xa409_3822,
        0x299f_31d0,
        0x082e_fa98,
        0xec4e_6c89,
        0x4528_21e6,
        0x38d0_1377,
    ],
};

/// 64-bit hash of the whole key, the same in every balancer: the Maglev hash
/// of a flow. Anyone can compute it, which only lets them pick a backend for
/// their own flows, as trying ports would.
#[inline(always)]
pub fn flow_maglev_hash(key: &FlowKey) -> u64 {
    nh_hash(key_words(key), &MAGLEV_KEY)
}

/// 64-bit hash of the key's source address alone: the Maglev hash of UDP VIPs
/// that keep each client on one backend whatever its source port.
#[inline(always)]
pub fn flow_source_hash(key: &FlowKey) -> u64 {
    let words = key_words(key);
    nh_hash(&[words[0], words[1]], &MAGLEV_KEY)
}

/// NH over `words` (the sum of (m[2i] + k[2i] mod 2^32) * (m[2i+1] + k[2i+1]
/// mod 2^32), mod 2^64), then finalized. The products are independent of each
/// other, so they run side by side rather than as one chain of multiplies.
#[inline(always)]
fn nh_hash<const N: usize>(words: &[u64; N], secret: &FlowHashKey) -> u64 {
    let secret = &secret.words;
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < N {
        let low = (words[i] as u32).wrapping_add(secret[2 * i]) as u64;
        let high = ((words[i] >> 32) as u32).wrapping_add(secret[2 * i + 1]) as u64;
        sum = sum.wrapping_add(low * high);
        i += 1;
    }
    finalize(sum)
}

/// MurmurHash3's 64-bit finalizer: every input bit reaches every output bit.
#[inline(always)]
const fn finalize(mut hash: u64) -> u64 {
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The set a hash selects among `sets` (multiply-shift on the high half: no
/// division, and any set count works).
#[inline(always)]
pub const fn flow_set_index(hash: u64, sets: u32) -> u32 {
    (((hash >> 32) * sets as u64) >> 32) as u32
}

/// The tag stored with an entry: 25 bits of the hash's low half, never 0.
#[inline(always)]
pub const fn flow_tag(hash: u64) -> u32 {
    (hash as u32 >> 7) | 1
}

#[inline(always)]
const fn head(tag: u32, backend: u32, tick: u16) -> u64 {
    (tag as u64) << TAG_SHIFT | (backend as u64 & BACKEND_MASK) << 16 | tick as u64
}

#[inline(always)]
const fn head_tag(head: u64) -> u32 {
    (head >> TAG_SHIFT) as u32
}

#[inline(always)]
const fn head_backend(head: u64) -> u32 {
    ((head >> 16) & BACKEND_MASK) as u32
}

#[inline(always)]
const fn head_tick(head: u64) -> u16 {
    head as u16
}

const KEY_WORDS: usize = core::mem::size_of::<FlowKey>() / 8;
const _: () = assert!(core::mem::size_of::<FlowKey>() == KEY_WORDS * 8);
const _: () = assert!(core::mem::align_of::<FlowKey>() == 8);

#[inline(always)]
fn key_words(key: &FlowKey) -> &[u64; KEY_WORDS] {
    // SAFETY: FlowKey is 8-aligned, 40 bytes, padding-free (asserted above and
    // in maps.rs), so it reads as five words.
    unsafe { &*(key as *const FlowKey as *const [u64; KEY_WORDS]) }
}

#[inline(always)]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    let (a, b) = (key_words(a), key_words(b));
    // Branch-free, and no memcmp call (which BPF has not).
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) == 0
}

impl FlowSet {
    pub const EMPTY: FlowSet = FlowSet {
        heads: [0; FLOW_WAYS],
        keys: [FlowKey {
            src: [0; 16],
            dst: [0; 16],
            src_port_be: 0,
            dst_port_be: 0,
            protocol: 0,
            family: 0,
            _pad: [0; 2],
        }; FLOW_WAYS],
    };

    #[inline(always)]
    fn head(&self, way: usize) -> u64 {
        // SAFETY: an in-bounds, aligned read of a plain word, in one load: what
        // is checked and used comes from one write.
        unsafe { core::ptr::read_volatile(&self.heads[way]) }
    }

    #[inline(always)]
    fn set_head(&mut self, way: usize, head: u64) {
        // SAFETY: an in-bounds, aligned write of a plain word, in one store.
        unsafe { core::ptr::write_volatile(&mut self.heads[way], head) }
    }

    /// The way holding `key` (whose hash gave `tag`), and its backend.
    #[inline(always)]
    pub fn find(&self, key: &FlowKey, tag: u32) -> Option<(usize, u32)> {
        let mut way = 0;
        while way < FLOW_WAYS {
            let head = self.head(way);
            if head_tag(head) == tag && same_key(&self.keys[way], key) {
                return Some((way, head_backend(head)));
            }
            way += 1;
        }
        None
    }

    /// The way a new flow takes: an empty one, else the least recently seen.
    #[inline(always)]
    pub fn victim(&self, now: u16) -> usize {
        let mut victim = 0;
        let mut oldest = 0u16;
        let mut way = 0;
        while way < FLOW_WAYS {
            let head = self.heads[way];
            if head == 0 {
                return way;
            }
            // Another CPU may have stamped an entry after `now` was read: that
            // entry is the newest, not (wrapped) the oldest.
            let age = now.wrapping_sub(head_tick(head));
            let age = if age > u16::MAX / 2 { 0 } else { age };
            if age >= oldest {
                oldest = age;
                victim = way;
            }
            way += 1;
        }
        victim
    }

    /// Writes `key` → `backend` into `way`. The head goes last, in one store.
    #[inline(always)]
    pub fn store(&mut self, way: usize, key: &FlowKey, tag: u32, backend: u32, now: u16) {
        if way >= FLOW_WAYS {
            return;
        }
        self.keys[way] = *key;
        self.set_head(way, head(tag, backend, now));
    }

    /// Points an existing entry at another backend (a re-pick).
    #[inline(always)]
    pub fn repoint(&mut self, way: usize, tag: u32, backend: u32, now: u16) {
        if way < FLOW_WAYS {
            self.set_head(way, head(tag, backend, now));
        }
    }

    /// Marks the flow in `way` as seen in tick `now`: one store per tick at most.
    #[inline(always)]
    pub fn touch(&mut self, way: usize, now: u16) {
        if way >= FLOW_WAYS {
            return;
        }
        let head = self.head(way);
        if head_tick(head) != now {
            self.set_head(way, head & !0xffff | now as u64);
        }
    }

    /// Empties `way`.
    pub fn clear(&mut self, way: usize) {
        if way < FLOW_WAYS {
            self.heads[way] = 0;
        }
    }

    /// The entry for `key` (whose hash gave `tag`), if the set holds one.
    pub fn entry(&self, key: &FlowKey, tag: u32) -> Option<FlowEntry> {
        let (way, backend) = self.find(key, tag)?;
        Some(FlowEntry {
            backend,
            last_seen: head_tick(self.heads[way]),
        })
    }
}

/// The program's connection table seen from userspace (tests, the benchmark).
#[cfg(feature = "user")]
pub struct FlowTable<T> {
    sets: aya::maps::Array<T, FlowSet>,
    secret: FlowHashKey,
}

#[cfg(feature = "user")]
impl<T: core::borrow::Borrow<aya::maps::MapData>> FlowTable<T> {
    /// `secret`: the table's hash key, as the program reads it from `FLOW_HASH_KEY`.
    pub fn new(sets: aya::maps::Array<T, FlowSet>, secret: FlowHashKey) -> Self {
        Self { sets, secret }
    }

    /// The set `key` hashes to, and its tag there.
    pub fn place(&self, key: &FlowKey) -> (u32, u32) {
        let hash = flow_table_hash(key, &self.secret);
        (flow_set_index(hash, self.sets.len()), flow_tag(hash))
    }

    fn set_of(&self, key: &FlowKey) -> Result<(u32, u32, FlowSet), aya::maps::MapError> {
        let (index, tag) = self.place(key);
        Ok((index, tag, self.sets.get(&index, 0)?))
    }

    /// The entry for `key`, if the table holds one.
    pub fn get(&self, key: &FlowKey) -> Result<Option<FlowEntry>, aya::maps::MapError> {
        let (_, tag, set) = self.set_of(key)?;
        Ok(set.entry(key, tag))
    }
}

#[cfg(feature = "user")]
impl<T: core::borrow::BorrowMut<aya::maps::MapData>> FlowTable<T> {
    /// Puts `key` → `backend`, last seen at `seen`, where the program would.
    pub fn insert(
        &mut self,
        key: &FlowKey,
        backend: u32,
        seen: u16,
    ) -> Result<(), aya::maps::MapError> {
        let (index, tag, mut set) = self.set_of(key)?;
        let way = match set.find(key, tag) {
            Some((way, _)) => way,
            None => set.victim(seen),
        };
        set.store(way, key, tag, backend, seen);
        self.sets.set(index, set, 0)
    }

    /// Removes `key`'s entry; whether there was one.
    pub fn remove(&mut self, key: &FlowKey) -> Result<bool, aya::maps::MapError> {
        let (index, tag, mut set) = self.set_of(key)?;
        let Some((way, _)) = set.find(key, tag) else {
            return Ok(false);
        };
        set.clear(way);
        self.sets.set(index, set, 0)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FAMILY_IPV4, IPPROTO_TCP, ipv4_in_16};

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src: ipv4_in_16([198, 18, 0, 1]),
            dst: ipv4_in_16([198, 18, 1, 1]),
            src_port_be: port.to_be(),
            dst_port_be: 80u16.to_be(),
            protocol: IPPROTO_TCP,
            family: FAMILY_IPV4,
            _pad: [0; 2],
        }
    }

    /// A fixed table secret (any does; a fixed one keeps the tests repeatable).
    const SECRET: FlowHashKey = FlowHashKey {
        words: [
            0x9e37_79b9,
            0x7f4a_7c15,
            0xf39c_c060,
            0x5ced_c834,
            0x1082_276b,
            0xf3a2_7251,
            0xf86c_6a11,
            0xd0c1_8e95,
            0x2767_f0b1,
            0x53d2_3fe5,
        ],
    };

    fn hash(key: &FlowKey) -> u64 {
        flow_table_hash(key, &SECRET)
    }

    fn tag(key: &FlowKey) -> u32 {
        flow_tag(hash(key))
    }

    fn put(set: &mut FlowSet, key: &FlowKey, backend: u32, now: u16) -> usize {
        let tag = tag(key);
        let way = match set.find(key, tag) {
            Some((way, _)) => way,
            None => set.victim(now),
        };
        set.store(way, key, tag, backend, now);
        way
    }

    #[test]
    fn sized_for_twice_the_connections() {
        assert_eq!(flow_sets(1_024), 256);
        assert_eq!(flow_sets(1_025), 257);
        assert_eq!(flow_sets(16_777_216), 4_194_304);
    }

    /// Keys from a fixed-seed xorshift generator: varied, and the same on every run.
    fn secrets() -> impl Iterator<Item = FlowHashKey> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        core::iter::repeat_with(move || {
            let mut words = [0u32; KEY_WORDS * 2];
            for word in &mut words {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *word = state as u32;
            }
            FlowHashKey { words }
        })
    }

    fn ipv6_key(src: [u64; 2]) -> FlowKey {
        let mut key = key(40_000);
        key.family = crate::FAMILY_IPV6;
        key.src[..8].copy_from_slice(&src[0].to_ne_bytes());
        key.src[8..].copy_from_slice(&src[1].to_ne_bytes());
        key
    }

    #[test]
    fn the_secret_decides_the_set() {
        let sets = 16_384;
        let (a, b) = (key(1_000), key(1_001));
        let mut same_set = 0;
        let mut moved = 0;
        let first = flow_set_index(flow_table_hash(&a, &SECRET), sets);
        for secret in secrets().take(256) {
            let (set_a, set_b) = (
                flow_set_index(flow_table_hash(&a, &secret), sets),
                flow_set_index(flow_table_hash(&b, &secret), sets),
            );
            same_set += u32::from(set_a == set_b);
            moved += u32::from(set_a != first);
        }
        // Two neighbouring ports share a set about once in 16 384 keys.
        assert!(same_set <= 1, "{same_set} of 256 keys put both in one set");
        assert!(
            moved >= 250,
            "the set moved with the key {moved} times of 256"
        );
    }

    #[test]
    fn tuples_colliding_in_the_maglev_hash_do_not_collide_in_the_table() {
        // With the Maglev hash's public key anyone can make IPv6 sources that share every
        // Maglev slot: swap the two factors of the first NH product. Harmless for Maglev (the
        // same backend), but with an unkeyed table they would fill one set.
        let sets = 16_384;
        let k = MAGLEV_KEY.words;
        let mut collisions = 0;
        for (n, secret) in secrets().take(256).enumerate() {
            let (low, high) = (0x2001_0002_u32.wrapping_add(n as u32), 0x0000_0abc_u32);
            let twin_low = high.wrapping_add(k[1]).wrapping_sub(k[0]);
            let twin_high = low.wrapping_add(k[0]).wrapping_sub(k[1]);
            let word = |low: u32, high: u32| u64::from(high) << 32 | u64::from(low);
            let (a, b) = (
                ipv6_key([word(low, high), 0x1234_5678]),
                ipv6_key([word(twin_low, twin_high), 0x1234_5678]),
            );
            assert_ne!(a, b);
            assert_eq!(flow_maglev_hash(&a), flow_maglev_hash(&b));
            let table = |key: &FlowKey| flow_set_index(flow_table_hash(key, &secret), sets);
            collisions += u32::from(table(&a) == table(&b));
        }
        assert!(collisions <= 1, "{collisions} of 256 pairs shared a set");
    }

    #[test]
    fn a_zero_key_is_unset() {
        assert!(FlowHashKey::default().is_unset());
        assert!(!SECRET.is_unset());
    }

    #[test]
    fn set_index_stays_in_range_and_spreads() {
        let sets = 1_000;
        let mut counts = [0u32; 1_000];
        for port in 0..=u16::MAX {
            let set = flow_set_index(hash(&key(port)), sets);
            counts[set as usize] += 1;
        }
        // 65 536 keys over 1 000 sets: about 65.5 each.
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 30 && *max < 110, "min {min}, max {max}");
        assert_eq!(flow_set_index(u64::MAX, sets), sets - 1);
    }

    #[test]
    fn finds_what_it_stored_and_nothing_else() {
        let mut set = FlowSet::EMPTY;
        assert_eq!(set.entry(&key(1), tag(&key(1))), None);
        put(&mut set, &key(1), 7, 100);
        put(&mut set, &key(2), 9, 101);
        assert_eq!(
            set.entry(&key(1), tag(&key(1))),
            Some(FlowEntry {
                backend: 7,
                last_seen: 100
            })
        );
        assert_eq!(set.entry(&key(2), tag(&key(2))).map(|e| e.backend), Some(9));
        assert_eq!(set.entry(&key(3), tag(&key(3))), None);
    }

    #[test]
    fn a_head_with_the_wrong_tag_is_a_miss() {
        // A torn write: one flow's key beside another flow's head.
        let mut set = FlowSet::EMPTY;
        let way = put(&mut set, &key(1), 7, 100);
        let other_tag = tag(&key(2));
        set.repoint(way, other_tag, 9, 100);
        assert_eq!(set.entry(&key(1), tag(&key(1))), None);
        assert_eq!(set.entry(&key(2), tag(&key(2))), None);
    }

    #[test]
    fn a_full_set_evicts_its_least_recently_seen() {
        let mut set = FlowSet::EMPTY;
        for port in 0..FLOW_WAYS as u16 {
            put(&mut set, &key(port), u32::from(port), 1_000 + port);
        }
        // Port 0 was seen first, but is seen again.
        let (way, _) = set.find(&key(0), tag(&key(0))).unwrap();
        set.touch(way, 2_000);
        put(&mut set, &key(100), 100, 2_001);
        assert!(set.entry(&key(0), tag(&key(0))).is_some());
        assert_eq!(set.entry(&key(1), tag(&key(1))), None, "the oldest goes");
        for port in 2..FLOW_WAYS as u16 {
            assert!(
                set.entry(&key(port), tag(&key(port))).is_some(),
                "port {port} kept"
            );
        }
        assert_eq!(
            set.entry(&key(100), tag(&key(100))).map(|e| e.backend),
            Some(100)
        );
    }

    #[test]
    fn an_entry_stamped_after_now_is_not_the_oldest() {
        let mut set = FlowSet::EMPTY;
        for port in 0..FLOW_WAYS as u16 {
            put(&mut set, &key(port), 0, 500);
        }
        let (way, _) = set.find(&key(3), tag(&key(3))).unwrap();
        set.touch(way, 900); // another CPU, after this one read the clock
        assert_ne!(set.victim(600), way);
    }

    #[test]
    fn touch_keeps_the_tag_and_backend() {
        let mut set = FlowSet::EMPTY;
        let way = put(&mut set, &key(1), 0x7f_ffff, 1_000);
        let before = set.heads[way];
        set.touch(way, 1_000);
        assert_eq!(set.heads[way], before, "same tick: no store");
        set.touch(way, 1_001);
        assert_eq!(
            set.entry(&key(1), tag(&key(1))),
            Some(FlowEntry {
                backend: 0x7f_ffff,
                last_seen: 1_001
            })
        );
    }

    #[test]
    fn ticks_are_256_jiffies_and_wrap() {
        assert_eq!(flow_tick(255), 0);
        assert_eq!(flow_tick(256), 1);
        assert_eq!(flow_tick(1 << 24), 0);
        // Across the wrap, ages stay small.
        let mut set = FlowSet::EMPTY;
        for port in 0..FLOW_WAYS as u16 {
            put(&mut set, &key(port), 0, u16::MAX - 10 + port);
        }
        assert_eq!(set.victim(5), 0);
    }

    #[test]
    fn cleared_ways_are_reused_first() {
        let mut set = FlowSet::EMPTY;
        for port in 0..FLOW_WAYS as u16 {
            put(&mut set, &key(port), 0, 500 + port);
        }
        let (way, _) = set.find(&key(5), tag(&key(5))).unwrap();
        set.clear(way);
        assert_eq!(set.victim(10_000), way);
    }
}
