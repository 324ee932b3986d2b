//! Self-test of the L4 harness, without any balancer: the client's route to the VIP points
//! straight at backend 1, so every connection must land on `b1`. Checks the topology, the
//! name servers (TCP greeting and echo, UDP from the VIP), the client helpers, stopping and
//! restarting a server, and that nothing is left behind after drop (also on panic).

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use balancer_tests::{Family, L4Topology, l4topology::ebpf_object};

const PORT: u16 = 8080;
/// In the benchmarking ranges, outside the topology's own /24 and /64.
const VIP4: &str = "198.19.0.10";
const VIP6: &str = "2001:2:0:ff::10";

fn netns_list() -> String {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn listed(list: &str, name: &str) -> bool {
    list.lines()
        .any(|line| line.split_whitespace().next() == Some(name))
}

fn namespace_names(topology: &L4Topology) -> Vec<String> {
    let mut names = vec![
        topology.client().name().to_string(),
        topology.lb().name().to_string(),
        topology.bridge().name().to_string(),
    ];
    names.extend((1..=topology.backend_count()).map(|k| topology.backend(k).name().to_string()));
    names
}

/// Pids of the processes inside a namespace.
fn pids_in(name: &str) -> Vec<u32> {
    let output = Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

fn vip(address: &str) -> SocketAddr {
    SocketAddr::new(address.parse().unwrap(), PORT)
}

#[test]
fn l4_topology_serves_and_cleans_up_without_a_balancer() {
    let mut topology = L4Topology::new("l4st", 3).expect("topology");
    let names = namespace_names(&topology);
    let list = netns_list();
    for name in &names {
        assert!(
            listed(&list, name),
            "namespace {name} missing from:\n{list}"
        );
    }
    assert_eq!(topology.backend_names(), ["b1", "b2", "b3"]);
    assert_eq!(topology.lb_interface(), "veth0");
    assert_eq!(topology.backend_addr_v4(1).to_string(), "198.18.0.11");
    assert_eq!(topology.backend_addr_v6(1).to_string(), "2001:2::b");
    assert_eq!(topology.backend_mac(3), "02:00:c6:12:00:0d");

    topology.start_name_servers(PORT).expect("name servers");
    let mut server_pids = Vec::new();
    for k in 1..=3 {
        let pids = pids_in(topology.backend(k).name());
        assert_eq!(pids.len(), 1, "one process in b{k}, got {pids:?}");
        server_pids.extend(pids);
    }

    // Each backend answers with its own name on its own addresses, both families.
    for k in 1..=3 {
        for family in [Family::V4, Family::V6] {
            let target = SocketAddr::new(topology.backend_addr(k, family), PORT);
            let names = topology.connect_many(target, 3, None).expect("direct");
            assert_eq!(names, vec![format!("b{k}"); 3], "{target}");
            let names = topology.udp_names(target, 2).expect("direct udp");
            assert_eq!(names, vec![format!("b{k}"); 2], "{target} udp");
        }
    }

    for (address, family) in [(VIP4, Family::V4), (VIP6, Family::V6)] {
        let ip: IpAddr = address.parse().unwrap();
        topology.add_vip(ip).expect("add vip");
        // No balancer: straight to backend 1 (which holds the VIP on lo).
        topology
            .route_vip_via(ip, topology.backend_addr(1, family))
            .expect("route");
        let target = vip(address);

        let names = topology
            .connect_many(target, 50, None)
            .expect("50 connections");
        assert_eq!(names, vec!["b1"; 50], "{target}");

        // Fixed source ports, twice in a row: the reset close leaves no TIME_WAIT behind.
        // Below the ephemeral range (32768..=60999), which the 50 connections above drew
        // from: one of theirs left in TIME_WAIT would hold a fixed port.
        for round in 0..2 {
            let names = topology
                .connect_many(target, 20, Some(31000))
                .unwrap_or_else(|err| panic!("fixed ports, round {round}: {err:#}"));
            assert_eq!(names, vec!["b1"; 20]);
        }

        // UDP replies come from the VIP (the client socket is connected to it).
        let names = topology.udp_names(target, 10).expect("udp");
        assert_eq!(names, vec!["b1"; 10], "{target} udp");

        let mut long = topology.open_long_lived(target).expect("long-lived");
        assert_eq!(long.backend(), "b1");
        for _ in 0..3 {
            long.ping().expect("ping");
        }
    }

    // Many concurrent connections on one server.
    let mut many = (0..500)
        .map(|i| {
            topology
                .open_long_lived(vip(VIP4))
                .unwrap_or_else(|err| panic!("long-lived {i}: {err:#}"))
        })
        .collect::<Vec<_>>();
    for (i, long) in many.iter_mut().enumerate() {
        assert_eq!(long.backend(), "b1");
        long.ping()
            .unwrap_or_else(|err| panic!("ping on long-lived {i}: {err:#}"));
    }
    drop(many);

    // Stopping b1's server: an open connection dies, new ones are refused.
    let mut long = topology.open_long_lived(vip(VIP4)).expect("long-lived");
    long.ping().expect("ping before stop");
    let status = topology.stop_name_server(1).expect("stop b1");
    assert!(status.success(), "name_server exits 0 on SIGTERM: {status}");
    assert!(!topology.name_server_running(1));
    assert!(long.ping().is_err(), "connection survived its server");
    for address in [VIP4, VIP6] {
        let err = topology
            .connect_many(vip(address), 5, None)
            .expect_err("connect to a stopped server");
        let message = format!("{err:#}");
        // Four workers connect at once: whichever fails first is reported.
        assert!(
            message.contains(" of 5 to ") && message.contains("refused"),
            "{message}"
        );
    }
    assert!(topology.stop_name_server(1).is_err(), "stopped twice");

    topology.start_name_server(1).expect("restart b1");
    assert!(topology.start_name_server(1).is_err(), "started twice");
    for address in [VIP4, VIP6] {
        let names = topology
            .connect_many(vip(address), 10, None)
            .expect("after restart");
        assert_eq!(names, vec!["b1"; 10]);
    }

    // add_vip routes via the lb: without a balancer nothing answers there, quickly or not;
    // the route itself must point at the lb.
    topology.add_vip(VIP4.parse().unwrap()).expect("add vip");
    let route = balancer_tests::run_in(&topology.client().path(), "ip", &["route", "get", VIP4])
        .expect("ip route get");
    assert!(route.contains("via 198.18.0.2"), "{route}");

    // The pass program on the lb's peer. `cargo xtask test` builds the eBPF object first: a
    // missing one is a broken build, not a reason to skip.
    assert!(
        ebpf_object().is_file(),
        "the eBPF object {} is not built (cargo xtask build)",
        ebpf_object().display()
    );
    assert!(!topology.lb_peer_has_xdp().unwrap());
    topology.attach_pass_on_lb_peer().expect("pass program");
    topology
        .attach_pass_on_lb_peer()
        .expect("second call is a no-op");
    assert!(topology.lb_peer_has_xdp().unwrap());
    // Traffic through the peer still flows: lb → p-lb (XDP_PASS) → bridge → b2.
    let target = SocketAddr::new(topology.backend_addr(2, Family::V4), PORT);
    let greeting = topology
        .lb()
        .run(move || -> std::io::Result<String> {
            use std::io::BufRead;
            let stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
            stream.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut line = String::new();
            std::io::BufReader::new(stream).read_line(&mut line)?;
            Ok(line)
        })
        .unwrap();
    assert_eq!(greeting.expect("lb → b2 through p-lb"), "b2\n");

    drop(topology);
    let list = netns_list();
    for name in &names {
        assert!(
            !listed(&list, name),
            "namespace {name} left behind:\n{list}"
        );
    }
    for pid in server_pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "name_server {pid} left running"
        );
    }
}

#[test]
fn l4_topology_is_removed_when_a_test_panics() {
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let mut topology = L4Topology::new("l4pn", 2).expect("topology");
        topology.start_name_servers(PORT).expect("name servers");
        let mut pids = Vec::new();
        for k in 1..=2 {
            pids.extend(pids_in(topology.backend(k).name()));
        }
        *names.lock().unwrap() = vec![namespace_names(&topology), vec![format!("{pids:?}")]];
        panic!("deliberate");
    });
    assert!(result.is_err());
    let recorded = names.into_inner().unwrap();
    let list = netns_list();
    for name in &recorded[0] {
        assert!(
            !listed(&list, name),
            "namespace {name} left behind:\n{list}"
        );
    }
    let pids: Vec<u32> = recorded[1][0]
        .trim_matches(['[', ']'])
        .split(", ")
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(pids.len(), 2, "{:?}", recorded[1]);
    let alive: HashSet<u32> = pids
        .into_iter()
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    assert!(alive.is_empty(), "name servers left running: {alive:?}");
}
