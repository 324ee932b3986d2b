//! Response rewriting rules, pure (no I/O): make the URLs and cookies a server wrote for its own
//! address point at the public URL the client used (Apache `ProxyPassReverse`,
//! `ProxyPassReverseCookiePath` and `ProxyPassReverseCookieDomain`). The proxy builds a
//! `ReverseMap` per request and applies it to the response headers here and, with
//! `rewrite_html`, to HTML bodies (proxy/html.rs).

use std::net::{Ipv4Addr, Ipv6Addr};

use hyper::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

use super::trust::ClientView;
use crate::http::{authority, set_cookie};

/// Where the client reached the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// "http" or "https".
    pub scheme: &'static str,
    /// `host[:port]` as the client uses it: IPv6 in brackets, the port omitted when it is the
    /// scheme's default.
    pub host: String,
    /// "" or a path like "/webapps" (a trailing '/' is ignored): where the route is mounted when
    /// the server does not see that prefix (`strip_prefix = true`).
    pub prefix: String,
}

impl PublicUrl {
    /// The public URL of a request as the trust engine sees it: its scheme and host (the
    /// scheme's default port dropped), and the trusted incoming prefix followed by the route's
    /// stripped prefix.
    pub fn from_view(view: &ClientView, stripped_prefix: Option<&str>) -> PublicUrl {
        let scheme = view.scheme.as_str();
        let host = match authority::parse_host_field(&view.host) {
            Ok(authority) if authority.port == Some(view.scheme.default_port()) => {
                authority.host.to_string()
            }
            _ => view.host.clone(),
        };
        PublicUrl {
            scheme,
            host,
            prefix: super::trust::public_prefix(view.prefix.as_deref(), stripped_prefix)
                .unwrap_or_default(),
        }
    }
}

/// The addresses the server may put in the URLs it writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendUrl {
    /// `host[:port]` values: the server's authority ("198.18.1.2:8000", "[2001:2::5]:8000",
    /// "localhost" for a unix socket) and, with `preserve_host`, the public host too (the server
    /// saw the client's Host but may think it is plain http). Without a port an authority
    /// matches the default port of the URL's scheme.
    pub authorities: Vec<String>,
}

/// The public URL and the server's addresses of one request: what to rewrite into what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseMap {
    pub public: PublicUrl,
    pub backend: BackendUrl,
    /// Rewrite a cookie's `Path` to the public prefix and a `Domain` naming the server to the
    /// public host (`rewrite_cookie_path`; true unless the route says otherwise).
    pub cookie_paths: bool,
    /// Explicit `Domain` replacements (`rewrite_cookie_domain`), lowercase keys; applied first.
    pub cookie_domains: Vec<(String, String)>,
}

/// The lowercase name of the non-standard `URI` response header (RFC 2616 drafts), which Apache's
/// `ProxyPassReverse` rewrites along with `Location` and `Content-Location`.
const URI: HeaderName = HeaderName::from_static("uri");

/// The headers whose URLs `ReverseMap::response_headers` rewrites with `location`.
const LOCATION_HEADERS: [HeaderName; 4] = [
    header::LOCATION,
    header::CONTENT_LOCATION,
    URI,
    header::REFRESH,
];

/// Whether `response_headers` has anything to look at in `headers` (without building a map:
/// most answers carry none of these).
/// One walk over the names, not a lookup per name: a response has a handful of fields, and
/// comparing a standard name is one integer comparison where a lookup hashes and probes.
pub fn has_rewritable_headers(headers: &HeaderMap, location: bool, cookies: bool) -> bool {
    (location || cookies)
        && headers.keys().any(|name| {
            (location && LOCATION_HEADERS.contains(name)) || (cookies && name == header::SET_COOKIE)
        })
}

impl ReverseMap {
    pub fn new(public: PublicUrl, backend: BackendUrl) -> ReverseMap {
        ReverseMap {
            public,
            backend,
            cookie_paths: true,
            cookie_domains: Vec::new(),
        }
    }

    /// Rewrites one URL (a `Location`, `Content-Location` or `URI` value, or an HTML attribute):
    /// an absolute or scheme-relative URL whose authority is the server's gets the public scheme
    /// and host; its path, like that of a path-absolute reference ("/x"), gets the public prefix
    /// unless it is already under it. Query and fragment are kept as written; surrounding ASCII
    /// whitespace too. `None`: leave the value unchanged (other hosts, other schemes, relative
    /// references like "x" or "?q", nothing to change).
    pub fn url(&self, value: &str) -> Option<String> {
        let core = value.trim_matches(is_ascii_space);
        if core.is_empty() {
            return None;
        }
        let lead = value.len() - value.trim_start_matches(is_ascii_space).len();
        let rewritten = self.url_core(core)?;
        Some(format!(
            "{}{rewritten}{}",
            &value[..lead],
            &value[lead + core.len()..]
        ))
    }

