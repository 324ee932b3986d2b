//! The property from the issue: for arbitrary byte streams, the engine either refuses, or
//! forwards requests that an independent parse (httparse plus this file's own framing) reads
//! back as the same requests.
//!
//! The input (after a first byte that picks the limits and a chunk size) is what a client
//! sends on one connection: pipelined requests. Each head goes through `head::parse_request`,
//! each body through the engine's framing (Content-Length bytes, or `ChunkedDecoder`). For every
//! accepted request:
//! - the engine's reading of the client's bytes must agree with an independent reading of the
//!   same bytes (httparse, and framing written here): same head length, method, target, fields,
//!   body and body end. Two readers disagreeing on where a message ends is request smuggling;
//! - what the proxy forwards, written once with `content-length` and once re-chunked, must read
//!   back independently as exactly one request with the same method, target, fields and body,
//!   with no byte left over (a leftover would be a second request the client smuggled through).

#![no_main]

use std::collections::BTreeMap;

use balancer_fuzz::chunked::{self, ChunkedDecoder};
use balancer_fuzz::head::{self, Framing, HeadLimits, RequestHead};
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut stream)) = data.split_first() else {
        return;
    };
    let limits = balancer_fuzz::limits(selector);
    // Size of the chunks a Content-Length body is re-chunked into (varied: the reader must
    // not care where chunk boundaries are).
    let piece = 1 + usize::from(selector >> 2);
    loop {
        let Some((head, head_len)) = engine_head(stream, &limits) else {
            break;
        };
        let after_head = &stream[head_len..];
        let Some((runs, body_len)) = engine_body(&head, after_head) else {
            break;
        };
        let body = runs.concat();
        independent_reading(stream, head_len, &head, &body, body_len, &limits);
        let target = forwarded_target(&head);
        forward_with_length(&head, &target, &body);
        let pieces: Vec<&[u8]> = match head.framing {
            // The engine forwards a chunked body run by run, as the decoder finds the data.
            Framing::Chunked => runs,
            _ => body.chunks(piece).collect(),
        };
        forward_chunked(&head, &target, &pieces, &body);
        stream = &after_head[body_len..];
    }
});

/// `parse_request` on the buffered bytes, with the contract's checks on every outcome.
fn engine_head(buf: &[u8], limits: &HeadLimits) -> Option<(RequestHead, usize)> {
    match head::parse_request(buf, limits) {
        Ok(Some((head, len))) => {
            assert!(
                len > 0 && len <= buf.len(),
                "head length {len} of {}",
                buf.len()
            );
            // The outcome must not depend on how the bytes arrived: every shorter read of the
            // same head is "incomplete", never an error and never another head.
            for end in [len - 1, len / 2] {
                let partial = head::parse_request(&buf[..end], limits);
                assert!(
                    matches!(partial, Ok(None)),
                    "prefix of {end} bytes of an accepted {len}-byte head: {:?}",
                    partial.map(|r| r.map(|(_, len)| len))
                );
            }
            Some((head, len))
        }
        Ok(None) => {
            // The contract: a full buffer without a complete head is an error (414/431), so a
            // client cannot make us buffer more than max_head_bytes.
            assert!(
                buf.len() < limits.max_head_bytes,
                "incomplete with {} bytes buffered (max_head_bytes {})",
                buf.len(),
                limits.max_head_bytes
            );
            None
        }
        Err(e) => {
            assert!((400..=599).contains(&e.status), "{e:?}");
            None
        }
    }
}

/// The body as the engine delimits it: its data runs and how many bytes it took. None when the
/// input ends first or the chunked framing is refused (then the engine stops reading).
fn engine_body<'a>(head: &RequestHead, after_head: &'a [u8]) -> Option<(Vec<&'a [u8]>, usize)> {
    match head.framing {
        Framing::Empty => Some((Vec::new(), 0)),
        Framing::Length(n) => {
            let n = usize::try_from(n).ok().filter(|&n| n <= after_head.len())?;
            Some((vec![&after_head[..n]], n))
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut runs = Vec::new();
            let mut at = 0;
            loop {
                let input = &after_head[at..];
                let decoded = decoder.decode(input).ok()?;
                assert!(decoded.consumed <= input.len());
                if !decoded.data.is_empty() {
                    assert_eq!(decoded.data.end, decoded.consumed, "data ends at consumed");
                    runs.push(&input[decoded.data.clone()]);
                }
                at += decoded.consumed;
                if decoded.done {
                    assert!(decoder.is_done());
                    return Some((runs, at));
                }
                if decoded.consumed == 0 {
                    assert!(input.is_empty(), "no progress on {} bytes", input.len());
                    return None;
                }
            }
        }
        Framing::CloseDelimited => panic!("a request is never close-delimited (RFC 9112 §6.3)"),
    }
}

