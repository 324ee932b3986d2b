//! Set-Cookie fields (RFC 6265 §5.2): the one walker of a field's `name=value` pair and its
//! `;`-separated attributes, for sticky sessions (sticky/cookie.rs) and the response rewrite of
//! `Path` and `Domain` (headers/rewrite.rs). It works on bytes, since a field need not be UTF-8,
//! and gives ranges: every split is at an ASCII byte, so the same ranges index a `&str` field.

use std::ops::Range;

/// One attribute (`name=value` or a bare `name`) after the cookie's pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The whole segment between its ';' and the next (or the end), as written.
    pub segment: Range<usize>,
    /// The attribute name without surrounding whitespace (compare it ignoring case, §5.2).
    pub name: Range<usize>,
    /// The value without surrounding whitespace (§5.2 step 5), when the segment has a '=';
    /// an empty value sits where the segment ends.
    pub value: Option<Range<usize>>,
}

/// Where the cookie's `name=value` pair ends: at the first ';', or the end of the field.
pub fn pair_end(field: &[u8]) -> usize {
    field.iter().position(|&b| b == b';').unwrap_or(field.len())
}

/// The attributes after the pair, in order (§5.2: each `;`-separated segment is one).
pub fn attributes(field: &[u8]) -> impl Iterator<Item = Attribute> + '_ {
    let mut start = pair_end(field) + 1;
    let rest = field.get(start..).unwrap_or_default();
    let mut segments = rest.split(|&b| b == b';');
    if rest.is_empty() {
        // No ';': no attributes (rather than one empty segment).
        segments.next();
    }
    segments.map(move |segment| {
        let range = start..start + segment.len();
        start = range.end + 1;
        let (name, value) = match segment.iter().position(|&b| b == b'=') {
            Some(eq) => (
                trim(field, range.start..range.start + eq),
                Some(trim(field, range.start + eq + 1..range.end)),
            ),
            None => (trim(field, range.clone()), None),
        };
        Attribute {
            segment: range,
            name,
            value,
        }
    })
}

/// `range` without leading and trailing ASCII whitespace; empty at its end when it is all
/// whitespace.
fn trim(field: &[u8], range: Range<usize>) -> Range<usize> {
    let inner = &field[range.clone()];
    let lead = inner.len() - inner.trim_ascii_start().len();
    if lead == inner.len() {
        return range.end..range.end;
    }
    let trail = inner.len() - inner.trim_ascii_end().len();
    range.start + lead..range.end - trail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(field: &str) -> Vec<(&str, &str, Option<&str>)> {
        attributes(field.as_bytes())
            .map(|a| {
                (
                    &field[a.segment],
                    &field[a.name],
                    a.value.map(|value| &field[value]),
                )
            })
            .collect()
    }

    /// RFC 6265 §5.2: the pair up to the first ';', then each attribute, names and values
    /// trimmed, a segment without '=' a bare name.
    #[test]
    fn attributes_in_order_rfc6265_5_2() {
        assert_eq!(walk("a=b"), []);
        assert_eq!(walk("a=b;"), []);
        assert_eq!(
            walk("a=b; Path=/x ;Secure; Domain = .Ex.Test ; Max-Age="),
            [
                (" Path=/x ", "Path", Some("/x")),
                ("Secure", "Secure", None),
                (" Domain = .Ex.Test ", "Domain", Some(".Ex.Test")),
                (" Max-Age=", "Max-Age", Some("")),
            ]
        );
        assert_eq!(
            walk("a=b; Expires=x=y"),
            [(" Expires=x=y", "Expires", Some("x=y"))]
        );
        assert_eq!(pair_end(b"a=b; Path=/"), 3);
        assert_eq!(pair_end(b"a=b"), 3);
    }

    #[test]
    fn an_empty_value_sits_at_the_end_of_its_segment() {
        let field = "a=b; Path=  ; x";
        let path = attributes(field.as_bytes()).next().unwrap();
        assert_eq!(path.value, Some(12..12));
    }
}
