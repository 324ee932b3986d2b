//! The L7 proxy end to end, TLS and routing: a real `balancer run` in its own namespace, real
//! `l7_backend` servers, and real clients (the harness's hyper/rustls client, curl, raw TCP).
//!
//! - SNI chooses the certificate (exact SAN, wildcard SAN, else the first one).
//! - ALPN gives h2 or HTTP/1.1; TLS 1.2 clients work.
//! - 421 when the request's host is not the SNI.
//! - Certificates are reloaded on SIGHUP without dropping connections; a broken key is refused
//!   by the reload, by `balancer run` and by `balancer check-config`, naming the file.
//! - Routing by host and longest prefix, strip_prefix, the add-slash redirect, preserve_host,
//!   redirect_https, dot segments, 404 without a route, an IPv6 listener, two listeners.
//! - Static files: content type, ranges, traversal.
//!
//! Each test has its own namespace, so the fixed ports never collide.

mod l7_support;

use std::{
    io::Read,
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context;
use balancer_tests::{
    Backend, BalancerProcess, Certs, Client, L7Net, Reply, Request, TlsOptions, balancer_binary,
    child::ChildGuard, curl, https_request, l7::TlsInfo, raw_tcp,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use l7_support::{ok, start};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};

const B1: &str = "127.0.0.1:8081";
const TLS_ADDR: &str = "127.0.0.1:8443";

/// A TLS listener "tls" on [`TLS_ADDR`] with `certs` (TOML inline tables), one route to a
/// pool of the backend at [`B1`].
fn tls_config(certs: &[String]) -> String {
    format!(
        r#"
[[listener]]
name = "tls"
bind = "{TLS_ADDR}"
tls = {{ certificates = [ {} ] }}

[[route]]
listener = "tls"
pool = "app"

[pool.app]
servers = [ {{ url = "http://{B1}" }} ]
"#,
        certs.join(", ")
    )
}

/// Waits until the balancer's log contains `needle` `count` times (a reload is asynchronous).
fn wait_for_log(balancer: &BalancerProcess, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = balancer.log();
        if log.matches(needle).count() >= count {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} log line(s) with {needle:?} within 5 s; the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// SNI, ALPN, 421

#[test]
fn sni_picks_the_exact_then_the_wildcard_certificate_else_the_first() {
    let net = L7Net::new("sni").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let certs = Certs::new().expect("CA");
    let default = certs.issue("default", &["default.test"]).expect("cert");
    // The wildcard comes before the exact name that it also covers: exact names still win.
    let wild = certs.issue("wild", &["*.wild.test"]).expect("cert");
    let exact = certs
        .issue("exact", &["exact.test", "api.wild.test"])
        .expect("cert");
    let balancer = start(
        &net,
        &tls_config(&[default.toml(), wild.toml(), exact.toml()]),
    );
    let ca = certs.ca_path();

    let sans_for = |sni: Option<&str>| -> Vec<String> {
        let mut options = TlsOptions::new(ca).skip_name_check();
        if let Some(sni) = sni {
            options = options.sni(sni);
        }
        let info = Client::tcp(&net, TLS_ADDR).tls(options).handshake();
        ok(info, &format!("handshake with SNI {sni:?}"), &balancer).peer_cert_sans
    };
    for (sni, expected) in [
        (Some("exact.test"), &exact.sans),
        (Some("EXACT.test"), &exact.sans),
        (Some("api.wild.test"), &exact.sans),
        (Some("www.wild.test"), &wild.sans),
        // A wildcard covers one label only.
        (Some("a.b.wild.test"), &default.sans),
        (Some("wild.test"), &default.sans),
        (Some("unknown.test"), &default.sans),
        (None, &default.sans),
    ] {
        assert_eq!(
            &sans_for(sni),
            expected,
            "SNI {sni:?} should get the certificate for {expected:?}"
        );
    }

    // The chosen certificate passes a normal name check, and the request goes through.
    let tls = TlsOptions::new(ca).sni("www.wild.test");
    let reply = https_request(
        &net,
        TLS_ADDR,
        &tls,
        &Request::get("/hello").host("www.wild.test"),
    );
    let reply = ok(reply, "HTTPS request with SNI www.wild.test", &balancer);
    assert_eq!(reply.status, 200, "body {}", reply.text());
    assert_eq!(reply.json()["server"], "b1");
    assert_eq!(reply.json()["uri"], "/hello");
}

#[test]
fn alpn_negotiates_h2_or_http11_and_tls12_clients_work() {
    let net = L7Net::new("alpn").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let certs = Certs::new().expect("CA");
    let site = certs.issue("site", &["site.test"]).expect("cert");
    let balancer = start(&net, &tls_config(&[site.toml()]));
    let ca = certs.ca_path();
    let tls = TlsOptions::new(ca).sni("site.test");
    let request = Request::get("/alpn?x=1").host("site.test");

    let h2 = ok(
        https_request(&net, TLS_ADDR, &tls, &request),
        "h2 by ALPN",
        &balancer,
    );
    assert_eq!(h2.alpn.as_deref(), Some("h2"));
    assert_eq!(h2.version, "HTTP/2.0");
    assert_eq!(h2.status, 200);
    let seen = h2.json();
    assert_eq!(seen["uri"], "/alpn?x=1");
    assert_eq!(
        seen["version"], "HTTP/1.1",
        "the proxy speaks HTTP/1.1 to the server"
    );

    for (alpn, label) in [(&["http/1.1"][..], "http/1.1 only"), (&[][..], "no ALPN")] {
        let reply = ok(
            https_request(&net, TLS_ADDR, &tls.clone().alpn(alpn), &request),
            label,
            &balancer,
        );
        assert_eq!(
            reply.alpn.as_deref(),
            alpn.first().copied(),
            "{label}: ALPN"
        );
        assert_eq!(reply.version, "HTTP/1.1", "{label}");
        assert_eq!(reply.status, 200, "{label}");
        assert_eq!(reply.json()["uri"], "/alpn?x=1", "{label}");
    }

    // TLS 1.2 only, with h2 and with HTTP/1.1.
    for alpn in [&["h2", "http/1.1"][..], &["http/1.1"][..]] {
        let reply = ok(
            https_request(
                &net,
                TLS_ADDR,
                &tls.clone().tls12_only().alpn(alpn),
                &request,
            ),
            "TLS 1.2",
            &balancer,
        );
        assert_eq!(reply.tls_version.as_deref(), Some("TLSv1_2"));
        assert_eq!(reply.alpn.as_deref(), Some(alpn[0]));
        assert_eq!(reply.status, 200);
    }
    let default_version = ok(
        https_request(&net, TLS_ADDR, &tls, &request),
        "TLS default",
        &balancer,
    );
    assert_eq!(default_version.tls_version.as_deref(), Some("TLSv1_3"));

    // curl, with the name resolved to the listener and our CA.
    let ca_arg = ca.display().to_string();
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let reply = curl(
            &net,
            &[
                flag,
                "--cacert",
                &ca_arg,
                "--resolve",
                "site.test:8443:127.0.0.1",
                "https://site.test:8443/curl/path?q=2",
            ],
        );
        let reply = ok(reply, &format!("curl {flag}"), &balancer);
        assert_eq!(reply.http_version, version, "curl {flag}");
        assert_eq!(reply.status, 200, "curl {flag}: {}", reply.text());
        let seen: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
        assert_eq!(seen["uri"], "/curl/path?q=2");
        assert_eq!(seen["server"], "b1");
    }
    let reply = curl(
        &net,
        &[
            "--http1.1",
            "--tlsv1.2",
            "--tls-max",
            "1.2",
            "--cacert",
            &ca_arg,
            "--resolve",
            "site.test:8443:127.0.0.1",
            "https://site.test:8443/tls12",
        ],
    );
    assert_eq!(ok(reply, "curl TLS 1.2", &balancer).status, 200);
}

#[test]
fn a_host_that_is_not_the_sni_gets_421() {
    let net = L7Net::new("421").expect("namespace");
    let backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let certs = Certs::new().expect("CA");
    // One certificate for both names, as a client that coalesces connections would see.
    let site = certs.issue("site", &["a.test", "b.test"]).expect("cert");
    let balancer = start(&net, &tls_config(&[site.toml()]));
    let ca = certs.ca_path();

    for alpn in [&["h2"][..], &["http/1.1"][..]] {
        let tls = TlsOptions::new(ca).sni("a.test").alpn(alpn);
        let client = Client::tcp(&net, TLS_ADDR).tls(tls);
        let replies = ok(
            client.send_all(&[
                Request::get("/same").host("a.test"),
                Request::get("/same-port").host("A.test:8443"),
                Request::get("/other").host("b.test"),
                Request::get("/after").host("a.test"),
            ]),
            &format!("{alpn:?} requests on one connection"),
            &balancer,
        );
        let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [200, 200, 421, 200],
            "{alpn:?}: host = SNI (any case, with a port) is served, another host gets 421 \
             and the connection goes on; bodies: {:?}",
            replies.iter().map(Reply::text).collect::<Vec<_>>()
        );
        assert_eq!(replies[0].json()["uri"], "/same");
        assert!(
            replies[2].text().contains("421"),
            "the 421 has a body naming it: {:?}",
            replies[2].text()
        );
    }
    let stats = backend.stats().expect("backend stats");
    assert_eq!(
        stats.requests, 6,
        "the misdirected requests never reach the server"
    );

    // Without SNI there is nothing to compare with: every host is served.
    let tls = TlsOptions::new(ca);
    for host in ["a.test", "b.test", "anything.test"] {
        let reply = https_request(&net, TLS_ADDR, &tls, &Request::get("/nosni").host(host));
        let reply = ok(reply, &format!("no SNI, host {host}"), &balancer);
        assert_eq!(reply.status, 200, "no SNI, host {host}: {}", reply.text());
    }
}

