use super::*;

const XDP: &str = "[xdp]\ninterface = \"eth0\"\n";

fn vip(name: &str, addr: &str, port: &str, proto: &str, fwd: &str) -> String {
    format!(
        "[[vip]]\nname = {name}\naddress = {addr}\nport = {port}\nprotocol = {proto}\nforward = {fwd}\n"
    )
}

#[test]
fn probe() {
    let ok = vip("\"a\"", "\"198.18.0.10\"", "80", "\"tcp\"", "\"local\"");
    let cases: Vec<(&str, String)> = vec![
        ("unknown top", "bogus = 1\n".into()),
        ("unknown top table", "[bogus]\nx = 1\n".into()),
        ("unknown xdp", format!("{XDP}pin_path = \"/x\"\n")),
        ("unknown vip", format!("{XDP}{ok}backends = []\n")),
        (
            "unknown admin",
            "[admin]\nlisten = \"127.0.0.1:1\"\nfoo = 1\n".into(),
        ),
        (
            "bad listen",
            "[admin]\nlisten = \"localhost:9100\"\n".into(),
        ),
        ("bad listen type", "[admin]\nlisten = 9100\n".into()),
        (
            "bad mode",
            "[xdp]\ninterface = \"eth0\"\nmode = \"native\"\n".into(),
        ),
        ("missing iface", "[xdp]\nmode = \"skb\"\n".into()),
        ("missing iface empty", "[xdp]\n".into()),
        (
            "long iface",
            "[xdp]\ninterface = \"abcdefghijklmnop\"\n".into(),
        ),
        ("maxvips0", format!("{XDP}max_vips = 0\n")),
        ("maxvips neg", format!("{XDP}max_vips = -1\n")),
        ("maxvips big", format!("{XDP}max_vips = 100000\n")),
        (
            "too many",
            format!(
                "[xdp]\ninterface = \"eth0\"\nmax_vips = 1\n{}{}",
                vip("\"a\"", "\"198.18.0.10\"", "80", "\"tcp\"", "\"local\""),
                vip("\"b\"", "\"198.18.0.11\"", "80", "\"tcp\"", "\"local\"")
            ),
        ),
        ("no xdp", ok.clone()),
        (
            "dup name",
            format!(
                "{XDP}{ok}{}",
                vip("\"a\"", "\"198.18.0.11\"", "80", "\"tcp\"", "\"local\"")
            ),
        ),
        (
            "bad name",
            format!(
                "{XDP}{}",
                vip("\"a b\"", "\"198.18.0.11\"", "80", "\"tcp\"", "\"local\"")
            ),
        ),
        (
            "bad addr",
            format!(
                "{XDP}{}",
                vip("\"a\"", "\"198.18.0\"", "80", "\"tcp\"", "\"local\"")
            ),
        ),
        (
            "unspec",
            format!(
                "{XDP}{}",
                vip("\"a\"", "\"0.0.0.0\"", "80", "\"tcp\"", "\"local\"")
            ),
        ),
        (
            "mcast6",
            format!(
                "{XDP}{}",
                vip("\"a\"", "\"ff02::1\"", "80", "\"tcp\"", "\"local\"")
            ),
        ),
        (
            "port0",
            format!(
                "{XDP}{}",
                vip("\"a\"", "\"198.18.0.10\"", "0", "\"tcp\"", "\"local\"")
            ),
        ),
        (
            "port70000",
            format!(
                "{XDP}{}",
                vip("\"a\"", "\"198.18.0.10\"", "70000", "\"tcp\"", "\"local\"")
            ),
        ),
        (
            "port str",
            format!(
                "{XDP}{}",
                vip("\"a\"", "\"198.18.0.10\"", "\"80\"", "\"tcp\"", "\"local\"")
            ),
        ),
        (
            "dup svc",
            format!(
                "{XDP}{ok}{}",
                vip("\"b\"", "\"198.18.0.10\"", "80", "\"tcp\"", "\"local\"")
            ),
        ),
        (
            "bad proto",
            format!(
                "{XDP}{}",
                vip("\"a\"", "\"198.18.0.10\"", "80", "\"sctp\"", "\"local\"")
            ),
        ),
        (
            "ipip",
            format!(
                "{XDP}{}",
                vip("\"a\"", "\"198.18.0.10\"", "80", "\"tcp\"", "\"ipip\"")
            ),
        ),
        (
            "bad fwd",
            format!(
                "{XDP}{}",
                vip("\"a\"", "\"198.18.0.10\"", "80", "\"tcp\"", "\"nat\"")
            ),
        ),
        (
            "missing port",
            format!(
                "{XDP}[[vip]]\nname = \"a\"\naddress = \"198.18.0.10\"\nprotocol = \"tcp\"\nforward = \"local\"\n"
            ),
        ),
        (
            "syntax",
            "[xdp]\ninterface = \"eth0\nmode = \"skb\"\n".into(),
        ),
        ("syntax2", "[xdp]\ninterface = eth0\n".into()),
        (
            "dup key",
            "[xdp]\ninterface = \"eth0\"\ninterface = \"eth1\"\n".into(),
        ),
        ("vip not array", format!("{XDP}[vip]\nname = \"a\"\n")),
        ("xdp not table", "xdp = 1\n".into()),
        (
            "second vip bad proto",
            format!(
                "{XDP}{ok}{}",
                vip("\"b\"", "\"198.18.0.10\"", "80", "\"sctp\"", "\"local\"")
            ),
        ),
        (
            "inline vip",
            format!(
                "{XDP}vip = [{{ name = \"a\", address = \"198.18.0.10\", port = 0, protocol = \"tcp\", forward = \"local\" }}]\n"
            ),
        ),
    ];
    for (what, text) in cases {
        match Config::parse(&text, "test.toml") {
            Ok(_) => println!("{what}: OK"),
            Err(e) => println!("{what}: {e}"),
        }
    }
}
