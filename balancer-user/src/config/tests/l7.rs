//! The L7 proxy's tables: `[proxy]`, `[[listener]]`, `[[route]]` and `[pool.NAME]`. As in the
//! parent module, every error's text is pinned word for word.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::{IntoDeserializer, value::StrDeserializer};

use super::{ORIGIN, XDP, assert_error, local_vip, parse};
use crate::config::{
    AccessLogFormat, Balance, CertificatePaths, Config, HashOn, HeaderEdits, HealthTls,
    HostPattern, InitialState, KeepaliveConfig, L7Config, ListenerConfig, OnDown,
    PassiveHealthConfig, PoolConfig, PoolHealthConfig, PoolTimeouts, ProxySettings, RetryConfig,
    RouteConfig, RouteTarget, ServerConfig, ServerTlsConfig, ServerUrl, StickyConfig, StickyKey,
    TlsConfig, TrustedHeader, UnderscorePolicy,
    de::{AccessLog, BalanceKind, Keyword, StickyMode, Underscore},
};

/// The directory relative paths are resolved against in `parse_in`.
const BASE: &str = "/etc/balancer";

/// A plain listener "http" on 0.0.0.0:80 (lines 1-3).
const LISTENER: &str = "[[listener]]\nname = \"http\"\nbind = \"0.0.0.0:80\"\n";

/// A pool "app" with one server (lines 1-2).
const POOL: &str = "[pool.app]\nservers = [{ url = \"http://198.18.1.2:8000\" }]\n";

fn parse_in(text: &str) -> Config {
    Config::parse_in(text, ORIGIN, Path::new(BASE))
        .unwrap_or_else(|err| panic!("expected this config to parse:\n{text}\nbut got: {err}"))
}

/// `LISTENER`, `POOL` and a route of the listener to the pool, followed by `rest` (on line 9).
fn route_with(rest: &str) -> String {
    format!("{LISTENER}{POOL}[[route]]\nlistener = \"http\"\npool = \"app\"\n{rest}")
}

/// `LISTENER` followed by `rest` (on line 4).
fn listener_with(rest: &str) -> String {
    format!("{LISTENER}{rest}")
}

/// A pool "app" whose table goes on with `rest` (on line 2, `servers` not included).
fn pool_with(rest: &str) -> String {
    format!("[pool.app]\n{rest}")
}

/// A pool "app" with `servers = [ {servers} ]` on line 2.
fn pool_servers(servers: &str) -> String {
    pool_with(&format!("servers = [{servers}]\n"))
}

fn path(text: &str) -> PathBuf {
    PathBuf::from(text)
}

fn https(host: &str, port: u16) -> ServerUrl {
    ServerUrl::Https {
        host: host.to_string(),
        port,
    }
}

fn http(host: &str, port: u16) -> ServerUrl {
    ServerUrl::Http {
        host: host.to_string(),
        port,
    }
}

fn server(url: ServerUrl, weight: u32, route: Option<&str>) -> ServerConfig {
    ServerConfig {
        url,
        weight,
        route: route.map(str::to_string),
        state: InitialState::Enabled,
        backup: false,
        max_conns: 0,
    }
}

// ---- Good configs ------------------------------------------------------------------------------

#[test]
fn no_l7_tables_means_an_empty_l7_config() {
    for text in ["", "[admin]\n", XDP] {
        assert_eq!(parse(text).l7, L7Config::default(), "for {text:?}");
    }
    assert_eq!(parse("[proxy]\n").l7, L7Config::default());
}

#[test]
fn full_l7_config_parses_every_field() {
    let text = r#"
[admin]
listen = "127.0.0.1:9100"

[proxy]
access_log = "json"
access_log_file = "logs/access.log"
state_file = "/var/lib/balancer/state.json"
upgrade_socket = "/run/balancer/up.sock"
workers = 3
request_id = false
shutdown_timeout = "1m"
temp_dir = "spool"
body_buffer = "16KiB"
response_buffer = 1048576
max_response_buffer = "2GiB"

[[listener]]
name = "http"
bind = "0.0.0.0:80"
redirect_https = true
https_port = 8443

[[listener]]
name = "https"
bind = "[::]:443"
tls = { certificates = [ { cert = "certs/site.pem", key = "./certs//site.key" }, { cert = "/etc/ssl/other.pem", key = "/etc/ssl/private/other.key" } ] }
header_read_timeout = "5s"
keepalive_timeout = "2m"
max_header_bytes = 65536
max_headers = 200
max_connections = 50000

[[listener]]
name = "internal"
bind = "127.0.0.1:8080"
redirect_https = false

[[route]]
name = "webapps"
listener = "https"
host = "WWW.Example.Test."
path = "/webapps/"
strip_prefix = true
pool = "django"
preserve_host = false
max_body_size = "10MiB"
error_pages = { 502 = "errors/502.html", 503 = "/srv/errors/503.html" }
request_buffering = false
response_buffering = false
client_body_timeout = "15s"
compress = true

[[route]]
listener = "https"
host = "*.Example.test"
static_dir = "static/"

[[route]]
listener = "internal"
host = "[2001:DB8:0::1]"
path = "/metrics"
pool = "api"
max_body_size = 1024

[pool.django]
balance = "hash"
hash_on = "header:X-User-ID"
servers = [
  { url = "http://198.18.1.2:8000", route = "http-1", max_conns = 4 },
  { url = "unix:/run/app.sock", weight = 0, route = "http-2" },
  { url = "HTTP://[2001:DB8::2]:8000/", weight = 1000 },
]
keepalive = { reuse = false, idle_timeout = "120s", max_idle = 0 }
retry = { after_failure = "0s", methods = ["GET", "PUT", "GET"], budget = 0.5 }
timeouts = { connect = "1s", response = "30s", websocket_idle = "24h" }
h2c = true
queue_timeout = "5s"
on_down = "keep"

error_pages = { 504 = "errors/504.html" }

[pool.api]
balance = "p2c"
servers = [ { url = "http://API.internal" } ]
"#;
    let config = parse_in(text);
    assert!(config.xdp.is_none(), "the proxy runs without [xdp]");
    assert!(config.vips.is_empty());

    let listener = |name: &str, bind: &str| ListenerConfig {
        name: name.to_string(),
        bind: bind.parse().expect("a socket address"),
        tls: None,
        redirect_https: false,
        https_port: 443,
        header_read_timeout: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(75),
        max_header_bytes: 32 * 1024,
        max_headers: 100,
        max_connections: 10_000,
        trusted_proxies: Vec::new(),
        trusted_headers: Vec::new(),
        underscore_headers: UnderscorePolicy::Drop,
        allowed_hosts: Vec::new(),
        disallowed_host_status: 421,
        identity_headers: ListenerConfig::DEFAULT_IDENTITY_HEADERS
            .iter()
            .map(ToString::to_string)
            .collect(),
        emit_forwarded: true,
        emit_x_real_ip: false,
    };
    let expected = L7Config {
        proxy: ProxySettings {
            access_log: AccessLogFormat::Json,
            access_log_file: Some(path("/etc/balancer/logs/access.log")),
            state_file: Some(path("/var/lib/balancer/state.json")),
            upgrade_socket: Some(path("/run/balancer/up.sock")),
            shutdown_timeout: Duration::from_secs(60),
            workers: Some(3),
            temp_dir: Some(path("/etc/balancer/spool")),
            body_buffer: 16 * 1024,
            response_buffer: 1 << 20,
            max_response_buffer: 2 << 30,
            request_id: false,
        },
        listeners: vec![
            ListenerConfig {
                redirect_https: true,
                https_port: 8443,
                ..listener("http", "0.0.0.0:80")
            },
            ListenerConfig {
                tls: Some(TlsConfig {
                    certificates: vec![
                        CertificatePaths {
                            cert: path("/etc/balancer/certs/site.pem"),
                            key: path("/etc/balancer/certs/site.key"),
                        },
                        CertificatePaths {
                            cert: path("/etc/ssl/other.pem"),
                            key: path("/etc/ssl/private/other.key"),
                        },
                    ],
                }),
                header_read_timeout: Duration::from_secs(5),
                keepalive_timeout: Duration::from_secs(120),
                max_header_bytes: 65_536,
                max_headers: 200,
                max_connections: 50_000,
                ..listener("https", "[::]:443")
            },
            listener("internal", "127.0.0.1:8080"),
        ],
        routes: vec![
            RouteConfig {
                name: "webapps".to_string(),
                listener: Some("https".to_string()),
                host: Some(HostPattern::Exact("www.example.test".to_string())),
                path: "/webapps/".to_string(),
                strip_prefix: true,
                target: RouteTarget::Pool("django".to_string()),
                preserve_host: false,
                max_body_size: 10 * 1024 * 1024,
                request_buffering: false,
                response_buffering: false,
                client_body_timeout: Duration::from_secs(15),
                error_pages: BTreeMap::from([
                    (502, path("/etc/balancer/errors/502.html")),
                    (503, path("/srv/errors/503.html")),
                ]),
                request_headers: HeaderEdits::default(),
                response_headers: HeaderEdits::default(),
                rewrite_location: true,
                rewrite_cookie_path: true,
                rewrite_html: false,
                debug_headers: false,
                allow_encoded_slashes: false,
                rewrite_cookie_domain: Vec::new(),
                compress: true,
            },
            RouteConfig {
                name: "route-1".to_string(),
                listener: Some("https".to_string()),
                host: Some(HostPattern::Suffix("example.test".to_string())),
                path: "/".to_string(),
                strip_prefix: false,
                target: RouteTarget::Static(path("/etc/balancer/static")),
                preserve_host: true,
                max_body_size: 16 * 1024 * 1024,
                request_buffering: true,
                response_buffering: true,
                client_body_timeout: Duration::from_secs(60),
                error_pages: BTreeMap::new(),
                request_headers: HeaderEdits::default(),
                response_headers: HeaderEdits::default(),
                rewrite_location: true,
                rewrite_cookie_path: true,
                rewrite_html: false,
                debug_headers: false,
                allow_encoded_slashes: false,
                rewrite_cookie_domain: Vec::new(),
                compress: false,
            },
            RouteConfig {
                name: "route-2".to_string(),
                listener: Some("internal".to_string()),
                host: Some(HostPattern::Exact("[2001:db8::1]".to_string())),
                path: "/metrics".to_string(),
                strip_prefix: false,
                target: RouteTarget::Pool("api".to_string()),
                preserve_host: true,
                max_body_size: 1024,
                request_buffering: true,
                response_buffering: true,
                client_body_timeout: Duration::from_secs(60),
                error_pages: BTreeMap::new(),
                request_headers: HeaderEdits::default(),
                response_headers: HeaderEdits::default(),
                rewrite_location: true,
                rewrite_cookie_path: true,
                rewrite_html: false,
                debug_headers: false,
                allow_encoded_slashes: false,
                rewrite_cookie_domain: Vec::new(),
                compress: false,
            },
        ],
        // Sorted by name.
        pools: vec![
            PoolConfig {
                name: "api".to_string(),
                balance: Balance::P2c,
                servers: vec![server(http("api.internal", 80), 1, None)],
                keepalive: KeepaliveConfig::default(),
                retry: RetryConfig::default(),
                timeouts: PoolTimeouts::default(),
                h2c: false,
                tls: ServerTlsConfig::default(),
                h2: false,
                error_pages: BTreeMap::new(),
                sticky: None,
                health: None,
                passive: PassiveHealthConfig::default(),
                slow_start: Duration::ZERO,
                queue_timeout: Duration::from_secs(30),
                on_down: OnDown::Abort,
            },
            PoolConfig {
                name: "django".to_string(),
                balance: Balance::Hash(HashOn::Header("x-user-id".to_string())),
                servers: vec![
                    ServerConfig {
                        max_conns: 4,
                        ..server(http("198.18.1.2", 8000), 1, Some("http-1"))
                    },
                    server(ServerUrl::Unix(path("/run/app.sock")), 0, Some("http-2")),
                    server(http("2001:db8::2", 8000), 1000, None),
                ],
                keepalive: KeepaliveConfig {
                    reuse: false,
                    idle_timeout: Duration::from_secs(120),
                    max_idle: 0,
                },
                retry: RetryConfig {
                    after_failure: Duration::ZERO,
                    methods: vec!["GET".to_string(), "PUT".to_string()],
                    budget_permille: 500,
                },
                timeouts: PoolTimeouts {
                    connect: Duration::from_secs(1),
                    response: Duration::from_secs(30),
                    websocket_idle: Duration::from_secs(24 * 3600),
                },
                h2c: true,
                tls: ServerTlsConfig::default(),
                h2: false,
                error_pages: BTreeMap::from([(504, path("/etc/balancer/errors/504.html"))]),
                sticky: None,
                health: None,
                passive: PassiveHealthConfig::default(),
                slow_start: Duration::ZERO,
                queue_timeout: Duration::from_secs(5),
                on_down: OnDown::Keep,
            },
        ],
    };
    assert_eq!(config.l7, expected);

    let django = &config.l7.pools[1];
    assert_eq!(
        django.servers[2].url.to_string(),
        "http://[2001:db8::2]:8000"
    );
    assert_eq!(django.servers[2].url.authority(), "[2001:db8::2]:8000");
    assert_eq!(django.servers[1].url.to_string(), "unix:/run/app.sock");
    assert_eq!(django.servers[1].url.authority(), "localhost");
    assert_eq!(
        config.l7.pools[0].servers[0].url.authority(),
        "api.internal"
    );
    assert!(config.l7.listeners[1].is_tls());
    assert!(!config.l7.listeners[0].is_tls());
}

