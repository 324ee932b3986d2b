//! The L7 proxy end to end, limits and failures: a real `balancer run` in its own namespace,
//! real `l7_backend` servers, and real clients (the harness's hyper client, raw TCP).
//!
//! - The header-read clock cuts slow request heads even while bytes arrive; the keep-alive
//!   clock closes idle connections, not before; neither cuts a slow response.
//! - 413 over the route's `max_body_size`, 431 over `max_header_bytes` / `max_headers`.
//! - `max_connections`: a connection over the limit waits until another closes.
//! - 504 / 502 / 503 from the pool, error pages (route before pool), default bodies that
//!   never name the server.
//! - One access-log line per request, text or JSON; with `access_log_file`, nginx's combined
//!   format in a buffered file, reopened on SIGUSR1 and flushed on exit.
//!
//! Timeouts are checked with generous bounds (0.8× to 3× the configured value). Each test has
//! its own namespace, so the fixed ports never collide.

mod l7_support;

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use balancer_tests::{
    Backend, BalancerProcess, Certs, Client, L7Net, Reply, Request, l7::RawOutcome, raw_tcp,
};
use l7_support::{ok, start};

const B1: &str = "127.0.0.1:8081";
const WEB: &str = "127.0.0.1:8080";

/// A plain listener "web" on [`WEB`] with the extra `listener` keys, every request routed to a
/// pool of the backend at [`B1`].
fn web_config(listener: &str) -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "{WEB}"
{listener}

[[route]]
name = "app"
listener = "web"
pool = "app"

[pool.app]
servers = [ {{ url = "http://{B1}" }} ]
"#
    )
}

/// A plain listener "web" on [`WEB`], then `rest` (routes and pools).
fn web_listener_then(rest: &str) -> String {
    format!("[[listener]]\nname = \"web\"\nbind = \"{WEB}\"\n{rest}")
}

/// Asserts that the connection was closed between `low` and `high` after it was opened.
fn assert_closed_between(
    outcome: &RawOutcome,
    low: Duration,
    high: Duration,
    what: &str,
    balancer: &BalancerProcess,
) {
    match outcome.closed_after {
        Some(after) => assert!(
            after >= low && after <= high,
            "{what}: expected the proxy to close the connection between {low:?} and {high:?}, \
             it closed after {after:?} (received {:?})\nbalancer log:\n{}",
            outcome.text(),
            balancer.log()
        ),
        None => panic!(
            "{what}: expected the proxy to close the connection between {low:?} and {high:?}, \
             it stayed open (received {:?})\nbalancer log:\n{}",
            outcome.text(),
            balancer.log()
        ),
    }
}

fn count_responses(text: &str, status_line: &str) -> usize {
    text.matches(status_line).count()
}

// ---------------------------------------------------------------------------------------------
// Clocks

/// `timeouts.response` is also the longest a response body may go without data (nginx's
/// `proxy_read_timeout`): a server that stops in the middle of a body no longer holds the
/// client (and the server's connection) until the client gives up. Buffered and streamed
/// responses alike, from HTTP/1.1 and from h2c servers. A slow body whose pauses are each
/// shorter passes whole.
#[test]
fn a_server_that_stops_mid_body_is_cut_after_the_response_timeout() {
    const H2C: &str = "127.0.0.1:8083";
    let net = L7Net::new("bodygap").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let _h2c = Backend::start_h2c(&net, "h2c", &[H2C]).expect("h2c backend");
    let toml = web_listener_then(&format!(
        r#"
[[route]]
listener = "web"
path = "/streamed/"
strip_prefix = true
response_buffering = false
pool = "app"

[[route]]
listener = "web"
path = "/h2c/"
strip_prefix = true
pool = "h2c"

[pool.h2c]
servers = [ {{ url = "http://{H2C}" }} ]
h2c = true
timeouts = {{ response = "1s" }}

[[route]]
listener = "web"
pool = "app"

[pool.app]
servers = [ {{ url = "http://{B1}" }} ]
timeouts = {{ response = "1s" }}
"#
    ));
    let balancer = start(&net, &toml);
    for path in [
        "/drip/10/30000",
        "/streamed/drip/10/30000",
        "/h2c/drip/10/30000",
    ] {
        // The server sends its head and one byte of ten, then nothing for 30 s.
        let request = format!("GET {path} HTTP/1.1\r\nHost: gap.test\r\n\r\n");
        let outcome = raw_tcp(
            &net,
            WEB,
            &[request.as_bytes()],
            Duration::ZERO,
            Duration::from_secs(8),
        )
        .expect("raw connection");
        let text = outcome.text();
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("\r\n\r\nx"),
            "{path}: the head and the one byte the server sent, then nothing: {text:?}"
        );
        assert_closed_between(
            &outcome,
            Duration::from_millis(900),
            Duration::from_secs(4),
            path,
            &balancer,
        );
    }
    let log = balancer.log();
    assert!(
        log.contains("the server sent nothing for 1s in the middle of a response body"),
        "the cut is logged, naming the timeout:\n{log}"
    );

    // Six bytes 400 ms apart: 2 s in all, twice the timeout, but never 1 s without data.
    let client = Client::tcp(&net, WEB).timeout(Duration::from_secs(10));
    for path in ["/drip/6/400", "/streamed/drip/6/400", "/h2c/drip/6/400"] {
        let reply = ok(
            client.send(&Request::get(path).host("gap.test")),
            path,
            &balancer,
        );
        assert_eq!(
            (reply.status, reply.text()),
            (200, "xxxxxx".to_string()),
            "{path}"
        );
    }
}

