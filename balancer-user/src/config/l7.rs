//! The validated shape of the L7 proxy's config: `[proxy]`, `[[listener]]`, `[[route]]` and
//! `[pool.NAME]`. Plain values only; `validate` builds them and enforces the rules documented on
//! each field. File paths are absolute here: relative paths in the file are resolved against the
//! directory of the config file.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;

use super::{TrustedHeader, UnderscorePolicy};

/// `[proxy]`: settings of the proxy process as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// `access_log = "combined" | "json" | "off"` (default "combined"; "text" is an alias of
    /// "combined").
    pub access_log: AccessLogFormat,
    /// `access_log_file`: where access-log lines go, buffered (written at 64 KiB pending or
    /// every second, flushed on exit) and reopened on SIGUSR1. `None`: lines go to the
    /// process log (stderr) through tracing, target `access`.
    pub access_log_file: Option<PathBuf>,
    /// `state_file`: where the operator state of pool servers (drained, disabled) is kept, so
    /// that a restart keeps it as the pinned maps keep the VIP backends'. Written on each
    /// change through the admin API, read at start. `None`: a restart starts them enabled.
    pub state_file: Option<PathBuf>,
    /// `upgrade_socket`: the unix socket `balancer upgrade` (or SIGUSR2) takes the listeners
    /// over through. `None`: [`ProxySettings::DEFAULT_UPGRADE_SOCKET`], given up with a warning
    /// when another running balancer holds it (an explicit path held so is an error).
    pub upgrade_socket: Option<PathBuf>,
    /// `shutdown_timeout`: how long SIGTERM waits for in-flight requests (default 30s,
    /// 0s to 1h).
    pub shutdown_timeout: Duration,
    /// `workers`: how many threads serve client connections, each a single-threaded runtime
    /// with its own idle upstream connections (0 to 1024; `None`: one per CPU; 0: the main,
    /// work-stealing runtime serves them). Fixed at start: a reload keeps the running count.
    pub workers: Option<usize>,
    /// `temp_dir`: where request and response bodies larger than their memory buffer spill,
    /// into unlinked files (nothing is left behind, even after a crash). `None`: the system's
    /// temporary directory (`$TMPDIR`, else /tmp).
    pub temp_dir: Option<PathBuf>,
    /// `body_buffer` (default 64 KiB): the part of a buffered request body kept in memory;
    /// the rest goes to a temporary file (up to the route's `max_body_size`).
    pub body_buffer: u64,
    /// `response_buffer` (default 256 KiB): the part of a buffered response kept in memory
    /// while the client reads it; the rest goes to a temporary file.
    pub response_buffer: u64,
    /// `max_response_buffer` (default 1 GiB): the most of one response held (memory and file)
    /// for a slow client; past it the server is read only as fast as the client reads.
    pub max_response_buffer: u64,
    /// `request_id` (default true): every request gets an `X-Request-ID` (kept from a trusted
    /// proxy when well-formed, else a new UUIDv7), sent to the server, echoed in the response
    /// and written in the access log (headers/request_id.rs). false: the field is left alone.
    pub request_id: bool,
}

impl ProxySettings {
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_BODY_BUFFER: u64 = 64 * 1024;
    pub const DEFAULT_RESPONSE_BUFFER: u64 = 256 * 1024;
    pub const DEFAULT_MAX_RESPONSE_BUFFER: u64 = 1 << 30;
    pub const DEFAULT_UPGRADE_SOCKET: &'static str = "/run/balancer/upgrade.sock";

