//! Several balancer hosts behind an ECMP router lose one host (issue 18, "scale-out"), on the
//! topology of `balancer_tests::ecmp`: a client with four addresses, a router running BIRD
//! (ECMP over every announcing host, 5-tuple hash, BGP hold time 3 s), three hosts each running
//! `balancer run` (XDP, an `ipip` VIP, `[announce]`) and BIRD, and backends running
//! `balancer decap` and a TCP echo server on the VIP.
//!
//! - `sigterm_*` / `hard_kill_*`: 200 long-lived TCP connections through the VIP (spread over
//!   the three hosts; each host's `miss` count must equal the flows the router's hash sends it)
//!   each echo a line every 50–100 ms; lb1 stops: SIGTERM (withdraw, `withdraw_delay`, exit),
//!   or dies (its traffic dropped by nftables, balancer and BIRD killed with SIGKILL: the router
//!   learns from its hold timer). Asserted: every connection keeps working (all backends stay
//!   up). Printed: the longest stall per connection.
//! - `backend_change_*`: at the moment lb1 stops, a fourth backend joins the VIP on the other
//!   hosts (an operator's `enable`), so the Maglev table changes. Asserted: with the default
//!   `flow_grace`, at least 99 % of the flows ECMP moved to another host keep their backend;
//!   with `flow_grace = "0s"`, at least 5 % of them break (about a quarter of the slots
//!   change). Flows that stay on their host never break (connection table).
//! - `every_host_picks_the_same_backend`: 10 000 new flows through each host's attached
//!   program (BPF_PROG_TEST_RUN on the program the kernel runs on `up0`, with that ingress
//!   interface): every host must pick the same backend for every flow.
//!
//! Needs root, `bird` (bird2) and `nft` (nftables), as `cargo xtask setup` installs them.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use balancer_tests::{
    ecmp::{EchoLoad, EcmpTopology, FlowReport, PORT, VIP, backend_addr, echo_period},
    traffic::internet_checksum,
};

const HOSTS: usize = 3;
const FLOWS: usize = 200;
/// The host that is lost: the first next hop of the router's route, so that the router's
/// hash-threshold split moves flows between the hosts that stay too (lb2's upper sixth goes
/// to lb3), not only the lost host's.
const VICTIM: usize = 1;
/// An echo unanswered for this long breaks its flow (a shorter stall is measured).
const ECHO_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the router may take to change its route.
const ROUTE_WAIT: Duration = Duration::from_secs(20);

/// The topology with `backends` backends of which the first `enabled` take flows (the others
/// disabled by the operator API on every host), and the hosts announcing.
fn setup(
    tag: &str,
    backends: usize,
    enabled: usize,
    extra_xdp: &str,
) -> anyhow::Result<EcmpTopology> {
    let mut topology = EcmpTopology::new(tag, HOSTS, backends)?;
    let configs: Vec<String> = (1..=HOSTS)
        .map(|k| topology.forwarding_config(k, backends, extra_xdp))
        .collect();
    topology.start_hosts(|k| configs[k - 1].clone())?;
    for k in 1..=HOSTS {
        for b in enabled + 1..=backends {
            topology.backend_action(k, b, "disable")?;
        }
        topology.wait_backends(k, enabled)?;
    }
    topology.wait_next_hops(HOSTS, ROUTE_WAIT)?;
    Ok(topology)
}

