//! One request through the proxy, as explicit phases over one [`RequestCtx`]:
//! filter and route ([`RequestCtx::route_phase`]: limits, the one host, allowed hosts, the
//! https redirect, SNI, path safety, then the route) → headers ([`header_phase`]: trust and
//! hygiene) → the target: a static directory, or a pool through `forward`: read-ahead of the
//! body, sticky, `pick_phase` (choose, connect, one retry elsewhere), `upstream_request_phase`
//! (target, Host, forwarded headers, edits), `send_phase` (timeout, passive health),
//! `tunnel_phase` (a 101) or the response (hop-by-hop, `rewrite_phase`, sticky cookie) → the
//! route's response edits → log (the response body's completion, access_log.rs). The filter,
//! route and header phases need no I/O: unit tests drive them.

use std::{borrow::Cow, net::SocketAddr, path::Path, pin::Pin, sync::Arc};

use arc_swap::ArcSwap;
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode, Uri, Version,
    header::{self, HeaderName, HeaderValue},
    upgrade::OnUpgrade,
};
use tokio_util::task::TaskTracker;

use super::{
    Body,
    access_log::{self, AccessRecord, Completion, LoggedBody},
    activity::Activity,
    balance,
    buffering::{self, request::ForwardBody},
    compress,
    error::{self, PageSet, ProxyError},
    h1::request_body::{BodyError, RequestBody},
    html,
    metrics::{HttpMetrics, PolicyLabels, RewriteLabels, RouteMetrics, ServerLabels},
    pool::{NoPick, Pool, Server, ServerLoad},
    proxy_state::{ListenerRuntime, ProxyState, RouteRuntime, Target},
    route::{self, RouteAction},
    server_health::Outcome,
    static_files::{self, StaticError},
    tls,
    tunnel::{self, PendingTunnel, TunnelSlot},
    upstream::{Checkout, SendError, client::UpstreamUpgrade, raw_fields::RawFields},
    wait_timer::WaitTimer,
};
use crate::clock;
use crate::{
    config::{AccessLogFormat, Balance, ListenerConfig, OnDown, ProxySettings, RouteConfig},
    headers::{
        compression,
        hygiene::{HygieneError, RemovalReason, strip_hop_by_hop},
        request_id::{self, X_REQUEST_ID},
        rewrite::{BackendUrl, PublicUrl, ReverseMap, has_rewritable_headers},
        trust::{Arrival, ClientView, Scheme, TrustPolicy, public_prefix},
    },
};
use prometheus_client::metrics::{counter::Counter, family::Family};

/// What every connection shares: the current state (swapped on reload), the metrics, and the
/// tracker of the tasks shutdown waits for.
pub struct Shared {
    pub state: ArcSwap<ProxyState>,
    /// Shared by every request's completion (one reference count, not one per family).
    pub metrics: Arc<HttpMetrics>,
    /// Client connections and upgraded tunnels: shutdown waits for them (up to
    /// `shutdown_timeout`).
    pub tracker: TaskTracker,
    /// Set once a new process has taken the listeners over (`balancer upgrade`): every
    /// HTTP/1.x response says `Connection: close`, so each keep-alive connection ends after
    /// its next answer instead of being closed while idle (a close racing the client's next
    /// request is how a reload loses requests).
    pub draining: std::sync::atomic::AtomicBool,
}

/// What is known about the client connection a request arrived on.
pub struct ConnInfo {
    /// The listener's configured address (see `ProxyState::listener_at`).
    pub bind: SocketAddr,
    pub peer: SocketAddr,
    /// The TLS server name the client asked for; `None` on plain connections or without SNI.
    pub sni: Option<String>,
    pub tls: bool,
    pub activity: Arc<Activity>,
}

impl Shared {
    /// A request refused before it reached the handler (a malformed head: 400, 414, 431, …).
    pub fn count_malformed(&self, conn: &ConnInfo, status: u16) {
        let state = self.state.load();
        let listener = state
            .listener_at(conn.bind)
            .map(|listener| listener.config.name.clone())
            .unwrap_or_default();
        policy_count(
            &self.metrics.requests_refused,
            &listener,
            format!("malformed-{status}"),
        );
    }
}

/// Bytes of request body read ahead before a server is chosen when the route streams bodies
/// (`request_buffering = false`): most bodies fit, and arrive at the server whole and checked.
const READ_AHEAD: usize = 64 * 1024;

