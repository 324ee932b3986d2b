//! The XDP data plane: loading and attaching the edge program, writing VIPs
//! into its maps, and reading its counters back.

mod control;
mod keys;
pub mod layout;
mod loader;
pub mod maglev;
pub mod nexthop;
mod stats;
pub mod supervise;

pub use control::{
    BackendModel, Control, ControlError, ControlMaps, HopError, LinkedHealth, OperatorRequestError,
    VipModel,
};
pub use loader::{
    AttachedMode, Dataplane, DataplaneError, DecapProgram, PassProgram, if_index, unload,
};
pub use stats::{BackendStats, StatsReader, VipInfo, VipStats, XdpStats};
pub use supervise::SharedControl;

/// The eBPF object built by `cargo xtask build`, embedded so the binary is the one file to deploy.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("BALANCER_EBPF_OBJECT"));
