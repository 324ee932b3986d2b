//! A real Django app behind the balancer: two gunicorn backends of one Django site (one on TCP,
//! one on a unix socket, sharing a SQLite database), the site configured the way Django's
//! deployment docs say for a TLS-terminating proxy (tests/django/webapp/settings.py), and
//! `balancer` in front with HTTPS, the site mounted at /webapps/, trusted proxies and allowed
//! hosts. Clients are curl processes bound to their own source addresses in the namespace:
//! [`CLIENT_IP`] an ordinary (untrusted) client, [`PROXY_IP`] a proxy the listener trusts.
//!
//! - The harness itself: gunicorn answers directly (its proxy middleware trusts only the
//!   balancer), a session made on one backend is valid on the other, and Django answers
//!   through the balancer on plain paths.
//! - The admin login end to end: form, POST with the CSRF token, redirect to the admin index
//!   at the public URL, session cookie with the public path.
//! - What Django sees: the real client address, https, the public host and port, the script
//!   prefix, `Authorization` exactly as sent.
//! - Spoofed forwarded headers from an untrusted client never reach Django; a trusted proxy's
//!   listed headers are honoured.
//! - Django's redirects come back with the public Location.
//! - A host outside `allowed_hosts` is refused at the edge (421) and never reaches Django.
//!
//! Each test has its own namespace, site and processes; the Django virtualenv comes from
//! `cargo xtask setup` (a test fails, saying so, without it).

use std::collections::BTreeSet;

use balancer_tests::{
    BalancerProcess, Certs, L7Net, curl,
    django::{self, DjangoSite, Gunicorn, SiteSettings},
    l7::CurlReply,
};
use serde_json::Value;

const PUBLIC_HOST: &str = "www.example.test";
const PUBLIC_PORT: &str = "8443";
const PUBLIC_ORIGIN: &str = "https://www.example.test:8443";
/// The host as the client writes it (with the non-default port).
const PUBLIC_AUTHORITY: &str = "www.example.test:8443";
/// A name on the balancer's certificate that is not an allowed host.
const OTHER_HOST: &str = "other.test";
const PREFIX: &str = "/webapps";
/// The balancer's HTTPS listener.
const LISTEN_IP: &str = "198.18.0.1";
const LISTEN: &str = "198.18.0.1:8443";
/// Backend a listens here; connections on `lo` to it come from this address too, so it is
/// also the balancer's source address as the backends see it.
const BACKEND_IP: &str = "198.18.1.1";
const BACKEND_A: &str = "198.18.1.1:8001";
/// An ordinary client: not a trusted proxy.
const CLIENT_IP: &str = "198.18.4.2";
/// A proxy in front of the balancer, in its `trusted_proxies`.
const PROXY_IP: &str = "198.18.5.2";
const TRUSTED_PROXIES: &str = "198.18.5.0/24";

/// Which balancer config a [`Stack`] runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Edge {
    /// The full acceptance config: trusted proxies and headers, underscore headers dropped,
    /// allowed hosts, and a second route for any host (so only `allowed_hosts` keeps other
    /// hosts from the site).
    Policy,
    /// Only listener, route and pool keys every balancer version knows (the harness's own test).
    Plain,
}

/// The namespace, the CA, the site, backends a (TCP) and b (unix socket), and the balancer.
/// Fields drop in order: the balancer and the backends stop before their files and the
/// namespace go.
struct Stack {
    balancer: BalancerProcess,
    a: Gunicorn,
    b: Gunicorn,
    site: DjangoSite,
    certs: Certs,
    net: L7Net,
}

