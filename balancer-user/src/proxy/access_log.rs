//! One access-log line per request, written when the response body is finished (or the client
//! went away): nginx's combined format or a JSON object, into `proxy.access_log_file`
//! (buffered, see log_file.rs) or through tracing with target `access`.
//! The same moment updates the request metrics and releases the request's in-flight counts.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Instant, SystemTime},
};

use bytes::Bytes;
use hyper::{
    body::{Body as HttpBody, Frame, SizeHint},
    header::HeaderValue,
};

use super::{
    Body, BoxError,
    activity::InFlight,
    log_file::{AccessLogFile, time_local},
    metrics::{HttpMetrics, RequestLabels, RouteLabels, RouteMetrics},
    pool::ServerLoad,
};
use crate::clock;
use crate::config::AccessLogFormat;

/// What is known about a request, filled in as it passes the phases. With `access_log = "off"`
/// the fields only a log line shows (time, listener, method, target, host, referer, user agent)
/// stay empty: building them is a per-request cost.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// A line is written for this request: the fields only the line shows are filled.
    pub logged: bool,
    pub time: SystemTime,
    pub started: Instant,
    pub client: SocketAddr,
    /// The user name of a Basic `Authorization` header (nginx's `$remote_user`).
    pub remote_user: String,
    pub listener: String,
    pub method: String,
    /// Path and query as the client sent them.
    pub target: String,
    pub version: &'static str,
    pub host: String,
    /// The route, pool and server names: shared with the config's, not copied (they are
    /// filled for every request, logged or not, for metrics and warnings).
    pub route: Option<Arc<str>>,
    pub pool: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    pub status: u16,
    pub referer: String,
    pub user_agent: String,
    /// The request's `X-Request-ID` (`proxy.request_id`); `None` when that is off, or for a
    /// request refused before its listener was known. A shared value, not a copy.
    pub request_id: Option<HeaderValue>,
}

/// A route, pool or server name of a record ("" when there is none).
pub fn name(name: &Option<Arc<str>>) -> &str {
    name.as_deref().unwrap_or_default()
}

impl AccessRecord {
    /// A record with nothing known yet but the client and the protocol version.
    pub fn new(logged: bool, client: SocketAddr, version: &'static str) -> AccessRecord {
        AccessRecord {
            logged,
            time: if logged {
                clock::wall_now()
            } else {
                SystemTime::UNIX_EPOCH
            },
            started: clock::now(),
            client,
            remote_user: String::new(),
            listener: String::new(),
            method: String::new(),
            target: String::new(),
            version,
            host: String::new(),
            route: None,
            pool: None,
            upstream: None,
            status: 0,
            referer: String::new(),
            user_agent: String::new(),
            request_id: None,
        }
    }

    /// The request ID as text ("" without one; IDs are visible ASCII, see
    /// headers/request_id.rs).
    fn request_id_text(&self) -> &str {
        self.request_id
            .as_ref()
            .and_then(|id| id.to_str().ok())
            .unwrap_or_default()
    }
}

/// What is released and written when the response is over.
pub struct Completion {
    pub record: AccessRecord,
    pub format: AccessLogFormat,
    /// `proxy.access_log_file`, when set; else lines go to the process log.
    pub file: Option<std::sync::Arc<AccessLogFile>>,
    pub metrics: std::sync::Arc<HttpMetrics>,
    /// The matched route's series; `None` for requests no route took.
    pub route_metrics: Option<std::sync::Arc<RouteMetrics>>,
    pub bytes: u64,
    pub _in_flight: InFlight,
    pub _server: Option<ServerLoad>,
}

