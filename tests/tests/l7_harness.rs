//! Self-test of the L7 harness, without the balancer: `l7_backend` over HTTP/1.1, h2c and a
//! unix socket, the HTTPS client against a small rustls server in the test, the WebSocket and
//! raw TCP helpers, curl, nginx, and that everything is gone after drop (also on panic).
//! Each test has its own namespace, so the fixed ports never collide.

use std::{
    convert::Infallible,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use balancer_tests::{
    Backend, Certs, Client, L7Net, Nginx, Request, TlsOptions, curl, http_request, https_request,
    in_netns, l7::BackendStats, raw_tcp, websocket_echo,
};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};

const B1: &str = "127.0.0.1:8081";
const B1_V6: &str = "[::1]:8081";
const TLS_PORT: u16 = 8443;

fn netns_listed(name: &str) -> bool {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|line| line.split_whitespace().next() == Some(name))
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Polls `f` until it returns `Some`, for up to 5 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn backend_answers_json_over_http1_and_h2c() {
    let net = L7Net::new("h1").expect("namespace");
    let backend = Backend::start_h2c(&net, "b1", &[B1, B1_V6, "127.0.0.1:0"]).expect("backend");
    assert_eq!(backend.name(), "b1");
    assert_eq!(backend.addresses()[..2], [B1, B1_V6]);
    let any_port = &backend.addresses()[2];
    assert!(
        any_port.starts_with("127.0.0.1:") && !any_port.ends_with(":0"),
        "port 0 should be reported as the port bound, got {any_port}"
    );
    assert_eq!(backend.url(), format!("http://{B1}"));

    // Two requests on one HTTP/1.1 connection: same connection number, headers in order.
    let first = Request::get("/some/path?q=1")
        .host("app.test")
        .header("x-first", "1")
        .header("x-second", "2");
    let replies = Client::tcp(&net, B1)
        .send_all(&[first, Request::post("/post", vec![7u8; 1000])])
        .expect("two HTTP/1.1 requests");
    let (a, b) = (replies[0].json(), replies[1].json());
    assert_eq!(replies[0].status, 200);
    assert_eq!(replies[0].version, "HTTP/1.1");
    assert_eq!(a["server"], "b1");
    assert_eq!(a["method"], "GET");
    assert_eq!(a["uri"], "/some/path?q=1");
    assert_eq!(a["version"], "HTTP/1.1");
    assert_eq!(
        a["headers"],
        serde_json::json!([["host", "app.test"], ["x-first", "1"], ["x-second", "2"]]),
        "headers as sent, in order"
    );
    assert!(a["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(b["method"], "POST");
    assert_eq!(b["body_bytes"], 1000);
    assert_eq!(
        a["connection"], b["connection"],
        "keep-alive: one connection for both requests"
    );

    // A new connection gets the next number; IPv6 works.
    let c = http_request(&net, B1_V6, &Request::get("/")).expect("over ::1");
    let c = c.json();
    assert_eq!(c["connection"], a["connection"].as_u64().unwrap() + 1);
    assert!(c["peer"].as_str().unwrap().starts_with("[::1]:"), "{c}");
    assert_eq!(c["headers"][0], serde_json::json!(["host", B1_V6]));

    // h2c: HTTP/2 with prior knowledge, both streams on one connection.
    let replies = Client::tcp(&net, B1)
        .h2c()
        .send_all(&[Request::get("/h2?x").host("h2.test"), Request::get("/h2b")])
        .expect("h2c");
    let (d, e) = (replies[0].json(), replies[1].json());
    assert_eq!(replies[0].version, "HTTP/2.0");
    assert_eq!(d["version"], "HTTP/2.0");
    assert_eq!(d["uri"], "/h2?x");
    assert_eq!(d["authority"], "h2.test");
    assert_eq!(e["authority"], B1);
    assert_eq!(d["connection"], e["connection"]);
    assert_eq!(d["connection"], c["connection"].as_u64().unwrap() + 1);

    // The other endpoints.
    let client = Client::tcp(&net, B1);
    let bench = client.send(&Request::get("/bench")).expect("/bench");
    assert_eq!(
        (bench.status, bench.text().as_str()),
        (200, "hello, world\n")
    );
    let status = client.send(&Request::get("/status/503")).expect("/status");
    assert_eq!(status.status, 503);
    assert_eq!(status.json()["server"], "b1");
    let bytes = client.send(&Request::get("/bytes/200000")).expect("/bytes");
    assert_eq!(bytes.body.len(), 200_000);
    assert!(
        bytes
            .body
            .iter()
            .enumerate()
            .all(|(i, &b)| b == b'a' + (i % 26) as u8),
        "/bytes/n is the abc…z pattern"
    );
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let echo = client
        .send(&Request::post("/echo", payload.clone()).header("content-type", "x/y"))
        .expect("/echo");
    assert_eq!(echo.header("content-type"), Some("x/y"));
    assert!(echo.body == payload, "/echo returns the body unchanged");
    let redirect = client.send(&Request::get("/redirect")).expect("/redirect");
    assert_eq!(redirect.status, 302);
    assert_eq!(
        redirect.header("location"),
        Some(format!("http://{B1}/target").as_str())
    );
    assert_eq!(redirect.header("set-cookie"), Some("a=b; Path=/"));
    let replies = client
        .send_all(&[Request::get("/close"), Request::get("/after-close")])
        .expect_err("a second request after Connection: close");
    assert!(format!("{replies:#}").contains("closed"), "{replies:#}");
    let started = Instant::now();
    let delayed = client.send(&Request::get("/delay/300")).expect("/delay");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(delayed.json()["uri"], "/delay/300");

    // Connections: 2 HTTP/1.1, 1 h2c, 6 by `client` (one per send), /close's included.
    // Requests: 2 + 1 + 2 + 6 + the one on the /close connection. /stats leaves itself out.
    let expected = BackendStats {
        connections: 10,
        requests: 12,
        open: 0,
    };
    let stats = eventually("every connection closed", || {
        let stats = backend.stats().expect("stats");
        (stats.open == 0).then_some(stats)
    });
    assert_eq!(stats, expected);
    assert_eq!(backend.stats().expect("stats again"), expected);

    // HTTP/1.1 only without --h2c: a prior-knowledge client gets nowhere.
    let h1 = Backend::start(&net, "b2", &["127.0.0.1:8082"]).expect("h1 backend");
    assert!(
        Client::tcp(&net, "127.0.0.1:8082")
            .h2c()
            .timeout(Duration::from_secs(3))
            .send(&Request::get("/"))
            .is_err(),
        "h2c against an HTTP/1.1-only backend should fail"
    );
    let status = h1.stop().expect("stop");
    assert!(status.success(), "l7_backend exits 0 on SIGTERM: {status}");
}

#[test]
fn backend_serves_a_unix_socket_and_curl_reaches_it() {
    let net = L7Net::new("ux").expect("namespace");
    let socket = net.dir().join("u1.sock");
    let listen = format!("unix:{}", socket.display());
    let backend = Backend::start(&net, "u1", &[&listen]).expect("unix backend");
    assert_eq!(backend.url(), listen);
    assert_eq!(backend.address(), listen);

    let socket_arg = socket.display().to_string();
    let reply = curl(
        &net,
        &[
            "--unix-socket",
            &socket_arg,
            "-H",
            "X-Test: yes",
            "http://app.test/hello?x=1",
        ],
    )
    .expect("curl --unix-socket");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.http_version, "1.1");
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON body");
    assert_eq!(json["server"], "u1");
    assert_eq!(json["peer"], "unix");
    assert_eq!(json["uri"], "/hello?x=1");
    assert_eq!(json["headers"][0], serde_json::json!(["host", "app.test"]));

    // The harness's own client over the socket, and /stats through it.
    let reply = Client::unix(&net, &socket)
        .send(&Request::get("/bench"))
        .expect("client over unix");
    assert_eq!(reply.text(), "hello, world\n");
    let stats = backend.stats().expect("stats over unix");
    assert_eq!((stats.connections, stats.requests), (2, 2));

    // curl's failures are errors, with curl's message.
    let err = curl(&net, &["http://127.0.0.1:9/"]).expect_err("nothing listens on port 9");
    assert!(format!("{err:#}").contains("127.0.0.1"), "{err:#}");
}

/// A rustls + hyper server in the test's namespace; answers `sni=NAME version=VERSION`.
/// Stopped and joined on drop.
struct TlsServer {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsServer {
    fn start(net: &L7Net, port: u16, config: Arc<rustls::ServerConfig>) -> TlsServer {
        let (shutdown, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, ready) = std::sync::mpsc::channel();
        let path = net.path();
        let thread = std::thread::spawn(move || {
            in_netns(&path, move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                        .await
                        .expect("bind the TLS test server");
                    bound.send(()).expect("test waits");
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    loop {
                        let (tcp, _) = tokio::select! {
                            accepted = listener.accept() => accepted.expect("accept"),
                            _ = &mut stopped => return,
                        };
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let Ok(tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let sni = tls.get_ref().1.server_name().unwrap_or("none").to_string();
                            let service = service_fn(move |request: hyper::Request<_>| {
                                let body = format!("sni={sni} version={:?}", request.version());
                                async move {
                                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                                }
                            });
                            let _ = auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(tls), service)
                                .await;
                        });
                    }
                });
            })
            .expect("enter the namespace");
        });
        ready
            .recv_timeout(Duration::from_secs(5))
            .expect("TLS test server bound");
        TlsServer {
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn https_client_negotiates_alpn_and_reports_certificate_names() {
    let net = L7Net::new("tls").expect("namespace");
    let certs = Certs::new().expect("CA");
    let site = certs
        .issue("site", &["site.test", "*.site.test", "127.0.0.1"])
        .expect("issue site");
    assert!(site.cert.is_file() && site.key.is_file());
    let pem = std::fs::read_to_string(&site.cert).unwrap();
    assert_eq!(
        pem.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf and CA in the chain file"
    );
    assert!(site.toml().contains("site.pem") && site.toml().contains("site.key"));
    let config = site
        .server_config(&["h2", "http/1.1"])
        .expect("server config");
    let _server = TlsServer::start(&net, TLS_PORT, config);
    let addr = format!("127.0.0.1:{TLS_PORT}");
    let ca = certs.ca_path();
    let sans = ["site.test", "*.site.test", "127.0.0.1"];

    // h2 by ALPN, the wildcard SAN covers the SNI.
    let tls = TlsOptions::new(ca).sni("www.site.test");
    let reply = https_request(&net, &addr, &tls, &Request::get("/").host("www.site.test"))
        .expect("HTTPS with h2");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.alpn.as_deref(), Some("h2"));
    assert_eq!(reply.version, "HTTP/2.0");
    assert_eq!(reply.tls_version.as_deref(), Some("TLSv1_3"));
    assert_eq!(reply.peer_cert_sans, sans);
    assert_eq!(reply.text(), "sni=www.site.test version=HTTP/2.0");

    // HTTP/1.1 when only it is offered; TLS 1.2 on request; several requests on one
    // connection.
    let tls11 = tls.clone().alpn(&["http/1.1"]).tls12_only();
    let replies = Client::tcp(&net, &addr)
        .tls(tls11)
        .send_all(&[Request::get("/a"), Request::get("/b")])
        .expect("HTTPS with HTTP/1.1");
    assert_eq!(replies[1].alpn.as_deref(), Some("http/1.1"));
    assert_eq!(replies[1].version, "HTTP/1.1");
    assert_eq!(replies[1].tls_version.as_deref(), Some("TLSv1_2"));
    assert_eq!(replies[1].text(), "sni=www.site.test version=HTTP/1.1");

    // No SNI: nothing is sent and there is no name to check.
    let info = Client::tcp(&net, &addr)
        .tls(TlsOptions::new(ca).alpn(&[]))
        .handshake()
        .expect("handshake without SNI");
    assert_eq!(info.alpn, None);
    assert_eq!(info.peer_cert_sans, sans);
    let reply =
        https_request(&net, &addr, &TlsOptions::new(ca), &Request::get("/")).expect("no SNI");
    assert_eq!(reply.text(), "sni=none version=HTTP/2.0");

    // A name the certificate does not cover fails the check, unless it is skipped.
    let wrong = TlsOptions::new(ca).sni("other.test");
    let err = https_request(&net, &addr, &wrong, &Request::get("/")).expect_err("wrong name");
    assert!(format!("{err:#}").contains("not valid for name"), "{err:#}");
    let reply = https_request(&net, &addr, &wrong.skip_name_check(), &Request::get("/"))
        .expect("name check skipped");
    assert_eq!(reply.peer_cert_sans, sans);

    // A certificate from another CA, or an expired one, fails whatever the name.
    let stranger = Certs::new().expect("second CA");
    let err = https_request(
        &net,
        &addr,
        &TlsOptions::new(stranger.ca_path()).skip_name_check(),
        &Request::get("/"),
    )
    .expect_err("unknown CA");
    assert!(format!("{err:#}").contains("UnknownIssuer"), "{err:#}");
    let expired = certs
        .issue_expired("old", &["old.site.test"])
        .expect("issue expired");
    let _old_server = TlsServer::start(
        &net,
        TLS_PORT + 1,
        expired.server_config(&["h2"]).expect("config"),
    );
    let err = https_request(
        &net,
        &format!("127.0.0.1:{}", TLS_PORT + 1),
        &TlsOptions::new(ca).sni("old.site.test"),
        &Request::get("/"),
    )
    .expect_err("expired certificate");
    assert!(
        format!("{err:#}").contains("certificate expired"),
        "{err:#}"
    );

    // curl with --resolve, --cacert and --http2 against the same server.
    let resolve = format!("www.site.test:{TLS_PORT}:127.0.0.1");
    let ca_arg = ca.display().to_string();
    let url = format!("https://www.site.test:{TLS_PORT}/");
    let reply = curl(
        &net,
        &["--http2", "--cacert", &ca_arg, "--resolve", &resolve, &url],
    )
    .expect("curl over TLS");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.http_version, "2");
    assert_eq!(reply.text(), "sni=www.site.test version=HTTP/2.0");
}

