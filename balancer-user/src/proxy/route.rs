//! Which route a request takes: the listener's routes are indexed once (by exact host, by
//! wildcard suffix, and hostless), so a lookup is a few hash lookups and a scan of the prefixes
//! of one host, with no allocation except the path it returns.
//!
//! Precedence: host specificity first (an exact host, then `*.suffix` with the longer suffix
//! first, then routes without a host), then the longest path prefix, then file order. A host
//! whose routes match no prefix of the path falls through to the less specific hosts.
//!
//! Prefixes match whole segments: "/app" and "/app/" both match "/app/x"; "/app" matches "/app"
//! but not "/apple". A prefix ending in '/' (other than "/") also matches the path equal to it
//! without the slash, which yields [`RouteAction::AddSlash`] (nginx's `location /webapps/`); a
//! route whose prefix equals that path exactly ("/app" for "/app") still wins over that redirect.
//! Paths are compared raw (percent-encoded, case-sensitive), as the caller passes them.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv6Addr,
};

use crate::config::{HostPattern, RouteConfig};
use crate::http::authority;

/// Longest host name looked up (DNS names are at most 253 bytes); longer hosts only match
/// routes without a host.
const MAX_HOST_LEN: usize = 255;

/// The routes of every listener, indexed for [`RouteTable::find`].
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// The routes as given, in file order (`RouteMatch::index` indexes this).
    routes: Vec<RouteConfig>,
    listeners: HashMap<String, ListenerRoutes>,
}

/// The route a request takes and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    /// The route's index in the list given to [`RouteTable::new`] (its file order).
    pub index: usize,
    pub route: &'a RouteConfig,
    pub action: RouteAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Forward (or serve static) with this path (the query is appended by the caller). Always
    /// starts with '/'.
    Forward { upstream_path: String },
    /// The path is the route's prefix without its trailing slash: answer 301 to this path (the
    /// prefix, with its slash; the caller appends the query).
    AddSlash { location_path: String },
}

/// One listener's routes, grouped by host pattern.
#[derive(Debug, Clone, Default)]
struct ListenerRoutes {
    /// Exact host names (lowercase, no trailing dot) other than IPv6 literals.
    exact: HashMap<String, PrefixList>,
    /// Exact IPv6 literals, compared as addresses ("[::1]" is "[0:0::1]").
    exact_ipv6: HashMap<Ipv6Addr, PrefixList>,
    /// `*.suffix` patterns by suffix (lowercase, no leading or trailing dot).
    suffix: HashMap<String, PrefixList>,
    /// Routes without a host.
    any: PrefixList,
}

