//! The L4 data plane end to end: a client, a real `balancer run` with XDP on
//! its veth, and three backends on one L2 segment running a real name server.
//! Replies go straight from the backends to the client (DSR).
//!
//! For `ipip` the backends run `balancer decap`; for `l2-dsr` they only carry
//! the VIP on `lo`. Each test covers IPv4 and IPv6 and ≥ 300 connections per
//! family: the spread follows the weights, established flows never move when
//! another backend leaves, joins or drains, a dead server goes down after its
//! checks fail, and a restarted balancer keeps an open connection alive.

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use balancer_common::{FlowEvent, FlowHashKey, MAP_FLOW_HASH_KEY, MAP_FLOW_STATS, MAP_FLOWS};
use balancer_tests::{
    BalancerProcess, Family, L4Topology, LongLived,
    l4topology::{PinDir, UDP_VIP4, VIP_ADMIN as ADMIN, VIP_PORT as PORT, VIP4, VIP6},
    run_in, unique_suffix,
};

/// Weights of b1, b2, b3.
const WEIGHTS: [u32; 3] = [1, 1, 2];
const CONNECTIONS: usize = 300;

fn config(topology: &L4Topology, forward: &str, pin_dir: &Path) -> String {
    topology.vips_config(forward, pin_dir, &WEIGHTS)
}

struct Setup {
    topology: L4Topology,
    balancer: Option<BalancerProcess>,
    _decap: Vec<BalancerProcess>,
    config_path: PathBuf,
    pins: PinDir,
    _dir: tempdir::Dir,
}

mod tempdir {
    use std::path::{Path, PathBuf};

    /// A scratch directory removed on drop.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(tag: &str) -> anyhow::Result<Dir> {
            let path =
                std::env::temp_dir().join(format!("balancer-{tag}-{}", super::unique_suffix()));
            std::fs::create_dir_all(&path)?;
            Ok(Dir(path))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn setup(tag: &str, forward: &str) -> anyhow::Result<Setup> {
    let mut topology = L4Topology::new(tag, 3)?;
    for vip in [VIP4, VIP6, UDP_VIP4] {
        topology.add_vip(vip.parse()?)?;
    }
    topology.start_name_servers(PORT)?;
    topology.attach_pass_on_lb_peer()?;
    let dir = tempdir::Dir::new(tag)?;
    let decap = if forward == "ipip" {
        topology.start_decaps(dir.path())?
    } else {
        Vec::new()
    };
    let pins = PinDir::new(tag);
    let config_path = dir.path().join("balancer.toml");
    fs::write(&config_path, config(&topology, forward, &pins.0))?;
    let balancer = BalancerProcess::start(topology.lb(), &config_path, ADMIN)?;
    Ok(Setup {
        topology,
        balancer: Some(balancer),
        _decap: decap,
        config_path,
        pins,
        _dir: dir,
    })
}

impl Setup {
    fn balancer(&self) -> &BalancerProcess {
        self.balancer.as_ref().expect("balancer running")
    }

    /// Backend states of a VIP from `/api/state`, by backend address.
    fn states(&self, vip: &str) -> anyhow::Result<BTreeMap<IpAddr, String>> {
        let (status, body) = self.balancer().admin_get("/api/state")?;
        ensure!(status == 200, "/api/state answered {status}: {body}");
        let state: serde_json::Value = serde_json::from_str(&body)?;
        let vips = state["xdp"]["vips"].as_array().context("xdp.vips")?;
        let entry = vips
            .iter()
            .find(|v| v["name"] == vip)
            .with_context(|| format!("VIP {vip} in /api/state"))?;
        entry["backends"]
            .as_array()
            .context("backends")?
            .iter()
            .map(|b| {
                Ok((
                    b["address"].as_str().context("address")?.parse()?,
                    b["state"].as_str().context("state")?.to_string(),
                ))
            })
            .collect()
    }