    /// The number of worker threads: configured, else one per CPU.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// The upgrade socket's path, configured or default.
    pub fn upgrade_socket_path(&self) -> &std::path::Path {
        self.upgrade_socket
            .as_deref()
            .unwrap_or(std::path::Path::new(Self::DEFAULT_UPGRADE_SOCKET))
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            access_log: AccessLogFormat::Combined,
            access_log_file: None,
            state_file: None,
            upgrade_socket: None,
            shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
            workers: None,
            temp_dir: None,
            body_buffer: Self::DEFAULT_BODY_BUFFER,
            response_buffer: Self::DEFAULT_RESPONSE_BUFFER,
            max_response_buffer: Self::DEFAULT_MAX_RESPONSE_BUFFER,
            request_id: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// nginx's `combined` format exactly, then the proxy's own fields (host, route,
    /// upstream, duration) at the end of the line.
    #[default]
    Combined,
    /// One JSON object per request.
    Json,
    Off,
}

/// `[[listener]]`: one bound socket that accepts client connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Unique among listeners; letters, digits, '-', '_', '.'.
    pub name: String,
    /// `bind = "0.0.0.0:443"` or `"[::]:443"`; unique among listeners (and not `admin.listen`).
    pub bind: SocketAddr,
    /// `None`: plain HTTP.
    pub tls: Option<TlsConfig>,
    /// `redirect_https = true` (plain listeners only): every request gets a 301 to
    /// `https://host[:https_port]/path?query` instead of being routed.
    pub redirect_https: bool,
    /// `https_port` (default 443; only with `redirect_https = true`): the port put in the
    /// redirect (omitted when 443).
    pub https_port: u16,
    /// `header_read_timeout` (default 10s, above 0 and at most 1h): a client must send a
    /// request's whole header within it, or the connection is closed (slowloris).
    pub header_read_timeout: Duration,
    /// `keepalive_timeout` (default 75s, above 0 and at most 1h): an idle client connection is
    /// closed after it.
    pub keepalive_timeout: Duration,
    /// `max_header_bytes` (default 32 KiB, 8 KiB to 1 MiB): larger request headers get 431.
    pub max_header_bytes: usize,
    /// `max_headers` (default 100, 1 to 1000): more request header fields get 431.
    pub max_headers: usize,
    /// `max_connections` (default 10 000, 1 to 1 000 000): client connections open at once;
    /// beyond it new connections wait in the kernel's accept queue.
    pub max_connections: usize,
    /// `trusted_proxies = ["198.18.5.0/24", "2001:2::/48"]` (CIDRs or single addresses): peers
    /// whose forwarded headers are read. Requires `trusted_headers`.
    pub trusted_proxies: Vec<IpNet>,
    /// `trusted_headers = ["X-Forwarded-For", "X-Forwarded-Proto"]`: the one header per group
    /// (client address, scheme, host, port, prefix) read from trusted proxies; `"Forwarded"`
    /// stands for `Forwarded:for`, `Forwarded:proto` and `Forwarded:host`. Requires
    /// `trusted_proxies`. Every other forwarded header is removed from every request.
    pub trusted_headers: Vec<TrustedHeader>,
    /// `underscore_headers = "drop" | "reject" | "allow"` (default "drop").
    pub underscore_headers: UnderscorePolicy,
    /// `allowed_hosts = ["www.example.test", "*.example.test"]`: requests for other hosts are
    /// refused with `disallowed_host_status`. Empty (the default, key absent): every host.
    pub allowed_hosts: Vec<HostPattern>,
    /// `disallowed_host_status = 421 | 400` (default 421; only with `allowed_hosts`).
    pub disallowed_host_status: u16,
    /// `identity_headers` (default `DEFAULT_IDENTITY_HEADERS`): removed from every request,
    /// trusted peer or not, since apps believe them as the authenticated user. Lowercase.
    pub identity_headers: Vec<String>,
    /// `emit_forwarded` (default true): send an RFC 7239 `Forwarded` header to servers beside
    /// the `X-Forwarded-*` ones.
    pub emit_forwarded: bool,
    /// `emit_x_real_ip` (default false): also send `X-Real-IP` with the client address.
    pub emit_x_real_ip: bool,
}

impl ListenerConfig {
    pub const DEFAULT_HTTPS_PORT: u16 = 443;
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
    pub const MIN_MAX_HEADER_BYTES: usize = 8 * 1024;
    pub const MAX_MAX_HEADER_BYTES: usize = 1024 * 1024;
    pub const DEFAULT_MAX_HEADERS: usize = 100;
    pub const MAX_MAX_HEADERS: usize = 1000;
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
    pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;
    pub const DEFAULT_DISALLOWED_HOST_STATUS: u16 = 421;
    /// Headers that front-end authentication proxies set for the app (Apache `REMOTE_USER`
    /// through `RequestHeader`, oauth2-proxy, nginx `auth_request`).
    pub const DEFAULT_IDENTITY_HEADERS: &[&str] = &[
        "remote-user",
        "x-remote-user",
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-groups",
    ];

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// `tls = { certificates = [ { cert, key }, ... ] }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// At least one. The certificate for a connection is chosen by SNI against each
    /// certificate's DNS SANs (exact names before wildcards; the first listed wins a tie); the
    /// first certificate is the default (no SNI, or no match).
    pub certificates: Vec<CertificatePaths>,
}

