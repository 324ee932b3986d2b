//! End to end in network namespaces: `balancer run` attaches XDP to a veth,
//! a client sends real TCP and UDP traffic to VIPs, and the counters read back
//! through `/metrics` and `/api/state` match what the client's own firewall
//! counted leaving it.

use std::{
    net::{TcpListener, UdpSocket},
    time::Duration,
};

use balancer::dataplane::PassProgram;
use balancer_tests::{
    BalancerProcess, ClientBalancer, run_in,
    traffic::{socket_addr, spawn_echo_server, tcp_ping_pong},
};

const VIP4: &str = "198.18.0.10";
const VIP6: &str = "2001:2::10";
const TCP_PORT: u16 = 80;
const UDP_PORT: u16 = 5353;
const ETHERNET_HEADER: u64 = 14;

/// One VIP in the test: its config name, address, protocol and port.
struct Vip {
    name: &'static str,
    address: &'static str,
    protocol: &'static str,
    port: u16,
}

const VIPS: [Vip; 4] = [
    Vip {
        name: "tcp4",
        address: VIP4,
        protocol: "tcp",
        port: TCP_PORT,
    },
    Vip {
        name: "udp4",
        address: VIP4,
        protocol: "udp",
        port: UDP_PORT,
    },
    Vip {
        name: "tcp6",
        address: VIP6,
        protocol: "tcp",
        port: TCP_PORT,
    },
    Vip {
        name: "udp6",
        address: VIP6,
        protocol: "udp",
        port: UDP_PORT,
    },
];

