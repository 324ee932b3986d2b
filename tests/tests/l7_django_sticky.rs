//! Route-suffix sticky sessions with a real Django pair: two gunicorn backends of one Django
//! site (a on TCP with route `a`, b on a unix socket with route `b`, one SQLite database),
//! `balancer` in front with HTTPS, the site at /webapps/, `sticky = { mode = "route-suffix",
//! cookie = "sessionid" }` and active health checks on Django's /healthz/. Clients are curl
//! processes with a cookie jar, bound to their own address in the namespace.
//!
//! - After the admin login, the `sessionid` the client holds ends in `.ROUTE` of the backend
//!   that made it, while Django sees its own value; the admin session survives 50 requests,
//!   all on that backend, and a session counter counts 1..50 there.
//! - When that backend dies, the session moves to the other one (one database: still logged
//!   in, the counter goes on), and the cookie Django sets next carries the new route.
//!
//! Each test has its own namespace, site and processes; the Django virtualenv comes from
//! `cargo xtask setup` (a test fails, saying so, without it).

mod l7_support;

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use balancer_tests::{
    BalancerProcess, Certs, L7Net, curl,
    django::{DjangoSite, Gunicorn, SiteSettings, admin_login_body, csrf_token, jar_cookie},
    l7::CurlReply,
};
use l7_support::{eventually, server_state};
use serde_json::Value;

const PUBLIC_HOST: &str = "www.example.test";
const PUBLIC_PORT: &str = "8443";
const PUBLIC_ORIGIN: &str = "https://www.example.test:8443";
const PREFIX: &str = "/webapps";
const LISTEN_IP: &str = "198.18.0.1";
const LISTEN: &str = "198.18.0.1:8443";
/// Backend a listens here; it is also the balancer's source address toward the backends.
const BACKEND_IP: &str = "198.18.1.1";
const BACKEND_A: &str = "198.18.1.1:8001";
/// The client.
const CLIENT_IP: &str = "198.18.4.2";
/// Health checks: a dead backend is out within fall × interval (+ one interval).
const HEALTH_INTERVAL: Duration = Duration::from_millis(300);
const HEALTH_FALL: u32 = 2;

/// The namespace, the CA, the site, backends a (TCP, route a) and b (unix socket, route b), and
/// the balancer. Fields drop in order: the balancer and the backends go before their files.
struct Stack {
    balancer: BalancerProcess,
    a: Option<Gunicorn>,
    b: Option<Gunicorn>,
    site: DjangoSite,
    certs: Certs,
    net: L7Net,
}

