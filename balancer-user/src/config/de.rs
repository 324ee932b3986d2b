//! The file as written: tables that keep the position of the values later rules point at, and
//! field deserializers whose errors speak the config's terms: the allowed range of a number, the
//! form of an address, the allowed keywords, and the value that was written, instead of a Rust
//! type ("expected u16"), a bare "invalid IP address syntax" or toml's "wanted string or table".

mod l7;

use std::{
    fmt, marker::PhantomData, net::IpAddr, net::SocketAddr, ops::Deref, str::FromStr,
    time::Duration,
};

use ipnet::IpNet;
use serde::{
    Deserialize, Deserializer,
    de::{
        DeserializeOwned, Error, IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor,
        value::MapAccessDeserializer,
    },
};
use toml::Spanned;

pub(super) use l7::{
    AccessLog, BalanceKind, ErrorPages, HeaderEditsTable, ListenerTable, OnDownKind,
    PoolHealthTable, PoolTable, Pools, ProxyTable, RouteTable, StickyMode, StickyTable, TlsTable,
    Underscore,
};

use super::{
    ForwardMode, MAX_ACL_RULES_LIMIT, MAX_CONNECTIONS_LIMIT, MAX_CONNECTIONS_MIN, Protocol,
    TABLE_SIZE_MAX, TABLE_SIZE_MIN, UdpHash, XdpAttachMode,
};

// ---- The tables of the file --------------------------------------------------------------------
//
// Field order is the order serde lists them in "unknown field `x`, expected one of ...".
// Every table inside the file is read through `Table`, which accepts nothing but a table.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    pub admin: Option<Table<AdminTable>>,
    pub xdp: Option<Table<XdpTable>>,
    #[serde(default, rename = "vip", deserialize_with = "array")]
    pub vips: Vec<Table<VipTable>>,
    #[serde(default)]
    pub proxy: Table<ProxyTable>,
    #[serde(default, rename = "listener", deserialize_with = "array")]
    pub listeners: Vec<Table<ListenerTable>>,
    #[serde(default, rename = "route", deserialize_with = "array")]
    pub routes: Vec<Spanned<Table<RouteTable>>>,
    #[serde(default, rename = "pool")]
    pub pools: Pools,
    pub announce: Option<Spanned<Table<AnnounceTable>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct XdpTable {
    pub interface: Spanned<String>,
    #[serde(default, deserialize_with = "keyword")]
    pub mode: XdpAttachMode,
    /// The span is empty (0..0) when defaulted.
    #[serde(default = "default_max_vips", deserialize_with = "max_vips")]
    pub max_vips: Spanned<u32>,
    pub pin_path: Option<Spanned<String>>,
    /// The span is empty (0..0) when defaulted.
    #[serde(default = "default_table_size", deserialize_with = "table_size")]
    pub table_size: Spanned<u32>,
    #[serde(default = "default_max_backends", deserialize_with = "max_backends")]
    pub max_backends: u32,
    #[serde(
        default = "default_max_connections",
        deserialize_with = "max_connections"
    )]
    pub max_connections: u32,
    #[serde(default = "default_max_acl_rules", deserialize_with = "max_acl_rules")]
    pub max_acl_rules: u32,
    #[serde(default, deserialize_with = "optional_duration")]
    pub flow_grace: Option<Spanned<Duration>>,
    #[serde(default)]
    pub acl: Table<AclTable>,
}

fn default_max_vips() -> Spanned<u32> {
    Spanned::new(0..0, balancer_common::DEFAULT_MAX_VIPS)
}

fn default_table_size() -> Spanned<u32> {
    Spanned::new(0..0, balancer_common::DEFAULT_TABLE_SIZE)
}

fn default_max_backends() -> u32 {
    balancer_common::DEFAULT_BACKENDS_PER_VIP
}

fn default_max_connections() -> u32 {
    balancer_common::DEFAULT_MAX_CONNECTIONS
}

