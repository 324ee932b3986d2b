//! `l7_backend`: an HTTP server for the L7 proxy's tests and benchmark, run inside a namespace.
//!
//! ```text
//! l7_backend --name NAME (--listen ADDR:PORT | --unix PATH) [--listen … | --unix …] [--h2c] [--threads N]
//! ```
//!
//! Prints `listening NAME ADDR` (`ADDR` as bound, so port 0 shows the port it got; `unix:PATH`
//! for a unix socket) once per socket, then serves until SIGTERM or SIGINT (exit 0).
//! HTTP/1.1 always; with `--h2c` also HTTP/2 with prior knowledge on the same sockets.
//!
//! Endpoints (everything else gets the default answer):
//! - `/bench`: 200 `hello, world\n`, nothing else (fast path: no JSON).
//! - `/ws`: WebSocket echo of text and binary messages (HTTP/1.1 upgrade).
//! - `/delay/{ms}`: waits, then the default answer.
//! - `/status/{code}`: the default answer with that status.
//! - `/bytes/{n}`: n bytes, `abc…xyzabc…` (byte i is `b'a' + i % 26`).
//! - `/drip/{n}/{ms}`: `Content-Length: n` and n bytes `x`, the first at once and each next
//!   one `ms` later (a slow server, or with a long `ms` one that stops mid-body).
//! - `/echo`: the request body back (`Content-Type` copied from the request).
//! - `/close`: the default answer with `Connection: close`.
//! - `/redirect`: 302 to `http://LISTEN-ADDR/target` (`localhost` for unix) with
//!   `Set-Cookie: a=b; Path=/`.
//! - `/response-headers?NAME=VALUE&…`: the default answer with each pair added as a response
//!   header, in order (percent-decoded, `+` is a space; a pair that is not a valid header is
//!   skipped), e.g. `Server`, `Location` or `Set-Cookie` for tests of response rewriting.
//! - `/stats`: `{"connections": C, "requests": R, "open": O}`. Traffic to `/stats` itself
//!   is left out so a test can read them without moving them: C counts accepted connections
//!   except those whose first request was `/stats`, R every request but `/stats`, O the
//!   connections of C still open.
//! - default: 200 JSON `{"server", "method", "uri" (path and query), "authority" (of an
//!   absolute URI, e.g. HTTP/2's :authority, else null), "version", "headers" ([name, value]
//!   pairs in hyper's order), "connection" (sequence number of the connection, from 1, over
//!   all sockets), "peer" ("IP:PORT" or "unix"), "body_bytes"}`.

use std::{
    convert::Infallible,
    io::Write,
    mem::zeroed,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::{
    Request, Response, StatusCode,
    body::{Body, Frame, Incoming, SizeHint},
    header::{self, HeaderValue},
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    signal::unix::{SignalKind, signal},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, handshake::derive_accept_key, protocol::Role},
};

/// Largest `/bytes/{n}` and `/delay/{ms}` accepted (1 GiB, 10 minutes).
const MAX_BYTES: u64 = 1 << 30;
const MAX_DELAY_MS: u64 = 600_000;

/// An HTTP server for the L7 tests and benchmark (see the module doc).
#[derive(Parser)]
#[command(name = "l7_backend", args_override_self = true)]
struct Args {
    /// Its name, in every answer.
    #[arg(long)]
    name: String,
    /// A TCP socket, `ADDR:PORT` (IPv6 as `[ADDR]:PORT`); repeatable.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// A unix socket; repeatable.
    #[arg(long)]
    unix: Vec<PathBuf>,
    /// Also HTTP/2 with prior knowledge on the same sockets.
    #[arg(long)]
    h2c: bool,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2, value_parser = positive)]
    threads: usize,
}

fn positive(text: &str) -> Result<usize, String> {
    text.parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text}: expected a positive number"))
}

