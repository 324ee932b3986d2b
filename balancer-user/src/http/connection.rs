//! The `Connection` field's tokens (RFC 9110 §7.6.1): the one place they are read, for the
//! hop-by-hop rules (headers/hygiene.rs), `close` (proxy/h1) and `upgrade` (proxy/handler.rs).

use hyper::header::{CONNECTION, HeaderMap};

/// The tokens of every Connection field, trimmed, as written (compare them ignoring case).
/// A field that is not text lists nothing.
pub fn tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Whether a Connection field lists `option` (case-insensitive, RFC 9110 §7.6.1).
pub fn lists(headers: &HeaderMap, option: &str) -> bool {
    tokens(headers).any(|token| token.eq_ignore_ascii_case(option))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    /// RFC 9110 §7.6.1: `Connection = #connection-option`, over any number of field lines.
    #[test]
    fn tokens_of_every_field_rfc9110_7_6_1() {
        let mut headers = HeaderMap::new();
        headers.append(CONNECTION, HeaderValue::from_static(" keep-alive ,, X-Foo"));
        headers.append(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.append(CONNECTION, HeaderValue::from_bytes(b"\xffclose").unwrap());
        assert_eq!(
            tokens(&headers).collect::<Vec<_>>(),
            ["keep-alive", "X-Foo", "Upgrade"]
        );
        assert!(lists(&headers, "upgrade"));
        assert!(!lists(&headers, "close"));
    }
}
