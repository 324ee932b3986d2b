//! A restart of `balancer run` with `xdp.pin_path` loses no packet (issue 18, "A restart
//! that loses nothing").
//!
//! Through a VIP pair (TCP over IPv4 and IPv6, with health checks) and a UDP VIP, forwarded
//! with `ipip` in one test and `l2-dsr` in the other,
//! the client keeps one UDP flow at 1 kHz (numbered datagrams, echoed by the backend) and
//! eight TCP echo flows busy while the balancer is restarted five times the way an operator
//! does it: SIGTERM, wait for the exit, start it again. The pinned program forwards while
//! no balancer runs; the new one takes the pinned maps and link over.
//!
//! Asserted: no datagram lost, no TCP flow broken (each one answers every ping, on the
//! backend it started on). Printed, not asserted (timings depend on the machine): per
//! restart, how long the balancer was away, datagrams lost, the longest TCP stall, and how
//! much `next_hop_unresolved` rose.

use std::{
    fs,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use balancer_common::{Counter, MAP_REASON_STATS, PacketReason};
use balancer_tests::{
    BalancerProcess, L4Topology, LongLived,
    l4topology::{PinDir, UDP_VIP4, VIP_ADMIN as ADMIN, VIP_PORT as PORT, VIP4, VIP6},
    unique_suffix,
};

const RESTARTS: usize = 5;
/// TCP echo flows per TCP VIP.
const TCP_FLOWS: usize = 4;
/// One datagram per millisecond.
const UDP_INTERVAL: Duration = Duration::from_millis(1);
/// Pause between two pings of one TCP flow.
const PING_PAUSE: Duration = Duration::from_millis(10);
/// A ping unanswered for this long breaks its flow (a stall shorter than this is measured).
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Traffic on the new balancer before the next restart: its first next-hop pass and
/// health checks fall in it.
const SETTLE: Duration = Duration::from_millis(1500);
/// How long replies may still arrive after the last datagram was sent.
const UDP_DRAIN: Duration = Duration::from_secs(1);

fn config(topology: &L4Topology, forward: &str, pin_dir: &Path) -> String {
    topology.vips_config(forward, pin_dir, &[1, 1, 1])
}

/// A scratch directory removed on drop.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Field order is drop order: the balancer stops before the pins go, the namespaces last.
struct Setup {
    balancer: Option<BalancerProcess>,
    _decap: Vec<BalancerProcess>,
    pins: PinDir,
    config_path: PathBuf,
    _dir: ScratchDir,
    topology: L4Topology,
}

fn setup(tag: &str, forward: &str) -> anyhow::Result<Setup> {
    let mut topology = L4Topology::new(tag, 3)?;
    for vip in [VIP4, VIP6, UDP_VIP4] {
        topology.add_vip(vip.parse()?)?;
    }
    topology.start_name_servers(PORT)?;
    topology.attach_pass_on_lb_peer()?;
    let dir = ScratchDir(std::env::temp_dir().join(format!("balancer-{tag}-{}", unique_suffix())));
    fs::create_dir_all(&dir.0)?;
    // `ipip` backends strip the outer header with `balancer decap`; `l2-dsr` ones need nothing.
    let decap = if forward == "ipip" {
        topology.start_decaps(&dir.0)?
    } else {
        Vec::new()
    };
    let pins = PinDir::new(tag);
    let config_path = dir.0.join("balancer.toml");
    fs::write(&config_path, config(&topology, forward, &pins.0))?;
    let balancer = BalancerProcess::start(topology.lb(), &config_path, ADMIN)?;
    Ok(Setup {
        balancer: Some(balancer),
        _decap: decap,
        pins,
        config_path,
        _dir: dir,
        topology,
    })
}

impl Setup {
    fn balancer(&self) -> &BalancerProcess {
        self.balancer.as_ref().expect("balancer running")
    }

    /// Waits until every backend of every VIP is up with a resolved next hop.
    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.balancer().admin_get("/api/state")?;
            ensure!(status == 200, "/api/state answered {status}: {body}");
            let state: serde_json::Value = serde_json::from_str(&body)?;
            let backends: Vec<&serde_json::Value> = state["xdp"]["vips"]
                .as_array()
                .context("xdp.vips in /api/state")?
                .iter()
                .flat_map(|vip| vip["backends"].as_array().into_iter().flatten())
                .collect();
            let ready = backends.len() == 9
                && backends
                    .iter()
                    .all(|b| b["state"] == "up" && !b["next_hop"].is_null());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("backends not all up and resolved within 20 s: {backends:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `next_hop_unresolved` packets so far, from the pinned counters (they outlive the
    /// process, so a restart's whole window is counted).
    fn next_hop_unresolved(&self) -> anyhow::Result<u64> {
        let path = self.pins.0.join(MAP_REASON_STATS);
        let map = aya::maps::MapData::from_pin(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let counters: aya::maps::PerCpuArray<_, Counter> =
            aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(map))?;
        let per_cpu = counters.get(&(PacketReason::NextHopUnresolved as u32), 0)?;
        Ok(per_cpu.iter().map(|c| c.packets).sum())
    }
}

/// One TCP flow's pings: when each was sent and how long its echo took.
type Pings = Vec<(Instant, Duration)>;

/// The client's traffic, running on threads until [`Traffic::finish`] (or drop).
struct Traffic {
    stop: Arc<AtomicBool>,
    started: Instant,
    udp_sender: Option<JoinHandle<anyhow::Result<u64>>>,
    udp_receiver: Option<JoinHandle<anyhow::Result<UdpEchoes>>>,
    tcp: Vec<(String, Option<JoinHandle<anyhow::Result<Pings>>>)>,
}

/// What came back of the numbered datagrams.
struct UdpEchoes {
    received: Vec<bool>,
    backends: Vec<String>,
}

impl Traffic {
    fn start(topology: &L4Topology) -> anyhow::Result<Traffic> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut flows: Vec<LongLived> = Vec::new();
        for vip in [VIP4, VIP6] {
            let vip = SocketAddr::new(vip.parse()?, PORT);
            for _ in 0..TCP_FLOWS {
                let mut flow = topology.open_long_lived(vip)?;
                flow.set_ping_timeout(PING_TIMEOUT)?;
                flow.ping()?;
                flows.push(flow);
            }
        }
        let udp_vip = SocketAddr::new(UDP_VIP4.parse()?, PORT);
        let socket = topology
            .client()
            .run(move || -> anyhow::Result<UdpSocket> {
                let socket = UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))?;
                socket.connect(udp_vip)?;
                socket.set_read_timeout(Some(Duration::from_millis(100)))?;
                Ok(socket)
            })??;
        let started = Instant::now();
        let receiver_socket = socket.try_clone()?;
        let sender_stop = stop.clone();
        let udp_sender = std::thread::spawn(move || send_numbered(&socket, started, &sender_stop));
        let receiver_stop = stop.clone();
        let udp_receiver =
            std::thread::spawn(move || receive_echoes(&receiver_socket, &receiver_stop));
        let tcp = flows
            .into_iter()
            .map(|flow| {
                let name = format!("{} from {}", flow.backend(), describe(&flow));
                let stop = stop.clone();
                (
                    name,
                    Some(std::thread::spawn(move || ping_until(flow, &stop))),
                )
            })
            .collect();
        Ok(Traffic {
            stop,
            started,
            udp_sender: Some(udp_sender),
            udp_receiver: Some(udp_receiver),
            tcp,
        })
    }

    /// Stops sending, collects what every thread saw.
    fn finish(mut self) -> anyhow::Result<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = join(self.udp_sender.take())?.context("UDP sender")?;
        let echoes = join(self.udp_receiver.take())?.context("UDP receiver")?;
        let mut tcp = Vec::new();
        for (name, handle) in &mut self.tcp {
            tcp.push((name.clone(), join(handle.take())?));
        }
        Ok(Outcome {
            started: self.started,
            sent,
            echoes,
            tcp,
        })
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn join<T>(handle: Option<JoinHandle<T>>) -> anyhow::Result<T> {
    match handle.context("joined twice")?.join() {
        Ok(value) => Ok(value),
        Err(_) => bail!("a traffic thread panicked"),
    }
}

