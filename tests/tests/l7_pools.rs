//! The L7 proxy's pools, end to end: a real `balancer run` in a namespace of its own, real
//! `l7_backend` servers (and Debian's nginx), real clients. What each balancing algorithm does,
//! observed at the backends; keep-alive reuse of upstream connections; a dead server skipped
//! and retried; unix socket and h2c servers; `/metrics` and `/api/state`.

mod l7_support;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use balancer_tests::{
    Backend, BalancerProcess, Certs, Client, L7Net, Nginx, Request, curl, run_in,
};
use l7_support::{
    LISTEN, eventually, in_flight, metrics, one_pool_config, sample, server_counter, server_of,
    server_state, servers, spawn_send, start, state,
};

const B1: &str = "127.0.0.1:8081";
const B2: &str = "127.0.0.1:8082";
const B3: &str = "127.0.0.1:8083";
const B4: &str = "127.0.0.1:8084";

fn url(addr: &str) -> String {
    format!("http://{addr}")
}

/// How many of `names` are each name.
fn tally(names: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for name in names {
        *counts.entry(name.clone()).or_insert(0) += 1;
    }
    counts
}

/// Requests answered by each backend, from its own `/stats`.
fn backend_requests(backends: &[&Backend]) -> BTreeMap<String, u64> {
    backends
        .iter()
        .map(|b| {
            let stats = b
                .stats()
                .unwrap_or_else(|err| panic!("/stats of {}: {err:#}", b.name()));
            (b.name().to_string(), stats.requests)
        })
        .collect()
}

/// `n` GETs of `path` through the proxy on one client connection; panics unless all are 200.
fn get_many(net: &L7Net, balancer: &BalancerProcess, path: &str, n: usize) -> Vec<String> {
    let requests: Vec<Request> = (0..n)
        .map(|_| Request::get(path).host("app.test"))
        .collect();
    let replies = Client::tcp(net, LISTEN)
        .send_all(&requests)
        .unwrap_or_else(|err| {
            panic!(
                "{n} GET {path} through the proxy: {err:#}\nlog:\n{}",
                balancer.log()
            )
        });
    replies
        .iter()
        .map(|reply| {
            assert_eq!(
                reply.status,
                200,
                "GET {path}: {}\nlog:\n{}",
                reply.text(),
                balancer.log()
            );
            server_of(reply)
        })
        .collect()
}

#[test]
fn round_robin_with_weights_1_2_3_gives_exactly_10_20_30_of_60_interleaved() {
    let net = L7Net::new("rr").expect("namespace");
    let b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let b2 = Backend::start(&net, "b2", &[B2]).expect("b2");
    let b3 = Backend::start(&net, "b3", &[B3]).expect("b3");
    let balancer = start(
        &net,
        &one_pool_config(&format!(
            "balance = \"round-robin\"\n{}",
            servers(&[(&url(B1), 1), (&url(B2), 2), (&url(B3), 3)])
        )),
    );

    let order = get_many(&net, &balancer, "/rr", 60);
    let counts = tally(&order);
    let expected: BTreeMap<String, usize> =
        [("b1".into(), 10), ("b2".into(), 20), ("b3".into(), 30)].into();
    assert_eq!(
        counts, expected,
        "60 requests over weights 1:2:3; order {order:?}"
    );
    // Smooth: every run of 6 consecutive picks already has the 1:2:3 mix (not b3 b3 b3 …).
    for (i, window) in order.chunks(6).enumerate() {
        let counts = tally(window);
        assert_eq!(
            (counts.get("b1"), counts.get("b2"), counts.get("b3")),
            (Some(&1), Some(&2), Some(&3)),
            "picks {}..{} should be 1×b1, 2×b2, 3×b3 (smooth weighted round-robin), got {window:?}",
            i * 6,
            i * 6 + 6
        );
    }
    // The backends saw exactly those requests.
    let seen = backend_requests(&[&b1, &b2, &b3]);
    let expected: BTreeMap<String, u64> =
        [("b1".into(), 10), ("b2".into(), 20), ("b3".into(), 30)].into();
    assert_eq!(
        seen, expected,
        "requests counted by the backends themselves"
    );
    for (addr, n) in [(B1, 10), (B2, 20), (B3, 30)] {
        assert_eq!(
            server_counter(&balancer, "app", &url(addr), "requests"),
            n,
            "/api/state requests of {addr}"
        );
    }
}

