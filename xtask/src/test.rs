//! `cargo xtask test`: the demo, lints (clippy on the workspace and on balancer-ebpf, no
//! module cycles), a bounded fuzzing run of the HTTP/1.1 framing code, every test of the
//! workspace, the .deb, then one summary line.

use std::process::{Command, Stdio};

use anyhow::Context;

use crate::{build, run_step, workspace_root};

pub fn run() -> anyhow::Result<()> {
    // The README's first command runs first, before anything else is built: on a fresh clone
    // (as in CI) it then proves that the demo builds everything it runs. Built later, a
    // helper binary of `cargo test` would hide a missing build step.
    eprintln!("xtask: test 1/2: `cargo xtask demo`, before anything else is built");
    crate::demo::run().context("`cargo xtask demo` failed (the README's first command)")?;
    eprintln!("xtask: the demo passed; test 2/2: lints and the workspace's tests");
    let binary = build::all(false)?;
    run_step(&mut build::cargo(&["fmt", "--all", "--", "--check"]))
        .context("cargo fmt: run `cargo fmt --all`")?;
    run_step(
        Command::new("rustup")
            .args(["run", "nightly", "cargo", "fmt", "--", "--check"])
            .current_dir(workspace_root().join("balancer-ebpf"))
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
    .context("cargo fmt in balancer-ebpf")?;
    build::ebpf_clippy()?;
    crate::cycles::run(&workspace_root().join("balancer-user/src"))
        .context("module cycles (`cargo xtask cycles`)")?;
    run_step(&mut build::cargo(&[
        "clippy",
        "--locked",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    crate::fuzz::bounded().context("fuzzing the HTTP/1.1 framing code (`cargo xtask fuzz`)")?;

    let mut command = build::cargo(&["test", "--locked", "--workspace", "--no-fail-fast"]);
    command.env("BALANCER_BIN", &binary).stdout(Stdio::piped());
    eprintln!("xtask: $ cargo test --locked --workspace --no-fail-fast");
    let mut child = command.spawn().context("starting cargo test")?;
    let stdout = child.stdout.take().expect("piped");
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, " passed");
            failed += count(rest, " failed");
            ignored += count(rest, " ignored");
        }
    }
    let status = child.wait()?;
    eprintln!("xtask: the .deb (`cargo xtask package`) and its checks");
    let package = crate::package::run().and_then(|deb| crate::package::check(&deb));
    if let Err(err) = &package {
        eprintln!("xtask: package: {err:#}");
    }
    println!(
        "\nxtask test summary: demo passed; {passed} passed, {failed} failed, {ignored} ignored; \
         package {}",
        if package.is_ok() { "checked" } else { "FAILED" }
    );
    println!("{passed} passed, {failed} failed");
    anyhow::ensure!(status.success() && failed == 0, "tests failed");
    anyhow::ensure!(passed > 0, "no test ran");
    package.context("the .deb")
}

/// The number before `label` in a `test result:` line, e.g. "ok. 12 passed; 0 failed; …".
fn count(result: &str, label: &str) -> u64 {
    result
        .split(';')
        .find(|part| part.contains(label))
        .and_then(|part| part.split_whitespace().rev().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
