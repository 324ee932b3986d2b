//! Types that cross the kernel boundary: BPF map keys, values and constants.
//!
//! Both the XDP programs (`balancer-ebpf`) and the userspace control plane
//! (`balancer-user`) use these definitions, so the two sides cannot drift.
//! Every type is `#[repr(C)]`, padding-free and size-asserted at compile time.
#![no_std]

pub mod flows;
pub mod maps;
pub mod stats;

pub use flows::*;
pub use maps::*;
pub use stats::{Action, Counter, DecapReason, FlowEvent, PacketReason};