#[test]
fn least_conn_sends_new_requests_away_from_servers_with_slow_requests_in_flight() {
    let net = L7Net::new("lc").expect("namespace");
    let b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let b2 = Backend::start(&net, "b2", &[B2]).expect("b2");
    let b3 = Backend::start(&net, "b3", &[B3]).expect("b3");
    let balancer = start(
        &net,
        &one_pool_config(&format!(
            "balance = \"least-conn\"\n{}",
            servers(&[(&url(B1), 1), (&url(B2), 1), (&url(B3), 1)])
        )),
    );
    let client = Client::tcp(&net, LISTEN);

    // Two slow requests, one after the other is in flight: least-conn puts them on two servers.
    let slow_a = spawn_send(&client, Request::get("/delay/2500").host("app.test"));
    eventually(
        Duration::from_secs(3),
        "the first slow request in flight",
        || (in_flight(&balancer) == 1).then_some(()),
    );
    let slow_b = spawn_send(&client, Request::get("/delay/2500").host("app.test"));
    eventually(
        Duration::from_secs(3),
        "both slow requests in flight",
        || (in_flight(&balancer) == 2).then_some(()),
    );

    // Meanwhile every new (fast) request goes to the one server with nothing in flight.
    let fast = get_many(&net, &balancer, "/fast", 12);
    let still_in_flight = in_flight(&balancer);

    let slow: Vec<String> = [slow_a, slow_b]
        .into_iter()
        .map(|handle| {
            let reply = handle
                .join()
                .expect("slow request thread")
                .unwrap_or_else(|err| panic!("slow request: {err:#}\nlog:\n{}", balancer.log()));
            assert_eq!(reply.status, 200, "slow request: {}", reply.text());
            server_of(&reply)
        })
        .collect();
    assert_eq!(
        still_in_flight, 2,
        "the slow requests should still have been in flight after the fast ones"
    );
    assert_ne!(
        slow[0], slow[1],
        "the second slow request should avoid the server busy with the first"
    );
    let idle: Vec<&str> = ["b1", "b2", "b3"]
        .into_iter()
        .filter(|name| !slow.iter().any(|s| s == name))
        .collect();
    assert_eq!(idle.len(), 1, "slow requests on {slow:?}");
    assert!(
        fast.iter().all(|name| name == idle[0]),
        "with slow requests in flight on {slow:?}, every new request should go to {}, got {fast:?}",
        idle[0]
    );

    // Nothing in flight any more: ties take turns, every server gets some.
    eventually(Duration::from_secs(3), "nothing in flight", || {
        (in_flight(&balancer) == 0).then_some(())
    });
    let spread = tally(&get_many(&net, &balancer, "/fast", 6));
    assert_eq!(
        spread.len(),
        3,
        "an idle least-conn pool spreads over every server: {spread:?}"
    );
    let seen = backend_requests(&[&b1, &b2, &b3]);
    assert_eq!(seen.values().sum::<u64>(), 2 + 12 + 6, "{seen:?}");
}

#[test]
fn p2c_spreads_concurrent_slow_requests_and_never_picks_a_weight_0_server() {
    let net = L7Net::new("p2c").expect("namespace");
    let b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let b2 = Backend::start(&net, "b2", &[B2]).expect("b2");
    let b3 = Backend::start(&net, "b3", &[B3]).expect("b3");
    let b4 = Backend::start(&net, "b4", &[B4]).expect("b4 (weight 0)");
    let balancer = start(
        &net,
        &one_pool_config(&format!(
            "balance = \"p2c\"\n{}",
            servers(&[(&url(B1), 1), (&url(B2), 1), (&url(B3), 1), (&url(B4), 0)])
        )),
    );
    let client = Client::tcp(&net, LISTEN);

    let handles: Vec<_> = (0..12)
        .map(|_| spawn_send(&client, Request::get("/delay/1500").host("app.test")))
        .collect();
    let names: Vec<String> = handles
        .into_iter()
        .map(|handle| {
            let reply = handle
                .join()
                .expect("request thread")
                .unwrap_or_else(|err| panic!("slow request: {err:#}\nlog:\n{}", balancer.log()));
            assert_eq!(reply.status, 200, "{}", reply.text());
            server_of(&reply)
        })
        .collect();
    let counts = tally(&names);
    for name in ["b1", "b2", "b3"] {
        let n = counts.get(name).copied().unwrap_or(0);
        assert!(
            (1..=8).contains(&n),
            "12 concurrent slow requests over 3 servers by p2c: {name} got {n} (1 to 8 expected): {counts:?}"
        );
    }
    assert!(
        !counts.contains_key("b4"),
        "the weight-0 server got requests: {counts:?}"
    );

    // Sequential requests (all loads equal) never reach it either.
    let names = get_many(&net, &balancer, "/seq", 30);
    assert!(
        !names.iter().any(|n| n == "b4"),
        "the weight-0 server got sequential requests: {names:?}"
    );
    assert_eq!(b4.stats().expect("b4 stats").requests, 0, "b4 saw requests");
    assert_eq!(server_counter(&balancer, "app", &url(B4), "requests"), 0);
    let seen = backend_requests(&[&b1, &b2, &b3]);
    assert_eq!(seen.values().sum::<u64>(), 42, "{seen:?}");
}

/// A hash pool over b1..b3 keyed by `hash_on`; `keyed(key)` builds a request carrying `key`.
/// The same key always reaches the same server (on one connection, on new connections, in
/// another order), 24 keys reach all three servers, and requests without a key succeed.
fn hash_pool_is_sticky_per_key(
    tag: &str,
    hash_on: &str,
    keyed: impl Fn(&str) -> Request,
    keyless: &[Request],
) {
    let net = L7Net::new(tag).expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let _b2 = Backend::start(&net, "b2", &[B2]).expect("b2");
    let _b3 = Backend::start(&net, "b3", &[B3]).expect("b3");
    let balancer = start(
        &net,
        &one_pool_config(&format!(
            "balance = \"hash\"\nhash_on = \"{hash_on}\"\n{}",
            servers(&[(&url(B1), 1), (&url(B2), 1), (&url(B3), 1)])
        )),
    );
    let client = Client::tcp(&net, LISTEN);
    let keys: Vec<String> = (0..24).map(|i| format!("user-{i}")).collect();

    // All keys on one connection.
    let requests: Vec<Request> = keys.iter().map(|k| keyed(k)).collect();
    let first: Vec<String> = client
        .send_all(&requests)
        .unwrap_or_else(|err| panic!("keyed requests: {err:#}\nlog:\n{}", balancer.log()))
        .iter()
        .map(server_of)
        .collect();
    // Each key twice more on connections of its own, in reverse order.
    for (key, expected) in keys.iter().zip(&first).rev() {
        for round in 0..2 {
            let reply = client
                .send(&keyed(key))
                .unwrap_or_else(|err| panic!("key {key}: {err:#}"));
            assert_eq!(reply.status, 200);
            assert_eq!(
                &server_of(&reply),
                expected,
                "hash on {hash_on}: key {key} moved (round {round}); first mapping {first:?}"
            );
        }
    }
    let used: BTreeSet<&String> = first.iter().collect();
    assert_eq!(
        used.len(),
        3,
        "24 keys hashed on {hash_on} should reach all 3 servers: {:?}",
        tally(&first)
    );

    // Without the key: still answered (by some server).
    for request in keyless {
        let reply = client
            .send(request)
            .unwrap_or_else(|err| panic!("request without the key: {err:#}"));
        assert_eq!(
            reply.status,
            200,
            "a request without the {hash_on} key: {}",
            reply.text()
        );
        assert!(["b1", "b2", "b3"].contains(&server_of(&reply).as_str()));
    }
}

