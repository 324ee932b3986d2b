//! One health probe against one target: a TCP connect, or an HTTP GET sent on a connection
//! made for it (HTTP/1.1 over TCP, HTTP/1.1 over TLS, or the proxy's own connector: TCP or a
//! unix socket, TLS for https:// servers, h2c), so a check sees what a request would, without
//! borrowing a kept-alive connection.

use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::ServerUrl;

/// The `User-Agent` of HTTP probes.
pub const USER_AGENT_VALUE: &str = concat!("balancer-health-check/", env!("CARGO_PKG_VERSION"));

/// Decides whether an HTTP status code counts as healthy.
pub type AcceptStatus = Arc<dyn Fn(u16) -> bool + Send + Sync>;

/// What a check does, and to what.
#[derive(Clone)]
pub enum Probe {
    /// Passes when a TCP connection to the address can be opened.
    Tcp(SocketAddr),
    /// Passes when `GET path` answers with a status its `accepts` returns true for.
    Http(HttpProbe),
}

/// An HTTP check: `GET path` with `Host: host`.
#[derive(Clone)]
pub struct HttpProbe {
    pub via: HttpVia,
    /// Origin-form request target, starting with `/` (may carry a query).
    pub path: String,
    /// The `Host` header; `None` sends the target's (`ip:port` over [`HttpVia::Tcp`], the
    /// url's authority otherwise).
    pub host: Option<String>,
    pub accepts: AcceptStatus,
}

/// How an HTTP check reaches its target.
#[derive(Clone)]
pub enum HttpVia {
    /// HTTP/1.1 on a TCP connection to the address (VIP backends).
    Tcp(SocketAddr),
    /// HTTP/1.1 in TLS with `config` to `host`:`port` (a pool's `health.tls`), with SNI = the
    /// `Host`'s name when it is a DNS name.
    Tls {
        host: String,
        port: u16,
        config: Arc<ClientConfig>,
    },
    /// The way requests reach the pool server at `url` (the proxy's own connector).
    Server {
        url: ServerUrl,
        connector: Arc<dyn Connector>,
    },
}

/// The request of an HTTP check.
pub type CheckRequest = Request<Empty<Bytes>>;

/// Sends a check's request the way requests reach a pool server (the proxy implements it with
/// its own connector: TCP or a unix socket, TLS for https://, h2c), on a connection made for
/// that request.
pub trait Connector: Send + Sync {
    /// Whether the server may answer in HTTP/2: the request then has no `Connection` header.
    fn may_be_h2(&self) -> bool;

    /// The status of the answer to `request`, or why there is none; `timeout` bounds the
    /// connect.
    fn send(
        &self,
        request: CheckRequest,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<u16, ProbeError>> + Send + '_>>;
}

/// Why a check got no acceptable answer: the text of [`CheckOutcome::Failed`].
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect refused")]
    ConnectRefused,
    #[error("connect failed: {0}")]
    ConnectFailed(#[source] std::io::Error),
    #[error("invalid path {0:?}: must start with '/'")]
    RelativePath(String),
    #[error("invalid path {path:?}: {source}")]
    InvalidPath {
        path: String,
        source: hyper::http::uri::InvalidUri,
    },
    #[error("invalid request (host {host:?}): {source}")]
    InvalidRequest {
        host: String,
        source: hyper::http::Error,
    },
    /// `chain`: the error with its sources, `outer: inner: ...`.
    #[error("http error: {chain}")]
    Http { chain: String },
    #[error("no HTTP response: {chain}")]
    NoHttpResponse { chain: String },
    #[error("invalid check request: {0}")]
    InvalidCheckRequest(#[source] hyper::http::Error),
    #[error("TLS checks need a host and port")]
    NoHostPort,
    #[error("{sni:?} is not a TLS server name: {source}")]
    ServerName {
        sni: String,
        source: rustls_pki_types::InvalidDnsNameError,
    },
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake: {0}")]
    TlsHandshake(#[source] std::io::Error),
    #[error("HTTP handshake: {0}")]
    HttpHandshake(#[source] hyper::Error),
    /// No response, in the words of the connection that sent the request.
    #[error("no response: {0}")]
    NoResponse(String),
    /// The proxy's connector could not connect, in its own words.
    #[error("{0}")]
    Connector(String),
    #[error("status {0}")]
    Status(u16),
}

impl Probe {
    /// An HTTP/1.1 probe of `target` accepting 2xx and 3xx answers.
    pub fn http(target: SocketAddr, path: impl Into<String>, host: Option<String>) -> Probe {
        Probe::Http(HttpProbe {
            via: HttpVia::Tcp(target),
            path: path.into(),
            host,
            accepts: Arc::new(accepts_2xx_3xx),
        })
    }
}

/// The default acceptance of HTTP probes: 200–399.
pub fn accepts_2xx_3xx(status: u16) -> bool {
    (200..400).contains(&status)
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Tcp(target) => f.debug_tuple("Tcp").field(target).finish(),
            Probe::Http(HttpProbe { path, host, .. }) => f
                .debug_struct("Http")
                .field("path", path)
                .field("host", host)
                .finish_non_exhaustive(),
        }
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    Passed,
    /// Why, e.g. `connect refused`, `timeout after 500ms (connecting)`, `status 503`.
    Failed(String),
}

impl CheckOutcome {
    pub fn passed(&self) -> bool {
        matches!(self, CheckOutcome::Passed)
    }
}

impl fmt::Display for CheckOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckOutcome::Passed => f.write_str("passed"),
            CheckOutcome::Failed(why) => f.write_str(why),
        }
    }
}

