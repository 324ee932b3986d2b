//! WebSockets over HTTP/2 (RFC 8441): a client opens an extended CONNECT stream on an h2 TLS
//! connection; the proxy turns it into the HTTP/1.1 Upgrade handshake the backend speaks and
//! tunnels the frames.

use balancer_tests::{Backend, Certs, L7Net, TlsOptions, l7::websocket_echo_h2};

#[test]
fn a_websocket_over_http2_reaches_an_http1_backend_and_echoes() {
    let net = L7Net::new("ws-h2").expect("netns");
    let certs = Certs::new().expect("CA");
    let site = certs.issue("site", &["www.example.test"]).expect("cert");
    let backend = Backend::start(&net, "ws", &["127.0.0.1:8081"]).expect("backend");
    let balancer = net
        .start_balancer(&format!(
            r#"[[listener]]
name = "https"
bind = "127.0.0.1:8443"
tls = {{ certificates = [ {cert} ] }}

[[route]]
listener = "https"
pool = "app"
# The tunnel's 200 has a body that is the tunnel: compression must leave it alone.
compress = true

[pool.app]
servers = [ {{ url = "{url}" }} ]
"#,
            cert = site.toml(),
            url = backend.url()
        ))
        .expect("balancer");
    let tls = TlsOptions::new(certs.ca_path()).sni("www.example.test");
    let echo = websocket_echo_h2(
        &net,
        "127.0.0.1:8443",
        "www.example.test",
        "/ws",
        &tls,
        &["one", "two", "three"],
    )
    .unwrap_or_else(|err| panic!("{err:#}\nbalancer log:\n{}", balancer.log()));
    assert_eq!(echo.status, 200, "the CONNECT stream is accepted with 200");
    assert_eq!(echo.echoes, ["one", "two", "three"], "{}", balancer.log());
    assert!(
        !echo
            .headers
            .iter()
            .any(|(name, _)| name == "sec-websocket-accept"
                || name == "upgrade"
                || name == "connection"),
        "no HTTP/1.1 handshake headers on an h2 response: {:?}",
        echo.headers
    );
}