fn describe(flow: &LongLived) -> String {
    flow.local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string())
}

/// Datagram N goes out at `started + N ms`, as `echo N`; returns how many were sent.
fn send_numbered(socket: &UdpSocket, started: Instant, stop: &AtomicBool) -> anyhow::Result<u64> {
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = started + UDP_INTERVAL * u32::try_from(seq)?;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        socket
            .send(format!("echo {seq}\n").as_bytes())
            .with_context(|| format!("sending datagram {seq}"))?;
        seq += 1;
    }
    Ok(seq)
}

/// Marks every echoed number until `UDP_DRAIN` after `stop`.
fn receive_echoes(socket: &UdpSocket, stop: &AtomicBool) -> anyhow::Result<UdpEchoes> {
    let mut echoes = UdpEchoes {
        received: Vec::new(),
        backends: Vec::new(),
    };
    let mut stopped_at: Option<Instant> = None;
    let mut buf = [0u8; 512];
    loop {
        if stopped_at.is_none() && stop.load(Ordering::Relaxed) {
            stopped_at = Some(Instant::now());
        }
        if stopped_at.is_some_and(|at| at.elapsed() > UDP_DRAIN) {
            return Ok(echoes);
        }
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(err) => return Err(err).context("receiving echoes"),
        };
        let reply = String::from_utf8_lossy(&buf[..n]);
        let (backend, seq) = reply
            .trim()
            .split_once(' ')
            .with_context(|| format!("echo {reply:?} is not `NAME SEQ`"))?;
        let seq: usize = seq.parse().with_context(|| format!("echo {reply:?}"))?;
        if echoes.received.len() <= seq {
            echoes.received.resize(seq + 1, false);
        }
        echoes.received[seq] = true;
        if !echoes.backends.iter().any(|b| b == backend) {
            echoes.backends.push(backend.to_string());
        }
    }
}

