//! Test and demo harness: network-namespace topologies owned by RAII guards,
//! `balancer` processes started inside them, and helpers to run code and
//! commands in a namespace. Used by the integration tests and by `cargo xtask demo`.
//! [`l7`] is the L7 proxy's: one namespace with backends, certificates and clients.
//!
//! Everything created here is also recorded in a process-wide registry so an
//! interrupt (Ctrl-C) can tear it down: see [`cleanup_everything`].

pub mod bird;
pub mod browser;
pub mod child;
pub mod django;
pub mod ecmp;
pub mod l4topology;
pub mod l7;
pub mod netns;
pub mod packets;
pub mod process;
pub mod slow_clients;
pub mod topology;
pub mod traffic;

pub use l4topology::{L4Topology, LongLived};
pub use l7::{
    Backend, CertFiles, Certs, Client, CurlReply, L7Net, Nginx, Reply, Request, TlsOptions, curl,
    http_request, https_request, raw_tcp, websocket_echo, write_config,
};
pub use netns::{Netns, cleanup_everything, in_netns, unique_suffix};
pub use process::{BalancerProcess, balancer_binary, http_get, run_in};
pub use topology::{ClientBalancer, Family};
