//! The L7 proxy end to end, forwarded-header trust and response rewriting: a real `balancer run`
//! in its own namespace, real servers (`l7_backend`, whose JSON answer lists the headers it got,
//! and Debian's nginx), real clients (the harness's hyper/rustls client, curl, raw TCP) and a
//! real proxy in front (nginx).
//!
//! - An untrusted client's forwarded, identity and underscore headers never reach the server;
//!   ours do, consistent with each other; end-to-end headers arrive byte for byte, in order.
//! - A trusted proxy's X-Forwarded-For chain is walked from the right; forged left parts and
//!   malformed values are not believed (and are counted).
//! - `underscore_headers`, `allowed_hosts`, per-route header edits.
//! - `Location` and `Set-Cookie` rewriting on a prefix mount; HTML rewriting of gzip bodies.
//! - `debug_headers` logs without credentials; a reload changes who is trusted.
//!
//! Clients with their own address use extra addresses on the namespace's `lo`: a trusted proxy
//! in 198.18.5.0/24, an untrusted client 198.18.7.7. Addresses only ever written in headers
//! are from 198.18.0.0/15 too (198.19.66.6 is the forger's favourite).

mod l7_support;

use std::{
    net::IpAddr,
    process::{Command, Stdio},
    time::Duration,
};

use balancer_tests::{
    Backend, BalancerProcess, CertFiles, Certs, Client, L7Net, Nginx, Reply, Request, TlsOptions,
    curl,
};
use l7_support::{LISTEN, LISTEN_TLS, RawConn, eventually, metrics, ok, sample, start};

/// The `l7_backend` every test forwards to.
const BACKEND: &str = "127.0.0.1:8090";
/// The public name of the site (the TLS certificate's).
const PUBLIC_HOST: &str = "www.example.test";
/// What an untrusted client claims to be.
const FORGED: &str = "198.19.66.6";
/// The trusted proxies' network, and one of them (an address on `lo`).
const TRUSTED_NET: &str = "198.18.5.0/24";
const TRUSTED_PROXY: &str = "198.18.5.2";
/// A hop between the client and the trusted proxy, also trusted (only ever in headers).
const TRUSTED_HOP: &str = "198.18.5.3";
/// The real client behind the trusted proxies (only ever in headers).
const REAL_CLIENT: &str = "198.18.9.9";
/// An untrusted client with its own address on `lo`.
const UNTRUSTED_CLIENT: &str = "198.18.7.7";

// ---------------------------------------------------------------------------------------------
// Config builders and helpers

/// A `[[listener]]` named `name` on `bind` (TLS with `cert`), with the extra keys `extra`.
fn listener(name: &str, bind: &str, cert: Option<&CertFiles>, extra: &str) -> String {
    let tls = cert
        .map(|cert| format!("tls = {{ certificates = [ {} ] }}\n", cert.toml()))
        .unwrap_or_default();
    format!("\n[[listener]]\nname = \"{name}\"\nbind = \"{bind}\"\n{tls}{extra}\n")
}

/// A `[[route]]` named `name` on `listener` for `path` to pool `pool`, with the extra keys
/// `extra`.
fn route(name: &str, listener: &str, path: &str, pool: &str, extra: &str) -> String {
    format!(
        "\n[[route]]\nname = \"{name}\"\nlistener = \"{listener}\"\npath = \"{path}\"\n\
         pool = \"{pool}\"\n{extra}\n"
    )
}

/// `[pool.NAME]` with the one server `addr`.
fn pool(name: &str, addr: &str) -> String {
    format!("\n[pool.{name}]\nservers = [ {{ url = \"http://{addr}\" }} ]\n")
}

/// The listener keys that trust [`TRUSTED_NET`] for X-Forwarded-For and X-Forwarded-Proto.
fn trusting(net: &str) -> String {
    format!(
        "trusted_proxies = [\"{net}\"]\ntrusted_headers = [\"X-Forwarded-For\", \"X-Forwarded-Proto\"]\n"
    )
}

/// Adds `addresses` to the namespace's `lo`, so clients can connect from them.
fn add_addresses(net: &L7Net, addresses: &[&str]) {
    for address in addresses {
        let result = if address.contains(':') {
            // No duplicate address detection: the address is usable at once.
            net.ip(&[
                "addr",
                "add",
                &format!("{address}/128"),
                "dev",
                "lo",
                "nodad",
            ])
        } else {
            net.ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"])
        };
        result.unwrap_or_else(|err| panic!("adding {address} to lo: {err:#}"));
    }
}

fn start_backend(net: &L7Net) -> Backend {
    Backend::start(net, "app", &[BACKEND]).expect("l7_backend should start")
}

/// The header fields an `l7_backend` default answer says it received, in its order.
fn received(json: &serde_json::Value) -> Vec<(String, String)> {
    json["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("no headers in the backend's answer: {json}"))
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().expect("header name").to_string(),
                pair[1].as_str().expect("header value").to_string(),
            )
        })
        .collect()
}

/// Every value of `name` (lowercase) in `headers`, in order.
fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The one value of `name`, or a panic that shows every header the server got.
fn single<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    match values(headers, name).as_slice() {
        [one] => one,
        other => panic!("the server should get exactly one {name}, got {other:?} in {headers:#?}"),
    }
}

/// A counter of the balancer's `/metrics` (0 when the series does not exist yet).
fn counter(balancer: &BalancerProcess, series: &str) -> f64 {
    sample(&metrics(balancer), series).unwrap_or(0.0)
}

/// TLS to [`LISTEN_TLS`] with SNI [`PUBLIC_HOST`], HTTP/1.1 only (so header bytes are
/// exactly what the client wrote).
fn tls_client(net: &L7Net, certs: &Certs) -> Client {
    Client::tcp(net, LISTEN_TLS).tls(
        TlsOptions::new(certs.ca_path())
            .sni(PUBLIC_HOST)
            .alpn(&["http/1.1"]),
    )
}