/// Route indexes of one host pattern, longest prefix first, then in file order.
#[derive(Debug, Clone, Default)]
struct PrefixList(Vec<usize>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathMatch {
    Forward,
    AddSlash,
}

/// A request's host, normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostKey<'a> {
    /// A name or IPv4 literal: lowercase, without port or trailing dot.
    Name(&'a str),
    Ipv6(Ipv6Addr),
    /// Empty or unusable: only routes without a host match.
    None,
}

impl RouteTable {
    /// `listeners`: the names of the listeners, where routes without a `listener` apply.
    pub fn new(routes: &[RouteConfig], listeners: &[&str]) -> RouteTable {
        let mut tables: HashMap<String, ListenerRoutes> = HashMap::new();
        for (index, route) in routes.iter().enumerate() {
            match &route.listener {
                Some(name) => tables.entry(name.clone()).or_default().add(route, index),
                None => {
                    for listener in listeners {
                        tables
                            .entry((*listener).to_string())
                            .or_default()
                            .add(route, index);
                    }
                }
            }
        }
        for table in tables.values_mut() {
            let lists = table
                .exact
                .values_mut()
                .chain(table.exact_ipv6.values_mut())
                .chain(table.suffix.values_mut())
                .chain(std::iter::once(&mut table.any));
            for list in lists {
                // Stable sort: longest prefix first; for equal prefixes, a route of this
                // listener before one of every listener, then file order.
                list.0.sort_by_key(|&i| {
                    (
                        std::cmp::Reverse(routes[i].path.len()),
                        routes[i].listener.is_none(),
                    )
                });
            }
        }
        RouteTable {
            routes: routes.to_vec(),
            listeners: tables,
        }
    }
}

impl ListenerRoutes {
    fn add(&mut self, route: &RouteConfig, index: usize) {
        let list = match &route.host {
            None => &mut self.any,
            Some(HostPattern::Exact(host)) => {
                let host = normalize_pattern(host);
                match parse_ipv6(&host) {
                    Some(addr) => self.exact_ipv6.entry(addr).or_default(),
                    None => self.exact.entry(host).or_default(),
                }
            }
            Some(HostPattern::Suffix(suffix)) => {
                let suffix = normalize_pattern(suffix);
                let suffix = suffix.trim_start_matches("*.").trim_start_matches('.');
                self.suffix.entry(suffix.to_string()).or_default()
            }
        };
        list.0.push(index);
    }
}

impl RouteTable {
    /// `host`: the request's Host / :authority (may carry ":port", may be an IPv6 literal in
    /// brackets, any case, maybe a trailing dot); `path`: the raw (percent-encoded) path, no
    /// query. `None`: no route of the listener matches (or no such listener, or a path not
    /// starting with '/', such as "*").
    pub fn find(&self, listener: &str, host: &str, path: &str) -> Option<RouteMatch<'_>> {
        let table = self.listeners.get(listener)?;
        if !path.starts_with('/') {
            return None;
        }
        let mut buf = [0u8; MAX_HOST_LEN];
        // A listener whose routes name no host (the usual one) needs no host key: splitting
        // and lowercasing the Host per request cost about 450 instructions (callgrind).
        let by_host =
            !(table.exact.is_empty() && table.exact_ipv6.is_empty() && table.suffix.is_empty());
        let key = if by_host {
            normalize_host(host, &mut buf)
        } else {
            HostKey::None
        };
        let found = match key {
            HostKey::Name(name) => table
                .exact
                .get(name)
                .and_then(|list| list.find(&self.routes, path))
                .or_else(|| table.find_suffix(&self.routes, name, path)),
            HostKey::Ipv6(addr) => table
                .exact_ipv6
                .get(&addr)
                .and_then(|list| list.find(&self.routes, path)),
            HostKey::None => None,
        };
        let (index, matched) = found.or_else(|| table.any.find(&self.routes, path))?;
        let route = &self.routes[index];
        let action = match matched {
            PathMatch::Forward => RouteAction::Forward {
                upstream_path: upstream_path(route, path),
            },
            PathMatch::AddSlash => RouteAction::AddSlash {
                location_path: route.path.clone(),
            },
        };
        Some(RouteMatch {
            index,
            route,
            action,
        })
    }
}

impl ListenerRoutes {
    /// The `*.suffix` routes for `host`, longest suffix first: the suffixes after each dot of
    /// the host, left to right (never the whole host: "*.a.b" does not match "a.b").
    fn find_suffix(
        &self,
        routes: &[RouteConfig],
        host: &str,
        path: &str,
    ) -> Option<(usize, PathMatch)> {
        if self.suffix.is_empty() {
            return None;
        }
        host.match_indices('.')
            .filter(|&(dot, _)| dot > 0)
            .filter_map(|(dot, _)| self.suffix.get(&host[dot + 1..]))
            .find_map(|list| list.find(routes, path))
    }
}

impl PrefixList {
    /// The best route of this list for `path`: the longest matching prefix, the earliest in file
    /// order among equal ones. An `AddSlash` match of "/app/" counts as matching "/app", so it
    /// loses to a route with the prefix "/app" itself.
    fn find(&self, routes: &[RouteConfig], path: &str) -> Option<(usize, PathMatch)> {
        // The first AddSlash match and its prefix length.
        let mut redirect: Option<(usize, usize)> = None;
        for &index in &self.0 {
            let prefix = routes[index].path.as_str();
            if let Some((_, len)) = redirect {
                // Only a prefix equal to the path ("/app" after "/app/") can still win.
                if prefix.len() + 1 < len {
                    break;
                }
            }
            match match_prefix(prefix, path) {
                // Longer prefixes came first; an equal one earlier in the file came first too.
                Some(PathMatch::Forward) => return Some((index, PathMatch::Forward)),
                Some(PathMatch::AddSlash) if redirect.is_none() => {
                    redirect = Some((index, prefix.len()))
                }
                _ => {}
            }
        }
        redirect.map(|(index, _)| (index, PathMatch::AddSlash))
    }
}