/// One request, start to end: never fails; every error becomes a response here. The request
/// stays where its connection built it (its body already wrapped for forwarding): each phase
/// borrows it, where passing it on by value copied its few hundred bytes into every phase's
/// future.
pub async fn handle<B: RequestBody>(
    shared: &Arc<Shared>,
    conn: &Arc<ConnInfo>,
    request: &mut Request<ForwardBody<B>>,
    timer: Pin<&mut WaitTimer>,
) -> Response<LoggedBody> {
    let in_flight = conn.activity.request_started();
    let http1 = request.version() < Version::HTTP_2;
    let state = shared.state.load_full();
    let format = state.config.proxy.access_log;
    let logged = format != AccessLogFormat::Off;
    let listener = state.listener_at(conn.bind);
    // Decided first, so that every answer carries it, the proxy's own refusals too.
    let request_id = state.config.proxy.request_id.then(|| {
        let trusted_peer =
            listener.is_some_and(|listener| listener.trust.is_trusted(conn.peer.ip()));
        request_id::resolve(request.headers(), trusted_peer)
    });
    // The record is built in the context, not moved into it (a copy of a few hundred bytes).
    let mut ctx = RequestCtx {
        shared,
        state: &state,
        conn,
        record: AccessRecord::new(logged, conn.peer, version_label(request.version())),
        pages: PageSet::default(),
        route_metrics: None,
        request_id,
    };
    let record = &mut ctx.record;
    if logged {
        record.listener = listener
            .map(|listener| listener.config.name.clone())
            .unwrap_or_default();
        record.method = request.method().to_string();
        record.target = request
            .uri()
            .path_and_query()
            .map_or_else(|| request.uri().to_string(), ToString::to_string);
        record.referer = header_text(request.headers(), &header::REFERER);
        record.user_agent = header_text(request.headers(), &header::USER_AGENT);
        if let Some(authorization) = request.headers().get(header::AUTHORIZATION) {
            record.remote_user = super::access_log::basic_user(authorization.as_bytes());
        }
    }
    let (response, server) = match process(&mut ctx, request, timer).await {
        Ok(answer) => answer,
        Err(err) => {
            if err.side() != error::Side::Downstream {
                tracing::warn!(
                    route = access_log::name(&ctx.record.route),
                    upstream = access_log::name(&ctx.record.upstream),
                    "{err}"
                );
            } else {
                tracing::debug!("{err}");
            }
            (error::respond(&err, &ctx.pages), None)
        }
    };
    let RequestCtx {
        mut record,
        route_metrics,
        request_id,
        ..
    } = ctx;
    record.status = response.status().as_u16();
    let mut response = response;
    if let Some(id) = request_id {
        response
            .headers_mut()
            .insert(X_REQUEST_ID, request_id::echoed(&id));
        record.request_id = Some(id);
    }
    if http1
        && response.status() != StatusCode::SWITCHING_PROTOCOLS
        && shared.draining.load(std::sync::atomic::Ordering::Relaxed)
    {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response.map(|body| {
        LoggedBody::new(
            body,
            Completion {
                record,
                format,
                file: state.access_log_file.clone(),
                metrics: shared.metrics.clone(),
                route_metrics,
                bytes: 0,
                _in_flight: in_flight,
                _server: server,
            },
        )
    })
}

type Answer = (Response<Body>, Option<ServerLoad>);

/// What one request carries through its phases: where it arrived, the state it is served with
/// (one snapshot for the whole request, whatever a reload does meanwhile), its access-log
/// record, the error pages that apply and its route's metrics.
pub struct RequestCtx<'a> {
    pub shared: &'a Shared,
    pub state: &'a ProxyState,
    pub conn: &'a ConnInfo,
    pub record: AccessRecord,
    /// Most specific first: the route's, then the pool's.
    pub pages: PageSet,
    pub route_metrics: Option<Arc<RouteMetrics>>,
    /// The request's `X-Request-ID` (headers/request_id.rs); `None` with `request_id = false`.
    pub request_id: Option<HeaderValue>,
}

/// Where the route phase sent a request.
pub struct Routed<'a> {
    pub listener: &'a ListenerRuntime,
    pub host: String,
    /// The normalized path routing matched (`/` for `OPTIONS *`).
    pub path: String,
    /// An `OPTIONS *` request: its target goes on as `*`.
    pub asterisk: bool,
    pub route: &'a RouteConfig,
    pub runtime: &'a RouteRuntime,
    /// The path the server gets (the route's prefix stripped when it says so).
    pub upstream_path: String,
}

/// What the filter and route phases decided: a route, or an answer given without one (the
/// https redirect, the add-a-slash redirect).
pub enum Routing<'a> {
    Routed(Routed<'a>),
    Answered(Response<Body>),
}

impl<'a> RequestCtx<'a> {
    /// The filter phase (limits, the one host, allowed hosts, the https redirect, SNI, path
    /// safety) then the route phase (listener, host, longest prefix), from the head alone.
    pub fn route_phase<B>(&mut self, request: &Request<B>) -> Result<Routing<'a>, ProxyError> {
        let state = self.state;
        let listener_runtime = state
            .listener_at(self.conn.bind)
            .ok_or(ProxyError::NoRoute)?;
        let listener = &listener_runtime.config;
        // HTTP/1.1 heads over the limit never get here (the engine answers 431); HTTP/2
        // ones do.
        if request.headers().len() > listener.max_headers {
            return Err(ProxyError::TooManyHeaders {
                count: request.headers().len(),
                limit: listener.max_headers,
            });
        }
        let host = request_host(request)?;
        if self.record.logged {
            self.record.host.clone_from(&host);
        }
        if !listener_runtime.allowed_hosts.allows(&host) {
            refused(self.shared, listener, "disallowed-host");
            return Err(ProxyError::HostNotAllowed {
                host,
                status: listener.disallowed_host_status,
            });
        }
        if let Some(response) = redirect_phase(listener, &host, request.uri()) {
            return Ok(Routing::Answered(response));
        }
        if let Some(sni) = &self.conn.sni
            && !tls::sni_matches_host(sni, &host)
        {
            return Err(ProxyError::MisdirectedRequest {
                host,
                sni: sni.clone(),
            });
        }
        if route::has_parameter_dot_segment(request.uri().path()) {
            return Err(ProxyError::BadRequest(
                "a dot segment with parameters (such as ..;) in the path",
            ));
        }
        // `OPTIONS *` asks about the server as a whole (RFC 9112 §3.2.4): routed as `/`,
        // forwarded as `*`.
        let asterisk = request.method() == Method::OPTIONS && request.uri() == "*";
        let path = if asterisk {
            "/".to_string()
        } else {
            route::normalize_path(request.uri().path())
                .ok_or(ProxyError::BadRequest("the path climbs above the root"))?
                .into_owned()
        };
        let found = state
            .routes
            .find(&listener.name, &host, &path)
            .ok_or(ProxyError::NoRoute)?;
        let route = found.route;
        if !route.allow_encoded_slashes && route::has_hidden_separator(&path) {
            // Routing and the server must see the same path (see `has_hidden_separator`).
            return Err(ProxyError::NotFound);
        }
        let runtime = &state.route_runtime[found.index];
        self.record.route = Some(runtime.name.clone());
        self.route_metrics = Some(runtime.metrics.clone());
        self.pages.0[0] = Some(runtime.error_pages.clone());
        if let Target::Pool(pool) = &runtime.target {
            self.record.pool = Some(pool.name.clone());
            self.pages.0[1] = Some(pool.error_pages.clone());
        }
        let upstream_path = match found.action {
            RouteAction::AddSlash { location_path } => {
                let location = with_query(&location_path, request.uri());
                return Ok(Routing::Answered(error::redirect(&location)));
            }
            RouteAction::Forward { upstream_path } => upstream_path,
        };
        Ok(Routing::Routed(Routed {
            listener: listener_runtime,
            host,
            path,
            asterisk,
            route,
            runtime,
            upstream_path,
        }))
    }
}

