//! `GET /`: the balancer-manager page (HTML, its script and style, all served from here: no
//! external assets), and the rule that keeps a browser from being used against the admin API:
//! state-changing requests from another origin are refused, with or without a token.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{self, HeaderMap, HeaderValue},
};

use super::text;

const PAGE: &str = include_str!("manager.html");
const SCRIPT: &str = include_str!("manager.js");
const STYLE: &str = include_str!("manager.css");

/// The page's own files, by path; `None` for any other path.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" => Some((PAGE, "text/html; charset=utf-8")),
        "/manager.js" => Some((SCRIPT, "text/javascript; charset=utf-8")),
        "/manager.css" => Some((STYLE, "text/css; charset=utf-8")),
        _ => None,
    }
}

pub fn serve(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Only its own script and style; no framing (clickjacking on the buttons).
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Why a state-changing request is refused as cross-site, if it is. A browser sends `Origin`
/// (and `Sec-Fetch-Site`) with every POST; the page's own requests come from the admin
/// listener's origin. A cross-site HTML form can only send the three "simple" content types
/// and no Authorization header, so those bodies are refused too (the API takes no bodies).
pub fn cross_site(method: &Method, headers: &HeaderMap) -> Option<&'static str> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let value = |name: &header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Some("Sec-Fetch-Site is not same-origin");
    }
    if let Some(origin) = value(&header::ORIGIN) {
        let host = value(&header::HOST).unwrap_or_default();
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|rest| !host.is_empty() && rest.eq_ignore_ascii_case(host));
        if !same {
            return Some("Origin is not this admin listener");
        }
    }
    if let Some(content_type) = value(&header::CONTENT_TYPE) {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if matches!(
            essence.as_str(),
            "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
        ) {
            return Some("a form body (what a cross-site form posts)");
        }
    }
    None
}

/// The 403 for a request [`cross_site`] refused.
pub fn refused<B>(request: &Request<B>, why: &str) -> Response<Full<Bytes>> {
    tracing::warn!(
        method = %request.method(),
        path = request.uri().path(),
        "admin API: cross-site request refused: {why}"
    );
    text(
        StatusCode::FORBIDDEN,
        &format!("cross-site request refused: {why}\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn only_same_origin_state_changes_pass() {
        let post = Method::POST;
        let host = ("host", "127.0.0.1:9100");
        for (pairs, refused) in [
            (vec![host], false),
            (vec![host, ("origin", "http://127.0.0.1:9100")], false),
            (
                vec![
                    host,
                    ("origin", "http://127.0.0.1:9100"),
                    ("sec-fetch-site", "same-origin"),
                ],
                false,
            ),
            (vec![host, ("origin", "http://evil.test")], true),
            (vec![host, ("origin", "null")], true),
            (vec![host, ("sec-fetch-site", "cross-site")], true),
            (vec![host, ("sec-fetch-site", "same-site")], true),
            (
                vec![host, ("content-type", "application/x-www-form-urlencoded")],
                true,
            ),
            (
                vec![host, ("content-type", "text/plain;charset=UTF-8")],
                true,
            ),
            (vec![host, ("content-type", "application/json")], false),
        ] {
            assert_eq!(
                cross_site(&post, &headers(&pairs)).is_some(),
                refused,
                "{pairs:?}"
            );
        }
        assert_eq!(
            cross_site(&Method::GET, &headers(&[("origin", "http://evil.test")])),
            None,
            "reads change nothing (and CORS keeps their answers from other origins)"
        );
    }
}
