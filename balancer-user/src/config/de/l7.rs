//! The L7 tables as written: `[proxy]`, `[[listener]]`, `[[route]]` and `[pool.NAME]`. Rules
//! between keys (a route's target, `hash_on` with `balance`) and between tables (names, binds,
//! references) are checked in `validate::l7`.

use std::{fmt, net::SocketAddr, time::Duration};

use serde::{
    Deserialize, Deserializer,
    de::{Error, MapAccess, Unexpected, Visitor},
};
use toml::Spanned;

use super::{
    Array, Cidr, Element, Keyword, Parsed, Status, Table, TableOf, array, in_range, keyword,
    optional_duration, port, rise_or_fall, spanned_keyword,
};
use crate::config::{KeepaliveConfig, ListenerConfig, RouteConfig};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct ProxyTable {
    #[serde(default, deserialize_with = "keyword")]
    pub access_log: AccessLog,
    pub access_log_file: Option<Spanned<String>>,
    pub state_file: Option<Spanned<String>>,
    pub upgrade_socket: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub shutdown_timeout: Option<Spanned<Duration>>,
    #[serde(default, deserialize_with = "workers")]
    pub workers: Option<usize>,
    pub temp_dir: Option<Spanned<String>>,
    #[serde(default = "default_body_buffer", deserialize_with = "byte_size")]
    pub body_buffer: u64,
    #[serde(default = "default_response_buffer", deserialize_with = "byte_size")]
    pub response_buffer: u64,
    #[serde(
        default = "default_max_response_buffer",
        deserialize_with = "byte_size"
    )]
    pub max_response_buffer: u64,
    #[serde(default = "yes")]
    pub request_id: bool,
}

/// No `[proxy]` table: every key's default (`request_id` is on, the buffers at their sizes).
impl Default for ProxyTable {
    fn default() -> Self {
        ProxyTable {
            access_log: AccessLog::default(),
            access_log_file: None,
            state_file: None,
            upgrade_socket: None,
            shutdown_timeout: None,
            workers: None,
            temp_dir: None,
            body_buffer: default_body_buffer(),
            response_buffer: default_response_buffer(),
            max_response_buffer: default_max_response_buffer(),
            request_id: true,
        }
    }
}

fn default_body_buffer() -> u64 {
    crate::config::ProxySettings::DEFAULT_BODY_BUFFER
}

fn default_response_buffer() -> u64 {
    crate::config::ProxySettings::DEFAULT_RESPONSE_BUFFER
}

fn default_max_response_buffer() -> u64 {
    crate::config::ProxySettings::DEFAULT_MAX_RESPONSE_BUFFER
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(in crate::config) enum AccessLog {
    #[default]
    Combined,
    /// The name of `combined` before it was nginx's format exactly; kept as its alias.
    Text,
    Json,
    Off,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct ListenerTable {
    pub name: Spanned<String>,
    #[serde(deserialize_with = "spanned_socket_addr")]
    pub bind: Spanned<SocketAddr>,
    pub tls: Option<Spanned<Table<TlsTable>>>,
    pub redirect_https: Option<Spanned<bool>>,
    #[serde(default, deserialize_with = "optional_spanned_port")]
    pub https_port: Option<Spanned<u16>>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub header_read_timeout: Option<Spanned<Duration>>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub keepalive_timeout: Option<Spanned<Duration>>,
    #[serde(
        default = "default_max_header_bytes",
        deserialize_with = "max_header_bytes"
    )]
    pub max_header_bytes: usize,
    #[serde(default = "default_max_headers", deserialize_with = "max_headers")]
    pub max_headers: usize,
    #[serde(
        default = "default_listener_max_connections",
        deserialize_with = "listener_max_connections"
    )]
    pub max_connections: usize,
    #[serde(default, deserialize_with = "array")]
    pub trusted_proxies: Vec<Spanned<Cidr>>,
    pub trusted_headers: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default, deserialize_with = "keyword")]
    pub underscore_headers: Underscore,
    pub allowed_hosts: Option<Spanned<Vec<Spanned<String>>>>,
    pub disallowed_host_status: Option<Spanned<u16>>,
    pub identity_headers: Option<Vec<Spanned<String>>>,
    #[serde(default = "yes")]
    pub emit_forwarded: bool,
    #[serde(default)]
    pub emit_x_real_ip: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(in crate::config) enum Underscore {
    #[default]
    Drop,
    Reject,
    Allow,
}