/// PEM files of one certificate chain (leaf first) and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[[route]]`: which requests of a listener go where. The most specific match wins: exact
/// host before `*.suffix` before no host, then the longest path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The label used in logs and metrics: `name` if given (letters, digits, '-', '_', '.'),
    /// else "route-<index>" (index in the file's `[[route]]` list). Unique among routes.
    pub name: String,
    /// `listener`: the listener's name (must exist, and not redirect every request with
    /// `redirect_https`). `None` (not written): every listener; on a listener that also has
    /// a route of its own for the same host and path, its own route wins.
    pub listener: Option<String>,
    /// `host`: `None` matches every host.
    pub host: Option<HostPattern>,
    /// `path` (default "/"): a prefix that starts with '/', without whitespace, control
    /// characters, '?', '#', or "." and ".." segments. No two routes have the same listener,
    /// host and path. A prefix ending in '/' also
    /// matches the path without that slash (which is then redirected, see `strip_prefix`).
    /// Matching is on whole segments: "/app" matches "/app" and "/app/x", not "/apple".
    pub path: String,
    /// `strip_prefix` (default false): forward `/prefix/x` as `/x`; a request for exactly the
    /// prefix without its trailing slash gets a 301 to the prefix with it.
    pub strip_prefix: bool,
    /// `pool` or `static_dir`: exactly one of them.
    pub target: RouteTarget,
    /// `preserve_host` (default true): forward the client's Host; false: the server's
    /// `host[:port]` from its URL.
    pub preserve_host: bool,
    /// `max_body_size` (default 16 MiB, at least 1 byte; an integer of bytes or a string with a
    /// unit B, KB, MB, GB, KiB, MiB or GiB, like "10MiB", "512KiB"):
    /// larger request bodies get 413.
    pub max_body_size: u64,
    /// `request_buffering` (default true): the whole request body is read from the client
    /// (memory up to `proxy.body_buffer`, then a temporary file) before a server is chosen,
    /// so a slow upload never holds a server's worker (nginx's `proxy_request_buffering`).
    /// false: the body is streamed to the server as it arrives (after a 64 KiB read-ahead),
    /// for large uploads and long polls.
    pub request_buffering: bool,
    /// `response_buffering` (default true): the server's response is read as fast as the
    /// server sends it (memory up to `proxy.response_buffer`, then a temporary file up to
    /// `proxy.max_response_buffer`), so the server is free while a slow client reads. Never
    /// for `text/event-stream` or a response with `X-Accel-Buffering: no`.
    pub response_buffering: bool,
    /// `client_body_timeout` (default 60s, above 0 and at most 1h): the longest gap between
    /// two reads of the request body; past it the client gets 408.
    pub client_body_timeout: Duration,
    /// `error_pages = { 502 = "errors/502.html" }`: status → file served instead of the default
    /// body (status 400 to 599). Checked before the pool's.
    pub error_pages: BTreeMap<u16, PathBuf>,
    /// `request_headers = { set = { NAME = "value" }, unset = ["NAME"] }`: applied last to the
    /// request sent to the server (after the forwarded headers are set, so `set` may override
    /// them).
    pub request_headers: HeaderEdits,
    /// `response_headers = { set = {...}, unset = [...] }`: applied last to the response sent
    /// to the client.
    pub response_headers: HeaderEdits,
    /// `rewrite_location` (default true): `Location`, `Content-Location`, `URI` and `Refresh`
    /// pointing at the server, or lacking the stripped prefix, are rewritten to the public URL
    /// (Apache ProxyPassReverse).
    pub rewrite_location: bool,
    /// `rewrite_cookie_path` (default true): `Set-Cookie` `Path` gets the stripped prefix and a
    /// `Domain` naming the server names the public host (ProxyPassReverseCookiePath/Domain).
    pub rewrite_cookie_path: bool,
    /// `rewrite_html` (default false): URLs of the server in HTML bodies are rewritten like
    /// `Location` (mod_proxy_html).
    pub rewrite_html: bool,
    /// `debug_headers` (default false): log each request's headers as received and as forwarded
    /// (target "debug_headers", info level; `Authorization` and cookies redacted).
    pub debug_headers: bool,
    /// `allow_encoded_slashes` (default false): forward paths with `%2F`, `%5C` or `\`.
    /// Refused (404) otherwise: a server that decodes them before splitting the path would
    /// see another path than the one routed (Apache's `AllowEncodedSlashes Off`).
    pub allow_encoded_slashes: bool,
    /// `rewrite_cookie_domain = { "app.internal" = "www.example.test" }` (Apache's
    /// `ProxyPassReverseCookieDomain internal public`): a `Set-Cookie` `Domain` equal to a key
    /// (case-insensitive, a leading dot kept) becomes its value, whatever
    /// `rewrite_cookie_path` says. Keys lowercase, in order.
    pub rewrite_cookie_domain: Vec<(String, String)>,
    /// `compress` (default false): gzip, br or zstd, as the client's `Accept-Encoding` prefers,
    /// for compressible types the server did not compress (proxy/compress.rs).
    pub compress: bool,
}

