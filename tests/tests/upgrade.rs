//! Upgrades that drop nothing, end to end: a real `balancer run` in a namespace under wrk
//! load (HTTP/1.1 keep-alive, and a new TLS connection per request), replaced five times in a
//! row (four times by `balancer upgrade`, once by SIGUSR2 to the running process). wrk must
//! count no error at all: no refused connection, no read or write error, no timeout, no
//! non-2xx answer. Each new process runs another number of workers (2, 3, 1, 2, 1, 2), so the
//! listening sockets (one per worker, in a `SO_REUSEPORT` group) go over whatever the count:
//! none is closed, extra workers join the group. A new binary that fails leaves the old
//! process serving.

mod l7_support;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use balancer_tests::{Backend, BalancerProcess, Certs, Client, L7Net, Netns, Request};
use l7_support::start;

const B1: &str = "127.0.0.1:8081";
const PLAIN: &str = "127.0.0.1:8080";
const TLS: &str = "127.0.0.1:8443";
const ADMIN: &str = "127.0.0.1:9100";
const UPGRADES: usize = 5;
const LOAD_SECONDS: u64 = 20;

fn config(net: &L7Net, certs: &Certs) -> String {
    let site = certs.issue("site", &["www.example.test"]).expect("cert");
    format!(
        r#"[proxy]
workers = 2
upgrade_socket = "{socket}"
shutdown_timeout = "5s"

[[listener]]
name = "web"
bind = "{PLAIN}"

[[listener]]
name = "tls"
bind = "{TLS}"
tls = {{ certificates = [ {{ cert = "{cert}", key = "{key}" }} ] }}

[[route]]
pool = "app"

[pool.app]
servers = [ {{ url = "http://{B1}" }} ]
"#,
        socket = net.dir().join("upgrade.sock").display(),
        cert = site.cert.display(),
        key = site.key.display(),
    )
}

/// How many sockets listen on `address` in `netns` (a `SO_REUSEPORT` group shows each).
fn listening_sockets(netns: &Netns, address: &str) -> usize {
    let output = Command::new("ip")
        .args(["netns", "exec", netns.name(), "ss", "-Hltn", "src", address])
        .output()
        .expect("ss");
    assert!(output.status.success(), "ss: {output:?}");
    String::from_utf8_lossy(&output.stdout).lines().count()
}

/// wrk in `netns` for `seconds`, with `extra` arguments; returns its output.
fn spawn_wrk(
    netns: &Netns,
    url: &str,
    connections: u32,
    seconds: u64,
    extra: &[&str],
) -> std::process::Child {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.path()))
        .args([
            "wrk",
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
        ])
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk (cargo xtask setup installs it)")
}

/// wrk's request count, and every error line it printed.
fn wrk_result(child: std::process::Child) -> (u64, Vec<String>, String) {
    let output = child.wait_with_output().expect("wrk");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "wrk failed:\n{text}");
    let requests = text
        .lines()
        .find_map(|line| {
            let (count, rest) = line.trim().split_once(' ')?;
            rest.starts_with("requests in")
                .then(|| count.parse().ok())?
        })
        .unwrap_or(0);
    let errors = text
        .lines()
        .filter(|line| {
            let line = line.trim();
            line.starts_with("Socket errors") || line.starts_with("Non-2xx or 3xx")
        })
        .map(ToString::to_string)
        .collect();
    (requests, errors, text)
}

fn wait_exit(process: &mut BalancerProcess, what: &str) {
    let status = process
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|err| panic!("{what}: {err:#}"));
    assert!(
        status.success(),
        "{what} exited {status}:\n{}",
        process.log()
    );
}