thread_local! {
    /// The line being formatted for the process log: one buffer per thread, not one per line.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for Completion {
    fn drop(&mut self) {
        let record = &self.record;
        let seconds = clock::now()
            .saturating_duration_since(record.started)
            .as_secs_f64();
        // The line first, then the counters: once a request shows in the metrics its line is
        // in the log (or its buffer), which is what a scraper or a rotation check relies on.
        if self.format != AccessLogFormat::Off {
            let write = |out: &mut Vec<u8>| match self.format {
                AccessLogFormat::Json => write_json(out, record, self.bytes, seconds),
                _ => time_local::with(record.time, |time| {
                    write_combined(out, record, time, self.bytes, seconds)
                }),
            };
            match &self.file {
                Some(file) => file.append(write),
                None => LINE.with(|line| {
                    let mut line = line.borrow_mut();
                    line.clear();
                    write(&mut line);
                    line.pop();
                    super::process_log::write_access_line(&line);
                }),
            }
        }
        match &self.route_metrics {
            Some(route) => route.observe(&self.metrics, record.status, seconds),
            None => {
                self.metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        route: name(&record.route).to_string(),
                        pool: name(&record.pool).to_string(),
                        code: record.status,
                    })
                    .inc();
                self.metrics
                    .duration
                    .get_or_create(&RouteLabels {
                        route: name(&record.route).to_string(),
                    })
                    .observe(seconds);
            }
        }
    }
}