#[test]
fn hash_on_cookie_keeps_each_session_on_one_server() {
    hash_pool_is_sticky_per_key(
        "hcookie",
        "cookie:session",
        |key| {
            Request::get("/cart")
                .host("app.test")
                .header("cookie", &format!("theme=dark; session={key}; lang=en"))
        },
        &[
            Request::get("/cart").host("app.test"),
            Request::get("/cart")
                .host("app.test")
                .header("cookie", "theme=dark; other=1"),
        ],
    );
}

#[test]
fn hash_on_header_keeps_each_value_on_one_server() {
    hash_pool_is_sticky_per_key(
        "hheader",
        "header:X-User-Id",
        |key| {
            Request::get("/profile")
                .host("app.test")
                .header("x-user-id", key)
        },
        &[Request::get("/profile").host("app.test")],
    );
}

#[test]
fn hash_on_client_keeps_each_client_address_on_one_server() {
    let net = L7Net::new("hclient").expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let _b2 = Backend::start(&net, "b2", &[B2]).expect("b2");
    let _b3 = Backend::start(&net, "b3", &[B3]).expect("b3");
    let balancer = start(
        &net,
        &one_pool_config(&format!(
            "balance = \"hash\"\nhash_on = \"client\"\n{}",
            servers(&[(&url(B1), 1), (&url(B2), 1), (&url(B3), 1)])
        )),
    );
    // Every 127.0.0.0/8 address is local on lo: curl --interface picks the client address.
    let from = |n: u8| -> String {
        let source = format!("127.0.0.{n}");
        let reply = curl(
            &net,
            &["--interface", &source, &format!("http://{LISTEN}/whoami")],
        )
        .unwrap_or_else(|err| panic!("curl from {source}: {err:#}\nlog:\n{}", balancer.log()));
        assert_eq!(reply.status, 200, "from {source}: {}", reply.text());
        let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
        json["server"].as_str().expect("server").to_string()
    };
    let addresses: Vec<u8> = (1..=24).collect();
    let first: Vec<String> = addresses.iter().map(|&n| from(n)).collect();
    for (&n, expected) in addresses.iter().zip(&first).rev() {
        assert_eq!(
            &from(n),
            expected,
            "client 127.0.0.{n} moved to another server; first mapping {first:?}"
        );
    }
    let used: BTreeSet<&String> = first.iter().collect();
    assert_eq!(
        used.len(),
        3,
        "24 client addresses should reach all 3 servers: {:?}",
        tally(&first)
    );
}

#[test]
fn keepalive_reuses_one_upstream_connection_and_many_clients_share_few() {
    let net = L7Net::new("ka").expect("namespace");
    let b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let balancer = start(&net, &one_pool_config(&servers(&[(&url(B1), 1)])));
    let client = Client::tcp(&net, LISTEN);

    // 50 sequential requests, each on a client connection of its own.
    let mut upstream_connections = BTreeSet::new();
    for i in 0..50 {
        let reply = client
            .send(&Request::get(&format!("/seq/{i}")).host("app.test"))
            .unwrap_or_else(|err| panic!("request {i}: {err:#}\nlog:\n{}", balancer.log()));
        assert_eq!(reply.status, 200);
        upstream_connections.insert(reply.json()["connection"].as_u64().expect("connection"));
    }
    let stats = b1.stats().expect("stats");
    assert_eq!(
        (
            stats.connections,
            stats.requests,
            upstream_connections.len()
        ),
        (1, 50, 1),
        "50 sequential requests should arrive on ONE upstream connection: backend {stats:?}, \
         connection numbers {upstream_connections:?}"
    );
    assert_eq!(
        server_counter(&balancer, "app", &url(B1), "connections_opened"),
        1
    );
    assert_eq!(
        server_counter(&balancer, "app", &url(B1), "idle_connections"),
        1
    );

    // 8 clients at once, 10 requests each on its own connection: at most 8 more upstream.
    let handles: Vec<_> = (0..8)
        .map(|c| {
            let client = client.clone();
            std::thread::spawn(move || {
                let requests: Vec<Request> = (0..10)
                    .map(|i| Request::get(&format!("/c{c}/{i}")).host("app.test"))
                    .collect();
                client.send_all(&requests)
            })
        })
        .collect();
    for handle in handles {
        let replies = handle
            .join()
            .expect("client thread")
            .unwrap_or_else(|err| panic!("concurrent client: {err:#}\nlog:\n{}", balancer.log()));
        assert!(replies.iter().all(|r| r.status == 200));
    }
    let stats = b1.stats().expect("stats");
    assert_eq!(stats.requests, 130);
    assert!(
        stats.connections <= 9,
        "8 concurrent client connections (after one sequential) should share at most 9 \
         upstream connections, the backend saw {}",
        stats.connections
    );
    assert_eq!(
        server_counter(&balancer, "app", &url(B1), "connections_opened"),
        stats.connections,
        "connections_opened in /api/state vs the backend's count"
    );
}

