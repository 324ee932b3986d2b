//! Sticky sessions, pure (no I/O): which server a request is stuck to, the request as the app
//! must see it, and the cookies the response carries back. One [`StickyPolicy`] per pool, built
//! from its `sticky` config; the proxy calls [`StickyPolicy::on_request`] before picking a
//! server and [`StickyPolicy::on_response`] once a server answered.
//!
//! What the proxy does with [`StickyRequest::server`]: forward there when the server is up or
//! draining (sessions finish on a draining server); when it is down, disabled or fails to
//! connect, pick as if there were no stickiness (a draining server is not a candidate for new
//! sessions) and call `on_response` with the server that answered.
//!
//! `mode = "route-suffix"` (Apache mod_proxy_balancer `stickysession`):
//! - The route is what follows the LAST '.' of the value (Tomcat's jvmRoute convention; Apache
//!   takes the first '.'). Routes are `[A-Za-z0-9_-]`, so a '.' never belongs to one, and an app
//!   value that contains dots (`a.b`) still round-trips: `a.b.r1` → route `r1`, value `a.b`.
//! - A suffix that is no route of the pool (or no '.'): not stuck, and the value is left as it
//!   is, since it may be the app's own text.
//! - The path parameter is looked at first, then the cookie (Apache's order). Of several
//!   occurrences of either, the first non-empty one decides (browsers send the cookie of the most
//!   specific path first); with `strip_route`, every occurrence that carries a route of the pool
//!   loses it, so the app sees its own value whichever occurrence it reads (Django reads the
//!   last).
//! - Only the path of the target is searched for the parameter (`;name=` in any segment, before
//!   '?'), case-sensitively, not percent-decoded.
//! - Responses (`strip_route` only): a Set-Cookie of the session cookie without a suffix gets
//!   `.ROUTE` of the server that answered; one with another server's suffix gets it replaced (the
//!   session moved); deletions (empty value, `Max-Age` ≤ 0) are left alone. The proxy never writes
//!   the session cookie on its own: it does not know the app's attributes (Path, Domain, Expires,
//!   HttpOnly), and a copy with other ones would be a second cookie. So after a failover the
//!   client keeps the old suffix until the app sets the cookie again (a new session does), and
//!   goes back to its server when that one returns. Path-parameter URLs the app writes are not
//!   rewritten: with a path parameter, the app appends the route itself (`strip_route = false`).
//! - `strip_route = false`: the app writes `value.route` itself; requests are routed by it and
//!   left intact, responses are not touched.
//!
//! `mode = "insert"`:
//! - The cookie holds a signed server id (see `token`): a forged, tampered, truncated or
//!   otherwise unverifiable value, or one naming a server no longer in the pool, sticks to
//!   nothing, so the proxy picks normally and the response carries a fresh cookie.
//! - Of several occurrences, the first one that verifies counts: each is self-authenticating, so
//!   a stale or foreign one (another pool with the same cookie name) cannot hide a valid one.
//! - The cookie is removed from the request: it is the proxy's, and keeping it out of the app
//!   keeps it out of the app's logs.
//! - The response gets `Set-Cookie: NAME=VALUE; Path=PREFIX; HttpOnly; SameSite=Lax[; Secure]`
//!   unless the request already carried a valid cookie for the server that answered. No
//!   `Max-Age`: the stickiness lasts as long as the browser session. `Path` is the route's public
//!   prefix without a trailing '/' (RFC 6265 §5.1.4: `/app` matches `/app` and `/app/x`, not
//!   `/application`, while `/app/` would miss `/app` itself), or "/".
//!
//! Work is linear in the size of the headers and target; nothing here panics on any input.

pub(crate) mod cookie;
mod path_param;
mod token;

use hyper::header::{COOKIE, HeaderMap, HeaderName, HeaderValue, SET_COOKIE};

use crate::config::{ServerConfig, StickyConfig};
use cookie::{Edit, SetCookie};
use token::Signer;

/// A pool server as sticky sessions know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIdentity {
    /// Its `route`, if any (required by route-suffix).
    pub route: Option<String>,
    /// Text that names the server the same way in every process and across reloads (its URL):
    /// insert cookies of servers without a route are bound to it.
    pub stable_id: String,
}

impl ServerIdentity {
    pub fn of(server: &ServerConfig) -> ServerIdentity {
        ServerIdentity {
            route: server.route.clone(),
            stable_id: server.url.to_string(),
        }
    }
}

/// A pool's sticky-session policy, built once per pool config.
#[derive(Debug)]
pub struct StickyPolicy {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    RouteSuffix {
        cookie: Option<String>,
        path_param: Option<String>,
        strip_route: bool,
        /// Each server's route, in pool order.
        routes: Vec<String>,
    },
    Insert {
        cookie: String,
        signer: Signer,
    },
}

