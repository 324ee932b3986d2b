//! The longest a server's response body may pause (`ConnTimeouts::body_gap`), for our
//! HTTP/1.1 body and for hyper's HTTP/2 one alike.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Sleep;

use crate::clock;

use crate::proxy::BoxError;

/// A timer armed at the first read that has to wait, not before: most bodies come with their
/// head and never need one. Data after that moves the deadline when the timer fires, rather
/// than at each read.
pub struct QuietTimer {
    gap: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    data_since_armed: Option<tokio::time::Instant>,
}

impl QuietTimer {
    pub fn new(gap: Duration) -> QuietTimer {
        QuietTimer {
            gap,
            timer: None,
            data_since_armed: None,
        }
    }

    /// A read returned data.
    pub fn saw_data(&mut self) {
        if self.timer.is_some() {
            self.data_since_armed = Some(clock::tokio_now());
        }
    }

    /// A read has to wait: ready when the server has sent nothing for the gap (since the first
    /// wait, or since the last data after it).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let gap = self.gap;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
        loop {
            std::task::ready!(timer.as_mut().poll(cx));
            match self.data_since_armed.take() {
                Some(at) if at + gap > clock::tokio_now() => timer.as_mut().reset(at + gap),
                _ => return Poll::Ready(()),
            }
        }
    }

    /// The body is over: no timer left in the wheel.
    pub fn stop(&mut self) {
        self.timer = None;
    }

    /// The body's error once the gap has passed, logged with the server's name.
    pub fn expired(&mut self, server: &dyn std::fmt::Display) -> BoxError {
        self.stop();
        let gap = humantime::format_duration(self.gap);
        tracing::warn!(
            %server,
            "the server sent nothing for {gap} in the middle of a response body \
             (timeouts.response); the response is cut and the connection closed"
        );
        format!("the server sent nothing for {gap} in the response body").into()
    }
}