impl Stack {
    fn start(tag: &str, edge: Edge) -> Stack {
        let net = L7Net::new(tag).expect("namespace");
        for address in [LISTEN_IP, BACKEND_IP, CLIENT_IP, PROXY_IP] {
            net.ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"])
                .expect("address on lo");
        }
        let site = DjangoSite::create(SiteSettings {
            public_host: PUBLIC_HOST.into(),
            public_origin: PUBLIC_ORIGIN.into(),
            // The balancer (its source address, or the unix socket) and the proxy in front of
            // it: the site's proxy middleware skips both in X-Forwarded-For.
            trusted_proxies: vec![BACKEND_IP.into(), "unix".into(), TRUSTED_PROXIES.into()],
        })
        .unwrap_or_else(|err| panic!("creating the Django site: {err:#}"));
        let a = site
            .start_backend(&net, "a", &[BACKEND_A])
            .unwrap_or_else(|err| panic!("backend a: {err:#}"));
        let socket = format!("unix:{}", site.socket_path("b").display());
        let b = site
            .start_backend(&net, "b", &[&socket])
            .unwrap_or_else(|err| panic!("backend b: {err:#}"));
        let certs = Certs::new().expect("CA");
        let cert = certs
            .issue("site", &[PUBLIC_HOST, OTHER_HOST])
            .expect("certificate");
        let config = balancer_config(edge, &cert.toml(), &a.url(), &b.url());
        let balancer = net
            .start_balancer(&config)
            .unwrap_or_else(|err| panic!("balancer should start with\n{config}\nbut: {err:#}"));
        Stack {
            balancer,
            a,
            b,
            site,
            certs,
            net,
        }
    }

    /// The logs of everything, for a failure message.
    fn diagnostics(&self) -> String {
        format!(
            "balancer log:\n{}\ngunicorn a stderr:\n{}\ngunicorn a access log:\n{}\n\
             gunicorn b stderr:\n{}\ngunicorn b access log:\n{}",
            self.balancer.log(),
            self.a.log(),
            self.a.access_log(),
            self.b.log(),
            self.b.access_log()
        )
    }

    /// curl from `source` (an address on `lo`) with the public names resolved to the listener
    /// and the test CA trusted; panics with every log if curl fails.
    fn curl(&self, source: &str, args: &[&str]) -> CurlReply {
        let resolve_public = format!("{PUBLIC_HOST}:{PUBLIC_PORT}:{LISTEN_IP}");
        let resolve_other = format!("{OTHER_HOST}:{PUBLIC_PORT}:{LISTEN_IP}");
        let ca = self.certs.ca_path().display().to_string();
        let mut full = vec![
            "--interface",
            source,
            "--resolve",
            &resolve_public,
            "--resolve",
            &resolve_other,
            "--cacert",
            &ca,
        ];
        full.extend_from_slice(args);
        curl(&self.net, &full).unwrap_or_else(|err| {
            panic!(
                "curl {args:?} from {source}: {err:#}\n{}",
                self.diagnostics()
            )
        })
    }

    /// GET /webapps/meta/ from `source` with `headers` (`Name: value`), `extra` curl flags:
    /// asserts 200 and returns Django's view of the request.
    fn meta(&self, source: &str, query: &str, headers: &[&str], extra: &[&str]) -> Value {
        let url = format!("{PUBLIC_ORIGIN}{PREFIX}/meta/{query}");
        let mut args: Vec<&str> = extra.to_vec();
        for header in headers {
            args.extend(["-H", header]);
        }
        args.push(&url);
        let reply = self.curl(source, &args);
        assert_eq!(
            reply.status,
            200,
            "GET {url} from {source} with {headers:?}: expected Django's /meta/ view, got \
             {} {:?} (Location {:?})\n{}",
            reply.status,
            reply.text(),
            reply.header("location"),
            self.diagnostics()
        );
        let seen: Value = serde_json::from_slice(&reply.body).unwrap_or_else(|err| {
            panic!(
                "/meta/ is not JSON ({err}): {:?}\n{}",
                reply.text(),
                self.diagnostics()
            )
        });
        assert_eq!(
            reply.header("x-backend"),
            seen["backend"].as_str(),
            "X-Backend names the backend that answered"
        );
        seen
    }
}