#[test]
fn a_slow_request_head_is_cut_at_header_read_timeout_even_while_bytes_arrive() {
    let net = L7Net::new("slowloris").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let certs = Certs::new().expect("CA");
    let site = certs.issue("site", &["slow.test"]).expect("cert");
    let toml = format!(
        r#"{}
[[listener]]
name = "tls"
bind = "127.0.0.1:8443"
tls = {{ certificates = [ {} ] }}
header_read_timeout = "1s"

[[route]]
listener = "tls"
pool = "app"
"#,
        web_config("header_read_timeout = \"1s\"\nkeepalive_timeout = \"5s\""),
        site.toml()
    );
    let balancer = start(&net, &toml);
    let head = format!(
        "GET / HTTP/1.1\r\nHost: slow.test\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(60)
    );
    // One byte every 100 ms: about 9 s for the whole head.
    let bytes: Vec<&[u8]> = head.as_bytes().chunks(1).collect();
    let outcome = ok(
        raw_tcp(
            &net,
            WEB,
            &bytes,
            Duration::from_millis(100),
            Duration::from_secs(4),
        ),
        "slowloris",
        &balancer,
    );
    assert_closed_between(
        &outcome,
        Duration::from_millis(800),
        Duration::from_secs(3),
        "a head trickling in over 9 s with header_read_timeout 1s",
        &balancer,
    );
    assert!(
        outcome.chunks_sent < bytes.len(),
        "the head was never complete"
    );
    assert!(
        !outcome.text().contains(" 200 "),
        "nothing was served: {:?}",
        outcome.text()
    );

    // The same on a keep-alive connection: one request served, the next head trickles.
    let mut chunks: Vec<&[u8]> = vec![b"GET /first HTTP/1.1\r\nHost: slow.test\r\n\r\n"];
    chunks.extend(bytes.iter().copied());
    let outcome = ok(
        raw_tcp(
            &net,
            WEB,
            &chunks,
            Duration::from_millis(100),
            Duration::from_secs(4),
        ),
        "slowloris after a request",
        &balancer,
    );
    assert_eq!(
        count_responses(&outcome.text(), "HTTP/1.1 200"),
        1,
        "the first request is served: {:?}",
        outcome.text()
    );
    // The second head starts 100 ms after the connect.
    assert_closed_between(
        &outcome,
        Duration::from_millis(900),
        Duration::from_millis(3100),
        "a second head trickling in with header_read_timeout 1s (keepalive_timeout 5s)",
        &balancer,
    );

    // A TLS handshake trickling in: the record header announces 512 bytes that never come
    // in time.
    let mut hello: Vec<&[u8]> = vec![&[0x16, 0x03, 0x01, 0x02, 0x00]];
    hello.extend(std::iter::repeat_n(&[0x01u8][..], 90));
    let outcome = ok(
        raw_tcp(
            &net,
            "127.0.0.1:8443",
            &hello,
            Duration::from_millis(100),
            Duration::from_secs(4),
        ),
        "slow TLS handshake",
        &balancer,
    );
    assert_closed_between(
        &outcome,
        Duration::from_millis(800),
        Duration::from_secs(3),
        "a TLS ClientHello trickling in over 9 s with header_read_timeout 1s",
        &balancer,
    );

    // A connection that sends nothing at all gets header_read_timeout too.
    let outcome = ok(
        raw_tcp(&net, WEB, &[], Duration::ZERO, Duration::from_secs(4)),
        "silent connection",
        &balancer,
    );
    assert_closed_between(
        &outcome,
        Duration::from_millis(800),
        Duration::from_secs(3),
        "a connection that never sends a byte",
        &balancer,
    );
}

#[test]
fn an_idle_keepalive_connection_is_closed_after_keepalive_timeout_and_not_before() {
    let net = L7Net::new("keepalive").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    // The header clock is shorter: if it ran on idle connections they would close at 1 s.
    let balancer = start(
        &net,
        &web_config("header_read_timeout = \"1s\"\nkeepalive_timeout = \"2s\""),
    );
    let request: &[u8] = b"GET /idle HTTP/1.1\r\nHost: idle.test\r\n\r\n";

    let outcome = ok(
        raw_tcp(
            &net,
            WEB,
            &[request],
            Duration::ZERO,
            Duration::from_secs(7),
        ),
        "one request then idle",
        &balancer,
    );
    assert_eq!(
        count_responses(&outcome.text(), "HTTP/1.1 200"),
        1,
        "{:?}",
        outcome.text()
    );
    assert_closed_between(
        &outcome,
        Duration::from_millis(1600),
        Duration::from_secs(6),
        "idle after one request with keepalive_timeout 2s (header_read_timeout 1s)",
        &balancer,
    );

    // A second request 1.5 s later (after header_read_timeout, before keepalive_timeout) is
    // served on the same connection, and the keep-alive clock starts again after it.
    let outcome = ok(
        raw_tcp(
            &net,
            WEB,
            &[request, request],
            Duration::from_millis(1500),
            Duration::from_secs(7),
        ),
        "two requests 1.5 s apart",
        &balancer,
    );
    assert_eq!(
        count_responses(&outcome.text(), "HTTP/1.1 200"),
        2,
        "both requests are served on one connection: {:?}",
        outcome.text()
    );
    assert_eq!(outcome.chunks_sent, 2);
    assert_closed_between(
        &outcome,
        Duration::from_millis(1500 + 1600),
        Duration::from_millis(1500 + 6000),
        "idle after the second request with keepalive_timeout 2s",
        &balancer,
    );
}

