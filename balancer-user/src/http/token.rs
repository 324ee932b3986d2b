//! `tchar` (RFC 9110 §5.6.2), the one definition the head parser, the chunk parser and the
//! `Forwarded` writer share. Pure: no I/O, and no dependency on the rest of the crate (the
//! fuzz crate compiles this file as well).

/// `tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" /
/// "|" / "~" / DIGIT / ALPHA`. One `match`, which compiles to range tests: the list search it
/// replaces cost a comparison per listed character for every byte of a name or value.
pub fn is_tchar(byte: u8) -> bool {
    matches!(
        byte,
        b'0'..=b'9'
            | b'a'..=b'z'
            | b'A'..=b'Z'
            | b'!'
            | b'#'
            | b'$'
            | b'%'
            | b'&'
            | b'\''
            | b'*'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tchar_is_exactly_the_rfc_9110_set() {
        for byte in 0..=u8::MAX {
            let expected = byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte);
            assert_eq!(is_tchar(byte), expected, "byte {byte:#04x}");
        }
    }
}