/// Opens the long-lived flows; returns them with the host the router sends each to. Checks
/// that every host got a share and that each host's XDP program saw exactly the new flows
/// the router's hash gave it (its connection-table misses), so the per-flow host is right.
fn open_flows(
    topology: &EcmpTopology,
) -> anyhow::Result<(Vec<balancer_tests::ecmp::EchoFlow>, Vec<usize>)> {
    let misses = |k| topology.flow_event(k, "miss");
    let before = (1..=HOSTS)
        .map(misses)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let flows = topology.open_flows(FLOWS, ECHO_TIMEOUT)?;
    let hosts = flows
        .iter()
        .map(|flow| topology.host_of(flow.local()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let after = (1..=HOSTS)
        .map(misses)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let seen: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let routed: Vec<u64> = (1..=HOSTS)
        .map(|k| hosts.iter().filter(|&&h| h == k).count() as u64)
        .collect();
    eprintln!("scale-out figure: {FLOWS} connections over {HOSTS} hosts: {routed:?}");
    ensure!(
        seen == routed,
        "each host's XDP program should have seen the new flows the router's hash sends it: \
         misses {seen:?}, by `ip route get` {routed:?}"
    );
    for (k, count) in routed.iter().enumerate() {
        ensure!(
            *count >= (FLOWS / 10) as u64,
            "lb{} got {count} of {FLOWS} connections: the router does not spread ({routed:?})",
            k + 1
        );
    }
    let mut backends: BTreeMap<&str, usize> = BTreeMap::new();
    for flow in &flows {
        *backends.entry(flow.backend()).or_default() += 1;
    }
    eprintln!("scale-out figure: backends of the connections: {backends:?}");
    Ok((flows, hosts))
}

fn stall_summary(reports: &[&FlowReport]) -> String {
    let mut stalls: Vec<Duration> = reports.iter().map(|r| r.longest_stall).collect();
    stalls.sort();
    if stalls.is_empty() {
        return "no connection".into();
    }
    format!(
        "{} connections, longest stall per connection: median {:?}, max {:?}",
        stalls.len(),
        stalls[stalls.len() / 2],
        stalls[stalls.len() - 1]
    )
}

/// How one host is lost.
#[derive(Clone, Copy, Debug)]
enum Loss {
    Sigterm,
    HardKill,
}

/// 200 echoing connections; lb1 is lost; every connection must keep working.
fn lose_a_host(tag: &str, loss: Loss, after: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut topology = setup(tag, 3, 3, "")?;
    let (flows, hosts) = open_flows(&topology)?;
    let load = EchoLoad::start(flows, echo_period);
    std::thread::sleep(Duration::from_secs(1));

    let lost_at = Instant::now();
    match loss {
        Loss::Sigterm => topology.sigterm_host(VICTIM)?,
        Loss::HardKill => topology.kill_host(VICTIM)?,
    }
    topology.wait_next_hops(HOSTS - 1, ROUTE_WAIT)?;
    let left = lost_at.elapsed();
    if let Loss::Sigterm = loss {
        topology.wait_host_exit(VICTIM)?;
    }
    std::thread::sleep(after);
    let reports = load.finish();

    let moved = reports
        .iter()
        .zip(&hosts)
        .map(|(report, &before)| Ok(topology.host_of(report.local)? != before))
        .collect::<anyhow::Result<Vec<bool>>>()?;
    let on_victim: Vec<&FlowReport> = reports
        .iter()
        .zip(&hosts)
        .filter(|(_, h)| **h == VICTIM)
        .map(|(r, _)| r)
        .collect();
    // Moved from a host that stays to another: the router's split changed under them.
    let moved_between: Vec<&FlowReport> = reports
        .iter()
        .zip(&hosts)
        .zip(&moved)
        .filter(|((_, h), m)| **m && **h != VICTIM)
        .map(|((r, _), _)| r)
        .collect();
    let all: Vec<&FlowReport> = reports.iter().collect();
    let broken: Vec<&FlowReport> = reports.iter().filter(|r| r.error.is_some()).collect();
    eprintln!(
        "scale-out figure: {loss:?} of lb{VICTIM}: the router's route lost it {left:?} after; \
         {} of {FLOWS} connections moved host ({} between hosts that stay); {} of {FLOWS} kept \
         working",
        moved.iter().filter(|m| **m).count(),
        moved_between.len(),
        FLOWS - broken.len()
    );
    eprintln!(
        "scale-out figure: {loss:?}: moved between hosts that stay: {}",
        stall_summary(&moved_between)
    );
    eprintln!(
        "scale-out figure: {loss:?}: on lb{VICTIM}: {}",
        stall_summary(&on_victim)
    );
    let elsewhere: Vec<&FlowReport> = reports
        .iter()
        .zip(&hosts)
        .filter(|(_, h)| **h != VICTIM)
        .map(|(r, _)| r)
        .collect();
    eprintln!(
        "scale-out figure: {loss:?}: on the other hosts: {}",
        stall_summary(&elsewhere)
    );
    eprintln!("scale-out figure: {loss:?}: all: {}", stall_summary(&all));
    eprintln!(
        "scale-out figure: {loss:?}: test took {:?}",
        started.elapsed()
    );
    if !broken.is_empty() {
        bail!(
            "{} of {FLOWS} connections broke when lb{VICTIM} was lost ({loss:?}), e.g. {:?}",
            broken.len(),
            &broken[..broken.len().min(5)]
        );
    }
    Ok(())
}

#[test]
fn sigterm_of_a_host_breaks_no_connection() -> anyhow::Result<()> {
    lose_a_host("sst", Loss::Sigterm, Duration::from_secs(3))
}

#[test]
fn hard_kill_of_a_host_breaks_no_connection() -> anyhow::Result<()> {
    // The hold timer (3 s) and TCP's retransmission back-off (a retransmission at about
    // 3 s, then 6 s) are both inside this.
    lose_a_host("shk", Loss::HardKill, Duration::from_secs(8))
}

/// What happened to the flows ECMP moved when lb1 stopped and b4 joined at the same moment.
struct ChangeFigures {
    moved: usize,
    moved_kept: usize,
    stayed_broken: usize,
}

fn host_and_backend_change(tag: &str, extra_xdp: &str) -> anyhow::Result<ChangeFigures> {
    let started = Instant::now();
    let mut topology = setup(tag, 4, 3, extra_xdp)?;
    let (flows, hosts) = open_flows(&topology)?;
    let load = EchoLoad::start(flows, echo_period);
    std::thread::sleep(Duration::from_secs(1));

    // At once: b4 joins on the hosts that stay (their Maglev tables change the same way),
    // and lb1 stops.
    for k in (1..=HOSTS).filter(|&k| k != VICTIM) {
        topology.backend_action(k, 4, "enable")?;
    }
    topology.terminate_host(VICTIM)?;
    topology.wait_next_hops(HOSTS - 1, ROUTE_WAIT)?;
    std::thread::sleep(Duration::from_secs(3));
    let reports = load.finish();

    let mut figures = ChangeFigures {
        moved: 0,
        moved_kept: 0,
        stayed_broken: 0,
    };
    let mut moved_reports = Vec::new();
    for (report, &before) in reports.iter().zip(&hosts) {
        let now = topology.host_of(report.local)?;
        if now != before {
            figures.moved += 1;
            figures.moved_kept += usize::from(report.error.is_none());
            moved_reports.push(report);
        } else if report.error.is_some() {
            figures.stayed_broken += 1;
            eprintln!("a connection that stayed on lb{now} broke: {report:?}");
        }
    }
    let grace_hits: u64 = (1..=HOSTS)
        .filter(|&k| k != VICTIM)
        .map(|k| topology.flow_event(k, "grace_hit"))
        .sum::<anyhow::Result<u64>>()?;
    eprintln!(
        "scale-out figure: lb{VICTIM} stopped and b4 joined ({}): {} connections moved host, \
         {} of them kept their backend ({:.1} %), grace_hit {grace_hits}; {} of the others broke",
        if extra_xdp.is_empty() {
            "flow_grace default"
        } else {
            extra_xdp
        },
        figures.moved,
        figures.moved_kept,
        100.0 * figures.moved_kept as f64 / figures.moved.max(1) as f64,
        figures.stayed_broken
    );
    eprintln!(
        "scale-out figure: moved connections: {}",
        stall_summary(&moved_reports)
    );
    eprintln!("scale-out figure: test took {:?}", started.elapsed());
    ensure!(
        figures.moved >= FLOWS / 5,
        "only {} of {FLOWS} connections moved host: too few to measure",
        figures.moved
    );
    ensure!(
        figures.stayed_broken == 0,
        "{} connections that stayed on their host broke",
        figures.stayed_broken
    );
    Ok(figures)
}

#[test]
fn backend_change_with_flow_grace_keeps_moved_flows() -> anyhow::Result<()> {
    let figures = host_and_backend_change("sgr", "")?;
    ensure!(
        figures.moved_kept * 100 >= figures.moved * 99,
        "with the default flow_grace, only {} of {} moved connections kept their backend",
        figures.moved_kept,
        figures.moved
    );
    Ok(())
}

#[test]
fn backend_change_without_flow_grace_breaks_moved_flows() -> anyhow::Result<()> {
    let figures = host_and_backend_change("sng", "flow_grace = \"0s\"")?;
    let broken = figures.moved - figures.moved_kept;
    ensure!(
        broken * 100 >= figures.moved * 5,
        "with flow_grace = \"0s\", {broken} of {} moved connections broke: the test cannot \
         tell the grace table's effect",
        figures.moved
    );
    Ok(())
}

// ---- agreement, through each host's attached program ----

const AGREEMENT_FLOWS: u32 = 10_000;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

/// The program attached to `up0` in the calling thread's namespace: (program id, ifindex, MAC).
fn attached_program(netns_path: &str) -> anyhow::Result<(u32, u32, [u8; 6])> {
    let out = balancer_tests::run_in(netns_path, "ip", &["-j", "-d", "link", "show", "up0"])?;
    let link: serde_json::Value = serde_json::from_str(&out)?;
    let link = &link[0];
    let id = link["xdp"]["prog"]["id"]
        .as_u64()
        .with_context(|| format!("no XDP program on up0: {out}"))?;
    let ifindex = link["ifindex"].as_u64().context("ifindex")?;
    let mac_text = link["address"].as_str().context("address")?;
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(mac_text.split(':')) {
        *byte = u8::from_str_radix(part, 16)?;
    }
    Ok((u32::try_from(id)?, u32::try_from(ifindex)?, mac))
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<libc::c_long> {
    // SAFETY: the bpf(2) syscall with a zero-padded attribute buffer of the stated size that
    // outlives the call; the pointers inside it point at live buffers of the stated sizes.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A SYN from `source:port` to the VIP, addressed to `mac`.
fn syn_frame(mac: [u8; 6], source: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&port.to_be_bytes());
    tcp.extend_from_slice(&PORT.to_be_bytes());
    tcp.extend_from_slice(&1u32.to_be_bytes());
    tcp.extend_from_slice(&0u32.to_be_bytes());
    tcp.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    let vip: Ipv4Addr = VIP.parse().expect("VIP");
    let mut ip = vec![0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&source.octets());
    ip.extend_from_slice(&vip.octets());
    let check = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    let mut frame = Vec::with_capacity(54);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xc1]);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&tcp);
    frame
}

