//! A route's `request_headers` / `response_headers` edits, checked once when the config is
//! loaded, and the redacted header dumps `debug_headers` logs.

use std::fmt::Write;

use hyper::{
    HeaderMap,
    header::{HeaderName, HeaderValue},
};

use crate::config::HeaderEdits;

/// `HeaderEdits` as header names and values, so a request pays no parsing.
#[derive(Debug, Clone, Default)]
pub struct CompiledEdits {
    set: Vec<(HeaderName, HeaderValue)>,
    unset: Vec<HeaderName>,
}

/// A header edit that does not parse, by its header name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditsError {
    #[error("bad header name {0:?}")]
    BadName(String),
    #[error("bad value for header {0:?}")]
    BadValue(String),
}

impl CompiledEdits {
    /// Config validation already checked the names and values; one that still does not parse
    /// is an error naming it.
    pub fn new(edits: &HeaderEdits) -> Result<CompiledEdits, EditsError> {
        let name = |name: &str| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| EditsError::BadName(name.to_string()))
        };
        Ok(CompiledEdits {
            set: edits
                .set
                .iter()
                .map(|(key, value)| {
                    let value = HeaderValue::from_str(value)
                        .map_err(|_| EditsError::BadValue(key.clone()))?;
                    Ok((name(key)?, value))
                })
                .collect::<Result<_, EditsError>>()?,
            unset: edits
                .unset
                .iter()
                .map(|key| name(key))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.unset.is_empty()
    }

    /// Unset first, then set: `set` replaces every field of its name. The other fields keep
    /// their order (`HeaderMap::remove` would move the last field into the gap).
    pub fn apply(&self, headers: &mut HeaderMap) {
        if self.unset.iter().any(|name| headers.contains_key(name)) {
            let mut kept = HeaderMap::with_capacity(headers.len());
            let mut current: Option<HeaderName> = None;
            for (name, value) in std::mem::take(headers) {
                if let Some(name) = name {
                    current = Some(name);
                }
                if let Some(name) = &current
                    && !self.unset.contains(name)
                {
                    kept.append(name.clone(), value);
                }
            }
            *headers = kept;
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// One line per field, "name: value", for `debug_headers`. Credentials never reach the log:
/// `Authorization` keeps only its scheme, cookies only their names.
pub fn redacted(headers: &HeaderMap) -> String {
    let mut out = String::new();
    for (name, value) in headers {
        let text = String::from_utf8_lossy(value.as_bytes());
        let shown = match name.as_str() {
            "authorization" | "proxy-authorization" => match text.split_once(' ') {
                Some((scheme, _)) => format!("{scheme} <redacted>"),
                None => "<redacted>".to_string(),
            },
            "cookie" => text
                .split(';')
                .map(|pair| match pair.trim().split_once('=') {
                    Some((cookie, _)) => format!("{cookie}=<redacted>"),
                    None => "<redacted>".to_string(),
                })
                .collect::<Vec<_>>()
                .join("; "),
            "set-cookie" => match text.split_once('=') {
                Some((cookie, rest)) => {
                    let attributes = rest.split_once(';').map_or("", |(_, attrs)| attrs);
                    if attributes.is_empty() {
                        format!("{cookie}=<redacted>")
                    } else {
                        format!("{cookie}=<redacted>;{attributes}")
                    }
                }
                None => "<redacted>".to_string(),
            },
            _ => text.into_owned(),
        };
        let _ = writeln!(out, "{name}: {shown}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        headers
    }

    #[test]
    fn unset_then_set_replacing_every_field() {
        let edits = CompiledEdits::new(&HeaderEdits {
            set: vec![
                ("x-forwarded-port".into(), "443".into()),
                ("x-env".into(), "prod".into()),
            ],
            unset: vec!["x-debug".into(), "x-env".into()],
        })
        .expect("valid");
        let mut headers = map(&[
            ("x-debug", "1"),
            ("x-forwarded-port", "8443"),
            ("x-forwarded-port", "80"),
            ("x-env", "dev"),
            ("authorization", "Basic eA=="),
        ]);
        edits.apply(&mut headers);
        assert!(!headers.contains_key("x-debug"));
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-forwarded-port", "authorization", "x-env"]);
        assert_eq!(
            headers
                .get_all("x-forwarded-port")
                .iter()
                .collect::<Vec<_>>(),
            ["443"]
        );
        assert_eq!(headers["x-env"], "prod");
        assert_eq!(headers["authorization"], "Basic eA==");
        assert!(
            CompiledEdits::new(&HeaderEdits::default())
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn debug_dumps_hide_credentials_but_keep_their_shape() {
        let dump = redacted(&map(&[
            ("authorization", "Bearer secret-token"),
            ("proxy-authorization", "opaque"),
            ("cookie", "sessionid=abc.a; csrftoken=xyz"),
            ("set-cookie", "sessionid=abc; Path=/; HttpOnly"),
            ("x-forwarded-for", "198.18.9.9"),
        ]));
        assert_eq!(
            dump,
            "authorization: Bearer <redacted>\nproxy-authorization: <redacted>\ncookie: sessionid=<redacted>; csrftoken=<redacted>\nset-cookie: sessionid=<redacted>; Path=/; HttpOnly\nx-forwarded-for: 198.18.9.9\n"
        );
        assert!(!dump.contains("secret") && !dump.contains("abc") && !dump.contains("xyz"));
    }
}
