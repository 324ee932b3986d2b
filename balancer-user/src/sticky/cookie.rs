//! Cookie and Set-Cookie syntax for sticky sessions, on bytes: find one cookie's values and edit
//! them in place, leaving every other byte of the field as it was.

use std::ops::Range;

use crate::http::set_cookie;

/// What to do with one occurrence of the cookie in a Cookie field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Edit {
    Keep,
    /// New value bytes (inside the quotes when the value was quoted).
    Replace(Vec<u8>),
    /// Drop the whole `name=value` pair.
    Remove,
}

/// One `;`-separated segment of a Cookie field that is a `name=value` pair, as byte ranges into
/// the field.
struct Pair {
    name: Range<usize>,
    /// The value without surrounding whitespace and, when quoted, without its quotes.
    value: Range<usize>,
}

/// The `;`-separated segments of a Cookie field (RFC 6265 §5.4: `a=1; b=2`, tolerating missing
/// or extra spaces): each segment's range, with its pair when it has a '='.
fn segments(field: &[u8]) -> impl Iterator<Item = (Range<usize>, Option<Pair>)> + '_ {
    let mut start = 0;
    field.split(|&b| b == b';').map(move |segment| {
        let range = start..start + segment.len();
        start = range.end + 1;
        let pair = segment.iter().position(|&b| b == b'=').map(|eq| {
            let name = trimmed(segment, 0..eq);
            let value = unquoted(segment, trimmed(segment, eq + 1..segment.len()));
            Pair {
                name: range.start + name.start..range.start + name.end,
                value: range.start + value.start..range.start + value.end,
            }
        });
        (range, pair)
    })
}

/// `range` of `bytes` without leading and trailing spaces and tabs.
fn trimmed(bytes: &[u8], range: Range<usize>) -> Range<usize> {
    let inner = &bytes[range.clone()];
    let lead = inner.len() - inner.trim_ascii_start().len();
    let trail = inner.len() - inner.trim_ascii_end().len();
    if lead == inner.len() {
        return range.start..range.start;
    }
    range.start + lead..range.end - trail
}

/// `range` without its surrounding double quotes, when it has them (RFC 6265 §4.1.1 allows a
/// DQUOTE-wrapped cookie-value).
fn unquoted(bytes: &[u8], range: Range<usize>) -> Range<usize> {
    match &bytes[range.clone()] {
        [b'"', .., b'"'] if range.len() >= 2 => range.start + 1..range.end - 1,
        _ => range,
    }
}

/// Every value of cookie `name` (case-sensitive) in one Cookie field, in order.
pub(crate) fn values<'f>(field: &'f [u8], name: &'f [u8]) -> impl Iterator<Item = &'f [u8]> + 'f {
    segments(field)
        .filter_map(|(_, pair)| pair)
        .filter(move |pair| &field[pair.name.clone()] == name)
        .map(move |pair| &field[pair.value])
}

/// Applies `edit` to every occurrence of cookie `name` in one Cookie field. `None`: nothing
/// changed. `Some(bytes)`: the new field, every other byte kept, possibly empty (all pairs were
/// removed: drop the field).
pub(super) fn edit_field(
    field: &[u8],
    name: &[u8],
    mut edit: impl FnMut(&[u8]) -> Edit,
) -> Option<Vec<u8>> {
    // Most fields do not carry the cookie: nothing is allocated for them (per request).
    values(field, name).next()?;
    let mut out = Vec::with_capacity(field.len());
    let mut changed = false;
    let mut first_kept = true;
    for (range, pair) in segments(field) {
        let segment: &[u8] = &field[range.clone()];
        let value = match pair {
            Some(pair) if &field[pair.name.clone()] == name => pair.value,
            _ => {
                push_segment(&mut out, segment, &mut first_kept);
                continue;
            }
        };
        match edit(&field[value.clone()]) {
            Edit::Remove => changed = true,
            Edit::Keep => push_segment(&mut out, segment, &mut first_kept),
            Edit::Replace(new_value) => {
                changed = true;
                let mut rewritten = Vec::with_capacity(segment.len() + new_value.len());
                rewritten.extend_from_slice(&field[range.start..value.start]);
                rewritten.extend_from_slice(&new_value);
                rewritten.extend_from_slice(&field[value.end..range.end]);
                push_segment(&mut out, &rewritten, &mut first_kept);
            }
        }
    }
    changed.then_some(out)
}

/// Appends a segment after a ';'. A segment that becomes the first one (the segments before it
/// were removed) loses its leading spaces, as a field never starts with one.
fn push_segment(out: &mut Vec<u8>, segment: &[u8], first_kept: &mut bool) {
    if *first_kept {
        out.extend_from_slice(segment.trim_ascii_start());
        *first_kept = false;
    } else {
        out.push(b';');
        out.extend_from_slice(segment);
    }
}

/// The parts of one Set-Cookie field (RFC 6265 §5.2: `name=value; attributes`), split by
/// `http::set_cookie`.
pub(super) struct SetCookie<'f> {
    pub name: &'f [u8],
    /// Where the value is (without spaces and quotes), to splice a new one in.
    pub value: Range<usize>,
    /// The whole field, whose attributes `is_deletion` walks.
    field: &'f [u8],
}

