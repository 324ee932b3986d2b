//! `bench_l7`: the L7 benchmark driver that `cargo xtask bench` runs (as root).
//!
//! ```text
//! bench_l7 [--quick] [--seconds S] [--rounds N] [--idle-connections N]
//!          [--targets direct,relay,balancer,nginx,haproxy,balancer_logged,nginx_logged,balancer_default]
//!          [--cases http1_keepalive,http1_tls_keepalive,h2,tls_new_connections,tls_full_handshakes,default_config_c64,default_config_c1000]
//!          [--nice N] [--skip-memory] [--skip-load] [--skip-instructions]
//! ```
//!
//! In one fresh network namespace (loopback only, 127.0.0.1) it starts one `l7_backend`
//! and three reverse proxies in front of it, configured alike: `balancer`, nginx and
//! HAProxy, each listening for plain HTTP on one port and for HTTPS (TLS 1.3, one
//! self-signed ECDSA P-256 certificate, ALPN h2 and http/1.1) on another, routing `/` to
//! the backend with upstream keep-alive and without access logs. Each proxy runs one
//! worker pinned to CPU 1 (`balancer` with `TOKIO_WORKER_THREADS=1`, nginx
//! `worker_processes 1`, HAProxy `nbthread 1`); the load generators and the backend run
//! on CPU 0. Beside them, `balancer_default` is balancer as a new user starts it: a config
//! with one listener, one route and a pool of one server, nothing else (no keep-alive
//! table, no tuning, its default access log on), and no environment but `RUST_LOG=info`
//! (the default). Then it measures, through each proxy and direct to the backend:
//!
//! 1. HTTP/1.1 keep-alive: `wrk -t1 -c50 --latency` → requests/s, p50, p99. Also through
//!    `l7_relay` on the same CPU, a byte relay with no HTTP in it: the floor, what the kernel
//!    charges for the four socket calls per request that every proxy makes.
//!    And through balancer and nginx once more, each writing nginx's combined access log to
//!    a file with the same buffering (64 KiB, flushed every second): what logging costs.
//! 2. HTTP/1.1 keep-alive over TLS: the same wrk run against each proxy's HTTPS port (wrk
//!    offers no ALPN, so every proxy speaks HTTP/1.1).
//! 3. h2 over TLS: `h2load -c10 -m10` (direct: h2c with prior knowledge) → requests/s,
//!    and p50/p99 of the per-request times of its `--log-file`.
//! 4. New TLS connections: `wrk -t1 -c20 -H 'Connection: close'` over HTTPS → connections/s
//!    (one request per connection; direct: plain HTTP, the backend has no TLS).
//! 5. Default config: `wrk -t1 -c64` and `-c1000` (plain HTTP) through `balancer_default`,
//!    and for comparison through balancer, nginx and HAProxy with their bench configs, each
//!    run right after a warm-up at the same concurrency → requests/s, and the new upstream
//!    connections per 1000 requests over the measured run: the connections the backend
//!    accepted (its `/stats`) and, for balancer, its own `connections_opened` (`/api/state`).
//! 6. Memory: the proxy's resident set (`VmRSS` of the process and its children) before and
//!    after this driver opens N idle keep-alive connections to its plain port (each sends
//!    one request and keeps the connection), then after closing them and with N again; the
//!    backend's too, for reference. Then N idle connections to its HTTPS port the same way
//!    (a full TLS 1.3 handshake, one HTTP/1.1 request, the connection kept open).
//!
//! 7. Instructions: the user-space instructions balancer and nginx execute per HTTP/1.1
//!    keep-alive request, counted by callgrind in an instance of each started for it (the same
//!    config on another port, nginx as one process): `h2load --h1 -c10`, a fixed number of
//!    requests after as many to warm up. A count does not move with the machine's load as CPU
//!    time does, so it shows small changes that the timed runs cannot.
//!
//! Every load run also reads the proxy's CPU time (user and kernel) from `/proc`.
//! The load cases run in rounds (every case through every target per round, so that a
//! disturbance from elsewhere on the machine is spread over the targets); each figure is
//! the median over the rounds. Every run is bounded in time and stops by itself.
//!
//! Prints one JSON document on stdout (what `cargo xtask bench` turns into the report);
//! progress goes to stderr. A proxy that fails to start or dies is reported as such in
//! the JSON, with the tail of its log, and the others are still measured. Everything it
//! creates (the namespace, processes, the scratch directory) is removed on every path,
//! also on Ctrl-C and SIGTERM.

use std::{
    collections::BTreeMap,
    io::Read,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Command, ExitCode, ExitStatus, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail, ensure};
use balancer_tests::{
    Netns, child::ChildGuard, cleanup_everything, l4topology::set_sysctls, l7::AnyCertificate,
    run_in, unique_suffix,
};
use clap::Parser;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The CPU the proxy under test runs on, and the one the load generator and backend share.
const PROXY_CPU: u32 = 1;
const LOAD_CPU: u32 = 0;
const BACKEND_PORT: u16 = 8000;
const ADMIN: &str = "127.0.0.1:9100";
/// The admin listener of `balancer_default`: the one line of its config that is not what a
/// new user writes, because the bench's other balancer already holds the default (9100).
const DEFAULT_ADMIN: &str = "127.0.0.1:9102";
/// wrk connections for HTTP/1.1 keep-alive, and for new TLS connections.
const WRK_CONNECTIONS: u32 = 50;
const WRK_TLS_CONNECTIONS: u32 = 20;
/// The default-config case's two runs: (case key, wrk connections). wrk inherits the
/// open-file limit this driver raises at start (as nginx gets `worker_rlimit_nofile`).
const DEFAULT_CONFIG_RUNS: [(&str, u32); 2] =
    [("default_config_c64", 64), ("default_config_c1000", 1000)];
/// h2load connections and concurrent streams per connection.
const H2_CONNECTIONS: u32 = 10;
const H2_STREAMS: u32 = 10;
/// The idle connections of the memory case are opened this many at a time (which also
/// bounds the proxies' upstream connections while they are opened).
const IDLE_OPEN_CONCURRENCY: usize = 100;
/// Per-connection limit for opening an idle connection (connect, request, response).
const IDLE_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Open-file limit of the driver and everything it starts.
const NOFILE: u64 = 65_536;
/// Scheduling priority of everything measured (proxies, backend, load generators): ahead
/// of whatever else runs on a shared machine, alike for every target.
const DEFAULT_NICE: i32 = -10;
static NICE: AtomicI32 = AtomicI32::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Direct,
    /// `l7_relay`: bytes copied between each client connection and its own upstream
    /// connection, no HTTP. The floor of the HTTP/1.1 case: the kernel's share of any proxy.
    Relay,
    Balancer,
    Nginx,
    Haproxy,
    /// balancer and nginx again, each writing nginx's combined access log to a file,
    /// buffered alike (64 KiB, flushed every second): the HTTP/1.1 case's logging cost.
    BalancerLogged,
    NginxLogged,
    /// balancer with the config a new user writes (a listener, a route, a pool of one
    /// server; no keep-alive table, no tuning): measured in the default-config case only.
    BalancerDefault,
}

impl Target {
    const ALL: [Target; 8] = [
        Target::Direct,
        Target::Relay,
        Target::Balancer,
        Target::Nginx,
        Target::Haproxy,
        Target::BalancerLogged,
        Target::NginxLogged,
        Target::BalancerDefault,
    ];

    fn key(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Relay => "relay",
            Target::Balancer => "balancer",
            Target::Nginx => "nginx",
            Target::Haproxy => "haproxy",
            Target::BalancerLogged => "balancer_logged",
            Target::NginxLogged => "nginx_logged",
            Target::BalancerDefault => "balancer_default",
        }
    }

    fn plain_port(self) -> u16 {
        match self {
            Target::Direct => BACKEND_PORT,
            Target::Relay => 8083,
            Target::Balancer => 8080,
            Target::Nginx => 8081,
            Target::Haproxy => 8082,
            Target::BalancerLogged => 8084,
            Target::NginxLogged => 8085,
            Target::BalancerDefault => 8086,
        }
    }

    /// The backend speaks no TLS, nor does the relay.
    fn tls_port(self) -> Option<u16> {
        match self {
            Target::Direct
            | Target::Relay
            | Target::BalancerLogged
            | Target::NginxLogged
            | Target::BalancerDefault => None,
            Target::Balancer => Some(8443),
            Target::Nginx => Some(8444),
            Target::Haproxy => Some(8445),
        }
    }

    /// Runs as its own process in front of the backend (its CPU time is measured).
    fn is_proxy(self) -> bool {
        self != Target::Direct
    }

    /// Measured only in the HTTP/1.1 case, beside its twin without logging.
    fn is_logged(self) -> bool {
        matches!(self, Target::BalancerLogged | Target::NginxLogged)
    }

    /// h2c with prior knowledge on the plain port: the backend, and the relay in front of it.
    fn speaks_h2c(self) -> bool {
        matches!(self, Target::Direct | Target::Relay)
    }

    /// balancer's admin listener, where `/api/state` counts the connections it opened.
    fn admin(self) -> Option<&'static str> {
        match self {
            Target::Balancer => Some(ADMIN),
            Target::BalancerDefault => Some(DEFAULT_ADMIN),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Http1,
    /// The HTTP/1.1 case against the HTTPS port: keep-alive over TLS.
    Http1Tls,
    H2,
    /// wrk with `Connection: close`: wrk resumes the TLS session of its previous
    /// connection (a TLS 1.3 ticket) whenever the server issued one.
    TlsNew,
    /// This driver's rustls client with resumption disabled: a full handshake each time.
    TlsFull,
    /// HTTP/1.1 keep-alive at the connections of `DEFAULT_CONFIG_RUNS[i]`, right after a
    /// warm-up at as many, counting the new upstream connections of the measured run.
    DefaultConfig(usize),
}

impl Case {
    const ALL: [Case; 7] = [
        Case::Http1,
        Case::Http1Tls,
        Case::H2,
        Case::TlsNew,
        Case::TlsFull,
        Case::DefaultConfig(0),
        Case::DefaultConfig(1),
    ];