/// The phases in order: filter and route, headers, then the target (a static directory, or
/// a pool: pick, upstream request, send, response), then the route's response edits. The log
/// phase is the response body's completion (access_log.rs).
async fn process<B: RequestBody>(
    ctx: &mut RequestCtx<'_>,
    request: &mut Request<ForwardBody<B>>,
    timer: Pin<&mut WaitTimer>,
) -> Result<Answer, ProxyError> {
    let routed = match ctx.route_phase(request)? {
        Routing::Answered(response) => return Ok((response, None)),
        Routing::Routed(routed) => routed,
    };
    let Routed {
        listener: listener_runtime,
        host,
        path,
        asterisk,
        route,
        runtime,
        upstream_path,
    } = routed;
    let received = route
        .debug_headers
        .then(|| crate::headers::edits::redacted(request.headers()));
    // Read before the request goes: the answer's coding (route `compress` only).
    let coding = route
        .compress
        .then(|| compression::for_request(request.method(), request.headers()));
    let view = header_phase(
        ctx.shared,
        listener_runtime,
        ctx.conn,
        &host,
        ctx.request_id.as_ref(),
        request,
    )?;

    let mut answer = match &runtime.target {
        Target::Static(dir) => {
            // Boxed: the file-serving state would enlarge every proxied request's future.
            let mut response = Box::pin(static_files::serve(
                dir,
                &upstream_path,
                &path,
                request.method(),
                request.headers(),
            ))
            .await
            .map_err(static_error)?;
            // A directory's add-slash redirect keeps the query, like the route's above.
            if response.status() == StatusCode::MOVED_PERMANENTLY
                && let Some(query) = request.uri().query()
            {
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|location| {
                        HeaderValue::from_str(&format!("{location}?{query}")).ok()
                    });
                if let Some(location) = location {
                    response.headers_mut().insert(header::LOCATION, location);
                }
            }
            (response, None)
        }
        Target::Pool(pool) => {
            request
                .body_mut()
                .limit(route.max_body_size)
                .map_err(body_error)?;
            request.body_mut().gap_timeout(route.client_body_timeout);
            let forwarding = Forwarding {
                pool,
                upstream_path: &upstream_path,
                route,
                runtime,
                policy: &listener_runtime.trust,
                view: &view,
                client_host: &host,
                received,
                asterisk,
                proxy: &ctx.state.config.proxy,
                temp_dir: &ctx.state.temp_dir,
            };
            forward(
                ctx.shared,
                ctx.conn,
                request,
                &forwarding,
                &mut ctx.record,
                timer,
            )
            .await?
        }
    };
    // After HTML rewriting (which decodes the server's gzip), before the route's own edits.
    if let Some(coding) = coding {
        compress::response_phase(&ctx.shared.metrics, &route.name, coding, &mut answer.0);
    }
    runtime.response_edits.apply(answer.0.headers_mut());
    Ok(answer)
}

/// What the server is told about the client: reads the forwarded headers the peer may send
/// (trust), then rebuilds the header list without every forwarded, hop-by-hop, identity and
/// underscore field (hygiene), then sets the request's `X-Request-ID` (after hygiene, so that
/// a client's `Connection: x-request-id` cannot remove ours). Our own forwarded headers are
/// added in `forward`.
pub fn header_phase<B>(
    shared: &Shared,
    listener: &ListenerRuntime,
    conn: &ConnInfo,
    host: &str,
    request_id: Option<&HeaderValue>,
    request: &mut Request<B>,
) -> Result<ClientView, ProxyError> {
    let policy = &listener.trust;
    let name = &listener.config.name;
    let arrival = Arrival {
        peer: conn.peer,
        tls: conn.tls,
        host,
        listener_port: conn.bind.port(),
    };
    let (view, anomalies) = policy.read(&arrival, request.headers());
    for anomaly in &anomalies {
        tracing::debug!(peer = %conn.peer, header = anomaly.header(), "forwarded header ignored: {}", anomaly.kind());
        let reason = format!("{}:{}", anomaly.header(), anomaly.kind());
        policy_count(&shared.metrics.forwarded_anomalies, name, reason);
    }
    let keep_upgrade = wants_upgrade(request);
    let headers = std::mem::take(request.headers_mut());
    let (cleaned, report) = policy.clean(headers, keep_upgrade).map_err(|err| {
        policy_count(
            &shared.metrics.requests_refused,
            name,
            "underscore".to_string(),
        );
        match err {
            HygieneError::Underscore(header) => ProxyError::UnderscoreHeader {
                name: header.as_str().to_string(),
            },
        }
    })?;
    *request.headers_mut() = cleaned;
    if let Some(id) = request_id {
        request.headers_mut().insert(X_REQUEST_ID, id.clone());
    }
    for (header, reason) in &report.removed {
        let trusted_member = view.trusted_peer
            && policy
                .trusted_headers
                .iter()
                .any(|member| member.header_name() == header.as_str());
        if *reason == RemovalReason::HopByHop || trusted_member {
            continue;
        }
        tracing::debug!(peer = %conn.peer, header = %header, reason = reason.label(), "request header removed");
        policy_count(
            &shared.metrics.headers_removed,
            name,
            reason.label().to_string(),
        );
    }
    Ok(view)
}

fn policy_count(family: &Family<PolicyLabels, Counter>, listener: &str, reason: String) {
    family
        .get_or_create(&PolicyLabels {
            listener: listener.to_string(),
            reason,
        })
        .inc();
}

fn refused(shared: &Shared, listener: &ListenerConfig, reason: &str) {
    policy_count(
        &shared.metrics.requests_refused,
        &listener.name,
        reason.to_string(),
    );
}