fn default_max_header_bytes() -> usize {
    ListenerConfig::DEFAULT_MAX_HEADER_BYTES
}

fn default_max_headers() -> usize {
    ListenerConfig::DEFAULT_MAX_HEADERS
}

fn default_listener_max_connections() -> usize {
    ListenerConfig::DEFAULT_MAX_CONNECTIONS
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct TlsTable {
    pub certificates: Spanned<Array<Table<CertificateTable>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct CertificateTable {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RouteTable {
    pub name: Option<Spanned<String>>,
    pub listener: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub strip_prefix: bool,
    pub pool: Option<Spanned<String>>,
    pub static_dir: Option<Spanned<String>>,
    #[serde(default = "yes")]
    pub preserve_host: bool,
    #[serde(default = "default_max_body_size", deserialize_with = "byte_size")]
    pub max_body_size: u64,
    #[serde(default = "yes")]
    pub request_buffering: bool,
    #[serde(default = "yes")]
    pub response_buffering: bool,
    #[serde(default, deserialize_with = "optional_duration")]
    pub client_body_timeout: Option<Spanned<Duration>>,
    #[serde(default)]
    pub error_pages: ErrorPages,
    #[serde(default)]
    pub request_headers: Table<HeaderEditsTable>,
    #[serde(default)]
    pub response_headers: Table<HeaderEditsTable>,
    #[serde(default = "yes")]
    pub rewrite_location: bool,
    #[serde(default = "yes")]
    pub rewrite_cookie_path: bool,
    #[serde(default)]
    pub rewrite_html: bool,
    #[serde(default)]
    pub debug_headers: bool,
    #[serde(default)]
    pub allow_encoded_slashes: bool,
    #[serde(default)]
    pub rewrite_cookie_domain: std::collections::BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub compress: bool,
}

/// `request_headers` / `response_headers`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct HeaderEditsTable {
    #[serde(default)]
    pub set: HeaderValues,
    #[serde(default)]
    pub unset: Vec<Spanned<String>>,
}

/// `set = { "X-Name" = "value" }`, in the order of the file.
#[derive(Default)]
pub(in crate::config) struct HeaderValues(pub Vec<(String, Spanned<String>)>);

impl<'de> Deserialize<'de> for HeaderValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HeaderValuesVisitor)
    }
}

struct HeaderValuesVisitor;

impl<'de> Visitor<'de> for HeaderValuesVisitor {
    type Value = HeaderValues;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a table of header names and values, such as { \"X-Frame-Options\" = \"DENY\" }",
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderValues, A::Error> {
        let mut values = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            values.push((name, map.next_value()?));
        }
        Ok(HeaderValues(values))
    }
}

fn yes() -> bool {
    true
}

fn default_max_body_size() -> u64 {
    RouteConfig::DEFAULT_MAX_BODY_SIZE
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct PoolTable {
    #[serde(default, deserialize_with = "keyword")]
    pub balance: BalanceKind,
    pub hash_on: Option<Spanned<String>>,
    pub servers: Spanned<Array<Table<ServerTable>>>,
    #[serde(default)]
    pub keepalive: Table<KeepaliveTable>,
    #[serde(default)]
    pub retry: Table<RetryTable>,
    #[serde(default)]
    pub timeouts: Table<TimeoutsTable>,
    pub h2c: Option<Spanned<bool>>,
    pub tls_ca_file: Option<Spanned<String>>,
    pub tls_server_name: Option<Spanned<String>>,
    pub tls_cert_file: Option<Spanned<String>>,
    pub tls_key_file: Option<Spanned<String>>,
    pub h2: Option<Spanned<bool>>,
    #[serde(default)]
    pub error_pages: ErrorPages,
    pub sticky: Option<Spanned<Table<StickyTable>>>,
    pub health: Option<Spanned<Table<PoolHealthTable>>>,
    #[serde(default)]
    pub passive: Table<PassiveTable>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub slow_start: Option<Spanned<Duration>>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub queue_timeout: Option<Spanned<Duration>>,
    #[serde(default, deserialize_with = "keyword")]
    pub on_down: OnDownKind,
}

/// `on_down`: what happens to requests waiting on a server when it is marked down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(in crate::config) enum OnDownKind {
    #[default]
    Abort,
    Keep,
}

