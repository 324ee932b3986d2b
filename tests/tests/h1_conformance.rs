//! HTTP/1.1 framing conformance of the L7 proxy: a table of raw-socket cases, each citing the
//! section of RFC 9110 (semantics) or RFC 9112 (HTTP/1.1 messages) it checks.
//!
//! Every case writes raw bytes to the proxy on a fresh TCP connection, reads what comes back
//! (until the connection closes or the expected responses are complete), and checks:
//! (a) the status line(s) the client got, and whether the proxy closed the connection;
//! (b) exactly the bytes the server received, byte for byte;
//! (c) how many requests the server parsed out of them, so that no case smuggles a request.
//!
//! The server is a recording one written here ([`Recorder`]) rather than `l7_backend`: an HTTP
//! library would normalise away the very framing details these cases are about. It parses what
//! the proxy sends strictly (httparse, plus its own Content-Length and chunked framing), answers
//! each request with a small fixed response (its body is the request target, so pipelined
//! answers can be told apart), and has scripted answers under `/r/…` for the response-side
//! cases ([`reply`]).
//!
//! The expectations are the target behaviour: what the RFCs require of a proxy, and where they
//! leave a choice, the proxy's own rule (stated on the case). They are not weakened to match a
//! given implementation. Where the proxy is free to do either (e.g. to close after a refusal
//! that left the framing intact), the case says so with [`Close::Either`] or a set of status
//! codes.
//!
//! What the proxy adds to or changes in a forwarded request (forwarded headers, the spelling of
//! field names, the position of a re-framed body's Transfer-Encoding) is written in one place:
//! the "What the proxy adds" section below.
//!
//! One namespace, one recording server and one balancer per test function; its cases run one
//! after another. Every failing case is reported (name, RFC section, what was sent, what the
//! client got, what the server got), not only the first.

mod l7_support;

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use balancer_tests::{BalancerProcess, L7Net};
use l7_support::{LISTEN, start};

/// The recording server, inside the test's namespace.
const SERVER: &str = "127.0.0.1:18080";
/// How long a case keeps reading after its responses are complete: an extra response (a
/// smuggled request answered) or a close arrives within it on loopback.
const GRACE: Duration = Duration::from_millis(200);
/// How long a case that expects the proxy to close waits for it.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// The most a case waits for its responses.
const RESPONSE_WAIT: Duration = Duration::from_secs(5);
/// The server is considered done with a case after this long without a byte.
const SERVER_QUIET: Duration = Duration::from_millis(100);

/// What a new user would write: one plain listener, one route, one pool with one server.
fn config() -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "{LISTEN}"

[[route]]
listener = "web"
pool = "app"

[pool.app]
servers = [ {{ url = "http://{SERVER}" }} ]
"#
    )
}

// ---------------------------------------------------------------------------------------------
// What the proxy adds: every convention of the forwarded request that is the proxy's choice
// rather than the client's lives here, so that another implementation adjusts it in one place.

/// How a client's field name is spelled towards the server (field names are case-insensitive,
/// RFC 9110 §5.1; hyper writes them in lowercase).
fn name_as_forwarded(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// The fields the proxy appends to every forwarded request (README, "Forwarded headers" and
/// `request_id`), for a client on 127.0.0.1 of the plain listener whose request names `host`
/// (empty: none). The request ID is new for every request: compared as [`REQUEST_ID`] (see
/// [`mask_request_ids`]).
fn proxy_added(host: &str) -> String {
    format!("{}{}", request_id_added(), forwarded_added(host))
}

/// The request ID field of [`proxy_added`] (set when the request's own fields are clean).
fn request_id_added() -> String {
    format!("x-request-id: {REQUEST_ID}\r\n")
}

/// The forwarded fields of [`proxy_added`].
fn forwarded_added(host: &str) -> String {
    let mut fields = String::from("x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n");
    if !host.is_empty() {
        fields.push_str(&format!("x-forwarded-host: {host}\r\n"));
    }
    fields.push_str("x-forwarded-port: 8080\r\nforwarded: for=127.0.0.1;proto=http");
    if !host.is_empty() {
        fields.push_str(&format!(";host={host}"));
    }
    fields.push_str("\r\n");
    fields
}

/// What a request ID the proxy made is compared as.
const REQUEST_ID: &str = "<uuid-v7>";

/// `bytes` with the value of each `x-request-id` field that is a UUIDv7 (RFC 9562: 8-4-4-4-12
/// lowercase hex digits, version 7) replaced by [`REQUEST_ID`]; any other value stays as it
/// is, and so fails the comparison.
fn mask_request_ids(bytes: &[u8]) -> Vec<u8> {
    const FIELD: &[u8] = b"\r\nx-request-id: ";
    let is_uuid_v7 = |value: &[u8]| {
        value.len() == 36
            && value.iter().enumerate().all(|(i, &b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                14 => b == b'7',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            })
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = rest.windows(FIELD.len()).position(|w| w == FIELD) {
        let value_at = at + FIELD.len();
        out.extend_from_slice(&rest[..value_at]);
        rest = &rest[value_at..];
        if rest.get(..36).is_some_and(is_uuid_v7) && rest[36..].starts_with(b"\r\n") {
            out.extend_from_slice(REQUEST_ID.as_bytes());
            rest = &rest[36..];
        }
    }
    out.extend_from_slice(rest);
    out
}

/// The framing field of a chunked request body as forwarded: the client's Transfer-Encoding is
/// hop-by-hop and removed, and the proxy reads a body up to 64 KiB whole before it chooses a
/// server (README, "HTTP/1.1"), so it frames the body anew with its length (as nginx does when
/// it buffers; WSGI servers that cannot read chunked bodies get them too), placed after
/// [`proxy_added`].
fn reframed(length: usize) -> String {
    format!("content-length: {length}\r\n")
}

/// The fields of a WebSocket upgrade request (RFC 6455 §4.1) as the server must receive them:
/// the client's, in its order, except Connection, which is hop-by-hop and which the proxy
/// writes anew for the upgrade it forwards.
fn websocket_fields_forwarded() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Host", "x"),
        ("Connection", "upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]
}

/// The client's side of [`websocket_fields_forwarded`], after `Host: x`.
const WEBSOCKET_FIELDS: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\n\
                                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                                Sec-WebSocket-Version: 13\r\n";

/// A request body as the server must receive it.
enum Sent<'a> {
    /// No body and no framing field added by the proxy (a Content-Length the client sent is one
    /// of the client's fields).
    Plain(&'a [u8]),
    /// The client's chunks (extensions and trailers dropped), forwarded as one body with
    /// [`reframed`] added.
    Chunked(&'a [&'a [u8]]),
}

/// A request as the server must receive it: the request line (always HTTP/1.1, origin-form),
/// the client's `fields` in the client's order as the proxy keeps them (Host where the client
/// put it; hop-by-hop fields left out by the caller), [`proxy_added`] for `host`, then the body.
fn forwarded(
    method: &str,
    target: &str,
    host: &str,
    fields: &[(&str, &str)],
    body: Sent<'_>,
) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in fields {
        head.push_str(&format!("{}: {value}\r\n", name_as_forwarded(name)));
    }
    head.push_str(&proxy_added(host));
    let mut bytes = Vec::new();
    match body {
        Sent::Plain(body) => {
            head.push_str("\r\n");
            bytes.extend_from_slice(head.as_bytes());
            bytes.extend_from_slice(body);
        }
        Sent::Chunked(chunks) => {
            let body = chunks.concat();
            head.push_str(&reframed(body.len()));
            head.push_str("\r\n");
            bytes.extend_from_slice(head.as_bytes());
            bytes.extend_from_slice(&body);
        }
    }
    bytes
}

/// `GET target` with `Host: x` and nothing else, as forwarded.
fn get_x(target: &str) -> Vec<u8> {
    forwarded("GET", target, "x", &[("Host", "x")], Sent::Plain(b""))
}

// ---------------------------------------------------------------------------------------------
// Cases

