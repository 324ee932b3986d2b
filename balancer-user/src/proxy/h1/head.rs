//! HTTP/1.x message heads: strict parsing of request and response heads, and serialization.
//!
//! Pure code: no I/O. The caller owns the read buffer and calls [`parse_request`] /
//! [`parse_response`] again with the whole buffer after every read until it gets `Some`.
//!
//! Parsing is one `httparse` pass (default, strict configuration) plus one pass over the parsed
//! fields that builds the [`HeaderMap`] and computes framing, keep-alive and `Expect` at the same
//! time. The head is copied once into a shared [`Bytes`]; the URI and every header value are
//! zero-copy slices of it, so a head costs one copy instead of one allocation per field.
//!
//! What httparse 1.10 (default `ParserConfig`) does with the edge cases, verified by the tests:
//! - whitespace between field name and colon: refused (`HeaderName`);
//! - obs-fold (line starting with SP/HTAB): refused (`HeaderName`);
//! - bare CR anywhere (request line, field line, line ends, leading empty lines): refused;
//! - NUL, other CTLs and DEL in a field value: refused (`HeaderValue`); HTAB and obs-text
//!   (0x80-0xFF) are accepted as RFC 9110 §5.5 allows;
//! - bare LF as a line terminator: accepted (we keep that, see [`parse_request`]);
//! - empty lines before the request/status line: skipped (CRLF or LF);
//! - more than one SP between request-line parts: refused (the lenient mode is opt-in);
//! - obs-text / UTF-8 in the request-target: accepted by httparse (if valid UTF-8) and by
//!   `http::Uri`; we refuse it (400). For ASCII outside RFC 3986, `http::Uri`'s own rules apply
//!   and are kept (real clients send `|` `{` `}` `[` `]` raw): it refuses `<` `>` anywhere,
//!   `"` in the query and `` ` `` in the path; it passes `\` `^` `{` `|` `}` `[` `]` and
//!   malformed percent-escapes;
//! - version other than exactly `HTTP/1.0` / `HTTP/1.1`: `Error::Version` (we answer 505 only
//!   when it is syntactically an HTTP version, 400 otherwise);
//! - field values are trimmed of leading/trailing SP/HTAB (RFC 9112 §5.1 OWS is not part of it);
//! - responses: a missing reason phrase is accepted, obs-text in it is accepted (and dropped).

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};

use crate::http::hop_by_hop::{self, ConnectionOptions};
use crate::http::token::is_tchar;

/// Limits on a request head (from the listener config).
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// The whole head: request line + header lines + final CRLF.
    pub max_head_bytes: usize,
    /// Number of header fields (field lines).
    pub max_headers: usize,
    /// Request-target length.
    pub max_uri_bytes: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 16 * 1024,
            max_headers: 100,
            max_uri_bytes: 8192,
        }
    }
}

/// Why a head is refused: the status to answer with and a short reason for the log.
/// After any HeadError the connection is closed (framing can no longer be trusted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadError {
    /// Status code of the answer (4xx/5xx for requests, always 502 for responses).
    pub status: u16,
    /// Short reason for the log (not sent to the peer as is).
    pub reason: &'static str,
}

/// How the body of a message is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (no Content-Length and no Transfer-Encoding in a request; HEAD/1xx/204/304 responses).
    Empty,
    /// Content-Length: exactly this many bytes (may be 0).
    Length(u64),
    /// Transfer-Encoding whose final coding is chunked.
    Chunked,
    /// Responses only: read until the server closes.
    CloseDelimited,
}

/// Room the proxy's own fields need in a parsed head's map (the request ID and `Host` on the
/// way in; the request ID, a sticky cookie and a coding's fields on the way out), so adding
/// them does not grow the map, a reallocation and rehash per request (perf). The forwarded
/// fields are not among them: they go into the upstream head as lines of their own
/// (upstream/raw_fields.rs), and so do the engine's `Date`, `Content-Length` and `Connection`
/// (h1_server.rs). No more than that either: a map's room is a table to fill per request.
const ROOM_FOR_ADDED_FIELDS: usize = 4;

/// A parsed, validated request head.
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// The request method (standard methods do not allocate).
    pub method: Method,
    /// origin-form "/a?b", absolute-form "http://h/a", or "*" (OPTIONS).
    pub uri: Uri,
    /// HTTP_10 or HTTP_11.
    pub version: Version,
    /// Every field as received, in order (HeaderMap's order), names lowercased, values byte-exact.
    pub headers: HeaderMap,
    /// Empty, Length or Chunked.
    pub framing: Framing,
    /// The client wants the connection kept open after this exchange:
    /// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` (case-insensitive) was present (HTTP/1.1 only, see
    /// [`parse_request`]). Other Expect values: 417.
    pub expect_continue: bool,
}

/// A parsed, validated response head.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    /// 100..=999 (the received reason phrase is not kept).
    pub status: StatusCode,
    /// HTTP_10 or HTTP_11.
    #[cfg_attr(
        not(any(test, fuzzing)),
        expect(
            dead_code,
            reason = "the fuzz targets read it (fuzz/src/lib.rs compiles this file)"
        )
    )]
    pub version: Version,
    /// Every field as received, names lowercased, values byte-exact.
    pub headers: HeaderMap,
    /// Decided with the request method (RFC 9112 §6.3).
    pub framing: Framing,
    /// The connection can carry another request after this response's body
    /// (HTTP/1.1 without Connection: close; HTTP/1.0 with keep-alive; never with CloseDelimited).
    pub keep_alive: bool,
}

/// Up to this many header slots live on the stack; more come from one heap allocation.
const STACK_HEADERS: usize = 128;

/// `http::Uri` refuses anything longer than this (its internal offsets are u16); a longer
/// target can only be "too long", so it is a 414 whatever `max_uri_bytes` says.
const URI_HARD_MAX: usize = u16::MAX as usize - 1;

const fn err(status: u16, reason: &'static str) -> HeadError {
    HeadError { status, reason }
}

type Slots<'b> = [MaybeUninit<httparse::Header<'b>>];

/// Parses a request head from the start of `buf`.
///
/// Ok(None): incomplete, read more. When `buf` already holds `max_head_bytes` without a complete
/// head this is an error instead: 414 when the request line itself is not complete yet (or the
/// target exceeds `max_uri_bytes`), else 431 (RFC 9110 §15.5.15, RFC 6585 §5). Only the first
/// `max_head_bytes` of `buf` are looked at, so the outcome does not depend on how the bytes
/// were split across reads, and the parsing work per call is bounded.
/// A target already longer than `max_uri_bytes` is refused (414) as soon as it is seen, even
/// before the request line is complete: waiting could not change the answer.
///
/// Ok(Some((head, len))): `len` bytes of buf were the head; the body/next request follows.
///
/// Decisions (each rule cites its RFC section at the check):
/// - A bare LF line terminator is accepted (RFC 9112 §2.2 "MAY recognize a single LF"): every
///   head we forward is re-serialized with CRLF, so the next hop never sees the bare LF.
/// - Empty lines before the request line are skipped (RFC 9112 §2.2 SHOULD ignore).
/// - `Expect: 100-continue` in an HTTP/1.0 request is ignored (RFC 9110 §10.1.1 MUST ignore).
pub fn parse_request(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let full = window.len() >= limits.max_head_bytes;

    let mut stack = [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut heap: Vec<httparse::Header<'_>>;
    let slots: &mut Slots<'_> = if limits.max_headers <= STACK_HEADERS {
        &mut stack[..limits.max_headers]
    } else {
        heap = Vec::with_capacity(limits.max_headers);
        &mut heap.spare_capacity_mut()[..limits.max_headers]
    };

    let mut req = httparse::Request::new(&mut []);
    // Default config: strict request parsing (single SP delimiters, no obs-fold, no space
    // before the colon, invalid field lines are errors rather than skipped).
    let parsed = req.parse_with_uninit_headers(window, slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return partial_request(&req, window, full, limits),
        Err(e) => return Err(request_syntax_error(e, &req, window)),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(err(400, "incomplete request line"));
    };

    // RFC 9112 §3 / RFC 9110 §15.5.15: a target longer than we accept is a 414.
    if target.len() > limits.max_uri_bytes || target.len() > URI_HARD_MAX {
        return Err(err(414, "request-target too long"));
    }
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // httparse already checked the method is a token (RFC 9112 §3.1); http only copies
    // extension methods.
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| err(400, "invalid method"))?;

    // One copy of the head; the URI and the field values below are slices of it.
    let shared = Bytes::copy_from_slice(&window[..len]);
    let uri = request_target(&method, target, &shared, window)?;

    let mut headers = super::spare_maps::take();
    headers
        .try_reserve(req.headers.len() + ROOM_FOR_ADDED_FIELDS)
        .map_err(|_| err(431, "too many header fields"))?;
    let mut scan = FieldScan::default();
    for h in req.headers.iter() {
        let (name, value) = field(h, &shared, window, 400, 431)?;
        scan.observe(&name, h.value);
        headers
            .try_append(name, value)
            .map_err(|_| err(431, "too many header fields"))?;
    }

    let framing = scan.request_framing(version)?;

    // RFC 9110 §10.1.1: an expectation we do not implement "MAY" get a 417; we always answer
    // 417 rather than forward an expectation the origin may act on differently.
    if scan.expect_other {
        return Err(err(417, "unsupported expectation"));
    }
    // RFC 9110 §10.1.1: "A server that receives a 100-continue expectation in an HTTP/1.0
    // request MUST ignore that expectation."
    let expect_continue = scan.expect_continue && version == Version::HTTP_11;

    let keep_alive = scan.keep_alive(version);
    Ok(Some((
        RequestHead {
            method,
            uri,
            version,
            headers,
            framing,
            keep_alive,
            expect_continue,
        },
        len,
    )))
}

