//! Route `compress` end to end: a real `balancer run` in its own namespace in front of Debian's
//! nginx serving files, and curl as the client (built with brotli and zstd, so
//! `--compressed` decodes each coding: the test compares what it decoded with the file).
//!
//! - br, zstd and gzip are each negotiated by `Accept-Encoding` (weights, `q=0`, and the tie
//!   order br > zstd > gzip) and decode to the original, over HTTP/1.1 and HTTP/2;
//!   `Vary: Accept-Encoding` is set.
//! - Nothing below the minimum size, of an incompressible type (image/png), for HEAD, for a
//!   range, or on a route without `compress` is compressed; what nginx compressed itself is
//!   passed on as nginx sent it.

mod l7_support;

use balancer_tests::{BalancerProcess, Certs, L7Net, Nginx, curl, l7::CurlReply};
use l7_support::{LISTEN, LISTEN_TLS, metrics, sample, start};

/// The TLS listener's name (its certificate's), for HTTP/2 clients.
const PUBLIC_HOST: &str = "www.example.test";

/// nginx serving `html/` as it is, and the same files gzipped by nginx itself.
const NGINX: &str = "127.0.0.1:8091";
const NGINX_GZIP: &str = "127.0.0.1:8092";

/// Text that compresses (a few thousand distinct lines).
fn big_text() -> Vec<u8> {
    (0..4000)
        .map(|i| format!("line {i}: the balancer compresses what the server did not.\n"))
        .collect::<String>()
        .into_bytes()
}

/// Bytes that look random (a PNG's compressed pixels do): an LCG, so the run is repeatable.
fn noise(size: usize) -> Vec<u8> {
    let mut state: u32 = 0x2545_f491;
    (0..size)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect()
}

struct Site {
    net: L7Net,
    nginx: Nginx,
    certs: Certs,
    balancer: BalancerProcess,
}

impl Site {
    fn start() -> Site {
        let net = L7Net::new("compress").expect("namespace");
        let nginx = Nginx::start(
            &net,
            &format!(
                "    server {{
        listen {NGINX};
        root html;
    }}
    server {{
        listen {NGINX_GZIP};
        root html;
        gzip on;
        gzip_types text/plain;
        gzip_min_length 0;
    }}"
            ),
        )
        .unwrap_or_else(|err| panic!("nginx should start (run `cargo xtask setup`): {err:#}"));
        let html = nginx.html_dir();
        std::fs::write(html.join("big.txt"), big_text()).expect("write big.txt");
        std::fs::write(html.join("small.txt"), &big_text()[..1000]).expect("write small.txt");
        std::fs::write(html.join("image.png"), noise(20_000)).expect("write image.png");
        let data = format!(
            "{{\"lines\": {:?}}}",
            String::from_utf8(big_text()).expect("text")
        );
        std::fs::write(html.join("data.json"), data).expect("write data.json");
        let certs = Certs::new().expect("CA");
        let cert = certs.issue("site", &[PUBLIC_HOST]).expect("certificate");
        let balancer = start(
            &net,
            &format!(
                r#"
[[listener]]
name = "web"
bind = "{LISTEN}"

[[listener]]
name = "tls"
bind = "{LISTEN_TLS}"
tls = {{ certificates = [ {cert} ] }}

[[route]]
name = "main"
listener = "web"
pool = "nginx"
compress = true

[[route]]
name = "h2"
listener = "tls"
pool = "nginx"
compress = true

[[route]]
name = "gzipped"
listener = "web"
path = "/gz/"
strip_prefix = true
pool = "nginx_gzip"
compress = true

[[route]]
name = "off"
listener = "web"
path = "/off/"
strip_prefix = true
pool = "nginx"

[pool.nginx]
servers = [ {{ url = "http://{NGINX}" }} ]

[pool.nginx_gzip]
servers = [ {{ url = "http://{NGINX_GZIP}" }} ]
"#,
                cert = cert.toml()
            ),
        );
        Site {
            net,
            nginx,
            certs,
            balancer,
        }
    }

    /// `curl ARGS… http://LISTEN/path`.
    fn curl(&self, args: &[&str], path: &str) -> CurlReply {
        let url = format!("http://{LISTEN}{path}");
        let mut all = args.to_vec();
        all.push(&url);
        curl(&self.net, &all).unwrap_or_else(|err| {
            panic!(
                "curl {all:?}: {err:#}\nbalancer log:\n{}\nnginx error log:\n{}",
                self.balancer.log(),
                self.nginx.error_log()
            )
        })
    }

    /// `GET path` with `Accept-Encoding: accept`, decoded by curl.
    fn get(&self, accept: &str, path: &str) -> CurlReply {
        let header = format!("Accept-Encoding: {accept}");
        let reply = self.curl(&["--compressed", "-H", &header], path);
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.text());
        reply
    }

    fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.nginx.html_dir().join(name)).expect("read the served file")
    }
}

fn vary(reply: &CurlReply) -> Vec<&str> {
    reply
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("vary"))
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .collect()
}