fn default_max_acl_rules() -> u32 {
    balancer_common::DEFAULT_MAX_ACL_RULES
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VipTable {
    pub name: Spanned<String>,
    #[serde(deserialize_with = "ip_addr")]
    pub address: Spanned<IpAddr>,
    /// 1 to 65535 (checked while parsing).
    #[serde(deserialize_with = "port")]
    pub port: Spanned<u16>,
    #[serde(deserialize_with = "keyword")]
    pub protocol: Protocol,
    #[serde(deserialize_with = "spanned_keyword")]
    pub forward: Spanned<ForwardMode>,
    /// `None` when the key is absent (a local VIP must not have it, even empty).
    pub backends: Option<Spanned<Array<Table<BackendTable>>>>,
    #[serde(default, deserialize_with = "optional_spanned_keyword")]
    pub udp_hash: Option<Spanned<UdpHash>>,
    pub health: Option<Spanned<Table<HealthTable>>>,
    #[serde(default)]
    pub acl: Table<AclTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackendTable {
    #[serde(deserialize_with = "ip_addr")]
    pub address: Spanned<IpAddr>,
    #[serde(default = "default_weight", deserialize_with = "weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// A health check table. `check` decides which other keys are allowed; that is a rule between
/// keys, so it is checked in `validate`, where each key's position is known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthTable {
    #[serde(deserialize_with = "keyword")]
    pub check: HealthCheck,
    #[serde(default, deserialize_with = "optional_port")]
    pub port: Option<u16>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub interval: Option<Spanned<Duration>>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Spanned<Duration>>,
    #[serde(default = "default_rise", deserialize_with = "rise_or_fall")]
    pub rise: u32,
    #[serde(default = "default_fall", deserialize_with = "rise_or_fall")]
    pub fall: u32,
    pub path: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub expect: Option<Spanned<Array<Status>>>,
}

fn default_rise() -> u32 {
    super::HealthCheckConfig::DEFAULT_RISE
}

fn default_fall() -> u32 {
    super::HealthCheckConfig::DEFAULT_FALL
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum HealthCheck {
    Tcp,
    Http,
}

/// An HTTP status code that a health check accepts: 100 to 599.
pub(super) struct Status(pub Spanned<u16>);

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        in_range::<D, u16, 100, 599>(deserializer).map(Status)
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AclTable {
    #[serde(default, deserialize_with = "array")]
    pub allow: Vec<Spanned<Cidr>>,
    #[serde(default, deserialize_with = "array")]
    pub deny: Vec<Spanned<Cidr>>,
}

// ---- Tables ------------------------------------------------------------------------------------

/// A TOML table read as `T`. serde's derived struct visitors also accept an array and take the
/// fields by position: `acl = ["198.18.0.0/24"]` would read as `allow = "198.18.0.0/24"`, and
/// `backends = [["198.18.0.11", 2]]` as a backend of weight 2. A table of this config is only
/// ever written as a table.
pub(super) struct Table<T>(pub T);

/// A struct read from a TOML table.
pub(super) trait TableOf: DeserializeOwned {
    /// Completes "invalid type: ..., expected ..." when something else is written.
    const EXPECTING: &'static str = "a table";
}

impl TableOf for AdminTable {}
impl TableOf for AnnounceTable {}
impl TableOf for XdpTable {}
impl TableOf for VipTable {}
impl TableOf for HealthTable {}
impl TableOf for AclTable {}

impl TableOf for BackendTable {
    const EXPECTING: &'static str = "a table such as { address = \"198.18.0.11\", weight = 1 }";
}

impl<T> Deref for Table<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Default> Default for Table<T> {
    fn default() -> Self {
        Table(T::default())
    }
}

impl<'de, T: TableOf> Deserialize<'de> for Table<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TableVisitor(PhantomData))
    }
}

struct TableVisitor<T>(PhantomData<T>);

impl<'de, T: TableOf> Visitor<'de> for TableVisitor<T> {
    type Value = Table<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Table)
    }
}

// ---- Numbers -----------------------------------------------------------------------------------

/// A port: 0 is refused because no client can connect to it.
pub(super) fn port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Spanned<u16>, D::Error> {
    in_range::<D, u16, 1, { u16::MAX as u64 }>(deserializer)
}

fn optional_port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    port(deserializer).map(|port| Some(port.into_inner()))
}

/// `xdp.max_vips`: the VIP map cannot be empty, and the per-VIP stats map is sized
/// `max_vips × actions`, so the upper bound is the common crate's limit.
pub(super) fn max_vips<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Spanned<u32>, D::Error> {
    in_range::<D, u32, 1, { balancer_common::MAX_VIPS_LIMIT as u64 }>(deserializer)
}

/// `xdp.max_backends`: the backend array has this many slots per VIP.
fn max_backends<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    in_range::<D, u32, 1, { balancer_common::MAX_BACKENDS_PER_VIP_LIMIT as u64 }>(deserializer)
        .map(Spanned::into_inner)
}

