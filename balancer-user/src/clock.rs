//! The time as of the current poll of a connection's task: read from the system once per
//! poll, not once per use.
//!
//! A keep-alive request read the clock 12 times (perf with a uprobe on `clock_gettime`): the
//! header deadline, the access record, the request ID, the pick, the pool checkout, the
//! response timeout, the passive health report, the connection's return to the pool, the
//! request's duration, the keep-alive wait. That was 5 % of the proxy's user CPU per request.
//! Everything one poll does happens within microseconds, so one reading serves them all, as
//! nginx reads the time once per turn of its event loop (`ngx_time_update`).
//!
//! What is timed this way is timed to the start of a poll: a request's logged duration ends
//! when the poll that finishes it began, microseconds before its last write, and a timer set
//! during a long poll (HTML rewriting of a large page) starts that much early.
//!
//! The cache holds only while [`PerPoll`] polls the task: any other code on the thread (a
//! health checker, the admin API, a test) reads the system clock, so no caller outside a
//! connection's task can see a time from an earlier poll.

use std::{
    cell::Cell,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::{Instant, SystemTime},
};

#[derive(Clone, Copy)]
struct Cached {
    /// Inside a [`PerPoll`]'s poll: readings may be cached.
    polling: bool,
    monotonic: Option<Instant>,
    wall: Option<SystemTime>,
}

const OUTSIDE: Cached = Cached {
    polling: false,
    monotonic: None,
    wall: None,
};

thread_local! {
    static CACHED: Cell<Cached> = const { Cell::new(OUTSIDE) };
}

/// The monotonic time as of this poll (the system's, outside a [`PerPoll`]).
pub fn now() -> Instant {
    cached(|cached| &mut cached.monotonic, Instant::now)
}

/// The wall-clock time as of this poll (the system's, outside a [`PerPoll`]).
pub fn wall_now() -> SystemTime {
    cached(|cached| &mut cached.wall, SystemTime::now)
}

/// The reading in `slot` when this poll has one; else `read()`, kept in `slot` inside a poll.
fn cached<T: Copy>(slot: fn(&mut Cached) -> &mut Option<T>, read: fn() -> T) -> T {
    CACHED.with(|cell| {
        let mut cached = cell.get();
        if let Some(now) = *slot(&mut cached) {
            return now;
        }
        let now = read();
        if cached.polling {
            *slot(&mut cached) = Some(now);
            cell.set(cached);
        }
        now
    })
}

/// [`now`] as tokio's instant, for its timers.
#[cfg(not(test))]
pub fn tokio_now() -> tokio::time::Instant {
    tokio::time::Instant::from_std(now())
}

/// Unit tests may pause tokio's clock (`start_paused`), which only tokio's own reading follows.
#[cfg(test)]
pub fn tokio_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

pin_project_lite::pin_project! {
    /// A connection's task: each poll of `inner` starts with no cached time, and what it
    /// caches is forgotten when the poll returns.
    pub struct PerPoll<F> {
        #[pin]
        inner: F,
    }
}

/// Runs `inner` with the time cached per poll.
pub fn per_poll<F: Future>(inner: F) -> PerPoll<F> {
    PerPoll { inner }
}

impl<F: Future> Future for PerPoll<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Restored on the way out (a poll nested in another's sees its own times, and the
        // outer one gets its cache back), also when `inner` panics.
        struct Restore(Cached);
        impl Drop for Restore {
            fn drop(&mut self) {
                CACHED.with(|cell| cell.set(self.0));
            }
        }
        let _restore = Restore(CACHED.with(|cell| {
            cell.replace(Cached {
                polling: true,
                monotonic: None,
                wall: None,
            })
        }));
        self.project().inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn outside_a_poll_every_reading_is_fresh() {
        let first = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() >= first + Duration::from_millis(2));
        let wall = wall_now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(wall_now() >= wall + Duration::from_millis(2));
    }

    #[test]
    fn one_poll_reads_the_clock_once_and_the_next_poll_again() {
        let mut polls = 0;
        let mut readings = Vec::new();
        let task = per_poll(std::future::poll_fn(|cx| {
            readings.push((now(), wall_now()));
            std::thread::sleep(Duration::from_millis(2));
            readings.push((now(), wall_now()));
            polls += 1;
            if polls == 2 {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }));
        futures_executor_block_on(task);
        assert_eq!(readings[0], readings[1], "one reading per poll");
        assert_eq!(readings[2], readings[3]);
        assert!(readings[2].0 >= readings[1].0 + Duration::from_millis(2));
        assert!(readings[2].1 >= readings[1].1 + Duration::from_millis(2));
        // After the task, the thread reads the system clock again.
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() >= readings[3].0 + Duration::from_millis(2));
    }

    #[test]
    fn a_panicking_poll_leaves_no_cached_time_behind() {
        let task = per_poll(std::future::poll_fn(|_| -> Poll<()> {
            let _ = now();
            panic!("inside");
        }));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            futures_executor_block_on(task)
        }));
        assert!(caught.is_err());
        let before = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() >= before + Duration::from_millis(2));
    }

    /// Polls `future` to completion on this thread.
    fn futures_executor_block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }
}
