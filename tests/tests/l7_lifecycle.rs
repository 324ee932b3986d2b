//! The L7 proxy over time, end to end (a real `balancer run` in a namespace of its own, real
//! backends and clients): WebSocket tunnels and their idle timeout, graceful shutdown on
//! SIGTERM, and reloads (`POST /api/reload` and SIGHUP) that add routes, pools and listeners,
//! remove listeners, or are refused.

mod l7_support;

use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use balancer_tests::{
    Backend, BalancerProcess, Certs, Client, L7Net, Request, TlsOptions, websocket_echo,
};
use l7_support::{
    LISTEN, LISTEN_TLS, RawConn, connect_refused, eventually, in_flight, one_pool_config, servers,
    spawn_send, start,
};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

const B1: &str = "127.0.0.1:8081";
const B2: &str = "127.0.0.1:8082";
const B3: &str = "127.0.0.1:8083";

fn url(addr: &str) -> String {
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------------
// WebSocket

/// A WebSocket through `addr` (plain), opened on `ws_url`, held by the test.
fn ws_open(net: &L7Net, addr: &str, ws_url: &str) -> WebSocket<TcpStream> {
    let target: SocketAddr = addr.parse().expect("IP:PORT");
    let stream = net
        .run(move || TcpStream::connect_timeout(&target, Duration::from_secs(3)))
        .expect("enter the namespace")
        .unwrap_or_else(|err| panic!("connecting to {addr}: {err}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let (socket, response) = tungstenite::client(ws_url, stream)
        .unwrap_or_else(|err| panic!("WebSocket handshake with {ws_url} via {addr}: {err}"));
    assert_eq!(response.status(), 101);
    socket
}

/// Sends `text` and waits for the echo.
fn ws_echo(socket: &mut WebSocket<TcpStream>, text: &str) -> Result<String, String> {
    socket
        .send(Message::text(text))
        .map_err(|err| format!("sending {text:?}: {err}"))?;
    loop {
        match socket.read() {
            Ok(Message::Text(echo)) => return Ok(echo.to_string()),
            Ok(Message::Close(frame)) => return Err(format!("closed: {frame:?}")),
            Ok(_) => {}
            Err(err) => return Err(format!("waiting for {text:?} back: {err}")),
        }
    }
}

fn websocket_config(idle: Option<&str>, tls: Option<&str>) -> String {
    let timeouts = idle.map_or(String::new(), |idle| {
        format!("timeouts = {{ websocket_idle = \"{idle}\" }}")
    });
    let tls_listener = tls.map_or(String::new(), |certificate| {
        format!(
            r#"
[[listener]]
name = "secure"
bind = "{LISTEN_TLS}"
tls = {{ certificates = [ {certificate} ] }}

[[route]]
name = "secure"
listener = "secure"
pool = "app"
"#
        )
    });
    format!(
        "{}{tls_listener}",
        one_pool_config(&format!("{}\n{timeouts}", servers(&[(&url(B1), 1)])))
    )
}

#[test]
fn websocket_echo_goes_through_plain_and_tls_listeners() {
    let net = L7Net::new("ws").expect("namespace");
    let b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let certs = Certs::new().expect("CA");
    let site = certs.issue("site", &["app.test"]).expect("certificate");
    let balancer = start(&net, &websocket_config(None, Some(&site.toml())));
    let messages = ["one", "two", &"x".repeat(70_000), "four"];

    let plain = websocket_echo(&net, LISTEN, "ws://app.test/ws", None, &messages)
        .unwrap_or_else(|err| panic!("ws:// through the proxy: {err:#}\nlog:\n{}", balancer.log()));
    assert_eq!(plain.status, 101);
    assert_eq!(plain.echoes, messages, "ws:// echoes");

    let tls = TlsOptions::new(certs.ca_path()).sni("app.test");
    let secure = websocket_echo(&net, LISTEN_TLS, "wss://app.test/ws", Some(&tls), &messages)
        .unwrap_or_else(|err| {
            panic!(
                "wss:// through the proxy: {err:#}\nlog:\n{}",
                balancer.log()
            )
        });
    assert_eq!(secure.status, 101);
    assert_eq!(secure.echoes, messages, "wss:// echoes");

    // A path that does not upgrade is refused as a WebSocket, and plain requests still work.
    let err = websocket_echo(&net, LISTEN, "ws://app.test/not-ws", None, &["x"])
        .expect_err("no upgrade on /not-ws");
    assert!(format!("{err:#}").contains("status 200"), "{err:#}");
    let reply = Client::tcp(&net, LISTEN)
        .send(&Request::get("/after").host("app.test"))
        .expect("a plain request after the tunnels");
    assert_eq!(reply.status, 200);
    assert_eq!(
        b1.stats().expect("stats").requests,
        4,
        "3 upgrades and 1 request"
    );
}

#[test]
fn websocket_idle_timeout_closes_an_idle_tunnel_but_not_an_active_one() {
    let net = L7Net::new("wsidle").expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let balancer = start(&net, &websocket_config(Some("1s"), None));

    let mut idle = ws_open(&net, LISTEN, "ws://app.test/ws");
    assert_eq!(ws_echo(&mut idle, "hello"), Ok("hello".to_string()));
    let mut active = ws_open(&net, LISTEN, "ws://app.test/ws");
    let chatter = std::thread::spawn(move || {
        // A message every 300 ms for 3 s: never idle for 1 s.
        (0..10)
            .map(|i| {
                std::thread::sleep(Duration::from_millis(300));
                ws_echo(&mut active, &format!("tick {i}"))
            })
            .collect::<Vec<_>>()
    });

    // Idle: the proxy closes the tunnel after about 1 s (generous bound: 0.8 to 4 s).
    let started = Instant::now();
    let outcome = idle.read();
    let elapsed = started.elapsed();
    assert!(
        !matches!(outcome, Ok(Message::Text(_) | Message::Binary(_))),
        "an idle tunnel should carry nothing, got {outcome:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(4),
        "the idle tunnel should close about 1 s after the last message, got {outcome:?} after \
         {elapsed:?}\nlog:\n{}",
        balancer.log()
    );
    assert!(
        ws_echo(&mut idle, "still there?").is_err(),
        "the idle tunnel should be closed"
    );

    let ticks = chatter.join().expect("chatter thread");
    for (i, tick) in ticks.iter().enumerate() {
        assert_eq!(
            tick,
            &Ok(format!("tick {i}")),
            "the active tunnel should stay up: {ticks:?}\nlog:\n{}",
            balancer.log()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown

#[test]
fn sigterm_finishes_the_request_in_flight_refuses_new_connections_and_exits_0() {
    let net = L7Net::new("term").expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let certs = Certs::new().expect("CA");
    let site = certs.issue("site", &["app.test"]).expect("certificate");
    let mut balancer = start(&net, &websocket_config(None, Some(&site.toml())));
    let client = Client::tcp(&net, LISTEN);
    let h2_client =
        Client::tcp(&net, LISTEN_TLS).tls(TlsOptions::new(certs.ca_path()).sni("app.test"));

    // An idle keep-alive client connection must not hold the shutdown up.
    let mut idle = RawConn::connect(&net, LISTEN).expect("keep-alive connection");
    assert_eq!(idle.get("app.test", "/first").expect("first").status, 200);

    // In flight at SIGTERM: one over HTTP/1.1, one over HTTP/2 (TLS).
    let slow = spawn_send(&client, Request::get("/delay/1500").host("app.test"));
    let slow_h2 = spawn_send(&h2_client, Request::get("/delay/1500").host("app.test"));
    eventually(
        Duration::from_secs(3),
        "the slow requests in flight",
        || (in_flight(&balancer) == 2).then_some(()),
    );
    balancer.signal(libc::SIGTERM).expect("SIGTERM");
    let signalled = Instant::now();

    eventually(
        Duration::from_secs(2),
        "new connections refused on both listeners after SIGTERM",
        || (connect_refused(&net, LISTEN) && connect_refused(&net, LISTEN_TLS)).then_some(()),
    );
    assert!(
        idle.closed_within(Duration::from_secs(2)),
        "the idle keep-alive connection should be closed on SIGTERM"
    );

    let reply = slow
        .join()
        .expect("slow request thread")
        .unwrap_or_else(|err| {
            panic!(
                "the request in flight at SIGTERM should be answered: {err:#}\nlog:\n{}",
                balancer.log()
            )
        });
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["uri"], "/delay/1500", "the whole body arrived");
    let reply = slow_h2
        .join()
        .expect("slow HTTP/2 request thread")
        .unwrap_or_else(|err| {
            panic!(
                "the HTTP/2 request in flight at SIGTERM should be answered: {err:#}\nlog:\n{}",
                balancer.log()
            )
        });
    assert_eq!(
        (reply.status, reply.version.as_str()),
        (200, "HTTP/2.0"),
        "{}",
        reply.text()
    );
    assert_eq!(reply.json()["uri"], "/delay/1500");

    let status = balancer.wait_exit(Duration::from_secs(10)).expect("exit");
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "balancer should exit 0 after SIGTERM: {status}"
    );
    assert!(
        took < Duration::from_secs(8),
        "with nothing left in flight the balancer should not wait for the 30 s shutdown \
         timeout: exited {took:?} after SIGTERM"
    );
    assert!(
        balancer.log().contains("SIGTERM received"),
        "{}",
        balancer.log()
    );
}

#[test]
fn shutdown_timeout_bounds_how_long_a_slow_request_keeps_the_process_alive() {
    let net = L7Net::new("termto").expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let mut balancer = start(
        &net,
        &format!(
            "[proxy]\nshutdown_timeout = \"1s\"\n{}",
            one_pool_config(&servers(&[(&url(B1), 1)]))
        ),
    );
    let slow = spawn_send(
        &Client::tcp(&net, LISTEN),
        Request::get("/delay/5000").host("app.test"),
    );
    // An open WebSocket does not keep it beyond the timeout either.
    let mut socket = ws_open(&net, LISTEN, "ws://app.test/ws");
    assert_eq!(ws_echo(&mut socket, "open"), Ok("open".to_string()));
    eventually(Duration::from_secs(3), "the slow request in flight", || {
        (in_flight(&balancer) == 2).then_some(())
    });
    balancer.signal(libc::SIGTERM).expect("SIGTERM");
    let signalled = Instant::now();
    let status = balancer.wait_exit(Duration::from_secs(8));
    let took = signalled.elapsed();
    let status = status.unwrap_or_else(|err| panic!("{err:#}"));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "with shutdown_timeout = 1s and a 5 s request in flight the balancer should exit after \
         about 1 s, took {took:?}\nlog:\n{}",
        balancer.log()
    );
    assert!(
        status.success(),
        "exit status {status}\nlog:\n{}",
        balancer.log()
    );
    assert!(
        balancer.log().contains("shutdown timeout reached"),
        "{}",
        balancer.log()
    );
    let outcome = slow.join().expect("slow request thread");
    assert!(
        outcome.is_err(),
        "the cut request cannot have been answered in full: {outcome:?}"
    );
    assert!(
        ws_echo(&mut socket, "after").is_err(),
        "the WebSocket was cut with the process"
    );
}

// ---------------------------------------------------------------------------------------------
// Reload

/// Listener "web" on LISTEN; route "main" → pool "app" (b1); `more` appended.
fn base_config(more: &str) -> String {
    format!(
        r#"
[[listener]]
name = "web"
bind = "{LISTEN}"

[[route]]
name = "main"
listener = "web"
pool = "app"

[pool.app]
servers = [ {{ url = "{}" }} ]
{more}
"#,
        url(B1)
    )
}

fn reload_api(balancer: &BalancerProcess) -> (u16, String) {
    balancer
        .admin_post("/api/reload")
        .unwrap_or_else(|err| panic!("POST /api/reload: {err:#}"))
}

#[test]
fn reload_by_api_and_sighup_adds_routes_and_pools_without_dropping_a_keepalive_connection() {
    let net = L7Net::new("reload").expect("namespace");
    let b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let b2 = Backend::start(&net, "b2", &[B2]).expect("b2");
    let b3 = Backend::start(&net, "b3", &[B3]).expect("b3");
    let mut balancer = start(&net, &base_config(""));
    let mut conn = RawConn::connect(&net, LISTEN).expect("keep-alive connection");
    let get = |conn: &mut RawConn, path: &str| {
        let reply = conn
            .get("app.test", path)
            .unwrap_or_else(|err| panic!("GET {path} on the kept connection: {err:#}"));
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.text());
        reply.server()
    };
    assert_eq!(
        get(&mut conn, "/new/x"),
        "b1",
        "before the reload / takes everything"
    );

    // POST /api/reload: a route /new to a new pool.
    net.write_config(&base_config(&format!(
        r#"
[[route]]
name = "new"
listener = "web"
path = "/new"
pool = "fresh"

[pool.fresh]
servers = [ {{ url = "{}" }} ]
"#,
        url(B2)
    )))
    .expect("config");
    let (status, body) = reload_api(&balancer);
    assert_eq!(status, 200, "reload: {body}\nlog:\n{}", balancer.log());
    assert!(body.contains("2 routes, 2 pools"), "{body}");
    assert_eq!(
        get(&mut conn, "/new/x"),
        "b2",
        "the new route on the same connection"
    );
    assert_eq!(get(&mut conn, "/other"), "b1");

    // SIGHUP: one more route and pool.
    net.write_config(&base_config(&format!(
        r#"
[[route]]
name = "new"
listener = "web"
path = "/new"
pool = "fresh"

[[route]]
name = "third"
listener = "web"
path = "/third"
pool = "third"

[pool.fresh]
servers = [ {{ url = "{}" }} ]

[pool.third]
servers = [ {{ url = "{}" }} ]
"#,
        url(B2),
        url(B3)
    )))
    .expect("config");
    balancer.reload().expect("SIGHUP");
    eventually(Duration::from_secs(3), "the SIGHUP reload applied", || {
        (get(&mut conn, "/third") == "b3").then_some(())
    });
    assert_eq!(get(&mut conn, "/new/y"), "b2");
    assert_eq!(get(&mut conn, "/"), "b1");
    assert!(
        balancer.log().contains("SIGHUP: config reloaded"),
        "{}",
        balancer.log()
    );

    // One client connection throughout; the unchanged pool kept its upstream connection.
    assert!(conn.answered >= 6, "{} answers", conn.answered);
    let stats = b1.stats().expect("b1 stats");
    assert_eq!(
        stats.connections, 1,
        "pool app did not change: its upstream connection survives the reloads ({stats:?})"
    );
    assert!(b2.stats().expect("b2").requests >= 2);
    assert!(b3.stats().expect("b3").requests >= 1);
}

/// The connection metrics are counted by listener, with handles the accept loop keeps while its
/// listener keeps its name: a reload that renames the listener of an address counts the new
/// connections under the new name, and each connection leaves the open gauge it entered.
#[test]
fn connection_metrics_follow_the_listener_through_a_rename() {
    let net = L7Net::new("connmetrics").expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let balancer = start(&net, &base_config(""));
    let series = |name: &str, listener: &str| -> f64 {
        let metrics = l7_support::metrics(&balancer);
        l7_support::sample(&metrics, &format!("{name}{{listener=\"{listener}\"}}")).unwrap_or(0.0)
    };
    let accepted = |listener: &str| series("balancer_http_connections_accepted_total", listener);
    let open = |listener: &str| series("balancer_http_connections", listener);
    let answered = |conn: &mut RawConn| {
        let reply = conn.get("app.test", "/").expect("GET on the connection");
        assert_eq!(reply.status, 200, "{}", reply.text());
    };

    let mut first = RawConn::connect(&net, LISTEN).expect("first connection");
    let mut second = RawConn::connect(&net, LISTEN).expect("second connection");
    answered(&mut first);
    answered(&mut second);
    assert_eq!(accepted("web"), 2.0);
    assert_eq!(open("web"), 2.0);
    drop(second);
    eventually(
        Duration::from_secs(3),
        "the closed connection left the gauge",
        || (open("web") == 1.0).then_some(()),
    );

    // The same address, renamed: "web" becomes "edge".
    net.write_config(&base_config("").replace("\"web\"", "\"edge\""))
        .expect("config");
    let (status, body) = reload_api(&balancer);
    assert_eq!(status, 200, "reload: {body}\nlog:\n{}", balancer.log());
    let mut third = RawConn::connect(&net, LISTEN).expect("connection after the rename");
    answered(&mut third);
    answered(&mut first);
    assert_eq!(
        accepted("edge"),
        1.0,
        "new connections count under the new name"
    );
    assert_eq!(accepted("web"), 2.0, "the old name's count stays as it was");
    assert_eq!(open("edge"), 1.0);
    assert_eq!(
        open("web"),
        1.0,
        "the kept connection still counts where it entered"
    );
    drop(first);
    drop(third);
    eventually(Duration::from_secs(3), "both gauges back to zero", || {
        (open("web") == 0.0 && open("edge") == 0.0).then_some(())
    });
}

/// The workers' listening sockets form a `SO_REUSEPORT` group, which any process of the same
/// user could join and take a share of the connections from. A second balancer started on the
/// same address must fail as without the group, and leave every connection to the first.
#[test]
fn a_second_balancer_on_the_same_address_is_refused_and_takes_no_connection() {
    let net = L7Net::new("twice").expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let upgrade_socket = |name: &str| {
        format!(
            "[proxy]\nworkers = 2\nupgrade_socket = {:?}\n",
            net.dir().join(name).display().to_string()
        )
    };
    let first = start(
        &net,
        &format!("{}{}", upgrade_socket("first.sock"), base_config("")),
    );
    let second_config = net.dir().join("second.toml");
    std::fs::write(
        &second_config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:9101\"\n{}{}",
            upgrade_socket("second.sock"),
            base_config("")
        ),
    )
    .expect("write the second config");
    let refused = match BalancerProcess::start(&net, &second_config, "127.0.0.1:9101") {
        Ok(second) => panic!("a second balancer started on {LISTEN}:\n{}", second.log()),
        Err(err) => format!("{err:#}"),
    };
    assert!(
        refused.contains(&format!("cannot listen on {LISTEN}")) && refused.contains("in use"),
        "the second balancer should say the address is in use: {refused}"
    );
    // Each request on a new connection: all of them reach the first balancer.
    for n in 0..40 {
        let reply = RawConn::connect(&net, LISTEN)
            .and_then(|mut conn| conn.get("app.test", &format!("/new-{n}")))
            .unwrap_or_else(|err| panic!("connection {n}: {err:#}\n{}", first.log()));
        assert_eq!(reply.status, 200, "connection {n}");
    }
}

#[test]
fn a_broken_reload_is_refused_with_the_reason_and_the_old_config_keeps_serving() {
    let net = L7Net::new("badreload").expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let _b2 = Backend::start(&net, "b2", &[B2]).expect("b2 (its port is taken)");
    let good = base_config("");
    let mut balancer = start(&net, &good);
    let mut conn = RawConn::connect(&net, LISTEN).expect("keep-alive connection");
    let missing = net.dir().join("missing.pem").display().to_string();

    let broken: [(&str, String, &str); 6] = [
        (
            "TOML syntax",
            format!("{good}\n[pool.bad\n"),
            "balancer.toml",
        ),
        (
            "a route to a missing pool",
            base_config(
                "[[route]]\nname = \"ghost\"\nlistener = \"web\"\npath = \"/g\"\npool = \"nowhere\"\n",
            ),
            "nowhere",
        ),
        (
            "a missing certificate file",
            format!(
                "{good}\n[[listener]]\nname = \"secure\"\nbind = \"127.0.0.1:8443\"\n\
                 tls = {{ certificates = [ {{ cert = \"{missing}\", key = \"{missing}\" }} ] }}\n"
            ),
            "missing.pem",
        ),
        (
            "a listener on a port in use",
            format!("{good}\n[[listener]]\nname = \"taken\"\nbind = \"{B2}\"\n"),
            "cannot listen on 127.0.0.1:8082",
        ),
        (
            "a changed admin.listen",
            format!("[admin]\nlisten = \"127.0.0.1:9101\"\n{good}"),
            "admin.listen changed",
        ),
        (
            "an [xdp] section added (the data plane is not reloaded)",
            format!("[xdp]\ninterface = \"lo\"\n{good}"),
            "[xdp] or [[vip]] changed",
        ),
    ];
    for (what, config, reason) in &broken {
        net.write_config(config).expect("config");
        let (status, body) = reload_api(&balancer);
        assert_eq!(
            status, 400,
            "a reload with {what} should be refused, got {status}: {body}"
        );
        assert!(
            body.contains("reload refused") && body.contains(reason),
            "the refusal of {what} should say why ({reason:?}): {body}"
        );
        let reply = conn
            .get("app.test", "/still")
            .unwrap_or_else(|err| panic!("after the refused reload ({what}): {err:#}"));
        assert_eq!(
            (reply.status, reply.server().as_str()),
            (200, "b1"),
            "the old config keeps serving after {what}"
        );
    }
    assert!(
        connect_refused(&net, "127.0.0.1:8443"),
        "nothing of a refused reload is applied (the TLS listener)"
    );

    // The same by SIGHUP: refused, logged, still serving.
    net.write_config(&broken[1].1).expect("config");
    balancer.reload().expect("SIGHUP");
    eventually(Duration::from_secs(3), "the SIGHUP refusal logged", || {
        balancer
            .log()
            .contains("SIGHUP: reload refused")
            .then_some(())
    });
    assert_eq!(
        conn.get("app.test", "/g").expect("after SIGHUP").server(),
        "b1"
    );

    // Fixed: the next reload applies.
    net.write_config(&good).expect("config");
    let (status, body) = reload_api(&balancer);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        conn.get("app.test", "/ok").expect("after the fix").status,
        200
    );
}

