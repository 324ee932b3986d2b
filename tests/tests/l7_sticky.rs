//! Sticky sessions end to end with the project's own backends (`l7_backend`, whose JSON answer
//! names the server and lists the headers it got): a real `balancer run` in its own namespace,
//! two servers with routes `a` and `b`, real HTTP/1.1, HTTP/2 and TLS clients.
//!
//! - `mode = "insert"`: the proxy's own cookie, `v1.<route>.<HMAC-SHA256 tag>` (checked here
//!   against `openssl dgst -hmac`, independently of the proxy's code), with Path, HttpOnly,
//!   SameSite=Lax and Secure on https; it sticks, it never reaches the app, and a forged or
//!   tampered value is ignored (normal pick, fresh cookie), never trusted.
//! - `mode = "route-suffix"`: the app's `sessionid` gets `.ROUTE` on the way out and loses it on
//!   the way in; the suffix and the `;jsessionid=` path parameter route the request.
//! - Drain, disable and enable through the admin API; a sticky server that stops (and comes
//!   back); sticky requests counted in `/api/state`.
//!
//! Every server listens on the namespace's `lo` (127.0.0.1), like the other L7 tests.

mod l7_support;

use std::{
    collections::BTreeMap,
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use balancer_tests::{Backend, BalancerProcess, Certs, Client, L7Net, Reply, Request, TlsOptions};
use l7_support::{LISTEN, LISTEN_TLS, eventually, ok, server_state, start, state};

const PUBLIC_HOST: &str = "www.example.test";
const BACKEND_A: &str = "127.0.0.1:8091";
const BACKEND_B: &str = "127.0.0.1:8092";
const URL_A: &str = "http://127.0.0.1:8091";
const URL_B: &str = "http://127.0.0.1:8092";
/// The insert cookie's default name.
const INSERT_COOKIE: &str = "balancer_sticky";
/// The HMAC key of the insert tests (inline or in a key file).
const KEY: &str = "sticky-test-key-0123456789abcdef";
/// A key the balancer does not have, for forgeries that look right.
const WRONG_KEY: &str = "another-key-of-the-same-length!!";

// ---------------------------------------------------------------------------------------------
// Setup

/// The namespace, the CA, backends a and b, the balancer; fields drop in order (balancer first).
struct Stack {
    balancer: BalancerProcess,
    a: Option<Backend>,
    /// Kept running until the stack drops.
    _b: Backend,
    certs: Certs,
    net: L7Net,
}

impl Stack {
    /// Backends a and b and a balancer on `config(cert_toml, scratch_dir)`.
    fn start(tag: &str, config: impl FnOnce(&str, &Path) -> String) -> Stack {
        let net = L7Net::new(tag).expect("namespace");
        let a = Backend::start(&net, "a", &[BACKEND_A]).expect("backend a");
        let b = Backend::start(&net, "b", &[BACKEND_B]).expect("backend b");
        let certs = Certs::new().expect("CA");
        let cert = certs.issue("site", &[PUBLIC_HOST]).expect("certificate");
        let toml = config(&cert.toml(), net.dir());
        let balancer = start(&net, &toml);
        Stack {
            balancer,
            a: Some(a),
            _b: b,
            certs,
            net,
        }
    }

    /// HTTPS to the TLS listener as [`PUBLIC_HOST`] (HTTP/2 by ALPN).
    fn https(&self) -> Client {
        Client::tcp(&self.net, LISTEN_TLS)
            .tls(TlsOptions::new(self.certs.ca_path()).sni(PUBLIC_HOST))
    }

    /// Plain HTTP/1.1 to the plain listener.
    fn http(&self) -> Client {
        Client::tcp(&self.net, LISTEN)
    }

    /// `requests` on one connection of `client`; every answer must be 200.
    fn send_all(&self, client: &Client, requests: &[Request], what: &str) -> Vec<Reply> {
        let replies = ok(client.send_all(requests), what, &self.balancer);
        for (index, reply) in replies.iter().enumerate() {
            assert_eq!(
                reply.status,
                200,
                "{what}, request {}: {}\nbalancer log:\n{}",
                index + 1,
                reply.text(),
                self.balancer.log()
            );
        }
        replies
    }

    /// One request on its own connection; the answer must be 200.
    fn send(&self, client: &Client, request: &Request, what: &str) -> Reply {
        self.send_all(client, std::slice::from_ref(request), what)
            .remove(0)
    }

    /// `POST /api/pools/app/servers/{server}/{action}`; returns the status.
    fn admin(&self, server: &str, action: &str) -> u16 {
        let path = format!("/api/pools/app/servers/{server}/{action}");
        let (status, body) = ok(self.balancer.admin_post(&path), &path, &self.balancer);
        assert!(
            status == 200 || status == 404,
            "POST {path}: unexpected {status} {body}"
        );
        status
    }
}

/// Two servers with routes a and b, round-robin, and `sticky` / extra pool keys.
fn pool(pool_keys: &str) -> String {
    format!(
        r#"
[pool.app]
balance = "round-robin"
{pool_keys}
servers = [ {{ url = "{URL_A}", route = "a" }}, {{ url = "{URL_B}", route = "b" }} ]
"#
    )
}

/// A plain listener on [`LISTEN`], a TLS one on [`LISTEN_TLS`] with `cert`, routes "/" on both
/// and "/shop/" (prefix stripped) on the TLS one, all to pool "app" with `pool_keys`.
fn config(cert: &str, pool_keys: &str) -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "{LISTEN}"

[[listener]]
name = "tls"
bind = "{LISTEN_TLS}"
tls = {{ certificates = [ {cert} ] }}

[[route]]
name = "plain"
listener = "web"
pool = "app"

[[route]]
name = "secure"
listener = "tls"
pool = "app"

[[route]]
name = "shop"
listener = "tls"
path = "/shop/"
strip_prefix = true
pool = "app"
{}"#,
        pool(pool_keys)
    )
}

