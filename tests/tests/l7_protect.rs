//! What protects a WSGI site with a few synchronous workers (issue "Protect the app servers"):
//! real gunicorn sync workers serving the Django acceptance app, behind `balancer run` with
//! the config a new user writes.
//!
//! - Slow uploads: 10 clients upload 4 KiB at 100 bytes/s; with request buffering (the
//!   default) a normal client is answered meanwhile, each request in under a second. With
//!   `request_buffering = false` the same load starves it: the test can tell.
//! - Slow readers: 10 clients read a 2 MB response at 10 KB/s; with response buffering (the
//!   default) the workers are free again at once.
//! - The queue: 4× overload of a pool whose server has `max_conns` = its worker count: no
//!   errors, and the server's socket never has more than `max_conns` connections; then a
//!   short `queue_timeout` gives 503 with `Retry-After`.
//!
//! Each test has its own namespace, site and processes; the Django virtualenv comes from
//! `cargo xtask setup`.

use std::{
    io::{Read, Write},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use balancer_tests::{
    BalancerProcess, Client, L7Net, Request,
    django::{DjangoSite, Gunicorn, SiteSettings, Workers},
    slow_clients::{Crowd, slow_upload},
};

const PUBLIC_HOST: &str = "www.example.test";
const LISTEN_IP: &str = "198.18.0.1";
const LISTEN: &str = "198.18.0.1:8080";
const BACKEND_IP: &str = "198.18.1.1";
const BACKEND: &str = "198.18.1.1:8001";
const BACKEND_PORT: &str = "8001";
/// gunicorn's sync workers: what a slow client can hold.
const WORKERS: u32 = 2;

/// Namespace, site, one gunicorn with [`WORKERS`] sync workers, and the balancer. Fields drop
/// in order: processes stop before their files and the namespace go.
struct Stack {
    balancer: BalancerProcess,
    gunicorn: Gunicorn,
    _site: DjangoSite,
    net: L7Net,
}

impl Stack {
    /// `route_keys` and `server_keys` are added to the one route and the one server.
    fn start(tag: &str, route_keys: &str, server_keys: &str, pool_keys: &str) -> Stack {
        let net = L7Net::new(tag).expect("namespace");
        for address in [LISTEN_IP, BACKEND_IP] {
            net.ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"])
                .expect("address on lo");
        }
        let site = DjangoSite::create(SiteSettings {
            public_host: PUBLIC_HOST.into(),
            public_origin: format!("http://{PUBLIC_HOST}:8080"),
            trusted_proxies: vec![BACKEND_IP.into()],
        })
        .unwrap_or_else(|err| panic!("creating the Django site: {err:#}"));
        let gunicorn = site
            .start_backend_with(&net, "a", &[BACKEND], Workers::Sync(WORKERS))
            .unwrap_or_else(|err| panic!("gunicorn: {err:#}"));
        let config = format!(
            r#"[[listener]]
name = "web"
bind = "{LISTEN}"

[[route]]
pool = "django"
{route_keys}

[pool.django]
servers = [{{ url = "{}"{server_keys} }}]
{pool_keys}
"#,
            gunicorn.url()
        );
        let balancer = net
            .start_balancer(&config)
            .unwrap_or_else(|err| panic!("balancer should start with\n{config}\nbut: {err:#}"));
        Stack {
            balancer,
            gunicorn,
            _site: site,
            net,
        }
    }

    fn diagnostics(&self) -> String {
        format!(
            "balancer log:\n{}\ngunicorn stderr:\n{}\ngunicorn access log:\n{}",
            self.balancer.log(),
            self.gunicorn.log(),
            self.gunicorn.access_log()
        )
    }

    fn client(&self) -> Client {
        Client::tcp(&self.net, LISTEN).timeout(Duration::from_secs(3))
    }

    /// One GET through the balancer: (status, how long it took), or the error.
    fn timed_get(&self, path: &str) -> (Result<u16, String>, Duration) {
        let started = Instant::now();
        let reply = self
            .client()
            .send(&Request::get(path).host(PUBLIC_HOST))
            .map(|reply| reply.status)
            .map_err(|err| format!("{err:#}"));
        (reply, started.elapsed())
    }

    /// Server-side connections established on the backend's port now.
    fn backend_connections(&self) -> usize {
        established_on(self.net.name(), BACKEND_PORT)
    }
}

/// Server-side connections established on `port` in namespace `netns` now (accepted or
/// waiting in the server's backlog alike).
fn established_on(netns: &str, port: &str) -> usize {
    let output = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "ss",
            "-Htn",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ])
        .output()
        .expect("ss");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .count()
}

