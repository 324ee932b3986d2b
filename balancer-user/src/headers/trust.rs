//! The forwarded-header trust engine: what a peer may tell us about the client (`read`), and
//! the forwarded headers we tell the server (`emit`). Pure: the proxy calls `read` on the
//! request as received, `clean` (hygiene.rs) to drop every forwarded-group field, then `emit`.
//!
//! Decisions (each has a test in the table below):
//! - An untrusted peer tells us nothing: the client is the peer, the scheme is the connection's,
//!   the host is the request's.
//! - A trusted peer is believed for the configured member of each group only; a value that is
//!   malformed or given more than once counts as an anomaly and is treated as absent.
//! - Addresses compare in canonical form: an IPv4-mapped IPv6 address (`::ffff:198.18.0.1`) is
//!   that IPv4 address, in the trust check and in the chain we emit.
//! - X-Forwarded-For entries may be `IPv4`, `IPv6`, `[IPv6]`, `IPv4:port` or `[IPv6]:port`; the
//!   port is dropped. One bad entry makes the whole header unusable.
//! - `Forwarded:for` is walked like X-Forwarded-For; reaching an obfuscated or `unknown` node, or
//!   an element without `for=`, before an untrusted address makes it unusable (we cannot tell
//!   who the client is). `proto=` and `host=` are taken from the client's element when the
//!   client came from `Forwarded:for`, else from the rightmost element that has them.
//! - When a trusted X-Forwarded-Port disagrees with the explicit port of the host, the host's
//!   port wins (it is what the client put in its URL, and what redirects are built from) and
//!   the disagreement is an anomaly.
//! - X-Forwarded-Prefix must start with '/', contain no whitespace, '?', '#', '\\', empty
//!   segment ("//evil.test" would make redirects protocol-relative) or dot segment (also
//!   percent-encoded), and loses its trailing '/'.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::BytesMut;
use hyper::{
    HeaderMap,
    header::{HeaderName, HeaderValue},
};
use ipnet::IpNet;

use crate::config::{HeaderGroup, ListenerConfig, TrustedHeader, UnderscorePolicy};
use crate::http::authority;

use super::{
    forwarded::{self, ForwardedElement, Node},
    hygiene::{self, HygieneError, HygieneReport, RequestHygiene},
};

/// A listener's forwarded-header policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Peers allowed to send forwarded headers; also the hops skipped in X-Forwarded-For.
    pub trusted_proxies: Vec<IpNet>,
    /// At most one member per group (config validation checks it; here the first one wins).
    pub trusted_headers: Vec<TrustedHeader>,
    pub underscore: UnderscorePolicy,
    /// Lowercase names, always stripped from requests.
    pub identity_headers: Vec<HeaderName>,
    /// Send RFC 7239 `Forwarded`.
    pub emit_forwarded: bool,
    /// Send `X-Real-IP` (the client address).
    pub emit_x_real_ip: bool,
}

impl Default for TrustPolicy {
    /// Trusts nobody, strips the default identity headers, emits `Forwarded`.
    fn default() -> Self {
        TrustPolicy {
            trusted_proxies: Vec::new(),
            trusted_headers: Vec::new(),
            underscore: UnderscorePolicy::default(),
            identity_headers: ListenerConfig::DEFAULT_IDENTITY_HEADERS
                .iter()
                .copied()
                .map(HeaderName::from_static)
                .collect(),
            emit_forwarded: true,
            emit_x_real_ip: false,
        }
    }
}

impl TrustPolicy {
    /// The policy of a listener. Identity header names were checked by config validation; one
    /// that still does not parse as a header name could not occur in a request anyway.
    pub fn from_listener(listener: &ListenerConfig) -> TrustPolicy {
        TrustPolicy {
            trusted_proxies: listener.trusted_proxies.clone(),
            trusted_headers: listener.trusted_headers.clone(),
            underscore: listener.underscore_headers,
            identity_headers: listener
                .identity_headers
                .iter()
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
            emit_forwarded: listener.emit_forwarded,
            emit_x_real_ip: listener.emit_x_real_ip,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// How the request reached us.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The Host / authority as received: may carry ":port", may be "" (HTTP/1.0).
    pub host: &'a str,
    pub listener_port: u16,
}

/// Who the client is and which URL it used, as far as we trust our peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView {
    pub client: IpAddr,
    /// The client first, then the trusted hops, ending with the peer.
    pub chain: Vec<IpAddr>,
    pub scheme: Scheme,
    /// The public host, may carry ":port"; "" when the request had none.
    pub host: String,
    /// Equal to the host's explicit port when it has one.
    pub port: u16,
    /// A trusted incoming X-Forwarded-Prefix: starts with '/', no trailing '/'.
    pub prefix: Option<String>,
    pub trusted_peer: bool,
}

/// Something wrong in what a trusted peer sent; the value was ignored. Counted as
/// `balancer_http_forwarded_anomalies_total{listener,kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// Not a valid value for that header (bad address, bad Forwarded syntax, unknown scheme...).
    MalformedValue { header: &'static str },
    /// Several values where one is allowed (several fields, or a comma list).
    DuplicateValue { header: &'static str },
    /// A trusted port that disagrees with the host's explicit port (the host's port is kept).
    ConflictingPort { header: &'static str },
}

impl Anomaly {
    /// The metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Anomaly::MalformedValue { .. } => "malformed",
            Anomaly::DuplicateValue { .. } => "duplicate",
            Anomaly::ConflictingPort { .. } => "conflicting_port",
        }
    }

    /// The lowercase header name the anomaly is about.
    pub fn header(&self) -> &'static str {
        match self {
            Anomaly::MalformedValue { header }
            | Anomaly::DuplicateValue { header }
            | Anomaly::ConflictingPort { header } => header,
        }
    }
}

const FORWARDED: &str = "forwarded";