#[test]
fn a_slow_response_is_cut_by_neither_clock() {
    let net = L7Net::new("slowresp").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let balancer = start(
        &net,
        &web_config("header_read_timeout = \"1s\"\nkeepalive_timeout = \"1s\""),
    );
    let outcome = ok(
        raw_tcp(
            &net,
            WEB,
            &[b"GET /delay/2500 HTTP/1.1\r\nHost: slow.test\r\n\r\n"],
            Duration::ZERO,
            Duration::from_secs(8),
        ),
        "a 2.5 s response",
        &balancer,
    );
    let text = outcome.text();
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("/delay/2500"),
        "the slow response arrives whole: {text:?}\nbalancer log:\n{}",
        balancer.log()
    );
    // Closed by the keep-alive clock once the response is done: 2.5 s + 1 s.
    assert_closed_between(
        &outcome,
        Duration::from_millis(2500 + 800),
        Duration::from_millis(2500 + 3000),
        "after a 2.5 s response, with both clocks at 1s",
        &balancer,
    );

    // The same with the hyper client over HTTP/1.1.
    let started = Instant::now();
    let reply = ok(
        Client::tcp(&net, WEB).send(&Request::get("/delay/2000").host("slow.test")),
        "a 2 s response",
        &balancer,
    );
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() >= Duration::from_secs(2));
}

/// Opens an HTTP/2 connection to `addr` (h2c, or TLS with ALPN h2 when `tls` gives the CA and
/// the SNI), sends a GET for `uri`, then leaves the connection without streams (pinging every
/// `ping` if set): the status, and how long after the response the server closed the
/// connection (`None`: still open after `limit`).
fn h2_idle(
    net: &L7Net,
    addr: &str,
    tls: Option<(&Path, &str)>,
    ping: Option<Duration>,
    limit: Duration,
) -> anyhow::Result<(u16, Option<Duration>)> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

    let tls = match tls {
        Some((ca, sni)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)? {
                roots.add(cert?)?;
            }
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec()];
            Some((
                tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
                ServerName::try_from(sni.to_string())?,
            ))
        }
        None => None,
    };
    let addr = addr.to_string();
    net.run(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(addr.as_str()).await?;
            let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            if let Some(interval) = ping {
                builder
                    .keep_alive_interval(interval)
                    .keep_alive_while_idle(true)
                    .keep_alive_timeout(Duration::from_secs(5));
            }
            let (scheme, authority, mut sender, connection) = match tls {
                Some((connector, name)) => {
                    let authority = name.to_str().into_owned();
                    let stream = connector.connect(name, tcp).await?;
                    anyhow::ensure!(
                        stream.get_ref().1.alpn_protocol() == Some(b"h2"),
                        "ALPN did not give h2"
                    );
                    let (sender, connection) = builder.handshake(TokioIo::new(stream)).await?;
                    let connection = tokio::spawn(async move { connection.await.is_ok() });
                    ("https", authority, sender, connection)
                }
                None => {
                    let (sender, connection) = builder.handshake(TokioIo::new(tcp)).await?;
                    let connection = tokio::spawn(async move { connection.await.is_ok() });
                    ("http", "h2.test".to_string(), sender, connection)
                }
            };
            let request = hyper::Request::builder()
                .uri(format!("{scheme}://{authority}/h2"))
                .body(Empty::<bytes::Bytes>::new())?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            response.into_body().collect().await?;
            let idle = Instant::now();
            let mut connection = connection;
            let closed = tokio::time::timeout(limit, &mut connection).await;
            Ok((status, closed.ok().map(|_| idle.elapsed())))
        })
    })?
}