    fn url_core(&self, url: &str) -> Option<String> {
        let rewritten = if let Some(rest) = url.strip_prefix("//") {
            let (authority, tail) = split_authority(rest);
            if self.public.host.is_empty() {
                return None;
            }
            // The server speaks plain http (ServerUrl refuses https), so that is the scheme its
            // scheme-relative references were written for.
            if !self.is_backend(authority, "http") {
                return None;
            }
            format!("//{}{}", self.public.host, self.map_path(tail))
        } else if url.starts_with('/') {
            self.map_path(url)
        } else {
            let (scheme, rest) = split_scheme(url)?;
            let scheme = if scheme.eq_ignore_ascii_case("http") {
                "http"
            } else if scheme.eq_ignore_ascii_case("https") {
                "https"
            } else {
                return None;
            };
            let (authority, tail) = split_authority(rest.strip_prefix("//")?);
            // An HTTP/1.0 client without Host: no public host to point at.
            if self.public.host.is_empty() || !self.is_backend(authority, scheme) {
                return None;
            }
            format!(
                "{}://{}{}",
                self.public.scheme,
                self.public.host,
                self.map_path(tail)
            )
        };
        (rewritten != url).then_some(rewritten)
    }

    /// A `Refresh` value ("5; url=/x", "0;URL='http://backend/x'", "3, /x"): the URL part goes
    /// through `url`, everything else is kept byte for byte. Parsed like HTML's declarative
    /// refresh (the `url=` label is optional, quotes are stripped).
    pub fn refresh(&self, value: &str) -> Option<String> {
        let bytes = value.as_bytes();
        let skip_space = |mut at: usize| {
            while at < bytes.len() && is_ascii_space(char::from(bytes[at])) {
                at += 1;
            }
            at
        };
        let mut at = skip_space(0);
        let time_start = at;
        while at < bytes.len() && (bytes[at].is_ascii_digit() || bytes[at] == b'.') {
            at += 1;
        }
        if at == time_start {
            return None;
        }
        at = skip_space(at);
        if at >= bytes.len() || !matches!(bytes[at], b';' | b',') {
            return None;
        }
        at = skip_space(at + 1);
        if bytes.len() >= at + 3 && bytes[at..at + 3].eq_ignore_ascii_case(b"url") {
            let equals = skip_space(at + 3);
            if bytes.get(equals) == Some(&b'=') {
                at = skip_space(equals + 1);
            }
        }
        let (start, end) = match bytes.get(at) {
            Some(&quote @ (b'\'' | b'"')) => {
                let start = at + 1;
                let end = value[start..]
                    .find(char::from(quote))
                    .map_or(value.len(), |offset| start + offset);
                (start, end)
            }
            _ => (at, value.len()),
        };
        let rewritten = self.url(&value[start..end])?;
        Some(format!("{}{rewritten}{}", &value[..start], &value[end..]))
    }

    /// An HTML `srcset` value ("/a.png 1x, http://backend/b.png 2x"): each candidate's URL goes
    /// through `url`; descriptors, commas and spacing are kept. URLs are split as HTML does (at
    /// whitespace, so "data:...,..." stays whole).
    pub fn srcset(&self, value: &str) -> Option<String> {
        let bytes = value.as_bytes();
        let mut out = String::with_capacity(value.len() + 16);
        let mut changed = false;
        let mut at = 0;
        loop {
            let start = at;
            while at < bytes.len() && (bytes[at] == b',' || is_ascii_space(char::from(bytes[at]))) {
                at += 1;
            }
            out.push_str(&value[start..at]);
            if at >= bytes.len() {
                break;
            }
            let url_start = at;
            while at < bytes.len() && !is_ascii_space(char::from(bytes[at])) {
                at += 1;
            }
            let token = &value[url_start..at];
            let url = token.trim_end_matches(',');
            match self.url(url) {
                Some(rewritten) => {
                    out.push_str(&rewritten);
                    changed = true;
                }
                None => out.push_str(url),
            }
            out.push_str(&token[url.len()..]);
            if url.len() < token.len() {
                // A URL ending in ',' has no descriptors.
                continue;
            }
            let descriptors = at;
            let mut depth = 0usize;
            while at < bytes.len() {
                match bytes[at] {
                    b'(' => depth += 1,
                    b')' => depth = depth.saturating_sub(1),
                    b',' if depth == 0 => break,
                    _ => {}
                }
                at += 1;
            }
            out.push_str(&value[descriptors..at]);
        }
        changed.then_some(out)
    }