/// `sticky`; which keys go with which `mode` is checked in `validate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct StickyTable {
    #[serde(deserialize_with = "spanned_keyword")]
    pub mode: Spanned<StickyMode>,
    pub cookie: Option<Spanned<String>>,
    pub path_param: Option<Spanned<String>>,
    pub strip_route: Option<Spanned<bool>>,
    pub key: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(in crate::config) enum StickyMode {
    RouteSuffix,
    Insert,
}

/// A pool's `health`: like a VIP's HTTP check, without `check`, with TLS.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct PoolHealthTable {
    pub path: Spanned<String>,
    pub host: Option<Spanned<String>>,
    pub expect: Option<Spanned<Array<Status>>>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub interval: Option<Spanned<Duration>>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Spanned<Duration>>,
    #[serde(default = "super::default_rise", deserialize_with = "rise_or_fall")]
    pub rise: u32,
    #[serde(default = "super::default_fall", deserialize_with = "rise_or_fall")]
    pub fall: u32,
    #[serde(default, deserialize_with = "optional_spanned_port")]
    pub port: Option<Spanned<u16>>,
    pub tls: Option<Spanned<bool>>,
    pub tls_ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct PassiveTable {
    #[serde(
        default = "default_passive_failures",
        deserialize_with = "passive_failures"
    )]
    pub failures: u32,
    #[serde(default, deserialize_with = "optional_duration")]
    pub window: Option<Spanned<Duration>>,
}

impl Default for PassiveTable {
    fn default() -> Self {
        Self {
            failures: default_passive_failures(),
            window: None,
        }
    }
}

fn default_passive_failures() -> u32 {
    crate::config::PassiveHealthConfig::default().failures
}

fn passive_failures<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    in_range::<D, u32, 0, 1000>(deserializer).map(Spanned::into_inner)
}

/// `balance`; `hash_on` (a rule between keys) completes `Hash` in `validate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(in crate::config) enum BalanceKind {
    #[default]
    RoundRobin,
    LeastConn,
    P2c,
    Hash,
}

impl BalanceKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            BalanceKind::RoundRobin => "round-robin",
            BalanceKind::LeastConn => "least-conn",
            BalanceKind::P2c => "p2c",
            BalanceKind::Hash => "hash",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct ServerTable {
    pub url: Spanned<String>,
    #[serde(default = "default_server_weight", deserialize_with = "server_weight")]
    pub weight: u32,
    pub route: Option<Spanned<String>>,
    pub state: Option<Spanned<String>>,
    #[serde(default)]
    pub backup: bool,
    #[serde(default, deserialize_with = "max_conns")]
    pub max_conns: u32,
}

fn default_server_weight() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct KeepaliveTable {
    #[serde(default = "yes")]
    pub reuse: bool,
    #[serde(default, deserialize_with = "optional_duration")]
    pub idle_timeout: Option<Spanned<Duration>>,
    #[serde(default = "default_max_idle", deserialize_with = "max_idle")]
    pub max_idle: usize,
}

impl Default for KeepaliveTable {
    fn default() -> Self {
        Self {
            reuse: true,
            idle_timeout: None,
            max_idle: default_max_idle(),
        }
    }
}

