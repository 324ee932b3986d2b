//! `packaging/balancer.service` and least privilege, with real parts:
//! - the unit grants exactly CAP_BPF, CAP_NET_ADMIN, CAP_NET_BIND_SERVICE and CAP_PERFMON,
//!   is `Type=notify`, reloads with SIGHUP, and `systemd-analyze verify` finds nothing in it;
//! - `balancer run` as an unprivileged user (nobody) holding exactly the unit's capabilities
//!   (setpriv, as systemd's `AmbientCapabilities` gives them) attaches XDP to a veth, serves
//!   :80 and :443, reloads on SIGHUP, and speaks sd_notify: READY=1 once serving,
//!   RELOADING=1 then READY=1 around a reload, STOPPING=1 on SIGTERM.

use std::{
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use balancer_tests::{
    BalancerProcess, Certs, ClientBalancer, balancer_binary, curl,
    l7::TempDir,
    traffic::{socket_addr, spawn_echo_server},
};

const UNIT: &str = include_str!("../../packaging/balancer.service");
const CAPABILITIES: [&str; 4] = [
    "CAP_BPF",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_PERFMON",
];
const NOBODY: u32 = 65534;
const VIP: &str = "198.18.0.10";

/// The values of `key=` in the unit, in order.
fn unit_values(key: &str) -> Vec<&'static str> {
    UNIT.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_unit_is_type_notify_with_exactly_four_capabilities_and_verifies() {
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let values = unit_values(key);
        assert_eq!(values.len(), 1, "{key} once: {values:?}");
        let mut caps: Vec<&str> = values[0].split_whitespace().collect();
        caps.sort_unstable();
        assert_eq!(caps, CAPABILITIES, "{key}");
    }
    assert_eq!(unit_values("Type"), ["notify"]);
    assert_eq!(unit_values("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(unit_values("NoNewPrivileges"), ["yes"]);
    assert_eq!(unit_values("ProtectSystem"), ["strict"]);
    assert_eq!(unit_values("User"), ["balancer"]);
    let writable: Vec<&str> = unit_values("ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .collect();
    for path in ["/sys/fs/bpf/balancer", "/var/log/balancer"] {
        assert!(
            writable.contains(&path),
            "ReadWritePaths has {path}: {writable:?}"
        );
    }
    assert!(
        unit_values("ExecStartPre")
            .iter()
            .any(|v| v.starts_with('+')
                && v.contains("-o balancer")
                && v.contains("/sys/fs/bpf/balancer")),
        "the unit creates the pin directory for its user"
    );

    // systemd-analyze (Debian 12: systemd 252) warns but still exits 0 on unknown keys or
    // values, so any output is a failure. It checks that commands exist: the copy runs the
    // binary under test instead of /usr/bin/balancer.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: skipping `verify` only");
        return;
    }
    let scratch = scratch("unit");
    let dir = scratch.path();
    let unit = dir.join("balancer.service");
    std::fs::write(
        &unit,
        UNIT.replace("/usr/bin/balancer", &balancer_binary().to_string_lossy()),
    )
    .expect("write unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {}\n{said}",
        output.status
    );
}

/// A directory removed when dropped, also when the test fails.
fn scratch(tag: &str) -> TempDir {
    let dir = TempDir::new(&format!("systemd-{tag}")).expect("scratch dir");
    // nobody must reach the config, the certificates and the notify socket.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// The next sd_notify datagram, within 20 s.
fn next_notification(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("an sd_notify datagram within 20 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// `CapEff` of `pid` as capability names, from /proc and capsh's numbering.
fn effective_capabilities(pid: u32) -> (u32, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {status}"))
            .trim()
            .to_string()
    };
    let uid: u32 = field("Uid:")
        .split_whitespace()
        .nth(1)
        .expect("effective uid")
        .parse()
        .expect("uid");
    let caps = u64::from_str_radix(&field("CapEff:"), 16).expect("CapEff");
    (uid, caps)
}

/// Removes the pins of the test's pin directory, also when the test fails.
struct Pins {
    dir: PathBuf,
    config: PathBuf,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = Command::new(balancer_binary())
            .args(["unload", "--config"])
            .arg(&self.config)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn balancer_runs_as_nobody_with_only_the_units_capabilities_and_speaks_sd_notify() {
    let topology = ClientBalancer::new("lp", &[VIP]).expect("topology");
    let scratch = scratch("run");
    let dir = scratch.path();
    let certs = Certs::new().expect("certs");
    let site = certs.issue("site", &["www.example.test"]).expect("cert");
    for (from, to) in [(&site.cert, "cert.pem"), (&site.key, "key.pem")] {
        std::fs::copy(from, dir.join(to)).expect("copy");
        std::os::unix::fs::chown(dir.join(to), Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    std::fs::write(dir.join("index.html"), "served by nobody\n").expect("index");
    let pin_dir = PathBuf::from(format!(
        "/sys/fs/bpf/balancer-test-lp-{}",
        balancer_tests::unique_suffix()
    ));
    std::fs::create_dir_all(&pin_dir).expect("pin dir");
    // What the unit's `ExecStartPre=+install -d -o balancer …` does for its user.
    std::os::unix::fs::chown(&pin_dir, Some(NOBODY), Some(NOBODY)).expect("chown pin dir");
    let config = dir.join("balancer.toml");
    let _pins = Pins {
        dir: pin_dir.clone(),
        config: config.clone(),
    };
    let balancer_ip = ClientBalancer::BALANCER_V4;
    let write_config = |extra_route: &str| {
        std::fs::write(
            &config,
            format!(
                r#"[admin]
listen = "127.0.0.1:9100"

[xdp]
interface = "{iface}"
pin_path = "{pins}"

[[vip]]
name = "web"
address = "{VIP}"
port = 7
protocol = "tcp"
forward = "local"

[[listener]]
name = "http"
bind = "{balancer_ip}:80"

[[listener]]
name = "https"
bind = "{balancer_ip}:443"
tls = {{ certificates = [ {{ cert = "cert.pem", key = "key.pem" }} ] }}

[[route]]
static_dir = "."
{extra_route}"#,
                iface = topology.balancer_if,
                pins = pin_dir.display(),
            ),
        )
        .expect("write config");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    };
    write_config("");

    let notify_path = dir.join("notify.sock");
    let notifications = UnixDatagram::bind(&notify_path).expect("notify socket");
    std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o777))
        .expect("chmod notify socket");

    let caps: Vec<String> = unit_values("AmbientCapabilities")[0]
        .split_whitespace()
        .map(|cap| format!("+{}", cap.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let caps = format!("-all,{}", caps.join(","));
    let wrapper: Vec<String> = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &format!("--inh-caps={caps}"),
        &format!("--ambient-caps={caps}"),
        &format!("--bounding-set={caps}"),
        "--no-new-privs",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let env = [(
        "NOTIFY_SOCKET".to_string(),
        notify_path.to_string_lossy().into_owned(),
    )];
    let mut balancer = BalancerProcess::start_wrapped(
        &topology.balancer,
        &config,
        "127.0.0.1:9100",
        &wrapper,
        &env,
    )
    .unwrap_or_else(|err| panic!("balancer as nobody: {err:#}"));
    let ready = next_notification(&notifications);
    assert!(ready.starts_with("READY=1"), "{ready}");

    let pid = balancer.pid().expect("running");
    let (uid, caps) = effective_capabilities(pid);
    assert_eq!(uid, NOBODY, "runs as nobody");
    // CAP_NET_BIND_SERVICE 10, CAP_NET_ADMIN 12, CAP_PERFMON 38, CAP_BPF 39.
    assert_eq!(
        caps,
        (1 << 10) | (1 << 12) | (1 << 38) | (1 << 39),
        "exactly the unit's capabilities: {caps:#x}"
    );

    // XDP is attached: the local VIP's packets are counted by the program.
    let listener = topology
        .balancer
        .run(|| std::net::TcpListener::bind(socket_addr(VIP, 7)))
        .expect("enter")
        .expect("bind VIP");
    spawn_echo_server(listener);
    topology
        .client
        .run(|| balancer_tests::traffic::tcp_ping_pong(socket_addr(VIP, 7), 3))
        .expect("enter")
        .expect("TCP through the VIP");
    let (_, metrics) = balancer.admin_get("/metrics").expect("metrics");
    let packets: u64 = metrics
        .lines()
        .find(|l| l.starts_with("balancer_xdp_packets_total{vip=\"web\",action=\"pass\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(
        packets >= 4,
        "the XDP program counted the VIP's packets:\n{metrics}"
    );

    let get = |url: &str| {
        curl(
            &topology.client,
            &[
                "-k",
                "--resolve",
                &format!("www.example.test:443:{balancer_ip}"),
                url,
            ],
        )
        .unwrap_or_else(|err| panic!("{url}: {err:#}"))
    };
    for url in [
        format!("http://{balancer_ip}/index.html"),
        "https://www.example.test/index.html".to_string(),
    ] {
        let reply = get(&url);
        let body = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.status, 200, "{url}: {body}");
        assert_eq!(body, "served by nobody\n", "{url}");
    }

    // A reload (SIGHUP) as nobody: a new route serves, between RELOADING=1 and READY=1.
    std::fs::create_dir_all(dir.join("more")).expect("dir");
    std::fs::write(dir.join("more/index.html"), "reloaded\n").expect("file");
    write_config(&format!(
        "\n[[route]]\npath = \"/more/\"\nstrip_prefix = true\nstatic_dir = \"{}\"\n",
        dir.join("more").display()
    ));
    balancer.reload().expect("SIGHUP");
    let reloading = next_notification(&notifications);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let ready = next_notification(&notifications);
    assert!(ready.starts_with("READY=1"), "{ready}");
    assert!(!ready.contains("refused"), "{ready}\n{}", balancer.log());
    let reply = get(&format!("http://{balancer_ip}/more/index.html"));
    assert_eq!(String::from_utf8_lossy(&reply.body), "reloaded\n");

    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline && !Path::new(&pin_dir).join("link").exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        pin_dir.join("link").exists(),
        "the XDP link is pinned as nobody"
    );

    let status = balancer.terminate().expect("SIGTERM");
    assert!(status.success(), "{status}\n{}", balancer.log());
    let stopping = next_notification(&notifications);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
}
