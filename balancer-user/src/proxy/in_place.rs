//! Futures boxed where they are built.
//!
//! `Box::pin(future)` builds the future on the stack and then copies all of it into the heap.
//! A request's future is several kilobytes (the handler, the upstream exchange), so the copy
//! was a few percent of the proxy's user CPU per request (perf: `memcpy` under the call that
//! boxes it, on both the HTTP/1.x and the HTTP/2 path).

use std::{
    alloc::{Layout, alloc, dealloc, handle_alloc_error},
    cell::RefCell,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    ptr::NonNull,
    task::{Context, Poll},
};

/// Boxes the future `make` returns, written straight into the box's uninitialized memory.
#[inline(always)]
pub fn boxed<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let mut slot = Box::<F>::new_uninit();
    slot.write(make());
    // SAFETY: `write` has just initialized the box's value.
    Box::into_pin(unsafe { slot.assume_init() })
}

/// A future in memory of its own that goes back to its thread's spare blocks when the future
/// is dropped, for the next future of the same size, instead of to the allocator.
///
/// A request's future is built and dropped once per request, and at a few kilobytes it is
/// past the allocator's small-object path: perf put its allocation and free (mimalloc's
/// medium pages being filled, emptied and retired as requests come and go) at 2.5 % of the
/// proxy's user CPU per keep-alive request.
pub struct Recycled<F> {
    future: NonNull<F>,
    _owns: PhantomData<F>,
}

// SAFETY: `Recycled` owns its `F` as a `Box` would; the spare lists it touches are the
// current thread's, whichever thread that is.
unsafe impl<F: Send> Send for Recycled<F> {}
// SAFETY: as for `Send`: shared access reaches `F` only through `&F`.
unsafe impl<F: Sync> Sync for Recycled<F> {}
// The future is never moved: `Recycled` moves only the pointer.
impl<F> Unpin for Recycled<F> {}

/// Spare blocks kept per size, per thread: enough for the requests that end between two that
/// start, without holding much memory once the load is gone (16 blocks of a few KiB).
const SPARES_PER_SIZE: usize = 16;

struct Spares {
    layout: Layout,
    blocks: Vec<NonNull<u8>>,
}

impl Drop for Spares {
    fn drop(&mut self) {
        for block in self.blocks.drain(..) {
            // SAFETY: each block was allocated with `self.layout` and is owned by this list.
            unsafe { dealloc(block.as_ptr(), self.layout) };
        }
    }
}

thread_local! {
    static SPARES: RefCell<Vec<Spares>> = const { RefCell::new(Vec::new()) };
}

fn take_block(layout: Layout) -> NonNull<u8> {
    let spare = SPARES
        .try_with(|spares| {
            let mut spares = spares.borrow_mut();
            spares
                .iter_mut()
                .find(|spares| spares.layout == layout)
                .and_then(|spares| spares.blocks.pop())
        })
        .ok()
        .flatten();
    spare.unwrap_or_else(|| {
        // SAFETY: `layout` has a non-zero size (checked by the caller).
        let block = unsafe { alloc(layout) };
        NonNull::new(block).unwrap_or_else(|| handle_alloc_error(layout))
    })
}

fn give_back_block(block: NonNull<u8>, layout: Layout) {
    let kept = SPARES
        .try_with(|spares| {
            let mut spares = spares.borrow_mut();
            let index = match spares.iter().position(|spares| spares.layout == layout) {
                Some(index) => index,
                None => {
                    spares.push(Spares {
                        layout,
                        blocks: Vec::new(),
                    });
                    spares.len() - 1
                }
            };
            let blocks = &mut spares[index].blocks;
            if blocks.len() < SPARES_PER_SIZE {
                blocks.push(block);
                true
            } else {
                false
            }
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: `block` was allocated with `layout`, and nothing else owns it.
        unsafe { dealloc(block.as_ptr(), layout) };
    }
}

/// The future `make` returns, written straight into a spare block of its size (or a new one).
#[inline(always)]
pub fn recycled<F: Future>(make: impl FnOnce() -> F) -> Recycled<F> {
    let layout = Layout::new::<F>();
    let future = if layout.size() == 0 {
        NonNull::dangling()
    } else {
        take_block(layout).cast::<F>()
    };
    // SAFETY: `future` is valid for writes of an `F` (allocated with its layout, or dangling
    // for a zero-sized `F`) and holds no value yet.
    unsafe { future.as_ptr().write(make()) };
    Recycled {
        future,
        _owns: PhantomData,
    }
}

impl<F: Future> Future for Recycled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the `F` stays where it is until `drop` (only the pointer ever moves), and
        // `&mut self` is the only way to it.
        unsafe { Pin::new_unchecked(&mut *self.future.as_ptr()) }.poll(cx)
    }
}

impl<F> Drop for Recycled<F> {
    fn drop(&mut self) {
        let layout = Layout::new::<F>();
        // SAFETY: the value was written by `recycled` and is dropped once, here.
        unsafe { std::ptr::drop_in_place(self.future.as_ptr()) };
        if layout.size() != 0 {
            give_back_block(self.future.cast::<u8>(), layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        rc::Rc,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use super::*;

    #[tokio::test]
    async fn a_recycled_future_runs_and_its_block_serves_the_next_one() {
        let drops = Arc::new(AtomicUsize::new(0));
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let make = |n: u64| {
            let counted = Counted(drops.clone());
            async move {
                let _counted = counted;
                let big = [n; 512];
                tokio::task::yield_now().await;
                big.iter().sum::<u64>()
            }
        };
        let first = recycled(|| make(1));
        let first_at = first.future.as_ptr() as usize;
        assert_eq!(first.await, 512);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let second = recycled(|| make(2));
        assert_eq!(second.future.as_ptr() as usize, first_at, "the spare block");
        // Two at once: the second gets a block of its own.
        let third = recycled(|| make(3));
        assert_ne!(third.future.as_ptr() as usize, first_at);
        assert_eq!(second.await + third.await, 512 * 5);
        assert_eq!(drops.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_future_dropped_unpolled_is_dropped_and_zero_sized_ones_work() {
        let value = Rc::new(());
        let held = value.clone();
        let future = recycled(|| async move { drop(held) });
        assert_eq!(Rc::strong_count(&value), 2);
        drop(future);
        assert_eq!(Rc::strong_count(&value), 1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        assert_eq!(runtime.block_on(recycled(|| std::future::ready(7))), 7);
    }

    #[test]
    fn spares_are_capped_per_size() {
        let futures: Vec<_> = (0..SPARES_PER_SIZE + 8)
            .map(|n| recycled(move || async move { [n; 300].len() }))
            .collect();
        fn layout_of<F>(_: &Recycled<F>) -> Layout {
            Layout::new::<F>()
        }
        let layout = layout_of(&futures[0]);
        drop(futures);
        let kept = SPARES.with(|spares| {
            spares
                .borrow()
                .iter()
                .find(|spares| spares.layout == layout)
                .map_or(0, |spares| spares.blocks.len())
        });
        assert_eq!(kept, SPARES_PER_SIZE);
    }
}
