//! `X-Request-ID` (`proxy.request_id`): whether a request keeps the ID it arrived with or gets
//! a new one, and the new ones (UUIDv7, RFC 9562 §5.7). The one place these rules live:
//! hygiene leaves the field alone, the handler asks [`decide`] and then sets the value it
//! returns on the request to the server, on the response and in the access log.

use std::time::UNIX_EPOCH;

use bytes::Bytes;
use hyper::{
    HeaderMap,
    header::{HeaderName, HeaderValue},
};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest ID kept from a trusted proxy. IDs in the wild are 32 hex digits (nginx's
/// `$request_id`), 36-character UUIDs, or up to 200 characters (Heroku's router); anything
/// longer is not an ID but a way to fill every log line.
pub const MAX_LENGTH: usize = 200;

/// What happens to a request's ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A trusted proxy's well-formed ID goes on unchanged.
    Keep(HeaderValue),
    /// A new ID, for the reason given.
    Generate(Why),
}

/// Why a request gets a new ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Absent,
    /// The peer is not a trusted proxy: anyone can write any ID, and an ID chosen by a client
    /// would let it pose as another request in the logs (or collide with one on purpose).
    Untrusted,
    /// Too long, not visible ASCII, or sent more than once.
    Malformed,
}

/// Keep, replace or generate: `headers` are the request's as received, `trusted_peer` whether
/// the peer is one of the listener's `trusted_proxies`.
pub fn decide(headers: &HeaderMap, trusted_peer: bool) -> Decision {
    let mut values = headers.get_all(&X_REQUEST_ID).iter();
    let Some(value) = values.next() else {
        return Decision::Generate(Why::Absent);
    };
    if !trusted_peer {
        return Decision::Generate(Why::Untrusted);
    }
    if values.next().is_some() || !well_formed(value.as_bytes()) {
        return Decision::Generate(Why::Malformed);
    }
    Decision::Keep(value.clone())
}

/// 1 to [`MAX_LENGTH`] visible ASCII characters (no spaces: an ID is one token in a log line).
pub fn well_formed(id: &[u8]) -> bool {
    (1..=MAX_LENGTH).contains(&id.len()) && id.iter().all(|byte| byte.is_ascii_graphic())
}

/// The request's ID as a header value: the kept one, or a new UUIDv7 (one allocation, the
/// value's own bytes).
pub fn resolve(headers: &HeaderMap, trusted_peer: bool) -> HeaderValue {
    match decide(headers, trusted_peer) {
        Decision::Keep(value) => value,
        Decision::Generate(_) => generate(),
    }
}

/// The ID as the response carries it: the same value, marked never to be indexed by HPACK
/// (RFC 7541 §7.1.3). A value unique to each response would only churn an HTTP/2
/// connection's header table, at a search and an insertion per response (perf under h2load:
/// the encoder's `memcmp` fell from 2.4 % to 0.9 % of the proxy's user samples).
pub fn echoed(id: &HeaderValue) -> HeaderValue {
    let mut echoed = id.clone();
    echoed.set_sensitive(true);
    echoed
}