/// 10 slow uploads, and meanwhile a normal client: what it saw over `span`.
fn under_slow_uploads(stack: &Stack, span: Duration) -> Vec<(Result<u16, String>, Duration)> {
    let crowd = Crowd::start(&stack.net, LISTEN, 10, move |stream, stop| {
        slow_upload(stream, stop, PUBLIC_HOST)
    });
    // Every upload is under way (connected, head sent) before the normal client starts.
    std::thread::sleep(Duration::from_millis(500));
    let seen = normal_client(stack, span);
    drop(crowd);
    seen
}

/// What a normal client saw while the crowd was at it: GET /healthz/ every 200 ms for `span`.
fn normal_client(stack: &Stack, span: Duration) -> Vec<(Result<u16, String>, Duration)> {
    let started = Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < span {
        seen.push(stack.timed_get("/healthz/"));
        std::thread::sleep(Duration::from_millis(200));
    }
    seen
}

#[test]
fn slow_uploads_do_not_hold_the_sync_workers() {
    let stack = Stack::start("slowup", "", "", "");
    let seen = under_slow_uploads(&stack, Duration::from_secs(5));
    let slow: Vec<_> = seen
        .iter()
        .filter(|(status, took)| *status != Ok(200) || *took >= Duration::from_secs(1))
        .collect();
    assert!(
        slow.is_empty(),
        "with request buffering, every normal request is answered in under 1 s while 10 \
         clients upload slowly; these were not: {slow:?}\n{}",
        stack.diagnostics()
    );
    // None of the unfinished uploads reached Django.
    assert!(
        !stack.gunicorn.access_log().contains("/upload/"),
        "an unfinished upload reached gunicorn:\n{}",
        stack.diagnostics()
    );
}

#[test]
fn slow_uploads_starve_sync_workers_when_bodies_are_streamed() {
    let stack = Stack::start("slowup-stream", "request_buffering = false", "", "");
    let seen = under_slow_uploads(&stack, Duration::from_secs(4));
    let starved = seen
        .iter()
        .filter(|(status, took)| *status != Ok(200) || *took >= Duration::from_secs(2))
        .count();
    assert!(
        starved > 0,
        "streamed slow uploads hold both sync workers, so the normal client must wait; it \
         never did: {seen:?}\n{}",
        stack.diagnostics()
    );
}