/// `curl ARGS… URL` from `source` (an address on `lo`), with the public name resolving to the
/// balancer.
fn curl_from(
    net: &L7Net,
    balancer: &BalancerProcess,
    source: &str,
    args: &[&str],
    url: &str,
) -> balancer_tests::l7::CurlReply {
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or("80");
    let resolve = format!("{PUBLIC_HOST}:{port}:127.0.0.1");
    let mut all = vec!["--interface", source, "--resolve", &resolve];
    all.extend_from_slice(args);
    all.push(url);
    curl(net, &all).unwrap_or_else(|err| {
        panic!(
            "curl {url} from {source}: {err:#}\nlog:\n{}",
            balancer.log()
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Untrusted clients

/// Forwarded-group, identity and underscore headers a client forges, each with the reason the
/// balancer removes it for (the `reason` label of `balancer_http_headers_removed_total`).
const SPOOFED: &[(&str, &str, &str)] = &[
    ("X-Forwarded-For", FORGED, "forwarded_group"),
    ("X-Forwarded-Proto", "http", "forwarded_group"),
    ("X-Forwarded-Host", "evil.test", "forwarded_group"),
    ("X-Forwarded-Port", "1", "forwarded_group"),
    ("X-Forwarded-Prefix", "/evil", "forwarded_group"),
    (
        "Forwarded",
        "for=198.19.66.6;proto=http;host=evil.test",
        "forwarded_group",
    ),
    ("X-Real-IP", FORGED, "forwarded_group"),
    ("X-Client-IP", FORGED, "forwarded_group"),
    ("X-Forwarded-Ssl", "on", "forwarded_group"),
    ("Remote-User", "admin", "identity"),
    ("X-Remote-User", "admin", "identity"),
    ("X_Forwarded_For", FORGED, "underscore"),
    ("X-Custom_Header", "evil", "underscore"),
];

/// End-to-end headers that must arrive as sent (values after the parser dropped the optional
/// whitespace around them, RFC 9110 §5.5), interleaved with [`SPOOFED`] on the way in.
const END_TO_END: &[(&str, &str)] = &[
    ("Authorization", "Basic  dXNlcjpwYXNz"),
    ("Cookie", "session=s3cr3t; theme=dark"),
    ("X-App-Trace", "a=1 ,b=2"),
    ("Accept-Language", "fr-CH, fr;q=0.9"),
];

/// Every spoofed header, with an end-to-end one after every third.
fn spoofing_headers() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut end_to_end = END_TO_END.iter();
    for (index, (name, value, _)) in SPOOFED.iter().enumerate() {
        out.push((name.to_string(), value.to_string()));
        if index % 3 == 0
            && let Some((name, value)) = end_to_end.next()
        {
            // The trailing space is optional whitespace: the server sees the value without it.
            let value = if *name == "Authorization" {
                format!("{value} ")
            } else {
                value.to_string()
            };
            out.push((name.to_string(), value));
        }
    }
    for (name, value) in end_to_end {
        out.push((name.to_string(), value.to_string()));
    }
    out
}

/// Asserts the server got none of [`SPOOFED`]'s values and no underscore name, and every
/// [`END_TO_END`] header exactly, in the order sent.
fn assert_clean(headers: &[(String, String)], what: &str) {
    for (name, value, _) in SPOOFED {
        let lower = name.to_ascii_lowercase();
        assert!(
            values(headers, &lower).iter().all(|v| v != value),
            "{what}: the forged {name}: {value} must not reach the server: {headers:#?}"
        );
        if matches!(*name, "Remote-User" | "X-Remote-User") {
            assert!(
                values(headers, &lower).is_empty(),
                "{what}: {name} never comes from a client: {headers:#?}"
            );
        }
    }
    assert!(
        headers
            .iter()
            .all(|(_, value)| !value.contains(FORGED) && !value.contains("evil")),
        "{what}: no forged value reaches the server: {headers:#?}"
    );
    assert!(
        headers.iter().all(|(name, _)| !name.contains('_')),
        "{what}: no underscore name reaches the server (underscore_headers = drop): {headers:#?}"
    );
    let arrived: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| END_TO_END.iter().any(|(e, _)| e.eq_ignore_ascii_case(name)))
        .cloned()
        .collect();
    let expected: Vec<(String, String)> = END_TO_END
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
        .collect();
    assert_eq!(
        arrived, expected,
        "{what}: end-to-end headers arrive byte for byte and in order"
    );
}

#[test]
fn an_untrusted_client_cannot_spoof_forwarded_or_identity_headers() {
    let net = L7Net::new("spoof").expect("namespace");
    add_addresses(&net, &[UNTRUSTED_CLIENT]);
    let _backend = start_backend(&net);
    let certs = Certs::new().expect("CA");
    let site = certs.issue("site", &[PUBLIC_HOST]).expect("certificate");
    // Proxies are trusted on this listener, just not these clients.
    let balancer = start(
        &net,
        &format!(
            "{}{}{}",
            listener("web", LISTEN_TLS, Some(&site), &trusting(TRUSTED_NET)),
            route("main", "web", "/", "app", ""),
            pool("app", BACKEND)
        ),
    );
    let public = format!("{PUBLIC_HOST}:8443");

    // The harness's rustls client over HTTP/1.1, from 127.0.0.1.
    let mut request = Request::get("/whoami").host(&public);
    for (name, value) in spoofing_headers() {
        request = request.header(&name, &value);
    }
    let reply = ok(
        tls_client(&net, &certs).send(&request),
        "spoofing request over HTTPS",
        &balancer,
    );
    assert_eq!(reply.status, 200, "body {}", reply.text());
    let headers = received(&reply.json());
    assert_clean(&headers, "rustls client");
    let names: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "host",
            "authorization",
            "cookie",
            "x-app-trace",
            "accept-language",
            "x-request-id",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-port",
            "forwarded",
        ],
        "exactly the client's end-to-end headers, then ours: {headers:#?}"
    );
    assert_eq!(single(&headers, "host"), public);
    assert_eq!(single(&headers, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(single(&headers, "x-forwarded-proto"), "https");
    assert_eq!(single(&headers, "x-forwarded-host"), public);
    assert_eq!(single(&headers, "x-forwarded-port"), "8443");
    assert_eq!(
        single(&headers, "forwarded"),
        format!("for=127.0.0.1;proto=https;host=\"{public}\"")
    );

    // curl over HTTP/2 from an address of its own.
    let mut args = vec![
        "--http2".to_string(),
        "--cacert".to_string(),
        certs.ca_path().display().to_string(),
    ];
    for (name, value) in spoofing_headers() {
        args.push("-H".to_string());
        args.push(format!("{name}: {value}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let reply = curl_from(
        &net,
        &balancer,
        UNTRUSTED_CLIENT,
        &args,
        &format!("https://{public}/whoami"),
    );
    assert_eq!((reply.status, reply.http_version.as_str()), (200, "2"));
    let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON answer");
    let headers = received(&json);
    assert_clean(&headers, "curl over HTTP/2");
    assert_eq!(single(&headers, "x-forwarded-for"), UNTRUSTED_CLIENT);
    assert_eq!(single(&headers, "x-forwarded-proto"), "https");
    assert_eq!(single(&headers, "x-forwarded-host"), public);
    assert_eq!(single(&headers, "x-forwarded-port"), "8443");
    assert_eq!(
        single(&headers, "forwarded"),
        format!("for={UNTRUSTED_CLIENT};proto=https;host=\"{public}\"")
    );

    // Each removed field is counted once per request, by reason.
    for reason in ["forwarded_group", "identity", "underscore"] {
        let per_request = SPOOFED.iter().filter(|(_, _, r)| *r == reason).count();
        assert_eq!(
            counter(
                &balancer,
                &format!(
                    "balancer_http_headers_removed_total{{listener=\"web\",reason=\"{reason}\"}}"
                )
            ),
            (2 * per_request) as f64,
            "two requests with {per_request} {reason} header(s) each:\n{}",
            metrics(&balancer)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Trusted proxies

/// GET `/` with `Host: www.example.test` and `head_lines` on a new connection from `source`
/// to the plain listener: what the server got.
fn get_from(
    net: &L7Net,
    balancer: &BalancerProcess,
    source: &str,
    head_lines: &[&str],
) -> Vec<(String, String)> {
    let source: IpAddr = source.parse().expect("address");
    let mut conn = ok(
        RawConn::connect_from(net, source, LISTEN),
        &format!("connect from {source}"),
        balancer,
    );
    let mut head = format!("GET / HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\n");
    for line in head_lines {
        head.push_str(line);
        head.push_str("\r\n");
    }
    let reply = ok(conn.send_head(&head), "request", balancer);
    assert_eq!(reply.status, 200, "{head_lines:?}: {}", reply.text());
    received(&reply.json())
}

#[test]
fn a_trusted_proxy_is_believed_for_its_headers_and_its_chain_is_walked_from_the_right() {
    let net = L7Net::new("trusted").expect("namespace");
    add_addresses(&net, &[TRUSTED_PROXY, UNTRUSTED_CLIENT]);
    let _backend = start_backend(&net);
    let balancer = start(
        &net,
        &format!(
            "{}{}{}",
            listener("edge", LISTEN, None, &trusting(TRUSTED_NET)),
            route("main", "edge", "/", "app", ""),
            pool("app", BACKEND)
        ),
    );
    let anomalies = "balancer_http_forwarded_anomalies_total{listener=\"edge\",reason=\"x-forwarded-for:malformed\"}";

    // The chain: the real client, the trusted hop, then the trusted peer itself.
    let xff = format!("X-Forwarded-For: {REAL_CLIENT}, {TRUSTED_HOP}");
    let headers = get_from(
        &net,
        &balancer,
        TRUSTED_PROXY,
        &[
            &xff,
            "X-Forwarded-Proto: https",
            // Not a trusted member: removed, ours says the Host.
            "X-Forwarded-Host: evil.test",
            "X-Real-IP: 198.19.66.6",
        ],
    );
    let chain = format!("{REAL_CLIENT}, {TRUSTED_HOP}, {TRUSTED_PROXY}");
    assert_eq!(single(&headers, "x-forwarded-for"), chain);
    assert_eq!(single(&headers, "x-forwarded-proto"), "https");
    assert_eq!(single(&headers, "x-forwarded-host"), PUBLIC_HOST);
    assert_eq!(
        single(&headers, "x-forwarded-port"),
        "443",
        "https without a port in the Host is port 443"
    );
    assert_eq!(
        single(&headers, "forwarded"),
        format!(
            "for={REAL_CLIENT};proto=https;host={PUBLIC_HOST}, for={TRUSTED_HOP}, for={TRUSTED_PROXY}"
        )
    );
    assert!(values(&headers, "x-real-ip").is_empty(), "{headers:#?}");

    // A forged left part: the walk stops at the first untrusted address from the right.
    let forged = format!("X-Forwarded-For: {FORGED}, {REAL_CLIENT}, {TRUSTED_HOP}");
    let headers = get_from(&net, &balancer, TRUSTED_PROXY, &[&forged]);
    assert_eq!(single(&headers, "x-forwarded-for"), chain);
    assert_eq!(
        single(&headers, "x-forwarded-proto"),
        "http",
        "no trusted scheme: the connection's"
    );
    assert!(!format!("{headers:?}").contains(FORGED), "{headers:#?}");

    // Several fields make one list, in order (RFC 9110 §5.3).
    let first = format!("X-Forwarded-For: {REAL_CLIENT}");
    let second = format!("X-Forwarded-For: {TRUSTED_HOP}");
    let headers = get_from(&net, &balancer, TRUSTED_PROXY, &[&first, &second]);
    assert_eq!(single(&headers, "x-forwarded-for"), chain);

    // Malformed: treated as absent (the peer is the client), and counted.
    assert_eq!(counter(&balancer, anomalies), 0.0);
    let bad = format!("X-Forwarded-For: {REAL_CLIENT}, not-an-address");
    let headers = get_from(
        &net,
        &balancer,
        TRUSTED_PROXY,
        &[&bad, "X-Forwarded-Proto: https"],
    );
    assert_eq!(single(&headers, "x-forwarded-for"), TRUSTED_PROXY);
    assert_eq!(
        single(&headers, "x-forwarded-proto"),
        "https",
        "one bad header does not discredit the others"
    );
    assert!(!format!("{headers:?}").contains("not-an-address"));
    assert_eq!(counter(&balancer, anomalies), 1.0, "{}", metrics(&balancer));
    let bad_proto = "balancer_http_forwarded_anomalies_total{listener=\"edge\",reason=\"x-forwarded-proto:malformed\"}";
    let headers = get_from(
        &net,
        &balancer,
        TRUSTED_PROXY,
        &["X-Forwarded-Proto: gopher"],
    );
    assert_eq!(single(&headers, "x-forwarded-proto"), "http");
    assert_eq!(counter(&balancer, bad_proto), 1.0, "{}", metrics(&balancer));

    // The same headers from outside the trusted network tell nothing.
    let headers = get_from(
        &net,
        &balancer,
        UNTRUSTED_CLIENT,
        &[&xff, "X-Forwarded-Proto: https"],
    );
    assert_eq!(single(&headers, "x-forwarded-for"), UNTRUSTED_CLIENT);
    assert_eq!(single(&headers, "x-forwarded-proto"), "http");
    assert_eq!(single(&headers, "x-forwarded-port"), "8080");
    assert_eq!(
        counter(&balancer, anomalies),
        1.0,
        "untrusted values are not anomalies"
    );
}

#[test]
fn nginx_in_front_as_the_trusted_proxy_passes_the_real_client_and_scheme() {
    let net = L7Net::new("ngxfront").expect("namespace");
    add_addresses(&net, &[TRUSTED_PROXY, REAL_CLIENT]);
    let _backend = start_backend(&net);
    let balancer = start(
        &net,
        &format!(
            "{}{}{}",
            listener("edge", LISTEN, None, &trusting(TRUSTED_NET)),
            route("main", "edge", "/", "app", ""),
            pool("app", BACKEND)
        ),
    );
    // The usual nginx reverse-proxy block, connecting to the balancer from the trusted address.
    let nginx = Nginx::start(
        &net,
        &format!(
            "    server {{
        listen {TRUSTED_PROXY}:8088;
        location / {{
            proxy_pass http://{LISTEN};
            proxy_bind {TRUSTED_PROXY};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}"
        ),
    )
    .unwrap_or_else(|err| panic!("nginx should start (run `cargo xtask setup`): {err:#}"));

    // The client forges a left part; nginx appends the address it saw.
    let forged = format!("X-Forwarded-For: {FORGED}");
    let reply = curl(
        &net,
        &[
            "--interface",
            REAL_CLIENT,
            "-H",
            &format!("Host: {PUBLIC_HOST}"),
            "-H",
            &forged,
            "-H",
            "Remote-User: admin",
            &format!("http://{TRUSTED_PROXY}:8088/via-nginx"),
        ],
    )
    .unwrap_or_else(|err| {
        panic!(
            "curl through nginx: {err:#}\nnginx: {}\nbalancer:\n{}",
            nginx.error_log(),
            balancer.log()
        )
    });
    assert_eq!(reply.status, 200, "{}", reply.text());
    let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON answer");
    let headers = received(&json);
    assert_eq!(json["uri"], "/via-nginx");
    assert_eq!(
        single(&headers, "x-forwarded-for"),
        format!("{REAL_CLIENT}, {TRUSTED_PROXY}")
    );
    assert_eq!(single(&headers, "x-forwarded-proto"), "https");
    assert_eq!(single(&headers, "x-forwarded-port"), "443");
    assert_eq!(
        single(&headers, "forwarded"),
        format!("for={REAL_CLIENT};proto=https;host={PUBLIC_HOST}, for={TRUSTED_PROXY}")
    );
    assert!(values(&headers, "remote-user").is_empty(), "{headers:#?}");
    assert!(!format!("{headers:?}").contains(FORGED), "{headers:#?}");

    // The server's redirect points at the URL the client used in front of nginx: https (as
    // nginx says), the public host, the default port.
    let reply = curl(
        &net,
        &[
            "--interface",
            REAL_CLIENT,
            "-H",
            &format!("Host: {PUBLIC_HOST}"),
            &format!("http://{TRUSTED_PROXY}:8088/redirect"),
        ],
    )
    .unwrap_or_else(|err| panic!("curl /redirect through nginx: {err:#}"));
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.header("location"),
        Some(format!("https://{PUBLIC_HOST}/target").as_str()),
        "{:?}",
        reply.headers
    );
}

#[test]
fn an_ipv6_trusted_proxy_and_its_client_are_written_as_rfc7239_says() {
    let net = L7Net::new("v6trust").expect("namespace");
    const LISTEN6: &str = "[2001:2::1]:8080";
    const PROXY6: &str = "2001:2::5";
    add_addresses(&net, &["2001:2::1", PROXY6]);
    let _backend = start_backend(&net);
    let balancer = start(
        &net,
        &format!(
            "{}{}{}",
            listener("edge6", LISTEN6, None, &trusting("2001:2::/48")),
            route("main", "edge6", "/", "app", ""),
            pool("app", BACKEND)
        ),
    );
    let source: IpAddr = PROXY6.parse().expect("address");
    let mut conn = ok(
        RawConn::connect_from(&net, source, LISTEN6),
        "connect from the IPv6 proxy",
        &balancer,
    );
    let head = format!(
        "GET / HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\nX-Forwarded-For: [2001:2::9]:4711, {REAL_CLIENT}\r\n"
    );
    let reply = ok(conn.send_head(&head), "request", &balancer);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let headers = received(&reply.json());
    assert_eq!(
        single(&headers, "x-forwarded-for"),
        format!("{REAL_CLIENT}, {PROXY6}"),
        "the walk stops at the first untrusted address; IPv6 without brackets"
    );
    assert_eq!(
        single(&headers, "forwarded"),
        format!("for={REAL_CLIENT};proto=http;host={PUBLIC_HOST}, for=\"[{PROXY6}]\""),
        "an IPv6 node is bracketed and quoted (RFC 7239 §6)"
    );
    assert_eq!(single(&headers, "x-forwarded-port"), "8080");
}

// ---------------------------------------------------------------------------------------------
// Hygiene: underscores, hosts, header edits

#[test]
fn underscore_headers_reject_answers_400_and_allow_forwards_all_but_forwarded_spellings() {
    let net = L7Net::new("underscore").expect("namespace");
    let backend = start_backend(&net);
    const LENIENT: &str = "127.0.0.1:8082";
    let balancer = start(
        &net,
        &format!(
            "{}{}{}{}{}",
            listener("strict", LISTEN, None, "underscore_headers = \"reject\""),
            listener("lenient", LENIENT, None, "underscore_headers = \"allow\""),
            route("strict", "strict", "/", "app", ""),
            route("lenient", "lenient", "/", "app", ""),
            pool("app", BACKEND)
        ),
    );
    let refused = "balancer_http_requests_refused_total{listener=\"strict\",reason=\"underscore\"}";

    let plain = Client::tcp(&net, LISTEN).send(&Request::get("/").host(PUBLIC_HOST));
    assert_eq!(ok(plain, "GET without underscores", &balancer).status, 200);
    let before = backend.stats().expect("stats").requests;
    let reply = Client::tcp(&net, LISTEN).send(
        &Request::get("/")
            .host(PUBLIC_HOST)
            .header("X-Custom_Header", "1"),
    );
    let reply = ok(reply, "GET with X-Custom_Header", &balancer);
    assert_eq!(reply.status, 400, "reject: {}", reply.text());
    assert_eq!(
        backend.stats().expect("stats").requests,
        before,
        "a refused request never reaches the server"
    );
    assert_eq!(counter(&balancer, refused), 1.0, "{}", metrics(&balancer));

    let reply = Client::tcp(&net, LENIENT).send(
        &Request::get("/")
            .host(PUBLIC_HOST)
            .header("X-Custom_Header", "kept")
            .header("X_Forwarded_For", FORGED)
            .header("X-Api-Key", "dash")
            .header("X_Api_Key", "underscore")
            .header("Remote_User", "admin"),
    );
    let reply = ok(reply, "GET with underscores, allowed", &balancer);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let headers = received(&reply.json());
    assert_eq!(single(&headers, "x-custom_header"), "kept");
    assert!(
        values(&headers, "x_forwarded_for").is_empty(),
        "the underscore spelling of a forwarded header never passes: {headers:#?}"
    );
    assert_eq!(single(&headers, "x-forwarded-for"), "127.0.0.1");
    assert!(values(&headers, "remote_user").is_empty(), "{headers:#?}");
    assert_eq!(
        single(&headers, "x-api-key"),
        "dash",
        "of two names with one CGI key only the '-' one passes"
    );
    assert!(values(&headers, "x_api_key").is_empty(), "{headers:#?}");
}

#[test]
fn allowed_hosts_refuse_other_hosts_at_the_edge_with_421_or_400() {
    let net = L7Net::new("hosts").expect("namespace");
    let backend = start_backend(&net);
    const STRICT400: &str = "127.0.0.1:8082";
    let hosts = "allowed_hosts = [\"www.example.test\", \"*.api.example.test\"]\n";
    let balancer = start(
        &net,
        &format!(
            "{}{}{}{}{}",
            listener("web", LISTEN, None, hosts),
            listener(
                "web400",
                STRICT400,
                None,
                &format!("{hosts}disallowed_host_status = 400\n")
            ),
            route("web", "web", "/", "app", ""),
            route("web400", "web400", "/", "app", ""),
            pool("app", BACKEND)
        ),
    );
    let get = |addr: &str, host: &str| -> Reply {
        ok(
            Client::tcp(&net, addr).send(&Request::get("/x").host(host)),
            &format!("GET with Host {host} on {addr}"),
            &balancer,
        )
    };
    for host in [
        "www.example.test",
        "WWW.Example.Test",
        "www.example.test:8080",
        "v1.api.example.test",
    ] {
        let reply = get(LISTEN, host);
        assert_eq!(reply.status, 200, "{host} is allowed: {}", reply.text());
        assert_eq!(reply.json()["server"], "app");
    }
    let before = backend.stats().expect("stats").requests;
    for (addr, status) in [(LISTEN, 421), (STRICT400, 400)] {
        for host in ["evil.test", "api.example.test", "127.0.0.1:8080"] {
            let reply = get(addr, host);
            assert_eq!(reply.status, status, "{host} on {addr}: {}", reply.text());
            assert!(
                !reply.text().contains("\"server\""),
                "the refusal is the balancer's, not the server's: {}",
                reply.text()
            );
        }
    }
    assert_eq!(
        backend.stats().expect("stats").requests,
        before,
        "refused hosts never reach the server"
    );
    for listener in ["web", "web400"] {
        let series = format!(
            "balancer_http_requests_refused_total{{listener=\"{listener}\",reason=\"disallowed-host\"}}"
        );
        assert_eq!(counter(&balancer, &series), 3.0, "{}", metrics(&balancer));
    }
    // The admin listener is not subject to it.
    let (status, _) = balancer.admin_get("/healthz").expect("admin");
    assert_eq!(status, 200);
}

#[test]
fn routes_set_and_unset_request_and_response_headers() {
    let net = L7Net::new("edits").expect("namespace");
    let _backend = start_backend(&net);
    let edits = r#"strip_prefix = true
request_headers = { set = { "X-Env" = "staging", "X-Forwarded-Proto" = "https" }, unset = ["X-Debug", "User-Agent"] }
response_headers = { set = { "Strict-Transport-Security" = "max-age=63072000", "Cache-Control" = "no-store" }, unset = ["Server", "X-Powered-By"] }
"#;
    let balancer = start(
        &net,
        &format!(
            "{}{}{}{}",
            listener("web", LISTEN, None, ""),
            route("edited", "web", "/edited", "app", edits),
            route("plain", "web", "/", "app", ""),
            pool("app", BACKEND)
        ),
    );
    let response_headers = "Server=l7_backend%2F1.0&X-Powered-By=PHP&Cache-Control=private\
                            &X-Kept=yes";
    let request = |path: &str| {
        Request::get(&format!("{path}?{response_headers}"))
            .host(PUBLIC_HOST)
            .header("X-Debug", "1")
            .header("User-Agent", "test/1")
            .header("X-Env", "from-client")
            .header("Authorization", "Bearer abc")
            .header("X-Other", "kept")
    };

    let reply = ok(
        Client::tcp(&net, LISTEN).send(&request("/edited/response-headers")),
        "GET on the edited route",
        &balancer,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["uri"],
        format!("/response-headers?{response_headers}"),
        "the server got the endpoint that sends the headers to unset"
    );
    let headers = received(&reply.json());
    assert_eq!(single(&headers, "x-env"), "staging", "set replaces");
    assert_eq!(
        single(&headers, "x-forwarded-proto"),
        "https",
        "set may override ours"
    );
    assert!(values(&headers, "x-debug").is_empty(), "{headers:#?}");
    assert!(values(&headers, "user-agent").is_empty(), "{headers:#?}");
    let kept: Vec<&str> = headers
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| matches!(*name, "authorization" | "x-other"))
        .collect();
    assert_eq!(
        kept,
        ["authorization", "x-other"],
        "order kept: {headers:#?}"
    );
    assert_eq!(
        reply.header_all("strict-transport-security"),
        ["max-age=63072000"]
    );
    assert_eq!(
        reply.header_all("cache-control"),
        ["no-store"],
        "set replaces"
    );
    assert_eq!(reply.header("server"), None, "{:?}", reply.headers);
    assert_eq!(reply.header("x-powered-by"), None, "{:?}", reply.headers);
    assert_eq!(reply.header("x-kept"), Some("yes"), "{:?}", reply.headers);

    // Another route of the same listener is untouched.
    let reply = ok(
        Client::tcp(&net, LISTEN).send(&request("/response-headers")),
        "GET on the plain route",
        &balancer,
    );
    let headers = received(&reply.json());
    assert_eq!(single(&headers, "x-env"), "from-client");
    assert_eq!(single(&headers, "x-debug"), "1");
    assert_eq!(single(&headers, "user-agent"), "test/1");
    assert_eq!(single(&headers, "x-forwarded-proto"), "http");
    assert_eq!(reply.header("server"), Some("l7_backend/1.0"));
    assert_eq!(reply.header("x-powered-by"), Some("PHP"));
    assert_eq!(reply.header("strict-transport-security"), None);
    assert_eq!(reply.header_all("cache-control"), ["private"]);
}

// ---------------------------------------------------------------------------------------------
// Response rewriting

#[test]
fn location_and_set_cookie_point_at_the_public_url_of_a_prefix_mount() {
    let net = L7Net::new("location").expect("namespace");
    let _backend = start_backend(&net);
    let certs = Certs::new().expect("CA");
    let site = certs.issue("site", &[PUBLIC_HOST]).expect("certificate");
    let balancer = start(
        &net,
        &format!(
            "{}{}{}{}",
            listener("web", LISTEN_TLS, Some(&site), ""),
            route("webapps", "web", "/webapps/", "app", "strip_prefix = true"),
            route(
                "raw",
                "web",
                "/raw/",
                "app",
                "strip_prefix = true\nrewrite_location = false\nrewrite_cookie_path = false"
            ),
            pool("app", BACKEND)
        ),
    );
    let public = format!("{PUBLIC_HOST}:8443");
    let get = |path: &str| -> Reply {
        let reply = tls_client(&net, &certs).send(&Request::get(path).host(&public));
        ok(reply, &format!("GET {path}"), &balancer)
    };

    // l7_backend's /redirect: 302 to http://BACKEND/target, Set-Cookie a=b; Path=/.
    let reply = get("/webapps/redirect");
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert_eq!(
        reply.header("location"),
        Some(format!("https://{public}/webapps/target").as_str())
    );
    assert_eq!(reply.header_all("set-cookie"), ["a=b; Path=/webapps/"]);

    // Relative and other-host URLs, several cookies, a Domain naming the server.
    let query = [
        "Content-Location=%2Fdoc%3Fq%3D1",
        "Refresh=5%3B%20url%3Dhttp%3A%2F%2F127.0.0.1%3A8090%2Fnext",
        "Set-Cookie=sid%3D1%3B%20Path%3D%2Faccount%3B%20HttpOnly",
        "Set-Cookie=pref%3Dx%3B%20Domain%3D127.0.0.1%3B%20Path%3D%2Fwebapps%2Fkept",
        "Link=%3Chttp%3A%2F%2F127.0.0.1%3A8090%2Fstyle.css%3E",
    ]
    .join("&");
    let reply = get(&format!("/webapps/response-headers?{query}"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-location"), Some("/webapps/doc?q=1"));
    assert_eq!(
        reply.header("refresh"),
        Some(format!("5; url=https://{public}/webapps/next").as_str())
    );
    assert_eq!(
        reply.header_all("set-cookie"),
        [
            "sid=1; Path=/webapps/account; HttpOnly",
            // Already under the prefix: only the Domain changes.
            "pref=x; Domain=www.example.test; Path=/webapps/kept",
        ]
    );
    assert_eq!(
        reply.header("link"),
        Some("<http://127.0.0.1:8090/style.css>"),
        "only the documented headers are rewritten"
    );
    let headers = received(&reply.json());
    assert_eq!(single(&headers, "x-forwarded-prefix"), "/webapps");

    // The server saw the public Host (preserve_host) and built a URL on it with its own
    // scheme; one that is already public is left alone.
    for (location, expected) in [
        (
            format!("http://{public}/target"),
            format!("https://{public}/webapps/target"),
        ),
        (
            format!("https://{public}/webapps/x"),
            format!("https://{public}/webapps/x"),
        ),
        (
            "https://other.test/x".to_string(),
            "https://other.test/x".to_string(),
        ),
    ] {
        let encoded = location.replace(':', "%3A").replace('/', "%2F");
        let reply = get(&format!("/webapps/response-headers?Location={encoded}"));
        assert_eq!(
            reply.header("location"),
            Some(expected.as_str()),
            "Location {location}"
        );
    }

    let series = "balancer_http_rewrites_total{route=\"webapps\",what=\"headers\"}";
    assert_eq!(
        counter(&balancer, series),
        7.0,
        "Location and a cookie, then Content-Location, Refresh and two cookies, then one \
         Location:\n{}",
        metrics(&balancer)
    );

    // rewrite_location = false, rewrite_cookie_path = false: as the server wrote them.
    let reply = get("/raw/redirect");
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.header("location"),
        Some("http://127.0.0.1:8090/target")
    );
    assert_eq!(reply.header_all("set-cookie"), ["a=b; Path=/"]);
    assert_eq!(
        counter(
            &balancer,
            "balancer_http_rewrites_total{route=\"raw\",what=\"headers\"}"
        ),
        0.0
    );
}

/// The page nginx serves: links to its own address, a path-absolute image, a foreign link, and
/// enough text that gzip is worth it.
fn html_page(nginx: &str) -> String {
    let filler = "<p>The quick brown fox jumps over the lazy dog.</p>\n".repeat(40);
    format!(
        "<!doctype html>\n<html><head><link rel=\"stylesheet\" href=\"http://{nginx}/style.css\">\
         </head>\n<body>\n<a href=\"http://{nginx}/page\">page</a>\n<img src=\"/img.png\">\n\
         <a href=\"https://other.test/x\">elsewhere</a>\n{filler}</body></html>\n"
    )
}

#[test]
fn html_from_nginx_is_gunzipped_and_rewritten_only_where_the_route_asks() {
    let net = L7Net::new("html").expect("namespace");
    const NGINX: &str = "127.0.0.1:8091";
    let nginx = Nginx::start(
        &net,
        &format!(
            "    log_format ratio '$request_uri $gzip_ratio';
    server {{
        listen {NGINX};
        root html;
        gzip on;
        gzip_types text/html;
        gzip_min_length 0;
        access_log logs/ratio.log ratio;
    }}"
        ),
    )
    .unwrap_or_else(|err| panic!("nginx should start (run `cargo xtask setup`): {err:#}"));
    let page = html_page(NGINX);
    std::fs::write(nginx.html_dir().join("index.html"), &page).expect("write index.html");
    let certs = Certs::new().expect("CA");
    let site = certs.issue("site", &[PUBLIC_HOST]).expect("certificate");
    let balancer = start(
        &net,
        &format!(
            "{}{}{}{}",
            listener("web", LISTEN_TLS, Some(&site), ""),
            route(
                "app",
                "web",
                "/app/",
                "nginx",
                "strip_prefix = true\nrewrite_html = true"
            ),
            route("plain", "web", "/plain/", "nginx", "strip_prefix = true"),
            pool("nginx", NGINX)
        ),
    );
    let public = format!("{PUBLIC_HOST}:8443");
    let get = |path: &str| -> Reply {
        let request = Request::get(path)
            .host(&public)
            .header("Accept-Encoding", "gzip");
        ok(
            tls_client(&net, &certs).send(&request),
            &format!("GET {path}"),
            &balancer,
        )
    };

    let reply = get("/app/index.html");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("content-encoding"),
        None,
        "decompressed to rewrite: {:?}",
        reply.headers
    );
    let expected = page
        .replace(
            &format!("http://{NGINX}/"),
            &format!("https://{public}/app/"),
        )
        .replace("src=\"/img.png\"", "src=\"/app/img.png\"");
    assert_ne!(expected, page, "the page has something to rewrite");
    assert_eq!(
        reply.text(),
        expected,
        "every URL of nginx points at the public URL, nothing else changes"
    );
    assert!(reply.text().contains("href=\"https://other.test/x\""));

    let reply = get("/plain/index.html");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    let direct = ok(
        Client::tcp(&net, NGINX).send(
            &Request::get("/index.html")
                .host(&public)
                .header("Accept-Encoding", "gzip"),
        ),
        "GET from nginx directly",
        &balancer,
    );
    assert_eq!(direct.header("content-encoding"), Some("gzip"));
    assert!(
        reply.body == direct.body,
        "without rewrite_html the gzip body passes untouched"
    );
    assert_eq!(gunzip(&reply.body), page);

    // nginx did compress both answers: the rewrite really went through gzip.
    let ratios = std::fs::read_to_string(nginx.prefix().join("logs/ratio.log")).unwrap_or_default();
    let compressed = ratios
        .lines()
        .filter(|line| line.starts_with("/index.html ") && !line.ends_with(" -"))
        .count();
    assert_eq!(compressed, 3, "nginx gzipped all three answers:\n{ratios}");
    assert_eq!(
        counter(
            &balancer,
            "balancer_http_rewrites_total{route=\"app\",what=\"html\"}"
        ),
        1.0
    );
}

/// `gzip -dc` of `data`, as text.
fn gunzip(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip (package gzip)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("feeding gzip");
    let output = child.wait_with_output().expect("gzip");
    assert!(output.status.success(), "gzip -dc failed: not a gzip body");
    String::from_utf8(output.stdout).expect("UTF-8")
}

// ---------------------------------------------------------------------------------------------
// debug_headers, reload

#[test]
fn debug_headers_logs_both_header_lists_without_credentials() {
    let net = L7Net::new("debughdr").expect("namespace");
    let _backend = start_backend(&net);
    let balancer = start(
        &net,
        &format!(
            "{}{}{}{}",
            listener("web", LISTEN, None, ""),
            route(
                "debugged",
                "web",
                "/debugged",
                "app",
                "debug_headers = true"
            ),
            route("quiet", "web", "/", "app", ""),
            pool("app", BACKEND)
        ),
    );
    let secrets = ["dXNlcjpwYXNz", "s3cr3t-cookie", "also-secret"];
    let request = |path: &str| {
        Request::get(path)
            .host(PUBLIC_HOST)
            .header("Authorization", "Basic dXNlcjpwYXNz")
            .header("Cookie", "session=s3cr3t-cookie; theme=also-secret")
            .header("X-Forwarded-For", FORGED)
            .header("X-Trace", "visible")
    };
    let reply = ok(
        Client::tcp(&net, LISTEN).send(&request("/debugged/x")),
        "GET on the debugged route",
        &balancer,
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        single(&received(&reply.json()), "authorization"),
        "Basic dXNlcjpwYXNz",
        "redaction is for the log only"
    );

    let log = eventually(Duration::from_secs(5), "the debug_headers log", || {
        let log = balancer.log();
        log.contains("as forwarded:").then_some(log)
    });
    let (received_part, forwarded_part) = log.split_once("as forwarded:").expect("two parts");
    let received_part = received_part
        .rsplit_once("as received:")
        .map_or(received_part, |(_, rest)| rest);
    for part in [received_part, forwarded_part] {
        assert!(
            part.contains("authorization: Basic <redacted>"),
            "the scheme stays, the credentials go:\n{log}"
        );
        assert!(
            part.contains("session=<redacted>") && part.contains("theme=<redacted>"),
            "cookie names stay, values go:\n{log}"
        );
        assert!(part.contains("x-trace: visible"), "{log}");
    }
    assert!(
        received_part.contains(&format!("x-forwarded-for: {FORGED}")),
        "as received: what the client sent:\n{log}"
    );
    assert!(
        forwarded_part.contains("x-forwarded-for: 127.0.0.1") && !forwarded_part.contains(FORGED),
        "as forwarded: what the server got:\n{log}"
    );
    for secret in secrets {
        assert!(
            !log.contains(secret),
            "{secret} must never be logged:\n{log}"
        );
    }

    // Routes without debug_headers log nothing of the kind.
    let before = balancer.log().matches("as received:").count();
    let reply = Client::tcp(&net, LISTEN).send(&request("/quiet"));
    assert_eq!(ok(reply, "GET on the quiet route", &balancer).status, 200);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(balancer.log().matches("as received:").count(), before);
}

#[test]
fn a_reload_that_adds_a_trusted_proxy_applies_to_the_next_request() {
    let net = L7Net::new("trustreload").expect("namespace");
    add_addresses(&net, &[TRUSTED_PROXY]);
    let _backend = start_backend(&net);
    let config = |trusted: &str| {
        format!(
            "{}{}{}",
            listener("edge", LISTEN, None, &trusting(trusted)),
            route("main", "edge", "/", "app", ""),
            pool("app", BACKEND)
        )
    };
    // At first only another network is trusted.
    let mut balancer = start(&net, &config("198.18.6.0/24"));
    let source: IpAddr = TRUSTED_PROXY.parse().expect("address");
    let head = format!(
        "GET / HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\nX-Forwarded-For: {REAL_CLIENT}\r\n\
         X-Forwarded-Proto: https\r\n"
    );
    let mut kept = ok(
        RawConn::connect_from(&net, source, LISTEN),
        "connect from the proxy",
        &balancer,
    );
    let seen = |reply: l7_support::RawReply| -> (String, String) {
        assert_eq!(reply.status, 200, "{}", reply.text());
        let headers = received(&reply.json());
        (
            single(&headers, "x-forwarded-for").to_string(),
            single(&headers, "x-forwarded-proto").to_string(),
        )
    };
    let before = seen(ok(kept.send_head(&head), "before the reload", &balancer));
    assert_eq!(before, (TRUSTED_PROXY.to_string(), "http".to_string()));

    ok(
        net.write_config(&config(TRUSTED_NET)),
        "writing the config",
        &balancer,
    );
    ok(balancer.reload(), "SIGHUP", &balancer);
    eventually(Duration::from_secs(5), "the reload", || {
        balancer
            .log()
            .contains("SIGHUP: config reloaded")
            .then_some(())
    });

    let believed = (
        format!("{REAL_CLIENT}, {TRUSTED_PROXY}"),
        "https".to_string(),
    );
    let mut fresh = ok(
        RawConn::connect_from(&net, source, LISTEN),
        "connect after the reload",
        &balancer,
    );
    assert_eq!(
        seen(ok(fresh.send_head(&head), "a new connection", &balancer)),
        believed
    );
    assert_eq!(
        seen(ok(
            kept.send_head(&head),
            "the connection from before",
            &balancer
        )),
        believed,
        "each request reads the current policy, also on a connection opened before"
    );
}

#[test]
fn rewrite_cookie_domain_replaces_a_named_domain_as_apache_does() {
    let net = L7Net::new("cookiedomain").expect("namespace");
    let _backend = start_backend(&net);
    let certs = Certs::new().expect("CA");
    let site = certs.issue("site", &[PUBLIC_HOST]).expect("certificate");
    let balancer = start(
        &net,
        &format!(
            "{}{}{}",
            listener("web", LISTEN_TLS, Some(&site), ""),
            route(
                "app",
                "web",
                "/",
                "app",
                "rewrite_cookie_path = false\nrewrite_cookie_domain = { \"app.internal\" = \"example.test\" }"
            ),
            pool("app", BACKEND)
        ),
    );
    let public = format!("{PUBLIC_HOST}:8443");
    let query = [
        "Set-Cookie=a%3Db%3B%20Domain%3Dapp.internal%3B%20Path%3D%2Fx",
        "Set-Cookie=c%3Dd%3B%20Domain%3D.APP.internal",
        "Set-Cookie=e%3Df%3B%20Domain%3Dother.test",
    ]
    .join("&");
    let reply = ok(
        tls_client(&net, &certs)
            .send(&Request::get(&format!("/response-headers?{query}")).host(&public)),
        "GET",
        &balancer,
    );
    assert_eq!(
        reply.header_all("set-cookie"),
        [
            // ProxyPassReverseCookieDomain app.internal example.test: the Domain only (this
            // route does not rewrite paths).
            "a=b; Domain=example.test; Path=/x",
            "c=d; Domain=.example.test",
            "e=f; Domain=other.test",
        ]
    );
}