/// The request's host: the URI authority (HTTP/2 `:authority`, or an absolute-form target)
/// or the one Host header. HTTP/1.1 without a host, or with several, is refused (RFC 9112 §3.2).
pub fn request_host<B>(request: &Request<B>) -> Result<String, ProxyError> {
    if request.version() == Version::HTTP_11 && !request.headers().contains_key(header::HOST) {
        // Even with an absolute-form target (RFC 9112 §3.2: "MUST respond with 400").
        return Err(ProxyError::BadRequest("no Host header"));
    }
    if let Some(authority) = request.uri().authority() {
        // HTTP/2: a Host that names another origin than :authority makes the request
        // malformed (RFC 9113 §8.3.1); routing by one and the server reading the other is the
        // confusion that rule prevents. HTTP/1.1 absolute-form: the target's authority wins
        // over Host (RFC 9112 §3.2.2).
        if request.version() == Version::HTTP_2 {
            let mut hosts = request.headers().get_all(header::HOST).iter();
            if let Some(host) = hosts.next()
                && (hosts.next().is_some()
                    || !host
                        .as_bytes()
                        .eq_ignore_ascii_case(authority.as_str().as_bytes()))
            {
                return Err(ProxyError::BadRequest(
                    "Host differs from :authority (RFC 9113 §8.3.1)",
                ));
            }
        }
        return Ok(authority.as_str().to_string());
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(ProxyError::BadRequest("several Host headers")),
        (Some(value), None) => {
            let host = value
                .to_str()
                .map_err(|_| ProxyError::BadRequest("Host is not text"))?;
            if host.is_empty()
                || host.contains(|c: char| c.is_ascii_whitespace() || c == '/' || c == '@')
            {
                return Err(ProxyError::BadRequest("malformed Host"));
            }
            Ok(host.to_string())
        }
        (None, _) if request.version() == Version::HTTP_10 => Ok(String::new()),
        (None, _) => Err(ProxyError::BadRequest("no Host header")),
    }
}

/// `redirect_https` listeners answer every request with a 301 to the same URL over https.
fn redirect_phase(listener: &ListenerConfig, host: &str, uri: &Uri) -> Option<Response<Body>> {
    if !listener.redirect_https {
        return None;
    }
    if host.is_empty() {
        return Some(error::respond(
            &ProxyError::BadRequest("no Host to redirect to"),
            &PageSet::default(),
        ));
    }
    let name = crate::http::authority::host_without_port(host);
    let port = if listener.https_port == 443 {
        String::new()
    } else {
        format!(":{}", listener.https_port)
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Some(error::redirect(&format!("https://{name}{port}{path}")))
}

/// The target the server gets: `path` with the client's query; borrowed from `uri` when the
/// path is the client's own.
fn upstream_target<'u>(path: &str, uri: &'u Uri) -> Cow<'u, str> {
    match uri.path_and_query() {
        Some(current) if current.path() == path => Cow::Borrowed(current.as_str()),
        _ => Cow::Owned(with_query(path, uri)),
    }
}

fn with_query(path: &str, uri: &Uri) -> String {
    match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    }
}

/// What the client's body did wrong, as the answer it gets. None of it is the server's fault.
fn body_error(error: BodyError) -> ProxyError {
    match error {
        BodyError::TooLarge { limit } => ProxyError::PayloadTooLarge { limit },
        BodyError::Malformed(reason) => ProxyError::BadRequest(reason),
        BodyError::Timeout => ProxyError::BodyTimeout,
        BodyError::Aborted => ProxyError::ClientGone,
        BodyError::Other(_) => ProxyError::BadRequest("the request body failed"),
        BodyError::Spool(reason) => ProxyError::Internal(reason),
    }
}

fn static_error(error: StaticError) -> ProxyError {
    match error {
        StaticError::NotFound => ProxyError::NotFound,
        StaticError::Forbidden => ProxyError::Forbidden,
        StaticError::MethodNotAllowed => ProxyError::MethodNotAllowed { allow: "GET, HEAD" },
        StaticError::RangeNotSatisfiable { length } => ProxyError::RangeNotSatisfiable { length },
        StaticError::Io(err) => ProxyError::Internal(format!("static file: {err}")),
    }
}

/// An RFC 8441 WebSocket over HTTP/2: extended CONNECT with `:protocol = websocket`.
fn is_h2_websocket<B>(request: &Request<B>) -> bool {
    request.method() == Method::CONNECT
        && request
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|protocol| protocol.as_str().eq_ignore_ascii_case("websocket"))
}

/// Turns an HTTP/2 WebSocket request into the HTTP/1.1 handshake the server expects
/// (RFC 8441 §5): GET with `Upgrade: websocket` and a fresh `Sec-WebSocket-Key`.
fn h2_websocket_as_upgrade<B>(request: &mut Request<B>) {
    *request.method_mut() = Method::GET;
    request.extensions_mut().remove::<hyper::ext::Protocol>();
    let key: [u8; 16] = rand::random();
    let headers = request.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(value) = HeaderValue::from_str(&base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        key,
    )) {
        headers.insert(header::SEC_WEBSOCKET_KEY, value);
    }
}

/// Whether the client asks to switch to WebSocket (an HTTP/1.1 Upgrade). Only `websocket` is
/// forwarded: an `Upgrade: h2c` tunnelled after a server's 101 would carry HTTP/2 past every
/// rule of this proxy (RFC 9113 §3.1 removed h2c upgrades anyway). Other upgrades are dropped
/// as the hop-by-hop headers they are, and the request goes on as plain HTTP.
fn wants_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_11
        && request
            .headers()
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|protocol| {
                let name = protocol.trim().split('/').next().unwrap_or_default();
                name.eq_ignore_ascii_case("websocket")
            })
        && crate::http::connection::lists(request.headers(), "upgrade")
}

/// Makes `request` what the server gets: origin-form `target` (the route's path and the query),
/// the Host chosen by `preserve_host`, and HTTP/2 cookie fields joined (RFC 9113 §8.2.3)
/// since the server speaks HTTP/1.1. Hop-by-hop headers are already gone (`header_phase`).
pub fn upstream_request<B>(
    request: &mut Request<B>,
    target: &str,
    host: HeaderValue,
) -> Result<(), ProxyError> {
    // An origin-form request the route does not change keeps its parsed target.
    let unchanged = request.uri().scheme().is_none()
        && request.uri().authority().is_none()
        && request
            .uri()
            .path_and_query()
            .is_some_and(|current| current.as_str() == target);
    if !unchanged {
        *request.uri_mut() = target
            .parse::<Uri>()
            .map_err(|_| ProxyError::BadRequest("unusable request target"))?;
    }
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    let cookies: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if cookies.len() > 1 {
        let joined = cookies.join(&b"; "[..]);
        if let Ok(value) = HeaderValue::from_bytes(&joined) {
            headers.insert(header::COOKIE, value);
        }
    }
    headers.insert(header::HOST, host);
    Ok(())
}