    fn key(self) -> &'static str {
        match self {
            Case::Http1 => "http1_keepalive",
            Case::Http1Tls => "http1_tls_keepalive",
            Case::H2 => "h2",
            Case::TlsNew => "tls_new_connections",
            Case::TlsFull => "tls_full_handshakes",
            Case::DefaultConfig(i) => DEFAULT_CONFIG_RUNS[i].0,
        }
    }

    /// Whether `target` takes part (the backend has no TLS; for the wrk case it is
    /// measured over plain HTTP as a reference; the relay is the HTTP/1.1 case's floor;
    /// the default-config balancer is compared with the three proxies' bench configs).
    fn applies_to(self, target: Target) -> bool {
        match (self, target) {
            (Case::DefaultConfig(_), target) => matches!(
                target,
                Target::BalancerDefault | Target::Balancer | Target::Nginx | Target::Haproxy
            ),
            (_, Target::BalancerDefault) => false,
            (Case::Http1Tls, target) => target.tls_port().is_some(),
            (_, Target::Relay | Target::BalancerLogged | Target::NginxLogged) => {
                self == Case::Http1
            }
            (_, Target::Direct) => self != Case::TlsFull,
            _ => true,
        }
    }
}

/// The L7 benchmark driver (see the module doc).
#[derive(Parser)]
#[command(name = "bench_l7", args_override_self = true)]
struct Cli {
    /// Fewer seconds and rounds (the defaults below are the full run's).
    #[arg(long)]
    quick: bool,
    /// Seconds per measurement, 1..=30 [default: 5, 3 with --quick].
    #[arg(long)]
    seconds: Option<u64>,
    /// Rounds per measurement, 1..=10 [default: 3, 1 with --quick].
    #[arg(long)]
    rounds: Option<usize>,
    /// Idle keep-alive connections for the memory measurement, 1..=50000.
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// Only these targets: direct, relay, balancer, nginx, haproxy, balancer_logged,
    /// nginx_logged, balancer_default (comma-separated).
    #[arg(long)]
    targets: Option<String>,
    /// Only these cases: http1_keepalive, http1_tls_keepalive, h2, tls_new_connections,
    /// tls_full_handshakes, default_config_c64, default_config_c1000 (comma-separated).
    #[arg(long)]
    cases: Option<String>,
    /// Niceness of everything it starts, -20..=19.
    #[arg(long, default_value_t = DEFAULT_NICE, allow_negative_numbers = true)]
    nice: i32,
    /// Leave out the memory measurement.
    #[arg(long)]
    skip_memory: bool,
    /// Leave out the load measurements.
    #[arg(long)]
    skip_load: bool,
    /// Leave out the instruction counts (callgrind).
    #[arg(long)]
    skip_instructions: bool,
}