/// The balancer's config: HTTPS on [`LISTEN`], the site at /webapps/ (prefix stripped), pool
/// "django" of backends a and b.
fn balancer_config(edge: Edge, cert: &str, a_url: &str, b_url: &str) -> String {
    let policy = match edge {
        Edge::Policy => format!(
            r#"trusted_proxies = ["{TRUSTED_PROXIES}"]
trusted_headers = ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"]
underscore_headers = "drop"
allowed_hosts = ["{PUBLIC_HOST}"]
"#
        ),
        Edge::Plain => String::new(),
    };
    let any_host_route = match edge {
        Edge::Policy => format!(
            r#"
[[route]]
name = "any-host"
listener = "https"
path = "{PREFIX}/"
strip_prefix = true
pool = "django"
"#
        ),
        Edge::Plain => String::new(),
    };
    format!(
        r#"
[admin]
listen = "127.0.0.1:9100"

[[listener]]
name = "https"
bind = "{LISTEN}"
tls = {{ certificates = [ {cert} ] }}
{policy}
[[route]]
name = "django"
listener = "https"
host = "{PUBLIC_HOST}"
path = "{PREFIX}/"
strip_prefix = true
pool = "django"
{any_host_route}
[pool.django]
servers = [ {{ url = "{a_url}", route = "a" }}, {{ url = "{b_url}", route = "b" }} ]
"#
    )
}

/// A string field of Django's view, or a panic showing the whole view.
fn field<'a>(seen: &'a Value, key: &str) -> &'a str {
    seen[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key} in Django's view: {seen:#}"))
}

/// `location` made absolute against the public origin (a Location may be a path).
fn public_url(location: &str) -> String {
    if location.starts_with('/') {
        format!("{PUBLIC_ORIGIN}{location}")
    } else {
        location.to_string()
    }
}

/// The `Set-Cookie` header of cookie `name`, or a panic listing what came.
fn set_cookie<'a>(reply: &'a CurlReply, name: &str) -> &'a str {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name} in {:?}", reply.headers))
}

