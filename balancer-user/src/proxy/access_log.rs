//! One access-log line per request, written when the response body is finished (or the client
//! went away), through tracing with target `access`: combined-log-like text or a JSON object.
//! The same moment updates the request metrics and releases the request's in-flight counts.

use std::{
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::{Instant, SystemTime},
};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::{
    Body, BoxError,
    activity::InFlight,
    metrics::{HttpMetrics, RequestLabels, RouteLabels, RouteMetrics},
    pool::ServerLoad,
};
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
    pub listener: String,
    pub method: String,
    /// Path and query as the client sent them.
    pub target: String,
    pub version: &'static str,
    pub host: String,
    pub route: String,
    pub pool: String,
    pub upstream: String,
    pub status: u16,
    pub referer: String,
    pub user_agent: String,
}

/// What is released and written when the response is over.
pub struct Completion {
    pub record: AccessRecord,
    pub format: AccessLogFormat,
    pub metrics: HttpMetrics,
    /// The matched route's series; `None` for requests no route took.
    pub route_metrics: Option<std::sync::Arc<RouteMetrics>>,
    pub bytes: u64,
    pub _in_flight: InFlight,
    pub _server: Option<ServerLoad>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let record = &self.record;
        let seconds = record.started.elapsed().as_secs_f64();
        match &self.route_metrics {
            Some(route) => route.observe(&self.metrics, record.status, seconds),
            None => {
                self.metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        route: record.route.clone(),
                        pool: record.pool.clone(),
                        code: record.status,
                    })
                    .inc();
                self.metrics
                    .duration
                    .get_or_create(&RouteLabels {
                        route: record.route.clone(),
                    })
                    .observe(seconds);
            }
        }
        match self.format {
            AccessLogFormat::Off => {}
            AccessLogFormat::Text => {
                tracing::info!(target: "access", "{}", text_line(record, self.bytes, seconds))
            }
            AccessLogFormat::Json => {
                tracing::info!(target: "access", "{}", json_line(record, self.bytes, seconds))
            }
        }
    }
}

fn or_dash(value: &str) -> &str {
    if value.is_empty() { "-" } else { value }
}

/// `client - - [time] "GET /path HTTP/1.1" status bytes "referer" "agent" host route upstream
/// duration`: the combined format, then what a proxy operator needs.
pub fn text_line(record: &AccessRecord, bytes: u64, seconds: f64) -> String {
    format!(
        "{client} - - [{time}] \"{method} {target} {version}\" {status} {bytes} \"{referer}\" \"{agent}\" host={host} route={route} upstream={upstream} duration={seconds:.6}",
        client = record.client.ip(),
        time = humantime::format_rfc3339_millis(record.time),
        method = record.method,
        target = record.target.escape_default(),
        version = record.version,
        status = record.status,
        referer = or_dash(&record.referer).escape_default(),
        agent = or_dash(&record.user_agent).escape_default(),
        host = or_dash(&record.host),
        route = or_dash(&record.route),
        upstream = or_dash(&record.upstream),
    )
}

pub fn json_line(record: &AccessRecord, bytes: u64, seconds: f64) -> String {
    serde_json::json!({
        "time": humantime::format_rfc3339_millis(record.time).to_string(),
        "client": record.client.ip().to_string(),
        "listener": record.listener,
        "method": record.method,
        "target": record.target,
        "version": record.version,
        "host": record.host,
        "status": record.status,
        "bytes": bytes,
        "duration": seconds,
        "route": record.route,
        "pool": record.pool,
        "upstream": record.upstream,
        "referer": record.referer,
        "user_agent": record.user_agent,
    })
    .to_string()
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
            listener: "https".into(),
            method: "GET".into(),
            target: "/a?b=\"c\"".into(),
            version: "HTTP/2.0",
            host: "www.example.test".into(),
            route: "app".into(),
            pool: "django".into(),
            upstream: "http://198.18.1.2:8000".into(),
            status: 200,
            referer: String::new(),
            user_agent: "curl/8".into(),
        }
    }

    #[test]
    fn the_text_line_is_combined_format_then_proxy_fields() {
        let line = text_line(&record(), 12, 0.5);
        assert_eq!(
            line,
            "198.18.0.1 - - [1970-01-01T00:00:00.000Z] \"GET /a?b=\\\"c\\\" HTTP/2.0\" 200 12 \"-\" \"curl/8\" host=www.example.test route=app upstream=http://198.18.1.2:8000 duration=0.500000"
        );
    }

    #[test]
    fn the_json_line_has_every_field() {
        let value: serde_json::Value =
            serde_json::from_str(&json_line(&record(), 12, 0.5)).expect("json");
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes"], 12);
        assert_eq!(value["target"], "/a?b=\"c\"");
        assert_eq!(value["upstream"], "http://198.18.1.2:8000");
        assert_eq!(value["route"], "app");
    }
}
