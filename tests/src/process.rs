//! Processes inside namespaces: the `balancer` binary under test, and commands such as curl.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{child::ChildGuard, netns::Netns};

/// The `balancer` binary to test: `$BALANCER_BIN` (set by `cargo xtask test`),
/// else the workspace's debug build.
pub fn balancer_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BALANCER_BIN") {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/balancer")
}

/// How long [`BalancerProcess::stop`] (and drop) waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A `balancer run` process inside a namespace; stopped with SIGTERM on drop.
pub struct BalancerProcess {
    child: ChildGuard,
    log_path: PathBuf,
    netns_path: String,
    admin: String,
}

impl BalancerProcess {
    /// Starts `balancer run --config CONFIG` in `netns` and waits until its admin
    /// listener (`admin`, e.g. "127.0.0.1:9100") answers `/healthz`.
    pub fn start(netns: &Netns, config: &Path, admin: &str) -> anyhow::Result<BalancerProcess> {
        let config_arg = config.to_string_lossy().into_owned();
        let mut process = Self::spawn(
            netns,
            &["run", "--config", &config_arg],
            &config.with_extension("log"),
        )?;
        process.admin = admin.to_string();
        process.wait_ready(Duration::from_secs(20))?;
        Ok(process)
    }

    /// Like [`Self::start`], with `wrapper` (e.g. `setpriv` and its arguments, which exec the
    /// binary) between nsenter and the binary, and `env` added to its environment. Waits for
    /// the admin listener, as `start` does.
    pub fn start_wrapped(
        netns: &Netns,
        config: &Path,
        admin: &str,
        wrapper: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<BalancerProcess> {
        let config_arg = config.to_string_lossy().into_owned();
        let mut process = Self::spawn_with(
            netns,
            &["run", "--config", &config_arg],
            &config.with_extension("log"),
            wrapper,
            env,
        )?;
        process.admin = admin.to_string();
        process.wait_ready(Duration::from_secs(20))?;
        Ok(process)
    }

    /// Starts `balancer upgrade --config CONFIG` in `netns` (output to `log_path`) and waits
    /// until it serves in place of the running balancer (its log says so), or fails if it
    /// exits first.
    pub fn start_upgrade(
        netns: &Netns,
        config: &Path,
        admin: &str,
        log_path: &Path,
    ) -> anyhow::Result<BalancerProcess> {
        let config_arg = config.to_string_lossy().into_owned();
        let mut process = Self::spawn(netns, &["upgrade", "--config", &config_arg], log_path)?;
        process.admin = admin.to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !process.log().contains("upgrade: serving") {
            if let Some(status) = process.reaped() {
                bail!(
                    "balancer upgrade exited ({status}); its log:\n{}",
                    process.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "balancer upgrade did not serve within 30 s; its log:\n{}",
                    process.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(process)
    }

    /// Starts `balancer decap --iface IFACE` in `netns` (a backend of `ipip`
    /// VIPs) and waits until it says the program is attached.
    pub fn start_decap(
        netns: &Netns,
        interface: &str,
        log_path: &Path,
    ) -> anyhow::Result<BalancerProcess> {
        let process = Self::spawn(netns, &["decap", "--iface", interface], log_path)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !process.log().contains("balancer_decap attached") {
            if Instant::now() > deadline {
                bail!(
                    "balancer decap did not attach within 20 s; its log:\n{}",
                    process.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(process)
    }

    /// Starts the balancer binary with `args` in `netns`, output to `log_path`.
    fn spawn(netns: &Netns, args: &[&str], log_path: &Path) -> anyhow::Result<BalancerProcess> {
        Self::spawn_with(netns, args, log_path, &[], &[])
    }

    fn spawn_with(
        netns: &Netns,
        args: &[&str],
        log_path: &Path,
        wrapper: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<BalancerProcess> {
        let binary = balancer_binary();
        if !binary.is_file() {
            bail!(
                "{} does not exist: run through `cargo xtask test`, which builds it",
                binary.display()
            );
        }
        let log_path = log_path.to_path_buf();
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        // nsenter, not `ip netns exec`: the latter remounts /sys and would hide bpffs.
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.path()))
            .args(wrapper)
            .arg(&binary)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting balancer under nsenter (package util-linux)")?;
        Ok(BalancerProcess {
            child: ChildGuard::new(child, "balancer", STOP_GRACE),
            log_path,
            netns_path: netns.path(),
            admin: String::new(),
        })
    }

    /// The exit status if the process has exited; it is then forgotten, so that drop sends
    /// no signal to a pid that may belong to another process by now.
    fn reaped(&mut self) -> Option<std::process::ExitStatus> {
        self.child.reaped()
    }

    fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let url = format!("http://{}/healthz", self.admin);
        loop {
            if let Some(status) = self.reaped() {
                bail!(
                    "balancer exited during startup ({status}); its log:\n{}",
                    self.log()
                );
            }
            // 503 is an answer too: the balancer is up, some pool has no healthy server yet.
            if let Ok((200 | 503, _)) = http_get(&self.netns_path, &url) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "balancer did not answer {url} within {limit:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET on the admin listener, from inside the namespace, with curl.
    pub fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(&self.netns_path, &format!("http://{}{path}", self.admin))
    }

    /// POST (empty body) on the admin listener, from inside the namespace, with curl.
    pub fn admin_post(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_request(
            &self.netns_path,
            "POST",
            &format!("http://{}{path}", self.admin),
        )
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The balancer's pid while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) without waiting for anything; fails if it has exited.
    /// nsenter execs the binary, so the signal goes to balancer itself.
    pub fn signal(&mut self, signal: libc::c_int) -> anyhow::Result<()> {
        if let Some(status) = self.child.exited() {
            bail!("balancer has exited ({status}); its log:\n{}", self.log());
        }
        self.child.signal(signal)
    }

    /// SIGHUP: asks the balancer to reload its config file. Returns at once; look for the
    /// effect (or the log) to know it is done.
    pub fn reload(&mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGHUP)
    }

    /// SIGTERM, then waits up to 40 s, longer than the proxy's default `shutdown_timeout`
    /// (SIGKILL after that, and an error). Returns the exit status.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.signal(libc::SIGTERM)?;
        self.wait_exit(Duration::from_secs(40))
    }

    /// Waits for the process to exit by itself (after a signal sent with [`Self::signal`]);
    /// after `limit` it is killed and this fails. Returns the exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let exit = self.child.wait_exit(limit)?;
        if exit.killed {
            bail!(
                "balancer did not exit within {limit:?} (killed); its log:\n{}",
                self.log()
            );
        }
        Ok(exit.status)
    }

    /// SIGTERM, then wait up to 10 s (SIGKILL after that). Returns the exit status. Drop does
    /// the same.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        Ok(self.child.stop()?.status)
    }
}

/// Runs a command inside a namespace (via nsenter) and returns its stdout; fails with stderr.
pub fn run_in(netns_path: &str, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("nsenter")
        .arg(format!("--net={netns_path}"))
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} in {netns_path}"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// GET with curl from inside a namespace: (status, body).
pub fn http_get(netns_path: &str, url: &str) -> anyhow::Result<(u16, String)> {
    http_request(netns_path, "GET", url)
}

/// One HTTP request with curl inside a namespace: (status, body).
pub fn http_request(netns_path: &str, method: &str, url: &str) -> anyhow::Result<(u16, String)> {
    let out = run_in(
        netns_path,
        "curl",
        &[
            "-sS",
            "-X",
            method,
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
            url,
        ],
    )?;
    let (body, code) = out.rsplit_once('\n').context("curl printed no status")?;
    Ok((
        code.trim().parse().context("curl status code")?,
        body.to_string(),
    ))
}