fn max_connections<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    in_range::<D, u32, { MAX_CONNECTIONS_MIN as u64 }, { MAX_CONNECTIONS_LIMIT as u64 }>(
        deserializer,
    )
    .map(Spanned::into_inner)
}

fn max_acl_rules<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    in_range::<D, u32, 1, { MAX_ACL_RULES_LIMIT as u64 }>(deserializer).map(Spanned::into_inner)
}

/// A backend's weight: 0 (no new flows) to 65535.
fn weight<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    in_range::<D, u32, 0, { u16::MAX as u64 }>(deserializer).map(Spanned::into_inner)
}

/// A health check's `rise` or `fall`.
fn rise_or_fall<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    in_range::<D, u32, 1, 100>(deserializer).map(Spanned::into_inner)
}

/// `xdp.table_size`: Maglev needs a prime table size; the bounds keep the spread of flows even
/// (below) and the memory of one VIP modest (above).
pub(super) fn table_size<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Spanned<u32>, D::Error> {
    let value = Spanned::<TableSize>::deserialize(deserializer)?;
    Ok(Spanned::new(value.span(), value.into_inner().0))
}

struct TableSize(u32);

impl<'de> Deserialize<'de> for TableSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_u64(TableSizeVisitor)
    }
}

struct TableSizeVisitor;

impl Visitor<'_> for TableSizeVisitor {
    type Value = TableSize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "a prime number between {TABLE_SIZE_MIN} and {TABLE_SIZE_MAX}"
        )
    }

    fn visit_i64<E: Error>(self, value: i64) -> Result<Self::Value, E> {
        match u64::try_from(value) {
            Ok(value) => self.visit_u64(value),
            Err(_) => Err(not_a_table_size(value, "")),
        }
    }

    fn visit_u64<E: Error>(self, value: u64) -> Result<Self::Value, E> {
        let size = u32::try_from(value)
            .ok()
            .filter(|size| (TABLE_SIZE_MIN..=TABLE_SIZE_MAX).contains(size))
            .ok_or_else(|| not_a_table_size(value, ""))?;
        if is_prime(size) {
            return Ok(TableSize(size));
        }
        // Both ends of the range are prime, so there is a prime on either side.
        let below = (TABLE_SIZE_MIN..size).rev().find(|&n| is_prime(n));
        let above = (size..=TABLE_SIZE_MAX).find(|&n| is_prime(n));
        let nearest = match (below, above) {
            (Some(below), Some(above)) => format!(" (the nearest primes are {below} and {above})"),
            _ => String::new(),
        };
        Err(not_a_table_size(size, &nearest))
    }
}

fn not_a_table_size<E: Error>(value: impl fmt::Display, hint: &str) -> E {
    E::custom(format!(
        "must be a prime number between {TABLE_SIZE_MIN} and {TABLE_SIZE_MAX}, not {value}{hint}"
    ))
}

pub(super) fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let n = u64::from(n);
    (3..)
        .step_by(2)
        .take_while(|d| d * d <= n)
        .all(|d| !n.is_multiple_of(d))
}

/// An integer in `MIN..=MAX` of type `T` (`MAX` must fit in `T`).
fn in_range<'de, D, T, const MIN: u64, const MAX: u64>(
    deserializer: D,
) -> Result<Spanned<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let value = Spanned::<InRange<MIN, MAX>>::deserialize(deserializer)?;
    let span = value.span();
    let number = value.into_inner().0;
    // Cannot fail when MAX fits in T; an error rather than a panic if a caller gets that wrong.
    T::try_from(number)
        .map(|number| Spanned::new(span, number))
        .map_err(|_| D::Error::custom(format!("{number} does not fit the field's type")))
}

struct InRange<const MIN: u64, const MAX: u64>(u64);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for InRange<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_u64(InRangeVisitor::<MIN, MAX>)
    }
}

struct InRangeVisitor<const MIN: u64, const MAX: u64>;

impl<const MIN: u64, const MAX: u64> Visitor<'_> for InRangeVisitor<MIN, MAX> {
    type Value = InRange<MIN, MAX>;

    // Completes serde's "invalid type: string \"80\", expected ..." for a non-integer.
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an integer between {MIN} and {MAX}")
    }

    // TOML integers are i64: negative values arrive here, never in `visit_u64`'s range check.
    fn visit_i64<E: Error>(self, value: i64) -> Result<Self::Value, E> {
        match u64::try_from(value) {
            Ok(value) => self.visit_u64(value),
            Err(_) => Err(out_of_range::<E>(MIN, MAX, value)),
        }
    }

    fn visit_u64<E: Error>(self, value: u64) -> Result<Self::Value, E> {
        if (MIN..=MAX).contains(&value) {
            Ok(InRange(value))
        } else {
            Err(out_of_range::<E>(MIN, MAX, value))
        }
    }
}