/// Whether the proxy must close the client connection after the case's responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    Closed,
    Open,
    /// The RFCs leave it to the proxy (the refusal left the framing intact).
    Either,
}

/// What the server must have received.
enum Upstream {
    /// Not a byte.
    Nothing,
    /// Exactly these requests, in this order, byte for byte, and nothing else.
    Requests(Vec<Vec<u8>>),
    /// No complete request: a proxy that streams may have sent a head and part of a body
    /// before it found the body's framing broken, but the server must never get a request it
    /// could act on.
    Incomplete,
}

struct Case {
    name: &'static str,
    rfc: &'static str,
    /// Written in order, [`Case::gap`] apart (reading meanwhile).
    send: Vec<Vec<u8>>,
    gap: Duration,
    /// The status codes the client must get, in order, each from its set.
    statuses: Vec<Vec<u16>>,
    close: Close,
    upstream: Upstream,
    /// The response bodies the client must get, when the case checks them.
    bodies: Option<Vec<&'static [u8]>>,
    /// The first request is a HEAD (its response has no body, RFC 9112 §6.3).
    head_first: bool,
}

fn case(name: &'static str, rfc: &'static str, request: impl AsRef<[u8]>) -> Case {
    Case {
        name,
        rfc,
        send: vec![request.as_ref().to_vec()],
        gap: Duration::ZERO,
        statuses: Vec::new(),
        close: Close::Open,
        upstream: Upstream::Nothing,
        bodies: None,
        head_first: false,
    }
}

impl Case {
    /// Exactly these statuses, in order.
    fn answers(mut self, statuses: &[u16]) -> Case {
        self.statuses = statuses.iter().map(|status| vec![*status]).collect();
        self
    }

    /// One response whose status is any of `statuses`.
    fn answers_one_of(mut self, statuses: &[u16]) -> Case {
        self.statuses = vec![statuses.to_vec()];
        self
    }

    fn closed(mut self) -> Case {
        self.close = Close::Closed;
        self
    }

    fn close_either(mut self) -> Case {
        self.close = Close::Either;
        self
    }

    fn forwards(mut self, requests: Vec<Vec<u8>>) -> Case {
        self.upstream = Upstream::Requests(requests);
        self
    }

    fn incomplete(mut self) -> Case {
        self.upstream = Upstream::Incomplete;
        self
    }

