//! The L7 proxy's test harness: one namespace with only `lo` in it ([`L7Net`]), where
//! backends ([`Backend`], [`Nginx`]), the balancer ([`BalancerProcess`]) and clients all run,
//! so fixed ports are fine and nothing touches the host. Certificates come from a throwaway
//! CA ([`Certs`]). Every process, namespace and directory is removed by `Drop`, also when a
//! test panics.
//!
//! Clients run on a thread that entered the namespace, each call with its own current-thread
//! tokio runtime and an overall time limit: [`Client`] (HTTP/1.1, h2c, HTTPS with h2 or
//! HTTP/1.1 by ALPN, over TCP or a unix socket), [`raw_tcp`] (bytes sent slowly, whatever comes
//! back), [`websocket_echo`], and [`curl`].

use std::{
    ffi::OsStr,
    fs,
    future::Future,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    ops::Deref,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::{
    child::ChildGuard,
    netns::Netns,
    process::{BalancerProcess, balancer_binary},
    unique_suffix,
};

/// The admin address [`L7Net::start_balancer`] waits on (the config's default).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9100";
/// Time limit of one client call (connect, TLS, every request and body) unless set.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
const READY_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Binaries and scratch directories

/// The `l7_backend` binary: `$BALANCER_L7_BACKEND`, else the one next to [`balancer_binary`],
/// else the one next to the running test executable (cargo builds this package's binaries
/// before its integration tests, in the same target directory), else the workspace's debug
/// build.
pub fn l7_backend_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BALANCER_L7_BACKEND") {
        return PathBuf::from(path);
    }
    let beside = balancer_binary().with_file_name("l7_backend");
    if beside.is_file() {
        return beside;
    }
    // Integration tests live in target/<profile>/deps/.
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
    {
        for dir in [Some(deps), deps.parent()].into_iter().flatten() {
            let candidate = dir.join("l7_backend");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/l7_backend")
}

/// Debian's nginx: `$BALANCER_NGINX`, else `/usr/sbin/nginx` (`cargo xtask setup` installs it).
pub fn nginx_binary() -> PathBuf {
    std::env::var_os("BALANCER_NGINX")
        .map_or_else(|| PathBuf::from("/usr/sbin/nginx"), PathBuf::from)
}

/// A scratch directory under the system temp dir, removed with its contents on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(format!("balancer-{tag}-{}", unique_suffix()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes `toml` to `DIR/balancer.toml` and returns its path (the balancer's log will be
/// `DIR/balancer.log`, see [`BalancerProcess::start`]).
pub fn write_config(dir: &Path, toml: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("balancer.toml");
    fs::write(&path, toml).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A process started inside a namespace (through nsenter, which execs it, so the pid is the
/// program's). Its stdout is collected line by line; stderr goes to a file or is inherited.
/// SIGTERM, then SIGKILL after 5 s, on drop.
pub struct NetnsProcess {
    child: ChildGuard,
    label: String,
    stdout: Arc<(Mutex<Vec<String>>, Condvar)>,
    stderr_path: Option<PathBuf>,
}

impl NetnsProcess {
    /// Starts `program ARGS…` in `netns`; stderr to `stderr_path` (created), else inherited.
    pub fn spawn(
        netns: &Netns,
        program: impl AsRef<OsStr>,
        args: &[&str],
        stderr_path: Option<&Path>,
    ) -> anyhow::Result<NetnsProcess> {
        let program = program.as_ref();
        let label = Path::new(program)
            .file_name()
            .unwrap_or(program)
            .to_string_lossy()
            .into_owned();
        let stderr = match stderr_path {
            Some(path) => Stdio::from(
                fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
            ),
            None => Stdio::inherit(),
        };
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", netns.path()))
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {label} under nsenter (package util-linux)"))?;
        let stdout = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let pipe = child.stdout.take().expect("piped");
        let collected = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let (lines, changed) = &*collected;
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                changed.notify_all();
            }
        });
        Ok(NetnsProcess {
            child: ChildGuard::new(child, label.clone(), Duration::from_secs(5)),
            label,
            stdout,
            stderr_path: stderr_path.map(Path::to_path_buf),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Its stdout lines so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Its stderr so far (empty when inherited).
    pub fn stderr(&self) -> String {
        self.stderr_path
            .as_ref()
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Waits until `ready` holds for its stdout lines; fails if it exits or `limit` passes.
    pub fn wait_for_stdout(
        &mut self,
        limit: Duration,
        ready: impl Fn(&[String]) -> bool,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + limit;
        loop {
            let lines = {
                let (lines, changed) = &*self.stdout;
                let lines = lines.lock().unwrap_or_else(|e| e.into_inner());
                if ready(&lines) {
                    return Ok(lines.clone());
                }
                let (lines, _) = changed
                    .wait_timeout(lines, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner());
                if ready(&lines) {
                    return Ok(lines.clone());
                }
                lines.clone()
            };
            if let Some(status) = self.child.exited() {
                bail!(
                    "{} exited ({status}) before it was ready; stdout {lines:?}; stderr:\n{}",
                    self.label,
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready within {limit:?}; stdout {lines:?}; stderr:\n{}",
                    self.label,
                    self.stderr()
                );
            }
        }
    }

    /// Sends `signal` without waiting; fails if it has exited.
    pub fn signal(&mut self, signal: libc::c_int) -> anyhow::Result<()> {
        self.child.signal(signal)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Waits up to `limit` for it to exit by itself, then SIGKILL. Returns the exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        Ok(self.child.wait_exit(limit)?.status)
    }

    /// SIGTERM (unless it has exited), wait up to 5 s, then SIGKILL. Returns the exit status.
    /// Drop does the same.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        Ok(self.child.stop()?.status)
    }
}

// ---------------------------------------------------------------------------------------------
// The namespace

/// A namespace of its own (unique name, `lo` up with 127.0.0.1 and ::1) and a scratch
/// directory for configs, logs and unix sockets. On drop, whatever still runs in the
/// namespace is killed, then the namespace and the directory are removed. Derefs to [`Netns`],
/// so it goes wherever a `&Netns` does (e.g. [`BalancerProcess::start`]).
pub struct L7Net {
    netns: Netns,
    dir: TempDir,
}

impl L7Net {
    /// `tag` names the namespace (`l7-TAG-SUFFIX`) and the directory, for debugging.
    pub fn new(tag: &str) -> anyhow::Result<L7Net> {
        let suffix = unique_suffix();
        let netns = Netns::new(format!("l7-{tag}-{suffix}"))?;
        let dir = TempDir::new(&format!("l7-{tag}"))?;
        Ok(L7Net { netns, dir })
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The scratch directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `program ARGS…` in the namespace, stderr to `DIR/LABEL.stderr`.
    pub fn spawn(
        &self,
        label: &str,
        program: impl AsRef<OsStr>,
        args: &[&str],
    ) -> anyhow::Result<NetnsProcess> {
        let stderr = self.dir().join(format!("{label}.stderr"));
        NetnsProcess::spawn(&self.netns, program, args, Some(&stderr))
    }

    /// [`write_config`] into the scratch directory.
    pub fn write_config(&self, toml: &str) -> anyhow::Result<PathBuf> {
        write_config(self.dir(), toml)
    }

    /// Writes `toml` and starts `balancer run --config` on it, waiting for the admin
    /// listener at [`DEFAULT_ADMIN`] (configs with another `admin.listen` use
    /// [`BalancerProcess::start`]). Its log is `DIR/balancer.log`.
    pub fn start_balancer(&self, toml: &str) -> anyhow::Result<BalancerProcess> {
        let config = self.write_config(toml)?;
        BalancerProcess::start(&self.netns, &config, DEFAULT_ADMIN)
    }
}

impl Deref for L7Net {
    type Target = Netns;

    fn deref(&self) -> &Netns {
        &self.netns
    }
}

impl Drop for L7Net {
    fn drop(&mut self) {
        // Leftovers (nginx workers, a process whose handle leaked): the namespace would live on.
        let output = Command::new("ip")
            .args(["netns", "pids", self.netns.name()])
            .output();
        if let Ok(output) = output {
            for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: kill(2); the pid is in a namespace only this value's owner uses.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

/// Waits until a TCP connect to `addr` from inside `netns` succeeds.
pub fn wait_for_tcp(netns: &Netns, addr: &str, limit: Duration) -> anyhow::Result<()> {
    let target: SocketAddr = addr
        .parse()
        .with_context(|| format!("{addr} is not IP:PORT"))?;
    netns.run(move || {
        let deadline = Instant::now() + limit;
        loop {
            match TcpStream::connect_timeout(&target, Duration::from_millis(500)) {
                Ok(_) => return Ok(()),
                Err(err) if Instant::now() > deadline => {
                    bail!("nothing accepts on {target} after {limit:?}: {err}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })?
}

// ---------------------------------------------------------------------------------------------
// Backends

/// One `l7_backend` process (see its module doc for the endpoints); SIGTERM on drop.
pub struct Backend {
    process: NetnsProcess,
    name: String,
    addresses: Vec<String>,
    netns_path: String,
}

/// `/stats` of a backend, which leaves its own traffic out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendStats {
    /// Connections accepted.
    pub connections: u64,
    /// Requests answered or being answered.
    pub requests: u64,
    /// Connections open now.
    pub open: i64,
}

impl Backend {
    /// Starts `l7_backend --name NAME` on `listen`: each `IP:PORT` (port 0: any) or
    /// `unix:PATH`. Waits until every socket is bound.
    pub fn start(netns: &Netns, name: &str, listen: &[&str]) -> anyhow::Result<Backend> {
        Self::start_with(netns, name, listen, false)
    }

    /// Like [`Self::start`], also serving HTTP/2 with prior knowledge (h2c).
    pub fn start_h2c(netns: &Netns, name: &str, listen: &[&str]) -> anyhow::Result<Backend> {
        Self::start_with(netns, name, listen, true)
    }

    fn start_with(
        netns: &Netns,
        name: &str,
        listen: &[&str],
        h2c: bool,
    ) -> anyhow::Result<Backend> {
        let binary = l7_backend_binary();
        ensure!(
            binary.is_file(),
            "{} does not exist: build it with `cargo build -p balancer-tests --bin l7_backend` \
             (cargo test builds it) or set BALANCER_L7_BACKEND",
            binary.display()
        );
        ensure!(!listen.is_empty(), "backend {name}: nothing to listen on");
        let mut args = vec!["--name", name];
        for address in listen {
            match address.strip_prefix("unix:") {
                Some(path) => args.extend(["--unix", path]),
                None => args.extend(["--listen", address]),
            }
        }
        if h2c {
            args.push("--h2c");
        }
        let mut process = NetnsProcess::spawn(netns, &binary, &args, None)?;
        let prefix = format!("listening {name} ");
        let lines = process
            .wait_for_stdout(READY_TIMEOUT, |lines| {
                lines.iter().filter(|l| l.starts_with(&prefix)).count() == listen.len()
            })
            .with_context(|| format!("backend {name} on {listen:?} in {}", netns.name()))?;
        let addresses = lines
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(str::to_string)
            .collect();
        Ok(Backend {
            process,
            name: name.to_string(),
            addresses,
            netns_path: netns.path(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every socket as bound: `IP:PORT` (`[IPv6]:PORT`) or `unix:PATH`, in `listen` order.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The first socket.
    pub fn address(&self) -> &str {
        &self.addresses[0]
    }

    /// The first socket as a pool server `url`: `http://IP:PORT` or `unix:PATH`.
    pub fn url(&self) -> String {
        let address = self.address();
        if address.starts_with("unix:") {
            address.to_string()
        } else {
            format!("http://{address}")
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Its counters, from `/stats` on its first socket (which does not count itself).
    pub fn stats(&self) -> anyhow::Result<BackendStats> {
        let client = match self.address().strip_prefix("unix:") {
            Some(path) => Client::unix_path(self.netns_path.clone(), path),
            None => Client::tcp_path(self.netns_path.clone(), self.address()),
        };
        let reply = client.send(&Request::get("/stats"))?;
        ensure!(
            reply.status == 200,
            "backend {} /stats: status {}",
            self.name,
            reply.status
        );
        let json: serde_json::Value =
            serde_json::from_slice(&reply.body).context("backend /stats is not JSON")?;
        let field = |key: &str| json[key].as_i64().with_context(|| format!("/stats {key}"));
        Ok(BackendStats {
            connections: field("connections")? as u64,
            requests: field("requests")? as u64,
            open: field("open")?,
        })
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// SIGTERM and wait. Returns the exit status (0 on a clean stop).
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        self.process.stop()
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A throwaway CA and the leaf certificates it issued, as PEM files in a temp dir (removed on
/// drop).
pub struct Certs {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_path: PathBuf,
}

/// PEM files of one issued certificate.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The chain: leaf, then the CA certificate.
    pub cert: PathBuf,
    pub key: PathBuf,
    pub sans: Vec<String>,
}

impl Certs {
    /// A new CA ("balancer test CA SUFFIX", unique so two CAs are never confused), written
    /// to `ca.pem`.
    pub fn new() -> anyhow::Result<Certs> {
        let dir = TempDir::new("certs")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(
            DnType::CommonName,
            format!("balancer test CA {}", unique_suffix()),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let ca_path = dir.path().join("ca.pem");
        fs::write(&ca_path, ca.pem())?;
        Ok(Certs { dir, ca, ca_path })
    }

    /// The CA certificate (PEM), for clients.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues a server certificate for `sans` (DNS names such as `a.test` or `*.a.test`, or IP
    /// literals; the first is also the common name) into `NAME.pem` (leaf + CA) and
    /// `NAME.key`, replacing files of the same name.
    pub fn issue(&self, name: &str, sans: &[&str]) -> anyhow::Result<CertFiles> {
        self.issue_with(name, sans, false, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// Like [`Self::issue`], valid only in the year 2000.
    pub fn issue_expired(&self, name: &str, sans: &[&str]) -> anyhow::Result<CertFiles> {
        self.issue_with(name, sans, true, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// Like [`Self::issue`], a client certificate (for mTLS): extended key usage clientAuth.
    pub fn issue_client(&self, name: &str, sans: &[&str]) -> anyhow::Result<CertFiles> {
        self.issue_with(name, sans, false, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue_with(
        &self,
        name: &str,
        sans: &[&str],
        expired: bool,
        purpose: ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<CertFiles> {
        ensure!(!sans.is_empty(), "certificate {name}: no SANs");
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans.clone())
            .with_context(|| format!("certificate {name}: SANs {sans:?}"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, sans[0].as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        params.use_authority_key_identifier_extension = true;
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2000, 12, 31);
        }
        let key = KeyPair::generate()?;
        let issuer: &rcgen::Issuer<'_, KeyPair> = &self.ca;
        let cert = params.signed_by(&key, issuer)?;
        let files = CertFiles {
            cert: self.dir().join(format!("{name}.pem")),
            key: self.dir().join(format!("{name}.key")),
            sans,
        };
        fs::write(&files.cert, format!("{}{}", cert.pem(), self.ca.pem()))?;
        fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }
}

impl CertFiles {
    /// `{ cert = "…", key = "…" }`, for a listener's `tls.certificates`.
    pub fn toml(&self) -> String {
        format!(
            "{{ cert = {:?}, key = {:?} }}",
            self.cert.display().to_string(),
            self.key.display().to_string()
        )
    }

    /// A rustls server config with this certificate and `alpn`, for TLS servers in tests.
    pub fn server_config(&self, alpn: &[&str]) -> anyhow::Result<Arc<ServerConfig>> {
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .with_context(|| format!("reading {}", self.cert.display()))?
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("reading {}", self.key.display()))?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(Arc::new(config))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP clients

/// One request. `uri` is the path and query; the `Host` (HTTP/1.1) or `:authority` (HTTP/2) is
/// `host`, else the address connected to.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub uri: String,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, uri: &str) -> Request {
        Request {
            method: method.to_string(),
            uri: uri.to_string(),
            host: None,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(uri: &str) -> Request {
        Request::new("GET", uri)
    }

    pub fn post(uri: &str, body: impl Into<Vec<u8>>) -> Request {
        Request::new("POST", uri).body(body)
    }

    pub fn host(mut self, host: &str) -> Request {
        self.host = Some(host.to_string());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }
}

/// One response, with what the connection negotiated.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// "HTTP/1.1" or "HTTP/2.0".
    pub version: String,
    /// The ALPN protocol the server chose (TLS only).
    pub alpn: Option<String>,
    /// "TLSv1_3", "TLSv1_2" (TLS only).
    pub tls_version: Option<String>,
    /// In the order received (names lowercase).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// DNS names and IP addresses of the server's certificate (TLS only).
    pub peer_cert_sans: Vec<String>,
}

impl Reply {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// Every value of header `name` (any case), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (an `l7_backend` default answer); panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "expected a JSON body (status {}), got {:?}: {err}",
                self.status,
                self.text()
            )
        })
    }
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// TLS settings of a client connection.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// PEM file of the CA to trust (e.g. [`Certs::ca_path`]).
    pub ca: PathBuf,
    /// The SNI sent; `None` sends none.
    pub sni: Option<String>,
    /// Offered in order; empty offers no ALPN (the server then speaks HTTP/1.1).
    pub alpn: Vec<String>,
    /// Check the certificate's names against `sni` (the chain is always checked). Without an
    /// SNI there is nothing to check: inspect [`Reply::peer_cert_sans`].
    pub check_name: bool,
    /// Offer TLS 1.2 only.
    pub tls12_only: bool,
}

impl TlsOptions {
    /// Trusts `ca`, no SNI, ALPN `h2` then `http/1.1`.
    pub fn new(ca: &Path) -> TlsOptions {
        TlsOptions {
            ca: ca.to_path_buf(),
            sni: None,
            alpn: vec!["h2".into(), "http/1.1".into()],
            check_name: true,
            tls12_only: false,
        }
    }

    pub fn sni(mut self, name: &str) -> TlsOptions {
        self.sni = Some(name.to_string());
        self
    }

    pub fn alpn(mut self, protocols: &[&str]) -> TlsOptions {
        self.alpn = protocols.iter().map(|p| p.to_string()).collect();
        self
    }

    /// Accept a certificate that does not name the SNI (to see which one the server picks).
    pub fn skip_name_check(mut self) -> TlsOptions {
        self.check_name = false;
        self
    }

    pub fn tls12_only(mut self) -> TlsOptions {
        self.tls12_only = true;
        self
    }
}

#[derive(Debug, Clone)]
enum Target {
    Tcp(String),
    Unix(PathBuf),
}

/// An HTTP client inside a namespace. Every [`Client::send`] / [`Client::send_all`] opens one
/// connection (TCP or unix, TLS if set) and closes it at the end.
#[derive(Debug, Clone)]
pub struct Client {
    netns_path: String,
    target: Target,
    tls: Option<TlsOptions>,
    h2c: bool,
    timeout: Duration,
}

impl Client {
    /// To `addr` (`IP:PORT`, `[IPv6]:PORT`) in `netns`: HTTP/1.1 unless [`Self::tls`] or
    /// [`Self::h2c`].
    pub fn tcp(netns: &Netns, addr: &str) -> Client {
        Client::tcp_path(netns.path(), addr)
    }

    /// To the unix socket at `path`.
    pub fn unix(netns: &Netns, path: impl AsRef<Path>) -> Client {
        Client::unix_path(netns.path(), path)
    }

    fn tcp_path(netns_path: String, addr: &str) -> Client {
        Client {
            netns_path,
            target: Target::Tcp(addr.to_string()),
            tls: None,
            h2c: false,
            timeout: CLIENT_TIMEOUT,
        }
    }

    fn unix_path(netns_path: String, path: impl AsRef<Path>) -> Client {
        Client {
            netns_path,
            target: Target::Unix(path.as_ref().to_path_buf()),
            tls: None,
            h2c: false,
            timeout: CLIENT_TIMEOUT,
        }
    }

    /// TLS; HTTP/2 if the server picks `h2` by ALPN, else HTTP/1.1.
    pub fn tls(mut self, options: TlsOptions) -> Client {
        self.tls = Some(options);
        self
    }

    /// HTTP/2 with prior knowledge on a plain connection.
    pub fn h2c(mut self) -> Client {
        self.h2c = true;
        self
    }

    /// Time limit of one call (default [`CLIENT_TIMEOUT`]).
    pub fn timeout(mut self, limit: Duration) -> Client {
        self.timeout = limit;
        self
    }

    /// One request on a new connection.
    pub fn send(&self, request: &Request) -> anyhow::Result<Reply> {
        let mut replies = self.send_all(std::slice::from_ref(request))?;
        Ok(replies.remove(0))
    }

    /// The requests one after the other on one connection (keep-alive, or HTTP/2 streams).
    pub fn send_all(&self, requests: &[Request]) -> anyhow::Result<Vec<Reply>> {
        let client = self.clone();
        let requests = requests.to_vec();
        let what = format!("{:?} {}", self.target, describe(&requests));
        run_async(&self.netns_path, self.timeout, async move {
            client.exchange(requests).await
        })
        .with_context(|| what)
    }

    /// Only the TLS handshake: what was negotiated and the server's certificate names.
    pub fn handshake(&self) -> anyhow::Result<TlsInfo> {
        let client = self.clone();
        run_async(&self.netns_path, self.timeout, async move {
            let options = client.tls.as_ref().context("handshake needs TLS options")?;
            let stream = client.connect().await?;
            let (_, info) = tls_connect(stream, options, &client.authority()).await?;
            Ok(info)
        })
        .with_context(|| format!("TLS handshake with {:?}", self.target))
    }

    fn authority(&self) -> String {
        match &self.target {
            Target::Tcp(addr) => addr.clone(),
            Target::Unix(_) => "localhost".to_string(),
        }
    }

    async fn connect(&self) -> anyhow::Result<Box<dyn Io>> {
        Ok(match &self.target {
            Target::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .with_context(|| format!("connecting to {addr}"))?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            Target::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .with_context(|| format!("connecting to {}", path.display()))?,
            ),
        })
    }

    async fn exchange(&self, requests: Vec<Request>) -> anyhow::Result<Vec<Reply>> {
        let stream = self.connect().await?;
        let authority = self.authority();
        let (stream, info) = match &self.tls {
            Some(options) => {
                let (stream, info) = tls_connect(stream, options, &authority).await?;
                (stream, Some(info))
            }
            None => (stream, None),
        };
        let h2 = match &info {
            Some(info) => info.alpn.as_deref() == Some("h2"),
            None => self.h2c,
        };
        let scheme = if info.is_some() { "https" } else { "http" };
        let io = TokioIo::new(stream);
        let mut replies = Vec::new();
        if h2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .context("HTTP/2 handshake")?;
            tokio::spawn(connection);
            for request in requests {
                let uri = format!(
                    "{scheme}://{}{}",
                    request.host.as_deref().unwrap_or(&authority),
                    request.uri
                );
                let built = build_request(&request, &uri, None)?;
                let response = sender.send_request(built).await.context("HTTP/2 request")?;
                replies.push(read_reply(response, info.as_ref()).await?);
            }
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .context("HTTP/1.1 handshake")?;
            tokio::spawn(connection);
            for request in requests {
                sender
                    .ready()
                    .await
                    .context("connection closed before the next request")?;
                let host = request.host.clone().unwrap_or_else(|| authority.clone());
                let built = build_request(&request, &request.uri, Some(&host))?;
                let response = sender
                    .send_request(built)
                    .await
                    .context("HTTP/1.1 request")?;
                replies.push(read_reply(response, info.as_ref()).await?);
            }
        }
        Ok(replies)
    }
}

/// What a TLS handshake settled.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    pub alpn: Option<String>,
    pub tls_version: Option<String>,
    pub peer_cert_sans: Vec<String>,
}

/// One request over HTTP/1.1 to `addr` in `netns`.
pub fn http_request(netns: &Netns, addr: &str, request: &Request) -> anyhow::Result<Reply> {
    Client::tcp(netns, addr).send(request)
}

/// One request over TLS to `addr` in `netns` (HTTP/2 or HTTP/1.1 as ALPN decides).
pub fn https_request(
    netns: &Netns,
    addr: &str,
    tls: &TlsOptions,
    request: &Request,
) -> anyhow::Result<Reply> {
    Client::tcp(netns, addr).tls(tls.clone()).send(request)
}

/// A byte stream a client can speak over.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn describe(requests: &[Request]) -> String {
    requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect::<Vec<_>>()
        .join(", ")
}

fn build_request(
    request: &Request,
    uri: &str,
    host: Option<&str>,
) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    let mut builder = hyper::Request::builder()
        .method(request.method.as_str())
        .uri(uri);
    if let Some(host) = host {
        builder = builder.header(hyper::header::HOST, host);
    }
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Full::new(Bytes::from(request.body.clone())))
        .with_context(|| format!("building {} {uri}", request.method))
}

async fn read_reply(
    response: hyper::Response<hyper::body::Incoming>,
    info: Option<&TlsInfo>,
) -> anyhow::Result<Reply> {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .with_context(|| format!("reading the body of a {} response", parts.status))?
        .to_bytes();
    let info = info.cloned().unwrap_or_default();
    Ok(Reply {
        status: parts.status.as_u16(),
        version: format!("{:?}", parts.version),
        alpn: info.alpn,
        tls_version: info.tls_version,
        headers: header_pairs(&parts.headers),
        body: body.to_vec(),
        peer_cert_sans: info.peer_cert_sans,
    })
}

fn header_pairs(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Runs `future` on a current-thread runtime on a thread inside the namespace, within `limit`.
fn run_async<T: Send + 'static>(
    netns_path: &str,
    limit: Duration,
    future: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    crate::in_netns(netns_path, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a tokio runtime")?;
        runtime.block_on(async move {
            tokio::time::timeout(limit, future)
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {limit:?}"))?
        })
    })?
}

fn client_tls_config(options: &TlsOptions) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&options.ca)
        .with_context(|| format!("reading CA {}", options.ca.display()))?
    {
        roots.add(cert?)?;
    }
    let inner =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let verifier = Arc::new(Verifier {
        inner,
        check_name: options.check_name && options.sni.is_some(),
    });
    let builder = ClientConfig::builder_with_provider(provider);
    let builder = if options.tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])?
    } else {
        builder.with_safe_default_protocol_versions()?
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = options.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.enable_sni = options.sni.is_some();
    Ok(Arc::new(config))
}

async fn tls_connect(
    stream: Box<dyn Io>,
    options: &TlsOptions,
    authority: &str,
) -> anyhow::Result<(Box<dyn Io>, TlsInfo)> {
    let config = client_tls_config(options)?;
    // Without SNI the name is only used for the (then skipped) name check.
    let name = options
        .sni
        .clone()
        .unwrap_or_else(|| "no-sni.invalid".into());
    let server_name = ServerName::try_from(name.clone())
        .with_context(|| format!("{name:?} is not a server name"))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, stream)
        .await
        .with_context(|| format!("TLS handshake with {authority} (SNI {:?})", options.sni))?;
    let (_, connection) = stream.get_ref();
    let info = TlsInfo {
        alpn: connection
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        tls_version: connection.protocol_version().map(|v| format!("{v:?}")),
        peer_cert_sans: connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| certificate_sans(leaf))
            .transpose()?
            .unwrap_or_default(),
    };
    Ok((Box::new(stream), info))
}

/// DNS names and IP addresses in a certificate's subjectAltName.
pub fn certificate_sans(der: &[u8]) -> anyhow::Result<Vec<String>> {
    use x509_parser::{extensions::GeneralName, prelude::FromDer};
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|err| anyhow::anyhow!("parsing the server certificate: {err}"))?;
    let Some(san) = cert
        .subject_alternative_name()
        .map_err(|err| anyhow::anyhow!("server certificate SANs: {err}"))?
    else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                16 => {
                    Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string())
                }
                _ => None,
            },
            _ => None,
        })
        .collect())
}

/// webpki verification, where a certificate that does not name the server can be accepted
/// (the chain is checked before the name, so that error means the chain was fine).
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any certificate (like wrk and curl -k) but checks the handshake signatures, as
/// every TLS client must (OpenSSL with `SSL_VERIFY_NONE` does too). For clients that measure,
/// not check: a test that checks the certificate uses [`Verifier`].
#[derive(Debug)]
pub struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl AnyCertificate {
    /// Checks signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> AnyCertificate {
        AnyCertificate(provider)
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// Raw TCP

/// What [`raw_tcp`] saw.
#[derive(Debug, Clone)]
pub struct RawOutcome {
    /// Every byte the server sent.
    pub received: Vec<u8>,
    /// Chunks written before the server closed, a write failed, or all were sent.
    pub chunks_sent: usize,
    /// The first write error (e.g. a reset after the server closed).
    pub write_error: Option<String>,
    /// When the server closed the connection (EOF or reset), from the connect.
    pub closed_after: Option<Duration>,
}

impl RawOutcome {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }
}

/// Connects to `addr` in `netns` and writes `chunks` with `gap` between them (a slowloris
/// with many small chunks), while reading whatever comes back. Stops writing when the
/// server closes; after the last chunk keeps reading for up to `wait` (until the server
/// closes).
pub fn raw_tcp(
    netns: &Netns,
    addr: &str,
    chunks: &[&[u8]],
    gap: Duration,
    wait: Duration,
) -> anyhow::Result<RawOutcome> {
    let target: SocketAddr = addr
        .parse()
        .with_context(|| format!("{addr} is not IP:PORT"))?;
    let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
    netns.run(move || -> anyhow::Result<RawOutcome> {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))
            .with_context(|| format!("connecting to {target}"))?;
        stream.set_nodelay(true)?;
        let start = Instant::now();
        let mut reader = stream.try_clone()?;
        reader.set_read_timeout(Some(Duration::from_millis(50)))?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let closed: Arc<Mutex<Option<Duration>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reading = {
            let (received, closed, stop) = (received.clone(), closed.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buffer = [0u8; 16 * 1024];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match reader.read(&mut buffer) {
                        Ok(0) => {
                            *closed.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(start.elapsed());
                            return;
                        }
                        Ok(n) => received
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend_from_slice(&buffer[..n]),
                        Err(err)
                            if matches!(
                                err.kind(),
                                std::io::ErrorKind::WouldBlock
                                    | std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::Interrupted
                            ) => {}
                        Err(_) => {
                            *closed.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(start.elapsed());
                            return;
                        }
                    }
                }
            })
        };
        let is_closed = || closed.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        let mut chunks_sent = 0;
        let mut write_error = None;
        for (i, chunk) in chunks.iter().enumerate() {
            if i > 0 {
                let until = Instant::now() + gap;
                while Instant::now() < until && !is_closed() {
                    std::thread::sleep(gap.min(Duration::from_millis(10)));
                }
            }
            if is_closed() {
                break;
            }
            if let Err(err) = stream.write_all(chunk) {
                write_error = Some(err.to_string());
                break;
            }
            chunks_sent += 1;
        }
        let until = Instant::now() + wait;
        while Instant::now() < until && !is_closed() {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = reading.join();
        let received = std::mem::take(&mut *received.lock().unwrap_or_else(|e| e.into_inner()));
        let closed_after = *closed.lock().unwrap_or_else(|e| e.into_inner());
        Ok(RawOutcome {
            received,
            chunks_sent,
            write_error,
            closed_after,
        })
    })?
}

// ---------------------------------------------------------------------------------------------
// WebSocket

/// What [`websocket_echo`] got.
#[derive(Debug, Clone)]
pub struct WsEcho {
    /// Of the handshake response (101).
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The text messages that came back, in order.
    pub echoes: Vec<String>,
}

/// Connects to `addr` in `netns` (TLS with `tls`, ALPN forced to `http/1.1`), opens `url`
/// (`ws://HOST/PATH` or `wss://…`: HOST is the `Host` header), sends each message as text
/// and waits for one message back after each, then closes.
pub fn websocket_echo(
    netns: &Netns,
    addr: &str,
    url: &str,
    tls: Option<&TlsOptions>,
    messages: &[&str],
) -> anyhow::Result<WsEcho> {
    let addr = addr.to_string();
    let url = url.to_string();
    let tls = tls.cloned().map(|t| t.alpn(&["http/1.1"]));
    let messages: Vec<String> = messages.iter().map(|m| m.to_string()).collect();
    let what = format!("WebSocket {url} via {addr}");
    run_async(&netns.path(), CLIENT_TIMEOUT, async move {
        let tcp = tokio::net::TcpStream::connect(addr.as_str())
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Io> = match &tls {
            Some(options) => tls_connect(Box::new(tcp), options, &addr).await?.0,
            None => Box::new(tcp),
        };
        let (mut socket, response) =
            match tokio_tungstenite::client_async(url.as_str(), stream).await {
                Ok(done) => done,
                Err(tungstenite::Error::Http(response)) => bail!(
                    "handshake refused: status {}, body {:?}",
                    response.status(),
                    response
                        .body()
                        .as_deref()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default()
                ),
                Err(err) => return Err(err).context("WebSocket handshake"),
            };
        let mut echoes = Vec::new();
        for message in messages {
            socket
                .send(Message::text(message.clone()))
                .await
                .with_context(|| format!("sending {message:?}"))?;
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(text))) => {
                        echoes.push(text.to_string());
                        break;
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        echoes.push(String::from_utf8_lossy(&bytes).into_owned());
                        break;
                    }
                    Some(Ok(Message::Close(frame))) => {
                        bail!(
                            "closed by the server ({frame:?}) after {} echoes",
                            echoes.len()
                        )
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => {
                        return Err(err).with_context(|| format!("waiting for {message:?} back"));
                    }
                    None => bail!("connection ended after {} echoes", echoes.len()),
                }
            }
        }
        let _ = socket.close(None).await;
        Ok(WsEcho {
            status: response.status().as_u16(),
            headers: header_pairs(response.headers()),
            echoes,
        })
    })
    .with_context(|| what)
}