fn out_of_range<E: Error>(min: u64, max: u64, value: impl fmt::Display) -> E {
    E::custom(format!("must be between {min} and {max}, not {value}"))
}

// ---- Arrays ------------------------------------------------------------------------------------

/// An element of an array in the config; `ARRAY` says what the array should look like when
/// something else is written ("expected a sequence" would not say which array).
pub(super) trait Element: DeserializeOwned {
    const ARRAY: &'static str;
}

impl Element for Table<VipTable> {
    // A single `[vip]` table (a likely slip) then reads "expected an array of tables ...".
    const ARRAY: &'static str = "an array of tables, each VIP starting with [[vip]]";
}

impl Element for Table<BackendTable> {
    const ARRAY: &'static str =
        "an array of backends, such as [{ address = \"198.18.0.11\", weight = 1 }]";
}

impl Element for Spanned<Cidr> {
    const ARRAY: &'static str = "an array of CIDRs, such as [\"198.18.0.0/24\", \"2001:2::/48\"]";
}

impl Element for Status {
    const ARRAY: &'static str = "an array of HTTP status codes, such as [200, 204]";
}

/// An array of `T`, for the fields that are `Spanned` or optional (where `deserialize_with`
/// would need one function per combination).
pub(super) struct Array<T>(pub Vec<T>);

impl<'de, T: Element> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ArrayVisitor(PhantomData))
    }
}

fn array<'de, D: Deserializer<'de>, T: Element>(deserializer: D) -> Result<Vec<T>, D::Error> {
    Array::deserialize(deserializer).map(|array| array.0)
}

struct ArrayVisitor<T>(PhantomData<T>);

impl<'de, T: Element> Visitor<'de> for ArrayVisitor<T> {
    type Value = Array<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::ARRAY)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut elements = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(element) = seq.next_element()? {
            elements.push(element);
        }
        Ok(Array(elements))
    }
}

// ---- Keywords ----------------------------------------------------------------------------------

/// A keyword (`protocol`, `forward`, `xdp.mode`). toml refuses a non-string for an enum with
/// "wanted string or table" before serde can say which words are allowed; reading a string
/// first makes `protocol = 6` say "expected `tcp` or `udp`".
pub(super) fn keyword<'de, D: Deserializer<'de>, T: Keyword>(
    deserializer: D,
) -> Result<T, D::Error> {
    deserializer.deserialize_str(KeywordVisitor(PhantomData))
}

pub(super) fn spanned_keyword<'de, D: Deserializer<'de>, T: Keyword>(
    deserializer: D,
) -> Result<Spanned<T>, D::Error> {
    let value = Spanned::<AsKeyword<T>>::deserialize(deserializer)?;
    Ok(Spanned::new(value.span(), value.into_inner().0))
}

fn optional_spanned_keyword<'de, D: Deserializer<'de>, T: Keyword>(
    deserializer: D,
) -> Result<Option<Spanned<T>>, D::Error> {
    spanned_keyword(deserializer).map(Some)
}

/// An enum of unit variants written as a string.
pub(super) trait Keyword: DeserializeOwned {
    /// The allowed words, as serde's "unknown variant" message lists them.
    const ONE_OF: &'static str;
}

impl Keyword for Protocol {
    const ONE_OF: &'static str = "`tcp` or `udp`";
}

impl Keyword for ForwardMode {
    const ONE_OF: &'static str = "one of `ipip`, `l2-dsr`, `local`";
}

impl Keyword for XdpAttachMode {
    const ONE_OF: &'static str = "one of `auto`, `driver`, `skb`";
}

impl Keyword for UdpHash {
    const ONE_OF: &'static str = "`5-tuple` or `source`";
}

impl Keyword for HealthCheck {
    const ONE_OF: &'static str = "`tcp` or `http`";
}

struct AsKeyword<T>(T);

impl<'de, T: Keyword> Deserialize<'de> for AsKeyword<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        keyword(deserializer).map(AsKeyword)
    }
}

struct KeywordVisitor<T>(PhantomData<T>);

