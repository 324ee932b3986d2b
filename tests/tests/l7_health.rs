//! The L7 pools' server state end to end: a real `balancer run`, real `l7_backend` servers
//! stopped and started again. Drain / disable / enable through the admin API; active HTTP checks
//! taking a dead server out and bringing it back within their rise/fall bounds; a server added by
//! reload starting down; passive ejection; `/healthz` flipping; the admin bearer token.

mod l7_support;

use std::time::{Duration, Instant};

use balancer_tests::{Backend, BalancerProcess, Certs, L7Net, Nginx, run_in};
use l7_support::{
    LISTEN, eventually, metrics, one_pool_config, sample, server_of, server_state, start,
};

const B1: &str = "127.0.0.1:8081";
const B2: &str = "127.0.0.1:8082";
const B3: &str = "127.0.0.1:8083";

fn url(addr: &str) -> String {
    format!("http://{addr}")
}

/// A server url as the admin API takes it in a path segment.
fn encoded(url: &str) -> String {
    url.replace(':', "%3A").replace('/', "%2F")
}

fn net(tag: &str) -> L7Net {
    L7Net::new(tag).unwrap_or_else(|err| panic!("namespace for {tag}: {err:#}"))
}

fn backend(net: &L7Net, name: &str, addr: &str) -> Backend {
    Backend::start(net, name, &[addr]).unwrap_or_else(|err| panic!("backend {name}: {err:#}"))
}

/// `n` GETs through the proxy (each on its own connection); the servers that answered.
fn servers_of(net: &L7Net, balancer: &BalancerProcess, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let reply = balancer_tests::http_request(
                net,
                LISTEN,
                &balancer_tests::Request::get(&format!("/r{i}")).host("app.test"),
            )
            .unwrap_or_else(|err| panic!("GET through the proxy: {err:#}"));
            assert_eq!(
                reply.status,
                200,
                "GET /r{i}: {}\nlog:\n{}",
                reply.text(),
                balancer.log()
            );
            server_of(&reply)
        })
        .collect()
}

fn post(balancer: &BalancerProcess, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = balancer
        .admin_post(path)
        .unwrap_or_else(|err| panic!("POST {path}: {err:#}"));
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|err| panic!("POST {path}: not JSON ({err}): {body:?}"));
    (status, json)
}

fn healthz(balancer: &BalancerProcess) -> (u16, String) {
    balancer
        .admin_get("/healthz")
        .unwrap_or_else(|err| panic!("GET /healthz: {err:#}"))
}

fn field(balancer: &BalancerProcess, addr: &str, name: &str) -> serde_json::Value {
    server_state(balancer, "app", &url(addr))[name].clone()
}

/// Waits until `/api/state` shows server `addr` in `state`; the time it took.
fn wait_state(balancer: &BalancerProcess, addr: &str, state: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    eventually(limit, &format!("{addr} to be {state}"), || {
        (field(balancer, addr, "state") == state).then_some(())
    });
    started.elapsed()
}