#[test]
fn an_idle_http2_connection_is_closed_after_keepalive_timeout_even_if_it_pings() {
    let net = L7Net::new("h2idle").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let certs = Certs::new().expect("CA");
    let site = certs.issue("site", &["h2.test"]).expect("cert");
    let toml = format!(
        r#"{}
[[listener]]
name = "tls"
bind = "127.0.0.1:8443"
tls = {{ certificates = [ {} ] }}
header_read_timeout = "1s"
keepalive_timeout = "2s"

[[route]]
listener = "tls"
pool = "app"
"#,
        web_config("header_read_timeout = \"1s\"\nkeepalive_timeout = \"2s\""),
        site.toml()
    );
    let balancer = start(&net, &toml);
    let tls = Some((certs.ca_path(), "h2.test"));
    // PINGs are no request heads: with the header clock (1s) running on them, the pinging
    // connections would close about 1.3 s after the response.
    let cases = [
        ("h2c", WEB, None, None),
        (
            "h2c pinging every 300 ms",
            WEB,
            None,
            Some(Duration::from_millis(300)),
        ),
        ("h2 over TLS", "127.0.0.1:8443", tls, None),
        (
            "h2 over TLS pinging every 300 ms",
            "127.0.0.1:8443",
            tls,
            Some(Duration::from_millis(300)),
        ),
    ];
    // The four connections at once: each takes a few seconds.
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let running: Vec<_> = cases
            .iter()
            .map(|&(label, addr, tls, ping)| {
                let net = &net;
                (
                    label,
                    scope.spawn(move || h2_idle(net, addr, tls, ping, Duration::from_secs(7))),
                )
            })
            .collect();
        running
            .into_iter()
            .map(|(label, thread)| (label, thread.join().expect("client thread")))
            .collect()
    });
    for (label, outcome) in outcomes {
        let (status, closed) = ok(outcome, label, &balancer);
        assert_eq!(status, 200, "{label}");
        assert!(
            closed.is_some_and(
                |after| after >= Duration::from_millis(1600) && after <= Duration::from_secs(6)
            ),
            "{label}: expected the proxy to close the idle connection between 1.6 s and 6 s \
             after the response (keepalive_timeout 2s, header_read_timeout 1s), it closed \
             after {closed:?}\nbalancer log:\n{}",
            balancer.log()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Size limits

/// A listener whose default route takes bodies up to 1 KiB; `/big/` has the default limit.
fn max_body_config() -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "{WEB}"

[[route]]
listener = "web"
pool = "app"
max_body_size = "1KiB"

[[route]]
listener = "web"
path = "/big/"
strip_prefix = true
pool = "app"

[pool.app]
servers = [ {{ url = "http://{B1}" }} ]
"#
    )
}

/// A plain TCP connection to the listener, from inside the namespace.
fn connect(net: &L7Net) -> TcpStream {
    let stream = net
        .run(|| TcpStream::connect(WEB))
        .expect("namespace")
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

#[test]
fn a_body_over_max_body_size_gets_413_with_or_without_content_length() {
    let net = L7Net::new("body").expect("namespace");
    let backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let balancer = start(&net, &max_body_config());
    let client = Client::tcp(&net, WEB);
    let post = |uri: &str, size: usize| -> Reply {
        let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let reply = ok(
            client.send(&Request::post(uri, body.clone()).host("body.test")),
            &format!("POST {uri} with {size} bytes"),
            &balancer,
        );
        if reply.status == 200 {
            assert!(
                reply.body == body,
                "POST {uri}: /echo returns the {size} bytes"
            );
        }
        reply
    };

    let reply = post("/echo", 2000);
    assert_eq!(reply.status, 413, "2000 bytes over 1 KiB: {}", reply.text());
    assert_eq!(
        backend.stats().expect("stats").requests,
        0,
        "a declared body over the limit is refused before the server sees it"
    );
    assert_eq!(post("/echo", 1024).status, 200, "exactly the limit");
    assert_eq!(post("/echo", 1000).status, 200, "under the limit");
    assert_eq!(
        post("/big/echo", 200_000).status,
        200,
        "another route has the default limit (16 MiB)"
    );
    // The same over HTTP/2 (prior knowledge).
    let h2 = Client::tcp(&net, WEB).h2c();
    for (size, status) in [(2000, 413), (100_000, 413), (1024, 200)] {
        let body = vec![b'q'; size];
        let reply = ok(
            h2.send(&Request::post("/echo", body.clone()).host("body.test")),
            &format!("HTTP/2 POST /echo with {size} bytes"),
            &balancer,
        );
        assert_eq!(reply.version, "HTTP/2.0");
        assert_eq!(
            reply.status,
            status,
            "HTTP/2, {size} bytes: {}",
            reply.text()
        );
        if status == 200 {
            assert!(reply.body == body, "HTTP/2: /echo returns the {size} bytes");
        }
    }

    // Chunked bodies: no length to check up front; the count stops it.
    let chunk = |size: usize| -> Vec<u8> {
        let mut bytes = format!("{size:x}\r\n").into_bytes();
        bytes.extend(std::iter::repeat_n(b'z', size));
        bytes.extend_from_slice(b"\r\n");
        bytes
    };
    let head: &[u8] =
        b"POST /echo HTTP/1.1\r\nHost: body.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (first, second) = (chunk(700), chunk(700));
    let outcome = ok(
        raw_tcp(
            &net,
            WEB,
            &[head, &first, &second, b"0\r\n\r\n"],
            Duration::from_millis(50),
            Duration::from_secs(5),
        ),
        "chunked 1400 bytes",
        &balancer,
    );
    assert!(
        outcome.text().starts_with("HTTP/1.1 413"),
        "a chunked body of 1400 bytes over 1 KiB gets 413: {:?}\nbalancer log:\n{}",
        outcome.text(),
        balancer.log()
    );
    let (first, second) = (chunk(300), chunk(300));
    let outcome = ok(
        raw_tcp(
            &net,
            WEB,
            &[
                head,
                &first,
                &second,
                b"0\r\n\r\n",
                b"GET /after HTTP/1.1\r\nHost: body.test\r\nConnection: close\r\n\r\n",
            ],
            Duration::from_millis(50),
            Duration::from_secs(5),
        ),
        "chunked 600 bytes",
        &balancer,
    );
    let text = outcome.text();
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains(&"z".repeat(600)),
        "a chunked body of 600 bytes is echoed: {text:?}"
    );
    assert_eq!(
        count_responses(&text, "HTTP/1.1 200"),
        2,
        "and the connection goes on: {text:?}"
    );
}

