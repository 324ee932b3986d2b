//! The `balancer` command line as a user meets it: version, help, check-config.

use std::process::Command;

use balancer_tests::balancer_binary;

fn balancer(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(balancer_binary())
        .args(args)
        .output()
        .expect("run balancer (built by cargo xtask test)");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let (code, stdout, _) = balancer(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("balancer {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, stdout, _) = balancer(&["--help"]);
    assert_eq!(code, 0);
    for expected in ["run", "check-config", "import", "XDP"] {
        assert!(
            stdout.contains(expected),
            "--help should mention {expected}:\n{stdout}"
        );
    }
}

#[test]
fn check_config_accepts_a_good_file_and_rejects_a_bad_one_with_its_line() {
    let dir = std::env::temp_dir().join(format!("bltest-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[xdp]\ninterface = \"eth9\"\n\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.10\"\nport = 80\nprotocol = \"tcp\"\nforward = \"local\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = balancer(&["check-config", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "good config refused: {stderr}");
    assert!(stdout.contains("ok (1 VIPs, 0 listeners"), "{stdout}");

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[admin]\nlisten = \"127.0.0.1:9100\"\n\n[xdp]\ninterface = \"eth9\"\nmode = \"fast\"\n",
    )
    .unwrap();
    let (code, _, stderr) = balancer(&["check-config", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    let prefix = format!("{}:6:", bad.display());
    assert!(
        stderr.starts_with(&prefix),
        "error should point at line 6 of the file: {stderr}"
    );
    assert!(
        stderr.contains("xdp.mode"),
        "error should name the key: {stderr}"
    );

    let (code, _, stderr) = balancer(&[
        "check-config",
        "--config",
        dir.join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read the config file"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_refuses_a_bad_config_without_touching_the_kernel() {
    let dir = std::env::temp_dir().join(format!("bltest-cli-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[xdp]\ninterface = \"eth9\"\nunknown_key = 1\n").unwrap();
    let (code, _, stderr) = balancer(&["run", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("unknown_key"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
