//! Retries that cannot hurt, against real sockets: a server that reads each request and closes
//! the connection without a byte of answer (what a crashing worker looks like), beside a
//! healthy `l7_backend`.
//!
//! - A GET that meets the failing server goes to the other server, once: every GET is
//!   answered.
//! - A POST is never sent twice: those that meet the failing server get 502, and the healthy
//!   server never sees them.
//! - When every server fails, the retry budget (`retry.budget`) caps the retries.
//! - Clients that abort their uploads do not count against the server (passive health).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use balancer_tests::{Backend, BalancerProcess, Client, L7Net, Request, in_netns};

const LISTEN_IP: &str = "198.18.0.1";
const LISTEN: &str = "198.18.0.1:8080";
const BACKEND_IP: &str = "198.18.1.1";
const GOOD: &str = "198.18.1.1:8001";
const FAILING: &str = "198.18.1.1:8002";
const FAILING_TOO: &str = "198.18.1.1:8003";

/// A server that reads one request head per connection, then closes it unanswered. Stops
/// with the value.
struct Failing {
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Failing {
    fn start(net: &L7Net, addr: &'static str) -> Failing {
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt, path) = (requests.clone(), stop.clone(), net.path());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let _ = in_netns(&path, move || {
                let listener = TcpListener::bind(addr).expect("bind the failing server");
                listener.set_nonblocking(true).expect("nonblocking");
                ready_tx.send(()).expect("ready");
                while !halt.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if read_head(stream) {
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the failing server listens");
        Failing {
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Reads up to the end of a request head; the stream then drops (closed, unanswered).
fn read_head(mut stream: TcpStream) -> bool {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

impl Drop for Failing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn net(tag: &str) -> L7Net {
    let net = L7Net::new(tag).expect("namespace");
    for address in [LISTEN_IP, BACKEND_IP] {
        net.ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"])
            .expect("address on lo");
    }
    net
}

fn start_balancer(net: &L7Net, servers: &[&str], route_keys: &str) -> BalancerProcess {
    let servers: Vec<String> = servers
        .iter()
        .map(|addr| format!("{{ url = \"http://{addr}\" }}"))
        .collect();
    // Passive checks off: the failing server must stay in the pool for the test to see every
    // request meet it.
    let config = format!(
        "[[listener]]\nname = \"web\"\nbind = \"{LISTEN}\"\n\n[[route]]\npool = \"app\"\n{route_keys}\n\n\
         [pool.app]\nservers = [{}]\npassive = {{ failures = 0 }}\n",
        servers.join(", ")
    );
    net.start_balancer(&config)
        .unwrap_or_else(|err| panic!("balancer should start with\n{config}\nbut: {err:#}"))
}

fn state(balancer: &BalancerProcess) -> serde_json::Value {
    let (_, state) = balancer.admin_get("/api/state").expect("state");
    serde_json::from_str(&state).expect("JSON")
}

fn client(net: &L7Net) -> Client {
    Client::tcp(net, LISTEN).timeout(Duration::from_secs(10))
}

#[test]
fn gets_are_retried_on_another_server_and_posts_never_are() {
    let net = net("retry");
    let good = Backend::start(&net, "good", &[GOOD]).expect("backend");
    let failing = Failing::start(&net, FAILING);
    let balancer = start_balancer(&net, &[GOOD, FAILING], "");

    let gets: Vec<u16> = (0..20)
        .map(|_| {
            client(&net)
                .send(&Request::get("/x").host("app.test"))
                .expect("GET")
                .status
        })
        .collect();
    assert!(
        gets.iter().all(|status| *status == 200),
        "every GET is answered by the other server: {gets:?}\n{}",
        balancer.log()
    );
    let met_failing = failing.requests();
    assert!(
        met_failing > 0,
        "round robin sent GETs to the failing server"
    );
    let retries = state(&balancer)["pools"][0]["retries"]["made"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(retries, met_failing, "one retry per GET that met it");

    let before = good.stats().expect("stats").requests;
    let failing_before = failing.requests();
    let posts: Vec<u16> = (0..20)
        .map(|_| {
            client(&net)
                .send(&Request::post("/x", "payload").host("app.test"))
                .expect("POST")
                .status
        })
        .collect();
    let failed = posts.iter().filter(|status| **status == 502).count() as u64;
    let answered = posts.iter().filter(|status| **status == 200).count() as u64;
    assert_eq!(failed + answered, 20, "{posts:?}");
    assert_eq!(
        failed,
        failing.requests() - failing_before,
        "each POST that met the failing server is a 502, never sent again: {posts:?}"
    );
    assert_eq!(
        good.stats().expect("stats").requests - before,
        answered,
        "the healthy server saw only the POSTs it answered"
    );
    assert!(
        failed > 0,
        "round robin sent POSTs to the failing server too"
    );
}

#[test]
fn the_retry_budget_stops_retries_when_every_server_fails() {
    let net = net("budget");
    let a = Failing::start(&net, FAILING);
    let b = Failing::start(&net, FAILING_TOO);
    let balancer = start_balancer(&net, &[FAILING, FAILING_TOO], "");
    let requests = 100;
    for _ in 0..requests {
        let reply = client(&net)
            .send(&Request::get("/x").host("app.test"))
            .expect("GET");
        assert_eq!(reply.status, 502, "every server fails");
    }
    let retries = &state(&balancer)["pools"][0]["retries"];
    let made = retries["made"].as_u64().unwrap_or(0);
    let refused = retries["refused_by_budget"].as_u64().unwrap_or(0);
    // 20 % of recent requests, plus the floor of 10 per window.
    assert!(
        made <= requests / 5 + 10,
        "retries stay within the budget: {retries}"
    );
    assert!(
        made > 0 && refused > 0,
        "some retried, then refused: {retries}"
    );
    assert_eq!(
        a.requests() + b.requests(),
        requests + made,
        "the servers saw each request once, and each retry once"
    );
    let (_, metrics) = balancer.admin_get("/metrics").expect("metrics");
    assert!(
        metrics.contains("balancer_upstream_retries_refused_total{pool=\"app\"}"),
        "{metrics}"
    );
}

#[test]
fn clients_that_abort_their_uploads_do_not_eject_the_server() {
    let net = net("abort");
    let _good = Backend::start(&net, "good", &[GOOD]).expect("backend");
    // Streamed bodies, so the aborted uploads do reach the server; passive checks on
    // (failures = 5, the default), so six server failures would eject it.
    let config = format!(
        "[[listener]]\nname = \"web\"\nbind = \"{LISTEN}\"\n\n[[route]]\npool = \"app\"\n\
         request_buffering = false\n\n[pool.app]\nservers = [{{ url = \"http://{GOOD}\" }}]\n"
    );
    let balancer = net.start_balancer(&config).expect("balancer");
    for _ in 0..10 {
        let path = net.path();
        in_netns(&path, || {
            let mut stream = TcpStream::connect(LISTEN).expect("connect");
            stream
                .write_all(
                    b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100000\r\n\r\npart of it",
                )
                .expect("write");
            std::thread::sleep(Duration::from_millis(50));
            // Gone before the body ends.
        })
        .expect("client");
    }
    std::thread::sleep(Duration::from_millis(200));
    let server = &state(&balancer)["pools"][0]["servers"][0];
    assert_eq!(server["state"], "up", "{server}\n{}", balancer.log());
    assert_eq!(server["passive_ejections"], 0, "{server}");
    let reply = client(&net)
        .send(&Request::get("/x").host("app.test"))
        .expect("GET");
    assert_eq!(reply.status, 200);
}

#[test]
fn requests_waiting_on_a_server_marked_down_are_retried_or_refused_at_once() {
    let net = net("ondown");
    let frozen = Backend::start(&net, "frozen", &[FAILING]).expect("backend");
    let _good = Backend::start(&net, "good", &[GOOD]).expect("backend");
    let config = format!(
        "[[listener]]\nname = \"web\"\nbind = \"{LISTEN}\"\n\n[[route]]\npool = \"app\"\n\n\
         [pool.app]\nbalance = \"least-conn\"\n\
         servers = [{{ url = \"http://{FAILING}\" }}, {{ url = \"http://{GOOD}\" }}]\n\
         health = {{ path = \"/health\", interval = \"300ms\", timeout = \"200ms\", rise = 1, fall = 2 }}\n"
    );
    let mut balancer = net.start_balancer(&config).expect("balancer");
    // Both up first.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while state(&balancer)["pools"][0]["servers"]
        .as_array()
        .is_none_or(|servers| servers.iter().any(|s| s["state"] != "up"))
    {
        assert!(std::time::Instant::now() < deadline, "servers come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Frozen, not dead: its socket accepts, nothing answers.
    let pid = frozen.pid().expect("pid") as i32;
    // SAFETY: kill(2) on the backend process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let started = std::time::Instant::now();
    let requests: Vec<_> = (0..6)
        .map(|n| {
            let client = client(&net).timeout(Duration::from_secs(30));
            std::thread::spawn(move || {
                let request = if n % 2 == 0 {
                    Request::get("/x").host("app.test")
                } else {
                    Request::post("/x", "once").host("app.test")
                };
                let status = client.send(&request).map(|reply| reply.status);
                (
                    request.method.clone(),
                    status.map_err(|err| format!("{err:#}")),
                )
            })
        })
        .collect();
    let replies: Vec<_> = requests
        .into_iter()
        .map(|thread| thread.join().expect("client"))
        .collect();
    let took = started.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // Least-conn spread them over both; those on the frozen one ended when the checks marked
    // it down (about 0.6 s), not at the 60 s response timeout: GETs on the other server,
    // POSTs with 502.
    assert!(
        took < Duration::from_secs(20),
        "the waits ended with the mark-down ({took:?}): {replies:?}\n{}",
        balancer.log()
    );
    for (method, status) in &replies {
        match method.as_str() {
            "GET" => assert_eq!(status, &Ok(200), "{replies:?}"),
            _ => assert!(matches!(status, Ok(200 | 502)), "{replies:?}"),
        }
    }
    assert!(
        balancer
            .log()
            .contains("marked down by its health checks while the request waited"),
        "{}",
        balancer.log()
    );
    let _ = balancer.stop();
}
