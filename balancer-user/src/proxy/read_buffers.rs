//! Read buffers (and the write buffers of message heads, [`WriteBuf`]) kept per worker thread
//! between messages.
//!
//! A keep-alive connection holds no buffer while it waits (see `h1_server`): under load that
//! meant one allocation and one free of a read buffer per request, on memory that was cold in
//! the cache (perf: the allocator's page refill was the single largest user-space symbol of
//! the proxy). A buffer a connection is done with goes to its thread's list instead, and the
//! next message on that thread takes it back. Only whole, unshared buffers are kept (the
//! allocation is reclaimed without copying), and only a few per thread, so an idle proxy holds
//! at most [`KEPT`] of them.

use std::cell::RefCell;

use bytes::BytesMut;

/// Buffers kept per thread and size: about what one worker has in flight at once under load.
const KEPT: usize = 64;
/// Buffers up to this size are kept on one list, larger ones on the other, so that a request
/// for a large buffer never takes (and frees) a small one.
const SMALL: usize = 8 * 1024;

thread_local! {
    static FREE: RefCell<[Vec<BytesMut>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

fn list(capacity: usize) -> usize {
    usize::from(capacity > SMALL)
}

/// An empty buffer with room for `capacity` bytes: one kept by this thread if it has one.
pub fn take(capacity: usize) -> BytesMut {
    FREE.with_borrow_mut(|free| free[list(capacity)].pop())
        .filter(|buf| buf.capacity() >= capacity)
        .unwrap_or_else(|| BytesMut::with_capacity(capacity))
}

/// Makes room in `buf` for the next read: a kept buffer of `chunk` bytes when it has none
/// (between messages), else `chunk` more when less than 1 KiB is left.
pub fn make_room(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() == 0 {
        *buf = take(chunk);
    } else if buf.capacity() - buf.len() < 1024 {
        buf.reserve(chunk);
    }
}

/// Hands back a buffer whose bytes have all been consumed, for the next [`take`] on this
/// thread. A buffer still shared with data handed out, or smaller than `capacity`, is freed.
pub fn give_back(mut buf: BytesMut, capacity: usize) {
    if !buf.is_empty() || !buf.try_reclaim(capacity) {
        return;
    }
    FREE.with_borrow_mut(|free| {
        let free = &mut free[list(capacity)];
        if free.len() < KEPT {
            free.push(buf);
        }
    });
}

/// What a new [`WriteBuf`] holds: a message head and a small body.
const WRITE_CAPACITY: usize = 1024;
/// Larger write buffers (a response coalesced up to 64 KiB) are freed, not kept: an idle
/// proxy holds at most [`KEPT`] buffers of this size per thread.
const WRITE_KEPT_MAX: usize = 16 * 1024;

thread_local! {
    static FREE_WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// The bytes of an outgoing message head (and what is coalesced with it): taken from the
/// thread's kept buffers, and handed back when dropped, so that writing a request's or a
/// response's head allocates nothing under load.
pub struct WriteBuf(Vec<u8>);

impl WriteBuf {
    pub fn take() -> WriteBuf {
        WriteBuf(
            FREE_WRITE
                .with_borrow_mut(Vec::pop)
                .unwrap_or_else(|| Vec::with_capacity(WRITE_CAPACITY)),
        )
    }
}

impl std::ops::Deref for WriteBuf {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for WriteBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for WriteBuf {
    fn drop(&mut self) {
        if self.0.capacity() > WRITE_KEPT_MAX {
            return;
        }
        let mut buf = std::mem::take(&mut self.0);
        buf.clear();
        // `try_with`: a buffer dropped while the thread exits is simply freed.
        let _ = FREE_WRITE.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < KEPT {
                free.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_buffer_is_taken_again_empty_and_a_large_one_is_not_kept() {
        let mut first = WriteBuf::take();
        first.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        let storage = first.as_ptr();
        drop(first);
        let again = WriteBuf::take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), storage);
        drop(again);
        let mut large = WriteBuf::take();
        large.extend_from_slice(&[b'x'; WRITE_KEPT_MAX + 1]);
        drop(large);
        // Not kept: the next one is new, at the small size.
        assert_eq!(WriteBuf::take().capacity(), WRITE_CAPACITY);
    }

    #[test]
    fn a_consumed_buffer_is_taken_again_without_a_new_allocation() {
        let mut buf = take(1024);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let storage = buf.as_ptr();
        bytes::Buf::advance(&mut buf, 18);
        give_back(buf, 1024);
        let again = take(1024);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), storage, "the same storage, from its start");
        assert!(again.capacity() >= 1024);
    }

    #[test]
    fn buffers_with_bytes_left_or_shared_are_not_kept() {
        let mut left = take(1024);
        left.extend_from_slice(b"next request");
        let left_storage = left.as_ptr();
        give_back(left, 1024);

        let mut shared = take(1024);
        let shared_storage = shared.as_ptr();
        shared.extend_from_slice(b"body");
        let handed_out = shared.split().freeze();
        give_back(shared, 1024);

        let fresh = take(1024);
        assert_ne!(fresh.as_ptr(), left_storage);
        assert_ne!(fresh.as_ptr(), shared_storage);
        assert_eq!(&handed_out[..], b"body");
    }

    #[test]
    fn a_thread_keeps_a_bounded_number() {
        let many: Vec<BytesMut> = (0..KEPT + 10).map(|_| take(64)).collect();
        for buf in many {
            give_back(buf, 64);
        }
        assert_eq!(FREE.with_borrow(|free| free[list(64)].len()), KEPT);
        let large = take(16 * 1024);
        assert!(
            large.capacity() >= 16 * 1024,
            "a small kept buffer is not handed out"
        );
    }
}
