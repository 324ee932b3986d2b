//! Importers: other proxies' configs turned into this balancer's TOML. Each is pure (text in,
//! text out); the command line reads the file and prints the result.

pub mod apache;