#[test]
fn too_many_header_bytes_or_fields_get_431() {
    let net = L7Net::new("headers").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let toml = format!(
        r#"
[[listener]]
name = "strict"
bind = "{WEB}"
max_header_bytes = 8192
max_headers = 10

[[listener]]
name = "default"
bind = "127.0.0.1:8090"

[[route]]
listener = "strict"
pool = "app"

[[route]]
listener = "default"
pool = "app"

[pool.app]
servers = [ {{ url = "http://{B1}" }} ]
"#
    );
    let balancer = start(&net, &toml);
    let big = Request::get("/big")
        .host("h.test")
        .header("x-big", &"b".repeat(10_000));
    let medium = Request::get("/medium")
        .host("h.test")
        .header("x-medium", &"m".repeat(6_000));
    let mut many = Request::get("/many").host("h.test");
    for i in 0..20 {
        many = many.header(&format!("x-h{i}"), "v");
    }
    let mut some = Request::get("/some").host("h.test");
    for i in 0..8 {
        some = some.header(&format!("x-h{i}"), "v");
    }

    // HTTP/1.1, and HTTP/2 (prior knowledge) on the same listeners.
    for h2 in [false, true] {
        let client = |addr: &str| {
            let client = Client::tcp(&net, addr);
            if h2 { client.h2c() } else { client }
        };
        let strict = client(WEB);
        let default = client("127.0.0.1:8090");
        for (client, request, status, why) in [
            (
                &strict,
                &big,
                431,
                "a 10 kB header over max_header_bytes 8192",
            ),
            (&strict, &many, 431, "21 fields over max_headers 10"),
            (&strict, &medium, 200, "a 6 kB header under 8192"),
            (&strict, &some, 200, "9 fields under 10"),
            (&default, &big, 200, "10 kB under the default 32 KiB"),
            (&default, &many, 200, "21 fields under the default 100"),
        ] {
            let why = format!("{why} (HTTP/2: {h2})");
            let reply = ok(client.send(request), &why, &balancer);
            assert_eq!(reply.status, status, "{why}: {}", reply.text());
            assert_eq!(reply.version, if h2 { "HTTP/2.0" } else { "HTTP/1.1" });
            if status == 200 {
                assert_eq!(reply.json()["uri"], request.uri, "{why}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connection limit

/// Reads from `stream` until a whole response head and `Content-Length` body arrived, the
/// connection closed, or `limit` passed: what arrived.
fn read_response(stream: &mut TcpStream, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(_) => break,
        }
        let text = String::from_utf8_lossy(&received);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// RFC 9112 §9.6: a connection that ends after a response is closed in stages, the write side
/// first, then what the client still sends is read and discarded until it stops. A client still
/// uploading when its request is refused then reads the 413; closed at once, the socket would
/// answer the rest of the upload with a reset, which on many stacks discards the unread 413.
#[test]
fn a_client_still_uploading_after_a_413_is_read_until_it_stops() {
    let net = L7Net::new("linger").expect("namespace");
    let backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let balancer = start(&net, &max_body_config());
    let mut stream = connect(&net);
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: linger.test\r\nContent-Length: 4000000\r\n\r\n")
        .expect("write the head");
    let response = read_response(&mut stream, Duration::from_secs(5));
    assert!(
        response.starts_with("HTTP/1.1 413") && response.contains("connection: close"),
        "a declared 4 MB body over 1 KiB is refused at once: {response:?}\nbalancer log:\n{}",
        balancer.log()
    );
    // The client sends its body anyway, as a browser uploading a file does. Each write after a
    // reset would fail (EPIPE, ECONNRESET).
    let piece = vec![b'u'; 64 * 1024];
    for sent in 0..32 {
        if let Err(err) = stream.write_all(&piece) {
            panic!(
                "the proxy reset the connection after {sent} of 32 pieces of 64 KiB: {err}\n\
                 balancer log:\n{}",
                balancer.log()
            );
        }
    }
    // Once the client stops and closes its side, the proxy's end follows: nothing more.
    stream
        .shutdown(Shutdown::Write)
        .expect("shut down the write side");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("the end of the connection, not a reset");
    assert!(rest.is_empty(), "nothing after the 413: {rest:?}");
    assert_eq!(
        backend.stats().expect("stats").requests,
        0,
        "the server never sees the refused upload"
    );
}

#[test]
fn max_connections_holds_a_third_connection_until_one_closes() {
    let net = L7Net::new("maxconn").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let balancer = start(&net, &web_config("max_connections = 2"));
    let request = |name: &str| format!("GET /{name} HTTP/1.1\r\nHost: conn.test\r\n\r\n");

    let mut first = connect(&net);
    let mut second = connect(&net);
    for (stream, name) in [(&mut first, "first"), (&mut second, "second")] {
        stream
            .write_all(request(name).as_bytes())
            .expect("write request");
        let response = read_response(stream, Duration::from_secs(5));
        assert!(
            response.starts_with("HTTP/1.1 200") && response.contains(&format!("/{name}")),
            "connection {name} (of 2 allowed) is served: {response:?}\nbalancer log:\n{}",
            balancer.log()
        );
    }
    // Both stay open (keep-alive). The kernel accepts a third; the proxy does not take it.
    let mut third = connect(&net);
    third
        .write_all(request("third").as_bytes())
        .expect("write request");
    let early = read_response(&mut third, Duration::from_millis(1500));
    assert_eq!(
        early, "",
        "a third connection over max_connections 2 should wait, but got an answer"
    );
    // The first two still work meanwhile.
    second
        .write_all(request("second-again").as_bytes())
        .expect("write request");
    let response = read_response(&mut second, Duration::from_secs(5));
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");

    drop(first);
    let response = read_response(&mut third, Duration::from_secs(5));
    assert!(
        response.starts_with("HTTP/1.1 200") && response.contains("/third"),
        "the third connection is served once the first closes: {response:?}\nbalancer log:\n{}",
        balancer.log()
    );
}

// ---------------------------------------------------------------------------------------------
// Upstream failures and error pages

/// Addresses where nothing listens.
const DEAD: &str = "127.0.0.1:39999";
const DOWN: &str = "127.0.0.1:39998";

fn assert_no_address(reply: &Reply, what: &str) {
    let body = reply.text();
    for secret in ["127.0.0.1", "8081", "39999", "39998", "refused"] {
        assert!(
            !body.contains(secret),
            "{what}: the error body names {secret:?}: {body}"
        );
    }
}

#[test]
fn upstream_failures_give_504_502_and_503_without_naming_the_server() {
    let net = L7Net::new("upstream").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let toml = web_listener_then(&format!(
        r#"
[[route]]
listener = "web"
host = "slow.test"
pool = "slow"

[[route]]
listener = "web"
host = "dead.test"
pool = "dead"

[[route]]
listener = "web"
host = "down.test"
pool = "down"

[pool.slow]
servers = [ {{ url = "http://{B1}" }} ]
timeouts = {{ response = "1s" }}

[pool.dead]
servers = [ {{ url = "http://{DEAD}" }} ]
retry = {{ after_failure = "0s" }}

[pool.down]
servers = [ {{ url = "http://{DOWN}" }} ]
"#
    ));
    let balancer = start(&net, &toml);
    let client = Client::tcp(&net, WEB);
    let get = |host: &str, uri: &str| -> Reply {
        ok(
            client.send(&Request::get(uri).host(host)),
            &format!("GET {uri} (Host {host})"),
            &balancer,
        )
    };

    let started = Instant::now();
    let reply = get("slow.test", "/delay/3000");
    let took = started.elapsed();
    assert_eq!(
        reply.status,
        504,
        "a 3 s answer with a 1 s response timeout: {}",
        reply.text()
    );
    assert!(
        took >= Duration::from_millis(800) && took <= Duration::from_secs(3),
        "the 504 should come after about 1 s, came after {took:?}"
    );
    assert_no_address(&reply, "504");
    assert_eq!(get("slow.test", "/delay/100").status, 200, "a fast answer");

    // Nothing listens: 502, every time (after_failure 0s keeps the server eligible).
    for attempt in 0..3 {
        let reply = get("dead.test", "/");
        assert_eq!(reply.status, 502, "attempt {attempt}: {}", reply.text());
        assert_no_address(&reply, "502");
    }

    // The default after_failure (5 s): 502 for the failed connect, then 503 while the only
    // server is skipped.
    let reply = get("down.test", "/");
    assert_eq!(reply.status, 502, "{}", reply.text());
    for attempt in 0..2 {
        let reply = get("down.test", "/");
        assert_eq!(
            reply.status,
            503,
            "attempt {attempt}: no server is eligible: {}",
            reply.text()
        );
        assert_no_address(&reply, "503");
    }
}

#[test]
fn error_pages_replace_default_bodies_and_route_pages_beat_pool_pages() {
    let net = L7Net::new("errpages").expect("namespace");
    let pages = net.dir().join("pages");
    std::fs::create_dir_all(&pages).expect("dir");
    let page = |name: &str, text: &str| -> String {
        let path = pages.join(name);
        std::fs::write(&path, text).expect("write page");
        path.display().to_string()
    };
    let route_502 = page("route-502.html", "<p>route page for 502</p>");
    let pool_502 = page("pool-502.html", "<p>pool page for 502</p>");
    let pool_503 = page("pool-503.txt", "pool page for 503");
    let toml = format!(
        r#"
[[listener]]
name = "web"
bind = "{WEB}"

[[route]]
listener = "web"
host = "a.test"
pool = "dead"
error_pages = {{ 502 = {route_502:?} }}

[[route]]
listener = "web"
host = "b.test"
pool = "dead"

[[route]]
listener = "web"
host = "c.test"
pool = "down"
error_pages = {{ 502 = {route_502:?} }}

[pool.dead]
servers = [ {{ url = "http://{DEAD}" }} ]
retry = {{ after_failure = "0s" }}
error_pages = {{ 502 = {pool_502:?} }}

[pool.down]
servers = [ {{ url = "http://{DOWN}" }} ]
error_pages = {{ 503 = {pool_503:?} }}
"#
    );
    let balancer = start(&net, &toml);
    let client = Client::tcp(&net, WEB);
    let get = |host: &str| -> Reply {
        ok(
            client.send(&Request::get("/").host(host)),
            &format!("GET / (Host {host})"),
            &balancer,
        )
    };

    let reply = get("a.test");
    assert_eq!(reply.status, 502);
    assert_eq!(
        reply.text(),
        "<p>route page for 502</p>",
        "the route's page beats the pool's"
    );
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let reply = get("b.test");
    assert_eq!(reply.status, 502);
    assert_eq!(
        reply.text(),
        "<p>pool page for 502</p>",
        "a route without pages gets the pool's"
    );

    // The route has a 502 page only: its 503 comes from the pool.
    let reply = get("c.test");
    assert_eq!(reply.status, 502);
    assert_eq!(reply.text(), "<p>route page for 502</p>");
    let reply = get("c.test");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.text(), "pool page for 503");
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    // No route: the default body, which names nothing internal.
    let reply = get("nowhere.test");
    assert_eq!(reply.status, 404);
    assert!(reply.text().contains("404 Not Found"), "{}", reply.text());
    assert_no_address(&reply, "404");
}

// ---------------------------------------------------------------------------------------------
// Access log

/// The access-log lines in the balancer's log (tracing target `access`), once `count` are there.
fn access_lines(balancer: &BalancerProcess, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = balancer
            .log()
            .lines()
            .filter_map(|line| {
                line.split_once(" access: ")
                    .map(|(_, rest)| rest.to_string())
            })
            .collect();
        if lines.len() >= count || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn access_log_config(format: &str) -> String {
    format!(
        r#"
[proxy]
access_log = "{format}"

[[listener]]
name = "web"
bind = "{WEB}"

[[route]]
name = "app"
listener = "web"
host = "www.log.test"
path = "/a"
pool = "app"

[pool.app]
servers = [ {{ url = "http://{B1}" }} ]
"#
    )
}

#[test]
fn the_access_log_has_one_text_line_per_request() {
    let net = L7Net::new("accesstext").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let balancer = start(&net, &access_log_config("text"));
    let replies = ok(
        Client::tcp(&net, WEB).send_all(&[
            Request::get("/a/x?q=1")
                .host("www.log.test")
                .header("user-agent", "test-agent/1"),
            Request::get("/missing").host("www.log.test"),
            Request::post("/a/post", "hello").host("www.log.test"),
        ]),
        "three requests",
        &balancer,
    );
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 404, 200]);
    let lines = access_lines(&balancer, 3);
    assert_eq!(
        lines.len(),
        3,
        "one access line per request: {lines:#?}\nbalancer log:\n{}",
        balancer.log()
    );
    let expected = [
        format!(
            "\"GET /a/x?q=1 HTTP/1.1\" 200 {} \"-\" \"test-agent/1\" host=www.log.test route=app upstream=http://{B1} ",
            replies[0].body.len()
        ),
        format!(
            "\"GET /missing HTTP/1.1\" 404 {} \"-\" \"-\" host=www.log.test route=- upstream=- ",
            replies[1].body.len()
        ),
        format!(
            "\"POST /a/post HTTP/1.1\" 200 {} \"-\" \"-\" host=www.log.test route=app upstream=http://{B1} ",
            replies[2].body.len()
        ),
    ];
    for (line, expected) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with("127.0.0.1 - - ["),
            "the client address first: {line}"
        );
        assert!(line.contains(expected), "expected {expected:?} in {line:?}");
        assert!(line.contains(" duration="), "{line}");
    }
}

#[test]
fn the_json_access_log_has_one_object_per_request() {
    let net = L7Net::new("accessjson").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let balancer = start(&net, &access_log_config("json"));
    let replies = ok(
        Client::tcp(&net, WEB).send_all(&[
            Request::get("/a/x?q=1").host("www.log.test"),
            Request::get("/missing").host("other.test"),
        ]),
        "two requests",
        &balancer,
    );
    let lines = access_lines(&balancer, 2);
    assert_eq!(
        lines.len(),
        2,
        "one access line per request: {lines:#?}\nbalancer log:\n{}",
        balancer.log()
    );
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| {
            serde_json::from_str(line.trim())
                .unwrap_or_else(|err| panic!("not a JSON access line ({err}): {line}"))
        })
        .collect();
    let upstream = format!("http://{B1}");
    for (object, reply, (host, method, target, status, route, up)) in [
        (
            &objects[0],
            &replies[0],
            (
                "www.log.test",
                "GET",
                "/a/x?q=1",
                200,
                "app",
                upstream.as_str(),
            ),
        ),
        (
            &objects[1],
            &replies[1],
            ("other.test", "GET", "/missing", 404, "", ""),
        ),
    ] {
        assert_eq!(object["client"], "127.0.0.1", "{object}");
        assert_eq!(object["host"], host, "{object}");
        assert_eq!(object["method"], method, "{object}");
        assert_eq!(object["target"], target, "{object}");
        assert_eq!(object["status"], status, "{object}");
        assert_eq!(object["bytes"], reply.body.len(), "{object}");
        assert_eq!(object["route"], route, "{object}");
        assert_eq!(object["upstream"], up, "{object}");
        assert_eq!(object["listener"], "web", "{object}");
        assert!(object["duration"].is_number(), "{object}");
    }
}

