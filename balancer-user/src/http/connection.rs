//! The `Connection` field's tokens (RFC 9110 §7.6.1): the one place they are read, for the
//! hop-by-hop rules (headers/hygiene.rs), `close` (proxy/h1) and `upgrade` (proxy/handler.rs).

use http::header::{CONNECTION, HeaderMap, HeaderValue};

/// The tokens of every Connection field, trimmed, as written (compare them ignoring case).
/// A field that is not text lists nothing.
pub fn tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(CONNECTION).iter().flat_map(value_tokens)
}

/// The tokens of one Connection field line.
pub fn value_tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .ok()
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Whether a Connection field lists `option` (case-insensitive, RFC 9110 §7.6.1).
pub fn lists(headers: &HeaderMap, option: &str) -> bool {
    tokens(headers).any(|token| token.eq_ignore_ascii_case(option))
}

/// Whether one Connection field line lists `option`, for a caller that already walks the
/// fields.
pub fn value_lists(value: &HeaderValue, option: &str) -> bool {
    value_tokens(value).any(|token| token.eq_ignore_ascii_case(option))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let values: Vec<bool> = headers
            .get_all(CONNECTION)
            .iter()
            .map(|value| value_lists(value, "x-foo"))
            .collect();
        assert_eq!(values, [true, false, false]);
    }
}
