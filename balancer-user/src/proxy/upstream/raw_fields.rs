//! Fields the proxy adds to a request (its forwarded fields), kept as the bytes of the upstream
//! head rather than put in the request's header map: an HTTP/1.1 server gets them copied after
//! the map's fields in one piece. Appending five forwarded fields to the map (hashing each name,
//! validating each value as a `HeaderValue`, moving each bucket) cost about 1 800 instructions
//! per request (callgrind), and the map's own walk wrote them out again.
//!
//! An HTTP/2 server gets them as header-map fields after all, when its request is built
//! (`RawFields::fields`).

use hyper::header::HeaderName;

use crate::headers::trust::FieldSink;
use crate::http::field_value::is_field_value;

/// Complete `name: value\r\n` lines, in the order they were added.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RawFields {
    lines: Vec<u8>,
}

impl RawFields {
    pub fn with_capacity(bytes: usize) -> RawFields {
        RawFields {
            lines: Vec::with_capacity(bytes),
        }
    }

    /// The lines, as an HTTP/1.1 head carries them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.lines
    }

    /// Each field's name and value.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines
            .split(|&byte| byte == b'\n')
            .filter_map(|line| line.strip_suffix(b"\r"))
            .filter_map(|line| {
                let colon = line.iter().position(|&byte| byte == b':')?;
                Some((&line[..colon], &line[colon + 2..]))
            })
    }
}

impl FieldSink for RawFields {
    fn field(&mut self, name: HeaderName, value: &str) {
        if !is_field_value(value.as_bytes()) {
            return;
        }
        let name = name.as_str().as_bytes();
        self.lines.reserve(name.len() + 2 + value.len() + 2);
        self.lines.extend_from_slice(name);
        self.lines.extend_from_slice(b": ");
        self.lines.extend_from_slice(value.as_bytes());
        self.lines.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_lines_in_order_and_read_back_the_same() {
        let mut raw = RawFields::default();
        raw.field(
            HeaderName::from_static("x-forwarded-for"),
            "198.18.0.1, ::1",
        );
        raw.field(HeaderName::from_static("x-forwarded-proto"), "https");
        // A value with a colon, a space and a tab is one field, read back whole.
        raw.field(
            HeaderName::from_static("forwarded"),
            "for=\"[::1]:80\";\tx= y",
        );
        assert_eq!(
            raw.as_bytes(),
            b"x-forwarded-for: 198.18.0.1, ::1\r\nx-forwarded-proto: https\r\n\
              forwarded: for=\"[::1]:80\";\tx= y\r\n"
        );
        let fields: Vec<_> = raw.fields().collect();
        assert_eq!(
            fields,
            [
                (&b"x-forwarded-for"[..], &b"198.18.0.1, ::1"[..]),
                (&b"x-forwarded-proto"[..], &b"https"[..]),
                (&b"forwarded"[..], &b"for=\"[::1]:80\";\tx= y"[..]),
            ]
        );
    }

    /// The two sinks of `TrustPolicy::emit_to` give the server the same fields in the same
    /// order, whatever the switches, the chain and the prefix.
    #[test]
    fn the_head_gets_what_the_header_map_would_have() {
        use crate::headers::trust::{ClientView, Scheme, TrustPolicy};
        let views = [
            ClientView {
                client: "198.18.0.7".parse().expect("ip"),
                chain: vec!["198.18.0.7".parse().expect("ip")],
                scheme: Scheme::Http,
                host: "www.example.test".into(),
                port: 80,
                prefix: None,
                trusted_peer: false,
            },
            ClientView {
                client: "2001:2::7".parse().expect("ip"),
                chain: vec![
                    "2001:2::7".parse().expect("ip"),
                    "198.18.5.2".parse().expect("ip"),
                ],
                scheme: Scheme::Https,
                host: "[2001:2::1]:8443".into(),
                port: 8443,
                prefix: Some("/outer".into()),
                trusted_peer: true,
            },
            ClientView {
                client: "198.18.0.9".parse().expect("ip"),
                chain: vec!["198.18.0.9".parse().expect("ip")],
                scheme: Scheme::Https,
                host: String::new(),
                port: 443,
                prefix: None,
                trusted_peer: false,
            },
        ];
        for (emit_forwarded, emit_x_real_ip) in [(true, false), (false, true), (true, true)] {
            let policy = TrustPolicy {
                emit_forwarded,
                emit_x_real_ip,
                ..TrustPolicy::default()
            };
            for view in &views {
                for stripped in [None, Some("/app")] {
                    let mut map = hyper::HeaderMap::new();
                    policy.emit(view, stripped, &mut map);
                    let mut raw = RawFields::default();
                    policy.emit_to(view, stripped, &mut raw);
                    let from_map: Vec<(&[u8], &[u8])> = map
                        .iter()
                        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
                        .collect();
                    let from_raw: Vec<_> = raw.fields().collect();
                    assert_eq!(from_raw, from_map, "{view:?}, stripped {stripped:?}");
                    assert!(from_raw.len() >= 4, "{view:?}");
                }
            }
        }
    }

    #[test]
    fn a_value_a_header_map_would_refuse_is_left_out() {
        let name = HeaderName::from_static("x-forwarded-host");
        for bad in ["a\r\nx-injected: 1", "a\nb", "nul\0", "del\x7f"] {
            let mut raw = RawFields::default();
            raw.field(name.clone(), bad);
            assert!(raw.as_bytes().is_empty(), "{bad:?} was written");
            assert!(
                hyper::header::HeaderValue::from_str(bad).is_err(),
                "{bad:?}"
            );
        }
        let mut raw = RawFields::default();
        raw.field(name, "www.example.test:8443");
        assert_eq!(
            raw.as_bytes(),
            b"x-forwarded-host: www.example.test:8443\r\n"
        );
    }
}