fn insert_keys() -> String {
    format!(r#"sticky = {{ mode = "insert", key = "{KEY}" }}"#)
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// `GET path` as [`PUBLIC_HOST`] with the `Cookie` field `cookie` (none if empty).
fn get(path: &str, cookie: &str) -> Request {
    let request = Request::get(path).host(PUBLIC_HOST);
    if cookie.is_empty() {
        request
    } else {
        request.header("Cookie", cookie)
    }
}

/// The server that answered (an `l7_backend` default answer).
fn server(reply: &Reply) -> String {
    reply.json()["server"]
        .as_str()
        .unwrap_or_else(|| panic!("no server in {}", reply.text()))
        .to_string()
}

/// The `Cookie` fields the backend received.
fn cookies_seen(reply: &Reply) -> Vec<String> {
    reply.json()["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("no headers in {}", reply.text()))
        .iter()
        .filter(|pair| {
            pair[0]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("cookie"))
        })
        .map(|pair| pair[1].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The request target the backend received.
fn uri_seen(reply: &Reply) -> String {
    reply.json()["uri"].as_str().unwrap_or_default().to_string()
}

/// A Set-Cookie field split up: the value and the attributes (names lowercase, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SetCookie {
    value: String,
    attributes: Vec<(String, String)>,
}

impl SetCookie {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every Set-Cookie of cookie `name` in `reply`.
fn set_cookies(reply: &Reply, name: &str) -> Vec<SetCookie> {
    reply
        .header_all("set-cookie")
        .into_iter()
        .filter_map(|field| {
            let mut parts = field.split(';');
            let (cookie_name, value) = parts.next()?.trim().split_once('=')?;
            (cookie_name == name).then(|| SetCookie {
                value: value.to_string(),
                attributes: parts
                    .map(|part| {
                        let (key, value) = part.split_once('=').unwrap_or((part, ""));
                        (key.trim().to_ascii_lowercase(), value.trim().to_string())
                    })
                    .collect(),
            })
        })
        .collect()
}

/// The one Set-Cookie of `name`, or a panic listing what came.
fn one_set_cookie(reply: &Reply, name: &str, what: &str) -> SetCookie {
    let mut found = set_cookies(reply, name);
    assert_eq!(
        found.len(),
        1,
        "{what}: exactly one Set-Cookie of {name} expected, got {:?}",
        reply.header_all("set-cookie")
    );
    found.remove(0)
}

/// base64url without padding (RFC 4648 §5).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// HMAC-SHA256 of `data` under `key`, computed by `openssl dgst` (not by the balancer's code).
fn hmac_sha256(key: &str, data: &str) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key, "-binary"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl (package openssl)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data.as_bytes())
        .expect("writing to openssl");
    let output = child.wait_with_output().expect("openssl output");
    assert!(output.status.success(), "openssl dgst failed");
    assert_eq!(output.stdout.len(), 32, "HMAC-SHA256 is 32 bytes");
    output.stdout
}

/// The insert cookie value that names server `route` under `key`: `v1.ROUTE.TAG`.
fn signed(key: &str, route: &str) -> String {
    let payload = format!("v1.{route}");
    let tag = base64url(&hmac_sha256(key, &payload));
    format!("{payload}.{tag}")
}

/// How many of `replies` each server answered.
fn spread(replies: &[Reply]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for reply in replies {
        *counts.entry(server(reply)).or_default() += 1;
    }
    counts
}

/// `text` percent-encoded for a query value (everything but unreserved characters).
fn query_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The `sticky_requests` counter of server `url` in `/api/state`.
fn sticky_requests(balancer: &BalancerProcess, url: &str) -> u64 {
    let entry = server_state(balancer, "app", url);
    entry["sticky_requests"]
        .as_u64()
        .unwrap_or_else(|| panic!("no sticky_requests counter for {url} in /api/state: {entry:#}"))
}

/// The `state` of server `url` in `/api/state` ("up", "draining", "down", "disabled").
fn server_health(balancer: &BalancerProcess, url: &str) -> String {
    let entry = server_state(balancer, "app", url);
    entry["state"]
        .as_str()
        .unwrap_or_else(|| panic!("no state for {url} in /api/state: {entry:#}"))
        .to_string()
}

/// Asserts that `replies` (sent with an insert cookie that must not be trusted, `what`) were
/// picked normally — both servers answered — and each carries a fresh, valid cookie for the
/// server that answered; the backend never saw the cookie.
fn assert_ignored(replies: &[Reply], what: &str) {
    let counts = spread(replies);
    assert_eq!(
        counts.len(),
        2,
        "{what}: an untrusted cookie must not pin a server; answers by server: {counts:?}"
    );
    for reply in replies {
        let served = server(reply);
        let fresh = one_set_cookie(reply, INSERT_COOKIE, what);
        assert_eq!(
            fresh.value,
            signed(KEY, &served),
            "{what}: the fresh cookie names the server that answered ({served})"
        );
        assert!(
            cookies_seen(reply)
                .iter()
                .all(|c| !c.contains(INSERT_COOKIE)),
            "{what}: the backend saw the insert cookie: {:?}",
            cookies_seen(reply)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The test's own signer

#[test]
fn harness_base64url_and_hmac_match_the_references() {
    // RFC 4648 §10 vectors (without padding).
    for (input, encoded) in [
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64url(input.as_bytes()), encoded, "{input:?}");
    }
    assert_eq!(base64url(&[0xfb, 0xff]), "-_8", "the URL-safe alphabet");
    // RFC 4231 test case 2 (HMAC-SHA256, key "Jefe").
    let mac = hmac_sha256("Jefe", "what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

// ---------------------------------------------------------------------------------------------
// Insert mode

#[test]
fn insert_cookie_is_signed_sticks_and_never_reaches_the_app() {
    let stack = Stack::start("sticky-insert", |cert, _| config(cert, &insert_keys()));
    let https = stack.https();

    // The first answer sets the cookie, signed for the server that answered.
    let first = stack.send(&https, &get("/", ""), "first request over https");
    let first_server = server(&first);
    let cookie = one_set_cookie(&first, INSERT_COOKIE, "first answer over https");
    assert_eq!(
        cookie.value,
        signed(KEY, &first_server),
        "v1.<route>.<base64url HMAC-SHA256 of v1.<route>>"
    );
    let mut attributes = cookie.attributes.clone();
    attributes.sort();
    assert_eq!(
        attributes,
        [
            ("httponly", ""),
            ("path", "/"),
            ("samesite", "Lax"),
            ("secure", "")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
        "attributes of {cookie:?}"
    );
    let jar = format!("{INSERT_COOKIE}={}", cookie.value);

    // 30 requests with it (one connection, HTTP/2): all to the same server, no new cookie, and
    // the app never sees it; the client's other cookies arrive as they were.
    let before = sticky_requests(&stack.balancer, URL_A) + sticky_requests(&stack.balancer, URL_B);
    let with_cookie: Vec<Request> = (0..30)
        .map(|i| {
            if i % 2 == 0 {
                get("/", &jar)
            } else {
                get("/", &format!("theme=dark; {jar}; lang=en"))
            }
        })
        .collect();
    let replies = stack.send_all(&https, &with_cookie, "30 requests with the cookie");
    for (index, reply) in replies.iter().enumerate() {
        assert_eq!(
            server(reply),
            first_server,
            "request {} with the cookie",
            index + 1
        );
        assert_eq!(
            set_cookies(reply, INSERT_COOKIE),
            [],
            "request {}: a valid cookie for the server that answered is not set again",
            index + 1
        );
        let expected: &[&str] = if index % 2 == 0 {
            &[]
        } else {
            &["theme=dark; lang=en"]
        };
        assert_eq!(
            cookies_seen(reply),
            expected,
            "request {}: the insert cookie is removed, other cookies kept byte for byte",
            index + 1
        );
    }
    let after = sticky_requests(&stack.balancer, URL_A) + sticky_requests(&stack.balancer, URL_B);
    assert_eq!(
        after - before,
        30,
        "each request with the cookie is a sticky request"
    );

    // A client without cookies is spread round-robin, and each answer offers a cookie.
    let fresh: Vec<Request> = (0..20).map(|_| get("/", "")).collect();
    let replies = stack.send_all(&https, &fresh, "20 requests without cookies");
    assert_eq!(
        spread(&replies),
        BTreeMap::from([("a".to_string(), 10), ("b".to_string(), 10)]),
        "round-robin over a and b"
    );
    for reply in &replies {
        let served = server(reply);
        assert_eq!(
            one_set_cookie(reply, INSERT_COOKIE, "a request without cookies").value,
            signed(KEY, &served)
        );
    }
    assert_eq!(
        sticky_requests(&stack.balancer, URL_A) + sticky_requests(&stack.balancer, URL_B),
        after,
        "requests without a cookie are not sticky requests"
    );

    // The other server's cookie sticks to it the same way, over HTTP/1.1 too.
    let other = if first_server == "a" { "b" } else { "a" };
    let other_jar = format!("{INSERT_COOKIE}={}", signed(KEY, other));
    let http1 = Client::tcp(&stack.net, LISTEN_TLS).tls(
        TlsOptions::new(stack.certs.ca_path())
            .sni(PUBLIC_HOST)
            .alpn(&["http/1.1"]),
    );
    let replies = stack.send_all(
        &http1,
        &vec![get("/", &other_jar); 10],
        "the other server's cookie over HTTP/1.1",
    );
    assert!(
        replies.iter().all(|r| server(r) == other),
        "{:?}",
        spread(&replies)
    );

    // Of two cookies, a forged one first, the valid one counts.
    let both = format!(
        "{INSERT_COOKIE}=garbage; {INSERT_COOKIE}={}",
        signed(KEY, other)
    );
    let replies = stack.send_all(&https, &vec![get("/", &both); 4], "forged then valid");
    assert!(
        replies.iter().all(|r| server(r) == other),
        "{:?}",
        spread(&replies)
    );
    for reply in &replies {
        assert_eq!(
            cookies_seen(reply),
            Vec::<String>::new(),
            "both occurrences removed"
        );
    }

    // Plain http: the same cookie without Secure.
    let reply = stack.send(&stack.http(), &get("/", ""), "plain http");
    let plain = one_set_cookie(&reply, INSERT_COOKIE, "plain http");
    assert_eq!(plain.value, signed(KEY, &server(&reply)));
    assert_eq!(
        plain.attribute("secure"),
        None,
        "no Secure over http: {plain:?}"
    );
    assert_eq!(plain.attribute("path"), Some("/"));
    assert_eq!(plain.attribute("httponly"), Some(""));
    assert_eq!(plain.attribute("samesite"), Some("Lax"));

    // A route mounted at /shop/: the cookie's Path is the public prefix.
    let reply = stack.send(&https, &get("/shop/cart", ""), "a mounted route");
    assert_eq!(uri_seen(&reply), "/cart", "the prefix is stripped");
    let mounted = one_set_cookie(&reply, INSERT_COOKIE, "a mounted route");
    assert_eq!(mounted.attribute("path"), Some("/shop"), "{mounted:?}");
    assert_eq!(mounted.attribute("secure"), Some(""), "{mounted:?}");
}

#[test]
fn a_forged_or_tampered_insert_cookie_is_ignored_never_trusted() {
    let stack = Stack::start("sticky-forged", |cert, _| config(cert, &insert_keys()));
    let https = stack.https();
    let valid_a = signed(KEY, "a");
    let valid_b = signed(KEY, "b");
    // Sanity: the genuine cookies stick (the forgeries below are near misses of these).
    for (value, route) in [(&valid_a, "a"), (&valid_b, "b")] {
        let jar = format!("{INSERT_COOKIE}={value}");
        let replies = stack.send_all(&https, &vec![get("/", &jar); 4], "a genuine cookie");
        assert!(
            replies.iter().all(|r| server(r) == route),
            "{:?}",
            spread(&replies)
        );
    }
    let sticky_before =
        sticky_requests(&stack.balancer, URL_A) + sticky_requests(&stack.balancer, URL_B);

    let tag_a = valid_a.rsplit_once('.').expect("a tag").1.to_string();
    // The first character of the tag carries 6 bits of the MAC (the last one only 4 plus
    // padding bits a lenient decoder ignores).
    let flipped_first = {
        let mut chars: Vec<char> = tag_a.chars().collect();
        chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let forgeries = [
        ("a's id with a changed tag", format!("v1.a.{flipped_first}")),
        ("b's id with a's (valid) tag", format!("v1.b.{tag_a}")),
        ("b's id signed with another key", signed(WRONG_KEY, "b")),
        ("a's id, tag cut short", format!("v1.a.{}", &tag_a[..20])),
        ("a's id, no tag", "v1.a".to_string()),
        ("a's id, empty tag", "v1.a.".to_string()),
        ("another version", format!("v2.a.{tag_a}")),
        ("the version in capitals", format!("V1.a.{tag_a}")),
        ("a server that does not exist", format!("v1.c.{tag_a}")),
        ("a's tag in standard base64", {
            let standard: String = tag_a
                .chars()
                .map(|c| match c {
                    '-' => '+',
                    '_' => '/',
                    c => c,
                })
                .collect();
            format!("v1.a.{standard}=")
        }),
        ("garbage", "garbage".to_string()),
        ("empty", String::new()),
        ("a route alone", "a".to_string()),
        ("very long", format!("v1.a.{}", "A".repeat(4000))),
    ];
    for (what, value) in &forgeries {
        let jar = format!("{INSERT_COOKIE}={value}");
        let replies = stack.send_all(&https, &vec![get("/", &jar); 4], what);
        assert_ignored(&replies, what);
    }
    assert_eq!(
        sticky_requests(&stack.balancer, URL_A) + sticky_requests(&stack.balancer, URL_B),
        sticky_before,
        "requests with a forged cookie are not sticky requests"
    );

    // A cookie of the right shape from a balancer with another key (or a restarted one with
    // a new key) is also just ignored.
    let replies = stack.send_all(
        &https,
        &vec![get("/", &format!("{INSERT_COOKIE}={}", signed(WRONG_KEY, "a"))); 4],
        "a's id signed with another key",
    );
    assert_ignored(&replies, "a's id signed with another key");
}

// ---------------------------------------------------------------------------------------------
// Route-suffix mode

#[test]
fn route_suffix_appends_the_route_strips_it_and_routes_by_it() {
    let stack = Stack::start("sticky-suffix", |cert, _| {
        config(
            cert,
            r#"sticky = { mode = "route-suffix", cookie = "sessionid", path_param = "jsessionid", strip_route = true }"#,
        )
    });
    let http = stack.http();
    let set_session = format!(
        "/response-headers?Set-Cookie={}",
        query_encode("sessionid=abc; Path=/; HttpOnly")
    );

    // The app sets `sessionid=abc`: the client gets `abc.ROUTE` of the server that answered,
    // the other attributes as the app wrote them. Two requests: one per server.
    let replies = stack.send_all(
        &http,
        &vec![get(&set_session, ""); 2],
        "the app sets sessionid",
    );
    assert_eq!(
        spread(&replies).len(),
        2,
        "round-robin: {:?}",
        spread(&replies)
    );
    for reply in &replies {
        let served = server(reply);
        assert_eq!(
            reply.header_all("set-cookie"),
            [format!("sessionid=abc.{served}; Path=/; HttpOnly").as_str()],
            "the route of the server that answered is appended"
        );
    }

    // The suffix routes, and the app sees its own value (other cookies untouched).
    let before_a = sticky_requests(&stack.balancer, URL_A);
    for route in ["a", "b"] {
        let requests: Vec<Request> = (0..10)
            .map(|_| get("/", &format!("theme=dark; sessionid=abc.{route}; lang=en")))
            .collect();
        let replies = stack.send_all(&http, &requests, "a sessionid with a route");
        for reply in &replies {
            assert_eq!(server(reply), route, "sessionid=abc.{route}");
            assert_eq!(
                cookies_seen(reply),
                ["theme=dark; sessionid=abc; lang=en"],
                "the app sees its own value"
            );
            assert_eq!(reply.header_all("set-cookie"), Vec::<&str>::new());
        }
    }
    assert_eq!(
        sticky_requests(&stack.balancer, URL_A) - before_a,
        10,
        "sticky requests of a"
    );

    // A value with dots of its own: the route is what follows the last one.
    let reply = stack.send(&http, &get("/", "sessionid=x.y.b"), "dots in the value");
    assert_eq!(server(&reply), "b");
    assert_eq!(cookies_seen(&reply), ["sessionid=x.y"]);

    // The path parameter routes too, and loses its route on the way to the app.
    for (target, route, seen) in [
        ("/x;jsessionid=xyz.b", "b", "/x;jsessionid=xyz"),
        ("/x;jsessionid=xyz.a?q=1", "a", "/x;jsessionid=xyz?q=1"),
        ("/p;jsessionid=xyz.b/q;v=1", "b", "/p;jsessionid=xyz/q;v=1"),
    ] {
        let replies = stack.send_all(&http, &vec![get(target, ""); 4], target);
        for reply in &replies {
            assert_eq!(server(reply), route, "{target}");
            assert_eq!(uri_seen(reply), seen, "{target}: what the app gets");
        }
    }
    // The path parameter is looked at before the cookie.
    let replies = stack.send_all(
        &http,
        &vec![get("/x;jsessionid=xyz.b", "sessionid=abc.a"); 4],
        "path parameter and cookie",
    );
    assert!(
        replies.iter().all(|r| server(r) == "b"),
        "{:?}",
        spread(&replies)
    );

    // An unknown suffix routes nowhere and is the app's own text: left as it is.
    let replies = stack.send_all(
        &http,
        &vec![get("/", "sessionid=abc.zz"); 4],
        "unknown route",
    );
    assert_eq!(
        spread(&replies).len(),
        2,
        "normal pick: {:?}",
        spread(&replies)
    );
    for reply in &replies {
        assert_eq!(cookies_seen(reply), ["sessionid=abc.zz"]);
    }

    // The session moved (the app set a cookie with another server's suffix): the suffix is
    // replaced by the route of the server that answered.
    let moved = format!(
        "/response-headers?Set-Cookie={}",
        query_encode("sessionid=abc.b; Path=/")
    );
    let reply = stack.send(&http, &get(&moved, "sessionid=abc.a"), "a moved session");
    assert_eq!(server(&reply), "a");
    assert_eq!(reply.header_all("set-cookie"), ["sessionid=abc.a; Path=/"]);

    // A deletion and other cookies are left alone.
    let deletion = format!(
        "/response-headers?Set-Cookie={}&Set-Cookie={}",
        query_encode("sessionid=; Max-Age=0; Path=/"),
        query_encode("other=abc; Path=/")
    );
    let reply = stack.send(&http, &get(&deletion, "sessionid=abc.b"), "a deletion");
    assert_eq!(server(&reply), "b");
    assert_eq!(
        reply.header_all("set-cookie"),
        ["sessionid=; Max-Age=0; Path=/", "other=abc; Path=/"]
    );
}

// ---------------------------------------------------------------------------------------------
// Drain, disable, enable

#[test]
fn drain_keeps_sticky_sessions_and_disable_moves_them() {
    let stack = Stack::start("sticky-drain", |cert, dir| {
        // With a trailing newline, as an editor writes it: the key is the trimmed content.
        let key_file = dir.join("sticky.key");
        std::fs::write(&key_file, format!("{KEY}\n")).expect("key file");
        config(
            cert,
            &format!(
                r#"sticky = {{ mode = "insert", key_file = "{}" }}"#,
                key_file.display()
            ),
        )
    });
    let https = stack.https();
    let jar_a = format!("{INSERT_COOKIE}={}", signed(KEY, "a"));

    // The key from the file signs the cookies.
    let replies = stack.send_all(&https, &vec![get("/", ""); 2], "before the drain");
    for reply in &replies {
        assert_eq!(
            one_set_cookie(reply, INSERT_COOKIE, "before the drain").value,
            signed(KEY, &server(reply)),
            "signed with the key from key_file (trimmed)"
        );
    }
    assert_eq!(server_health(&stack.balancer, URL_A), "up");

    // Unknown pool or server: 404.
    let (status, _) = ok(
        stack.balancer.admin_post("/api/pools/nope/servers/a/drain"),
        "unknown pool",
        &stack.balancer,
    );
    assert_eq!(status, 404, "unknown pool");
    assert_eq!(stack.admin("zz", "drain"), 404, "unknown server");

    // Drain a (by its route).
    assert_eq!(stack.admin("a", "drain"), 200, "drain a");
    assert_eq!(server_health(&stack.balancer, URL_A), "draining");
    let sticky_a = sticky_requests(&stack.balancer, URL_A);
    let replies = stack.send_all(
        &https,
        &vec![get("/", &jar_a); 20],
        "a's sessions, a draining",
    );
    for reply in &replies {
        assert_eq!(
            server(reply),
            "a",
            "a session on a draining server stays there"
        );
        assert_eq!(
            set_cookies(reply, INSERT_COOKIE),
            [],
            "and keeps its cookie"
        );
    }
    assert_eq!(sticky_requests(&stack.balancer, URL_A) - sticky_a, 20);
    let replies = stack.send_all(&https, &vec![get("/", ""); 20], "new clients, a draining");
    for reply in &replies {
        assert_eq!(
            server(reply),
            "b",
            "a new session never starts on a draining server"
        );
        assert_eq!(
            one_set_cookie(reply, INSERT_COOKIE, "a new session").value,
            signed(KEY, "b")
        );
    }
    // A forged cookie for a does not get past the drain either.
    let forged = format!("{INSERT_COOKIE}=v1.a.{}", "A".repeat(43));
    let replies = stack.send_all(&https, &vec![get("/", &forged); 6], "forged a, a draining");
    assert!(
        replies.iter().all(|r| server(r) == "b"),
        "{:?}",
        spread(&replies)
    );

    // Disable a: nothing goes there; its sessions move to b with a new cookie.
    assert_eq!(stack.admin("a", "disable"), 200, "disable a");
    assert_eq!(server_health(&stack.balancer, URL_A), "disabled");
    let replies = stack.send_all(
        &https,
        &vec![get("/", &jar_a); 10],
        "a's sessions, a disabled",
    );
    for reply in &replies {
        assert_eq!(server(reply), "b", "nothing goes to a disabled server");
        assert_eq!(
            one_set_cookie(reply, INSERT_COOKIE, "a moved session").value,
            signed(KEY, "b"),
            "the moved session gets b's cookie"
        );
    }
    let replies = stack.send_all(&https, &vec![get("/", ""); 10], "new clients, a disabled");
    assert!(
        replies.iter().all(|r| server(r) == "b"),
        "{:?}",
        spread(&replies)
    );

    // Enable a again (named by its URL, percent-encoded): new clients are spread again, and
    // a's cookie leads to a.
    let encoded_url = query_encode(URL_A);
    assert_eq!(stack.admin(&encoded_url, "enable"), 200, "enable a by URL");
    assert_eq!(server_health(&stack.balancer, URL_A), "up");
    let replies = stack.send_all(&https, &vec![get("/", ""); 10], "new clients, a enabled");
    assert_eq!(
        spread(&replies),
        BTreeMap::from([("a".to_string(), 5), ("b".to_string(), 5)])
    );
    let replies = stack.send_all(
        &https,
        &vec![get("/", &jar_a); 6],
        "a's sessions, a enabled",
    );
    assert!(
        replies.iter().all(|r| server(r) == "a"),
        "{:?}",
        spread(&replies)
    );
    let whole = state(&stack.balancer);
    assert!(
        whole["pools"].is_array(),
        "/api/state lists the pools: {whole:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// A sticky server that stops

#[test]
fn when_the_sticky_server_stops_its_sessions_move_and_come_back() {
    let stack_config = |cert: &str, _: &Path| {
        config(
            cert,
            &format!(
                "{}\nhealth = {{ path = \"/status/200\", interval = \"200ms\", timeout = \"150ms\", rise = 1, fall = 2 }}",
                insert_keys()
            ),
        )
    };
    let mut stack = Stack::start("sticky-down", stack_config);
    let https = stack.https();
    let jar_a = format!("{INSERT_COOKIE}={}", signed(KEY, "a"));
    let jar_b = format!("{INSERT_COOKIE}={}", signed(KEY, "b"));

    // New servers start down until a check passes: wait until both take new clients.
    eventually(Duration::from_secs(10), "both servers up", || {
        let replies = https.send_all(&vec![get("/", ""); 4]).ok()?;
        (spread(&replies).len() == 2).then_some(())
    });
    let replies = stack.send_all(&https, &vec![get("/", &jar_a); 4], "a's session, a up");
    assert!(
        replies.iter().all(|r| server(r) == "a"),
        "{:?}",
        spread(&replies)
    );

    // Stop a. Every request with a's cookie is answered by b (whether the checks have noticed
    // yet or the connect fails and the request goes elsewhere) and gets b's cookie.
    let a = stack.a.take().expect("backend a");
    a.stop().expect("stopping backend a");
    for attempt in 1..=10 {
        let reply = stack.send(&https, &get("/", &jar_a), "a's session, a stopped");
        assert_eq!(server(&reply), "b", "attempt {attempt}: a is gone");
        assert_eq!(
            one_set_cookie(&reply, INSERT_COOKIE, "a's session moved").value,
            signed(KEY, "b"),
            "attempt {attempt}: the moved session gets b's cookie"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Within fall × interval (+ one interval) the checks have it down.
    eventually(Duration::from_secs(2), "a marked down", || {
        (server_health(&stack.balancer, URL_A) == "down").then_some(())
    });
    let replies = stack.send_all(&https, &vec![get("/", ""); 6], "new clients, a down");
    assert!(
        replies.iter().all(|r| server(r) == "b"),
        "{:?}",
        spread(&replies)
    );
    let replies = stack.send_all(&https, &vec![get("/", &jar_b); 6], "the moved session");
    for reply in &replies {
        assert_eq!(server(reply), "b");
        assert_eq!(set_cookies(reply, INSERT_COOKIE), []);
    }

    // a comes back: re-admitted once a check passes; its cookie leads there again.
    stack.a = Some(Backend::start(&stack.net, "a", &[BACKEND_A]).expect("backend a again"));
    eventually(Duration::from_secs(5), "a re-admitted", || {
        let reply = https.send(&get("/", &jar_a)).ok()?;
        (reply.status == 200 && server(&reply) == "a").then_some(())
    });
    assert_eq!(server_health(&stack.balancer, URL_A), "up");
    let replies = stack.send_all(&https, &vec![get("/", &jar_a); 4], "a's session, a back");
    assert!(
        replies.iter().all(|r| server(r) == "a"),
        "{:?}",
        spread(&replies)
    );
}
