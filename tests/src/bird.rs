//! BIRD 2 (Debian `bird2`) daemons inside test namespaces: a router, and the balancer hosts'
//! daemon exporting `announce.table` with `packaging/bird.conf`. Each daemon runs in the
//! foreground as a child of the test, with its config and control socket in the test's
//! scratch directory, and is killed on drop (also on panic).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{child::ChildGuard, netns::Netns, process::run_in};

/// `packaging/bird.conf`, the snippet the balancer ships.
pub fn packaged_snippet() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/bird.conf")
}

/// A running `bird -f` in a namespace.
pub struct Bird {
    child: ChildGuard,
    socket: PathBuf,
    log: PathBuf,
    netns_path: String,
}

impl Bird {
    /// Writes `config` to `DIR/NAME.conf` and starts BIRD on it in `netns`; returns once its
    /// control socket answers.
    pub fn start(netns: &Netns, dir: &Path, name: &str, config: &str) -> anyhow::Result<Bird> {
        let config_path = dir.join(format!("{name}.conf"));
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let socket = dir.join(format!("{name}.ctl"));
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.path()))
            .args(["bird", "-f", "-c"])
            .arg(&config_path)
            .arg("-s")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("starting bird (Debian package bird2; `cargo xtask setup` installs it)")?;
        // Recorded for cleanup_everything (Ctrl-C in the demo): nsenter execs bird. Drop kills
        // it (see `kill`), so the guard's own SIGTERM grace is never used.
        let mut bird = Bird {
            child: ChildGuard::new(child, format!("bird {name}"), Duration::ZERO),
            socket,
            log,
            netns_path: netns.path(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while bird.birdc(&["show", "status"]).is_err() {
            if let Some(status) = bird.child.exited() {
                bail!(
                    "bird {name} exited ({status}); its output:\n{}",
                    std::fs::read_to_string(&bird.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("bird {name} did not open {}", bird.socket.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(bird)
    }

    /// `birdc -s SOCKET ARGS…`: its output.
    pub fn birdc(&self, args: &[&str]) -> anyhow::Result<String> {
        let socket = self.socket.to_string_lossy().into_owned();
        let mut full = vec!["-s", socket.as_str()];
        full.extend_from_slice(args);
        run_in(&self.netns_path, "birdc", &full)
    }

    /// Waits until the BGP session `protocol` is Established.
    pub fn wait_established(&self, protocol: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.birdc(&["show", "protocols", protocol])?;
            if status.contains("Established") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "BGP session {protocol} not established within {limit:?}:\n{status}\n{}",
                    self.birdc(&["show", "protocols", "all", protocol])
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Bird {
    /// SIGKILL: BIRD sends no BGP notification (the kernel still closes its TCP sessions,
    /// unless the namespace's traffic is dropped, as for a host that died). Reaped.
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The kernel routes to `address` (its /32 or /128) in `table` of the namespace at
/// `netns_path`, as `ip route show` prints them; empty when there is none.
pub fn host_routes(netns_path: &str, address: IpAddr, table: &str) -> anyhow::Result<String> {
    let prefix = match address {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    };
    let family = if address.is_ipv4() { "-4" } else { "-6" };
    run_in(
        netns_path,
        "ip",
        &[family, "route", "show", "table", table, "exact", &prefix],
    )
}

/// Polls until `host_routes(…)` is non-empty (`present`) or empty; returns how long that took,
/// or fails after `limit` with the last output.
pub fn wait_route(
    netns_path: &str,
    address: IpAddr,
    table: &str,
    present: bool,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let routes = host_routes(netns_path, address, table)?;
        if routes.trim().is_empty() != present {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!(
                "the route to {address} in table {table} of {netns_path} is {} after {limit:?}:\n{routes}",
                if present {
                    "still missing"
                } else {
                    "still there"
                }
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
