//! What the L7 proxy's integration tests (`l7_pools`, `l7_lifecycle`, `l7_limits`,
//! `l7_tls_routing`) share: configs, the
//! balancer's admin views (`/api/state`, `/metrics`), a keep-alive HTTP/1.1 client that holds
//! its connection across calls ([`RawConn`]), and small waiting helpers.

#![allow(dead_code, reason = "each test file uses a part of it")]

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use balancer_tests::{BalancerProcess, Client, L7Net, Netns, Reply, Request};

/// The proxy's plain listener in every test (each test has its own namespace).
pub const LISTEN: &str = "127.0.0.1:8080";
/// A TLS listener, where a test has one.
pub const LISTEN_TLS: &str = "127.0.0.1:8443";

/// Starts the balancer on `toml` or panics with what went wrong (its log included).
pub fn start(net: &L7Net, toml: &str) -> BalancerProcess {
    net.start_balancer(toml)
        .unwrap_or_else(|err| panic!("balancer should start with\n{toml}\nbut: {err:#}"))
}

/// Unwraps `result`, or panics with `what`, the error and the balancer's log.
pub fn ok<T>(result: anyhow::Result<T>, what: &str, balancer: &BalancerProcess) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!(
            "{what}: expected success, got: {err:#}\nbalancer log:\n{}",
            balancer.log()
        ),
    }
}

/// `[[listener]]` "web" on [`LISTEN`], one route "main" for every request to pool "app",
/// and `[pool.app]` with `pool` (its keys, `servers` included).
pub fn one_pool_config(pool: &str) -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "{LISTEN}"

[[route]]
name = "main"
listener = "web"
pool = "app"

[pool.app]
{pool}
"#
    )
}

/// `servers = [ { url = "…", weight = … }, … ]`.
pub fn servers(list: &[(&str, u32)]) -> String {
    let entries: Vec<String> = list
        .iter()
        .map(|(url, weight)| format!("{{ url = \"{url}\", weight = {weight} }}"))
        .collect();
    format!("servers = [ {} ]", entries.join(", "))
}

/// The `server` field of an `l7_backend` default answer.
pub fn server_of(reply: &Reply) -> String {
    reply.json()["server"]
        .as_str()
        .unwrap_or_else(|| panic!("no server in {}", reply.text()))
        .to_string()
}

/// `GET /api/state` as JSON.
pub fn state(balancer: &BalancerProcess) -> serde_json::Value {
    let (status, body) = balancer
        .admin_get("/api/state")
        .unwrap_or_else(|err| panic!("GET /api/state: {err:#}; log:\n{}", balancer.log()));
    assert_eq!(status, 200, "GET /api/state: {body}");
    serde_json::from_str(&body)
        .unwrap_or_else(|err| panic!("/api/state is not JSON ({err}): {body}"))
}

/// The entry of server `url` of pool `pool` in `/api/state`.
pub fn server_state(balancer: &BalancerProcess, pool: &str, url: &str) -> serde_json::Value {
    let state = state(balancer);
    let pools = state["pools"].as_array().cloned().unwrap_or_default();
    let found = pools.iter().find(|p| p["name"] == pool).and_then(|p| {
        p["servers"]
            .as_array()
            .and_then(|servers| servers.iter().find(|s| s["url"] == url).cloned())
    });
    found.unwrap_or_else(|| panic!("no server {url} in pool {pool} of /api/state: {state:#}"))
}

/// A counter of a server in `/api/state` (`requests`, `connect_failures`, …).
pub fn server_counter(balancer: &BalancerProcess, pool: &str, url: &str, field: &str) -> u64 {
    let entry = server_state(balancer, pool, url);
    entry[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} of {url} is not a number: {entry}"))
}

/// The sum of `in_flight` over every server of every pool.
pub fn in_flight(balancer: &BalancerProcess) -> u64 {
    state(balancer)["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|pool| pool["servers"].as_array().cloned().unwrap_or_default())
        .map(|server| server["in_flight"].as_u64().unwrap_or(0))
        .sum()
}

/// `GET /metrics` as text.
pub fn metrics(balancer: &BalancerProcess) -> String {
    let (status, body) = balancer
        .admin_get("/metrics")
        .unwrap_or_else(|err| panic!("GET /metrics: {err:#}"));
    assert_eq!(status, 200, "GET /metrics: {body}");
    body
}

/// The value of the sample `series` (name and labels exactly as exposed, e.g.
/// `balancer_http_requests_total{route="main",pool="app",code="200"}`), if present.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Polls `f` every 20 ms until it returns `Some`, for up to `limit`; panics with `what`.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `request` with `client` on a thread (its own connection); join for the result.
pub fn spawn_send(client: &Client, request: Request) -> JoinHandle<anyhow::Result<Reply>> {
    let client = client.clone();
    std::thread::spawn(move || client.send(&request))
}

/// Whether a TCP connect to `addr` inside `netns` is refused (nothing listening).
pub fn connect_refused(netns: &Netns, addr: &str) -> bool {
    let target: SocketAddr = addr.parse().expect("IP:PORT");
    netns
        .run(move || TcpStream::connect_timeout(&target, Duration::from_secs(2)))
        .expect("enter the namespace")
        .is_err_and(|err| err.kind() == std::io::ErrorKind::ConnectionRefused)
}

// ---------------------------------------------------------------------------------------------
// A keep-alive HTTP/1.1 connection held across calls

/// One response read by [`RawConn`].
#[derive(Debug, Clone)]
pub struct RawReply {
    pub status: u16,
    /// Names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "expected a JSON body (status {}), got {:?}: {err}",
                self.status,
                self.text()
            )
        })
    }

    pub fn server(&self) -> String {
        self.json()["server"]
            .as_str()
            .unwrap_or_else(|| panic!("no server in {}", self.text()))
            .to_string()
    }
}

