//! `X-Request-ID` end to end (`proxy.request_id`): a real `balancer run` in its own namespace
//! in front of an `l7_backend` (whose JSON answer lists the headers it got), raw HTTP/1.1
//! clients from addresses of their own on `lo`.
//!
//! - Without one, a request gets a UUIDv7: the server gets it, the client gets it back, the
//!   access-log line ends with it; the proxy's own answers (a 502) carry it too.
//! - A client's own ID is replaced; a trusted proxy's well-formed one is kept, a malformed one
//!   replaced.
//! - `request_id = false`: nothing is added, and a client's ID passes as any other field.

mod l7_support;

use std::{net::IpAddr, time::Duration};

use balancer_tests::{Backend, BalancerProcess, L7Net};
use l7_support::{LISTEN, RawConn, RawReply, eventually, ok, start};

/// The `l7_backend` the routes forward to.
const BACKEND: &str = "127.0.0.1:8090";
/// Nothing listens there: the proxy answers 502 itself.
const DEAD: &str = "127.0.0.1:8099";
/// The trusted proxies' network, and one of them (an address on `lo`).
const TRUSTED_NET: &str = "198.18.5.0/24";
const TRUSTED_PROXY: &str = "198.18.5.2";
/// An untrusted client with its own address on `lo`.
const UNTRUSTED_CLIENT: &str = "198.18.7.7";

fn config(request_id: bool) -> String {
    format!(
        r#"
[proxy]
request_id = {request_id}

[[listener]]
name = "web"
bind = "{LISTEN}"
trusted_proxies = ["{TRUSTED_NET}"]
trusted_headers = ["X-Forwarded-For"]

[[route]]
name = "main"
listener = "web"
pool = "app"

[[route]]
name = "dead"
listener = "web"
path = "/dead/"
pool = "dead"

[pool.app]
servers = [ {{ url = "http://{BACKEND}" }} ]

[pool.dead]
servers = [ {{ url = "http://{DEAD}" }} ]
"#
    )
}

/// A balancer on [`config`], an `l7_backend`, and the clients' addresses on `lo`.
fn setup(tag: &str, request_id: bool) -> (L7Net, Backend, BalancerProcess) {
    let net = L7Net::new(tag).expect("namespace");
    for address in [TRUSTED_PROXY, UNTRUSTED_CLIENT] {
        net.ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"])
            .unwrap_or_else(|err| panic!("adding {address} to lo: {err:#}"));
    }
    let backend = Backend::start(&net, "app", &[BACKEND]).expect("l7_backend should start");
    let balancer = start(&net, &config(request_id));
    (net, backend, balancer)
}

/// `GET path` from `source` with `lines` (header lines) on a new connection.
fn get(
    net: &L7Net,
    balancer: &BalancerProcess,
    source: &str,
    path: &str,
    lines: &[&str],
) -> RawReply {
    let source: IpAddr = source.parse().expect("address");
    let mut conn = ok(
        RawConn::connect_from(net, source, LISTEN),
        &format!("connect from {source}"),
        balancer,
    );
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: www.example.test\r\n");
    for line in lines {
        head.push_str(line);
        head.push_str("\r\n");
    }
    ok(conn.send_head(&head), &format!("GET {path}"), balancer)
}

/// Every X-Request-ID value the server got, from the `l7_backend` JSON answer.
fn server_got(reply: &RawReply) -> Vec<String> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("no headers in the backend's answer: {}", reply.text()))
        .iter()
        .filter(|pair| pair[0] == "x-request-id")
        .map(|pair| pair[1].as_str().expect("a text value").to_string())
        .collect()
}

/// The one X-Request-ID of the response.
fn echoed(reply: &RawReply) -> String {
    let ids: Vec<&str> = reply
        .headers
        .iter()
        .filter(|(name, _)| name == "x-request-id")
        .map(|(_, value)| value.as_str())
        .collect();
    match ids.as_slice() {
        [one] => one.to_string(),
        other => panic!(
            "the response should carry one X-Request-ID, got {other:?} in {:?}",
            reply.headers
        ),
    }
}