#[test]
fn l7_defaults() {
    let text = "[[listener]]\nname = \"http\"\nbind = \"0.0.0.0:80\"\n[[route]]\nlistener = \"http\"\npool = \"app\"\n[pool.app]\nservers = [{ url = \"http://backend\" }]\n";
    let l7 = parse_in(text).l7;
    assert_eq!(
        l7,
        L7Config {
            proxy: ProxySettings {
                access_log: AccessLogFormat::Combined,
                access_log_file: None,
                state_file: None,
                upgrade_socket: None,
                shutdown_timeout: Duration::from_secs(30),
                workers: None,
                temp_dir: None,
                body_buffer: 64 * 1024,
                response_buffer: 256 * 1024,
                max_response_buffer: 1 << 30,
                request_id: true,
            },
            listeners: vec![ListenerConfig {
                name: "http".to_string(),
                bind: SocketAddr::from(([0, 0, 0, 0], 80)),
                tls: None,
                redirect_https: false,
                https_port: 443,
                header_read_timeout: Duration::from_secs(10),
                keepalive_timeout: Duration::from_secs(75),
                max_header_bytes: 32_768,
                max_headers: 100,
                max_connections: 10_000,
                trusted_proxies: Vec::new(),
                trusted_headers: Vec::new(),
                underscore_headers: UnderscorePolicy::Drop,
                allowed_hosts: Vec::new(),
                disallowed_host_status: 421,
                identity_headers: ListenerConfig::DEFAULT_IDENTITY_HEADERS
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                emit_forwarded: true,
                emit_x_real_ip: false,
            }],
            routes: vec![RouteConfig {
                name: "route-0".to_string(),
                listener: Some("http".to_string()),
                host: None,
                path: "/".to_string(),
                strip_prefix: false,
                target: RouteTarget::Pool("app".to_string()),
                preserve_host: true,
                max_body_size: 16 * 1024 * 1024,
                request_buffering: true,
                response_buffering: true,
                client_body_timeout: Duration::from_secs(60),
                error_pages: BTreeMap::new(),
                request_headers: HeaderEdits::default(),
                response_headers: HeaderEdits::default(),
                rewrite_location: true,
                rewrite_cookie_path: true,
                rewrite_html: false,
                debug_headers: false,
                allow_encoded_slashes: false,
                rewrite_cookie_domain: Vec::new(),
                compress: false,
            }],
            pools: vec![PoolConfig {
                name: "app".to_string(),
                balance: Balance::RoundRobin,
                servers: vec![server(http("backend", 80), 1, None)],
                keepalive: KeepaliveConfig {
                    reuse: true,
                    idle_timeout: Duration::from_secs(60),
                    max_idle: KeepaliveConfig::DEFAULT_MAX_IDLE,
                },
                retry: RetryConfig {
                    after_failure: Duration::from_secs(5),
                    methods: vec!["GET".into(), "HEAD".into(), "OPTIONS".into()],
                    budget_permille: 200,
                },
                timeouts: PoolTimeouts {
                    connect: Duration::from_secs(3),
                    response: Duration::from_secs(60),
                    websocket_idle: Duration::from_secs(300),
                },
                h2c: false,
                tls: ServerTlsConfig::default(),
                h2: false,
                error_pages: BTreeMap::new(),
                sticky: None,
                health: None,
                passive: PassiveHealthConfig::default(),
                slow_start: Duration::ZERO,
                queue_timeout: Duration::from_secs(30),
                on_down: OnDown::Abort,
            }],
        }
    );
    // The named defaults are the ones documented.
    assert_eq!(l7.proxy, ProxySettings::default());
    let listener = &l7.listeners[0];
    assert_eq!(listener.https_port, ListenerConfig::DEFAULT_HTTPS_PORT);
    assert_eq!(
        listener.header_read_timeout,
        ListenerConfig::DEFAULT_HEADER_READ_TIMEOUT
    );
    assert_eq!(
        listener.keepalive_timeout,
        ListenerConfig::DEFAULT_KEEPALIVE_TIMEOUT
    );
    assert_eq!(
        listener.max_header_bytes,
        ListenerConfig::DEFAULT_MAX_HEADER_BYTES
    );
    assert_eq!(listener.max_headers, ListenerConfig::DEFAULT_MAX_HEADERS);
    assert_eq!(
        listener.max_connections,
        ListenerConfig::DEFAULT_MAX_CONNECTIONS
    );
    assert_eq!(
        l7.routes[0].max_body_size,
        RouteConfig::DEFAULT_MAX_BODY_SIZE
    );
    assert_eq!(l7.pools[0].keepalive, KeepaliveConfig::default());
    assert_eq!(l7.pools[0].retry, RetryConfig::default());
    assert_eq!(l7.pools[0].timeouts, PoolTimeouts::default());
}

#[test]
fn l7_beside_the_l4_data_plane() {
    let text = format!("{XDP}{}{}", local_vip("web", "198.18.0.10"), route_with(""));
    let config = parse(&text);
    assert!(config.xdp.is_some());
    assert_eq!(config.vips.len(), 1);
    assert_eq!(config.l7.listeners.len(), 1);
    assert_eq!(config.l7.routes.len(), 1);
    assert_eq!(config.l7.pools.len(), 1);
}

#[test]
fn l7_tables_as_headers_and_sub_tables() {
    let text = r#"
[[listener]]
name = "https"
bind = "198.18.0.10:443"
[listener.tls]
[[listener.tls.certificates]]
cert = "a.pem"
key = "a.key"

[[route]]
listener = "https"
static_dir = "/srv/www"
[route.error_pages]
404 = "404.html"

[pool.app]
[[pool.app.servers]]
url = "http://198.18.1.2"
[pool.app.keepalive]
max_idle = 10000
[pool.app.timeouts]
connect = "1h"
[pool.app.error_pages]
599 = "599.html"
"#;
    let l7 = parse_in(text).l7;
    assert_eq!(
        l7.listeners[0].tls,
        Some(TlsConfig {
            certificates: vec![CertificatePaths {
                cert: path("/etc/balancer/a.pem"),
                key: path("/etc/balancer/a.key"),
            }],
        })
    );
    assert_eq!(l7.routes[0].target, RouteTarget::Static(path("/srv/www")));
    assert_eq!(
        l7.routes[0].error_pages,
        BTreeMap::from([(404, path("/etc/balancer/404.html"))])
    );
    assert_eq!(l7.pools[0].keepalive.max_idle, 10_000);
    assert_eq!(l7.pools[0].timeouts.connect, Duration::from_secs(3600));
    assert_eq!(
        l7.pools[0].error_pages,
        BTreeMap::from([(599, path("/etc/balancer/599.html"))])
    );
}

#[test]
fn parse_resolves_relative_paths_against_the_current_directory() {
    let cwd = std::env::current_dir().expect("a current directory");
    let text =
        listener_with("tls = { certificates = [{ cert = \"a.pem\", key = \"/k/a.key\" }] }\n");
    let config = Config::parse(&text, ORIGIN).expect("a valid config");
    let tls = config.l7.listeners[0].tls.clone().expect("tls is set");
    assert_eq!(tls.certificates[0].cert, cwd.join("a.pem"));
    assert_eq!(tls.certificates[0].key, path("/k/a.key"));
}

