//! Several balancer hosts behind one router: each host announces the same VIP through BIRD
//! with `packaging/bird.conf`; the router (BIRD, `merge paths`) installs one ECMP route over
//! all of them and hashes on the 5-tuple (`fib_multipath_hash_policy=3`,
//! `fib_multipath_hash_fields=0x0037`), so new flows spread over every host. A host that
//! withdraws (operator API) leaves the ECMP group and gets no new flows.
//!
//! ```text
//!   client ── router ──┬── lb1 (balancer + BIRD, AS 65001)
//!                      ├── lb2 (balancer + BIRD, AS 65001)
//!                      └── lb3 (balancer + BIRD, AS 65001)
//! ```
//!
//! The VIP is `local` (each host's own stack takes it; nothing listens, so a SYN is answered
//! with a reset): what is counted is where the router sent each new flow, through the VIP's
//! packet counter in each host's XDP program. The split is printed. The topology is
//! `balancer_tests::ecmp` without backends.

use std::time::Duration;

use anyhow::ensure;
use balancer_tests::{
    bird::wait_route,
    ecmp::{ADMIN, EcmpTopology, PORT, VIP, host_addr},
};

const HOSTS: usize = 3;
const FLOWS: usize = 300;
/// How long the router may take to change its route.
const WAIT: Duration = Duration::from_secs(20);

fn balancer_config(topology: &EcmpTopology, k: usize) -> String {
    format!(
        r#"
[admin]
listen = "{ADMIN}"

[xdp]
interface = "up0"
max_vips = 2
max_backends = 2
max_connections = 65536

[announce]
withdraw_delay = "1s"
state_file = "{state}"

[[vip]]
name = "web"
address = "{VIP}"
port = {PORT}
protocol = "tcp"
forward = "local"
"#,
        state = topology
            .dir()
            .join(format!("announce-lb{k}.json"))
            .display(),
    )
}

fn setup() -> anyhow::Result<EcmpTopology> {
    let mut topology = EcmpTopology::new("ec", HOSTS, 0)?;
    for k in 1..=HOSTS {
        // A local VIP: the host's own stack takes it.
        topology
            .host_netns(k)
            .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
    }
    let configs: Vec<String> = (1..=HOSTS).map(|k| balancer_config(&topology, k)).collect();
    topology.start_hosts(|k| configs[k - 1].clone())?;
    Ok(topology)
}

/// Packets of the VIP seen by each host's XDP program.
fn packets(topology: &EcmpTopology) -> anyhow::Result<Vec<u64>> {
    (1..=HOSTS).map(|k| topology.vip_packets(k)).collect()
}

#[test]
fn new_flows_spread_over_every_announcing_host() -> anyhow::Result<()> {
    let setup = setup()?;
    setup.wait_next_hops(HOSTS, WAIT)?;
    let route = setup.route()?;
    for k in 1..=HOSTS {
        ensure!(
            route.contains(&host_addr(k).to_string()),
            "the ECMP route should go via every host ({}):\n{route}",
            host_addr(k)
        );
    }

    let before = packets(&setup)?;
    let refused = setup.refused_flows(FLOWS)?;
    ensure!(
        refused == FLOWS,
        "every flow should reach a host and be refused by its stack: {refused} of {FLOWS}"
    );
    let after = packets(&setup)?;
    let got: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    eprintln!("announce figure: ECMP split of {FLOWS} new flows over {HOSTS} hosts: {got:?}");
    for (k, packets) in got.iter().enumerate() {
        // Half each on average; below a tenth would mean the router does not spread.
        ensure!(
            *packets >= (FLOWS / 10) as u64,
            "host lb{} got {packets} of {FLOWS} new flows' packets: the router does not spread ({got:?})\n{route}",
            k + 1
        );
    }

    // lb1 withdraws: it leaves the ECMP group, and the new flows all go to the others.
    let (status, body) = setup.balancer(1)?.admin_post("/api/announce/withdraw")?;
    ensure!(status == 200, "withdraw on lb1: {status} {body}");
    setup.wait_next_hops(HOSTS - 1, WAIT)?;
    wait_route(
        &setup.router().path(),
        VIP.parse()?,
        "main",
        true,
        Duration::from_secs(5),
    )?;
    let before = packets(&setup)?;
    let refused = setup.refused_flows(FLOWS / 3)?;
    let after = packets(&setup)?;
    let got: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    eprintln!(
        "announce figure: after lb1's withdraw, {} new flows: {got:?}",
        FLOWS / 3
    );
    ensure!(
        refused == FLOWS / 3 && got[0] == 0 && got[1..].iter().sum::<u64>() >= (FLOWS / 3) as u64,
        "after lb1 withdrew, every new flow should go to the other hosts ({refused} refused, split {got:?})"
    );

    // Restored: back in the group.
    let (status, body) = setup.balancer(1)?.admin_post("/api/announce/restore")?;
    ensure!(status == 200, "restore on lb1: {status} {body}");
    setup.wait_next_hops(HOSTS, WAIT)?;
    Ok(())
}
