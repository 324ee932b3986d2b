//! `[announce]` end to end: a router namespace running BIRD 2 peers over eBGP (hold time 3 s)
//! with a balancer host running `balancer run` and BIRD with `packaging/bird.conf`. Every
//! assertion reads the router's kernel routes, which is what steers traffic.
//!
//! ```text
//!   router (BIRD, AS 65000) ── 198.18.254.0/30, 2001:2:0:254::/64 ── lb (balancer + BIRD, AS 65001)
//!                                                                     │ veth0 (XDP), bridge
//!                                                                     b1, b2 (name_server :PORT)
//! ```
//!
//! The figures printed (announce and withdraw times, measured at the router) go into the
//! issue's close note; none is asserted on.

use std::{
    fs,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use balancer_tests::{
    BalancerProcess, Family, L4Topology, Netns,
    bird::{Bird, host_routes, packaged_snippet, wait_route},
    run_in, unique_suffix,
};

const PORT: u16 = 8080;
const ADMIN: &str = "127.0.0.1:9100";
const VIP4: &str = "198.18.60.10";
const VIP6: &str = "2001:2:0:60::10";
const TABLE: &str = "200";
const ROUTER_V4: &str = "198.18.254.1";
const LB_V4: &str = "198.18.254.2";
const ROUTER_V6: &str = "2001:2:0:254::1";
const LB_V6: &str = "2001:2:0:254::2";
/// How long the router may take to see a change: health checks (200 ms, fall 3), the
/// announcer's poll, BIRD's kernel learning and one BGP update, with room for a busy machine.
const CONVERGE: Duration = Duration::from_secs(15);
/// Long enough to see the route gone from the router while the process still runs.
const WITHDRAW_DELAY: &str = "3s";

fn vip4() -> IpAddr {
    VIP4.parse().expect("VIP4")
}

fn vip6() -> IpAddr {
    VIP6.parse().expect("VIP6")
}

/// A scratch directory removed on drop.
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Everything one test runs on; dropped in field order: BIRDs and the balancer stop before
/// their namespaces go.
struct Setup {
    balancer: Option<BalancerProcess>,
    _lb_bird: Bird,
    _router_bird: Bird,
    topology: L4Topology,
    router: Netns,
    config_path: std::path::PathBuf,
    state_file: std::path::PathBuf,
    _dir: Dir,
}

fn balancer_config(topology: &L4Topology, state_file: &Path) -> String {
    // fall = 3: one check lost to a busy machine must not take the last backend down while
    // the test asserts that one backend is enough.
    let health =
        "{ check = \"tcp\", interval = \"200ms\", timeout = \"200ms\", rise = 1, fall = 3 }";
    format!(
        r#"
[admin]
listen = "{ADMIN}"

[xdp]
interface = "{iface}"
max_vips = 4
max_backends = 4
max_connections = 65536

[announce]
table = {TABLE}
withdraw_delay = "{WITHDRAW_DELAY}"
state_file = "{state}"

[[vip]]
name = "web4"
address = "{VIP4}"
port = {PORT}
protocol = "tcp"
forward = "ipip"
backends = {b4}
health = {health}

[[vip]]
name = "web6"
address = "{VIP6}"
port = {PORT}
protocol = "tcp"
forward = "ipip"
backends = {b6}
health = {health}
"#,
        iface = topology.lb_interface(),
        state = state_file.display(),
        b4 = topology.backends_toml(Family::V4, &[1, 1]),
        b6 = topology.backends_toml(Family::V6, &[1, 1]),
    )
}

/// The router: learns the VIPs over eBGP into its main table (hold time 3 s, retries every
/// second so a session comes up as soon as the other side listens).
fn router_bird_config() -> String {
    format!(
        r#"
router id {ROUTER_V4};
protocol device {{}}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}
protocol kernel {{ ipv6 {{ import none; export all; }}; merge paths on; }}
protocol bgp lb4 {{
    local {ROUTER_V4} as 65000; neighbor {LB_V4} as 65001;
    hold time 3; connect retry time 1; connect delay time 1; error wait time 1, 2;
    ipv4 {{ import all; export none; }};
}}
protocol bgp lb6 {{
    local {ROUTER_V6} as 65000; neighbor {LB_V6} as 65001;
    hold time 3; connect retry time 1; connect delay time 1; error wait time 1, 2;
    ipv6 {{ import all; export none; }};
}}
"#
    )
}

/// The balancer host: the packaged snippet, completed with the sessions to the router as a
/// site would.
fn lb_bird_config() -> String {
    format!(
        r#"
router id {LB_V4};
protocol device {{}}
include "{snippet}";
protocol bgp router4 from balancer_peer {{
    local {LB_V4} as 65001; neighbor {ROUTER_V4} as 65000;
    hold time 3; connect retry time 1; connect delay time 1; error wait time 1, 2;
}}
protocol bgp router6 from balancer_peer6 {{
    local {LB_V6} as 65001; neighbor {ROUTER_V6} as 65000;
    hold time 3; connect retry time 1; connect delay time 1; error wait time 1, 2;
}}
"#,
        snippet = packaged_snippet().display()
    )
}

