//! Locates the eBPF object built by `cargo xtask build` so the binary can embed it.
use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=BALANCER_EBPF_OBJECT");
    let object = match env::var_os("BALANCER_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
            .join("../target/ebpf/bpfel-unknown-none/release/balancer"),
    };
    if !object.is_file() {
        panic!(
            "the eBPF object {} does not exist: build through `cargo xtask build` \
             (or set BALANCER_EBPF_OBJECT to a built balancer-ebpf object)",
            object.display()
        );
    }
    println!("cargo:rerun-if-changed={}", object.display());
    println!(
        "cargo:rustc-env=BALANCER_EBPF_OBJECT={}",
        object.canonicalize().expect("exists").display()
    );
}