#[test]
fn drain_disable_and_enable_through_the_api() {
    let net = net("health-drain");
    let _b1 = backend(&net, "b1", B1);
    let _b2 = backend(&net, "b2", B2);
    let balancer = start(
        &net,
        &one_pool_config(&format!(
            "servers = [ {{ url = \"{}\", route = \"one\" }}, {{ url = \"{}\", route = \"two\" }} ]",
            url(B1),
            url(B2)
        )),
    );
    let mut names = servers_of(&net, &balancer, 4);
    names.sort();
    assert_eq!(names, ["b1", "b1", "b2", "b2"], "both serve at first");
    assert_eq!(field(&balancer, B2, "state"), "up");
    assert_eq!(field(&balancer, B2, "health_reason"), "no active checks");

    // Drain by url (percent-encoded): no new requests go there.
    let (status, body) = post(
        &balancer,
        &format!("/api/pools/app/servers/{}/drain", encoded(&url(B2))),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["operator"], "draining");
    assert_eq!(body["changed"], true);
    let entry = server_state(&balancer, "app", &url(B2));
    assert_eq!(entry["state"], "draining", "{entry}");
    assert_eq!(entry["operator"], "draining");
    assert_eq!(entry["takes_new_sessions"], false);
    assert_eq!(entry["takes_sticky_requests"], true);
    assert!(servers_of(&net, &balancer, 6).iter().all(|n| n == "b1"));
    // Healthy pool: /healthz stays 200.
    assert_eq!(healthz(&balancer).0, 200);

    // Disable by route; then both, and the pool cannot serve.
    let (status, body) = post(&balancer, "/api/pools/app/servers/two/disable");
    assert_eq!((status, &body["operator"]), (200, &"disabled".into()));
    assert_eq!(field(&balancer, B2, "takes_sticky_requests"), false);
    assert!(servers_of(&net, &balancer, 4).iter().all(|n| n == "b1"));
    post(&balancer, "/api/pools/app/servers/one/disable");
    let (status, body) = healthz(&balancer);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("app"), "names the pool: {body}");
    let reply = balancer_tests::http_request(
        &net,
        LISTEN,
        &balancer_tests::Request::get("/").host("app.test"),
    )
    .expect("GET");
    assert_eq!(
        reply.status,
        503,
        "no server takes requests: {}",
        reply.text()
    );

    // Enable both: back to both, /healthz 200.
    for id in ["one", "two"] {
        let (status, body) = post(&balancer, &format!("/api/pools/app/servers/{id}/enable"));
        assert_eq!((status, &body["changed"]), (200, &true.into()), "{body}");
    }
    assert_eq!(healthz(&balancer).0, 200);
    let mut names = servers_of(&net, &balancer, 4);
    names.sort();
    assert_eq!(names, ["b1", "b1", "b2", "b2"]);

    // Counted and logged with the cause.
    let metrics = metrics(&balancer);
    for (to, want) in [("draining", 1.0), ("disabled", 1.0), ("enabled", 1.0)] {
        let series = format!(
            "balancer_backend_state_changes_total{{pool=\"app\",server=\"{}\",to=\"{to}\"}}",
            url(B2)
        );
        assert_eq!(sample(&metrics, &series), Some(want), "{series}\n{metrics}");
    }
    let up = format!("balancer_backend_up{{pool=\"app\",server=\"{}\"}}", url(B2));
    assert_eq!(sample(&metrics, &up), Some(1.0), "{metrics}");
    assert!(balancer.log().contains("admin API"), "{}", balancer.log());

    // Errors: JSON with a reason.
    for (method_post, path, want) in [
        (true, "/api/pools/nope/servers/one/drain".to_string(), 404),
        (true, "/api/pools/app/servers/three/drain".to_string(), 404),
        (true, "/api/pools/app/servers/one/pause".to_string(), 400),
        (false, "/api/pools/app/servers/one/drain".to_string(), 405),
    ] {
        let (status, body) = if method_post {
            balancer.admin_post(&path).expect("POST")
        } else {
            balancer.admin_get(&path).expect("GET")
        };
        assert_eq!(status, want, "{path}: {body}");
        if want != 405 {
            let json: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
            assert!(json["error"].is_string(), "{body}");
        }
    }
}

