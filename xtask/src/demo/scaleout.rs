//! The scale-out part of the demo: three balancer hosts, each running `balancer run` (XDP,
//! an `ipip` VIP, `[announce]`) and BIRD, behind a router running BIRD that spreads the VIP
//! over them with ECMP; three backends running `balancer decap` and an echo server. New
//! connections spread over the hosts; one host is stopped (SIGTERM: it withdraws its route,
//! waits, exits) while every connection keeps echoing; the established connections are
//! unaffected and new ones go to the hosts that remain. The topology is the tests'
//! (`balancer_tests::ecmp`, as in `tests/tests/scaleout_survival.rs`).

use std::{collections::BTreeMap, time::Duration};

use anyhow::ensure;
use balancer_tests::ecmp::{EchoLoad, EcmpTopology, PORT, VIP, echo_period};

const HOSTS: usize = 3;
const BACKENDS: usize = 3;
const CONNECTIONS: usize = 60;
const NEW_CONNECTIONS: usize = 30;
const STOPPED: usize = 2;

pub fn run() -> anyhow::Result<()> {
    println!("\n== Scale-out: three balancer hosts behind a BIRD router (ECMP) ==");
    let started = std::time::Instant::now();
    println!(
        "demo: client (198.18.250.2-5) ── router (BIRD, ECMP on the 5-tuple) ── lb1, lb2, lb3 \
         (balancer + BIRD, eBGP, hold time 3 s);\n\
         \x20     the router also reaches b1..b3 (balancer decap, an echo server on the VIP \
         {VIP}:{PORT}, ipip)"
    );
    let mut topology = EcmpTopology::new("dso", HOSTS, BACKENDS)?;
    let configs: Vec<String> = (1..=HOSTS)
        .map(|k| topology.forwarding_config(k, BACKENDS, ""))
        .collect();
    topology.start_hosts(|k| configs[k - 1].clone())?;
    for k in 1..=HOSTS {
        topology.wait_backends(k, BACKENDS)?;
    }
    topology.wait_next_hops(HOSTS, Duration::from_secs(20))?;
    println!("demo: the router's route to the VIP:");
    for line in topology.route()?.lines() {
        println!("  {}", line.trim());
    }

    let flows = topology.open_flows(CONNECTIONS, Duration::from_secs(15))?;
    let mut before = Vec::new();
    let mut pairs: BTreeMap<(usize, String), usize> = BTreeMap::new();
    for flow in &flows {
        let host = topology.host_of(flow.local())?;
        before.push(host);
        *pairs.entry((host, flow.backend().to_string())).or_default() += 1;
    }
    println!(
        "demo: {CONNECTIONS} connections from 4 client addresses, each echoing a line every 50-100 ms"
    );
    println!("\n  host  connections  their backends");
    for k in 1..=HOSTS {
        let count = before.iter().filter(|&&h| h == k).count();
        let backends: Vec<String> = pairs
            .iter()
            .filter(|((h, _), _)| *h == k)
            .map(|((_, b), n)| format!("{b}:{n}"))
            .collect();
        println!("  lb{k}   {count:>11}  {}", backends.join(" "));
    }

    let load = EchoLoad::start(flows, echo_period);
    std::thread::sleep(Duration::from_secs(1));
    println!("\ndemo: SIGTERM to lb{STOPPED}'s balancer: it withdraws its route, waits 1 s, exits");
    topology.terminate_host(STOPPED)?;
    topology.wait_next_hops(HOSTS - 1, Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_secs(2));
    let reports = load.finish();

    let mut moved = 0;
    println!(
        "\n  host  connections before  after  kept working  longest stall (max over its connections)"
    );
    let mut after = Vec::new();
    for report in &reports {
        after.push(topology.host_of(report.local)?);
    }
    for k in 1..=HOSTS {
        let mine: Vec<_> = reports
            .iter()
            .zip(&before)
            .filter(|(_, h)| **h == k)
            .map(|(r, _)| r)
            .collect();
        let kept = mine.iter().filter(|r| r.error.is_none()).count();
        let stall = mine
            .iter()
            .map(|r| r.longest_stall)
            .max()
            .unwrap_or_default();
        let now = after.iter().filter(|&&h| h == k).count();
        println!(
            "  lb{k}   {:>18}  {now:>5}  {kept:>5} of {:<3}  {stall:.0?}{}",
            mine.len(),
            mine.len(),
            if k == STOPPED { "  (stopped)" } else { "" }
        );
    }
    for (a, b) in after.iter().zip(&before) {
        moved += usize::from(a != b);
    }
    let kept = reports.iter().filter(|r| r.error.is_none()).count();
    println!(
        "\ndemo: {kept} of {CONNECTIONS} connections kept working ({moved} of them now reach the \
         backend through another host)"
    );

    let new_flows = topology.open_flows(NEW_CONNECTIONS, Duration::from_secs(5))?;
    let mut new_hosts = [0usize; HOSTS];
    for flow in &new_flows {
        new_hosts[topology.host_of(flow.local())? - 1] += 1;
    }
    drop(new_flows);
    println!(
        "demo: {NEW_CONNECTIONS} new connections afterwards: {}",
        (1..=HOSTS)
            .map(|k| format!("lb{k} {}", new_hosts[k - 1]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    ensure!(
        kept == CONNECTIONS,
        "{} connections broke when lb{STOPPED} stopped: {:?}",
        CONNECTIONS - kept,
        reports
            .iter()
            .filter(|r| r.error.is_some())
            .collect::<Vec<_>>()
    );
    ensure!(
        new_hosts[STOPPED - 1] == 0,
        "new connections still reached the stopped lb{STOPPED}"
    );
    println!(
        "demo: scale-out part took {:.1?}; tearing its topology down",
        started.elapsed()
    );
    Ok(())
}