#[test]
fn listeners_added_by_reload_accept_and_removed_ones_stop() {
    const EXTRA: &str = "127.0.0.1:8090";
    let net = L7Net::new("lsn").expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let _b2 = Backend::start(&net, "b2", &[B2]).expect("b2");
    let balancer = start(&net, &base_config(""));
    assert!(connect_refused(&net, EXTRA), "nothing on {EXTRA} yet");
    // A keep-alive connection on the listener that will be removed.
    let mut kept = RawConn::connect(&net, LISTEN).expect("keep-alive connection");
    assert_eq!(kept.get("app.test", "/k").expect("first").server(), "b1");

    let with_extra = base_config(&format!(
        r#"
[[listener]]
name = "extra"
bind = "{EXTRA}"

[[route]]
name = "extra"
listener = "extra"
pool = "other"

[pool.other]
servers = [ {{ url = "{}" }} ]
"#,
        url(B2)
    ));
    net.write_config(&with_extra).expect("config");
    let (status, body) = reload_api(&balancer);
    assert_eq!(status, 200, "{body}\nlog:\n{}", balancer.log());
    let reply = Client::tcp(&net, EXTRA)
        .send(&Request::get("/x").host("app.test"))
        .unwrap_or_else(|err| panic!("the added listener: {err:#}\nlog:\n{}", balancer.log()));
    assert_eq!(
        (reply.status, reply.json()["server"].as_str()),
        (200, Some("b2")),
        "the added listener routes to its pool"
    );
    let reply = Client::tcp(&net, LISTEN)
        .send(&Request::get("/x").host("app.test"))
        .expect("the first listener");
    assert_eq!(reply.json()["server"], "b1");

    // Remove the first listener (and its route).
    let only_extra = format!(
        r#"
[[listener]]
name = "extra"
bind = "{EXTRA}"

[[route]]
name = "extra"
listener = "extra"
pool = "other"

[pool.other]
servers = [ {{ url = "{}" }} ]
"#,
        url(B2)
    );
    // A request in flight on it when it goes.
    let slow = spawn_send(
        &Client::tcp(&net, LISTEN),
        Request::get("/delay/1000").host("app.test"),
    );
    eventually(Duration::from_secs(3), "the slow request in flight", || {
        (in_flight(&balancer) == 1).then_some(())
    });
    net.write_config(&only_extra).expect("config");
    let (status, body) = reload_api(&balancer);
    assert_eq!(status, 200, "{body}");
    eventually(
        Duration::from_secs(3),
        "the removed listener refuses connections",
        || connect_refused(&net, LISTEN).then_some(()),
    );
    // Its open connections are closed like on shutdown (not left answering 404 for want of
    // their listener's routes).
    assert!(
        kept.closed_within(Duration::from_secs(2)),
        "an idle keep-alive connection of the removed listener should be closed, it answers: \
         {:?}",
        kept.get("app.test", "/k2")
            .map(|reply| (reply.status, reply.text()))
    );
    let reply = slow
        .join()
        .expect("slow request thread")
        .unwrap_or_else(|err| panic!("the request in flight on the removed listener: {err:#}"));
    assert_eq!(
        (reply.status, reply.json()["uri"].as_str()),
        (200, Some("/delay/1000")),
        "a request in flight on a removed listener is still answered"
    );
    let reply = Client::tcp(&net, EXTRA)
        .send(&Request::get("/y").host("app.test"))
        .expect("the remaining listener");
    assert_eq!(reply.json()["server"], "b2");

    // And back: the address can be bound again.
    net.write_config(&with_extra).expect("config");
    let (status, body) = reload_api(&balancer);
    assert_eq!(status, 200, "{body}\nlog:\n{}", balancer.log());
    let reply = Client::tcp(&net, LISTEN)
        .send(&Request::get("/z").host("app.test"))
        .unwrap_or_else(|err| panic!("the re-added listener: {err:#}\nlog:\n{}", balancer.log()));
    assert_eq!(reply.json()["server"], "b1");
}

