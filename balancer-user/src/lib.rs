//! `balancer`: an eBPF/XDP-accelerated L4+L7 edge load balancer.
//!
//! The library holds every concern of the binary so tests can reach them:
//! `config` (parse and validate), `dataplane` (the XDP program and its maps),
//! `admin` (metrics, state, health), and `run` (wiring them together).

pub mod admin;
pub mod announce;
pub mod config;
pub mod dataplane;
pub mod headers;
pub mod health;
pub mod http;
pub mod import;
pub mod linked;
pub mod notify;
pub mod operator;
pub mod proxy;
pub mod run;
pub mod sticky;
pub mod upgrade;