#[test]
fn keepalive_reuse_false_opens_a_connection_per_request() {
    let net = L7Net::new("noreuse").expect("namespace");
    let b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let balancer = start(
        &net,
        &one_pool_config(&format!(
            "{}\nkeepalive = {{ reuse = false }}",
            servers(&[(&url(B1), 1)])
        )),
    );
    let replies = Client::tcp(&net, LISTEN)
        .send_all(
            &(0..50)
                .map(|i| Request::get(&format!("/n/{i}")).host("app.test"))
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|err| panic!("50 requests: {err:#}\nlog:\n{}", balancer.log()));
    let numbers: BTreeSet<u64> = replies
        .iter()
        .map(|r| r.json()["connection"].as_u64().expect("connection"))
        .collect();
    assert_eq!(
        numbers.len(),
        50,
        "one upstream connection per request: {numbers:?}"
    );
    let stats = eventually(
        Duration::from_secs(3),
        "upstream connections closed",
        || {
            let stats = b1.stats().expect("stats");
            (stats.open == 0).then_some(stats)
        },
    );
    assert_eq!((stats.connections, stats.requests), (50, 50));
    assert_eq!(
        server_counter(&balancer, "app", &url(B1), "connections_opened"),
        50
    );
    assert_eq!(
        server_counter(&balancer, "app", &url(B1), "idle_connections"),
        0
    );
}

#[test]
fn keepalive_idle_timeout_closes_idle_upstream_connections() {
    let net = L7Net::new("kaidle").expect("namespace");
    let b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let balancer = start(
        &net,
        &one_pool_config(&format!(
            "{}\nkeepalive = {{ idle_timeout = \"1s\" }}",
            servers(&[(&url(B1), 1)])
        )),
    );
    let client = Client::tcp(&net, LISTEN);
    let first = client
        .send(&Request::get("/a").host("app.test"))
        .expect("first");
    let second = client
        .send(&Request::get("/b").host("app.test"))
        .expect("second");
    assert_eq!(
        first.json()["connection"],
        second.json()["connection"],
        "reused within the idle timeout"
    );
    assert_eq!(
        b1.stats().expect("stats").open,
        1,
        "one idle upstream connection"
    );
    // The sweep closes it after 1 s idle (generous bound: 4 s).
    eventually(
        Duration::from_secs(4),
        "the idle upstream connection closed",
        || (b1.stats().expect("stats").open == 0).then_some(()),
    );
    assert_eq!(
        server_counter(&balancer, "app", &url(B1), "idle_connections"),
        0
    );
    let third = client
        .send(&Request::get("/c").host("app.test"))
        .expect("third");
    assert_eq!(third.status, 200);
    assert_ne!(
        third.json()["connection"],
        first.json()["connection"],
        "after the idle timeout a new upstream connection is made"
    );
    assert_eq!(b1.stats().expect("stats").connections, 2);
}

#[test]
fn a_dead_server_is_skipped_retried_after_the_window_and_used_again_once_up() {
    const DEAD: &str = "127.0.0.1:8099";
    let net = L7Net::new("dead").expect("namespace");
    let b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let balancer = start(
        &net,
        &one_pool_config(&format!(
            "balance = \"round-robin\"\n{}\nretry = {{ after_failure = \"2s\" }}",
            servers(&[(&url(B1), 1), (&url(DEAD), 1)])
        )),
    );
    let dead_failures = || server_counter(&balancer, "app", &url(DEAD), "connect_failures");

    // Every request is answered by the live server: the failed connect is retried there.
    let started = Instant::now();
    let names = get_many(&net, &balancer, "/x", 40);
    let elapsed = started.elapsed();
    assert!(names.iter().all(|n| n == "b1"), "{names:?}");
    assert_eq!(b1.stats().expect("stats").requests, 40);
    let failures = dead_failures();
    // Once per 2 s window at most (the burst normally takes far less than one window).
    let allowed = 1 + elapsed.as_secs() / 2;
    assert!(
        (1..=allowed).contains(&failures),
        "the dead server should be tried once per retry.after_failure window: {failures} \
         connect failures in {elapsed:?} for 40 requests\nlog:\n{}",
        balancer.log()
    );
    assert_eq!(
        server_state(&balancer, "app", &url(DEAD))["failing"],
        true,
        "inside its window the dead server is shown failing"
    );
    let metric = format!(
        "balancer_upstream_connect_failures_total{{pool=\"app\",server=\"{}\"}}",
        url(DEAD)
    );
    assert_eq!(
        sample(&metrics(&balancer), &metric),
        Some(failures as f64),
        "{metric}"
    );

    // After the window it is tried again: once, then skipped for another window.
    std::thread::sleep(Duration::from_millis(2300));
    assert_eq!(server_state(&balancer, "app", &url(DEAD))["failing"], false);
    let names = get_many(&net, &balancer, "/y", 4);
    assert!(names.iter().all(|n| n == "b1"), "{names:?}");
    assert_eq!(
        dead_failures(),
        failures + 1,
        "after the window the dead server should be tried exactly once more"
    );

    // It comes up: after its window it gets traffic again.
    let b2 = Backend::start(&net, "b2", &[DEAD]).expect("b2 on the dead address");
    std::thread::sleep(Duration::from_millis(2300));
    let names = tally(&get_many(&net, &balancer, "/z", 10));
    assert_eq!(
        (names.get("b1"), names.get("b2")),
        (Some(&5), Some(&5)),
        "once up, the server is back in the round-robin"
    );
    assert_eq!(b2.stats().expect("b2 stats").requests, 5);
    assert_eq!(dead_failures(), failures + 1, "no failures once it is up");
}