/// What `forward` needs besides the request: where it goes and what the server is told.
struct Forwarding<'a> {
    pool: &'a Arc<Pool>,
    upstream_path: &'a str,
    route: &'a RouteConfig,
    runtime: &'a RouteRuntime,
    policy: &'a TrustPolicy,
    view: &'a ClientView,
    /// The request's Host as received (sent on with `preserve_host`).
    client_host: &'a str,
    /// The request headers as received, redacted, when the route has `debug_headers`.
    received: Option<String>,
    /// An `OPTIONS *` request: its target goes on as `*`.
    asterisk: bool,
    proxy: &'a ProxySettings,
    /// Where bodies spill (`proxy.temp_dir`, resolved).
    temp_dir: &'a Path,
}

async fn forward<B: RequestBody>(
    shared: &Shared,
    conn: &ConnInfo,
    request: &mut Request<ForwardBody<B>>,
    forwarding: &Forwarding<'_>,
    record: &mut AccessRecord,
    mut timer: Pin<&mut WaitTimer>,
) -> Result<Answer, ProxyError> {
    let pool = forwarding.pool;
    let h2_websocket = is_h2_websocket(request);
    let upgrade = h2_websocket || wants_upgrade(request);
    // An HTTP/2 client's WebSocket stream is hyper's to hand over; an HTTP/1.1 client's
    // connection is our engine's (h1_server.rs), which tunnels after writing the 101.
    let client_upgrade: Option<OnUpgrade> = h2_websocket.then(|| hyper::upgrade::on(&mut *request));
    if h2_websocket {
        h2_websocket_as_upgrade(request);
    }
    // Read before a server is chosen, whole (`request_buffering`) or its first part: a
    // malformed body is refused before any server sees a byte of it, a slow upload holds no
    // server, and a whole body can be sent again.
    let body = request.body_mut();
    let read = if forwarding.route.request_buffering && !upgrade {
        let memory = usize::try_from(forwarding.proxy.body_buffer).unwrap_or(usize::MAX);
        body.buffer_whole(memory, forwarding.temp_dir).await
    } else {
        body.read_ahead(READ_AHEAD)
    };
    read.map_err(body_error)?;
    let key = match &pool.config.balance {
        Balance::Hash(on) => balance::hash_key(on, request.headers(), conn.peer.ip()),
        _ => None,
    };
    let method_is_head = request.method() == Method::HEAD;
    // The client's target as it is when the route leaves it so (most requests): a count on
    // its bytes, not a copy.
    let client_uri = request.uri().clone();
    let mut target = if forwarding.asterisk {
        Cow::Borrowed("*")
    } else {
        upstream_target(forwarding.upstream_path, &client_uri)
    };
    // Sticky sessions: the server the request is stuck to (tried first unless it cannot take
    // it), and the app's own session id without our route suffix.
    let stuck = pool
        .sticky
        .as_ref()
        .map(|policy| policy.on_request(request.headers_mut(), &target))
        .unwrap_or_default();
    if let Some(stripped) = &stuck.target {
        target = Cow::Owned(stripped.clone());
    }

    let mut excluded = None;
    pool.retry_budget
        .record_request(super::retry_budget::now_second());
    let (mut load, mut checkout) = pick_phase(
        shared,
        pool,
        key.as_deref(),
        stuck.server,
        &mut excluded,
        record,
    )
    .await?;
    let added = upstream_request_phase(conn, request, forwarding, load.server(), &target)?;
    let response = loop {
        let label = load.server().label.clone();
        let sent = send_phase(
            pool,
            &load,
            checkout,
            request,
            &added,
            &label,
            timer.as_mut(),
        );
        match sent.await {
            // Nothing was sent (a reused connection was closed and the server refuses new
            // ones): the request goes to another server, once, as after a failed connect.
            Err(Unsent(err)) if excluded.is_none() => {
                tracing::warn!(pool = %pool.config.name, server = %label, "{err}");
                pool.connect_failed(&load);
                excluded = Some(Pool::index_of(&load));
                (load, checkout) =
                    pick_phase(shared, pool, key.as_deref(), None, &mut excluded, record).await?;
                if !forwarding.route.preserve_host {
                    let host = load.server().host.clone();
                    request.headers_mut().insert(header::HOST, host);
                }
            }
            Err(Unsent(err)) => {
                return Err(ProxyError::Connect {
                    server: label.to_string(),
                    reason: err.to_string(),
                });
            }
            // It reached the server, which ended without a byte of answer (or was marked
            // down while it waited): another server gets it, once, when that is safe.
            Err(Unanswered(err)) if excluded.is_none() && may_retry(pool, request) => {
                tracing::warn!(pool = %pool.config.name, server = %label, "{err}; retrying on another server");
                excluded = Some(Pool::index_of(&load));
                request.body_mut().rewind();
                (load, checkout) =
                    pick_phase(shared, pool, key.as_deref(), None, &mut excluded, record).await?;
                if !forwarding.route.preserve_host {
                    let host = load.server().host.clone();
                    request.headers_mut().insert(header::HOST, host);
                }
            }
            Err(Unanswered(err)) => return Err(err),
            Ok(response) => break response,
            Err(Sent(err)) => return Err(err),
        }
    };
    // Sent: the request's map is done with (h1/spare_maps.rs).
    super::h1::spare_maps::give_back(std::mem::take(request.headers_mut()));
    let server_authority = load.server().authority.as_str();
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let server_label = load.server().label.to_string();
        return tunnel_phase(
            shared,
            pool,
            response,
            load,
            upgrade,
            client_upgrade,
            server_label,
        );
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    let body = if method_is_head {
        crate::proxy::empty_body()
    } else {
        body
    };
    let body = rewrite_phase(shared, forwarding, server_authority, &mut parts, body);
    // After the cookie rewriting: the sticky cookie's Path is public already.
    if let Some(policy) = &pool.sticky {
        let public_prefix = public_prefix(
            forwarding.view.prefix.as_deref(),
            forwarding.runtime.stripped_prefix.as_deref(),
        );
        policy.on_response(
            &mut parts.headers,
            &stuck,
            Pool::index_of(&load),
            forwarding.view.scheme == Scheme::Https,
            public_prefix.as_deref().unwrap_or_default(),
        );
    }
    // Read the server's answer ahead of the client (the server is free once it is read);
    // `X-Accel-Buffering` is the proxy's marker and goes no further either way.
    let wanted = buffering::response::wanted(&mut parts.headers);
    if forwarding.route.response_buffering && wanted && !method_is_head {
        let limits = buffering::response::Limits {
            memory: usize::try_from(forwarding.proxy.response_buffer).unwrap_or(usize::MAX),
            total: forwarding.proxy.max_response_buffer,
        };
        let body = buffering::response::buffer(body, Some(load), limits, forwarding.temp_dir);
        return Ok((Response::from_parts(parts, body), None));
    }
    Ok((Response::from_parts(parts, body), Some(load)))
}

