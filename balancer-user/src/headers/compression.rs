//! Response compression policy (route `compress`), pure: which content coding the client
//! prefers (`Accept-Encoding`, RFC 9110 §12.5.3), whether a response may be compressed at all,
//! and the header changes that go with a compressed body. The streaming encoder is
//! proxy/compress.rs.

use hyper::{
    HeaderMap, Method, StatusCode,
    header::{self, HeaderValue},
};

/// The codings the proxy produces, in the order that breaks a tie of equal weights: brotli
/// makes the smallest text at the speeds used here (its built-in dictionary is made of web
/// content), zstd is next and faster to decode, gzip is what every client has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Zstd,
    Gzip,
}

impl Coding {
    pub const PREFERENCE: [Coding; 3] = [Coding::Brotli, Coding::Zstd, Coding::Gzip];

    /// The content-coding token (RFC 9110 §8.4.1, RFC 7932, RFC 8878).
    pub fn token(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    fn index(self) -> usize {
        match self {
            Coding::Brotli => 0,
            Coding::Zstd => 1,
            Coding::Gzip => 2,
        }
    }

    fn from_token(token: &str) -> Option<Coding> {
        Coding::PREFERENCE
            .into_iter()
            .find(|coding| token.eq_ignore_ascii_case(coding.token()))
            // RFC 9110 §8.4.1.3: "x-gzip" is to be read as "gzip".
            .or_else(|| token.eq_ignore_ascii_case("x-gzip").then_some(Coding::Gzip))
    }
}

/// Responses smaller than this (by `Content-Length`) are sent as they are: the coding's own
/// framing and the CPU would cost more than the few bytes saved. A response without a length
/// (streamed) is compressed whatever its size.
pub const MIN_LENGTH: u64 = 1024;

/// The coding for a request's response: `None` for HEAD and CONNECT (no body to encode; an
/// RFC 8441 tunnel is a 200 whose body is the tunnel), or when the client accepts none.
pub fn for_request(method: &Method, headers: &HeaderMap) -> Option<Coding> {
    if *method == Method::HEAD || *method == Method::CONNECT {
        return None;
    }
    negotiate(headers.get_all(header::ACCEPT_ENCODING))
}

/// The client's preferred coding among ours (RFC 9110 §12.5.3): the highest weight wins, ties
/// go by [`Coding::PREFERENCE`]; `q=0` refuses a coding; `*` stands for every coding the field
/// does not name. No field: none (a client that says nothing gets what it surely reads). An
/// element whose weight does not parse is ignored.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Option<Coding> {
    // Weights in thousandths (a qvalue has at most three decimals, RFC 9110 §12.4.2).
    let mut named: [Option<u16>; 3] = [None; 3];
    let mut star: Option<u16> = None;
    for value in values {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for element in text.split(',') {
            let mut parts = element.split(';');
            let token = parts.next().unwrap_or_default().trim();
            if token.is_empty() {
                continue;
            }
            let mut weight = Some(1000);
            for param in parts {
                let Some((name, value)) = param.split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("q") {
                    weight = qvalue(value.trim());
                }
            }
            let Some(weight) = weight else {
                continue;
            };
            // Named twice: the lower weight (a refusal anywhere is a refusal).
            let slot = if token == "*" {
                &mut star
            } else if let Some(coding) = Coding::from_token(token) {
                &mut named[coding.index()]
            } else {
                continue;
            };
            *slot = Some(slot.map_or(weight, |earlier| earlier.min(weight)));
        }
    }
    let mut best: Option<(Coding, u16)> = None;
    for coding in Coding::PREFERENCE {
        let weight = named[coding.index()].or(star).unwrap_or(0);
        if weight > 0 && best.is_none_or(|(_, top)| weight > top) {
            best = Some((coding, weight));
        }
    }
    best.map(|(coding, _)| coding)
}

/// A qvalue in thousandths: `0`, `0.5`, `1`, `1.000` (RFC 9110 §12.4.2); `None` if malformed.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |sum, digit| sum * 10 + u16::from(digit - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Whether compression applies to this response at all, whatever the client accepts (such a
/// response varies by `Accept-Encoding`): a status with content that is not a part of a
/// representation (not 1xx, 204, 206, 304), not encoded by the server already, not marked
/// `no-transform` (RFC 9111 §5.2.2.6), of a compressible type, and not known to be smaller
/// than [`MIN_LENGTH`].
pub fn compressible(status: StatusCode, headers: &HeaderMap) -> bool {
    if status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
    {
        return false;
    }
    let encoded = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|value| {
            !value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"identity")
        });
    if encoded || headers.contains_key(header::CONTENT_RANGE) {
        return false;
    }
    let no_transform = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-transform"));
    if no_transform {
        return false;
    }
    let typed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(compressible_type);
    if !typed {
        return false;
    }
    match headers.get(header::CONTENT_LENGTH) {
        None => true,
        Some(length) => length
            .to_str()
            .ok()
            .and_then(|length| length.trim().parse::<u64>().ok())
            .is_some_and(|length| length >= MIN_LENGTH),
    }
}