/// `set` and `unset` of `request_headers` / `response_headers`. Names lowercase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// In the file's order; each replaces every field of its name.
    pub set: Vec<(String, String)>,
    pub unset: Vec<String>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.unset.is_empty()
    }
}

impl RouteConfig {
    pub const DEFAULT_MAX_BODY_SIZE: u64 = 16 * 1024 * 1024;
    pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `host = "www.example.test"`, stored lowercase without a trailing dot; an IPv4 address
    /// as written, an IPv6 address in brackets in its canonical form ("[2001:db8::1]").
    Exact(String),
    /// `host = "*.example.test"`: stored as "example.test"; matches one or more labels before it
    /// ("a.example.test", "a.b.example.test"), not "example.test" itself.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// `pool = "NAME"` (must exist).
    Pool(String),
    /// `static_dir = "DIR"`: files below it, never outside it (the proxy checks that it is a
    /// directory; the config does not look).
    Static(PathBuf),
}

/// `[pool.NAME]`: servers that requests are balanced over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// NAME of `[pool.NAME]`: letters, digits, '-', '_', '.'.
    pub name: String,
    pub balance: Balance,
    /// At least one; each `url` once (compared normalized); at least one weight above 0.
    pub servers: Vec<ServerConfig>,
    pub keepalive: KeepaliveConfig,
    pub retry: RetryConfig,
    pub timeouts: PoolTimeouts,
    /// `h2c = true`: speak HTTP/2 without TLS to the servers (prior knowledge). Not with
    /// https:// servers (see `h2`).
    pub h2c: bool,
    /// `tls_ca_file`, `tls_server_name`, `tls_cert_file` + `tls_key_file`: how https:// servers
    /// are spoken to (only in a pool with at least one https:// server).
    pub tls: ServerTlsConfig,
    /// `h2 = true` (only with https:// servers): offer `h2` besides `http/1.1` by ALPN and
    /// speak HTTP/2 to a server that picks it; HTTP/1.1 to one that does not.
    pub h2: bool,
    /// Like `RouteConfig::error_pages`, used when the route has none for the status.
    pub error_pages: BTreeMap<u16, PathBuf>,
    /// `sticky = { mode = "route-suffix" | "insert", ... }`: keep a session on its server.
    pub sticky: Option<StickyConfig>,
    /// `health = { path, host, expect, interval, timeout, rise, fall, port, tls, tls_ca_file }`:
    /// active HTTP checks. Without it, servers are up unless passive checks eject them.
    pub health: Option<PoolHealthConfig>,
    /// `passive = { failures, window }`: ejection on consecutive failures.
    pub passive: PassiveHealthConfig,
    /// `slow_start` (default 0s = off, at most 1h): after a server comes (back) up, its weight
    /// ramps from 10% to 100% over this time.
    pub slow_start: Duration,
    /// `queue_timeout` (default 30s, 0s to 1h): how long a request waits for a server when
    /// every server it may use is at its `max_conns`; then 503 with `Retry-After`.
    pub queue_timeout: Duration,
    /// `on_down` (default "abort"): requests waiting for a server's response when checks mark
    /// it down get 502, or are retried elsewhere when that is safe (HAProxy's
    /// `on-marked-down shutdown-sessions`). "keep": they wait up to `timeouts.response`.
    pub on_down: OnDown,
}