/// The value of attribute `name` of a Set-Cookie header (`Some("")` for a flag like Secure).
fn cookie_attribute<'a>(set_cookie: &'a str, name: &str) -> Option<&'a str> {
    set_cookie.split(';').skip(1).find_map(|part| {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

/// Asserts a cookie is scoped to the mount point and only sent over https.
fn assert_public_cookie(set_cookie: &str) {
    let path = cookie_attribute(set_cookie, "Path");
    assert!(
        matches!(path, Some("/webapps/" | "/webapps")),
        "the cookie's Path is the public prefix (the backend says Path=/): {set_cookie:?}"
    );
    assert!(
        cookie_attribute(set_cookie, "Secure").is_some(),
        "the cookie is Secure: {set_cookie:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The harness

#[test]
fn harness_django_answers_directly_and_through_the_balancer() {
    let stack = Stack::start("dj-harness", Edge::Plain);

    // Directly, from the balancer's address (trusted by the site's proxy middleware).
    let reply = stack
        .a
        .direct_client(&stack.net, 0)
        .send(
            &balancer_tests::Request::get("/webapps/meta/")
                .host(PUBLIC_HOST)
                .header("X-Forwarded-For", "198.18.9.9, 198.18.5.2")
                .header("X-Forwarded-Proto", "https")
                .header("X-Forwarded-Prefix", "/webapps"),
        )
        .expect("direct request to backend a");
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), stack.a.log());
    let seen = reply.json();
    assert_eq!(field(&seen, "original_remote_addr"), BACKEND_IP);
    assert_eq!(
        field(&seen, "REMOTE_ADDR"),
        "198.18.9.9",
        "from a trusted peer, the client is the rightmost untrusted X-Forwarded-For entry"
    );
    assert_eq!(field(&seen, "SCRIPT_NAME"), "/webapps");
    assert_eq!(field(&seen, "PATH_INFO"), "/meta/");
    assert_eq!(
        field(&seen, "absolute_uri"),
        "https://www.example.test/webapps/meta/"
    );

    // Directly from an untrusted address: the same headers change nothing.
    let reply = stack.curl(
        CLIENT_IP,
        &[
            "-H",
            "Host: www.example.test",
            "-H",
            "X-Forwarded-For: 198.18.9.9",
            "-H",
            "X-Forwarded-Proto: https",
            "-H",
            "X-Forwarded-Prefix: /webapps",
            &format!("http://{BACKEND_A}/meta/"),
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen: Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert_eq!(field(&seen, "REMOTE_ADDR"), CLIENT_IP);
    assert_eq!(field(&seen, "SCRIPT_NAME"), "");

    // A session made on a is valid on b (one database, one secret key).
    let session = |backend: &Gunicorn, cookie: Option<&str>| {
        let mut request = balancer_tests::Request::get("/session/")
            .host(PUBLIC_HOST)
            .header("X-Forwarded-Proto", "https");
        if let Some(cookie) = cookie {
            request = request.header("Cookie", cookie);
        }
        let reply = backend
            .direct_client(&stack.net, 0)
            .send(&request)
            .expect("direct /session/");
        assert_eq!(reply.status, 200, "{}\n{}", reply.text(), backend.log());
        reply
    };
    let first = session(&stack.a, None);
    assert_eq!(first.json()["count"], 1);
    let cookie = first
        .header_all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("sessionid="))
        .and_then(|c| c.split(';').next())
        .expect("a sessionid cookie")
        .to_string();
    let second = session(&stack.b, Some(&cookie));
    assert_eq!(
        second.json(),
        serde_json::json!({"count": 2, "backend": "b"})
    );

    // Through the balancer, on a path Django answers without forwarded headers.
    let mut backends = BTreeSet::new();
    for _ in 0..4 {
        let reply = stack.curl(CLIENT_IP, &[&format!("{PUBLIC_ORIGIN}{PREFIX}/healthz/")]);
        assert_eq!(
            reply.status,
            200,
            "{}\n{}",
            reply.text(),
            stack.diagnostics()
        );
        assert_eq!(reply.text(), "ok");
        backends.insert(reply.header("x-backend").unwrap_or("").to_string());
    }
    assert_eq!(
        backends,
        BTreeSet::from(["a".to_string(), "b".to_string()]),
        "both backends (TCP and unix socket) answer through the balancer"
    );
}

// ---------------------------------------------------------------------------------------------
// Acceptance

#[test]
fn django_admin_login_works_end_to_end_over_https() {
    let stack = Stack::start("dj-admin", Edge::Policy);
    let jar = stack.site.dir().join("cookies.txt").display().to_string();
    let cookies = ["-b", &jar, "-c", &jar];

    // Not logged in: the admin sends us to its login page, on the public URL.
    let index_url = format!("{PUBLIC_ORIGIN}{PREFIX}/admin/");
    let reply = stack.curl(CLIENT_IP, &[&cookies[..], &[&index_url]].concat());
    assert_eq!(
        reply.status,
        302,
        "{}\n{}",
        reply.text(),
        stack.diagnostics()
    );
    assert_eq!(
        public_url(reply.header("location").unwrap_or("")),
        format!("{PUBLIC_ORIGIN}{PREFIX}/admin/login/?next={PREFIX}/admin/"),
        "the admin's redirect to its login page keeps the public origin and prefix"
    );

    // The form, and its CSRF cookie.
    let login_url = format!("{PUBLIC_ORIGIN}{PREFIX}/admin/login/?next={PREFIX}/admin/");
    let form = stack.curl(CLIENT_IP, &[&cookies[..], &[&login_url]].concat());
    assert_eq!(form.status, 200, "{}\n{}", form.text(), stack.diagnostics());
    let token = django::csrf_token(&form.text()).expect("the login form's CSRF token");
    assert_public_cookie(set_cookie(&form, "csrftoken"));
    assert!(
        form.text()
            .contains(&format!("action=\"{PREFIX}/admin/login/")),
        "the form posts to the prefixed path:\n{}",
        form.text()
    );

    // The POST, as a browser sends it: Origin, Referer, the CSRF cookie and token.
    let body = django::admin_login_body(&token, &format!("{PREFIX}/admin/"));
    let origin = format!("Origin: {PUBLIC_ORIGIN}");
    let referer = format!("Referer: {login_url}");
    let posted = stack.curl(
        CLIENT_IP,
        &[
            &cookies[..],
            &["-H", &origin, "-H", &referer, "--data", &body, &login_url],
        ]
        .concat(),
    );
    assert_eq!(
        posted.status,
        302,
        "a correct login redirects (a 403 is a CSRF failure, 200 the form again): {}\n{}",
        posted.text(),
        stack.diagnostics()
    );
    assert_eq!(
        public_url(posted.header("location").unwrap_or("")),
        format!("{PUBLIC_ORIGIN}{PREFIX}/admin/"),
        "after login: the admin index at the public URL"
    );
    let session = set_cookie(&posted, "sessionid");
    assert_public_cookie(session);
    assert!(
        cookie_attribute(session, "HttpOnly").is_some(),
        "the session cookie is HttpOnly: {session:?}"
    );

    // The admin index with that session, from both backends (one session database).
    let mut backends = BTreeSet::new();
    for _ in 0..4 {
        let index = stack.curl(CLIENT_IP, &[&cookies[..], &[&index_url]].concat());
        assert_eq!(
            index.status,
            200,
            "the admin index with the session: {}\n{}",
            index.text(),
            stack.diagnostics()
        );
        assert!(
            index.text().contains("Site administration"),
            "the admin index:\n{}",
            index.text()
        );
        backends.insert(index.header("x-backend").unwrap_or("").to_string());
    }
    assert_eq!(
        backends.len(),
        2,
        "both backends served the logged-in admin"
    );
}

#[test]
fn django_sees_the_client_https_public_host_prefix_and_authorization() {
    let stack = Stack::start("dj-meta", Edge::Policy);
    // Internal runs of spaces are part of the value (RFC 9110 5.5): only the ends are trimmed.
    let authorization = "Bearer   abc.DEF_123-xyz==  trailing  words";
    let auth_header = format!("Authorization: {authorization}");
    for protocol in ["--http2", "--http1.1"] {
        let mut backends = BTreeSet::new();
        for _ in 0..2 {
            let seen = stack.meta(CLIENT_IP, "?x=1", &[&auth_header], &[protocol]);
            let what = format!("{protocol}, backend {}", field(&seen, "backend"));
            backends.insert(field(&seen, "backend").to_string());
            for (key, expected) in [
                ("REMOTE_ADDR", CLIENT_IP),
                ("HTTP_X_FORWARDED_FOR", CLIENT_IP),
                ("HTTP_X_FORWARDED_PROTO", "https"),
                ("HTTP_X_FORWARDED_HOST", PUBLIC_AUTHORITY),
                ("HTTP_X_FORWARDED_PORT", PUBLIC_PORT),
                ("HTTP_X_FORWARDED_PREFIX", PREFIX),
                ("HTTP_AUTHORIZATION", authorization),
                ("SCRIPT_NAME", PREFIX),
                ("PATH_INFO", "/meta/"),
                ("path", "/webapps/meta/"),
                ("scheme", "https"),
                ("wsgi.url_scheme", "https"),
                ("host", PUBLIC_AUTHORITY),
                ("port", PUBLIC_PORT),
                (
                    "absolute_uri",
                    "https://www.example.test:8443/webapps/meta/?x=1",
                ),
            ] {
                assert_eq!(field(&seen, key), expected, "{what}: {key} in {seen:#}");
            }
            assert_eq!(seen["is_secure"], true, "{what}: {seen:#}");
            let forwarded = field(&seen, "HTTP_FORWARDED").to_ascii_lowercase();
            assert!(
                forwarded.contains(&format!("for={CLIENT_IP}"))
                    || forwarded.contains(&format!("for=\"{CLIENT_IP}")),
                "{what}: Forwarded names the client: {forwarded:?}"
            );
            assert!(
                forwarded.contains("proto=https"),
                "{what}: Forwarded says https: {forwarded:?}"
            );
        }
        assert_eq!(backends.len(), 2, "{protocol}: both backends answered");
    }
}

#[test]
fn spoofed_forwarded_headers_from_an_untrusted_client_never_reach_django() {
    let stack = Stack::start("dj-spoof", Edge::Policy);
    const SPOOFED_IP: &str = "198.18.99.99";
    const SPOOFED_HOST: &str = "evil.example";
    const SPOOFED_PREFIX: &str = "/evil";
    const SPOOFED_PORT: &str = "61234";
    const SPOOFED_USER: &str = "spoofed-user";
    let spoofed = [
        format!("X-Forwarded-For: {SPOOFED_IP}"),
        "X-Forwarded-Proto: http".to_string(),
        format!("X-Forwarded-Host: {SPOOFED_HOST}"),
        format!("X-Forwarded-Port: {SPOOFED_PORT}"),
        format!("X-Forwarded-Prefix: {SPOOFED_PREFIX}"),
        format!("Forwarded: for={SPOOFED_IP};proto=http;host={SPOOFED_HOST}"),
        format!("X-Real-IP: {SPOOFED_IP}"),
        format!("X-Client-IP: {SPOOFED_IP}"),
        format!("Remote-User: {SPOOFED_USER}"),
        format!("X-Remote-User: {SPOOFED_USER}"),
        // Underscore twins: WSGI maps them to the same HTTP_* keys as the dashed names.
        format!("X_Forwarded_For: {SPOOFED_IP}"),
        format!("X-Forwarded_Host: {SPOOFED_HOST}"),
        format!("X_Forwarded_Prefix: {SPOOFED_PREFIX}"),
        format!("Remote_User: {SPOOFED_USER}"),
    ];
    let headers: Vec<&str> = spoofed.iter().map(String::as_str).collect();
    for protocol in ["--http2", "--http1.1"] {
        let mut backends = BTreeSet::new();
        for _ in 0..2 {
            let seen = stack.meta(CLIENT_IP, "", &headers, &[protocol]);
            let what = format!("{protocol}, backend {}", field(&seen, "backend"));
            backends.insert(field(&seen, "backend").to_string());
            let map = seen.as_object().expect("a JSON object");
            for (key, value) in map {
                let value = value.to_string();
                for marker in [
                    SPOOFED_IP,
                    SPOOFED_HOST,
                    SPOOFED_PREFIX,
                    SPOOFED_PORT,
                    SPOOFED_USER,
                ] {
                    assert!(
                        !value.contains(marker),
                        "{what}: spoofed {marker:?} reached Django in {key} = {value}; the \
                         whole view: {seen:#}"
                    );
                }
            }
            for key in [
                "HTTP_X_REAL_IP",
                "HTTP_X_CLIENT_IP",
                "HTTP_REMOTE_USER",
                "HTTP_X_REMOTE_USER",
            ] {
                assert!(
                    !map.contains_key(key),
                    "{what}: {key} reached Django: {seen:#}"
                );
            }
            for (key, expected) in [
                ("REMOTE_ADDR", CLIENT_IP),
                ("HTTP_X_FORWARDED_FOR", CLIENT_IP),
                ("HTTP_X_FORWARDED_PROTO", "https"),
                ("HTTP_X_FORWARDED_HOST", PUBLIC_AUTHORITY),
                ("SCRIPT_NAME", PREFIX),
                ("host", PUBLIC_AUTHORITY),
            ] {
                assert_eq!(field(&seen, key), expected, "{what}: {key} in {seen:#}");
            }
            assert_eq!(seen["is_secure"], true, "{what}: {seen:#}");
        }
        assert_eq!(backends.len(), 2, "{protocol}: both backends answered");
    }
}

#[test]
fn a_trusted_proxy_in_front_has_its_listed_headers_honoured() {
    let stack = Stack::start("dj-trust", Edge::Policy);
    const OUTER_CLIENT: &str = "198.18.9.9";
    let headers = [
        format!("X-Forwarded-For: {OUTER_CLIENT}"),
        "X-Forwarded-Proto: https".to_string(),
        format!("X-Forwarded-Host: {PUBLIC_HOST}"),
        // Not in the listener's trusted_headers: ignored even from a trusted proxy.
        "X-Forwarded-Prefix: /outer".to_string(),
        format!("X-Real-IP: {OUTER_CLIENT}"),
    ];
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();

    for _ in 0..2 {
        let seen = stack.meta(PROXY_IP, "", &headers, &[]);
        let what = format!(
            "from the trusted proxy, backend {}",
            field(&seen, "backend")
        );
        for (key, expected) in [
            ("REMOTE_ADDR", OUTER_CLIENT),
            ("HTTP_X_FORWARDED_FOR", "198.18.9.9, 198.18.5.2"),
            ("HTTP_X_FORWARDED_HOST", PUBLIC_HOST),
            ("host", PUBLIC_HOST),
            ("SCRIPT_NAME", PREFIX),
            ("HTTP_X_FORWARDED_PREFIX", PREFIX),
        ] {
            assert_eq!(field(&seen, key), expected, "{what}: {key} in {seen:#}");
        }
        assert!(
            seen.get("HTTP_X_REAL_IP").is_none(),
            "{what}: X-Real-IP is not a trusted header here: {seen:#}"
        );
    }

    // The same headers from an untrusted client are dropped.
    let seen = stack.meta(CLIENT_IP, "", &headers, &[]);
    for (key, expected) in [
        ("REMOTE_ADDR", CLIENT_IP),
        ("HTTP_X_FORWARDED_FOR", CLIENT_IP),
        ("HTTP_X_FORWARDED_HOST", PUBLIC_AUTHORITY),
        ("host", PUBLIC_AUTHORITY),
    ] {
        assert_eq!(
            field(&seen, key),
            expected,
            "from an untrusted client: {key} in {seen:#}"
        );
    }
}

#[test]
fn django_redirects_come_back_with_the_public_location() {
    let stack = Stack::start("dj-redirect", Edge::Policy);
    let target = format!("{PUBLIC_ORIGIN}{PREFIX}/target/");
    // How the app writes the Location, and which backends to check (the "backend" kind names
    // the server's own TCP address, which only backend a has).
    for (kind, backends) in [
        ("absolute", &["a", "b"][..]),
        ("relative", &["a", "b"][..]),
        ("unprefixed", &["a", "b"][..]),
        ("backend", &["a"][..]),
    ] {
        let url = format!("{PUBLIC_ORIGIN}{PREFIX}/redirect/?to={kind}");
        let mut checked = BTreeSet::new();
        for _ in 0..4 {
            let reply = stack.curl(CLIENT_IP, &[&url]);
            assert_eq!(
                reply.status,
                302,
                "{kind}: {}\n{}",
                reply.text(),
                stack.diagnostics()
            );
            let backend = reply.header("x-backend").unwrap_or("").to_string();
            if !backends.contains(&backend.as_str()) {
                continue;
            }
            let location = reply.header("location").unwrap_or("");
            assert_eq!(
                public_url(location),
                target,
                "{kind} redirect from backend {backend}: Location {location:?} should lead to \
                 the public URL"
            );
            checked.insert(backend);
        }
        assert_eq!(
            checked.len(),
            backends.len(),
            "{kind}: backends checked {checked:?}"
        );
    }
    let followed = stack.curl(CLIENT_IP, &[&target]);
    assert_eq!(followed.status, 200, "{}", stack.diagnostics());
    assert_eq!(followed.text(), "target");
}

#[test]
fn a_host_outside_allowed_hosts_is_refused_at_the_edge() {
    let stack = Stack::start("dj-hosts", Edge::Policy);
    let refused = format!("https://{OTHER_HOST}:{PUBLIC_PORT}{PREFIX}/meta/?probe=refused-host");
    for protocol in ["--http2", "--http1.1"] {
        let reply = stack.curl(CLIENT_IP, &[protocol, &refused]);
        assert_eq!(
            reply.status,
            421,
            "{protocol}: {OTHER_HOST} is on the certificate and matches the any-host route, \
             but is not an allowed host: {}\n{}",
            reply.text(),
            stack.diagnostics()
        );
    }
    let served = format!("{PUBLIC_ORIGIN}{PREFIX}/meta/?probe=allowed-host");
    let reply = stack.curl(CLIENT_IP, &[&served]);
    assert_eq!(reply.status, 200, "{}", stack.diagnostics());
    let logs = format!("{}{}", stack.a.access_log(), stack.b.access_log());
    assert!(
        logs.contains("probe=allowed-host"),
        "the access logs record requests that reach Django:\n{logs}"
    );
    assert!(
        !logs.contains("probe=refused-host"),
        "a refused host never reaches Django:\n{logs}"
    );
}
