//! One guard for every child process the harness starts: recorded for
//! [`crate::cleanup_everything`] while it runs, stopped on drop (SIGTERM, a grace period, then
//! SIGKILL) and always reaped, so no test leaves a process or a zombie behind.

use std::{
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::netns::LIVE_CHILDREN;

/// How often [`ChildGuard::wait_exit`] looks whether the child has exited.
const POLL: Duration = Duration::from_millis(20);

/// How a child ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub status: ExitStatus,
    /// It outlived the limit and was killed (SIGKILL): `status` is that signal's.
    pub killed: bool,
}

/// A running child process (started through a wrapper that execs, such as nsenter or taskset,
/// so its pid is the program's). Dropping it is [`Self::stop`].
pub struct ChildGuard {
    /// `None` once reaped: no signal then goes to a pid that may belong to another process.
    child: Option<Child>,
    label: String,
    grace: Duration,
}

impl ChildGuard {
    /// Takes `child` and records it for [`crate::cleanup_everything`]. `label` names it in
    /// errors; `grace` is how long [`Self::stop`] (and drop) waits after SIGTERM.
    pub fn new(child: Child, label: impl Into<String>, grace: Duration) -> ChildGuard {
        LIVE_CHILDREN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.id());
        ChildGuard {
            child: Some(child),
            label: label.into(),
            grace,
        }
    }

    /// Its pid while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The child itself while it has not been reaped (to take its pipes).
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// The exit status if it has exited (it stays held: see [`Self::reaped`]).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The exit status if it has exited; it is then forgotten, so that drop sends no signal.
    pub fn reaped(&mut self) -> Option<ExitStatus> {
        let status = self.exited()?;
        self.forget();
        Some(status)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `signal` without waiting; fails if it has exited or was stopped.
    pub fn signal(&mut self, signal: libc::c_int) -> anyhow::Result<()> {
        let Some(child) = &mut self.child else {
            bail!("{} already stopped", self.label)
        };
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{} has exited ({status})", self.label);
        }
        // SAFETY: kill(2) on our own child, checked above not to be reaped yet.
        if unsafe { libc::kill(child.id() as i32, signal) } != 0 {
            return Err(std::io::Error::last_os_error()).context("kill");
        }
        Ok(())
    }

    /// Waits up to `limit` for it to exit by itself, then SIGKILL; reaped either way.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<Exit> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} already stopped", self.label)
        };
        let deadline = Instant::now() + limit;
        let exit = loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    break Ok(Exit {
                        status,
                        killed: false,
                    });
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                Ok(None) => {
                    let _ = child.kill();
                    break child.wait().map(|status| Exit {
                        status,
                        killed: true,
                    });
                }
                // Reaped by someone else (cleanup_everything): it is gone either way.
                Err(err) => break Err(err),
            }
        };
        self.forget();
        exit.with_context(|| format!("waiting for {}", self.label))
    }

    /// SIGTERM (unless it has exited), then [`Self::wait_exit`] with the grace period.
    pub fn stop(&mut self) -> anyhow::Result<Exit> {
        let _ = self.signal(libc::SIGTERM);
        self.wait_exit(self.grace)
    }

    /// SIGKILL at once, reaped; nothing if it was already stopped.
    pub fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
            self.forget();
        }
    }

    fn forget(&mut self) {
        if let Some(child) = self.child.take() {
            LIVE_CHILDREN
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|p| *p != child.id());
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}
