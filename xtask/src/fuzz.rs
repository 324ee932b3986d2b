//! `cargo xtask fuzz`: the cargo-fuzz targets in fuzz/ (the HTTP/1.1 framing code: request and
//! response heads, chunked bodies). Each target runs for a fixed time; a crash fails the run and
//! leaves its input in fuzz/artifacts/<target>/.
//!
//! Corpora: fuzz/corpus/<target> is what libFuzzer learns (not in git, it grows on every run);
//! fuzz/seeds/<target> are hand-written inputs in git, so a fresh clone starts from requests
//! that reach the interesting paths instead of from nothing.

use std::{path::Path, process::Command};

use anyhow::{Context, bail};

use crate::{run_step, setup, workspace_root};

/// Every target in fuzz/fuzz_targets.
pub const TARGETS: &[&str] = &["h1_request", "h1_chunked", "h1_response"];

/// Runs one target, or every target, for `seconds` each.
pub fn run(seconds: u64, target: Option<&str>) -> anyhow::Result<()> {
    let targets: Vec<&str> = match target {
        Some(name) if TARGETS.contains(&name) => vec![name],
        Some(name) => bail!("no fuzz target {name}; the targets: {}", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    let tools_bin = setup::cargo_fuzz()?
        .parent()
        .context("cargo-fuzz has a directory")?
        .to_path_buf();
    let fuzz_dir = workspace_root().join("fuzz");
    for name in targets {
        eprintln!("xtask: fuzzing {name} for {seconds} s");
        run_target(&fuzz_dir, &tools_bin, name, seconds).with_context(|| {
            format!("fuzz target {name} (a crashing input is saved in fuzz/artifacts/{name}/)")
        })?;
    }
    Ok(())
}

/// The share of `cargo xtask test`: every target for 20 seconds, from the corpus the previous
/// runs left, so it finds regressions quickly without making the test run much longer.
pub fn bounded() -> anyhow::Result<()> {
    run(20, None)
}

fn run_target(fuzz_dir: &Path, tools_bin: &Path, name: &str, seconds: u64) -> anyhow::Result<()> {
    let corpus = fuzz_dir.join("corpus").join(name);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![tools_bin.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    let mut command = Command::new("rustup");
    // Nightly: cargo-fuzz builds with -Z sanitizer flags. The first corpus directory is the
    // one libFuzzer writes new inputs to; the seeds are only read.
    command
        .args(["run", "nightly", "cargo", "fuzz", "run", name])
        .arg(&corpus)
        .arg(fuzz_dir.join("seeds").join(name))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // Above libFuzzer's default of 4 KiB, so inputs can cross every limit the code has
        // (8 KiB heads in one limit set, 8 KiB chunked trailers); it grows to it gradually.
        .arg("-max_len=16384")
        .arg(format!("-dict={}", fuzz_dir.join("http.dict").display()))
        .current_dir(fuzz_dir)
        .env("PATH", std::env::join_paths(paths)?);
    // Sanitizer flags, nightly: not xtask's cargo environment.
    crate::build::without_cargo_env(&mut command);
    run_step(&mut command)
}