impl Stack {
    fn start(tag: &str) -> Stack {
        let net = L7Net::new(tag).expect("namespace");
        for address in [LISTEN_IP, BACKEND_IP, CLIENT_IP] {
            net.ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"])
                .expect("address on lo");
        }
        let site = DjangoSite::create(SiteSettings {
            public_host: PUBLIC_HOST.into(),
            public_origin: PUBLIC_ORIGIN.into(),
            trusted_proxies: vec![BACKEND_IP.into(), "unix".into()],
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
        let cert = certs.issue("site", &[PUBLIC_HOST]).expect("certificate");
        let config = balancer_config(&cert.toml(), &a.url(), &b.url());
        let balancer = net
            .start_balancer(&config)
            .unwrap_or_else(|err| panic!("balancer should start with\n{config}\nbut: {err:#}"));
        let stack = Stack {
            balancer,
            a: Some(a),
            b: Some(b),
            site,
            certs,
            net,
        };
        // Servers start down until their first check passes: wait until both serve.
        eventually(Duration::from_secs(15), "both backends serving", || {
            let mut seen = BTreeSet::new();
            for _ in 0..4 {
                let reply = stack.try_curl(&[&format!("{PUBLIC_ORIGIN}{PREFIX}/healthz/")])?;
                if reply.status != 200 {
                    return None;
                }
                seen.insert(reply.header("x-backend")?.to_string());
            }
            (seen.len() == 2).then_some(())
        });
        stack
    }

    /// The logs of everything, for a failure message.
    fn diagnostics(&self) -> String {
        let backend = |name: &str, backend: &Option<Gunicorn>| match backend {
            Some(g) => format!(
                "gunicorn {name} stderr:\n{}\ngunicorn {name} access log:\n{}\n",
                g.log(),
                g.access_log()
            ),
            None => format!("gunicorn {name}: stopped\n"),
        };
        format!(
            "balancer log:\n{}\n{}{}",
            self.balancer.log(),
            backend("a", &self.a),
            backend("b", &self.b)
        )
    }

    fn curl_args(&self) -> Vec<String> {
        vec![
            "--interface".into(),
            CLIENT_IP.into(),
            "--resolve".into(),
            format!("{PUBLIC_HOST}:{PUBLIC_PORT}:{LISTEN_IP}"),
            "--cacert".into(),
            self.certs.ca_path().display().to_string(),
        ]
    }

    fn try_curl(&self, args: &[&str]) -> Option<CurlReply> {
        let mut full = self.curl_args();
        full.extend(args.iter().map(|a| a.to_string()));
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        curl(&self.net, &full).ok()
    }

    /// curl with the client's cookie jar `jar`; panics with every log if curl fails.
    fn curl(&self, jar: &str, args: &[&str]) -> CurlReply {
        let mut full = self.curl_args();
        full.extend(["-b", jar, "-c", jar].map(String::from));
        full.extend(args.iter().map(|a| a.to_string()));
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        curl(&self.net, &full)
            .unwrap_or_else(|err| panic!("curl {args:?}: {err:#}\n{}", self.diagnostics()))
    }

    /// A fresh cookie jar path for one client.
    fn jar(&self, name: &str) -> PathBuf {
        self.site.dir().join(format!("{name}.cookies"))
    }

    /// Logs in to the admin with the cookie jar `jar` as a browser does (form, then POST with
    /// the CSRF token, Origin and Referer). Returns the POST's answer (302 to the admin index).
    fn admin_login(&self, jar: &str) -> CurlReply {
        let login_url = format!("{PUBLIC_ORIGIN}{PREFIX}/admin/login/?next={PREFIX}/admin/");
        let form = self.curl(jar, &[&login_url]);
        assert_eq!(form.status, 200, "{}\n{}", form.text(), self.diagnostics());
        let token =
            csrf_token(&form.text()).unwrap_or_else(|err| panic!("{err:#}:\n{}", form.text()));
        let body = admin_login_body(&token, &format!("{PREFIX}/admin/"));
        let origin = format!("Origin: {PUBLIC_ORIGIN}");
        let referer = format!("Referer: {login_url}");
        let posted = self.curl(
            jar,
            &["-H", &origin, "-H", &referer, "--data", &body, &login_url],
        );
        assert_eq!(
            posted.status,
            302,
            "a correct login redirects (a 403 is a CSRF failure, 200 the form again): {}\n{}",
            posted.text(),
            self.diagnostics()
        );
        posted
    }

    /// GET `path` (below the prefix) with the jar; asserts 200 and returns the answer and the
    /// backend that gave it.
    fn get(&self, jar: &str, path: &str) -> (CurlReply, String) {
        let url = format!("{PUBLIC_ORIGIN}{PREFIX}{path}");
        let reply = self.curl(jar, &[&url]);
        assert_eq!(
            reply.status,
            200,
            "GET {url}: {} (Location {:?})\n{}",
            reply.text(),
            reply.header("location"),
            self.diagnostics()
        );
        let backend = reply
            .header("x-backend")
            .unwrap_or_else(|| panic!("no X-Backend in {:?}", reply.headers))
            .to_string();
        (reply, backend)
    }

    /// The server URL of the backend named `route`.
    fn url_of(&self, route: &str) -> String {
        let backend = if route == "a" { &self.a } else { &self.b };
        backend.as_ref().expect("a running backend").url()
    }
}

/// HTTPS on [`LISTEN`], the site at /webapps/ (prefix stripped), pool "django" of a and b with
/// route-suffix stickiness on `sessionid` and health checks on /healthz/.
fn balancer_config(cert: &str, a_url: &str, b_url: &str) -> String {
    let interval = HEALTH_INTERVAL.as_millis();
    format!(
        r#"
[admin]
listen = "127.0.0.1:9100"

[[listener]]
name = "https"
bind = "{LISTEN}"
tls = {{ certificates = [ {cert} ] }}
allowed_hosts = ["{PUBLIC_HOST}"]

[[route]]
name = "django"
listener = "https"
host = "{PUBLIC_HOST}"
path = "{PREFIX}/"
strip_prefix = true
pool = "django"

[pool.django]
sticky = {{ mode = "route-suffix", cookie = "sessionid" }}
health = {{ path = "/healthz/", host = "{PUBLIC_HOST}", expect = [200], interval = "{interval}ms", timeout = "250ms", rise = 1, fall = {HEALTH_FALL} }}
servers = [ {{ url = "{a_url}", route = "a" }}, {{ url = "{b_url}", route = "b" }} ]
"#
    )
}

/// Every Set-Cookie value of `sessionid` in `reply` (the part before the first ';').
fn session_set_cookies(reply: &CurlReply) -> Vec<String> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| v.strip_prefix("sessionid="))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
        .collect()
}