/// Chooses a server (the sticky one first, when it can take the request) and checks a
/// connection to it out. At most two servers: a failed connect sends nothing, so the request
/// can go elsewhere once.
async fn pick_phase(
    shared: &Shared,
    pool: &Arc<Pool>,
    key: Option<&[u8]>,
    stuck: Option<usize>,
    excluded: &mut Option<usize>,
    record: &mut AccessRecord,
) -> Result<(ServerLoad, Checkout), ProxyError> {
    let (load, checkout) = loop {
        let preferred = if excluded.is_none() { stuck } else { None };
        let queue_timeout = pool.config.queue_timeout;
        let picked = match pool.pick_with(key, *excluded, preferred) {
            // Boxed: the queue's state would enlarge every request's future.
            Err(NoPick::Full) => {
                Box::pin(pool.wait_for_slot(key, *excluded, preferred, queue_timeout)).await
            }
            picked => picked,
        };
        let load = match picked {
            Ok(load) => load,
            Err(NoPick::Full) => {
                return Err(ProxyError::QueueTimeout {
                    pool: pool.config.name.clone(),
                    waited: queue_timeout,
                    retry_after_secs: queue_timeout.as_secs().clamp(1, 30),
                });
            }
            Err(NoPick::NoServer) => {
                return Err(match excluded {
                    None => ProxyError::NoServer {
                        pool: pool.config.name.clone(),
                    },
                    Some(_) => ProxyError::Connect {
                        server: access_log::name(&record.upstream).to_string(),
                        reason: "no other server to retry on".into(),
                    },
                });
            }
        };
        let server = load.server();
        record.upstream = Some(server.label.clone());
        match server.connections.checkout().await {
            Ok(checkout) => break (load, checkout),
            Err(err) => {
                pool.connect_failed(&load);
                shared
                    .metrics
                    .upstream_connect_failures
                    .get_or_create(&ServerLabels {
                        pool: pool.config.name.clone(),
                        server: server.label.to_string(),
                    })
                    .inc();
                tracing::warn!(pool = %pool.config.name, server = %server.label, "connect failed: {err}");
                if excluded.is_some() {
                    return Err(ProxyError::Connect {
                        server: server.label.to_string(),
                        reason: err.to_string(),
                    });
                }
                *excluded = Some(Pool::index_of(&load));
            }
        }
    };
    if load.used_preferred() {
        pool.count_sticky(&load);
    }
    Ok((load, checkout))
}

/// The request as the chosen server gets it: the route's target, the Host `preserve_host`
/// chooses, our forwarded headers and the route's edits. The forwarded headers come back as
/// head lines to send after the request's own (raw_fields.rs), unless the route's edits or
/// `debug_headers` have to see them in the map.
fn upstream_request_phase<B>(
    conn: &ConnInfo,
    request: &mut Request<B>,
    forwarding: &Forwarding<'_>,
    server: &Server,
    target: &str,
) -> Result<RawFields, ProxyError> {
    let route = forwarding.route;
    let server_label = &*server.label;
    // An HTTP/1.0 request without a host still gets a Host towards the server, empty: the
    // server is spoken to in HTTP/1.1 (RFC 9112 §3.2).
    let host = if route.preserve_host {
        HeaderValue::from_str(forwarding.client_host)
            .map_err(|_| ProxyError::BadRequest("malformed Host"))?
    } else {
        server.host.clone()
    };
    upstream_request(request, target, host)?;
    let stripped_prefix = forwarding.runtime.stripped_prefix.as_deref();
    let edits = &forwarding.runtime.request_edits;
    let added = if edits.is_empty() && forwarding.received.is_none() {
        let mut added = RawFields::with_capacity(256);
        forwarding
            .policy
            .emit_to(forwarding.view, stripped_prefix, &mut added);
        added
    } else {
        forwarding
            .policy
            .emit(forwarding.view, stripped_prefix, request.headers_mut());
        edits.apply(request.headers_mut());
        RawFields::default()
    };
    if let Some(received) = &forwarding.received {
        tracing::info!(
            target: "debug_headers",
            route = %route.name,
            client = %conn.peer,
            upstream = %server_label,
            "request headers as received:\n{received}as forwarded:\n{}",
            crate::headers::edits::redacted(request.headers())
        );
    }
    Ok(added)
}

/// How a send failed: before anything reached the server (it may go to another), after it
/// reached the server but before any answer (it may go to another when that is safe), or in a
/// way that ends the request.
enum SendFailure {
    Unsent(SendError),
    Unanswered(ProxyError),
    Sent(ProxyError),
}
use SendFailure::{Sent, Unanswered, Unsent};

/// Sends the request within the pool's response timeout, and tells passive health what the
/// answer says about the server (a client's broken body says nothing about it). With
/// `on_down = "abort"`, a server marked down meanwhile ends the wait.
async fn send_phase<B: RequestBody>(
    pool: &Pool,
    load: &ServerLoad,
    checkout: Checkout,
    request: &mut Request<B>,
    added: &RawFields,
    server_label: &str,
    timer: Pin<&mut WaitTimer>,
) -> Result<Response<Body>, SendFailure> {
    let timeout = pool.config.timeouts.response;
    // Pinned where it is built, and waited on through the pin: the exchange's future is a
    // few kilobytes, and moving it into the timer's wait and then into this future's state
    // copied all of it twice per request (callgrind: `memcpy` under `WaitTimer::run`).
    let exchange = std::pin::pin!(checkout.send_with(request, added));
    let send = timer.run(clock::tokio_now() + timeout, exchange);
    let sent = if pool.config.on_down == OnDown::Abort {
        let marked_down = load.server().marked_down.notified();
        tokio::select! {
            biased;
            sent = send => sent,
            () = marked_down => {
                return Err(Unanswered(ProxyError::Upstream {
                    server: server_label.to_string(),
                    reason: "marked down by its health checks while the request waited".into(),
                }));
            }
        }
    } else {
        send.await
    };
    match sent {
        Err(_) => {
            pool.report_outcome(load, Outcome::NoResponse);
            Err(Sent(ProxyError::UpstreamTimeout {
                server: server_label.to_string(),
                timeout,
            }))
        }
        Ok(Err(SendError::Body(err))) => Err(Sent(body_error(err))),
        Ok(Err(err @ SendError::NotSent(_))) => Err(Unsent(err)),
        Ok(Err(err @ SendError::NoResponse(_))) => {
            pool.report_outcome(load, Outcome::NoResponse);
            Err(Unanswered(ProxyError::Upstream {
                server: server_label.to_string(),
                reason: err.to_string(),
            }))
        }
        Ok(Err(err)) => {
            pool.report_outcome(load, Outcome::NoResponse);
            Err(Sent(ProxyError::Upstream {
                server: server_label.to_string(),
                reason: err.to_string(),
            }))
        }
        Ok(Ok(response)) => {
            pool.report_outcome(load, Outcome::Status(response.status().as_u16()));
            Ok(response)
        }
    }
}