fn write_config(dir: &std::path::Path, interface: &str) -> std::path::PathBuf {
    let mut config = format!(
        "[admin]\nlisten = \"127.0.0.1:9100\"\n\n[xdp]\ninterface = \"{interface}\"\nmode = \"auto\"\n"
    );
    for vip in &VIPS {
        config += &format!(
            "\n[[vip]]\nname = \"{}\"\naddress = \"{}\"\nport = {}\nprotocol = \"{}\"\nforward = \"local\"\n",
            vip.name, vip.address, vip.port, vip.protocol
        );
    }
    let path = dir.join("balancer.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// nftables counters on the client's output path, one rule per VIP (in `VIPS` order).
fn install_client_counters(client: &str) {
    let mut script =
        String::from("table inet bltest {\n chain out {\n  type filter hook output priority 0;\n");
    for vip in &VIPS {
        let family = if vip.address.contains(':') {
            "ip6"
        } else {
            "ip"
        };
        script += &format!(
            "  {family} daddr {} {} dport {} counter\n",
            vip.address, vip.protocol, vip.port
        );
    }
    script += " }\n}\n";
    let file = std::env::temp_dir().join(format!("bltest-{}.nft", std::process::id()));
    std::fs::write(&file, script).expect("write nft script");
    run_in(client, "nft", &["-f", file.to_str().expect("utf-8 path")])
        .expect("nft rules (package nftables)");
    let _ = std::fs::remove_file(file);
}

/// (packets, bytes at the IP layer) per VIP, in `VIPS` order.
fn read_client_counters(client: &str) -> Vec<(u64, u64)> {
    let json = run_in(
        client,
        "nft",
        &["-j", "list", "chain", "inet", "bltest", "out"],
    )
    .expect("nft list");
    let value: serde_json::Value = serde_json::from_str(&json).expect("nft JSON");
    let counters: Vec<(u64, u64)> = value["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|item| item["rule"]["expr"].as_array())
        .filter_map(|exprs| exprs.iter().find_map(|e| e.get("counter").cloned()))
        .map(|c| {
            (
                c["packets"].as_u64().expect("packets"),
                c["bytes"].as_u64().expect("bytes"),
            )
        })
        .collect();
    assert_eq!(
        counters.len(),
        VIPS.len(),
        "one nft counter per VIP, got {value}"
    );
    counters
}

#[test]
fn counters_match_real_tcp_and_udp_traffic() {
    let topology = ClientBalancer::new("cnt", &[VIP4, VIP6]).expect("topology");
    let dir = std::env::temp_dir().join(format!("bltest-cnt-{}", topology.balancer.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&dir, &topology.balancer_if);

    // The far end of the veth gets a pass program, as a real topology needs for XDP_TX.
    let client_if = topology.client_if.clone();
    let _pass = topology
        .client
        .run(move || PassProgram::attach(&client_if))
        .unwrap()
        .expect("pass program");

    let mut balancer = BalancerProcess::start(&topology.balancer, &config, "127.0.0.1:9100")
        .expect("balancer starts");
    assert!(
        topology.balancer_has_xdp().unwrap(),
        "XDP must be attached to {}",
        topology.balancer_if
    );

    // Servers on the VIPs inside the balancer namespace.
    let (tcp4, tcp6, udp4, udp6) = topology
        .balancer
        .run(|| {
            (
                TcpListener::bind(socket_addr(VIP4, TCP_PORT)).expect("bind tcp4"),
                TcpListener::bind(socket_addr(VIP6, TCP_PORT)).expect("bind tcp6"),
                UdpSocket::bind(socket_addr(VIP4, UDP_PORT)).expect("bind udp4"),
                UdpSocket::bind(socket_addr(VIP6, UDP_PORT)).expect("bind udp6"),
            )
        })
        .unwrap();
    spawn_echo_server(tcp4);
    spawn_echo_server(tcp6);

    install_client_counters(&topology.client_path());

    // Real traffic from the client namespace: 3 TCP connections × 20 messages per
    // family, 50 UDP datagrams of 100 bytes per family.
    const UDP_DATAGRAMS: u64 = 50;
    const UDP_PAYLOAD: u64 = 100;
    topology
        .client
        .run(|| {
            for address in [VIP4, VIP6] {
                for _ in 0..3 {
                    tcp_ping_pong(socket_addr(address, TCP_PORT), 20)
                        .expect("TCP ping-pong through the VIP");
                }
                let bind = if address.contains(':') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                };
                let socket = UdpSocket::bind(bind).expect("udp client");
                for _ in 0..UDP_DATAGRAMS {
                    socket
                        .send_to(
                            &[0x42; UDP_PAYLOAD as usize],
                            socket_addr(address, UDP_PORT),
                        )
                        .expect("send udp");
                }
            }
        })
        .unwrap();

    // Everything sent must have arrived: the UDP receivers drain exactly what was sent.
    for socket in [&udp4, &udp6] {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 2048];
        for i in 0..UDP_DATAGRAMS {
            let n = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("datagram {i} never arrived: {e}"));
            assert_eq!(n as u64, UDP_PAYLOAD);
        }
    }
    // Let the last FIN/ACK exchanges of the TCP connections finish.
    std::thread::sleep(Duration::from_millis(500));
    let sent = read_client_counters(&topology.client_path());

    let (status, metrics) = balancer.admin_get("/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "GET /metrics: {metrics}");
    let (status, state) = balancer.admin_get("/api/state").expect("GET /api/state");
    assert_eq!(status, 200, "GET /api/state: {state}");
    let state: serde_json::Value = serde_json::from_str(&state).expect("state is JSON");

    for (vip, (packets, ip_bytes)) in VIPS.iter().zip(&sent) {
        let frame_bytes = ip_bytes + ETHERNET_HEADER * packets;
        assert!(*packets > 0, "{}: the client sent nothing?", vip.name);
        if vip.protocol == "udp" {
            let ip_header = if vip.address.contains(':') { 40 } else { 20 };
            assert_eq!(
                *packets, UDP_DATAGRAMS,
                "{}: nft counted a different number of datagrams",
                vip.name
            );
            assert_eq!(
                frame_bytes,
                UDP_DATAGRAMS * (ETHERNET_HEADER + ip_header + 8 + UDP_PAYLOAD)
            );
        }
        let metric = |name: &str| {
            let line = format!("{name}{{vip=\"{}\",action=\"pass\"}} ", vip.name);
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&line))
                .unwrap_or_else(|| panic!("{line} missing from /metrics:\n{metrics}"))
                .trim()
                .parse::<u64>()
                .expect("counter value")
        };
        assert_eq!(
            metric("balancer_xdp_packets_total"),
            *packets,
            "{}: XDP packets vs client's count",
            vip.name
        );
        assert_eq!(
            metric("balancer_xdp_bytes_total"),
            frame_bytes,
            "{}: XDP bytes vs client's count",
            vip.name
        );

        let vip_state = state["xdp"]["vips"]
            .as_array()
            .expect("vips array")
            .iter()
            .find(|v| v["name"] == vip.name)
            .unwrap_or_else(|| panic!("{} missing from /api/state: {state}", vip.name));
        assert_eq!(
            vip_state["packets"], *packets,
            "{}: /api/state packets",
            vip.name
        );
        assert_eq!(
            vip_state["bytes"], frame_bytes,
            "{}: /api/state bytes",
            vip.name
        );
        assert_eq!(vip_state["by_action"]["pass"]["packets"], *packets);
        assert_eq!(vip_state["address"], vip.address);
        assert_eq!(vip_state["forward"], "local");
    }
    let total_vip_packets: u64 = sent.iter().map(|(p, _)| p).sum();
    assert_eq!(
        state["xdp"]["by_reason"]["vip_local"]["packets"], total_vip_packets,
        "reason vip_local"
    );
    assert_eq!(state["xdp"]["interface"], topology.balancer_if);

    // SIGTERM: clean exit and the interface is left without an XDP program.
    let status = balancer.stop().expect("stop");
    assert!(
        status.success(),
        "balancer exited with {status}; log:\n{}",
        balancer.log()
    );
    assert!(
        !topology.balancer_has_xdp().unwrap(),
        "XDP still attached to {} after SIGTERM",
        topology.balancer_if
    );
    assert!(
        balancer.log().contains("detached"),
        "log should report the detach:\n{}",
        balancer.log()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn namespaces_are_removed_even_when_the_test_panics() {
    let mut names = Vec::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let topology = ClientBalancer::new("pan", &[VIP4]).expect("topology");
        names.push(topology.client.name().to_string());
        names.push(topology.balancer.name().to_string());
        panic!("a failing test");
    }));
    assert!(outcome.is_err());
    let listed = String::from_utf8(
        std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for name in names {
        assert!(
            !listed.contains(&name),
            "namespace {name} survived a panicking test: {listed}"
        );
    }
}
