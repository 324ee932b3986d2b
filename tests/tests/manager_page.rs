//! The balancer-manager page (`GET /` on the admin listener) in a real browser: headless
//! Chromium in the test's namespace logs in with the admin token, shows the pools and their
//! servers with the state words of `/api/state`, drains a server with a click (the API's state
//! changes), follows a change made elsewhere without reloading, and a screenshot is saved in
//! `target/test-artifacts/`. The admin API refuses state changes from another origin, token or
//! not.

mod l7_support;

use std::time::Duration;

use balancer_tests::{Backend, BalancerProcess, L7Net, browser::Browser, run_in};
use l7_support::start;

const B1: &str = "127.0.0.1:8081";
const B2: &str = "127.0.0.1:8082";
const TOKEN: &str = "manager-test-token-0123456789";
const ADMIN: &str = "http://127.0.0.1:9100";

/// `curl` against the admin API with the token and `extra` arguments: (status, body).
fn admin(balancer: &BalancerProcess, net: &L7Net, args: &[&str]) -> (u16, String) {
    let auth = format!("Authorization: Bearer {TOKEN}");
    let mut all = vec!["-sS", "-H", auth.as_str(), "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = run_in(&net.path(), "curl", &all)
        .unwrap_or_else(|err| panic!("curl {args:?}: {err:#}\n{}", balancer.log()));
    let (body, code) = out.rsplit_once('\n').expect("status");
    (code.trim().parse().expect("code"), body.to_string())
}

fn operator(balancer: &BalancerProcess, net: &L7Net, url: &str) -> String {
    let (_, body) = admin(balancer, net, &[&format!("{ADMIN}/api/state")]);
    let state: serde_json::Value = serde_json::from_str(&body).expect("state JSON");
    state["pools"][0]["servers"]
        .as_array()
        .and_then(|servers| servers.iter().find(|s| s["url"] == url))
        .map(|s| s["operator"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("server {url} in {state}"))
}

#[test]
fn the_manager_page_logs_in_shows_the_pools_and_drains_with_a_click() {
    let net = L7Net::new("manager").expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let _b2 = Backend::start(&net, "b2", &[B2]).expect("b2");
    let token_file = net.dir().join("admin.token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let balancer = start(
        &net,
        &format!(
            r#"[admin]
listen = "127.0.0.1:9100"
token_file = "{}"

[[listener]]
name = "web"
bind = "127.0.0.1:8080"

[[route]]
pool = "app"

[pool.app]
servers = [ {{ url = "http://{B1}" }}, {{ url = "http://{B2}" }} ]
"#,
            token_file.display()
        ),
    );
    let (b1_url, b2_url) = (format!("http://{B1}"), format!("http://{B2}"));

    let mut browser = Browser::launch(&net).expect("chromium");
    browser.navigate(&format!("{ADMIN}/")).expect("navigate");
    // With token_file, the page asks for the token: a form with a password input.
    browser
        .wait_for(
            "document.getElementById('login') && !document.getElementById('login').hidden \
             && document.querySelector('#login input[type=password]') !== null",
            Duration::from_secs(15),
        )
        .expect("login form");
    browser
        .eval(&format!(
            "document.getElementById('token').value = '{TOKEN}'; \
             document.getElementById('login').requestSubmit(); true"
        ))
        .expect("log in");
    browser
        .wait_for(
            "document.querySelectorAll('tr.server').length === 2",
            Duration::from_secs(10),
        )
        .expect("the pool's servers are listed");
    let rows = browser
        .eval(
            "Array.from(document.querySelectorAll('tr.server')).map(r => \
             [r.dataset.pool, r.cells[0].textContent, r.cells[1].textContent, r.cells[3].textContent, \
              Array.from(r.querySelectorAll('button')).map(b => b.textContent).join(',')])",
        )
        .expect("rows");
    assert_eq!(
        rows,
        serde_json::json!([
            ["app", b1_url, "up", "enabled", "Drain,Disable,Enable"],
            ["app", b2_url, "up", "enabled", "Drain,Disable,Enable"],
        ]),
        "servers by their URL, with /api/state's words"
    );

    // A click on Drain goes through the API.
    browser
        .eval(&format!(
            "document.querySelector('tr.server[data-url=\"{b1_url}\"] button[data-action=drain]').click(); true"
        ))
        .expect("click");
    browser
        .wait_for(
            &format!(
                "(() => {{ const r = document.querySelector('tr.server[data-url=\"{b1_url}\"]'); \
                 return r !== null && r.cells[3].textContent === 'draining'; }})()"
            ),
            Duration::from_secs(10),
        )
        .expect("the page shows the drain");
    assert_eq!(operator(&balancer, &net, &b1_url), "draining");

    // A change made elsewhere shows up by itself (the page refreshes every 2 s).
    let (status, body) = admin(
        &balancer,
        &net,
        &[
            "-X",
            "POST",
            &format!(
                "{ADMIN}/api/pools/app/servers/{}/disable",
                b2_url.replace(':', "%3A").replace('/', "%2F")
            ),
        ],
    );
    assert_eq!(status, 200, "{body}");
    browser
        .wait_for(
            &format!(
                "(() => {{ const r = document.querySelector('tr.server[data-url=\"{b2_url}\"]'); \
                 return r !== null && r.cells[3].textContent === 'disabled'; }})()"
            ),
            Duration::from_secs(5),
        )
        .expect("the page follows the API without a reload");
    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    let shot = browser
        .screenshot(&artifacts.join("manager-page.png"))
        .expect("screenshot");
    assert!(
        std::fs::metadata(&shot).expect("png").len() > 1000,
        "a real picture at {}",
        shot.display()
    );

    // Cross-site requests change nothing, even with the token.
    let enable_b1 = format!(
        "{ADMIN}/api/pools/app/servers/{}/enable",
        b1_url.replace(':', "%3A").replace('/', "%2F")
    );
    for extra in [
        ["-H", "Origin: http://evil.test"],
        ["-H", "Sec-Fetch-Site: cross-site"],
        ["-H", "Content-Type: application/x-www-form-urlencoded"],
    ] {
        let mut args = vec!["-X", "POST"];
        args.extend_from_slice(&extra);
        args.push(&enable_b1);
        let (status, body) = admin(&balancer, &net, &args);
        assert_eq!(status, 403, "{extra:?}: {body}");
    }
    assert_eq!(
        operator(&balancer, &net, &b1_url),
        "draining",
        "still drained"
    );
}