fn setup(tag: &str) -> anyhow::Result<Setup> {
    let mut topology = L4Topology::new(tag, 2)?;
    topology.start_name_servers(PORT)?;
    let suffix = unique_suffix();
    let router = Netns::new(format!("bl-{tag}-rt-{suffix}"))?;
    let dir = Dir(std::env::temp_dir().join(format!("balancer-{tag}-{suffix}")));
    fs::create_dir_all(&dir.0)?;

    // The link between the router and the lb: `up0` in the lb, `dn0` in the router.
    topology.lb().ip(&[
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        "dn0",
        "netns",
        router.name(),
    ])?;
    for (netns, interface, v4, v6) in [
        (topology.lb(), "up0", LB_V4, LB_V6),
        (&router, "dn0", ROUTER_V4, ROUTER_V6),
    ] {
        netns.ip(&["addr", "add", &format!("{v4}/30"), "dev", interface])?;
        netns.ip(&[
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            interface,
            "nodad",
        ])?;
        netns.ip(&["link", "set", interface, "up"])?;
    }

    let router_bird = Bird::start(&router, &dir.0, "router", &router_bird_config())?;
    let lb_bird = Bird::start(topology.lb(), &dir.0, "lb", &lb_bird_config())?;
    router_bird.wait_established("lb4", Duration::from_secs(30))?;
    router_bird.wait_established("lb6", Duration::from_secs(30))?;

    let state_file = dir.0.join("announce.json");
    let config_path = dir.0.join("balancer.toml");
    fs::write(&config_path, balancer_config(&topology, &state_file))?;
    let balancer = BalancerProcess::start(topology.lb(), &config_path, ADMIN)?;
    Ok(Setup {
        balancer: Some(balancer),
        _lb_bird: lb_bird,
        _router_bird: router_bird,
        topology,
        router,
        config_path,
        state_file,
        _dir: dir,
    })
}

impl Setup {
    fn balancer(&self) -> &BalancerProcess {
        self.balancer.as_ref().expect("balancer running")
    }

    /// Waits until the router has (or lacks) a route to `vip`; returns how long it took.
    fn router_route(&self, vip: IpAddr, present: bool) -> anyhow::Result<Duration> {
        wait_route(&self.router.path(), vip, "main", present, CONVERGE).with_context(|| {
            format!(
                "balancer log:\n{}",
                self.balancer
                    .as_ref()
                    .map(BalancerProcess::log)
                    .unwrap_or_default()
            )
        })
    }

    /// The lb's own table `announce.table`, as `ip route show` prints it.
    fn lb_table(&self, family: &str) -> anyhow::Result<String> {
        run_in(
            &self.topology.lb().path(),
            "ip",
            &[family, "route", "show", "table", TABLE],
        )
    }

    /// `POST /api/announce/ACTION`: the JSON it answered (must be 200).
    fn announce(&self, action: &str) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self
            .balancer()
            .admin_post(&format!("/api/announce/{action}"))?;
        ensure!(
            status == 200,
            "POST /api/announce/{action}: {status} {body}"
        );
        Ok(serde_json::from_str(&body)?)
    }

    fn state(&self) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self.balancer().admin_get("/api/state")?;
        ensure!(status == 200, "/api/state: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        self.balancer = Some(BalancerProcess::start(
            self.topology.lb(),
            &self.config_path,
            ADMIN,
        )?);
        Ok(())
    }
}

/// Prints one measured figure in a form the report can quote.
fn figure(what: &str, took: Duration) {
    eprintln!("announce figure: {what}: {} ms", took.as_millis());
}

