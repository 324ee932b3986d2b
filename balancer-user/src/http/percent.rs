//! Percent-decoding (RFC 3986 §2.1): the one decoder, for static file paths and the admin
//! API's path segments.

/// Decodes `%XX` escapes (either case of hex digit); `None` for a '%' not followed by two hex
/// digits. The result is bytes: an escape may make invalid UTF-8, and whether that is an error
/// is the caller's to say.
pub fn decode(input: &str) -> Option<Vec<u8>> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let high = (hex[0] as char).to_digit(16)?;
            let low = (hex[1] as char).to_digit(16)?;
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// [`decode`], and the result must be UTF-8.
pub fn decode_utf8(input: &str) -> Option<String> {
    String::from_utf8(decode(input)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3986 §2.1: `pct-encoded = "%" HEXDIG HEXDIG`, hex digits of either case.
    #[test]
    fn escapes_rfc3986_2_1() {
        assert_eq!(decode("a%2Fb%2fc").as_deref(), Some(&b"a/b/c"[..]));
        assert_eq!(decode("%ff").as_deref(), Some(&[0xff][..]));
        assert_eq!(decode("plain+text").as_deref(), Some(&b"plain+text"[..]));
        for bad in ["%", "%4", "%zz", "%+f", "a%g0"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        assert_eq!(decode_utf8("%C3%A9").as_deref(), Some("é"));
        assert_eq!(decode_utf8("%ff"), None);
    }
}