#[test]
fn websocket_and_raw_tcp_helpers_work_against_the_backend() {
    let net = L7Net::new("ws").expect("namespace");
    let backend = Backend::start(&net, "b1", &[B1]).expect("backend");

    let echo = websocket_echo(
        &net,
        B1,
        "ws://app.test/ws",
        None,
        &["one", "two", "a longer third message"],
    )
    .expect("WebSocket echo");
    assert_eq!(echo.status, 101);
    assert_eq!(echo.echoes, ["one", "two", "a longer third message"]);

    let err = websocket_echo(&net, B1, "ws://app.test/not-ws", None, &["x"])
        .expect_err("no upgrade on /not-ws");
    assert!(format!("{err:#}").contains("status 200"), "{err:#}");

    // A request written a few bytes at a time still gets its answer, then the close.
    let request = b"GET /bench HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let chunks: Vec<&[u8]> = request.chunks(8).collect();
    let outcome = raw_tcp(
        &net,
        B1,
        &chunks,
        Duration::from_millis(20),
        Duration::from_secs(3),
    )
    .expect("raw TCP");
    assert_eq!(outcome.chunks_sent, chunks.len());
    assert!(outcome.write_error.is_none(), "{outcome:?}");
    let text = outcome.text();
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("\r\n\r\nhello, world\n"),
        "{text:?}"
    );
    assert!(
        outcome.closed_after.is_some(),
        "the backend closes after Connection: close"
    );

    // An unfinished request: nothing comes back, the connection stays open until `wait`.
    let outcome = raw_tcp(
        &net,
        B1,
        &[b"GET / HTTP/1.1\r\n"],
        Duration::ZERO,
        Duration::from_millis(300),
    )
    .expect("raw TCP, unfinished");
    assert!(outcome.received.is_empty(), "{outcome:?}");
    assert_eq!(outcome.closed_after, None);

    let stats = eventually("the raw connections closed", || {
        let stats = backend.stats().expect("stats");
        (stats.open == 0).then_some(stats)
    });
    assert_eq!(
        (stats.connections, stats.requests),
        (4, 3),
        "the unfinished request is no request"
    );
}

