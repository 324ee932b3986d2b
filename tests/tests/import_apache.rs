//! `balancer import apache` end to end on the example configs of `tests/fixtures/apache/`
//! (copies of the shared Apache examples): each imports to a config that `check-config`
//! accepts, and `balancer run` on it, unchanged, routes, balances over the members and sticks
//! as Apache would. The members are `l7_backend` processes on the examples' own addresses
//! (198.18.1.x, the project's test range) in a second namespace behind a veth pair; the
//! certificate the https virtual host names is issued at the path the output names. The https
//! members are nginx with certificates for their addresses, reached through the
//! `SSLProxyEngine` / `SSLProxyCACertificateFile` lines a working Apache config needs.

mod l7_support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use balancer_tests::{
    Backend, BalancerProcess, Certs, Client, L7Net, Netns, Nginx, Reply, Request, TlsOptions,
    balancer_binary, unique_suffix,
};
use l7_support::ok;

/// The fixture `name` copied into the test's scratch directory, as an operator's file would
/// sit beside its `certs/` directory.
fn copy_fixture(net: &L7Net, name: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/apache")
        .join(name);
    let copy = net.dir().join(name);
    std::fs::copy(&source, &copy)
        .unwrap_or_else(|err| panic!("copying {}: {err}", source.display()));
    copy
}