#[test]
fn a_unix_socket_server_gets_what_a_direct_request_would_carry() {
    let net = L7Net::new("unix").expect("namespace");
    let socket = net.dir().join("app.sock");
    let socket_text = socket.display().to_string();
    let backend = Backend::start(&net, "u1", &[&format!("unix:{socket_text}")]).expect("backend");
    let balancer = start(&net, &one_pool_config(&servers(&[(&backend.url(), 1)])));

    let args = |target: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "-A",
            "test-agent/1.0",
            "-H",
            "X-Custom: one",
            "-H",
            "Accept: application/json",
            "-H",
            "Cookie: a=1; b=2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(target.iter().map(|s| s.to_string()));
        args
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = curl(&net, &args)
            .unwrap_or_else(|err| panic!("curl {args:?}: {err:#}\nlog:\n{}", balancer.log()));
        assert_eq!(reply.status, 200, "curl {args:?}: {}", reply.text());
        let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
        json
    };
    let via_proxy = run(args(&[
        "--resolve",
        "app.test:8080:127.0.0.1",
        "http://app.test:8080/some/path?q=1&r=2",
    ]));
    let direct = run(args(&[
        "--unix-socket",
        &socket_text,
        "http://app.test:8080/some/path?q=1&r=2",
    ]));
    assert_eq!(via_proxy["server"], "u1");
    assert_eq!(
        via_proxy["peer"], "unix",
        "the proxy came over the unix socket"
    );
    for field in ["method", "uri", "version", "body_bytes"] {
        assert_eq!(
            via_proxy[field], direct[field],
            "{field}: through the proxy vs directly"
        );
    }
    // The same header fields, the proxy's own forwarding headers and request ID aside.
    let own = |name: &str| {
        name.starts_with("x-forwarded-")
            || ["forwarded", "via", "x-real-ip", "x-request-id"].contains(&name)
    };
    let headers = |json: &serde_json::Value| -> Vec<(String, String)> {
        json["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().unwrap().to_string(),
                    pair[1].as_str().unwrap().to_string(),
                )
            })
            .filter(|(name, _)| !own(name))
            .collect()
    };
    let (mut proxied, mut sent) = (headers(&via_proxy), headers(&direct));
    proxied.sort();
    sent.sort();
    assert_eq!(proxied, sent, "header fields through the proxy vs directly");
    assert_eq!(backend.stats().expect("stats").requests, 2);
    assert_eq!(
        server_counter(&balancer, "app", &backend.url(), "connections_opened"),
        1
    );
}

#[test]
fn h2c_pools_speak_http2_to_the_server_on_one_shared_connection() {
    let net = L7Net::new("h2c").expect("namespace");
    let b1 = Backend::start_h2c(&net, "b1", &[B1]).expect("h2c backend");
    let balancer = start(
        &net,
        &one_pool_config(&format!("{}\nh2c = true", servers(&[(&url(B1), 1)]))),
    );
    let client = Client::tcp(&net, LISTEN);
    let mut connections = BTreeSet::new();
    for i in 0..5 {
        let reply = client
            .send(&Request::get(&format!("/h2/{i}?x=1")).host("app.test"))
            .unwrap_or_else(|err| panic!("request {i}: {err:#}\nlog:\n{}", balancer.log()));
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.version, "HTTP/1.1", "the client side stays HTTP/1.1");
        let json = reply.json();
        assert_eq!(
            json["version"], "HTTP/2.0",
            "the backend got HTTP/2: {json}"
        );
        assert_eq!(json["uri"], format!("/h2/{i}?x=1"));
        assert_eq!(json["authority"], "app.test", "the :authority is the Host");
        // Our forwarded fields reach an HTTP/2 server as fields of its request too, once each.
        let received = |name: &str| -> Vec<String> {
            json["headers"]
                .as_array()
                .expect("headers")
                .iter()
                .filter(|pair| pair[0] == name)
                .map(|pair| pair[1].as_str().expect("value").to_string())
                .collect()
        };
        assert_eq!(received("x-forwarded-for"), ["127.0.0.1"], "{json}");
        assert_eq!(received("x-forwarded-proto"), ["http"], "{json}");
        assert_eq!(received("x-forwarded-host"), ["app.test"], "{json}");
        assert_eq!(received("x-forwarded-port"), ["8080"], "{json}");
        assert_eq!(
            received("forwarded"),
            ["for=127.0.0.1;proto=http;host=app.test"],
            "{json}"
        );
        connections.insert(json["connection"].as_u64().unwrap());
    }
    // Concurrent requests are streams of the same connection.
    let handles: Vec<_> = (0..6)
        .map(|_| spawn_send(&client, Request::get("/delay/300").host("app.test")))
        .collect();
    for handle in handles {
        let reply = handle
            .join()
            .expect("thread")
            .unwrap_or_else(|err| panic!("concurrent request: {err:#}"));
        assert_eq!(reply.json()["version"], "HTTP/2.0");
        connections.insert(reply.json()["connection"].as_u64().unwrap());
    }
    assert_eq!(
        connections.len(),
        1,
        "one shared h2c connection: {connections:?}"
    );
    let stats = b1.stats().expect("stats");
    assert_eq!((stats.connections, stats.requests), (1, 11));
}