impl TrustPolicy {
    /// Whether `ip` is one of the trusted proxies (IPv4-mapped IPv6 compares as IPv4).
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.trusted_proxies
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
    }

    /// The configured member of `group`, if any.
    fn member(&self, group: HeaderGroup) -> Option<TrustedHeader> {
        self.trusted_headers
            .iter()
            .copied()
            .find(|member| member.group() == group)
    }

    /// Reads what the peer may tell us; returns the client view and the anomalies. Does not
    /// modify the headers.
    pub fn read(&self, arrival: &Arrival<'_>, headers: &HeaderMap) -> (ClientView, Vec<Anomaly>) {
        let peer = arrival.peer.ip().to_canonical();
        let connection_scheme = if arrival.tls {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let mut anomalies = Vec::new();
        if !self.is_trusted(peer) {
            let view = ClientView {
                client: peer,
                chain: vec![peer],
                scheme: connection_scheme,
                host: arrival.host.to_owned(),
                port: explicit_port(arrival.host).unwrap_or(arrival.listener_port),
                prefix: None,
                trusted_peer: false,
            };
            return (view, anomalies);
        }

        let forwarded = self.trusted_forwarded(headers, &mut anomalies);
        let forwarded = forwarded.as_deref().unwrap_or_default();

        let (chain, client_element) = self.read_client(peer, headers, forwarded, &mut anomalies);
        let pick = |field: fn(&ForwardedElement) -> Option<&String>| -> Option<String> {
            match client_element {
                Some(index) => forwarded.get(index).and_then(field).cloned(),
                None => forwarded.iter().rev().find_map(field).cloned(),
            }
        };

        let trusted_scheme = self.member(HeaderGroup::Scheme).and_then(|member| {
            let (header, value) = match member {
                TrustedHeader::ForwardedProto => (FORWARDED, pick(|e| e.proto.as_ref())?),
                _ => {
                    let header = member.header_name();
                    (
                        header,
                        single_value(headers, header, &mut anomalies)?.to_owned(),
                    )
                }
            };
            let scheme = parse_scheme(member, &value);
            if scheme.is_none() {
                anomalies.push(Anomaly::MalformedValue { header });
            }
            scheme
        });

        let trusted_host = self
            .member(HeaderGroup::Host)
            .and_then(|member| match member {
                TrustedHeader::ForwardedHost => pick(|e| e.host.as_ref()),
                _ => {
                    let header = member.header_name();
                    let value = single_value(headers, header, &mut anomalies)?;
                    if authority::parse_host_field(value).is_err() {
                        anomalies.push(Anomaly::MalformedValue { header });
                        return None;
                    }
                    Some(value.to_owned())
                }
            });

        let trusted_port = self.member(HeaderGroup::Port).and_then(|member| {
            let header = member.header_name();
            let value = single_value(headers, header, &mut anomalies)?;
            let port = authority::parse_port(value);
            if port.is_none() {
                anomalies.push(Anomaly::MalformedValue { header });
            }
            port
        });

        let prefix = self.member(HeaderGroup::Prefix).and_then(|member| {
            let header = member.header_name();
            let value = single_value(headers, header, &mut anomalies)?;
            normalize_prefix(value).unwrap_or_else(|| {
                anomalies.push(Anomaly::MalformedValue { header });
                None
            })
        });

        let scheme = trusted_scheme.unwrap_or(connection_scheme);
        let host = trusted_host.unwrap_or_else(|| arrival.host.to_owned());
        let port = match (explicit_port(&host), trusted_port) {
            (Some(host_port), Some(port)) => {
                if host_port != port {
                    anomalies.push(Anomaly::ConflictingPort {
                        header: TrustedHeader::XForwardedPort.header_name(),
                    });
                }
                host_port
            }
            (Some(port), None) | (None, Some(port)) => port,
            (None, None) if trusted_scheme.is_some() => scheme.default_port(),
            (None, None) => arrival.listener_port,
        };
        let view = ClientView {
            client: chain.first().copied().unwrap_or(peer),
            chain,
            scheme,
            host,
            port,
            prefix,
            trusted_peer: true,
        };
        (view, anomalies)
    }

    /// The `Forwarded` elements, parsed once, when any of its parameters is trusted.
    fn trusted_forwarded(
        &self,
        headers: &HeaderMap,
        anomalies: &mut Vec<Anomaly>,
    ) -> Option<Vec<ForwardedElement>> {
        let trusted = self.trusted_headers.iter().any(|member| {
            matches!(
                member,
                TrustedHeader::ForwardedFor
                    | TrustedHeader::ForwardedProto
                    | TrustedHeader::ForwardedHost
            )
        });
        if !trusted || !headers.contains_key(FORWARDED) {
            return None;
        }
        let values = headers.get_all(FORWARDED);
        match forwarded::parse(values.iter().map(HeaderValue::as_bytes)) {
            Ok(elements) => Some(elements),
            Err(_) => {
                anomalies.push(Anomaly::MalformedValue { header: FORWARDED });
                None
            }
        }
    }

    /// The chain (client first, peer last) and, when the client came from `Forwarded:for`, the
    /// index of its element.
    fn read_client(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
        forwarded: &[ForwardedElement],
        anomalies: &mut Vec<Anomaly>,
    ) -> (Vec<IpAddr>, Option<usize>) {
        let alone = (vec![peer], None);
        let Some(member) = self.member(HeaderGroup::Client) else {
            return alone;
        };
        let header = member.header_name();
        match member {
            TrustedHeader::ForwardedFor => {
                if forwarded.is_empty() {
                    return alone;
                }
                let hops: Vec<Option<IpAddr>> = forwarded
                    .iter()
                    .map(|e| e.for_node.as_ref().and_then(Node::ip))
                    .map(|ip| ip.map(|ip| ip.to_canonical()))
                    .collect();
                match self.walk(&hops) {
                    Some(index) => (chain_from(&hops[index..], peer), Some(index)),
                    None => {
                        anomalies.push(Anomaly::MalformedValue { header });
                        alone
                    }
                }
            }
            TrustedHeader::XForwardedFor => {
                let values = headers.get_all(header);
                if values.iter().next().is_none() {
                    return alone;
                }
                let hops: Option<Vec<IpAddr>> = values
                    .iter()
                    .map(|value| value.to_str().ok())
                    .collect::<Option<Vec<&str>>>()
                    .and_then(|values| {
                        values
                            .iter()
                            .flat_map(|value| value.split(','))
                            .map(|entry| parse_address(entry.trim()))
                            .collect()
                    });
                let Some(hops) = hops else {
                    anomalies.push(Anomaly::MalformedValue { header });
                    return alone;
                };
                let hops: Vec<Option<IpAddr>> = hops.into_iter().map(Some).collect();
                // Every hop is an address, so the walk always ends.
                let index = self.walk(&hops).unwrap_or(hops.len());
                (chain_from(&hops[index..], peer), None)
            }
            _ => {
                let Some(value) = single_value(headers, header, anomalies) else {
                    return alone;
                };
                match value.parse::<IpAddr>() {
                    Ok(client) => (vec![client.to_canonical(), peer], None),
                    Err(_) => {
                        anomalies.push(Anomaly::MalformedValue { header });
                        alone
                    }
                }
            }
        }
    }

    /// Walks `hops` (the claimed addresses, client side first) from the right, starting at the
    /// trusted peer: moves left while the current hop is trusted. Returns the index of the
    /// client (the first untrusted address, or the leftmost when all are trusted), or
    /// `hops.len()` when there is no hop; `None` when the walk reaches a hop with no address.
    fn walk(&self, hops: &[Option<IpAddr>]) -> Option<usize> {
        let mut index = hops.len();
        while index > 0 {
            index -= 1;
            if !self.is_trusted(hops[index]?) {
                break;
            }
        }
        Some(index)
    }

    /// The hygiene rules of this policy (see hygiene.rs).
    pub fn hygiene(&self, keep_upgrade: bool) -> RequestHygiene<'_> {
        RequestHygiene {
            underscore: self.underscore,
            identity_headers: &self.identity_headers,
            keep_upgrade,
        }
    }

    /// `hygiene::clean_request` with this policy's rules: call it after `read`, before `emit`.
    pub fn clean(
        &self,
        headers: HeaderMap,
        keep_upgrade: bool,
    ) -> Result<(HeaderMap, HygieneReport), HygieneError> {
        hygiene::clean_request(headers, &self.hygiene(keep_upgrade))
    }

    /// Appends our forwarded headers to `headers` (already cleaned, so none of them is there);
    /// see [`TrustPolicy::emit_to`].
    pub fn emit(&self, view: &ClientView, stripped_prefix: Option<&str>, headers: &mut HeaderMap) {
        // Room for the fields first, so that appending them does not grow the map several times.
        headers.reserve(7);
        let mut sink = MapSink {
            headers,
            values: BytesMut::with_capacity(192),
        };
        self.emit_to(view, stripped_prefix, &mut sink);
    }

    /// Gives `sink` our forwarded fields, in this order: X-Forwarded-For (the chain, IPv6
    /// without brackets), X-Forwarded-Proto, X-Forwarded-Host (unless the host is empty),
    /// X-Forwarded-Port, X-Forwarded-Prefix (the trusted prefix then the route's stripped
    /// prefix, omitted when both are absent), `Forwarded` (one element per chain entry, the
    /// first also carrying proto and host) and X-Real-IP, as configured.
    pub fn emit_to(
        &self,
        view: &ClientView,
        stripped_prefix: Option<&str>,
        sink: &mut impl FieldSink,
    ) {
        // This runs for every request: `text` is the one scratch the writers below take.
        let mut text = String::with_capacity(64);
        // Names as constants: `from_static` at run time would parse each name every request.
        const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
        const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
        const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
        const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
        const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
        const FORWARDED_NAME: HeaderName = HeaderName::from_static(FORWARDED);
        const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
        for (index, ip) in view.chain.iter().enumerate() {
            if index > 0 {
                text.push_str(", ");
            }
            forwarded::write_ip(&mut text, *ip);
        }
        sink.field(X_FORWARDED_FOR, &text);
        sink.field(X_FORWARDED_PROTO, view.scheme.as_str());
        if !view.host.is_empty() {
            sink.field(X_FORWARDED_HOST, &view.host);
        }
        text.clear();
        forwarded::write_port(&mut text, view.port);
        sink.field(X_FORWARDED_PORT, &text);
        if let Some(prefix) = public_prefix(view.prefix.as_deref(), stripped_prefix) {
            sink.field(X_FORWARDED_PREFIX, &prefix);
        }
        if self.emit_forwarded {
            // One element per chain entry, the first also carrying proto and host.
            text.clear();
            for (index, ip) in view.chain.iter().enumerate() {
                if index > 0 {
                    text.push_str(", ");
                }
                text.push_str("for=");
                forwarded::write_node(&mut text, &Node::from_ip(*ip));
                if index == 0 {
                    text.push_str(";proto=");
                    forwarded::write_value(&mut text, view.scheme.as_str());
                    if !view.host.is_empty() {
                        text.push_str(";host=");
                        forwarded::write_value(&mut text, &view.host);
                    }
                }
            }
            sink.field(FORWARDED_NAME, &text);
        }
        if self.emit_x_real_ip {
            text.clear();
            forwarded::write_ip(&mut text, view.client);
            sink.field(X_REAL_IP, &text);
        }
    }
}