/// Runs one probe; `timeout` bounds the whole probe (connect, request and response head).
/// The body of an answer is not read; the connection ends with the probe.
pub async fn probe_once(probe: &Probe, timeout: Duration) -> CheckOutcome {
    let http = match probe {
        Probe::Tcp(target) => return probe_tcp(*target, None, timeout).await,
        Probe::Http(http) => http,
    };
    match &http.via {
        HttpVia::Tcp(target) => probe_tcp(*target, Some(http), timeout).await,
        HttpVia::Tls { host, port, config } => {
            let url = ServerUrl::Http {
                host: host.clone(),
                port: *port,
            };
            probe_server(http, &url, Via::Tls(config), timeout).await
        }
        HttpVia::Server { url, connector } => {
            probe_server(http, url, Via::Connector(connector.as_ref()), timeout).await
        }
    }
}

/// A TCP connect to `target`, then `GET` over HTTP/1.1 on it with `Connection: close`.
async fn probe_tcp(
    target: SocketAddr,
    http: Option<&HttpProbe>,
    timeout: Duration,
) -> CheckOutcome {
    let mut phase = "connecting";
    let attempt = async {
        let stream = TcpStream::connect(target).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                ProbeError::ConnectRefused
            } else {
                ProbeError::ConnectFailed(e)
            }
        })?;
        match http {
            None => Ok(()),
            Some(HttpProbe {
                path,
                host,
                accepts,
                ..
            }) => {
                phase = "waiting for the response";
                let host = host.clone().unwrap_or_else(|| default_host(target));
                let status = http_get(stream, path, &host).await?;
                if accepts(status) {
                    Ok(())
                } else {
                    Err(ProbeError::Status(status))
                }
            }
        }
    };
    let result = tokio::time::timeout(timeout, attempt).await;
    verdict(result.ok(), timeout, Some(phase))
}