/// `on_down`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnDown {
    #[default]
    Abort,
    Keep,
}

impl PoolConfig {
    pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
}

/// A pool's TLS settings for its https:// servers (also used by their health checks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerTlsConfig {
    /// `tls_ca_file = "PATH"` (PEM, read when the pool is built): the servers' certificates
    /// must chain to one of its certificates. `None`: the system's roots
    /// ([`ServerTlsConfig::SYSTEM_CA_BUNDLES`]).
    pub ca_file: Option<PathBuf>,
    /// `tls_server_name`: a DNS name or an IP address, sent as SNI (names only) and verified
    /// against the certificate. `None`: each server's URL host.
    pub server_name: Option<String>,
    /// `tls_cert_file` and `tls_key_file` (both or neither): the client certificate chain and
    /// its key (PEM) presented to servers that ask for one (mTLS).
    pub client_cert: Option<CertificatePaths>,
}

impl ServerTlsConfig {
    /// Where the system's CA bundle is looked for, in order, when `tls_ca_file` is not given:
    /// Debian and Ubuntu, Fedora and RHEL, then the BSDs', Alpine's and macOS's.
    pub const SYSTEM_CA_BUNDLES: &'static [&'static str] = &[
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ];
}

/// `sticky`: how a session is kept on its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyConfig {
    /// `mode = "route-suffix"` (Apache mod_proxy_balancer `stickysession`): the session id the
    /// app sets, in the cookie `cookie` and/or the URL path parameter `path_param`
    /// (`/x;jsessionid=VALUE.ROUTE`), carries `.ROUTE` (a server's `route`). Every server of the
    /// pool has a `route`.
    RouteSuffix {
        /// `cookie = "sessionid"` (an HTTP token).
        cookie: Option<String>,
        /// `path_param = "jsessionid"` (an HTTP token).
        path_param: Option<String>,
        /// `strip_route` (default true): the proxy appends `.ROUTE` to the cookie the app sets
        /// and strips it from requests, so the app sees its own value. false: the app itself
        /// writes `value.route` (Tomcat's jvmRoute) and sees it.
        strip_route: bool,
    },
    /// `mode = "insert"`: the proxy sets its own cookie holding an HMAC-signed server id
    /// (HttpOnly, Secure on https, SameSite=Lax, Path = the route's public prefix or "/").
    Insert {
        /// `cookie` (default "balancer_sticky").
        cookie: String,
        /// `key = "..."` (at least 16 bytes) or `key_file = "PATH"` (its content, trimmed,
        /// at least 16 bytes; read when the config is loaded): exactly one of them.
        key: StickyKey,
    },
}

impl StickyConfig {
    pub const DEFAULT_INSERT_COOKIE: &'static str = "balancer_sticky";
    pub const MIN_KEY_BYTES: usize = 16;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    Inline(String),
    File(PathBuf),
}

/// `health = { ... }` of a pool: an HTTP GET per server every `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHealthConfig {
    /// `path` (required): origin-form, starting with '/'.
    pub path: String,
    /// `host`: the Host header (so Django's ALLOWED_HOSTS accepts it); default the server's
    /// `host[:port]` ("localhost" for unix sockets).
    pub host: Option<String>,
    /// `expect = [200, 204]` (statuses 100 to 599); empty (default): any 2xx or 3xx.
    pub expect: Vec<u16>,
    /// `interval` (default 2s, 100ms to 1h).
    pub interval: Duration,
    /// `timeout` (default 1s, above 0, at most `interval`).
    pub timeout: Duration,
    /// `rise` (default 2, 1 to 100): passes that bring a down server up.
    pub rise: u32,
    /// `fall` (default 3, 1 to 100): failures that take an up server down.
    pub fall: u32,
    /// `port` (1 to 65535): the checks connect to the server's host at this port instead of
    /// its url's (HAProxy `check port`). Only with http:// servers.
    pub port: Option<u16>,
    /// `tls = true`: the checks speak TLS (HTTP/1.1 inside), for a server whose health is on
    /// an HTTPS port. Only with http:// servers.
    pub tls: Option<HealthTls>,
}

