//! One state, both halves: the same three hosts are backends of XDP VIPs (a `name_server` on
//! the VIP port, `l2-dsr`) and servers of an L7 pool (an `l7_backend` on their own address), in
//! one real `balancer run` on the L4 topology. A drain, disable or enable through either half of
//! the admin API shows in the other, and the proxy's health verdict on a server takes the VIP
//! backend at its address out of the Maglev table (and puts it back): read through `/api/state`
//! and observed with real connections from the client.

mod l7_support;

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use balancer_tests::{
    Backend, BalancerProcess, Family, L4Topology, LongLived, Request, http_request,
    l4topology::PinDir,
    l7::{TempDir, write_config},
};
use l7_support::server_of;

const ADMIN: &str = "127.0.0.1:9100";
/// The VIP port, where every backend's `name_server` answers.
const VIP_PORT: u16 = 8080;
const VIP: &str = "198.18.100.1";
/// A second VIP over the same hosts: a pool server's drain reaches every VIP it backs.
const OTHER_VIP: &str = "198.18.100.2";
/// Each backend's `l7_backend`, on its own address.
const HTTP_PORT: u16 = 8001;
/// The proxy's listener, on the lb's own address.
const LISTEN: &str = "198.18.0.2:8000";
const BACKENDS: usize = 3;
/// The pool's active checks: a dead server is down after `FALL` × `INTERVAL`.
const INTERVAL: Duration = Duration::from_millis(200);
const FALL: u32 = 2;
/// How long the API's effects and the first checks may take to show.
const SETTLE: Duration = Duration::from_secs(20);

/// The topology with its name servers, an `l7_backend` on every backend host and the balancer.
/// Fields drop in order: the processes before the namespaces they run in.
struct Linked {
    balancer: BalancerProcess,
    http: Vec<Option<Backend>>,
    topology: L4Topology,
    _pins: PinDir,
    _dir: TempDir,
}

fn config(topology: &L4Topology, pin_dir: &Path) -> String {
    let backends = topology.backends_toml(Family::V4, &[1; BACKENDS]);
    let vip_health =
        "{ check = \"tcp\", interval = \"200ms\", timeout = \"150ms\", rise = 1, fall = 2 }";
    let servers: Vec<String> = (1..=BACKENDS)
        .map(|k| {
            format!(
                "{{ url = \"http://{}:{HTTP_PORT}\", route = \"b{k}\" }}",
                topology.backend_addr_v4(k)
            )
        })
        .collect();
    format!(
        r#"
[admin]
listen = "{ADMIN}"

[xdp]
interface = "{iface}"
pin_path = "{pin}"
max_vips = 4
max_backends = 8
max_connections = 65536

[[vip]]
name = "web"
address = "{VIP}"
port = {VIP_PORT}
protocol = "tcp"
forward = "l2-dsr"
backends = {backends}
health = {vip_health}

[[vip]]
name = "other"
address = "{OTHER_VIP}"
port = {VIP_PORT}
protocol = "tcp"
forward = "l2-dsr"
backends = {backends}
health = {vip_health}

[[listener]]
name = "http"
bind = "{LISTEN}"

[[route]]
name = "main"
listener = "http"
pool = "app"

[pool.app]
servers = [ {servers} ]
health = {{ path = "/", interval = "{interval}ms", timeout = "100ms", rise = 1, fall = {FALL} }}
"#,
        iface = topology.lb_interface(),
        pin = pin_dir.display(),
        servers = servers.join(", "),
        interval = INTERVAL.as_millis(),
    )
}

fn setup(tag: &str) -> anyhow::Result<Linked> {
    let mut topology = L4Topology::new(tag, BACKENDS)?;
    for vip in [VIP, OTHER_VIP] {
        topology.add_vip(vip.parse()?)?;
    }
    topology.start_name_servers(VIP_PORT)?;
    topology.attach_pass_on_lb_peer()?;
    let http = (1..=BACKENDS)
        .map(|k| start_http(&topology, k).map(Some))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = TempDir::new(tag)?;
    let pins = PinDir::new(tag);
    let config_path = write_config(dir.path(), &config(&topology, &pins.0))?;
    let balancer = BalancerProcess::start(topology.lb(), &config_path, ADMIN)?;
    let linked = Linked {
        balancer,
        http,
        topology,
        _pins: pins,
        _dir: dir,
    };
    // Pool servers start down until their first check passes, and the VIP backends with them.
    for k in 1..=BACKENDS {
        for vip in ["web", "other"] {
            linked.wait_vip_backend(vip, k, SETTLE, "up", |b| b["state"] == "up")?;
        }
    }
    Ok(linked)
}

