//! One timer for a connection's waits, one after another: the wait for the next request, the
//! rest of a head, and the server's answer to each request, instead of a new timer per wait.
//!
//! A `tokio::time::timeout` per wait filed a timer in tokio's wheel when the wait began and took
//! it out when the wait ended, under the wheel's lock each time, and read the runtime's handle
//! from thread-local storage to do it: about 1 000 instructions per keep-alive request for the
//! two waits (callgrind). Moving one filed timer to each wait's deadline (`Sleep::reset`) still
//! refiled it once per request, since the answer's deadline (60 s) comes before the keep-alive
//! one (75 s) set just before.
//!
//! So the timer is filed at some deadline and left there while each wait's deadline is later:
//! a wait only compares. When the filed deadline passes, the wait in progress, if its own
//! deadline is still ahead, files the timer again at it. A busy connection's timer is thus
//! refiled once per timeout period, not per request (the `QuietTimer` of response bodies works
//! the same way). A wait whose deadline comes before the filed one files it at once, so no wait
//! outlives its deadline. The timer wakes only the task that polls it, the connection's own; a
//! filed deadline that passes between waits costs that task one empty poll.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{Instant, Sleep};

pin_project_lite::pin_project! {
    /// The timer of one connection's task; each wait is [`WaitTimer::run`].
    pub struct WaitTimer {
        // Filed at a deadline no later than the current wait's (when one runs).
        #[pin]
        sleep: Sleep,
    }
}

/// The deadline passed before the wait's future was ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// Far enough never to be reached before the first wait sets a real deadline (tokio's wheel
/// holds about two years).
const UNSET: Duration = Duration::from_secs(365 * 24 * 3600);

impl WaitTimer {
    /// A timer that is not in tokio's wheel until the first wait.
    pub fn new() -> WaitTimer {
        WaitTimer {
            // The time as of this poll (clock.rs): an HTTP/2 stream makes a timer per request.
            sleep: tokio::time::sleep_until(crate::clock::tokio_now() + UNSET),
        }
    }

    /// `future` until `deadline`. The future is polled first, so a ready one never sees the
    /// timer.
    pub fn run<F: Future>(self: Pin<&mut Self>, deadline: Instant, future: F) -> Run<'_, F> {
        let mut sleep = self.project().sleep;
        if deadline < sleep.deadline() || sleep.is_elapsed() {
            sleep.as_mut().reset(deadline);
        }
        Run {
            sleep,
            deadline,
            future,
        }
    }
}

impl Default for WaitTimer {
    fn default() -> WaitTimer {
        WaitTimer::new()
    }
}

pin_project_lite::pin_project! {
    /// One wait of a [`WaitTimer`].
    pub struct Run<'t, F> {
        sleep: Pin<&'t mut Sleep>,
        deadline: Instant,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Run<'_, F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let had_budget = tokio::task::coop::has_budget_remaining();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        // As tokio's own `Timeout` does: when the future spent the task's budget, the timer is
        // still looked at (outside the budget), or a future that always has work to do (a
        // fast upload streaming to the server) would hide the deadline for as long as it runs.
        let unbudgeted = had_budget && !tokio::task::coop::has_budget_remaining();
        loop {
            let fired = if unbudgeted {
                Pin::new(&mut tokio::task::coop::unconstrained(this.sleep.as_mut())).poll(cx)
            } else {
                this.sleep.as_mut().poll(cx)
            };
            std::task::ready!(fired);
            // Filed for an earlier wait: this one's deadline is still ahead.
            if this.sleep.deadline() < *this.deadline {
                this.sleep.as_mut().reset(*this.deadline);
                continue;
            }
            return Poll::Ready(Err(TimedOut));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer_deadline<F>(run: &Run<'_, F>) -> Instant {
        run.sleep.deadline()
    }

    #[tokio::test(start_paused = true)]
    async fn each_wait_ends_at_its_own_deadline_earlier_or_later() {
        let mut timer = std::pin::pin!(WaitTimer::new());
        let start = Instant::now();
        // A long wait that times out.
        let long = timer
            .as_mut()
            .run(
                start + Duration::from_secs(60),
                std::future::pending::<()>(),
            )
            .await;
        assert_eq!(long, Err(TimedOut));
        assert_eq!(Instant::now(), start + Duration::from_secs(60));
        // A wait that ends in time leaves the timer filed at its deadline ...
        let now = Instant::now();
        let quick = timer
            .as_mut()
            .run(now + Duration::from_secs(60), async { 7 })
            .await;
        assert_eq!(quick, Ok(7));
        let filed = timer.sleep.deadline();
        // ... and a shorter one after it still ends at its own, not at the filed one.
        let short = timer
            .as_mut()
            .run(now + Duration::from_secs(5), std::future::pending::<()>())
            .await;
        assert!(now + Duration::from_secs(5) < filed);
        assert_eq!(short, Err(TimedOut));
        assert_eq!(Instant::now(), now + Duration::from_secs(5));
        // A later deadline leaves the timer filed at the earlier one, and is still kept to the
        // end, not cut at the filed deadline.
        let now = Instant::now();
        let first = timer
            .as_mut()
            .run(
                now + Duration::from_secs(10),
                tokio::time::sleep(Duration::from_secs(1)),
            )
            .await;
        assert_eq!(first, Ok(()));
        let later = timer.as_mut().run(
            now + Duration::from_secs(30),
            tokio::time::sleep(Duration::from_secs(20)),
        );
        assert_eq!(timer_deadline(&later), now + Duration::from_secs(10));
        assert_eq!(later.await, Ok(()), "the wait ended at the filed deadline");
        let late = timer
            .as_mut()
            .run(now + Duration::from_secs(40), std::future::pending::<()>())
            .await;
        assert_eq!(late, Err(TimedOut));
        assert_eq!(Instant::now(), now + Duration::from_secs(40));
    }

    /// A future that spends the task's whole budget on every poll and is never ready: the
    /// deadline still ends the wait (tokio's timer counts against the same budget).
    #[tokio::test]
    async fn a_future_that_spends_the_budget_cannot_hide_the_deadline() {
        let mut timer = std::pin::pin!(WaitTimer::new());
        let busy = async {
            loop {
                tokio::task::coop::consume_budget().await;
            }
        };
        let started = std::time::Instant::now();
        let wait = timer
            .as_mut()
            .run(Instant::now() + Duration::from_millis(50), busy);
        // tokio's own timeout, which handles the budget, as the backstop of a broken one.
        let outcome = tokio::time::timeout(Duration::from_secs(10), wait).await;
        assert_eq!(outcome, Ok(Err(TimedOut)), "the wait outlived its deadline");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_future_wins_over_a_passed_deadline() {
        let mut timer = std::pin::pin!(WaitTimer::new());
        let past = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let ready = timer.as_mut().run(past, async { "done" }).await;
        assert_eq!(ready, Ok("done"));
        let pending = timer.as_mut().run(past, std::future::pending::<()>()).await;
        assert_eq!(pending, Err(TimedOut));
    }
}
