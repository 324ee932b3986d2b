//! `host[:port]`: the one place a Host, an HTTP/2 `:authority`, a forwarded host or a URL's
//! authority is split into host and port, with one set of rules (RFC 9110 §7.2, RFC 3986
//! §3.2.2 and §3.2.3):
//! - an IPv6 literal is written in brackets and `Authority::host` keeps them: that is the form a
//!   Host header, a URL and the routing table compare. `Authority::address` gives it bare, for
//!   sockets, TLS SNI and cookie domains. A bare IPv6 address (several ':') is no authority.
//! - what is inside the brackets must be an IPv6 address (IPvFuture is not supported);
//! - a port is 1 to 5 ASCII digits naming 1 to 65535 (port 0 names no service);
//! - an empty port (`host:`) is refused by [`parse`]: a field value we are asked to trust must
//!   name the port it writes. A URL's authority may have one, and it then means the scheme's
//!   default (RFC 3986 §3.2.3): [`parse_in_url`] takes it that way.
//! - userinfo (`user@`) is refused: RFC 9110 §4.2.4 forbids it in http(s) URIs, a Host never
//!   carries it, and a URL with it is never one of our servers' addresses.
//!
//! Case is kept: hosts compare case-insensitively (RFC 3986 §3.2.2) and callers that index them
//! lowercase. Pure: no I/O.

use std::net::Ipv6Addr;

/// A split `host[:port]`, borrowing from the value it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    /// A reg-name, an IPv4 address, or an IPv6 literal with its brackets.
    pub host: &'a str,
    pub port: Option<u16>,
}

impl<'a> Authority<'a> {
    /// The host without the brackets of an IPv6 literal: what a socket, an SNI or a cookie's
    /// `Domain` compares.
    pub fn address(&self) -> &'a str {
        self.host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(self.host)
    }

    /// The IPv6 address of a bracketed literal.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        if self.host.starts_with('[') {
            self.address().parse().ok()
        } else {
            None
        }
    }
}

/// Why a value is not a `host[:port]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("has no host")]
    NoHost,
    #[error("has user information (user@)")]
    UserInfo,
    #[error("has an IPv6 address without its closing ']'")]
    UnclosedBracket,
    #[error("has no valid IPv6 address in its brackets")]
    BadIpv6,
    #[error("has text after its IPv6 address's ']'")]
    AfterBracket,
    #[error("has an IPv6 address without brackets")]
    UnbracketedIpv6,
    #[error("has a host that is not a name or an address")]
    BadName,
    #[error("must have a port between 1 and 65535 after ':'")]
    BadPort,
}

/// A field value's `host[:port]` (Host, `:authority`, X-Forwarded-Host): an empty port refused.
pub fn parse(value: &str) -> Result<Authority<'_>, AuthorityError> {
    split(value, false)
}

/// A URL's authority (what follows "//" up to the path): an empty port is the scheme's default
/// (RFC 3986 §3.2.3), so `port` is then `None`.
pub fn parse_in_url(value: &str) -> Result<Authority<'_>, AuthorityError> {
    split(value, true)
}

/// [`parse`], and a reg-name made only of letters, digits, '-', '.', '_' and '~' (RFC 3986
/// unreserved): percent-encoding and sub-delims are legal in URIs but in no real host name,
/// so a forwarded host carrying them is refused rather than passed to an application.
pub fn parse_host_field(value: &str) -> Result<Authority<'_>, AuthorityError> {
    let authority = parse(value)?;
    let unreserved = authority.host.starts_with('[')
        || authority
            .host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if unreserved {
        Ok(authority)
    } else {
        Err(AuthorityError::BadName)
    }
}

/// The host of a `host[:port]`, brackets kept ("[v6]:port" → "[v6]", as a URL needs them);
/// a value that is not an authority (a bare IPv6 address, a bad port) stays whole.
pub fn host_without_port(value: &str) -> &str {
    parse_in_url(value).map_or(value, |authority| authority.host)
}

/// The bare host of a `host[:port]`: no port, no IPv6 brackets ("[v6]:port" → "v6"); a value
/// that is not an authority stays whole.
pub fn bare_host(value: &str) -> &str {
    parse_in_url(value).map_or(value, |authority| authority.address())
}

