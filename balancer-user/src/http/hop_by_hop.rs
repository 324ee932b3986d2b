//! Which fields are hop-by-hop (RFC 9110 §7.6.1, RFC 9112 §7.4): the rule the header hygiene
//! applies to every message (headers/hygiene.rs) and the HTTP/1.x reader applies as it builds a
//! response's map (proxy/h1/head.rs). Pure: names and values in, decisions out.

use http::header::{CONNECTION, HeaderMap, HeaderName, HeaderValue};

/// Connection-specific fields (RFC 9110 §7.6.1, RFC 9112 §7.4 for TE/Trailer/Transfer-Encoding)
/// and the old `Keep-Alive` / `Proxy-Connection`.
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The lengths of the [`HOP_BY_HOP`] names.
const HOP_BY_HOP_LENGTHS: u64 = length_mask(&HOP_BY_HOP);

/// The lengths of `names`, one bit each (names of 63 bytes and more share the top bit). A name
/// whose length has no bit is none of them, found without comparing a byte: this runs for each
/// field of each request, and most (Host, Accept, User-Agent) are none of the names removed.
pub const fn length_mask(names: &[&str]) -> u64 {
    let mut mask = 0;
    let mut index = 0;
    while index < names.len() {
        mask |= length_bit(names[index]);
        index += 1;
    }
    mask
}

const fn length_bit(name: &str) -> u64 {
    length_bit_of(name.len())
}

/// The bit of a name of `length` bytes.
const fn length_bit_of(length: usize) -> u64 {
    1 << if length < 63 { length } else { 63 }
}

/// Whether `name` may be one of the names `mask` was made from.
pub fn may_be_in(mask: u64, name: &str) -> bool {
    mask & length_bit(name) != 0
}

/// Fields a client may not remove by listing them in Connection: the server needs them to route
/// and frame the request.
const NOT_REMOVABLE_BY_CONNECTION: [&str; 2] = ["host", "content-length"];

/// The names the Connection fields of a message list (RFC 9110 §7.6.1), gathered field by
/// field. The first field line is kept (a count on its bytes, not a copy) with where its first
/// tokens are; only tokens past those are copied. Most requests from browsers carry
/// `Connection: keep-alive`, and a list of lowercased copies was two allocations and about 900
/// instructions per request (callgrind).
#[derive(Default)]
pub struct ConnectionOptions {
    line: Option<HeaderValue>,
    /// Byte ranges of the first tokens of `line`.
    spans: [(usize, usize); LISTED_SPANS],
    spanned: usize,
    /// Tokens past those, lowercased.
    more: Vec<String>,
    /// The lengths of every token: a name of another length is none of them.
    lengths: u64,
}

const LISTED_SPANS: usize = 4;

/// A filter on a field's name as it came (any case) before [`is_hop_by_hop`]: `false` means
/// that is `false` too. By length and first letter, so that the usual fields cost a few
/// instructions each.
pub fn may_be_hop_by_hop(raw_name: &[u8], connection: Option<&ConnectionOptions>) -> bool {
    let lengths = HOP_BY_HOP_LENGTHS | connection.map_or(0, |options| options.lengths);
    lengths & length_bit_of(raw_name.len()) != 0
        || raw_name
            .first()
            .is_some_and(|b| b.eq_ignore_ascii_case(&b'p'))
}

/// Whether the hygiene's `strip_hop_by_hop` (without `keep_upgrade`) removes a field named
/// `name` from a message whose Connection fields are `connection` (`None`: it has none).
pub fn is_hop_by_hop(name: &HeaderName, connection: Option<&ConnectionOptions>) -> bool {
    static NOTHING_LISTED: ConnectionOptions = ConnectionOptions {
        line: None,
        spans: [(0, 0); LISTED_SPANS],
        spanned: 0,
        more: Vec::new(),
        lengths: 0,
    };
    let listed = connection.map_or(&NOTHING_LISTED, |options| options);
    removal(name.as_str(), listed, false).is_some()
}

impl ConnectionOptions {
    /// The options of every Connection field of `headers`.
    pub fn of(headers: &HeaderMap) -> ConnectionOptions {
        let mut options = ConnectionOptions::default();
        for value in headers.get_all(CONNECTION) {
            options.add(value);
        }
        options
    }