/// `balancer ARGS…`: (exit code, stdout, stderr).
fn balancer(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(balancer_binary())
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {}: {err}", balancer_binary().display()));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Imports `apache`, writes the result beside it, and checks it with `check-config`; returns
/// the TOML and its path.
fn import(apache: &Path) -> (String, PathBuf) {
    let (code, toml, stderr) = balancer(&["import", "apache", &apache.display().to_string()]);
    assert_eq!(code, 0, "import of {} failed: {stderr}", apache.display());
    let path = apache.with_extension("toml");
    std::fs::write(&path, &toml).expect("writing the imported config");
    let (code, stdout, stderr) =
        balancer(&["check-config", "--config", &path.display().to_string()]);
    assert_eq!(
        code,
        0,
        "check-config refused the import of {}: {stderr}\n--- config:\n{toml}",
        apache.display()
    );
    assert!(stdout.contains(": ok ("), "{stdout}");
    (toml, path)
}

/// The balancer's namespace, and the members' namespace behind a veth pair with `addresses`
/// (the example's members) on its side, 198.18.1.1 on the balancer's. The members need their
/// own namespace: the listeners bind `*:80` as Apache's `<VirtualHost *:80>` does, which
/// leaves no port 80 on any address of the same namespace for a member at 198.18.1.21:80.
fn nets(tag: &str, addresses: &[&str]) -> (L7Net, Netns) {
    let net = L7Net::new(tag).unwrap_or_else(|err| panic!("namespace for {tag}: {err:#}"));
    let members = Netns::new(format!("imp-members-{}", unique_suffix()))
        .unwrap_or_else(|err| panic!("members' namespace: {err:#}"));
    let setup = || -> anyhow::Result<()> {
        net.ip(&[
            "link",
            "add",
            "imp0",
            "type",
            "veth",
            "peer",
            "name",
            "imp1",
            "netns",
            members.name(),
        ])?;
        net.ip(&["addr", "add", "198.18.1.1/24", "dev", "imp0"])?;
        net.ip(&["link", "set", "imp0", "up"])?;
        for address in addresses {
            members.ip(&["addr", "add", &format!("{address}/24"), "dev", "imp1"])?;
        }
        members.ip(&["link", "set", "imp1", "up"])?;
        Ok(())
    };
    setup().unwrap_or_else(|err| panic!("veth between the namespaces: {err:#}"));
    (net, members)
}

fn backends(net: &Netns, members: &[(&str, &str)]) -> Vec<Backend> {
    members
        .iter()
        .map(|(name, listen)| {
            Backend::start(net, name, &[listen])
                .unwrap_or_else(|err| panic!("backend {name} on {listen}: {err:#}"))
        })
        .collect()
}

fn run(net: &L7Net, config: &Path, toml: &str) -> BalancerProcess {
    BalancerProcess::start(net, config, "127.0.0.1:9100")
        .unwrap_or_else(|err| panic!("balancer run on\n{toml}\nfailed: {err:#}"))
}

/// `request` on its own connection to the plain listener on port 80.
fn send(net: &L7Net, balancer: &BalancerProcess, request: &Request) -> Reply {
    ok(
        Client::tcp(net, "127.0.0.1:80").send(request),
        "a request to the imported listener",
        balancer,
    )
}

fn server(reply: &Reply) -> String {
    reply.json()["server"]
        .as_str()
        .unwrap_or_else(|| panic!("no server in {}", reply.text()))
        .to_string()
}

/// The value of header `name` as the backend received it.
fn seen(reply: &Reply, name: &str) -> Option<String> {
    reply.json()["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("no headers in {}", reply.text()))
        .iter()
        .find(|pair| {
            pair[0]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .and_then(|pair| pair[1].as_str().map(str::to_string))
}

/// How many of `count` new requests (no cookie) each server answered.
fn spread(
    net: &L7Net,
    balancer: &BalancerProcess,
    host: &str,
    path: &str,
    count: usize,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..count {
        let reply = send(net, balancer, &Request::get(path).host(host));
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.text());
        *counts.entry(server(&reply)).or_insert(0) += 1;
    }
    counts
}

#[test]
fn three_members_round_robin_with_the_host_preserved() {
    let (net, members) = nets("imp-three", &["198.18.1.11", "198.18.1.12", "198.18.1.13"]);
    let _members = backends(
        &members,
        &[
            ("m1", "198.18.1.11:8000"),
            ("m2", "198.18.1.12:8000"),
            ("m3", "198.18.1.13:8000"),
        ],
    );
    let (toml, config) = import(&copy_fixture(&net, "three-members.conf"));
    let balancer = run(&net, &config, &toml);

    // lbmethod=byrequests over three equal members: each gets a third.
    let counts = spread(&net, &balancer, "photos.example.test", "/album/1", 30);
    let expected: BTreeMap<String, usize> = [("m1", 10), ("m2", 10), ("m3", 10)]
        .map(|(s, n)| (s.to_string(), n))
        .into();
    assert_eq!(counts, expected, "round-robin over the three members");

    // ProxyPreserveHost On: the app sees the public name; the path is passed as it came.
    let reply = send(
        &net,
        &balancer,
        &Request::get("/album/1").host("photos.example.test"),
    );
    assert_eq!(seen(&reply, "host").as_deref(), Some("photos.example.test"));
    assert_eq!(
        reply.json()["uri"].as_str(),
        Some("/album/1"),
        "{}",
        reply.text()
    );

    // ServerName only: another host name is refused (Apache would have used its first vhost).
    let reply = send(
        &net,
        &balancer,
        &Request::get("/").host("other.example.test"),
    );
    assert_eq!(reply.status, 421, "{}", reply.text());
}

#[test]
fn trusted_front_sticks_drains_and_keeps_the_standby() {
    let (net, members) = nets(
        "imp-trusted",
        &["198.18.1.31", "198.18.1.32", "198.18.1.33"],
    );
    let _members = backends(
        &members,
        &[
            ("a", "198.18.1.31:8000"),
            ("b", "198.18.1.32:8000"),
            ("c", "198.18.1.33:8000"),
        ],
    );
    let (toml, config) = import(&copy_fixture(&net, "trusted-front.conf"));
    let balancer = run(&net, &config, &toml);

    // b starts draining (status=+N) and c is a hot standby (status=+H): new sessions all go
    // to a, as Apache sends them to the only usable non-standby member.
    let counts = spread(&net, &balancer, "shop.example.test", "/cart", 10);
    let expected: BTreeMap<String, usize> = [("a".to_string(), 10)].into();
    assert_eq!(
        counts, expected,
        "new sessions with b draining and c standby"
    );

    // A session of b keeps going to b while it drains, and the app's cookie arrives as the
    // app wrote it (Apache never rewrites it).
    for _ in 0..3 {
        let reply = send(
            &net,
            &balancer,
            &Request::get("/cart")
                .host("shop.example.test")
                .header("Cookie", "SHOPSESSION=xyz.b"),
        );
        assert_eq!(
            server(&reply),
            "b",
            "a session of route b: {}",
            reply.text()
        );
        assert_eq!(
            seen(&reply, "cookie").as_deref(),
            Some("SHOPSESSION=xyz.b"),
            "the session cookie as the client sent it"
        );
    }

    // With a disabled from the manager, no member but the standby takes new sessions: they go
    // to c, as Apache's hot standby takes over when no other member is usable.
    let (status, body) = ok(
        balancer.admin_post("/api/pools/shop/servers/a/disable"),
        "disabling a",
        &balancer,
    );
    assert_eq!(status, 200, "POST …/a/disable: {body}");
    let counts = spread(&net, &balancer, "shop.example.test", "/cart", 5);
    let expected: BTreeMap<String, usize> = [("c".to_string(), 5)].into();
    assert_eq!(
        counts, expected,
        "new sessions with a disabled and b draining"
    );

    // Header unset Server.
    let reply = send(
        &net,
        &balancer,
        &Request::get("/").host("shop.example.test"),
    );
    assert_eq!(
        reply.header("server"),
        None,
        "Server was removed: {reply:?}"
    );
}

#[test]
fn sticky_http_https_keeps_the_prefix_and_sticks_by_route() {
    let (net, members) = nets("imp-sticky", &["198.18.1.21", "198.18.1.22"]);
    let _members = backends(
        &members,
        &[("http-1", "198.18.1.21:80"), ("http-2", "198.18.1.22:80")],
    );
    let apache = copy_fixture(&net, "sticky-http-https.conf");
    // The https virtual host's certificate, at the path the import names (relative to the
    // Apache file, so in the scratch directory).
    let certs = Certs::new().expect("a CA");
    let issued = certs
        .issue("www.example.test", &["www.example.test"])
        .expect("a certificate");
    let cert_dir = apache.parent().expect("a directory").join("certs");
    std::fs::create_dir_all(&cert_dir).expect("certs/");
    std::fs::copy(&issued.cert, cert_dir.join("www.example.test.pem")).expect("the cert");
    std::fs::copy(&issued.key, cert_dir.join("www.example.test.key")).expect("the key");

    let (toml, config) = import(&apache);
    let cert_path =
        std::fs::canonicalize(cert_dir.join("www.example.test.pem")).expect("the cert's path");
    assert!(
        toml.contains(&format!("cert = \"{}\"", cert_path.display())),
        "the certificate path is the Apache file's certs/ directory:\n{toml}"
    );
    let balancer = run(&net, &config, &toml);

    // <Location /webapps> with members at /webapps: the app gets the path as it came.
    let reply = send(
        &net,
        &balancer,
        &Request::get("/webapps/admin/").host("www.example.test"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["uri"].as_str(),
        Some("/webapps/admin/"),
        "{}",
        reply.text()
    );
    // ProxyPreserveHost is not set: Apache sends the member's host.
    let member_host = match server(&reply).as_str() {
        "http-1" => "198.18.1.21",
        _ => "198.18.1.22",
    };
    let host = seen(&reply, "host").unwrap_or_default();
    assert!(
        host == member_host || host == format!("{member_host}:80"),
        "Host {host:?}, expected the member's {member_host}"
    );

    // New sessions alternate over the two members (byrequests).
    let counts = spread(&net, &balancer, "example.test", "/webapps/", 10);
    let expected: BTreeMap<String, usize> = [("http-1", 5), ("http-2", 5)]
        .map(|(s, n)| (s.to_string(), n))
        .into();
    assert_eq!(counts, expected, "round-robin over the two members");

    // stickysession=sessionid: the route after the last '.' picks the member every time.
    for route in ["http-1", "http-2"] {
        for _ in 0..3 {
            let reply = send(
                &net,
                &balancer,
                &Request::get("/webapps/")
                    .host("www.example.test")
                    .header("Cookie", &format!("sessionid=abc.{route}")),
            );
            assert_eq!(
                server(&reply),
                route,
                "a session of {route}: {}",
                reply.text()
            );
        }
    }

    // The https virtual host serves the certificate issued at the path the import names.
    let reply = ok(
        Client::tcp(&net, "127.0.0.1:443")
            .tls(TlsOptions::new(certs.ca_path()).sni("www.example.test"))
            .send(&Request::get("/other").host("www.example.test")),
        "a TLS request to the imported https listener",
        &balancer,
    );
    // No route for /other (only <Location /webapps> proxies): the proxy itself answers 404.
    assert_eq!(reply.status, 404, "{}", reply.text());
}

/// The https virtual host of `sticky-http-https.conf` with the two lines a working Apache needs
/// for https:// members (`SSLProxyEngine on`, and the members' CA, which the example leaves to
/// the system's store): nginx members with certificates for their addresses, weighted 1:2 by
/// `loadfactor=2`, sticky by the route suffix, the prefix kept.
#[test]
fn sticky_https_members_are_weighted_and_sticky_over_tls() {
    let (net, members) = nets("imp-https", &["198.18.1.21", "198.18.1.22"]);
    let certs = Certs::new().expect("a CA");
    let mut servers = String::new();
    for (route, address) in [("https-1", "198.18.1.21"), ("https-2", "198.18.1.22")] {
        let cert = certs
            .issue(route, &[address])
            .expect("a member certificate");
        servers.push_str(&format!(
            "    server {{
        listen {address}:443 ssl;
        ssl_certificate {};
        ssl_certificate_key {};
        location / {{ return 200 \"server={route} uri=$request_uri cookie=$http_cookie\\n\"; }}
    }}\n",
            cert.cert.display(),
            cert.key.display()
        ));
    }
    let _nginx = Nginx::start(&members, &servers)
        .unwrap_or_else(|err| panic!("nginx should start (run `cargo xtask setup`): {err:#}"));

    let apache = copy_fixture(&net, "sticky-http-https.conf");
    let text = std::fs::read_to_string(&apache).expect("the copy");
    let text = text.replace(
        "    SSLCertificateKeyFile certs/www.example.test.key\n",
        "    SSLCertificateKeyFile certs/www.example.test.key\n    SSLProxyEngine on\n    SSLProxyCACertificateFile certs/ca.pem\n",
    );
    std::fs::write(&apache, text).expect("the edited copy");
    let cert_dir = net.dir().join("certs");
    std::fs::create_dir_all(&cert_dir).expect("certs/");
    let site = certs
        .issue("www.example.test", &["www.example.test"])
        .expect("the site's certificate");
    std::fs::copy(&site.cert, cert_dir.join("www.example.test.pem")).expect("the cert");
    std::fs::copy(&site.key, cert_dir.join("www.example.test.key")).expect("the key");
    std::fs::copy(certs.ca_path(), cert_dir.join("ca.pem")).expect("the CA");

    let (toml, config) = import(&apache);
    assert!(toml.contains("tls_ca_file = "), "{toml}");
    let balancer = run(&net, &config, &toml);
    let client = Client::tcp(&net, "127.0.0.1:443")
        .tls(TlsOptions::new(certs.ca_path()).sni("www.example.test"));
    let get = |cookie: Option<&str>| {
        let mut request = Request::get("/webapps/cart").host("www.example.test");
        if let Some(cookie) = cookie {
            request = request.header("Cookie", cookie);
        }
        let reply = ok(client.send(&request), "GET over TLS", &balancer);
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.text()
    };

    // loadfactor=2: https-2 takes two requests in three.
    let mut counts = BTreeMap::new();
    for _ in 0..30 {
        let text = get(None);
        assert!(
            text.contains("uri=/webapps/cart "),
            "the prefix is kept: {text}"
        );
        let server = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("server="))
            .unwrap_or_else(|| panic!("no server= in {text}"))
            .to_string();
        *counts.entry(server).or_insert(0) += 1;
    }
    let expected: BTreeMap<String, usize> = [("https-1", 10), ("https-2", 20)]
        .map(|(s, n)| (s.to_string(), n))
        .into();
    assert_eq!(counts, expected, "1:2 by loadfactor");

    // stickysession=sessionid: the route suffix picks the member; the cookie arrives as sent.
    for route in ["https-1", "https-2"] {
        for _ in 0..3 {
            let text = get(Some(&format!("sessionid=abc.{route}")));
            assert!(
                text.starts_with(&format!("server={route} ")),
                "a session of {route}: {text}"
            );
            assert!(
                text.contains(&format!("cookie=sessionid=abc.{route}")),
                "{text}"
            );
        }
    }
}

#[test]
fn unreadable_files_and_unbalanced_sections_fail_with_the_line() {
    let dir = std::env::temp_dir().join(format!("bltest-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let missing = dir.join("missing.conf");
    let (code, stdout, stderr) = balancer(&["import", "apache", &missing.display().to_string()]);
    assert_ne!(code, 0, "a missing file must fail");
    assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
    assert!(stderr.contains("missing.conf"), "{stderr}");

    let bad = dir.join("bad.conf");
    std::fs::write(
        &bad,
        "<VirtualHost *:80>\n    ServerName a.test\n    <Location /x>\n</VirtualHost>\n",
    )
    .expect("writing bad.conf");
    let (code, stdout, stderr) = balancer(&["import", "apache", &bad.display().to_string()]);
    assert_ne!(code, 0, "unbalanced sections must fail");
    assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
    assert!(
        stderr.contains(&format!(
            "{}:4: </VirtualHost> does not close <Location> opened at line 3",
            bad.display()
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