/// Pings until `stop`; the first failure ends the flow (and the test).
fn ping_until(mut flow: LongLived, stop: &AtomicBool) -> anyhow::Result<Pings> {
    let mut pings = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        flow.ping()?;
        pings.push((sent, sent.elapsed()));
        std::thread::sleep(PING_PAUSE);
    }
    Ok(pings)
}

/// Everything the traffic saw.
struct Outcome {
    started: Instant,
    sent: u64,
    echoes: UdpEchoes,
    tcp: Vec<(String, anyhow::Result<Pings>)>,
}

impl Outcome {
    /// Numbers of the datagrams sent in `[from, to)` that never came back.
    fn udp_lost(&self, from: Instant, to: Instant) -> Vec<u64> {
        let millis = |at: Instant| {
            u64::try_from(at.saturating_duration_since(self.started).as_millis()).unwrap_or(0)
        };
        (millis(from)..millis(to).min(self.sent))
            .filter(|seq| {
                !usize::try_from(*seq)
                    .ok()
                    .and_then(|i| self.echoes.received.get(i))
                    .copied()
                    .unwrap_or(false)
            })
            .collect()
    }

    /// The longest echo wait of any TCP ping sent in `[from, to)`.
    fn longest_stall(&self, from: Instant, to: Instant) -> Duration {
        self.tcp
            .iter()
            .filter_map(|(_, pings)| pings.as_ref().ok())
            .flatten()
            .filter(|(sent, _)| *sent >= from && *sent < to)
            .map(|(_, waited)| *waited)
            .max()
            .unwrap_or_default()
    }
}

/// The longest run of consecutive numbers in `lost` (sorted).
fn longest_run(lost: &[u64]) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for (i, seq) in lost.iter().enumerate() {
        run = if i > 0 && lost[i - 1] + 1 == *seq {
            run + 1
        } else {
            1
        };
        longest = longest.max(run);
    }
    longest
}

/// One restart, as the test saw it.
struct Restart {
    /// From SIGTERM to the new process answering its admin API.
    from: Instant,
    /// The end of the settling time after it.
    to: Instant,
    away: Duration,
    unresolved: u64,
}