/// Reads the client's bytes again without head.rs or chunked.rs and checks that the engine saw
/// the same request there.
fn independent_reading(
    stream: &[u8],
    head_len: usize,
    head: &RequestHead,
    body: &[u8],
    body_len: usize,
    limits: &HeadLimits,
) {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut slots);
    let parsed = req.parse(stream);
    assert!(
        matches!(parsed, Ok(httparse::Status::Complete(len)) if len == head_len),
        "httparse reads the accepted {head_len}-byte head as {parsed:?}"
    );
    assert_eq!(req.method, Some(head.method.as_str()), "method");
    let target = req.path.expect("complete request has a target");
    assert_eq!(
        forwarded_target(head),
        origin_form(target),
        "target {target:?}"
    );

    // Fields: the same values under the same (lowercased) names, in the same order per name
    // (HeaderMap groups a name's values together, so the order across names may differ).
    let mut received: BTreeMap<String, Vec<&[u8]>> = BTreeMap::new();
    for field in req.headers.iter() {
        received
            .entry(field.name.to_ascii_lowercase())
            .or_default()
            .push(field.value);
    }
    let mut parsed_by_engine: BTreeMap<String, Vec<&[u8]>> = BTreeMap::new();
    for (name, value) in &head.headers {
        parsed_by_engine
            .entry(name.as_str().to_owned())
            .or_default()
            .push(value.as_bytes());
    }
    assert_eq!(received, parsed_by_engine, "fields");

    let after_head = &stream[head_len..];
    let (model_body, model_len) = match model_framing(req.headers) {
        ModelFraming::Empty => {
            assert_eq!(head.framing, Framing::Empty);
            (Vec::new(), 0)
        }
        ModelFraming::Length(n) => {
            assert_eq!(head.framing, Framing::Length(n));
            let n = usize::try_from(n).expect("the engine took n bytes");
            (after_head[..n].to_vec(), n)
        }
        ModelFraming::Chunked => {
            assert_eq!(head.framing, Framing::Chunked);
            model_dechunk(after_head).expect("the model refuses a chunked body the engine took")
        }
    };
    assert_eq!(model_len, body_len, "where the body ends");
    assert_eq!(model_body, body, "body");
}

/// The request-target the proxy sends upstream, derived as the engine does: handler.rs builds
/// it from `Uri::path` (which is "/" when an absolute-form target has an empty path) and the
/// query, and upstream/client.rs writes that. `Uri::path_and_query` alone would give "?q" for
/// "http://h?q", which is not a valid origin-form. "*" is the path of the asterisk-form.
fn forwarded_target(head: &RequestHead) -> String {
    match head.uri.query() {
        Some(query) => format!("{}?{query}", head.uri.path()),
        None => head.uri.path().to_owned(),
    }
}

/// The origin-form of a received request-target, derived from its text alone (RFC 9112 §3.2).
fn origin_form(target: &str) -> String {
    if target == "*" || target.starts_with('/') {
        return target.to_owned();
    }
    // absolute-form: scheme "://" authority path-abempty [ "?" query ]; the authority ends at
    // the first "/" or "?" (head.rs refuses fragments).
    let (_, rest) = target.split_once("://").unwrap_or_else(|| {
        panic!("accepted target {target:?} is neither origin- nor absolute-form")
    });
    let path_and_query = &rest[rest.find(['/', '?']).unwrap_or(rest.len())..];
    // RFC 9112 §3.2.1: "If the target URI's path component is empty, the client MUST send "/"
    // as the path within the origin-form".
    if path_and_query.starts_with('/') {
        path_and_query.to_owned()
    } else {
        format!("/{path_and_query}")
    }
}

/// The fields the proxy forwards: the received ones without the framing and hop-by-hop fields
/// it replaces.
fn forwarded_fields(head: &RequestHead) -> HeaderMap {
    let mut fields = head.headers.clone();
    for name in [
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::CONNECTION,
        header::EXPECT,
    ] {
        fields.remove(name);
    }
    fields
}

/// Forwarded with the body's length (the engine's choice whenever it has the whole body).
fn forward_with_length(head: &RequestHead, target: &str, body: &[u8]) {
    let mut fields = forwarded_fields(head);
    fields.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut out = Vec::new();
    head::write_request_head(&mut out, &head.method, target, &fields, &[]);
    out.extend_from_slice(body);
    read_back(&out, head, target, &fields, body);
}

/// Forwarded chunked (the engine's choice when it streams a body of unknown length).
fn forward_chunked(head: &RequestHead, target: &str, pieces: &[&[u8]], body: &[u8]) {
    let mut fields = forwarded_fields(head);
    fields.insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    let mut out = Vec::new();
    head::write_request_head(&mut out, &head.method, target, &fields, &[]);
    for piece in pieces {
        chunked::encode_chunk(&mut out, piece);
    }
    out.extend_from_slice(chunked::LAST_CHUNK);
    read_back(&out, head, target, &fields, body);
}