    /// One `Set-Cookie` value: a `Path` not under the public prefix gets it
    /// (`ProxyPassReverseCookiePath`); a `Domain` naming the server's host gets the public
    /// host's name (`ProxyPassReverseCookieDomain`), or is removed when the public host is an IP
    /// address (a Domain of an IP literal is refused or host-only in browsers; without it the
    /// cookie is host-only for the public address, the closest to what the server meant).
    /// Everything else (name, value, other attributes, order, spacing, case) is kept byte for
    /// byte.
    pub fn set_cookie(&self, value: &str) -> Option<String> {
        let mut out = String::new();
        // `value[..cursor]` is in `out` or dropped.
        let mut cursor = 0;
        for attribute in set_cookie::attributes(value.as_bytes()) {
            let Some(range) = attribute.value else {
                continue;
            };
            let current = &value[range.clone()];
            let replacement = match &value[attribute.name] {
                name if name.eq_ignore_ascii_case("path") && self.cookie_paths => {
                    self.cookie_path(current).map(Some)
                }
                name if name.eq_ignore_ascii_case("domain") => {
                    self.mapped_domain(current).map(Some).or_else(|| {
                        self.cookie_paths
                            .then(|| self.cookie_domain(current))
                            .flatten()
                    })
                }
                _ => None,
            };
            match replacement {
                None => {}
                // The attribute goes with the ';' before it.
                Some(None) => {
                    out.push_str(&value[cursor..attribute.segment.start - 1]);
                    cursor = attribute.segment.end;
                }
                Some(Some(new)) => {
                    out.push_str(&value[cursor..range.start]);
                    out.push_str(&new);
                    cursor = range.end;
                }
            }
        }
        if cursor == 0 {
            return None;
        }
        out.push_str(&value[cursor..]);
        Some(out)
    }

    /// Applies `url` to `Location`, `Content-Location` and `URI`, and `refresh` to `Refresh`
    /// (when `location`), and `set_cookie` to every `Set-Cookie` (when `cookies`), in place:
    /// header order and repeated values are kept. Values that are not UTF-8, or whose rewrite
    /// would not be a valid header value, are left alone. Returns how many values changed.
    pub fn response_headers(
        &self,
        headers: &mut HeaderMap,
        location: bool,
        cookies: bool,
    ) -> usize {
        let mut changed = 0;
        if location {
            // The headers `LOCATION_HEADERS` lists.
            changed += rewrite_values(headers, header::LOCATION, |v| self.url(v));
            changed += rewrite_values(headers, header::CONTENT_LOCATION, |v| self.url(v));
            changed += rewrite_values(headers, URI, |v| self.url(v));
            changed += rewrite_values(headers, header::REFRESH, |v| self.refresh(v));
        }
        if cookies {
            changed += rewrite_values(headers, header::SET_COOKIE, |v| self.set_cookie(v));
        }
        changed
    }

    fn prefix(&self) -> &str {
        self.public.prefix.trim_end_matches('/')
    }

    /// `tail` is what follows an authority ("", "/x?q#f", "?q") or a path-absolute reference.
    fn map_path(&self, tail: &str) -> String {
        let prefix = self.prefix();
        if prefix.is_empty() {
            return tail.to_string();
        }
        let split = tail.find(['?', '#']).unwrap_or(tail.len());
        let (path, rest) = tail.split_at(split);
        let path = if path.is_empty() { "/" } else { path };
        if is_under(path, prefix) {
            format!("{path}{rest}")
        } else {
            format!("{prefix}{path}{rest}")
        }
    }

    fn cookie_path(&self, path: &str) -> Option<String> {
        let prefix = self.prefix();
        (!prefix.is_empty() && path.starts_with('/') && !is_under(path, prefix))
            .then(|| format!("{prefix}{path}"))
    }

    /// The `rewrite_cookie_domain` replacement of `domain` (a leading dot kept), if any.
    fn mapped_domain(&self, domain: &str) -> Option<String> {
        let (dot, name) = match domain.strip_prefix('.') {
            Some(name) => (".", name),
            None => ("", domain),
        };
        self.cookie_domains
            .iter()
            .find(|(from, _)| from.eq_ignore_ascii_case(name))
            .map(|(_, to)| format!("{dot}{to}"))
    }

    /// `None`: keep; `Some(None)`: remove the attribute; `Some(Some(domain))`: replace.
    fn cookie_domain(&self, domain: &str) -> Option<Option<String>> {
        let (dot, name) = match domain.strip_prefix('.') {
            Some(name) => (".", name),
            None => ("", domain),
        };
        let name = name
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(name);
        let (public_host, _) = parse_authority(&self.public.host)?;
        let names_server = self.backend.authorities.iter().any(|authority| {
            parse_authority(authority).is_some_and(|(host, _)| hosts_equal(host, name))
        });
        if !names_server || hosts_equal(public_host, name) {
            return None;
        }
        if public_host.parse::<Ipv4Addr>().is_ok() || public_host.parse::<Ipv6Addr>().is_ok() {
            Some(None)
        } else {
            Some(Some(format!("{dot}{public_host}")))
        }
    }

