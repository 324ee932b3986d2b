//! The XDP data plane: loading and attaching the edge program, writing VIPs
//! into its maps, and reading its counters back.

mod loader;
pub mod maglev;
mod stats;

pub use loader::{AttachedMode, Dataplane, DataplaneError, PassProgram};
pub use stats::{StatsReader, VipInfo, VipStats, XdpStats};

/// The eBPF object built by `cargo xtask build`, embedded so the binary is the one file to deploy.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("BALANCER_EBPF_OBJECT"));