/// The whole `sessionid` Set-Cookie field of `reply`, or a panic.
fn session_set_cookie_field(reply: &CurlReply) -> String {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.clone())
        .find(|v| v.starts_with("sessionid="))
        .unwrap_or_else(|| panic!("no Set-Cookie of sessionid in {:?}", reply.headers))
}

/// The value of attribute `name` of a Set-Cookie field (`Some("")` for a flag).
fn cookie_attribute<'a>(field: &'a str, name: &str) -> Option<&'a str> {
    field.split(';').skip(1).find_map(|part| {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

/// `value` split into the session key and the route after the last '.'.
fn split_route(value: &str) -> (&str, &str) {
    value
        .rsplit_once('.')
        .unwrap_or_else(|| panic!("the session cookie {value:?} carries no .ROUTE"))
}

/// The `sticky_requests` counter of `url` in pool "django" of `/api/state`.
fn sticky_requests(balancer: &BalancerProcess, url: &str) -> u64 {
    let entry = server_state(balancer, "django", url);
    entry["sticky_requests"]
        .as_u64()
        .unwrap_or_else(|| panic!("no sticky_requests for {url} in /api/state: {entry:#}"))
}

/// The JSON of a /session/ answer.
fn session_json(reply: &CurlReply) -> Value {
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|err| panic!("/session/ is not JSON ({err}): {:?}", reply.text()))
}

#[test]
fn route_suffix_keeps_the_django_admin_session_on_its_server() {
    let stack = Stack::start("djs-stick");
    let jar_path = stack.jar("admin");
    let jar = jar_path.display().to_string();

    // The login: the session Django creates comes back as KEY.ROUTE of the backend that made
    // it, with Django's attributes (and the public path).
    let posted = stack.admin_login(&jar);
    let made_by = posted
        .header("x-backend")
        .expect("X-Backend on the login answer")
        .to_string();
    let field = session_set_cookie_field(&posted);
    let held = jar_cookie(&jar_path, "sessionid")
        .unwrap_or_else(|| panic!("no sessionid in the client's jar after {field:?}"));
    let (key, route) = split_route(&held);
    assert_eq!(
        route, made_by,
        "the client's sessionid {held:?} ends with the route of the backend that created it"
    );
    assert!(
        !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric()),
        "Django's own session key before the route: {held:?}"
    );
    assert!(
        field.starts_with(&format!("sessionid={held};")),
        "the Set-Cookie carries the suffixed value: {field:?}"
    );
    assert!(
        matches!(
            cookie_attribute(&field, "Path"),
            Some("/webapps" | "/webapps/")
        ),
        "the public path: {field:?}"
    );
    assert!(cookie_attribute(&field, "Secure").is_some(), "{field:?}");
    assert!(cookie_attribute(&field, "HttpOnly").is_some(), "{field:?}");

    // Django sees its own value, without the route.
    let (reply, backend) = stack.get(&jar, "/meta/");
    assert_eq!(backend, made_by, "the session's requests go to its server");
    let seen: Value = serde_json::from_slice(&reply.body).expect("/meta/ JSON");
    let cookie_header = seen["HTTP_COOKIE"]
        .as_str()
        .unwrap_or_else(|| panic!("no HTTP_COOKIE in Django's view: {seen:#}"));
    let sessions: Vec<&str> = cookie_header
        .split(';')
        .map(str::trim)
        .filter_map(|pair| pair.strip_prefix("sessionid="))
        .collect();
    assert_eq!(
        sessions,
        [key],
        "Django gets its own session key, without .{route}: HTTP_COOKIE = {cookie_header:?}"
    );
    let sticky_before = sticky_requests(&stack.balancer, &stack.url_of(&made_by));

    // The admin session survives 50 requests, all on the same backend.
    for request in 1..=50 {
        let (index, backend) = stack.get(&jar, "/admin/");
        assert!(
            index.text().contains("Site administration"),
            "request {request}: still logged in:\n{}",
            index.text()
        );
        assert_eq!(backend, made_by, "admin request {request}");
    }
    // A counter in the session counts 1..50 on that one backend.
    for expected in 1..=50 {
        let (reply, backend) = stack.get(&jar, "/session/");
        assert_eq!(backend, made_by, "session request {expected}");
        assert_eq!(
            session_json(&reply),
            serde_json::json!({"count": expected, "backend": made_by}),
            "session request {expected}"
        );
        for value in session_set_cookies(&reply) {
            assert_eq!(
                value, held,
                "session request {expected}: Django's Set-Cookie of the same session gets the \
                 same route"
            );
        }
    }
    assert_eq!(
        jar_cookie(&jar_path, "sessionid").as_deref(),
        Some(held.as_str()),
        "the client still holds the same suffixed session"
    );
    assert_eq!(
        sticky_requests(&stack.balancer, &stack.url_of(&made_by)) - sticky_before,
        100,
        "each request with the session is a sticky request"
    );

    // Meanwhile a client without a session is still spread over both.
    let other_jar = stack.jar("anonymous").display().to_string();
    let backends: BTreeSet<String> = (0..4)
        .map(|_| stack.get(&other_jar, "/healthz/").1)
        .collect();
    assert_eq!(backends.len(), 2, "clients without a session: {backends:?}");
}