/// `tls = true` of a pool's `health`, with its `tls_ca_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTls {
    /// `tls_ca_file = "PATH"` (PEM, read when the pool is built): the server's certificate
    /// must chain to it and name the check's host. Without it the certificate is NOT verified
    /// (HAProxy `verify none`): the check only proves the server answers TLS and HTTP.
    pub ca_file: Option<PathBuf>,
}

/// `passive = { failures, window }`: `failures` consecutive connect errors or 5xx answers of a
/// server within `window` eject it for `retry.after_failure`; with active checks it comes back
/// when a check passes after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealthConfig {
    /// `failures` (default 5, 0 = passive checks off, at most 1000).
    pub failures: u32,
    /// `window` (default 10s, above 0, at most 1h).
    pub window: Duration,
}

impl Default for PassiveHealthConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            window: Duration::from_secs(10),
        }
    }
}

/// `balance = "round-robin" | "least-conn" | "p2c" | "hash"`, with `hash_on` for "hash".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round-robin (nginx's).
    RoundRobin,
    /// Fewest in-flight requests relative to weight.
    LeastConn,
    /// Power of two choices on in-flight requests.
    P2c,
    /// Consistent hash of `hash_on`.
    Hash(HashOn),
}

/// `hash_on = "client" | "header:NAME" | "cookie:NAME"` (default "client").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    ClientAddress,
    /// Header name (an HTTP token), lowercase.
    Header(String),
    /// Cookie name (an HTTP token), as written.
    Cookie(String),
}

/// One entry of `servers = [ { url, weight, route } ]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `url = "http://host:port"` (port default 80, no path) or `"unix:/path"` (absolute).
    pub url: ServerUrl,
    /// `weight` (default 1, 0 to 1000). 0: configured but gets no requests.
    pub weight: u32,
    /// `route`: the sticky-session route id (used by sticky sessions): letters, digits, '-' and
    /// '_'; unique in the pool.
    pub route: Option<String>,
    /// `state = "enabled" | "draining" | "disabled"` (default "enabled"): the operator state a
    /// server starts in, when the process starts or a reload adds it (Apache's `status=+N` /
    /// `+D`). A server already running keeps what the operator set; `proxy.state_file`, when
    /// it holds the server, wins at start.
    pub state: InitialState,
    /// `backup = true`: the server gets new requests only when no other server of the pool
    /// can take them (all down, drained, disabled or at weight 0), as HAProxy's and nginx's
    /// `backup` (Apache's `status=+H`). Sessions already on it stay while it is up.
    pub backup: bool,
    /// `max_conns` (default 0 = no limit, at most 100 000): requests in flight to the server
    /// at once, and open connections to it (idle ones included), never exceed it (HAProxy's
    /// `maxconn`). Requests beyond it wait in the pool's queue (`queue_timeout`).
    pub max_conns: u32,
}

/// A server's operator state as configured (`state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum InitialState {
    #[default]
    Enabled,
    Draining,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerUrl {
    /// `http://host:port`: host is a name (lowercase) or an IP literal (IPv6 without brackets
    /// here).
    Http { host: String, port: u16 },
    /// `https://host:port` (port default 443): as `Http`, spoken to over TLS with the pool's
    /// `tls_*` settings.
    Https { host: String, port: u16 },
    /// `unix:/path`: absolute, without "." components or repeated '/', at most 107 bytes.
    Unix(PathBuf),
}

impl ServerUrl {
    /// The `Host` header value to send when `preserve_host = false`: "host:port" (":80"
    /// omitted, IPv6 in brackets); "localhost" for a unix socket.
    pub fn authority(&self) -> String {
        match self {
            ServerUrl::Http { host, port } | ServerUrl::Https { host, port } => {
                crate::http::authority::format(host, *port, self.default_port())
            }
            ServerUrl::Unix(_) => "localhost".to_string(),
        }
    }

    /// The host and port of an http:// or https:// URL.
    pub fn host_port(&self) -> Option<(&str, u16)> {
        match self {
            ServerUrl::Http { host, port } | ServerUrl::Https { host, port } => Some((host, *port)),
            ServerUrl::Unix(_) => None,
        }
    }