fn default_max_idle() -> usize {
    KeepaliveConfig::default().max_idle
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RetryTable {
    #[serde(default, deserialize_with = "optional_duration")]
    pub after_failure: Option<Spanned<Duration>>,
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub budget: Option<Spanned<f64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct TimeoutsTable {
    #[serde(default, deserialize_with = "optional_duration")]
    pub connect: Option<Spanned<Duration>>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub response: Option<Spanned<Duration>>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub websocket_idle: Option<Spanned<Duration>>,
}

// ---- Tables and arrays -------------------------------------------------------------------------

impl TableOf for ProxyTable {}
impl TableOf for ListenerTable {}
impl TableOf for TlsTable {}
impl TableOf for RouteTable {}
impl TableOf for PoolTable {}
impl TableOf for KeepaliveTable {}
impl TableOf for RetryTable {}
impl TableOf for TimeoutsTable {}
impl TableOf for HeaderEditsTable {}
impl TableOf for StickyTable {}
impl TableOf for PoolHealthTable {}
impl TableOf for PassiveTable {}

impl TableOf for CertificateTable {
    const EXPECTING: &'static str =
        "a table such as { cert = \"certs/site.pem\", key = \"certs/site.key\" }";
}

impl TableOf for ServerTable {
    const EXPECTING: &'static str = "a table such as { url = \"http://198.18.1.2:8000\" }";
}

impl Element for Table<ListenerTable> {
    const ARRAY: &'static str = "an array of tables, each listener starting with [[listener]]";
}

impl Element for Spanned<Table<RouteTable>> {
    const ARRAY: &'static str = "an array of tables, each route starting with [[route]]";
}

impl Element for Table<CertificateTable> {
    const ARRAY: &'static str = "an array of certificates, such as [{ cert = \"certs/site.pem\", key = \"certs/site.key\" }]";
}

impl Element for Table<ServerTable> {
    const ARRAY: &'static str =
        "an array of servers, such as [{ url = \"http://198.18.1.2:8000\", weight = 1 }]";
}

// ---- Keywords ----------------------------------------------------------------------------------

impl Keyword for AccessLog {
    const ONE_OF: &'static str = "one of `combined`, `text`, `json`, `off`";
}

impl Keyword for StickyMode {
    const ONE_OF: &'static str = "`route-suffix` or `insert`";
}

impl Keyword for Underscore {
    const ONE_OF: &'static str = "one of `drop`, `reject`, `allow`";
}

impl Keyword for OnDownKind {
    const ONE_OF: &'static str = "`abort` or `keep`";
}

impl Keyword for BalanceKind {
    const ONE_OF: &'static str = "one of `round-robin`, `least-conn`, `p2c`, `hash`";
}

// ---- Pools -------------------------------------------------------------------------------------

/// `[pool.NAME]` tables in the order of the file (validation errors then come in that order too;
/// `L7Config::pools` is sorted by name afterwards).
#[derive(Default)]
pub(in crate::config) struct Pools(pub Vec<(String, Spanned<Table<PoolTable>>)>);

impl<'de> Deserialize<'de> for Pools {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(PoolsVisitor)
    }
}

struct PoolsVisitor;

impl<'de> Visitor<'de> for PoolsVisitor {
    type Value = Pools;

    // `[[pool]]` (a likely slip) then reads "expected a table of pools, ...".
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table of pools, each starting with [pool.NAME]")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pools, A::Error> {
        let mut pools = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            pools.push((name, map.next_value()?));
        }
        Ok(Pools(pools))
    }
}

// ---- Error pages -------------------------------------------------------------------------------

/// `error_pages = { 502 = "errors/502.html" }`: HTTP error statuses and the files served for
/// them, in the order of the file. A TOML key is a string; it must be the status's own digits,
/// so that "502" and "0502" cannot both name 502.
#[derive(Default)]
pub(in crate::config) struct ErrorPages(pub Vec<(u16, Spanned<String>)>);

impl<'de> Deserialize<'de> for ErrorPages {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ErrorPagesVisitor)
    }
}

struct ErrorPagesVisitor;

impl<'de> Visitor<'de> for ErrorPagesVisitor {
    type Value = ErrorPages;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table of HTTP statuses and files, such as { 502 = \"errors/502.html\" }")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ErrorPages, A::Error> {
        let mut pages = Vec::new();
        while let Some(ErrorStatus(status)) = map.next_key()? {
            pages.push((status, map.next_value()?));
        }
        Ok(ErrorPages(pages))
    }
}