#[test]
fn load_resolves_relative_paths_against_the_file_directory() {
    let dir = std::env::temp_dir().join(format!("balancer-l7-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    let file = dir.join("balancer.toml");
    let text = format!(
        "{}[[route]]\nlistener = \"http\"\nstatic_dir = \"www\"\nerror_pages = {{ 404 = \"../errors/404.html\" }}\n",
        listener_with(
            "tls = { certificates = [{ cert = \"certs/a.pem\", key = \"/k/a.key\" }] }\n"
        )
    );
    std::fs::write(&file, text).expect("write the config");
    let loaded = Config::load(&file);
    std::fs::remove_dir_all(&dir).expect("remove the temporary directory");
    let l7 = loaded.expect("a valid config").l7;
    let tls = l7.listeners[0].tls.clone().expect("tls is set");
    assert_eq!(tls.certificates[0].cert, dir.join("certs/a.pem"));
    assert_eq!(tls.certificates[0].key, path("/k/a.key"));
    assert_eq!(l7.routes[0].target, RouteTarget::Static(dir.join("www")));
    // ".." is kept: it may cross a symbolic link, and nothing is looked up while parsing.
    assert_eq!(
        l7.routes[0].error_pages,
        BTreeMap::from([(404, dir.join("../errors/404.html"))])
    );
}

#[test]
fn files_are_not_opened_while_parsing() {
    // None of these exist; the proxy opens them and names them in its own errors.
    let text = format!(
        "{}[[route]]\nlistener = \"http\"\nstatic_dir = \"/nonexistent/www\"\n",
        listener_with(
            "tls = { certificates = [{ cert = \"/nonexistent/a.pem\", key = \"/nonexistent/a.key\" }] }\n"
        )
    );
    let l7 = parse_in(&text).l7;
    assert_eq!(
        l7.routes[0].target,
        RouteTarget::Static(path("/nonexistent/www"))
    );
}

#[test]
fn every_access_log_format_is_accepted() {
    for (word, format) in [
        ("combined", AccessLogFormat::Combined),
        ("text", AccessLogFormat::Combined),
        ("json", AccessLogFormat::Json),
        ("off", AccessLogFormat::Off),
    ] {
        let config = parse(&format!("[proxy]\naccess_log = \"{word}\"\n"));
        assert_eq!(config.l7.proxy.access_log, format, "access_log = {word:?}");
    }
}

#[test]
fn every_balance_is_accepted() {
    for (word, balance) in [
        ("round-robin", Balance::RoundRobin),
        ("least-conn", Balance::LeastConn),
        ("p2c", Balance::P2c),
        ("hash", Balance::Hash(HashOn::ClientAddress)),
    ] {
        let text = pool_with(&format!(
            "balance = \"{word}\"\nservers = [{{ url = \"http://a\" }}]\n"
        ));
        assert_eq!(
            parse(&text).l7.pools[0].balance,
            balance,
            "balance = {word:?}"
        );
    }
}

#[test]
fn hash_on_forms() {
    for (written, hash_on) in [
        ("client", HashOn::ClientAddress),
        ("header:X-Session", HashOn::Header("x-session".to_string())),
        ("header:x_a.b~1", HashOn::Header("x_a.b~1".to_string())),
        ("cookie:SESSIONID", HashOn::Cookie("SESSIONID".to_string())),
    ] {
        let text = pool_with(&format!(
            "balance = \"hash\"\nhash_on = \"{written}\"\nservers = [{{ url = \"http://a\" }}]\n"
        ));
        assert_eq!(
            parse(&text).l7.pools[0].balance,
            Balance::Hash(hash_on),
            "hash_on = {written:?}"
        );
    }
}

#[test]
fn route_hosts_are_normalized() {
    for (written, host) in [
        (
            "www.example.test",
            HostPattern::Exact("www.example.test".to_string()),
        ),
        (
            "WWW.Example.TEST.",
            HostPattern::Exact("www.example.test".to_string()),
        ),
        ("localhost", HostPattern::Exact("localhost".to_string())),
        ("198.18.0.10", HostPattern::Exact("198.18.0.10".to_string())),
        (
            "[2001:DB8::0:1]",
            HostPattern::Exact("[2001:db8::1]".to_string()),
        ),
        (
            "*.example.test",
            HostPattern::Suffix("example.test".to_string()),
        ),
        ("*.Test.", HostPattern::Suffix("test".to_string())),
        (
            "under_score.example",
            HostPattern::Exact("under_score.example".to_string()),
        ),
    ] {
        let text = route_with(&format!("host = \"{written}\"\n"));
        assert_eq!(
            parse(&text).l7.routes[0].host,
            Some(host),
            "host = {written:?}"
        );
    }
}

#[test]
fn route_paths_are_kept_as_written() {
    for written in ["/", "/app", "/app/", "/a/b.c/..d/", "/%7Euser/", "/a//b"] {
        let text = route_with(&format!("path = \"{written}\"\n"));
        assert_eq!(
            parse(&text).l7.routes[0].path,
            written,
            "path = {written:?}"
        );
    }
}

#[test]
fn max_body_size_forms() {
    for (written, size) in [
        ("1", 1),
        ("1048576", 1 << 20),
        ("\"1B\"", 1),
        ("\"512KiB\"", 512 * 1024),
        ("\"10MiB\"", 10 << 20),
        ("\"2GiB\"", 2 << 30),
        ("\"1KB\"", 1_000),
        ("\"10MB\"", 10_000_000),
        ("\"3GB\"", 3_000_000_000),
        ("\"10 MiB\"", 10 << 20),
    ] {
        let text = route_with(&format!("max_body_size = {written}\n"));
        assert_eq!(
            parse(&text).l7.routes[0].max_body_size,
            size,
            "max_body_size = {written}"
        );
    }
}

#[test]
fn server_urls_are_normalized() {
    for (written, url) in [
        ("http://198.18.1.2", http("198.18.1.2", 80)),
        ("http://198.18.1.2:8000/", http("198.18.1.2", 8000)),
        (
            "Http://Backend.Example:65535",
            http("backend.example", 65535),
        ),
        ("http://[::1]", http("::1", 80)),
        ("http://[2001:DB8:0::2]:81", http("2001:db8::2", 81)),
        ("unix:/run/app.sock", ServerUrl::Unix(path("/run/app.sock"))),
        ("https://198.18.1.2", https("198.18.1.2", 443)),
        (
            "HTTPS://App1.Example.test:8443/",
            https("app1.example.test", 8443),
        ),
        ("https://[2001:db8::2]:443", https("2001:db8::2", 443)),
        (
            "unix:///run//app/./x.sock",
            ServerUrl::Unix(path("/run/app/x.sock")),
        ),
    ] {
        let text = pool_servers(&format!("{{ url = \"{written}\" }}"));
        assert_eq!(
            parse(&text).l7.pools[0].servers[0].url,
            url,
            "url = {written:?}"
        );
    }
}

#[test]
fn l7_limits_are_inclusive() {
    let text = listener_with(
        "header_read_timeout = \"1h\"\nkeepalive_timeout = \"1ms\"\nmax_header_bytes = 8192\nmax_headers = 1\nmax_connections = 1\n",
    );
    let listener = parse(&text).l7.listeners[0].clone();
    assert_eq!(listener.header_read_timeout, Duration::from_secs(3600));
    assert_eq!(listener.keepalive_timeout, Duration::from_millis(1));
    assert_eq!(listener.max_header_bytes, 8192);
    assert_eq!(listener.max_headers, 1);
    assert_eq!(listener.max_connections, 1);

    let text = listener_with(
        "max_header_bytes = 1048576\nmax_headers = 1000\nmax_connections = 1000000\nredirect_https = true\nhttps_port = 65535\n",
    );
    let listener = parse(&text).l7.listeners[0].clone();
    assert_eq!(listener.max_header_bytes, 1024 * 1024);
    assert_eq!(listener.max_headers, 1000);
    assert_eq!(listener.max_connections, 1_000_000);
    assert_eq!(listener.https_port, 65535);

    let config = parse("[proxy]\nshutdown_timeout = \"0s\"\n");
    assert_eq!(config.l7.proxy.shutdown_timeout, Duration::ZERO);
    let config = parse("[proxy]\nshutdown_timeout = \"1h\"\n");
    assert_eq!(config.l7.proxy.shutdown_timeout, Duration::from_secs(3600));

    let text = pool_with(
        "servers = [{ url = \"http://a\", weight = 0 }, { url = \"http://b\", weight = 1000 }]\nkeepalive = { idle_timeout = \"1h\", max_idle = 10000 }\nretry = { after_failure = \"1h\" }\ntimeouts = { connect = \"1ms\", response = \"1h\", websocket_idle = \"1d\" }\n",
    );
    let pool = parse(&text).l7.pools[0].clone();
    assert_eq!(pool.servers[0].weight, 0);
    assert_eq!(pool.servers[1].weight, 1000);
    assert_eq!(pool.keepalive.idle_timeout, Duration::from_secs(3600));
    assert_eq!(pool.keepalive.max_idle, 10_000);
    assert_eq!(pool.retry.after_failure, Duration::from_secs(3600));
    assert_eq!(pool.timeouts.connect, Duration::from_millis(1));
    assert_eq!(pool.timeouts.response, Duration::from_secs(3600));
    assert_eq!(pool.timeouts.websocket_idle, Duration::from_secs(86_400));

    let error_pages = "error_pages = { 400 = \"a.html\", 599 = \"b.html\" }\n";
    let pages: Vec<u16> = parse(&route_with(error_pages)).l7.routes[0]
        .error_pages
        .keys()
        .copied()
        .collect();
    assert_eq!(pages, [400, 599]);
}

#[test]
fn routes_that_differ_in_listener_host_or_path() {
    let text = format!(
        "{LISTENER}[[listener]]\nname = \"other\"\nbind = \"0.0.0.0:8080\"\n{POOL}{}",
        [
            ("http", None, None),
            ("other", None, None),
            ("http", Some("a.example"), None),
            ("http", Some("*.a.example"), None),
            ("http", Some("b.example"), None),
            ("http", None, Some("/app")),
            ("http", None, Some("/app/")),
            ("http", Some("a.example"), Some("/app")),
        ]
        .iter()
        .map(|(listener, host, path)| {
            let host = host.map_or(String::new(), |host| format!("host = \"{host}\"\n"));
            let path = path.map_or(String::new(), |path| format!("path = \"{path}\"\n"));
            format!("[[route]]\nlistener = \"{listener}\"\npool = \"app\"\n{host}{path}")
        })
        .collect::<String>()
    );
    let routes = parse(&text).l7.routes;
    let names: Vec<_> = routes.iter().map(|route| route.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "route-0", "route-1", "route-2", "route-3", "route-4", "route-5", "route-6", "route-7"
        ],
        "in file order, with default names"
    );
}

#[test]
fn pools_without_routes_and_listeners_without_routes_are_accepted() {
    let l7 = parse(&format!("{LISTENER}{POOL}")).l7;
    assert_eq!(l7.listeners.len(), 1);
    assert_eq!(l7.pools.len(), 1);
    assert!(l7.routes.is_empty());
}

#[test]
fn l7_keyword_lists_match_the_enums() {
    fn unknown_word_message<T: Keyword>() -> String {
        let word: StrDeserializer<'_, serde::de::value::Error> = "no-such-word".into_deserializer();
        match crate::config::de::keyword::<_, T>(word) {
            Ok(_) => panic!("\"no-such-word\" parsed as a keyword"),
            Err(err) => err.to_string(),
        }
    }
    for (message, one_of) in [
        (unknown_word_message::<AccessLog>(), AccessLog::ONE_OF),
        (unknown_word_message::<BalanceKind>(), BalanceKind::ONE_OF),
        (unknown_word_message::<Underscore>(), Underscore::ONE_OF),
        (unknown_word_message::<StickyMode>(), StickyMode::ONE_OF),
    ] {
        assert_eq!(
            message,
            format!("unknown variant `no-such-word`, expected {one_of}"),
        );
    }
}

// ---- Bad configs: unknown keys and table shapes ------------------------------------------------

const LISTENER_KEYS: &str = "`name`, `bind`, `tls`, `redirect_https`, `https_port`, `header_read_timeout`, `keepalive_timeout`, `max_header_bytes`, `max_headers`, `max_connections`, `trusted_proxies`, `trusted_headers`, `underscore_headers`, `allowed_hosts`, `disallowed_host_status`, `identity_headers`, `emit_forwarded`, `emit_x_real_ip`";
const ROUTE_KEYS: &str = "`name`, `listener`, `host`, `path`, `strip_prefix`, `pool`, `static_dir`, `preserve_host`, `max_body_size`, `request_buffering`, `response_buffering`, `client_body_timeout`, `error_pages`, `request_headers`, `response_headers`, `rewrite_location`, `rewrite_cookie_path`, `rewrite_html`, `debug_headers`, `allow_encoded_slashes`, `rewrite_cookie_domain`, `compress`";
const POOL_KEYS: &str = "`balance`, `hash_on`, `servers`, `keepalive`, `retry`, `timeouts`, `h2c`, `tls_ca_file`, `tls_server_name`, `tls_cert_file`, `tls_key_file`, `h2`, `error_pages`, `sticky`, `health`, `passive`, `slow_start`, `queue_timeout`, `on_down`";

#[test]
fn unknown_key_in_proxy() {
    assert_error(
        "[proxy]\nthreads = 4\n",
        "test.toml:2:1: proxy.threads: unknown field `threads`, expected one of `access_log`, `access_log_file`, `state_file`, `upgrade_socket`, `shutdown_timeout`, `workers`, `temp_dir`, `body_buffer`, `response_buffer`, `max_response_buffer`, `request_id`",
    );
}

#[test]
fn unknown_key_in_listener() {
    for key in ["port", "trusted_proxy", "real_ip_header"] {
        assert_error(
            &listener_with(&format!("{key} = []\n")),
            &format!(
                "test.toml:4:1: listener[0].{key}: unknown field `{key}`, expected one of {LISTENER_KEYS}"
            ),
        );
    }
}

#[test]
fn unknown_key_in_route() {
    for key in ["prefix", "rewrite_locations", "headers"] {
        assert_error(
            &route_with(&format!("{key} = true\n")),
            &format!(
                "test.toml:9:1: route[0].{key}: unknown field `{key}`, expected one of {ROUTE_KEYS}"
            ),
        );
    }
}

#[test]
fn unknown_key_in_pool() {
    for key in ["stickiness", "checks", "backends"] {
        assert_error(
            &format!("{POOL}{key} = {{}}\n"),
            &format!(
                "test.toml:3:1: pool.app.{key}: unknown field `{key}`, expected one of {POOL_KEYS}"
            ),
        );
    }
}

#[test]
fn unknown_keys_in_l7_sub_tables() {
    assert_error(
        &listener_with("tls = { certificates = [], alpn = [\"h2\"] }\n"),
        "test.toml:4:28: listener[0].tls.alpn: unknown field `alpn`, expected `certificates`",
    );
    assert_error(
        &listener_with(
            "tls = { certificates = [{ cert = \"a.pem\", key = \"a.key\", chain = \"c.pem\" }] }\n",
        ),
        "test.toml:4:58: listener[0].tls.certificates[0].chain: unknown field `chain`, expected `cert` or `key`",
    );
    assert_error(
        &pool_servers("{ url = \"http://a\", spare = true }"),
        "test.toml:2:32: pool.app.servers[0].spare: unknown field `spare`, expected one of `url`, `weight`, `route`, `state`, `backup`, `max_conns`",
    );
    assert_error(
        &format!("{POOL}keepalive = {{ timeout = \"1s\" }}\n"),
        "test.toml:3:15: pool.app.keepalive.timeout: unknown field `timeout`, expected one of `reuse`, `idle_timeout`, `max_idle`",
    );
    assert_error(
        &format!("{POOL}retry = {{ attempts = 3 }}\n"),
        "test.toml:3:11: pool.app.retry.attempts: unknown field `attempts`, expected one of `after_failure`, `methods`, `budget`",
    );
    assert_error(
        &format!("{POOL}timeouts = {{ read = \"1s\" }}\n"),
        "test.toml:3:14: pool.app.timeouts.read: unknown field `read`, expected one of `connect`, `response`, `websocket_idle`",
    );
}

#[test]
fn listener_written_as_a_single_table() {
    assert_error(
        "[listener]\nname = \"https\"\n",
        "test.toml:1:1: listener: invalid type: map, expected an array of tables, each listener starting with [[listener]]",
    );
}

#[test]
fn route_written_as_a_single_table() {
    assert_error(
        "[route]\nlistener = \"https\"\n",
        "test.toml:1:1: route: invalid type: map, expected an array of tables, each route starting with [[route]]",
    );
}

#[test]
fn pool_written_as_an_array_of_tables() {
    assert_error(
        "[[pool]]\nname = \"app\"\n",
        "test.toml:1:1: pool: invalid type: sequence, expected a table of pools, each starting with [pool.NAME]",
    );
}

#[test]
fn l7_tables_of_the_wrong_type() {
    assert_error(
        "proxy = \"json\"\n",
        "test.toml:1:9: proxy: invalid type: string \"json\", expected a table",
    );
    assert_error(
        "pool = { app = \"http://a\" }\n",
        "test.toml:1:16: pool.app: invalid type: string \"http://a\", expected a table",
    );
    assert_error(
        &listener_with("tls = true\n"),
        "test.toml:4:7: listener[0].tls: invalid type: boolean `true`, expected a table",
    );
    assert_error(
        &format!("{POOL}timeouts = \"1s\"\n"),
        "test.toml:3:12: pool.app.timeouts: invalid type: string \"1s\", expected a table",
    );
}

// ---- Bad configs: [proxy] ----------------------------------------------------------------------

#[test]
fn access_log_unknown() {
    assert_error(
        "[proxy]\naccess_log = \"common\"\n",
        "test.toml:2:14: proxy.access_log: unknown variant `common`, expected one of `combined`, `text`, `json`, `off`",
    );
    assert_error(
        "[proxy]\naccess_log = false\n",
        "test.toml:2:14: proxy.access_log: invalid type: boolean `false`, expected one of `combined`, `text`, `json`, `off`",
    );
    assert_error(
        "[proxy]\naccess_log_file = \"\"\n",
        "test.toml:2:19: proxy.access_log_file: must not be empty",
    );
}

#[test]
fn shutdown_timeout_out_of_range() {
    assert_error(
        "[proxy]\nshutdown_timeout = \"61m\"\n",
        "test.toml:2:20: proxy.shutdown_timeout: must be between 0s and 1h, not 1h 1m",
    );
    assert_error(
        "[proxy]\nshutdown_timeout = 30\n",
        "test.toml:2:20: proxy.shutdown_timeout: invalid type: integer `30`, expected a string with a duration with a unit, such as \"500ms\", \"2s\" or \"1m\"",
    );
}

#[test]
fn workers_out_of_range() {
    assert_error(
        "[proxy]\nworkers = 1025\n",
        "test.toml:2:11: proxy.workers: must be between 0 and 1024, not 1025",
    );
    // 0: the main runtime serves connections (no worker threads).
    let config = parse("[proxy]\nworkers = 0\n");
    assert_eq!(config.l7.proxy.workers, Some(0));
    assert_eq!(config.l7.proxy.worker_count(), 0);
}

// ---- Bad configs: [[listener]] -----------------------------------------------------------------

#[test]
fn listener_field_missing() {
    assert_error(
        "[[listener]]\nname = \"http\"\n",
        "test.toml:1:1: listener[0]: missing field `bind`",
    );
    assert_error(
        "[[listener]]\nbind = \"0.0.0.0:80\"\n",
        "test.toml:1:1: listener[0]: missing field `name`",
    );
}

#[test]
fn listener_name_invalid() {
    for name in ["", "web app", "https/1"] {
        assert_error(
            &format!("[[listener]]\nname = \"{name}\"\nbind = \"0.0.0.0:80\"\n"),
            &format!(
                "test.toml:2:8: listener[0].name: \"{name}\" must be non-empty and use only letters, digits, '-', '_' and '.'"
            ),
        );
    }
}

#[test]
fn duplicate_listener_name() {
    assert_error(
        &listener_with("[[listener]]\nname = \"http\"\nbind = \"0.0.0.0:8080\"\n"),
        "test.toml:5:8: listener[1].name: \"http\" is already the name of listener[0]",
    );
}

#[test]
fn listener_bind_not_an_address() {
    for bind in ["0.0.0.0", "localhost:80", "::443", ":80"] {
        assert_error(
            &format!("[[listener]]\nname = \"http\"\nbind = \"{bind}\"\n"),
            &format!(
                "test.toml:3:8: listener[0].bind: invalid value: string \"{bind}\", expected an IP address and port, such as \"127.0.0.1:9100\" or \"[::1]:9100\""
            ),
        );
    }
}

#[test]
fn listener_bind_port_zero() {
    assert_error(
        "[[listener]]\nname = \"http\"\nbind = \"0.0.0.0:0\"\n",
        "test.toml:3:8: listener[0].bind: 0.0.0.0:0 has port 0: give the port clients connect to",
    );
}

#[test]
fn listener_bind_is_the_admin_address() {
    assert_error(
        "[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:9100\"\n",
        "test.toml:3:8: listener[0].bind: 127.0.0.1:9100 is admin.listen, the admin API's address",
    );
    assert_error(
        "[admin]\nlisten = \"[::1]:8080\"\n[[listener]]\nname = \"http\"\nbind = \"[0:0::1]:8080\"\n",
        "test.toml:5:8: listener[0].bind: [::1]:8080 is admin.listen, the admin API's address",
    );
}

#[test]
fn duplicate_listener_bind() {
    // Compared as addresses, not as text.
    assert_error(
        "[[listener]]\nname = \"a\"\nbind = \"[2001:db8::1]:443\"\n[[listener]]\nname = \"b\"\nbind = \"[2001:DB8:0::1]:443\"\n",
        "test.toml:6:8: listener[1].bind: [2001:db8::1]:443 is already the bind of listener[0] (\"a\")",
    );
}

#[test]
fn tls_without_certificates() {
    assert_error(
        &listener_with("tls = { certificates = [] }\n"),
        "test.toml:4:24: listener[0].tls.certificates: needs at least one certificate (the first is the default, for clients without SNI)",
    );
    assert_error(
        &listener_with("tls = {}\n"),
        "test.toml:4:7: listener[0].tls: missing field `certificates`",
    );
}

#[test]
fn tls_certificate_malformed() {
    assert_error(
        &listener_with("tls = { certificates = [{ cert = \"a.pem\" }] }\n"),
        "test.toml:4:25: listener[0].tls.certificates[0]: missing field `key`",
    );
    assert_error(
        &listener_with("tls = { certificates = [\"a.pem\"] }\n"),
        "test.toml:4:25: listener[0].tls.certificates[0]: invalid type: string \"a.pem\", expected a table such as { cert = \"certs/site.pem\", key = \"certs/site.key\" }",
    );
    assert_error(
        &listener_with("tls = { certificates = { cert = \"a.pem\", key = \"a.key\" } }\n"),
        "test.toml:4:24: listener[0].tls.certificates: invalid type: map, expected an array of certificates, such as [{ cert = \"certs/site.pem\", key = \"certs/site.key\" }]",
    );
    assert_error(
        &listener_with("tls = { certificates = [{ cert = \"a.pem\", key = 1 }] }\n"),
        "test.toml:4:49: listener[0].tls.certificates[0].key: invalid type: integer `1`, expected a string",
    );
}

#[test]
fn tls_certificate_path_empty() {
    assert_error(
        &listener_with("tls = { certificates = [{ cert = \"a.pem\", key = \"\" }] }\n"),
        "test.toml:4:49: listener[0].tls.certificates[0].key: must not be empty",
    );
    assert_error(
        &listener_with(
            "tls = { certificates = [{ cert = \"a.pem\", key = \"a.key\" }, { cert = \"\", key = \"b.key\" }] }\n",
        ),
        "test.toml:4:69: listener[0].tls.certificates[1].cert: must not be empty",
    );
    assert_error(
        &listener_with("tls = { certificates = [{ cert = \"a\\u0000.pem\", key = \"a.key\" }] }\n"),
        "test.toml:4:34: listener[0].tls.certificates[0].cert: \"a\\0.pem\" has a NUL character, which no path can hold",
    );
}

#[test]
fn redirect_https_on_a_tls_listener() {
    assert_error(
        &listener_with(
            "tls = { certificates = [{ cert = \"a.pem\", key = \"a.key\" }] }\nredirect_https = true\n",
        ),
        "test.toml:5:18: listener[0].redirect_https: only allowed on a plain listener: this one has tls, so its clients already use HTTPS",
    );
}

#[test]
fn https_port_without_redirect_https() {
    for rest in ["", "redirect_https = false\n"] {
        assert_error(
            &listener_with(&format!("{rest}https_port = 8443\n")),
            &format!(
                "test.toml:{}:14: listener[0].https_port: only allowed with redirect_https = true (it is the port the redirects name)",
                if rest.is_empty() { 4 } else { 5 }
            ),
        );
    }
}

#[test]
fn https_port_out_of_range() {
    assert_error(
        &listener_with("redirect_https = true\nhttps_port = 0\n"),
        "test.toml:5:14: listener[0].https_port: must be between 1 and 65535, not 0",
    );
    assert_error(
        &listener_with("redirect_https = \"yes\"\n"),
        "test.toml:4:18: listener[0].redirect_https: invalid type: string \"yes\", expected a boolean",
    );
}

#[test]
fn listener_timeouts_out_of_range() {
    assert_error(
        &listener_with("header_read_timeout = \"0s\"\n"),
        "test.toml:4:23: listener[0].header_read_timeout: must be above 0 and at most 1h, not 0s",
    );
    assert_error(
        &listener_with("keepalive_timeout = \"2h\"\n"),
        "test.toml:4:21: listener[0].keepalive_timeout: must be above 0 and at most 1h, not 2h",
    );
    assert_error(
        &listener_with("keepalive_timeout = \"75\"\n"),
        "test.toml:4:21: listener[0].keepalive_timeout: invalid value: string \"75\", expected a duration with a unit, such as \"500ms\", \"2s\" or \"1m\"",
    );
}

#[test]
fn listener_limits_out_of_range() {
    for (key, value, range) in [
        ("max_header_bytes", "8191", "8192 and 1048576"),
        ("max_header_bytes", "1048577", "8192 and 1048576"),
        ("max_headers", "0", "1 and 1000"),
        ("max_headers", "1001", "1 and 1000"),
        ("max_connections", "0", "1 and 1000000"),
        ("max_connections", "1000001", "1 and 1000000"),
        ("max_connections", "-1", "1 and 1000000"),
    ] {
        let column = key.len() + 4;
        assert_error(
            &listener_with(&format!("{key} = {value}\n")),
            &format!(
                "test.toml:4:{column}: listener[0].{key}: must be between {range}, not {value}"
            ),
        );
    }
}

// ---- Bad configs: [[route]] --------------------------------------------------------------------

#[test]
fn a_route_without_listener_is_for_every_listener() {
    let config = parse(&format!("{LISTENER}{POOL}[[route]]\npool = \"app\"\n"));
    assert_eq!(config.l7.routes[0].listener, None);
    // Two routes for every listener with the same host and path: one would never be used.
    assert_error(
        &format!("{LISTENER}{POOL}[[route]]\npool = \"app\"\n[[route]]\npool = \"app\"\n"),
        "test.toml:8:1: route[1]: \"route-1\" has the same listeners (every one), no host and path \"/\" as route[0] (\"route-0\"); only one of them could be used",
    );
    // Beside a route of one listener with the same host and path, it is still used on the others.
    let config = parse(&format!(
        "{LISTENER}{POOL}[[route]]\npool = \"app\"\n[[route]]\nlistener = \"http\"\npool = \"app\"\n"
    ));
    assert_eq!(config.l7.routes.len(), 2);
    assert_error(
        &format!("{POOL}[[route]]\npool = \"app\"\n"),
        "test.toml:3:1: route[0]: applies to every listener (it names none), but there is no listener it could serve: add a [[listener]] without redirect_https",
    );
}

#[test]
fn route_of_an_unknown_listener() {
    assert_error(
        &format!(
            "{LISTENER}[[listener]]\nname = \"https\"\nbind = \"0.0.0.0:443\"\n{POOL}[[route]]\nlistener = \"htps\"\npool = \"app\"\n"
        ),
        "test.toml:10:12: route[0].listener: \"htps\" is not the name of a listener (the listeners are \"http\", \"https\")",
    );
    // Routes without any listener.
    assert_error(
        &format!("{POOL}[[route]]\nlistener = \"http\"\npool = \"app\"\n"),
        "test.toml:4:12: route[0].listener: \"http\" is not the name of a listener (there is no [[listener]])",
    );
}

#[test]
fn route_of_a_redirecting_listener() {
    assert_error(
        &format!(
            "{LISTENER}redirect_https = true\n{POOL}[[route]]\nlistener = \"http\"\npool = \"app\"\n"
        ),
        "test.toml:8:12: route[0].listener: listener \"http\" has redirect_https = true: it redirects every request to HTTPS, so no route applies to it",
    );
}

#[test]
fn route_name_invalid() {
    assert_error(
        &route_with("name = \"my route\"\n"),
        "test.toml:9:8: route[0].name: \"my route\" must be non-empty and use only letters, digits, '-', '_' and '.'",
    );
}

#[test]
fn duplicate_route_name() {
    let text = format!(
        "{}[[route]]\nname = \"web\"\nlistener = \"http\"\npool = \"app\"\npath = \"/x\"\n",
        route_with("name = \"web\"\n")
    );
    assert_error(
        &text,
        "test.toml:11:8: route[1].name: \"web\" is already the name of route[0]",
    );
}

#[test]
fn route_name_taken_by_a_default_name() {
    // route[1] has no name, so it is "route-1": route[0] cannot take that name. Either order.
    let text = format!(
        "{}[[route]]\nlistener = \"http\"\npool = \"app\"\npath = \"/x\"\n",
        route_with("name = \"route-1\"\n")
    );
    assert_error(
        &text,
        "test.toml:9:8: route[0].name: \"route-1\" is also the default name of route[1], which has no name; choose another",
    );
    let text = format!(
        "{}[[route]]\nlistener = \"http\"\npool = \"app\"\npath = \"/x\"\nname = \"route-0\"\n",
        route_with("")
    );
    assert_error(
        &text,
        "test.toml:13:8: route[1].name: \"route-0\" is also the default name of route[0], which has no name; choose another",
    );
    // A route may carry its own default name.
    let text = route_with("name = \"route-0\"\n");
    assert_eq!(parse(&text).l7.routes[0].name, "route-0");
}

#[test]
fn route_host_invalid() {
    for (host, what) in [
        ("", "\"\" is not a host: leave host out to match every host"),
        (
            ".",
            "\".\" is not a host: leave host out to match every host",
        ),
        (
            "*",
            "\"*\" is not a pattern (\"*.suffix\" is): leave host out to match every host",
        ),
        (
            "www example.test",
            "\"www example.test\" must not contain whitespace or control characters",
        ),
        (
            "www.example.test:443",
            "\"www.example.test:443\" must not have a port: a route matches the host whatever the port",
        ),
        (
            "[2001:db8::1]:443",
            "\"[2001:db8::1]:443\" must not have a port: a route matches the host whatever the port",
        ),
        (
            "[2001:db8::1",
            "\"[2001:db8::1\" is not a valid IPv6 address in brackets",
        ),
        (
            "[www.example.test]",
            "\"[www.example.test]\" is not a valid IPv6 address in brackets",
        ),
        (
            "2001:db8::1",
            "\"2001:db8::1\": an IPv6 address is written in brackets, as in \"[2001:db8::1]\"",
        ),
        (
            "*example.test",
            "\"*example.test\": '*' is only allowed as the whole first label, as in \"*.example.test\"",
        ),
        (
            "www.*.test",
            "\"www.*.test\": '*' is only allowed as the whole first label, as in \"*.example.test\"",
        ),
        (
            "*.*.test",
            "\"*.*.test\": '*' is only allowed as the whole first label, as in \"*.example.test\"",
        ),
        (
            "*.",
            "\"*.\" is not a pattern (\"*.suffix\" is): leave host out to match every host",
        ),
        (
            "*..test",
            "\"*..test\" is not a valid host (a name such as \"www.example.test\", \"*.example.test\" for its subdomains, or an IP address)",
        ),
        (
            "www..example",
            "\"www..example\" is not a valid host (a name such as \"www.example.test\", \"*.example.test\" for its subdomains, or an IP address)",
        ),
        (
            "-www.example",
            "\"-www.example\" is not a valid host (a name such as \"www.example.test\", \"*.example.test\" for its subdomains, or an IP address)",
        ),
        (
            "www/example",
            "\"www/example\" is not a valid host (a name such as \"www.example.test\", \"*.example.test\" for its subdomains, or an IP address)",
        ),
        (
            "http://www.example",
            "\"http://www.example\" must be a host, not a URL",
        ),
    ] {
        assert_error(
            &route_with(&format!("host = \"{host}\"\n")),
            &format!("test.toml:9:8: route[0].host: {what}"),
        );
    }
}

#[test]
fn route_path_invalid() {
    for (path, what) in [
        ("", "must start with '/'"),
        ("app/", "must start with '/'"),
        ("*", "must start with '/'"),
        (
            "/my app",
            "must not contain whitespace or control characters",
        ),
        (
            "/app\\t",
            "must not contain whitespace or control characters",
        ),
        (
            "/app?x=1",
            "must not contain '?' or '#': a route matches the path, not the query",
        ),
        (
            "/app#top",
            "must not contain '?' or '#': a route matches the path, not the query",
        ),
        ("/app/../admin", "must not have \".\" or \"..\" segments"),
        ("/./app", "must not have \".\" or \"..\" segments"),
        ("/app/.", "must not have \".\" or \"..\" segments"),
    ] {
        // "\\t" is a tab once read as TOML, shown as "\\t" again in the message.
        assert_error(
            &route_with(&format!("path = \"{path}\"\n")),
            &format!("test.toml:9:8: route[0].path: \"{path}\" {what}"),
        );
    }
}

#[test]
fn route_with_pool_and_static_dir() {
    assert_error(
        &route_with("static_dir = \"www\"\n"),
        "test.toml:9:14: route[0].static_dir: a route has either pool or static_dir, not both",
    );
}

#[test]
fn route_without_a_target() {
    // Points at the route's header: there is no key to point at.
    assert_error(
        &format!("{LISTENER}[[route]]\nlistener = \"http\"\n"),
        "test.toml:4:1: route[0]: needs a target: pool = \"NAME\" or static_dir = \"DIR\"",
    );
}

#[test]
fn route_of_an_unknown_pool() {
    assert_error(
        &format!(
            "{LISTENER}{POOL}[pool.api]\nservers = [{{ url = \"http://a\" }}]\n[[route]]\nlistener = \"http\"\npool = \"django\"\n"
        ),
        "test.toml:10:8: route[0].pool: \"django\" is not the name of a pool (the pools are \"api\", \"app\")",
    );
    assert_error(
        &format!("{LISTENER}[[route]]\nlistener = \"http\"\npool = \"app\"\n"),
        "test.toml:6:8: route[0].pool: \"app\" is not the name of a pool (there is no [pool.NAME])",
    );
}

#[test]
fn route_static_dir_empty() {
    assert_error(
        &format!("{LISTENER}[[route]]\nlistener = \"http\"\nstatic_dir = \"\"\n"),
        "test.toml:6:14: route[0].static_dir: must not be empty",
    );
}

#[test]
fn duplicate_route() {
    // Same listener, host and path: only the first could ever match.
    let text = format!(
        "{}[[route]]\nname = \"again\"\nlistener = \"http\"\nstatic_dir = \"www\"\nhost = \"WWW.example.test.\"\npath = \"/app/\"\n",
        route_with("name = \"first\"\nhost = \"www.example.test\"\npath = \"/app/\"\n")
    );
    assert_error(
        &text,
        "test.toml:12:1: route[1]: \"again\" has the same listener \"http\", host \"www.example.test\" and path \"/app/\" as route[0] (\"first\"); only one of them could be used",
    );
    // Without host and path, with default names.
    let text = format!(
        "{}[[route]]\nlistener = \"http\"\npool = \"app\"\npath = \"/\"\n",
        route_with("")
    );
    assert_error(
        &text,
        "test.toml:9:1: route[1]: \"route-1\" has the same listener \"http\", no host and path \"/\" as route[0] (\"route-0\"); only one of them could be used",
    );
    let text = format!(
        "{}[[route]]\nlistener = \"http\"\npool = \"app\"\nhost = \"*.example.test\"\n",
        route_with("host = \"*.EXAMPLE.test\"\n")
    );
    assert_error(
        &text,
        "test.toml:10:1: route[1]: \"route-1\" has the same listener \"http\", host \"*.example.test\" and path \"/\" as route[0] (\"route-0\"); only one of them could be used",
    );
}

#[test]
fn max_body_size_invalid() {
    let form = "an integer of bytes or a size with a unit, such as \"512KiB\" or \"10MiB\" (units B, KB, MB, GB, KiB, MiB, GiB)";
    for (written, what) in [
        ("0", "must be at least 1 byte, not 0".to_string()),
        ("-1", "must be at least 1 byte, not -1".to_string()),
        (
            "\"0MiB\"",
            "must be at least 1 byte, not \"0MiB\"".to_string(),
        ),
        (
            "\"10\"",
            format!("invalid value: string \"10\", expected {form}"),
        ),
        (
            "\"10 mb\"",
            format!("invalid value: string \"10 mb\", expected {form}"),
        ),
        (
            "\"MiB\"",
            format!("invalid value: string \"MiB\", expected {form}"),
        ),
        (
            "\"1.5MiB\"",
            format!("invalid value: string \"1.5MiB\", expected {form}"),
        ),
        (
            "\"-1MiB\"",
            format!("invalid value: string \"-1MiB\", expected {form}"),
        ),
        (
            "\"99999999999GiB\"",
            "\"99999999999GiB\" is too large".to_string(),
        ),
        (
            "true",
            format!("invalid type: boolean `true`, expected {form}"),
        ),
        (
            "1.5",
            format!("invalid type: floating point `1.5`, expected {form}"),
        ),
    ] {
        assert_error(
            &route_with(&format!("max_body_size = {written}\n")),
            &format!("test.toml:9:17: route[0].max_body_size: {what}"),
        );
    }
}

#[test]
fn error_pages_invalid() {
    for status in ["399", "600", "0502", "+502", "abc"] {
        assert_error(
            &route_with(&format!("error_pages = {{ \"{status}\" = \"e.html\" }}\n")),
            &format!(
                "test.toml:9:17: route[0].error_pages.{status}: \"{status}\" is not an HTTP error status: the keys of error_pages are status codes between 400 and 599"
            ),
        );
    }
    assert_error(
        &route_with("error_pages = { 502 = 1 }\n"),
        "test.toml:9:23: route[0].error_pages.502: invalid type: integer `1`, expected a string",
    );
    assert_error(
        &route_with("error_pages = { 502 = \"\" }\n"),
        "test.toml:9:23: route[0].error_pages.502: must not be empty",
    );
    assert_error(
        &route_with("error_pages = [\"502.html\"]\n"),
        "test.toml:9:15: route[0].error_pages: invalid type: sequence, expected a table of HTTP statuses and files, such as { 502 = \"errors/502.html\" }",
    );
    assert_error(
        &format!("{POOL}error_pages = {{ 503 = \"\" }}\n"),
        "test.toml:3:23: pool.app.error_pages.503: must not be empty",
    );
}

#[test]
fn route_booleans_of_the_wrong_type() {
    assert_error(
        &route_with("preserve_host = \"on\"\n"),
        "test.toml:9:17: route[0].preserve_host: invalid type: string \"on\", expected a boolean",
    );
    assert_error(
        &route_with("strip_prefix = 1\n"),
        "test.toml:9:16: route[0].strip_prefix: invalid type: integer `1`, expected a boolean",
    );
}

// ---- Bad configs: [pool.NAME] ------------------------------------------------------------------

#[test]
fn pool_name_invalid() {
    // Points at the table's header, where the name is.
    assert_error(
        "[pool.\"my app\"]\nservers = [{ url = \"http://a\" }]\n",
        "test.toml:1:1: pool.my app: \"my app\" must be non-empty and use only letters, digits, '-', '_' and '.'",
    );
    assert_error(
        "pool = { \"a/b\" = { servers = [{ url = \"http://a\" }] } }\n",
        "test.toml:1:18: pool.a/b: \"a/b\" must be non-empty and use only letters, digits, '-', '_' and '.'",
    );
}

#[test]
fn pool_without_servers() {
    assert_error(
        "[pool.app]\nbalance = \"p2c\"\n",
        "test.toml:1:1: pool.app: missing field `servers`",
    );
    assert_error(
        "[pool.app]\nservers = []\n",
        "test.toml:2:11: pool.app.servers: needs at least one server",
    );
}

#[test]
fn pool_servers_malformed() {
    assert_error(
        &pool_servers("\"http://a\""),
        "test.toml:2:12: pool.app.servers[0]: invalid type: string \"http://a\", expected a table such as { url = \"http://198.18.1.2:8000\" }",
    );
    assert_error(
        "[pool.app]\nservers = { url = \"http://a\" }\n",
        "test.toml:2:11: pool.app.servers: invalid type: map, expected an array of servers, such as [{ url = \"http://198.18.1.2:8000\", weight = 1 }]",
    );
    assert_error(
        &pool_servers("{ weight = 2 }"),
        "test.toml:2:12: pool.app.servers[0]: missing field `url`",
    );
}

#[test]
fn server_url_invalid() {
    for (url, what) in [
        (
            "198.18.1.2:8000",
            "must be \"http://host[:port]\", \"https://host[:port]\" or \"unix:/absolute/path\"",
        ),
        (
            "ftp://198.18.1.2",
            "must be \"http://host[:port]\", \"https://host[:port]\" or \"unix:/absolute/path\"",
        ),
        (
            "http://198.18.1.2:8000/app",
            "must not have a path: requests are forwarded with their own path (see a route's strip_prefix)",
        ),
        (
            "http://198.18.1.2//",
            "must not have a path: requests are forwarded with their own path (see a route's strip_prefix)",
        ),
        ("http://198.18.1.2/?x=1", "must not have a query"),
        ("http://198.18.1.2?x=1", "must not have a query"),
        ("http://198.18.1.2#top", "must not have a fragment"),
        (
            "http://user:secret@198.18.1.2",
            "must not have user information (user@)",
        ),
        (
            "http://2001:db8::2",
            "has an IPv6 address without brackets: write it as in \"http://[2001:db8::1]:8080\"",
        ),
        (
            "http://[2001:db8::2",
            "has an IPv6 address without its closing ']'",
        ),
        (
            "http://[198.18.1.2]",
            "has no valid IPv6 address in its brackets",
        ),
        ("http://[::1]8080", "has text after its IPv6 address's ']'"),
        ("http://", "has no host"),
        ("http://:8000", "has no host"),
        ("http://back end", "has no valid host name or IP address"),
        ("http://-backend", "has no valid host name or IP address"),
        (
            "http://backend:0",
            "must have a port between 1 and 65535 after ':'",
        ),
        (
            "http://backend:65536",
            "must have a port between 1 and 65535 after ':'",
        ),
        (
            "http://backend:",
            "must have a port between 1 and 65535 after ':'",
        ),
        (
            "http://backend:+80",
            "must have a port between 1 and 65535 after ':'",
        ),
        (
            "http://[::1]:http",
            "must have a port between 1 and 65535 after ':'",
        ),
        (
            "unix:run/app.sock",
            "must have an absolute socket path, as in \"unix:/run/app.sock\"",
        ),
        (
            "unix:",
            "must have an absolute socket path, as in \"unix:/run/app.sock\"",
        ),
        ("unix:/", "names no socket, only \"/\""),
    ] {
        assert_error(
            &pool_servers(&format!("{{ url = \"{url}\" }}")),
            &format!("test.toml:2:20: pool.app.servers[0].url: \"{url}\" {what}"),
        );
    }
}

#[test]
fn server_unix_path_too_long() {
    let fits = format!("/{}", "s".repeat(106));
    let text = pool_servers(&format!("{{ url = \"unix:{fits}\" }}"));
    assert_eq!(
        parse(&text).l7.pools[0].servers[0].url,
        ServerUrl::Unix(path(&fits))
    );
    let long = format!("/{}", "s".repeat(107));
    assert_error(
        &pool_servers(&format!("{{ url = \"unix:{long}\" }}")),
        &format!(
            "test.toml:2:20: pool.app.servers[0].url: \"unix:{long}\" has a socket path of 108 bytes, more than the 107 a unix socket address holds"
        ),
    );
}

#[test]
fn duplicate_server_url() {
    // Compared once normalized.
    assert_error(
        &pool_servers("{ url = \"http://Backend:80\" }, { url = \"http://backend/\" }"),
        "test.toml:2:51: pool.app.servers[1].url: http://backend:80 is already servers[0]",
    );
    assert_error(
        &pool_servers("{ url = \"unix:/run/a.sock\" }, { url = \"unix:/run//a.sock\" }"),
        "test.toml:2:50: pool.app.servers[1].url: unix:/run/a.sock is already servers[0]",
    );
}

#[test]
fn server_weight_out_of_range() {
    assert_error(
        &pool_servers("{ url = \"http://a\", weight = 1001 }"),
        "test.toml:2:41: pool.app.servers[0].weight: must be between 0 and 1000, not 1001",
    );
    assert_error(
        &pool_servers("{ url = \"http://a\", weight = -1 }"),
        "test.toml:2:41: pool.app.servers[0].weight: must be between 0 and 1000, not -1",
    );
}

#[test]
fn every_server_weight_zero() {
    assert_error(
        &pool_servers("{ url = \"http://a\", weight = 0 }, { url = \"http://b\", weight = 0 }"),
        "test.toml:2:11: pool.app.servers: every server has weight 0, so requests have nowhere to go; give at least one a weight above 0",
    );
}

#[test]
fn server_route_invalid() {
    for route in ["", "http.1", "a b"] {
        assert_error(
            &pool_servers(&format!("{{ url = \"http://a\", route = \"{route}\" }}")),
            &format!(
                "test.toml:2:40: pool.app.servers[0].route: \"{route}\" must be non-empty and use only letters, digits, '-' and '_'"
            ),
        );
    }
}

#[test]
fn duplicate_server_route() {
    assert_error(
        &pool_servers(
            "{ url = \"http://a\", route = \"r1\" }, { url = \"http://b\", route = \"r1\" }",
        ),
        "test.toml:2:76: pool.app.servers[1].route: \"r1\" is already the route of servers[0]",
    );
    // The same route id in two pools is fine.
    let text = format!(
        "{}[pool.other]\nservers = [{{ url = \"http://a\", route = \"r1\" }}]\n",
        pool_servers("{ url = \"http://a\", route = \"r1\" }")
    );
    assert_eq!(parse(&text).l7.pools.len(), 2);
}

#[test]
fn balance_unknown() {
    assert_error(
        &pool_with("balance = \"random\"\nservers = [{ url = \"http://a\" }]\n"),
        "test.toml:2:11: pool.app.balance: unknown variant `random`, expected one of `round-robin`, `least-conn`, `p2c`, `hash`",
    );
}

#[test]
fn hash_on_without_balance_hash() {
    assert_error(
        &pool_with("hash_on = \"client\"\nservers = [{ url = \"http://a\" }]\n"),
        "test.toml:2:11: pool.app.hash_on: only allowed with balance = \"hash\", not \"round-robin\"",
    );
    assert_error(
        &pool_with(
            "balance = \"least-conn\"\nhash_on = \"client\"\nservers = [{ url = \"http://a\" }]\n",
        ),
        "test.toml:3:11: pool.app.hash_on: only allowed with balance = \"hash\", not \"least-conn\"",
    );
}

#[test]
fn hash_on_invalid() {
    for (hash_on, what) in [
        ("source", "\"source\" must be \"client\", \"header:NAME\" or \"cookie:NAME\"".to_string()),
        ("Client", "\"Client\" must be \"client\", \"header:NAME\" or \"cookie:NAME\"".to_string()),
        ("header", "\"header\" must be \"client\", \"header:NAME\" or \"cookie:NAME\"".to_string()),
        ("header:", "\"\" is not a valid header name (one or more letters, digits or !#$%&'*+-.^_`|~)".to_string()),
        ("header:X User", "\"X User\" is not a valid header name (one or more letters, digits or !#$%&'*+-.^_`|~)".to_string()),
        ("header:X:Y", "\"X:Y\" is not a valid header name (one or more letters, digits or !#$%&'*+-.^_`|~)".to_string()),
        ("cookie:a=b", "\"a=b\" is not a valid cookie name (one or more letters, digits or !#$%&'*+-.^_`|~)".to_string()),
        ("cookie:", "\"\" is not a valid cookie name (one or more letters, digits or !#$%&'*+-.^_`|~)".to_string()),
    ] {
        assert_error(
            &pool_with(&format!(
                "balance = \"hash\"\nhash_on = \"{hash_on}\"\nservers = [{{ url = \"http://a\" }}]\n"
            )),
            &format!("test.toml:3:11: pool.app.hash_on: {what}"),
        );
    }
}

#[test]
fn keepalive_out_of_range() {
    assert_error(
        &format!("{POOL}keepalive = {{ max_idle = 10001 }}\n"),
        "test.toml:3:26: pool.app.keepalive.max_idle: must be between 0 and 10000, not 10001",
    );
    assert_error(
        &format!("{POOL}keepalive = {{ idle_timeout = \"0s\" }}\n"),
        "test.toml:3:30: pool.app.keepalive.idle_timeout: must be above 0 and at most 1h, not 0s",
    );
    assert_error(
        &format!("{POOL}keepalive = {{ reuse = \"yes\" }}\n"),
        "test.toml:3:23: pool.app.keepalive.reuse: invalid type: string \"yes\", expected a boolean",
    );
}

#[test]
fn retry_out_of_range() {
    assert_error(
        &format!("{POOL}retry = {{ after_failure = \"2h\" }}\n"),
        "test.toml:3:27: pool.app.retry.after_failure: must be between 0s and 1h, not 2h",
    );
}

#[test]
fn pool_timeouts_out_of_range() {
    for (key, value, what) in [
        ("connect", "0s", "must be above 0 and at most 1h, not 0s"),
        (
            "connect",
            "3601s",
            "must be above 0 and at most 1h, not 1h 1s",
        ),
        ("response", "0ms", "must be above 0 and at most 1h, not 0s"),
        ("response", "2h", "must be above 0 and at most 1h, not 2h"),
        (
            "websocket_idle",
            "0s",
            "must be above 0 and at most 1day, not 0s",
        ),
        (
            "websocket_idle",
            "25h",
            "must be above 0 and at most 1day, not 1day 1h",
        ),
    ] {
        let column = 17 + key.len();
        assert_error(
            &format!("{POOL}timeouts = {{ {key} = \"{value}\" }}\n"),
            &format!("test.toml:3:{column}: pool.app.timeouts.{key}: {what}"),
        );
    }
}

#[test]
fn h2c_not_a_boolean() {
    assert_error(
        &format!("{POOL}h2c = \"prior-knowledge\"\n"),
        "test.toml:3:7: pool.app.h2c: invalid type: string \"prior-knowledge\", expected a boolean",
    );
}

// ---- Forwarded-header trust and rewriting (issue 5) --------------------------------------------

#[test]
fn trust_hygiene_and_rewrite_keys() {
    let text = format!(
        "{LISTENER}trusted_proxies = [\"198.18.5.0/24\", \"2001:2::7\"]
trusted_headers = [\"x-forwarded-for\", \"Forwarded:proto\", \"X-Forwarded-Prefix\"]
underscore_headers = \"reject\"
allowed_hosts = [\"www.example.test\", \"*.example.test\"]
disallowed_host_status = 400
identity_headers = [\"X-Auth-User\"]
emit_forwarded = false
emit_x_real_ip = true
{POOL}[[route]]
listener = \"http\"
pool = \"app\"
request_headers = {{ set = {{ \"X-Forwarded-Port\" = \"443\", \"X-Env\" = \" prod \" }}, unset = [\"X-Debug\"] }}
response_headers = {{ set = {{ \"Strict-Transport-Security\" = \"max-age=63072000\" }} }}
rewrite_location = false
rewrite_cookie_path = false
rewrite_html = true
debug_headers = true
"
    );
    let config = parse_in(&text).l7;
    let listener = &config.listeners[0];
    assert_eq!(
        listener.trusted_proxies,
        [
            "198.18.5.0/24".parse::<ipnet::IpNet>().expect("cidr"),
            "2001:2::7/128".parse().expect("cidr"),
        ]
    );
    assert_eq!(
        listener.trusted_headers,
        [
            TrustedHeader::XForwardedFor,
            TrustedHeader::ForwardedProto,
            TrustedHeader::XForwardedPrefix,
        ]
    );
    assert_eq!(listener.underscore_headers, UnderscorePolicy::Reject);
    assert_eq!(
        listener.allowed_hosts,
        [
            HostPattern::Exact("www.example.test".to_string()),
            HostPattern::Suffix("example.test".to_string()),
        ]
    );
    assert_eq!(listener.disallowed_host_status, 400);
    assert_eq!(listener.identity_headers, ["x-auth-user"]);
    assert!(!listener.emit_forwarded);
    assert!(listener.emit_x_real_ip);

    let route = &config.routes[0];
    assert_eq!(
        route.request_headers,
        HeaderEdits {
            set: vec![
                ("x-forwarded-port".to_string(), "443".to_string()),
                ("x-env".to_string(), "prod".to_string()),
            ],
            unset: vec!["x-debug".to_string()],
        }
    );
    assert_eq!(
        route.response_headers.set,
        [(
            "strict-transport-security".to_string(),
            "max-age=63072000".to_string()
        )]
    );
    assert!(!route.rewrite_location && !route.rewrite_cookie_path);
    assert!(route.rewrite_html && route.debug_headers);
}

#[test]
fn trust_defaults() {
    let config = parse_in(&route_with("")).l7;
    let listener = &config.listeners[0];
    assert!(listener.trusted_proxies.is_empty() && listener.trusted_headers.is_empty());
    assert_eq!(listener.underscore_headers, UnderscorePolicy::Drop);
    assert!(listener.allowed_hosts.is_empty());
    assert_eq!(listener.disallowed_host_status, 421);
    assert!(
        listener
            .identity_headers
            .contains(&"remote-user".to_string())
    );
    assert!(
        listener
            .identity_headers
            .contains(&"x-remote-user".to_string())
    );
    assert!(listener.emit_forwarded && !listener.emit_x_real_ip);
    let route = &config.routes[0];
    assert!(route.request_headers.is_empty() && route.response_headers.is_empty());
    assert!(route.rewrite_location && route.rewrite_cookie_path);
    assert!(!route.rewrite_html && !route.debug_headers);
}

#[test]
fn forwarded_header_trust_errors() {
    let with_proxies = |headers: &str| {
        listener_with(&format!(
            "trusted_proxies = [\"198.18.5.0/24\"]\ntrusted_headers = {headers}\n"
        ))
    };
    assert_error(
        &with_proxies("[\"X-Forwarded-For\", \"X-Real-IP\"]"),
        "test.toml:5:39: listener[0].trusted_headers: \"X-Real-IP\" and \"X-Forwarded-For\" both carry the client address: trust one header per group, so that a proxy and a client cannot disagree through the other",
    );
    assert_error(
        &with_proxies("[\"Forwarded\", \"X-Forwarded-Proto\"]"),
        "test.toml:5:33: listener[0].trusted_headers: \"X-Forwarded-Proto\" and \"Forwarded\" both carry the scheme: trust one header per group, so that a proxy and a client cannot disagree through the other",
    );
    assert_error(
        &with_proxies("[\"X-Forwarded-Host\", \"x-forwarded-host\"]"),
        "test.toml:5:40: listener[0].trusted_headers: \"x-forwarded-host\" and \"X-Forwarded-Host\" both carry the host: trust one header per group, so that a proxy and a client cannot disagree through the other",
    );
    assert_error(
        &with_proxies("[\"X-Forwarded-Fro\"]"),
        "test.toml:5:20: listener[0].trusted_headers: \"X-Forwarded-Fro\" is not a forwarded header this balancer reads; one of \"Forwarded\", \"X-Forwarded-For\", \"X-Real-IP\", \"X-Client-IP\", \"Forwarded:for\", \"X-Forwarded-Proto\", \"X-Forwarded-Scheme\", \"X-Forwarded-SSL\", \"X-Forwarded-HTTPS\", \"X-HTTPS\", \"X-Scheme\", \"Forwarded:proto\", \"X-Forwarded-Host\", \"Forwarded:host\", \"X-Forwarded-Port\", \"X-Forwarded-Prefix\"",
    );
    assert_error(
        &listener_with("trusted_headers = [\"X-Forwarded-For\"]\n"),
        "test.toml:4:19: listener[0].trusted_headers: trusted_headers needs trusted_proxies: the addresses of the proxies allowed to send them",
    );
    assert_error(
        &listener_with("trusted_proxies = [\"198.18.5.0/24\"]\n"),
        "test.toml:4:20: listener[0].trusted_proxies: trusted_proxies without trusted_headers trusts nothing: list the headers these proxies set, e.g. trusted_headers = [\"X-Forwarded-For\", \"X-Forwarded-Proto\"]",
    );
    assert_error(
        &listener_with("trusted_proxies = [\"198.18.5.1/24\"]\n"),
        "test.toml:4:20: listener[0].trusted_proxies[0]: \"198.18.5.1/24\" has host bits set: did you mean 198.18.5.0/24?",
    );
    assert_error(
        &listener_with("underscore_headers = \"keep\"\n"),
        "test.toml:4:22: listener[0].underscore_headers: unknown variant `keep`, expected one of `drop`, `reject`, `allow`",
    );
}

#[test]
fn allowed_hosts_errors() {
    assert_error(
        &listener_with("allowed_hosts = []\n"),
        "test.toml:4:17: listener[0].allowed_hosts: is empty, which would refuse every request; leave it out to allow every host",
    );
    assert_error(
        &listener_with("allowed_hosts = [\"www.example.test\"]\ndisallowed_host_status = 404\n"),
        "test.toml:5:26: listener[0].disallowed_host_status: 404 must be 421 (Misdirected Request) or 400 (Bad Request)",
    );
    assert_error(
        &listener_with("disallowed_host_status = 400\n"),
        "test.toml:4:26: listener[0].disallowed_host_status: only allowed with allowed_hosts",
    );
    assert_error(
        &listener_with("allowed_hosts = [\"www.exa mple.test\"]\n"),
        "test.toml:4:18: listener[0].allowed_hosts: \"www.exa mple.test\" must not contain whitespace or control characters",
    );
    assert_error(
        &listener_with("identity_headers = [\"Remote User\"]\n"),
        "test.toml:4:21: listener[0].identity_headers: \"Remote User\" is not a header name (letters, digits and !#$%&'*+-.^_`|~)",
    );
}

#[test]
fn header_edit_errors() {
    assert_error(
        &route_with("request_headers = { set = { \"X Bad\" = \"1\" } }\n"),
        "test.toml:9:39: route[0].request_headers.set: \"X Bad\" is not a header name (letters, digits and !#$%&'*+-.^_`|~)",
    );
    assert_error(
        &route_with("request_headers = { set = { \"X-A\" = \"1\\r\\nX-B: 2\" } }\n"),
        "test.toml:9:37: route[0].request_headers.set.x-a: a header value cannot hold control characters (line breaks, NUL, ...)",
    );
    assert_error(
        &route_with("request_headers = { set = { \"X-A\" = \"1\", \"x-a\" = \"2\" } }\n"),
        "test.toml:9:50: route[0].request_headers.set.x-a: is set twice (header names are case-insensitive)",
    );
    assert_error(
        &route_with("request_headers = { unset = [\"Connection\"] }\n"),
        "test.toml:9:30: route[0].request_headers.unset: \"connection\" is set by the proxy itself and cannot be edited",
    );
    assert_error(
        &route_with("response_headers = { set = { \"Host\" = \"a\" } }\n"),
        "test.toml:9:39: route[0].response_headers.set: \"host\" is set by the proxy itself and cannot be edited (use preserve_host)",
    );
    assert_error(
        &route_with("request_headers = { add = { \"X-A\" = \"1\" } }\n"),
        "test.toml:9:21: route[0].request_headers.add: unknown field `add`, expected `set` or `unset`",
    );
}

// ---- Sticky sessions, pool health, admin token (issue 6) --------------------------------------

#[test]
fn sticky_health_passive_and_slow_start_keys() {
    let text = "[pool.django]
servers = [{ url = \"http://198.18.1.2:8000\", route = \"a\" }, { url = \"unix:/run/b.sock\", route = \"b\" }]
sticky = { mode = \"route-suffix\", cookie = \"sessionid\", path_param = \"jsessionid\", strip_route = false }
health = { path = \"/healthz/\", host = \"www.example.test\", expect = [200, 204], interval = \"500ms\", timeout = \"200ms\", rise = 1, fall = 2 }
passive = { failures = 3, window = \"5s\" }
slow_start = \"30s\"
[pool.other]
servers = [{ url = \"http://198.18.1.3\" }]
sticky = { mode = \"insert\", key_file = \"keys/sticky.key\" }
[pool.third]
servers = [{ url = \"http://198.18.1.4\" }]
sticky = { mode = \"insert\", cookie = \"lb\", key = \"0123456789abcdef\" }
";
    let pools = parse_in(text).l7.pools;
    let django = &pools[0];
    assert_eq!(
        django.sticky,
        Some(StickyConfig::RouteSuffix {
            cookie: Some("sessionid".to_string()),
            path_param: Some("jsessionid".to_string()),
            strip_route: false,
        })
    );
    assert_eq!(
        django.health,
        Some(PoolHealthConfig {
            path: "/healthz/".to_string(),
            host: Some("www.example.test".to_string()),
            expect: vec![200, 204],
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(200),
            rise: 1,
            fall: 2,
            port: None,
            tls: None,
        })
    );
    assert_eq!(
        django.passive,
        PassiveHealthConfig {
            failures: 3,
            window: Duration::from_secs(5)
        }
    );
    assert_eq!(django.slow_start, Duration::from_secs(30));
    assert_eq!(
        pools[1].sticky,
        Some(StickyConfig::Insert {
            cookie: "balancer_sticky".to_string(),
            key: StickyKey::File(path("/etc/balancer/keys/sticky.key")),
        })
    );
    assert_eq!(pools[1].health, None);
    assert_eq!(pools[1].passive, PassiveHealthConfig::default());
    assert_eq!(pools[1].slow_start, Duration::ZERO);
    assert_eq!(
        pools[2].sticky,
        Some(StickyConfig::Insert {
            cookie: "lb".to_string(),
            key: StickyKey::Inline("0123456789abcdef".to_string()),
        })
    );
}

#[test]
fn pool_health_defaults() {
    let health = parse_in(&pool_with(
        "servers = [{ url = \"http://a\" }]\nhealth = { path = \"/\" }\n",
    ))
    .l7
    .pools[0]
        .health
        .clone()
        .expect("health");
    assert_eq!(
        (health.interval, health.timeout, health.rise, health.fall),
        (Duration::from_secs(2), Duration::from_secs(1), 2, 3)
    );
    assert!(health.host.is_none() && health.expect.is_empty());
}

#[test]
fn pool_health_port_and_tls() {
    let health = |keys: &str| {
        parse_in(&pool_with(&format!(
            "servers = [{{ url = \"http://a:8000\" }}]\nhealth = {{ path = \"/\"{keys} }}\n"
        )))
        .l7
        .pools[0]
            .health
            .clone()
            .expect("health")
    };
    let cases: [(&str, Option<u16>, Option<HealthTls>); 5] = [
        ("", None, None),
        (", port = 8443", Some(8443), None),
        (", tls = false", None, None),
        (
            ", port = 8443, tls = true",
            Some(8443),
            Some(HealthTls { ca_file: None }),
        ),
        (
            ", tls = true, tls_ca_file = \"certs/ca.pem\"",
            None,
            Some(HealthTls {
                ca_file: Some(path("/etc/balancer/certs/ca.pem")),
            }),
        ),
    ];
    for (keys, port, tls) in cases {
        let health = health(keys);
        assert_eq!((health.port, health.tls), (port, tls), "keys: {keys:?}");
    }
}

#[test]
fn pool_health_port_and_tls_errors() {
    let unix = "servers = [{ url = \"http://a\" }, { url = \"unix:/run/b.sock\" }]\n";
    assert_error(
        &pool_with(&format!("{unix}health = {{ path = \"/\", port = 8443 }}\n")),
        "test.toml:2:42: pool.app.servers[1]: unix:/run/b.sock is a unix socket: health checks with port = 8443 need http:// or https:// servers",
    );
    assert_error(
        &pool_with(&format!("{unix}health = {{ path = \"/\", tls = true }}\n")),
        "test.toml:2:42: pool.app.servers[1]: unix:/run/b.sock is a unix socket: health checks with tls = true need http:// servers",
    );
    let http = "servers = [{ url = \"http://a\" }]\n";
    assert_error(
        &pool_with(&format!(
            "{http}health = {{ path = \"/\", tls_ca_file = \"ca.pem\" }}\n"
        )),
        "test.toml:3:38: pool.app.health.tls_ca_file: needs tls = true: it verifies the certificate of a TLS check",
    );
    assert_error(
        &pool_with(&format!(
            "{http}health = {{ path = \"/\", tls = false, tls_ca_file = \"ca.pem\" }}\n"
        )),
        "test.toml:3:51: pool.app.health.tls_ca_file: needs tls = true: it verifies the certificate of a TLS check",
    );
    assert_error(
        &pool_with(&format!(
            "{http}health = {{ path = \"/\", tls = true, tls_ca_file = \"\" }}\n"
        )),
        "test.toml:3:50: pool.app.health.tls_ca_file: must not be empty",
    );
    assert_error(
        &pool_with(&format!("{http}health = {{ path = \"/\", port = 0 }}\n")),
        "test.toml:3:31: pool.app.health.port: must be between 1 and 65535, not 0",
    );
    assert_error(
        &pool_with(&format!(
            "{http}health = {{ path = \"/\", tls = \"yes\" }}\n"
        )),
        "test.toml:3:30: pool.app.health.tls: invalid type: string \"yes\", expected a boolean",
    );
}

#[test]
fn sticky_and_health_errors() {
    let servers = "servers = [{ url = \"http://a\", route = \"a\" }, { url = \"http://b\" }]\n";
    assert_error(
        &pool_with(&format!(
            "{servers}sticky = {{ mode = \"route-suffix\", cookie = \"sessionid\" }}\n"
        )),
        "test.toml:2:55: pool.app.servers[1]: needs a route = \"...\": sticky mode route-suffix routes sessions by the suffix .ROUTE of their id",
    );
    assert_error(
        &pool_with(&format!(
            "{servers}sticky = {{ mode = \"route-suffix\" }}\n"
        )),
        "test.toml:3:10: pool.app.sticky: route-suffix needs the session's cookie (cookie = \"sessionid\") or URL path parameter (path_param = \"jsessionid\"), or both",
    );
    assert_error(
        &pool_with(&format!("{servers}sticky = {{ mode = \"insert\" }}\n")),
        "test.toml:3:10: pool.app.sticky: mode = \"insert\" needs the HMAC key that signs its cookies: key = \"...\" or key_file = \"PATH\"",
    );
    assert_error(
        &pool_with(&format!(
            "{servers}sticky = {{ mode = \"insert\", key = \"short\" }}\n"
        )),
        "test.toml:3:35: pool.app.sticky.key: is 5 bytes; a signing key needs at least 16",
    );
    assert_error(
        &pool_with(&format!(
            "{servers}sticky = {{ mode = \"insert\", key = \"0123456789abcdef\", key_file = \"k\" }}\n"
        )),
        "test.toml:3:66: pool.app.sticky.key_file: give key or key_file, not both",
    );
    assert_error(
        &pool_with(&format!(
            "{servers}sticky = {{ mode = \"insert\", key = \"0123456789abcdef\", strip_route = true }}\n"
        )),
        "test.toml:3:69: pool.app.sticky.strip_route: not used with mode = \"insert\"",
    );
    assert_error(
        &pool_with(&format!(
            "{servers}sticky = {{ mode = \"insert\", key = \"0123456789abcdef\", cookie = \"a b\" }}\n"
        )),
        "test.toml:3:64: pool.app.sticky.cookie: \"a b\" is not a cookie or parameter name (letters, digits and !#$%&'*+-.^_`|~)",
    );
    assert_error(
        &pool_with(&format!("{servers}sticky = {{ mode = \"cookie\" }}\n")),
        "test.toml:3:19: pool.app.sticky.mode: unknown variant `cookie`, expected `route-suffix` or `insert`",
    );
    assert_error(
        &pool_with(&format!("{servers}health = {{ path = \"healthz\" }}\n")),
        "test.toml:3:19: pool.app.health.path: \"healthz\" must start with '/' and contain no whitespace or control characters",
    );
    assert_error(
        &pool_with(&format!(
            "{servers}health = {{ path = \"/\", interval = \"1s\", timeout = \"2s\" }}\n"
        )),
        "test.toml:3:51: pool.app.health.timeout: must be above 0 and at most the interval (1s), not 2s",
    );
    assert_error(
        &pool_with(&format!("{servers}health = {{ path = \"/\", rise = 0 }}\n")),
        "test.toml:3:31: pool.app.health.rise: must be between 1 and 100, not 0",
    );
    assert_error(
        &pool_with(&format!("{servers}health = {{ interval = \"1s\" }}\n")),
        "test.toml:3:10: pool.app.health: missing field `path`",
    );
    assert_error(
        &pool_with(&format!("{servers}passive = {{ failures = 1001 }}\n")),
        "test.toml:3:24: pool.app.passive.failures: must be between 0 and 1000, not 1001",
    );
    assert_error(
        &pool_with(&format!("{servers}slow_start = \"2h\"\n")),
        "test.toml:3:14: pool.app.slow_start: must be between 0s and 1h, not 2h",
    );
}

#[test]
fn server_state_is_the_initial_operator_state() {
    let config = parse(&format!(
        "{LISTENER}[pool.app]\nservers = [ {{ url = \"http://198.18.1.2:8000\", state = \"draining\" }}, \
         {{ url = \"http://198.18.1.3:8000\", state = \"disabled\" }}, {{ url = \"http://198.18.1.4:8000\" }} ]\n\
         [[route]]\npool = \"app\"\n"
    ));
    let states: Vec<InitialState> = config.l7.pools[0].servers.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            InitialState::Draining,
            InitialState::Disabled,
            InitialState::Enabled
        ]
    );
    assert_error(
        &format!(
            "{LISTENER}[pool.app]\nservers = [ {{ url = \"http://198.18.1.2:8000\", state = \"asleep\" }} ]\n"
        ),
        "test.toml:5:55: pool.app.servers[0].state: \"asleep\" is not \"enabled\", \"draining\" or \"disabled\"",
    );
}

#[test]
fn rewrite_cookie_domain_maps_host_names() {
    let config = parse(&format!(
        "{LISTENER}{POOL}[[route]]\npool = \"app\"\nrewrite_cookie_domain = {{ \"App.Internal\" = \"www.example.test\" }}\n"
    ));
    assert_eq!(
        config.l7.routes[0].rewrite_cookie_domain,
        [("app.internal".to_string(), "www.example.test".to_string())]
    );
    assert_error(
        &format!(
            "{LISTENER}{POOL}[[route]]\npool = \"app\"\nrewrite_cookie_domain = {{ \"app.internal\" = \"bad host/\" }}\n"
        ),
        "test.toml:8:44: route[0].rewrite_cookie_domain.app.internal: \"bad host/\" is not a host name (its replacement)",
    );
}

#[test]
fn buffering_queue_and_retry_keys_out_of_range() {
    assert_error(
        &format!("{POOL}retry = {{ methods = [\"GET\", \"POST\"] }}\n"),
        "test.toml:3:29: pool.app.retry.methods: POST is not idempotent (RFC 9110 §9.2.2): a retry could do it twice",
    );
    assert_error(
        &format!("{POOL}retry = {{ methods = [\"get\"] }}\n"),
        "test.toml:3:22: pool.app.retry.methods: \"get\" is not a method name in uppercase, such as \"GET\"",
    );
    assert_error(
        &format!("{POOL}retry = {{ budget = 1.5 }}\n"),
        "test.toml:3:20: pool.app.retry.budget: must be between 0 and 1 (a share of recent requests), not 1.5",
    );
    assert_error(
        &format!("{POOL}queue_timeout = \"2h\"\n"),
        "test.toml:3:17: pool.app.queue_timeout: must be between 0s and 1h, not 2h",
    );
    assert_error(
        &format!("{POOL}on_down = \"retry\"\n"),
        "test.toml:3:11: pool.app.on_down: unknown variant `retry`, expected `abort` or `keep`",
    );
}

// ---- https:// servers: the pool's tls_* keys and h2 -----------------------------------------

/// A pool "app" with one https:// server, its table going on with `rest` (on line 3).
fn https_pool(rest: &str) -> String {
    format!("[pool.app]\nservers = [{{ url = \"https://app1.example.test:8443\" }}]\n{rest}")
}

#[test]
fn https_pool_keys() {
    let pool = parse_in(&https_pool(""));
    let pool = &pool.l7.pools[0];
    assert_eq!(pool.servers[0].url, https("app1.example.test", 8443));
    assert_eq!(
        pool.servers[0].url.to_string(),
        "https://app1.example.test:8443"
    );
    assert_eq!(pool.servers[0].url.authority(), "app1.example.test:8443");
    assert_eq!(https("app.test", 443).authority(), "app.test");
    assert_eq!((&pool.tls, pool.h2), (&ServerTlsConfig::default(), false));

    let config = parse_in(&https_pool(
        "tls_ca_file = \"certs/ca.pem\"\ntls_server_name = \"App.Internal.\"\ntls_cert_file = \"/etc/ssl/client.pem\"\ntls_key_file = \"client.key\"\nh2 = true\n",
    ));
    let pool = &config.l7.pools[0];
    assert_eq!(
        pool.tls,
        ServerTlsConfig {
            ca_file: Some(path("/etc/balancer/certs/ca.pem")),
            server_name: Some("app.internal".to_string()),
            client_cert: Some(CertificatePaths {
                cert: path("/etc/ssl/client.pem"),
                key: path("/etc/balancer/client.key"),
            }),
        }
    );
    assert!(pool.h2);
    // An IP address is a name too (verified against the certificate's IP SANs).
    let config = parse_in(&https_pool("tls_server_name = \"198.18.1.2\"\n"));
    assert_eq!(
        config.l7.pools[0].tls.server_name.as_deref(),
        Some("198.18.1.2")
    );
    assert!(!parse(&format!("{POOL}h2 = false\n")).l7.pools[0].h2);
    // A pool may mix http:// and https:// servers; h2c is then refused, not half applied.
    let mixed = pool_servers("{ url = \"http://198.18.1.2\" }, { url = \"https://198.18.1.3\" }");
    assert_eq!(parse(&mixed).l7.pools[0].servers.len(), 2);
}

#[test]
fn https_pool_key_errors() {
    assert_error(
        &https_pool("tls_cert_file = \"client.pem\"\n"),
        "test.toml:3:17: pool.app.tls_cert_file: needs tls_key_file: a client certificate is presented with its private key",
    );
    assert_error(
        &https_pool("tls_key_file = \"client.key\"\n"),
        "test.toml:3:16: pool.app.tls_key_file: needs tls_cert_file: a private key alone is no client certificate",
    );
    assert_error(
        &https_pool("tls_ca_file = \"\"\n"),
        "test.toml:3:15: pool.app.tls_ca_file: must not be empty",
    );
    assert_error(
        &https_pool("tls_server_name = \"not a name\"\n"),
        "test.toml:3:19: pool.app.tls_server_name: \"not a name\" is not a DNS name or an IP address (it is sent as SNI and verified against the certificate)",
    );
    assert_error(
        &https_pool("h2c = true\n"),
        "test.toml:3:7: pool.app.h2c: speaks HTTP/2 without TLS, but servers[0] is https://app1.example.test:8443: use h2 = true to offer HTTP/2 to https:// servers",
    );
    assert_error(
        &https_pool("h2 = \"yes\"\n"),
        "test.toml:3:6: pool.app.h2: invalid type: string \"yes\", expected a boolean",
    );
    for (key, value, column) in [
        ("tls_ca_file", "\"ca.pem\"", 15),
        ("tls_server_name", "\"app.internal\"", 19),
        ("h2", "true", 6),
    ] {
        assert_error(
            &format!("{POOL}{key} = {value}\n"),
            &format!(
                "test.toml:3:{column}: pool.app.{key}: applies to https:// servers, and the pool has none"
            ),
        );
    }
    assert_error(
        &https_pool("health = { path = \"/\", tls = true }\n"),
        "test.toml:3:30: pool.app.health.tls: https://app1.example.test:8443 is checked over TLS with the pool's tls_* settings already: health tls = true is for http:// servers",
    );
    // A port for the checks is fine: they speak TLS there too.
    let config = parse(&https_pool("health = { path = \"/\", port = 9443 }\n"));
    assert_eq!(config.l7.pools[0].health.as_ref().unwrap().port, Some(9443));
}
