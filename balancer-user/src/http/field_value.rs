//! Which bytes a field value may hold (RFC 9110 §5.5: visible ASCII, obs-text, SP and HTAB;
//! no CR, LF, NUL or other controls): the one rule that config validation (header edits) and
//! the upstream head's own lines share, and the one `HeaderValue` applies. Pure: no I/O.

/// Whether every byte of `value` may be in a field value. Without an early exit, so that the
/// compiler checks many bytes per instruction: a value is short, and almost always valid
/// (this runs for each forwarded field of each request).
pub fn is_field_value(value: &[u8]) -> bool {
    let refused = value.iter().fold(false, |refused, &byte| {
        refused | ((byte < b' ') & (byte != b'\t')) | (byte == 0x7f)
    });
    !refused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_values_are_checked_as_a_header_value_checks_them() {
        for byte in 0..=u8::MAX {
            let value = [b'a', byte, b'b'];
            assert_eq!(
                is_field_value(&value),
                hyper::header::HeaderValue::from_bytes(&value).is_ok(),
                "byte {byte:#04x}"
            );
        }
        assert!(is_field_value(b""));
    }
}
