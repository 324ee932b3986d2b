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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hyper::{
    HeaderMap,
    header::{HeaderName, HeaderValue},
};
use ipnet::IpNet;

use super::{
    HeaderGroup, TrustedHeader, UnderscorePolicy,
    forwarded::{self, ForwardedElement, Node},
    hygiene::{self, HygieneError, HygieneReport, RequestHygiene},
};

/// Identity headers stripped from every request unless configured otherwise.
pub const DEFAULT_IDENTITY_HEADERS: [&str; 2] = ["remote-user", "x-remote-user"];

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
            identity_headers: DEFAULT_IDENTITY_HEADERS
                .into_iter()
                .map(HeaderName::from_static)
                .collect(),
            emit_forwarded: true,
            emit_x_real_ip: false,
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
                    (header, single_value(headers, header, &mut anomalies)?.to_owned())
                }
            };
            let scheme = parse_scheme(member, &value);
            if scheme.is_none() {
                anomalies.push(Anomaly::MalformedValue { header });
            }
            scheme
        });

        let trusted_host = self.member(HeaderGroup::Host).and_then(|member| match member {
            TrustedHeader::ForwardedHost => pick(|e| e.host.as_ref()),
            _ => {
                let header = member.header_name();
                let value = single_value(headers, header, &mut anomalies)?;
                if forwarded::split_host_port(value).is_none() {
                    anomalies.push(Anomaly::MalformedValue { header });
                    return None;
                }
                Some(value.to_owned())
            }
        });

        let trusted_port = self.member(HeaderGroup::Port).and_then(|member| {
            let header = member.header_name();
            let value = single_value(headers, header, &mut anomalies)?;
            let port = parse_port(value);
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

    /// Appends our forwarded headers to `headers` (already cleaned, so none of them is there):
    /// X-Forwarded-For (the chain, IPv6 without brackets), X-Forwarded-Proto, X-Forwarded-Host
    /// (unless the host is empty), X-Forwarded-Port, X-Forwarded-Prefix (the trusted prefix then
    /// the route's stripped prefix, omitted when both are absent), `Forwarded` (one element per
    /// chain entry, the first also carrying proto and host) and X-Real-IP, as configured.
    pub fn emit(&self, view: &ClientView, stripped_prefix: Option<&str>, headers: &mut HeaderMap) {
        let mut append = |name: &'static str, value: &str| {
            // Every value is checked or built by us; a host that still cannot be a field value
            // is left out rather than sent mangled.
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(HeaderName::from_static(name), value);
            }
        };
        let chain: Vec<String> = view.chain.iter().map(IpAddr::to_string).collect();
        append("x-forwarded-for", &chain.join(", "));
        append("x-forwarded-proto", view.scheme.as_str());
        if !view.host.is_empty() {
            append("x-forwarded-host", &view.host);
        }
        append("x-forwarded-port", &view.port.to_string());
        if let Some(prefix) = public_prefix(view.prefix.as_deref(), stripped_prefix) {
            append("x-forwarded-prefix", &prefix);
        }
        if self.emit_forwarded {
            let elements: Vec<ForwardedElement> = view
                .chain
                .iter()
                .enumerate()
                .map(|(index, ip)| ForwardedElement {
                    for_node: Some(Node::from_ip(*ip)),
                    by: None,
                    proto: (index == 0).then(|| view.scheme.as_str().to_owned()),
                    host: (index == 0 && !view.host.is_empty()).then(|| view.host.clone()),
                })
                .collect();
            append(FORWARDED, &forwarded::format(&elements));
        }
        if self.emit_x_real_ip {
            append("x-real-ip", &view.client.to_string());
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

/// An X-Forwarded-For entry: `IPv4`, `IPv6`, `[IPv6]`, `IPv4:port`, `[IPv6]:port`.
fn parse_address(entry: &str) -> Option<IpAddr> {
    let is_port = |port: &str| {
        (1..=5).contains(&port.len())
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok()
    };
    let address = if let Ok(address) = entry.parse::<IpAddr>() {
        address
    } else if let Some(bracketed) = entry.strip_prefix('[') {
        let (address, rest) = bracketed.split_once(']')?;
        if !(rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        IpAddr::V6(address.parse::<Ipv6Addr>().ok()?)
    } else {
        let (address, port) = entry.split_once(':')?;
        if !is_port(port) {
            return None;
        }
        IpAddr::V4(address.parse::<Ipv4Addr>().ok()?)
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

/// One decimal port, 1 to 65535, digits only.
fn parse_port(value: &str) -> Option<u16> {
    let digits = (1..=5).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| value.parse::<u16>().ok())
        .flatten()
        .filter(|&port| port != 0)
}

/// The explicit port of `host[:port]`, when it has a valid one.
fn explicit_port(host: &str) -> Option<u16> {
    forwarded::split_host_port(host).and_then(|(_, port)| port)
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
fn public_prefix(outer: Option<&str>, stripped: Option<&str>) -> Option<String> {
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