impl<T: Keyword> Visitor<'_> for KeywordVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::ONE_OF)
    }

    // The enum's own Deserialize keeps serde's "unknown variant `x`, expected ..." for a
    // string that is not one of the words.
    fn visit_str<E: Error>(self, text: &str) -> Result<T, E> {
        T::deserialize(text.into_deserializer())
    }
}

// ---- Strings with a form -----------------------------------------------------------------------

pub(super) fn ip_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Spanned<IpAddr>, D::Error> {
    let text = Spanned::<Parsed<IpAddr>>::deserialize(deserializer)?;
    Ok(Spanned::new(text.span(), text.into_inner().0))
}

/// `[admin]` as written: each key with its place, so an error points at the key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminTable {
    #[serde(default, deserialize_with = "optional_socket_addr")]
    pub listen: Option<Spanned<SocketAddr>>,
    pub token_file: Option<Spanned<String>>,
}

/// `[announce]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AnnounceTable {
    /// The span is empty (0..0) when defaulted.
    #[serde(default = "default_announce_table", deserialize_with = "route_table")]
    pub table: Spanned<u32>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub withdraw_delay: Option<Spanned<Duration>>,
    pub state_file: Option<Spanned<String>>,
}

fn default_announce_table() -> Spanned<u32> {
    Spanned::new(0..0, super::AnnounceConfig::DEFAULT_TABLE)
}

/// A kernel routing table id: 1 to 2^32 - 1 (0 is "unspecified"); the reserved ids are refused
/// in `validate`, where the message can say what they are.
fn route_table<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Spanned<u32>, D::Error> {
    in_range::<D, u32, 1, { u32::MAX as u64 }>(deserializer)
}

fn optional_socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Spanned<SocketAddr>>, D::Error> {
    let text = Spanned::<Parsed<SocketAddr>>::deserialize(deserializer)?;
    Ok(Some(Spanned::new(text.span(), text.into_inner().0)))
}

/// A duration with a unit ("500ms", "2s", "1m"), as `humantime` reads it.
fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Spanned<Duration>>, D::Error> {
    let text = Spanned::<Parsed<humantime::Duration>>::deserialize(deserializer)?;
    Ok(Some(Spanned::new(text.span(), text.into_inner().0.into())))
}

/// A string parsed with `FromStr`; the error quotes the string and says what form it should have.
struct Parsed<T>(T);

/// What a `Parsed<T>` string must look like, for the error message.
trait Form: FromStr {
    const FORM: &'static str;
}

impl Form for IpAddr {
    const FORM: &'static str = "an IPv4 or IPv6 address";
}

impl Form for SocketAddr {
    const FORM: &'static str =
        "an IP address and port, such as \"127.0.0.1:9100\" or \"[::1]:9100\"";
}

impl Form for humantime::Duration {
    const FORM: &'static str = "a duration with a unit, such as \"500ms\", \"2s\" or \"1m\"";
}

impl<'de, T: Form> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ParsedVisitor(PhantomData))
    }
}

struct ParsedVisitor<T>(PhantomData<T>);

impl<T: Form> Visitor<'_> for ParsedVisitor<T> {
    type Value = Parsed<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a string with {}", T::FORM)
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Self::Value, E> {
        text.parse().map(Parsed).map_err(|_| {
            // `invalid_value` renders as: invalid value: string "…", expected <FORM>
            E::invalid_value(Unexpected::Str(text), &T::FORM)
        })
    }
}

/// An ACL entry: a network with its host bits clear ("198.18.0.0/24"), or a single address
/// (a /32 or /128).
pub(super) struct Cidr(pub IpNet);

const CIDR_FORM: &str = "a CIDR such as \"198.18.0.0/24\" or \"2001:2::/48\", or a single address";

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(CidrVisitor)
    }
}

struct CidrVisitor;

impl Visitor<'_> for CidrVisitor {
    type Value = Cidr;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a string with {CIDR_FORM}")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Cidr, E> {
        let net = match (text.parse::<IpNet>(), text.parse::<IpAddr>()) {
            (Ok(net), _) => net,
            (_, Ok(address)) => IpNet::from(address),
            _ => return Err(E::invalid_value(Unexpected::Str(text), &CIDR_FORM)),
        };
        // A rule for "198.18.0.1/24" would match all of 198.18.0.0/24: say so rather than guess
        // whether the prefix length or the address is the typo.
        let network = net.trunc();
        if network != net {
            return Err(E::custom(format!(
                "{text:?} has host bits set: did you mean {network}?"
            )));
        }
        Ok(Cidr(net))
    }
}