#[test]
fn five_upgrades_under_load_lose_no_request_and_refuse_no_connection() {
    let net = L7Net::new("upgrade").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let certs = Certs::new().expect("certs");
    let config_text = config(&net, &certs);
    let mut current = start(&net, &config_text);
    let config = net.dir().join("balancer.toml");

    let keepalive = spawn_wrk(&net, &format!("http://{PLAIN}/"), 20, LOAD_SECONDS, &[]);
    let new_tls = spawn_wrk(
        &net,
        &format!("https://{TLS}/"),
        8,
        LOAD_SECONDS,
        &["-H", "Connection: close"],
    );
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(listening_sockets(&net, PLAIN), 2, "one socket per worker");
    // The worker count of the process that round `n` starts: `WORKERS[n - 1]`.
    const WORKERS: [usize; UPGRADES] = [3, 1, 2, 1, 2];
    let mut sockets = 2;
    for round in 1..=UPGRADES {
        let mut old = current;
        let workers = WORKERS[round - 1];
        std::fs::write(
            &config,
            config_text.replace("workers = 2\n", &format!("workers = {workers}\n")),
        )
        .expect("write config");
        if round < UPGRADES {
            current = BalancerProcess::start_upgrade(
                &net,
                &config,
                ADMIN,
                &net.dir().join(format!("upgrade-{round}.log")),
            )
            .unwrap_or_else(|err| panic!("upgrade {round}: {err:#}"));
        } else {
            // SIGUSR2: the running process starts its own binary again.
            old.signal(libc::SIGUSR2).expect("SIGUSR2");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !old.log().contains("upgrade: the new process serves") {
                assert!(
                    Instant::now() < deadline,
                    "no upgrade after SIGUSR2:\n{}",
                    old.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            current = old;
            // The new process is not our child: the namespace's teardown stops it.
            wait_exit(&mut current, "the process that got SIGUSR2");
            break;
        }
        // It drains: keep-alive connections end after their next answer, so it is gone
        // well before shutdown_timeout.
        wait_exit(&mut old, &format!("the old process of round {round}"));
        assert!(
            old.log().contains("upgrade: the new process serves"),
            "round {round}: the old process saw the handover:\n{}",
            old.log()
        );
        // Every socket went over; a process with more workers added its own.
        sockets = sockets.max(workers);
        assert_eq!(
            listening_sockets(&net, PLAIN),
            sockets,
            "round {round}, {workers} workers:\n{}",
            current.log()
        );
        std::thread::sleep(Duration::from_millis(1000));
    }
    assert!(
        started.elapsed() < Duration::from_secs(LOAD_SECONDS - 1),
        "every upgrade happened under load ({:?})",
        started.elapsed()
    );

    for (what, wrk) in [
        ("HTTP/1.1 keep-alive", keepalive),
        ("new TLS connections", new_tls),
    ] {
        let (requests, errors, text) = wrk_result(wrk);
        eprintln!("{what}: {requests} requests across {UPGRADES} upgrades, errors: {errors:?}");
        assert!(requests > 1000, "{what}: load ran: {text}");
        assert!(
            errors.is_empty(),
            "{what}: no failed request and no refused connection across {UPGRADES} upgrades: {errors:?}\n{text}"
        );
    }
    // The last process (started by SIGUSR2) serves.
    let reply = Client::tcp(&net, PLAIN)
        .send(&Request::get("/after").host("www.example.test"))
        .expect("request after the upgrades");
    assert_eq!(reply.status, 200);
}

#[test]
fn a_new_process_that_fails_leaves_the_old_one_serving() {
    let net = L7Net::new("upgradefail").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let certs = Certs::new().expect("certs");
    let config_text = config(&net, &certs);
    let mut old = start(&net, &config_text);
    // The new config names a static directory that does not exist: it parses, and the new
    // process fails after it took the sockets, while building its state.
    let bad = net.dir().join("bad.toml");
    std::fs::write(
        &bad,
        config_text.replace(
            "[[route]]\npool = \"app\"\n",
            "[[route]]\npool = \"app\"\n\n[[route]]\npath = \"/s/\"\nstatic_dir = \"/nonexistent\"\n",
        ),
    )
    .expect("write");
    let err = BalancerProcess::start_upgrade(&net, &bad, ADMIN, &net.dir().join("bad.log"))
        .err()
        .expect("the new process fails");
    assert!(
        format!("{err:#}").contains("/nonexistent"),
        "it says why: {err:#}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !old
        .log()
        .contains("upgrade failed, this process keeps serving")
    {
        assert!(Instant::now() < deadline, "{}", old.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(old.is_running(), "the old process serves on");
    for _ in 0..3 {
        let reply = Client::tcp(&net, PLAIN)
            .send(&Request::get("/x").host("www.example.test"))
            .expect("request");
        assert_eq!(reply.status, 200);
    }
    let _ = Path::new(&bad);
}

#[test]
fn the_xdp_program_goes_over_through_its_pinned_link() {
    use balancer_tests::{
        ClientBalancer,
        traffic::{socket_addr, spawn_echo_server, tcp_ping_pong},
    };
    const VIP: &str = "198.18.0.10";
    let topology = ClientBalancer::new("upxdp", &[VIP]).expect("topology");
    let dir = std::env::temp_dir().join(format!(
        "balancer-upgrade-xdp-{}",
        balancer_tests::unique_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let pins = format!(
        "/sys/fs/bpf/balancer-test-upxdp-{}",
        balancer_tests::unique_suffix()
    );
    let config = dir.join("balancer.toml");
    let text = format!(
        r#"[xdp]
interface = "{iface}"
pin_path = "{pins}"

[[vip]]
name = "echo"
address = "{VIP}"
port = 7
protocol = "tcp"
forward = "local"

[proxy]
upgrade_socket = "{socket}"
"#,
        iface = topology.balancer_if,
        socket = dir.join("upgrade.sock").display(),
    );
    std::fs::write(&config, &text).expect("config");
    // Pins and files go whatever happens below.
    struct Cleanup(std::path::PathBuf, std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new(balancer_tests::balancer_binary())
                .args(["unload", "--config"])
                .arg(&self.0)
                .output();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let _cleanup = Cleanup(config.clone(), dir.clone());
    let mut old = BalancerProcess::start(&topology.balancer, &config, ADMIN).expect("start");
    let listener = topology
        .balancer
        .run(|| std::net::TcpListener::bind(socket_addr(VIP, 7)))
        .expect("enter")
        .expect("bind");
    spawn_echo_server(listener);
    let ping = || {
        topology
            .client
            .run(|| tcp_ping_pong(socket_addr(VIP, 7), 3))
            .expect("enter")
    };
    ping().expect("before the upgrade");
    let new = BalancerProcess::start_upgrade(
        &topology.balancer,
        &config,
        ADMIN,
        &dir.join("upgrade.log"),
    )
    .expect("upgrade");
    assert!(
        new.log().contains("took over the pinned XDP link"),
        "{}",
        new.log()
    );
    wait_exit(&mut old, "the old process");
    assert!(
        old.log().contains("stays attached (pinned)"),
        "{}",
        old.log()
    );
    ping().expect("after the upgrade, through the new process's program");
    let (_, metrics) = new.admin_get("/metrics").expect("metrics");
    assert!(
        metrics.lines().any(|l| l
            .starts_with("balancer_xdp_packets_total{vip=\"echo\",action=\"pass\"}")
            && !l.ends_with(" 0")),
        "the new process reads the pinned counters:\n{metrics}"
    );

    // Without pin_path there is no link to hand over: `balancer upgrade` says so.
    let unpinned = dir.join("unpinned.toml");
    std::fs::write(
        &unpinned,
        text.replace(&format!("pin_path = \"{pins}\"\n"), ""),
    )
    .expect("write");
    let output = Command::new(balancer_tests::balancer_binary())
        .args(["upgrade", "--config"])
        .arg(&unpinned)
        .output()
        .expect("balancer upgrade");
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("set xdp.pin_path"), "{said}");
}