/// Media types that are text underneath (or uncompressed binary that shrinks as well):
/// `text/*` but event streams (each event would wait on, or pay for, a flush of the encoder),
/// JSON, JavaScript, XML and their `+json` / `+xml` kinds, SVG, icons, WebAssembly, TrueType
/// and OpenType fonts. Images, video, archives and WOFF fonts are compressed already.
pub fn compressible_type(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let Some((top, sub)) = media.split_once('/') else {
        return false;
    };
    let is = |name: &str| sub.eq_ignore_ascii_case(name);
    let ends_with = |suffix: &str| {
        sub.len() > suffix.len()
            && sub.as_bytes()[sub.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
    };
    if top.eq_ignore_ascii_case("text") {
        !is("event-stream")
    } else if top.eq_ignore_ascii_case("application") {
        [
            "json",
            "javascript",
            "x-javascript",
            "ecmascript",
            "xml",
            "wasm",
        ]
        .into_iter()
        .any(is)
            || ends_with("+json")
            || ends_with("+xml")
    } else if top.eq_ignore_ascii_case("image") {
        ["svg+xml", "x-icon", "vnd.microsoft.icon", "bmp"]
            .into_iter()
            .any(is)
    } else if top.eq_ignore_ascii_case("font") {
        ["ttf", "otf"].into_iter().any(is)
    } else {
        false
    }
}

/// Says that the response depends on `Accept-Encoding` (RFC 9110 §12.5.5), so that a cache
/// never gives a compressed answer to a client that did not ask for it: added to the `Vary`
/// the server sent, unless it lists it already or is `*`.
pub fn add_vary(headers: &mut HeaderMap) {
    let mut listed = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .peekable();
    if listed.peek().is_none() {
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        return;
    }
    let mut joined = String::new();
    for name in listed {
        if name == "*" || name.eq_ignore_ascii_case("accept-encoding") {
            return;
        }
        joined.push_str(name);
        joined.push_str(", ");
    }
    joined.push_str("Accept-Encoding");
    if let Ok(value) = HeaderValue::from_str(&joined) {
        headers.insert(header::VARY, value);
    }
}

/// The headers of a response whose body is now encoded with `coding`: its length is unknown
/// (chunked, or the end of an HTTP/2 stream), byte ranges and digests of the original no
/// longer apply, and the representation differs, so a strong validator becomes weak
/// (RFC 9110 §8.8.1: two encodings of one resource are not byte for byte the same).
pub fn mark_encoded(headers: &mut HeaderMap, coding: Coding) {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    headers.remove("content-md5");
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    weaken_etag(headers);
}

/// `"x"` becomes `W/"x"`: what the client gets is no longer the server's exact bytes.
pub fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else {
        return;
    };
    if etag.as_bytes().starts_with(b"\"") {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(weak) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, weak);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> Option<Coding> {
        let values: Vec<HeaderValue> = values
            .iter()
            .map(|value| HeaderValue::from_str(value).expect("a header value"))
            .collect();
        negotiate(&values)
    }

    #[test]
    fn the_highest_weight_wins_and_ties_prefer_br_then_zstd_then_gzip() {
        use Coding::*;
        assert_eq!(accept(&[]), None, "no field: nothing");
        assert_eq!(accept(&[""]), None, "an empty field: identity only");
        assert_eq!(accept(&["gzip"]), Some(Gzip));
        assert_eq!(accept(&["gzip, deflate, br, zstd"]), Some(Brotli));
        assert_eq!(accept(&["gzip, zstd"]), Some(Zstd));
        assert_eq!(accept(&["br;q=0.5, gzip;q=0.8, zstd;q=0.7"]), Some(Gzip));
        assert_eq!(accept(&["br;q=0.5", "zstd;q=0.501"]), Some(Zstd));
        assert_eq!(accept(&["GZIP;Q=1.000"]), Some(Gzip), "case-insensitive");
        assert_eq!(accept(&[" gzip ; q=0.2 ,br ; q = 0.1"]), Some(Gzip));
        assert_eq!(accept(&["x-gzip"]), Some(Gzip), "RFC 9110 §8.4.1.3");
        assert_eq!(accept(&["deflate, compress, identity"]), None);
    }

    #[test]
    fn q_zero_refuses_and_star_stands_for_the_codings_not_named() {
        use Coding::*;
        assert_eq!(accept(&["gzip;q=0"]), None);
        assert_eq!(accept(&["br;q=0, gzip"]), Some(Gzip));
        assert_eq!(accept(&["*"]), Some(Brotli));
        assert_eq!(accept(&["*;q=0"]), None);
        assert_eq!(accept(&["*, br;q=0"]), Some(Zstd));
        assert_eq!(accept(&["*;q=0.1, gzip;q=0.5"]), Some(Gzip));
        assert_eq!(accept(&["*;q=0, gzip"]), Some(Gzip));
        assert_eq!(
            accept(&["identity;q=0"]),
            None,
            "refusing identity accepts nothing of ours"
        );
        assert_eq!(
            accept(&["gzip, gzip;q=0"]),
            None,
            "named twice: the refusal holds"
        );
    }

    #[test]
    fn malformed_weights_ignore_their_element() {
        use Coding::*;
        for bad in ["1.5", "2", "0.1234", "-1", "abc", "", ".5", "1.001"] {
            assert_eq!(
                accept(&[&format!("br;q={bad}, gzip;q=0.1")]),
                Some(Gzip),
                "q={bad}"
            );
        }
        assert_eq!(qvalue("0."), Some(0));
        assert_eq!(qvalue("0.05"), Some(50));
        assert_eq!(qvalue("1."), Some(1000));
    }

    #[test]
    fn head_and_connect_get_no_coding() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(for_request(&Method::GET, &headers), Some(Coding::Gzip));
        assert_eq!(for_request(&Method::POST, &headers), Some(Coding::Gzip));
        assert_eq!(for_request(&Method::HEAD, &headers), None);
        assert_eq!(for_request(&Method::CONNECT, &headers), None);
    }

    fn response(headers: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn compressible_responses_are_big_enough_text_the_server_left_alone() {
        let ok = StatusCode::OK;
        let text = [("content-type", "text/plain"), ("content-length", "5000")];
        assert!(compressible(ok, &response(&text)));
        assert!(compressible(StatusCode::NOT_FOUND, &response(&text)));
        assert!(
            compressible(ok, &response(&[("content-type", "application/json")])),
            "no length: streamed, compressed whatever its size"
        );
        assert!(!compressible(
            ok,
            &response(&[("content-type", "text/plain"), ("content-length", "1023")])
        ));
        assert!(compressible(
            ok,
            &response(&[("content-type", "text/plain"), ("content-length", "1024")])
        ));
        for status in [
            StatusCode::NO_CONTENT,
            StatusCode::PARTIAL_CONTENT,
            StatusCode::NOT_MODIFIED,
            StatusCode::SWITCHING_PROTOCOLS,
        ] {
            assert!(!compressible(status, &response(&text)), "{status}");
        }
        let with = |extra: (&'static str, &'static str)| {
            let mut headers = text.to_vec();
            headers.push(extra);
            response(&headers)
        };
        assert!(!compressible(ok, &with(("content-encoding", "gzip"))));
        assert!(compressible(ok, &with(("content-encoding", "identity"))));
        assert!(!compressible(
            ok,
            &with(("content-range", "bytes 0-9/5000"))
        ));
        assert!(!compressible(
            ok,
            &with(("cache-control", "public, No-Transform"))
        ));
        assert!(compressible(ok, &with(("cache-control", "max-age=60"))));
        assert!(!compressible(ok, &response(&[("content-length", "5000")])));
        assert!(!compressible(
            ok,
            &response(&[("content-type", "image/png"), ("content-length", "5000")])
        ));
    }

    #[test]
    fn text_like_types_are_compressible_and_encoded_ones_not() {
        for yes in [
            "text/html; charset=utf-8",
            "text/css",
            "TEXT/PLAIN",
            "application/json",
            "application/javascript",
            "application/xml",
            "application/problem+json",
            "application/atom+xml",
            "application/ld+json;profile=x",
            "image/svg+xml",
            "font/ttf",
            "application/wasm",
        ] {
            assert!(compressible_type(yes), "{yes}");
        }
        for no in [
            "text/event-stream",
            "image/png",
            "image/jpeg",
            "application/octet-stream",
            "application/zip",
            "application/gzip",
            "font/woff2",
            "video/mp4",
            "application/+json",
            "json",
            "",
        ] {
            assert!(!compressible_type(no), "{no}");
        }
    }

    #[test]
    fn vary_gets_accept_encoding_once() {
        let mut none = HeaderMap::new();
        add_vary(&mut none);
        assert_eq!(none["vary"], "Accept-Encoding");
        let mut cookie = response(&[("vary", "Cookie"), ("vary", "Origin, ")]);
        add_vary(&mut cookie);
        assert_eq!(
            cookie.get_all("vary").iter().collect::<Vec<_>>(),
            ["Cookie, Origin, Accept-Encoding"]
        );
        let mut already = response(&[("vary", "accept-encoding, Cookie")]);
        add_vary(&mut already);
        assert_eq!(already["vary"], "accept-encoding, Cookie");
        let mut star = response(&[("vary", "*")]);
        add_vary(&mut star);
        assert_eq!(star["vary"], "*");
    }

    #[test]
    fn an_encoded_response_loses_its_length_and_ranges_and_its_etag_weakens() {
        let mut headers = response(&[
            ("content-type", "text/plain"),
            ("content-length", "5000"),
            ("accept-ranges", "bytes"),
            ("etag", "\"abc\""),
        ]);
        mark_encoded(&mut headers, Coding::Zstd);
        assert_eq!(headers.get("content-length"), None);
        assert_eq!(headers.get("accept-ranges"), None);
        assert_eq!(headers["content-encoding"], "zstd");
        assert_eq!(headers["etag"], "W/\"abc\"");
        let mut weak = response(&[("etag", "W/\"abc\"")]);
        weaken_etag(&mut weak);
        assert_eq!(weak["etag"], "W/\"abc\"");
    }
}