    /// Adds the options of one Connection field line.
    pub fn add(&mut self, value: &HeaderValue) {
        let first_line = self.line.is_none();
        for token in crate::http::connection::value_tokens(value) {
            self.lengths |= length_bit(token);
            if first_line && self.spanned < LISTED_SPANS {
                let start = token.as_ptr() as usize - value.as_bytes().as_ptr() as usize;
                self.spans[self.spanned] = (start, start + token.len());
                self.spanned += 1;
            } else {
                self.more.push(token.to_ascii_lowercase());
            }
        }
        if first_line {
            self.line = Some(value.clone());
        }
    }

    /// Whether a Connection field lists `name` (lowercase; tokens compare ignoring case).
    fn contains(&self, name: &str) -> bool {
        if !may_be_in(self.lengths, name) {
            return false;
        }
        let line = self.line.as_ref().map_or(&[][..], HeaderValue::as_bytes);
        self.spans[..self.spanned]
            .iter()
            .any(|&(start, end)| line[start..end].eq_ignore_ascii_case(name.as_bytes()))
            || self.more.iter().any(|token| token == name)
    }
}

/// Why a field does not cross the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Connection-specific, or listed in Connection.
    HopByHop,
    /// `Proxy` or `Proxy-*` (httpoxy and the like).
    ProxyHeader,
}

/// The rule requests and responses share: whether a field named `name` (lowercase) is removed
/// from a message whose Connection fields list `listed`. With `keep_upgrade`, `Upgrade` stays
/// (a tunnel's).
pub fn removal(name: &str, listed: &ConnectionOptions, keep_upgrade: bool) -> Option<Removal> {
    let kept_upgrade = keep_upgrade && name == "upgrade";
    if kept_upgrade {
        return None;
    }
    if (may_be_in(HOP_BY_HOP_LENGTHS, name) && HOP_BY_HOP.contains(&name))
        || (listed.contains(name) && !NOT_REMOVABLE_BY_CONNECTION.contains(&name))
    {
        return Some(Removal::HopByHop);
    }
    if name == "proxy" || name.starts_with("proxy-") {
        return Some(Removal::ProxyHeader);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_mask_passes_its_own_names_and_stops_other_lengths() {
        let long = "x".repeat(70);
        let longer = "y".repeat(90);
        let mask = length_mask(&["te", "upgrade", &long]);
        for name in ["te", "upgrade", "xy", "abcdefg", &long, &longer] {
            assert!(may_be_in(mask, name), "{name:?}");
        }
        for name in ["", "host", "accept", "user-agent", &"z".repeat(62)] {
            assert!(!may_be_in(mask, name), "{name:?}");
        }
        for name in HOP_BY_HOP {
            assert!(may_be_in(HOP_BY_HOP_LENGTHS, name), "{name}");
        }
    }

    /// The filter never says no where the rule says yes: every name the rule removes passes it,
    /// in any case.
    #[test]
    fn the_quick_filter_passes_every_name_the_rule_removes() {
        let mut listed = ConnectionOptions::default();
        listed.add(&HeaderValue::from_static(
            "close, X-Private, a, b, c, d-long-name",
        ));
        let others = [
            "proxy",
            "proxy-authorization",
            "x-private",
            "d-long-name",
            "content-type",
            "date",
            "set-cookie",
            "host",
            "content-length",
        ];
        for name in HOP_BY_HOP.into_iter().chain(others) {
            let header = HeaderName::from_static(name);
            for options in [None, Some(&listed)] {
                if is_hop_by_hop(&header, options) {
                    assert!(may_be_hop_by_hop(name.as_bytes(), options), "{name}");
                    assert!(
                        may_be_hop_by_hop(name.to_ascii_uppercase().as_bytes(), options),
                        "{name}"
                    );
                }
            }
        }
        assert!(is_hop_by_hop(
            &HeaderName::from_static("x-private"),
            Some(&listed)
        ));
        assert!(!is_hop_by_hop(&HeaderName::from_static("x-private"), None));
        // Host and Content-Length frame and route the request: Connection cannot remove them.
        let mut framing = ConnectionOptions::default();
        framing.add(&HeaderValue::from_static("host, content-length"));
        assert!(!is_hop_by_hop(
            &HeaderName::from_static("host"),
            Some(&framing)
        ));
        assert!(!is_hop_by_hop(
            &HeaderName::from_static("content-length"),
            Some(&framing)
        ));
    }
}