#[test]
fn when_the_sticky_django_server_dies_the_session_moves_and_stays_logged_in() {
    let mut stack = Stack::start("djs-kill");
    let jar_path = stack.jar("admin");
    let jar = jar_path.display().to_string();
    let posted = stack.admin_login(&jar);
    let made_by = posted
        .header("x-backend")
        .expect("X-Backend on the login answer")
        .to_string();
    let held = jar_cookie(&jar_path, "sessionid").expect("a sessionid after the login");
    let (key, route) = split_route(&held);
    assert_eq!(route, made_by);
    let key = key.to_string();
    for expected in 1..=3 {
        let (reply, backend) = stack.get(&jar, "/session/");
        assert_eq!(backend, made_by);
        assert_eq!(session_json(&reply)["count"], expected);
    }

    // Kill the session's server.
    let other = if made_by == "a" { "b" } else { "a" };
    let dead_url = stack.url_of(&made_by);
    let dead = if made_by == "a" {
        stack.a.take()
    } else {
        stack.b.take()
    };
    dead.expect("the sticky backend")
        .stop()
        .expect("stopping the sticky backend");

    // The next request goes to the other server: the session is in the shared database, so
    // the count goes on, and Django's new Set-Cookie of the session carries the new route.
    let (reply, backend) = stack.get(&jar, "/session/");
    assert_eq!(backend, other, "the session moved to the live server");
    assert_eq!(session_json(&reply)["count"], 4, "the same session");
    assert_eq!(
        session_set_cookies(&reply),
        [format!("{key}.{other}")],
        "Django set the session cookie again; it carries the new route"
    );
    assert_eq!(
        jar_cookie(&jar_path, "sessionid"),
        Some(format!("{key}.{other}")),
        "the client now holds the new route"
    );
    // Still logged in, and the session stays on its new server.
    let (index, backend) = stack.get(&jar, "/admin/");
    assert_eq!(backend, other);
    assert!(
        index.text().contains("Site administration"),
        "still logged in after the move:\n{}",
        index.text()
    );
    for expected in 5..=14 {
        let (reply, backend) = stack.get(&jar, "/session/");
        assert_eq!(backend, other, "session request {expected}");
        assert_eq!(session_json(&reply)["count"], expected);
    }

    // The checks take the dead server out within fall × interval (+ one interval, and some
    // slack for a loaded machine).
    let limit = HEALTH_INTERVAL * (HEALTH_FALL + 1) + Duration::from_secs(2);
    eventually(limit, "the dead server marked down in /api/state", || {
        let entry = server_state(&stack.balancer, "django", &dead_url);
        (entry["state"] == "down").then_some(())
    });
    // New clients only get the live server.
    let fresh = stack.jar("fresh").display().to_string();
    for _ in 0..4 {
        assert_eq!(stack.get(&fresh, "/healthz/").1, other);
    }
}
