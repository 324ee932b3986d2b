//! RFC 7239 `Forwarded`: parsing every field value of a request into elements, and formatting
//! the elements we send. Pure syntax: which elements to believe is trust.rs's business.
//!
//! Strictness: any syntax error makes the whole header unusable (the caller treats it as
//! absent), since a half-read chain could name the wrong client. Only visible ASCII, space and
//! tab are accepted (no obs-text). Parameters other than `for`, `by`, `proto` and `host` are
//! syntax-checked and then dropped: we never forward them. Empty list elements (`a, , b`) and
//! empty pairs (`for=a;;proto=http`) are skipped, as the list and element grammars allow.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::http::token::is_tchar;

/// The name part of a node (RFC 7239 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeName {
    Ip(IpAddr),
    /// `_` followed by letters, digits, '.', '_' or '-' (§6.3): a name only its proxy understands.
    Obfuscated(String),
    /// `unknown` (§6.2): the proxy does not know or does not tell.
    Unknown,
}

/// The optional port part of a node (RFC 7239 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePort {
    Number(u16),
    Obfuscated(String),
}

/// A `for=` or `by=` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: NodeName,
    pub port: Option<NodePort>,
}

impl Node {
    pub fn from_ip(ip: IpAddr) -> Node {
        Node {
            name: NodeName::Ip(ip),
            port: None,
        }
    }

    /// The address, when the node names one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self.name {
            NodeName::Ip(ip) => Some(ip),
            NodeName::Obfuscated(_) | NodeName::Unknown => None,
        }
    }
}

/// One element: what one proxy says about the request it received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedElement {
    pub for_node: Option<Node>,
    pub by: Option<Node>,
    /// Lowercase URI scheme.
    pub proto: Option<String>,
    /// `host[:port]`, syntax-checked by [`crate::http::authority::parse_host_field`].
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardedError {
    #[error("no element")]
    Empty,
    #[error("byte {0:#04x} is not allowed in a field value")]
    BadByte(u8),
    #[error("expected a parameter name at offset {0}")]
    ExpectedName(usize),
    #[error("expected '=' after parameter {0:?}")]
    ExpectedEquals(String),
    #[error("parameter {0:?} has no value")]
    EmptyValue(String),
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("unexpected character at offset {0}")]
    Unexpected(usize),
    #[error("parameter {0:?} appears twice in one element")]
    DuplicateParameter(String),
    #[error("{0:?} is not a node")]
    BadNode(String),
    #[error("{0:?} is not a host")]
    BadHost(String),
    #[error("{0:?} is not a URI scheme")]
    BadProto(String),
}

/// Parses all `Forwarded` field values of a message, in order, as one list (RFC 9110 §5.3:
/// several fields equal their values joined by ',').
pub fn parse<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<ForwardedElement>, ForwardedError> {
    let mut joined = Vec::new();
    for (index, value) in values.into_iter().enumerate() {
        if index > 0 {
            joined.push(b',');
        }
        joined.extend_from_slice(value);
    }
    if let Some(&bad) = joined
        .iter()
        .find(|&&byte| !(byte == b'\t' || (0x20..=0x7e).contains(&byte)))
    {
        return Err(ForwardedError::BadByte(bad));
    }
    let mut parser = Parser {
        input: &joined,
        at: 0,
    };
    let mut elements = Vec::new();
    loop {
        parser.skip_whitespace();
        match parser.peek() {
            None => break,
            Some(b',') => parser.at += 1,
            Some(_) => elements.push(parser.element()?),
        }
    }
    if elements.is_empty() {
        return Err(ForwardedError::Empty);
    }
    Ok(elements)
}

