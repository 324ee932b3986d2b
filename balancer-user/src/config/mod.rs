//! The configuration file: TOML in the shape of DESIGN.md, parsed and validated
//! without any I/O beyond reading the file. Every error names the key and the line.
//!
//! Parsing happens in two steps: `de` reads the file into tables that keep the position of every
//! value, and `validate` checks the rules between values and builds the types below, which hold
//! plain values (except the few older fields that are `Spanned`).

mod de;
mod error;
mod l7;
mod trusted_headers;
mod validate;

#[cfg(test)]
mod tests;

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

pub use error::ConfigError;
pub use l7::*;
pub use trusted_headers::{HeaderGroup, TrustedHeader, UnderscorePolicy};

/// Smallest `xdp.table_size` (a prime): below it Maglev spreads flows too unevenly.
pub const TABLE_SIZE_MIN: u32 = 251;
/// Largest `xdp.table_size`: the largest prime below 2^20.
pub const TABLE_SIZE_MAX: u32 = 1_048_573;
/// Limit of the Maglev array, `max_vips × table_size × 2` slots (1 GiB of `u32`).
pub const MAGLEV_SLOTS_LIMIT: u64 = 268_435_456;
/// Upper bound of `max_vips × max_backends` (the backend array and its counters).
pub const BACKEND_SLOTS_LIMIT: u64 = 8_388_608;
// A connection-table entry holds a backend slot in FLOW_BACKEND_BITS bits.
const _: () = assert!(BACKEND_SLOTS_LIMIT <= 1 << balancer_common::FLOW_BACKEND_BITS);
/// Bounds of `xdp.max_connections` (flows the connection table is sized for).
pub const MAX_CONNECTIONS_MIN: u32 = 1_024;
pub const MAX_CONNECTIONS_LIMIT: u32 = 16_777_216;
/// Upper bound of `xdp.max_acl_rules` (entries of each ACL trie).
pub const MAX_ACL_RULES_LIMIT: u32 = 1_048_576;

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub admin: AdminConfig,
    /// Without it the XDP data plane is not loaded (and there are no VIPs).
    pub xdp: Option<XdpConfig>,
    pub vips: Vec<VipConfig>,
    /// The proxy: listeners, routes and pools (empty without `[[listener]]`).
    pub l7: L7Config,
    /// `[announce]`: routes for the VIPs this host serves, for a BGP daemon to export. `None`:
    /// no route is announced or flushed.
    pub announce: Option<AnnounceConfig>,
}

/// `[announce]`, validated: the kernel routing table the balancer owns, where it keeps one
/// route per VIP address it serves (see `crate::announce`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// `table`: a routing table id, not one of the kernel's own (0, 253, 254, 255).
    pub table: u32,
    /// `withdraw_delay`: how long SIGTERM waits after withdrawing for the routers to stop
    /// sending, before the proxy drains and the process exits (0 to `MAX_WITHDRAW_DELAY`).
    pub withdraw_delay: Duration,
    /// `state_file`: where an operator's withdraw is kept across restarts (absolute).
    pub state_file: PathBuf,
}

impl AnnounceConfig {
    pub const DEFAULT_TABLE: u32 = 200;
    pub const DEFAULT_WITHDRAW_DELAY: Duration = Duration::from_secs(2);
    pub const MAX_WITHDRAW_DELAY: Duration = Duration::from_secs(600);
    /// In the systemd unit's `StateDirectory`.
    pub const DEFAULT_STATE_FILE: &str = "/var/lib/balancer/announce.json";
}

/// `[admin]`, validated (as written: `de::AdminTable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address of the admin API and metrics (loopback by default: it is not authenticated).
    pub listen: SocketAddr,
    /// `token_file`: a file holding a bearer token that every admin request except
    /// `GET /healthz` must present (`Authorization: Bearer TOKEN`). Required when `listen` is
    /// not a loopback address.
    pub token_file: Option<PathBuf>,
}

impl AdminConfig {
    pub(crate) fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9100))
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: Self::default_listen(),
            token_file: None,
        }
    }
}