/// Why a pool's sticky config cannot make a [`StickyPolicy`] (config validation already rules
/// these out; the text is a readable sentence).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StickyError {
    #[error("route-suffix stickiness needs a cookie or a path_param")]
    NoSessionName,
    #[error("server {server} (servers[{index}]) has no route, which route-suffix stickiness needs")]
    NoRoute { server: String, index: usize },
    #[error("route {0:?} is used by two servers")]
    SharedRoute(String),
    #[error("insert stickiness needs a key")]
    NoKey,
    #[error("the sticky key has {0} bytes; at least {min} are needed", min = StickyConfig::MIN_KEY_BYTES)]
    ShortKey(usize),
    #[error("{0:?} is not a valid cookie or parameter name")]
    BadName(String),
    #[error("route {0:?} must be letters, digits, '-' and '_'")]
    BadRoute(String),
}

/// What [`StickyPolicy::on_request`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct StickyRequest {
    /// The index (in pool order) of the server the request is stuck to. In insert mode, only
    /// from a cookie that verified.
    pub server: Option<usize>,
    /// The request target (path and query) to forward instead of the received one: the route
    /// stripped from the session path parameter. `None`: unchanged.
    pub target: Option<String>,
}

impl StickyPolicy {
    /// `servers`: the pool's servers in config order. `key`: the HMAC key for insert mode (the
    /// caller resolves `StickyKey::Inline` / `StickyKey::File`); ignored by route-suffix. Errors
    /// (which config validation already rules out) are readable sentences.
    pub fn new(
        config: &StickyConfig,
        servers: &[ServerIdentity],
        key: Option<&[u8]>,
    ) -> Result<StickyPolicy, StickyError> {
        let mode = match config {
            StickyConfig::RouteSuffix {
                cookie,
                path_param,
                strip_route,
            } => {
                if cookie.is_none() && path_param.is_none() {
                    return Err(StickyError::NoSessionName);
                }
                for name in cookie.iter().chain(path_param) {
                    check_token(name)?;
                }
                let mut routes: Vec<String> = Vec::with_capacity(servers.len());
                for (index, server) in servers.iter().enumerate() {
                    let Some(route) = &server.route else {
                        return Err(StickyError::NoRoute {
                            server: server.stable_id.clone(),
                            index,
                        });
                    };
                    check_route(route)?;
                    if routes.contains(route) {
                        return Err(StickyError::SharedRoute(route.clone()));
                    }
                    routes.push(route.clone());
                }
                Mode::RouteSuffix {
                    cookie: cookie.clone(),
                    path_param: path_param.clone(),
                    strip_route: *strip_route,
                    routes,
                }
            }
            StickyConfig::Insert { cookie, .. } => {
                check_token(cookie)?;
                let key = key.ok_or(StickyError::NoKey)?;
                if key.len() < StickyConfig::MIN_KEY_BYTES {
                    return Err(StickyError::ShortKey(key.len()));
                }
                for server in servers {
                    if let Some(route) = &server.route {
                        check_route(route)?;
                    }
                }
                Mode::Insert {
                    cookie: cookie.clone(),
                    signer: Signer::new(key, servers),
                }
            }
        };
        Ok(StickyPolicy { mode })
    }

    /// Request side: the server the request is stuck to, and with route-suffix and
    /// `strip_route` the request as the app must see it: the route stripped from the session
    /// cookie in `headers` (every Cookie field; other cookies byte for byte) and from the path
    /// parameter in `target` (returned in [`StickyRequest::target`]). Insert mode removes its
    /// cookie from `headers`.
    pub fn on_request(&self, headers: &mut HeaderMap, target: &str) -> StickyRequest {
        match &self.mode {
            Mode::RouteSuffix {
                cookie,
                path_param,
                strip_route,
                routes,
            } => {
                let mut stuck = StickyRequest::default();
                if let Some(name) = path_param {
                    let values = path_param::values(target, name);
                    stuck.server = values
                        .iter()
                        .map(|range| &target[range.clone()])
                        .find(|value| !value.is_empty())
                        .and_then(|value| route_of(routes, value.as_bytes()))
                        .map(|(_, server)| server);
                    if *strip_route {
                        let edits: Vec<_> = values
                            .into_iter()
                            .filter_map(|range| {
                                let (base, _) = route_of(routes, target[range.clone()].as_bytes())?;
                                let stripped = &target[range.start..range.start + base];
                                Some((range, stripped))
                            })
                            .collect();
                        if !edits.is_empty() {
                            stuck.target = Some(path_param::splice(target, &edits));
                        }
                    }
                }
                if let Some(name) = cookie {
                    let from_cookie = headers
                        .get_all(COOKIE)
                        .iter()
                        .flat_map(|field| cookie::values(field.as_bytes(), name.as_bytes()))
                        .find(|value| !value.is_empty())
                        .and_then(|value| route_of(routes, value))
                        .map(|(_, server)| server);
                    stuck.server = stuck.server.or(from_cookie);
                    if *strip_route {
                        edit_cookies(headers, name, |value| match route_of(routes, value) {
                            Some((base, _)) => Edit::Replace(value[..base].to_vec()),
                            None => Edit::Keep,
                        });
                    }
                }
                stuck
            }
            Mode::Insert { cookie, signer } => {
                let server = headers
                    .get_all(COOKIE)
                    .iter()
                    .flat_map(|field| cookie::values(field.as_bytes(), cookie.as_bytes()))
                    .find_map(|value| signer.verify(value));
                edit_cookies(headers, cookie, |_| Edit::Remove);
                StickyRequest {
                    server,
                    target: None,
                }
            }
        }
    }

