//! `parse_response` on arbitrary bytes, for a GET and for a HEAD request: it never panics, and
//! an accepted head's framing and keep-alive agree with its fields (RFC 9112 §6.3, §9.3) as
//! read here independently. The map it builds holds exactly the end-to-end fields, in order:
//! the hop-by-hop ones (RFC 9110 §7.6.1) are left out but for a 101's. A head written back
//! with `write_response_head` parses to the same fields (what the proxy sends its client is
//! what the server said, with the proxy's own framing).

#![no_main]

use balancer_fuzz::head::{self, Framing, HeadLimits, ResponseHead};
use balancer_fuzz::hop_by_hop::HOP_BY_HOP;
use http::{HeaderMap, Method, StatusCode, Version, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let limits = balancer_fuzz::limits(selector);
    for method in [Method::GET, Method::HEAD] {
        match head::parse_response(input, &method, &limits) {
            Ok(Some((response, len))) => {
                assert!(len > 0 && len <= input.len(), "head length {len}");
                let received = fields_of(&input[..len]);
                check(&response, &received, &method);
                end_to_end(&response, &received);
                round_trip(&response, &method);
            }
            Ok(None) => assert!(
                input.len() < limits.max_head_bytes,
                "incomplete with {} bytes buffered",
                input.len()
            ),
            Err(e) => assert_eq!(e.status, 502, "{e:?}"),
        }
    }
});

/// The head's fields as the server sent them, by an independent parse (httparse) of the head.
fn fields_of(head: &[u8]) -> HeaderMap {
    let mut slots = vec![httparse::EMPTY_HEADER; 256];
    let mut parsed = httparse::Response::new(&mut slots);
    assert!(
        matches!(parsed.parse(head), Ok(httparse::Status::Complete(_))),
        "an accepted head that httparse does not read"
    );
    let mut fields = HeaderMap::new();
    for field in parsed.headers.iter() {
        fields.append(
            header::HeaderName::from_bytes(field.name.as_bytes()).expect("a parsed name"),
            header::HeaderValue::from_bytes(field.value).expect("a parsed value"),
        );
    }
    fields
}

/// The map holds every field the server sent but the hop-by-hop ones (for a 101: every field),
/// in the order sent.
fn end_to_end(response: &ResponseHead, received: &HeaderMap) {
    // A Connection line that is not visible text (obs-text) lists nothing (http::connection).
    let connection: Vec<&[u8]> = received
        .get_all(header::CONNECTION)
        .iter()
        .filter(|value| value.to_str().is_ok())
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(|option| option.trim_ascii())
        .collect();
    let hop_by_hop = |name: &header::HeaderName| {
        let name = name.as_str();
        // The names are the spec's (RFC 9110 §7.6.1, RFC 9112 §7.4); the decision is made
        // here, apart from the reader's.
        HOP_BY_HOP.contains(&name)
            || name == "proxy"
            || name.starts_with("proxy-")
            || (name != "host"
                && name != "content-length"
                && connection
                    .iter()
                    .any(|option| option.eq_ignore_ascii_case(name.as_bytes())))
    };
    let mut expected = HeaderMap::new();
    for (name, value) in received {
        if response.status == StatusCode::SWITCHING_PROTOCOLS || !hop_by_hop(name) {
            expected.append(name.clone(), value.clone());
        }
    }
    let order = |map: &HeaderMap| -> Vec<(String, Vec<u8>)> {
        map.iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect()
    };
    assert_eq!(order(&response.headers), order(&expected));
}

fn check(response: &ResponseHead, fields: &HeaderMap, method: &Method) {
    let status = response.status;
    let framing = response.framing;
    // RFC 9112 §6.3 item 1: no body, whatever the fields say.
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        assert_eq!(framing, Framing::Empty, "{status} to {method}");
    }
    match framing {
        Framing::Length(n) => {
            assert!(!fields.contains_key(header::TRANSFER_ENCODING));
            let elements = list(fields, header::CONTENT_LENGTH);
            assert!(!elements.is_empty(), "Length({n}) without Content-Length");
            for digits in elements {
                let parsed = std::str::from_utf8(digits)
                    .ok()
                    .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok());
                assert_eq!(parsed, Some(n), "Content-Length element {digits:?}");
            }
        }
        Framing::Chunked => {
            assert!(!fields.contains_key(header::CONTENT_LENGTH));
            let codings: Vec<&[u8]> = list(fields, header::TRANSFER_ENCODING)
                .into_iter()
                .filter(|c| !c.is_empty())
                .collect();
            assert!(
                codings
                    .last()
                    .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")),
                "Chunked with codings {codings:?}"
            );
            assert_eq!(response.version, Version::HTTP_11);
        }
        Framing::CloseDelimited | Framing::Empty => {}
    }
    // RFC 9112 §9.3 and Appendix C.2.2, from the Connection options.
    let options = list(fields, header::CONNECTION);
    let close = options.iter().any(|o| o.eq_ignore_ascii_case(b"close"));
    let keep_alive = options
        .iter()
        .any(|o| o.eq_ignore_ascii_case(b"keep-alive"));
    let persistent = !close && (response.version == Version::HTTP_11 || keep_alive);
    // A body that ends when the connection closes cannot be followed by another response.
    assert_eq!(
        response.keep_alive,
        persistent && framing != Framing::CloseDelimited,
        "keep_alive with {framing:?}, {:?}, Connection {options:?}",
        response.version
    );
}

/// The comma-separated elements of every field `name`, trimmed of OWS.
fn list(fields: &HeaderMap, name: header::HeaderName) -> Vec<&[u8]> {
    fields
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|e| e.trim_ascii())
        .collect()
}

fn round_trip(response: &ResponseHead, method: &Method) {
    let mut out = Vec::new();
    head::write_response_head(
        &mut out,
        response.version,
        response.status,
        &response.headers,
    );
    // Limits that fit exactly what was written: the writer adds no field.
    let limits = HeadLimits {
        max_head_bytes: out.len() + 1,
        max_headers: response.headers.len(),
        max_uri_bytes: 0,
    };
    let shown = || String::from_utf8_lossy(&out).into_owned();
    let Ok(Some((again, len))) = head::parse_response(&out, method, &limits) else {
        panic!("written head does not parse: {:?}", shown());
    };
    assert_eq!(len, out.len(), "{:?}", shown());
    assert_eq!(again.status, response.status);
    assert_eq!(again.version, response.version);
    assert_eq!(again.headers, response.headers);
    // The framing and connection fields the map no longer has are the proxy's to write: a
    // length the server gave stays, and so does a message without a body.
    if matches!(response.framing, Framing::Length(_) | Framing::Empty) {
        assert_eq!(again.framing, response.framing);
    }
    if response.status == StatusCode::SWITCHING_PROTOCOLS {
        assert_eq!(again.keep_alive, response.keep_alive);
    }
}