#[test]
fn nginx_behind_the_proxy_serves_a_static_file_over_https_and_http2() {
    let net = L7Net::new("ngxb").expect("namespace");
    let nginx = Nginx::start(
        &net,
        "    server {\n        listen 127.0.0.1:8088;\n        root html;\n    }",
    )
    .unwrap_or_else(|err| panic!("nginx should start (run `cargo xtask setup`): {err:#}"));
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(nginx.html_dir().join("data.bin"), &content).expect("write data.bin");
    std::fs::write(nginx.html_dir().join("hello.txt"), "hello from nginx\n").expect("hello");
    let certs = Certs::new().expect("CA");
    let site = certs.issue("site", &["www.app.test"]).expect("certificate");
    let balancer = start(
        &net,
        &format!(
            r#"
[[listener]]
name = "tls"
bind = "127.0.0.1:8443"
tls = {{ certificates = [ {} ] }}

[[route]]
name = "files"
listener = "tls"
pool = "nginx"

[pool.nginx]
servers = [ {{ url = "http://127.0.0.1:8088" }} ]
"#,
            site.toml()
        ),
    );
    let ca = certs.ca_path().display().to_string();
    let get = |path: &str| {
        curl(
            &net,
            &[
                "--http2",
                "--cacert",
                &ca,
                "--resolve",
                "www.app.test:8443:127.0.0.1",
                &format!("https://www.app.test:8443{path}"),
            ],
        )
        .unwrap_or_else(|err| panic!("curl {path}: {err:#}\nlog:\n{}", balancer.log()))
    };
    let hello = get("/hello.txt");
    assert_eq!((hello.status, hello.http_version.as_str()), (200, "2"));
    assert_eq!(hello.text(), "hello from nginx\n");
    assert_eq!(hello.header("content-type"), Some("text/plain"));
    assert!(
        hello.header("server").unwrap_or("").starts_with("nginx"),
        "nginx's Server header passes through: {:?}",
        hello.headers
    );
    let data = get("/data.bin");
    assert_eq!((data.status, data.http_version.as_str()), (200, "2"));
    assert_eq!(data.body.len(), content.len());
    assert!(data.body == content, "the file arrives unchanged");
    let missing = get("/missing.txt");
    assert_eq!(missing.status, 404, "nginx's 404 is passed on");

    let access = nginx.access_log();
    for line in [
        "\"GET /hello.txt HTTP/1.1\" 200",
        "\"GET /data.bin HTTP/1.1\" 200",
        "\"GET /missing.txt HTTP/1.1\" 404",
    ] {
        assert!(
            access.contains(line),
            "nginx should have logged {line} (HTTP/1.1 upstream):\n{access}"
        );
    }
}

#[test]
fn metrics_count_requests_by_route_pool_and_code_and_state_lists_pools() {
    let net = L7Net::new("metrics").expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let _b2 = Backend::start(&net, "b2", &[B2]).expect("b2");
    let balancer = start(
        &net,
        &format!(
            r#"
[[listener]]
name = "web"
bind = "{LISTEN}"

[[route]]
name = "main"
listener = "web"
pool = "app"

[[route]]
name = "api"
listener = "web"
path = "/api"
strip_prefix = true
pool = "api"

[pool.app]
servers = [ {{ url = "{}" }} ]

[pool.api]
balance = "least-conn"
servers = [ {{ url = "{}", weight = 3 }}, {{ url = "http://127.0.0.1:8099", weight = 0 }} ]
"#,
            url(B1),
            url(B2)
        ),
    );
    let mut requests = Vec::new();
    requests.extend((0..5).map(|i| Request::get(&format!("/page/{i}"))));
    requests.extend((0..3).map(|_| Request::get("/status/404")));
    requests.extend((0..2).map(|_| Request::get("/status/503")));
    requests.extend((0..4).map(|_| Request::get("/api/items")));
    requests.push(Request::get("/api/status/201"));
    let requests: Vec<Request> = requests.into_iter().map(|r| r.host("app.test")).collect();
    let replies = Client::tcp(&net, LISTEN)
        .send_all(&requests)
        .unwrap_or_else(|err| panic!("requests: {err:#}\nlog:\n{}", balancer.log()));
    let codes: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        codes,
        [
            200, 200, 200, 200, 200, 404, 404, 404, 503, 503, 200, 200, 200, 200, 201
        ]
    );
    assert_eq!(replies[10].json()["server"], "b2");
    assert_eq!(replies[10].json()["uri"], "/items", "strip_prefix");

    // The counters are updated when the response has been sent: poll until they add up.
    let expected = [
        ("main", "app", 200, 5.0),
        ("main", "app", 404, 3.0),
        ("main", "app", 503, 2.0),
        ("api", "api", 200, 4.0),
        ("api", "api", 201, 1.0),
    ];
    let text = eventually(Duration::from_secs(3), "the request counters", || {
        let text = metrics(&balancer);
        expected
            .iter()
            .all(|(route, pool, code, n)| {
                sample(
                    &text,
                    &format!(
                        "balancer_http_requests_total{{route=\"{route}\",pool=\"{pool}\",code=\"{code}\"}}"
                    ),
                ) == Some(*n)
            })
            .then_some(text)
    });
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("balancer_http_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 15.0, "no other request series:\n{text}");

    let state = state(&balancer);
    let pools = state["pools"].as_array().expect("pools array");
    let names: Vec<&str> = pools.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api", "app"], "pools sorted by name: {state:#}");
    let api = &pools[0]["servers"];
    assert_eq!(api[0]["url"], url(B2));
    assert_eq!(api[0]["weight"], 3);
    assert_eq!(api[0]["requests"], 5);
    assert_eq!(api[0]["connect_failures"], 0);
    assert_eq!(api[0]["connections_opened"], 1);
    assert_eq!(api[0]["idle_connections"], 1);
    assert_eq!(api[0]["failing"], false);
    assert_eq!(api[0]["in_flight"], 0);
    assert_eq!(api[1]["url"], "http://127.0.0.1:8099");
    assert_eq!(api[1]["weight"], 0);
    assert_eq!(api[1]["requests"], 0);
    let app = &pools[1]["servers"];
    assert_eq!(app.as_array().map(Vec::len), Some(1));
    assert_eq!(app[0]["url"], url(B1));
    assert_eq!(app[0]["requests"], 10);
}

#[test]
fn connections_the_server_closes_are_not_reused() {
    let net = L7Net::new("ngxka").expect("namespace");
    // nginx ends a connection after 3 requests (Connection: close on the third) or 1 s idle.
    let nginx = Nginx::start(
        &net,
        "    server {\n        listen 127.0.0.1:8088;\n        root html;\n        \
         keepalive_requests 3;\n        keepalive_timeout 1s;\n    }",
    )
    .unwrap_or_else(|err| panic!("nginx should start (run `cargo xtask setup`): {err:#}"));
    std::fs::write(nginx.html_dir().join("a.txt"), "a\n").expect("a.txt");
    let balancer = start(
        &net,
        &one_pool_config(&servers(&[("http://127.0.0.1:8088", 1)])),
    );
    let server = "http://127.0.0.1:8088";
    let client = Client::tcp(&net, LISTEN);
    for i in 0..10 {
        let reply = client
            .send(&Request::get("/a.txt").host("app.test"))
            .unwrap_or_else(|err| panic!("request {i}: {err:#}\nlog:\n{}", balancer.log()));
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "a\n"),
            "request {i}\nlog:\n{}",
            balancer.log()
        );
    }
    assert_eq!(
        server_counter(&balancer, "app", server, "connections_opened"),
        4,
        "10 requests, 3 per nginx connection: 4 upstream connections"
    );

    // The idle connection nginx closed after 1 s is not used for the next request.
    let opened = server_counter(&balancer, "app", server, "connections_opened");
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..2 {
        let reply = client
            .send(&Request::get("/a.txt").host("app.test"))
            .unwrap_or_else(|err| panic!("after nginx's idle close, request {i}: {err:#}"));
        assert_eq!(
            reply.status,
            200,
            "{}\nlog:\n{}",
            reply.text(),
            balancer.log()
        );
    }
    assert_eq!(
        server_counter(&balancer, "app", server, "connections_opened"),
        opened + 1,
        "one new connection after nginx closed the idle one"
    );
    assert_eq!(
        nginx
            .access_log()
            .matches("\"GET /a.txt HTTP/1.1\" 200")
            .count(),
        12
    );
}