#[test]
fn a_listener_renamed_by_reload_keeps_serving_its_open_connections() {
    let net = L7Net::new("rename").expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let balancer = start(&net, &base_config(""));
    let mut kept = RawConn::connect(&net, LISTEN).expect("keep-alive connection");
    assert_eq!(kept.get("app.test", "/a").expect("first").server(), "b1");

    // Same address, another name (and its route follows).
    let renamed = base_config("").replace("\"web\"", "\"www\"");
    assert!(renamed.contains("name = \"www\"") && renamed.contains("listener = \"www\""));
    net.write_config(&renamed).expect("config");
    let (status, body) = reload_api(&balancer);
    assert_eq!(status, 200, "{body}\nlog:\n{}", balancer.log());

    let reply = Client::tcp(&net, LISTEN)
        .send(&Request::get("/new").host("app.test"))
        .expect("a new connection after the rename");
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The open connection: answered under the new name, or closed so the client reconnects;
    // never a 404 for the routes of a name that is gone.
    match kept.get("app.test", "/b") {
        Ok(reply) => {
            assert_eq!(
                reply.status,
                200,
                "the open connection after its listener was renamed: {}",
                reply.text()
            );
            assert_eq!(reply.server(), "b1");
        }
        Err(err) => assert!(
            format!("{err:#}").contains("closed"),
            "the open connection after the rename: {err:#}"
        ),
    }
}

