//! URL path parameters for sticky sessions (`/shop;jsessionid=VALUE.ROUTE/cart?q=1`): find the
//! values of one parameter in the path of a request target and edit them in place.

use std::ops::Range;

/// The ranges of every value of path parameter `name` (case-sensitive) in `target`, in order.
/// Only the path counts (up to the first '?'); a parameter runs from a ';' to the next ';', '/'
/// or the end of the path (RFC 3986 §3.3), so it may sit in any segment. `%3B` is not a ';'.
pub(super) fn values(target: &str, name: &str) -> Vec<Range<usize>> {
    let path_end = target.find('?').unwrap_or(target.len());
    let path = &target.as_bytes()[..path_end];
    let mut found = Vec::new();
    for (at, _) in path.iter().enumerate().filter(|&(_, &b)| b == b';') {
        let start = at + 1;
        let end = path[start..]
            .iter()
            .position(|&b| b == b';' || b == b'/')
            .map_or(path_end, |offset| start + offset);
        let parameter = &path[start..end];
        if parameter.len() > name.len()
            && parameter.starts_with(name.as_bytes())
            && parameter[name.len()] == b'='
        {
            found.push(start + name.len() + 1..end);
        }
    }
    found
}

/// `target` with each value range in `edits` (sorted, disjoint, from [`values`]) replaced by its
/// new text.
pub(super) fn splice(target: &str, edits: &[(Range<usize>, &str)]) -> String {
    let mut out = String::with_capacity(target.len());
    let mut copied = 0;
    for (range, replacement) in edits {
        out.push_str(&target[copied..range.start]);
        out.push_str(replacement);
        copied = range.end;
    }
    out.push_str(&target[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_any_segment_before_the_query() {
        let cases: &[(&str, &[&str])] = &[
            ("/cart;jsessionid=abc.r1", &["abc.r1"]),
            ("/cart;jsessionid=abc.r1?x=1", &["abc.r1"]),
            ("/shop;jsessionid=abc.r1/cart", &["abc.r1"]),
            ("/shop;v=2;jsessionid=abc.r1;x=y/cart", &["abc.r1"]),
            ("/a;jsessionid=1/b;jsessionid=2", &["1", "2"]),
            ("/a;jsessionid=", &[""]),
            ("/cart?;jsessionid=abc.r1", &[]),
            ("/cart?x=1&jsessionid=abc.r1", &[]),
            ("/cart;JSESSIONID=abc.r1", &[]),
            ("/cart;jsessionidx=abc.r1", &[]),
            ("/cart;jsessionid", &[]),
            ("/cart%3Bjsessionid=abc.r1", &[]),
            ("/cart;", &[]),
            (";jsessionid=a", &["a"]),
            ("", &[]),
        ];
        for (target, expected) in cases {
            let found: Vec<&str> = values(target, "jsessionid")
                .into_iter()
                .map(|range| &target[range])
                .collect();
            assert_eq!(&found, expected, "jsessionid values in {target:?}");
        }
    }

    #[test]
    fn splice_replaces_only_the_ranges() {
        let target = "/a;s=1.r/b;s=2.r?q=;s=3.r";
        let ranges = values(target, "s");
        let edits: Vec<(Range<usize>, &str)> = ranges.into_iter().zip(["1", "2"]).collect();
        assert_eq!(splice(target, &edits), "/a;s=1/b;s=2?q=;s=3.r");
        assert_eq!(splice(target, &[]), target);
    }
}