// ---------------------------------------------------------------------------------------------
// Certificate reload

type Job = (Request, std::sync::mpsc::Sender<anyhow::Result<Reply>>);

/// One TLS connection kept open across several calls (HTTP/1.1 keep-alive or h2 by ALPN), on a
/// thread of its own. The socket is made inside the namespace; it stays there.
struct HeldConnection {
    jobs: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
    info: TlsInfo,
}

impl HeldConnection {
    fn open(net: &L7Net, addr: &str, ca: &Path, sni: &str, alpn: &str) -> anyhow::Result<Self> {
        let target: std::net::SocketAddr = addr.parse()?;
        let tcp = net.run(move || std::net::TcpStream::connect(target))??;
        tcp.set_nonblocking(true)?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        let name = ServerName::try_from(sni.to_string())?;
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (opened, handshake) = std::sync::mpsc::channel::<anyhow::Result<TlsInfo>>();
        let h2 = alpn == "h2";
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let connected = async {
                    let tcp = tokio::net::TcpStream::from_std(tcp)?;
                    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                        .connect(name, tcp)
                        .await
                        .context("TLS handshake")?;
                    let connection = tls.get_ref().1;
                    let info = TlsInfo {
                        alpn: connection
                            .alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned()),
                        tls_version: connection.protocol_version().map(|v| format!("{v:?}")),
                        peer_cert_sans: connection
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .map(|leaf| balancer_tests::l7::certificate_sans(leaf))
                            .transpose()?
                            .unwrap_or_default(),
                    };
                    anyhow::Ok((tls, info))
                };
                let (tls, info) = match connected.await {
                    Ok(done) => done,
                    Err(err) => {
                        let _ = opened.send(Err(err));
                        return;
                    }
                };
                let io = TokioIo::new(tls);
                if h2 {
                    let Ok((mut sender, connection)) =
                        hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await
                    else {
                        let _ = opened.send(Err(anyhow::anyhow!("HTTP/2 handshake failed")));
                        return;
                    };
                    tokio::spawn(connection);
                    let _ = opened.send(Ok(info.clone()));
                    while let Some((request, reply)) = queue.recv().await {
                        let uri = format!(
                            "https://{}{}",
                            request.host.as_deref().unwrap_or("localhost"),
                            request.uri
                        );
                        let built = build(&request, &uri, None);
                        let result = async {
                            let response = sender.send_request(built?).await?;
                            collect(response, &info).await
                        }
                        .await;
                        let _ = reply.send(result);
                    }
                } else {
                    let Ok((mut sender, connection)) =
                        hyper::client::conn::http1::handshake(io).await
                    else {
                        let _ = opened.send(Err(anyhow::anyhow!("HTTP/1.1 handshake failed")));
                        return;
                    };
                    tokio::spawn(connection);
                    let _ = opened.send(Ok(info.clone()));
                    while let Some((request, reply)) = queue.recv().await {
                        let host = request.host.clone().unwrap_or_else(|| "localhost".into());
                        let built = build(&request, &request.uri, Some(&host));
                        let result = async {
                            sender
                                .ready()
                                .await
                                .context("the kept connection was closed")?;
                            let response = sender.send_request(built?).await?;
                            collect(response, &info).await
                        }
                        .await;
                        let _ = reply.send(result);
                    }
                }
            });
        });
        let info = handshake
            .recv_timeout(Duration::from_secs(10))
            .context("no handshake within 10 s")??;
        Ok(HeldConnection {
            jobs: Some(jobs),
            thread: Some(thread),
            info,
        })
    }

    fn send(&self, request: Request) -> anyhow::Result<Reply> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.jobs
            .as_ref()
            .expect("open")
            .send((request, reply))
            .map_err(|_| anyhow::anyhow!("the connection's thread has ended"))?;
        answer
            .recv_timeout(Duration::from_secs(10))
            .context("no answer within 10 s")?
    }
}