/// Flow `i` of the agreement check: sources in 198.19.0.0/16, ports from 1024.
fn agreement_flow(i: u32) -> (Ipv4Addr, u16) {
    let [_, _, a, b] = i.to_be_bytes();
    (
        Ipv4Addr::new(198, 19, a, b),
        1024 + u16::try_from(i % 60_000).expect("fits"),
    )
}

/// Runs the SYN of every agreement flow through program `id` (BPF_PROG_TEST_RUN, entering on
/// `ifindex`) in the calling thread's namespace; the backend (outer destination) of each.
fn picks(id: u32, ifindex: u32, mac: [u8; 6]) -> anyhow::Result<Vec<Ipv4Addr>> {
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&id.to_ne_bytes());
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).context("BPF_PROG_GET_FD_BY_ID")?;
    // SAFETY: a new fd the kernel just returned, owned here.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let prog_fd = std::os::fd::AsRawFd::as_raw_fd(&fd) as u32;
    let mut out = Vec::with_capacity(AGREEMENT_FLOWS as usize);
    for i in 0..AGREEMENT_FLOWS {
        let (source, port) = agreement_flow(i);
        let frame = syn_frame(mac, source, port);
        let mut data_out = vec![0u8; frame.len() + 128];
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let mut ctx = [0u32; 6];
        ctx[1] = frame.len() as u32;
        ctx[3] = ifindex;
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&prog_fd.to_ne_bytes());
        attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        attr[12..16].copy_from_slice(&(data_out.len() as u32).to_ne_bytes());
        attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
        attr[24..32].copy_from_slice(&(data_out.as_mut_ptr() as u64).to_ne_bytes());
        attr[32..36].copy_from_slice(&1u32.to_ne_bytes());
        attr[40..44].copy_from_slice(&(size_of_val(&ctx) as u32).to_ne_bytes());
        attr[48..56].copy_from_slice(&(ctx.as_ptr() as u64).to_ne_bytes());
        bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN")?;
        let verdict = u32::from_ne_bytes(attr[4..8].try_into().expect("4 bytes"));
        let size = u32::from_ne_bytes(attr[12..16].try_into().expect("4 bytes")) as usize;
        ensure!(
            (verdict == XDP_TX || verdict == XDP_REDIRECT) && size >= 34 && data_out[23] == 4,
            "flow {i} ({source}:{port}): verdict {verdict}, {size} bytes out, not an IPIP frame \
             towards a backend: {:02x?}",
            &data_out[..size.min(64)]
        );
        out.push(Ipv4Addr::new(
            data_out[30],
            data_out[31],
            data_out[32],
            data_out[33],
        ));
    }
    Ok(out)
}