#[test]
fn active_checks_take_a_dead_server_out_and_bring_it_back() {
    let net = net("health-active");
    let _b1 = backend(&net, "b1", B1);
    let b2 = backend(&net, "b2", B2);
    let interval = Duration::from_millis(200);
    let (rise, fall) = (2u32, 2u32);
    let balancer = start(
        &net,
        &one_pool_config(&format!(
            "servers = [ {{ url = \"{}\" }}, {{ url = \"{}\" }} ]\n\
             health = {{ path = \"/healthz\", host = \"app.test\", interval = \"200ms\", timeout = \"150ms\", rise = {rise}, fall = {fall} }}",
            url(B1),
            url(B2)
        )),
    );
    wait_state(&balancer, B1, "up", Duration::from_secs(5));
    wait_state(&balancer, B2, "up", Duration::from_secs(5));
    assert_eq!(field(&balancer, B2, "last_check"), "passed");

    // Killed: out of selection within fall × interval + one interval (plus polling slack).
    drop(b2);
    let bound = interval * (fall + 1);
    let took = wait_state(&balancer, B2, "down", bound * 3);
    assert!(
        took <= bound + Duration::from_millis(300),
        "b2 should be down within {bound:?} (+ slack), took {took:?}"
    );
    let reason = field(&balancer, B2, "health_reason");
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.starts_with("2 checks failed in a row")),
        "{reason}"
    );
    assert!(servers_of(&net, &balancer, 6).iter().all(|n| n == "b1"));
    assert_eq!(
        field(&balancer, B2, "connect_failures"),
        0,
        "no request was sent to the dead server"
    );

    // Back: re-admitted once `rise` checks pass.
    let _b2 = backend(&net, "b2", B2);
    let bound = interval * (rise + 1);
    let took = wait_state(&balancer, B2, "up", bound * 3);
    assert!(
        took <= bound + Duration::from_millis(300),
        "b2 should be up within {bound:?} (+ slack), took {took:?}"
    );
    assert_eq!(
        field(&balancer, B2, "health_reason"),
        "2 checks passed in a row"
    );
    let names = servers_of(&net, &balancer, 6);
    assert!(names.iter().any(|n| n == "b2"), "{names:?}");

    let metrics = metrics(&balancer);
    for (to, want) in [("up", 2.0), ("down", 1.0)] {
        let series = format!(
            "balancer_backend_state_changes_total{{pool=\"app\",server=\"{}\",to=\"{to}\"}}",
            url(B2)
        );
        assert_eq!(sample(&metrics, &series), Some(want), "{series}\n{metrics}");
    }
    assert!(
        balancer.log().contains("2 checks failed in a row"),
        "the change is logged with its cause:\n{}",
        balancer.log()
    );
}

#[test]
fn healthz_flips_when_a_pool_has_no_healthy_server() {
    let net = net("health-healthz");
    let b1 = backend(&net, "b1", B1);
    let balancer = start(
        &net,
        &one_pool_config(&format!(
            "servers = [ {{ url = \"{}\" }} ]\n\
             health = {{ path = \"/\", interval = \"100ms\", timeout = \"80ms\", rise = 1, fall = 1 }}",
            url(B1)
        )),
    );
    assert_eq!(healthz(&balancer), (200, "ok\n".to_string()));
    drop(b1);
    let body = eventually(Duration::from_secs(3), "/healthz to say 503", || {
        let (status, body) = healthz(&balancer);
        (status == 503).then_some(body)
    });
    assert!(body.contains("app"), "{body}");
    let metrics = metrics(&balancer);
    let up = format!("balancer_backend_up{{pool=\"app\",server=\"{}\"}}", url(B1));
    assert_eq!(sample(&metrics, &up), Some(0.0), "{metrics}");
    let _b1 = backend(&net, "b1", B1);
    eventually(Duration::from_secs(3), "/healthz to say 200 again", || {
        (healthz(&balancer).0 == 200).then_some(())
    });
}

#[test]
fn passive_checks_eject_a_failing_server_for_after_failure() {
    let net = net("health-passive");
    let _b1 = backend(&net, "b1", B1);
    let _b2 = backend(&net, "b2", B2);
    let balancer = start(
        &net,
        &one_pool_config(&format!(
            "servers = [ {{ url = \"{}\" }}, {{ url = \"{}\" }} ]\n\
             passive = {{ failures = 3, window = \"10s\" }}\n\
             retry = {{ after_failure = \"1s\" }}",
            url(B1),
            url(B2)
        )),
    );
    // 5xx answers count: round-robin sends every other request to b2; /status/500 on both.
    let client = balancer_tests::Client::tcp(&net, LISTEN);
    for _ in 0..6 {
        let reply = client
            .send(&balancer_tests::Request::get("/status/500").host("app.test"))
            .expect("GET");
        assert_eq!(reply.status, 500);
    }
    // Both had 3 failures in a row: both ejected, the pool cannot serve.
    for addr in [B1, B2] {
        let entry = server_state(&balancer, "app", &url(addr));
        assert_eq!(entry["state"], "ejected", "{entry}");
        assert_eq!(entry["passive_ejections"], 1);
        assert_eq!(entry["last_ejection"], "passive: 3 failures in 10s");
    }
    assert_eq!(healthz(&balancer).0, 503);
    // Without active checks the ejection ends with its time.
    let took = wait_state(&balancer, B1, "up", Duration::from_secs(3));
    assert!(took <= Duration::from_millis(1300), "{took:?}");
    assert_eq!(healthz(&balancer).0, 200);
    assert!(
        balancer.log().contains("passive: 3 failures in 10s"),
        "{}",
        balancer.log()
    );
}