/// What the next hop reads from the forwarded bytes: exactly this one request, nothing more.
fn read_back(forwarded: &[u8], head: &RequestHead, target: &str, fields: &HeaderMap, body: &[u8]) {
    let shown = || String::from_utf8_lossy(forwarded).into_owned();
    // One slot more than was written, so an extra field shows up as a difference below rather
    // than as TooManyHeaders.
    let mut slots = vec![httparse::EMPTY_HEADER; fields.len() + 1];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(forwarded) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!("forwarded head reads as {other:?}: {:?}", shown()),
    };
    assert_eq!(req.method, Some(head.method.as_str()), "forwarded method");
    assert_eq!(req.path, Some(target), "forwarded target");
    assert_eq!(req.version, Some(1), "forwarded version");
    let got: Vec<(&str, &[u8])> = req.headers.iter().map(|h| (h.name, h.value)).collect();
    let sent: Vec<(&str, &[u8])> = fields
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    assert_eq!(got, sent, "forwarded fields: {:?}", shown());

    let after_head = &forwarded[head_len..];
    let (read, used) = match model_framing(req.headers) {
        ModelFraming::Empty => (Vec::new(), 0),
        ModelFraming::Length(n) => {
            let n = usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(after_head.len());
            (after_head[..n].to_vec(), n)
        }
        ModelFraming::Chunked => model_dechunk(after_head)
            .unwrap_or_else(|| panic!("forwarded chunked body does not decode: {:?}", shown())),
    };
    assert_eq!(read, body, "forwarded body");
    assert_eq!(used, after_head.len(), "bytes after the forwarded request");
}

#[derive(Debug)]
enum ModelFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// RFC 9112 §6.3 for a request the engine accepted (so a form the engine refuses, such as both
/// Transfer-Encoding and Content-Length, is a failure here).
fn model_framing(fields: &[httparse::Header<'_>]) -> ModelFraming {
    let has = |name: &str| fields.iter().any(|f| f.name.eq_ignore_ascii_case(name));
    if has("transfer-encoding") {
        assert!(
            !has("content-length"),
            "Transfer-Encoding with Content-Length"
        );
        let codings: Vec<&[u8]> = list(fields, "transfer-encoding")
            .filter(|c| !c.is_empty())
            .collect();
        assert!(
            codings.len() == 1 && codings[0].eq_ignore_ascii_case(b"chunked"),
            "transfer codings other than chunked alone: {codings:?}"
        );
        return ModelFraming::Chunked;
    }
    if has("content-length") {
        let lengths: Vec<u64> = list(fields, "content-length")
            .map(|digits| {
                assert!(
                    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
                    "Content-Length element {digits:?}"
                );
                std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("Content-Length fits in u64")
            })
            .collect();
        assert!(
            lengths.windows(2).all(|w| w[0] == w[1]),
            "differing Content-Length values {lengths:?}"
        );
        return ModelFraming::Length(lengths[0]);
    }
    ModelFraming::Empty
}

/// The comma-separated elements of every field `name`, trimmed of OWS.
fn list<'a>(
    fields: &'a [httparse::Header<'a>],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    fields
        .iter()
        .filter(move |f| f.name.eq_ignore_ascii_case(name))
        .flat_map(|f| f.value.split(|&b| b == b','))
        .map(|element| element.trim_ascii())
}

/// A plain chunked decoder (RFC 9112 §7.1), independent of chunked.rs: every line ends in CRLF;
/// extensions and trailer fields are skipped whole. Returns the data and the bytes used, or
/// None when the body is malformed or incomplete.
fn model_dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut at = 0;
    let mut data = Vec::new();
    loop {
        let line = model_line(buf, &mut at)?;
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 16 {
            return None;
        }
        let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()?;
        if !matches!(line.get(digits), None | Some(b';' | b' ' | b'\t')) {
            return None;
        }
        if size == 0 {
            // Trailer section: field lines until the empty line.
            while !model_line(buf, &mut at)?.is_empty() {}
            return Some((data, at));
        }
        let end = at.checked_add(usize::try_from(size).ok()?)?;
        if buf.get(end..end.checked_add(2)?)? != b"\r\n" {
            return None;
        }
        data.extend_from_slice(&buf[at..end]);
        at = end + 2;
    }
}

/// The line starting at `at` without its CRLF; moves `at` past it. None without a CRLF-ended
/// line (a bare LF included).
fn model_line<'a>(buf: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let lf = buf[*at..].iter().position(|&b| b == b'\n')?;
    let line = buf[*at..*at + lf].strip_suffix(b"\r")?;
    *at += lf + 1;
    Some(line)
}