#[test]
fn nginx_serves_files_and_proxies_inside_the_namespace() {
    let net = L7Net::new("ngx").expect("namespace");
    let backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let servers = format!(
        "    server {{
        listen 127.0.0.1:8088;
        server_name static.test;
        root html;
        location /api/ {{ proxy_pass {}; }}
    }}",
        backend.url()
    );
    let nginx = Nginx::start(&net, &servers).unwrap_or_else(|err| {
        panic!("nginx should start (if it is missing, run `cargo xtask setup`): {err:#}")
    });
    std::fs::write(nginx.html_dir().join("hello.txt"), "hello from nginx\n").unwrap();
    std::fs::write(nginx.html_dir().join("index.html"), "<p>index</p>\n").unwrap();

    let reply = curl(&net, &["http://127.0.0.1:8088/hello.txt"]).expect("curl nginx");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello from nginx\n");
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert!(reply.header("server").unwrap_or("").starts_with("nginx"));

    let reply = http_request(&net, "127.0.0.1:8088", &Request::get("/")).expect("index");
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "<p>index</p>\n")
    );
    let reply =
        http_request(&net, "127.0.0.1:8088", &Request::get("/missing")).expect("missing file");
    assert_eq!(reply.status, 404);

    // As a proxy in front of the backend.
    let reply =
        http_request(&net, "127.0.0.1:8088", &Request::get("/api/x?y=1")).expect("through nginx");
    let json = reply.json();
    assert_eq!(json["server"], "b1");
    assert_eq!(json["uri"], "/api/x?y=1");
    assert!(nginx.access_log().contains("/api/x?y=1"), "access log");
    let status = nginx.stop().expect("stop nginx");
    assert!(status.success(), "nginx exits 0 on SIGTERM: {status}");
}