#[test]
fn reload_keeps_state_adds_servers_down_and_stops_old_checkers() {
    let net = net("health-reload");
    let b1 = backend(&net, "b1", B1);
    let _b2 = backend(&net, "b2", B2);
    let pool = |balance: &str, servers: &[&str]| {
        let list: Vec<String> = servers
            .iter()
            .map(|addr| format!("{{ url = \"{}\" }}", url(addr)))
            .collect();
        one_pool_config(&format!(
            "balance = \"{balance}\"\nservers = [ {} ]\n\
             health = {{ path = \"/\", interval = \"200ms\", timeout = \"150ms\", rise = 2, fall = 2 }}",
            list.join(", ")
        ))
    };
    let mut balancer = start(&net, &pool("round-robin", &[B1, B2]));
    wait_state(&balancer, B1, "up", Duration::from_secs(5));
    wait_state(&balancer, B2, "up", Duration::from_secs(5));
    let (status, _) = post(
        &balancer,
        &format!("/api/pools/app/servers/{}/drain", encoded(&url(B2))),
    );
    assert_eq!(status, 200);

    // The pool is rebuilt (another balance) with a server nothing listens on yet.
    net.write_config(&pool("least-conn", &[B1, B2, B3]))
        .expect("write config");
    balancer.reload().expect("SIGHUP");
    eventually(Duration::from_secs(5), "the reload to add b3", || {
        let state = l7_support::state(&balancer);
        state["pools"][0]["servers"]
            .as_array()
            .is_some_and(|servers| servers.len() == 3)
            .then_some(())
    });
    assert_eq!(
        field(&balancer, B2, "operator"),
        "draining",
        "kept across the reload"
    );
    assert_eq!(
        field(&balancer, B1, "state"),
        "up",
        "kept across the reload"
    );
    let entry = server_state(&balancer, "app", &url(B3));
    assert_eq!(entry["state"], "down", "a new server starts down: {entry}");
    eventually(Duration::from_secs(3), "b3's first check to fail", || {
        let reason = field(&balancer, B3, "health_reason");
        reason
            .as_str()
            .is_some_and(|r| r.starts_with("check failed"))
            .then_some(())
    });
    assert!(servers_of(&net, &balancer, 6).iter().all(|n| n == "b1"));

    // Its first passing check brings it up.
    let _b3 = backend(&net, "b3", B3);
    wait_state(&balancer, B3, "up", Duration::from_secs(3));
    assert_eq!(field(&balancer, B3, "health_reason"), "first check passed");

    // One checker per server after the reload: the old pool's stopped. Over 2 s at one check
    // per 200 ms, b1 sees about 10 checks (20 if the old checker still ran).
    let before = b1.stats().expect("stats").requests;
    std::thread::sleep(Duration::from_secs(2));
    let checks = b1.stats().expect("stats").requests - before;
    assert!(
        (7..=13).contains(&checks),
        "{checks} checks in 2 s at a 200 ms interval"
    );
}