/// `ip:port`, with brackets for IPv6 and without a scope id.
fn default_host(target: SocketAddr) -> String {
    match target {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// Sends `GET path` and returns the response status.
async fn http_get(stream: TcpStream, path: &str, host: &str) -> Result<u16, ProbeError> {
    if !path.starts_with('/') {
        return Err(ProbeError::RelativePath(path.to_string()));
    }
    let uri: Uri = path.parse().map_err(|source| ProbeError::InvalidPath {
        path: path.to_string(),
        source,
    })?;
    let request = Request::get(uri)
        .header(HOST, host)
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|source| ProbeError::InvalidRequest {
            host: host.to_string(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ProbeError::Http { chain: chain(&e) })?;
    // Drive the connection and the request together in this task, so nothing
    // outlives the probe.
    let mut conn = pin!(conn);
    let mut response = pin!(sender.send_request(request));
    let response = tokio::select! {
        biased;
        r = &mut response => r,
        c = &mut conn => match c {
            Err(e) => return Err(ProbeError::NoHttpResponse { chain: chain(&e) }),
            Ok(()) => response.await,
        },
    };
    match response {
        Ok(response) => Ok(response.status().as_u16()),
        Err(e) => Err(ProbeError::NoHttpResponse { chain: chain(&e) }),
    }
}

/// An error with its sources, `outer: inner: ...`.
fn chain(e: &hyper::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How [`probe_server`] sends its request.
enum Via<'a> {
    Tls(&'a Arc<ClientConfig>),
    Connector(&'a dyn Connector),
}

/// `GET path` to the pool server at `url`, in TLS or through the proxy's connector.
async fn probe_server(
    http: &HttpProbe,
    url: &ServerUrl,
    via: Via<'_>,
    timeout: Duration,
) -> CheckOutcome {
    let attempt = async {
        let host = http.host.clone().unwrap_or_else(|| url.authority());
        let mut request = Request::get(http.path.as_str())
            .header(HOST, &host)
            .header(USER_AGENT, USER_AGENT_VALUE);
        let may_be_h2 = match via {
            Via::Tls(_) => false,
            Via::Connector(connector) => connector.may_be_h2(),
        };
        if !may_be_h2 {
            // HTTP/2 has no Connection header (RFC 9113 §8.2.2).
            request = request.header(CONNECTION, "close");
        }
        let request = request
            .body(Empty::new())
            .map_err(ProbeError::InvalidCheckRequest)?;
        let status = match (via, url.host_port()) {
            (Via::Tls(config), Some((address, port))) => {
                send_over_tls(
                    address,
                    port,
                    crate::http::authority::bare_host(&host),
                    config.clone(),
                    request,
                )
                .await?
            }
            (Via::Tls(_), None) => return Err(ProbeError::NoHostPort),
            (Via::Connector(connector), _) => connector.send(request, timeout).await?,
        };
        if (http.accepts)(status) {
            Ok(())
        } else {
            Err(ProbeError::Status(status))
        }
    };
    let result = tokio::time::timeout(timeout, attempt).await;
    verdict(result.ok(), timeout, None)
}

/// A probe's result as a check outcome; `None`: it ran out of `timeout` (during `phase`, when
/// the probe knows it).
fn verdict(
    result: Option<Result<(), ProbeError>>,
    timeout: Duration,
    phase: Option<&str>,
) -> CheckOutcome {
    match (result, phase) {
        (Some(Ok(())), _) => CheckOutcome::Passed,
        (Some(Err(why)), _) => CheckOutcome::Failed(why.to_string()),
        (None, Some(phase)) => CheckOutcome::Failed(format!("timeout after {timeout:?} ({phase})")),
        (None, None) => CheckOutcome::Failed(format!("timeout after {timeout:?}")),
    }
}

/// Sends `request` over HTTP/1.1 in TLS to `address`:`port`, with SNI `sni` when it is a DNS
/// name; its status. The connection ends with the returned future (the body is not read).
async fn send_over_tls(
    address: &str,
    port: u16,
    sni: &str,
    tls: Arc<ClientConfig>,
    request: CheckRequest,
) -> Result<u16, ProbeError> {
    let name = ServerName::try_from(sni.to_string()).map_err(|source| ProbeError::ServerName {
        sni: sni.to_string(),
        source,
    })?;
    let tcp = TcpStream::connect((address, port))
        .await
        .map_err(ProbeError::Connect)?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(ProbeError::TlsHandshake)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ProbeError::HttpHandshake)?;
    let mut response = pin!(sender.send_request(request));
    let mut connection = pin!(connection);
    let response = tokio::select! {
        response = &mut response => response,
        closed = &mut connection => {
            // Closed cleanly: the response, if any, was delivered before.
            closed.map_err(|err| ProbeError::NoResponse(err.to_string()))?;
            response.await
        }
    };
    let response = response.map_err(|err| ProbeError::NoResponse(err.to_string()))?;
    Ok(response.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::convert::Infallible;

    use http_body_util::Full;
    use hyper::{Response, service::service_fn};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// The texts of the probe errors, against the `format!` that made them as strings.
    #[test]
    fn probe_error_texts_are_those_of_the_string_errors() {
        let path = "health";
        assert_eq!(
            ProbeError::RelativePath(path.to_string()).to_string(),
            format!("invalid path {path:?}: must start with '/'")
        );
        let sni = "bad name";
        let source = || ServerName::try_from(sni.to_string()).expect_err("not a name");
        assert_eq!(
            ProbeError::ServerName {
                sni: sni.to_string(),
                source: source(),
            }
            .to_string(),
            format!("{sni:?} is not a TLS server name: {}", source())
        );
        let io = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert_eq!(
            ProbeError::ConnectFailed(io).to_string(),
            format!(
                "connect failed: {}",
                std::io::Error::from(std::io::ErrorKind::TimedOut)
            )
        );
        assert_eq!(ProbeError::Status(503).to_string(), "status 503");
        assert_eq!(ProbeError::ConnectRefused.to_string(), "connect refused");
    }

    /// What the test server saw in one request.
    #[derive(Debug)]
    struct Seen {
        path: String,
        host: Option<String>,
        user_agent: Option<String>,
        connection: Option<String>,
    }

    /// A tiny HTTP/1.1 server: `/ok` → 200, `/fail` → 503, `/moved` → 302, else 404.
    async fn http_server() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let header = |name| {
                            req.headers()
                                .get(name)
                                .map(|v: &hyper::header::HeaderValue| {
                                    v.to_str().unwrap().to_owned()
                                })
                        };
                        let _ = tx.send(Seen {
                            path: req.uri().to_string(),
                            host: header(HOST),
                            user_agent: header(USER_AGENT),
                            connection: header(CONNECTION),
                        });
                        let status = match req.uri().path() {
                            "/ok" => 200,
                            "/fail" => 503,
                            "/moved" => 302,
                            _ => 404,
                        };
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"body")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, rx)
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn tcp_connect_passes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(probe_once(&Probe::Tcp(addr), T).await, CheckOutcome::Passed);
    }

    #[tokio::test]
    async fn closed_port_is_refused() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        for probe in [Probe::Tcp(addr), Probe::http(addr, "/ok", None)] {
            match probe_once(&probe, T).await {
                CheckOutcome::Failed(why) => assert!(why.contains("refused"), "{why}"),
                other => panic!("{probe:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn http_200_passes_with_default_host() {
        let (addr, mut seen) = http_server().await;
        assert_eq!(
            probe_once(&Probe::http(addr, "/ok", None), T).await,
            CheckOutcome::Passed
        );
        let seen = seen.recv().await.unwrap();
        assert_eq!(seen.path, "/ok");
        assert_eq!(seen.host, Some(addr.to_string()));
        assert_eq!(seen.user_agent.as_deref(), Some(USER_AGENT_VALUE));
        assert!(USER_AGENT_VALUE.starts_with("balancer-health-check/"));
        assert_eq!(seen.connection.as_deref(), Some("close"));
    }

    #[tokio::test]
    async fn http_sends_configured_host_and_query() {
        let (addr, mut seen) = http_server().await;
        let probe = Probe::http(addr, "/ok?full=1", Some("www.example.test".into()));
        assert_eq!(probe_once(&probe, T).await, CheckOutcome::Passed);
        let seen = seen.recv().await.unwrap();
        assert_eq!(seen.path, "/ok?full=1");
        assert_eq!(seen.host.as_deref(), Some("www.example.test"));
    }

    #[tokio::test]
    async fn http_503_fails_with_status() {
        let (addr, _seen) = http_server().await;
        assert_eq!(
            probe_once(&Probe::http(addr, "/fail", None), T).await,
            CheckOutcome::Failed("status 503".into())
        );
        assert_eq!(
            probe_once(&Probe::http(addr, "/nope", None), T).await,
            CheckOutcome::Failed("status 404".into())
        );
        assert_eq!(
            probe_once(&Probe::http(addr, "/moved", None), T).await,
            CheckOutcome::Passed
        );
    }

    #[tokio::test]
    async fn http_custom_accepts() {
        let (addr, _seen) = http_server().await;
        let only_503 = Probe::Http(HttpProbe {
            via: HttpVia::Tcp(addr),
            path: "/fail".into(),
            host: None,
            accepts: Arc::new(|status| status == 503),
        });
        assert_eq!(probe_once(&only_503, T).await, CheckOutcome::Passed);
        let only_200 = Probe::Http(HttpProbe {
            via: HttpVia::Tcp(addr),
            path: "/moved".into(),
            host: None,
            accepts: Arc::new(|status| status == 200),
        });
        assert_eq!(
            probe_once(&only_200, T).await,
            CheckOutcome::Failed("status 302".into())
        );
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accept and hold connections without ever answering.
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                held.push(listener.accept().await.unwrap().0);
            }
        });
        let timeout = Duration::from_millis(200);
        let started = tokio::time::Instant::now();
        match probe_once(&Probe::http(addr, "/ok", None), timeout).await {
            CheckOutcome::Failed(why) => {
                assert!(why.contains("timeout after 200ms"), "{why}");
                assert!(why.contains("waiting for the response"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() >= timeout);
        assert!(started.elapsed() < T);
        holder.abort();
    }

    #[tokio::test]
    async fn server_closing_without_answer_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                drop(listener.accept().await.unwrap());
            }
        });
        match probe_once(&Probe::http(addr, "/ok", None), T).await {
            CheckOutcome::Failed(why) => assert!(why.starts_with("no HTTP response"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_path_fails_without_panicking() {
        let (addr, _seen) = http_server().await;
        match probe_once(&Probe::http(addr, "healthz", None), T).await {
            CheckOutcome::Failed(why) => assert!(why.contains("invalid path"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// A connector that answers `status` (never, when `None`) and keeps the request's
    /// (Host, Connection, User-Agent).
    struct FakeConnector {
        h2: bool,
        status: Option<u16>,
        seen: std::sync::Mutex<Vec<[Option<String>; 3]>>,
    }

    impl Connector for FakeConnector {
        fn may_be_h2(&self) -> bool {
            self.h2
        }

        fn send(
            &self,
            request: CheckRequest,
            _timeout: Duration,
        ) -> Pin<Box<dyn Future<Output = Result<u16, ProbeError>> + Send + '_>> {
            let header = |name| {
                request
                    .headers()
                    .get(name)
                    .map(|v: &hyper::header::HeaderValue| v.to_str().unwrap().to_owned())
            };
            self.seen
                .lock()
                .unwrap()
                .push([header(HOST), header(CONNECTION), header(USER_AGENT)]);
            Box::pin(async move {
                match self.status {
                    Some(status) => Ok(status),
                    None => std::future::pending().await,
                }
            })
        }
    }

    fn through(connector: &Arc<FakeConnector>, host: Option<String>) -> Probe {
        Probe::Http(HttpProbe {
            via: HttpVia::Server {
                url: ServerUrl::Http {
                    host: "app.internal".into(),
                    port: 8000,
                },
                connector: connector.clone(),
            },
            path: "/healthz".into(),
            host,
            accepts: Arc::new(accepts_2xx_3xx),
        })
    }

    #[tokio::test]
    async fn a_server_check_goes_through_its_connector() {
        let h1 = Arc::new(FakeConnector {
            h2: false,
            status: Some(503),
            seen: Default::default(),
        });
        assert_eq!(
            probe_once(&through(&h1, None), T).await,
            CheckOutcome::Failed("status 503".into())
        );
        let agent = Some(USER_AGENT_VALUE.to_owned());
        assert_eq!(
            h1.seen.lock().unwrap()[0],
            [
                Some("app.internal:8000".into()),
                Some("close".into()),
                agent.clone()
            ]
        );
        // HTTP/2 has no Connection header; a configured Host replaces the url's.
        let h2 = Arc::new(FakeConnector {
            h2: true,
            status: Some(204),
            seen: Default::default(),
        });
        let probe = through(&h2, Some("www.example.test".into()));
        assert_eq!(probe_once(&probe, T).await, CheckOutcome::Passed);
        assert_eq!(
            h2.seen.lock().unwrap()[0],
            [Some("www.example.test".into()), None, agent]
        );
        let silent = Arc::new(FakeConnector {
            h2: false,
            status: None,
            seen: Default::default(),
        });
        assert_eq!(
            probe_once(&through(&silent, None), Duration::from_millis(100)).await,
            CheckOutcome::Failed("timeout after 100ms".into())
        );
    }

    #[test]
    fn default_host_forms() {
        assert_eq!(
            default_host("198.18.1.2:8000".parse().unwrap()),
            "198.18.1.2:8000"
        );
        assert_eq!(
            default_host("[2001:2::5]:80".parse().unwrap()),
            "[2001:2::5]:80"
        );
        assert_eq!(
            default_host("[fe80::1%2]:80".parse().unwrap()),
            "[fe80::1]:80"
        );
    }

    #[test]
    fn outcome_display_and_debug() {
        assert_eq!(CheckOutcome::Passed.to_string(), "passed");
        assert_eq!(
            CheckOutcome::Failed("status 503".into()).to_string(),
            "status 503"
        );
        assert_eq!(
            format!(
                "{:?}",
                Probe::http("127.0.0.1:80".parse().unwrap(), "/h", None)
            ),
            r#"Http { path: "/h", host: None, .. }"#
        );
        assert!(accepts_2xx_3xx(200) && accepts_2xx_3xx(399));
        assert!(!accepts_2xx_3xx(199) && !accepts_2xx_3xx(400));
    }
}
