//! Next hops follow the kernel's neighbour, route and link changes as they happen
//! (rtnetlink notifications), not at the next poll: while `balancer run` forwards an
//! `l2-dsr` VIP per family to b1, the balancer host's neighbour entry for b1 is replaced
//! with b2's MAC (`ip neigh replace … nud permanent`), and new connections must reach b2
//! (which also carries the VIP on `lo`); then b1's MAC comes back. A host route that sends
//! b1 through a gateway (which `l2-dsr` refuses) and an MTU change of the balancer's
//! interface must show in `/api/state` just as fast.
//!
//! The full re-check runs every 30 s, so each change is given 2 s: well under the old
//! polling interval (5 s), far above what the notification path takes. Each case prints
//! how long after the `ip` command the change showed in `/api/state` (16–58 ms here, about
//! one `/api/state` request: each spawns a client in the namespace) and, from the
//! balancer's log, when the new hop was logged (right before its map write): 12–34 ms
//! after the `ip` command started, which itself ran 4–6 ms; so about 7–30 ms from the
//! kernel's change to the map, 5 ms of it the deliberate wait for related notifications.

use std::{
    fs,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use balancer_tests::{
    BalancerProcess, Family, L4Topology,
    l4topology::{PinDir, TestVip, VIP_ADMIN as ADMIN, VIP_PORT as PORT, VIP4, VIP6},
    unique_suffix,
};

/// How long a change may take to reach the maps (see the module documentation).
const BOUND: Duration = Duration::from_secs(2);

struct Setup {
    topology: L4Topology,
    balancer: BalancerProcess,
    _pins: PinDir,
    dir: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn setup() -> anyhow::Result<Setup> {
    let mut topology = L4Topology::new("nhev", 2)?;
    for vip in [VIP4, VIP6] {
        topology.add_vip(vip.parse()?)?;
    }
    topology.start_name_servers(PORT)?;
    topology.attach_pass_on_lb_peer()?;
    let pins = PinDir::new("nhev");
    let dir = std::env::temp_dir().join(format!("balancer-nhev-{}", unique_suffix()));
    fs::create_dir_all(&dir)?;
    // b1 only, no health checks: after the MAC swap the kernel's own packets to b1 (a
    // health check) would reach b2 and fail, and the test is about next hops.
    let config = topology.xdp_config(
        ADMIN,
        &pins.0,
        &[
            TestVip::new(
                "web4",
                (VIP4, PORT),
                "tcp",
                "l2-dsr",
                topology.backends_toml(Family::V4, &[1]),
            ),
            TestVip::new(
                "web6",
                (VIP6, PORT),
                "tcp",
                "l2-dsr",
                topology.backends_toml(Family::V6, &[1]),
            ),
        ],
    );
    let config_path = dir.join("balancer.toml");
    fs::write(&config_path, config)?;
    let balancer = BalancerProcess::start(topology.lb(), &config_path, ADMIN)?;
    Ok(Setup {
        topology,
        balancer,
        _pins: pins,
        dir,
    })
}

impl Setup {
    /// The `/api/state` entry of the VIP's only backend.
    fn backend(&self, vip: &str) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self.balancer.admin_get("/api/state")?;
        ensure!(status == 200, "/api/state answered {status}: {body}");
        let state: serde_json::Value = serde_json::from_str(&body)?;
        let vip = state["xdp"]["vips"]
            .as_array()
            .context("xdp.vips")?
            .iter()
            .find(|v| v["name"] == vip)
            .with_context(|| format!("VIP {vip} in /api/state"))?
            .clone();
        Ok(vip["backends"][0].clone())
    }

    /// Waits until the backend's state satisfies `done`; returns how long that took.
    fn wait_for(
        &self,
        vip: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let backend = self.backend(vip)?;
            if done(&backend) {
                return Ok(start.elapsed());
            }
            ensure!(
                start.elapsed() < BOUND,
                "{vip}: {what} not seen within {BOUND:?}; backend now {backend}\n{}",
                self.balancer.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// How long after `before` (seconds of the UTC day, taken just before the `ip`
    /// command) the balancer logged the VIP's hop resolved to `mac`: its log lines start
    /// with an RFC 3339 UTC timestamp. Includes the `ip` command's own run time.
    fn logged_after(&self, before: f64, vip: &str, mac: &str) -> String {
        let vip = format!("vip={vip} ");
        let mac = format!("mac={mac}");
        self.balancer
            .log()
            .lines()
            .filter(|line| {
                line.contains("next hop resolved") && line.contains(&vip) && line.contains(&mac)
            })
            .filter_map(|line| {
                let clock = line.get(11..26)?;
                let mut parts = clock.split(':');
                let hours: f64 = parts.next()?.parse().ok()?;
                let minutes: f64 = parts.next()?.parse().ok()?;
                let seconds: f64 = parts.next()?.parse().ok()?;
                let at = hours * 3600.0 + minutes * 60.0 + seconds;
                let after = (at - before).rem_euclid(86_400.0);
                (after < 60.0).then_some(after)
            })
            .reduce(f64::min)
            .map_or_else(
                || "n/a".to_owned(),
                |after| format!("{:.1} ms after the command started", after * 1000.0),
            )
    }

    fn answers(&self, vip: SocketAddr) -> anyhow::Result<Vec<String>> {
        self.topology.connect_many(vip, 8, None)
    }
}

/// Now, in seconds since the start of the UTC day (the balancer logs UTC wall-clock time).
fn day_seconds_now() -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    (now.as_secs() % 86_400) as f64 + f64::from(now.subsec_micros()) / 1e6
}

fn vip_of(family: Family) -> (&'static str, SocketAddr) {
    match family {
        Family::V4 => ("web4", SocketAddr::new(VIP4.parse().unwrap(), PORT)),
        Family::V6 => ("web6", SocketAddr::new(VIP6.parse().unwrap(), PORT)),
    }
}

fn mac_is(want: String) -> impl Fn(&serde_json::Value) -> bool {
    move |backend| backend["next_hop"]["mac"].as_str() == Some(want.as_str())
}

#[test]
fn next_hops_follow_kernel_changes_at_once() -> anyhow::Result<()> {
    let setup = setup()?;
    let topology = &setup.topology;
    let lb = topology.lb();
    let dev = topology.lb_interface().to_string();
    let (b1_mac, b2_mac) = (topology.backend_mac(1), topology.backend_mac(2));
    let mut measured = Vec::new();

    for family in [Family::V4, Family::V6] {
        let (name, vip) = vip_of(family);
        let b1 = topology.backend_addr(1, family).to_string();
        let b2 = topology.backend_addr(2, family).to_string();
        setup.wait_for(name, "b1's MAC at start", mac_is(b1_mac.clone()))?;
        let answers = setup.answers(vip)?;
        ensure!(
            answers.iter().all(|a| a == "b1"),
            "{name}: before the change every connection reaches b1: {answers:?}"
        );

        // The neighbour entry of b1 now says b2's MAC.
        let before = day_seconds_now();
        let ip_start = Instant::now();
        lb.ip(&[
            "neigh",
            "replace",
            &b1,
            "lladdr",
            &b2_mac,
            "dev",
            &dev,
            "nud",
            "permanent",
        ])?;
        let ip_took = ip_start.elapsed();
        let took = setup.wait_for(
            name,
            "b2's MAC after `ip neigh replace`",
            mac_is(b2_mac.clone()),
        )?;
        measured.push(format!(
            "{name} neighbour replaced: {took:?} (logged {}; `ip` ran {ip_took:?})",
            setup.logged_after(before, name, &b2_mac)
        ));
        let answers = setup.answers(vip)?;
        ensure!(
            answers.iter().all(|a| a == "b2"),
            "{name}: after the neighbour change every new connection reaches b2: {answers:?}"
        );

        // And back.
        let before = day_seconds_now();
        let ip_start = Instant::now();
        lb.ip(&[
            "neigh",
            "replace",
            &b1,
            "lladdr",
            &b1_mac,
            "dev",
            &dev,
            "nud",
            "permanent",
        ])?;
        let ip_took = ip_start.elapsed();
        let took = setup.wait_for(name, "b1's MAC back", mac_is(b1_mac.clone()))?;
        measured.push(format!(
            "{name} neighbour restored: {took:?} (logged {}; `ip` ran {ip_took:?})",
            setup.logged_after(before, name, &b1_mac)
        ));
        let answers = setup.answers(vip)?;
        ensure!(
            answers.iter().all(|a| a == "b1"),
            "{name}: with the entry restored every connection reaches b1 again: {answers:?}"
        );

        // A host route through b2 as gateway: l2-dsr needs b1 on-link, so the hop goes.
        let prefix = match family {
            Family::V4 => format!("{b1}/32"),
            Family::V6 => format!("{b1}/128"),
        };
        lb.ip(&["route", "add", &prefix, "via", &b2, "dev", &dev])?;
        let took = setup.wait_for(name, "the gateway route refused", |backend| {
            backend["next_hop"].is_null()
                && backend["next_hop_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("on-link"))
        })?;
        measured.push(format!("{name} route via a gateway added: {took:?}"));
        let before = day_seconds_now();
        let ip_start = Instant::now();
        lb.ip(&["route", "del", &prefix, "via", &b2, "dev", &dev])?;
        let ip_took = ip_start.elapsed();
        let took = setup.wait_for(name, "the on-link hop back", mac_is(b1_mac.clone()))?;
        measured.push(format!(
            "{name} route removed: {took:?} (logged {}; `ip` ran {ip_took:?})",
            setup.logged_after(before, name, &b1_mac)
        ));
        let answers = setup.answers(vip)?;
        ensure!(
            answers.iter().all(|a| a == "b1"),
            "{name}: with the route gone every connection reaches b1: {answers:?}"
        );
    }

    // A link change: the MTU of the balancer's interface.
    let (name, _) = vip_of(Family::V4);
    lb.ip(&["link", "set", "dev", &dev, "mtu", "1400"])?;
    let took = setup.wait_for(name, "MTU 1400", |backend| {
        backend["next_hop"]["mtu"].as_u64() == Some(1400)
    })?;
    measured.push(format!("{name} link MTU changed: {took:?}"));
    lb.ip(&["link", "set", "dev", &dev, "mtu", "1500"])?;
    setup.wait_for(name, "MTU 1500", |backend| {
        backend["next_hop"]["mtu"].as_u64() == Some(1500)
    })?;

    // What one look costs: the measurements above include up to one of these.
    let start = Instant::now();
    setup.backend(name)?;
    let one_look = start.elapsed();
    for line in &measured {
        println!("next-hop change seen in /api/state after {line}");
    }
    println!("(one /api/state request alone takes {one_look:?})");
    let log = setup.balancer.log();
    ensure!(
        !log.contains("change notifications"),
        "the balancer ran without change notifications:\n{log}"
    );
    Ok(())
}
