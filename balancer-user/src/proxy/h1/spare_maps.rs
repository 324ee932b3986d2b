//! Header maps kept per worker thread between messages, as read_buffers.rs keeps buffers.
//!
//! Each request and each response parsed a head into a new `HeaderMap`: two allocations (its
//! index table and its entries) and their frees per message, about 700 instructions per
//! keep-alive request for the two maps (callgrind). A map done with goes, emptied, to its
//! thread's list instead, and the next head parsed on that thread fills it. Only a few maps,
//! and only small ones, are kept, so an idle proxy holds a few KiB per thread at most.

use std::cell::RefCell;

use http::HeaderMap;

/// Maps kept per thread: about what one worker has in flight at once under load.
const KEPT: usize = 64;
/// A map whose table grew past this many fields (a head with very many) is freed, not kept.
const KEPT_CAPACITY: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map: one kept by this thread when it has one.
pub fn take() -> HeaderMap {
    SPARE.with_borrow_mut(Vec::pop).unwrap_or_default()
}

/// Empties `map` and keeps it for the next [`take`] on this thread (or frees it, when the
/// thread keeps enough or it is large).
pub fn give_back(mut map: HeaderMap) {
    if map.capacity() > KEPT_CAPACITY {
        return;
    }
    map.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < KEPT {
            spare.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_map_given_back_comes_back_empty_with_its_room() {
        // Other tests on this thread may have kept maps: start from none.
        SPARE.with_borrow_mut(Vec::clear);
        let mut map = HeaderMap::with_capacity(12);
        map.insert("x-one", HeaderValue::from_static("1"));
        let capacity = map.capacity();
        give_back(map);
        let again = take();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity);
        // None left: a new, empty one without room.
        assert_eq!(take().capacity(), 0);
        // Large maps are not kept.
        give_back(HeaderMap::with_capacity(500));
        assert_eq!(take().capacity(), 0);
    }
}
