//! Futures boxed where they are built.
//!
//! `Box::pin(future)` builds the future on the stack and then copies all of it into the heap.
//! A request's future is several kilobytes (the handler, the upstream exchange), so the copy
//! was a few percent of the proxy's user CPU per request (perf: `memcpy` under the call that
//! boxes it, on both the HTTP/1.x and the HTTP/2 path).

use std::{future::Future, pin::Pin};

/// Boxes the future `make` returns, written straight into the box's uninitialized memory.
#[inline(always)]
pub fn boxed<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let mut slot = Box::<F>::new_uninit();
    slot.write(make());
    // SAFETY: `write` has just initialized the box's value.
    Box::into_pin(unsafe { slot.assume_init() })
}