/// A new UUIDv7 from the clock and the thread's random generator: one allocation, which holds
/// the text and the reference count (`Bytes::from_owner`), so that the copies for the server,
/// the response and the log line are counts, not allocations.
pub fn generate() -> HeaderValue {
    let since_epoch = crate::clock::wall_now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let text = uuid_v7(
        u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
        since_epoch.subsec_nanos() % 1_000_000,
        rand::random(),
    );
    // Lowercase hex digits and '-' only: always a valid header value.
    HeaderValue::from_maybe_shared(Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// A UUIDv7 in its hyphenated text form (RFC 9562 §4, §5.7): 48 bits of Unix milliseconds,
/// the version, 12 bits of the millisecond's fraction in place of random bits (§6.2 method 3,
/// so IDs made within one millisecond still sort by time), the variant, 62 random bits.
pub fn uuid_v7(unix_ms: u64, nanos_in_ms: u32, random: u64) -> [u8; 36] {
    let fraction = u64::from(nanos_in_ms.min(999_999)) * 4096 / 1_000_000;
    let high = ((unix_ms & 0xFFFF_FFFF_FFFF) << 16) | (0x7 << 12) | fraction;
    let low = (0b10 << 62) | (random >> 2);
    let value = (u128::from(high) << 64) | u128::from(low);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; 36];
    // Two digits per byte, and a '-' before bytes 4, 6, 8 and 10 (8-4-4-4-12 digits): a
    // shift of the 128-bit value per digit cost about 500 instructions per request.
    let mut at = 0;
    for (index, byte) in value.to_be_bytes().into_iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0xF)];
        at += 2;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("host", HeaderValue::from_static("a.test"));
        for value in values {
            map.append(
                X_REQUEST_ID,
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        map
    }

    #[test]
    fn a_trusted_proxys_well_formed_id_is_kept_and_everything_else_replaced() {
        let id = "0192e7a8-1c3b-7f00-8a1b-2c3d4e5f6a7b";
        assert_eq!(
            decide(&headers(&[id]), true),
            Decision::Keep(HeaderValue::from_static(id))
        );
        assert_eq!(
            decide(&headers(&["any-token_1.2"]), true),
            Decision::Keep(HeaderValue::from_static("any-token_1.2")),
            "any visible ASCII token, not only UUIDs"
        );
        assert_eq!(
            decide(&headers(&[id]), false),
            Decision::Generate(Why::Untrusted),
            "a client's own ID is never believed"
        );
        assert_eq!(decide(&headers(&[]), true), Decision::Generate(Why::Absent));
        assert_eq!(
            decide(&headers(&[]), false),
            Decision::Generate(Why::Absent)
        );
        for bad in ["", "two words", "tab\there", "\u{e9}t\u{e9}"] {
            let mut map = HeaderMap::new();
            map.insert(
                X_REQUEST_ID,
                HeaderValue::from_bytes(bad.as_bytes()).expect("a header value"),
            );
            assert_eq!(
                decide(&map, true),
                Decision::Generate(Why::Malformed),
                "{bad:?}"
            );
        }
        let long = "a".repeat(MAX_LENGTH + 1);
        assert_eq!(
            decide(&headers(&[&long]), true),
            Decision::Generate(Why::Malformed)
        );
        assert_eq!(
            decide(&headers(&[&long[1..]]), true),
            Decision::Keep(HeaderValue::from_str(&long[1..]).expect("value")),
            "exactly MAX_LENGTH is kept"
        );
        assert_eq!(
            decide(&headers(&["a", "b"]), true),
            Decision::Generate(Why::Malformed),
            "two IDs are no ID"
        );
    }

    #[test]
    fn resolve_returns_the_kept_id_or_a_fresh_uuid() {
        assert_eq!(resolve(&headers(&["abc"]), true), "abc");
        let fresh = resolve(&headers(&["abc"]), false);
        assert_ne!(fresh, "abc");
        assert_eq!(fresh.len(), 36);
    }

    #[test]
    fn uuid_v7_has_the_timestamp_version_and_variant_of_rfc_9562() {
        // RFC 9562 Appendix A.6: 2022-02-22 19:22:22 UTC is 0x017F22E279B0 ms.
        let text = uuid_v7(0x017F_22E2_79B0, 0, u64::MAX);
        let text = std::str::from_utf8(&text).expect("ascii");
        assert_eq!(&text[..14], "017f22e2-79b0-", "{text}");
        assert_eq!(&text[14..15], "7", "version 7: {text}");
        assert_eq!(&text[15..18], "000", "no fraction: {text}");
        assert_eq!(&text[19..20], "b", "variant 10 and two random bits: {text}");
        assert_eq!(&text[20..], "fff-ffffffffffff", "{text}");
        let groups: Vec<usize> = text.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        let zero = uuid_v7(0, 0, 0);
        assert_eq!(&zero, b"00000000-0000-7000-8000-000000000000");
        // Every digit in its place: random 0x0123456789ABCDEF >> 2 under the variant bits.
        let digits = uuid_v7(0x0123_4567_89AB, 0, 0x0123_4567_89AB_CDEF);
        assert_eq!(&digits, b"01234567-89ab-7000-8048-d159e26af37b");
    }

    #[test]
    fn ids_sort_by_time_also_within_one_millisecond() {
        let earlier = uuid_v7(1_700_000_000_000, 100_000, u64::MAX);
        let later = uuid_v7(1_700_000_000_000, 900_000, 0);
        let next_ms = uuid_v7(1_700_000_000_001, 0, 0);
        assert!(earlier < later, "the millisecond's fraction orders them");
        assert!(later < next_ms);
        assert_eq!(
            &uuid_v7(0, 999_999, 0)[15..18],
            b"fff",
            "the fraction fills 12 bits"
        );
    }

    #[test]
    fn the_echoed_id_is_the_same_value_never_indexed() {
        let id = generate();
        let echoed = echoed(&id);
        assert_eq!(echoed, id);
        assert!(echoed.is_sensitive());
        assert!(
            !id.is_sensitive(),
            "the server's copy and the log's are not marked"
        );
    }

    #[test]
    fn generated_ids_are_valid_and_different() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(well_formed(a.as_bytes()));
        assert_eq!(a.as_bytes()[14], b'7');
    }
}
