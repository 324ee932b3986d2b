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
//! packet counter in each host's XDP program. The split is printed.

use std::{
    fs,
    net::{IpAddr, SocketAddr, TcpStream},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, ensure};
use balancer_tests::{
    BalancerProcess, Netns,
    bird::{Bird, packaged_snippet, wait_route},
    l4topology::set_sysctls,
    unique_suffix,
};

const VIP: &str = "198.18.60.20";
const PORT: u16 = 80;
const ADMIN: &str = "127.0.0.1:9100";
const CLIENT: &str = "198.18.250.2";
const ROUTER_TO_CLIENT: &str = "198.18.250.1";
const HOSTS: usize = 3;
const FLOWS: usize = 300;

/// Host `k`'s link to the router: 198.18.251.(4k)/30, router .4k+1, host .4k+2.
fn router_side(k: usize) -> String {
    format!("198.18.251.{}", 4 * k + 1)
}

fn host_side(k: usize) -> String {
    format!("198.18.251.{}", 4 * k + 2)
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One balancer host; its processes stop before its namespace goes (field order).
struct Host {
    balancer: BalancerProcess,
    _bird: Bird,
    _netns: Netns,
}

struct Setup {
    hosts: Vec<Host>,
    _router_bird: Bird,
    router: Netns,
    client: Netns,
    _dir: Dir,
}

fn veth(
    a: &Netns,
    a_name: &str,
    a_address: &str,
    b: &Netns,
    b_name: &str,
    b_address: &str,
) -> anyhow::Result<()> {
    a.ip(&[
        "link",
        "add",
        a_name,
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ])?;
    a.ip(&["addr", "add", &format!("{a_address}/30"), "dev", a_name])?;
    b.ip(&["addr", "add", &format!("{b_address}/30"), "dev", b_name])?;
    a.ip(&["link", "set", a_name, "up"])?;
    b.ip(&["link", "set", b_name, "up"])?;
    Ok(())
}

fn router_bird_config() -> String {
    let mut config = format!(
        "router id {ROUTER_TO_CLIENT};\nprotocol device {{}}\n\
         protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n"
    );
    for k in 1..=HOSTS {
        config.push_str(&format!(
            "protocol bgp lb{k} {{\n    local {r} as 65000; neighbor {h} as 65001;\n    \
             hold time 3; connect retry time 1; connect delay time 1; error wait time 1, 2;\n    \
             ipv4 {{ import all; export none; }};\n}}\n",
            r = router_side(k),
            h = host_side(k),
        ));
    }
    config
}

fn host_bird_config(k: usize) -> String {
    format!(
        "router id {h};\nprotocol device {{}}\ninclude \"{snippet}\";\n\
         protocol bgp router4 from balancer_peer {{\n    local {h} as 65001; neighbor {r} as 65000;\n    \
         hold time 3; connect retry time 1; connect delay time 1; error wait time 1, 2;\n}}\n",
        h = host_side(k),
        r = router_side(k),
        snippet = packaged_snippet().display(),
    )
}

fn balancer_config(dir: &std::path::Path, k: usize) -> String {
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
        state = dir.join(format!("announce-lb{k}.json")).display(),
    )
}

fn setup() -> anyhow::Result<Setup> {
    let suffix = unique_suffix();
    let dir = Dir(std::env::temp_dir().join(format!("balancer-ecmp-{suffix}")));
    fs::create_dir_all(&dir.0)?;
    let client = Netns::new(format!("bl-ec-cl-{suffix}"))?;
    let router = Netns::new(format!("bl-ec-rt-{suffix}"))?;
    set_sysctls(
        &router,
        &[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.fib_multipath_hash_policy", "3"),
            ("net.ipv4.fib_multipath_hash_fields", "0x0037"),
        ],
    )?;
    veth(&router, "rc", ROUTER_TO_CLIENT, &client, "c0", CLIENT)?;
    client.ip(&["route", "add", "default", "via", ROUTER_TO_CLIENT])?;

    let mut namespaces = Vec::new();
    for k in 1..=HOSTS {
        let netns = Netns::new(format!("bl-ec-lb{k}-{suffix}"))?;
        set_sysctls(
            &netns,
            &[
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ],
        )?;
        veth(
            &router,
            &format!("r{k}"),
            &router_side(k),
            &netns,
            "up0",
            &host_side(k),
        )?;
        netns.ip(&["route", "add", "default", "via", &router_side(k)])?;
        // A local VIP: the host's own stack takes it.
        netns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        namespaces.push(netns);
    }
    let router_bird = Bird::start(&router, &dir.0, "router", &router_bird_config())?;
    let mut hosts = Vec::new();
    for (index, netns) in namespaces.into_iter().enumerate() {
        let k = index + 1;
        let bird = Bird::start(&netns, &dir.0, &format!("lb{k}"), &host_bird_config(k))?;
        let config = dir.0.join(format!("balancer-lb{k}.toml"));
        fs::write(&config, balancer_config(&dir.0, k))?;
        let balancer = BalancerProcess::start(&netns, &config, ADMIN)?;
        hosts.push(Host {
            balancer,
            _bird: bird,
            _netns: netns,
        });
    }
    for k in 1..=HOSTS {
        router_bird.wait_established(&format!("lb{k}"), Duration::from_secs(30))?;
    }
    Ok(Setup {
        hosts,
        _router_bird: router_bird,
        router,
        client,
        _dir: dir,
    })
}