    /// Whether `authority` (from a URL of `scheme`) is one of the server's.
    fn is_backend(&self, authority: &str, scheme: &str) -> bool {
        let Some((host, port)) = parse_authority(authority) else {
            return false;
        };
        let default = if scheme == "https" { 443 } else { 80 };
        self.backend.authorities.iter().any(|candidate| {
            parse_authority(candidate).is_some_and(|(server_host, server_port)| {
                hosts_equal(host, server_host)
                    && match server_port {
                        Some(server_port) => port.unwrap_or(default) == server_port,
                        None => port.is_none_or(|port| port == default),
                    }
            })
        })
    }
}

fn rewrite_values(
    headers: &mut HeaderMap,
    name: HeaderName,
    rewrite: impl Fn(&str) -> Option<String>,
) -> usize {
    let Entry::Occupied(mut entry) = headers.entry(name) else {
        return 0;
    };
    let mut changed = 0;
    for value in entry.iter_mut() {
        // UTF-8 rather than `to_str` (visible ASCII only): servers do send raw UTF-8 paths.
        let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
            continue;
        };
        let Some(rewritten) = rewrite(text) else {
            continue;
        };
        let Ok(mut new_value) = HeaderValue::from_bytes(rewritten.as_bytes()) else {
            continue;
        };
        new_value.set_sensitive(value.is_sensitive());
        *value = new_value;
        changed += 1;
    }
    changed
}

/// ASCII whitespace as HTML and URL parsers strip it around URLs.
fn is_ascii_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

/// Whether `path` is `prefix` or below it (whole segments: "/app" is not under "/ap").
fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// "scheme:rest" per RFC 3986 §3.1; `None` when `url` has no valid scheme (a relative reference).
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// Splits what follows "//" into the authority and the rest (path, query, fragment).
fn split_authority(rest: &str) -> (&str, &str) {
    rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()))
}

/// A URL's `host[:port]` → (host without IPv6 brackets, port; an empty port is the scheme's
/// default). `None` for userinfo (never the server's own address), an empty host or a bad port.
fn parse_authority(written: &str) -> Option<(&str, Option<u16>)> {
    let written = authority::parse_in_url(written).ok()?;
    Some((written.address(), written.port))
}