    fn wait_state(&self, vip: &str, backend: IpAddr, want: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let states = self.states(vip)?;
            if states.get(&backend).map(String::as_str) == Some(want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{vip} backend {backend} never became {want}: {states:?}\n{}",
                    self.balancer().log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_all_up(&self, vip: &str) -> anyhow::Result<()> {
        for k in 1..=3 {
            let family = if vip == "web6" {
                Family::V6
            } else {
                Family::V4
            };
            self.wait_state(vip, self.topology.backend_addr(k, family), "up")?;
        }
        Ok(())
    }

    fn admin(&self, vip: &str, backend: IpAddr, action: &str) -> anyhow::Result<()> {
        let (status, body) = self
            .balancer()
            .admin_post(&format!("/api/vips/{vip}/backends/{backend}/{action}"))?;
        ensure!(status == 200, "{action} {vip}/{backend}: {status} {body}");
        Ok(())
    }
}

/// The value of the metric line starting with `prefix` (0 when absent).
fn metric_value(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

fn counts(names: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for name in names {
        *counts.entry(name.clone()).or_insert(0) += 1;
    }
    counts
}

/// Each backend's share is within 12 points of its weighted share (over 4 standard
/// deviations at 300 connections, so the check does not flake).
fn assert_spread(names: &[String]) {
    let total_weight: u32 = WEIGHTS.iter().sum();
    let counts = counts(names);
    for (k, weight) in WEIGHTS.iter().enumerate() {
        let got =
            counts.get(&format!("b{}", k + 1)).copied().unwrap_or(0) as f64 / names.len() as f64;
        let want = f64::from(*weight) / f64::from(total_weight);
        assert!(
            (got - want).abs() < 0.12,
            "b{} got {:.1}% of {} connections, weight says {:.1}%: {counts:?}",
            k + 1,
            got * 100.0,
            names.len(),
            want * 100.0
        );
    }
}

fn open_spread(
    topology: &L4Topology,
    vip: SocketAddr,
    count: usize,
) -> anyhow::Result<Vec<LongLived>> {
    (0..count).map(|_| topology.open_long_lived(vip)).collect()
}

/// Pings every connection whose backend is not `except`.
fn ping_all_but(conns: &mut [LongLived], except: &str) -> anyhow::Result<()> {
    for conn in conns.iter_mut().filter(|c| c.backend() != except) {
        conn.ping()?;
    }
    Ok(())
}

fn exercise_family(setup: &mut Setup, family: Family) -> anyhow::Result<()> {
    let (vip_name, vip_addr) = match family {
        Family::V4 => ("web4", VIP4),
        Family::V6 => ("web6", VIP6),
    };
    let vip = SocketAddr::new(vip_addr.parse()?, PORT);
    let addresses: Vec<IpAddr> = (1..=3)
        .map(|k| setup.topology.backend_addr(k, family))
        .collect();
    let backend = |k: usize| addresses[k - 1];
    setup.wait_all_up(vip_name)?;

    // Spread over ≥ 300 real connections, every one completes.
    let names = setup.topology.connect_many(vip, CONNECTIONS, None)?;
    assert_spread(&names);
    // It was the XDP program: frames went out again with XDP_TX, counted per backend.
    let (_, metrics) = setup.balancer().admin_get("/metrics")?;
    let tx = format!("balancer_xdp_packets_total{{vip=\"{vip_name}\",action=\"tx\"}} ");
    ensure!(
        metric_value(&metrics, &tx) >= CONNECTIONS as u64 * 3,
        "too few XDP_TX packets for {vip_name}:\n{metrics}"
    );
    for k in 1..=3 {
        let line = format!(
            "balancer_xdp_backend_packets_total{{vip=\"{vip_name}\",backend=\"{}\"}} ",
            backend(k)
        );
        ensure!(
            metric_value(&metrics, &line) > 0,
            "no packets counted for backend {k}"
        );
    }

    // Established flows stay put while another backend leaves, joins and drains.
    let mut conns = open_spread(&setup.topology, vip, 24)?;
    let on = |conns: &[LongLived], name: &str| conns.iter().filter(|c| c.backend() == name).count();
    ensure!(
        on(&conns, "b1") > 0 && on(&conns, "b2") > 0,
        "24 connections did not reach b1 and b2"
    );

    setup.admin(vip_name, backend(1), "disable")?;
    let names = setup.topology.connect_many(vip, 60, None)?;
    ensure!(
        !names.contains(&"b1".to_string()),
        "disabled b1 got new connections: {:?}",
        counts(&names)
    );
    ping_all_but(&mut conns, "b1")?;

    setup.admin(vip_name, backend(1), "enable")?;
    let names = setup.topology.connect_many(vip, 90, None)?;
    ensure!(
        names.contains(&"b1".to_string()),
        "re-enabled b1 got no connection"
    );
    ping_all_but(&mut conns, "b1")?;

    // Draining: b2's open connections keep working, new ones avoid it.
    setup.admin(vip_name, backend(2), "drain")?;
    let names = setup.topology.connect_many(vip, 60, None)?;
    ensure!(
        !names.contains(&"b2".to_string()),
        "draining b2 got new connections: {:?}",
        counts(&names)
    );
    ping_all_but(&mut conns, "b1")?;
    ensure!(
        conns.iter().any(|c| c.backend() == "b2"),
        "no long-lived connection on b2 to prove draining"
    );
    setup.admin(vip_name, backend(2), "enable")?;

    // A dead server is taken down by its checks; nothing new goes there.
    let k_dead = 3;
    setup.topology.stop_name_server(k_dead)?;
    setup.wait_state(vip_name, backend(k_dead), "down")?;
    let names = setup.topology.connect_many(vip, 60, None)?;
    ensure!(
        !names.contains(&"b3".to_string()),
        "down b3 got connections: {:?}",
        counts(&names)
    );
    ping_all_but(&mut conns, "b3")?;
    setup.topology.start_name_server(k_dead)?;
    setup.wait_state(vip_name, backend(k_dead), "up")?;
    Ok(())
}

/// A restart of `balancer` keeps an open connection alive (pinned maps, and
/// the pinned link is taken over atomically), and forwarding goes on while
/// the userspace process is down.
/// The connection table's hash key as pinned.
fn pinned_flow_hash_key(setup: &Setup) -> anyhow::Result<FlowHashKey> {
    let path = setup.pins.0.join(MAP_FLOW_HASH_KEY);
    let map = aya::maps::MapData::from_pin(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let keys: aya::maps::Array<_, FlowHashKey> =
        aya::maps::Array::try_from(aya::maps::Map::Array(map))?;
    Ok(keys.get(&0, 0)?)
}

fn exercise_restart(setup: &mut Setup) -> anyhow::Result<()> {
    let vip = SocketAddr::new(VIP4.parse()?, PORT);
    let secret = pinned_flow_hash_key(setup)?;
    ensure!(
        !secret.is_unset(),
        "balancer run left the table's hash key unset"
    );
    let mut conn = setup.topology.open_long_lived(vip)?;
    conn.ping()?;
    let status = setup.balancer.as_mut().expect("running").stop()?;
    ensure!(status.success(), "balancer exited with {status}");
    setup.balancer = None;
    conn.ping().context("while balancer was stopped")?;
    let names = setup
        .topology
        .connect_many(vip, 10, None)
        .context("new connections while stopped")?;
    ensure!(names.len() == 10);

    let balancer = BalancerProcess::start(setup.topology.lb(), &setup.config_path, ADMIN)?;
    ensure!(
        balancer.log().contains("took over the pinned XDP link"),
        "restart did not take over the pinned link:\n{}",
        balancer.log()
    );
    setup.balancer = Some(balancer);
    ensure!(
        pinned_flow_hash_key(setup)? == secret,
        "the restarted balancer changed the pinned table's hash key: its flows would be lost"
    );
    conn.ping().context("after the restart")?;
    setup.wait_all_up("web4")?;
    conn.ping()
        .context("after the first health checks of the new process")?;
    setup.topology.connect_many(vip, 30, None)?;
    Ok(())
}

fn exercise_udp(setup: &Setup) -> anyhow::Result<()> {
    let vip = SocketAddr::new(UDP_VIP4.parse()?, PORT);
    let names = setup.topology.udp_names(vip, 60)?;
    ensure!(
        counts(&names).len() >= 2,
        "60 UDP flows all went to one backend: {:?}",
        counts(&names)
    );
    Ok(())
}

/// `balancer unload` with the test's config.
fn run_unload(setup: &Setup) -> anyhow::Result<()> {
    let binary = balancer_tests::balancer_binary();
    run_in(
        &setup.topology.lb().path(),
        &binary.to_string_lossy(),
        &["unload", "--config", &setup.config_path.to_string_lossy()],
    )?;
    Ok(())
}

/// Starts a balancer that must refuse to start; its error, after `clean_up` ran.
fn refused_start(
    setup: &Setup,
    what: &str,
    clean_up: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let started = BalancerProcess::start(setup.topology.lb(), &setup.config_path, ADMIN);
    clean_up()?;
    match started {
        Ok(_) => bail!("balancer started on {what}"),
        Err(err) => Ok(format!("{err:#}")),
    }
}

fn ensure_names_pin_and_way_out(message: &str, refusal: &str) -> anyhow::Result<()> {
    ensure!(
        message.contains(refusal) && message.contains("balancer unload"),
        "the refusal does not name the pin and the way out: {message}"
    );
    Ok(())
}

fn unload(setup: &mut Setup) -> anyhow::Result<()> {
    if let Some(mut balancer) = setup.balancer.take() {
        balancer.stop()?;
    }
    run_unload(setup)?;
    let link = run_in(
        &setup.topology.lb().path(),
        "ip",
        &["link", "show", "veth0"],
    )?;
    ensure!(
        !link.contains("xdp"),
        "XDP still attached after unload: {link}"
    );
    refuses_pin_with_other_layout(setup)?;
    refuses_table_without_its_key(setup)?;
    replaces_counters_of_another_build(setup)
}

/// A connection table pinned by a balancer with another entry layout (here the
/// LRU hash of earlier releases) is refused by name at start, not reused.
fn refuses_pin_with_other_layout(setup: &mut Setup) -> anyhow::Result<()> {
    fs::create_dir_all(&setup.pins.0)?;
    let flows = setup.pins.0.join(MAP_FLOWS);
    let flows_arg = flows.to_string_lossy();
    run_in(
        &setup.topology.lb().path(),
        "bpftool",
        &[
            "map", "create", &flows_arg, "type", "lru_hash", "key", "40", "value", "16", "entries",
            "1024", "name", "FLOWS",
        ],
    )?;
    let message = refused_start(setup, "a pinned connection table of another layout", || {
        Ok(fs::remove_file(&flows)?)
    })?;
    ensure_names_pin_and_way_out(
        &message,
        &format!("{}: the pinned map's entries are 16 bytes", flows.display()),
    )
}

/// A connection table pinned without its hash key beside it (by a balancer that hashed
/// flows unkeyed) is refused by name at start: its flows sit in other sets.
fn refuses_table_without_its_key(setup: &mut Setup) -> anyhow::Result<()> {
    let mut balancer = BalancerProcess::start(setup.topology.lb(), &setup.config_path, ADMIN)?;
    balancer.stop()?;
    fs::remove_file(setup.pins.0.join(MAP_FLOW_HASH_KEY))?;
    let message = refused_start(
        setup,
        "a pinned connection table without its hash key",
        || run_unload(setup),
    )?;
    ensure_names_pin_and_way_out(
        &message,
        &format!(
            "{}: the pinned connection table has no {MAP_FLOW_HASH_KEY} beside it",
            setup.pins.0.join(MAP_FLOWS).display()
        ),
    )?;
    ensure!(
        !setup.pins.0.join(MAP_FLOWS).exists(),
        "balancer unload left the connection table pinned"
    );
    Ok(())
}

/// Flow-event counters pinned by a build that counted fewer events (before `grace_hit`) are
/// replaced at start, not refused: they are counters, not state flows depend on.
fn replaces_counters_of_another_build(setup: &mut Setup) -> anyhow::Result<()> {
    fs::create_dir_all(&setup.pins.0)?;
    let stats = setup.pins.0.join(MAP_FLOW_STATS);
    let stats_arg = stats.to_string_lossy();
    let older = (FlowEvent::COUNT - 1).to_string();
    run_in(
        &setup.topology.lb().path(),
        "bpftool",
        &[
            "map",
            "create",
            &stats_arg,
            "type",
            "percpu_array",
            "key",
            "4",
            "value",
            "8",
            "entries",
            &older,
            "name",
            "FLOW_STATS",
        ],
    )?;
    let mut balancer = BalancerProcess::start(setup.topology.lb(), &setup.config_path, ADMIN)
        .context("start over flow-event counters pinned by an older build")?;
    let shown = run_in(
        &setup.topology.lb().path(),
        "bpftool",
        &["-j", "map", "show", "pinned", &stats_arg],
    );
    balancer.stop()?;
    run_unload(setup)?;
    let shown: serde_json::Value = serde_json::from_str(&shown?)?;
    ensure!(
        shown["max_entries"] == FlowEvent::COUNT,
        "the pinned FLOW_STATS was not replaced by one of {} entries: {shown}",
        FlowEvent::COUNT
    );
    Ok(())
}

fn end_to_end(tag: &str, forward: &str) {
    let mut setup = setup(tag, forward).expect("topology and balancer start");
    let result = exercise_family(&mut setup, Family::V4)
        .and_then(|()| exercise_family(&mut setup, Family::V6))
        .and_then(|()| exercise_udp(&setup))
        .and_then(|()| exercise_restart(&mut setup))
        .and_then(|()| unload(&mut setup));
    if let Err(err) = result {
        let log = setup
            .balancer
            .as_ref()
            .map(BalancerProcess::log)
            .unwrap_or_default();
        panic!("{err:#}\nbalancer log:\n{log}");
    }
}

#[test]
fn ipip_forwarding_end_to_end() {
    end_to_end("ipip", "ipip");
}

#[test]
fn l2_dsr_forwarding_end_to_end() {
    end_to_end("l2dsr", "l2-dsr");
}