// ---------------------------------------------------------------------------------------------
// curl

/// What [`curl`] got: the last response (after redirects with `-L`, or a 100 Continue).
#[derive(Debug, Clone)]
pub struct CurlReply {
    pub status: u16,
    /// curl's `%{http_version}`: "1.1", "2", …
    pub http_version: String,
    /// As received (HTTP/2 names lowercase).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl CurlReply {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs `curl -sS ARGS…` inside `netns` (with `--max-time 10` unless ARGS set one; `-D`, `-o`
/// and `-w` are used by this function). Fails when curl does (its exit code and message), so
/// connection and TLS errors are errors.
pub fn curl(netns: &Netns, args: &[&str]) -> anyhow::Result<CurlReply> {
    let scratch = TempDir::new("curl")?;
    let headers_path = scratch.path().join("headers");
    let body_path = scratch.path().join("body");
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", netns.path()))
        .args(["curl", "-sS", "-D"])
        .arg(&headers_path)
        .arg("-o")
        .arg(&body_path)
        .args(["-w", "%{http_code} %{http_version}"]);
    if !args.iter().any(|a| *a == "--max-time" || *a == "-m") {
        command.args(["--max-time", "10"]);
    }
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running curl under nsenter (packages curl, util-linux)")?;
    if !output.status.success() {
        bail!(
            "curl {}: {} ({})",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim(),
            output.status
        );
    }
    let written = String::from_utf8_lossy(&output.stdout).into_owned();
    let (code, version) = written
        .split_once(' ')
        .with_context(|| format!("curl printed {written:?}"))?;
    let head = fs::read_to_string(&headers_path).unwrap_or_default();
    // One block per response (1xx, redirects): the last one is the answer.
    let block = head
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or("");
    let headers = block
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    Ok(CurlReply {
        status: code.trim().parse().context("curl status code")?,
        http_version: version.trim().to_string(),
        headers,
        body: fs::read(&body_path).unwrap_or_default(),
    })
}

// ---------------------------------------------------------------------------------------------
// nginx

/// Debian's nginx in a namespace, as one process (`master_process off`), all its files under a
/// prefix directory (removed on drop): config, pid, logs, temp files, and `html/` for
/// `root html;`. SIGTERM on drop.
pub struct Nginx {
    process: NetnsProcess,
    prefix: TempDir,
}

impl Nginx {
    /// Starts nginx with `servers` (the `server { … }` blocks of the `http` block; relative
    /// paths are relative to [`Self::prefix`]) and waits until it has bound its sockets.
    pub fn start(netns: &Netns, servers: &str) -> anyhow::Result<Nginx> {
        let binary = nginx_binary();
        ensure!(
            binary.is_file(),
            "{} does not exist: run `cargo xtask setup` (it installs Debian's nginx)",
            binary.display()
        );
        let prefix = TempDir::new("nginx")?;
        let root = prefix.path();
        for dir in ["html", "logs", "tmp"] {
            fs::create_dir_all(root.join(dir))?;
        }
        let p = root.display();
        let config = format!(
            "# Written by the balancer test harness.
master_process off;
worker_processes 1;
error_log {p}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    types {{
        text/html html htm;
        text/plain txt;
        text/css css;
        application/javascript js;
        application/json json;
        image/png png;
    }}
    default_type application/octet-stream;
    access_log {p}/logs/access.log;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    sendfile on;
    keepalive_timeout 65;
{servers}
}}
"
        );
        let config_path = root.join("nginx.conf");
        fs::write(&config_path, config)?;
        let pid_path = root.join("logs/nginx.pid");
        let prefix_arg = format!("{p}/");
        let error_arg = format!("{p}/logs/error.log");
        let config_arg = config_path.display().to_string();
        let globals = format!("daemon off; pid {};", pid_path.display());
        let stderr = root.join("logs/stderr");
        let mut process = NetnsProcess::spawn(
            netns,
            &binary,
            &[
                "-p",
                &prefix_arg,
                "-e",
                &error_arg,
                "-c",
                &config_arg,
                "-g",
                &globals,
            ],
            Some(&stderr),
        )?;
        let nginx_log = || fs::read_to_string(root.join("logs/error.log")).unwrap_or_default();
        // The pid file is written once the listening sockets are open.
        let deadline = Instant::now() + READY_TIMEOUT;
        while !pid_path.is_file() {
            if !process.is_running() || Instant::now() > deadline {
                let status = process.stop().ok();
                bail!(
                    "nginx did not start in {} (exit {status:?}); stderr:\n{}\nerror log:\n{}",
                    netns.name(),
                    process.stderr(),
                    nginx_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Nginx { process, prefix })
    }

    /// The prefix directory.
    pub fn prefix(&self) -> &Path {
        self.prefix.path()
    }

    /// `PREFIX/html`, for `root html;`.
    pub fn html_dir(&self) -> PathBuf {
        self.prefix().join("html")
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.prefix().join("logs/error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        fs::read_to_string(self.prefix().join("logs/access.log")).unwrap_or_default()
    }

    /// SIGTERM and wait. Returns the exit status.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        self.process.stop()
    }
}

/// Like [`websocket_echo`], but over HTTP/2 (RFC 8441): TLS with ALPN h2, an extended CONNECT
/// with `:protocol = websocket` to `https://{authority}{path}`, then WebSocket frames on the
/// stream. `status` is the CONNECT response's (200 when accepted).
pub fn websocket_echo_h2(
    netns: &Netns,
    addr: &str,
    authority: &str,
    path: &str,
    tls: &TlsOptions,
    messages: &[&str],
) -> anyhow::Result<WsEcho> {
    let addr = addr.to_string();
    let uri = format!("https://{authority}{path}");
    let tls = tls.clone().alpn(&["h2"]);
    let messages: Vec<String> = messages.iter().map(|m| m.to_string()).collect();
    let what = format!("WebSocket over HTTP/2 to {uri} via {addr}");
    run_async(&netns.path(), CLIENT_TIMEOUT, async move {
        let tcp = tokio::net::TcpStream::connect(addr.as_str())
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let (stream, info) = tls_connect(Box::new(tcp), &tls, &addr).await?;
        ensure!(
            info.alpn.as_deref() == Some("h2"),
            "ALPN gave {:?}, not h2",
            info.alpn
        );
        let (mut sender, connection) =
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(stream))
                .await
                .context("HTTP/2 handshake")?;
        tokio::spawn(connection);
        // The server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) may not have arrived yet.
        let mut attempt = 0;
        let response = loop {
            sender
                .ready()
                .await
                .context("HTTP/2 connection not ready")?;
            let mut request = hyper::Request::builder()
                .method(hyper::Method::CONNECT)
                .uri(uri.as_str())
                .header("sec-websocket-version", "13")
                .body(http_body_util::Empty::<Bytes>::new())?;
            request
                .extensions_mut()
                .insert(hyper::ext::Protocol::from_static("websocket"));
            match sender.send_request(request).await {
                Ok(response) => break response,
                Err(_) if attempt < 20 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => return Err(err).context("extended CONNECT"),
            }
        };
        let status = response.status().as_u16();
        let headers = header_pairs(response.headers());
        ensure!(status == 200, "extended CONNECT answered {status}");
        let upgraded = hyper::upgrade::on(response)
            .await
            .context("the CONNECT stream")?;
        let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        let mut echoes = Vec::new();
        for message in messages {
            socket
                .send(Message::text(message.clone()))
                .await
                .with_context(|| format!("sending {message:?}"))?;
            match socket.next().await {
                Some(Ok(Message::Text(text))) => echoes.push(text.to_string()),
                other => bail!("waiting for {message:?} back, got {other:?}"),
            }
        }
        let _ = socket.close(None).await;
        Ok(WsEcho {
            status,
            headers,
            echoes,
        })
    })
    .with_context(|| what)
}