#[test]
fn a_websocket_open_at_sigterm_keeps_working_until_it_closes_then_the_process_exits() {
    let net = L7Net::new("wsterm").expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let mut balancer = start(&net, &websocket_config(None, None));
    let mut socket = ws_open(&net, LISTEN, "ws://app.test/ws");
    assert_eq!(ws_echo(&mut socket, "before"), Ok("before".to_string()));

    balancer.signal(libc::SIGTERM).expect("SIGTERM");
    eventually(Duration::from_secs(2), "new connections refused", || {
        connect_refused(&net, LISTEN).then_some(())
    });
    // The tunnel is in flight: it gets the shutdown grace (30 s by default) like a request.
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            ws_echo(&mut socket, &format!("draining {i}")),
            Ok(format!("draining {i}")),
            "an open WebSocket should keep working while the balancer drains\nlog:\n{}",
            balancer.log()
        );
    }
    assert!(balancer.is_running(), "still draining the open WebSocket");

    // The client closes it: nothing is left, the balancer exits.
    let closed = Instant::now();
    socket.close(None).expect("close");
    while socket.read().is_ok() {}
    drop(socket);
    let status = balancer.wait_exit(Duration::from_secs(10)).expect("exit");
    assert!(status.success(), "exit status {status}");
    assert!(
        closed.elapsed() < Duration::from_secs(8),
        "the balancer should exit once the last tunnel closed, not at the 30 s timeout: {:?}",
        closed.elapsed()
    );
}

