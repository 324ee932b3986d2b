//! Conditional requests (RFC 9110 §13): `If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since` and `If-Range` against a representation's current validators.
//! Pure: the caller says what the representation is now; dates go through [`super::date`].

use hyper::header::{self, HeaderMap};

use super::date;

/// A representation's validators now.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    /// Its strong entity tag, quoted (`"abc"`).
    pub etag: &'a str,
    /// Its Last-Modified, in seconds since the epoch, when known.
    pub modified: Option<u64>,
}

impl Current<'_> {
    /// The ETag without its quotes, as compared with entity tags parsed from requests.
    fn opaque(&self) -> &str {
        &self.etag[1..self.etag.len() - 1]
    }
}

/// What the preconditions say.
pub enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

/// RFC 9110 §13.2.2 steps 1 to 4 (for GET and HEAD).
pub fn preconditions(headers: &HeaderMap, current: &Current<'_>) -> Precondition {
    if let Some(tags) = header_list(headers, header::IF_MATCH) {
        // Strong comparison; a malformed field matches nothing.
        let matched = match parse_entity_tags(&tags) {
            Some(EntityTags::Any) => true,
            Some(EntityTags::List(list)) => list
                .iter()
                .any(|(weak, tag)| !weak && *tag == current.opaque()),
            None => false,
        };
        if !matched {
            return Precondition::Failed;
        }
    } else if let (Some(since), Some(modified)) = (
        single_date(headers, header::IF_UNMODIFIED_SINCE),
        current.modified,
    ) && modified > since
    {
        return Precondition::Failed;
    }

    if let Some(tags) = header_list(headers, header::IF_NONE_MATCH) {
        // Weak comparison.
        let matched = match parse_entity_tags(&tags) {
            Some(EntityTags::Any) => true,
            Some(EntityTags::List(list)) => list.iter().any(|(_, tag)| *tag == current.opaque()),
            None => false,
        };
        if matched {
            return Precondition::NotModified;
        }
    } else if let (Some(since), Some(modified)) = (
        single_date(headers, header::IF_MODIFIED_SINCE),
        current.modified,
    ) && modified <= since
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// Whether `If-Range` (if any) lets the `Range` apply: an ETag must match strongly, a date must
/// equal Last-Modified exactly.
pub fn if_range_holds(headers: &HeaderMap, current: &Current<'_>) -> bool {
    let mut values = headers.get_all(header::IF_RANGE).iter();
    let Some(value) = values.next() else {
        return true;
    };
    if values.next().is_some() {
        return false;
    }
    let Ok(value) = value.to_str() else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return value == current.etag;
    }
    matches!((date::parse(value), current.modified), (Some(date), Some(modified)) if date == modified)
}

/// The values of a list header, joined with commas; `None` when absent.
fn header_list(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let mut joined: Option<String> = None;
    for value in headers.get_all(name) {
        let value = String::from_utf8_lossy(value.as_bytes());
        match &mut joined {
            Some(joined) => {
                joined.push(',');
                joined.push_str(&value);
            }
            None => joined = Some(value.into_owned()),
        }
    }
    joined
}

/// A date header's value, ignored when repeated or not a valid HTTP-date.
fn single_date(headers: &HeaderMap, name: header::HeaderName) -> Option<u64> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    date::parse(value.to_str().ok()?)
}

enum EntityTags<'a> {
    Any,
    /// (weak, opaque tag without quotes)
    List(Vec<(bool, &'a str)>),
}

/// `*` or a comma-separated list of `"tag"` / `W/"tag"`; `None` when malformed.
fn parse_entity_tags(value: &str) -> Option<EntityTags<'_>> {
    if value.trim() == "*" {
        return Some(EntityTags::Any);
    }
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let (weak, quoted) = match rest.strip_prefix("W/") {
            Some(quoted) => (true, quoted),
            None => (false, rest),
        };
        let inner = quoted.strip_prefix('"')?;
        let end = inner.find('"')?;
        tags.push((weak, &inner[..end]));
        rest = &inner[end + 1..];
        let after = rest.trim_start_matches([' ', '\t']);
        if !after.is_empty() && !after.starts_with(',') {
            return None;
        }
    }
    (!tags.is_empty()).then_some(EntityTags::List(tags))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn entity_tag_lists() {
        let Some(EntityTags::List(tags)) = parse_entity_tags(r#""a", W/"b",  "c,d" "#) else {
            panic!("list");
        };
        assert_eq!(tags, vec![(false, "a"), (true, "b"), (false, "c,d")]);
        assert!(matches!(parse_entity_tags(" * "), Some(EntityTags::Any)));
        for bad in ["a", "\"a", "\"a\" b", "", "W/a"] {
            assert!(parse_entity_tags(bad).is_none(), "{bad}");
        }
    }

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, HeaderValue::from_static(value));
        }
        map
    }

    /// RFC 9110 §13.2.2: If-Match before If-Unmodified-Since, If-None-Match before
    /// If-Modified-Since; the second of each pair is ignored when the first is present.
    #[test]
    fn precedence_rfc9110_13_2_2() {
        let current = Current {
            etag: "\"v1\"",
            modified: Some(784_111_777),
        };
        let outcome = |pairs: &[(header::HeaderName, &'static str)]| match preconditions(
            &headers(pairs),
            &current,
        ) {
            Precondition::Proceed => "proceed",
            Precondition::NotModified => "304",
            Precondition::Failed => "412",
        };
        let old = "Sat, 05 Nov 1994 08:49:37 GMT";
        let now = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(outcome(&[]), "proceed");
        assert_eq!(outcome(&[(header::IF_MATCH, "\"v2\"")]), "412");
        assert_eq!(outcome(&[(header::IF_MATCH, "W/\"v1\"")]), "412");
        assert_eq!(
            outcome(&[
                (header::IF_MATCH, "\"v1\""),
                (header::IF_UNMODIFIED_SINCE, old)
            ]),
            "proceed"
        );
        assert_eq!(outcome(&[(header::IF_UNMODIFIED_SINCE, old)]), "412");
        assert_eq!(outcome(&[(header::IF_NONE_MATCH, "W/\"v1\"")]), "304");
        assert_eq!(
            outcome(&[
                (header::IF_NONE_MATCH, "\"v2\""),
                (header::IF_MODIFIED_SINCE, now)
            ]),
            "proceed"
        );
        assert_eq!(outcome(&[(header::IF_MODIFIED_SINCE, now)]), "304");
        assert_eq!(outcome(&[(header::IF_MODIFIED_SINCE, old)]), "proceed");
        assert_eq!(
            outcome(&[(header::IF_MODIFIED_SINCE, "yesterday")]),
            "proceed"
        );
    }

    /// RFC 9110 §13.1.5: a strong ETag match or a date equal to Last-Modified.
    #[test]
    fn if_range_rfc9110_13_1_5() {
        let current = Current {
            etag: "\"v1\"",
            modified: Some(784_111_777),
        };
        let holds =
            |value: &'static str| if_range_holds(&headers(&[(header::IF_RANGE, value)]), &current);
        assert!(if_range_holds(&HeaderMap::new(), &current));
        assert!(holds("\"v1\""));
        assert!(!holds("W/\"v1\""));
        assert!(holds("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert!(!holds("Sun, 06 Nov 1994 08:49:38 GMT"));
    }
}