/// `[xdp]`: the data plane's interface and the sizes of its maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpConfig {
    /// The interface the edge program attaches to.
    pub interface: Spanned<String>,
    pub mode: XdpAttachMode,
    /// Capacity of the VIP map (and rows of the per-VIP counters); 1 to `MAX_VIPS_LIMIT`.
    /// The span is empty (0..0) when the default was taken.
    pub max_vips: Spanned<u32>,
    /// Where the maps are pinned, a directory below `/sys/fs/bpf/` (normalized: no trailing
    /// '/', no "." or empty components). `None`: the maps are not pinned.
    pub pin_path: Option<PathBuf>,
    /// Maglev slots per VIP table: a prime in `TABLE_SIZE_MIN..=TABLE_SIZE_MAX`, and
    /// `max_vips × table_size × 2 <= MAGLEV_SLOTS_LIMIT`.
    pub table_size: u32,
    /// Backend slots per VIP: 1 to `MAX_BACKENDS_PER_VIP_LIMIT`; no VIP has more backends.
    pub max_backends: u32,
    /// Flows the connection table is sized for (`flow_sets`): `MAX_CONNECTIONS_MIN..=MAX_CONNECTIONS_LIMIT`.
    pub max_connections: u32,
    /// Entries of each ACL trie (one per family): 1 to `MAX_ACL_RULES_LIMIT`. The rules of a
    /// family in `acl` and in every VIP's `acl` together fit in it.
    pub max_acl_rules: u32,
    /// `flow_grace`: how long a VIP's previous Maglev table still places non-SYN TCP packets
    /// that miss the connection table, after a change of its backends (0: not at all; at most
    /// `MAX_FLOW_GRACE`).
    pub flow_grace: Duration,
    /// Rules for every VIP's traffic.
    pub acl: AclConfig,
}

impl XdpConfig {
    pub const DEFAULT_FLOW_GRACE: Duration = Duration::from_secs(60);
    /// A flow silent for an hour on a host that never saw it is not worth a stale table; the
    /// bound also keeps the deadline far from the `u64` nanosecond clock's end.
    pub const MAX_FLOW_GRACE: Duration = Duration::from_secs(3600);

    pub fn max_vips(&self) -> u32 {
        *self.max_vips.get_ref()
    }

    /// Slots of the Maglev array: two tables of `table_size` per VIP (at most
    /// `MAGLEV_SLOTS_LIMIT` in a validated config, so it fits a `u32`).
    pub fn maglev_slots(&self) -> u32 {
        self.max_vips()
            .saturating_mul(self.table_size)
            .saturating_mul(2)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpAttachMode {
    /// Driver (native) mode, falling back to generic (skb) mode if the driver refuses.
    #[default]
    Auto,
    Driver,
    Skb,
}

/// Allow and deny CIDR lists (`xdp.acl` or a VIP's `acl`). Written either as a network
/// ("198.18.0.0/24", host bits clear) or a single address (a /32 or /128). No CIDR is in both
/// lists, and no list holds one twice. The longest matching prefix decides; when a scope has
/// allow rules, a source that matches none of its rules is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclConfig {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl AclConfig {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipConfig {
    pub name: Spanned<String>,
    pub address: Spanned<IpAddr>,
    /// 1 to 65535.
    pub port: Spanned<u16>,
    pub protocol: Protocol,
    pub forward: Spanned<ForwardMode>,
    /// Non-empty for `ipip` and `l2-dsr` (at most `xdp.max_backends`, each address of the VIP's
    /// family and listed once, at least one weight above 0); empty for `local`.
    pub backends: Vec<BackendConfig>,
    /// `FiveTuple` unless `protocol` is UDP and the config says `udp_hash = "source"`.
    pub udp_hash: UdpHash,
    /// Backend health checks; always `None` for `local`.
    pub health: Option<HealthCheckConfig>,
    /// Rules for this VIP only, all of the VIP's family.
    pub acl: AclConfig,
}

impl VipConfig {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    pub fn address(&self) -> IpAddr {
        *self.address.get_ref()
    }

    pub fn port(&self) -> u16 {
        *self.port.get_ref()
    }

