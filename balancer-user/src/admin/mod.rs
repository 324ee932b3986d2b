//! The admin listener: metrics, state and health for operators and outer balancers.
//! Loopback by default; with `admin.token_file`, every request but `GET /healthz` must carry
//! `Authorization: Bearer TOKEN`.

mod api_state;
mod auth;
mod manager;
mod metrics;
mod pools;

pub use auth::{TokenError, read_token};

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

use crate::dataplane::{AttachedMode, OperatorRequestError, SharedControl, StatsReader, XdpStats};
use crate::operator::Operator;

/// What the admin endpoints report on.
pub struct AdminContext {
    pub xdp: Option<XdpView>,
    pub started: std::time::SystemTime,
    /// The L7 proxy's live state and metrics.
    pub proxy: Option<crate::proxy::ProxyView>,
    /// Where `POST /api/reload` sends its request (to the task that owns the config).
    pub reload: Option<tokio::sync::mpsc::Sender<ReloadRequest>>,
    /// The bearer token from `admin.token_file` (replaced on reload); `None`: no token needed.
    pub token: std::sync::RwLock<Option<String>>,
    /// `[announce]`: the VIP routes this host announces.
    pub announce: Option<Arc<crate::announce::Announcer>>,
}

/// A request to reload the config file (`POST /api/reload`), answered with a summary or the
/// reason for refusing; the task that owns the config (`run`) receives it.
pub struct ReloadRequest {
    pub reply: tokio::sync::oneshot::Sender<Result<String, ReloadRefused>>,
}

/// Why a reload was refused (the previous config keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum ReloadRefused {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("admin.listen changed: restart balancer to apply it")]
    AdminListen,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("[announce] changed: restart balancer to apply it")]
    Announce,
    #[error(
        "[xdp] or [[vip]] changed: restart balancer to apply (with xdp.pin_path set, \
         established flows keep their backends across the restart)"
    )]
    Dataplane,
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ReloadError),
}

pub struct XdpView {
    pub interface: String,
    pub mode: AttachedMode,
    pub stats: StatsReader,
    pub control: SharedControl,
}

impl XdpView {
    /// Every counter, with the backends' current states.
    pub fn read(&self) -> Result<XdpStats, aya::maps::MapError> {
        let vips = self
            .control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .vips()
            .to_vec();
        self.stats.read(&vips)
    }
}

/// Serves admin requests on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    context: Arc<AdminContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!("admin accept failed: {err}");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let context = context.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let context = context.clone();
                async move {
                    if let Some(why) = manager::cross_site(request.method(), request.headers()) {
                        return Ok::<_, Infallible>(manager::refused(&request, why));
                    }
                    if let Some(refused) = auth::check(&context, &request) {
                        return Ok::<_, Infallible>(refused);
                    }
                    if request.uri().path() == "/api/reload" {
                        return Ok::<_, Infallible>(reload(&context, &request).await);
                    }
                    if let Some(action) = request.uri().path().strip_prefix("/api/announce/") {
                        return Ok::<_, Infallible>(announce(&context, &request, action).await);
                    }
                    Ok::<_, Infallible>(respond(&context, &request))
                }
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("admin connection ended with an error: {err}");
            }
        });
    }
}

/// Routes one admin request.
fn respond(context: &AdminContext, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if let Some(rest) = path.strip_prefix("/api/vips/") {
        return vip_backend_action(context, request, rest);
    }
    if let Some(rest) = path.strip_prefix("/api/pools/") {
        return pools::server_action(context, request, rest);
    }
    if let Some((body, content_type)) = manager::asset(path) {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return method_not_allowed("GET, HEAD");
        }
        return manager::serve(body, content_type);
    }
    let allowed = match path {
        "/metrics" | "/api/state" | "/healthz" => "GET, HEAD",
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return method_not_allowed(allowed);
    }
    match path {
        "/metrics" => match metrics::render(context) {
            Ok(body) => with_type(StatusCode::OK, body, metrics::CONTENT_TYPE),
            Err(err) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reading counters failed: {err}\n"),
            ),
        },
        "/api/state" => match api_state::render(context) {
            Ok(body) => with_type(StatusCode::OK, body, "application/json"),
            Err(err) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reading counters failed: {err}\n"),
            ),
        },
        _ => pools::healthz(context),
    }
}

