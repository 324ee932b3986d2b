//! TLS to servers end to end: a real `balancer run` in its own namespace in front of Debian's
//! nginx serving TLS, with certificates made here (a CA, server certificates for a name, an
//! expired one, another CA's, a client CA for mTLS).
//!
//! - A verified request over https:// succeeds, and keep-alive keeps one TLS connection
//!   (nginx's `$connection` is the same for two requests); the server's own 4xx passes
//!   through; a CA file broken under a running balancer makes SIGHUP refuse the reload.
//! - `tls_server_name` is the SNI sent and the name verified, whatever the URL's host.
//! - A wrong CA, a wrong name and an expired certificate give 502, and the balancer's log
//!   names rustls's reason.
//! - mTLS with `tls_cert_file`/`tls_key_file`; without them nginx's own 400 passes through.
//! - Health checks of https:// servers use the pool's TLS settings.
//! - `h2 = true` speaks HTTP/2 to an nginx that offers it, HTTP/1.1 to one that does not.
//! - A WebSocket upgrade is tunnelled over the TLS connection to the server.
//!
//! Each test has its own namespace, so the fixed ports never collide.

mod l7_support;

use std::time::Duration;

use balancer_tests::{
    Backend, BalancerProcess, CertFiles, Certs, L7Net, Nginx, Reply, Request, http_request,
    websocket_echo,
};
use l7_support::{LISTEN, eventually, ok, server_counter, server_state, start};

fn net(tag: &str) -> L7Net {
    L7Net::new(tag).unwrap_or_else(|err| panic!("namespace for {tag}: {err:#}"))
}

fn nginx(net: &L7Net, servers: &str) -> Nginx {
    Nginx::start(net, servers)
        .unwrap_or_else(|err| panic!("nginx should start (run `cargo xtask setup`): {err:#}"))
}

