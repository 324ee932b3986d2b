//! The `balancer` command line.

use std::{path::PathBuf, process::ExitCode};

use balancer::config::Config;
use clap::{Parser, Subcommand};

// mimalloc: about 1 µs less CPU per proxied request than glibc's malloc (bench_l7, HTTP/1.1
// keep-alive), and a second batch of 9 850 idle connections grows RSS by 17 MB instead of 49:
// less of what closed connections freed stays in the allocator. Without transparent huge
// pages (`no_thp`): with them each idle connection cost about 22 KiB of RSS instead of 15.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// eBPF/XDP-accelerated L4+L7 edge load balancer.
///
/// An XDP program on the NIC matches packets to virtual services (VIPs) and
/// forwards them to backends (IPIP or L2 direct server return; Maglev
/// hashing, a connection table, health checks), or passes them to the local
/// stack. The admin listener exports state and counters (`GET /metrics`,
/// `GET /api/state`, `GET /healthz`, `POST /api/vips/...`,
/// `POST /api/announce/{withdraw,restore}`). With [announce], a kernel route
/// per served VIP (table `announce.table`, protocol 250) lets BIRD announce the
/// VIPs over BGP to routers spreading them over several hosts (ECMP). One
/// binary, one TOML config file.
#[derive(Parser)]
#[command(name = "balancer", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the config, attach XDP to `xdp.interface`, serve the admin API until SIGINT/SIGTERM.
    ///
    /// Needs root (or CAP_BPF + CAP_NET_ADMIN) when the config has an [xdp] section.
    /// With [announce]: removes its stale protocol-250 routes from `announce.table`, then keeps
    /// a route per VIP address that has an up backend; SIGTERM withdraws them, waits
    /// `announce.withdraw_delay`, then drains the proxy and exits.
    /// Log verbosity follows RUST_LOG (default: info); `balancer_ebpf=debug` also
    /// turns on the XDP program's own records of malformed packets.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Take the listening sockets and the XDP link over from the balancer running with this
    /// config (through its `proxy.upgrade_socket`), then serve in its place: the old process
    /// stops accepting, finishes what is in flight within `proxy.shutdown_timeout`, and exits.
    /// SIGUSR2 to the running process does the same with its own binary.
    Upgrade {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file without touching the kernel: exit 0, or print the
    /// error with its file, line and key and exit 1.
    CheckConfig {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a balancer config equivalent to another proxy's config (on stdout), with a
    /// comment for each directive that has no equivalent.
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
    /// On a backend of `ipip` VIPs: attach `balancer_decap` to an interface. It
    /// strips the outer IPIP / IPv6-in-IPv6 header of packets addressed to this
    /// host, so the inner packet (to a VIP on `lo`) reaches the local stack.
    /// Runs until SIGINT/SIGTERM, then detaches and prints its counters.
    Decap {
        /// The interface encapsulated packets arrive on.
        #[arg(long)]
        iface: String,
        /// Outer destination addresses to accept (default: every address of the interface).
        #[arg(long = "address")]
        addresses: Vec<std::net::IpAddr>,
        /// XDP attach mode: auto, driver or skb.
        #[arg(long, default_value = "auto")]
        mode: String,
    },
    /// Remove what `xdp.pin_path` holds: the pinned XDP link (detaching the
    /// program) and the pinned maps (dropping established flows). `balancer run`
    /// with a pin_path leaves them in place on exit so a restart keeps flows.
    Unload {
        /// The TOML config file (for `xdp.pin_path`).
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ImportFrom {
    /// An Apache httpd config: <VirtualHost>, <Proxy balancer://…> with BalancerMember,
    /// ProxyPass (also in <Location>), ProxyPassReverse*, ProxyPreserveHost, RequestHeader /
    /// Header set|unset, RemoteIP*, ProxyTimeout. Relative certificate paths are taken from the
    /// file's directory. Each directive it cannot translate becomes
    /// `# line N: <directive> — not translated: <why>`.
    Apache {
        /// The Apache config file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(parsed) => match balancer::run::check_l7(&parsed.l7) {
                Ok(()) => {
                    println!(
                        "{}: ok ({} VIPs, {} listeners, {} routes, {} pools)",
                        config.display(),
                        parsed.vips.len(),
                        parsed.l7.listeners.len(),
                        parsed.l7.routes.len(),
                        parsed.l7.pools.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("{}: {err}", config.display());
                    ExitCode::FAILURE
                }
            },
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        },
        Command::Import {
            from: ImportFrom::Apache { file },
        } => import_apache(&file),
        Command::Run { config } => {
            raise_open_file_limit();
            run_async(balancer::run::run(&config))
        }
        Command::Upgrade { config } => {
            raise_open_file_limit();
            run_async(balancer::run::upgrade(&config))
        }
        Command::Decap {
            iface,
            addresses,
            mode,
        } => run_async(balancer::run::decap(iface, addresses, mode)),
        Command::Unload { config } => {
            init_tracing();
            match balancer::run::unload(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn import_apache(file: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("{}: {err}", file.display());
            return ExitCode::FAILURE;
        }
    };
    // Certificate paths in the output are the Apache file's own, made absolute so that the
    // printed config works wherever it is saved.
    let base_dir = file
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let base_dir = std::fs::canonicalize(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    match balancer::import::apache::import(&text, &file.display().to_string(), &base_dir) {
        Ok(toml) => {
            print!("{toml}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{}:{}: {}", file.display(), err.line, err.message);
            ExitCode::FAILURE
        }
    }
}

fn run_async(task: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    init_tracing();
    let runtime = match build_runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime: `TOKIO_WORKER_THREADS` worker threads (default: one per CPU). With one,
/// the main thread is that worker: the current-thread scheduler skips the cross-thread queues,
/// atomics and wakeups of the multi-thread one, a measurable share of a proxied request's CPU.
fn build_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let one_worker = std::env::var("TOKIO_WORKER_THREADS")
        .is_ok_and(|value| value.trim().parse::<usize>() == Ok(1));
    if one_worker {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    // `init` also bridges the `log` facade (which aya-log speaks) into tracing.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// An edge proxy holds two descriptors per proxied connection; the usual soft limit of 1024
/// would cap it near 500 connections. Raise the soft limit to the hard one, as nginx's
/// worker_rlimit_nofile lets operators do.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
