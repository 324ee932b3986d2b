//! `balancer`: an eBPF/XDP-accelerated L4+L7 edge load balancer.
//!
//! The library holds every concern of the binary so tests can reach them:
//! `config` (parse and validate), `dataplane` (the XDP program and its maps),
//! `admin` (metrics, state, health), and `run` (wiring them together).

pub(crate) mod admin;
pub(crate) mod announce;
pub(crate) mod clock;
pub mod config;
pub mod dataplane;
pub(crate) mod headers;
pub(crate) mod health;
pub(crate) mod http;
pub mod import;
pub(crate) mod linked;
pub(crate) mod notify;
pub mod operator;
pub(crate) mod proxy;
pub(crate) mod replace_file;
pub mod run;
pub(crate) mod sticky;
pub(crate) mod upgrade;