    pub fn forward(&self) -> ForwardMode {
        *self.forward.get_ref()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendConfig {
    /// Same family as the VIP; not unspecified, loopback, multicast or broadcast, and not the
    /// VIP's own address.
    pub address: IpAddr,
    /// 0 to 65535 (default 1). 0: configured but gets no new flows.
    pub weight: u32,
}

/// What a UDP VIP hashes to pick a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
pub enum UdpHash {
    /// Addresses, ports and protocol: every flow of a client may go to another backend.
    #[default]
    #[serde(rename = "5-tuple")]
    FiveTuple,
    /// The source address only: all of a client's flows go to one backend.
    #[serde(rename = "source")]
    Source,
}

impl UdpHash {
    pub const fn as_str(self) -> &'static str {
        match self {
            UdpHash::FiveTuple => "5-tuple",
            UdpHash::Source => "source",
        }
    }
}

/// An active health check of a backend (a VIP's backend, or later a pool's server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    /// The port to check; `None`: the service's own port (a VIP's `port`).
    pub port: Option<u16>,
    /// Time between two checks of a backend: `MIN_INTERVAL..=MAX_INTERVAL` (default 2s).
    pub interval: Duration,
    /// How long a check may take: above zero and at most `interval` (default 1s, or the
    /// interval when that is shorter).
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up (1 to 100, default 2).
    pub rise: u32,
    /// Consecutive failures that take an up backend down (1 to 100, default 3).
    pub fall: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// A TCP connection is accepted.
    Tcp,
    /// An HTTP/1.1 `GET path` with `Host: host` answers with an accepted status.
    Http {
        /// Starts with '/', no whitespace or control characters (default "/").
        path: String,
        /// A host name or IP address, optionally with ":port"; `None`: the backend's address.
        host: Option<String>,
        /// Accepted status codes (100 to 599, each once); empty: any 2xx or 3xx.
        expect: Vec<u16>,
    },
}

impl HealthCheckConfig {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_RISE: u32 = 2;
    pub const DEFAULT_FALL: u32 = 3;
    pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
    pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
    pub const DEFAULT_PATH: &str = "/";

    /// Whether an HTTP check's answer with `status` counts as healthy: a status in `expect`, or
    /// any 2xx or 3xx when `expect` is empty (and for a TCP check, which has no status).
    pub fn accepts_status(&self, status: u16) -> bool {
        match &self.kind {
            HealthCheckKind::Http { expect, .. } if !expect.is_empty() => expect.contains(&status),
            _ => (200..=399).contains(&status),
        }
    }

    /// The port to check when the service listens on `service_port`.
    pub fn port_or(&self, service_port: u16) -> u16 {
        self.port.unwrap_or(service_port)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub const fn ip_protocol(self) -> u8 {
        match self {
            Protocol::Tcp => balancer_common::IPPROTO_TCP,
            Protocol::Udp => balancer_common::IPPROTO_UDP,
        }
    }
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardMode {
    /// Encapsulate towards a backend (IPIP / IPv6-in-IPv6).
    Ipip,
    /// Rewrite the destination MAC to a backend's on the same L2 segment.
    L2Dsr,
    /// Pass to this host's own stack (the L7 proxy).
    Local,
}

impl ForwardMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ForwardMode::Ipip => "ipip",
            ForwardMode::L2Dsr => "l2-dsr",
            ForwardMode::Local => "local",
        }
    }
}

impl Config {
    /// Parses and validates a config from TOML text. `origin` names the source
    /// (usually the file path) in error messages. Relative file paths in it are resolved against
    /// the current directory.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let base_dir =
            std::env::current_dir().map_err(|err| ConfigError::no_base_dir(origin, &err))?;
        Config::parse_in(text, origin, &base_dir)
    }

    /// Like `parse`, with relative file paths (TLS certificates and keys, static directories,
    /// error pages) resolved against `base_dir`, which should be absolute. No file is opened:
    /// the proxy opens them, and names them in its own errors.
    pub fn parse_in(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let file: de::ConfigFile = serde_path_to_error::deserialize(deserializer)
            .map_err(|err| ConfigError::from_toml(err, text, origin))?;
        validate::validate(file, base_dir).map_err(|err| err.located(text, origin))
    }

    /// Reads and parses the config file at `path`; relative file paths in it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|err| ConfigError::unreadable(&origin, &err))?;
        // `absolute` does not touch the file system (beyond the current directory).
        let absolute =
            std::path::absolute(path).map_err(|err| ConfigError::no_base_dir(&origin, &err))?;
        let base_dir = absolute.parent().unwrap_or(Path::new("/"));
        Config::parse_in(&text, &origin, base_dir)
    }
}