/// Decides what an incomplete request head means: read more, 414 or 431.
fn partial_request(
    req: &httparse::Request<'_, '_>,
    window: &[u8],
    full: bool,
    limits: &HeadLimits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let too_long = err(414, "request-target too long");
    match (req.method, req.path) {
        // The target is complete (the head is not): check it now, not when the head ends.
        (_, Some(target)) if target.len() > limits.max_uri_bytes => return Err(too_long),
        // The target is still arriving: everything after "METHOD SP" is target so far (httparse
        // only returns Partial while every byte is a valid target byte).
        (Some(method), None) => {
            let target_start = offset_of(window, method.as_bytes()) + method.len() + 1;
            if window.len().saturating_sub(target_start) > limits.max_uri_bytes {
                return Err(too_long);
            }
        }
        _ => {}
    }
    if !full {
        return Ok(None);
    }
    // The buffer is full. If the request line has not even ended, the line is what is too big
    // (RFC 9112 §3: a server that receives a request-target longer than it wishes to parse
    // MUST respond with 414); otherwise it is the header section (RFC 6585 §5: 431).
    let line_start = req.method.map_or(0, |m| offset_of(window, m.as_bytes()));
    if req.method.is_none() || !window[line_start..].contains(&b'\n') {
        Err(err(414, "request line too long"))
    } else {
        Err(err(431, "request header section too large"))
    }
}

/// Maps an httparse error on a request to a status (RFC 9112 §2.2: invalid syntax is a 400).
fn request_syntax_error(
    e: httparse::Error,
    req: &httparse::Request<'_, '_>,
    window: &[u8],
) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => err(431, "too many header fields"),
        // httparse reports any bad byte where "HTTP/1.x" should be as a version error. Only a
        // well-formed `HTTP/DIGIT.DIGIT` that we do not implement is a 505 (RFC 9110 §15.6.6,
        // RFC 9112 §2.3); anything else is a malformed request line.
        httparse::Error::Version => {
            let well_formed = req.path.is_some_and(|target| {
                let at = offset_of(window, target.as_bytes()) + target.len() + 1;
                looks_like_version(window.get(at..).unwrap_or_default())
            });
            if well_formed {
                err(505, "HTTP version not supported")
            } else {
                err(400, "invalid HTTP version")
            }
        }
        httparse::Error::HeaderName => err(400, "invalid header field name"),
        httparse::Error::HeaderValue => err(400, "invalid header field value"),
        httparse::Error::NewLine => err(400, "invalid line ending"),
        httparse::Error::Token => err(400, "invalid request line"),
        httparse::Error::Status => err(400, "invalid request"),
    }
}

/// `HTTP/` DIGIT `.` DIGIT (RFC 9112 §2.3 HTTP-version). A prefix of it counts too, so the
/// answer does not depend on where the buffer happened to end.
fn looks_like_version(v: &[u8]) -> bool {
    !v.is_empty()
        && v.iter().take(8).enumerate().all(|(i, &b)| match i {
            0..=4 => b == b"HTTP/"[i],
            6 => b == b'.',
            _ => b.is_ascii_digit(),
        })
}

/// Checks the request-target form against the method and builds the URI (RFC 9112 §3.2).
fn request_target(
    method: &Method,
    target: &str,
    shared: &Bytes,
    window: &[u8],
) -> Result<Uri, HeadError> {
    // CONNECT needs authority-form and a tunnel (RFC 9110 §9.3.6): we are not a forward proxy,
    // so it is a method we do not implement (RFC 9110 §15.6.2: 501).
    if method == Method::CONNECT {
        return Err(err(501, "CONNECT is not supported"));
    }
    // RFC 9112 §3.2.4: asterisk-form is only used with OPTIONS.
    if target == "*" {
        return if method == Method::OPTIONS {
            Ok(Uri::from_static("*"))
        } else {
            Err(err(400, "asterisk-form target requires OPTIONS"))
        };
    }
    // RFC 9112 §3.2: no form of request-target carries a fragment; http::Uri would silently
    // drop it, changing what the origin sees. RFC 3986 §2 (via RFC 9112 §3.2): a URI is ASCII;
    // httparse and http::Uri both pass raw UTF-8 through, which routes and logs differently
    // in every implementation, so it is refused rather than forwarded.
    if let Some(&b) = target
        .as_bytes()
        .iter()
        .find(|&&b| b == b'#' || !b.is_ascii())
    {
        return Err(if b == b'#' {
            err(400, "fragment in request-target")
        } else {
            err(400, "non-ASCII byte in request-target")
        });
    }
    let start = offset_of(window, target.as_bytes());
    let uri = Uri::from_maybe_shared(shared.slice(start..start + target.len()))
        .map_err(|_| err(400, "invalid request-target"))?;
    if target.starts_with('/') {
        // RFC 9112 §3.2.1 origin-form: absolute-path [ "?" query ].
        return Ok(uri);
    }
    // RFC 9112 §3.2.2 absolute-form (a server MUST accept it). Only http(s) URIs name resources
    // we can route; anything else without a scheme is authority-form, which RFC 9112 §3.2.3
    // reserves for CONNECT.
    let Some(authority) = uri.authority() else {
        return Err(err(400, "authority-form target without CONNECT"));
    };
    let scheme = uri.scheme_str().unwrap_or_default();
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(err(400, "absolute-form target must be http or https"));
    }
    // RFC 9110 §4.2.4: userinfo in an http(s) URI is deprecated; a recipient SHOULD treat its
    // presence as an error (it is a phishing and routing-confusion vector).
    if authority.as_str().contains('@') {
        return Err(err(400, "userinfo in request-target"));
    }
    Ok(uri)
}

/// Builds one header entry. `bad` / `too_long` are the statuses for invalid bytes / an
/// over-long name (400/431 for requests, 502 for responses).
fn field(
    h: &httparse::Header<'_>,
    shared: &Bytes,
    window: &[u8],
    bad: u16,
    too_long: u16,
) -> Result<(HeaderName, HeaderValue), HeadError> {
    // httparse already checked the name is a token, so the only failure left is http's
    // 64 KiB name limit. The name is lowercased here (standard names do not allocate).
    let name = HeaderName::from_bytes(h.name.as_bytes())
        .map_err(|_| err(too_long, "header field name too long"))?;
    // Zero-copy slice of the head. HeaderValue re-checks the bytes (no CTL except HTAB,
    // RFC 9110 §5.5), a second guard behind httparse's.
    let start = offset_of(window, h.value);
    let value = HeaderValue::from_maybe_shared(shared.slice(start..start + h.value.len()))
        .map_err(|_| err(bad, "invalid header field value"))?;
    Ok((name, value))
}