/// Where [`TrustPolicy::emit_to`] puts the fields it writes: a header map, or the upstream
/// head's bytes (proxy/h1/head.rs).
pub trait FieldSink {
    /// One field, appended after those already there. Every value is checked or built by us;
    /// a sink leaves out one that still cannot be a field value (a host) rather than send it
    /// mangled.
    fn field(&mut self, name: HeaderName, value: &str);
}

/// Appends to a header map. The values are written one after the other into one buffer and
/// each split off it, so that they share one allocation instead of one each.
struct MapSink<'h> {
    headers: &'h mut HeaderMap,
    values: BytesMut,
}

impl FieldSink for MapSink<'_> {
    fn field(&mut self, name: HeaderName, value: &str) {
        self.values.extend_from_slice(value.as_bytes());
        if let Ok(value) = HeaderValue::from_maybe_shared(self.values.split().freeze()) {
            self.headers.append(name, value);
        }
    }
}

fn chain_from(hops: &[Option<IpAddr>], peer: IpAddr) -> Vec<IpAddr> {
    hops.iter().flatten().copied().chain([peer]).collect()
}

/// The one value of a single-valued header, trimmed; `None` when absent, or (with an anomaly)
/// when given several times, as a comma list, empty or not visible ASCII.
fn single_value<'h>(
    headers: &'h HeaderMap,
    header: &'static str,
    anomalies: &mut Vec<Anomaly>,
) -> Option<&'h str> {
    let mut values = headers.get_all(header).iter();
    let first = values.next()?;
    if values.next().is_some() {
        anomalies.push(Anomaly::DuplicateValue { header });
        return None;
    }
    let Ok(text) = first.to_str() else {
        anomalies.push(Anomaly::MalformedValue { header });
        return None;
    };
    let text = text.trim();
    if text.contains(',') {
        anomalies.push(Anomaly::DuplicateValue { header });
        return None;
    }
    if text.is_empty() {
        anomalies.push(Anomaly::MalformedValue { header });
        return None;
    }
    Some(text)
}

/// An X-Forwarded-For entry: `IPv4`, `IPv6`, `[IPv6]`, `IPv4:port`, `[IPv6]:port` (ports as
/// `http::authority` reads them: 1 to 65535).
fn parse_address(entry: &str) -> Option<IpAddr> {
    let address = if let Ok(address) = entry.parse::<IpAddr>() {
        address
    } else {
        let written = authority::parse(entry).ok()?;
        match written.ipv6() {
            Some(address) => IpAddr::V6(address),
            None => IpAddr::V4(written.host.parse::<Ipv4Addr>().ok()?),
        }
    };
    Some(address.to_canonical())
}

fn parse_scheme(member: TrustedHeader, value: &str) -> Option<Scheme> {
    let is = |word: &str| value.eq_ignore_ascii_case(word);
    match member {
        TrustedHeader::XForwardedSsl | TrustedHeader::XForwardedHttps | TrustedHeader::XHttps => {
            if is("on") || is("1") || is("true") {
                Some(Scheme::Https)
            } else if is("off") || is("0") || is("false") {
                Some(Scheme::Http)
            } else {
                None
            }
        }
        _ => {
            if is("https") {
                Some(Scheme::Https)
            } else if is("http") {
                Some(Scheme::Http)
            } else {
                None
            }
        }
    }
}

/// The explicit port of `host[:port]`, when it has a valid one.
fn explicit_port(host: &str) -> Option<u16> {
    authority::parse_host_field(host)
        .ok()
        .and_then(|authority| authority.port)
}