/// An nginx `server` block with TLS on `port` of 127.0.0.1 and [::1] with `cert`, answering
/// every request with its connection number, protocol and the SNI it got; `extra` goes into
/// the block.
fn tls_server(port: u16, cert: &CertFiles, extra: &str) -> String {
    format!(
        "    server {{
        listen 127.0.0.1:{port} ssl{h2};
        listen [::1]:{port} ssl{h2};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        keepalive_requests 100;
        {extra}
        location = /forbidden {{ return 403 \"not here\\n\"; }}
        location / {{ return 200 \"conn=$connection proto=$server_protocol sni=$ssl_server_name\\n\"; }}
    }}\n",
        h2 = if extra.contains("# h2") { " http2" } else { "" },
        cert = cert.cert.display(),
        key = cert.key.display(),
    )
}

/// A config with a plain listener on [`LISTEN`], one route per `(path, pool)` and the pools'
/// tables (`pools`, written out), with two workers: a request on the worker that did not make
/// the idle TLS connection takes it over (the socket moves, the rustls session stays).
fn config(routes: &[(&str, &str)], pools: &str) -> String {
    let mut text =
        format!("[proxy]\nworkers = 2\n\n[[listener]]\nname = \"web\"\nbind = \"{LISTEN}\"\n\n");
    for (path, pool) in routes {
        text.push_str(&format!(
            "[[route]]\nlistener = \"web\"\npath = \"{path}\"\npool = \"{pool}\"\n\n"
        ));
    }
    text + pools
}

fn get(net: &L7Net, balancer: &BalancerProcess, path: &str) -> Reply {
    ok(
        http_request(net, LISTEN, &Request::get(path).host("www.example.test")),
        &format!("GET {path}"),
        balancer,
    )
}

/// The `conn=N` of an answer of [`tls_server`].
fn connection_of(reply: &Reply) -> String {
    let text = reply.text();
    text.split_whitespace()
        .find_map(|word| word.strip_prefix("conn="))
        .unwrap_or_else(|| panic!("no conn= in {text:?}"))
        .to_string()
}

fn path_str(path: &std::path::Path) -> String {
    path.display().to_string()
}

#[test]
fn verified_https_server_answers_and_keeps_its_connection() {
    let net = net("utls-ok");
    let certs = Certs::new().expect("CA");
    // "localhost": the URL's host is resolved by the system resolver at connect time
    // (/etc/hosts), sent as SNI and verified against the certificate.
    let cert = certs.issue("localhost", &["localhost"]).expect("cert");
    let nginx = nginx(&net, &tls_server(9443, &cert, ""));
    let mut balancer = start(
        &net,
        &config(
            &[("/", "app")],
            &format!(
                "[pool.app]\nservers = [ {{ url = \"https://localhost:9443\" }} ]\ntls_ca_file = \"{}\"\n",
                path_str(certs.ca_path())
            ),
        ),
    );
    let first = get(&net, &balancer, "/one");
    assert_eq!(
        first.status,
        200,
        "{}\nlog:\n{}",
        first.text(),
        balancer.log()
    );
    assert!(
        first.text().contains("proto=HTTP/1.1 sni=localhost"),
        "HTTP/1.1 inside TLS, SNI from the URL's host: {}",
        first.text()
    );
    // Each request comes on a client connection of its own, so the kernel spreads them over
    // the two workers: the one that did not make the TLS connection takes it over.
    for path in ["/two", "/three", "/four", "/five", "/six"] {
        let next = get(&net, &balancer, path);
        assert_eq!(next.status, 200, "{}", next.text());
        assert_eq!(
            connection_of(&first),
            connection_of(&next),
            "every request on one kept-alive TLS connection; nginx's log:\n{}",
            nginx.access_log()
        );
    }
    // The server's own 4xx passes through.
    let reply = get(&net, &balancer, "/forbidden");
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (403, "not here\n"),
        "nginx's own answer"
    );

    // A CA file broken under a running balancer: the reload is refused, naming the file, and
    // the running config keeps serving.
    std::fs::write(certs.ca_path(), "broken").expect("break the CA file");
    ok(balancer.reload(), "SIGHUP", &balancer);
    eventually(Duration::from_secs(5), "the reload refused", || {
        let log = balancer.log();
        log.lines()
            .find(|line| line.contains("SIGHUP: reload refused"))
            .map(str::to_string)
    });
    let log = balancer.log();
    assert!(
        log.contains(&format!(
            "pool app: tls_ca_file {}: no certificate found",
            certs.ca_path().display()
        )),
        "the refusal names the file:\n{log}"
    );
    let reply = get(&net, &balancer, "/after");
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn tls_server_name_is_sent_and_verified_instead_of_the_url_host() {
    let net = net("utls-sni");
    let certs = Certs::new().expect("CA");
    let cert = certs.issue("app", &["app.internal"]).expect("cert");
    let _nginx = nginx(&net, &tls_server(9443, &cert, ""));
    let ca = path_str(certs.ca_path());
    let pools = format!(
        "[pool.named]\nservers = [ {{ url = \"https://127.0.0.1:9443\" }} ]\ntls_ca_file = \"{ca}\"\n\
         tls_server_name = \"app.internal\"\n\n\
         [pool.bare]\nservers = [ {{ url = \"https://127.0.0.1:9443\" }} ]\ntls_ca_file = \"{ca}\"\n"
    );
    let balancer = start(&net, &config(&[("/n/", "named"), ("/b/", "bare")], &pools));
    let reply = get(&net, &balancer, "/n/");
    assert_eq!(
        reply.status,
        200,
        "{}\nlog:\n{}",
        reply.text(),
        balancer.log()
    );
    assert!(
        reply.text().contains("sni=app.internal"),
        "{}",
        reply.text()
    );
    // Without it the URL's IP address is the name to verify, which the certificate lacks.
    let reply = get(&net, &balancer, "/b/");
    assert_eq!(reply.status, 502, "{}", reply.text());
    let log = balancer.log();
    assert!(
        log.contains("certificate not valid for name \"127.0.0.1\""),
        "the reason in the log:\n{log}"
    );
}

#[test]
fn verification_failures_are_502_with_the_reason_in_the_log() {
    let net = net("utls-bad");
    let certs = Certs::new().expect("CA");
    let other = Certs::new().expect("another CA");
    let foreign = other.issue("foreign", &["localhost"]).expect("cert");
    let misnamed = certs.issue("misnamed", &["other.test"]).expect("cert");
    let expired = certs
        .issue_expired("expired", &["localhost"])
        .expect("cert");
    let _nginx = nginx(
        &net,
        &[
            tls_server(9441, &foreign, ""),
            tls_server(9442, &misnamed, ""),
            tls_server(9443, &expired, ""),
        ]
        .concat(),
    );
    let ca = path_str(certs.ca_path());
    let pools = [("ca", 9441), ("name", 9442), ("expired", 9443)]
        .iter()
        .map(|(pool, port)| {
            format!(
                "[pool.{pool}]\nservers = [ {{ url = \"https://localhost:{port}\" }} ]\ntls_ca_file = \"{ca}\"\n\n"
            )
        })
        .collect::<String>();
    let balancer = start(
        &net,
        &config(
            &[("/ca/", "ca"), ("/name/", "name"), ("/expired/", "expired")],
            &pools,
        ),
    );
    for (path, reason) in [
        ("/ca/", "invalid peer certificate: UnknownIssuer"),
        ("/name/", "certificate not valid for name \"localhost\""),
        ("/expired/", "certificate expired: verification time"),
    ] {
        let reply = get(&net, &balancer, path);
        assert_eq!(
            reply.status,
            502,
            "{path}: a failed verification is a 502: {}",
            reply.text()
        );
        let log = balancer.log();
        assert!(
            log.lines().any(|line| line.contains("WARN")
                && line.contains("TLS handshake failed")
                && line.contains(reason)),
            "{path}: a warning naming {reason:?} expected in the log:\n{log}"
        );
    }
    // The server's fault: counted against it for passive health.
    for (pool, port) in [("ca", 9441), ("name", 9442), ("expired", 9443)] {
        assert_eq!(
            server_counter(
                &balancer,
                pool,
                &format!("https://localhost:{port}"),
                "connect_failures"
            ),
            1,
            "pool {pool}"
        );
    }
}

#[test]
fn client_certificate_for_servers_that_require_one() {
    let net = net("utls-mtls");
    let certs = Certs::new().expect("CA");
    let clients = Certs::new().expect("client CA");
    let cert = certs.issue("localhost", &["localhost"]).expect("cert");
    let client = clients
        .issue_client("client", &["balancer.test"])
        .expect("client cert");
    let verify = format!(
        "ssl_verify_client on; ssl_client_certificate {};\n        add_header X-Client \"$ssl_client_s_dn\" always;",
        path_str(clients.ca_path())
    );
    let _nginx = nginx(&net, &tls_server(9443, &cert, &verify));
    let ca = path_str(certs.ca_path());
    let pools = format!(
        "[pool.mtls]\nservers = [ {{ url = \"https://localhost:9443\" }} ]\ntls_ca_file = \"{ca}\"\n\
         tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n\n\
         [pool.plain]\nservers = [ {{ url = \"https://localhost:9443\" }} ]\ntls_ca_file = \"{ca}\"\n",
        path_str(&client.cert),
        path_str(&client.key),
    );
    let balancer = start(&net, &config(&[("/m/", "mtls"), ("/p/", "plain")], &pools));
    let reply = get(&net, &balancer, "/m/");
    assert_eq!(
        reply.status,
        200,
        "{}\nlog:\n{}",
        reply.text(),
        balancer.log()
    );
    assert_eq!(
        reply.header("x-client"),
        Some("CN=balancer.test"),
        "nginx verified our client certificate"
    );
    // Without a client certificate nginx answers 400 at the HTTP level: passed through.
    let reply = get(&net, &balancer, "/p/");
    assert_eq!(reply.status, 400, "nginx's own 400: {}", reply.text());
    assert!(
        reply
            .text()
            .contains("No required SSL certificate was sent"),
        "{}",
        reply.text()
    );
}

#[test]
fn health_checks_use_the_pool_tls_settings() {
    let net = net("utls-health");
    let certs = Certs::new().expect("CA");
    let other = Certs::new().expect("another CA");
    let good = certs.issue("good", &["localhost"]).expect("cert");
    let foreign = other.issue("foreign", &["localhost"]).expect("cert");
    let _nginx = nginx(
        &net,
        &[tls_server(9441, &good, ""), tls_server(9442, &foreign, "")].concat(),
    );
    let pools = format!(
        "[pool.app]\nservers = [ {{ url = \"https://localhost:9441\" }}, {{ url = \"https://localhost:9442\" }} ]\n\
         tls_ca_file = \"{}\"\n\
         health = {{ path = \"/health\", interval = \"200ms\", timeout = \"150ms\", rise = 1, fall = 1 }}\n",
        path_str(certs.ca_path())
    );
    let balancer = start(&net, &config(&[("/", "app")], &pools));
    let state_of = |url: &str| server_state(&balancer, "app", url);
    eventually(
        Duration::from_secs(5),
        "the good server up and the one with another CA's certificate down",
        || {
            (state_of("https://localhost:9441")["state"] == "up"
                && state_of("https://localhost:9442")["state"] == "down")
                .then_some(())
        },
    );
    let reason = state_of("https://localhost:9442")["health_reason"].clone();
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.contains("TLS handshake failed") && r.contains("UnknownIssuer")),
        "the check names the reason: {reason}"
    );
    for _ in 0..4 {
        let reply = get(&net, &balancer, "/");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(reply.text().contains("sni=localhost"), "{}", reply.text());
    }
}