struct Parser<'a> {
    input: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn token(&mut self) -> &str {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        // tchar bytes are ASCII, so the slice is valid UTF-8.
        std::str::from_utf8(&self.input[start..self.at]).unwrap_or_default()
    }

    /// After the opening quote; returns the unescaped content.
    fn quoted_string(&mut self) -> Result<String, ForwardedError> {
        let mut content = String::new();
        loop {
            match self.peek() {
                None => return Err(ForwardedError::UnterminatedQuote),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(content);
                }
                Some(b'\\') => {
                    let escaped = self
                        .input
                        .get(self.at + 1)
                        .ok_or(ForwardedError::UnterminatedQuote)?;
                    content.push(char::from(*escaped));
                    self.at += 2;
                }
                Some(byte) => {
                    content.push(char::from(byte));
                    self.at += 1;
                }
            }
        }
    }

    /// One element, up to (not including) the ',' that ends it.
    fn element(&mut self) -> Result<ForwardedElement, ForwardedError> {
        let mut element = ForwardedElement::default();
        let mut seen: Vec<String> = Vec::new();
        loop {
            self.skip_whitespace();
            match self.peek() {
                None | Some(b',') => return Ok(element),
                Some(b';') => {
                    self.at += 1;
                    continue;
                }
                Some(_) => {}
            }
            let name_at = self.at;
            let name = self.token().to_ascii_lowercase();
            if name.is_empty() {
                return Err(ForwardedError::ExpectedName(name_at));
            }
            if self.peek() != Some(b'=') {
                return Err(ForwardedError::ExpectedEquals(name));
            }
            self.at += 1;
            let value = if self.peek() == Some(b'"') {
                self.at += 1;
                self.quoted_string()?
            } else {
                self.token().to_owned()
            };
            if value.is_empty() {
                return Err(ForwardedError::EmptyValue(name));
            }
            if seen.contains(&name) {
                return Err(ForwardedError::DuplicateParameter(name));
            }
            match name.as_str() {
                "for" => element.for_node = Some(parse_node(&value)?),
                "by" => element.by = Some(parse_node(&value)?),
                "proto" => element.proto = Some(parse_proto(&value)?),
                "host" => {
                    if crate::http::authority::parse_host_field(&value).is_err() {
                        return Err(ForwardedError::BadHost(value));
                    }
                    element.host = Some(value);
                }
                _ => {}
            }
            seen.push(name);
            self.skip_whitespace();
            match self.peek() {
                None | Some(b',' | b';') => {}
                Some(_) => return Err(ForwardedError::Unexpected(self.at)),
            }
        }
    }
}

/// RFC 3986 §3.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`, returned lowercase.
fn parse_proto(value: &str) -> Result<String, ForwardedError> {
    let mut bytes = value.bytes();
    let starts_with_letter = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    if starts_with_letter && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(ForwardedError::BadProto(value.to_owned()))
    }
}

/// `_` then 1*( ALPHA / DIGIT / "." / "_" / "-" ) (RFC 7239 §6.3 obfnode and obfport).
fn is_obfuscated(text: &str) -> bool {
    text.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    })
}

/// RFC 7239 §6: `nodename [ ":" node-port ]`, IPv6 in brackets, ports of 1 to 5 digits.
fn parse_node(value: &str) -> Result<Node, ForwardedError> {
    let bad = || ForwardedError::BadNode(value.to_owned());
    let (name, port) = if let Some(bracketed) = value.strip_prefix('[') {
        let (address, rest) = bracketed.split_once(']').ok_or_else(bad)?;
        let address: Ipv6Addr = address.parse().map_err(|_| bad())?;
        let port = match rest {
            "" => None,
            _ => Some(rest.strip_prefix(':').ok_or_else(bad)?),
        };
        (NodeName::Ip(IpAddr::V6(address)), port)
    } else {
        let (name, port) = match value.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (value, None),
        };
        let name = if name.eq_ignore_ascii_case("unknown") {
            NodeName::Unknown
        } else if is_obfuscated(name) {
            NodeName::Obfuscated(name.to_owned())
        } else {
            NodeName::Ip(IpAddr::V4(name.parse::<Ipv4Addr>().map_err(|_| bad())?))
        };
        (name, port)
    };
    let port = match port {
        None => None,
        Some(port) if is_obfuscated(port) => Some(NodePort::Obfuscated(port.to_owned())),
        Some(port) if (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit()) => {
            Some(NodePort::Number(port.parse().map_err(|_| bad())?))
        }
        Some(_) => return Err(bad()),
    };
    Ok(Node { name, port })
}

/// A parameter value: bare when it is a token, else a quoted string with '"' and '\' escaped.
#[cfg(test)]
pub fn format_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    write_value(&mut out, value);
    out
}