/// RFC 9562's text form of a UUID, version 7.
fn is_uuid_v7(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            14 => b == b'7',
            19 => b"89ab".contains(&b),
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// The access-log lines (process log, target `access`) once there are `count` of them.
fn access_lines(balancer: &BalancerProcess, count: usize) -> Vec<String> {
    eventually(
        Duration::from_secs(5),
        &format!("{count} access-log lines in\n{}", balancer.log()),
        || {
            let lines: Vec<String> = balancer
                .log()
                .lines()
                .filter_map(|line| {
                    line.split_once(" access: ")
                        .map(|(_, rest)| rest.to_string())
                })
                .collect();
            (lines.len() >= count).then_some(lines)
        },
    )
}

#[test]
fn request_ids_are_generated_passed_on_logged_and_echoed_and_only_trusted_ones_kept() {
    let (net, _backend, balancer) = setup("reqid", true);

    // 1. None sent: a new UUIDv7, the same at the server, in the response and in the log.
    let plain = get(&net, &balancer, "127.0.0.1", "/a", &[]);
    let at_server = server_got(&plain);
    let id = echoed(&plain);
    assert!(is_uuid_v7(&id), "a UUIDv7, got {id:?}");
    assert_eq!(
        at_server,
        [id.as_str()],
        "the server gets the ID the client gets back"
    );

    // 2. A client's own ID is not believed: replaced, at the server and in the response.
    let spoofed = get(
        &net,
        &balancer,
        UNTRUSTED_CLIENT,
        "/b",
        &["X-Request-ID: 0192e7a8-1c3b-7f00-8a1b-2c3d4e5f6a7b"],
    );
    let replaced = echoed(&spoofed);
    assert!(is_uuid_v7(&replaced), "{replaced:?}");
    assert_ne!(replaced, "0192e7a8-1c3b-7f00-8a1b-2c3d4e5f6a7b");
    assert_ne!(replaced, id, "every request its own ID");
    assert_eq!(server_got(&spoofed), [replaced.as_str()]);

    // 3. A trusted proxy's well-formed ID (any visible token, not only UUIDs) goes on.
    let trusted = get(
        &net,
        &balancer,
        TRUSTED_PROXY,
        "/c",
        &["X-Forwarded-For: 198.18.9.9", "X-Request-ID: edge-42.abc"],
    );
    assert_eq!(server_got(&trusted), ["edge-42.abc"]);
    assert_eq!(echoed(&trusted), "edge-42.abc");

    // 4. A trusted proxy's malformed ID (too long, or two of them) is replaced.
    let long = format!("X-Request-ID: {}", "x".repeat(201));
    let too_long = get(&net, &balancer, TRUSTED_PROXY, "/d", &[&long]);
    let new_id = echoed(&too_long);
    assert!(is_uuid_v7(&new_id), "{new_id:?}");
    assert_eq!(server_got(&too_long), [new_id]);
    let two = get(
        &net,
        &balancer,
        TRUSTED_PROXY,
        "/e",
        &["X-Request-ID: one", "X-Request-ID: two"],
    );
    let new_id = echoed(&two);
    assert!(is_uuid_v7(&new_id), "{new_id:?}");
    assert_eq!(server_got(&two), [new_id]);

    // 5. The proxy's own answer (its server refuses connections) carries one too.
    let refused = get(&net, &balancer, "127.0.0.1", "/dead/x", &[]);
    assert_eq!(refused.status, 502, "{}", refused.text());
    let error_id = echoed(&refused);
    assert!(is_uuid_v7(&error_id), "{error_id:?}");

    // Each combined line ends with its request's ID (after nginx's fields and ours).
    let lines = access_lines(&balancer, 6);
    for (path, expected) in [
        ("/a", id.as_str()),
        ("/b", replaced.as_str()),
        ("/c", "edge-42.abc"),
        ("/dead/x", error_id.as_str()),
    ] {
        let line = lines
            .iter()
            .find(|line| line.contains(&format!("\"GET {path} HTTP/1.1\"")))
            .unwrap_or_else(|| panic!("no access-log line for {path} in {lines:#?}"));
        assert!(
            line.ends_with(&format!(" request_id={expected}")),
            "the line of {path} ends with its ID {expected}: {line}"
        );
        assert!(line.contains(" duration="), "{line}");
    }
}

#[test]
fn request_id_false_adds_nothing_and_passes_a_clients_id_as_any_field() {
    let (net, _backend, balancer) = setup("reqidoff", false);
    let plain = get(&net, &balancer, "127.0.0.1", "/a", &[]);
    assert!(server_got(&plain).is_empty(), "{}", plain.text());
    assert_eq!(plain.header("x-request-id"), None, "{:?}", plain.headers);
    let own = get(
        &net,
        &balancer,
        UNTRUSTED_CLIENT,
        "/b",
        &["X-Request-ID: client-1"],
    );
    assert_eq!(server_got(&own), ["client-1"]);
    assert_eq!(own.header("x-request-id"), None, "{:?}", own.headers);
    let refused = get(&net, &balancer, "127.0.0.1", "/dead/x", &[]);
    assert_eq!(refused.status, 502);
    assert_eq!(refused.header("x-request-id"), None);
    for line in access_lines(&balancer, 3) {
        assert!(!line.contains("request_id="), "{line}");
    }
}