#[test]
fn no_server_to_answer_gives_502_then_503_and_a_slow_one_504() {
    const DEAD1: &str = "127.0.0.1:8098";
    const DEAD2: &str = "127.0.0.1:8099";
    let net = L7Net::new("errors").expect("namespace");
    let b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let balancer = start(
        &net,
        &format!(
            r#"
[[listener]]
name = "web"
bind = "{LISTEN}"

[[route]]
name = "dead"
listener = "web"
pool = "dead"

[[route]]
name = "slow"
listener = "web"
path = "/slow"
strip_prefix = true
pool = "slow"

[pool.dead]
servers = [ {{ url = "{}" }}, {{ url = "{}" }} ]
retry = {{ after_failure = "1s" }}

[pool.slow]
servers = [ {{ url = "{}" }} ]
timeouts = {{ response = "1s" }}
"#,
            url(DEAD1),
            url(DEAD2),
            url(B1)
        ),
    );
    let client = Client::tcp(&net, LISTEN);
    let get = |path: &str| {
        client
            .send(&Request::get(path).host("app.test"))
            .unwrap_or_else(|err| panic!("GET {path}: {err:#}\nlog:\n{}", balancer.log()))
    };

    // Both connects fail: 502. Both servers then sit out their window: 503 at once.
    assert_eq!(get("/").status, 502, "both servers refused the connect");
    for server in [DEAD1, DEAD2] {
        assert_eq!(
            server_counter(&balancer, "dead", &url(server), "connect_failures"),
            1,
            "{server} tried once"
        );
    }
    assert_eq!(get("/").status, 503, "no server outside its failure window");
    // One comes up: after the window it answers.
    let _up = Backend::start(&net, "up", &[DEAD2]).expect("backend on DEAD2");
    std::thread::sleep(Duration::from_millis(1200));
    let reply = get("/");
    assert_eq!(
        (reply.status, server_of(&reply).as_str()),
        (200, "up"),
        "after the window the server that came up answers"
    );

    // A server slower than timeouts.response: 504 after about 1 s (bound: 0.9 to 4 s).
    let started = Instant::now();
    let reply = get("/slow/delay/3000");
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "504 after {took:?}"
    );
    assert_eq!(b1.stats().expect("stats").requests, 1, "not retried");
    let reply = get("/slow/fast");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["uri"], "/fast");
    eventually(Duration::from_secs(3), "nothing in flight", || {
        (in_flight(&balancer) == 0).then_some(())
    });
}