#[test]
fn reload_changing_a_pool_applies_its_new_servers_and_weights() {
    let net = L7Net::new("poolchg").expect("namespace");
    let b1 = Backend::start(&net, "b1", &[B1]).expect("b1");
    let _b2 = Backend::start(&net, "b2", &[B2]).expect("b2");
    let _b3 = Backend::start(&net, "b3", &[B3]).expect("b3");
    let balancer = start(
        &net,
        &one_pool_config(&servers(&[(&url(B1), 1), (&url(B2), 1)])),
    );
    let names = |n: usize| -> Vec<String> {
        Client::tcp(&net, LISTEN)
            .send_all(
                &(0..n)
                    .map(|_| Request::get("/p").host("app.test"))
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_else(|err| panic!("requests: {err:#}\nlog:\n{}", balancer.log()))
            .iter()
            .map(|reply| reply.json()["server"].as_str().unwrap().to_string())
            .collect()
    };
    let count = |names: &[String], name: &str| names.iter().filter(|n| *n == name).count();
    let first = names(4);
    assert_eq!(
        (count(&first, "b1"), count(&first, "b2")),
        (2, 2),
        "{first:?}"
    );
    assert_eq!(
        b1.stats().expect("stats").open,
        1,
        "an idle upstream connection to b1"
    );

    // A slow request on the old pool while it is replaced.
    let slow = spawn_send(
        &Client::tcp(&net, LISTEN),
        Request::get("/delay/1000").host("app.test"),
    );
    eventually(Duration::from_secs(3), "the slow request in flight", || {
        (in_flight(&balancer) == 1).then_some(())
    });
    net.write_config(&one_pool_config(&servers(&[
        (&url(B1), 0),
        (&url(B2), 3),
        (&url(B3), 1),
    ])))
    .expect("config");
    let (status, body) = reload_api(&balancer);
    assert_eq!(status, 200, "{body}\nlog:\n{}", balancer.log());

    let after = names(8);
    assert_eq!(
        (
            count(&after, "b1"),
            count(&after, "b2"),
            count(&after, "b3")
        ),
        (0, 6, 2),
        "the new weights 0:3:1 apply at once: {after:?}"
    );
    let reply = slow
        .join()
        .expect("slow thread")
        .unwrap_or_else(|err| panic!("the request in flight on the replaced pool: {err:#}"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The replaced pool's idle connections are closed (b1's, the slow request's when done).
    eventually(
        Duration::from_secs(3),
        "the old pool's idle connections to b1 closed",
        || (b1.stats().expect("stats").open == 0).then_some(()),
    );
}

// ---------------------------------------------------------------------------------------------
// Operator state across restarts

/// The `operator` of each server of pool "app" in `/api/state`, by url.
fn operators(balancer: &BalancerProcess) -> Vec<(String, String)> {
    let state = l7_support::state(balancer);
    let pool = state["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["name"] == "app"))
        .unwrap_or_else(|| panic!("pool app in {state}"));
    pool["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("servers in {pool}"))
        .iter()
        .map(|s| {
            (
                s["url"].as_str().unwrap_or_default().to_string(),
                s["operator"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_drain_and_a_disable_survive_a_restart_through_the_state_file() {
    let net = L7Net::new("opstate").expect("namespace");
    let _b1 = Backend::start(&net, "b1", &[B1]).expect("backend b1");
    let _b2 = Backend::start(&net, "b2", &[B2]).expect("backend b2");
    let _b3 = Backend::start(&net, "b3", &[B3]).expect("backend b3");
    let state_file = net.dir().join("state.json");
    // b3 is configured to start draining; the operator enables it, and that must survive the
    // restart too.
    let config = format!(
        "[proxy]\nstate_file = {:?}\n{}",
        state_file.display().to_string(),
        one_pool_config(&format!(
            "servers = [ {{ url = \"{}\" }}, {{ url = \"{}\" }}, {{ url = \"{}\", state = \"draining\" }} ]",
            url(B1),
            url(B2),
            url(B3)
        ))
    );
    let mut balancer = start(&net, &config);
    assert_eq!(operators(&balancer)[2], (url(B3), "draining".to_string()));
    for (server, action) in [
        (url(B1), "drain"),
        (url(B2), "disable"),
        (url(B3), "enable"),
    ] {
        let path = format!(
            "/api/pools/app/servers/{}/{action}",
            server.replace(':', "%3A").replace('/', "%2F")
        );
        let (status, body) = balancer.admin_post(&path).expect("admin API");
        assert_eq!(status, 200, "{path}: {body}");
    }
    let written = std::fs::read_to_string(&state_file).expect("state file written");
    assert!(
        written.contains("\"draining\"") && written.contains("\"disabled\""),
        "{written}"
    );
    let status = balancer.terminate().expect("exit");
    assert!(status.success(), "{status}");

    let balancer = start(&net, &config);
    assert_eq!(
        operators(&balancer),
        [
            (url(B1), "draining".to_string()),
            (url(B2), "disabled".to_string()),
            (url(B3), "enabled".to_string()),
        ],
        "after the restart; log:\n{}",
        balancer.log()
    );
    // New requests go to the only enabled server.
    let client = Client::tcp(&net, LISTEN);
    for _ in 0..6 {
        let reply = client
            .send(&Request::get("/x").host("www.example.test"))
            .expect("request");
        assert_eq!(l7_support::server_of(&reply), "b3", "{}", reply.text());
    }
}

#[test]
fn a_corrupt_state_file_refuses_the_start_with_the_reason() {
    let net = L7Net::new("opstatebad").expect("namespace");
    let state_file = net.dir().join("state.json");
    std::fs::write(
        &state_file,
        "{\"pools\": {\"app\": {\"http://x:1\": \"asleep\"}}}",
    )
    .expect("write");
    let config = format!(
        "[proxy]\nstate_file = {:?}\n{}",
        state_file.display().to_string(),
        one_pool_config(&servers(&[(&url(B1), 1)]))
    );
    let err = net
        .start_balancer(&config)
        .err()
        .expect("the start is refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("is not \"enabled\", \"draining\" or \"disabled\""),
        "{text}"
    );
}