/// Whether `prefix` matches `path` on whole segments.
fn match_prefix(prefix: &str, path: &str) -> Option<PathMatch> {
    if let Some(rest) = path.strip_prefix(prefix) {
        if prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/') {
            return Some(PathMatch::Forward);
        }
        return None;
    }
    match prefix.strip_suffix('/') {
        Some(without) if !without.is_empty() && without == path => Some(PathMatch::AddSlash),
        _ => None,
    }
}

/// The path to forward for a `Forward` match of `route` on `path`.
fn upstream_path(route: &RouteConfig, path: &str) -> String {
    if !route.strip_prefix {
        return path.to_string();
    }
    let prefix = route.path.strip_suffix('/').unwrap_or(&route.path);
    // `path` starts with the prefix (Forward), and what follows it is empty or starts with '/'.
    match path.get(prefix.len()..) {
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => "/".to_string(),
    }
}

/// A listener's `allowed_hosts`, matched like route hosts (case, port and trailing dot do not
/// matter; `*.suffix` matches names below the suffix). Empty: every host is allowed.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    exact: HashSet<String>,
    exact_ipv6: HashSet<Ipv6Addr>,
    suffixes: Vec<String>,
}

impl AllowedHosts {
    pub fn new(patterns: &[HostPattern]) -> AllowedHosts {
        let mut allowed = AllowedHosts::default();
        for pattern in patterns {
            match pattern {
                HostPattern::Exact(host) => {
                    let host = normalize_pattern(host);
                    match parse_ipv6(&host) {
                        Some(addr) => {
                            allowed.exact_ipv6.insert(addr);
                        }
                        None => {
                            allowed.exact.insert(host);
                        }
                    }
                }
                HostPattern::Suffix(suffix) => allowed.suffixes.push(normalize_pattern(suffix)),
            }
        }
        allowed
    }

    pub fn is_unrestricted(&self) -> bool {
        self.exact.is_empty() && self.exact_ipv6.is_empty() && self.suffixes.is_empty()
    }

    /// `host`: a request's Host / :authority, as `RouteTable::find` takes it.
    pub fn allows(&self, host: &str) -> bool {
        if self.is_unrestricted() {
            return true;
        }
        let mut buf = [0u8; MAX_HOST_LEN];
        match normalize_host(host, &mut buf) {
            HostKey::Name(name) => {
                self.exact.contains(name)
                    || self.suffixes.iter().any(|suffix| {
                        name.len() > suffix.len() + 1
                            && name.ends_with(suffix.as_str())
                            && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
                    })
            }
            HostKey::Ipv6(addr) => self.exact_ipv6.contains(&addr),
            HostKey::None => false,
        }
    }
}

/// A configured host pattern, in the form `normalize_host` gives requests.
fn normalize_pattern(host: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    authority::bare_host(&host).to_string()
}

/// An IPv6 literal, bare (as `normalize_pattern` leaves it).
fn parse_ipv6(host: &str) -> Option<Ipv6Addr> {
    if host.contains(':') {
        host.parse().ok()
    } else {
        None
    }
}