impl Drop for HeldConnection {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn build(
    request: &Request,
    uri: &str,
    host: Option<&str>,
) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    let mut builder = hyper::Request::builder()
        .method(request.method.as_str())
        .uri(uri);
    if let Some(host) = host {
        builder = builder.header("host", host);
    }
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    Ok(builder.body(Full::new(Bytes::from(request.body.clone())))?)
}

async fn collect(
    response: hyper::Response<hyper::body::Incoming>,
    info: &TlsInfo,
) -> anyhow::Result<Reply> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        version: format!("{:?}", parts.version),
        alpn: info.alpn.clone(),
        tls_version: info.tls_version.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        peer_cert_sans: info.peer_cert_sans.clone(),
    })
}

#[test]
fn certificates_reload_on_sighup_without_dropping_connections() {
    let net = L7Net::new("certreload").expect("namespace");
    let backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let certs = Certs::new().expect("CA");
    let site = certs.issue("site", &["old.test"]).expect("cert");
    let mut balancer = start(&net, &tls_config(&[site.toml()]));
    let ca = certs.ca_path();
    let new_handshake = |sni: &str| {
        Client::tcp(&net, TLS_ADDR)
            .tls(TlsOptions::new(ca).sni(sni).skip_name_check())
            .handshake()
    };

    let h1 = ok(
        HeldConnection::open(&net, TLS_ADDR, ca, "old.test", "http/1.1"),
        "HTTP/1.1 connection",
        &balancer,
    );
    let h2 = ok(
        HeldConnection::open(&net, TLS_ADDR, ca, "old.test", "h2"),
        "h2 connection",
        &balancer,
    );
    assert_eq!(h1.info.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(h2.info.alpn.as_deref(), Some("h2"));
    for (held, label) in [(&h1, "HTTP/1.1"), (&h2, "h2")] {
        assert_eq!(held.info.peer_cert_sans, ["old.test"], "{label}");
        let reply = ok(
            held.send(Request::get("/before").host("old.test")),
            &format!("{label}: a request before the reload"),
            &balancer,
        );
        assert_eq!(reply.status, 200);
    }

    // New files at the same paths, then SIGHUP.
    let renewed = certs.issue("site", &["new.test"]).expect("new cert");
    assert_eq!(renewed.cert, site.cert, "same file names");
    ok(balancer.reload(), "SIGHUP", &balancer);
    wait_for_log(&balancer, "SIGHUP: config reloaded", 1);

    for (held, label) in [(&h1, "HTTP/1.1"), (&h2, "h2")] {
        let reply = held.send(Request::get("/after").host("old.test"));
        let reply = ok(
            reply,
            &format!("{label}: the connection opened before the reload goes on"),
            &balancer,
        );
        assert_eq!(reply.status, 200, "{label}: {}", reply.text());
        assert_eq!(reply.json()["uri"], "/after");
    }
    let info = ok(
        new_handshake("new.test"),
        "handshake after reload",
        &balancer,
    );
    assert_eq!(
        info.peer_cert_sans,
        ["new.test"],
        "a new handshake gets the new certificate"
    );
    let reply = https_request(
        &net,
        TLS_ADDR,
        &TlsOptions::new(ca).sni("new.test"),
        &Request::get("/new").host("new.test"),
    );
    assert_eq!(
        ok(reply, "request with the new name", &balancer).status,
        200
    );

    // A key that does not parse: the reload is refused, naming the file; nothing changes.
    std::fs::write(
        &site.key,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .expect("break the key");
    ok(balancer.reload(), "SIGHUP", &balancer);
    let log = wait_for_log(&balancer, "SIGHUP: reload refused", 1);
    let refusal = log
        .lines()
        .find(|line| line.contains("SIGHUP: reload refused"))
        .unwrap_or_default();
    let key_path = site.key.display().to_string();
    assert!(
        refusal.contains(&key_path),
        "the refusal should name {key_path}: {refusal}"
    );
    // A key of another certificate: refused as well.
    let other = certs.issue("other", &["new.test"]).expect("other cert");
    std::fs::copy(&other.key, &site.key).expect("mismatched key");
    ok(balancer.reload(), "SIGHUP", &balancer);
    let log = wait_for_log(&balancer, "SIGHUP: reload refused", 2);
    let refusal = log
        .lines()
        .filter(|line| line.contains("SIGHUP: reload refused"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        refusal.contains(&key_path) && refusal.contains("does not match"),
        "the refusal should say the key {key_path} does not match: {refusal}"
    );
    // The API says the same, with the file.
    let (status, body) = ok(
        balancer.admin_post("/api/reload"),
        "POST /api/reload",
        &balancer,
    );
    assert_eq!(status, 400, "a refused reload over the API: {body}");
    assert!(
        body.contains(&key_path) && body.contains("previous config keeps serving"),
        "the API's refusal should name {key_path}: {body}"
    );
    let info = ok(
        new_handshake("new.test"),
        "handshake after refused reloads",
        &balancer,
    );
    assert_eq!(
        info.peer_cert_sans,
        ["new.test"],
        "the certificate loaded before keeps serving"
    );
    for (held, label) in [(&h1, "HTTP/1.1"), (&h2, "h2")] {
        let reply = ok(
            held.send(Request::get("/still").host("old.test")),
            &format!("{label}: after refused reloads"),
            &balancer,
        );
        assert_eq!(reply.status, 200);
    }
    assert!(balancer.is_running(), "balancer still running");
    drop((h1, h2));
    let stats = backend.stats().expect("stats");
    assert_eq!(stats.requests, 7, "every request reached the backend");
}

/// Runs `balancer ARGS…` in `net` for at most 10 s: (exit code, stdout + stderr).
fn run_balancer(net: &L7Net, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", net.path()))
        .arg(balancer_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start balancer");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let exit = ChildGuard::new(child, "balancer", Duration::ZERO)
        .wait_exit(Duration::from_secs(10))
        .expect("wait for balancer");
    let mut output = Vec::new();
    let _ = stdout.read_to_end(&mut output);
    let _ = stderr.read_to_end(&mut output);
    (
        exit.status.code(),
        String::from_utf8_lossy(&output).into_owned(),
    )
}

#[test]
fn run_and_check_config_refuse_a_missing_or_mismatched_key_naming_the_file() {
    let net = L7Net::new("badkey").expect("namespace");
    let certs = Certs::new().expect("CA");
    let site = certs.issue("site", &["site.test"]).expect("cert");
    let other = certs.issue("other", &["site.test"]).expect("cert");
    let good = net
        .write_config(&tls_config(&[site.toml()]))
        .expect("config");
    let good_arg = good.display().to_string();
    let (code, output) = run_balancer(&net, &["check-config", "--config", &good_arg]);
    assert_eq!(code, Some(0), "a good config passes check-config: {output}");

    let missing = certs.dir().join("missing.key");
    let cases = [
        (
            "missing key",
            format!(
                "{{ cert = {:?}, key = {:?} }}",
                site.cert.display().to_string(),
                missing.display().to_string()
            ),
            missing.display().to_string(),
        ),
        (
            "mismatched key",
            format!(
                "{{ cert = {:?}, key = {:?} }}",
                site.cert.display().to_string(),
                other.key.display().to_string()
            ),
            other.key.display().to_string(),
        ),
    ];
    for (label, cert, named) in cases {
        let config = net.write_config(&tls_config(&[cert])).expect("config");
        let config_arg = config.display().to_string();
        for command in ["check-config", "run"] {
            let (code, output) = run_balancer(&net, &[command, "--config", &config_arg]);
            assert!(
                code.is_some_and(|c| c != 0),
                "balancer {command} with a {label} should exit non-zero, got {code:?}: {output}"
            );
            assert!(
                output.contains(&named),
                "balancer {command} with a {label} should name {named}: {output}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Routing

#[test]
fn routes_by_host_then_longest_prefix_on_two_listeners() {
    let net = L7Net::new("route").expect("namespace");
    let names = [
        ("exact", "127.0.0.1:8101"),
        ("exact-api", "127.0.0.1:8102"),
        ("suffix", "127.0.0.1:8103"),
        ("any", "127.0.0.1:8104"),
        ("webapps", "127.0.0.1:8105"),
        ("admin", "127.0.0.1:8106"),
        ("raw", "127.0.0.1:8107"),
        ("v6", "[::1]:8108"),
    ];
    let _backends: Vec<Backend> = names
        .iter()
        .map(|(name, addr)| Backend::start(&net, name, &[addr]).expect("backend"))
        .collect();
    let pools: String = names
        .iter()
        .map(|(name, addr)| format!("[pool.{name}]\nservers = [ {{ url = \"http://{addr}\" }} ]\n"))
        .collect();
    let toml = format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:8080"

[[listener]]
name = "v6"
bind = "[::1]:8090"

[[listener]]
name = "redirect"
bind = "127.0.0.1:8082"
redirect_https = true

[[listener]]
name = "redirect-port"
bind = "127.0.0.1:8083"
redirect_https = true
https_port = 8443

[[route]]
listener = "web"
host = "www.site.test"
pool = "exact"

[[route]]
listener = "web"
host = "www.site.test"
path = "/api/"
pool = "exact-api"

[[route]]
listener = "web"
host = "*.site.test"
pool = "suffix"

[[route]]
name = "catch-all"
listener = "web"
pool = "any"

[[route]]
name = "webapps"
listener = "web"
path = "/webapps/"
strip_prefix = true
pool = "webapps"

[[route]]
listener = "web"
path = "/admin"
pool = "admin"

[[route]]
listener = "web"
host = "raw.test"
pool = "raw"
preserve_host = false

[[route]]
listener = "v6"
host = "v6.test"
path = "/only/"
pool = "v6"

{pools}"#
    );
    let balancer = start(&net, &toml);
    let web = Client::tcp(&net, "127.0.0.1:8080");
    let get = |client: &Client, host: &str, uri: &str| -> Reply {
        ok(
            client.send(&Request::get(uri).host(host)),
            &format!("GET {uri} (Host {host})"),
            &balancer,
        )
    };
    // (host, request target, backend, path the backend sees)
    let cases = [
        ("www.site.test", "/x", "exact", "/x"),
        ("WWW.Site.Test:8080", "/x", "exact", "/x"),
        ("www.site.test.", "/x", "exact", "/x"),
        ("www.site.test", "/api/v1?k=v", "exact-api", "/api/v1?k=v"),
        ("www.site.test", "/apix", "exact", "/apix"),
        // An exact host's routes win over longer prefixes of routes without a host.
        ("www.site.test", "/webapps/x", "exact", "/webapps/x"),
        ("a.site.test", "/y", "suffix", "/y"),
        ("a.b.site.test", "/y", "suffix", "/y"),
        ("site.test", "/y", "any", "/y"),
        ("other.test", "/", "any", "/"),
        ("other.test", "/webapps/x?q=1", "webapps", "/x?q=1"),
        ("other.test", "/webapps/", "webapps", "/"),
        ("other.test", "/webappsx", "any", "/webappsx"),
        ("other.test", "/admin/users", "admin", "/admin/users"),
        // Dot segments are resolved before routing: they cannot escape a route.
        ("other.test", "/webapps/../admin", "admin", "/admin"),
        ("other.test", "/webapps/%2e%2e/admin/x", "admin", "/admin/x"),
        ("other.test", "/admin/../webapps/y", "webapps", "/y"),
        ("other.test", "/admin/./z", "admin", "/admin/z"),
    ];
    for (host, uri, backend, seen) in cases {
        let reply = get(&web, host, uri);
        assert_eq!(
            reply.status,
            200,
            "GET {uri} (Host {host}): {}",
            reply.text()
        );
        let json = reply.json();
        assert_eq!(
            json["server"], backend,
            "GET {uri} (Host {host}) should go to {backend}"
        );
        assert_eq!(
            json["uri"], seen,
            "GET {uri} (Host {host}): the path {backend} sees"
        );
    }

    // preserve_host: the client's Host by default, the server's host:port when false.
    let kept = get(&web, "other.test", "/h").json();
    assert_eq!(
        kept["headers"][0],
        serde_json::json!(["host", "other.test"])
    );
    let raw = get(&web, "raw.test", "/h").json();
    assert_eq!(raw["server"], "raw");
    let host_seen: Vec<&serde_json::Value> = raw["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|pair| pair[0] == "host")
        .collect();
    assert_eq!(
        host_seen,
        [&serde_json::json!(["host", "127.0.0.1:8107"])],
        "preserve_host = false sends the server's host:port"
    );

    // Exactly the prefix without its slash: 301 to it with the slash, query kept.
    for (host, uri, location) in [
        ("other.test", "/webapps", "/webapps/"),
        ("other.test", "/webapps?a=1&b=2", "/webapps/?a=1&b=2"),
        ("www.site.test", "/api?k", "/api/?k"),
    ] {
        let reply = get(&web, host, uri);
        assert_eq!(reply.status, 301, "GET {uri}: {}", reply.text());
        assert_eq!(reply.header("location"), Some(location), "GET {uri}");
    }

    // A path that climbs above the root is refused.
    let reply = get(&web, "other.test", "/webapps/../../admin");
    assert_eq!(reply.status, 400, "{}", reply.text());

    // The IPv6 listener, at the same time: its own routes only, 404 without one.
    let v6 = Client::tcp(&net, "[::1]:8090");
    let reply = get(&v6, "v6.test", "/only/x");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["server"], "v6");
    assert!(
        reply.json()["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("[::1]:")),
        "the proxy reaches the IPv6 server over IPv6: {}",
        reply.json()
    );
    for (host, uri) in [
        ("v6.test", "/other"),
        ("v6.test", "/"),
        ("www.site.test", "/only/x"),
        ("[::1]:8090", "/only/x"),
    ] {
        let reply = get(&v6, host, uri);
        assert_eq!(
            reply.status,
            404,
            "GET {uri} (Host {host}) on the IPv6 listener has no route: {}",
            reply.text()
        );
        assert!(reply.text().contains("404"), "{}", reply.text());
    }

    // redirect_https: every request gets a 301 to the same URL over https.
    let redirect = Client::tcp(&net, "127.0.0.1:8082");
    for (host, uri, location) in [
        ("www.site.test", "/a/b?c=d", "https://www.site.test/a/b?c=d"),
        ("www.site.test:8082", "/", "https://www.site.test/"),
        ("[::1]:8082", "/v6", "https://[::1]/v6"),
    ] {
        let reply = get(&redirect, host, uri);
        assert_eq!(reply.status, 301, "GET {uri} (Host {host})");
        assert_eq!(reply.header("location"), Some(location), "GET {uri}");
    }
    let reply = get(
        &Client::tcp(&net, "127.0.0.1:8083"),
        "www.site.test:8083",
        "/p?q",
    );
    assert_eq!(reply.status, 301);
    assert_eq!(
        reply.header("location"),
        Some("https://www.site.test:8443/p?q")
    );

    // Raw bytes: a target hyper's client would not send.
    let outcome = ok(
        raw_tcp(
            &net,
            "127.0.0.1:8080",
            &[b"GET /webapps/..%2f..%2fadmin HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n"],
            Duration::ZERO,
            Duration::from_secs(5),
        ),
        "raw request",
        &balancer,
    );
    let text = outcome.text();
    assert!(
        text.starts_with("HTTP/1.1 404") && !text.contains("\"server\""),
        "an encoded slash is refused: a server that decodes it would read another path than the \
         one routed (issue 15; this request reached the webapps server before): {text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Static files

#[test]
fn static_files_are_served_with_types_and_ranges_and_never_outside_the_directory() {
    let net = L7Net::new("static").expect("namespace");
    let _backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let root = net.dir().join("site");
    std::fs::create_dir_all(root.join("sub")).expect("dirs");
    std::fs::write(root.join("index.html"), "<h1>index</h1>").expect("write");
    std::fs::write(root.join("style.css"), "body { color: red }").expect("write");
    std::fs::write(root.join("sub/notes.txt"), "notes").expect("write");
    std::fs::write(root.join("sub/index.html"), "sub index").expect("write");
    std::fs::create_dir_all(root.join("empty")).expect("dirs");
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("data.bin"), &data).expect("write");
    let secret = net.dir().join("secret.txt");
    std::fs::write(&secret, "TOP SECRET").expect("write");
    std::os::unix::fs::symlink(&secret, root.join("link-out")).expect("symlink");
    let toml = format!(
        r#"
[[listener]]
name = "web"
bind = "127.0.0.1:8080"

[[route]]
listener = "web"
path = "/static/"
strip_prefix = true
static_dir = {:?}

[[route]]
listener = "web"
pool = "app"

[pool.app]
servers = [ {{ url = "http://{B1}" }} ]
"#,
        root.display().to_string()
    );
    let balancer = start(&net, &toml);
    let client = Client::tcp(&net, "127.0.0.1:8080");
    let send = |request: Request| -> Reply {
        let what = format!("{} {}", request.method, request.uri);
        ok(client.send(&request.host("web.test")), &what, &balancer)
    };

    for (uri, content_type, body) in [
        ("/static/style.css", "text/css", &b"body { color: red }"[..]),
        ("/static/sub/notes.txt", "text/plain", b"notes"),
        ("/static/", "text/html", b"<h1>index</h1>"),
        ("/static/data.bin", "application/octet-stream", &data),
    ] {
        let reply = send(Request::get(uri));
        assert_eq!(reply.status, 200, "GET {uri}: {}", reply.text());
        let got = reply.header("content-type").unwrap_or_default();
        assert!(
            got.starts_with(content_type),
            "GET {uri}: Content-Type {got:?}, expected {content_type}"
        );
        assert!(reply.body == body, "GET {uri}: body {:?}", reply.text());
    }
    let reply = send(Request::get("/static/sub"));
    assert_eq!(reply.status, 301, "a directory without its slash");
    assert_eq!(reply.header("location"), Some("/static/sub/"));
    let reply = send(Request::get("/static/sub?x=1&y"));
    assert_eq!(reply.status, 301, "a directory without its slash");
    assert_eq!(
        reply.header("location"),
        Some("/static/sub/?x=1&y"),
        "the query is kept, as by the route's add-slash redirect"
    );
    assert_eq!(send(Request::get("/static/sub/")).text(), "sub index");
    let reply = send(Request::get("/static/empty/"));
    assert_eq!(
        reply.status, 404,
        "a directory without index.html is not listed"
    );

    let reply = send(Request::get("/static/data.bin").header("range", "bytes=100-199"));
    assert_eq!(reply.status, 206, "{}", reply.text());
    assert_eq!(reply.header("content-range"), Some("bytes 100-199/1000"));
    assert!(reply.body == data[100..200], "the bytes of the range");
    let reply = send(Request::get("/static/data.bin").header("range", "bytes=-10"));
    assert_eq!(reply.status, 206);
    assert_eq!(reply.header("content-range"), Some("bytes 990-999/1000"));
    assert!(reply.body == data[990..]);
    let reply = send(Request::get("/static/data.bin").header("range", "bytes=5000-"));
    assert_eq!(reply.status, 416);
    assert_eq!(reply.header("content-range"), Some("bytes */1000"));

    for uri in [
        "/static/link-out",
        "/static/..%2fsecret.txt",
        "/static/%2e%2e%2fsecret.txt",
        "/static/sub/..%2f..%2fsecret.txt",
        "/static/%2e%2e%5csecret.txt",
        "/static/missing.txt",
    ] {
        let reply = send(Request::get(uri));
        assert_eq!(reply.status, 404, "GET {uri}: {}", reply.text());
        assert!(!reply.text().contains("TOP SECRET"), "GET {uri}");
    }
    // Dot segments leave the static route: the server gets the resolved path.
    let reply = send(Request::get("/static/../secret.txt"));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["uri"], "/secret.txt");
    let reply = send(Request::get("/static/../../secret.txt"));
    assert_eq!(reply.status, 400, "climbs above the root: {}", reply.text());
    // Backslashes, raw (hyper's client will not send them).
    let outcome = ok(
        raw_tcp(
            &net,
            "127.0.0.1:8080",
            &[b"GET /static/..\\secret.txt HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n"],
            Duration::ZERO,
            Duration::from_secs(5),
        ),
        "raw request",
        &balancer,
    );
    let text = outcome.text();
    assert!(
        !text.contains("TOP SECRET") && !text.starts_with("HTTP/1.1 200"),
        "a backslash is no separator: {text}"
    );
    let reply = send(Request::post("/static/style.css", "x"));
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
}

// ---------------------------------------------------------------------------------------------
// Paths, upgrades and authorities that would mean one thing here and another to the server

/// Sends `request` raw to the plain listener; returns what came back.
fn raw(net: &L7Net, balancer: &BalancerProcess, request: &str) -> String {
    ok(
        raw_tcp(
            net,
            "127.0.0.1:8080",
            &[request.as_bytes()],
            Duration::ZERO,
            Duration::from_secs(5),
        ),
        "raw request",
        balancer,
    )
    .text()
}

#[test]
fn encoded_slashes_parameter_dot_segments_h2c_upgrades_and_a_second_authority_are_refused() {
    let net = L7Net::new("pathsafe").expect("namespace");
    let backend = Backend::start(&net, "b1", &[B1]).expect("backend");
    let balancer = start(
        &net,
        &format!(
            r#"
[[listener]]
name = "web"
bind = "127.0.0.1:8080"

[[route]]
name = "public"
path = "/public/"
pool = "app"

[[route]]
name = "raw"
path = "/raw/"
pool = "app"
allow_encoded_slashes = true

[pool.app]
servers = [ {{ url = "http://{B1}" }} ]
"#
        ),
    );
    // RFC 3986 §2.2: an encoded "/" is data, not a separator; servers that decode it first
    // (Apache's AllowEncodedSlashes, many frameworks) would read /admin/x.
    for path in [
        "/public/%2e%2e%2fadmin/x",
        "/public/..%2Fadmin/x",
        "/public/..%5cadmin/x",
        "/public/..\\admin/x",
    ] {
        let text = raw(
            &net,
            &balancer,
            &format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"),
        );
        assert!(text.starts_with("HTTP/1.1 404"), "GET {path}: {text}");
    }
    // Tomcat and Jetty read "..;x" as "..".
    for path in ["/public/..;/admin/x", "/public/%2e%2e;jsessionid=1/admin/x"] {
        let text = raw(
            &net,
            &balancer,
            &format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"),
        );
        assert!(text.starts_with("HTTP/1.1 400"), "GET {path}: {text}");
    }
    let requests = || backend.stats().expect("backend stats").requests;
    assert_eq!(requests(), 0, "none of them reached the server");
    // A route may opt in; it then gets the path unchanged.
    let text = raw(
        &net,
        &balancer,
        "GET /raw/a%2Fb HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    );
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("\"uri\":\"/raw/a%2Fb\""),
        "{text}"
    );

    // RFC 9113 §3.1: the h2c upgrade is gone; only WebSocket upgrades are forwarded. The
    // request goes on as plain HTTP/1.1, without Upgrade or HTTP2-Settings.
    let text = raw(
        &net,
        &balancer,
        "GET /public/x HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n\
         GET /public/next HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.contains("101 Switching"), "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        !lower.contains("\"upgrade\"") && !lower.contains("http2-settings"),
        "the server saw no upgrade: {text}"
    );
    assert!(
        text.contains("\"uri\":\"/public/next\""),
        "the connection stayed HTTP/1.1: the next request was answered: {text}"
    );

    // RFC 9113 §8.3.1: an h2 request whose Host names another origin than :authority.
    let before = requests();
    let replies = ok(
        Client::tcp(&net, "127.0.0.1:8080").h2c().send_all(&[
            Request::get("/public/x").host("a.test"),
            Request::get("/public/x")
                .host("a.test")
                .header("host", "b.test"),
        ]),
        "h2c requests",
        &balancer,
    );
    assert_eq!(replies[0].status, 200, "{}", replies[0].text());
    assert_eq!(replies[1].status, 400, "{}", replies[1].text());
    assert_eq!(requests(), before + 1, "only the first was forwarded");
}