#[test]
fn every_host_picks_the_same_backend() -> anyhow::Result<()> {
    let started = Instant::now();
    let topology = setup("sag", 3, 3, "")?;
    // New flows spread over all three hosts (checked by open_flows).
    let (flows, _hosts) = open_flows(&topology)?;
    drop(flows);

    let mut per_host = Vec::new();
    for k in 1..=HOSTS {
        let path = topology.host_netns(k).path();
        let (id, ifindex, mac) = attached_program(&path)?;
        let host_picks = topology
            .host_netns(k)
            .run(move || picks(id, ifindex, mac))?
            .with_context(|| format!("test runs of lb{k}'s program {id}"))?;
        per_host.push(host_picks);
    }
    let agree = (0..AGREEMENT_FLOWS as usize)
        .filter(|&i| per_host.iter().all(|p| p[i] == per_host[0][i]))
        .count();
    let mut spread: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for pick in &per_host[0] {
        *spread.entry(*pick).or_default() += 1;
    }
    eprintln!(
        "scale-out figure: agreement of {HOSTS} hosts on {AGREEMENT_FLOWS} flows: {agree} \
         ({:.2} %); backends of lb1's picks: {spread:?}; test took {:?}",
        100.0 * agree as f64 / f64::from(AGREEMENT_FLOWS),
        started.elapsed()
    );
    for b in 1..=3 {
        let count = spread.get(&backend_addr(b)).copied().unwrap_or(0);
        ensure!(
            count >= AGREEMENT_FLOWS as usize / 5,
            "backend {} got {count} of {AGREEMENT_FLOWS} flows: {spread:?}",
            backend_addr(b)
        );
    }
    ensure!(
        agree == AGREEMENT_FLOWS as usize,
        "the hosts disagree on {} of {AGREEMENT_FLOWS} flows",
        AGREEMENT_FLOWS as usize - agree
    );
    Ok(())
}