#[test]
fn routes_follow_backend_health_and_the_operator() -> anyhow::Result<()> {
    let mut setup = setup("an")?;

    // Both backends answer their checks: both VIPs reach the router, through the lb.
    let took = setup.router_route(vip4(), true)?;
    figure("first announce after start (v4, from balancer ready)", took);
    setup.router_route(vip6(), true)?;
    let routes = host_routes(&setup.router.path(), vip4(), "main")?;
    ensure!(
        routes.contains(LB_V4) && routes.contains("proto bird"),
        "the router's route to {VIP4} should go via the lb ({LB_V4}), learned by BIRD: {routes}"
    );
    let table = setup.lb_table("-4")?;
    ensure!(
        table.contains(&format!("{VIP4} dev lo proto 250")),
        "the lb's table {TABLE} should hold a protocol-250 route to {VIP4} on lo: {table}"
    );
    let state = setup.state()?;
    ensure!(
        state["announce"]["state"] == "announcing"
            && state["announce"]["announced"]
                .as_array()
                .is_some_and(|list| list.len() == 2),
        "/api/state should show both VIPs announced: {}",
        state["announce"]
    );

    // One backend down: still announced (the other one serves).
    setup.topology.stop_name_server(1)?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        ensure!(
            !host_routes(&setup.router.path(), vip4(), "main")?
                .trim()
                .is_empty(),
            "{VIP4} was withdrawn while b2 was still up; balancer log:\n{}",
            setup.balancer().log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // All backends down: withdrawn from the router.
    let stopped = Instant::now();
    setup.topology.stop_name_server(2)?;
    setup.router_route(vip4(), false)?;
    figure(
        "withdraw, last backend's server stopped -> router lost v4 route (incl. 3 failed checks 200 ms apart)",
        stopped.elapsed(),
    );
    setup.router_route(vip6(), false)?;
    let state = setup.state()?;
    ensure!(
        state["announce"]["announced"]
            .as_array()
            .is_some_and(Vec::is_empty)
            && state["announce"]["vips"][0]["reason"] == "no backend is up",
        "/api/state should show nothing announced, because no backend is up: {}",
        state["announce"]
    );

    // A backend back: announced again.
    let started = Instant::now();
    setup.topology.start_name_server(2)?;
    setup.router_route(vip4(), true)?;
    figure(
        "re-announce, a backend's server started -> router has v4 route (incl. 1 passed check)",
        started.elapsed(),
    );
    setup.router_route(vip6(), true)?;
    setup.topology.start_name_server(1)?;

    // Operator withdraw: the answer comes once the kernel table no longer holds the routes.
    let asked = Instant::now();
    let answer = setup.announce("withdraw")?;
    let answered = asked.elapsed();
    ensure!(
        answer["state"] == "withdrawn" && answer["announced"].as_array().is_some_and(Vec::is_empty),
        "withdraw should answer the withdrawn state with nothing announced: {answer}"
    );
    ensure!(
        setup.lb_table("-4")?.trim().is_empty() && setup.lb_table("-6")?.trim().is_empty(),
        "after the withdraw answer, table {TABLE} should be empty"
    );
    setup.router_route(vip4(), false)?;
    let (_, metrics) = setup.balancer().admin_get("/metrics")?;
    for line in [
        "balancer_announce_withdrawn 1",
        "balancer_vip_announced{vip=\"web4\",address=\"198.18.60.10\"} 0",
    ] {
        ensure!(
            metrics.contains(line),
            "/metrics should have {line:?}:\n{metrics}"
        );
    }
    figure("operator withdraw: POST answered", answered);
    figure(
        "operator withdraw: POST -> router lost v4 route",
        asked.elapsed(),
    );
    setup.router_route(vip6(), false)?;

    // The withdraw survives a restart.
    setup.balancer.take().expect("running").terminate()?;
    setup.restart()?;
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        host_routes(&setup.router.path(), vip4(), "main")?
            .trim()
            .is_empty(),
        "a restart must keep the operator's withdraw; the router has a route to {VIP4}"
    );
    let state = setup.state()?;
    ensure!(
        state["announce"]["state"] == "withdrawn",
        "after a restart /api/state should still say withdrawn: {}",
        state["announce"]
    );
    ensure!(
        fs::read_to_string(&setup.state_file)?.contains("\"withdrawn\":true"),
        "the state file should record the withdraw"
    );

    // Restore: announced again.
    let asked = Instant::now();
    let answer = setup.announce("restore")?;
    ensure!(
        answer["state"] == "announcing",
        "restore should answer the announcing state: {answer}"
    );
    setup.router_route(vip4(), true)?;
    figure(
        "operator restore: POST -> router has v4 route",
        asked.elapsed(),
    );
    let (_, metrics) = setup.balancer().admin_get("/metrics")?;
    for line in [
        "balancer_announce_withdrawn 0",
        "balancer_vip_announced{vip=\"web4\",address=\"198.18.60.10\"} 1",
    ] {
        ensure!(
            metrics.contains(line),
            "/metrics should have {line:?}:\n{metrics}"
        );
    }
    setup.router_route(vip6(), true)?;

    // The announce actions pass the admin API's cross-site checks like every other POST: a
    // page on another origin cannot withdraw the host.
    let refused = run_in(
        &setup.topology.lb().path(),
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
            "Origin: http://attacker.example",
            &format!("http://{ADMIN}/api/announce/withdraw"),
        ],
    )?;
    ensure!(
        refused.trim() == "403",
        "a cross-origin withdraw should be refused with 403, got {refused}"
    );
    ensure!(
        setup.state()?["announce"]["state"] == "announcing",
        "a refused cross-origin withdraw must change nothing"
    );

    // A GET is not an action, and the actions are POSTs only.
    let (status, _) = setup.balancer().admin_get("/api/announce/withdraw")?;
    ensure!(
        status == 405,
        "GET /api/announce/withdraw should be 405, got {status}"
    );
    ensure!(
        !host_routes(&setup.router.path(), vip4(), "main")?
            .trim()
            .is_empty(),
        "a refused GET must not withdraw"
    );

    // The XDP interface goes away (with it the program): nothing would forward the VIPs here,
    // so they are withdrawn while the BGP session (on another link) stays up.
    let removed = Instant::now();
    setup
        .topology
        .lb()
        .ip(&["link", "del", setup.topology.lb_interface()])?;
    setup.router_route(vip4(), false)?;
    figure(
        "XDP interface deleted -> router lost v4 route",
        removed.elapsed(),
    );
    setup.router_route(vip6(), false)?;
    let state = setup.state()?;
    ensure!(
        state["announce"]["vips"][0]["reason"] == "the XDP program is not attached",
        "/api/state should say why nothing is announced: {}",
        state["announce"]
    );
    Ok(())
}