/// Whether a request that reached a server without an answer may go to another: its method
/// is in `retry.methods` (idempotent ones only, RFC 9110 §9.2.2), its body can be sent again,
/// and the pool's retry budget allows one more.
fn may_retry<B: RequestBody>(pool: &Pool, request: &Request<B>) -> bool {
    let method = request.method().as_str();
    pool.config.retry.methods.iter().any(|m| m == method)
        && request.body().replayable()
        && pool
            .retry_budget
            .try_retry(super::retry_budget::now_second())
}

/// The server's 101: the connection becomes a tunnel. An HTTP/1.1 client's is run by our
/// engine after it writes the 101; an HTTP/2 client's stream (RFC 8441) by a task of its own.
fn tunnel_phase(
    shared: &Shared,
    pool: &Pool,
    mut response: Response<Body>,
    load: ServerLoad,
    upgrade: bool,
    client_upgrade: Option<OnUpgrade>,
    server_label: String,
) -> Result<Answer, ProxyError> {
    let upstream = response
        .extensions_mut()
        .remove::<UpstreamUpgrade>()
        .and_then(|upgrade| upgrade.take());
    let (Some(upstream), true) = (upstream, upgrade) else {
        return Err(ProxyError::Upstream {
            server: server_label,
            reason: "101 Switching Protocols to a request that asked for no upgrade".into(),
        });
    };
    // The tunnel holds the server's in-flight count for as long as it lives.
    let pending = PendingTunnel {
        upstream,
        idle: pool.config.timeouts.websocket_idle,
        load: Some(load),
    };
    let (mut parts, _body) = response.into_parts();
    if let Some(client_upgrade) = client_upgrade {
        // The stream outlives this request's future: tracked, so that shutdown gives it the
        // grace of a request in flight.
        shared.tracker.spawn(tunnel::run(client_upgrade, pending));
        // HTTP/2 has no 101: the stream is the tunnel once the server says 200 (RFC 8441 §5).
        parts.status = StatusCode::OK;
        strip_hop_by_hop(&mut parts.headers, false);
        parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
    } else {
        strip_hop_by_hop(&mut parts.headers, true);
        parts.extensions.insert(TunnelSlot::new(pending));
    }
    Ok((
        Response::from_parts(parts, crate::proxy::empty_body()),
        None,
    ))
}

/// Makes the server's answer point at the public URL: `Location`-like headers and cookies
/// (headers/rewrite.rs), and HTML bodies when the route asks (html.rs).
fn rewrite_phase(
    shared: &Shared,
    forwarding: &Forwarding<'_>,
    server_authority: &str,
    parts: &mut hyper::http::response::Parts,
    body: Body,
) -> Body {
    let route = forwarding.route;
    // Most answers carry nothing to rewrite: no map is built for them (a per-request cost).
    let html = route.rewrite_html && html::is_html(&parts.headers);
    let cookies = route.rewrite_cookie_path || !route.rewrite_cookie_domain.is_empty();
    let has_headers = has_rewritable_headers(&parts.headers, route.rewrite_location, cookies);
    if !(has_headers || html) {
        return body;
    }
    let public = PublicUrl::from_view(
        forwarding.view,
        forwarding.runtime.stripped_prefix.as_deref(),
    );
    // With preserve_host the server saw the public host, and may have built URLs on it with
    // the wrong scheme (it was reached over http).
    let mut authorities = vec![server_authority.to_string()];
    if route.preserve_host {
        for host in [forwarding.client_host, forwarding.view.host.as_str()] {
            if !host.is_empty() && !authorities.iter().any(|known| known == host) {
                authorities.push(host.to_string());
            }
        }
    }
    let mut map = ReverseMap::new(public, BackendUrl { authorities });
    map.cookie_paths = route.rewrite_cookie_path;
    map.cookie_domains.clone_from(&route.rewrite_cookie_domain);
    let changed = map.response_headers(&mut parts.headers, route.rewrite_location, cookies);
    if changed > 0 {
        shared
            .metrics
            .rewrites
            .get_or_create(&RewriteLabels {
                route: route.name.clone(),
                what: "headers",
            })
            .inc_by(changed as u64);
    }
    if html {
        shared
            .metrics
            .rewrites
            .get_or_create(&RewriteLabels {
                route: route.name.clone(),
                what: "html",
            })
            .inc();
        return html::rewrite_html_response(parts, body, Arc::new(map));
    }
    body
}

