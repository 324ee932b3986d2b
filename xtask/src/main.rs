//! `cargo xtask …`: setup, build, build-and-load, demo, test, fuzz, bench, cycles.

mod bench;
mod build;
mod cycles;
mod demo;
mod fuzz;
mod package;
mod setup;
mod test;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project tasks for balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what this machine lacks (nightly rust-src, bpf-linker, Debian packages, bpffs). Idempotent.
    Setup,
    /// Build the eBPF object and the `balancer` binary that embeds it.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build everything, then run `balancer run --config FILE` (XDP attached to the config's or the given interface).
    BuildAndLoad {
        #[arg(long)]
        config: PathBuf,
        /// Attach to this interface instead of the config's `xdp.interface`.
        #[arg(long)]
        iface: Option<String>,
        #[arg(long)]
        release: bool,
    },
    /// Build, create a namespace topology, run balancer with a built-in config, send traffic, print what it saw.
    Demo,
    /// Every test: the demo first, lints, unit, BPF packet fixtures, netns integration, the
    /// .deb.
    Test,
    /// Fuzz the HTTP/1.1 framing code (cargo-fuzz, nightly): each target for a fixed time;
    /// a crash fails the run and leaves its input in fuzz/artifacts/TARGET/.
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Only this target (h1_request, h1_chunked or h1_response).
        #[arg(long)]
        target: Option<String>,
    },
    /// Build the .deb (cargo-deb): the release binary, the systemd unit, an example config
    /// and the README; writes target/debian/balancer_VERSION_amd64.deb.
    Package,
    /// Benchmarks side by side with peers (L4: XDP ns/packet vs the floor, end to end vs
    /// nftables; L7: HTTP/1.1, h2, TLS and idle-connection memory vs nginx and HAProxy);
    /// writes target/bench/report.md.
    Bench {
        /// Fewer calls and rounds, shorter runs: a smoke run (about two minutes after the build).
        #[arg(long)]
        quick: bool,
    },
    /// List the module dependency cycles of balancer-user's library, read from its `use` trees
    /// and paths: between top-level modules, and between siblings inside one. Fails when there
    /// is one (`cargo xtask test` runs it).
    Cycles,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Build { release } => setup::run().and_then(|()| build::all(release).map(|_| ())),
        Command::BuildAndLoad {
            config,
            iface,
            release,
        } => setup::run().and_then(|()| build::build_and_load(&config, iface.as_deref(), release)),
        Command::Demo => setup::run().and_then(|()| demo::run()),
        Command::Test => setup::run().and_then(|()| test::run()),
        Command::Fuzz { seconds, target } => {
            setup::run().and_then(|()| fuzz::run(seconds, target.as_deref()))
        }
        Command::Package => setup::run().and_then(|()| {
            let deb = package::run()?;
            package::check(&deb)
        }),
        Command::Bench { quick } => setup::run().and_then(|()| bench::run(quick)),
        Command::Cycles => cycles::run(&workspace_root().join("balancer-user/src")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Runs a command, echoing it first; fails if it fails.
fn run_step(command: &mut std::process::Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}").replace('"', "");
    eprintln!("xtask: $ {shown}");
    let status = command
        .status()
        .map_err(|e| anyhow::anyhow!("{shown}: cannot start: {e}"))?;
    anyhow::ensure!(status.success(), "{shown}: {status}");
    Ok(())
}