/// The lines of `path` once there are `count` (or after 5 s, whatever is there).
fn file_lines(path: &Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(ToString::to_string).collect();
        if lines.len() >= count || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `balancer_http_requests_total{labels}` reaches `count`.
fn wait_for_requests(balancer: &BalancerProcess, labels: &str, count: u64) {
    let series = format!("balancer_http_requests_total{{{labels}}} ");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) = balancer.admin_get("/metrics").expect("metrics");
        let counted = metrics
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if counted >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed at {counted}, not {count}:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Checks `line` against nginx's combined format field by field:
/// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
/// "$http_referer" "$http_user_agent"`, extras allowed only after it.
fn assert_combined(line: &str, user: &str, request: &str, status: u16, bytes: usize, tail: &str) {
    let prefix = format!("127.0.0.1 - {user} [");
    let rest = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?} first: {line}"));
    let (time, rest) = rest
        .split_once("] ")
        .unwrap_or_else(|| panic!("no time: {line}"));
    // 06/Dec/2026:14:11:44 +0000
    let bytes_of = time.as_bytes();
    assert_eq!(time.len(), 26, "$time_local {time:?}");
    for (at, byte) in [
        (2, b'/'),
        (6, b'/'),
        (11, b':'),
        (14, b':'),
        (17, b':'),
        (20, b' '),
    ] {
        assert_eq!(bytes_of[at], byte, "$time_local {time:?}");
    }
    assert!(matches!(bytes_of[21], b'+' | b'-'), "$time_local {time:?}");
    let expected = format!("\"{request}\" {status} {bytes} {tail} host=");
    assert!(
        rest.starts_with(&expected),
        "expected {expected:?} after the time: {line}"
    );
}