fn version_label(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

fn header_text(headers: &HeaderMap, name: &HeaderName) -> String {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, headers: &[(&str, &str)], uri: &str) -> Request<Body> {
        let mut builder = Request::builder().uri(uri).version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(crate::proxy::empty_body()).expect("request")
    }

    const ROUTED: &str = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:18080"
allowed_hosts = ["www.example.test"]

[[listener]]
name = "http"
bind = "127.0.0.1:18079"
redirect_https = true

[[route]]
host = "www.example.test"
path = "/app/"
strip_prefix = true
pool = "app"

[[route]]
host = "www.example.test"
pool = "app"

[pool.app]
servers = [ { url = "http://127.0.0.1:18081" } ]
"#;

    fn shared_for(toml: &str) -> Shared {
        let config = crate::config::Config::parse(toml, "test.toml").expect("config");
        let state = ProxyState::build(&config.l7, None).expect("state");
        Shared {
            state: ArcSwap::from_pointee(state),
            metrics: Arc::new(HttpMetrics::default()),
            tracker: TaskTracker::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn conn_at(bind: &str) -> ConnInfo {
        ConnInfo {
            bind: bind.parse().expect("bind"),
            peer: "198.18.0.9:40000".parse().expect("peer"),
            sni: None,
            tls: false,
            activity: Activity::new(),
        }
    }

    fn ctx<'a>(shared: &'a Shared, state: &'a ProxyState, conn: &'a ConnInfo) -> RequestCtx<'a> {
        RequestCtx {
            shared,
            state,
            conn,
            record: AccessRecord::new(true, conn.peer, "HTTP/1.1"),
            pages: PageSet::default(),
            route_metrics: None,
            request_id: None,
        }
    }

    #[tokio::test]
    async fn the_phases_route_then_clean_a_request_without_any_io() {
        let shared = shared_for(ROUTED);
        let state = shared.state.load_full();
        let conn = conn_at("127.0.0.1:18080");
        let mut ctx = ctx(&shared, &state, &conn);
        let mut request = request(
            Version::HTTP_11,
            &[
                ("host", "www.example.test"),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-user_id", "admin"),
                ("authorization", "Basic eA=="),
            ],
            "/app/x?y=1",
        );
        let Routing::Routed(routed) = ctx.route_phase(&request).expect("routed") else {
            panic!("an answer instead of a route");
        };
        assert_eq!(routed.route.path, "/app/");
        assert_eq!(routed.upstream_path, "/x");
        assert_eq!(routed.host, "www.example.test");
        assert_eq!(access_log::name(&ctx.record.route), routed.route.name);
        assert_eq!(access_log::name(&ctx.record.pool), "app");
        assert!(ctx.route_metrics.is_some());
        assert_eq!(
            ctx.pages.0.iter().flatten().count(),
            2,
            "the route's pages, then the pool's"
        );

        let id = HeaderValue::from_static("0192e7a8-1c3b-7f00-8a1b-2c3d4e5f6a7b");
        request
            .headers_mut()
            .insert("connection", HeaderValue::from_static("x-request-id"));
        let view = header_phase(
            &shared,
            routed.listener,
            &conn,
            &routed.host,
            Some(&id),
            &mut request,
        )
        .expect("headers");
        assert_eq!(
            request
                .headers()
                .get_all("x-request-id")
                .iter()
                .collect::<Vec<_>>(),
            [&id],
            "the request's ID is set after hygiene, which a Connection token cannot undo"
        );
        // The peer is not a trusted proxy: its X-Forwarded-For is not believed, and goes.
        assert_eq!(view.client.to_string(), "198.18.0.9");
        assert!(!request.headers().contains_key("x-forwarded-for"));
        assert!(
            !request.headers().contains_key("x-user_id"),
            "underscore names dropped"
        );
        assert_eq!(request.headers()["authorization"], "Basic eA==");
    }

    #[tokio::test]
    async fn the_filter_phase_answers_or_refuses_before_any_route() {
        let shared = shared_for(ROUTED);
        let state = shared.state.load_full();
        let conn = conn_at("127.0.0.1:18080");
        let other_host = request(Version::HTTP_11, &[("host", "evil.test")], "/");
        let refused = ctx(&shared, &state, &conn)
            .route_phase(&other_host)
            .err()
            .expect("a host outside allowed_hosts is refused");
        assert_eq!(refused.status(), 421);
        let climbing = request(
            Version::HTTP_11,
            &[("host", "www.example.test")],
            "/a/..;/b",
        );
        assert_eq!(
            ctx(&shared, &state, &conn)
                .route_phase(&climbing)
                .err()
                .expect("..; refused")
                .status(),
            400
        );
        let plain = conn_at("127.0.0.1:18079");
        let to_https = request(Version::HTTP_11, &[("host", "www.example.test")], "/a?b");
        let Ok(Routing::Answered(redirect)) = ctx(&shared, &state, &plain).route_phase(&to_https)
        else {
            panic!("a redirect_https listener answers itself");
        };
        assert_eq!(redirect.status(), 301);
        assert_eq!(
            redirect.headers()["location"],
            "https://www.example.test/a?b"
        );
    }

    #[test]
    fn the_host_comes_from_the_authority_then_the_one_host_header() {
        let h2 = request(Version::HTTP_2, &[], "https://www.example.test/a");
        assert_eq!(request_host(&h2).expect("host"), "www.example.test");
        let h1 = request(Version::HTTP_11, &[("host", "a.test:8080")], "/a");
        assert_eq!(request_host(&h1).expect("host"), "a.test:8080");
        let none = request(Version::HTTP_11, &[], "/a");
        assert_eq!(request_host(&none).expect_err("no host").status(), 400);
        let two = request(
            Version::HTTP_11,
            &[("host", "a.test"), ("host", "b.test")],
            "/a",
        );
        assert_eq!(request_host(&two).expect_err("two hosts").status(), 400);
        let http10 = request(Version::HTTP_10, &[], "/a");
        assert_eq!(request_host(&http10).expect("1.0 may omit it"), "");
        let bad = request(Version::HTTP_11, &[("host", "a.test/evil")], "/a");
        assert_eq!(request_host(&bad).expect_err("bad host").status(), 400);
    }

    #[test]
    fn the_upstream_request_has_the_route_path_the_host_and_joined_cookies() {
        let original = request(
            Version::HTTP_2,
            &[
                ("cookie", "a=1"),
                ("cookie", "b=2"),
                ("authorization", "Basic eA=="),
            ],
            "https://www.example.test/webapps/x?y=1",
        );
        let mut upstream = original;
        upstream_request(
            &mut upstream,
            "/x?y=1",
            HeaderValue::from_static("www.example.test"),
        )
        .expect("ok");
        assert_eq!(upstream.uri(), "/x?y=1");
        assert_eq!(upstream.version(), Version::HTTP_11);
        assert_eq!(upstream.headers()["host"], "www.example.test");
        assert_eq!(upstream.headers()["cookie"], "a=1; b=2");
        assert_eq!(upstream.headers()["authorization"], "Basic eA==");
    }
}