struct Args {
    seconds: u64,
    rounds: usize,
    idle_connections: usize,
    targets: Vec<Target>,
    cases: Vec<Case>,
    nice: i32,
    memory: bool,
    load: bool,
    instructions: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let cli = Cli::parse();
    let quick = cli.quick;
    let targets = match cli.targets {
        None => Target::ALL.to_vec(),
        Some(names) => {
            let mut targets = names
                .split(',')
                .map(|name| {
                    Target::ALL
                        .into_iter()
                        .find(|t| t.key() == name)
                        .with_context(|| format!("unknown target {name}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            targets.sort();
            targets.dedup();
            targets
        }
    };
    let cases = match cli.cases {
        None => Case::ALL.to_vec(),
        Some(names) => names
            .split(',')
            .map(|name| {
                Case::ALL
                    .into_iter()
                    .find(|c| c.key() == name)
                    .with_context(|| format!("unknown case {name}"))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let args = Args {
        seconds: cli.seconds.unwrap_or(if quick { 3 } else { 5 }),
        rounds: cli.rounds.unwrap_or(if quick { 1 } else { 3 }),
        idle_connections: cli.idle_connections,
        targets,
        cases,
        nice: cli.nice,
        memory: !cli.skip_memory,
        load: !cli.skip_load,
        instructions: !cli.skip_instructions,
    };
    ensure!(
        (1..=30).contains(&args.seconds),
        "--seconds must be in 1..=30: load is bounded"
    );
    ensure!(
        (1..=10).contains(&args.rounds),
        "--rounds must be in 1..=10"
    );
    ensure!(
        (-20..=19).contains(&args.nice),
        "--nice must be in -20..=19"
    );
    ensure!(
        (1..=50_000).contains(&args.idle_connections),
        "--idle-connections must be in 1..=50000"
    );
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("bench_l7: {err:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = ctrlc::set_handler(|| {
        eprintln!("\nbench_l7: interrupted, tearing down");
        cleanup_everything();
        if let Some(dir) = SCRATCH.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::process::exit(130);
    }) {
        eprintln!("bench_l7: cannot install the Ctrl-C handler: {err}");
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(result) => {
            println!("{result:#}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench_l7: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<Value> {
    let tools = tool_versions()?;
    NICE.store(args.nice, Ordering::Relaxed);
    let nofile = raise_nofile_limit()?;
    // Connections each proxy may hold: room for the idle ones, the upstream ones and the
    // load runs (the largest has 1000 client connections, each with its upstream one),
    // within the open-file limit. HAProxy reserves two descriptors per connection (client
    // and server side) and refuses to start when `maxconn` does not fit, so where the limit
    // cannot be raised (no CAP_SYS_RESOURCE) it gets fewer, and every proxy is measured
    // with the idle connections HAProxy can take.
    let max_connections = (args.idle_connections * 2).max(8192).min(nofile as usize);
    let haproxy_maxconn = max_connections.min((nofile as usize).saturating_sub(100) / 2);
    let mut idle_connections = args.idle_connections.min(nofile as usize - 1000);
    if args.targets.contains(&Target::Haproxy) {
        idle_connections = idle_connections.min(haproxy_maxconn.saturating_sub(100));
    }
    ensure!(
        idle_connections > 0,
        "the open-file limit ({nofile}) leaves no room for idle connections"
    );
    if idle_connections < args.idle_connections {
        eprintln!(
            "bench_l7: the open-file limit is {nofile} and cannot be raised: measuring memory \
             with {idle_connections} idle connections, not {}",
            args.idle_connections
        );
    }
    let dir = ScratchDir::new()?;
    let netns = Netns::new(format!("bl-bench-l7-{}", unique_suffix()))?;
    // 10 000 idle connections per proxy, one proxy after the other, plus the load runs. The
    // ports the bench listens on (backend, proxies, admin APIs, the callgrind instances) are
    // kept out of that wide range: a connection's local port could otherwise take one of them
    // first, and the proxy started after it could not listen there (it happened to the
    // callgrind instance's admin port, 9108, after the 1 000-connection runs).
    set_sysctls(
        &netns,
        &[
            ("net.ipv4.ip_local_port_range", "1024 65535"),
            ("net.ipv4.ip_local_reserved_ports", "8000-9199"),
            ("net.core.somaxconn", "65535"),
        ],
    )?;
    eprintln!(
        "bench_l7: namespace {}, proxies on CPU {PROXY_CPU}, load and backend on CPU {LOAD_CPU}",
        netns.name()
    );
    let certs = Certs::write(&dir.0)?;
    let mut backend = start_backend(&netns, &dir.0)?;

    let mut proxies: BTreeMap<Target, Proc> = BTreeMap::new();
    let mut failures: BTreeMap<Target, String> = BTreeMap::new();
    for &target in args.targets.iter().filter(|t| t.is_proxy()) {
        match start_proxy(
            target,
            &netns,
            &dir.0,
            &certs,
            max_connections,
            haproxy_maxconn,
            nofile,
        ) {
            Ok(process) => {
                proxies.insert(target, process);
            }
            Err(err) => {
                eprintln!("bench_l7: {} did not start: {err:#}", target.key());
                failures.insert(target, format!("did not start: {err:#}"));
            }
        }
    }
    let live: Vec<Target> = args
        .targets
        .iter()
        .copied()
        .filter(|t| !failures.contains_key(t))
        .collect();

    let mut checks = serde_json::Map::new();
    for &target in &live {
        checks.insert(target.key().into(), check_target(&netns, target));
    }
    let resumption = resumption_checks(&netns, &live);

    let mut memory = serde_json::Map::new();
    if args.memory {
        // The backend too, as a reference: hyper alone, without proxying.
        for &target in live
            .iter()
            .filter(|t| !matches!(t, Target::Relay | Target::BalancerDefault) && !t.is_logged())
        {
            let process = match target {
                Target::Direct => &mut backend,
                _ => proxies.get_mut(&target).expect("started"),
            };
            let result =
                measure_memory(&netns, target, process, idle_connections).unwrap_or_else(|err| {
                    eprintln!("bench_l7:   {}: memory: {err:#}", target.key());
                    json!({ "error": format!("{err:#}") })
                });
            memory.insert(target.key().into(), result);
        }
    }

    let mut cases = serde_json::Map::new();
    if args.load {
        cases = measure_load(args, &netns, &dir.0, &live, &mut proxies, &mut failures);
    }

    // After the load runs, which it would disturb: the proxies measured are instances of
    // their own, beside the idle ones.
    let mut instructions = serde_json::Map::new();
    if args.instructions {
        for target in [Target::Balancer, Target::Nginx]
            .into_iter()
            .filter(|target| live.contains(target))
        {
            let result = measure_instructions(&netns, &dir.0, target, max_connections, nofile)
                .unwrap_or_else(|err| {
                    eprintln!("bench_l7:   {}: instructions: {err:#}", target.key());
                    json!({ "error": format!("{err:#}") })
                });
            instructions.insert(target.key().into(), result);
        }
    }

    // Processes the proxies logged about (errors, warnings), and any that died.
    let mut logs = serde_json::Map::new();
    for (target, process) in &mut proxies {
        let alive = process.alive();
        let status = process.stop();
        // The default config logs every request to stderr: what else it said is wanted.
        let tail = if *target == Target::BalancerDefault {
            process.log_tail_without(40, " access: ")
        } else {
            process.log_tail(40)
        };
        if !alive {
            failures
                .entry(*target)
                .or_insert_with(|| format!("exited during the benchmark ({status:?})"));
        }
        logs.insert(
            target.key().into(),
            json!({ "exit": status.map(|s| s.to_string()), "log_tail": tail }),
        );
    }
    let _ = backend.stop();
    drop(netns);

    Ok(json!({
        "seconds_per_run": args.seconds,
        "nice": args.nice,
        "rounds": args.rounds,
        "proxy_cpu": PROXY_CPU,
        "load_cpu": LOAD_CPU,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "wrk_connections": WRK_CONNECTIONS,
        "wrk_tls_connections": WRK_TLS_CONNECTIONS,
        "default_config_connections": DEFAULT_CONFIG_RUNS.map(|(_, n)| n),
        "default_config": balancer_default_config(),
        "h2_connections": H2_CONNECTIONS,
        "h2_streams_per_connection": H2_STREAMS,
        "idle_connections": idle_connections,
        "idle_connections_requested": args.idle_connections,
        "open_file_limit": nofile,
        "proxy_max_connections": max_connections,
        "haproxy_maxconn": haproxy_maxconn,
        "tools": tools,
        "targets": args.targets.iter().map(|t| t.key()).collect::<Vec<_>>(),
        "failures": failures.iter().map(|(t, e)| (t.key().to_string(), json!(e))).collect::<serde_json::Map<_, _>>(),
        "checks": checks,
        "tls_resumption": resumption,
        "cases": cases,
        "memory": memory,
        "instructions": instructions,
        "instruction_requests": INSTRUCTION_REQUESTS,
        "instruction_connections": INSTRUCTION_CONNECTIONS,
        "logs": logs,
    }))
}

// ===========================================================================
// Processes

/// The scratch directory, for the interrupt handler (children and namespaces are recorded by
/// the harness itself: see `cleanup_everything`).
static SCRATCH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// A scratch directory (certificates, configs, logs) removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> anyhow::Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!("balancer-bench-l7-{}", unique_suffix()));
        std::fs::create_dir_all(&path)?;
        *SCRATCH.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.clone());
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        SCRATCH.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// A long-running process in the namespace, pinned to one CPU, output to a log file;
/// SIGTERM on drop.
struct Proc {
    name: String,
    child: ChildGuard,
    pid: u32,
    log: PathBuf,
}

impl Proc {
    fn spawn(
        netns: &Netns,
        name: &str,
        cpu: u32,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Proc> {
        let file = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
        // nsenter and taskset exec the program: the child's pid is the program's.
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", netns.path()))
            .args(["nice", "-n", &NICE.load(Ordering::Relaxed).to_string()])
            .args(["taskset", "-c", &cpu.to_string()])
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let pid = child.id();
        Ok(Proc {
            name: name.to_string(),
            child: ChildGuard::new(child, name, Duration::from_secs(10)),
            pid,
            log: log.to_path_buf(),
        })
    }

    fn alive(&mut self) -> bool {
        self.child.is_running()
    }

    fn log_tail(&self, lines: usize) -> String {
        self.log_tail_without(lines, "\n")
    }

    /// The last `lines` lines of the log that do not contain `skip`.
    fn log_tail_without(&self, lines: usize, skip: &str) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().filter(|l| !l.contains(skip)).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then up to 10 s before SIGKILL. None if it was already stopped. Drop does the
    /// same.
    fn stop(&mut self) -> Option<ExitStatus> {
        let exit = self.child.stop().ok()?;
        if exit.killed {
            eprintln!(
                "bench_l7: {} ignored SIGTERM for 10 s: killed it",
                self.name
            );
        }
        Some(exit.status)
    }
}

/// Runs a command in the namespace pinned to `cpu`, killed if it outlives `limit`.
fn run_bounded(
    netns: &Netns,
    cpu: u32,
    program: &str,
    args: &[String],
    limit: Duration,
) -> anyhow::Result<Output> {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", netns.path()))
        .args(["nice", "-n", &NICE.load(Ordering::Relaxed).to_string()])
        .args(["taskset", "-c", &cpu.to_string(), program])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let mut child = ChildGuard::new(child, program, Duration::ZERO);
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let exit = child.wait_exit(limit)?;
    if exit.killed {
        bail!("{program} ran longer than {limit:?}: killed");
    }
    let output = Output {
        status: exit.status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    Ok(output)
}

/// Raises the open-file limit of the driver (and so of everything it starts) to its hard
/// limit, at most `NOFILE`; returns it. Without CAP_SYS_RESOURCE the hard limit stays.
fn raise_nofile_limit() -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        let wanted = libc::rlimit {
            rlim_cur: NOFILE.max(limit.rlim_cur),
            rlim_max: NOFILE.max(limit.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const wanted) == 0 {
            return Ok(wanted.rlim_cur);
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// The first line of each tool's version output; fails naming what is missing.
fn tool_versions() -> anyhow::Result<Value> {
    let mut versions = serde_json::Map::new();
    let mut missing = Vec::new();
    for (tool, args, package) in [
        ("wrk", &["--version"][..], "wrk"),
        ("h2load", &["--version"][..], "nghttp2-client"),
        ("nginx", &["-v"][..], "nginx"),
        ("haproxy", &["-v"][..], "haproxy"),
        ("taskset", &["-V"][..], "util-linux"),
        ("curl", &["--version"][..], "curl"),
        ("openssl", &["version"][..], "openssl"),
        ("ss", &["-V"][..], "iproute2"),
        ("valgrind", &["--version"][..], "valgrind"),
        ("callgrind_control", &["--version"][..], "valgrind"),
    ] {
        match Command::new(tool).args(args).stdin(Stdio::null()).output() {
            Ok(output) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                let first = text.lines().next().unwrap_or("").trim().to_string();
                versions.insert(tool.into(), json!(first));
            }
            Err(_) => missing.push(format!("{tool} (package {package})")),
        }
    }
    ensure!(
        missing.is_empty(),
        "missing: {} (`cargo xtask setup` installs them)",
        missing.join(", ")
    );
    Ok(Value::Object(versions))
}

/// HTTP/1.1 keep-alive requests whose user-space instructions are counted (callgrind), after
/// as many again to warm up. Counts, not durations: valgrind runs a proxy some 50 times
/// slower, and an instruction count is the same on every run, where CPU time moves by
/// ±10 % with whatever else the machine does.
const INSTRUCTION_REQUESTS: u32 = 5_000;
/// `h2load --h1` connections that send them.
const INSTRUCTION_CONNECTIONS: u32 = 10;

/// The user-space instructions `target` executes per HTTP/1.1 keep-alive request: an instance
/// of its own under callgrind (one worker, its bench config on a port of its own), warmed up,
/// its counters zeroed, then [`INSTRUCTION_REQUESTS`] requests through it and a dump.
fn measure_instructions(
    netns: &Netns,
    dir: &Path,
    target: Target,
    max_connections: usize,
    nofile: u64,
) -> anyhow::Result<Value> {
    let name = format!("{}-callgrind", target.key());
    let (port, program, args, env): (u16, PathBuf, Vec<String>, &[(&str, &str)]) = match target {
        Target::Balancer => {
            let port = 8190;
            let config = dir.join(format!("{name}.toml"));
            std::fs::write(
                &config,
                balancer_toml(
                    "127.0.0.1:9108",
                    "access_log = \"off\"",
                    max_connections,
                    &[("plain", port, String::new())],
                ),
            )?;
            let args = vec![
                "run".into(),
                "--config".into(),
                config.to_string_lossy().into_owned(),
            ];
            (
                port,
                balancer_binary()?,
                args,
                &[("TOKIO_WORKER_THREADS", "1"), ("RUST_LOG", "warn")],
            )
        }
        Target::Nginx => {
            let port = 8191;
            // One process: the worker is the process valgrind runs.
            let text = nginx_http_config(
                dir,
                &name,
                max_connections,
                nofile,
                "off",
                &[format!("127.0.0.1:{port}")],
            )
            .replacen("daemon off;", "daemon off;\nmaster_process off;", 1);
            ensure!(
                text.contains("master_process off;"),
                "nginx config: no daemon line"
            );
            let config = dir.join(format!("{name}.conf"));
            std::fs::write(&config, text)?;
            let error_log = dir.join(format!("{name}-error.log"));
            let args = vec![
                "-p".into(),
                format!("{}/", dir.display()),
                "-e".into(),
                error_log.to_string_lossy().into_owned(),
                "-c".into(),
                config.to_string_lossy().into_owned(),
            ];
            (port, PathBuf::from("nginx"), args, &[])
        }
        _ => bail!("no instruction count for {}", target.key()),
    };
    let out = dir.join(format!("{name}.out"));
    let mut valgrind_args = vec![
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}", out.display()),
        program.to_string_lossy().into_owned(),
    ];
    valgrind_args.extend(args);
    let valgrind_args: Vec<&str> = valgrind_args.iter().map(String::as_str).collect();
    let log = dir.join(format!("{name}.log"));
    let mut process = Proc::spawn(
        netns,
        &name,
        PROXY_CPU,
        Path::new("valgrind"),
        &valgrind_args,
        env,
        &log,
    )?;
    let url = format!("http://127.0.0.1:{port}/bench");
    let requests = |count: u32| -> anyhow::Result<()> {
        let args = [
            "--h1".to_string(),
            "-n".into(),
            count.to_string(),
            // h2load refuses fewer requests than connections.
            "-c".into(),
            INSTRUCTION_CONNECTIONS.min(count).to_string(),
            url.clone(),
        ];
        let output = run_bounded(netns, LOAD_CPU, "h2load", &args, Duration::from_secs(120))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let succeeded = text
            .lines()
            .find_map(|line| line.strip_prefix("requests: "))
            .and_then(|line| {
                line.split(", ")
                    .find_map(|part| part.strip_suffix(" succeeded"))
            })
            .and_then(|n| n.trim().parse::<u32>().ok());
        ensure!(
            succeeded == Some(count),
            "h2load: {succeeded:?} of {count} requests succeeded:\n{text}"
        );
        Ok(())
    };
    // Started under valgrind, it takes seconds to listen.
    let deadline = Instant::now() + Duration::from_secs(60);
    while requests(1).is_err() {
        ensure!(
            process.alive() && Instant::now() < deadline,
            "{name} did not answer within 60 s; its log:\n{}",
            process.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    requests(INSTRUCTION_REQUESTS)?;
    let control = |command: &str| -> anyhow::Result<()> {
        let output = Command::new("callgrind_control")
            .args([command, &process.pid.to_string()])
            .stdin(Stdio::null())
            .output()
            .context("callgrind_control")?;
        ensure!(
            output.status.success(),
            "callgrind_control {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    };
    control("-z")?;
    requests(INSTRUCTION_REQUESTS)?;
    control("-d")?;
    let _ = process.stop();
    // The explicit dump is the file's first part (".1"); the one at exit is the file itself.
    let dump = PathBuf::from(format!("{}.1", out.display()));
    let text = std::fs::read_to_string(&dump).with_context(|| format!("{}", dump.display()))?;
    let total: u64 = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("totals: ")
                .or_else(|| line.strip_prefix("summary: "))
        })
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no totals in {}", dump.display()))?;
    let per_request = total as f64 / f64::from(INSTRUCTION_REQUESTS);
    eprintln!(
        "bench_l7:   {}: {per_request:.0} user-space instructions per keep-alive request",
        target.key()
    );
    Ok(json!({ "instructions": total, "per_request": per_request }))
}

/// Resident set of a process and its descendants (nginx: master and worker), in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in process_tree(pid) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("/proc/{pid}/status"))?;
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    }
    Ok(total)
}

/// CPU time of a process and its descendants (all threads), in seconds: (user, kernel).
fn cpu_seconds(pid: u32) -> (f64, f64) {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    process_tree(pid)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which may contain spaces) in parentheses.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime / ticks, stime / ticks))
        })
        .fold((0.0, 0.0), |(user, kernel), (u, k)| (user + u, kernel + k))
}

fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let current = all[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{current}/task")) {
            for task in tasks.flatten() {
                let children =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                all.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    all
}

/// Busy and total ticks of one CPU from `/proc/stat`.
fn cpu_ticks(cpu: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let prefix = format!("cpu{cpu} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&prefix)) else {
        return (0, 0);
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).unwrap_or(&0) + fields.get(4).unwrap_or(&0);
    (total - idle, total)
}

// ===========================================================================
// Certificate, backend, proxies

struct Certs {
    cert: PathBuf,
    key: PathBuf,
    /// Certificate then key, for HAProxy's `crt`.
    combined: PathBuf,
}

impl Certs {
    /// One self-signed ECDSA P-256 certificate for `localhost` and 127.0.0.1.
    fn write(dir: &Path) -> anyhow::Result<Certs> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let cert = params.self_signed(&key)?;
        let certs = Certs {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            combined: dir.join("combined.pem"),
        };
        std::fs::write(&certs.cert, cert.pem())?;
        std::fs::write(&certs.key, key.serialize_pem())?;
        std::fs::write(
            &certs.combined,
            format!("{}{}", cert.pem(), key.serialize_pem()),
        )?;
        Ok(certs)
    }
}

/// `l7_backend`: `$BALANCER_L7_BACKEND`, else next to this binary.
fn backend_binary() -> anyhow::Result<PathBuf> {
    match std::env::var_os("BALANCER_L7_BACKEND") {
        Some(path) => Ok(PathBuf::from(path)),
        None => sibling_binary("l7_backend"),
    }
}

/// `balancer`: `$BALANCER_BIN`, else next to this binary.
fn balancer_binary() -> anyhow::Result<PathBuf> {
    match std::env::var_os("BALANCER_BIN") {
        Some(path) => Ok(PathBuf::from(path)),
        None => sibling_binary("balancer"),
    }
}

/// A binary built next to this one.
fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(name))
}

fn start_backend(netns: &Netns, dir: &Path) -> anyhow::Result<Proc> {
    let binary = backend_binary()?;
    ensure!(
        binary.is_file(),
        "{} does not exist (build the test crate's l7_backend, or set BALANCER_L7_BACKEND)",
        binary.display()
    );
    let listen = format!("127.0.0.1:{BACKEND_PORT}");
    let log = dir.join("backend.log");
    let mut backend = Proc::spawn(
        netns,
        "l7_backend",
        LOAD_CPU,
        &binary,
        &[
            "--name",
            "bench",
            "--listen",
            &listen,
            "--h2c",
            "--threads",
            "1",
        ],
        &[],
        &log,
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let expected = format!("listening bench {listen}");
    loop {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim() == expected)
        {
            return Ok(backend);
        }
        if !backend.alive() || Instant::now() > deadline {
            bail!(
                "l7_backend did not print `{expected}` within 10 s; its output:\n{}",
                backend.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn balancer_config(certs: &Certs, max_connections: usize) -> String {
    let tls = format!(
        "tls = {{ certificates = [ {{ cert = \"{}\", key = \"{}\" }} ] }}\n",
        certs.cert.display(),
        certs.key.display(),
    );
    balancer_toml(
        ADMIN,
        "access_log = \"off\"",
        max_connections,
        &[
            ("plain", Target::Balancer.plain_port(), String::new()),
            ("tls", Target::Balancer.tls_port().expect("TLS"), tls),
        ],
    )
}

/// balancer as a new user configures it: a listener, a route, a pool of one server, nothing
/// else (no keep-alive table, no limits, the default access log). Only the admin address is
/// set, because the bench's other balancer holds the default one.
fn balancer_default_config() -> String {
    format!(
        r#"[admin]
listen = "{DEFAULT_ADMIN}"

[[listener]]
name = "web"
bind = "127.0.0.1:{port}"

[[route]]
path = "/"
pool = "app"

[pool.app]
servers = [ {{ url = "http://127.0.0.1:{BACKEND_PORT}" }} ]
"#,
        port = Target::BalancerDefault.plain_port(),
    )
}

/// balancer with nginx's combined access log in a file: plain HTTP only.
fn balancer_logged_config(dir: &Path, max_connections: usize) -> String {
    balancer_toml(
        "127.0.0.1:9101",
        &format!(
            "access_log_file = \"{}\"",
            dir.join("balancer-access.log").display()
        ),
        max_connections,
        &[("plain", Target::BalancerLogged.plain_port(), String::new())],
    )
}

/// balancer as a reverse proxy to the backend, equivalent to the nginx and HAProxy configs:
/// `access_log` is its `[proxy]` logging line, each listener is (name, port, extra keys),
/// and one route sends every listener's requests to the backend.
fn balancer_toml(
    admin: &str,
    access_log: &str,
    max_connections: usize,
    listeners: &[(&str, u16, String)],
) -> String {
    let listeners: String = listeners
        .iter()
        .map(|(name, port, extra)| {
            format!(
                "[[listener]]\nname = \"{name}\"\nbind = \"127.0.0.1:{port}\"\n\
                 max_connections = {max_connections}\n{extra}\n"
            )
        })
        .collect();
    format!(
        r#"# bench_l7: balancer as a reverse proxy, equivalent to the nginx and HAProxy configs.
[admin]
listen = "{admin}"

[proxy]
{access_log}
shutdown_timeout = "1s"

{listeners}[[route]]
path = "/"
pool = "backend"

# No keep-alive table: the default keeps as many idle upstream connections as the load's
# peak concurrency needed (the h2 case's 100 streams, the default-config case's 1000 clients).
[pool.backend]
servers = [ {{ url = "http://127.0.0.1:{BACKEND_PORT}" }} ]
"#
    )
}

/// nginx with its combined access log in a file, buffered as balancer's is: plain HTTP only.
fn nginx_logged_config(dir: &Path, max_connections: usize, nofile: u64) -> String {
    let access_log = format!(
        "{}/nginx-access.log combined buffer=64k flush=1s",
        dir.display()
    );
    nginx_http_config(
        dir,
        "nginx-logged",
        max_connections,
        nofile,
        &access_log,
        &[format!("127.0.0.1:{}", Target::NginxLogged.plain_port())],
    )
}

fn nginx_config(dir: &Path, certs: &Certs, max_connections: usize, nofile: u64) -> String {
    // nginx 1.22 (Debian 12) has no `http2 on;` (1.25.1): h2 is a `listen` parameter there.
    let tls = format!(
        "127.0.0.1:{} ssl http2;\n        ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_protocols TLSv1.3",
        Target::Nginx.tls_port().expect("TLS"),
        certs.cert.display(),
        certs.key.display(),
    );
    nginx_http_config(
        dir,
        "nginx",
        max_connections,
        nofile,
        "off",
        &[format!("127.0.0.1:{}", Target::Nginx.plain_port()), tls],
    )
}

/// One nginx worker proxying to the backend with upstream keep-alive: `name` names its pid
/// and error log files, `access_log` is that directive's value, and each of `listens` (a
/// `listen` directive's value, then any more directives of its server) is one server block.
fn nginx_http_config(
    dir: &Path,
    name: &str,
    max_connections: usize,
    nofile: u64,
    access_log: &str,
    listens: &[String],
) -> String {
    let dir = dir.display();
    let servers: String = listens
        .iter()
        .map(|listen| {
            format!(
                r#"
    server {{
        listen {listen};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"#
            )
        })
        .collect();
    format!(
        r#"# bench_l7: nginx as a reverse proxy, equivalent to the balancer and HAProxy configs.
worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
user root;
pid {dir}/{name}.pid;
error_log {dir}/{name}-error.log warn;

events {{
    worker_connections {max_connections};
}}

http {{
    access_log {access_log};
    client_body_temp_path {dir}/nginx-body;
    proxy_temp_path {dir}/nginx-proxy;
    fastcgi_temp_path {dir}/nginx-fastcgi;
    uwsgi_temp_path {dir}/nginx-uwsgi;
    scgi_temp_path {dir}/nginx-scgi;
    keepalive_timeout 75s;
    keepalive_requests 10000000;

    # An idle cache above the bench's peak concurrency (1000 clients, 100 h2 streams), so
    # nginx never closes a connection it will need again, as balancer's default and
    # HAProxy's http-reuse never do.
    upstream backend {{
        server 127.0.0.1:{BACKEND_PORT};
        keepalive 1024;
        keepalive_requests 10000000;
    }}
{servers}}}
"#
    )
}

fn haproxy_config(certs: &Certs, max_connections: usize) -> String {
    let (plain, tls) = (
        Target::Haproxy.plain_port(),
        Target::Haproxy.tls_port().expect("TLS"),
    );
    format!(
        r#"# bench_l7: HAProxy as a reverse proxy, equivalent to the balancer and nginx configs.
global
    nbthread 1
    maxconn {max_connections}
    ssl-default-bind-options ssl-min-ver TLSv1.3

defaults
    mode http
    maxconn {max_connections}
    timeout connect 3s
    timeout client 75s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 75s
    http-reuse always

frontend plain
    bind 127.0.0.1:{plain}
    default_backend backend

frontend tls
    bind 127.0.0.1:{tls} ssl crt {combined} alpn h2,http/1.1
    default_backend backend

backend backend
    server backend 127.0.0.1:{BACKEND_PORT}
"#,
        combined = certs.combined.display(),
    )
}

fn start_proxy(
    target: Target,
    netns: &Netns,
    dir: &Path,
    certs: &Certs,
    max_connections: usize,
    haproxy_maxconn: usize,
    nofile: u64,
) -> anyhow::Result<Proc> {
    let log = dir.join(format!("{}.log", target.key()));
    let mut process = match target {
        Target::Balancer | Target::BalancerLogged | Target::BalancerDefault => {
            let binary = balancer_binary()?;
            ensure!(
                binary.is_file(),
                "{} does not exist (set BALANCER_BIN)",
                binary.display()
            );
            // The default config runs with the default environment too: RUST_LOG's default
            // (info, where the access log goes), and no TOKIO_WORKER_THREADS, so tokio's
            // multi-thread runtime with one worker per CPU it may use (one: it is pinned).
            let (file, text, env): (_, _, &[(&str, &str)]) = match target {
                Target::Balancer => (
                    "balancer.toml",
                    balancer_config(certs, max_connections),
                    &[("TOKIO_WORKER_THREADS", "1"), ("RUST_LOG", "warn")],
                ),
                Target::BalancerLogged => (
                    "balancer-logged.toml",
                    balancer_logged_config(dir, max_connections),
                    &[("TOKIO_WORKER_THREADS", "1"), ("RUST_LOG", "warn")],
                ),
                _ => (
                    "balancer-default.toml",
                    balancer_default_config(),
                    &[("RUST_LOG", "info")],
                ),
            };
            let config = dir.join(file);
            std::fs::write(&config, text)?;
            let config = config.to_string_lossy().into_owned();
            Proc::spawn(
                netns,
                "balancer",
                PROXY_CPU,
                &binary,
                &["run", "--config", &config],
                env,
                &log,
            )?
        }
        Target::Nginx | Target::NginxLogged => {
            let (name, text) = if target == Target::Nginx {
                ("nginx", nginx_config(dir, certs, max_connections, nofile))
            } else {
                (
                    "nginx-logged",
                    nginx_logged_config(dir, max_connections, nofile),
                )
            };
            let config = dir.join(format!("{name}.conf"));
            std::fs::write(&config, text)?;
            let prefix = format!("{}/", dir.display());
            let error_log = dir
                .join(format!("{name}-error.log"))
                .to_string_lossy()
                .into_owned();
            let config = config.to_string_lossy().into_owned();
            Proc::spawn(
                netns,
                "nginx",
                PROXY_CPU,
                Path::new("nginx"),
                &["-p", &prefix, "-e", &error_log, "-c", &config],
                &[],
                &log,
            )?
        }
        Target::Haproxy => {
            let config = dir.join("haproxy.cfg");
            std::fs::write(&config, haproxy_config(certs, haproxy_maxconn))?;
            let config = config.to_string_lossy().into_owned();
            Proc::spawn(
                netns,
                "haproxy",
                PROXY_CPU,
                Path::new("haproxy"),
                &["-db", "-f", &config],
                &[],
                &log,
            )?
        }
        Target::Relay => {
            let binary = sibling_binary("l7_relay")?;
            ensure!(binary.is_file(), "{} does not exist", binary.display());
            let listen = format!("127.0.0.1:{}", target.plain_port());
            let upstream = format!("127.0.0.1:{BACKEND_PORT}");
            Proc::spawn(
                netns,
                "l7_relay",
                PROXY_CPU,
                &binary,
                &["--listen", &listen, "--upstream", &upstream],
                &[],
                &log,
            )?
        }
        Target::Direct => bail!("the backend is no proxy"),
    };
    let url = format!("http://127.0.0.1:{}/bench", target.plain_port());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if !process.alive() {
            let status = process.stop();
            let mut log = process.log_tail(40);
            if target == Target::Nginx {
                log.push_str(
                    &std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default(),
                );
            }
            bail!(
                "{} exited during startup ({status:?}); its log:\n{log}",
                target.key()
            );
        }
        if let Ok(probe) = curl(netns, &url, &[])
            && probe.status == 200
        {
            eprintln!("bench_l7: {} is up (pid {})", target.key(), process.pid);
            return Ok(process);
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer 200 on {url} within 20 s; its log:\n{}",
                target.key(),
                process.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Probe {
    status: u16,
    version: String,
    body: String,
}

/// One request with curl from inside the namespace (certificates not verified).
fn curl(netns: &Netns, url: &str, extra: &[&str]) -> anyhow::Result<Probe> {
    let mut args = vec!["-sS", "-k", "--max-time", "5"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-w", "\n%{http_code} %{http_version}", url]);
    let out = run_in(&netns.path(), "curl", &args)?;
    let (body, tail) = out.rsplit_once('\n').context("curl printed no status")?;
    let (status, version) = tail.split_once(' ').context("curl status line")?;
    Ok(Probe {
        status: status.trim().parse().context("curl status code")?,
        version: version.trim().to_string(),
        body: body.to_string(),
    })
}

/// What each target answers on `/bench`: plain HTTP/1.1, and over TLS with h2 and http/1.1.
fn check_target(netns: &Netns, target: Target) -> Value {
    let mut checks = vec![(
        "plain_http1",
        format!("http://127.0.0.1:{}/bench", target.plain_port()),
        "--http1.1",
    )];
    match target.tls_port() {
        Some(port) => {
            let url = format!("https://127.0.0.1:{port}/bench");
            checks.push(("tls_h2", url.clone(), "--http2"));
            checks.push(("tls_http1", url, "--http1.1"));
        }
        None if target.speaks_h2c() => checks.push((
            "plain_h2c",
            format!("http://127.0.0.1:{}/bench", target.plain_port()),
            "--http2-prior-knowledge",
        )),
        None => {}
    }
    let mut out = serde_json::Map::new();
    for (name, url, flag) in checks {
        let value = match curl(netns, &url, &[flag]) {
            Ok(probe) => json!({
                "status": probe.status,
                "http_version": probe.version,
                "body_ok": probe.body == "hello, world\n",
            }),
            Err(err) => json!({ "error": format!("{err:#}") }),
        };
        out.insert(name.into(), value);
    }
    Value::Object(out)
}

/// Whether each proxy resumes a TLS 1.3 session (a ticket from one connection offered on
/// the next), checked with `openssl s_client`; wrk offers what it was given.
fn resumption_checks(netns: &Netns, targets: &[Target]) -> Value {
    let mut out = serde_json::Map::new();
    for &target in targets {
        let Some(port) = target.tls_port() else {
            continue;
        };
        let session = std::env::temp_dir().join(format!("bench-l7-session-{}", unique_suffix()));
        let session_arg = session.to_string_lossy().into_owned();
        let connect = format!("127.0.0.1:{port}");
        let s_client = |extra: &[&str]| -> anyhow::Result<String> {
            let mut command = Command::new("nsenter");
            command
                .arg(format!("--net={}", netns.path()))
                .args([
                    "openssl", "s_client", "-connect", &connect, "-tls1_3", "-ign_eof",
                ])
                .args(extra)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let mut child = command.spawn()?;
            {
                use std::io::Write as _;
                let mut stdin = child.stdin.take().expect("piped");
                stdin.write_all(
                    b"GET /bench HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                )?;
            }
            let output = child.wait_with_output()?;
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        };
        let result = s_client(&["-sess_out", &session_arg])
            .and_then(|_| s_client(&["-sess_in", &session_arg]))
            .map(|text| {
                let line = text
                    .lines()
                    .find(|l| l.starts_with("Reused,") || l.starts_with("New,"))
                    .unwrap_or("")
                    .to_string();
                json!({ "resumed": line.starts_with("Reused,"), "s_client": line })
            })
            .unwrap_or_else(|err| json!({ "error": format!("{err:#}") }));
        let _ = std::fs::remove_file(&session);
        out.insert(target.key().into(), result);
    }
    Value::Object(out)
}

// ===========================================================================
// Full TLS handshakes: a rustls client without resumption

/// Pins the calling thread to one CPU, at the measured processes' priority.
fn pin_thread(cpu: u32) -> anyhow::Result<()> {
    let nice = NICE.load(Ordering::Relaxed);
    // SAFETY: setpriority on this thread (Linux: PRIO_PROCESS with a thread id).
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    ensure!(
        rc == 0,
        "setting the priority to {nice}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0, …) affects this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        ensure!(
            rc == 0,
            "pinning to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A TLS 1.3 client that never resumes (each handshake a full one) and offers ALPN
/// http/1.1; it accepts any certificate, checking the handshake signature.
fn tls_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate::new(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// `WRK_TLS_CONNECTIONS` concurrent loops of: connect, full TLS 1.3 handshake (no
/// resumption, ALPN http/1.1), one GET with `Connection: close`, read the response,
/// close; for `duration`, on one thread pinned to the load CPU. Runs inside the namespace.
fn full_handshakes(port: u16, duration: Duration) -> anyhow::Result<Value> {
    pin_thread(LOAD_CPU)?;
    let connector = tls_connector()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let start = Instant::now();
        let deadline = start + duration;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..WRK_TLS_CONNECTIONS {
            let connector = connector.clone();
            tasks.spawn(async move {
                let mut times = Vec::new();
                let mut errors = 0u64;
                let mut first_error = None;
                while Instant::now() < deadline {
                    let begin = Instant::now();
                    let result =
                        tokio::time::timeout(IDLE_OPEN_TIMEOUT, one_tls_request(&connector, port))
                            .await
                            .unwrap_or_else(|_| Err(anyhow!("timed out")));
                    match result {
                        Ok(()) => times.push(begin.elapsed().as_secs_f64() * 1e6),
                        Err(err) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{err:#}"));
                        }
                    }
                }
                (times, errors, first_error)
            });
        }
        let mut times = Vec::new();
        let mut errors = 0;
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let (t, e, f) = joined?;
            times.extend(t);
            errors += e;
            if first_error.is_none() {
                first_error = f;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        ensure!(
            !times.is_empty(),
            "no connection completed: {}",
            first_error.unwrap_or_default()
        );
        times.sort_by(f64::total_cmp);
        Ok(json!({
            "tool": "bench_l7 (rustls, no resumption)",
            "requests": times.len(),
            "seconds": seconds,
            "requests_per_second": times.len() as f64 / seconds,
            "p50_us": percentile(&times, 50.0),
            "p99_us": percentile(&times, 99.0),
            "latency": "connect + handshake + request + response",
            "errors": errors,
            "first_error": first_error,
            "command": format!("{WRK_TLS_CONNECTIONS} concurrent full handshakes, {}s", duration.as_secs()),
        }))
    })
}

async fn one_tls_request(connector: &tokio_rustls::TlsConnector, port: u16) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .context("connect")?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    let mut tls = connector.connect(name, tcp).await.context("handshake")?;
    tls.write_all(b"GET /bench HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .context("sending the request")?;
    read_response(&mut tls).await?;
    // RST, not FIN: no TIME_WAIT piling up in the client over a long run.
    let _ = socket2::SockRef::from(tls.get_ref().0).set_linger(Some(Duration::ZERO));
    Ok(())
}

// ===========================================================================
// Memory: idle keep-alive connections

fn measure_memory(
    netns: &Netns,
    target: Target,
    process: &mut Proc,
    connections: usize,
) -> anyhow::Result<Value> {
    let port = target.plain_port();
    let first = idle_batch(netns, process, port, false, connections)?;
    ensure!(
        first.alive,
        "{} exited while holding the idle connections",
        target.key()
    );
    // A second batch as large: whether the memory the first one left behind is reused (an
    // allocator keeping freed pages) or RSS grows again (memory kept per past connection).
    let second = idle_batch(netns, process, port, false, connections)?;
    eprintln!(
        "bench_l7:   {}: {} idle connections (of {connections}; {} failed, {:?} established \
         on its side): RSS {} → {} KiB, {:.2} KiB per connection; {:?} KiB after closing them, \
         {} KiB with {} again",
        target.key(),
        first.connections,
        first.failed,
        first.established,
        first.before,
        first.after,
        first.kib_per_connection(),
        first.released,
        second.after,
        second.connections,
    );
    let mut result = first.json(connections);
    result["second_batch_connections"] = json!(second.connections);
    result["rss_with_second_batch_kib"] = json!(second.after);
    // The same over TLS, where the proxy also keeps each connection's TLS state (keys,
    // records buffered or not): a full handshake and one request per connection.
    if let Some(tls_port) = target.tls_port() {
        let tls = idle_batch(netns, process, tls_port, true, connections).and_then(|batch| {
            ensure!(
                batch.alive,
                "{} exited while holding the idle TLS connections",
                target.key()
            );
            eprintln!(
                "bench_l7:   {}: {} idle TLS connections ({} failed): RSS {} → {} KiB, {:.2} \
                 KiB per connection; {:?} KiB after closing them",
                target.key(),
                batch.connections,
                batch.failed,
                batch.before,
                batch.after,
                batch.kib_per_connection(),
                batch.released,
            );
            Ok(batch.json(connections))
        });
        result["tls"] = tls.unwrap_or_else(|err| {
            eprintln!("bench_l7:   {}: TLS memory: {err:#}", target.key());
            json!({ "error": format!("{err:#}") })
        });
    }
    Ok(result)
}

/// One batch of idle connections held by a proxy, and its resident set around them.
struct IdleBatch {
    connections: usize,
    failed: usize,
    first_error: Option<String>,
    /// As the proxy's side sees them (`ss`), when that could be read.
    established: Option<usize>,
    open_seconds: f64,
    before: u64,
    after: u64,
    released: Option<u64>,
    /// Whether the proxy was still running while holding them.
    alive: bool,
}

impl IdleBatch {
    fn kib_per_connection(&self) -> f64 {
        if self.connections > 0 {
            self.after.saturating_sub(self.before) as f64 / self.connections as f64
        } else {
            0.0
        }
    }

    fn json(&self, attempted: usize) -> Value {
        json!({
            "connections": self.connections,
            "attempted": attempted,
            "failed": self.failed,
            "first_error": self.first_error,
            "established_on_proxy_side": self.established,
            "open_seconds": self.open_seconds,
            "rss_before_kib": self.before,
            "rss_after_kib": self.after,
            "rss_after_close_kib": self.released,
            "kib_per_connection": self.kib_per_connection(),
        })
    }
}

/// Opens `connections` idle connections to `port` (over TLS with `tls`), reads the proxy's
/// RSS before, 1 s after they are all open, and 500 ms after resetting them.
fn idle_batch(
    netns: &Netns,
    process: &mut Proc,
    port: u16,
    tls: bool,
    connections: usize,
) -> anyhow::Result<IdleBatch> {
    let before = rss_kib(process.pid)?;
    let start = Instant::now();
    let opened = netns.run(move || open_idle(port, tls, connections))??;
    let open_seconds = start.elapsed().as_secs_f64();
    // Let the proxy settle (deferred frees, idle upstream sweeps) before reading.
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(process.pid);
    let established = established_to(netns, port).ok();
    let alive = process.alive();
    // RST instead of FIN: no TIME_WAIT left behind for the runs that follow.
    for stream in &opened.streams {
        let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    }
    let count = opened.streams.len();
    drop(opened.streams);
    std::thread::sleep(Duration::from_millis(500));
    Ok(IdleBatch {
        connections: count,
        failed: opened.failed,
        first_error: opened.first_error,
        established,
        open_seconds,
        before,
        after: after?,
        released: rss_kib(process.pid).ok(),
        alive,
    })
}

struct IdleConnections {
    streams: Vec<std::net::TcpStream>,
    failed: usize,
    first_error: Option<String>,
}

/// Opens `n` connections to 127.0.0.1:`port` (with `tls`, each with a full TLS 1.3
/// handshake), each sending one GET and reading its whole response, then left idle. Runs on
/// a thread inside the namespace.
fn open_idle(port: u16, tls: bool, n: usize) -> anyhow::Result<IdleConnections> {
    let connector = if tls { Some(tls_connector()?) } else { None };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let permits = Arc::new(tokio::sync::Semaphore::new(IDLE_OPEN_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            let permit = permits.clone().acquire_owned().await?;
            let connector = connector.clone();
            tasks.spawn(async move {
                let result =
                    tokio::time::timeout(IDLE_OPEN_TIMEOUT, one_idle(port, connector)).await;
                drop(permit);
                result.unwrap_or_else(|_| Err(anyhow!("timed out after {IDLE_OPEN_TIMEOUT:?}")))
            });
        }
        let mut opened = IdleConnections {
            streams: Vec::with_capacity(n),
            failed: 0,
            first_error: None,
        };
        while let Some(joined) = tasks.join_next().await {
            match joined? {
                Ok(stream) => opened.streams.push(stream),
                Err(err) => {
                    opened.failed += 1;
                    opened.first_error.get_or_insert_with(|| format!("{err:#}"));
                }
            }
        }
        Ok(opened)
    })
}

async fn one_idle(
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
) -> anyhow::Result<std::net::TcpStream> {
    let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .context("connect")?;
    let Some(connector) = tls else {
        keepalive_request(&mut stream, "127.0.0.1").await?;
        return Ok(stream.into_std()?);
    };
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    let mut tls = connector.connect(name, stream).await.context("handshake")?;
    // The name it was sent to (SNI): balancer answers 421 to a Host that differs.
    keepalive_request(&mut tls, "localhost").await?;
    // Only the socket is kept: this side's TLS state goes without a close_notify, so the
    // proxy holds an open TLS connection and this driver no more than a descriptor.
    Ok(tls.into_inner().0.into_std()?)
}

/// One GET for `host` whose response must leave the connection open.
async fn keepalive_request(
    stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    host: &str,
) -> anyhow::Result<()> {
    stream
        .write_all(format!("GET /bench HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .context("sending the request")?;
    let head = read_response(stream).await?;
    ensure!(
        !head.contains("\r\nconnection: close"),
        "the response closes the connection"
    );
    Ok(())
}

/// Reads one HTTP/1.1 response with a Content-Length body; fails unless it is a 200.
/// Returns the header, lowercased.
async fn read_response(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> anyhow::Result<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let header_end = loop {
        let n = stream.read(&mut chunk).await.context("reading")?;
        ensure!(n > 0, "closed before the response header ended");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        ensure!(buf.len() < 16 * 1024, "response header longer than 16 KiB");
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    ensure!(
        head.starts_with("http/1.1 200"),
        "status line: {}",
        head.lines().next().unwrap_or("")
    );
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Content-Length in the response")?;
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await.context("reading the body")?;
        ensure!(n > 0, "closed before the body ended");
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(head)
}

/// Established TCP connections whose local port is `port` (the proxy's side).
fn established_to(netns: &Netns, port: u16) -> anyhow::Result<usize> {
    let filter = format!("( sport = :{port} )");
    let out = run_in(
        &netns.path(),
        "ss",
        &["-Htn", "state", "established", &filter],
    )?;
    Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
}

// ===========================================================================
// Load

fn measure_load(
    args: &Args,
    netns: &Netns,
    dir: &Path,
    live: &[Target],
    proxies: &mut BTreeMap<Target, Proc>,
    failures: &mut BTreeMap<Target, String>,
) -> serde_json::Map<String, Value> {
    // Warm-up, not recorded: caches, upstream pools, the allocators.
    for &target in live {
        let warm = args.seconds.min(2);
        let url = format!("http://127.0.0.1:{}/bench", target.plain_port());
        if let Err(err) = wrk(netns, &url, WRK_CONNECTIONS, warm, false) {
            eprintln!("bench_l7: {} warm-up: {err:#}", target.key());
        }
    }
    let mut runs: BTreeMap<(&'static str, Target), Vec<Value>> = BTreeMap::new();
    for round in 1..=args.rounds {
        eprintln!("bench_l7: round {round}/{}", args.rounds);
        for &case in &args.cases {
            for &target in live {
                if failures.contains_key(&target) || !case.applies_to(target) {
                    continue;
                }
                if let Some(process) = proxies.get_mut(&target)
                    && !process.alive()
                {
                    let status = process.stop();
                    failures.insert(
                        target,
                        format!(
                            "exited during the benchmark ({status:?}); its log:\n{}",
                            process.log_tail(40)
                        ),
                    );
                    eprintln!("bench_l7: {} exited ({status:?})", target.key());
                    continue;
                }
                let pid = proxies.get(&target).map(|p| p.pid);
                let result = one_run(netns, dir, case, target, pid, args.seconds, round)
                    .unwrap_or_else(|err| json!({ "error": format!("{err:#}") }));
                eprintln!(
                    "bench_l7:   {} {}: {}",
                    case.key(),
                    target.key(),
                    summary(&result)
                );
                runs.entry((case.key(), target)).or_default().push(result);
            }
        }
    }
    let mut cases = serde_json::Map::new();
    for &case in &args.cases {
        let mut rows = serde_json::Map::new();
        for &target in live {
            if let Some(list) = runs.get(&(case.key(), target)) {
                rows.insert(target.key().into(), aggregate(list));
            }
        }
        cases.insert(case.key().into(), Value::Object(rows));
    }
    cases
}

fn summary(run: &Value) -> String {
    if let Some(err) = run["error"].as_str() {
        return format!("error: {err}");
    }
    let upstream = run["upstream_connections_per_1000_requests"]
        .as_f64()
        .map_or(String::new(), |n| {
            format!(", {n:.2} new upstream connections per 1000 requests")
        });
    format!(
        "{:.0} req/s, p50 {} µs, p99 {} µs, {} errors, proxy CPU {}{upstream}",
        run["requests_per_second"].as_f64().unwrap_or(0.0),
        run["p50_us"]
            .as_f64()
            .map_or("?".into(), |v| format!("{v:.0}")),
        run["p99_us"]
            .as_f64()
            .map_or("?".into(), |v| format!("{v:.0}")),
        run["errors"].as_u64().unwrap_or(0),
        match (
            run["proxy_cpu_us_per_request"].as_f64(),
            run["proxy_user_us_per_request"].as_f64(),
        ) {
            (Some(all), Some(user)) => format!("{all:.1} µs/req ({user:.1} user)"),
            _ => "-".into(),
        },
    )
}

/// The median of each measure over the rounds' runs (runs that failed are listed, not used).
fn aggregate(runs: &[Value]) -> Value {
    let ok: Vec<&Value> = runs.iter().filter(|r| r.get("error").is_none()).collect();
    let median_of = |key: &str| -> Value {
        let values: Vec<f64> = ok.iter().filter_map(|r| r[key].as_f64()).collect();
        if values.is_empty() {
            Value::Null
        } else {
            json!(median(&values))
        }
    };
    let errors: u64 = ok.iter().filter_map(|r| r["errors"].as_u64()).sum();
    let failed_runs: Vec<&Value> = runs.iter().filter(|r| r.get("error").is_some()).collect();
    json!({
        "requests_per_second": median_of("requests_per_second"),
        "p50_us": median_of("p50_us"),
        "p99_us": median_of("p99_us"),
        "mean_us": median_of("mean_us"),
        "proxy_cpu_us_per_request": median_of("proxy_cpu_us_per_request"),
        "proxy_user_us_per_request": median_of("proxy_user_us_per_request"),
        "proxy_kernel_us_per_request": median_of("proxy_kernel_us_per_request"),
        "proxy_cpu_busy": median_of("proxy_cpu_busy"),
        "proxy_core_busy": median_of("proxy_core_busy"),
        "load_core_busy": median_of("load_core_busy"),
        "backend_requests": median_of("backend_requests"),
        "new_upstream_connections": median_of("new_upstream_connections"),
        "upstream_connections_per_1000_requests": median_of("upstream_connections_per_1000_requests"),
        "balancer_connections_opened": median_of("balancer_connections_opened"),
        "balancer_connections_opened_per_1000_requests": median_of("balancer_connections_opened_per_1000_requests"),
        "errors": errors,
        "failed_runs": failed_runs.len(),
        "first_failure": failed_runs.first().map(|r| r["error"].clone()),
        "runs": runs,
    })
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// One measured run of one case through one target, with the proxy's CPU time over it.
fn one_run(
    netns: &Netns,
    dir: &Path,
    case: Case,
    target: Target,
    proxy_pid: Option<u32>,
    seconds: u64,
    round: usize,
) -> anyhow::Result<Value> {
    let plain_url = format!("http://127.0.0.1:{}/bench", target.plain_port());
    // The default-config runs measure a steady state: the upstream connections for this
    // concurrency are opened by a warm-up at the same one, and only what the measured run
    // opens on top of them is counted.
    let upstream_before = match case {
        Case::DefaultConfig(i) => {
            wrk(
                netns,
                &plain_url,
                DEFAULT_CONFIG_RUNS[i].1,
                seconds.min(2),
                false,
            )
            .context("warm-up")?;
            Some(upstream_counts(netns, target)?)
        }
        _ => None,
    };
    let cpu_before = proxy_pid.map(cpu_seconds);
    let proxy_core_before = cpu_ticks(PROXY_CPU);
    let load_core_before = cpu_ticks(LOAD_CPU);
    let start = Instant::now();
    let mut result = match case {
        Case::Http1 => wrk(netns, &plain_url, WRK_CONNECTIONS, seconds, false)?,
        Case::Http1Tls => {
            // A name, as for new TLS connections below (wrk sends the host as SNI).
            let port = target.tls_port().context("no TLS port")?;
            let url = format!("https://localhost:{port}/bench");
            wrk(netns, &url, WRK_CONNECTIONS, seconds, false)?
        }
        Case::DefaultConfig(i) => wrk(netns, &plain_url, DEFAULT_CONFIG_RUNS[i].1, seconds, false)?,
        Case::H2 => {
            let url = match target.tls_port() {
                Some(port) => format!("https://127.0.0.1:{port}/bench"),
                None => format!("http://127.0.0.1:{}/bench", target.plain_port()),
            };
            let log = dir.join(format!("h2load-{}-{round}.tsv", target.key()));
            let result = h2load(netns, &url, seconds, &log);
            let _ = std::fs::remove_file(&log);
            result?
        }
        Case::TlsNew => {
            // wrk sends the URL's host as SNI even when it is an address (which RFC 6066
            // forbids): a name, as real clients send.
            let url = match target.tls_port() {
                Some(port) => format!("https://localhost:{port}/bench"),
                None => format!("http://127.0.0.1:{}/bench", target.plain_port()),
            };
            wrk(netns, &url, WRK_TLS_CONNECTIONS, seconds, true)?
        }
        Case::TlsFull => {
            let port = target.tls_port().context("no TLS port")?;
            let duration = Duration::from_secs(seconds);
            netns.run(move || full_handshakes(port, duration))??
        }
    };
    let wall = start.elapsed().as_secs_f64();
    if let Some(before) = upstream_before {
        let after = upstream_counts(netns, target)?;
        let new = after
            .backend_connections
            .saturating_sub(before.backend_connections);
        let requests = after
            .backend_requests
            .saturating_sub(before.backend_requests);
        let per_1000 = |n: u64| (requests > 0).then(|| n as f64 * 1000.0 / requests as f64);
        result["backend_requests"] = json!(requests);
        result["new_upstream_connections"] = json!(new);
        result["upstream_connections_per_1000_requests"] = json!(per_1000(new));
        if let (Some(after), Some(before)) = (after.opened, before.opened) {
            let opened = after.saturating_sub(before);
            result["balancer_connections_opened"] = json!(opened);
            result["balancer_connections_opened_per_1000_requests"] = json!(per_1000(opened));
        }
    }
    let busy = |(busy_after, total_after): (u64, u64), (busy_before, total_before): (u64, u64)| {
        let total = total_after.saturating_sub(total_before);
        if total == 0 {
            Value::Null
        } else {
            json!(busy_after.saturating_sub(busy_before) as f64 / total as f64)
        }
    };
    result["proxy_core_busy"] = busy(cpu_ticks(PROXY_CPU), proxy_core_before);
    result["load_core_busy"] = busy(cpu_ticks(LOAD_CPU), load_core_before);
    if let (Some(pid), Some((user_before, kernel_before))) = (proxy_pid, cpu_before) {
        let (user_after, kernel_after) = cpu_seconds(pid);
        let (user, kernel) = (user_after - user_before, kernel_after - kernel_before);
        let cpu = user + kernel;
        let requests = result["requests"].as_f64().unwrap_or(0.0);
        result["proxy_cpu_seconds"] = json!(cpu);
        result["proxy_cpu_busy"] = json!(cpu / wall);
        if requests > 0.0 {
            result["proxy_cpu_us_per_request"] = json!(cpu * 1e6 / requests);
            result["proxy_user_us_per_request"] = json!(user * 1e6 / requests);
            result["proxy_kernel_us_per_request"] = json!(kernel * 1e6 / requests);
        }
    }
    Ok(result)
}

/// What the backend has seen (connections accepted, requests) and, for balancer, the upstream
/// connections it says it opened.
struct UpstreamCounts {
    backend_connections: u64,
    backend_requests: u64,
    opened: Option<u64>,
}

/// Reads the backend's `/stats` (which leave themselves out of its counts) and balancer's
/// `/api/state` (`connections_opened` summed over its pools' servers).
fn upstream_counts(netns: &Netns, target: Target) -> anyhow::Result<UpstreamCounts> {
    let get = |url: &str| -> anyhow::Result<Value> {
        let probe = curl(netns, url, &[])?;
        ensure!(probe.status == 200, "{url}: status {}", probe.status);
        serde_json::from_str(&probe.body).with_context(|| format!("{url}: not JSON"))
    };
    let stats = get(&format!("http://127.0.0.1:{BACKEND_PORT}/stats"))?;
    let count = |key: &str| {
        stats[key]
            .as_u64()
            .with_context(|| format!("the backend's /stats has no {key}"))
    };
    let opened = match target.admin() {
        None => None,
        Some(admin) => {
            let state = get(&format!("http://{admin}/api/state"))?;
            let servers = state["pools"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|pool| pool["servers"].as_array().into_iter().flatten());
            Some(
                servers
                    .map(|server| server["connections_opened"].as_u64())
                    .sum::<Option<u64>>()
                    .context("/api/state: a server without connections_opened")?,
            )
        }
    };
    Ok(UpstreamCounts {
        backend_connections: count("connections")?,
        backend_requests: count("requests")?,
        opened,
    })
}

/// `wrk -t1 -cN -dS --latency URL` on the load CPU; with `close`, one request per
/// connection (`Connection: close`).
fn wrk(
    netns: &Netns,
    url: &str,
    connections: u32,
    seconds: u64,
    close: bool,
) -> anyhow::Result<Value> {
    let mut args = vec![
        "-t1".to_string(),
        format!("-c{connections}"),
        format!("-d{seconds}s"),
        "--latency".to_string(),
    ];
    if close {
        args.extend(["-H".to_string(), "Connection: close".to_string()]);
    }
    args.push(url.to_string());
    let output = run_bounded(
        netns,
        LOAD_CPU,
        "wrk",
        &args,
        Duration::from_secs(seconds + 30),
    )?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "wrk {} failed ({}): {}{}",
        args.join(" "),
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut value = parse_wrk(&stdout).with_context(|| format!("wrk output:\n{stdout}"))?;
    value["command"] = json!(format!("wrk {}", args.join(" ")));
    Ok(value)
}

fn parse_wrk(out: &str) -> anyhow::Result<Value> {
    let mut requests = None;
    let mut seconds = None;
    let mut rps = None;
    let mut percentiles = BTreeMap::new();
    let mut errors = serde_json::Map::new();
    let mut total_errors = 0u64;
    let mut in_distribution = false;
    for line in out.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let Some((p, v)) = trimmed.split_once(char::is_whitespace)
                && let Some(p) = p.strip_suffix('%')
                && let Ok(p) = p.parse::<f64>()
            {
                percentiles.insert(p as u32, parse_duration_us(v.trim())?);
                continue;
            }
            in_distribution = false;
        }
        if let Some(rest) = trimmed.strip_prefix("Requests/sec:") {
            rps = Some(rest.trim().parse::<f64>().context("Requests/sec")?);
        } else if trimmed.contains(" requests in ") {
            let (n, rest) = trimmed.split_once(" requests in ").expect("contains");
            requests = Some(n.trim().parse::<u64>().context("requests")?);
            let time = rest.split(',').next().unwrap_or("");
            seconds = Some(parse_duration_us(time.trim())? / 1e6);
        } else if let Some(rest) = trimmed.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                if let Some((kind, n)) = part.trim().split_once(' ') {
                    let n: u64 = n.trim().parse().context("socket errors")?;
                    total_errors += n;
                    errors.insert(kind.to_string(), json!(n));
                }
            }
        } else if let Some(rest) = trimmed.strip_prefix("Non-2xx or 3xx responses:") {
            let n: u64 = rest.trim().parse().context("non-2xx")?;
            total_errors += n;
            errors.insert("non_2xx_3xx".into(), json!(n));
        }
    }
    Ok(json!({
        "tool": "wrk",
        "requests": requests.context("no `N requests in` line")?,
        "seconds": seconds,
        "requests_per_second": rps.context("no Requests/sec line")?,
        "p50_us": percentiles.get(&50).copied().context("no 50% line (--latency)")?,
        "p75_us": percentiles.get(&75),
        "p90_us": percentiles.get(&90),
        "p99_us": percentiles.get(&99).copied().context("no 99% line (--latency)")?,
        "errors": total_errors,
        "error_kinds": errors,
    }))
}

/// "490.00us", "1.20ms", "3.00s", "2.00m", "1.00h" → microseconds.
fn parse_duration_us(text: &str) -> anyhow::Result<f64> {
    let units = [
        ("us", 1.0),
        ("ms", 1e3),
        ("s", 1e6),
        ("m", 60e6),
        ("h", 3600e6),
    ];
    for (suffix, scale) in units {
        if let Some(number) = text.strip_suffix(suffix)
            && let Ok(value) = number.parse::<f64>()
        {
            return Ok(value * scale);
        }
    }
    bail!("unreadable duration {text:?}")
}

/// `h2load -D S -c10 -m10 -t1 --log-file LOG URL` on the load CPU. Percentiles come from
/// the log file (per-request time from send to end of response).
fn h2load(netns: &Netns, url: &str, seconds: u64, log: &Path) -> anyhow::Result<Value> {
    let args = vec![
        "-D".to_string(),
        seconds.to_string(),
        format!("-c{H2_CONNECTIONS}"),
        format!("-m{H2_STREAMS}"),
        "-t1".to_string(),
        format!("--log-file={}", log.display()),
        url.to_string(),
    ];
    let output = run_bounded(
        netns,
        LOAD_CPU,
        "h2load",
        &args,
        Duration::from_secs(seconds + 30),
    )?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "h2load {} failed ({}): {}{}",
        args.join(" "),
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut value = parse_h2load(&stdout).with_context(|| format!("h2load output:\n{stdout}"))?;
    let text = std::fs::read_to_string(log).with_context(|| format!("{}", log.display()))?;
    let mut times: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split('\t').nth(2))
        .filter_map(|t| t.trim().parse::<f64>().ok())
        .collect();
    ensure!(!times.is_empty(), "h2load logged no request");
    times.sort_by(f64::total_cmp);
    value["p50_us"] = json!(percentile(&times, 50.0));
    value["p99_us"] = json!(percentile(&times, 99.0));
    value["logged_requests"] = json!(times.len());
    value["command"] = json!(format!("h2load {}", args.join(" ")));
    Ok(value)
}

/// Nearest rank on sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn parse_h2load(out: &str) -> anyhow::Result<Value> {
    let mut rps = None;
    let mut seconds = None;
    let mut counts = serde_json::Map::new();
    let mut mean = None;
    let mut status = serde_json::Map::new();
    for line in out.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("finished in ") {
            // "finished in 3.00s, 41234.40 req/s, 1.23MB/s"
            let mut parts = rest.split(',');
            seconds = Some(parse_duration_us(parts.next().unwrap_or("").trim())? / 1e6);
            let r = parts.next().unwrap_or("").trim();
            rps = Some(
                r.strip_suffix(" req/s")
                    .context("req/s")?
                    .parse::<f64>()
                    .context("req/s")?,
            );
        } else if let Some(rest) = trimmed.strip_prefix("requests:") {
            // "requests: 123 total, 124 started, 123 done, 123 succeeded, 0 failed, ..."
            for part in rest.split(',') {
                if let Some((n, kind)) = part.trim().split_once(' ') {
                    counts.insert(kind.to_string(), json!(n.parse::<u64>().unwrap_or(0)));
                }
            }
        } else if let Some(rest) = trimmed.strip_prefix("status codes:") {
            for part in rest.split(',') {
                if let Some((n, kind)) = part.trim().split_once(' ') {
                    status.insert(kind.to_string(), json!(n.parse::<u64>().unwrap_or(0)));
                }
            }
        } else if let Some(rest) = trimmed.strip_prefix("time for request:") {
            // min max mean sd +/-sd
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if let Some(m) = fields.get(2) {
                mean = Some(parse_duration_us(m)?);
            }
        }
    }
    let count = |key: &str| counts.get(key).and_then(Value::as_u64).unwrap_or(0);
    let not_2xx = ["3xx", "4xx", "5xx"]
        .iter()
        .map(|k| status.get(*k).and_then(Value::as_u64).unwrap_or(0))
        .sum::<u64>();
    Ok(json!({
        "tool": "h2load",
        "requests": count("succeeded"),
        "seconds": seconds,
        "requests_per_second": rps.context("no `finished in` line")?,
        "mean_us": mean,
        "errors": count("failed") + count("errored") + count("timeout") + not_2xx,
        "request_counts": counts,
        "status_codes": status,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 3s test @ http://127.0.0.1:8000/bench
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   512.34us  100.23us   5.67ms   90.12%
    Req/Sec    50.12k     2.34k   55.00k    80.00%
  Latency Distribution
     50%  490.00us
     75%  550.00us
     90%  600.00us
     99%    1.20ms
  150000 requests in 3.00s, 12.34MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  50000.12
Transfer/sec:      4.11MB
";

    #[test]
    fn reads_wrk() {
        let v = parse_wrk(WRK).unwrap();
        assert_eq!(v["requests"], 150_000);
        assert_eq!(v["requests_per_second"], 50000.12);
        assert_eq!(v["p50_us"], 490.0);
        assert_eq!(v["p99_us"], 1200.0);
        assert_eq!(v["seconds"], 3.0);
        assert_eq!(v["errors"], 8);
        assert_eq!(v["error_kinds"]["read"], 2);
    }

    const H2LOAD: &str = "starting benchmark...
finished in 3.00s, 41234.40 req/s, 1.23MB/s
requests: 123703 total, 123803 started, 123703 done, 123700 succeeded, 3 failed, 3 errored, 0 timeout
status codes: 123700 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 3.69MB (3866842) total, 1.06MB (1113246) headers (space savings 93.12%), 1.53MB (1608139) data
                     min         max         mean         sd        +/- sd
time for request:      123us     12.34ms      2.41ms       1.23ms    70.00%
time for connect:     1.23ms      2.34ms      1.80ms       0.20ms    60.00%
";

    #[test]
    fn reads_h2load() {
        let v = parse_h2load(H2LOAD).unwrap();
        assert_eq!(v["requests"], 123_700);
        assert_eq!(v["requests_per_second"], 41234.40);
        assert_eq!(v["mean_us"], 2410.0);
        assert_eq!(v["errors"], 6);
    }

    #[test]
    fn durations_and_percentiles() {
        assert_eq!(parse_duration_us("2.00m").unwrap(), 120e6);
        assert_eq!(parse_duration_us("3.5s").unwrap(), 3.5e6);
        assert!(parse_duration_us("fast").is_err());
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 50.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}