fn restart(setup: &mut Setup) -> anyhow::Result<Restart> {
    let before = setup.next_hop_unresolved()?;
    let from = Instant::now();
    let status = setup.balancer.take().context("balancer running")?.stop()?;
    ensure!(status.success(), "balancer exited with {status}");
    let balancer = BalancerProcess::start(setup.topology.lb(), &setup.config_path, ADMIN)?;
    let away = from.elapsed();
    ensure!(
        balancer.log().contains("took over the pinned XDP link"),
        "the restarted balancer did not take over the pinned link:\n{}",
        balancer.log()
    );
    setup.balancer = Some(balancer);
    std::thread::sleep(SETTLE);
    let unresolved = setup.next_hop_unresolved()? - before;
    Ok(Restart {
        from,
        to: Instant::now(),
        away,
        unresolved,
    })
}

fn exercise(setup: &mut Setup, forward: &str) -> anyhow::Result<()> {
    setup.wait_ready()?;
    let traffic = Traffic::start(&setup.topology)?;
    // A second of steady traffic first: losses there would not be the restarts' doing.
    std::thread::sleep(Duration::from_secs(1));
    let mut restarts = Vec::new();
    for round in 1..=RESTARTS {
        restarts.push(restart(setup).with_context(|| format!("restart {round}"))?);
    }
    let outcome = traffic.finish()?;

    // One print: the two tests run side by side and their lines must not interleave.
    let mut report = format!(
        "{forward}: restart | balancer away | UDP lost (longest run) | longest TCP stall | next_hop_unresolved\n"
    );
    for (round, restart) in restarts.iter().enumerate() {
        let lost = outcome.udp_lost(restart.from, restart.to);
        report += &format!(
            "{forward}: {:>7} | {:>10} ms | {:>9} ({:>4})        | {:>14} ms | +{}\n",
            round + 1,
            restart.away.as_millis(),
            lost.len(),
            longest_run(&lost),
            outcome.longest_stall(restart.from, restart.to).as_millis(),
            restart.unresolved
        );
    }
    let all_lost = outcome.udp_lost(outcome.started, Instant::now());
    report += &format!(
        "{forward}: UDP: {} datagrams sent at 1 kHz, {} lost (longest run {}), echoed by {:?}\n",
        outcome.sent,
        all_lost.len(),
        longest_run(&all_lost),
        outcome.echoes.backends
    );
    report += &format!(
        "{forward}: TCP: {} echo flows, longest stall over the whole run {} ms",
        outcome.tcp.len(),
        outcome
            .longest_stall(outcome.started, Instant::now())
            .as_millis()
    );
    println!("{report}");
    let mut failures = Vec::new();
    if !all_lost.is_empty() {
        failures.push(format!(
            "{} of {} datagrams lost (first {:?})",
            all_lost.len(),
            outcome.sent,
            &all_lost[..all_lost.len().min(10)]
        ));
    }
    if outcome.echoes.backends.len() != 1 {
        failures.push(format!(
            "the UDP flow was answered by {:?}: it moved",
            outcome.echoes.backends
        ));
    }
    for (name, pings) in &outcome.tcp {
        if let Err(err) = pings {
            failures.push(format!("TCP flow to {name} broke: {err:#}"));
        }
    }
    ensure!(
        failures.is_empty(),
        "restarts lost traffic:\n{}",
        failures.join("\n")
    );
    Ok(())
}

fn restarts_lose_nothing(tag: &str, forward: &str) {
    let mut setup = setup(tag, forward).expect("topology and balancer start");
    if let Err(err) = exercise(&mut setup, forward) {
        let log = setup
            .balancer
            .as_ref()
            .map(BalancerProcess::log)
            .unwrap_or_default();
        panic!("{forward}: {err:#}\nbalancer log:\n{log}");
    }
}

#[test]
fn ipip_restarts_with_pinned_maps_lose_nothing() {
    restarts_lose_nothing("rsti", "ipip");
}

#[test]
fn l2_dsr_restarts_with_pinned_maps_lose_nothing() {
    restarts_lose_nothing("rstl", "l2-dsr");
}

#[test]
fn longest_run_counts_consecutive_numbers() {
    assert_eq!(longest_run(&[]), 0);
    assert_eq!(longest_run(&[7]), 1);
    assert_eq!(longest_run(&[1, 2, 3, 7, 8]), 3);
    assert_eq!(longest_run(&[1, 3, 5]), 1);
}