fn parse_args() -> anyhow::Result<Args> {
    let args = Args::parse();
    if args.listen.is_empty() && args.unix.is_empty() {
        bail!("nothing to serve: give --listen and/or --unix");
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("l7_backend: {err:#}");
            return ExitCode::from(2);
        }
    };
    raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("l7_backend: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        // Connection tasks end with the process.
        Ok(()) => std::process::exit(0),
        Err(err) => {
            eprintln!("l7_backend: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// What every connection shares.
struct Server {
    name: String,
    /// `--h2c`: HTTP/1.1 or HTTP/2 by the connection's first bytes.
    auto: Option<auto::Builder<TokioExecutor>>,
    /// Otherwise HTTP/1.1 only (the auto builder ignores `http1_only` with upgrades).
    http1: hyper::server::conn::http1::Builder,
    /// Connections accepted so far: the sequence number of the latest.
    accepted: AtomicU64,
    /// Connections whose first request was `/stats`.
    stats_connections: AtomicU64,
    /// Requests other than `/stats`.
    requests: AtomicU64,
    /// Open connections, not counting `/stats` ones.
    open: AtomicI64,
}

/// One accepted connection.
struct Connection {
    sequence: u64,
    /// "IP:PORT" or "unix".
    peer: String,
    /// Authority of the socket it came on, for `/redirect`.
    local: String,
    /// Until its first request has been seen.
    fresh: AtomicBool,
    /// Its first request was `/stats`: it is left out of the counters.
    stats_only: AtomicBool,
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let server = Arc::new(Server {
        name: args.name.clone(),
        auto: args.h2c.then(|| auto::Builder::new(TokioExecutor::new())),
        http1: hyper::server::conn::http1::Builder::new(),
        accepted: AtomicU64::new(0),
        stats_connections: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        open: AtomicI64::new(0),
    });
    let mut stdout = std::io::stdout().lock();
    for &address in &args.listen {
        let listener = tcp_listener(address).with_context(|| format!("TCP {address}"))?;
        let bound = listener.local_addr()?;
        tokio::spawn(tcp_accept_loop(listener, bound, server.clone()));
        writeln!(stdout, "listening {} {bound}", args.name)?;
        stdout.flush()?;
    }
    for path in &args.unix {
        // A stale socket file from an earlier run would make bind fail.
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("unix socket {}", path.display()))?;
        tokio::spawn(unix_accept_loop(listener, server.clone()));
        writeln!(stdout, "listening {} unix:{}", args.name, path.display())?;
        stdout.flush()?;
    }
    drop(stdout);
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    Ok(())
}

/// `[::]` is dual stack regardless of `net.ipv6.bindv6only`.
fn tcp_listener(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if address.is_ipv6() && address.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(socket.into())?)
}

async fn tcp_accept_loop(
    listener: tokio::net::TcpListener,
    bound: SocketAddr,
    server: Arc<Server>,
) {
    let local = bound.to_string();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let connection = server.open_connection(peer.to_string(), local.clone());
                tokio::spawn(serve_connection(stream, server.clone(), connection));
            }
            // EMFILE and friends: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn unix_accept_loop(listener: tokio::net::UnixListener, server: Arc<Server>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let connection = server.open_connection("unix".into(), "localhost".into());
                tokio::spawn(serve_connection(stream, server.clone(), connection));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

impl Server {
    fn open_connection(&self, peer: String, local: String) -> Arc<Connection> {
        let sequence = self.accepted.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Arc::new(Connection {
            sequence,
            peer,
            local,
            fresh: AtomicBool::new(true),
            stats_only: AtomicBool::new(false),
        })
    }
}

async fn serve_connection<S>(stream: S, server: Arc<Server>, connection: Arc<Connection>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let server = server.clone();
        let connection = connection.clone();
        service_fn(move |request| handle(request, server.clone(), connection.clone()))
    };
    // Errors are the client's doing (reset, garbage): nothing to report.
    let io = TokioIo::new(stream);
    let _ = match &server.auto {
        Some(auto) => auto.serve_connection_with_upgrades(io, service).await,
        None => server
            .http1
            .serve_connection(io, service)
            .with_upgrades()
            .await
            .map_err(Into::into),
    };
    if !connection.stats_only.load(Ordering::Relaxed) {
        server.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle(
    request: Request<Incoming>,
    server: Arc<Server>,
    connection: Arc<Connection>,
) -> Result<Response<Payload>, Infallible> {
    let path = request.uri().path();
    let first = connection.fresh.swap(false, Ordering::Relaxed);
    if path == "/stats" {
        if first {
            connection.stats_only.store(true, Ordering::Relaxed);
            server.stats_connections.fetch_add(1, Ordering::Relaxed);
            server.open.fetch_sub(1, Ordering::Relaxed);
        }
        let body = serde_json::json!({
            "connections": server.accepted.load(Ordering::Relaxed)
                - server.stats_connections.load(Ordering::Relaxed),
            "requests": server.requests.load(Ordering::Relaxed),
            "open": server.open.load(Ordering::Relaxed),
        });
        return Ok(json_response(StatusCode::OK, &body));
    }
    server.requests.fetch_add(1, Ordering::Relaxed);

    if path == "/bench" {
        return Ok(Response::new(Payload::from_static(b"hello, world\n")));
    }
    if path == "/ws" {
        return Ok(websocket(request));
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        return Ok(match n.parse::<u64>() {
            Ok(n) if n <= MAX_BYTES => {
                let mut response = Response::new(Payload::Pattern { sent: 0, total: n });
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                response
            }
            _ => text_response(StatusCode::BAD_REQUEST, "bad /bytes/{n}\n"),
        });
    }
    if let Some(spec) = path.strip_prefix("/drip/") {
        let parsed = spec
            .split_once('/')
            .and_then(|(n, ms)| Some((n.parse::<u64>().ok()?, ms.parse::<u64>().ok()?)));
        return Ok(match parsed {
            Some((n, ms)) if n <= MAX_BYTES && ms <= MAX_DELAY_MS => Response::new(Payload::Drip {
                left: n,
                every: Duration::from_millis(ms),
                wait: None,
            }),
            _ => text_response(StatusCode::BAD_REQUEST, "bad /drip/{n}/{ms}\n"),
        });
    }
    if path == "/echo" {
        let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
        return Ok(match request.into_body().collect().await {
            Ok(body) => {
                let mut response = Response::new(Payload::Bytes(Some(body.to_bytes())));
                if let Some(value) = content_type {
                    response.headers_mut().insert(header::CONTENT_TYPE, value);
                }
                response
            }
            Err(err) => text_response(StatusCode::BAD_REQUEST, &format!("reading body: {err}\n")),
        });
    }
    if path == "/redirect" {
        let mut response = Response::new(Payload::from_static(b"redirect\n"));
        *response.status_mut() = StatusCode::FOUND;
        let headers = response.headers_mut();
        if let Ok(location) = HeaderValue::from_str(&format!("http://{}/target", connection.local))
        {
            headers.insert(header::LOCATION, location);
        }
        headers.insert(header::SET_COOKIE, HeaderValue::from_static("a=b; Path=/"));
        return Ok(response);
    }

    let mut status = StatusCode::OK;
    let mut close = false;
    if let Some(ms) = path.strip_prefix("/delay/") {
        match ms.parse::<u64>() {
            Ok(ms) if ms <= MAX_DELAY_MS => tokio::time::sleep(Duration::from_millis(ms)).await,
            _ => return Ok(text_response(StatusCode::BAD_REQUEST, "bad /delay/{ms}\n")),
        }
    } else if let Some(code) = path.strip_prefix("/status/") {
        match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(code) => status = code,
            None => {
                return Ok(text_response(
                    StatusCode::BAD_REQUEST,
                    "bad /status/{code}\n",
                ));
            }
        }
    } else if path == "/close" {
        close = true;
    }
    let extra_headers = if path == "/response-headers" {
        request.uri().query().map(query_headers).unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut response = default_answer(request, &server, &connection, status).await;
    for (name, value) in extra_headers {
        response.headers_mut().append(name, value);
    }
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// The `NAME=VALUE` pairs of a query as response headers, in order; invalid ones are skipped.
fn query_headers(query: &str) -> Vec<(header::HeaderName, HeaderValue)> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter_map(|(name, value)| {
            let name = header::HeaderName::from_bytes(&percent_decode(name)).ok()?;
            let value = HeaderValue::from_bytes(&percent_decode(value)).ok()?;
            Some((name, value))
        })
        .collect()
}

/// `%XX` escapes decoded and `+` as a space; a malformed escape is kept as written.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'%')
            .then(|| bytes.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[at], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                at += 1;
            }
            (byte, None) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    out
}

/// The JSON description of the request.
async fn default_answer(
    request: Request<Incoming>,
    server: &Server,
    connection: &Connection,
    status: StatusCode,
) -> Response<Payload> {
    let (parts, body) = request.into_parts();
    let body_bytes = match body.collect().await {
        Ok(body) => body.to_bytes().len(),
        Err(err) => {
            return text_response(StatusCode::BAD_REQUEST, &format!("reading body: {err}\n"));
        }
    };
    let headers: Vec<[String; 2]> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            [
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ]
        })
        .collect();
    let description = serde_json::json!({
        "server": server.name,
        "method": parts.method.as_str(),
        "uri": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "connection": connection.sequence,
        "peer": connection.peer,
        "body_bytes": body_bytes,
    });
    json_response(status, &description)
}