fn push_escaped(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if value.is_empty() {
        out.push(b'-');
        return;
    }
    let needs_escape = |byte: &u8| *byte == b'"' || *byte == b'\\' || !(0x20..0x7f).contains(byte);
    // Runs without a byte to escape (nearly every value) are copied whole: pushing byte by
    // byte was a fifth of the line's cost (callgrind).
    let mut rest = value.as_bytes();
    while let Some(at) = rest.iter().position(needs_escape) {
        out.extend_from_slice(&rest[..at]);
        let byte = rest[at];
        out.extend_from_slice(&[
            b'\\',
            b'x',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]);
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

fn push_decimal(out: &mut Vec<u8>, number: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
}

/// An IPv4 address in dotted decimal without the formatting machinery (a line's dearest field
/// through `Display`); IPv6 as `Display` writes it.
fn push_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (index, octet) in v4.octets().into_iter().enumerate() {
                if index > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u64::from(octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// `seconds` with six decimals, as `{:.6}` writes it, from whole microseconds.
fn push_seconds(out: &mut Vec<u8>, seconds: f64) {
    let micros = (seconds * 1e6).round() as u64;
    push_decimal(out, micros / 1_000_000);
    out.push(b'.');
    let mut buffer = itoa::Buffer::new();
    let fraction = buffer.format(micros % 1_000_000).as_bytes();
    out.extend(std::iter::repeat_n(b'0', 6 - fraction.len()));
    out.extend_from_slice(fraction);
}

/// nginx's `combined` format exactly:
/// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
/// "$http_referer" "$http_user_agent"`, then what a proxy operator needs, at the end where
/// combined-log parsers ignore it: ` host=… route=… upstream=… duration=…`, and
/// ` request_id=…` last when the request has one. Ends with `\n`.
pub fn write_combined(
    out: &mut Vec<u8>,
    record: &AccessRecord,
    time_local: &str,
    bytes: u64,
    seconds: f64,
) {
    push_ip(out, record.client.ip());
    out.extend_from_slice(b" - ");
    push_escaped(out, &record.remote_user);
    out.extend_from_slice(b" [");
    out.extend_from_slice(time_local.as_bytes());
    out.extend_from_slice(b"] \"");
    push_escaped(out, &record.method);
    out.push(b' ');
    push_escaped(out, &record.target);
    out.push(b' ');
    out.extend_from_slice(record.version.as_bytes());
    out.extend_from_slice(b"\" ");
    push_decimal(out, u64::from(record.status));
    out.push(b' ');
    push_decimal(out, bytes);
    out.extend_from_slice(b" \"");
    push_escaped(out, &record.referer);
    out.extend_from_slice(b"\" \"");
    push_escaped(out, &record.user_agent);
    out.extend_from_slice(b"\" host=");
    push_escaped(out, &record.host);
    out.extend_from_slice(b" route=");
    push_escaped(out, name(&record.route));
    out.extend_from_slice(b" upstream=");
    push_escaped(out, name(&record.upstream));
    out.extend_from_slice(b" duration=");
    push_seconds(out, seconds);
    if record.request_id.is_some() {
        out.extend_from_slice(b" request_id=");
        push_escaped(out, record.request_id_text());
    }
    out.push(b'\n');
}

/// One JSON object and `\n`.
pub fn write_json(out: &mut Vec<u8>, record: &AccessRecord, bytes: u64, seconds: f64) {
    let value = serde_json::json!({
        "time": humantime::format_rfc3339_millis(record.time).to_string(),
        "client": record.client.ip().to_string(),
        "remote_user": record.remote_user,
        "listener": record.listener,
        "method": record.method,
        "target": record.target,
        "version": record.version,
        "host": record.host,
        "status": record.status,
        "bytes": bytes,
        "duration": seconds,
        "route": name(&record.route),
        "pool": name(&record.pool),
        "upstream": name(&record.upstream),
        "referer": record.referer,
        "user_agent": record.user_agent,
        "request_id": record.request_id.is_some().then(|| record.request_id_text()),
    });
    // Writing into a Vec cannot fail, and a json! value always serializes.
    let _ = serde_json::to_writer(&mut *out, &value);
    out.push(b'\n');
}

/// The user name of `Authorization: Basic …`, as nginx's `$remote_user`; empty for any other
/// scheme or a value that does not decode.
pub fn basic_user(authorization: &[u8]) -> String {
    use base64::Engine;
    let Some(scheme) = authorization.get(..6) else {
        return String::new();
    };
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return String::new();
    }
    let Ok(decoded) =
        base64::engine::general_purpose::STANDARD.decode(authorization[6..].trim_ascii())
    else {
        return String::new();
    };
    let user = decoded.split(|&b| b == b':').next().unwrap_or_default();
    String::from_utf8_lossy(user).into_owned()
}

pin_project_lite::pin_project! {
    /// A response body that counts the bytes it yields and finishes the request (log line,
    /// metrics, in-flight counts) when it ends or is dropped.
    pub struct LoggedBody {
        #[pin]
        inner: Body,
        completion: Option<Completion>,
    }
}

impl LoggedBody {
    pub fn new(inner: Body, completion: Completion) -> LoggedBody {
        LoggedBody {
            inner,
            completion: Some(completion),
        }
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(completion)) = (frame.data_ref(), this.completion.as_mut())
                {
                    completion.bytes += data.len() as u64;
                }
            }
            // The end, or a failed upstream body: finish now rather than when hyper drops us.
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                this.completion.take();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            logged: true,
            time: SystemTime::UNIX_EPOCH,
            started: Instant::now(),
            client: "198.18.0.1:4321".parse().expect("addr"),
            remote_user: String::new(),
            listener: "https".into(),
            method: "GET".into(),
            target: "/a?b=\"c\"".into(),
            version: "HTTP/2.0",
            host: "www.example.test".into(),
            route: Some("app".into()),
            pool: Some("django".into()),
            upstream: Some("http://198.18.1.2:8000".into()),
            status: 200,
            referer: String::new(),
            user_agent: "curl/8".into(),
            request_id: None,
        }
    }

    #[test]
    fn the_combined_line_is_nginx_combined_then_proxy_fields() {
        let mut line = Vec::new();
        write_combined(&mut line, &record(), "01/Jan/1970:00:00:00 +0000", 12, 0.5);
        assert_eq!(
            String::from_utf8(line).expect("ascii"),
            "198.18.0.1 - - [01/Jan/1970:00:00:00 +0000] \"GET /a?b=\\x22c\\x22 HTTP/2.0\" 200 12 \"-\" \"curl/8\" host=www.example.test route=app upstream=http://198.18.1.2:8000 duration=0.500000\n"
        );
    }

    #[test]
    fn escaping_keeps_clean_runs_and_escapes_each_byte_between_them() {
        let mut out = Vec::new();
        push_escaped(&mut out, "a\"b\\c\u{7f}d\té");
        assert_eq!(out, b"a\\x22b\\x5Cc\\x7Fd\\x09\\xC3\\xA9");
        out.clear();
        push_escaped(&mut out, "");
        assert_eq!(out, b"-");
    }

    #[test]
    fn addresses_and_durations_are_written_as_display_and_six_decimals_write_them() {
        for ip in [
            "0.0.0.0",
            "198.18.0.1",
            "255.255.255.255",
            "2001:2::1",
            "::ffff:1.2.3.4",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
        for seconds in [
            0.0, 0.000001, 0.0015, 0.5, 0.123456, 1.0, 59.999999, 3600.25,
        ] {
            let mut out = Vec::new();
            push_seconds(&mut out, seconds);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{seconds:.6}"));
        }
    }

    #[test]
    fn the_request_id_comes_last_in_both_formats() {
        let record = AccessRecord {
            request_id: Some(HeaderValue::from_static(
                "0192e7a8-1c3b-7f00-8a1b-2c3d4e5f6a7b",
            )),
            ..record()
        };
        let mut line = Vec::new();
        write_combined(&mut line, &record, "t", 12, 0.5);
        let line = String::from_utf8(line).expect("ascii");
        assert!(
            line.ends_with(" duration=0.500000 request_id=0192e7a8-1c3b-7f00-8a1b-2c3d4e5f6a7b\n"),
            "after every field nginx's combined has, and after ours: {line}"
        );
        let mut json = Vec::new();
        write_json(&mut json, &record, 12, 0.5);
        let value: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(value["request_id"], "0192e7a8-1c3b-7f00-8a1b-2c3d4e5f6a7b");
        let mut json = Vec::new();
        write_json(&mut json, &self::record(), 12, 0.5);
        let value: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert!(value["request_id"].is_null(), "{value}");
    }

    #[test]
    fn fields_are_escaped_as_nginx_does() {
        let record = AccessRecord {
            remote_user: "al ice".into(),
            user_agent: "evil\"agent\\\r\n\u{e9}".into(),
            referer: "\x7f".into(),
            ..record()
        };
        let mut line = Vec::new();
        write_combined(&mut line, &record, "t", 0, 0.0);
        let line = String::from_utf8(line).expect("ascii");
        assert!(line.starts_with("198.18.0.1 - al ice [t] "), "{line}");
        assert!(
            line.contains(" \"\\x7F\" \"evil\\x22agent\\x5C\\x0D\\x0A\\xC3\\xA9\" host="),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1, "one line: {line}");
    }

    #[test]
    fn the_json_line_has_every_field() {
        let mut line = Vec::new();
        write_json(&mut line, &record(), 12, 0.5);
        assert_eq!(line.pop(), Some(b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes"], 12);
        assert_eq!(value["target"], "/a?b=\"c\"");
        assert_eq!(value["upstream"], "http://198.18.1.2:8000");
        assert_eq!(value["route"], "app");
    }

    #[test]
    fn remote_user_is_the_basic_user_name() {
        // "user:pass" and "al:i:ce" in base64.
        assert_eq!(basic_user(b"Basic dXNlcjpwYXNz"), "user");
        assert_eq!(basic_user(b"basic  dXNlcjpwYXNz "), "user");
        assert_eq!(basic_user(b"Basic YWw6aTpjZQ=="), "al");
        assert_eq!(basic_user(b"Bearer dXNlcjpwYXNz"), "");
        assert_eq!(basic_user(b"Basic !!!"), "");
        assert_eq!(basic_user(b"Basic"), "");
    }
}