/// Appends `value` as a token when it is one, else as a quoted-string.
pub fn write_value(out: &mut String, value: &str) {
    if !value.is_empty() && value.bytes().all(is_tchar) {
        out.push_str(value);
        return;
    }
    out.reserve(value.len() + 2);
    out.push('"');
    // Runs between the characters to escape are copied whole ('"' and '\\' are ASCII, so
    // every cut is on a character boundary): a host such as "example.com:8443" is one copy,
    // where a push per character cost hundreds of instructions per request (callgrind).
    let mut rest = value;
    while let Some(at) = rest.bytes().position(|b| b == b'"' || b == b'\\') {
        out.push_str(&rest[..at]);
        out.push('\\');
        out.push_str(&rest[at..=at]);
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// Appends an address as its `Display` writes it. IPv4 by hand: the formatter's machinery
/// (padding, width) for four small numbers was a visible share of every request's CPU, as each
/// request writes the client address into `X-Forwarded-For` and `Forwarded`.
pub fn write_ip(out: &mut String, ip: IpAddr) {
    use std::fmt::Write;
    match ip {
        IpAddr::V4(ip) => write_ipv4(out, ip),
        IpAddr::V6(ip) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// Appends a port in decimal, by hand for the same reason as [`write_ip`]'s IPv4: every
/// request writes one into `X-Forwarded-Port`.
pub fn write_port(out: &mut String, port: u16) {
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    let mut rest = port;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        out.push(char::from(digit));
    }
}

fn write_ipv4(out: &mut String, ip: Ipv4Addr) {
    for (index, octet) in ip.octets().into_iter().enumerate() {
        if index > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

/// Appends a node, quoted when it must be: `198.18.0.1`, `"[2001:2::1]:8080"`.
pub fn write_node(out: &mut String, node: &Node) {
    match (&node.name, &node.port) {
        // Digits and dots are token characters: no quoting, no intermediate string.
        (NodeName::Ip(IpAddr::V4(ip)), None) => write_ipv4(out, *ip),
        _ => write_value(out, &node_text(node)),
    }
}

/// A node as it appears inside the value, before quoting: `198.18.0.1`, `[2001:2::1]:8080`.
fn node_text(node: &Node) -> String {
    let name = match &node.name {
        NodeName::Ip(IpAddr::V4(ip)) => ip.to_string(),
        NodeName::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        NodeName::Obfuscated(name) => name.clone(),
        NodeName::Unknown => "unknown".to_owned(),
    };
    match &node.port {
        None => name,
        Some(NodePort::Number(port)) => format!("{name}:{port}"),
        Some(NodePort::Obfuscated(port)) => format!("{name}:{port}"),
    }
}

/// Appends one element: `for=…;by=…;proto=…;host=…`, the parameters it has, in that order.
#[cfg(test)]
pub fn write_element(out: &mut String, element: &ForwardedElement) {
    let mut separator = "";
    if let Some(node) = &element.for_node {
        out.push_str("for=");
        write_node(out, node);
        separator = ";";
    }
    if let Some(node) = &element.by {
        out.push_str(separator);
        out.push_str("by=");
        write_node(out, node);
        separator = ";";
    }
    if let Some(proto) = &element.proto {
        out.push_str(separator);
        out.push_str("proto=");
        write_value(out, proto);
        separator = ";";
    }
    if let Some(host) = &element.host {
        out.push_str(separator);
        out.push_str("host=");
        write_value(out, host);
    }
}

/// One element: `for=…;by=…;proto=…;host=…`, the parameters it has, in that order.
#[cfg(test)]
pub fn format_element(element: &ForwardedElement) -> String {
    let mut out = String::new();
    write_element(&mut out, element);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut samples: Vec<IpAddr> = [0u8, 1, 9, 10, 99, 100, 199, 200, 255]
            .iter()
            .flat_map(|&a| [0u8, 7, 42, 250].map(|b| IpAddr::from([a, b, 10 * (a % 26), 255 - a])))
            .collect();
        samples.extend(
            ["2001:2::1", "::ffff:198.18.0.1", "::"].map(|ip| ip.parse::<IpAddr>().unwrap()),
        );
        for ip in samples {
            let mut out = String::from("x");
            write_ip(&mut out, ip);
            assert_eq!(out, format!("x{ip}"));
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn node(text: &str) -> Node {
        Node::from_ip(ip(text))
    }

    fn parse_one(value: &str) -> Result<Vec<ForwardedElement>, ForwardedError> {
        parse([value.as_bytes()])
    }

    #[test]
    fn valid_values_parse_into_elements() {
        let with_port = |text: &str, port| Node {
            port: Some(NodePort::Number(port)),
            ..node(text)
        };
        let element = |for_node: Option<Node>| ForwardedElement {
            for_node,
            ..ForwardedElement::default()
        };
        let cases: Vec<(&str, &str, Vec<ForwardedElement>)> = vec![
            (
                "bare IPv4",
                "for=198.18.0.1",
                vec![element(Some(node("198.18.0.1")))],
            ),
            (
                "quoted IPv4 with port",
                "for=\"198.18.0.1:8080\"",
                vec![element(Some(with_port("198.18.0.1", 8080)))],
            ),
            (
                "bracketed IPv6",
                "for=\"[2001:2::1]\"",
                vec![element(Some(node("2001:2::1")))],
            ),
            (
                "bracketed IPv6 with port",
                "For=\"[2001:2::1]:4711\"",
                vec![element(Some(with_port("2001:2::1", 4711)))],
            ),
            (
                "obfuscated node and port",
                "for=\"_hidden:_p1\"",
                vec![element(Some(Node {
                    name: NodeName::Obfuscated("_hidden".into()),
                    port: Some(NodePort::Obfuscated("_p1".into())),
                }))],
            ),
            (
                "unknown, any case",
                "for=UNKNOWN",
                vec![element(Some(Node {
                    name: NodeName::Unknown,
                    port: None,
                }))],
            ),
            (
                "all four parameters, names case-insensitive, proto lowercased",
                "for=198.18.0.1;BY=198.18.5.2;Proto=HTTPS;host=\"www.example.test:8443\"",
                vec![ForwardedElement {
                    for_node: Some(node("198.18.0.1")),
                    by: Some(node("198.18.5.2")),
                    proto: Some("https".into()),
                    host: Some("www.example.test:8443".into()),
                }],
            ),
            (
                "list with whitespace, empty elements and empty pairs",
                " for=198.18.0.1 ,, for=198.18.0.2 ;; proto=http ,",
                vec![
                    element(Some(node("198.18.0.1"))),
                    ForwardedElement {
                        proto: Some("http".into()),
                        ..element(Some(node("198.18.0.2")))
                    },
                ],
            ),
            (
                "escapes in a quoted string",
                "for=\"198.18.\\0.1\"",
                vec![element(Some(node("198.18.0.1")))],
            ),
            (
                "extension parameters are checked then dropped",
                "for=198.18.0.1;secret=\"a;b,c\"",
                vec![element(Some(node("198.18.0.1")))],
            ),
            (
                "an element without for=",
                "proto=https;host=a.test",
                vec![ForwardedElement {
                    proto: Some("https".into()),
                    host: Some("a.test".into()),
                    ..ForwardedElement::default()
                }],
            ),
        ];
        for (name, value, expected) in cases {
            assert_eq!(
                parse_one(value).as_ref(),
                Ok(&expected),
                "case {name:?}: parsing {value:?}"
            );
        }
    }

    #[test]
    fn several_fields_are_one_list() {
        let parsed = parse([&b"for=198.18.0.1"[..], b"for=198.18.0.2;proto=http"]).expect("ok");
        let fors: Vec<Option<IpAddr>> = parsed
            .iter()
            .map(|e| e.for_node.as_ref().and_then(Node::ip))
            .collect();
        assert_eq!(fors, [Some(ip("198.18.0.1")), Some(ip("198.18.0.2"))]);
    }

    #[test]
    fn bad_syntax_is_refused() {
        use ForwardedError::*;
        let cases: [(&str, &str, ForwardedError); 17] = [
            ("unterminated quote", "for=\"198.18.0.1", UnterminatedQuote),
            (
                "escape at the very end",
                "for=\"198.18.0.1\\",
                UnterminatedQuote,
            ),
            ("empty value", "for=;proto=http", EmptyValue("for".into())),
            ("empty quoted value", "for=\"\"", EmptyValue("for".into())),
            ("no name", "=198.18.0.1", ExpectedName(0)),
            ("no '='", "for", ExpectedEquals("for".into())),
            (
                "space before '='",
                "for =198.18.0.1",
                ExpectedEquals("for".into()),
            ),
            (
                "duplicate parameter",
                "for=198.18.0.1;FOR=198.18.0.2",
                DuplicateParameter("for".into()),
            ),
            ("bad token character", "for=198.18.0.1/24", Unexpected(14)),
            ("unquoted IPv6", "for=[2001:2::1]", EmptyValue("for".into())),
            (
                "bare IPv6",
                "for=\"2001:2::1\"",
                BadNode("2001:2::1".into()),
            ),
            (
                "bad IPv4",
                "for=198.18.0.256",
                BadNode("198.18.0.256".into()),
            ),
            (
                "port too long",
                "for=\"198.18.0.1:123456\"",
                BadNode("198.18.0.1:123456".into()),
            ),
            ("bad proto", "proto=\"1http\"", BadProto("1http".into())),
            ("bad host", "host=\"a b\"", BadHost("a b".into())),
            ("control byte", "for=198.18.0.1\u{1}", BadByte(1)),
            ("nothing but commas", " , ,", Empty),
        ];
        for (name, value, expected) in cases {
            assert_eq!(parse_one(value), Err(expected), "case {name:?}: {value:?}");
        }
    }

    #[test]
    fn ports_are_written_as_display_writes_them() {
        for port in [0, 1, 9, 10, 80, 443, 8080, 9999, 10000, 65535] {
            let mut out = String::from("p=");
            write_port(&mut out, port);
            assert_eq!(out, format!("p={port}"));
        }
    }

    #[test]
    fn values_are_tokens_or_quoted_strings_with_escapes_rfc7239_4() {
        let written = |value: &str| {
            let mut out = String::from("x=");
            write_value(&mut out, value);
            out
        };
        assert_eq!(written("https"), "x=https");
        assert_eq!(written("example.com:8443"), "x=\"example.com:8443\"");
        assert_eq!(written(""), "x=\"\"");
        assert_eq!(written("a\"b\\c"), "x=\"a\\\"b\\\\c\"");
        assert_eq!(written("\"\""), "x=\"\\\"\\\"\"");
        assert_eq!(written("é:1"), "x=\"é:1\"");
    }

    #[test]
    fn formatting_quotes_what_is_not_a_token_and_parses_back() {
        let cases: [(&str, ForwardedElement, &str); 5] = [
            (
                "IPv4 stays bare",
                ForwardedElement {
                    for_node: Some(node("198.18.0.1")),
                    ..ForwardedElement::default()
                },
                "for=198.18.0.1",
            ),
            (
                "IPv6 is bracketed and quoted",
                ForwardedElement {
                    for_node: Some(node("2001:2::1")),
                    ..ForwardedElement::default()
                },
                "for=\"[2001:2::1]\"",
            ),
            (
                "a port needs quotes",
                ForwardedElement {
                    for_node: Some(Node {
                        port: Some(NodePort::Number(8080)),
                        ..node("198.18.0.1")
                    }),
                    ..ForwardedElement::default()
                },
                "for=\"198.18.0.1:8080\"",
            ),
            (
                "public view: proto and host, host with port quoted",
                ForwardedElement {
                    for_node: Some(node("198.18.9.1")),
                    by: None,
                    proto: Some("https".into()),
                    host: Some("www.example.test:8443".into()),
                },
                "for=198.18.9.1;proto=https;host=\"www.example.test:8443\"",
            ),
            (
                "obfuscated and unknown are tokens",
                ForwardedElement {
                    for_node: Some(Node {
                        name: NodeName::Unknown,
                        port: None,
                    }),
                    by: Some(Node {
                        name: NodeName::Obfuscated("_gw".into()),
                        port: None,
                    }),
                    ..ForwardedElement::default()
                },
                "for=unknown;by=_gw",
            ),
        ];
        for (name, element, expected) in cases {
            let text = format_element(&element);
            assert_eq!(text, expected, "case {name:?}");
            assert_eq!(
                parse_one(&text),
                Ok(vec![element]),
                "case {name:?}: {text:?} parses back"
            );
        }
        assert_eq!(format_value("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(format_value(""), "\"\"");
    }
}