#[test]
fn a_connect_that_times_out_is_retried_on_another_server() {
    const BLACKHOLE: &str = "127.0.0.1:8097";
    let net = L7Net::new("cto").expect("namespace");
    // SYNs to the black hole are dropped: its connects never complete.
    for args in [
        &["add", "table", "inet", "blackhole"][..],
        &[
            "add",
            "chain",
            "inet",
            "blackhole",
            "input",
            "{ type filter hook input priority 0 ; }",
        ],
        &[
            "add",
            "rule",
            "inet",
            "blackhole",
            "input",
            "tcp",
            "dport",
            "8097",
            "drop",
        ],
    ] {
        run_in(&net.path(), "nft", args).expect("nft rule for the black hole");
    }
    let b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let balancer = start(
        &net,
        &one_pool_config(&format!(
            "{}\ntimeouts = {{ connect = \"500ms\" }}",
            servers(&[(&url(BLACKHOLE), 1), (&url(B1), 1)])
        )),
    );
    let client = Client::tcp(&net, LISTEN);
    let started = Instant::now();
    let replies = client
        .send_all(
            &(0..6)
                .map(|_| Request::get("/x").host("app.test"))
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|err| panic!("requests: {err:#}\nlog:\n{}", balancer.log()));
    let took = started.elapsed();
    for reply in &replies {
        assert_eq!(
            (reply.status, server_of(reply).as_str()),
            (200, "b1"),
            "{}",
            reply.text()
        );
    }
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "one request waited for the 500 ms connect timeout, then the others went straight to \
         b1: {took:?}"
    );
    assert_eq!(
        server_counter(&balancer, "app", &url(BLACKHOLE), "connect_failures"),
        1,
        "the black hole is tried once, then sits out retry.after_failure"
    );
    assert_eq!(b1.stats().expect("stats").requests, 6);
    assert!(
        balancer.log().contains("connect timed out"),
        "the log says why:\n{}",
        balancer.log()
    );
}

#[test]
fn hash_keys_move_only_off_a_server_that_goes_down_and_come_back_with_it() {
    let net = L7Net::new("hdown").expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let b2 = Backend::start(&net, "b2", &[B2]).expect("b2");
    let _b3 = Backend::start(&net, "b3", &[B3]).expect("b3");
    let balancer = start(
        &net,
        &one_pool_config(&format!(
            "balance = \"hash\"\nhash_on = \"header:X-User-Id\"\n{}\n\
             retry = {{ after_failure = \"1s\" }}",
            servers(&[(&url(B1), 1), (&url(B2), 1), (&url(B3), 1)])
        )),
    );
    let client = Client::tcp(&net, LISTEN);
    let keys: Vec<String> = (0..24).map(|i| format!("user-{i}")).collect();
    let map = |what: &str| -> Vec<String> {
        let requests: Vec<Request> = keys
            .iter()
            .map(|k| Request::get("/h").host("app.test").header("x-user-id", k))
            .collect();
        client
            .send_all(&requests)
            .unwrap_or_else(|err| panic!("{what}: {err:#}\nlog:\n{}", balancer.log()))
            .iter()
            .map(|reply| {
                assert_eq!(reply.status, 200, "{what}: {}", reply.text());
                server_of(reply)
            })
            .collect()
    };
    let before = map("all up");
    assert!(before.iter().any(|s| s == "b2"), "{before:?}");

    b2.stop().expect("stop b2");
    let during = map("b2 down");
    for ((key, was), now) in keys.iter().zip(&before).zip(&during) {
        if was == "b2" {
            assert_ne!(now, "b2", "{key}: b2 is down");
        } else {
            assert_eq!(
                now, was,
                "{key} was on {was}, a live server: it should stay there"
            );
        }
    }

    // b2 is back: after its window every key is where it was.
    let _b2 = Backend::start(&net, "b2", &[B2]).expect("b2 again");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(map("b2 back"), before, "keys return to b2 once it is back");
}

/// wrk in `net` with `connections` clients for `seconds`, started in the background. Its
/// open-file limit is raised first: a thousand clients need more than the usual 1024.
fn spawn_wrk(net: &L7Net, connections: u32, seconds: u32) -> std::process::Child {
    std::process::Command::new("nsenter")
        .arg(format!("--net={}", net.path()))
        .args([
            "sh",
            "-c",
            &format!(
                "ulimit -n 8192 2>/dev/null || true; exec wrk -t1 -c{connections} -d{seconds}s http://{LISTEN}/pooled"
            ),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wrk (cargo xtask setup installs it)")
}

#[test]
fn the_default_pool_does_not_churn_connections_under_a_thousand_clients() {
    let net = L7Net::new("nochurn").expect("namespace");
    let backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    // The config a new user writes: no keepalive table.
    let balancer = start(&net, &one_pool_config(&servers(&[(&url(B1), 1)])));
    let wrk = spawn_wrk(&net, 1000, 11);
    // Steady state: after wrk's thousand connections have ramped up, and before it stops
    // (it abandons requests in flight when it ends, and their upstream connections with them).
    std::thread::sleep(Duration::from_secs(5));
    let before = backend.stats().expect("stats");
    std::thread::sleep(Duration::from_secs(4));
    let after = backend.stats().expect("stats");
    let output = wrk.wait_with_output().expect("wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk: {text}");
    assert!(
        !text.contains("Socket errors") && !text.contains("Non-2xx"),
        "wrk saw errors: {text}"
    );
    let opened = after.connections - before.connections;
    let requests = after.requests - before.requests;
    eprintln!(
        "1 000 clients, 4 s of steady state: {requests} requests, {opened} new upstream \
         connections ({} open)",
        after.open
    );
    assert!(requests > 1000, "load ran: {requests} requests");
    assert!(
        opened * 1000 <= requests,
        "at most 1 new upstream connection per 1 000 requests at steady state: {opened} for \
         {requests} requests\n{}",
        balancer.log()
    );
}
