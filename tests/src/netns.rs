//! Network namespaces: created with `ip netns add`, removed on drop, entered per thread.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::Command,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use anyhow::{Context, bail};

/// Names of live namespaces and pids of live child processes, for interrupt cleanup.
pub(crate) static LIVE_NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());
pub(crate) static LIVE_CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A short suffix unique to this process and call, so parallel tests never collide.
/// Kept short because interface names are limited to 15 characters.
pub fn unique_suffix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{n:x}", std::process::id() % 0x10000)
}

/// A network namespace that exists for as long as this value lives.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(name: impl Into<String>) -> anyhow::Result<Netns> {
        let name = name.into();
        run_ip(&["netns", "add", &name])?;
        LIVE_NAMESPACES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        let netns = Netns { name };
        // Loopback is down in a new namespace; the admin API and local VIPs need it.
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path usable with `nsenter --net=` and `setns`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `ip -n NAME ARGS…`, failing with its stderr.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run_ip(&full)
    }

    /// Runs a closure on a thread that has entered this namespace.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        in_netns(&self.path(), f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the veths inside it. A delete that fails leaves
        // the namespace behind for the next run: said on stderr (a panic in drop would abort).
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "netns {}: `ip netns del` failed ({}): {}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(err) => eprintln!("netns {}: cannot run `ip netns del`: {err}", self.name),
        }
        LIVE_NAMESPACES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|n| n != &self.name);
    }
}

/// Runs `f` on a fresh thread that first joins the network namespace at `path`
/// (namespaces are per thread: the caller's thread is never moved).
pub fn in_netns<T: Send + 'static>(
    path: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let file = File::open(path).with_context(|| format!("opening namespace {path}"))?;
    let handle = std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a valid namespace fd.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(anyhow::anyhow!(
                "setns failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(f())
    });
    match handle.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn run_ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (package iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Stops every child process and removes every namespace this process created
/// and has not removed yet. For interrupt handlers; normal paths rely on `Drop`.
pub fn cleanup_everything() {
    let children: Vec<u32> =
        std::mem::take(&mut *LIVE_CHILDREN.lock().unwrap_or_else(|e| e.into_inner()));
    for &pid in &children {
        // SAFETY: plain kill(2) on a pid we spawned.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    // Reap them (SIGTERM lets balancer detach XDP); whatever is still running after 5 s is killed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for pid in children {
        loop {
            // SAFETY: waitpid(2) on our own child, non-blocking.
            let reaped = unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
            if reaped != 0 {
                break;
            }
            if std::time::Instant::now() > deadline {
                // SAFETY: as above.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                    libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
                }
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let namespaces: Vec<String> =
        std::mem::take(&mut *LIVE_NAMESPACES.lock().unwrap_or_else(|e| e.into_inner()));
    for name in namespaces {
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
    }
}