#[test]
fn stale_routes_are_flushed_at_start_and_sigterm_withdraws_before_exit() -> anyhow::Result<()> {
    let mut setup = setup("as")?;
    setup.router_route(vip4(), true)?;

    // kill -9: nothing withdraws, the route stays in the table and at the router.
    let mut balancer = setup.balancer.take().expect("running");
    balancer.signal(libc::SIGKILL)?;
    let _ = balancer.wait_exit(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    ensure!(
        setup.lb_table("-4")?.contains(VIP4),
        "kill -9 should leave the route behind (that is what the start-up flush is for)"
    );
    // Another stale route of ours, and a route of another protocol the flush must not touch.
    let stray: IpAddr = "198.18.61.99".parse()?;
    let foreign: IpAddr = "198.18.61.98".parse()?;
    let lb = setup.topology.lb();
    lb.ip(&[
        "route",
        "add",
        &format!("{stray}/32"),
        "dev",
        "lo",
        "table",
        TABLE,
        "proto",
        "250",
    ])?;
    lb.ip(&[
        "route",
        "add",
        &format!("{foreign}/32"),
        "dev",
        "lo",
        "table",
        TABLE,
        "proto",
        "static",
    ])?;
    setup.router_route(stray, true)?;

    // Restart with every backend down: the stale routes go, and the VIPs stay withdrawn
    // (a backend with a health check starts down until its first check passes).
    setup.topology.stop_name_server(1)?;
    setup.topology.stop_name_server(2)?;
    let started = Instant::now();
    setup.restart()?;
    setup.router_route(vip4(), false)?;
    figure(
        "restart after kill -9, no backend up: router lost the stale v4 route",
        started.elapsed(),
    );
    setup.router_route(stray, false)?;
    let table = setup.lb_table("-4")?;
    ensure!(
        !table.contains(VIP4) && !table.contains(&stray.to_string()),
        "the start-up flush should remove every protocol-250 route: {table}"
    );
    ensure!(
        table.contains(&foreign.to_string()),
        "the flush must leave routes of other protocols alone: {table}"
    );
    ensure!(
        host_routes(&setup.router.path(), foreign, "main")?
            .trim()
            .is_empty(),
        "packaging/bird.conf must not export a non-250 route of the table"
    );

    // Backends back: announced.
    setup.topology.start_name_servers(PORT)?;
    setup.router_route(vip4(), true)?;
    setup.router_route(vip6(), true)?;

    // SIGTERM: the router loses the route while the process still runs (it waits
    // withdraw_delay = 3 s before draining and exiting).
    let mut balancer = setup.balancer.take().expect("running");
    let signalled = Instant::now();
    balancer.signal(libc::SIGTERM)?;
    setup.router_route(vip4(), false)?;
    let withdrawn = signalled.elapsed();
    ensure!(
        balancer.is_running(),
        "the router should lose the route before the balancer exits; it exited already.\n{}",
        balancer.log()
    );
    setup.router_route(vip6(), false)?;
    let status = balancer.wait_exit(Duration::from_secs(40))?;
    let exited = signalled.elapsed();
    ensure!(
        status.success(),
        "balancer exited with {status}:\n{}",
        balancer.log()
    );
    figure("SIGTERM -> router lost v4 route", withdrawn);
    figure("SIGTERM -> exit (withdraw_delay 3 s + drain)", exited);
    let log = balancer.log();
    let withdraw_at = log
        .find("every route withdrawn")
        .context("the log should say the routes were withdrawn")?;
    let drain_at = log.find("SIGTERM received").context("SIGTERM logged")?;
    ensure!(
        drain_at < withdraw_at,
        "SIGTERM is logged before the withdraw"
    );
    Ok(())
}