/// `Some(None)` for "/" (no prefix), `None` when unacceptable (see the module comment).
fn normalize_prefix(value: &str) -> Option<Option<String>> {
    if !value.starts_with('/')
        || value
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"?#\\".contains(&b))
    {
        return None;
    }
    let trimmed = value.trim_end_matches('/');
    for segment in trimmed.split('/').skip(1) {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if segment.is_empty() || decoded == "." || decoded == ".." {
            return None;
        }
    }
    Some((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// The prefix the server's public URLs start with: the trusted outer prefix, then the one the
/// route stripped; `None` when both are empty.
pub(crate) fn public_prefix(outer: Option<&str>, stripped: Option<&str>) -> Option<String> {
    let mut prefix = outer.unwrap_or_default().to_owned();
    if let Some(stripped) = stripped.map(|p| p.trim_end_matches('/'))
        && !stripped.is_empty()
    {
        if !stripped.starts_with('/') {
            prefix.push('/');
        }
        prefix.push_str(stripped);
    }
    (!prefix.is_empty()).then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRUSTED_PEER: &str = "198.18.5.2:40000";
    const UNTRUSTED_PEER: &str = "198.18.9.1:50000";
    const LISTENER_PORT: u16 = 8443;

    fn policy(trusted: &[&str], underscore: UnderscorePolicy) -> TrustPolicy {
        TrustPolicy {
            trusted_proxies: ["198.18.5.0/24", "2001:db8:5::/48"]
                .iter()
                .map(|net| net.parse().expect("test network"))
                .collect(),
            trusted_headers: trusted
                .iter()
                .flat_map(|name| {
                    TrustedHeader::parse_config(name)
                        .unwrap_or_else(|| panic!("{name:?} is not a trusted header"))
                })
                .collect(),
            underscore,
            ..TrustPolicy::default()
        }
    }

    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test name"),
                HeaderValue::from_str(value).expect("test value"),
            );
        }
        headers
    }

    fn fields(headers: &HeaderMap) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(name, value)| {
                let value = value.to_str().expect("ascii");
                (name.as_str().to_owned(), value.to_owned())
            })
            .collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse()
            .unwrap_or_else(|_| panic!("{text:?} is not an address"))
    }

    /// One request from one peer: what `read` must see, what it must complain about, and what
    /// the server gets after `clean` and `emit`.
    struct Case {
        name: &'static str,
        peer: &'static str,
        tls: bool,
        host: &'static str,
        trusted: &'static [&'static str],
        underscore: UnderscorePolicy,
        input: &'static [(&'static str, &'static str)],
        stripped: Option<&'static str>,
        // The expected view.
        trusted_peer: bool,
        chain: &'static [&'static str],
        scheme: Scheme,
        view_host: &'static str,
        port: u16,
        prefix: Option<&'static str>,
        anomalies: &'static [Anomaly],
        // The expected request fields: the input ones kept, then ours.
        kept: &'static [(&'static str, &'static str)],
        out_prefix: Option<&'static str>,
        out_forwarded: &'static str,
    }

    const BASE: Case = Case {
        name: "",
        peer: TRUSTED_PEER,
        tls: true,
        host: "www.example.test",
        trusted: &[],
        underscore: UnderscorePolicy::Drop,
        input: &[],
        stripped: None,
        trusted_peer: true,
        chain: &["198.18.5.2"],
        scheme: Scheme::Https,
        view_host: "www.example.test",
        port: LISTENER_PORT,
        prefix: None,
        anomalies: &[],
        kept: &[],
        out_prefix: None,
        out_forwarded: "for=198.18.5.2;proto=https;host=www.example.test",
    };

    /// The view of an untrusted peer 198.18.9.1 over TLS.
    const UNTRUSTED: Case = Case {
        peer: UNTRUSTED_PEER,
        trusted_peer: false,
        chain: &["198.18.9.1"],
        out_forwarded: "for=198.18.9.1;proto=https;host=www.example.test",
        ..BASE
    };

    /// A trusted peer's view over plain HTTP.
    const PLAIN: Case = Case {
        tls: false,
        scheme: Scheme::Http,
        out_forwarded: "for=198.18.5.2;proto=http;host=www.example.test",
        ..BASE
    };

    /// The same with https from a trusted scheme header.
    const PLAIN_SAYS_HTTPS: Case = Case {
        scheme: Scheme::Https,
        port: 443,
        out_forwarded: "for=198.18.5.2;proto=https;host=www.example.test",
        ..PLAIN
    };

    /// Client 198.18.9.1 through the trusted peer.
    const ONE_HOP: Case = Case {
        chain: &["198.18.9.1", "198.18.5.2"],
        out_forwarded: "for=198.18.9.1;proto=https;host=www.example.test, for=198.18.5.2",
        ..BASE
    };

    /// Client 198.18.9.1 through trusted 198.18.5.7, then the peer.
    const TWO_HOPS: Case = Case {
        chain: &["198.18.9.1", "198.18.5.7", "198.18.5.2"],
        out_forwarded: "for=198.18.9.1;proto=https;host=www.example.test, for=198.18.5.7, \
                        for=198.18.5.2",
        ..BASE
    };

    const XFF: &str = "x-forwarded-for";
    const FWD: &str = "forwarded";

    const fn malformed(header: &'static str) -> Anomaly {
        Anomaly::MalformedValue { header }
    }

    const fn duplicate(header: &'static str) -> Anomaly {
        Anomaly::DuplicateValue { header }
    }

    const CASES: &[Case] = &[
        // Client group: X-Forwarded-For.
        Case {
            name: "xff: untrusted peer: ignored and removed, Authorization untouched",
            trusted: &["X-Forwarded-For"],
            input: &[(XFF, "192.0.2.1"), ("authorization", "Bearer t")],
            kept: &[("authorization", "Bearer t")],
            ..UNTRUSTED
        },
        Case {
            name: "xff: trusted peer, absent: the peer is the client",
            trusted: &["X-Forwarded-For"],
            ..BASE
        },
        Case {
            name: "xff: trusted peer, one client",
            trusted: &["X-Forwarded-For"],
            input: &[(XFF, "198.18.9.1")],
            ..ONE_HOP
        },
        Case {
            name: "xff: trusted hops skipped, claims left of the client dropped",
            trusted: &["X-Forwarded-For"],
            input: &[(XFF, "192.0.2.66, 198.18.9.1, 198.18.5.7")],
            ..TWO_HOPS
        },
        Case {
            name: "xff: all hops trusted: the leftmost is the client",
            trusted: &["X-Forwarded-For"],
            input: &[(XFF, "198.18.5.9 ,198.18.5.7")],
            chain: &["198.18.5.9", "198.18.5.7", "198.18.5.2"],
            out_forwarded: "for=198.18.5.9;proto=https;host=www.example.test, \
                            for=198.18.5.7, for=198.18.5.2",
            ..BASE
        },
        Case {
            name: "xff: an untrusted hop between trusted ones ends the walk",
            trusted: &["X-Forwarded-For"],
            input: &[(XFF, "198.18.5.9, 192.0.2.1, 198.18.5.7")],
            chain: &["192.0.2.1", "198.18.5.7", "198.18.5.2"],
            out_forwarded: "for=192.0.2.1;proto=https;host=www.example.test, \
                            for=198.18.5.7, for=198.18.5.2",
            ..BASE
        },
        Case {
            name: "xff: two fields are one list",
            trusted: &["X-Forwarded-For"],
            input: &[(XFF, "198.18.9.1"), (XFF, "198.18.5.7")],
            ..TWO_HOPS
        },
        Case {
            name: "xff: one bad entry makes the header malformed",
            trusted: &["X-Forwarded-For"],
            input: &[(XFF, "198.18.9.1, nonsense")],
            anomalies: &[malformed(XFF)],
            ..BASE
        },
        Case {
            name: "xff: an empty entry is malformed",
            trusted: &["X-Forwarded-For"],
            input: &[(XFF, "198.18.9.1,,198.18.5.7")],
            anomalies: &[malformed(XFF)],
            ..BASE
        },
        Case {
            name: "xff: a port out of range is malformed",
            trusted: &["X-Forwarded-For"],
            input: &[(XFF, "198.18.9.1:99999")],
            anomalies: &[malformed(XFF)],
            ..BASE
        },
        Case {
            name: "xff: bracketed IPv6 and ports accepted, ports dropped",
            trusted: &["X-Forwarded-For"],
            input: &[(XFF, "[2001:db8:9::1]:4711, 198.18.5.7:80")],
            chain: &["2001:db8:9::1", "198.18.5.7", "198.18.5.2"],
            out_forwarded: "for=\"[2001:db8:9::1]\";proto=https;host=www.example.test, \
                            for=198.18.5.7, for=198.18.5.2",
            ..BASE
        },
        Case {
            name: "xff: IPv6 peer, plain IPv6 entry",
            peer: "[2001:db8:5::2]:40000",
            trusted: &["X-Forwarded-For"],
            input: &[(XFF, "2001:db8:9::1")],
            chain: &["2001:db8:9::1", "2001:db8:5::2"],
            out_forwarded: "for=\"[2001:db8:9::1]\";proto=https;host=www.example.test, \
                            for=\"[2001:db8:5::2]\"",
            ..BASE
        },
        Case {
            name: "xff: IPv4-mapped peer and entry compare and print as IPv4",
            peer: "[::ffff:198.18.5.2]:40000",
            trusted: &["X-Forwarded-For"],
            input: &[(XFF, "::ffff:198.18.9.1")],
            ..ONE_HOP
        },
        Case {
            name: "xff: IPv4-mapped untrusted peer prints as IPv4",
            peer: "[::ffff:198.18.9.1]:50000",
            trusted: &["X-Forwarded-For"],
            input: &[(XFF, "192.0.2.1")],
            ..UNTRUSTED
        },
        Case {
            name: "xff: underscore twin is never read (drop)",
            trusted: &["X-Forwarded-For"],
            input: &[("x_forwarded_for", "192.0.2.1")],
            ..BASE
        },
        Case {
            name: "xff: underscore twin is never read nor forwarded (allow)",
            trusted: &["X-Forwarded-For"],
            underscore: UnderscorePolicy::Allow,
            input: &[("x_forwarded_for", "192.0.2.1"), ("x_custom", "1")],
            kept: &[("x_custom", "1")],
            ..BASE
        },
        Case {
            name: "xff: the other members of the group are not read",
            trusted: &["X-Forwarded-For"],
            input: &[
                ("x-real-ip", "192.0.2.1"),
                ("x-client-ip", "192.0.2.2"),
                (FWD, "for=192.0.2.3"),
            ],
            ..BASE
        },
        // Client group: X-Real-IP, X-Client-IP.
        Case {
            name: "x-real-ip: trusted peer, present; X-Forwarded-For not read",
            trusted: &["X-Real-IP"],
            input: &[("x-real-ip", "198.18.9.1"), (XFF, "192.0.2.1")],
            ..ONE_HOP
        },
        Case {
            name: "x-real-ip: two fields",
            trusted: &["X-Real-IP"],
            input: &[("x-real-ip", "198.18.9.1"), ("x-real-ip", "198.18.9.2")],
            anomalies: &[duplicate("x-real-ip")],
            ..BASE
        },
        Case {
            name: "x-real-ip: a comma list",
            trusted: &["X-Real-IP"],
            input: &[("x-real-ip", "198.18.9.1, 198.18.9.2")],
            anomalies: &[duplicate("x-real-ip")],
            ..BASE
        },
        Case {
            name: "x-real-ip: not an address",
            trusted: &["X-Real-IP"],
            input: &[("x-real-ip", "not-an-ip")],
            anomalies: &[malformed("x-real-ip")],
            ..BASE
        },
        Case {
            name: "x-real-ip: empty",
            trusted: &["X-Real-IP"],
            input: &[("x-real-ip", "")],
            anomalies: &[malformed("x-real-ip")],
            ..BASE
        },
        Case {
            name: "x-real-ip: untrusted peer",
            trusted: &["X-Real-IP"],
            input: &[("x-real-ip", "192.0.2.1")],
            ..UNTRUSTED
        },
        Case {
            name: "x-real-ip: underscore twin is never read",
            trusted: &["X-Real-IP"],
            input: &[("x_real_ip", "192.0.2.1")],
            ..BASE
        },
        Case {
            name: "x-client-ip: trusted; X-Real-IP not read",
            trusted: &["X-Client-IP"],
            input: &[("x-real-ip", "192.0.2.1"), ("x-client-ip", "198.18.9.1")],
            ..ONE_HOP
        },
        // Client group: Forwarded:for.
        Case {
            name: "forwarded:for: one element",
            trusted: &["Forwarded:for"],
            input: &[(FWD, "for=198.18.9.1")],
            ..ONE_HOP
        },
        Case {
            name: "forwarded: walked; proto and host from the client's element",
            tls: false,
            trusted: &["Forwarded"],
            input: &[(
                FWD,
                "for=192.0.2.66;proto=http;host=evil.test, \
                 for=198.18.9.1;proto=https;host=public.test, \
                 for=198.18.5.7;proto=http;host=internal.test",
            )],
            view_host: "public.test",
            port: 443,
            out_forwarded: "for=198.18.9.1;proto=https;host=public.test, for=198.18.5.7, \
                            for=198.18.5.2",
            ..TWO_HOPS
        },
        Case {
            name: "forwarded: all hops trusted: the leftmost element speaks",
            trusted: &["Forwarded"],
            input: &[(FWD, "for=198.18.5.9;proto=http, for=198.18.5.7;proto=https")],
            chain: &["198.18.5.9", "198.18.5.7", "198.18.5.2"],
            scheme: Scheme::Http,
            port: 80,
            out_forwarded: "for=198.18.5.9;proto=http;host=www.example.test, \
                            for=198.18.5.7, for=198.18.5.2",
            ..BASE
        },
        Case {
            name: "forwarded: an obfuscated node on the trusted side makes it unusable",
            trusted: &["Forwarded:for"],
            input: &[(FWD, "for=198.18.9.1, for=_hidden")],
            anomalies: &[malformed(FWD)],
            ..BASE
        },
        Case {
            name: "forwarded: an obfuscated node left of the client is dropped",
            trusted: &["Forwarded:for"],
            input: &[(FWD, "for=_hidden, for=198.18.9.1")],
            ..ONE_HOP
        },
        Case {
            name: "forwarded: unknown client",
            trusted: &["Forwarded:for"],
            input: &[(FWD, "for=unknown")],
            anomalies: &[malformed(FWD)],
            ..BASE
        },
        Case {
            name: "forwarded: an element without for=",
            trusted: &["Forwarded:for"],
            input: &[(FWD, "proto=https")],
            anomalies: &[malformed(FWD)],
            ..BASE
        },
        Case {
            name: "forwarded: unterminated quote: all three parameters unusable, one anomaly",
            trusted: &["Forwarded"],
            input: &[(FWD, "for=\"198.18.9.1;proto=http")],
            anomalies: &[malformed(FWD)],
            ..BASE
        },
        Case {
            name: "forwarded: a parameter twice in one element",
            trusted: &["Forwarded"],
            input: &[(FWD, "for=198.18.9.1;FOR=198.18.9.2")],
            anomalies: &[malformed(FWD)],
            ..BASE
        },
        Case {
            name: "forwarded: quoted IPv6 with port",
            trusted: &["Forwarded:for"],
            input: &[(FWD, "for=\"[2001:db8:9::1]:4711\"")],
            chain: &["2001:db8:9::1", "198.18.5.2"],
            out_forwarded: "for=\"[2001:db8:9::1]\";proto=https;host=www.example.test, \
                            for=198.18.5.2",
            ..BASE
        },
        Case {
            name: "forwarded: two fields are one list",
            trusted: &["Forwarded"],
            input: &[(FWD, "for=198.18.9.1"), (FWD, "for=198.18.5.7")],
            ..TWO_HOPS
        },
        Case {
            name: "forwarded: untrusted peer",
            trusted: &["Forwarded"],
            input: &[(FWD, "for=192.0.2.1;proto=http;host=evil.test")],
            ..UNTRUSTED
        },
        Case {
            name: "forwarded: an underscore look-alike is not read (kept under allow)",
            trusted: &["Forwarded"],
            underscore: UnderscorePolicy::Allow,
            input: &[("forwarded_", "for=192.0.2.1")],
            kept: &[("forwarded_", "for=192.0.2.1")],
            ..BASE
        },
        // Scheme group.
        Case {
            name: "x-forwarded-proto: https over plain HTTP: default port of https",
            trusted: &["X-Forwarded-Proto"],
            input: &[("x-forwarded-proto", "https")],
            ..PLAIN_SAYS_HTTPS
        },
        Case {
            name: "x-forwarded-proto: HTTP (any case) over TLS",
            trusted: &["X-Forwarded-Proto"],
            tls: true,
            input: &[("x-forwarded-proto", "HTTP")],
            port: 80,
            ..PLAIN
        },
        Case {
            name: "x-forwarded-proto: untrusted peer: the connection's scheme",
            trusted: &["X-Forwarded-Proto"],
            tls: false,
            input: &[("x-forwarded-proto", "https")],
            scheme: Scheme::Http,
            out_forwarded: "for=198.18.9.1;proto=http;host=www.example.test",
            ..UNTRUSTED
        },
        Case {
            name: "x-forwarded-proto: absent: the connection's scheme, the listener's port",
            trusted: &["X-Forwarded-Proto"],
            ..PLAIN
        },
        Case {
            name: "x-forwarded-proto: two fields",
            trusted: &["X-Forwarded-Proto"],
            input: &[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-proto", "https"),
            ],
            anomalies: &[duplicate("x-forwarded-proto")],
            ..PLAIN
        },
        Case {
            name: "x-forwarded-proto: a comma list",
            trusted: &["X-Forwarded-Proto"],
            input: &[("x-forwarded-proto", "https, http")],
            anomalies: &[duplicate("x-forwarded-proto")],
            ..PLAIN
        },
        Case {
            name: "x-forwarded-proto: unknown scheme",
            trusted: &["X-Forwarded-Proto"],
            input: &[("x-forwarded-proto", "ftp")],
            anomalies: &[malformed("x-forwarded-proto")],
            ..PLAIN
        },
        Case {
            name: "x-forwarded-proto: underscore twin is never read (allow)",
            trusted: &["X-Forwarded-Proto"],
            underscore: UnderscorePolicy::Allow,
            input: &[("x_forwarded_proto", "https")],
            ..PLAIN
        },
        Case {
            name: "x-forwarded-proto: the other members are not read",
            trusted: &["X-Forwarded-Proto"],
            input: &[("x-forwarded-scheme", "https"), ("x-forwarded-ssl", "on")],
            ..PLAIN
        },
        Case {
            name: "x-forwarded-ssl: on",
            trusted: &["X-Forwarded-SSL"],
            input: &[("x-forwarded-ssl", "on")],
            ..PLAIN_SAYS_HTTPS
        },
        Case {
            name: "x-forwarded-ssl: off over TLS",
            trusted: &["X-Forwarded-SSL"],
            tls: true,
            input: &[("x-forwarded-ssl", "Off")],
            port: 80,
            ..PLAIN
        },
        Case {
            name: "x-forwarded-ssl: neither on nor off",
            trusted: &["X-Forwarded-SSL"],
            input: &[("x-forwarded-ssl", "maybe")],
            anomalies: &[malformed("x-forwarded-ssl")],
            ..PLAIN
        },
        Case {
            name: "x-forwarded-https: 1",
            trusted: &["X-Forwarded-HTTPS"],
            input: &[("x-forwarded-https", "1")],
            ..PLAIN_SAYS_HTTPS
        },
        Case {
            name: "x-https: TRUE",
            trusted: &["X-HTTPS"],
            input: &[("x-https", "TRUE")],
            ..PLAIN_SAYS_HTTPS
        },
        Case {
            name: "x-forwarded-scheme: https",
            trusted: &["X-Forwarded-Scheme"],
            input: &[("x-forwarded-scheme", "https")],
            ..PLAIN_SAYS_HTTPS
        },
        Case {
            name: "x-scheme: http over TLS",
            trusted: &["X-Scheme"],
            tls: true,
            input: &[("x-scheme", "http")],
            port: 80,
            ..PLAIN
        },
        Case {
            name: "forwarded:proto: the rightmost element's when the client came from xff",
            trusted: &["X-Forwarded-For", "Forwarded:proto"],
            tls: false,
            input: &[
                (XFF, "198.18.9.1"),
                (FWD, "for=192.0.2.1;proto=http, for=198.18.9.1;proto=https"),
            ],
            port: 443,
            ..ONE_HOP
        },
        Case {
            name: "forwarded:proto: a scheme other than http(s)",
            trusted: &["Forwarded:proto"],
            input: &[(FWD, "proto=ftp")],
            anomalies: &[malformed(FWD)],
            ..PLAIN
        },
        // Host group.
        Case {
            name: "x-forwarded-host: trusted",
            trusted: &["X-Forwarded-Host"],
            input: &[("x-forwarded-host", "public.test")],
            view_host: "public.test",
            out_forwarded: "for=198.18.5.2;proto=https;host=public.test",
            ..BASE
        },
        Case {
            name: "x-forwarded-host: with a port, which becomes the port",
            trusted: &["X-Forwarded-Host"],
            input: &[("x-forwarded-host", "public.test:9443")],
            view_host: "public.test:9443",
            port: 9443,
            out_forwarded: "for=198.18.5.2;proto=https;host=\"public.test:9443\"",
            ..BASE
        },
        Case {
            name: "x-forwarded-host: IPv6 literal with port",
            trusted: &["X-Forwarded-Host"],
            input: &[("x-forwarded-host", "[2001:db8::1]:8080")],
            view_host: "[2001:db8::1]:8080",
            port: 8080,
            out_forwarded: "for=198.18.5.2;proto=https;host=\"[2001:db8::1]:8080\"",
            ..BASE
        },
        Case {
            name: "x-forwarded-host: several hosts in one field",
            trusted: &["X-Forwarded-Host"],
            input: &[("x-forwarded-host", "a.test, b.test")],
            anomalies: &[duplicate("x-forwarded-host")],
            ..BASE
        },
        Case {
            name: "x-forwarded-host: two fields",
            trusted: &["X-Forwarded-Host"],
            input: &[
                ("x-forwarded-host", "a.test"),
                ("x-forwarded-host", "a.test"),
            ],
            anomalies: &[duplicate("x-forwarded-host")],
            ..BASE
        },
        Case {
            name: "x-forwarded-host: not a host",
            trusted: &["X-Forwarded-Host"],
            input: &[("x-forwarded-host", "a.test/evil")],
            anomalies: &[malformed("x-forwarded-host")],
            ..BASE
        },
        Case {
            name: "x-forwarded-host: untrusted peer",
            trusted: &["X-Forwarded-Host"],
            input: &[("x-forwarded-host", "evil.test")],
            ..UNTRUSTED
        },
        Case {
            name: "x-forwarded-host: underscore twin is never read (allow)",
            trusted: &["X-Forwarded-Host"],
            underscore: UnderscorePolicy::Allow,
            input: &[("x_forwarded_host", "evil.test")],
            ..BASE
        },
        Case {
            name: "forwarded:host: trusted alone; its proto is not",
            trusted: &["Forwarded:host"],
            input: &[(FWD, "host=public.test;proto=http")],
            view_host: "public.test",
            out_forwarded: "for=198.18.5.2;proto=https;host=public.test",
            ..BASE
        },
        Case {
            name: "host: HTTP/1.0 without Host: no host anywhere",
            host: "",
            view_host: "",
            out_forwarded: "for=198.18.9.1;proto=https",
            ..UNTRUSTED
        },
        Case {
            name: "host: the received Host's explicit port is the port",
            host: "www.example.test:9000",
            view_host: "www.example.test:9000",
            port: 9000,
            out_forwarded: "for=198.18.9.1;proto=https;host=\"www.example.test:9000\"",
            ..UNTRUSTED
        },
        // Port group.
        Case {
            name: "x-forwarded-port: trusted",
            trusted: &["X-Forwarded-Port"],
            input: &[("x-forwarded-port", "9443")],
            port: 9443,
            ..BASE
        },
        Case {
            name: "x-forwarded-port: the host's explicit port wins a disagreement",
            trusted: &["X-Forwarded-Port"],
            host: "www.example.test:8443",
            input: &[("x-forwarded-port", "443")],
            view_host: "www.example.test:8443",
            anomalies: &[Anomaly::ConflictingPort {
                header: "x-forwarded-port",
            }],
            out_forwarded: "for=198.18.5.2;proto=https;host=\"www.example.test:8443\"",
            ..BASE
        },
        Case {
            name: "x-forwarded-port: zero",
            trusted: &["X-Forwarded-Port"],
            input: &[("x-forwarded-port", "0")],
            anomalies: &[malformed("x-forwarded-port")],
            ..BASE
        },
        Case {
            name: "x-forwarded-port: a sign",
            trusted: &["X-Forwarded-Port"],
            input: &[("x-forwarded-port", "+443")],
            anomalies: &[malformed("x-forwarded-port")],
            ..BASE
        },
        Case {
            name: "x-forwarded-port: two fields",
            trusted: &["X-Forwarded-Port"],
            input: &[("x-forwarded-port", "443"), ("x-forwarded-port", "443")],
            anomalies: &[duplicate("x-forwarded-port")],
            ..BASE
        },
        Case {
            name: "x-forwarded-port: untrusted peer",
            trusted: &["X-Forwarded-Port"],
            input: &[("x-forwarded-port", "1")],
            ..UNTRUSTED
        },
        Case {
            name: "x-forwarded-port: underscore twin is never read (allow)",
            trusted: &["X-Forwarded-Port"],
            underscore: UnderscorePolicy::Allow,
            input: &[("x_forwarded_port", "1")],
            ..BASE
        },
        // Prefix group.
        Case {
            name: "x-forwarded-prefix: trusted, then the route's stripped prefix",
            trusted: &["X-Forwarded-Prefix"],
            input: &[("x-forwarded-prefix", "/outer/")],
            stripped: Some("/webapps"),
            prefix: Some("/outer"),
            out_prefix: Some("/outer/webapps"),
            ..BASE
        },
        Case {
            name: "x-forwarded-prefix: '/' is no prefix",
            trusted: &["X-Forwarded-Prefix"],
            input: &[("x-forwarded-prefix", "/")],
            ..BASE
        },
        Case {
            name: "x-forwarded-prefix: no leading '/'",
            trusted: &["X-Forwarded-Prefix"],
            input: &[("x-forwarded-prefix", "outer")],
            anomalies: &[malformed("x-forwarded-prefix")],
            ..BASE
        },
        Case {
            name: "x-forwarded-prefix: an encoded dot segment",
            trusted: &["X-Forwarded-Prefix"],
            input: &[("x-forwarded-prefix", "/a/%2E%2e/b")],
            anomalies: &[malformed("x-forwarded-prefix")],
            ..BASE
        },
        Case {
            name: "x-forwarded-prefix: protocol-relative",
            trusted: &["X-Forwarded-Prefix"],
            input: &[("x-forwarded-prefix", "//evil.test")],
            anomalies: &[malformed("x-forwarded-prefix")],
            ..BASE
        },
        Case {
            name: "x-forwarded-prefix: two fields",
            trusted: &["X-Forwarded-Prefix"],
            input: &[("x-forwarded-prefix", "/a"), ("x-forwarded-prefix", "/a")],
            anomalies: &[duplicate("x-forwarded-prefix")],
            ..BASE
        },
        Case {
            name: "x-forwarded-prefix: untrusted peer: only the route's prefix",
            trusted: &["X-Forwarded-Prefix"],
            input: &[("x-forwarded-prefix", "/evil")],
            stripped: Some("/webapps/"),
            out_prefix: Some("/webapps"),
            ..UNTRUSTED
        },
        // Several groups at once.
        Case {
            name: "every X-Forwarded-* group trusted, plain HTTP from the peer",
            trusted: &[
                "X-Forwarded-For",
                "X-Forwarded-Proto",
                "X-Forwarded-Host",
                "X-Forwarded-Port",
                "X-Forwarded-Prefix",
            ],
            tls: false,
            input: &[
                ("cookie", "a=1"),
                (XFF, "198.18.9.1"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "public.test"),
                ("x-forwarded-port", "8443"),
                ("x-forwarded-prefix", "/outer"),
                ("x-real-ip", "192.0.2.1"),
                ("remote-user", "admin"),
                ("cookie", "b=2"),
            ],
            stripped: Some("/webapps"),
            view_host: "public.test",
            prefix: Some("/outer"),
            kept: &[("cookie", "a=1"), ("cookie", "b=2")],
            out_prefix: Some("/outer/webapps"),
            out_forwarded: "for=198.18.9.1;proto=https;host=public.test, for=198.18.5.2",
            ..ONE_HOP
        },
    ];

    #[test]
    fn trust_table() {
        for case in CASES {
            let name = case.name;
            let policy = policy(case.trusted, case.underscore);
            let arrival = Arrival {
                peer: case.peer.parse().expect("test peer"),
                tls: case.tls,
                host: case.host,
                listener_port: LISTENER_PORT,
            };
            let headers = map(case.input);
            let (view, anomalies) = policy.read(&arrival, &headers);
            let expected = ClientView {
                client: ip(case.chain[0]),
                chain: case.chain.iter().map(|hop| ip(hop)).collect(),
                scheme: case.scheme,
                host: case.view_host.to_owned(),
                port: case.port,
                prefix: case.prefix.map(str::to_owned),
                trusted_peer: case.trusted_peer,
            };
            assert_eq!(view, expected, "case {name:?}: the client view");
            assert_eq!(anomalies, case.anomalies, "case {name:?}: the anomalies");

            let (mut cleaned, _) = policy
                .clean(headers, false)
                .unwrap_or_else(|error| panic!("case {name:?}: refused: {error}"));
            policy.emit(&view, case.stripped, &mut cleaned);
            let mut expected: Vec<(String, String)> = case
                .kept
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect();
            let mut ours = |name: &str, value: String| expected.push((name.to_owned(), value));
            ours(XFF, case.chain.join(", "));
            ours("x-forwarded-proto", case.scheme.as_str().to_owned());
            if !case.view_host.is_empty() {
                ours("x-forwarded-host", case.view_host.to_owned());
            }
            ours("x-forwarded-port", case.port.to_string());
            if let Some(prefix) = case.out_prefix {
                ours("x-forwarded-prefix", prefix.to_owned());
            }
            ours(FWD, case.out_forwarded.to_owned());
            assert_eq!(
                fields(&cleaned),
                expected,
                "case {name:?}: the fields the server gets"
            );
        }
        assert!(CASES.len() >= 60, "the table shrank to {}", CASES.len());
    }

    #[test]
    fn x_real_ip_and_forwarded_follow_the_switches() {
        let arrival = Arrival {
            peer: TRUSTED_PEER.parse().expect("peer"),
            tls: true,
            host: "www.example.test",
            listener_port: LISTENER_PORT,
        };
        let headers = map(&[(XFF, "2001:db8:9::1")]);
        let cases = [
            (false, false, None, None),
            (
                true,
                false,
                Some("for=\"[2001:db8:9::1]\";proto=https;host=www.example.test, for=198.18.5.2"),
                None,
            ),
            (false, true, None, Some("2001:db8:9::1")),
        ];
        for (emit_forwarded, emit_x_real_ip, forwarded, real_ip) in cases {
            let policy = TrustPolicy {
                emit_forwarded,
                emit_x_real_ip,
                ..policy(&["X-Forwarded-For"], UnderscorePolicy::Drop)
            };
            let (view, _) = policy.read(&arrival, &headers);
            let mut out = HeaderMap::new();
            policy.emit(&view, None, &mut out);
            let get = |name: &str| out.get(name).map(|v| v.to_str().expect("ascii"));
            let switches = format!("forwarded {emit_forwarded}, x-real-ip {emit_x_real_ip}");
            assert_eq!(get(FWD), forwarded, "{switches}: Forwarded");
            assert_eq!(get("x-real-ip"), real_ip, "{switches}: X-Real-IP");
            assert_eq!(
                get(XFF),
                Some("2001:db8:9::1, 198.18.5.2"),
                "{switches}: XFF"
            );
        }
    }

    #[test]
    fn reject_policy_refuses_underscore_names_after_reading() {
        let policy = policy(&["X-Forwarded-For"], UnderscorePolicy::Reject);
        let result = policy.clean(map(&[("x_forwarded_for", "192.0.2.1")]), false);
        assert!(
            matches!(result, Err(HygieneError::Underscore(ref name)) if name == "x_forwarded_for"),
            "reject must refuse the underscore name, got {result:?}"
        );
    }

    #[test]
    fn public_prefix_joins_outer_and_stripped() {
        let cases = [
            (None, None, None),
            (None, Some("/"), None),
            (None, Some(""), None),
            (None, Some("/webapps/"), Some("/webapps")),
            (None, Some("webapps"), Some("/webapps")),
            (Some("/outer"), None, Some("/outer")),
            (Some("/outer"), Some("/a/b"), Some("/outer/a/b")),
        ];
        for (outer, stripped, expected) in cases {
            assert_eq!(
                public_prefix(outer, stripped).as_deref(),
                expected,
                "outer {outer:?}, stripped {stripped:?}"
            );
        }
    }

    #[test]
    fn anomaly_labels() {
        let cases = [
            (malformed(XFF), "malformed", XFF),
            (duplicate("x-real-ip"), "duplicate", "x-real-ip"),
            (
                Anomaly::ConflictingPort {
                    header: "x-forwarded-port",
                },
                "conflicting_port",
                "x-forwarded-port",
            ),
        ];
        for (anomaly, kind, header) in cases {
            assert_eq!(
                (anomaly.kind(), anomaly.header()),
                (kind, header),
                "{anomaly:?}"
            );
        }
    }
}