/// Byte offset of `part` (a sub-slice handed out by httparse) within `whole`.
fn offset_of(whole: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

/// Parses a server's response head; `request_method` decides HEAD framing.
/// Limits: max_head_bytes / max_headers as for requests; every problem is a 502
/// (RFC 9110 §15.6.3: the gateway received an invalid response).
pub fn parse_response(
    buf: &[u8],
    request_method: &Method,
    limits: &HeadLimits,
) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    // Stack slots first: the heap slots for a limit above them (the proxy's is 200) are an
    // allocation per response, and nearly every response has far fewer fields.
    let mut stack = [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let on_stack = limits.max_headers.min(STACK_HEADERS);
    match parse_response_in(buf, request_method, limits, &mut stack[..on_stack]) {
        Err(SlotsOr::TooFew) => {
            let mut heap: Vec<httparse::Header<'_>> = Vec::with_capacity(limits.max_headers);
            let slots = &mut heap.spare_capacity_mut()[..limits.max_headers];
            parse_response_in(buf, request_method, limits, slots).map_err(SlotsOr::into_error)
        }
        other => other.map_err(SlotsOr::into_error),
    }
}

/// A head error, or: the slots given were fewer than the limit allows and the head has more
/// fields (try again with more).
enum SlotsOr {
    TooFew,
    Error(HeadError),
}

impl SlotsOr {
    fn into_error(self) -> HeadError {
        match self {
            SlotsOr::TooFew => err(502, "too many header fields in response"),
            SlotsOr::Error(error) => error,
        }
    }
}

impl From<HeadError> for SlotsOr {
    fn from(error: HeadError) -> SlotsOr {
        SlotsOr::Error(error)
    }
}

fn parse_response_in<'b>(
    buf: &'b [u8],
    request_method: &Method,
    limits: &HeadLimits,
    slots: &mut Slots<'b>,
) -> Result<Option<(ResponseHead, usize)>, SlotsOr> {
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let full = window.len() >= limits.max_head_bytes;
    let few_slots = slots.len() < limits.max_headers;

    let mut res = httparse::Response::new(&mut []);
    // Default config: strict (no space before colon, no obs-fold, invalid lines are errors).
    // RFC 9112 §5.2 lets a proxy either reject obs-fold in a response or unfold it; we reject.
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, window, slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if full => {
            return Err(err(502, "response head too large").into());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) if few_slots => return Err(SlotsOr::TooFew),
        Err(e) => return Err(response_syntax_error(e).into()),
    };
    let (Some(minor), Some(code)) = (res.version, res.code) else {
        return Err(err(502, "incomplete status line").into());
    };
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // RFC 9110 §15: status codes are 100..=599 in practice; http accepts 100..=999, which we
    // keep (unknown codes are forwarded), but 0..=99 is not a status.
    let status = StatusCode::from_u16(code).map_err(|_| err(502, "invalid status code"))?;

    let shared = Bytes::copy_from_slice(&window[..len]);
    let mut headers = super::spare_maps::take();
    headers
        .try_reserve(res.headers.len() + ROOM_FOR_ADDED_FIELDS)
        .map_err(|_| err(502, "too many header fields in response"))?;
    // Hop-by-hop fields (RFC 9110 §7.6.1) never cross the proxy, so they stay out of the map
    // (by the rule the handler's hygiene applies) instead of being removed after it is built:
    // that removal rebuilt the map to keep the order, about 4 500 instructions for gunicorn's
    // `Connection: close`, Apache's `Keep-Alive` or a chunked response (callgrind). A 101's
    // Connection and Upgrade belong to the tunnel, which the handler's hygiene handles.
    // Usually no field can be hop-by-hop (by length and first letter), and nothing more is done.
    let strip = status != StatusCode::SWITCHING_PROTOCOLS
        && res
            .headers
            .iter()
            .any(|h| hop_by_hop::may_be_hop_by_hop(h.name.as_bytes(), None));
    let fields = Fields {
        parsed: res.headers,
        shared: &shared,
        window,
    };
    let mut scan = FieldScan::default();
    // Two calls of the generic append: the usual one, which leaves nothing out, checks nothing
    // per field (one call with the check behind `strip` cost about 60 instructions more per
    // response, callgrind).
    if strip {
        let connection = connection_options(&fields);
        fields.append_to(&mut headers, &mut scan, |raw, name| {
            hop_by_hop::may_be_hop_by_hop(raw, connection.as_ref())
                && hop_by_hop::is_hop_by_hop(name, connection.as_ref())
        })?;
    } else {
        fields.append_to(&mut headers, &mut scan, |_, _| false)?;
    }

    let framing = scan.response_framing(version, status, request_method)?;
    let keep_alive = framing != Framing::CloseDelimited && scan.keep_alive(version);
    Ok(Some((
        ResponseHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        },
        len,
    )))
}

/// A parsed head's fields, with the bytes their values are slices of.
struct Fields<'h, 'b> {
    parsed: &'h [httparse::Header<'b>],
    /// The head, shared by the values.
    shared: &'h Bytes,
    /// What was parsed (`shared`'s bytes, where httparse's slices point).
    window: &'h [u8],
}

impl Fields<'_, '_> {
    /// Appends the fields to `headers`, but those `leave_out` names (given the name as it came
    /// and as a `HeaderName`), after `scan` has seen every one.
    fn append_to(
        &self,
        headers: &mut HeaderMap,
        scan: &mut FieldScan,
        leave_out: impl Fn(&[u8], &HeaderName) -> bool,
    ) -> Result<(), HeadError> {
        for h in self.parsed {
            let (name, value) = field(h, self.shared, self.window, 502, 502)?;
            scan.observe(&name, h.value);
            if leave_out(h.name.as_bytes(), &name) {
                continue;
            }
            headers
                .try_append(name, value)
                .map_err(|_| err(502, "too many header fields in response"))?;
        }
        Ok(())
    }
}

/// The options a response's Connection fields list; `None` when it has none.
fn connection_options(fields: &Fields<'_, '_>) -> Option<ConnectionOptions> {
    let mut connection: Option<ConnectionOptions> = None;
    for h in fields.parsed {
        if h.name.eq_ignore_ascii_case("connection") {
            // A value that is not a field value fails when the fields are appended.
            if let Ok((_, value)) = field(h, fields.shared, fields.window, 502, 502) {
                connection.get_or_insert_default().add(&value);
            }
        }
    }
    connection
}

fn response_syntax_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => err(502, "too many header fields in response"),
        httparse::Error::Version => err(502, "invalid HTTP version in response"),
        httparse::Error::Status => err(502, "invalid status line"),
        httparse::Error::HeaderName => err(502, "invalid header field name in response"),
        httparse::Error::HeaderValue => err(502, "invalid header field value in response"),
        httparse::Error::NewLine => err(502, "invalid line ending in response"),
        httparse::Error::Token => err(502, "invalid response"),
    }
}