/// `POST /api/reload`: re-reads the config file; 200 with a summary, or 400 with the reason
/// (the previous config keeps serving).
async fn reload(context: &AdminContext, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::POST {
        return method_not_allowed("POST");
    }
    let Some(sender) = &context.reload else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "reload is not available\n");
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if sender.send(ReloadRequest { reply }).await.is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    match answer.await {
        Ok(Ok(summary)) => text(StatusCode::OK, &format!("{summary}\n")),
        Ok(Err(reason)) => text(
            StatusCode::BAD_REQUEST,
            &format!("reload refused, the previous config keeps serving: {reason}\n"),
        ),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
    }
}

/// `POST /api/announce/{withdraw|restore}`: withdraws every VIP route of this host (the XDP
/// program keeps forwarding the flows that still arrive) or announces them again; 200 with the
/// announce state once the table holds the change.
async fn announce(
    context: &AdminContext,
    request: &Request<Incoming>,
    action: &str,
) -> Response<Full<Bytes>> {
    let withdraw = match action {
        "withdraw" => true,
        "restore" => false,
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                &format!("unknown action {action:?}: use withdraw or restore\n"),
            );
        }
    };
    if request.method() != Method::POST {
        return method_not_allowed("POST");
    }
    let Some(announcer) = &context.announce else {
        return text(
            StatusCode::NOT_FOUND,
            "announcing is not configured: add an [announce] section\n",
        );
    };
    let (view, not_saved) = announcer.set_withdrawn(withdraw).await;
    tracing::info!(
        "admin: announce {action} by API request; announced now: {:?}",
        view.announced
    );
    let mut body = serde_json::to_value(&view).expect("plain data serializes");
    let status = match not_saved {
        Some(err) => {
            tracing::error!("{err}");
            body["persist_error"] = serde_json::json!(err);
            StatusCode::INTERNAL_SERVER_ERROR
        }
        None => StatusCode::OK,
    };
    with_type(
        status,
        serde_json::to_string_pretty(&body).expect("JSON values serialize") + "\n",
        "application/json",
    )
}

fn method_not_allowed(allowed: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
    response
}

/// `POST /api/vips/{vip}/backends/{address}/{drain|enable|disable}`.
fn vip_backend_action(
    context: &AdminContext,
    request: &Request<Incoming>,
    rest: &str,
) -> Response<Full<Bytes>> {
    let parts: Vec<&str> = rest.split('/').collect();
    let [vip, "backends", address, action] = parts.as_slice() else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let Some(admin) = Operator::parse_action(action) else {
        return text(
            StatusCode::NOT_FOUND,
            &format!("unknown action {action:?}: use drain, enable or disable\n"),
        );
    };
    if request.method() != Method::POST {
        return method_not_allowed("POST");
    }
    let Ok(address) = address.parse::<std::net::IpAddr>() else {
        return text(
            StatusCode::BAD_REQUEST,
            &format!("{address:?} is not an IP address\n"),
        );
    };
    let Some(xdp) = &context.xdp else {
        return text(
            StatusCode::NOT_FOUND,
            "the XDP data plane is not configured\n",
        );
    };
    let result = xdp
        .control
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .set_admin(vip, address, admin);
    match result {
        Ok(()) => {
            tracing::info!(vip = %vip, backend = %address, "admin: backend set to {admin:?} by API request");
            // One state per host: the other VIPs' backends and the pool servers at this
            // address follow.
            let other_vips = crate::linked::operator_to_vips(&xdp.control, address, admin);
            let servers = context.proxy.as_ref().map_or_else(Vec::new, |proxy| {
                crate::linked::operator_to_pools(
                    &proxy.state(),
                    address,
                    admin,
                    &format!("admin API (VIP {vip} backend {address})"),
                )
            });
            let mut also = String::new();
            let other_vips: Vec<&String> = other_vips.iter().filter(|name| *name != vip).collect();
            if !other_vips.is_empty() {
                let names: Vec<&str> = other_vips.iter().map(|name| name.as_str()).collect();
                also.push_str(&format!(" (also VIPs {})", names.join(", ")));
            }
            if !servers.is_empty() {
                also.push_str(&format!(" (also pool servers {})", servers.join(", ")));
            }
            text(
                StatusCode::OK,
                &format!("{vip} {address}: {action} done{also}\n"),
            )
        }
        Err(err @ (OperatorRequestError::NoVip(_) | OperatorRequestError::NoBackend { .. })) => {
            text(StatusCode::NOT_FOUND, &format!("{err}\n"))
        }
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    with_type(status, body.to_string(), "text/plain; charset=utf-8")
}

fn with_type(
    status: StatusCode,
    body: String,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