/// `l7_backend --name bK` on backend K's own address.
fn start_http(topology: &L4Topology, k: usize) -> anyhow::Result<Backend> {
    let listen = format!("{}:{HTTP_PORT}", topology.backend_addr_v4(k));
    Backend::start(topology.backend(k), &format!("b{k}"), &[&listen])
}

impl Linked {
    fn address(&self, k: usize) -> IpAddr {
        self.topology.backend_addr(k, Family::V4)
    }

    fn vip(&self) -> SocketAddr {
        SocketAddr::new(VIP.parse().expect("VIP literal"), VIP_PORT)
    }

    fn state(&self) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self.balancer.admin_get("/api/state")?;
        ensure!(status == 200, "/api/state answered {status}: {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// Backend K of VIP `vip` in `/api/state` (`xdp.vips[].backends[]`).
    fn vip_backend(&self, vip: &str, k: usize) -> anyhow::Result<serde_json::Value> {
        let state = self.state()?;
        let address = self.address(k).to_string();
        state["xdp"]["vips"]
            .as_array()
            .context("xdp.vips")?
            .iter()
            .find(|v| v["name"] == vip)
            .with_context(|| format!("VIP {vip} in /api/state"))?["backends"]
            .as_array()
            .context("backends")?
            .iter()
            .find(|b| b["address"] == address.as_str())
            .cloned()
            .with_context(|| format!("backend {address} of VIP {vip} in /api/state"))
    }

    /// Server bK of pool "app" in `/api/state` (`pools[].servers[]`).
    fn pool_server(&self, k: usize) -> anyhow::Result<serde_json::Value> {
        let state = self.state()?;
        let url = format!("http://{}:{HTTP_PORT}", self.address(k));
        state["pools"]
            .as_array()
            .context("pools")?
            .iter()
            .find(|p| p["name"] == "app")
            .context("pool app in /api/state")?["servers"]
            .as_array()
            .context("servers")?
            .iter()
            .find(|s| s["url"] == url.as_str())
            .cloned()
            .with_context(|| format!("server {url} of pool app in /api/state"))
    }

    /// Polls backend K of `vip` every 50 ms until `ok` holds, for up to `limit`; returns the
    /// entry and how long it took.
    fn wait_vip_backend(
        &self,
        vip: &str,
        k: usize,
        limit: Duration,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<(serde_json::Value, Duration)> {
        let started = Instant::now();
        loop {
            let entry = self.vip_backend(vip, k)?;
            if ok(&entry) {
                return Ok((entry, started.elapsed()));
            }
            if started.elapsed() > limit {
                bail!("{vip} backend b{k} not {what} within {limit:?}: {entry:#}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_pool_server(
        &self,
        k: usize,
        limit: Duration,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let started = Instant::now();
        loop {
            let entry = self.pool_server(k)?;
            if ok(&entry) {
                return Ok(entry);
            }
            if started.elapsed() > limit {
                bail!("pool server b{k} not {what} within {limit:?}: {entry:#}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `POST path` on the admin API; the body of a 200.
    fn post(&self, path: &str) -> anyhow::Result<String> {
        let (status, body) = self.balancer.admin_post(path)?;
        ensure!(status == 200, "POST {path}: {status} {body}");
        Ok(body)
    }

    /// `POST /api/pools/app/servers/bK/{action}`; its JSON answer.
    fn pool_action(&self, k: usize, action: &str) -> anyhow::Result<serde_json::Value> {
        let body = self.post(&format!("/api/pools/app/servers/b{k}/{action}"))?;
        serde_json::from_str(&body).with_context(|| format!("pool {action} answer {body:?}"))
    }

    /// `POST /api/vips/{vip}/backends/{address of bK}/{action}`; its text answer.
    fn vip_action(&self, vip: &str, k: usize, action: &str) -> anyhow::Result<String> {
        self.post(&format!(
            "/api/vips/{vip}/backends/{}/{action}",
            self.address(k)
        ))
    }

    /// `n` new TCP connections to the VIP; the backends that greeted them.
    fn vip_flows(&self, n: usize) -> anyhow::Result<Vec<String>> {
        self.topology.connect_many(self.vip(), n, None)
    }

    /// `n` GETs through the proxy's listener from the client, each on its own connection; the
    /// servers that answered.
    fn l7_requests(&self, n: usize) -> anyhow::Result<Vec<String>> {
        (0..n)
            .map(|i| {
                let request = Request::get(&format!("/r{i}")).host("app.test");
                let reply = http_request(self.topology.client(), LISTEN, &request)
                    .with_context(|| format!("GET /r{i} through {LISTEN}"))?;
                ensure!(
                    reply.status == 200,
                    "GET /r{i}: {} {}",
                    reply.status,
                    reply.text()
                );
                Ok(server_of(&reply))
            })
            .collect()
    }
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

/// Runs `body` on a fresh setup; on failure, panics with the error and the balancer's log.
fn run(tag: &str, body: impl FnOnce(&mut Linked) -> anyhow::Result<()>) {
    let mut linked = setup(tag).unwrap_or_else(|err| panic!("setup: {err:#}"));
    if let Err(err) = body(&mut linked) {
        panic!("{err:#}\nbalancer log:\n{}", linked.balancer.log());
    }
}

/// Draining a pool server drains the VIP backends at its address (both VIPs): its established
/// flows keep working, new flows avoid it; enabling it brings it back.
#[test]
fn pool_server_drain_reaches_the_vip_backends() {
    run("lkpool", |linked| {
        let mut flows: Vec<LongLived> = (0..24)
            .map(|_| linked.topology.open_long_lived(linked.vip()))
            .collect::<anyhow::Result<_>>()?;
        ensure!(
            flows.iter().any(|f| f.backend() == "b2"),
            "24 flows and none on b2, nothing to prove draining with"
        );

        let answer = linked.pool_action(2, "drain")?;
        ensure!(answer["operator"] == "draining", "drain answer: {answer}");
        let mut vips: Vec<&str> = answer["vips"]
            .as_array()
            .context("vips in the drain answer")?
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        vips.sort_unstable();
        ensure!(
            vips == ["other", "web"],
            "drain should name both VIPs: {answer}"
        );
        for vip in ["web", "other"] {
            let entry = linked.vip_backend(vip, 2)?;
            ensure!(
                entry["state"] == "draining" && entry["admin"] == "draining",
                "{vip} backend b2 after the pool drain: {entry:#}"
            );
        }
        let server = linked.pool_server(2)?;
        ensure!(server["state"] == "draining", "pool server b2: {server:#}");
        // The other hosts are untouched.
        for k in [1, 3] {
            let entry = linked.vip_backend("web", k)?;
            ensure!(entry["state"] == "up", "web backend b{k}: {entry:#}");
        }

        let names = linked.vip_flows(60)?;
        ensure!(
            count(&names, "b2") == 0,
            "draining b2 got {} of 60 new flows",
            count(&names, "b2")
        );
        for flow in &mut flows {
            flow.ping().context("an established flow while b2 drains")?;
        }
        let names = linked.l7_requests(6)?;
        ensure!(
            count(&names, "b2") == 0,
            "draining b2 got new L7 requests: {names:?}"
        );

        let answer = linked.pool_action(2, "enable")?;
        ensure!(answer["operator"] == "enabled", "enable answer: {answer}");
        for vip in ["web", "other"] {
            let entry = linked.vip_backend(vip, 2)?;
            ensure!(
                entry["state"] == "up" && entry["admin"] == "enabled",
                "{vip} backend b2 after enable: {entry:#}"
            );
        }
        let names = linked.vip_flows(90)?;
        ensure!(
            count(&names, "b2") > 0,
            "re-enabled b2 got none of 90 new flows"
        );
        for flow in &mut flows {
            flow.ping().context("an established flow after enable")?;
        }
        Ok(())
    });
}

/// Disabling or draining a VIP backend does the same to the pool server at its address: the
/// proxy's new requests avoid it; enabling brings it back.
#[test]
fn vip_backend_disable_and_drain_reach_the_pool_servers() {
    run("lkvip", |linked| {
        let names = linked.l7_requests(6)?;
        ensure!(
            (1..=BACKENDS).all(|k| count(&names, &format!("b{k}")) > 0),
            "round robin over three healthy servers: {names:?}"
        );

        let answer = linked.vip_action("web", 2, "disable")?;
        ensure!(
            answer.contains("also pool servers app/b2"),
            "disable answer should name the pool server: {answer:?}"
        );
        let server = linked.pool_server(2)?;
        ensure!(
            server["operator"] == "disabled"
                && server["state"] == "disabled"
                && server["takes_new_sessions"] == false
                && server["takes_sticky_requests"] == false,
            "pool server b2 after the VIP disable: {server:#}"
        );
        let entry = linked.vip_backend("web", 2)?;
        ensure!(
            entry["state"] == "down" && entry["admin"] == "disabled",
            "web backend b2 after disable: {entry:#}"
        );
        let names = linked.l7_requests(9)?;
        ensure!(
            count(&names, "b2") == 0,
            "disabled b2 got L7 requests: {names:?}"
        );
        ensure!(
            count(&linked.vip_flows(45)?, "b2") == 0,
            "disabled b2 got VIP flows"
        );

        let answer = linked.vip_action("web", 3, "drain")?;
        ensure!(
            answer.contains("also pool servers app/b3"),
            "drain answer should name the pool server: {answer:?}"
        );
        let server = linked.pool_server(3)?;
        ensure!(
            server["operator"] == "draining"
                && server["state"] == "draining"
                && server["takes_new_sessions"] == false
                && server["takes_sticky_requests"] == true,
            "pool server b3 after the VIP drain: {server:#}"
        );
        let names = linked.l7_requests(6)?;
        ensure!(
            names.iter().all(|n| n == "b1"),
            "b2 disabled and b3 draining: only b1 takes new requests, got {names:?}"
        );

        for k in [2, 3] {
            let answer = linked.vip_action("web", k, "enable")?;
            ensure!(
                answer.contains(&format!("also pool servers app/b{k}")),
                "enable answer: {answer:?}"
            );
            let server = linked.pool_server(k)?;
            ensure!(
                server["operator"] == "enabled" && server["state"] == "up",
                "pool server b{k} after enable: {server:#}"
            );
        }
        let names = linked.l7_requests(9)?;
        ensure!(
            (1..=BACKENDS).all(|k| count(&names, &format!("b{k}")) > 0),
            "all three serve again after enable: {names:?}"
        );
        Ok(())
    });
}

/// A pool server failing its HTTP checks takes the VIP backend at its address out of the Maglev
/// table (its own TCP check still passes) within fall × interval + 1 s, and brings it back when
/// the server answers again.
#[test]
fn pool_health_verdict_takes_the_vip_backend_down_and_back() {
    run("lkhealth", |linked| {
        let mut flows: Vec<LongLived> = (0..12)
            .map(|_| linked.topology.open_long_lived(linked.vip()))
            .collect::<anyhow::Result<_>>()?;
        let entry = linked.vip_backend("web", 3)?;
        ensure!(
            entry["pool_health"]["up"] == true
                && entry["pool_health"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("pool app server b3")),
            "web backend b3 before: {entry:#}"
        );

        let http = linked.http[2].take().context("b3's l7_backend")?;
        let status = http.stop()?;
        ensure!(status.success(), "l7_backend b3 exited with {status}");
        let limit = INTERVAL * FALL + Duration::from_secs(1);
        let (entry, took) = linked.wait_vip_backend("web", 3, limit, "down", |b| {
            b["state"] == "down" && b["pool_health"]["up"] == false
        })?;
        eprintln!("web backend b3 down {took:?} after its HTTP server stopped");
        let reason = entry["pool_health"]["reason"].as_str().unwrap_or_default();
        ensure!(
            reason.starts_with("pool app server b3: "),
            "pool_health.reason should name the pool and server: {entry:#}"
        );
        ensure!(
            entry["healthy"] == true && entry["admin"] == "enabled",
            "the VIP's own check still passes and the operator did nothing: {entry:#}"
        );
        let other = linked.vip_backend("other", 3)?;
        ensure!(other["state"] == "down", "other backend b3: {other:#}");
        let server = linked.pool_server(3)?;
        ensure!(server["state"] == "down", "pool server b3: {server:#}");

        let names = linked.vip_flows(60)?;
        ensure!(
            count(&names, "b3") == 0,
            "b3 is down but got {} of 60 new flows",
            count(&names, "b3")
        );
        for flow in flows.iter_mut().filter(|f| f.backend() != "b3") {
            flow.ping()
                .context("a flow on another backend while b3 is down")?;
        }
        let names = linked.l7_requests(6)?;
        ensure!(count(&names, "b3") == 0, "down b3 got L7 requests");

        linked.http[2] = Some(start_http(&linked.topology, 3)?);
        let (entry, took) =
            linked.wait_vip_backend("web", 3, Duration::from_secs(5), "up", |b| {
                b["state"] == "up" && b["pool_health"]["up"] == true
            })?;
        eprintln!("web backend b3 up {took:?} after its HTTP server restarted: {entry}");
        linked.wait_pool_server(3, SETTLE, "up", |s| s["state"] == "up")?;
        let names = linked.vip_flows(90)?;
        ensure!(
            count(&names, "b3") > 0,
            "b3 is up again but got none of 90 new flows"
        );
        for flow in flows.iter_mut().filter(|f| f.backend() != "b3") {
            flow.ping()
                .context("a flow on another backend after b3 came back")?;
        }
        Ok(())
    });
}