/// Answers the upgrade and echoes messages on the upgraded connection.
fn websocket(mut request: Request<Incoming>) -> Response<Payload> {
    let headers = request.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return text_response(StatusCode::BAD_REQUEST, "not a WebSocket handshake\n");
    };
    if !upgrade {
        return text_response(StatusCode::BAD_REQUEST, "not a WebSocket handshake\n");
    }
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        // Pings are answered and Close is acknowledged by tungstenite while reading.
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Text(_) | Message::Binary(_))
                && socket.send(message).await.is_err()
            {
                break;
            }
        }
    });
    let mut response = Response::new(Payload::Bytes(None));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Payload> {
    let mut body = value.to_string();
    body.push('\n');
    let mut response = Response::new(Payload::Bytes(Some(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn text_response(status: StatusCode, text: &str) -> Response<Payload> {
    let mut response = Response::new(Payload::Bytes(Some(Bytes::from(text.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Bytes sent per frame of `/bytes/{n}`.
const CHUNK: usize = 64 * 1024;

/// `abc…z` repeated: any `CHUNK` bytes starting at an offset below 26 is a slice of it.
static PATTERN: [u8; CHUNK + 26] = pattern();

const fn pattern() -> [u8; CHUNK + 26] {
    let mut bytes = [0u8; CHUNK + 26];
    let mut i = 0;
    while i < bytes.len() {
        bytes[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    bytes
}

/// A response body: one buffer, the `/bytes/{n}` pattern streamed in chunks, or the bytes of
/// `/drip/{n}/{ms}`, one at a time.
enum Payload {
    Bytes(Option<Bytes>),
    Pattern {
        sent: u64,
        total: u64,
    },
    Drip {
        left: u64,
        every: Duration,
        /// Before each byte but the first.
        wait: Option<Pin<Box<tokio::time::Sleep>>>,
    },
}

impl Payload {
    fn from_static(bytes: &'static [u8]) -> Payload {
        Payload::Bytes(Some(Bytes::from_static(bytes)))
    }
}

impl Body for Payload {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Payload::Bytes(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Payload::Pattern { sent, total } => {
                if sent == total {
                    return Poll::Ready(None);
                }
                let length = (*total - *sent).min(CHUNK as u64) as usize;
                let offset = (*sent % 26) as usize;
                *sent += length as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                    &PATTERN[offset..offset + length],
                )))))
            }
            Payload::Drip { left, every, wait } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                if let Some(timer) = wait {
                    std::task::ready!(timer.as_mut().poll(cx));
                }
                *left -= 1;
                *wait = Some(Box::pin(tokio::time::sleep(*every)));
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Payload::Bytes(bytes) => bytes.as_ref().is_none_or(|b| b.is_empty()),
            Payload::Pattern { sent, total } => sent == total,
            Payload::Drip { left, .. } => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Payload::Bytes(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Payload::Pattern { sent, total } => SizeHint::with_exact(total - sent),
            Payload::Drip { left, .. } => SizeHint::with_exact(*left),
        }
    }
}

/// Many concurrent connections need many descriptors: soft limit up to the hard limit.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut limit: libc::rlimit = zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0
            && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
        }
    }
}