#[test]
fn the_access_log_file_is_combined_buffered_reopened_on_sigusr1_and_flushed_on_exit() {
    let net = L7Net::new("accessfile").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let path = net.dir().join("access.log");
    let rotated = net.dir().join("access.log.1");
    let config = access_log_config("combined").replacen(
        "[proxy]\n",
        &format!(
            "[proxy]\naccess_log_file = {:?}\n",
            path.display().to_string()
        ),
        1,
    );
    let mut balancer = start(&net, &config);
    let client = Client::tcp(&net, WEB);
    let first = ok(
        client.send_all(&[
            Request::get("/a/x?q=1")
                .host("www.log.test")
                .header("user-agent", "agent \"quoted\"")
                .header("referer", "https://www.log.test/from")
                // "alice:secret"
                .header("authorization", "Basic YWxpY2U6c2VjcmV0"),
            Request::get("/missing").host("www.log.test"),
        ]),
        "two requests",
        &balancer,
    );
    // Nothing else writes: the flusher puts the lines in the file within a second or so.
    let lines = file_lines(&path, 2);
    assert_eq!(
        lines.len(),
        2,
        "two lines in {}: {lines:#?}",
        path.display()
    );
    assert_combined(
        &lines[0],
        "alice",
        "GET /a/x?q=1 HTTP/1.1",
        200,
        first[0].body.len(),
        "\"https://www.log.test/from\" \"agent \\x22quoted\\x22\"",
    );
    assert_combined(
        &lines[1],
        "-",
        "GET /missing HTTP/1.1",
        404,
        first[1].body.len(),
        "\"-\" \"-\"",
    );
    assert!(
        access_lines(&balancer, 0).is_empty(),
        "with a file, no access lines in the process log:\n{}",
        balancer.log()
    );

    // logrotate: rename, then SIGUSR1. A line still in memory goes to the renamed file.
    ok(
        client.send(&Request::get("/a/third").host("www.log.test")),
        "third request",
        &balancer,
    );
    // The line is written just after the response goes out; the request counter moves after
    // the line, so once it counts route `app`'s second 200 the line is in the buffer.
    wait_for_requests(&balancer, "route=\"app\",pool=\"app\",code=\"200\"", 2);
    std::fs::rename(&path, &rotated).expect("rotate");
    balancer.signal(libc::SIGUSR1).expect("SIGUSR1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !balancer.log().contains("access log reopened") {
        assert!(
            Instant::now() < deadline,
            "no reopen in the log:\n{}",
            balancer.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(
        client.send(&Request::get("/a/fourth").host("www.log.test")),
        "fourth request",
        &balancer,
    );
    // Straight to SIGTERM: the last line is written when the process exits, not lost.
    let status = balancer.terminate().expect("exit");
    assert!(status.success(), "{status}");
    let old = std::fs::read_to_string(&rotated).expect("rotated file");
    let new = std::fs::read_to_string(&path).expect("reopened file");
    assert_eq!(old.lines().count(), 3, "old file:\n{old}");
    assert!(
        old.lines()
            .nth(2)
            .unwrap_or_default()
            .contains("GET /a/third "),
        "{old}"
    );
    assert_eq!(new.lines().count(), 1, "new file:\n{new}");
    assert!(new.contains("\"GET /a/fourth HTTP/1.1\" 200 "), "{new}");
}

#[test]
fn an_access_log_file_that_cannot_be_opened_refuses_the_reload() {
    let net = L7Net::new("accessbad").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let config_path = net.dir().join("balancer.toml");
    let balancer = start(&net, &access_log_config("combined"));
    let bad = access_log_config("combined").replacen(
        "[proxy]\n",
        "[proxy]\naccess_log_file = \"/nonexistent-dir/access.log\"\n",
        1,
    );
    std::fs::write(&config_path, bad).expect("write config");
    let (status, body) = balancer.admin_post("/api/reload").expect("reload");
    assert_ne!(status, 200, "{body}");
    assert!(
        body.contains("proxy.access_log_file /nonexistent-dir/access.log"),
        "{body}"
    );
    let reply = ok(
        Client::tcp(&net, WEB).send(&Request::get("/a/x").host("www.log.test")),
        "after the refused reload",
        &balancer,
    );
    assert_eq!(reply.status, 200, "the old config keeps serving");
}
