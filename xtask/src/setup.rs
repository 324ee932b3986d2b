//! `cargo xtask setup`: make a fresh machine able to build and test the project.
//! Every step checks first, so a second run only checks.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};
use balancer_tests::django::{
    DJANGO_VERSION, GUNICORN_VERSION, checked_venv, installed_versions, tools_dir, venv_dir,
};

use crate::run_step;

/// Debian packages the build, tests and demo use, with the command that proves each is there.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("util-linux", "nsenter"),
    ("nftables", "nft"),
    ("curl", "curl"),
    ("bpftool", "bpftool"),
    // A backend for the L7 proxy's tests (static files, proxying); started per test. Also a
    // peer of `cargo xtask bench` (Debian 12's `nginx` package holds the binary).
    ("nginx", "nginx"),
    // `cargo xtask bench`, L7 section: the load generators, the other peer, and
    // `openssl s_client` (checks TLS session resumption).
    ("wrk", "wrk"),
    ("nghttp2-client", "h2load"),
    ("haproxy", "haproxy"),
    ("openssl", "openssl"),
    // Its instruction counts per request (callgrind, callgrind_control).
    ("valgrind", "valgrind"),
    // `systemd-analyze verify` on packaging/balancer.service (tests/tests/systemd.rs), and
    // `setpriv` (util-linux, above) to run balancer with exactly the unit's capabilities.
    ("systemd", "systemd-analyze"),
    // `cargo xtask package` checks the .deb it builds.
    ("dpkg", "dpkg-deb"),
    // A real browser for the balancer-manager page's test (tests/tests/manager_page.rs).
    ("chromium", "chromium"),
    // BGP for the announce tests (tests/tests/announce.rs): a router and the balancer hosts'
    // daemon, which exports the VIP routes with packaging/bird.conf.
    ("bird2", "bird"),
];

/// Debian packages proven by a module of Debian's python3 rather than a command: python3-venv
/// ships `ensurepip`, without which `python3 -m venv` makes a virtualenv without pip.
const DEBIAN_PYTHON_MODULES: &[(&str, &str)] = &[("python3-venv", "ensurepip")];

/// Debian's interpreter, not whatever `python3` comes first on PATH (pyenv and the like), so
/// the virtualenv is the same on every machine.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

pub fn run() -> anyhow::Result<()> {
    step(
        "rust components (clippy, rustfmt on stable; rust-src, rustfmt on nightly)",
        rust_components,
    )?;
    step(
        "bpf-linker built against the nightly toolchain's LLVM",
        || bpf_linker().map(|_| ()),
    )?;
    step(
        "cargo-deb (`cargo xtask package` builds the .deb with it)",
        || cargo_deb().map(|_| ()),
    )?;
    step(
        "cargo-fuzz (`cargo xtask fuzz` runs the HTTP/1.1 parsers' fuzz targets with it)",
        || cargo_fuzz().map(|_| ()),
    )?;
    step("Debian packages", debian_packages)?;
    step(
        "Python virtualenv with Django and gunicorn (the Django app of the L7 tests)",
        django_venv,
    )?;
    step("bpffs mounted at /sys/fs/bpf", bpffs)?;
    Ok(())
}

fn step(what: &str, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    eprintln!("setup: {what}");
    f().with_context(|| format!("setup step failed: {what}"))
}

fn rust_components() -> anyhow::Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is required (the Rust toolchain manager)")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("setup:   installing the nightly toolchain (the eBPF crate needs -Z build-std)");
        run_step(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    for (toolchain, component) in [
        ("nightly", "rust-src"),
        ("nightly", "rustfmt"),
        ("stable", "clippy"),
        ("stable", "rustfmt"),
    ] {
        let installed = output(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            toolchain,
        ]))?;
        if installed.lines().any(|l| l.starts_with(component)) {
            eprintln!("setup:   {component} ({toolchain}) present");
        } else {
            eprintln!("setup:   installing {component} for {toolchain}");
            run_step(Command::new("rustup").args([
                "component",
                "add",
                component,
                "--toolchain",
                toolchain,
            ]))?;
        }
    }
    Ok(())
}

/// Returns the directory holding `bpf-linker`, building it if needed.
pub fn bpf_linker() -> anyhow::Result<PathBuf> {
    let tools = tools_dir();
    let bin = tools.join("bin");
    let linker = bin.join("bpf-linker");
    let llvm = nightly_libllvm()?;
    let llvm_lib = tools.join("llvm/lib");
    // bpf-linker records an rpath to this directory: it must keep pointing at the nightly libLLVM.
    std::fs::create_dir_all(&llvm_lib)?;
    for name in [
        PathBuf::from("libLLVM.so"),
        PathBuf::from(llvm.file_name().expect("file name")),
    ] {
        let link = llvm_lib.join(name);
        if std::fs::read_link(&link).ok().as_deref() != Some(llvm.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&llvm, &link)
                .with_context(|| format!("symlink {}", link.display()))?;
        }
    }
    if linker.is_file()
        && Command::new(&linker)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        eprintln!("setup:   {} present", linker.display());
        return Ok(bin);
    }
    eprintln!(
        "setup:   building bpf-linker 0.13 against {} (takes a few minutes)",
        llvm.display()
    );
    run_step(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                "^0.13",
                "--locked",
                "--no-default-features",
            ])
            .args(["--features", "llvm-22", "--root"])
            .arg(&tools)
            .env("LLVM_PREFIX", tools.join("llvm"))
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    if !Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        bail!(
            "bpf-linker was built but does not run: {}",
            linker.display()
        );
    }
    Ok(bin)
}