/// One decimal port: 1 to 5 digits, 1 to 65535.
pub fn parse_port(text: &str) -> Option<u16> {
    if !(1..=5).contains(&text.len()) {
        return None;
    }
    // At most 5 digits: the value fits in a u32 before the range check.
    let mut port: u32 = 0;
    for b in text.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        port = port * 10 + u32::from(b - b'0');
    }
    u16::try_from(port).ok().filter(|&port| port != 0)
}

/// `host[:port]` as a Host value or URL writes it: an IPv6 address (bare or bracketed) in
/// brackets, the port left out when it is `default_port`.
pub fn format(host: &str, port: u16, default_port: u16) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == default_port {
        host
    } else {
        format!("{host}:{port}")
    }
}

fn split(value: &str, empty_port_is_default: bool) -> Result<Authority<'_>, AuthorityError> {
    // Byte searches, not `char` patterns: this runs several times per request on values of a
    // few bytes, where the `char` searcher's setup cost more than the search (callgrind).
    if value.as_bytes().contains(&b'@') {
        return Err(AuthorityError::UserInfo);
    }
    let (host, port) = if let Some(inside) = value.strip_prefix('[') {
        let (address, after) = inside
            .split_once(']')
            .ok_or(AuthorityError::UnclosedBracket)?;
        address
            .parse::<Ipv6Addr>()
            .map_err(|_| AuthorityError::BadIpv6)?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or(AuthorityError::AfterBracket)?,
            ),
        };
        (&value[..address.len() + 2], port)
    } else {
        // ':' is ASCII, so the split is on a character boundary.
        let (host, port) = match value.bytes().position(|b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        };
        if port.is_some_and(|port| port.as_bytes().contains(&b':')) {
            return Err(AuthorityError::UnbracketedIpv6);
        }
        if host.is_empty() {
            return Err(AuthorityError::NoHost);
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some("") if empty_port_is_default => None,
        Some(port) => Some(parse_port(port).ok_or(AuthorityError::BadPort)?),
    };
    Ok(Authority { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_pair(value: &str) -> Option<(&str, Option<u16>)> {
        parse(value).ok().map(|a| (a.host, a.port))
    }

    /// RFC 9110 §7.2 `Host = uri-host [ ":" port ]`, RFC 3986 §3.2.2 IP-literal in brackets.
    #[test]
    fn hosts_and_ports_rfc9110_7_2() {
        let cases = [
            ("www.example.test", Some(("www.example.test", None))),
            ("WWW.Example.TEST", Some(("WWW.Example.TEST", None))),
            (
                "www.example.test:8443",
                Some(("www.example.test", Some(8443))),
            ),
            ("198.18.0.1:80", Some(("198.18.0.1", Some(80)))),
            ("[2001:2::1]", Some(("[2001:2::1]", None))),
            ("[2001:2::1]:443", Some(("[2001:2::1]", Some(443)))),
            ("[::FFFF:1.2.3.4]:1", Some(("[::FFFF:1.2.3.4]", Some(1)))),
            ("a.test:65535", Some(("a.test", Some(65535)))),
        ];
        for (value, expected) in cases {
            assert_eq!(split_pair(value), expected, "host {value:?}");
        }
    }

    #[test]
    fn what_is_not_an_authority() {
        let cases = [
            ("", AuthorityError::NoHost),
            (":80", AuthorityError::NoHost),
            ("a.test:", AuthorityError::BadPort),
            ("a.test:0", AuthorityError::BadPort),
            ("a.test:65536", AuthorityError::BadPort),
            ("a.test:000080", AuthorityError::BadPort),
            ("a.test:8o", AuthorityError::BadPort),
            ("a.test:+80", AuthorityError::BadPort),
            ("[2001:2::1]:", AuthorityError::BadPort),
            ("[2001:2::zz]", AuthorityError::BadIpv6),
            ("[]", AuthorityError::BadIpv6),
            ("[2001:2::1", AuthorityError::UnclosedBracket),
            ("[::1]x", AuthorityError::AfterBracket),
            ("2001:2::1", AuthorityError::UnbracketedIpv6),
            ("user@a.test", AuthorityError::UserInfo),
        ];
        for (value, expected) in cases {
            assert_eq!(parse(value), Err(expected), "host {value:?}");
        }
    }

    /// RFC 3986 §3.2.3: "http://host:/" has the scheme's default port.
    #[test]
    fn an_empty_port_in_a_url_is_the_default_rfc3986_3_2_3() {
        assert_eq!(
            parse_in_url("backend.internal:"),
            Ok(Authority {
                host: "backend.internal",
                port: None
            })
        );
        assert_eq!(parse_in_url("[::1]:").map(|a| a.port), Ok(None));
        assert_eq!(parse_in_url("a.test:0"), Err(AuthorityError::BadPort));
    }

    /// Forwarded hosts: RFC 3986 unreserved characters only.
    #[test]
    fn host_fields_are_names() {
        let cases = [
            ("www.example.test", true),
            ("a_b-c~d.test:8080", true),
            ("[2001:2::1]:443", true),
            ("a.test,b.test", false),
            ("a b", false),
            ("a%2e.test", false),
            ("", false),
        ];
        for (value, valid) in cases {
            assert_eq!(parse_host_field(value).is_ok(), valid, "host {value:?}");
        }
    }

    /// What the header trust accepts as a forwarded host (X-Forwarded-Host, Forwarded host=).
    #[test]
    fn hosts_are_split_and_checked() {
        let cases = [
            ("www.example.test", Some(("www.example.test", None))),
            (
                "www.example.test:8443",
                Some(("www.example.test", Some(8443))),
            ),
            ("198.18.0.1:80", Some(("198.18.0.1", Some(80)))),
            ("[2001:2::1]", Some(("[2001:2::1]", None))),
            ("[2001:2::1]:443", Some(("[2001:2::1]", Some(443)))),
            ("", None),
            ("a.test:", None),
            ("a.test:0", None),
            ("a.test:65536", None),
            ("a.test,b.test", None),
            ("[2001:2::zz]", None),
            ("a b", None),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse_host_field(value).ok().map(|a| (a.host, a.port)),
                expected,
                "host {value:?}"
            );
        }
    }

    #[test]
    fn host_without_port_keeps_brackets() {
        assert_eq!(host_without_port("a.test:8443"), "a.test");
        assert_eq!(host_without_port("a.test"), "a.test");
        assert_eq!(host_without_port("[2001:2::1]:8443"), "[2001:2::1]");
        assert_eq!(host_without_port("[2001:2::1]"), "[2001:2::1]");
        assert_eq!(host_without_port("2001:2::1"), "2001:2::1");
        assert_eq!(host_without_port("a.test:x"), "a.test:x");
    }

    #[test]
    fn bare_host_drops_port_and_brackets() {
        for (host, expected) in [
            ("www.example.test", "www.example.test"),
            ("www.example.test:8443", "www.example.test"),
            ("198.18.1.2:80", "198.18.1.2"),
            ("[2001:db8::1]:8443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
        ] {
            assert_eq!(bare_host(host), expected, "{host}");
        }
    }

    #[test]
    fn addresses_and_ipv6() {
        let v6 = parse("[2001:DB8::1]:80").unwrap();
        assert_eq!(v6.address(), "2001:DB8::1");
        assert_eq!(v6.ipv6(), Some("2001:db8::1".parse().unwrap()));
        let name = parse("Ex.Test").unwrap();
        assert_eq!(name.address(), "Ex.Test");
        assert_eq!(name.ipv6(), None);
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("443"), Some(443));
        assert_eq!(parse_port("00443"), Some(443));
        for bad in ["", "0", "65536", "000443", "-1", "4 3"] {
            assert_eq!(parse_port(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formatting_brackets_ipv6_and_omits_the_default_port() {
        assert_eq!(format("a.test", 80, 80), "a.test");
        assert_eq!(format("a.test", 8080, 80), "a.test:8080");
        assert_eq!(format("2001:2::5", 8000, 80), "[2001:2::5]:8000");
        assert_eq!(format("[2001:2::5]", 443, 443), "[2001:2::5]");
    }
}
