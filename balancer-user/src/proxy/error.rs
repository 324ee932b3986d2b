//! The one place where a failure becomes an HTTP response: every phase returns a `ProxyError`,
//! `respond` turns it into a status, a body (the configured error page or a short default that
//! never names an internal address) and the headers the status needs.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use bytes::Bytes;
use hyper::{
    Response, StatusCode,
    header::{self, HeaderValue},
};

use super::{Body, full_body};

/// Where a failure came from: the client's request, the upstream server, or the proxy itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("host {host:?} does not match the TLS server name {sni:?}")]
    MisdirectedRequest { host: String, sni: String },
    /// The Host is not in the listener's `allowed_hosts`; `status` is its
    /// `disallowed_host_status` (421 or 400).
    #[error("host {host:?} is not in allowed_hosts")]
    HostNotAllowed { host: String, status: u16 },
    /// `underscore_headers = "reject"` and the request has such a header.
    #[error("header {name:?} has an underscore (underscore_headers = \"reject\")")]
    UnderscoreHeader { name: String },
    #[error("no route")]
    NoRoute,
    #[error("not found")]
    NotFound,
    #[error("forbidden")]
    Forbidden,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    /// The client paused its request body longer than the body timeout: 408.
    #[error("the request body stalled")]
    BodyTimeout,
    /// The client closed its connection before its request body ended (nobody reads the
    /// answer; the access log records it as 400, as the request is incomplete).
    #[error("the client closed the connection during the request body")]
    ClientGone,
    /// More header fields than the listener's `max_headers`. hyper enforces it for HTTP/1.1
    /// while parsing; HTTP/2 has no such limit of its own, so the handler checks.
    #[error("{count} request header fields, more than the {limit} allowed")]
    TooManyHeaders { count: usize, limit: usize },
    #[error("range not satisfiable (length {length})")]
    RangeNotSatisfiable { length: u64 },
    /// Every server of the pool is excluded (failed recently, or weight 0).
    #[error("no server available in pool {pool}")]
    NoServer { pool: String },
    /// Every server the request could use stayed at its `max_conns` for `waited`: 503 with
    /// `Retry-After`. Not a server failure.
    #[error("pool {pool}: every server at max_conns, waited {waited:?} in the queue")]
    QueueTimeout {
        pool: String,
        waited: std::time::Duration,
        retry_after_secs: u64,
    },
    #[error("connecting to {server} failed: {reason}")]
    Connect { server: String, reason: String },
    #[error("upstream {server} failed: {reason}")]
    Upstream { server: String, reason: String },
    #[error("upstream {server} did not answer within {timeout:?}")]
    UpstreamTimeout {
        server: String,
        timeout: std::time::Duration,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::MisdirectedRequest { .. } => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::HostNotAllowed { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::MISDIRECTED_REQUEST)
            }
            ProxyError::UnderscoreHeader { .. } => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute | ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ClientGone => StatusCode::BAD_REQUEST,
            ProxyError::TooManyHeaders { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ProxyError::NoServer { .. } | ProxyError::QueueTimeout { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn side(&self) -> Side {
        match self {
            ProxyError::NoServer { .. }
            | ProxyError::QueueTimeout { .. }
            | ProxyError::Connect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::UpstreamTimeout { .. } => Side::Upstream,
            ProxyError::Internal(_) => Side::Internal,
            _ => Side::Downstream,
        }
    }
}

/// Error page files loaded into memory, by status.
#[derive(Debug, Clone, Default)]
pub struct ErrorPages {
    pages: BTreeMap<u16, ErrorPage>,
}

#[derive(Debug, Clone)]
struct ErrorPage {
    body: Bytes,
    content_type: HeaderValue,
}

/// Why an error page file cannot be used; the text names the file.
#[derive(Debug, thiserror::Error)]
pub enum ErrorPageError {
    #[error("error page {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("error page {}: not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("error page {}: {bytes} bytes, more than the {MAX_ERROR_PAGE_BYTES} allowed", path.display())]
    TooLarge { path: PathBuf, bytes: u64 },
}

/// Error pages are read whole into memory; a larger file is a config mistake.
const MAX_ERROR_PAGE_BYTES: u64 = 1024 * 1024;

impl ErrorPages {
    /// Reads every file; the error names the file that could not be used.
    pub fn load(files: &BTreeMap<u16, PathBuf>) -> Result<ErrorPages, ErrorPageError> {
        let mut pages = BTreeMap::new();
        for (status, path) in files {
            let unreadable = |source| ErrorPageError::Read {
                path: path.clone(),
                source,
            };
            let metadata = std::fs::metadata(path).map_err(unreadable)?;
            if !metadata.is_file() {
                return Err(ErrorPageError::NotAFile(path.clone()));
            }
            if metadata.len() > MAX_ERROR_PAGE_BYTES {
                return Err(ErrorPageError::TooLarge {
                    path: path.clone(),
                    bytes: metadata.len(),
                });
            }
            let body = std::fs::read(path).map_err(unreadable)?;
            let mime = mime_guess::from_path(path).first_or(mime_guess::mime::TEXT_HTML);
            let content_type = if mime.type_() == mime_guess::mime::TEXT {
                format!("{mime}; charset=utf-8")
            } else {
                mime.to_string()
            };
            let content_type = HeaderValue::from_str(&content_type)
                .unwrap_or(HeaderValue::from_static("text/html; charset=utf-8"));
            pages.insert(
                *status,
                ErrorPage {
                    body: Bytes::from(body),
                    content_type,
                },
            );
        }
        Ok(ErrorPages { pages })
    }

    fn get(&self, status: StatusCode) -> Option<&ErrorPage> {
        self.pages.get(&status.as_u16())
    }
}

/// The error pages that apply to a request, most specific first: the route's, then its
/// pool's, held inline (no allocation per request).
#[derive(Clone, Default)]
pub struct PageSet(pub [Option<Arc<ErrorPages>>; 2]);

/// The response for `error`: an error page for its status if one applies, else a short default.
pub fn respond(error: &ProxyError, pages: &PageSet) -> Response<Body> {
    let status = error.status();
    let page = pages.0.iter().flatten().find_map(|set| set.get(status));
    let (body, content_type) = match page {
        Some(page) => (page.body.clone(), page.content_type.clone()),
        None => (
            Bytes::from(default_body(status)),
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
    };
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match error {
        ProxyError::MethodNotAllowed { allow } => {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        ProxyError::QueueTimeout {
            retry_after_secs, ..
        } => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        ProxyError::RangeNotSatisfiable { length } => {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}")) {
                headers.insert(header::CONTENT_RANGE, value);
            }
        }
        // The client's request may be half read: do not reuse the connection for another.
        ProxyError::PayloadTooLarge { .. }
        | ProxyError::BadRequest(_)
        | ProxyError::BodyTimeout
        | ProxyError::ClientGone => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    response
}

/// A redirect (301) to `location`.
pub fn redirect(location: &str) -> Response<Body> {
    let mut response = Response::new(full_body(Bytes::from(default_body(
        StatusCode::MOVED_PERMANENTLY,
    ))));
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    match HeaderValue::from_str(location) {
        Ok(value) => {
            headers.insert(header::LOCATION, value);
        }
        Err(_) => {
            return respond(
                &ProxyError::BadRequest("unusable redirect target"),
                &PageSet::default(),
            );
        }
    }
    response
}

/// The default body names the status only: never a server, address or internal reason.
pub fn default_body(status: StatusCode) -> String {
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("Error");
    format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\n<body><h1>{code} {reason}</h1></body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn body_text(response: Response<Body>) -> String {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn every_error_maps_to_its_status_without_naming_the_server() {
        let cases = [
            (ProxyError::BadRequest("x"), 400),
            (
                ProxyError::MisdirectedRequest {
                    host: "a".into(),
                    sni: "b".into(),
                },
                421,
            ),
            (ProxyError::NoRoute, 404),
            (ProxyError::PayloadTooLarge { limit: 1 }, 413),
            (
                ProxyError::TooManyHeaders {
                    count: 11,
                    limit: 10,
                },
                431,
            ),
            (ProxyError::NoServer { pool: "p".into() }, 503),
            (
                ProxyError::Connect {
                    server: "http://10.1.2.3:8000".into(),
                    reason: "refused".into(),
                },
                502,
            ),
            (
                ProxyError::UpstreamTimeout {
                    server: "http://10.1.2.3:8000".into(),
                    timeout: std::time::Duration::from_secs(1),
                },
                504,
            ),
        ];
        for (error, status) in cases {
            let response = respond(&error, &PageSet::default());
            assert_eq!(response.status().as_u16(), status, "{error}");
            let body = body_text(response).await;
            assert!(body.contains(&status.to_string()), "{body}");
            assert!(
                !body.contains("10.1.2.3") && !body.contains("refused"),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn a_configured_page_replaces_the_default_body_and_route_pages_come_first() {
        let dir = std::env::temp_dir().join(format!("balancer-errpages-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let route_page = dir.join("route-502.html");
        let pool_page = dir.join("pool.html");
        std::fs::write(&route_page, "route says 502").expect("write");
        std::fs::write(&pool_page, "pool says so").expect("write");
        let route = ErrorPages::load(&BTreeMap::from([(502, route_page)])).expect("load");
        let pool = ErrorPages::load(&BTreeMap::from([
            (502, pool_page.clone()),
            (503, pool_page),
        ]))
        .expect("load");
        let pages = PageSet([Some(Arc::new(route)), Some(Arc::new(pool))]);
        let bad_gateway = ProxyError::Upstream {
            server: "s".into(),
            reason: "r".into(),
        };
        assert_eq!(
            body_text(respond(&bad_gateway, &pages)).await,
            "route says 502"
        );
        let unavailable = ProxyError::NoServer { pool: "p".into() };
        assert_eq!(
            body_text(respond(&unavailable, &pages)).await,
            "pool says so"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_missing_error_page_is_named() {
        let error = ErrorPages::load(&BTreeMap::from([(
            502,
            PathBuf::from("/nonexistent/502.html"),
        )]))
        .expect_err("missing file")
        .to_string();
        assert!(error.contains("/nonexistent/502.html"), "{error}");
    }
}
