//! Building: the eBPF object (nightly, bpfel-unknown-none, bpf-linker) and the binary embedding it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context;

use crate::{run_step, setup, workspace_root};

/// Builds the eBPF object; returns its path.
pub fn ebpf() -> anyhow::Result<PathBuf> {
    let linker_dir = setup::bpf_linker()?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![linker_dir];
    paths.extend(std::env::split_paths(&path));
    let mut command = ebpf_cargo("build");
    command.env("PATH", std::env::join_paths(paths)?);
    run_step(&mut command).context("building the eBPF object")?;
    Ok(ebpf_object())
}

/// Clippy on the eBPF crate, `-D warnings`, with the toolchain, target and flags it is built
/// with (its own workspace: the workspace's clippy run does not reach it).
pub fn ebpf_clippy() -> anyhow::Result<()> {
    let mut command = ebpf_cargo("clippy");
    command.args(["--", "-D", "warnings"]);
    run_step(&mut command).context("clippy in balancer-ebpf")
}

/// `cargo SUBCOMMAND` in balancer-ebpf as its build runs it: nightly, `-Z build-std=core`,
/// bpfel-unknown-none, release, its own target directory and rustc flags (the same flags for
/// every subcommand, so that one does not rebuild what the other built).
fn ebpf_cargo(subcommand: &str) -> Command {
    let root = workspace_root();
    // Arguments for rustc, separated by 0x1f as CARGO_ENCODED_RUSTFLAGS wants; BTF for aya.
    // Misaligned access: the verifier allows it on packet and map memory (x86 has efficient
    // unaligned access) and checks stack alignment itself; without it LLVM splits every
    // header field into byte loads and calls a byte-loop memset, a third of a packet's cost.
    let rustflags = [
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
        "-Clink-arg=--cpu-features=+allows-misaligned-mem-access",
    ]
    .join("\x1f");
    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo", subcommand])
        .args([
            "--release",
            "--locked",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
            "--target-dir",
        ])
        .arg(root.join("target/ebpf"))
        .current_dir(root.join("balancer-ebpf"))
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    without_cargo_env(&mut command);
    command
}

pub fn ebpf_object() -> PathBuf {
    workspace_root().join("target/ebpf/bpfel-unknown-none/release/balancer")
}

/// Where cargo puts the workspace's build output: `$CARGO_TARGET_DIR` (relative to the
/// workspace root if relative), else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// A cargo command on the workspace with the eBPF object's location set.
pub fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new("cargo");
    command
        .args(args)
        .current_dir(workspace_root())
        .env("BALANCER_EBPF_OBJECT", ebpf_object());
    command
}

/// Builds the eBPF object and the binary; returns the binary's path.
pub fn all(release: bool) -> anyhow::Result<PathBuf> {
    ebpf()?;
    let mut args = vec![
        "build",
        "--locked",
        "--package",
        "balancer-user",
        "--bin",
        "balancer",
    ];
    if release {
        args.push("--release");
    }
    run_step(&mut cargo(&args)).context("building the balancer binary")?;
    let binary = target_dir().join(if release {
        "release/balancer"
    } else {
        "debug/balancer"
    });
    eprintln!("xtask: built {}", binary.display());
    Ok(binary)
}

/// The programs of the test crate that the demo, the tests and the benchmarks run beside
/// `balancer`: the HTTP backend (`l7_backend`) and the L4 backends' UDP/TCP server
/// (`name_server`).
pub struct Helpers {
    pub l7_backend: PathBuf,
    pub name_server: PathBuf,
}

/// Builds [`Helpers`] (debug profile); returns their paths.
pub fn helpers() -> anyhow::Result<Helpers> {
    run_step(&mut cargo(&[
        "build",
        "--locked",
        "--package",
        "balancer-tests",
        "--bin",
        "l7_backend",
        "--bin",
        "name_server",
    ]))
    .context("building the test crate's helper programs")?;
    let dir = target_dir().join("debug");
    Ok(Helpers {
        l7_backend: dir.join("l7_backend"),
        name_server: dir.join("name_server"),
    })
}

pub fn build_and_load(config: &Path, iface: Option<&str>, release: bool) -> anyhow::Result<()> {
    let binary = all(release)?;
    let config = match iface {
        None => config.to_path_buf(),
        Some(iface) => with_interface(config, iface)?,
    };
    run_step(
        Command::new(&binary)
            .args(["check-config", "--config"])
            .arg(&config),
    )?;
    run_step(Command::new(&binary).args(["run", "--config"]).arg(&config))
}

/// A copy of the config with `xdp.interface` replaced, next to the build output.
fn with_interface(config: &Path, iface: &str) -> anyhow::Result<PathBuf> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let mut replaced = false;
    let mut in_xdp = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_xdp = trimmed.starts_with("[xdp]");
        }
        if in_xdp && trimmed.starts_with("interface") && trimmed[9..].trim_start().starts_with('=')
        {
            lines.push(format!("interface = {iface:?}"));
            replaced = true;
        } else {
            lines.push(line.to_string());
        }
    }
    anyhow::ensure!(
        replaced,
        "--iface given but {} has no xdp.interface line to replace",
        config.display()
    );
    let out = workspace_root().join("target/build-and-load.toml");
    std::fs::write(&out, lines.join("\n") + "\n")?;
    eprintln!("xtask: using {} (xdp.interface = {iface:?})", out.display());
    Ok(out)
}

/// Removes what Cargo sets for xtask itself from a command that runs another toolchain's
/// cargo (nightly): those variables would pin the stable toolchain, xtask's flags, or a
/// shared target directory that would then be rebuilt back and forth between flag sets.
pub fn without_cargo_env(command: &mut Command) {
    for var in [
        "RUSTC",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        command.env_remove(var);
    }
}