#[test]
fn slow_readers_do_not_hold_the_sync_workers() {
    let stack = Stack::start("slowread", "", "", "");
    // Each reads a 2 MB response at 10 KB/s.
    let crowd = Crowd::start(&stack.net, LISTEN, 10, |mut stream, stop| {
        let head = format!(
            "GET /big/?size=2000000 HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\nConnection: close\r\n\r\n"
        );
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut buf = [0u8; 1000];
        while !stop.load(Ordering::Relaxed) {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    // gunicorn logs a request when its response is written: every big response must be
    // written within a second or so, although no client has read more than a few KB.
    let deadline = Instant::now() + Duration::from_secs(3);
    let written = loop {
        let written = stack.gunicorn.access_log().matches("/big/").count();
        if written == 10 || Instant::now() > deadline {
            break written;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let seen = normal_client(&stack, Duration::from_secs(2));
    drop(crowd);
    assert_eq!(
        written,
        10,
        "with response buffering, gunicorn hands over every 2 MB response at once\n{}",
        stack.diagnostics()
    );
    let slow: Vec<_> = seen
        .iter()
        .filter(|(status, took)| *status != Ok(200) || *took >= Duration::from_secs(1))
        .collect();
    assert!(
        slow.is_empty(),
        "the workers are free while slow clients read: {slow:?}\n{}",
        stack.diagnostics()
    );
}

#[test]
fn max_conns_queues_an_overload_and_a_short_queue_timeout_answers_503() {
    let stack = Stack::start(
        "queue",
        "",
        &format!(", max_conns = {WORKERS}"),
        "queue_timeout = \"30s\"",
    );
    // 4× overload: 8 clients, each 5 requests that hold a worker for 150 ms.
    let started = Instant::now();
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        let stack_name = stack.net.name().to_string();
        std::thread::spawn(move || {
            // A socket dump is not an atomic snapshot: a connection closing and the next one
            // opening during one dump can both be counted. A real excess lasts as long as a
            // request (150 ms here), so only a count that two dumps in a row agree on counts.
            let mut previous = 0;
            while sampling.load(Ordering::Relaxed) {
                let count = established_on(&stack_name, BACKEND_PORT);
                peak.fetch_max(count.min(previous), Ordering::Relaxed);
                previous = count;
            }
        })
    };
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let client = Client::tcp(&stack.net, LISTEN).timeout(Duration::from_secs(30));
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| {
                        client
                            .send(&Request::get("/busy/?ms=150").host(PUBLIC_HOST))
                            .map(|reply| reply.status)
                            .map_err(|err| format!("{err:#}"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let statuses: Vec<_> = clients
        .into_iter()
        .flat_map(|client| client.join().expect("client thread"))
        .collect();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let took = started.elapsed();
    let failed: Vec<_> = statuses
        .iter()
        .filter(|status| **status != Ok(200))
        .collect();
    assert!(
        failed.is_empty(),
        "every queued request is served within queue_timeout: {failed:?}\n{}",
        stack.diagnostics()
    );
    assert!(
        peak.load(Ordering::Relaxed) <= WORKERS as usize,
        "the server never has more than max_conns = {WORKERS} connections (peak {})\n{}",
        peak.load(Ordering::Relaxed),
        stack.diagnostics()
    );
    let (_, state) = stack.balancer.admin_get("/api/state").expect("state");
    let state: serde_json::Value = serde_json::from_str(&state).expect("JSON");
    let queue = &state["pools"][0]["queue"];
    assert!(
        queue["waited"].as_u64().unwrap_or(0) > 0,
        "the overload went through the queue: {queue} (in {took:?})"
    );
    assert_eq!(queue["depth"], 0, "nobody waits any more: {queue}");
    let (_, metrics) = stack.balancer.admin_get("/metrics").expect("metrics");
    assert!(
        metrics.contains("balancer_pool_queued_requests_total{pool=\"django\"}"),
        "queue metrics are exported:\n{metrics}"
    );
    assert_eq!(stack.backend_connections(), 0, "no connection left behind");
}

#[test]
fn a_queue_timeout_is_a_503_with_retry_after_and_no_server_failure() {
    let stack = Stack::start(
        "queue-timeout",
        "",
        &format!(", max_conns = {WORKERS}"),
        "queue_timeout = \"1s\"",
    );
    // Both workers busy for 3 s; two more requests wait 1 s in the queue and give up.
    let clients: Vec<_> = (0..4)
        .map(|n| {
            let client = Client::tcp(&stack.net, LISTEN).timeout(Duration::from_secs(10));
            // The first two take the workers before the others queue.
            std::thread::sleep(Duration::from_millis(if n == 2 { 300 } else { 0 }));
            std::thread::spawn(move || {
                client
                    .send(&Request::get("/busy/?ms=3000").host(PUBLIC_HOST))
                    .map(|reply| (reply.status, reply.header("retry-after").map(String::from)))
                    .map_err(|err| format!("{err:#}"))
            })
        })
        .collect();
    let replies: Vec<_> = clients
        .into_iter()
        .map(|client| client.join().expect("client thread"))
        .collect();
    let served = replies
        .iter()
        .filter(|reply| matches!(reply, Ok((200, _))))
        .count();
    let refused: Vec<_> = replies
        .iter()
        .filter_map(|reply| match reply {
            Ok((503, retry_after)) => Some(retry_after.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        (served, refused.len()),
        (2, 2),
        "two served, two refused after queue_timeout: {replies:?}\n{}",
        stack.diagnostics()
    );
    for retry_after in &refused {
        let seconds: u64 = retry_after
            .as_deref()
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("Retry-After in whole seconds: {retry_after:?}"));
        assert!(seconds >= 1);
    }
    // Queue timeouts are not the server's failures: it stays up.
    let (_, state) = stack.balancer.admin_get("/api/state").expect("state");
    let state: serde_json::Value = serde_json::from_str(&state).expect("JSON");
    let pool = &state["pools"][0];
    assert_eq!(pool["servers"][0]["state"], "up", "{pool}");
    assert_eq!(pool["queue"]["timeouts"], 2, "{pool}");
}

#[test]
fn a_stalled_upload_gets_408_and_never_reaches_the_server() {
    let stack = Stack::start("stall", "client_body_timeout = \"1s\"", "", "");
    let path = stack.net.path();
    let (status, took) = balancer_tests::in_netns(&path, || {
        let mut stream = std::net::TcpStream::connect(LISTEN).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let started = Instant::now();
        stream
            .write_all(
                format!(
                    "POST /upload/ HTTP/1.1\r\nHost: {PUBLIC_HOST}\r\nContent-Length: 1000\r\n\r\nonly this"
                )
                .as_bytes(),
            )
            .expect("write");
        // Then nothing: the proxy's clock between two reads of the body runs out.
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
    })
    .expect("client");
    assert!(
        status.starts_with("HTTP/1.1 408"),
        "a body that stalls past client_body_timeout gets 408 (after {took:?}): {status:?}\n{}",
        stack.diagnostics()
    );
    assert!(
        !stack.gunicorn.access_log().contains("/upload/"),
        "the stalled upload never reached gunicorn:\n{}",
        stack.diagnostics()
    );
    let (_, state) = stack.balancer.admin_get("/api/state").expect("state");
    let state: serde_json::Value = serde_json::from_str(&state).expect("JSON");
    assert_eq!(
        state["pools"][0]["servers"][0]["state"], "up",
        "a client's stall is not the server's failure"
    );
}
