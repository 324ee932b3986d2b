//! The Internet checksum (RFC 1071) over fixed-size byte arrays, so loops have
//! constant bounds the verifier accepts.

/// Adds the big-endian 16-bit words of `bytes` to a running sum.
#[inline(always)]
pub fn add_words<const N: usize>(mut sum: u32, bytes: &[u8; N]) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    if N % 2 == 1 {
        sum += (bytes[N - 1] as u32) << 8;
    }
    sum
}

/// Folds the carries and complements: the value for the checksum field.
#[inline(always)]
pub fn finish(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