    /// Response side, after the server at index `served` answered the request `request`
    /// describes. Route-suffix with `strip_route`: the session cookie's Set-Cookie fields get
    /// `.ROUTE` of `served`. Insert: a Set-Cookie sticking the client to `served` is appended
    /// unless the request already carried a valid one for it. `https`: the client's scheme
    /// (Secure). `public_prefix`: where the route is mounted for the client ("" or "/app"; a
    /// trailing '/' is ignored), the cookie's Path.
    pub fn on_response(
        &self,
        headers: &mut HeaderMap,
        request: &StickyRequest,
        served: usize,
        https: bool,
        public_prefix: &str,
    ) {
        match &self.mode {
            Mode::RouteSuffix {
                cookie: Some(name),
                strip_route: true,
                routes,
                ..
            } => {
                let Some(route) = routes.get(served) else {
                    return;
                };
                edit_fields(headers, SET_COOKIE, |field| {
                    let set = SetCookie::parse(field)?;
                    if set.name != name.as_bytes() || set.is_deletion() {
                        return None;
                    }
                    let value = &field[set.value.clone()];
                    let base = match route_of(routes, value) {
                        Some((_, server)) if server == served => return None,
                        Some((base, _)) => &value[..base],
                        None => value,
                    };
                    let mut rewritten = Vec::with_capacity(field.len() + route.len() + 1);
                    rewritten.extend_from_slice(&field[..set.value.start]);
                    rewritten.extend_from_slice(base);
                    rewritten.push(b'.');
                    rewritten.extend_from_slice(route.as_bytes());
                    rewritten.extend_from_slice(&field[set.value.end..]);
                    Some(rewritten)
                });
            }
            Mode::RouteSuffix { .. } => {}
            Mode::Insert { cookie, signer } => {
                if request.server == Some(served) {
                    return;
                }
                let Some(value) = signer.value(served) else {
                    return;
                };
                let path = cookie_path(public_prefix);
                let secure = if https { "; Secure" } else { "" };
                let field =
                    format!("{cookie}={value}; Path={path}; HttpOnly; SameSite=Lax{secure}");
                if let Ok(field) = HeaderValue::from_str(&field) {
                    headers.append(SET_COOKIE, field);
                }
            }
        }
    }
}

/// The route a session value carries: (length of the value without `.ROUTE`, server index).
/// `None` without a '.' or when the suffix is no route of the pool.
fn route_of(routes: &[String], value: &[u8]) -> Option<(usize, usize)> {
    let dot = value.iter().rposition(|&b| b == b'.')?;
    let suffix = &value[dot + 1..];
    let server = routes.iter().position(|route| route.as_bytes() == suffix)?;
    Some((dot, server))
}

/// Applies `edit` to cookie `name` in every Cookie field; a field left empty is dropped.
fn edit_cookies(headers: &mut HeaderMap, name: &str, mut edit: impl FnMut(&[u8]) -> Edit) {
    edit_fields(headers, COOKIE, |field| {
        cookie::edit_field(field, name.as_bytes(), &mut edit)
    });
}

/// Rewrites every field named `header`, in order: `rewrite` returns the new bytes (empty: drop
/// the field) or `None` to keep it. Fields are re-inserted only when one changed; one that
/// would not be a valid header value stays as it was.
fn edit_fields(
    headers: &mut HeaderMap,
    header: HeaderName,
    mut rewrite: impl FnMut(&[u8]) -> Option<Vec<u8>>,
) {
    let mut changed = false;
    let fields: Vec<Option<HeaderValue>> = headers
        .get_all(&header)
        .iter()
        .map(|field| match rewrite(field.as_bytes()) {
            None => Some(field.clone()),
            Some(bytes) => {
                changed = true;
                if bytes.is_empty() {
                    None
                } else {
                    Some(HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| field.clone()))
                }
            }
        })
        .collect();
    if !changed {
        return;
    }
    headers.remove(&header);
    for field in fields.into_iter().flatten() {
        headers.append(header.clone(), field);
    }
}

/// The insert cookie's Path for a public prefix: the prefix without trailing '/', or "/" when
/// there is none or it could not be written safely in a Set-Cookie (RFC 6265 §4.1.1: no ';' or
/// controls).
fn cookie_path(public_prefix: &str) -> &str {
    let path = public_prefix.trim_end_matches('/');
    let safe =
        path.starts_with('/') && path.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';');
    if safe { path } else { "/" }
}

/// A cookie or parameter name must be an HTTP token (RFC 9110 §5.6.2).
fn check_token(name: &str) -> Result<(), StickyError> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(StickyError::BadName(name.to_string()));
    }
    Ok(())
}

/// A route is letters, digits, '-' and '_': never a '.', so it is always the whole suffix.
fn check_route(route: &str) -> Result<(), StickyError> {
    if route.is_empty()
        || !route
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(StickyError::BadRoute(route.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