/// A request's Host / :authority without port, trailing dot or case; lowercased into `buf`.
/// Split by `http::authority` (an empty port is taken as the default, as in a URL); a value
/// that is no authority (a bad port, userinfo) matches no host, only the routes for any host.
fn normalize_host<'b>(host: &str, buf: &'b mut [u8; MAX_HOST_LEN]) -> HostKey<'b> {
    let name = match authority::parse_in_url(host) {
        Ok(authority) if authority.host.starts_with('[') => {
            return authority.ipv6().map_or(HostKey::None, HostKey::Ipv6);
        }
        Ok(authority) => authority.host,
        // A bare IPv6 literal is not valid in Host, but unambiguous enough to accept.
        Err(_) => return host.parse().map_or(HostKey::None, HostKey::Ipv6),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_HOST_LEN {
        return HostKey::None;
    }
    let out = &mut buf[..name.len()];
    out.copy_from_slice(name.as_bytes());
    out.make_ascii_lowercase();
    // ASCII lowercasing keeps UTF-8 valid.
    std::str::from_utf8(out).map_or(HostKey::None, HostKey::Name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HeaderEdits, RouteTarget};
    use std::collections::BTreeMap;

    enum Host {
        Any,
        Exact(&'static str),
        Suffix(&'static str),
    }

    fn route(
        name: &str,
        listener: &str,
        host: Host,
        path: &str,
        strip_prefix: bool,
    ) -> RouteConfig {
        RouteConfig {
            name: name.to_string(),
            listener: Some(listener.to_string()),
            host: match host {
                Host::Any => None,
                Host::Exact(h) => Some(HostPattern::Exact(h.to_string())),
                Host::Suffix(s) => Some(HostPattern::Suffix(s.to_string())),
            },
            path: path.to_string(),
            strip_prefix,
            target: RouteTarget::Pool("pool".to_string()),
            preserve_host: true,
            max_body_size: RouteConfig::DEFAULT_MAX_BODY_SIZE,
            request_buffering: true,
            response_buffering: true,
            client_body_timeout: RouteConfig::DEFAULT_CLIENT_BODY_TIMEOUT,
            error_pages: BTreeMap::new(),
            request_headers: HeaderEdits::default(),
            response_headers: HeaderEdits::default(),
            rewrite_location: true,
            rewrite_cookie_path: true,
            rewrite_html: false,
            debug_headers: false,
            allow_encoded_slashes: false,
            rewrite_cookie_domain: Vec::new(),
            compress: false,
        }
    }

    fn routes() -> Vec<RouteConfig> {
        use Host::*;
        vec![
            route("root", "web", Any, "/", false),
            route("app", "web", Any, "/app", false),
            route("app-slash", "web", Any, "/app/", true),
            route("webapps", "web", Any, "/webapps/", true),
            route(
                "docs-webapps",
                "web",
                Exact("docs.example.test"),
                "/webapps/",
                false,
            ),
            route("www-root", "web", Exact("www.example.test"), "/", false),
            route("www-api", "web", Exact("www.example.test"), "/api", true),
            route("wild", "web", Suffix("example.test"), "/", false),
            route("wild-eu", "web", Suffix("eu.example.test"), "/", false),
            route(
                "wild-eu-static",
                "web",
                Suffix("eu.example.test"),
                "/static",
                true,
            ),
            route("ipv6", "web", Exact("[::1]"), "/", false),
            route("ipv4", "web", Exact("192.0.2.1"), "/", false),
            route("dup-1", "web", Any, "/dup", false),
            route("dup-2", "web", Any, "/dup", false),
            route("strip-s", "web", Any, "/s", true),
            route("deep", "web", Any, "/app/admin/", false),
            route("api-v1", "api", Any, "/v1", true),
            route(
                "api-users",
                "api",
                Exact("api.example.test"),
                "/v1/users",
                false,
            ),
            route("ipv6-bare", "api", Exact("2001:db8::1"), "/", false),
            route(
                "mixed-case",
                "api",
                Exact("Mixed.Example.Test."),
                "/",
                false,
            ),
            route("wild-mixed", "api", Suffix("Wild.Test"), "/", false),
        ]
    }

    /// The route name and action a case expects.
    type Want = Option<(&'static str, RouteAction)>;

    fn fwd(name: &'static str, path: &'static str) -> Want {
        Some((
            name,
            RouteAction::Forward {
                upstream_path: path.to_string(),
            },
        ))
    }

    fn slash(name: &'static str, path: &'static str) -> Want {
        Some((
            name,
            RouteAction::AddSlash {
                location_path: path.to_string(),
            },
        ))
    }

    #[test]
    fn table_of_cases() {
        let routes = routes();
        let table = RouteTable::new(&routes, &[]);
        #[rustfmt::skip]
        let cases: Vec<(&str, &str, &str, Want)> = vec![
            // Root route, any host.
            ("web", "other.test", "/", fwd("root", "/")),
            ("web", "other.test", "/x/y%20z", fwd("root", "/x/y%20z")),
            // Longest prefix: "/app/" beats "/app" for "/app/x" (and strips).
            ("web", "other.test", "/app/x", fwd("app-slash", "/x")),
            // "/app" matches itself, and beats the AddSlash of "/app/".
            ("web", "other.test", "/app", fwd("app", "/app")),
            // Segment boundaries.
            ("web", "other.test", "/apple", fwd("root", "/apple")),
            ("web", "other.test", "/app%2Fx", fwd("root", "/app%2Fx")),
            ("web", "other.test", "/sx", fwd("root", "/sx")),
            // AddSlash, without strip_prefix and with it.
            ("web", "other.test", "/app/admin", slash("deep", "/app/admin/")),
            ("web", "other.test", "/app/admin/x", fwd("deep", "/app/admin/x")),
            ("web", "other.test", "/webapps", slash("webapps", "/webapps/")),
            // Strip variants.
            ("web", "other.test", "/webapps/", fwd("webapps", "/")),
            ("web", "other.test", "/webapps/a/b", fwd("webapps", "/a/b")),
            ("web", "other.test", "/webapps//a", fwd("webapps", "//a")),
            ("web", "other.test", "/s", fwd("strip-s", "/")),
            ("web", "other.test", "/s/", fwd("strip-s", "/")),
            ("web", "other.test", "/s/t", fwd("strip-s", "/t")),
            ("web", "www.example.test", "/api/v2", fwd("www-api", "/v2")),
            ("web", "www.example.test", "/api/", fwd("www-api", "/")),
            // Exact host beats wildcard and hostless, with port, case, trailing dot.
            ("web", "WWW.Example.TEST:8080", "/api", fwd("www-api", "/")),
            ("web", "www.example.test.", "/x", fwd("www-root", "/x")),
            ("web", "www.example.test.:443", "/x", fwd("www-root", "/x")),
            ("web", "www.example.test", "/app/x", fwd("www-root", "/app/x")),
            // An exact host with no matching prefix falls through to the wildcard.
            ("web", "docs.example.test", "/webapps", slash("docs-webapps", "/webapps/")),
            ("web", "docs.example.test", "/webapps/x", fwd("docs-webapps", "/webapps/x")),
            ("web", "docs.example.test", "/other", fwd("wild", "/other")),
            // Wildcards: one or more labels, never the bare suffix; longer suffix first.
            ("web", "a.example.test", "/x", fwd("wild", "/x")),
            ("web", "a.b.example.test:80", "/x", fwd("wild", "/x")),
            ("web", "example.test", "/x", fwd("root", "/x")),
            ("web", "xexample.test", "/x", fwd("root", "/x")),
            ("web", "a.eu.example.test", "/static/img.png", fwd("wild-eu-static", "/img.png")),
            ("web", "A.EU.example.test.", "/x", fwd("wild-eu", "/x")),
            ("web", "eu.example.test", "/static/x", fwd("wild", "/static/x")),
            // A wildcard route's prefix beats a longer hostless one (host first).
            ("web", "a.eu.example.test", "/app/x", fwd("wild-eu", "/app/x")),
            // IP literals.
            ("web", "[::1]:8080", "/x", fwd("ipv6", "/x")),
            ("web", "[0:0::1]", "/x", fwd("ipv6", "/x")),
            ("web", "[::2]", "/x", fwd("root", "/x")),
            ("web", "[::1", "/x", fwd("root", "/x")),
            ("web", "192.0.2.1:80", "/x", fwd("ipv4", "/x")),
            ("api", "[2001:DB8:0::1]:443", "/", fwd("ipv6-bare", "/")),
            ("api", "2001:db8::1", "/", fwd("ipv6-bare", "/")),
            // Patterns are normalized too.
            ("api", "mixed.example.test", "/", fwd("mixed-case", "/")),
            ("api", "x.wild.test", "/", fwd("wild-mixed", "/")),
            // No host: hostless routes only.
            ("web", "", "/x", fwd("root", "/x")),
            ("web", ":8080", "/x", fwd("root", "/x")),
            // Tie by file order.
            ("web", "other.test", "/dup/1", fwd("dup-1", "/dup/1")),
            // Several listeners.
            ("api", "other.test", "/v1", fwd("api-v1", "/")),
            ("api", "api.example.test", "/v1/users/7", fwd("api-users", "/v1/users/7")),
            ("api", "api.example.test", "/v1/x", fwd("api-v1", "/x")),
            // No match: no root route, unknown listener, not a path.
            ("api", "other.test", "/v2", None),
            ("api", "api.example.test", "/", None),
            ("nope", "other.test", "/", None),
            ("web", "other.test", "*", None),
            ("web", "other.test", "", None),
        ];
        assert!(cases.len() >= 25);
        for (listener, host, path, want) in cases {
            let got = table.find(listener, host, path);
            let got = got.map(|m| {
                assert_eq!(&routes[m.index], m.route, "index of {}", m.route.name);
                (m.route.name.as_str(), m.action)
            });
            assert_eq!(
                got, want,
                "listener {listener:?} host {host:?} path {path:?}"
            );
        }
    }

    /// A listener whose routes name no host skips the host key (`find`): any Host, valid,
    /// malformed or absent, routes by path alone, as it did when the key was computed.
    #[test]
    fn a_listener_without_host_routes_routes_any_host_by_path() {
        use Host::*;
        let routes = vec![
            route("root", "l", Any, "/", false),
            route("app", "l", Any, "/app/", true),
            route("other", "m", Exact("a.test"), "/", false),
        ];
        let table = RouteTable::new(&routes, &[]);
        let find = |host: &str, path: &str| {
            table
                .find("l", host, path)
                .map(|m| (m.route.name.as_str(), m.action))
        };
        for host in [
            "a.test",
            "A.TEST.:80",
            "[::1]:8080",
            "",
            "[::1",
            "user@a.test",
            "x:y:z",
        ] {
            assert_eq!(find(host, "/app/x"), fwd("app", "/x"), "host {host:?}");
            assert_eq!(find(host, "/x"), fwd("root", "/x"), "host {host:?}");
            assert_eq!(find(host, "*"), None, "host {host:?}");
        }
    }

    #[test]
    fn longer_host_without_matching_prefix_falls_through() {
        use Host::*;
        let routes = vec![
            route("any", "l", Any, "/", false),
            route("short", "l", Suffix("b.test"), "/b", false),
            route("long", "l", Suffix("a.b.test"), "/a", false),
            route("exact", "l", Exact("x.a.b.test"), "/x", false),
        ];
        let table = RouteTable::new(&routes, &[]);
        let name =
            |host: &str, path: &str| table.find("l", host, path).map(|m| m.route.name.as_str());
        assert_eq!(name("x.a.b.test", "/x"), Some("exact"));
        assert_eq!(name("x.a.b.test", "/a"), Some("long"));
        assert_eq!(name("x.a.b.test", "/b"), Some("short"));
        assert_eq!(name("x.a.b.test", "/c"), Some("any"));
        assert_eq!(name("y.b.test", "/a"), Some("any"));
    }

    #[test]
    fn add_slash_and_exact_prefix_in_either_order() {
        use Host::*;
        for routes in [
            vec![
                route("slash", "l", Any, "/p/", true),
                route("plain", "l", Any, "/p", true),
            ],
            vec![
                route("plain", "l", Any, "/p", true),
                route("slash", "l", Any, "/p/", true),
            ],
        ] {
            let table = RouteTable::new(&routes, &[]);
            let m = table.find("l", "h", "/p").unwrap();
            assert_eq!(m.route.name, "plain");
            assert_eq!(
                m.action,
                RouteAction::Forward {
                    upstream_path: "/".to_string()
                }
            );
            assert_eq!(table.find("l", "h", "/p/q").unwrap().route.name, "slash");
        }
        // Without the plain route, the slash route redirects; the root never does.
        let routes = vec![
            route("root", "l", Any, "/", false),
            route("slash", "l", Any, "/p/", false),
        ];
        let table = RouteTable::new(&routes, &[]);
        let m = table.find("l", "h", "/p").unwrap();
        assert_eq!(
            (m.index, m.action),
            (
                1,
                RouteAction::AddSlash {
                    location_path: "/p/".to_string()
                }
            )
        );
    }

    #[test]
    fn a_route_without_listener_serves_every_listener_and_yields_to_their_own() {
        use Host::*;
        let every = |name: &str, path: &str| RouteConfig {
            listener: None,
            ..route(name, "-", Any, path, false)
        };
        let listeners = ["web", "tls"];
        let routes = vec![
            every("all-root", "/"),
            route("tls-root", "tls", Any, "/", false),
            every("all-api", "/api"),
        ];
        let table = RouteTable::new(&routes, &listeners);
        let name = |listener: &str, path: &str| {
            table
                .find(listener, "h", path)
                .map(|m| m.route.name.clone())
        };
        assert_eq!(name("web", "/x").as_deref(), Some("all-root"));
        // Same prefix: the listener's own route wins, though it comes later in the file.
        assert_eq!(name("tls", "/x").as_deref(), Some("tls-root"));
        // A longer prefix still wins over the listener's own shorter one.
        assert_eq!(name("tls", "/api/v1").as_deref(), Some("all-api"));
        assert_eq!(name("web", "/api/v1").as_deref(), Some("all-api"));
        assert_eq!(name("other", "/x"), None, "not a configured listener");
    }

    #[test]
    fn normalize_host_forms() {
        let mut buf = [0u8; MAX_HOST_LEN];
        assert_eq!(
            normalize_host("Ex.Test:80", &mut buf),
            HostKey::Name("ex.test")
        );
        let mut buf = [0u8; MAX_HOST_LEN];
        assert_eq!(
            normalize_host("ex.test.", &mut buf),
            HostKey::Name("ex.test")
        );
        let mut buf = [0u8; MAX_HOST_LEN];
        assert_eq!(
            normalize_host("[::FFFF:1.2.3.4]:1", &mut buf),
            HostKey::Ipv6("::ffff:1.2.3.4".parse().unwrap())
        );
        let mut buf = [0u8; MAX_HOST_LEN];
        assert_eq!(normalize_host("[::1]x", &mut buf), HostKey::None);
        // `http::authority` rules: a bare IPv6 literal is still read; an empty port is the
        // default one (RFC 3986 §3.2.3); a bad port or userinfo makes no host to match.
        let mut buf = [0u8; MAX_HOST_LEN];
        assert_eq!(
            normalize_host("2001:2::1", &mut buf),
            HostKey::Ipv6("2001:2::1".parse().unwrap())
        );
        let mut buf = [0u8; MAX_HOST_LEN];
        assert_eq!(
            normalize_host("Ex.Test:", &mut buf),
            HostKey::Name("ex.test")
        );
        for not_a_host in ["ex.test:http", "ex.test:0", "ex.test:65536", "u@ex.test"] {
            let mut buf = [0u8; MAX_HOST_LEN];
            assert_eq!(
                normalize_host(not_a_host, &mut buf),
                HostKey::None,
                "{not_a_host}"
            );
        }
        let mut buf = [0u8; MAX_HOST_LEN];
        assert_eq!(normalize_host(&"a".repeat(300), &mut buf), HostKey::None);
        let mut buf = [0u8; MAX_HOST_LEN];
        let long = "a".repeat(MAX_HOST_LEN);
        assert_eq!(
            normalize_host(&long, &mut buf),
            HostKey::Name(long.as_str())
        );
    }
}

/// Whether `path` holds a separator that is not a `/` to us but may be one to the server: an
/// encoded slash or backslash (`%2F`, `%5C`, any case) or a raw backslash. A server that
/// decodes `/public/%2e%2e%2fadmin` before it splits the path reads `/admin`, while routing
/// saw `/public/`. Refused unless the route has `allow_encoded_slashes` (Apache's
/// `AllowEncodedSlashes Off` answers 404 too).
pub fn has_hidden_separator(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.iter().enumerate().any(|(at, &byte)| {
        byte == b'\\'
            || (byte == b'%'
                && matches!(
                    bytes.get(at + 1..at + 3),
                    Some([b'2', b'f' | b'F'] | [b'5', b'c' | b'C'])
                ))
    })
}

/// Whether a segment of `path` is a dot segment with parameters (`..;x`, `.;`, `%2e%2e;`):
/// Tomcat and Jetty drop the parameters and read `..`, so `/public/..;/admin` is `/admin` to
/// them while dot-segment resolution here keeps it inside `/public/`. Always refused.
pub fn has_parameter_dot_segment(path: &str) -> bool {
    // Most paths have no parameter at all: one scan for ';' answers them.
    if !path.as_bytes().contains(&b';') {
        return false;
    }
    path.split('/').any(|segment| {
        segment.split_once(';').is_some_and(|(head, _)| {
            [".", "..", "%2e", "%2e.", ".%2e", "%2e%2e"]
                .iter()
                .any(|form| head.eq_ignore_ascii_case(form))
        })
    })
}

/// The path with its dot segments resolved (RFC 3986 §5.2.4), so that routes are a real boundary:
/// `/static/../admin` is `/admin` for routing and for the server. `%2e` counts as a dot, as
/// servers decode it. `None`: the path climbs above the root (the caller answers 400).
pub fn normalize_path(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    fn is_dot(segment: &str) -> bool {
        segment == "." || segment.eq_ignore_ascii_case("%2e")
    }
    fn is_dot_dot(segment: &str) -> bool {
        // Compared without lowercasing into a new string: this runs on every segment of
        // every request path.
        ["..", "%2e.", ".%2e", "%2e%2e"]
            .iter()
            .any(|form| segment.eq_ignore_ascii_case(form))
    }
    // A dot segment needs a '.' or a '%': paths with neither are answered by one scan.
    if !path.bytes().any(|byte| byte == b'.' || byte == b'%') {
        return Some(std::borrow::Cow::Borrowed(path));
    }
    let segments = path.split('/').skip(1);
    if !segments
        .clone()
        .any(|segment| is_dot(segment) || is_dot_dot(segment))
    {
        return Some(std::borrow::Cow::Borrowed(path));
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        if is_dot(segment) {
            trailing_slash = true;
        } else if is_dot_dot(segment) {
            kept.pop()?;
            trailing_slash = true;
        } else {
            kept.push(segment);
        }
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in &kept {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if trailing_slash || normalized.is_empty() {
        normalized.push('/');
    }
    Some(std::borrow::Cow::Owned(normalized))
}

#[cfg(test)]
mod normalize_tests {
    use super::{has_hidden_separator, has_parameter_dot_segment, normalize_path};

    #[test]
    fn hidden_separators_are_found() {
        for path in [
            "/public/%2e%2e%2fadmin/x",
            "/a%2Fb",
            "/a%5cb",
            "/a%5Cb",
            "/static/..\\secret",
            "/%2f",
        ] {
            assert!(has_hidden_separator(path), "{path}");
        }
        for path in [
            "/", "/a/b", "/a%20b", "/a%2", "/a%25", "/a%2e", "/%5", "/x%f2",
        ] {
            assert!(!has_hidden_separator(path), "{path}");
        }
    }

    #[test]
    fn dot_segments_with_parameters_are_found() {
        for path in [
            "/public/..;/admin",
            "/public/..;jsessionid=1/admin",
            "/public/.;/x",
            "/public/%2e%2e;/admin",
            "/public/%2E.;x/admin",
        ] {
            assert!(has_parameter_dot_segment(path), "{path}");
        }
        for path in ["/a;b/c", "/a/b;v=1", "/..a;b", "/;x", "/a/...;x"] {
            assert!(!has_parameter_dot_segment(path), "{path}");
        }
    }

    #[test]
    fn allowed_hosts_match_like_route_hosts() {
        use super::AllowedHosts;
        use crate::config::HostPattern;
        let allowed = AllowedHosts::new(&[
            HostPattern::Exact("www.example.test".into()),
            HostPattern::Suffix("apps.example.test".into()),
            HostPattern::Exact("[2001:2::1]".into()),
            HostPattern::Exact("198.18.0.10".into()),
        ]);
        for (host, want) in [
            ("www.example.test", true),
            ("WWW.Example.Test.", true),
            ("www.example.test:8443", true),
            ("example.test", false),
            ("evil.www.example.test", false),
            ("a.apps.example.test", true),
            ("a.b.apps.example.test:443", true),
            ("apps.example.test", false),
            ("xapps.example.test", false),
            ("[2001:2:0::1]:443", true),
            ("[2001:2::2]", false),
            ("198.18.0.10:80", true),
            ("198.18.0.11", false),
            ("", false),
            ("[bad", false),
        ] {
            assert_eq!(allowed.allows(host), want, "{host:?}");
        }
        let open = AllowedHosts::new(&[]);
        assert!(open.is_unrestricted() && open.allows("") && open.allows("anything.test"));
    }

    #[test]
    fn dot_segments_are_resolved_and_climbing_above_the_root_is_refused() {
        let cases = [
            ("/", Some("/")),
            ("/a/b", Some("/a/b")),
            ("/a/./b", Some("/a/b")),
            ("/static/../admin", Some("/admin")),
            ("/static/%2e%2e/admin", Some("/admin")),
            ("/static/%2E./admin", Some("/admin")),
            ("/a/b/..", Some("/a/")),
            ("/a/.", Some("/a/")),
            ("/a/..", Some("/")),
            ("/..", None),
            ("/a/../../etc/passwd", None),
            ("/a/...", Some("/a/...")),
            ("/a/.b", Some("/a/.b")),
        ];
        for (path, expected) in cases {
            assert_eq!(normalize_path(path).as_deref(), expected, "{path}");
        }
    }
}