struct ErrorStatus(u16);

impl<'de> Deserialize<'de> for ErrorStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ErrorStatusVisitor)
    }
}

struct ErrorStatusVisitor;

impl Visitor<'_> for ErrorStatusVisitor {
    type Value = ErrorStatus;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an HTTP status code between 400 and 599")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<ErrorStatus, E> {
        text.parse::<u16>()
            .ok()
            .filter(|status| (400..=599).contains(status) && status.to_string() == text)
            .map(ErrorStatus)
            .ok_or_else(|| {
                E::custom(format!(
                    "{text:?} is not an HTTP error status: the keys of error_pages are status codes between 400 and 599"
                ))
            })
    }
}

// ---- Fields ------------------------------------------------------------------------------------

fn spanned_socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Spanned<SocketAddr>, D::Error> {
    let text = Spanned::<Parsed<SocketAddr>>::deserialize(deserializer)?;
    Ok(Spanned::new(text.span(), text.into_inner().0))
}

fn optional_spanned_port<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Spanned<u16>>, D::Error> {
    port(deserializer).map(Some)
}

fn max_header_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    in_range::<
        D,
        usize,
        { ListenerConfig::MIN_MAX_HEADER_BYTES as u64 },
        { ListenerConfig::MAX_MAX_HEADER_BYTES as u64 },
    >(deserializer)
    .map(Spanned::into_inner)
}

/// `proxy.workers`: 0 (tokio's work-stealing runtime) to 1024 threads.
fn workers<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    in_range::<D, usize, 0, 1024>(deserializer).map(|workers| Some(workers.into_inner()))
}

fn max_headers<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    in_range::<D, usize, 1, { ListenerConfig::MAX_MAX_HEADERS as u64 }>(deserializer)
        .map(Spanned::into_inner)
}

fn listener_max_connections<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    in_range::<D, usize, 1, { ListenerConfig::MAX_MAX_CONNECTIONS as u64 }>(deserializer)
        .map(Spanned::into_inner)
}

/// A server's weight: 0 (no requests) to 1000.
fn server_weight<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    in_range::<D, u32, 0, 1000>(deserializer).map(Spanned::into_inner)
}

/// A server's `max_conns`: 0 (no limit) to 100 000.
fn max_conns<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    in_range::<D, u32, 0, 100_000>(deserializer).map(Spanned::into_inner)
}

fn max_idle<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    in_range::<D, usize, 0, 10_000>(deserializer).map(Spanned::into_inner)
}

/// A size (`max_body_size`, `body_buffer`, ...): an integer of bytes, or a string with a unit
/// ("512KiB", "10MiB", "1GB").
fn byte_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_any(ByteSizeVisitor)
}

const SIZE_FORM: &str = "an integer of bytes or a size with a unit, such as \"512KiB\" or \"10MiB\" (units B, KB, MB, GB, KiB, MiB, GiB)";

struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(SIZE_FORM)
    }

    fn visit_i64<E: Error>(self, value: i64) -> Result<u64, E> {
        match u64::try_from(value) {
            Ok(value) => self.visit_u64(value),
            Err(_) => Err(E::custom(format!("must be at least 1 byte, not {value}"))),
        }
    }

    fn visit_u64<E: Error>(self, value: u64) -> Result<u64, E> {
        if value == 0 {
            return Err(E::custom("must be at least 1 byte, not 0"));
        }
        Ok(value)
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<u64, E> {
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let multiplier: u64 = match unit.trim_start_matches(' ') {
            "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(E::invalid_value(Unexpected::Str(text), &SIZE_FORM)),
        };
        if number.is_empty() {
            return Err(E::invalid_value(Unexpected::Str(text), &SIZE_FORM));
        }
        let size = number
            .parse::<u64>()
            .ok()
            .and_then(|number| number.checked_mul(multiplier))
            .ok_or_else(|| E::custom(format!("{text:?} is too large")))?;
        if size == 0 {
            return Err(E::custom(format!("must be at least 1 byte, not {text:?}")));
        }
        Ok(size)
    }
}