/// Host names compare case-insensitively, IPv6 literals by address ("2001:2::5" is
/// "2001:0002:0:0::5").
fn hosts_equal(a: &str, b: &str) -> bool {
    match (a.parse::<Ipv6Addr>(), b.parse::<Ipv6Addr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.eq_ignore_ascii_case(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(scheme: &'static str, host: &str, prefix: &str, authorities: &[&str]) -> ReverseMap {
        ReverseMap::new(
            PublicUrl {
                scheme,
                host: host.to_string(),
                prefix: prefix.to_string(),
            },
            BackendUrl {
                authorities: authorities.iter().map(|a| a.to_string()).collect(),
            },
        )
    }

    #[test]
    fn rewritable_headers_are_found_only_when_their_rewrite_is_on() {
        let with = |names: &[&str]| {
            let mut headers = HeaderMap::new();
            for name in names {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_static("/x"),
                );
            }
            headers
        };
        let plain = with(&["content-type", "content-length", "date"]);
        assert!(!has_rewritable_headers(&plain, true, true));
        for name in ["location", "content-location", "uri", "refresh"] {
            let headers = with(&["content-type", name]);
            assert!(has_rewritable_headers(&headers, true, false), "{name}");
            assert!(has_rewritable_headers(&headers, true, true), "{name}");
            assert!(!has_rewritable_headers(&headers, false, true), "{name}");
        }
        let cookie = with(&["set-cookie", "content-type"]);
        assert!(has_rewritable_headers(&cookie, false, true));
        assert!(!has_rewritable_headers(&cookie, true, false));
        assert!(!has_rewritable_headers(&cookie, false, false));
    }

    /// The usual deployment: https://www.example.test/webapps/ → http://198.18.1.2:8000/.
    fn mounted() -> ReverseMap {
        map(
            "https",
            "www.example.test",
            "/webapps",
            &["198.18.1.2:8000"],
        )
    }

    /// The same app at the root of the public host.
    fn root() -> ReverseMap {
        map("https", "www.example.test", "", &["198.18.1.2:8000"])
    }

    fn ipv6_backend() -> ReverseMap {
        map("https", "[2001:2::10]:8443", "/app", &["[2001:2::5]:8000"])
    }

    /// preserve_host: the server saw Host: www.example.test but was reached over plain http.
    fn preserved_host() -> ReverseMap {
        map(
            "https",
            "www.example.test",
            "",
            &["198.18.1.2:8000", "www.example.test"],
        )
    }

    /// A plain-http public listener on a non-default port, server on port 80.
    fn plain_http() -> ReverseMap {
        map("http", "www.example.test:8080", "", &["backend.internal"])
    }

    fn unix_socket() -> ReverseMap {
        map("https", "www.example.test", "/webapps/", &["localhost"])
    }

    #[test]
    fn urls_pointing_at_the_server_become_public() {
        let cases: &[(&str, ReverseMap, &str, Option<&str>)] = &[
            // Absolute URLs at the server.
            (
                "absolute backend URL",
                mounted(),
                "http://198.18.1.2:8000/login/?next=/a#top",
                Some("https://www.example.test/webapps/login/?next=/a#top"),
            ),
            (
                "absolute, no path",
                mounted(),
                "http://198.18.1.2:8000",
                Some("https://www.example.test/webapps/"),
            ),
            (
                "absolute, query only",
                mounted(),
                "http://198.18.1.2:8000?q=1",
                Some("https://www.example.test/webapps/?q=1"),
            ),
            (
                "absolute, root path",
                mounted(),
                "http://198.18.1.2:8000/",
                Some("https://www.example.test/webapps/"),
            ),
            (
                "absolute, already under the prefix",
                mounted(),
                "http://198.18.1.2:8000/webapps/x",
                Some("https://www.example.test/webapps/x"),
            ),
            (
                "absolute, exactly the prefix",
                mounted(),
                "http://198.18.1.2:8000/webapps",
                Some("https://www.example.test/webapps"),
            ),
            (
                "absolute, prefix-like segment",
                mounted(),
                "http://198.18.1.2:8000/webappsx/y",
                Some("https://www.example.test/webapps/webappsx/y"),
            ),
            (
                "scheme and host case-insensitive",
                mounted(),
                "HTTP://198.18.1.2:8000/x",
                Some("https://www.example.test/webapps/x"),
            ),
            (
                "https URL at the server's port",
                mounted(),
                "https://198.18.1.2:8000/x",
                Some("https://www.example.test/webapps/x"),
            ),
            (
                "no prefix",
                root(),
                "http://198.18.1.2:8000/a/b?c#d",
                Some("https://www.example.test/a/b?c#d"),
            ),
            // Ports.
            (
                "other port of the server's host",
                mounted(),
                "http://198.18.1.2:9000/x",
                None,
            ),
            (
                "server's host without its port",
                mounted(),
                "http://198.18.1.2/x",
                None,
            ),
            (
                "default port omitted on the server side",
                plain_http(),
                "http://backend.internal/x",
                Some("http://www.example.test:8080/x"),
            ),
            (
                "default port written out",
                plain_http(),
                "http://backend.internal:80/x",
                Some("http://www.example.test:8080/x"),
            ),
            (
                "empty port is the default",
                plain_http(),
                "http://backend.internal:/x",
                Some("http://www.example.test:8080/x"),
            ),
            (
                "https default port",
                plain_http(),
                "https://backend.internal:443/x",
                Some("http://www.example.test:8080/x"),
            ),
            (
                "port 80 under https is not default",
                plain_http(),
                "https://backend.internal:80/x",
                None,
            ),
            (
                "explicit :80 authority",
                map("https", "pub.test", "", &["backend.internal:80"]),
                "http://backend.internal/x",
                Some("https://pub.test/x"),
            ),
            // IPv6.
            (
                "IPv6 server",
                ipv6_backend(),
                "http://[2001:2::5]:8000/x",
                Some("https://[2001:2::10]:8443/app/x"),
            ),
            (
                "IPv6 server, other spelling",
                ipv6_backend(),
                "http://[2001:0002:0:0::5]:8000/x",
                Some("https://[2001:2::10]:8443/app/x"),
            ),
            (
                "IPv6, other address",
                ipv6_backend(),
                "http://[2001:2::6]:8000/x",
                None,
            ),
            (
                "IPv6, other port",
                ipv6_backend(),
                "http://[2001:2::5]/x",
                None,
            ),
            // Other hosts and schemes.
            (
                "other host",
                mounted(),
                "https://cdn.example.test/x.js",
                None,
            ),
            (
                "public host already",
                mounted(),
                "https://www.example.test/x",
                None,
            ),
            ("userinfo", mounted(), "http://user@198.18.1.2:8000/x", None),
            ("mailto", mounted(), "mailto:admin@198.18.1.2", None),
            ("javascript", mounted(), "javascript:void(0)", None),
            ("http without //", mounted(), "http:/x", None),
            // Scheme-relative.
            (
                "scheme-relative backend",
                mounted(),
                "//198.18.1.2:8000/x?y",
                Some("//www.example.test/webapps/x?y"),
            ),
            (
                "scheme-relative other host",
                mounted(),
                "//cdn.example.test/x",
                None,
            ),
            // Path-absolute references.
            (
                "path-absolute with prefix",
                mounted(),
                "/accounts/login/?next=/",
                Some("/webapps/accounts/login/?next=/"),
            ),
            ("path-absolute root", mounted(), "/", Some("/webapps/")),
            (
                "path-absolute already prefixed",
                mounted(),
                "/webapps/static/a.css",
                None,
            ),
            (
                "path-absolute exactly the prefix, with query",
                mounted(),
                "/webapps?x=1",
                None,
            ),
            (
                "path-absolute fragment kept",
                mounted(),
                "/x#/webapps",
                Some("/webapps/x#/webapps"),
            ),
            (
                "path-absolute without prefix",
                root(),
                "/accounts/login/",
                None,
            ),
            (
                "trailing slash in the prefix is ignored",
                unix_socket(),
                "/x",
                Some("/webapps/x"),
            ),
            (
                "no public host (HTTP/1.0): absolute left",
                map("https", "", "/webapps", &["198.18.1.2:8000"]),
                "http://198.18.1.2:8000/x",
                None,
            ),
            (
                "no public host (HTTP/1.0): path still mapped",
                map("https", "", "/webapps", &["198.18.1.2:8000"]),
                "/x",
                Some("/webapps/x"),
            ),
            // Relative references and junk.
            ("relative path", mounted(), "x/y", None),
            ("dot-dot", mounted(), "../x", None),
            ("query only", mounted(), "?page=2", None),
            ("fragment only", mounted(), "#top", None),
            ("empty", mounted(), "", None),
            ("whitespace only", mounted(), "  ", None),
            (
                "surrounding whitespace kept",
                mounted(),
                " /x\n",
                Some(" /webapps/x\n"),
            ),
            // preserve_host: the public host over http, seen by the server.
            (
                "preserve_host, public host over http",
                preserved_host(),
                "http://www.example.test/x",
                Some("https://www.example.test/x"),
            ),
            (
                "preserve_host, public host over https",
                preserved_host(),
                "https://www.example.test/x",
                None,
            ),
            (
                "preserve_host, public host other port",
                preserved_host(),
                "http://www.example.test:8000/x",
                None,
            ),
            (
                "preserve_host, server address",
                preserved_host(),
                "http://198.18.1.2:8000/x",
                Some("https://www.example.test/x"),
            ),
            // Unix sockets: the server believes it is localhost.
            (
                "unix socket server",
                unix_socket(),
                "http://localhost/x",
                Some("https://www.example.test/webapps/x"),
            ),
            (
                "unix socket, LOCALHOST",
                unix_socket(),
                "http://LOCALHOST:80/",
                Some("https://www.example.test/webapps/"),
            ),
        ];
        for (name, map, input, expected) in cases {
            assert_eq!(
                map.url(input).as_deref(),
                *expected,
                "{name}: url({input:?})"
            );
        }
    }

    #[test]
    fn refresh_rewrites_only_its_url() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("url=", "5; url=/x", Some("5; url=/webapps/x")),
            (
                "URL= absolute, single quotes",
                "0;URL='http://198.18.1.2:8000/x'",
                Some("0;URL='https://www.example.test/webapps/x'"),
            ),
            (
                "double quotes, trailing text kept",
                "1; url=\"/x\" ",
                Some("1; url=\"/webapps/x\" "),
            ),
            (
                "spaces around =",
                "2 ; url = /x",
                Some("2 ; url = /webapps/x"),
            ),
            ("comma, no label", "3, /x", Some("3, /webapps/x")),
            ("decimal time", "0.5;url=/x", Some("0.5;url=/webapps/x")),
            ("other host", "0; url=https://elsewhere.test/", None),
            ("already prefixed", "0; url=/webapps/", None),
            ("reload only", "5", None),
            ("no time", "url=/x", None),
            (
                "unterminated quote",
                "0; url='/x",
                Some("0; url='/webapps/x"),
            ),
        ];
        let map = mounted();
        for (name, input, expected) in cases {
            assert_eq!(
                map.refresh(input).as_deref(),
                *expected,
                "{name}: refresh({input:?})"
            );
        }
    }

    #[test]
    fn srcset_rewrites_each_candidate() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "two candidates",
                "/a.png 1x, http://198.18.1.2:8000/b.png 2x",
                Some("/webapps/a.png 1x, https://www.example.test/webapps/b.png 2x"),
            ),
            ("no descriptors", "/a.png", Some("/webapps/a.png")),
            (
                "url ending in a comma has no descriptors",
                "/a.png, /b.png 2x",
                Some("/webapps/a.png, /webapps/b.png 2x"),
            ),
            (
                "a comma inside a url does not split it",
                "/a.png,/b.png 2x",
                Some("/webapps/a.png,/b.png 2x"),
            ),
            (
                "data URL with a comma kept whole",
                "data:image/png;base64,AAAA 1x, /b.png 2x",
                Some("data:image/png;base64,AAAA 1x, /webapps/b.png 2x"),
            ),
            (
                "width descriptors and odd spacing",
                "  /a.png 100w ,\n/b.png 200w",
                Some("  /webapps/a.png 100w ,\n/webapps/b.png 200w"),
            ),
            (
                "nothing to change",
                "a.png 1x, https://cdn.test/b.png 2x",
                None,
            ),
        ];
        let map = mounted();
        for (name, input, expected) in cases {
            assert_eq!(
                map.srcset(input).as_deref(),
                *expected,
                "{name}: srcset({input:?})"
            );
        }
    }

    #[test]
    fn explicit_cookie_domains_are_replaced_with_or_without_path_rewriting() {
        let mut map = ReverseMap::new(
            PublicUrl {
                scheme: "https",
                host: "www.example.test".into(),
                prefix: "/webapps".into(),
            },
            BackendUrl {
                authorities: vec!["198.18.1.2:8000".into()],
            },
        );
        map.cookie_domains = vec![("app.internal".into(), "example.test".into())];
        assert_eq!(
            map.set_cookie("a=b; Domain=.App.Internal; Path=/x")
                .as_deref(),
            Some("a=b; Domain=.example.test; Path=/webapps/x")
        );
        map.cookie_paths = false;
        assert_eq!(
            map.set_cookie("a=b; Domain=app.internal; Path=/x")
                .as_deref(),
            Some("a=b; Domain=example.test; Path=/x"),
            "only the domain, as ProxyPassReverseCookieDomain alone does"
        );
        assert_eq!(map.set_cookie("a=b; Domain=other.test; Path=/x"), None);
    }

    #[test]
    fn set_cookie_path_and_domain() {
        let mounted_with_name = map(
            "https",
            "www.example.test:8443",
            "/webapps",
            &["app1.internal:8000", "[2001:2::5]:8000"],
        );
        let ip_public = map("http", "198.18.0.10", "", &["app1.internal:8000"]);
        let cases: &[(&str, &ReverseMap, &str, Option<&str>)] = &[
            (
                "Path=/",
                &mounted_with_name,
                "sessionid=abc; Path=/; HttpOnly",
                Some("sessionid=abc; Path=/webapps/; HttpOnly"),
            ),
            (
                "Path below root",
                &mounted_with_name,
                "a=b; path=/admin; Secure",
                Some("a=b; path=/webapps/admin; Secure"),
            ),
            (
                "Path already prefixed",
                &mounted_with_name,
                "a=b; Path=/webapps/x",
                None,
            ),
            (
                "Path exactly the prefix",
                &mounted_with_name,
                "a=b; Path=/webapps",
                None,
            ),
            (
                "Path not absolute is left",
                &mounted_with_name,
                "a=b; Path=x",
                None,
            ),
            ("no Path", &mounted_with_name, "a=b; HttpOnly", None),
            (
                "spacing and case kept",
                &mounted_with_name,
                "a=b;PATH = /x ;Max-Age=5",
                Some("a=b;PATH = /webapps/x ;Max-Age=5"),
            ),
            (
                "value with = and Path-looking text",
                &mounted_with_name,
                "a=Path=/; Path=/",
                Some("a=Path=/; Path=/webapps/"),
            ),
            (
                "Domain of the server",
                &mounted_with_name,
                "a=b; Domain=app1.internal; Path=/",
                Some("a=b; Domain=www.example.test; Path=/webapps/"),
            ),
            (
                "Domain with a dot, case",
                &mounted_with_name,
                "a=b; domain=.APP1.internal",
                Some("a=b; domain=.www.example.test"),
            ),
            (
                "Domain of another host",
                &mounted_with_name,
                "a=b; Domain=internal",
                None,
            ),
            (
                "Domain already public",
                &mounted_with_name,
                "a=b; Domain=www.example.test",
                None,
            ),
            (
                "Domain of the IPv6 server",
                &mounted_with_name,
                "a=b; Domain=2001:2::5",
                Some("a=b; Domain=www.example.test"),
            ),
            (
                "Domain on an IP public host is removed",
                &ip_public,
                "a=b; Domain=app1.internal; Secure",
                Some("a=b; Secure"),
            ),
            (
                "no prefix, no domain: nothing",
                &ip_public,
                "a=b; Path=/",
                None,
            ),
            (
                "Expires comma kept",
                &mounted_with_name,
                "a=b; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/",
                Some("a=b; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/webapps/"),
            ),
        ];
        for (name, map, input, expected) in cases {
            assert_eq!(
                map.set_cookie(input).as_deref(),
                *expected,
                "{name}: set_cookie({input:?})"
            );
        }
    }

    #[test]
    fn response_headers_rewrites_in_place_and_counts() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static("http://198.18.1.2:8000/next/"),
        );
        headers.insert(header::CONTENT_LOCATION, HeaderValue::from_static("/doc"));
        headers.insert(URI, HeaderValue::from_static("<http://198.18.1.2:8000/u>"));
        headers.insert(header::REFRESH, HeaderValue::from_static("1; url=/r"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("a=1; Path=/"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("c=3; Path=/c"));
        let before: Vec<String> = headers.keys().map(|k| k.to_string()).collect();

        assert_eq!(mounted().response_headers(&mut headers, true, true), 5);

        let after: Vec<String> = headers.keys().map(|k| k.to_string()).collect();
        assert_eq!(after, before, "header order changed");
        assert_eq!(
            headers[header::LOCATION],
            "https://www.example.test/webapps/next/"
        );
        assert_eq!(headers[header::CONTENT_LOCATION], "/webapps/doc");
        // The URI header's "<...>" form is not a URL: left alone.
        assert_eq!(headers[URI], "<http://198.18.1.2:8000/u>");
        assert_eq!(headers[header::REFRESH], "1; url=/webapps/r");
        let cookies: Vec<&str> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect();
        assert_eq!(
            cookies,
            ["a=1; Path=/webapps/", "b=2", "c=3; Path=/webapps/c"]
        );
    }

    #[test]
    fn response_headers_follows_the_route_flags() {
        let original = || {
            let mut headers = HeaderMap::new();
            headers.insert(header::LOCATION, HeaderValue::from_static("/x"));
            headers.insert(header::SET_COOKIE, HeaderValue::from_static("a=1; Path=/"));
            headers
        };
        let mut headers = original();
        assert_eq!(mounted().response_headers(&mut headers, false, false), 0);
        assert_eq!(headers, original());

        let mut headers = original();
        assert_eq!(mounted().response_headers(&mut headers, false, true), 1);
        assert_eq!(headers[header::LOCATION], "/x");
        assert_eq!(headers[header::SET_COOKIE], "a=1; Path=/webapps/");

        let mut headers = original();
        assert_eq!(mounted().response_headers(&mut headers, true, false), 1);
        assert_eq!(headers[header::LOCATION], "/webapps/x");
        assert_eq!(headers[header::SET_COOKIE], "a=1; Path=/");
    }

    #[test]
    fn response_headers_keeps_utf8_paths_and_skips_other_bytes() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_bytes("/café".as_bytes()).expect("obs-text"),
        );
        headers.insert(
            header::CONTENT_LOCATION,
            HeaderValue::from_bytes(b"/caf\xe9").expect("obs-text"),
        );
        assert_eq!(mounted().response_headers(&mut headers, true, true), 1);
        assert_eq!(
            headers[header::LOCATION].as_bytes(),
            "/webapps/café".as_bytes()
        );
        assert_eq!(headers[header::CONTENT_LOCATION].as_bytes(), b"/caf\xe9");
    }

    #[test]
    fn the_public_url_comes_from_the_client_view() {
        use crate::headers::trust::Scheme;
        use std::net::{IpAddr, Ipv4Addr};
        let client = IpAddr::V4(Ipv4Addr::new(198, 18, 9, 9));
        let view = |scheme, host: &str, prefix: Option<&str>| ClientView {
            client,
            chain: vec![client],
            scheme,
            host: host.to_string(),
            port: 443,
            prefix: prefix.map(ToString::to_string),
            trusted_peer: false,
        };
        for (view, stripped, (scheme, host, prefix)) in [
            (
                view(Scheme::Https, "www.example.test", None),
                None,
                ("https", "www.example.test", ""),
            ),
            (
                view(Scheme::Https, "www.example.test:443", None),
                Some("/webapps"),
                ("https", "www.example.test", "/webapps"),
            ),
            (
                view(Scheme::Https, "www.example.test:8443", None),
                Some("/webapps/"),
                ("https", "www.example.test:8443", "/webapps"),
            ),
            (
                view(Scheme::Http, "www.example.test:80", Some("/outer")),
                Some("/app"),
                ("http", "www.example.test", "/outer/app"),
            ),
            (
                view(Scheme::Http, "www.example.test:443", Some("/outer")),
                None,
                ("http", "www.example.test:443", "/outer"),
            ),
            (
                view(Scheme::Https, "[2001:2::1]:443", None),
                None,
                ("https", "[2001:2::1]", ""),
            ),
            (view(Scheme::Https, "", None), None, ("https", "", "")),
        ] {
            let public = PublicUrl::from_view(&view, stripped);
            assert_eq!(
                (public.scheme, public.host.as_str(), public.prefix.as_str()),
                (scheme, host, prefix),
                "{view:?} {stripped:?}"
            );
        }
    }
}