#[test]
fn h2_is_used_when_the_server_offers_it_else_http11() {
    let net = net("utls-h2");
    let certs = Certs::new().expect("CA");
    let cert = certs.issue("localhost", &["localhost"]).expect("cert");
    let nginx = nginx(
        &net,
        &[tls_server(9441, &cert, "# h2"), tls_server(9442, &cert, "")].concat(),
    );
    let ca = path_str(certs.ca_path());
    let pools = format!(
        "[pool.h2]\nservers = [ {{ url = \"https://localhost:9441\" }} ]\ntls_ca_file = \"{ca}\"\nh2 = true\n\
         health = {{ path = \"/health\", interval = \"200ms\", timeout = \"150ms\", rise = 1, fall = 1 }}\n\n\
         [pool.h1]\nservers = [ {{ url = \"https://localhost:9442\" }} ]\ntls_ca_file = \"{ca}\"\nh2 = true\n\n\
         [pool.off]\nservers = [ {{ url = \"https://localhost:9441\" }} ]\ntls_ca_file = \"{ca}\"\n"
    );
    let balancer = start(
        &net,
        &config(&[("/h2/", "h2"), ("/h1/", "h1"), ("/off/", "off")], &pools),
    );
    // Its checks speak h2 too (a new server with checks starts down until one passes).
    eventually(Duration::from_secs(5), "the h2 server checked up", || {
        (server_state(&balancer, "h2", "https://localhost:9441")["state"] == "up").then_some(())
    });
    for (path, protocol) in [
        ("/h2/", "proto=HTTP/2.0"),
        ("/h2/again", "proto=HTTP/2.0"),
        ("/h1/", "proto=HTTP/1.1"),
        ("/h1/again", "proto=HTTP/1.1"),
        ("/off/", "proto=HTTP/1.1"),
    ] {
        let reply = get(&net, &balancer, path);
        assert_eq!(
            reply.status,
            200,
            "{path}: {}\nlog:\n{}\nnginx's error log:\n{}",
            reply.text(),
            balancer.log(),
            nginx.error_log()
        );
        assert!(
            reply.text().contains(protocol),
            "{path}: expected {protocol}, got {}; nginx's log:\n{}",
            reply.text(),
            nginx.access_log()
        );
    }
    let h2 = get(&net, &balancer, "/h2/third");
    let h2_again = get(&net, &balancer, "/h2/fourth");
    assert_eq!(
        connection_of(&h2),
        connection_of(&h2_again),
        "one shared HTTP/2 connection"
    );
    let checks = nginx
        .access_log()
        .lines()
        .filter(|line| line.contains("\"GET /health HTTP/2.0\" 200"))
        .count();
    assert!(checks >= 1, "checks over h2:\n{}", nginx.access_log());
}