/// What the framing-relevant fields said, gathered in the single pass over the fields so that
/// the decision afterwards does not depend on field order.
#[derive(Default)]
struct FieldScan {
    /// Transfer-Encoding (RFC 9112 §6.1), accumulated over every TE field line.
    te_present: bool,
    /// Number of non-empty list elements.
    te_codings: u32,
    /// Times `chunked` appeared.
    te_chunked: u32,
    /// Some coding came after a `chunked`.
    te_after_chunked: bool,
    /// A coding other than `chunked` (including `chunked` with parameters).
    te_other: bool,
    /// A list element that is not `token *( OWS ";" ... )`.
    te_malformed: bool,
    /// Content-Length (RFC 9110 §8.6), accumulated over every CL field line.
    cl: ContentLength,
    /// Connection options (RFC 9110 §7.6.1).
    conn_close: bool,
    conn_keep_alive: bool,
    /// Expect (RFC 9110 §10.1.1).
    expect_continue: bool,
    expect_other: bool,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum ContentLength {
    #[default]
    Absent,
    Value(u64),
    /// The first problem found; later values do not matter.
    Invalid(&'static str),
}

impl FieldScan {
    /// Notes one field line. Standard `HeaderName`s compare as an enum tag, so fields we do not
    /// care about cost one comparison each.
    fn observe(&mut self, name: &HeaderName, value: &[u8]) {
        if *name == TRANSFER_ENCODING {
            self.te_present = true;
            for coding in list_elements(value) {
                self.te_coding(coding);
            }
        } else if *name == CONTENT_LENGTH {
            for element in value.split(|&b| b == b',') {
                self.cl_element(trim_ows(element));
            }
        } else if *name == CONNECTION {
            for option in list_elements(value) {
                if option.eq_ignore_ascii_case(b"close") {
                    self.conn_close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    self.conn_keep_alive = true;
                }
            }
        } else if *name == EXPECT {
            for expectation in list_elements(value) {
                if expectation.eq_ignore_ascii_case(b"100-continue") {
                    self.expect_continue = true;
                } else {
                    self.expect_other = true;
                }
            }
        }
    }

    /// One element of the Transfer-Encoding list: `transfer-coding = token *( OWS ";" OWS
    /// transfer-parameter )` (RFC 9112 §7). Coding names are case-insensitive (§7).
    fn te_coding(&mut self, coding: &[u8]) {
        self.te_codings += 1;
        if self.te_chunked > 0 {
            self.te_after_chunked = true;
        }
        if coding.eq_ignore_ascii_case(b"chunked") {
            self.te_chunked += 1;
            return;
        }
        let name = coding.split(|&b| b == b';').next().unwrap_or_default();
        let name = trim_ows(name);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            self.te_malformed = true;
        } else {
            self.te_other = true;
        }
    }

    /// One element of a Content-Length value. RFC 9110 §8.6: `Content-Length = 1*DIGIT`; a
    /// list of identical values MAY be accepted as one, anything else is an error. Values are
    /// compared numerically ("007" equals "7"); the decimal value is all we use.
    fn cl_element(&mut self, element: &[u8]) {
        if matches!(self.cl, ContentLength::Invalid(_)) {
            return;
        }
        let parsed = parse_content_length(element);
        self.cl = match (self.cl, parsed) {
            (_, Err(reason)) => ContentLength::Invalid(reason),
            (ContentLength::Value(prev), Ok(n)) if prev != n => {
                ContentLength::Invalid("differing Content-Length values")
            }
            (_, Ok(n)) => ContentLength::Value(n),
        };
    }

    /// Connection persistence (RFC 9112 §9.3): HTTP/1.1 persists unless `close`; HTTP/1.0
    /// only with `keep-alive` (RFC 9112 Appendix C.2.2) and never with `close`.
    fn keep_alive(&self, version: Version) -> bool {
        if self.conn_close {
            false
        } else if version == Version::HTTP_10 {
            self.conn_keep_alive
        } else {
            true
        }
    }

    /// RFC 9112 §6.3 for requests. The order of the checks is the precedence of the errors.
    fn request_framing(&self, version: Version) -> Result<Framing, HeadError> {
        if self.te_present {
            // RFC 9112 §6.1: TE in an HTTP/1.0 message means the framing is faulty.
            if version == Version::HTTP_10 {
                return Err(err(400, "Transfer-Encoding in an HTTP/1.0 request"));
            }
            // RFC 9112 §6.1 / §6.3 item 3: TE and CL together are a smuggling attempt as often
            // as not; a server MAY reject, and we do.
            if self.cl != ContentLength::Absent {
                return Err(err(400, "both Transfer-Encoding and Content-Length"));
            }
            if self.te_codings == 0 {
                return Err(err(400, "empty Transfer-Encoding"));
            }
            if self.te_malformed {
                return Err(err(400, "malformed Transfer-Encoding"));
            }
            // RFC 9112 §7: chunked MUST NOT be applied more than once.
            if self.te_chunked > 1 {
                return Err(err(400, "chunked applied more than once"));
            }
            // RFC 9112 §6.3 item 4: chunked not final in a request -> 400.
            if self.te_after_chunked {
                return Err(err(400, "chunked is not the final transfer coding"));
            }
            // RFC 9112 §6.1: a transfer coding we do not understand SHOULD get a 501. This also
            // covers a TE without chunked at all (e.g. only gzip): its body cannot be delimited.
            if self.te_other {
                return Err(err(501, "unsupported transfer coding"));
            }
            return Ok(Framing::Chunked);
        }
        match self.cl {
            // RFC 9112 §6.3 item 5: an invalid Content-Length in a request is a 400.
            ContentLength::Invalid(reason) => Err(err(400, reason)),
            ContentLength::Value(n) => Ok(Framing::Length(n)),
            // RFC 9112 §6.3 item 6: neither -> no body.
            ContentLength::Absent => Ok(Framing::Empty),
        }
    }

    /// RFC 9112 §6.3 for responses; every problem is a 502 (RFC 9110 §15.6.3).
    fn response_framing(
        &self,
        version: Version,
        status: StatusCode,
        request_method: &Method,
    ) -> Result<Framing, HeadError> {
        // RFC 9112 §6.3 item 1: responses to HEAD, 1xx, 204 and 304 end at the head, whatever
        // CL/TE say (those describe the representation, not this message's body).
        if *request_method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok(Framing::Empty);
        }
        if self.te_present {
            // RFC 9112 §6.1: TE in an HTTP/1.0 message means the framing is faulty.
            if version == Version::HTTP_10 {
                return Err(err(502, "Transfer-Encoding in an HTTP/1.0 response"));
            }
            // RFC 9112 §6.3 item 3: TE overrides CL, but a message with both "ought to be
            // handled as an error"; we never pass such a response on.
            if self.cl != ContentLength::Absent {
                return Err(err(
                    502,
                    "both Transfer-Encoding and Content-Length in response",
                ));
            }
            if self.te_codings == 0 || self.te_malformed {
                return Err(err(502, "malformed Transfer-Encoding in response"));
            }
            // RFC 9112 §7: chunked MUST NOT be applied more than once.
            if self.te_chunked > 1 {
                return Err(err(502, "chunked applied more than once in response"));
            }
            // RFC 9112 §6.3 item 4: final coding chunked -> chunked; otherwise the body runs
            // until the server closes.
            return Ok(if self.te_chunked == 1 && !self.te_after_chunked {
                Framing::Chunked
            } else {
                Framing::CloseDelimited
            });
        }
        match self.cl {
            // RFC 9112 §6.3 item 5: an invalid CL in a response to a proxy is an error (502).
            ContentLength::Invalid(_) => Err(err(502, "invalid Content-Length in response")),
            ContentLength::Value(n) => Ok(Framing::Length(n)),
            // RFC 9112 §6.3 item 8: otherwise read until close.
            ContentLength::Absent => Ok(Framing::CloseDelimited),
        }
    }
}

/// `1*DIGIT` fitting in u64 (RFC 9110 §8.6). No sign, no inner space, no hex.
fn parse_content_length(digits: &[u8]) -> Result<u64, &'static str> {
    if digits.is_empty() {
        return Err("empty Content-Length");
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err("invalid Content-Length");
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or("Content-Length overflows")?;
    }
    Ok(n)
}

