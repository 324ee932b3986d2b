//! The L7 pools in the admin API: `POST /api/pools/{pool}/servers/{server}/{drain|enable|disable}`
//! and `GET /healthz`.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use serde_json::json;

use super::{AdminContext, method_not_allowed, text, with_type};
use crate::config::RouteTarget;
use crate::operator::Operator;

/// `rest` is the path after `/api/pools/`: `{pool}/servers/{server}/{action}`, where `server` is
/// the server's `route` or its url, percent-encoded (`http%3A%2F%2F10.0.0.1%3A8000`).
pub fn server_action(
    context: &AdminContext,
    request: &Request<Incoming>,
    rest: &str,
) -> Response<Full<Bytes>> {
    let parts: Vec<&str> = rest.split('/').collect();
    let [pool_name, "servers", server_id, action] = parts.as_slice() else {
        return error(
            StatusCode::NOT_FOUND,
            "not found: use /api/pools/{pool}/servers/{server}/{drain|enable|disable}",
        );
    };
    let Some(operator) = Operator::parse_action(action) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("unknown action {action:?}: use drain, enable or disable"),
        );
    };
    if request.method() != Method::POST {
        return method_not_allowed("POST");
    }
    let (Some(pool_name), Some(server_id)) = (percent_decode(pool_name), percent_decode(server_id))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed percent-encoding in the path",
        );
    };
    let Some(proxy) = &context.proxy else {
        return error(StatusCode::NOT_FOUND, "the L7 proxy is not running");
    };
    let state = proxy.state();
    let Some(pool) = state.pools.get(&pool_name) else {
        return error(StatusCode::NOT_FOUND, &format!("no pool {pool_name:?}"));
    };
    let Some(index) = pool.find_server(&server_id) else {
        let known: Vec<&str> = pool.servers.iter().map(|s| s.admin_id()).collect();
        return error(
            StatusCode::NOT_FOUND,
            &format!(
                "no server {server_id:?} in pool {pool_name:?} (its servers: {})",
                known.join(", ")
            ),
        );
    };
    let changed = pool.set_operator(index, operator, "admin API");
    if changed {
        crate::proxy::operator_file::save_configured(&state);
    }
    let server = &pool.servers[index];
    // One state per host: VIP backends at this server's address follow.
    let vips = match (
        &context.xdp,
        crate::linked::server_address(&server.config.url),
    ) {
        (Some(xdp), Some(address)) => {
            crate::linked::operator_to_vips(&xdp.control, address, operator)
        }
        _ => Vec::new(),
    };
    if !changed {
        tracing::info!(pool = %pool_name, server = %server.label, "admin API: {action}: already {}", operator.label());
    }
    let body = json!({
        "pool": pool_name,
        "server": &*server.label,
        "route": server.config.route,
        "operator": operator.label(),
        "changed": changed,
        "vips": vips,
    });
    with_type(StatusCode::OK, format!("{body}\n"), "application/json")
}

/// 200 "ok" when every pool some route sends requests to has a server that takes them; else 503
/// naming the pools that have none.
pub fn healthz(context: &AdminContext) -> Response<Full<Bytes>> {
    let Some(proxy) = &context.proxy else {
        return text(StatusCode::OK, "ok\n");
    };
    let state = proxy.state();
    let now = Instant::now();
    let mut routed: Vec<&String> = state
        .config
        .routes
        .iter()
        .filter_map(|route| match &route.target {
            RouteTarget::Pool(name) => Some(name),
            RouteTarget::Static(_) => None,
        })
        .collect();
    routed.sort();
    routed.dedup();
    let unserved: Vec<&str> = routed
        .into_iter()
        .filter(|name| {
            !state
                .pools
                .get(*name)
                .is_some_and(|pool| pool.can_serve(now))
        })
        .map(String::as_str)
        .collect();
    if unserved.is_empty() {
        text(StatusCode::OK, "ok\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "no server can take requests in pool {}\n",
                unserved.join(", ")
            ),
        )
    }
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = json!({ "error": message });
    with_type(status, format!("{body}\n"), "application/json")
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    crate::http::percent::decode_utf8(text)
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding() {
        let cases = [
            (
                "http%3A%2F%2F127.0.0.1%3A8081",
                Some("http://127.0.0.1:8081"),
            ),
            ("unix%3A%2Frun%2Fapp.sock", Some("unix:/run/app.sock")),
            ("http%3a%2f%2f10.0.0.1", Some("http://10.0.0.1")),
            ("app-1", Some("app-1")),
            ("", Some("")),
            ("%", None),
            ("%4", None),
            ("%zz", None),
            ("%+f", None),
            ("%ff", None),
        ];
        for (input, want) in cases {
            assert_eq!(percent_decode(input).as_deref(), want, "{input:?}");
        }
    }
}