#[test]
fn everything_is_removed_on_drop_even_after_a_panic() {
    let (sender, receiver) = std::sync::mpsc::channel();
    let outcome = std::panic::catch_unwind(move || {
        let net = L7Net::new("drop").expect("namespace");
        let backend = Backend::start(&net, "b1", &[B1]).expect("backend");
        let nginx = Nginx::start(&net, "server { listen 127.0.0.1:8088; root html; }")
            .expect("nginx (run `cargo xtask setup` if it is missing)");
        let certs = Certs::new().expect("CA");
        // A stray process with no handle at all: the namespace's drop kills it.
        let stray = net.spawn("sleep", "sleep", &["600"]).expect("sleep");
        let stray_pid = stray.pid().unwrap();
        std::mem::forget(stray);
        sender
            .send((
                net.name().to_string(),
                net.dir().to_path_buf(),
                nginx.prefix().to_path_buf(),
                certs.dir().to_path_buf(),
                [backend.pid().unwrap(), stray_pid],
            ))
            .unwrap();
        panic!("deliberate panic to test cleanup");
    });
    assert!(outcome.is_err(), "the closure panics");
    let (name, dir, prefix, certs, pids) = receiver.recv().expect("what was created");
    assert!(!netns_listed(&name), "namespace {name} left behind");
    for path in [&dir, &prefix, &certs] {
        assert!(!path.exists(), "{} left behind", path.display());
    }
    for pid in pids {
        // The forgotten process is killed but not reaped by anyone until this test ends.
        assert!(!process_alive(pid), "process {pid} left running");
    }
}