/// A plain HTTP/1.1 client connection that stays open between requests, so a test can check
/// that something (a reload) does not drop it. Blocking, with a 10 s read timeout.
pub struct RawConn {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// Requests answered on this connection.
    pub answered: usize,
}

impl RawConn {
    /// Connects to `addr` from inside `netns`.
    pub fn connect(netns: &Netns, addr: &str) -> anyhow::Result<RawConn> {
        let target: SocketAddr = addr.parse().context("IP:PORT")?;
        let stream = netns
            .run(move || TcpStream::connect_timeout(&target, Duration::from_secs(3)))?
            .with_context(|| format!("connecting to {target}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(RawConn {
            stream,
            buffer: Vec::new(),
            answered: 0,
        })
    }

    /// Connects to `addr` from inside `netns`, from the local address `source` (which must be
    /// assigned in the namespace, e.g. an extra address on `lo`): a client or proxy at that
    /// address, as the balancer sees it.
    pub fn connect_from(netns: &Netns, source: IpAddr, addr: &str) -> anyhow::Result<RawConn> {
        let target: SocketAddr = addr.parse().context("IP:PORT")?;
        let stream = netns
            .run(move || -> std::io::Result<TcpStream> {
                let socket = socket2::Socket::new(
                    socket2::Domain::for_address(target),
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                socket.bind(&SocketAddr::new(source, 0).into())?;
                socket.connect_timeout(&target.into(), Duration::from_secs(3))?;
                Ok(socket.into())
            })?
            .with_context(|| format!("connecting to {target} from {source}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(RawConn {
            stream,
            buffer: Vec::new(),
            answered: 0,
        })
    }

    /// Sends `head` as written (request line and header fields, each ending in CRLF, without
    /// the empty line that ends the head; no body) and reads the response: exact bytes on the
    /// wire, for what a client library would normalize.
    pub fn send_head(&mut self, head: &str) -> anyhow::Result<RawReply> {
        let request = format!("{head}\r\n");
        self.stream
            .write_all(request.as_bytes())
            .with_context(|| format!("writing request {}", self.answered + 1))?;
        let reply = self
            .read_response()
            .with_context(|| format!("reading the answer to request {}", self.answered + 1))?;
        self.answered += 1;
        Ok(reply)
    }

    /// `GET path` with `Host: host` on this connection, and its response.
    pub fn get(&mut self, host: &str, path: &str) -> anyhow::Result<RawReply> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.stream
            .write_all(request.as_bytes())
            .with_context(|| format!("writing GET {path} (request {})", self.answered + 1))?;
        let reply = self.read_response().with_context(|| {
            format!(
                "reading the answer to GET {path} (request {})",
                self.answered + 1
            )
        })?;
        self.answered += 1;
        Ok(reply)
    }

    /// Whether the server has closed the connection (EOF or reset) within `wait`.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(wait));
        let mut byte = [0u8; 1];
        let closed = match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(err) => !matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(10)));
        closed
    }

    fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).context("read")?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Takes `n` bytes from the front of the buffer, reading as needed.
    fn take(&mut self, n: usize) -> anyhow::Result<Vec<u8>> {
        while self.buffer.len() < n {
            self.fill()?;
        }
        Ok(self.buffer.drain(..n).collect())
    }

    /// One line without its CRLF.
    fn line(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(end + 2)?;
                return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            self.fill()?;
        }
    }

    fn read_response(&mut self) -> anyhow::Result<RawReply> {
        let status_line = self.line()?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("status line {status_line:?}"))?;
        ensure!(
            status_line.starts_with("HTTP/1.1 "),
            "status line {status_line:?}"
        );
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .with_context(|| format!("header line {line:?}"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let body = if let Some(length) = header("content-length") {
            let length: usize = length.parse().context("content-length")?;
            self.take(length)?
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let size_line = self.line()?;
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .with_context(|| format!("chunk size {size_line:?}"))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    while !self.line()?.is_empty() {}
                    break;
                }
                body.extend(self.take(size)?);
                self.take(2)?;
            }
            body
        } else if status == 204 || status == 304 {
            Vec::new()
        } else {
            bail!("response without a length (status {status}): {headers:?}")
        };
        Ok(RawReply {
            status,
            headers,
            body,
        })
    }
}
