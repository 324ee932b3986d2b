//! `cargo xtask package`: the `.deb` (cargo-deb) with the release binary, the systemd unit, an
//! example config and the README, and the checks `cargo xtask test` runs on it: its file list,
//! control fields, conffiles and maintainer scripts, and the packaged binary and example config
//! used as an installed system would use them.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, ensure};

use crate::{
    build, run_step,
    setup::{self, output},
    workspace_root,
};

/// Files the package must install, as `dpkg-deb -c` lists them.
const FILES: [&str; 5] = [
    "./usr/bin/balancer",
    "./lib/systemd/system/balancer.service",
    "./etc/balancer/balancer.toml",
    "./usr/share/doc/balancer/README.md",
    "./usr/share/doc/balancer/examples/bird.conf",
];

/// Builds the release binary and the `.deb`; returns the `.deb`'s path.
pub fn run() -> anyhow::Result<PathBuf> {
    build::all(true)?;
    let cargo_deb = setup::cargo_deb()?;
    let out = build::target_dir().join("debian");
    // A stale package of another version must not be the one found below.
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    run_step(
        Command::new(&cargo_deb)
            .args(["--no-build", "--package", "balancer-user", "--output"])
            .arg(&out)
            .current_dir(workspace_root()),
    )
    .context("cargo-deb")?;
    let deb = std::fs::read_dir(&out)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("cargo-deb wrote no .deb into {}", out.display()))?;
    eprintln!("xtask: built {}", deb.display());
    Ok(deb)
}

/// What `cargo xtask test` asserts of the package.
pub fn check(deb: &Path) -> anyhow::Result<()> {
    let listing = output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .collect();
    for file in FILES {
        ensure!(
            paths.contains(&file),
            "the package lacks {file}; it holds:\n{listing}"
        );
    }

    let control = output(Command::new("dpkg-deb").arg("--field").arg(deb))?;
    for (field, wanted) in [("Package", "balancer"), ("Architecture", "amd64")] {
        ensure!(
            control
                .lines()
                .any(|line| line == format!("{field}: {wanted}")),
            "control field {field}: {wanted} missing:\n{control}"
        );
    }
    ensure!(
        control
            .lines()
            .any(|line| line.starts_with("Depends:") && line.contains("adduser")),
        "the postinst runs adduser, so the package depends on it:\n{control}"
    );

    let root = std::env::temp_dir().join(format!("balancer-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    run_step(
        Command::new("dpkg-deb")
            .arg("--raw-extract")
            .arg(deb)
            .arg(&root),
    )?;
    let result = check_extracted(&root);
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn check_extracted(root: &Path) -> anyhow::Result<()> {
    let conffiles = std::fs::read_to_string(root.join("DEBIAN/conffiles")).unwrap_or_default();
    ensure!(
        conffiles
            .lines()
            .any(|l| l == "/etc/balancer/balancer.toml"),
        "the example config is a conffile (an upgrade keeps the operator's edits): {conffiles:?}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = root.join("DEBIAN").join(script);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("the package has no {script}"))?;
        run_step(Command::new("sh").arg("-n").arg(&path))
            .with_context(|| format!("{script} is not valid sh"))?;
        if script == "postinst" {
            ensure!(
                text.contains("adduser --system --group") && text.contains("balancer"),
                "postinst creates the service user: {text}"
            );
        }
    }
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/balancer.service"))?;
    ensure!(
        unit == std::fs::read_to_string(workspace_root().join("packaging/balancer.service"))?,
        "the packaged unit is packaging/balancer.service"
    );
    // The packaged binary and example config work as installed.
    let binary = root.join("usr/bin/balancer");
    let version = output(Command::new(&binary).arg("--version"))?;
    ensure!(
        version.starts_with("balancer "),
        "balancer --version: {version}"
    );
    let checked = output(
        Command::new(&binary)
            .args(["check-config", "--config"])
            .arg(root.join("etc/balancer/balancer.toml")),
    )?;
    eprintln!("xtask: packaged example config: {}", checked.trim());
    Ok(())
}