impl Setup {
    /// The router's route to the VIP, as `ip route show` prints it.
    fn route(&self) -> anyhow::Result<String> {
        balancer_tests::bird::host_routes(&self.router.path(), VIP.parse()?, "main")
    }

    /// Waits until the router's route to the VIP has `hops` next hops.
    fn wait_next_hops(&self, hops: usize) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let route = self.route()?;
            if next_hops(&route) == hops {
                return Ok(());
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "the router's route to {VIP} should have {hops} next hops:\n{route}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Packets of the VIP seen by each host's XDP program.
    fn packets(&self) -> anyhow::Result<Vec<u64>> {
        self.hosts
            .iter()
            .map(|host| {
                let (status, body) = host.balancer.admin_get("/api/state")?;
                ensure!(status == 200, "/api/state: {status} {body}");
                let state: serde_json::Value = serde_json::from_str(&body)?;
                state["xdp"]["vips"][0]["packets"]
                    .as_u64()
                    .context("xdp.vips[0].packets")
            })
            .collect()
    }

    /// Opens `count` new TCP flows from the client to the VIP (each from a new source port);
    /// nothing listens, so each is one SYN answered by a reset.
    fn new_flows(&self, count: usize) -> anyhow::Result<usize> {
        let target = SocketAddr::new(VIP.parse::<IpAddr>()?, PORT);
        self.client.run(move || {
            (0..count)
                .filter(|_| {
                    matches!(
                        TcpStream::connect_timeout(&target, Duration::from_secs(2)),
                        Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused
                    )
                })
                .count()
        })
    }
}

/// Next hops of a route as `ip route show` prints it: one per "nexthop" line, or 1.
fn next_hops(route: &str) -> usize {
    if route.trim().is_empty() {
        0
    } else {
        route.matches("nexthop").count().max(1)
    }
}

#[test]
fn new_flows_spread_over_every_announcing_host() -> anyhow::Result<()> {
    let setup = setup()?;
    setup.wait_next_hops(HOSTS)?;
    let route = setup.route()?;
    for k in 1..=HOSTS {
        ensure!(
            route.contains(&host_side(k)),
            "the ECMP route should go via every host ({}):\n{route}",
            host_side(k)
        );
    }

    let before = setup.packets()?;
    let refused = setup.new_flows(FLOWS)?;
    ensure!(
        refused == FLOWS,
        "every flow should reach a host and be refused by its stack: {refused} of {FLOWS}"
    );
    let after = setup.packets()?;
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
    let (status, body) = setup.hosts[0]
        .balancer
        .admin_post("/api/announce/withdraw")?;
    ensure!(status == 200, "withdraw on lb1: {status} {body}");
    setup.wait_next_hops(HOSTS - 1)?;
    wait_route(
        &setup.router.path(),
        VIP.parse()?,
        "main",
        true,
        Duration::from_secs(5),
    )?;
    let before = setup.packets()?;
    let refused = setup.new_flows(FLOWS / 3)?;
    let after = setup.packets()?;
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
    let (status, body) = setup.hosts[0]
        .balancer
        .admin_post("/api/announce/restore")?;
    ensure!(status == 200, "restore on lb1: {status} {body}");
    setup.wait_next_hops(HOSTS)?;
    Ok(())
}