/// cargo-deb 3 in the tools directory (built from crates.io the first time); returns its path.
pub fn cargo_deb() -> anyhow::Result<PathBuf> {
    cargo_tool("cargo-deb", "^3")
}

/// cargo-fuzz 0.13 in the tools directory (built from crates.io the first time); returns its
/// path. It runs with the nightly toolchain that `rust_components` installs.
pub fn cargo_fuzz() -> anyhow::Result<PathBuf> {
    cargo_tool("cargo-fuzz", "^0.13")
}

/// A cargo subcommand from crates.io at `version`, installed into the tools directory the
/// first time (`cargo install --locked`); its path once it runs.
fn cargo_tool(name: &str, version: &str) -> anyhow::Result<PathBuf> {
    let tools = tools_dir();
    let binary = tools.join("bin").join(name);
    let works = |binary: &Path| {
        Command::new(binary)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(&binary) {
        eprintln!("setup:   {} present", binary.display());
        return Ok(binary);
    }
    eprintln!("setup:   building {name} {version} (about a minute)");
    run_step(
        Command::new("cargo")
            .args(["install", name, "--version", version, "--locked", "--root"])
            .arg(&tools)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    if !works(&binary) {
        bail!("{name} was built but does not run: {}", binary.display());
    }
    Ok(binary)
}

/// The nightly toolchain ships its own shared libLLVM; bpf-linker must use the same LLVM major.
fn nightly_libllvm() -> anyhow::Result<PathBuf> {
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let found = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        });
    found.with_context(|| {
        format!(
            "no libLLVM.so.* in {} (nightly toolchain incomplete?)",
            lib.display()
        )
    })
}

fn debian_packages() -> anyhow::Result<()> {
    let all: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .chain(DEBIAN_PYTHON_MODULES)
        .map(|(package, _)| *package)
        .collect();
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(_, command)| !on_path(command))
        .chain(
            DEBIAN_PYTHON_MODULES
                .iter()
                .filter(|(_, module)| !system_python_has(module)),
        )
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        eprintln!("setup:   all present ({})", all.join(", "));
        return Ok(());
    }
    eprintln!("setup:   installing {}", missing.join(", "));
    run_step(Command::new("apt-get").arg("update").arg("-q"))?;
    run_step(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    for (package, command) in DEBIAN_PACKAGES {
        if !on_path(command) {
            bail!("{command} is still missing after installing {package}");
        }
    }
    for (package, module) in DEBIAN_PYTHON_MODULES {
        if !system_python_has(module) {
            bail!("{SYSTEM_PYTHON} still cannot import {module} after installing {package}");
        }
    }
    Ok(())
}

fn system_python_has(module: &str) -> bool {
    Command::new(SYSTEM_PYTHON)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The virtualenv of the Django test app (`balancer_tests::django::venv_dir`, which the tests
/// read too), with the pinned Django and gunicorn from PyPI. A second run only checks the
/// versions.
fn django_venv() -> anyhow::Result<()> {
    let venv = venv_dir();
    let wanted = (DJANGO_VERSION.to_string(), GUNICORN_VERSION.to_string());
    match installed_versions(&venv) {
        Ok(versions) if versions == wanted => {
            eprintln!(
                "setup:   {} has Django {DJANGO_VERSION} and gunicorn {GUNICORN_VERSION}",
                venv.display()
            );
            return Ok(());
        }
        Ok((django, gunicorn)) => eprintln!(
            "setup:   {} has Django {django} and gunicorn {gunicorn}: installing the pinned versions",
            venv.display()
        ),
        Err(_) if venv.join("bin/python").is_file() => {
            eprintln!("setup:   {} lacks Django or gunicorn", venv.display());
        }
        Err(_) => {
            if venv.exists() {
                // Half made (no interpreter): start over.
                std::fs::remove_dir_all(&venv)
                    .with_context(|| format!("removing {}", venv.display()))?;
            }
            eprintln!("setup:   creating {}", venv.display());
            run_step(Command::new(SYSTEM_PYTHON).args(["-m", "venv"]).arg(&venv))?;
        }
    }
    run_step(
        Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(format!("django=={DJANGO_VERSION}"))
            .arg(format!("gunicorn=={GUNICORN_VERSION}")),
    )?;
    checked_venv().context("after pip install")?;
    Ok(())
}

fn on_path(command: &str) -> bool {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ]
    .iter()
    .any(|dir| Path::new(dir).join(command).is_file())
}

fn bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
            && l.split_whitespace().nth(2) == Some("bpf")
    }) {
        eprintln!("setup:   present");
        return Ok(());
    }
    run_step(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("mounting bpffs needs root")
}

pub fn output(command: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .with_context(|| format!("{shown}: cannot start"))?;
    if !out.status.success() {
        bail!("{shown}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