    fn bodies(mut self, bodies: &[&'static [u8]]) -> Case {
        self.bodies = Some(bodies.to_vec());
        self
    }

    /// Then writes `more` after `gap`.
    fn then_send(mut self, gap: Duration, more: impl AsRef<[u8]>) -> Case {
        self.gap = gap;
        self.send.push(more.as_ref().to_vec());
        self
    }

    fn head_first(mut self) -> Case {
        self.head_first = true;
        self
    }

    /// A refusal of a message whose framing cannot be trusted: `status`, the connection
    /// closed (what follows cannot be parsed), nothing sent to the server.
    fn refused(self, status: u16) -> Case {
        self.answers(&[status]).closed()
    }
}

/// The same request with `Host: x` and `fields` (raw lines, each ending in CRLF) and `body`.
fn request(method_target: &str, fields: &str, body: &str) -> String {
    format!("{method_target} HTTP/1.1\r\nHost: x\r\n{fields}\r\n{body}")
}

// ---------------------------------------------------------------------------------------------
// Request body framing: RFC 9112 §6 and §7

fn body_framing_cases() -> Vec<Case> {
    let post = |fields: &str, body: &str| request("POST /", fields, body);
    let chunked = |body: &str| post("Transfer-Encoding: chunked\r\n", body);
    let hello_cl = |value: &'static str| {
        forwarded(
            "POST",
            "/",
            "x",
            &[("Host", "x"), ("Content-Length", value)],
            Sent::Plain(b"hello"),
        )
    };
    let hello_chunked =
        |chunks: &[&[u8]]| forwarded("POST", "/", "x", &[("Host", "x")], Sent::Chunked(chunks));
    vec![
        case("content-length body", "RFC 9112 §6.2", post("Content-Length: 5\r\n", "hello"))
            .answers(&[200])
            .forwards(vec![hello_cl("5")]),
        case(
            "content-length body on GET is still framed",
            "RFC 9112 §6.3 (6); RFC 9110 §9.3.1",
            request("GET /", "Content-Length: 5\r\n", "hello"),
        )
        .answers(&[200])
        .forwards(vec![forwarded(
            "GET",
            "/",
            "x",
            &[("Host", "x"), ("Content-Length", "5")],
            Sent::Plain(b"hello"),
        )]),
        case(
            "a request without Content-Length or Transfer-Encoding has no body",
            "RFC 9112 §6.3 (7)",
            // The bytes after the head are the next request, not a body.
            format!("{}{}", request("POST /a", "", ""), request("GET /b", "", "")),
        )
        .answers(&[200, 200])
        .forwards(vec![
            forwarded("POST", "/a", "x", &[("Host", "x")], Sent::Plain(b"")),
            get_x("/b"),
        ]),
        case(
            "chunked body",
            "RFC 9112 §7.1",
            chunked("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        )
        .answers(&[200])
        .forwards(vec![hello_chunked(&[b"hello", b" world"])]),
        case(
            "transfer coding names are case-insensitive",
            "RFC 9112 §7",
            post("Transfer-Encoding: CHUNKED\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .answers(&[200])
        .forwards(vec![hello_chunked(&[b"hello"])]),
        case(
            "a tab is optional whitespace around a field value",
            "RFC 9112 §5.1; RFC 9110 §5.6.3",
            post("Transfer-Encoding:\tchunked\t\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .answers(&[200])
        .forwards(vec![hello_chunked(&[b"hello"])]),
        case(
            "chunk extensions are ignored",
            "RFC 9112 §7.1.1",
            chunked("5;name=value\r\nhello\r\n0;last=\"yes\"\r\n\r\n"),
        )
        .answers(&[200])
        .forwards(vec![hello_chunked(&[b"hello"])]),
        case(
            "chunked body with trailer fields",
            "RFC 9112 §7.1.2; RFC 9110 §6.5",
            // A recipient that removes the chunked coding may keep or drop the trailer fields
            // (RFC 9112 §7.1.2); the proxy's rule is to drop them.
            chunked("5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n"),
        )
        .answers(&[200])
        .forwards(vec![hello_chunked(&[b"hello"])]),
        case(
            "a request line in the trailer section is not a second request",
            "RFC 9112 §7.1.2, §5",
            chunked("5\r\nhello\r\n0\r\nGET /smuggled HTTP/1.1\r\n\r\n"),
        )
        .refused(400)
        .incomplete(),
        case(
            "a request after a chunked body is the next request",
            "RFC 9112 §7.1, §9.3.2",
            format!(
                "{}{}",
                chunked("5\r\nhello\r\n0\r\n\r\n"),
                request("GET /second", "", "")
            ),
        )
        .answers(&[200, 200])
        .bodies(&[b"/", b"/second"])
        .forwards(vec![hello_chunked(&[b"hello"]), get_x("/second")]),
        case(
            "Content-Length and Transfer-Encoding together",
            "RFC 9112 §6.1, §6.3 (3)",
            post(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
        )
        .refused(400),
        case(
            "Transfer-Encoding before Content-Length",
            "RFC 9112 §6.1, §6.3 (3)",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
        )
        .refused(400),
        case(
            "CL.TE smuggling attempt",
            "RFC 9112 §6.1, §11.2",
            post(
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\nG",
            ),
        )
        .refused(400),
        case(
            "Transfer-Encoding gzip without chunked",
            "RFC 9112 §6.1, §6.3 (4)",
            post("Transfer-Encoding: gzip\r\n", "hello"),
        )
        // Chunked not final (§6.3: 400) and an unknown coding (§6.1: 501) both apply.
        .answers_one_of(&[400, 501])
        .closed(),
        case(
            "Transfer-Encoding chunked, gzip: chunked not final",
            "RFC 9112 §6.3 (4)",
            post("Transfer-Encoding: chunked, gzip\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .refused(400),
        case(
            "Transfer-Encoding gzip, chunked: unknown coding",
            "RFC 9112 §6.1",
            post("Transfer-Encoding: gzip, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .refused(501),
        case(
            "Transfer-Encoding chunked, chunked",
            "RFC 9112 §6.1 (chunked MUST NOT be applied twice)",
            post("Transfer-Encoding: chunked, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .refused(400),
        case(
            "Transfer-Encoding chunked on two lines",
            "RFC 9112 §6.1; RFC 9110 §5.3",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
        )
        .refused(400),
        case(
            "Transfer-Encoding identity (no longer a coding)",
            "RFC 9112 §6.1, §6.3 (4), §7",
            post("Transfer-Encoding: identity\r\nContent-Length: 5\r\n", "hello"),
        )
        .answers_one_of(&[400, 501])
        .closed(),
        case(
            "Transfer-Encoding in HTTP/1.0",
            "RFC 9112 §6.1 (framing faulty in HTTP/1.0)",
            "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .refused(400),
        case(
            "Transfer-Encoding value folded onto a continuation line",
            "RFC 9112 §5.2",
            post("Transfer-Encoding:\r\n chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .refused(400),
        case(
            "Transfer-Encoding with whitespace before the colon",
            "RFC 9112 §5.1",
            post("Transfer-Encoding : chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .refused(400),
        case(
            "two different Content-Length lines",
            "RFC 9112 §6.3 (5); RFC 9110 §8.6",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
        )
        .refused(400),
        case(
            "Content-Length list with different values",
            "RFC 9112 §6.3 (5)",
            post("Content-Length: 5, 6\r\n", "hello!"),
        )
        .refused(400),
        case(
            "Content-Length list with equal values",
            "RFC 9112 §6.3 (5); RFC 9110 §8.6",
            post("Content-Length: 5, 5\r\n", "hello"),
        )
        // Forwarded with the single value (RFC 9110 §8.6: replace with one valid field).
        .answers(&[200])
        .forwards(vec![hello_cl("5")]),
        case(
            "two equal Content-Length lines",
            "RFC 9112 §6.3 (5); RFC 9110 §8.6, §5.3",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
        )
        .answers(&[200])
        .forwards(vec![hello_cl("5")]),
        case(
            "Content-Length with a plus sign",
            "RFC 9112 §6.3 (5); RFC 9110 §8.6 (1*DIGIT)",
            post("Content-Length: +5\r\n", "hello"),
        )
        .refused(400),
        case(
            "negative Content-Length",
            "RFC 9112 §6.3 (5); RFC 9110 §8.6",
            post("Content-Length: -5\r\n", "hello"),
        )
        .refused(400),
        case(
            "Content-Length with a space inside",
            "RFC 9112 §6.3 (5); RFC 9110 §8.6",
            post("Content-Length: 1 0\r\n", "hellohello"),
        )
        .refused(400),
        case(
            "hexadecimal Content-Length",
            "RFC 9112 §6.3 (5); RFC 9110 §8.6",
            post("Content-Length: 0x5\r\n", "hello"),
        )
        .refused(400),
        case(
            "empty Content-Length",
            "RFC 9112 §6.3 (5); RFC 9110 §8.6",
            post("Content-Length: \r\n", "hello"),
        )
        .refused(400),
        case(
            "Content-Length beyond 64 bits",
            "RFC 9112 §6.3 (5); RFC 9110 §8.6 (overflow)",
            post("Content-Length: 99999999999999999999999\r\n", "hello"),
        )
        .refused(400),
        case(
            "chunk size beyond 64 bits",
            "RFC 9112 §7.1 (overflow)",
            chunked("10000000000000005\r\nhello\r\n0\r\n\r\n"),
        )
        .refused(400)
        .incomplete(),
        case(
            "chunk size not hexadecimal",
            "RFC 9112 §7.1",
            chunked("zz\r\nhello\r\n0\r\n\r\n"),
        )
        .refused(400)
        .incomplete(),
        case(
            "chunk size with 0x",
            "RFC 9112 §7.1 (1*HEXDIG)",
            chunked("0x5\r\nhello\r\n0\r\n\r\n"),
        )
        .refused(400)
        .incomplete(),
        case(
            "chunk size after a space",
            "RFC 9112 §7.1 (1*HEXDIG)",
            chunked(" 5\r\nhello\r\n0\r\n\r\n"),
        )
        .refused(400)
        .incomplete(),
        case(
            "chunk data not followed by CRLF",
            "RFC 9112 §7.1",
            chunked("5\r\nhelloXX0\r\n\r\n"),
        )
        .refused(400)
        .incomplete(),
        case(
            "bare LF in chunk framing",
            "RFC 9112 §7.1, §2.2 (the LF leniency covers start-line and fields only)",
            chunked("5\nhello\n0\n\n"),
        )
        .refused(400)
        .incomplete(),
        case(
            "bare LF after chunk data",
            "RFC 9112 §7.1",
            chunked("5\r\nhello\n0\r\n\r\n"),
        )
        .refused(400)
        .incomplete(),
        case(
            "the server is still used after the clients' framing errors",
            "RFC 9110 §15.5.1 (400 is the client's error, not the server's)",
            // After the refusals above: a proxy that blamed the server for them (passive
            // health) would answer 503 here.
            post("Content-Length: 5\r\n", "hello"),
        )
        .answers(&[200])
        .forwards(vec![hello_cl("5")]),
    ]
}

// ---------------------------------------------------------------------------------------------
// Request line and header section: RFC 9112 §2, §3, §5; RFC 9110 §5, §7

fn head_syntax_cases() -> Vec<Case> {
    let get = |fields: &str| request("GET /", fields, "");
    let long_target = format!("/{}", "a".repeat(40 * 1024));
    let big_fields: String = (0..40)
        .map(|i| format!("X-Filler-{i}: {}\r\n", "b".repeat(1000)))
        .collect();
    let many_fields: String = (0..101).map(|i| format!("X-F{i}: v\r\n")).collect();
    vec![
        case("plain GET", "RFC 9112 §3", get(""))
            .answers(&[200])
            .bodies(&[b"/"])
            .forwards(vec![get_x("/")]),
        case(
            "empty line before the request line",
            "RFC 9112 §2.2 (SHOULD ignore at least one)",
            format!("\r\n{}", get("")),
        )
        .answers(&[200])
        .forwards(vec![get_x("/")]),
        case(
            "bare LF line endings",
            "RFC 9112 §2.2 (MAY recognise a single LF)",
            "GET / HTTP/1.1\nHost: x\nX-A: b\n\n",
        )
        // The proxy's rule: accepted; forwarded with CRLF.
        .answers(&[200])
        .forwards(vec![forwarded(
            "GET",
            "/",
            "x",
            &[("Host", "x"), ("X-A", "b")],
            Sent::Plain(b""),
        )]),
        case(
            "bare CR in a field value",
            "RFC 9112 §2.2; RFC 9110 §5.5",
            get("X-A: a\rb\r\n"),
        )
        .refused(400),
        case(
            "bare CR ending the request line",
            "RFC 9112 §2.2",
            "GET / HTTP/1.1\rHost: x\r\n\r\n",
        )
        .refused(400),
        case(
            "obs-fold continuation line",
            "RFC 9112 §5.2",
            get("X-A: a\r\n b\r\n"),
        )
        .refused(400),
        case(
            "whitespace between Host and the colon",
            "RFC 9112 §5.1 (MUST 400)",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        )
        .refused(400),
        case(
            "whitespace between a field name and the colon",
            "RFC 9112 §5.1 (MUST 400)",
            get("X-A : b\r\n"),
        )
        .refused(400),
        case(
            "whitespace before the first field line",
            "RFC 9112 §2.2",
            "GET / HTTP/1.1\r\n Host: x\r\n\r\n",
        )
        .refused(400),
        case(
            "NUL in a field value",
            "RFC 9110 §5.5 (CR, LF, NUL)",
            get("X-A: a\0b\r\n"),
        )
        .refused(400),
        case(
            "control character in a field value",
            "RFC 9110 §5.5 (CTL; the proxy's rule: refused)",
            get("X-A: a\x01b\r\n"),
        )
        .refused(400),
        case(
            "tab inside a field value",
            "RFC 9110 §5.5 (HTAB is field-content)",
            get("X-A: a\tb\r\n"),
        )
        .answers(&[200])
        .forwards(vec![forwarded(
            "GET",
            "/",
            "x",
            &[("Host", "x"), ("X-A", "a\tb")],
            Sent::Plain(b""),
        )]),
        case(
            "obs-text in a field value passes untouched",
            "RFC 9110 §5.5 (obs-text)",
            [b"GET / HTTP/1.1\r\nHost: x\r\nX-A: caf\xe9\r\n\r\n".as_slice()].concat(),
        )
        .answers(&[200])
        .forwards(vec![
            [
                b"GET / HTTP/1.1\r\n".as_slice(),
                format!("{}: x\r\n{}: caf", name_as_forwarded("Host"), name_as_forwarded("X-A")).as_bytes(),
                b"\xe9\r\n",
                proxy_added("x").as_bytes(),
                b"\r\n",
            ]
            .concat(),
        ]),
        case(
            "whitespace around a field value is not part of it",
            "RFC 9112 §5.1; RFC 9110 §5.5",
            get("X-A:   b \t \r\n"),
        )
        .answers(&[200])
        .forwards(vec![forwarded(
            "GET",
            "/",
            "x",
            &[("Host", "x"), ("X-A", "b")],
            Sent::Plain(b""),
        )]),
        case(
            "delimiter in a field name",
            "RFC 9110 §5.1 (field-name = token)",
            get("X(A): b\r\n"),
        )
        .refused(400),
        case("empty field name", "RFC 9110 §5.1", get(": b\r\n")).refused(400),
        case("field line without a colon", "RFC 9112 §5", get("X-A b\r\n")).refused(400),
        case(
            "no Host in HTTP/1.1",
            "RFC 9112 §3.2 (MUST 400)",
            "GET / HTTP/1.1\r\n\r\n",
        )
        .answers(&[400])
        .close_either(),
        case(
            "two Host fields",
            "RFC 9112 §3.2 (MUST 400)",
            get("Host: y\r\n"),
        )
        .answers(&[400])
        .close_either(),
        case(
            "Host as a list",
            "RFC 9112 §3.2 (invalid field value)",
            "GET / HTTP/1.1\r\nHost: x, y\r\n\r\n",
        )
        .answers(&[400])
        .close_either(),
        case(
            "Host with userinfo",
            "RFC 9112 §3.2; RFC 9110 §4.2.4",
            "GET / HTTP/1.1\r\nHost: u@x\r\n\r\n",
        )
        .answers(&[400])
        .close_either(),
        case(
            "empty Host in HTTP/1.1",
            "RFC 9110 §4.2.1 (an http URI with an empty host is invalid)",
            "GET / HTTP/1.1\r\nHost:\r\n\r\n",
        )
        .answers(&[400])
        .close_either(),
        case(
            "absolute-form target: its authority wins over Host",
            "RFC 9112 §3.2.2",
            "GET http://a.test/p?q=1 HTTP/1.1\r\nHost: b.test\r\n\r\n",
        )
        .answers(&[200])
        .forwards(vec![forwarded(
            "GET",
            "/p?q=1",
            "a.test",
            &[("Host", "a.test")],
            Sent::Plain(b""),
        )]),
        case(
            "absolute-form target without Host in HTTP/1.1",
            "RFC 9112 §3.2 (any HTTP/1.1 request without Host: 400)",
            "GET http://a.test/ HTTP/1.1\r\n\r\n",
        )
        .answers(&[400])
        .close_either(),
        case(
            "HTTP/1.0 without Host",
            "RFC 9112 §3.2, §9.3",
            "GET / HTTP/1.0\r\n\r\n",
        )
        // To the server it is HTTP/1.1, which needs a Host: empty when the target URI has no
        // authority (RFC 9112 §3.2); the proxy adds it with the target, after the request ID.
        // HTTP/1.0 without keep-alive closes after the response.
        .answers(&[200])
        .closed()
        .forwards(vec![
            format!(
                "GET / HTTP/1.1\r\n{}host: \r\n{}\r\n",
                request_id_added(),
                forwarded_added("")
            )
            .into_bytes(),
        ]),
        case(
            "two spaces after the method",
            "RFC 9112 §3 (single SP; the proxy's rule: strict)",
            "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .refused(400),
        case(
            "space after the version",
            "RFC 9112 §3",
            "GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
        )
        .refused(400),
        case(
            "HTTP/0.9 request line (no version)",
            "RFC 9112 §3, §2.3",
            "GET /\r\n\r\n",
        )
        .refused(400),
        case(
            "lowercase protocol name",
            "RFC 9112 §2.3 (HTTP-name is case-sensitive)",
            "GET / http/1.1\r\nHost: x\r\n\r\n",
        )
        .refused(400),
        case(
            "HTTP/1.2 request line",
            "RFC 9112 §2.3; RFC 9110 §15.6.6 (the proxy's rule: 505 or 400)",
            "GET / HTTP/1.2\r\nHost: x\r\n\r\n",
        )
        .answers_one_of(&[505, 400])
        .closed(),
        case(
            "HTTP/2.0 request line",
            "RFC 9112 §2.3; RFC 9110 §15.6.6",
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        )
        .answers_one_of(&[505, 400])
        .closed(),
        case(
            "invalid method token",
            "RFC 9110 §9.1 (method = token)",
            "G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .refused(400),
        case(
            "unknown method is forwarded",
            "RFC 9110 §9.1 (case-sensitive; extension methods)",
            get("").replacen("GET", "PURGE", 1),
        )
        .answers(&[200])
        .forwards(vec![forwarded(
            "PURGE",
            "/",
            "x",
            &[("Host", "x")],
            Sent::Plain(b""),
        )]),
        case(
            "CONNECT is not proxied",
            "RFC 9110 §9.3.6 (the proxy's rule: 501)",
            "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
        )
        .answers(&[501])
        .close_either(),
        case(
            "asterisk-form OPTIONS",
            "RFC 9112 §3.2.4",
            "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .answers(&[200])
        .forwards(vec![forwarded(
            "OPTIONS",
            "*",
            "x",
            &[("Host", "x")],
            Sent::Plain(b""),
        )]),
        case(
            "asterisk-form with GET",
            "RFC 9112 §3.2.4 (only for OPTIONS)",
            "GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .answers(&[400])
        .close_either(),
        case(
            "target without a leading slash",
            "RFC 9112 §3.2.1 (origin-form = absolute-path)",
            "GET a HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .refused(400),
        case(
            "fragment in the target",
            "RFC 9112 §3.2 (no fragment in request-target)",
            "GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .refused(400),
        case(
            "raw non-ASCII byte in the target",
            "RFC 9112 §3.2; RFC 3986 §2",
            [b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n".as_slice()].concat(),
        )
        .refused(400),
        case(
            "encoded slash in the path",
            "RFC 3986 §2.2 (README: allow_encoded_slashes = false)",
            "GET /a%2Fb HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .answers(&[404])
        .close_either(),
        case(
            "encoded backslash in the path",
            "RFC 3986 §2.2 (README: allow_encoded_slashes = false)",
            "GET /a%5cb HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .answers(&[404])
        .close_either(),
        case(
            "dot segment with parameters",
            "RFC 3986 §3.3, §5.2.4 (README: ..; always refused)",
            "GET /a/..;/b HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .answers(&[400])
        .close_either(),
        case(
            "field name with an underscore is dropped",
            "RFC 9110 §5.1 (README: underscore_headers = drop)",
            get("X_A: 1\r\nX-B: 2\r\n"),
        )
        .answers(&[200])
        .forwards(vec![forwarded(
            "GET",
            "/",
            "x",
            &[("Host", "x"), ("X-B", "2")],
            Sent::Plain(b""),
        )]),
        case(
            "hop-by-hop fields are not forwarded",
            "RFC 9110 §7.6.1",
            get("Connection: x-drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Keep: 2\r\n"),
        )
        .answers(&[200])
        .forwards(vec![forwarded(
            "GET",
            "/",
            "x",
            &[("Host", "x"), ("X-Keep", "2")],
            Sent::Plain(b""),
        )]),
        case(
            "target over the limit",
            "RFC 9110 §4.1 (MUST 414), §15.5.15; RFC 9112 §3",
            format!("GET {long_target} HTTP/1.1\r\nHost: x\r\n\r\n"),
        )
        .refused(414),
        case(
            "header section over max_header_bytes",
            "RFC 6585 §5 (431)",
            get(&big_fields),
        )
        .refused(431),
        case(
            "more fields than max_headers",
            "RFC 6585 §5 (431)",
            get(&many_fields),
        )
        .refused(431),
    ]
}

// ---------------------------------------------------------------------------------------------
// Connection management: RFC 9112 §9; expectations RFC 9110 §10.1.1; upgrades RFC 9110 §7.8

fn connection_cases() -> Vec<Case> {
    let get = |target: &str, fields: &str| request(&format!("GET {target}"), fields, "");
    vec![
        case(
            "two requests on one persistent connection",
            "RFC 9112 §9.3",
            get("/1", ""),
        )
        .then_send(Duration::from_millis(100), get("/2", ""))
        .answers(&[200, 200])
        .bodies(&[b"/1", b"/2"])
        .forwards(vec![get_x("/1"), get_x("/2")]),
        case(
            "three pipelined requests answered in order",
            "RFC 9112 §9.3.2",
            format!("{}{}{}", get("/1", ""), get("/2", ""), get("/3", "")),
        )
        .answers(&[200, 200, 200])
        .bodies(&[b"/1", b"/2", b"/3"])
        .forwards(vec![get_x("/1"), get_x("/2"), get_x("/3")]),
        case(
            "Connection: close ends the connection after the response",
            "RFC 9112 §9.6",
            format!("{}{}", get("/1", "Connection: close\r\n"), get("/2", "")),
        )
        .answers(&[200])
        .closed()
        .forwards(vec![get_x("/1")]),
        case(
            "Connection: close with bytes behind it closes in stages, not with a reset",
            "RFC 9112 §9.6",
            // More than one read takes: unread bytes at the close would make it a reset.
            format!(
                "{}{}",
                get("/1", "Connection: close\r\n"),
                get("/2", &format!("X-Pad: {}\r\n", "a".repeat(4000))).repeat(50)
            ),
        )
        .answers(&[200])
        .closed()
        .forwards(vec![get_x("/1")]),
        case(
            "HTTP/1.0 closes after the response by default",
            "RFC 9112 §9.3",
            "GET / HTTP/1.0\r\nHost: x\r\n\r\n",
        )
        .answers(&[200])
        .closed()
        .forwards(vec![get_x("/")]),
        case(
            "HTTP/1.0 keep-alive",
            "RFC 9112 §9.3, Appendix C.2.2",
            "GET /1 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n\
             GET /2 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
        )
        .answers(&[200, 200])
        .bodies(&[b"/1", b"/2"])
        .forwards(vec![get_x("/1"), get_x("/2")]),
        case(
            "Expect: 100-continue gets 100 before the body is sent",
            "RFC 9110 §10.1.1",
            request(
                "POST /",
                "Content-Length: 5\r\nExpect: 100-continue\r\n",
                "",
            ),
        )
        .then_send(Duration::from_millis(300), "hello")
        .answers(&[100, 200])
        // The proxy reads the body before it chooses a server (as nginx does), so it gives
        // the go-ahead itself when it starts reading, and the server never sees the
        // expectation (RFC 9110 §10.1.1 lets a proxy answer 100 itself).
        .forwards(vec![forwarded(
            "POST",
            "/",
            "x",
            &[("Host", "x"), ("Content-Length", "5")],
            Sent::Plain(b"hello"),
        )]),
        case(
            "an unknown expectation",
            "RFC 9110 §10.1.1 (MAY 417; the proxy's rule: 417)",
            get("/", "Expect: something-else\r\n"),
        )
        .answers(&[417])
        .close_either(),
        case(
            "Upgrade: h2c is not forwarded",
            "RFC 9110 §7.8; RFC 9113 §3.1 (h2c upgrade removed)",
            get(
                "/",
                "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n",
            ),
        )
        .answers(&[200])
        .forwards(vec![get_x("/")]),
        case(
            "a 200 to an upgrade request leaves the connection in HTTP",
            "RFC 9110 §7.8 (only 101 switches)",
            format!(
                "{}{}",
                get("/r/no-upgrade", WEBSOCKET_FIELDS),
                get("/after", "")
            ),
        )
        // The second request is parsed and forwarded as a request (with the proxy's fields),
        // not passed through as tunnel bytes.
        .answers(&[200, 200])
        .bodies(&[b"/r/no-upgrade", b"/after"])
        .forwards(vec![
            forwarded(
                "GET",
                "/r/no-upgrade",
                "x",
                &websocket_fields_forwarded(),
                Sent::Plain(b""),
            ),
            get_x("/after"),
        ]),
    ]
}

// ---------------------------------------------------------------------------------------------
// Responses: RFC 9112 §6.3; RFC 9110 §15

fn response_cases() -> Vec<Case> {
    let get = |target: &str| request(&format!("GET {target}"), "", "");
    let then_next = |target: &str| format!("{}{}", get(target), get("/next"));
    vec![
        case(
            "1xx from the server is forwarded",
            "RFC 9110 §15.2 (a proxy MUST forward 1xx)",
            get("/r/103"),
        )
        .answers(&[103, 200])
        .bodies(&[b"", b"ok"])
        .forwards(vec![get_x("/r/103")]),
        case(
            "204 ends at its header section",
            "RFC 9112 §6.3 (1); RFC 9110 §15.3.5",
            then_next("/r/204-body"),
        )
        .answers(&[204, 200])
        .bodies(&[b"", b"/next"])
        .forwards(vec![get_x("/r/204-body"), get_x("/next")]),
        case(
            "a response to HEAD has no body",
            "RFC 9112 §6.3 (1); RFC 9110 §9.3.2",
            format!("{}{}", request("HEAD /head", "", ""), get("/next")),
        )
        .head_first()
        .answers(&[200, 200])
        .bodies(&[b"", b"/next"])
        .forwards(vec![
            forwarded("HEAD", "/head", "x", &[("Host", "x")], Sent::Plain(b"")),
            get_x("/next"),
        ]),
        case(
            "304 has no body",
            "RFC 9112 §6.3 (1); RFC 9110 §15.4.5",
            then_next("/r/304"),
        )
        .answers(&[304, 200])
        .bodies(&[b"", b"/next"])
        .forwards(vec![get_x("/r/304"), get_x("/next")]),
        case(
            "close-delimited response body",
            "RFC 9112 §6.3 (8)",
            get("/r/close-delimited"),
        )
        // Re-framed (chunked) on a kept connection, or close-delimited and closed: either.
        .answers(&[200])
        .bodies(&[b"until close"])
        .close_either()
        .forwards(vec![get_x("/r/close-delimited")]),
        case(
            "chunked response body",
            "RFC 9112 §7.1",
            then_next("/r/chunked"),
        )
        .answers(&[200, 200])
        .bodies(&[b"hello", b"/next"])
        .forwards(vec![get_x("/r/chunked"), get_x("/next")]),
        case(
            "response with Transfer-Encoding and Content-Length",
            "RFC 9112 §6.3 (3) (the proxy's rule: 502)",
            then_next("/r/te-and-cl"),
        )
        .answers(&[502, 200])
        .forwards(vec![get_x("/r/te-and-cl"), get_x("/next")]),
        case(
            "response with a Content-Length list of different values",
            "RFC 9112 §6.3 (5) (proxy: 502)",
            then_next("/r/cl-differ"),
        )
        .answers(&[502, 200])
        .forwards(vec![get_x("/r/cl-differ"), get_x("/next")]),
        case(
            "response with two Content-Length lines",
            "RFC 9112 §6.3 (5) (proxy: 502)",
            then_next("/r/cl-twice"),
        )
        .answers(&[502, 200])
        .forwards(vec![get_x("/r/cl-twice"), get_x("/next")]),
        case(
            "response with a signed Content-Length",
            "RFC 9112 §6.3 (5) (proxy: 502)",
            then_next("/r/cl-sign"),
        )
        .answers(&[502, 200])
        .forwards(vec![get_x("/r/cl-sign"), get_x("/next")]),
        case(
            "response that is not HTTP",
            "RFC 9112 §4 (proxy: 502)",
            then_next("/r/not-http"),
        )
        .answers(&[502, 200])
        .forwards(vec![get_x("/r/not-http"), get_x("/next")]),
        case(
            "101 to a request that asked for no upgrade",
            "RFC 9110 §15.2.2 (MUST NOT send 101 unasked)",
            then_next("/r/unasked-101"),
        )
        .answers(&[502, 200])
        .forwards(vec![get_x("/r/unasked-101"), get_x("/next")]),
    ]
}

// ---------------------------------------------------------------------------------------------
// The tests: one namespace, server and balancer each

#[test]
fn request_body_framing() {
    run_group("h1-body", &body_framing_cases());
}

#[test]
fn request_head_syntax() {
    run_group("h1-head", &head_syntax_cases());
}

#[test]
fn connection_management() {
    run_group("h1-conn", &connection_cases());
}

#[test]
fn response_framing() {
    run_group("h1-resp", &response_cases());
}

/// `Upgrade: websocket` is forwarded, and the connection becomes a tunnel only after the
/// server's 101 (RFC 9110 §7.8, §15.2.2): the bytes that follow reach the server untouched, and
/// its bytes come back.
#[test]
fn websocket_upgrade_tunnels_after_101() {
    let net = L7Net::new("h1-ws").expect("namespace");
    let server = Recorder::start(&net);
    let balancer = start(&net, &config());
    let upgrade = request("GET /r/ws", WEBSOCKET_FIELDS, "");
    let mut stream = connect(&net).unwrap_or_else(|err| panic!("{err}"));
    stream
        .write_all(upgrade.as_bytes())
        .expect("writing the upgrade request");
    let head = read_until(&mut stream, |bytes| find(bytes, b"\r\n\r\n").is_some());
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "expected 101 Switching Protocols, got {}\nserver got: {}\nbalancer log:\n{}",
        escape(&head),
        escape(&server.since(Mark::default()).bytes),
        tail(&balancer)
    );
    let mark = server.mark();
    // Bytes after the 101 are WebSocket frames; the server echoes them, the proxy only relays.
    let frame: &[u8] = b"\x81\x84\x01\x02\x03\x04tunnel bytes";
    stream.write_all(frame).expect("writing through the tunnel");
    let echoed = read_until(&mut stream, |bytes| bytes.len() >= frame.len());
    server.wait_quiet();
    let seen = server.since(Mark::default());
    let expected = [
        forwarded(
            "GET",
            "/r/ws",
            "x",
            &websocket_fields_forwarded(),
            Sent::Plain(b""),
        ),
        frame.to_vec(),
    ]
    .concat();
    assert!(
        seen.bytes == expected && seen.requests == 1 && server.since(mark).bytes == frame,
        "the server should get the upgrade request, then the tunnel's bytes\n  got:      {}\n  \
         expected: {}\n  requests parsed: {}\nbalancer log:\n{}",
        escape(&seen.bytes),
        escape(&expected),
        seen.requests,
        tail(&balancer)
    );
    assert_eq!(
        escape(&echoed),
        escape(frame),
        "the server's bytes come back through the tunnel"
    );
}

// ---------------------------------------------------------------------------------------------
// Running cases

/// Runs `cases` against one balancer. With `H1_CASE=TEXT` in the environment, only the cases
/// whose name contains TEXT (to look at one case alone, away from what earlier cases did).
fn run_group(tag: &str, cases: &[Case]) {
    let only = std::env::var("H1_CASE").ok();
    let cases: Vec<&Case> = cases
        .iter()
        .filter(|case| {
            only.as_ref()
                .is_none_or(|text| case.name.contains(text.as_str()))
        })
        .collect();
    if cases.is_empty() {
        return;
    }
    let net = L7Net::new(tag).expect("namespace");
    let server = Recorder::start(&net);
    let balancer = start(&net, &config());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| run_case(&net, &server, case).err())
        .collect();
    eprintln!(
        "{tag}: {} of {} cases pass",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}\nbalancer log (last lines):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        tail(&balancer)
    );
}

fn run_case(net: &L7Net, server: &Recorder, case: &Case) -> Result<(), String> {
    server.wait_quiet();
    let mark = server.mark();
    let outcome = exchange(net, case);
    server.wait_quiet();
    let seen = server.since(mark);
    let mut problems = Vec::new();

    // (a) What the client got.
    let statuses: Vec<u16> = outcome.responses.iter().map(|r| r.status).collect();
    let statuses_ok = statuses.len() == case.statuses.len()
        && statuses
            .iter()
            .zip(&case.statuses)
            .all(|(status, allowed)| allowed.contains(status));
    if !statuses_ok {
        problems.push(format!(
            "statuses {statuses:?}, expected {}",
            describe_statuses(&case.statuses)
        ));
    }
    match (case.close, outcome.closed) {
        (Close::Closed, false) => problems.push("the connection stayed open".to_string()),
        (Close::Open, true) => problems.push("the connection was closed".to_string()),
        _ => {}
    }
    if outcome.reset {
        // RFC 9112 §9.6: a server closes in stages so that a reset cannot destroy the
        // response the client has not read yet. Every case here gets an orderly close.
        problems.push("the connection was reset, not closed in stages".to_string());
    }
    if let Some(bodies) = &case.bodies {
        let got: Vec<&[u8]> = outcome.responses.iter().map(|r| &r.body[..]).collect();
        if got != *bodies {
            problems.push(format!(
                "bodies [{}], expected [{}]",
                got.iter().map(|b| escape(b)).collect::<Vec<_>>().join(", "),
                bodies
                    .iter()
                    .map(|b| escape(b))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if let Some(error) = &outcome.error {
        problems.push(error.clone());
    }
    if !outcome.rest.is_empty() {
        problems.push(format!(
            "bytes after the last complete response: {}",
            escape(&outcome.rest)
        ));
    }

    // (b) and (c): what the server got.
    let expected_bytes = match &case.upstream {
        Upstream::Nothing => {
            if !seen.bytes.is_empty() {
                problems.push("the server received bytes; it should have received none".into());
            }
            Some(Vec::new())
        }
        Upstream::Requests(requests) => {
            let expected = requests.concat();
            if seen.bytes != expected {
                problems.push("the server received other bytes than expected".to_string());
            }
            if seen.requests != requests.len() {
                problems.push(format!(
                    "the server parsed {} request(s), expected {}",
                    seen.requests,
                    requests.len()
                ));
            }
            Some(expected)
        }
        Upstream::Incomplete => {
            if seen.requests != 0 {
                problems.push(format!(
                    "the server got {} complete request(s); it should get none",
                    seen.requests
                ));
            }
            None
        }
    };
    if problems.is_empty() {
        return Ok(());
    }
    let mut report = format!("✗ {} ({})\n", case.name, case.rfc);
    for problem in &problems {
        report.push_str(&format!("    - {problem}\n"));
    }
    let sent: Vec<u8> = case.send.concat();
    report.push_str(&format!("    sent:            {}\n", escape(&sent)));
    report.push_str(&format!(
        "    client got:      {} ({})\n",
        escape(&outcome.received),
        if outcome.closed {
            "then closed"
        } else {
            "still open"
        }
    ));
    report.push_str(&format!(
        "    server got:      {} ({} request(s){})\n",
        escape(&seen.bytes),
        seen.requests,
        if seen.errors.is_empty() {
            String::new()
        } else {
            format!("; {}", seen.errors.join("; "))
        }
    ));
    if let Some(expected) = expected_bytes {
        report.push_str(&format!("    server expected: {}\n", escape(&expected)));
    }
    Err(report)
}

fn describe_statuses(statuses: &[Vec<u16>]) -> String {
    let each: Vec<String> = statuses
        .iter()
        .map(|allowed| {
            allowed
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        })
        .collect();
    format!("[{}]", each.join(", "))
}

/// The balancer log's last lines (its access log tells what it answered).
fn tail(balancer: &BalancerProcess) -> String {
    let log = balancer.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Bytes as printable ASCII (`\r`, `\n`, `\x00`), long ones shortened.
fn escape(bytes: &[u8]) -> String {
    const SHOWN: usize = 600;
    if bytes.len() > SHOWN {
        format!(
            "\"{}…\" ({} bytes)",
            bytes[..SHOWN].escape_ascii(),
            bytes.len()
        )
    } else {
        format!("\"{}\"", bytes.escape_ascii())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// The client side

/// A fresh connection to the proxy, opened inside the namespace (a socket keeps its namespace,
/// so it is used from this thread afterwards).
fn connect(net: &L7Net) -> Result<TcpStream, String> {
    let target: SocketAddr = LISTEN.parse().expect("listener address");
    let stream = net
        .run(move || TcpStream::connect_timeout(&target, Duration::from_secs(3)))
        .map_err(|err| format!("entering the namespace: {err:#}"))?
        .map_err(|err| format!("connecting to the proxy: {err}"))?;
    stream.set_nodelay(true).map_err(|err| err.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(|err| err.to_string())?;
    Ok(stream)
}

/// How the peer ended the connection, as far as the client has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    No,
    /// An orderly close: the end of the stream (FIN).
    Eof,
    /// A reset, or another read error.
    Reset,
}

/// Reads into `received`; returns true once the peer closed (EOF or reset).
fn pump(stream: &mut TcpStream, received: &mut Vec<u8>) -> bool {
    pump_end(stream, received) != Ended::No
}

/// Reads into `received`; how the peer ended the connection, if it did.
fn pump_end(stream: &mut TcpStream, received: &mut Vec<u8>) -> Ended {
    let mut buffer = [0u8; 16 * 1024];
    match stream.read(&mut buffer) {
        Ok(0) => Ended::Eof,
        Ok(n) => {
            received.extend_from_slice(&buffer[..n]);
            Ended::No
        }
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
            ) =>
        {
            Ended::No
        }
        Err(_) => Ended::Reset,
    }
}

/// Reads until `done` says so, the peer closes, or [`RESPONSE_WAIT`].
fn read_until(stream: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + RESPONSE_WAIT;
    let mut received = Vec::new();
    while !done(&received) && Instant::now() < deadline {
        if pump(stream, &mut received) {
            break;
        }
    }
    received
}

/// What the client saw.
struct Outcome {
    received: Vec<u8>,
    closed: bool,
    /// The close was a reset, not an orderly end of the stream.
    reset: bool,
    responses: Vec<Response>,
    /// Bytes after the last complete response (none when the framing was respected).
    rest: Vec<u8>,
    error: Option<String>,
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

fn exchange(net: &L7Net, case: &Case) -> Outcome {
    let mut stream = match connect(net) {
        Ok(stream) => stream,
        Err(err) => {
            return Outcome {
                received: Vec::new(),
                closed: true,
                reset: false,
                responses: Vec::new(),
                rest: Vec::new(),
                error: Some(err),
            };
        }
    };
    let mut received = Vec::new();
    let mut ended = Ended::No;
    for (index, chunk) in case.send.iter().enumerate() {
        if index > 0 {
            let until = Instant::now() + case.gap;
            while ended == Ended::No && Instant::now() < until {
                ended = pump_end(&mut stream, &mut received);
            }
        }
        let closed = ended != Ended::No;
        // A proxy that refuses early may close before everything is written; what it answered
        // is still read below.
        if closed || stream.write_all(chunk).is_err() {
            break;
        }
    }
    let finals = case
        .statuses
        .iter()
        .filter(|allowed| !allowed.iter().all(|s| (100..200).contains(s) && *s != 101))
        .count();
    let deadline = Instant::now() + RESPONSE_WAIT;
    let mut settle: Option<Instant> = None;
    while ended == Ended::No && Instant::now() < deadline {
        ended = pump_end(&mut stream, &mut received);
        if settle.is_none() {
            let parsed = parse_responses(&received, case.head_first, false);
            if parsed.finals >= finals || parsed.error.is_some() {
                let wait = if case.close == Close::Closed {
                    CLOSE_WAIT
                } else {
                    GRACE
                };
                settle = Some(Instant::now() + wait);
            }
        }
        if settle.is_some_and(|at| Instant::now() >= at) {
            break;
        }
    }
    let closed = ended != Ended::No;
    let parsed = parse_responses(&received, case.head_first, closed);
    Outcome {
        rest: received[parsed.consumed..].to_vec(),
        responses: parsed.responses,
        error: parsed.error,
        received,
        closed,
        reset: ended == Ended::Reset,
    }
}

struct Parsed {
    responses: Vec<Response>,
    /// Complete final (non-1xx) responses.
    finals: usize,
    /// Bytes taken by the complete responses.
    consumed: usize,
    error: Option<String>,
}

/// Splits what the client received into complete responses (RFC 9112 §6.3 framing). A 101
/// ends the parse: what follows is the tunnel's.
fn parse_responses(bytes: &[u8], head_first: bool, closed: bool) -> Parsed {
    let mut parsed = Parsed {
        responses: Vec::new(),
        finals: 0,
        consumed: 0,
        error: None,
    };
    while parsed.consumed < bytes.len() {
        let rest = &bytes[parsed.consumed..];
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut fields);
        let head = match response.parse(rest) {
            Ok(httparse::Status::Complete(head)) => head,
            Ok(httparse::Status::Partial) => break,
            Err(err) => {
                parsed.error = Some(format!("the client got an unparsable response: {err}"));
                break;
            }
        };
        let status = response.code.unwrap_or_default();
        let field = |name: &str| -> Vec<String> {
            response
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                .collect()
        };
        let interim = (100..200).contains(&status);
        let bodyless =
            interim || status == 204 || status == 304 || (head_first && parsed.finals == 0);
        let body_bytes = &rest[head..];
        let (length, body) = if bodyless {
            (0, Vec::new())
        } else if !field("transfer-encoding").is_empty() {
            match chunked_length(body_bytes) {
                Ok(Some((length, body))) => (length, body),
                Ok(None) if closed => {
                    parsed.error = Some("a chunked response body was cut short".into());
                    break;
                }
                Ok(None) => break,
                Err(err) => {
                    parsed.error = Some(format!("bad chunked response body: {err}"));
                    break;
                }
            }
        } else if let Some(length) = field("content-length").first() {
            let Ok(length) = length.parse::<usize>() else {
                parsed.error = Some(format!("the client got Content-Length {length:?}"));
                break;
            };
            if body_bytes.len() < length {
                break;
            }
            (length, body_bytes[..length].to_vec())
        } else if closed {
            (body_bytes.len(), body_bytes.to_vec())
        } else {
            break;
        };
        parsed.consumed += head + length;
        parsed.responses.push(Response { status, body });
        if status == 101 {
            parsed.finals += 1;
            parsed.consumed = bytes.len();
            break;
        }
        if !interim {
            parsed.finals += 1;
        }
    }
    parsed
}

// ---------------------------------------------------------------------------------------------
// The recording server

/// Listens on [`SERVER`] in the namespace; records every byte every connection receives and
/// answers each request it parses with [`reply`]. Stopped on drop.
struct Recorder {
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Log {
    /// What the connections received, in arrival order.
    chunks: Vec<Vec<u8>>,
    /// Requests parsed complete.
    requests: usize,
    /// What the server could not parse (it then closes that connection).
    errors: Vec<String>,
    last: Option<Instant>,
}

#[derive(Default, Clone, Copy)]
struct Mark {
    chunks: usize,
    requests: usize,
    errors: usize,
}

/// What the server got since a [`Mark`].
struct Seen {
    bytes: Vec<u8>,
    requests: usize,
    errors: Vec<String>,
}

impl Recorder {
    fn start(net: &L7Net) -> Recorder {
        let listener = net
            .run(|| TcpListener::bind(SERVER))
            .expect("entering the namespace")
            .unwrap_or_else(|err| panic!("binding {SERVER}: {err}"));
        listener.set_nonblocking(true).expect("non-blocking");
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut next = 0;
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (log, stop) = (log.clone(), stop.clone());
                            let id = next;
                            next += 1;
                            std::thread::spawn(move || serve(stream, id, &log, &stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Recorder {
            log,
            stop,
            accept: Some(accept),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark(&self) -> Mark {
        let log = self.lock();
        Mark {
            chunks: log.chunks.len(),
            requests: log.requests,
            errors: log.errors.len(),
        }
    }

    /// Request IDs masked (see [`mask_request_ids`]).
    fn since(&self, mark: Mark) -> Seen {
        let log = self.lock();
        Seen {
            bytes: mask_request_ids(&log.chunks[mark.chunks..].concat()),
            requests: log.requests - mark.requests,
            errors: log.errors[mark.errors..].to_vec(),
        }
    }

    /// Waits until no byte arrived for [`SERVER_QUIET`] (at most a second).
    fn wait_quiet(&self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let last = self.lock().last;
            if last.is_none_or(|last| last.elapsed() >= SERVER_QUIET) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// What the server does with the connection after an answer.
enum After {
    Keep,
    Close,
    /// Echo every later byte (a WebSocket after its 101).
    Tunnel,
}

/// The server's answer to `method target`: scripted under `/r/`, else 200 with the target as
/// its body (so pipelined answers can be told apart).
fn reply(method: &str, target: &str) -> (Vec<u8>, After) {
    let (text, after): (&str, After) = match target {
        "/r/103" => (
            "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            After::Keep,
        ),
        // Bytes after a 204's head are not its body; the server closes so that they do not
        // poison the next response on this connection either.
        "/r/204-body" => ("HTTP/1.1 204 No Content\r\n\r\nhello", After::Close),
        "/r/304" => (
            "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 10\r\n\r\n",
            After::Keep,
        ),
        "/r/close-delimited" => ("HTTP/1.1 200 OK\r\n\r\nuntil close", After::Close),
        "/r/chunked" => (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            After::Keep,
        ),
        "/r/te-and-cl" => (
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n",
            After::Close,
        ),
        "/r/cl-differ" => (
            "HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok!",
            After::Close,
        ),
        "/r/cl-twice" => (
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok!",
            After::Close,
        ),
        "/r/cl-sign" => (
            "HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok",
            After::Close,
        ),
        "/r/not-http" => ("HELLO THERE\r\n\r\n", After::Close),
        "/r/unasked-101" => (
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            After::Close,
        ),
        // RFC 6455 §1.3's example key and accept value.
        "/r/ws" => (
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
             sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            After::Tunnel,
        ),
        _ => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                target.len()
            );
            let mut bytes = head.into_bytes();
            if method != "HEAD" {
                bytes.extend_from_slice(target.as_bytes());
            }
            return (bytes, After::Keep);
        }
    };
    (text.as_bytes().to_vec(), after)
}

fn serve(mut stream: TcpStream, id: usize, log: &Mutex<Log>, stop: &AtomicBool) {
    let lock = || log.lock().unwrap_or_else(|e| e.into_inner());
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut pending = Vec::new();
    let mut tunnel = false;
    let mut buffer = [0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => n,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue;
            }
            Err(_) => return,
        };
        {
            let mut log = lock();
            log.chunks.push(buffer[..n].to_vec());
            log.last = Some(Instant::now());
        }
        if tunnel {
            if stream.write_all(&buffer[..n]).is_err() {
                return;
            }
            continue;
        }
        pending.extend_from_slice(&buffer[..n]);
        loop {
            match parse_request(&pending) {
                Ok(None) => break,
                Err(err) => {
                    lock().errors.push(format!("server connection {id}: {err}"));
                    return;
                }
                Ok(Some((length, method, target))) => {
                    lock().requests += 1;
                    pending.drain(..length);
                    let (answer, after) = reply(&method, &target);
                    if stream.write_all(&answer).is_err() {
                        return;
                    }
                    match after {
                        After::Keep => {}
                        After::Close => return,
                        After::Tunnel => {
                            tunnel = true;
                            if !pending.is_empty() && stream.write_all(&pending).is_err() {
                                return;
                            }
                            pending.clear();
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// One complete request at the start of `bytes`: its length, method and target; `None` while
/// incomplete. Strict: what a careful server would refuse is an error here.
fn parse_request(bytes: &[u8]) -> Result<Option<(usize, String, String)>, String> {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut fields);
    let head = match request.parse(bytes) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(format!("unparsable request head ({err})")),
    };
    if let Some(at) = (0..head).find(|&i| bytes[i] == b'\n' && (i == 0 || bytes[i - 1] != b'\r')) {
        return Err(format!("bare LF at byte {at} of the head"));
    }
    let values = |name: &str| -> Vec<String> {
        request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
            .collect()
    };
    let codings = values("transfer-encoding");
    let lengths = values("content-length");
    let body = if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err("Transfer-Encoding and Content-Length".into());
        }
        if codings.len() > 1 || !codings[0].eq_ignore_ascii_case("chunked") {
            return Err(format!("Transfer-Encoding {codings:?}"));
        }
        match chunked_length(&bytes[head..])? {
            Some((length, _)) => length,
            None => return Ok(None),
        }
    } else if !lengths.is_empty() {
        if lengths.len() > 1 {
            return Err(format!("Content-Length {lengths:?}"));
        }
        let length = &lengths[0];
        if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("Content-Length {length:?}"));
        }
        let length: usize = length
            .parse()
            .map_err(|_| format!("Content-Length {length:?}"))?;
        if bytes.len() < head + length {
            return Ok(None);
        }
        length
    } else {
        0
    };
    Ok(Some((
        head + body,
        request.method.unwrap_or_default().to_string(),
        request.path.unwrap_or_default().to_string(),
    )))
}

/// The length of the chunked body at the start of `bytes` (trailer section included) and its
/// decoded data; `None` while incomplete. Strict: CRLF only, 1*HEXDIG sizes.
fn chunked_length(bytes: &[u8]) -> Result<Option<(usize, Vec<u8>)>, String> {
    let mut at = 0;
    let mut data = Vec::new();
    loop {
        let Some(end) = line_end(bytes, at)? else {
            return Ok(None);
        };
        let line = &bytes[at..end];
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        if size.is_empty() || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("chunk size {}", escape(line)));
        }
        let size = usize::from_str_radix(&String::from_utf8_lossy(size), 16)
            .map_err(|_| format!("chunk size {}", escape(line)))?;
        at = end + 2;
        if size == 0 {
            loop {
                let Some(end) = line_end(bytes, at)? else {
                    return Ok(None);
                };
                if end == at {
                    return Ok(Some((end + 2, data)));
                }
                if !bytes[at..end].contains(&b':') {
                    return Err(format!("trailer line {}", escape(&bytes[at..end])));
                }
                at = end + 2;
            }
        }
        if bytes.len() < at + size + 2 {
            return Ok(None);
        }
        data.extend_from_slice(&bytes[at..at + size]);
        if &bytes[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        at += size + 2;
    }
}

/// Where the CRLF-terminated line starting at `from` ends (the CR's index); a bare LF is an
/// error.
fn line_end(bytes: &[u8], from: usize) -> Result<Option<usize>, String> {
    match bytes[from..].iter().position(|&b| b == b'\n') {
        None => Ok(None),
        Some(offset) if offset > 0 && bytes[from + offset - 1] == b'\r' => {
            Ok(Some(from + offset - 1))
        }
        Some(_) => Err("bare LF in chunked framing".into()),
    }
}