#[test]
fn each_coding_is_negotiated_and_decodes_to_the_original() {
    let site = Site::start();
    let big = site.file("big.txt");
    for (accept, expected) in [
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip", "gzip"),
        // Ties go br > zstd > gzip; weights decide first; q=0 refuses.
        ("gzip, zstd, br", "br"),
        ("gzip, zstd", "zstd"),
        ("br;q=0.5, gzip;q=0.9, zstd;q=0.8", "gzip"),
        ("br;q=0, *", "zstd"),
    ] {
        let reply = site.get(accept, "/big.txt");
        assert_eq!(
            reply.header("content-encoding"),
            Some(expected),
            "Accept-Encoding: {accept}: {:?}",
            reply.headers
        );
        assert_eq!(reply.header("content-length"), None, "{:?}", reply.headers);
        assert_eq!(vary(&reply), ["Accept-Encoding"], "{:?}", reply.headers);
        assert!(
            reply.body == big,
            "Accept-Encoding: {accept}: decoded {} bytes, the file has {}",
            reply.body.len(),
            big.len()
        );
    }
    // curl's own Accept-Encoding (every coding it decodes, unweighted).
    let reply = site.curl(&["--compressed"], "/data.json");
    assert_eq!(
        reply.header("content-encoding"),
        Some("br"),
        "{:?}",
        reply.headers
    );
    assert!(
        reply.body == site.file("data.json"),
        "data.json decodes to the file"
    );
    assert!(
        reply
            .header("etag")
            .is_some_and(|etag| etag.starts_with("W/\"")),
        "nginx's strong ETag is weak once encoded: {:?}",
        reply.headers
    );

    // Nothing acceptable: the file as it is, which still varies by Accept-Encoding.
    let refused = site.get("br;q=0, zstd;q=0, gzip;q=0", "/big.txt");
    assert_eq!(refused.header("content-encoding"), None);
    assert_eq!(
        refused.header("content-length"),
        Some(big.len().to_string().as_str())
    );
    assert_eq!(vary(&refused), ["Accept-Encoding"]);
    assert!(refused.body == big);

    // HTTP/2 over TLS: the stream ends the body (no length), the same coding as HTTP/1.1.
    let ca = site.certs.ca_path().display().to_string();
    let resolve = format!("{PUBLIC_HOST}:8443:127.0.0.1");
    let url = format!("https://{PUBLIC_HOST}:8443/big.txt");
    let h2 = curl(
        &site.net,
        &[
            "--http2",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "--compressed",
            "-H",
            "Accept-Encoding: zstd, gzip;q=0.5",
            &url,
        ],
    )
    .unwrap_or_else(|err| {
        panic!(
            "curl --http2: {err:#}\nbalancer log:\n{}",
            site.balancer.log()
        )
    });
    assert_eq!((h2.status, h2.http_version.as_str()), (200, "2"));
    assert_eq!(
        h2.header("content-encoding"),
        Some("zstd"),
        "{:?}",
        h2.headers
    );
    assert_eq!(h2.header("content-length"), None, "{:?}", h2.headers);
    assert!(h2.body == big, "HTTP/2: decodes to the file");

    let m = metrics(&site.balancer);
    assert_eq!(
        sample(
            &m,
            "balancer_http_compressed_responses_total{route=\"h2\",encoding=\"zstd\"}"
        ),
        Some(1.0),
        "{m}"
    );
    for (encoding, count) in [("br", 3.0), ("zstd", 3.0), ("gzip", 2.0)] {
        let series = format!(
            "balancer_http_compressed_responses_total{{route=\"main\",encoding=\"{encoding}\"}}"
        );
        assert_eq!(sample(&m, &series), Some(count), "{series} in\n{m}");
    }
}

#[test]
fn small_incompressible_partial_head_and_server_compressed_answers_pass_as_they_are() {
    let site = Site::start();
    let every = "br, zstd, gzip";

    let small = site.get(every, "/small.txt");
    assert_eq!(small.header("content-encoding"), None, "below 1 KiB");
    assert_eq!(small.header("content-length"), Some("1000"));
    assert!(vary(&small).is_empty(), "{:?}", small.headers);
    assert!(small.body == site.file("small.txt"));

    let png = site.get(every, "/image.png");
    assert_eq!(
        png.header("content-encoding"),
        None,
        "image/png is compressed already"
    );
    assert!(png.body == site.file("image.png"));

    let off = site.get(every, "/off/big.txt");
    assert_eq!(
        off.header("content-encoding"),
        None,
        "the route does not compress"
    );
    assert!(off.body == site.file("big.txt"));

    let head = site.curl(&["-I", "-H", "Accept-Encoding: gzip"], "/big.txt");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-encoding"), None, "{:?}", head.headers);

    let range = site.curl(
        &["--compressed", "-H", "Accept-Encoding: gzip", "-r", "0-99"],
        "/big.txt",
    );
    assert_eq!(range.status, 206);
    assert_eq!(
        range.header("content-encoding"),
        None,
        "{:?}",
        range.headers
    );
    assert!(range.body == site.file("big.txt")[..100]);

    // nginx gzipped it itself: passed on as nginx sent it, although br is preferred.
    let gzipped = site.get(every, "/gz/big.txt");
    assert_eq!(
        gzipped.header("content-encoding"),
        Some("gzip"),
        "{:?}",
        gzipped.headers
    );
    assert!(gzipped.body == site.file("big.txt"));
    let raw = site.curl(&["-H", "Accept-Encoding: gzip"], "/gz/big.txt");
    assert!(
        raw.body.starts_with(&[0x1f, 0x8b]) && raw.body.len() < site.file("big.txt").len(),
        "one gzip layer, nginx's"
    );

    let m = metrics(&site.balancer);
    assert!(
        !m.contains("balancer_http_compressed_responses_total{"),
        "nothing was compressed by the balancer:\n{m}"
    );
}