    pub fn is_https(&self) -> bool {
        matches!(self, ServerUrl::Https { .. })
    }

    /// The port a URL of this scheme has when it names none.
    fn default_port(&self) -> u16 {
        if self.is_https() { 443 } else { 80 }
    }
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerUrl::Http { host, port } if host.contains(':') => {
                write!(f, "http://[{host}]:{port}")
            }
            ServerUrl::Http { host, port } => write!(f, "http://{host}:{port}"),
            ServerUrl::Https { host, port } if host.contains(':') => {
                write!(f, "https://[{host}]:{port}")
            }
            ServerUrl::Https { host, port } => write!(f, "https://{host}:{port}"),
            ServerUrl::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `keepalive = { reuse, idle_timeout, max_idle }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// `reuse` (default true). false: one connection per request (Apache disablereuse=On).
    pub reuse: bool,
    /// `idle_timeout` (default 60s, above 0 and at most 1h): an idle upstream connection is
    /// closed after it (Apache ttl).
    pub idle_timeout: Duration,
    /// `max_idle` (0 to 10 000): idle connections kept per server and worker at most. The
    /// default,
    /// [`KeepaliveConfig::DEFAULT_MAX_IDLE`], is a cap high enough to follow demand: every
    /// connection that a burst of concurrent requests opened goes back to the idle list, the
    /// newest is reused first, and the ones the load no longer needs close after
    /// `idle_timeout`. So a pool keeps as many idle connections as recent peak concurrency
    /// needed and never opens and closes connections under steady load (a cap of 32 closed
    /// every connection beyond 32 as it came back: 46 % new connections at 64 clients).
    pub max_idle: usize,
}

impl KeepaliveConfig {
    pub const DEFAULT_MAX_IDLE: usize = 4096;
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        Self {
            reuse: true,
            idle_timeout: Duration::from_secs(60),
            max_idle: Self::DEFAULT_MAX_IDLE,
        }
    }
}

/// `retry = { after_failure, methods, budget }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// `after_failure` (default 5s, 0s to 1h): a server whose connect failed is skipped this
    /// long (Apache retry=).
    pub after_failure: Duration,
    /// `methods` (default GET, HEAD, OPTIONS; uppercase method tokens): requests whose
    /// connection failed after they were sent, before any response byte, go to another
    /// server once, when their body can be sent again. Only idempotent methods belong here
    /// (RFC 9110 §9.2.2). A request that never reached a server (a failed connect) is
    /// retried whatever its method.
    pub methods: Vec<String>,
    /// `budget` (default 0.2, 0 to 1): retries are at most this share of the pool's recent
    /// requests (the last 10 s), so retries cannot multiply an outage (Envoy's and Linkerd's
    /// retry budgets). A floor of a few retries per second keeps a quiet pool retrying.
    /// Stored in thousandths.
    pub budget_permille: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            after_failure: Duration::from_secs(5),
            methods: ["GET", "HEAD", "OPTIONS"].map(String::from).to_vec(),
            budget_permille: 200,
        }
    }
}

/// `timeouts = { connect, response, websocket_idle }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolTimeouts {
    /// `connect` (default 3s, above 0 and at most 1h): TCP/unix connect to a server, with the
    /// TLS handshake of an https:// server (and the HTTP/2 handshake of h2c or ALPN h2).
    pub connect: Duration,
    /// `response` (default 60s, above 0 and at most 1h): from the request sent until the
    /// response header arrives, and the longest pause between two reads of the response body.
    pub response: Duration,
    /// `websocket_idle` (default 300s, above 0 and at most 24h): an upgraded tunnel with no
    /// bytes either way is closed.
    pub websocket_idle: Duration,
}

impl Default for PoolTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            response: Duration::from_secs(60),
            websocket_idle: Duration::from_secs(300),
        }
    }
}

/// The L7 part of the config, as held by `Config`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L7Config {
    pub proxy: ProxySettings,
    pub listeners: Vec<ListenerConfig>,
    /// In file order.
    pub routes: Vec<RouteConfig>,
    /// Sorted by name.
    pub pools: Vec<PoolConfig>,
}