#[test]
fn websocket_upgrade_is_tunnelled_over_tls_to_the_server() {
    let net = net("utls-ws");
    let _backend = Backend::start(&net, "b1", &["127.0.0.1:8081"]).expect("backend");
    let certs = Certs::new().expect("CA");
    let cert = certs.issue("localhost", &["localhost"]).expect("cert");
    // nginx terminates the TLS and passes the upgrade on to the backend's WebSocket echo.
    let _nginx = nginx(
        &net,
        &format!(
            "    server {{
        listen 127.0.0.1:9443 ssl;
        ssl_certificate {};
        ssl_certificate_key {};
        location / {{
            proxy_pass http://127.0.0.1:8081;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection \"upgrade\";
        }}
    }}\n",
            cert.cert.display(),
            cert.key.display()
        ),
    );
    let balancer = start(
        &net,
        &config(
            &[("/", "app")],
            &format!(
                "[pool.app]\nservers = [ {{ url = \"https://localhost:9443\" }} ]\ntls_ca_file = \"{}\"\n",
                path_str(certs.ca_path())
            ),
        ),
    );
    let messages = ["one", "two over TLS", "three"];
    let echo = ok(
        websocket_echo(&net, LISTEN, "ws://app.test/ws", None, &messages),
        "WebSocket through the balancer to a TLS server",
        &balancer,
    );
    assert_eq!(echo.status, 101);
    assert_eq!(echo.echoes, messages);
}