/// The non-empty elements of a `#element` list (RFC 9110 §5.6.1: recipients ignore empty
/// elements and the OWS around them).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// Strips OWS (SP / HTAB, RFC 9110 §5.6.3) from both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Writes `METHOD target HTTP/1.1\r\n`, each header `name: value\r\n` (HeaderMap iteration
/// order, every value of a repeated name), then each of `added` (complete field lines, written
/// as they are), then `\r\n`. Adds nothing else.
///
/// `target` is written as given: it must be a valid request-target (e.g. from a `Uri`).
/// Always CRLF (RFC 9112 §2.1), whatever line endings the received head used.
pub fn write_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    added: &[&[u8]],
) {
    let method = method.as_str();
    let added_len: usize = added.iter().map(|lines| lines.len()).sum();
    out.reserve(method.len() + 1 + target.len() + 11 + fields_len(headers) + added_len + 2);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        write_field(out, name, value);
    }
    for lines in added {
        out.extend_from_slice(lines);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes `HTTP/1.1 {code} {canonical reason}\r\n` (HTTP/1.0 when version is HTTP_10), the
/// headers, then `\r\n`. Unknown codes get an empty reason ("HTTP/1.1 599 \r\n" is valid,
/// RFC 9112 §4: reason-phrase may be empty but the SP before it is required).
pub fn write_response_head(
    out: &mut Vec<u8>,
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
) {
    write_response_head_with(out, version, status, headers, |_| false, &[]);
}

/// [`write_response_head`] without the fields `skip` names, and with `extra` after the map's
/// own: what the map would give after removing and inserting those fields (an inserted name
/// goes last), without the hashing and moving those edits cost on every response.
pub fn write_response_head_with(
    out: &mut Vec<u8>,
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    skip: impl Fn(&HeaderName) -> bool,
    extra: &[(HeaderName, HeaderValue)],
) {
    let reason = status.canonical_reason().unwrap_or("");
    let line =
        |(name, value): (&HeaderName, &HeaderValue)| name.as_str().len() + 2 + value.len() + 2;
    let fields: usize = headers
        .iter()
        .filter(|(name, _)| !skip(name))
        .map(line)
        .sum::<usize>()
        + extra
            .iter()
            .map(|(name, value)| line((name, value)))
            .sum::<usize>();
    out.reserve(13 + reason.len() + 2 + fields + 2);
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers.iter().filter(|(name, _)| !skip(name)) {
        write_field(out, name, value);
    }
    for (name, value) in extra {
        write_field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Exact size of the field lines, so a head is written with at most one reallocation.
fn fields_len(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum()
}

fn write_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_head_bytes: 4096,
            max_headers: 16,
            max_uri_bytes: 256,
        }
    }

    fn parse(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_request(buf, &limits())
    }

    fn ok(buf: &[u8]) -> (RequestHead, usize) {
        match parse(buf) {
            Ok(Some(r)) => r,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn head(buf: &[u8]) -> RequestHead {
        ok(buf).0
    }

    fn status(buf: &[u8]) -> u16 {
        match parse(buf) {
            Err(e) => e.status,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// A request with the given extra header lines (each without line end).
    fn with_fields(version: &str, fields: &[&str]) -> Vec<u8> {
        let mut s = format!("POST /p {version}\r\nHost: h\r\n");
        for f in fields {
            s.push_str(f);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    fn framing(fields: &[&str]) -> Result<Framing, u16> {
        match parse(&with_fields("HTTP/1.1", fields)) {
            Ok(Some((h, _))) => Ok(h.framing),
            Ok(None) => panic!("incomplete"),
            Err(e) => Err(e.status),
        }
    }

    fn resp(buf: &[u8], method: &Method) -> Result<Option<(ResponseHead, usize)>, HeadError> {
        parse_response(buf, method, &limits())
    }

    fn resp_ok(buf: &[u8], method: &Method) -> ResponseHead {
        match resp(buf, method) {
            Ok(Some((h, _))) => h,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn resp_err(buf: &[u8]) -> HeadError {
        match resp(buf, &Method::GET) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    // ---- request line and target (RFC 9112 §3) ----

    /// More fields than fit on the stack are parsed on the heap, up to the limit exactly.
    #[test]
    fn responses_with_more_fields_than_the_stack_slots_parse_up_to_the_limit() {
        let limits = HeadLimits {
            max_head_bytes: 64 * 1024,
            max_headers: STACK_HEADERS + 72,
            max_uri_bytes: 8 * 1024,
        };
        let head = |fields: usize| {
            let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n".to_vec();
            for index in 1..fields {
                head.extend_from_slice(format!("x-field-{index}: {index}\r\n").as_bytes());
            }
            head.extend_from_slice(b"\r\n");
            head
        };
        for fields in [STACK_HEADERS, STACK_HEADERS + 1, limits.max_headers] {
            let (parsed, _) = parse_response(&head(fields), &Method::GET, &limits)
                .expect("within the limit")
                .expect("complete");
            assert_eq!(parsed.headers.len(), fields);
            assert_eq!(parsed.headers["x-field-1"], "1");
        }
        let over = parse_response(&head(limits.max_headers + 1), &Method::GET, &limits);
        assert_eq!(over.unwrap_err().status, 502);
    }

    #[test]
    fn simple_get_origin_form_rfc9112_3_2_1() {
        let buf = b"GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nX-Custom: v\r\n\r\n";
        let (h, len) = ok(buf);
        assert_eq!(len, buf.len());
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.uri.path(), "/a/b");
        assert_eq!(h.uri.query(), Some("c=d"));
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.headers["host"], "example.com");
        assert_eq!(h.headers["x-custom"], "v");
    }

    #[test]
    fn pipelined_bytes_after_head_are_not_consumed_rfc9112_9_3_2() {
        let first = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut buf = first.to_vec();
        buf.extend_from_slice(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
        let (h, len) = ok(&buf);
        assert_eq!(len, first.len());
        assert_eq!(h.uri.path(), "/1");
        let (h2, len2) = ok(&buf[len..]);
        assert_eq!(h2.uri.path(), "/2");
        assert_eq!(len + len2, buf.len());
        // A body after the head is left for the body reader.
        let with_body = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let (h, len) = ok(with_body);
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(&with_body[len..], b"hello");
    }

    #[test]
    fn every_prefix_of_a_head_is_incomplete() {
        let buf = b"\r\nPOST /upload?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
        for end in 0..buf.len() {
            assert_eq!(
                parse(&buf[..end]).unwrap().map(|r| r.1),
                None,
                "prefix {end}"
            );
        }
        assert_eq!(ok(buf).1, buf.len());
    }

    #[test]
    fn absolute_form_accepted_rfc9112_3_2_2() {
        let h = head(b"GET http://example.com:8080/a?b HTTP/1.1\r\nHost: example.com:8080\r\n\r\n");
        assert_eq!(h.uri.scheme_str(), Some("http"));
        assert_eq!(h.uri.authority().unwrap().as_str(), "example.com:8080");
        assert_eq!(h.uri.path_and_query().unwrap().as_str(), "/a?b");
        let h = head(b"GET https://example.com/ HTTP/1.1\r\n\r\n");
        assert_eq!(h.uri.scheme_str(), Some("https"));
        // Scheme names are case-insensitive (RFC 3986 §3.1).
        let h = head(b"GET HTTP://example.com/x HTTP/1.1\r\n\r\n");
        assert_eq!(h.uri.host(), Some("example.com"));
        // OPTIONS to an authority without path (RFC 9112 §3.2.4 example).
        head(b"OPTIONS http://www.example.org:8001 HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn absolute_form_other_scheme_refused_rfc9112_3_2_2() {
        assert_eq!(status(b"GET ftp://example.com/x HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET mailto:a@b HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn userinfo_in_target_refused_rfc9110_4_2_4() {
        assert_eq!(
            status(b"GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n"),
            400
        );
    }

    #[test]
    fn asterisk_form_only_with_options_rfc9112_3_2_4() {
        let h = head(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(h.method, Method::OPTIONS);
        assert_eq!(h.uri, "*");
        assert_eq!(status(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(status(b"POST * HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    }

    #[test]
    fn authority_form_without_connect_refused_rfc9112_3_2_3() {
        assert_eq!(status(b"GET example.com:443 HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET example.com HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"OPTIONS example.com:80 HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn connect_not_implemented_rfc9110_9_3_6() {
        let e = parse(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
        assert_eq!(
            e.unwrap_err(),
            HeadError {
                status: 501,
                reason: "CONNECT is not supported"
            }
        );
    }

    #[test]
    fn fragment_in_target_refused_rfc9112_3_2() {
        assert_eq!(status(b"GET /a#frag HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET http://h/a#f HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn non_ascii_target_refused_rfc9112_3_2() {
        // httparse and http::Uri both accept UTF-8 in the target; we refuse it.
        assert_eq!(status("GET /caf\u{e9} HTTP/1.1\r\n\r\n".as_bytes()), 400);
        // Not UTF-8: httparse itself refuses.
        assert_eq!(status(b"GET /\xff HTTP/1.1\r\n\r\n"), 400);
        // What http::Uri decides for ASCII outside RFC 3986 is kept as is.
        assert_eq!(status(b"GET /a<b HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET /a?b\"c HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET /a`b HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            head(b"GET /a|b{c}?d^e[f] HTTP/1.1\r\n\r\n").uri,
            "/a|b{c}?d^e[f]"
        );
    }

    #[test]
    fn target_longer_than_max_uri_is_414_rfc9112_3() {
        let at_limit = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(255));
        assert_eq!(head(at_limit.as_bytes()).uri.path().len(), 256);
        let over = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(256));
        assert_eq!(status(over.as_bytes()), 414);
    }

    #[test]
    fn target_over_max_uri_is_414_before_the_line_ends_rfc9112_3() {
        // The target is still arriving and already too long: no point waiting for more.
        let partial = format!("GET /{}", "a".repeat(300));
        assert_eq!(status(partial.as_bytes()), 414);
        // Complete target but incomplete head.
        let partial = format!("GET /{} HTTP/1.1\r\nHost: h\r\n", "a".repeat(300));
        assert_eq!(status(partial.as_bytes()), 414);
        // Under the limit, incomplete: read more.
        assert!(parse(b"GET /aaaa").unwrap().is_none());
    }

    #[test]
    fn full_buffer_without_request_line_end_is_414_rfc9112_3() {
        let l = HeadLimits {
            max_head_bytes: 64,
            max_headers: 16,
            max_uri_bytes: 1000,
        };
        let mut buf = b"GET /".to_vec();
        buf.resize(64, b'a');
        assert_eq!(parse_request(&buf, &l).unwrap_err().status, 414);
        // Even a huge method token: the request line is what does not fit.
        assert_eq!(parse_request(&[b'A'; 64], &l).unwrap_err().status, 414);
        // "HTTP/1.1" present but no line end yet: still the request line.
        let mut buf = format!("GET /{} HTTP/1.1", "a".repeat(50)).into_bytes();
        buf.truncate(64);
        assert_eq!(buf.len(), 64);
        assert_eq!(parse_request(&buf, &l).unwrap_err().status, 414);
        // One byte less than the limit: just incomplete.
        assert!(parse_request(&buf[..63], &l).unwrap().is_none());
    }

    #[test]
    fn full_buffer_with_request_line_is_431_rfc6585_5() {
        let l = HeadLimits {
            max_head_bytes: 64,
            max_headers: 16,
            max_uri_bytes: 1000,
        };
        let mut buf = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        buf.resize(64, b'v');
        assert_eq!(parse_request(&buf, &l).unwrap_err().status, 431);
        // More bytes than the limit in the buffer: same answer (only the window is parsed).
        let mut more = buf.clone();
        more.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_request(&more, &l).unwrap_err().status, 431);
    }

    #[test]
    fn head_of_exactly_max_head_bytes_is_accepted() {
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let l = HeadLimits {
            max_head_bytes: buf.len(),
            ..limits()
        };
        assert_eq!(parse_request(buf, &l).unwrap().unwrap().1, buf.len());
        let l = HeadLimits {
            max_head_bytes: buf.len() - 1,
            ..limits()
        };
        assert_eq!(parse_request(buf, &l).unwrap_err().status, 431);
    }

    #[test]
    fn too_many_headers_is_431_rfc6585_5() {
        let fields: Vec<String> = (0..17).map(|i| format!("X-{i}: v")).collect();
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        // Host + 15 = 16 = max_headers: fine.
        assert!(parse(&with_fields("HTTP/1.1", &fields[..15])).is_ok());
        // Host + 16 = 17.
        assert_eq!(status(&with_fields("HTTP/1.1", &fields[..16])), 431);
    }

    #[test]
    fn many_headers_beyond_the_stack_array() {
        let l = HeadLimits {
            max_head_bytes: 64 * 1024,
            max_headers: 200,
            max_uri_bytes: 256,
        };
        let mut s = String::from("GET / HTTP/1.1\r\n");
        for i in 0..200 {
            s.push_str(&format!("X-{i}: {i}\r\n"));
        }
        let ok = format!("{s}\r\n");
        let (h, _) = parse_request(ok.as_bytes(), &l).unwrap().unwrap();
        assert_eq!(h.headers.len(), 200);
        assert_eq!(h.headers["x-199"], "199");
        let over = format!("{s}X-200: v\r\n\r\n");
        assert_eq!(parse_request(over.as_bytes(), &l).unwrap_err().status, 431);
    }

    #[test]
    fn zero_max_headers() {
        let l = HeadLimits {
            max_headers: 0,
            ..limits()
        };
        assert!(
            parse_request(b"GET / HTTP/1.1\r\n\r\n", &l)
                .unwrap()
                .is_some()
        );
        let e = parse_request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", &l).unwrap_err();
        assert_eq!(e.status, 431);
    }

    #[test]
    fn http_10_and_11_versions_rfc9112_2_3() {
        assert_eq!(head(b"GET / HTTP/1.0\r\n\r\n").version, Version::HTTP_10);
        assert_eq!(head(b"GET / HTTP/1.1\r\n\r\n").version, Version::HTTP_11);
    }

    #[test]
    fn unsupported_version_is_505_rfc9110_15_6_6() {
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status(b"GET / HTTP/0.9\r\n\r\n"), 505);
        // httparse refuses unknown minors too (RFC 9110 §2.5 would allow treating 1.2 as 1.1).
        assert_eq!(status(b"GET / HTTP/1.2\r\n\r\n"), 505);
        // Same answer when the rest of the line has not arrived yet.
        assert_eq!(status(b"GET / HTTP/2"), 505);
        assert_eq!(status(b"GET / HTTP/3."), 505);
    }

    #[test]
    fn malformed_version_is_400_rfc9112_2_3() {
        assert_eq!(status(b"GET / FOO/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET / http/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1x\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/11\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTPS"), 400);
        // HTTP/0.9 simple request: no version at all.
        assert_eq!(status(b"GET /\r\n\r\n"), 400);
    }

    #[test]
    fn request_line_single_sp_delimiters_rfc9112_3() {
        // httparse's default config refuses multiple spaces (the lenient mode is opt-in).
        assert_eq!(status(b"GET  / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET /  HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET\t/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1 \r\n\r\n"), 400);
        assert_eq!(status(b" GET / HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn method_must_be_a_token_rfc9112_3_1() {
        assert_eq!(status(b"GE(T / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"G\x00T / HTTP/1.1\r\n\r\n"), 400);
        // Extension methods are fine (case-sensitive, RFC 9110 §9.1).
        assert_eq!(head(b"PURGE / HTTP/1.1\r\n\r\n").method.as_str(), "PURGE");
        assert_eq!(head(b"get / HTTP/1.1\r\n\r\n").method.as_str(), "get");
    }

    // ---- line endings (RFC 9112 §2.2) ----

    #[test]
    fn bare_lf_line_ends_accepted_rfc9112_2_2() {
        // RFC 9112 §2.2: a recipient MAY recognize a single LF as a line terminator. We do,
        // because every head is re-serialized with CRLF before it is forwarded.
        let buf = b"GET /x HTTP/1.1\nHost: h\nX-A: 1\r\n\nrest";
        let (h, len) = ok(buf);
        assert_eq!(&buf[len..], b"rest");
        assert_eq!(h.headers["host"], "h");
        assert_eq!(h.headers["x-a"], "1");
        let mut out = Vec::new();
        write_request_head(&mut out, &h.method, "/x", &h.headers, &[]);
        assert_eq!(out, b"GET /x HTTP/1.1\r\nhost: h\r\nx-a: 1\r\n\r\n");
    }

    #[test]
    fn leading_empty_lines_ignored_rfc9112_2_2() {
        let buf = b"\r\n\r\n\nGET / HTTP/1.1\r\n\r\n";
        let (h, len) = ok(buf);
        assert_eq!(len, buf.len());
        assert_eq!(h.method, Method::GET);
        assert!(parse(b"\r\n\r\n").unwrap().is_none());
    }

    #[test]
    fn bare_cr_refused_rfc9112_2_2() {
        for buf in [
            &b"\rGET / HTTP/1.1\r\n\r\n"[..],
            b"GET /a\rb HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\rHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo\rst: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\r\n\r\n",
        ] {
            assert_eq!(status(buf), 400, "{:?}", String::from_utf8_lossy(buf));
        }
    }

    // ---- field syntax (RFC 9112 §5, RFC 9110 §5.5) ----

    #[test]
    fn whitespace_before_colon_refused_rfc9112_5_1() {
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost : h\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n"), 400);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n"),
            400
        );
    }

    #[test]
    fn obs_fold_refused_rfc9112_5_2() {
        assert_eq!(status(b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n"), 400);
        // Whitespace before the first field line (RFC 9112 §2.2) is refused too.
        assert_eq!(status(b"GET / HTTP/1.1\r\n Host: h\r\n\r\n"), 400);
    }

    #[test]
    fn field_line_without_colon_or_name_refused_rfc9112_5() {
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\n: v\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nX(y): v\r\n\r\n"), 400);
    }

    #[test]
    fn ctl_in_field_value_refused_rfc9110_5_5() {
        // Short values (scalar path) and values longer than 32 bytes (httparse's SIMD path).
        let long = "v".repeat(40);
        for ctl in [0x00u8, 0x01, 0x08, 0x0b, 0x0c, 0x1f, 0x7f] {
            for prefix in ["", long.as_str()] {
                let mut buf = format!("GET / HTTP/1.1\r\nX-A: {prefix}a").into_bytes();
                buf.push(ctl);
                buf.extend_from_slice(format!("b{long}\r\n\r\n").as_bytes());
                assert_eq!(status(&buf), 400, "ctl {ctl:#x}");
            }
        }
    }

    #[test]
    fn htab_and_obs_text_in_field_value_accepted_rfc9110_5_5() {
        let h = head(b"GET / HTTP/1.1\r\nX-A: a\tb\xe9\xff c\r\n\r\n");
        assert_eq!(h.headers["x-a"].as_bytes(), b"a\tb\xe9\xff c");
    }

    #[test]
    fn field_values_byte_exact_without_ows_rfc9112_5_1() {
        let h = head(b"GET / HTTP/1.1\r\nX-A: \t Va  Lue \t\r\nX-Empty:\r\nX-B:x\r\n\r\n");
        assert_eq!(h.headers["x-a"], "Va  Lue");
        assert_eq!(h.headers["x-empty"], "");
        assert_eq!(h.headers["x-b"], "x");
    }

    #[test]
    fn names_lowercased_and_repeated_fields_kept_in_order_rfc9110_5_3() {
        let h = head(b"GET / HTTP/1.1\r\nX-Dup: 1\r\nACCEPT: a\r\nx-DUP: 2\r\nX-Dup: 3\r\n\r\n");
        let dups: Vec<_> = h.headers.get_all("x-dup").iter().collect();
        assert_eq!(dups, ["1", "2", "3"]);
        assert_eq!(h.headers["accept"], "a");
        assert_eq!(h.headers.len(), 4);
        assert!(
            h.headers
                .keys()
                .all(|k| k.as_str() == k.as_str().to_ascii_lowercase())
        );
    }

    // ---- connection persistence (RFC 9112 §9.3) ----

    #[test]
    fn http11_keep_alive_unless_close_rfc9112_9_3() {
        assert!(head(b"GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n").keep_alive);
        // Across several Connection fields.
        let buf = b"GET / HTTP/1.1\r\nConnection: te\r\nConnection: ,close,\r\n\r\n";
        assert!(!head(buf).keep_alive);
        // "close" must be a whole token.
        assert!(head(b"GET / HTTP/1.1\r\nConnection: closed\r\n\r\n").keep_alive);
    }

    #[test]
    fn http10_keep_alive_only_when_asked_rfc9112_c_2_2() {
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: foo , keep-alive\r\n\r\n").keep_alive);
        let both = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n";
        assert!(!head(both).keep_alive);
    }

    // ---- Expect (RFC 9110 §10.1.1) ----

    #[test]
    fn expect_100_continue_rfc9110_10_1_1() {
        let h = head(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(h.expect_continue);
        let h = head(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
        assert!(h.expect_continue);
        // RFC 9110 §10.1.1: MUST ignore 100-continue in an HTTP/1.0 request.
        let h = head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(!h.expect_continue);
    }

    #[test]
    fn other_expectation_is_417_rfc9110_10_1_1() {
        assert_eq!(status(b"GET / HTTP/1.1\r\nExpect: foo\r\n\r\n"), 417);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nExpect: 100-continue, foo\r\n\r\n"),
            417
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nExpect: 100-continue;x=1\r\n\r\n"),
            417
        );
        assert_eq!(status(b"GET / HTTP/1.0\r\nExpect: bar\r\n\r\n"), 417);
        // An empty list expects nothing (RFC 9110 §5.6.1: empty elements are ignored).
        assert!(!head(b"GET / HTTP/1.1\r\nExpect:\r\n\r\n").expect_continue);
    }

    // ---- request framing (RFC 9112 §6) ----

    #[test]
    fn no_cl_no_te_means_no_body_rfc9112_6_3_item_6() {
        assert_eq!(framing(&[]), Ok(Framing::Empty));
    }

    #[test]
    fn chunked_request_rfc9112_6_3_item_4() {
        assert_eq!(
            framing(&["Transfer-Encoding: chunked"]),
            Ok(Framing::Chunked)
        );
        // Coding names are case-insensitive (RFC 9112 §7); empty elements ignored (RFC 9110
        // §5.6.1).
        assert_eq!(
            framing(&["Transfer-Encoding: CHUNKED"]),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            framing(&["Transfer-Encoding: , chunked ,"]),
            Ok(Framing::Chunked)
        );
    }

    #[test]
    fn te_in_http10_request_is_400_rfc9112_6_1() {
        let buf = with_fields("HTTP/1.0", &["Transfer-Encoding: chunked"]);
        assert_eq!(status(&buf), 400);
    }

    #[test]
    fn te_and_cl_together_is_400_rfc9112_6_3_item_3() {
        assert_eq!(
            framing(&["Transfer-Encoding: chunked", "Content-Length: 5"]),
            Err(400)
        );
        assert_eq!(
            framing(&["Content-Length: 5", "Transfer-Encoding: chunked"]),
            Err(400)
        );
        // Even when the TE would be refused for another reason, TE+CL comes first.
        assert_eq!(
            framing(&["Content-Length: 5", "Transfer-Encoding: gzip"]),
            Err(400)
        );
    }

    #[test]
    fn chunked_twice_is_400_rfc9112_7() {
        assert_eq!(framing(&["Transfer-Encoding: chunked, chunked"]), Err(400));
        assert_eq!(
            framing(&["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"]),
            Err(400)
        );
    }

    #[test]
    fn chunked_not_final_is_400_rfc9112_6_3_item_4() {
        assert_eq!(framing(&["Transfer-Encoding: chunked, gzip"]), Err(400));
        assert_eq!(
            framing(&["Transfer-Encoding: gzip, chunked, gzip"]),
            Err(400)
        );
        assert_eq!(
            framing(&["Transfer-Encoding: chunked", "Transfer-Encoding: gzip"]),
            Err(400)
        );
    }

    #[test]
    fn other_transfer_codings_are_501_rfc9112_6_1() {
        for te in [
            "gzip",
            "gzip, chunked",
            "deflate",
            "compress",
            "x-foo",
            "chunked;x=1",
            "identity",
        ] {
            let field = format!("Transfer-Encoding: {te}");
            assert_eq!(framing(&[&field]), Err(501), "{te}");
        }
        // Across fields: the first coding applied is gzip, the final is chunked.
        assert_eq!(
            framing(&["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"]),
            Err(501)
        );
    }

    #[test]
    fn empty_or_malformed_te_is_400_rfc9112_6_1() {
        assert_eq!(framing(&["Transfer-Encoding:"]), Err(400));
        assert_eq!(framing(&["Transfer-Encoding: , ,"]), Err(400));
        assert_eq!(framing(&["Transfer-Encoding: chu nked"]), Err(400));
        assert_eq!(framing(&["Transfer-Encoding: \"chunked\""]), Err(400));
        assert_eq!(framing(&["Transfer-Encoding: ;x=1"]), Err(400));
    }

    #[test]
    fn content_length_rfc9110_8_6() {
        assert_eq!(framing(&["Content-Length: 0"]), Ok(Framing::Length(0)));
        assert_eq!(framing(&["Content-Length: 42"]), Ok(Framing::Length(42)));
        // Leading zeros are still 1*DIGIT.
        assert_eq!(framing(&["Content-Length: 007"]), Ok(Framing::Length(7)));
        assert_eq!(
            framing(&["Content-Length: 18446744073709551615"]),
            Ok(Framing::Length(u64::MAX))
        );
    }

    #[test]
    fn identical_content_lengths_accepted_as_one_rfc9110_8_6() {
        assert_eq!(framing(&["Content-Length: 5, 5"]), Ok(Framing::Length(5)));
        assert_eq!(framing(&["Content-Length: 5,5 ,5"]), Ok(Framing::Length(5)));
        assert_eq!(
            framing(&["Content-Length: 5", "Content-Length: 5"]),
            Ok(Framing::Length(5))
        );
    }

    #[test]
    fn differing_content_lengths_are_400_rfc9112_6_3_item_5() {
        assert_eq!(framing(&["Content-Length: 5, 6"]), Err(400));
        assert_eq!(
            framing(&["Content-Length: 5", "Content-Length: 6"]),
            Err(400)
        );
    }

    #[test]
    fn invalid_content_length_is_400_rfc9112_6_3_item_5() {
        for cl in [
            "", "+5", "-5", "0x5", "5 5", "abc", "5,", ",5", "5, ,5", "1e3", "5.0", "\u{661}",
        ] {
            let field = format!("Content-Length: {cl}");
            assert_eq!(framing(&[&field]), Err(400), "{cl:?}");
        }
    }

    #[test]
    fn content_length_overflow_is_400_rfc9110_8_6() {
        assert_eq!(framing(&["Content-Length: 18446744073709551616"]), Err(400));
        assert_eq!(
            framing(&["Content-Length: 99999999999999999999999"]),
            Err(400)
        );
        let e = parse(&with_fields(
            "HTTP/1.1",
            &["Content-Length: 18446744073709551616"],
        ));
        assert_eq!(e.unwrap_err().reason, "Content-Length overflows");
    }

    // ---- responses (RFC 9112 §4, §6.3) ----

    #[test]
    fn response_with_content_length_rfc9112_6_3_item_6() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: s\r\n\r\nhello";
        let (h, len) = resp(buf, &Method::GET).unwrap().unwrap();
        assert_eq!(&buf[len..], b"hello");
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers["server"], "s");
    }

    #[test]
    fn response_chunked_when_final_coding_rfc9112_6_3_item_4() {
        let h = resp_ok(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.keep_alive);
        let h = resp_ok(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(h.framing, Framing::Chunked);
    }

    #[test]
    fn response_te_not_chunked_is_close_delimited_rfc9112_6_3_item_4() {
        for te in ["gzip", "chunked, gzip"] {
            let buf = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
            let h = resp_ok(buf.as_bytes(), &Method::GET);
            assert_eq!(h.framing, Framing::CloseDelimited, "{te}");
            assert!(!h.keep_alive);
        }
    }

    #[test]
    fn response_without_length_is_close_delimited_rfc9112_6_3_item_8() {
        let h = resp_ok(b"HTTP/1.1 200 OK\r\n\r\n", &Method::GET);
        assert_eq!(h.framing, Framing::CloseDelimited);
        assert!(!h.keep_alive);
    }

    #[test]
    fn response_to_head_has_no_body_rfc9112_6_3_item_1() {
        let h = resp_ok(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            &Method::HEAD,
        );
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive);
        assert_eq!(h.headers["content-length"], "100");
        let h = resp_ok(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &Method::HEAD,
        );
        assert_eq!(h.framing, Framing::Empty);
        let h = resp_ok(b"HTTP/1.1 200 OK\r\n\r\n", &Method::HEAD);
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive);
    }

    #[test]
    fn response_1xx_204_304_have_no_body_rfc9112_6_3_item_1() {
        for code in [100, 101, 103, 204, 304] {
            let buf = format!(
                "HTTP/1.1 {code} X\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            let h = resp_ok(buf.as_bytes(), &Method::GET);
            assert_eq!(h.framing, Framing::Empty, "{code}");
            assert_eq!(h.status.as_u16(), code);
            assert!(h.keep_alive);
        }
        let h = resp_ok(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: abc\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(h.framing, Framing::Empty);
    }

    #[test]
    fn response_te_and_cl_is_502_rfc9112_6_3_item_3() {
        let e =
            resp_err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(e.status, 502);
        let e =
            resp_err(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(e.status, 502);
    }

    #[test]
    fn response_te_in_http10_is_502_rfc9112_6_1() {
        let e = resp_err(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(e.status, 502);
    }

    #[test]
    fn response_bad_te_is_502_rfc9112_7() {
        assert_eq!(
            resp_err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n").status,
            502
        );
        let twice = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n";
        assert_eq!(resp_err(twice).status, 502);
    }

    #[test]
    fn response_invalid_or_differing_cl_is_502_rfc9112_6_3_item_5() {
        for cl in ["abc", "-1", "5, 6", "", "18446744073709551616"] {
            let buf = format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(resp_err(buf.as_bytes()).status, 502, "{cl:?}");
        }
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(resp_ok(buf, &Method::GET).framing, Framing::Length(5));
    }

    #[test]
    fn response_keep_alive_rfc9112_9_3() {
        let m = &Method::GET;
        let close = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        assert!(!resp_ok(close, m).keep_alive);
        let v10 = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        let h = resp_ok(v10, m);
        assert_eq!(h.version, Version::HTTP_10);
        assert!(!h.keep_alive);
        let v10_ka = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n";
        assert!(resp_ok(v10_ka, m).keep_alive);
        // Close-delimited never keeps the connection, whatever Connection says.
        let cd = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n";
        assert!(!resp_ok(cd, m).keep_alive);
    }

    /// RFC 9110 §7.6.1: a proxy removes the Connection field, the fields it lists, and the
    /// other connection-specific ones before forwarding; the reader leaves them out of the
    /// map, after their framing and keep-alive meaning is taken, and keeps the rest in order.
    #[test]
    fn response_hop_by_hop_fields_stay_out_of_the_map_rfc9110_7_6_1() {
        let buf = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: close, X-Private\r\n\
                    Keep-Alive: timeout=5\r\nX-Private: secret\r\nTransfer-Encoding: chunked\r\n\
                    Proxy-Connection: keep-alive\r\nContent-Type: text/plain\r\nX-A: 2\r\n\r\n";
        let h = resp_ok(buf, &Method::GET);
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive);
        let fields: Vec<(&str, &str)> = h
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
            .collect();
        assert_eq!(
            fields,
            [("x-a", "1"), ("x-a", "2"), ("content-type", "text/plain")]
        );
        // A 101's Connection and Upgrade are the tunnel's: the handler decides on them.
        let h = resp_ok(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(h.headers["connection"], "Upgrade");
        assert_eq!(h.headers["upgrade"], "websocket");
    }

    #[test]
    fn response_syntax_errors_are_502_rfc9112_4() {
        for buf in [
            &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/2.0 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
            b"HTTP/1.1 200 OK\rX: y\r\n\r\n",
            b"HTTP/1.1 200 O\rK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.1  200 OK\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
        ] {
            let e = resp_err(buf);
            assert_eq!(e.status, 502, "{:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn response_status_line_leniencies_rfc9112_4() {
        // No reason phrase (not even the SP) and obs-text in it: httparse accepts; the reason
        // is never forwarded (write_response_head uses the canonical one).
        let h = resp_ok(b"HTTP/1.1 204\r\n\r\n", &Method::GET);
        assert_eq!(h.status, StatusCode::NO_CONTENT);
        resp_ok(
            b"HTTP/1.1 200 \xe9t\xe9\r\nContent-Length: 0\r\n\r\n",
            &Method::GET,
        );
        let h = resp_ok(
            b"HTTP/1.1 599 Custom\r\nContent-Length: 0\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(h.status.as_u16(), 599);
    }

    #[test]
    fn response_limits_are_502() {
        let l = HeadLimits {
            max_head_bytes: 64,
            max_headers: 2,
            max_uri_bytes: 10,
        };
        let many = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            parse_response(many, &Method::GET, &l).unwrap_err().status,
            502
        );
        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.resize(64, b'v');
        assert_eq!(
            parse_response(&big, &Method::GET, &l).unwrap_err().status,
            502
        );
        assert!(
            parse_response(&big[..63], &Method::GET, &l)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn response_incomplete_is_none() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        for end in 0..buf.len() {
            assert!(resp(&buf[..end], &Method::GET).unwrap().is_none(), "{end}");
        }
    }

    // ---- serialization (RFC 9112 §3, §4, §5) ----

    #[test]
    fn write_request_head_exact_bytes_rfc9112_3() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.com"));
        headers.append("x-dup", HeaderValue::from_static("1"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        headers.append("x-dup", HeaderValue::from_static("2"));
        let mut out = b"prefix|".to_vec();
        write_request_head(&mut out, &Method::POST, "/a?b=c", &headers, &[]);
        assert_eq!(
            out,
            b"prefix|POST /a?b=c HTTP/1.1\r\nhost: example.com\r\nx-dup: 1\r\nx-dup: 2\r\naccept: */*\r\n\r\n"
        );
        // Added lines go after the map's fields, before the blank line.
        let mut out = Vec::new();
        let added = b"x-forwarded-for: 198.18.0.1\r\nx-forwarded-proto: http\r\n";
        write_request_head(
            &mut out,
            &Method::GET,
            "/",
            &headers,
            &[added, b"content-length: 0\r\n"],
        );
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nhost: example.com\r\nx-dup: 1\r\nx-dup: 2\r\naccept: */*\r\n\
              x-forwarded-for: 198.18.0.1\r\nx-forwarded-proto: http\r\ncontent-length: 0\r\n\r\n"
        );
        let mut out = Vec::new();
        write_request_head(&mut out, &Method::OPTIONS, "*", &HeaderMap::new(), &[]);
        assert_eq!(out, b"OPTIONS * HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn write_response_head_exact_bytes_rfc9112_4() {
        let mut headers = HeaderMap::new();
        headers.insert("content-length", HeaderValue::from_static("5"));
        let mut out = Vec::new();
        write_response_head(&mut out, Version::HTTP_11, StatusCode::OK, &headers);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");

        let mut out = Vec::new();
        write_response_head(
            &mut out,
            Version::HTTP_10,
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
        );
        assert_eq!(out, b"HTTP/1.0 404 Not Found\r\n\r\n");

        // Unknown code: empty reason, but the SP stays (RFC 9112 §4).
        let mut out = Vec::new();
        let code = StatusCode::from_u16(599).unwrap();
        write_response_head(&mut out, Version::HTTP_11, code, &HeaderMap::new());
        assert_eq!(out, b"HTTP/1.1 599 \r\n\r\n");

        // Any version other than 1.0 is written as 1.1.
        let mut out = Vec::new();
        write_response_head(
            &mut out,
            Version::HTTP_2,
            StatusCode::CONTINUE,
            &HeaderMap::new(),
        );
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn skipped_fields_are_left_out_in_order_and_added_ones_come_last() {
        let mut headers = HeaderMap::new();
        headers.append("connection", HeaderValue::from_static("keep-alive"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append("x-b", HeaderValue::from_static("3"));
        let extra = [
            (
                http::header::DATE,
                HeaderValue::from_static("Mon, 07 Dec 2026 19:00:00 GMT"),
            ),
            (CONTENT_LENGTH, HeaderValue::from_static("5")),
            (CONNECTION, HeaderValue::from_static("close")),
        ];
        let mut written = Vec::new();
        write_response_head_with(
            &mut written,
            Version::HTTP_11,
            StatusCode::OK,
            &headers,
            |name| name == CONNECTION || name == TRANSFER_ENCODING,
            &extra,
        );
        // The rest keep their order (`HeaderMap::remove` would have moved the last field into
        // the removed one's place), and the added fields come last, in the order given.
        assert_eq!(
            String::from_utf8(written).unwrap(),
            "HTTP/1.1 200 OK\r\nx-a: 1\r\nx-a: 2\r\nx-b: 3\r\n\
             date: Mon, 07 Dec 2026 19:00:00 GMT\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn parse_then_write_round_trip() {
        let buf = b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\n";
        let (h, _) = ok(buf);
        let mut out = Vec::new();
        write_request_head(&mut out, &h.method, h.uri.path(), &h.headers, &[]);
        assert_eq!(
            out,
            b"PUT /x HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nVary: a\r\n\r\n";
        let rh = resp_ok(r, &Method::GET);
        let mut out = Vec::new();
        write_response_head(&mut out, rh.version, rh.status, &rh.headers);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nvary: a\r\n\r\n"
        );
    }

    #[test]
    fn parsed_values_share_one_copy_of_the_head() {
        // Values are slices of one buffer, not one allocation each: check they alias.
        let h = head(b"GET / HTTP/1.1\r\nX-A: aaaa\r\nX-B: bbbb\r\n\r\n");
        let a = h.headers["x-a"].as_bytes().as_ptr() as usize;
        let b = h.headers["x-b"].as_bytes().as_ptr() as usize;
        assert_eq!(b - a, "aaaa\r\nX-B: ".len());
    }
}