#[test]
fn a_bearer_token_protects_the_admin_api() {
    let net = net("health-token");
    let _b1 = backend(&net, "b1", B1);
    let token_file = net.dir().join("admin.token");
    std::fs::write(&token_file, "s3cret-token\n").expect("write the token");
    let _balancer = start(
        &net,
        &format!(
            "[admin]\nlisten = \"127.0.0.1:9100\"\ntoken_file = {:?}\n{}",
            token_file.display().to_string(),
            one_pool_config(&format!(
                "servers = [ {{ url = \"{}\", route = \"one\" }} ]",
                url(B1)
            ))
        ),
    );
    let curl = |method: &str, path: &str, token: Option<&str>| -> (u16, String) {
        let url = format!("http://127.0.0.1:9100{path}");
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut args = vec![
            "-sS",
            "-X",
            method,
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--max-time",
            "5",
        ];
        if let Some(auth) = &auth {
            args.extend(["-H", auth.as_str()]);
        }
        args.push(&url);
        let out = run_in(&net.path(), "curl", &args).expect("curl");
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {out:?}"));
        (status, out)
    };
    let (status, head) = curl("GET", "/api/state", None);
    assert_eq!(status, 401, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert_eq!(curl("GET", "/api/state", Some("wrong")).0, 401);
    assert_eq!(curl("GET", "/metrics", None).0, 401);
    assert_eq!(
        curl("POST", "/api/pools/app/servers/one/drain", None).0,
        401
    );
    assert_eq!(curl("GET", "/api/state", Some("s3cret-token")).0, 200);
    assert_eq!(curl("GET", "/metrics", Some("s3cret-token")).0, 200);
    assert_eq!(
        curl(
            "POST",
            "/api/pools/app/servers/one/drain",
            Some("s3cret-token")
        )
        .0,
        200
    );
    // /healthz stays open for outer balancers (and the pool's one server is draining: still
    // takes sticky requests, so the pool can serve).
    assert_eq!(curl("GET", "/healthz", None).0, 200);
}

#[test]
fn tls_checks_at_their_own_port_verify_the_certificate() {
    let net = net("health-tls");
    let certs = Certs::new().expect("CA");
    let other_ca = Certs::new().expect("another CA");
    let cert = certs
        .issue("www", &["www.example.test"])
        .expect("certificate");
    // Traffic goes to the plain port, where /health fails: only a check at the TLS port passes.
    let _nginx = Nginx::start(
        &net,
        &format!(
            "    server {{
        listen {B1};
        location / {{ return 200 \"plain\\n\"; }}
        location /health {{ return 503; }}
    }}
    server {{
        listen 127.0.0.1:8444 ssl;
        ssl_certificate {};
        ssl_certificate_key {};
        location /health {{ return 200 \"tls $ssl_server_name $host\\n\"; }}
    }}",
            cert.cert.display(),
            cert.key.display()
        ),
    )
    .unwrap_or_else(|err| panic!("nginx should start (run `cargo xtask setup`): {err:#}"));
    let config = |ca: Option<&std::path::Path>| {
        let ca_file = ca.map_or(String::new(), |ca| {
            format!("tls_ca_file = \"{}\", ", ca.display())
        });
        one_pool_config(&format!(
            "servers = [ {{ url = \"{}\" }} ]\n\
             health = {{ path = \"/health\", port = 8444, tls = true, {ca_file}\
             host = \"www.example.test\", interval = \"200ms\", timeout = \"150ms\", rise = 1, fall = 2 }}",
            url(B1),
        ))
    };
    let mut balancer = start(&net, &config(Some(certs.ca_path())));
    wait_state(&balancer, B1, "up", Duration::from_secs(5));
    assert_eq!(field(&balancer, B1, "health_reason"), "first check passed");

    // Another CA (a reload re-reads the file): the certificate no longer verifies.
    net.write_config(&config(Some(other_ca.ca_path())))
        .expect("write config");
    balancer.reload().expect("SIGHUP");
    wait_state(&balancer, B1, "down", Duration::from_secs(5));
    let reason = field(&balancer, B1, "health_reason");
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.contains("TLS handshake") && r.contains("certificate")),
        "{reason}"
    );

    // Without tls_ca_file the certificate is not verified: the check passes again.
    net.write_config(&config(None)).expect("write config");
    balancer.reload().expect("SIGHUP");
    wait_state(&balancer, B1, "up", Duration::from_secs(5));
}