impl<'f> SetCookie<'f> {
    /// `None`: no '=' in the name-value pair, which RFC 6265 §5.2 makes a nameless cookie that
    /// sticky sessions never touch.
    pub fn parse(field: &'f [u8]) -> Option<SetCookie<'f>> {
        let pair_end = set_cookie::pair_end(field);
        let eq = field[..pair_end].iter().position(|&b| b == b'=')?;
        let name = trimmed(field, 0..eq);
        Some(SetCookie {
            name: &field[name],
            value: unquoted(field, trimmed(field, eq + 1..pair_end)),
            field,
        })
    }

    /// Whether the field removes the cookie rather than sets it: an empty value, or a `Max-Age`
    /// of 0 or less (RFC 6265 §5.2.2). A past `Expires` is not looked at: frameworks that delete
    /// cookies send `Max-Age=0` with it (Django, Flask, Rails, PHP), and a value changed in a
    /// cookie that expires on arrival is harmless anyway.
    pub fn is_deletion(&self) -> bool {
        if self.value.is_empty() {
            return true;
        }
        set_cookie::attributes(self.field).any(|attribute| {
            let Some(value) = attribute.value else {
                return false;
            };
            if !self.field[attribute.name].eq_ignore_ascii_case(b"max-age") {
                return false;
            }
            let delta = &self.field[value];
            // §5.2.2: a leading '-' or all digits, else the attribute is ignored.
            match delta {
                [b'-', rest @ ..] => !rest.is_empty() && rest.iter().all(u8::is_ascii_digit),
                digits => !digits.is_empty() && digits.iter().all(|&b| b == b'0'),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn values_are_found_in_order_trimmed_and_unquoted() {
        let cases: &[(&str, &[&str])] = &[
            ("sid=1", &["1"]),
            ("a=1; sid=2; b=3", &["2"]),
            ("a=1;sid=2;b=3", &["2"]),
            ("a=1 ;  sid = 2 ; b=3", &["2"]),
            ("sid=\"q.r\"; x=1", &["q.r"]),
            ("sid=1; sid=2", &["1", "2"]),
            ("SID=1; xsid=2; sidx=3", &[]),
            ("sid", &[]),
            ("sid=", &[""]),
            ("sid=\"", &["\""]),
            ("", &[]),
            (";;;", &[]),
            ("a=b=c; sid=x=y", &["x=y"]),
        ];
        for (field, expected) in cases {
            let found: Vec<String> = values(field.as_bytes(), b"sid").map(text).collect();
            assert_eq!(&found, expected, "values of sid in {field:?}");
        }
    }

    #[test]
    fn edits_touch_only_the_named_cookie() {
        let strip = |value: &[u8]| match value.strip_suffix(b".r1") {
            Some(base) => Edit::Replace(base.to_vec()),
            None => Edit::Keep,
        };
        let remove = |_: &[u8]| Edit::Remove;
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("sid=abc.r1", false, Some("sid=abc")),
            ("a=1;  sid=abc.r1 ;b=2", false, Some("a=1;  sid=abc ;b=2")),
            ("sid=\"abc.r1\"; a=1", false, Some("sid=\"abc\"; a=1")),
            ("sid=abc.r1; sid=def.r1", false, Some("sid=abc; sid=def")),
            ("sid=abc; a=1", false, None),
            ("a=abc.r1", false, None),
            ("sid=abc", true, Some("")),
            ("sid=abc; a=1; b=2", true, Some("a=1; b=2")),
            ("a=1; sid=abc; b=2", true, Some("a=1; b=2")),
            ("a=1;sid=abc;b=2", true, Some("a=1;b=2")),
            ("a=1; b=2; sid=abc", true, Some("a=1; b=2")),
            ("sid=1; a=1; sid=2", true, Some("a=1")),
            ("a=1", true, None),
        ];
        for (field, removing, expected) in cases {
            let edited = if *removing {
                edit_field(field.as_bytes(), b"sid", remove)
            } else {
                edit_field(field.as_bytes(), b"sid", strip)
            };
            assert_eq!(
                edited.as_deref().map(text).as_deref(),
                *expected,
                "edit of {field:?} (removing: {removing})"
            );
        }
    }

    #[test]
    fn set_cookie_parts_and_deletions() {
        // (field, name, value, deletion)
        let cases: &[(&str, &str, &str, bool)] = &[
            ("sid=abc; Path=/; HttpOnly", "sid", "abc", false),
            ("sid = \"abc\" ;Path=/", "sid", "abc", false),
            ("sid=; Path=/", "sid", "", true),
            ("sid=\"\"", "sid", "", true),
            ("sid=abc; Max-Age=0", "sid", "abc", true),
            ("sid=abc; max-age = -1", "sid", "abc", true),
            ("sid=abc; Max-Age=000", "sid", "abc", true),
            ("sid=abc; Max-Age=10", "sid", "abc", false),
            ("sid=abc; Max-Age=-", "sid", "abc", false),
            ("sid=abc; Max-Age=0x", "sid", "abc", false),
            ("sid=abc; Max-Age", "sid", "abc", false),
            (
                "sid=abc; Expires=Thu, 01 Jan 2099 00:00:00 GMT",
                "sid",
                "abc",
                false,
            ),
        ];
        for (field, name, value, deletion) in cases {
            let parsed = SetCookie::parse(field.as_bytes())
                .unwrap_or_else(|| panic!("{field:?} should parse"));
            assert_eq!(text(parsed.name), *name, "name of {field:?}");
            assert_eq!(
                text(&field.as_bytes()[parsed.value.clone()]),
                *value,
                "value of {field:?}"
            );
            assert_eq!(parsed.is_deletion(), *deletion, "is {field:?} a deletion?");
        }
        for field in ["sid", "", "; Path=/", "abc; sid=1"] {
            assert!(
                SetCookie::parse(field.as_bytes()).is_none(),
                "{field:?} has no name=value pair"
            );
        }
    }
}
