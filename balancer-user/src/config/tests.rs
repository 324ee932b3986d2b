//! Parsing and validation of the config file, and the exact text of every error: an operator
//! reads these to find the line to fix, so they are pinned word for word.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::de::{IntoDeserializer, value::StrDeserializer};
use toml::Spanned;

use super::{
    AclConfig, BackendConfig, Config, ForwardMode, HealthCheckConfig, HealthCheckKind, Protocol,
    UdpHash, VipConfig, XdpAttachMode,
    de::{HealthCheck, Keyword},
    error::{Invalid, Location},
};

const ORIGIN: &str = "test.toml";

/// An `[xdp]` section that validates, for configs whose error lies elsewhere (lines 1-2).
const XDP: &str = "[xdp]\ninterface = \"eth0\"\n";

fn parse(text: &str) -> Config {
    Config::parse(text, ORIGIN)
        .unwrap_or_else(|err| panic!("expected this config to parse:\n{text}\nbut got: {err}"))
}

fn assert_error(text: &str, expected: &str) {
    match Config::parse(text, ORIGIN) {
        Ok(config) => panic!(
            "expected the error\n  {expected}\nbut this config parsed:\n{text}\nas {config:#?}"
        ),
        Err(err) => assert_eq!(
            err.to_string(),
            expected,
            "wrong error text for this config:\n{text}"
        ),
    }
}

/// A `[[vip]]` table, one key per line: `name` is on its second line, `address` on the third,
/// `port` the fourth, `protocol` the fifth, `forward` the sixth. Values are TOML literals.
fn vip(name: &str, address: &str, port: &str, protocol: &str, forward: &str) -> String {
    format!(
        "[[vip]]\nname = {name}\naddress = {address}\nport = {port}\nprotocol = {protocol}\nforward = {forward}\n"
    )
}

/// A valid VIP named `name` serving `address` on TCP port 80.
fn local_vip(name: &str, address: &str) -> String {
    vip(
        &format!("\"{name}\""),
        &format!("\"{address}\""),
        "80",
        "\"tcp\"",
        "\"local\"",
    )
}

// ---- Good configs ------------------------------------------------------------------------------

#[test]
fn empty_config_takes_the_defaults() {
    for text in ["", "\n\n", "# only a comment\n"] {
        let config = parse(text);
        assert_eq!(
            config.admin.listen,
            SocketAddr::from(([127, 0, 0, 1], 9100)),
            "default admin.listen for {text:?}"
        );
        assert!(config.xdp.is_none(), "no [xdp] means no data plane");
        assert!(config.vips.is_empty());
    }
}

#[test]
fn admin_section_without_listen_takes_the_default() {
    let config = parse("[admin]\n");
    assert_eq!(
        config.admin.listen,
        SocketAddr::from(([127, 0, 0, 1], 9100))
    );
}

#[test]
fn full_config_parses_every_field() {
    let text = r#"
[admin]
listen = "[::1]:9200"

[xdp]
interface = "enp3s0f1"
mode = "driver"
max_vips = 8

[[vip]]
name = "web-l4"
address = "198.18.0.10"
port = 80
protocol = "tcp"
forward = "local"

[[vip]]
name = "dns_v6"
address = "2001:db8::53"
port = 53
protocol = "udp"
forward = "local"

# Same address and port as web-l4 but UDP: a different service.
[[vip]]
name = "quic.web"
address = "198.18.0.10"
port = 65535
protocol = "udp"
forward = "local"
"#;
    let config = parse(text);

    assert_eq!(
        config.admin.listen,
        SocketAddr::from((Ipv6Addr::LOCALHOST, 9200))
    );

    let xdp = config.xdp.as_ref().expect("[xdp] is present");
    assert_eq!(xdp.interface.get_ref(), "enp3s0f1");
    assert_eq!(xdp.mode, XdpAttachMode::Driver);
    assert_eq!(*xdp.max_vips.get_ref(), 8);

    let summary: Vec<_> = config
        .vips
        .iter()
        .map(|vip| {
            (
                vip.name.get_ref().as_str(),
                *vip.address.get_ref(),
                *vip.port.get_ref(),
                vip.protocol,
                *vip.forward.get_ref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "web-l4",
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)),
                80,
                Protocol::Tcp,
                ForwardMode::Local,
            ),
            (
                "dns_v6",
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53)),
                53,
                Protocol::Udp,
                ForwardMode::Local,
            ),
            (
                "quic.web",
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)),
                65535,
                Protocol::Udp,
                ForwardMode::Local,
            ),
        ]
    );
    assert_eq!(config.vips[0].protocol.ip_protocol(), 6);
    assert_eq!(config.vips[1].protocol.ip_protocol(), 17);

    // The spans kept for validation errors cover the value as written.
    let name = &config.vips[1].name;
    assert_eq!(&text[name.span()], "\"dns_v6\"");
    let port = &config.vips[2].port;
    assert_eq!(&text[port.span()], "65535");
}

#[test]
fn xdp_section_defaults() {
    let config = parse(XDP);
    let xdp = config.xdp.expect("[xdp] is present");
    assert_eq!(xdp.interface.get_ref(), "eth0");
    assert_eq!(xdp.mode, XdpAttachMode::Auto);
    assert_eq!(*xdp.max_vips.get_ref(), balancer_common::DEFAULT_MAX_VIPS);
    assert_eq!(xdp.max_vips(), 64);
    assert_eq!(xdp.pin_path, None);
    assert_eq!(xdp.table_size, balancer_common::DEFAULT_TABLE_SIZE);
    assert_eq!(xdp.table_size, 65_537);
    assert_eq!(xdp.max_backends, balancer_common::DEFAULT_BACKENDS_PER_VIP);
    assert_eq!(xdp.max_connections, balancer_common::DEFAULT_MAX_CONNECTIONS);
    assert_eq!(xdp.max_acl_rules, balancer_common::DEFAULT_MAX_ACL_RULES);
    assert_eq!(xdp.acl, AclConfig::default());
    assert!(xdp.acl.is_empty());
    assert_eq!(xdp.maglev_slots(), 64 * 65_537 * 2);
}

#[test]
fn every_xdp_mode_is_accepted() {
    for (word, mode) in [
        ("auto", XdpAttachMode::Auto),
        ("driver", XdpAttachMode::Driver),
        ("skb", XdpAttachMode::Skb),
    ] {
        let config = parse(&format!("{XDP}mode = \"{word}\"\n"));
        assert_eq!(
            config.xdp.expect("[xdp] is present").mode,
            mode,
            "mode = {word:?}"
        );
    }
}

#[test]
fn limits_are_inclusive() {
    // Exactly max_vips VIPs, and the extreme ports.
    let text = format!(
        "[xdp]\ninterface = \"eth0\"\nmax_vips = 2\n{}{}",
        vip("\"low\"", "\"198.18.0.1\"", "1", "\"tcp\"", "\"local\""),
        vip(
            "\"high\"",
            "\"198.18.0.1\"",
            "65535",
            "\"tcp\"",
            "\"local\""
        ),
    );
    let config = parse(&text);
    assert_eq!(config.vips.len(), 2);
    assert_eq!(*config.vips[0].port.get_ref(), 1);
    assert_eq!(*config.vips[1].port.get_ref(), 65535);

    // The most VIPs fit only with a small table (65536 × 2039 × 2 slots is below the limit).
    let limit = balancer_common::MAX_VIPS_LIMIT;
    let config = parse(&format!("{XDP}max_vips = {limit}\ntable_size = 2039\n"));
    assert_eq!(
        *config.xdp.expect("[xdp] is present").max_vips.get_ref(),
        limit
    );

    // IFNAMSIZ is 16 with the NUL: 15 characters is the longest name.
    let config = parse("[xdp]\ninterface = \"abcdefghijklmno\"\n");
    assert_eq!(
        config.xdp.expect("[xdp] is present").interface.get_ref(),
        "abcdefghijklmno"
    );
}

#[test]
fn vips_may_be_an_inline_array_of_tables() {
    let text = format!(
        "vip = [\n  {{ name = \"a\", address = \"198.18.0.10\", port = 443, protocol = \"tcp\", forward = \"local\" }},\n]\n{XDP}"
    );
    let config = parse(&text);
    assert_eq!(config.vips.len(), 1);
    assert_eq!(*config.vips[0].port.get_ref(), 443);
}

// ---- Bad configs: unknown keys -----------------------------------------------------------------

#[test]
fn unknown_top_level_key() {
    assert_error(
        "# comment\nbogus = 1\n",
        "test.toml:2:1: bogus: unknown field `bogus`, expected one of `admin`, `xdp`, `vip`",
    );
}

#[test]
fn unknown_top_level_table() {
    // The column is that of the name inside the brackets.
    assert_error(
        "[listener]\nname = \"https\"\n",
        "test.toml:1:2: listener: unknown field `listener`, expected one of `admin`, `xdp`, `vip`",
    );
}

#[test]
fn unknown_key_in_admin() {
    assert_error(
        "[admin]\nlisten = \"127.0.0.1:9100\"\ntoken = \"x\"\n",
        "test.toml:3:1: admin.token: unknown field `token`, expected `listen`",
    );
}

#[test]
fn unknown_key_in_xdp() {
    // A plausible name for table_size: it must not be ignored.
    assert_error(
        &format!("{XDP}maglev_size = 65537\n"),
        "test.toml:3:1: xdp.maglev_size: unknown field `maglev_size`, expected one of `interface`, `mode`, `max_vips`, `pin_path`, `table_size`, `max_backends`, `max_connections`, `max_acl_rules`, `acl`",
    );
}

#[test]
fn unknown_key_in_vip() {
    // A backend's key written on the VIP.
    let text = format!(
        "{XDP}{}{}weight = 2\n",
        local_vip("a", "198.18.0.10"),
        local_vip("b", "198.18.0.11")
    );
    assert_error(
        &text,
        "test.toml:15:1: vip[1].weight: unknown field `weight`, expected one of `name`, `address`, `port`, `protocol`, `forward`, `backends`, `udp_hash`, `health`, `acl`",
    );
}

#[test]
fn unknown_key_in_inline_vip_points_at_the_key() {
    let text = format!(
        "vip = [\n  {{ name = \"a\", address = \"198.18.0.10\", port = 80, protocol = \"tcp\", forward = \"local\", weight = 1 }},\n]\n{XDP}"
    );
    assert_error(
        &text,
        "test.toml:2:90: vip[0].weight: unknown field `weight`, expected one of `name`, `address`, `port`, `protocol`, `forward`, `backends`, `udp_hash`, `health`, `acl`",
    );
}

#[test]
fn key_after_xdp_belongs_to_xdp() {
    // TOML puts every key after a [table] header in that table: a top-level `vip = [...]`
    // written below [xdp] is an unknown key of [xdp], and the message must say so.
    let text = format!(
        "{XDP}vip = [{{ name = \"a\", address = \"198.18.0.10\", port = 80, protocol = \"tcp\", forward = \"local\" }}]\n"
    );
    assert_error(
        &text,
        "test.toml:3:1: xdp.vip: unknown field `vip`, expected one of `interface`, `mode`, `max_vips`, `pin_path`, `table_size`, `max_backends`, `max_connections`, `max_acl_rules`, `acl`",
    );
}

// ---- Bad configs: [admin] ----------------------------------------------------------------------

#[test]
fn admin_listen_not_an_address() {
    assert_error(
        "[admin]\nlisten = \"localhost:9100\"\n",
        "test.toml:2:10: admin.listen: invalid value: string \"localhost:9100\", expected an IP address and port, such as \"127.0.0.1:9100\" or \"[::1]:9100\"",
    );
}

#[test]
fn admin_listen_without_port() {
    assert_error(
        "[admin]\nlisten = \"127.0.0.1\"\n",
        "test.toml:2:10: admin.listen: invalid value: string \"127.0.0.1\", expected an IP address and port, such as \"127.0.0.1:9100\" or \"[::1]:9100\"",
    );
}

#[test]
fn admin_listen_not_a_string() {
    assert_error(
        "[admin]\nlisten = 9100\n",
        "test.toml:2:10: admin.listen: invalid type: integer `9100`, expected a string with an IP address and port, such as \"127.0.0.1:9100\" or \"[::1]:9100\"",
    );
}

// ---- Bad configs: [xdp] ------------------------------------------------------------------------

#[test]
fn xdp_mode_unknown() {
    assert_error(
        &format!("{XDP}mode = \"native\"\n"),
        "test.toml:3:8: xdp.mode: unknown variant `native`, expected one of `auto`, `driver`, `skb`",
    );
}

#[test]
fn xdp_mode_not_a_string() {
    // toml alone would say "wanted string or table", without the allowed words.
    assert_error(
        &format!("{XDP}mode = 1\n"),
        "test.toml:3:8: xdp.mode: invalid type: integer `1`, expected one of `auto`, `driver`, `skb`",
    );
}

#[test]
fn xdp_interface_missing() {
    // Points at the [xdp] header: the key is absent, so there is no better line.
    assert_error(
        "[admin]\n\n[xdp]\nmode = \"skb\"\n",
        "test.toml:3:1: xdp: missing field `interface`",
    );
}

#[test]
fn xdp_interface_too_long() {
    assert_error(
        "[xdp]\ninterface = \"abcdefghijklmnop\"\n",
        "test.toml:2:13: xdp.interface: \"abcdefghijklmnop\" is not a valid interface name (1 to 15 characters, not \".\" or \"..\", no '/', ':' or whitespace)",
    );
}

#[test]
fn xdp_interface_names_the_kernel_refuses() {
    for name in ["", ".", "..", "eth0/1", "eth0:1", "eth 0", "eth\t0"] {
        let text = format!("[xdp]\ninterface = {}\n", toml_string(name));
        // Quoted with escapes, so that a tab or a trailing space is visible.
        let shown = name.escape_debug();
        assert_error(
            &text,
            &format!(
                "test.toml:2:13: xdp.interface: \"{shown}\" is not a valid interface name (1 to 15 characters, not \".\" or \"..\", no '/', ':' or whitespace)"
            ),
        );
    }
}

#[test]
fn xdp_interface_not_a_string() {
    assert_error(
        "[xdp]\ninterface = 2\n",
        "test.toml:2:13: xdp.interface: invalid type: integer `2`, expected a string",
    );
}

#[test]
fn xdp_not_a_table() {
    // `expecting` on the struct: serde would otherwise name the Rust type ("struct XdpConfig").
    assert_error(
        "xdp = \"eth0\"\n",
        "test.toml:1:7: xdp: invalid type: string \"eth0\", expected a table",
    );
}

#[test]
fn max_vips_zero() {
    assert_error(
        &format!("{XDP}max_vips = 0\n"),
        "test.toml:3:12: xdp.max_vips: must be between 1 and 65536, not 0",
    );
}

#[test]
fn max_vips_negative() {
    assert_error(
        &format!("{XDP}max_vips = -1\n"),
        "test.toml:3:12: xdp.max_vips: must be between 1 and 65536, not -1",
    );
}

#[test]
fn max_vips_above_the_limit() {
    assert_error(
        &format!("{XDP}max_vips = 65537\n"),
        "test.toml:3:12: xdp.max_vips: must be between 1 and 65536, not 65537",
    );
}

#[test]
fn more_vips_than_max_vips() {
    let text = format!(
        "[xdp]\ninterface = \"eth0\"\nmax_vips = 1\n{}{}",
        local_vip("a", "198.18.0.10"),
        local_vip("b", "198.18.0.11"),
    );
    // Points at the first VIP that does not fit.
    assert_error(
        &text,
        "test.toml:11:8: vip[1]: 2 VIPs are configured but xdp.max_vips is 1",
    );
}

#[test]
fn more_vips_than_the_default_max_vips() {
    let count = balancer_common::DEFAULT_MAX_VIPS as usize + 1;
    let mut text = XDP.to_string();
    for index in 0..count {
        let [hi, lo] = u16::try_from(index)
            .expect("a few hundred VIPs")
            .to_be_bytes();
        text.push_str(&local_vip(
            &format!("v{index}"),
            &format!("198.18.{hi}.{lo}"),
        ));
    }
    // vip[64] starts on line 3 + 64 × 6; its name is the line after.
    assert_error(
        &text,
        "test.toml:388:8: vip[64]: 65 VIPs are configured but xdp.max_vips is 64",
    );
}

// ---- Bad configs: [[vip]] ----------------------------------------------------------------------

#[test]
fn vips_without_xdp() {
    assert_error(
        &format!("[admin]\n{}", local_vip("web", "198.18.0.10")),
        "test.toml:3:8: vip[0]: VIPs need the XDP data plane: add an [xdp] section with the interface",
    );
}

#[test]
fn vip_written_as_a_single_table() {
    assert_error(
        &format!("{XDP}[vip]\nname = \"a\"\n"),
        "test.toml:3:1: vip: invalid type: map, expected an array of tables, each VIP starting with [[vip]]",
    );
}

#[test]
fn vip_field_missing() {
    let text = format!(
        "{XDP}[[vip]]\nname = \"a\"\naddress = \"198.18.0.10\"\nprotocol = \"tcp\"\nforward = \"local\"\n"
    );
    // Points at the [[vip]] header: the key is absent.
    assert_error(&text, "test.toml:3:1: vip[0]: missing field `port`");
}

#[test]
fn duplicate_vip_name() {
    let text = format!(
        "{XDP}{}{}",
        local_vip("web", "198.18.0.10"),
        local_vip("web", "198.18.0.11")
    );
    assert_error(
        &text,
        "test.toml:10:8: vip[1].name: \"web\" is already the name of vip[0]",
    );
}

#[test]
fn vip_name_with_invalid_characters() {
    assert_error(
        &format!("{XDP}{}", local_vip("web l4", "198.18.0.10")),
        "test.toml:4:8: vip[0].name: \"web l4\" must be non-empty and use only letters, digits, '-', '_' and '.'",
    );
}

#[test]
fn vip_name_empty() {
    assert_error(
        &format!("{XDP}{}", local_vip("", "198.18.0.10")),
        "test.toml:4:8: vip[0].name: \"\" must be non-empty and use only letters, digits, '-', '_' and '.'",
    );
}

#[test]
fn vip_address_not_an_address() {
    assert_error(
        &format!("{XDP}{}", local_vip("web", "198.18.0")),
        "test.toml:5:11: vip[0].address: invalid value: string \"198.18.0\", expected an IPv4 or IPv6 address",
    );
}

#[test]
fn vip_address_with_a_port() {
    assert_error(
        &format!("{XDP}{}", local_vip("web", "198.18.0.10:80")),
        "test.toml:5:11: vip[0].address: invalid value: string \"198.18.0.10:80\", expected an IPv4 or IPv6 address",
    );
}

#[test]
fn vip_address_not_a_string() {
    assert_error(
        &format!(
            "{XDP}{}",
            vip("\"web\"", "3323068426", "80", "\"tcp\"", "\"local\"")
        ),
        "test.toml:5:11: vip[0].address: invalid type: integer `3323068426`, expected a string with an IPv4 or IPv6 address",
    );
}

#[test]
fn vip_address_unspecified() {
    assert_error(
        &format!("{XDP}{}", local_vip("web", "0.0.0.0")),
        "test.toml:5:11: vip[0].address: 0.0.0.0 cannot be a VIP (unspecified or multicast)",
    );
    assert_error(
        &format!("{XDP}{}", local_vip("web", "::")),
        "test.toml:5:11: vip[0].address: :: cannot be a VIP (unspecified or multicast)",
    );
}

#[test]
fn vip_address_multicast() {
    assert_error(
        &format!("{XDP}{}", local_vip("web", "224.0.0.1")),
        "test.toml:5:11: vip[0].address: 224.0.0.1 cannot be a VIP (unspecified or multicast)",
    );
    assert_error(
        &format!("{XDP}{}", local_vip("web", "ff02::1")),
        "test.toml:5:11: vip[0].address: ff02::1 cannot be a VIP (unspecified or multicast)",
    );
}

#[test]
fn vip_port_zero() {
    assert_error(
        &format!(
            "{XDP}{}",
            vip("\"web\"", "\"198.18.0.10\"", "0", "\"tcp\"", "\"local\"")
        ),
        "test.toml:6:8: vip[0].port: must be between 1 and 65535, not 0",
    );
}

#[test]
fn vip_port_out_of_range() {
    assert_error(
        &format!(
            "{XDP}{}",
            vip(
                "\"web\"",
                "\"198.18.0.10\"",
                "70000",
                "\"tcp\"",
                "\"local\""
            )
        ),
        "test.toml:6:8: vip[0].port: must be between 1 and 65535, not 70000",
    );
    assert_error(
        &format!(
            "{XDP}{}",
            vip("\"web\"", "\"198.18.0.10\"", "-80", "\"tcp\"", "\"local\"")
        ),
        "test.toml:6:8: vip[0].port: must be between 1 and 65535, not -80",
    );
}

#[test]
fn vip_port_as_a_string() {
    assert_error(
        &format!(
            "{XDP}{}",
            vip(
                "\"web\"",
                "\"198.18.0.10\"",
                "\"80\"",
                "\"tcp\"",
                "\"local\""
            )
        ),
        "test.toml:6:8: vip[0].port: invalid type: string \"80\", expected an integer between 1 and 65535",
    );
}

#[test]
fn vip_port_as_a_float() {
    assert_error(
        &format!(
            "{XDP}{}",
            vip("\"web\"", "\"198.18.0.10\"", "80.0", "\"tcp\"", "\"local\"")
        ),
        "test.toml:6:8: vip[0].port: invalid type: floating point `80.0`, expected an integer between 1 and 65535",
    );
}

#[test]
fn duplicate_vip_service() {
    let text = format!(
        "{XDP}{}{}",
        local_vip("web", "198.18.0.10"),
        local_vip("web-again", "198.18.0.10")
    );
    // Points at the second VIP's address.
    assert_error(
        &text,
        "test.toml:11:11: vip[1].address: 198.18.0.10 port 80 tcp is already vip[0] (\"web\")",
    );
}

#[test]
fn duplicate_vip_service_with_differently_written_ipv6() {
    // Compared as addresses, not as text.
    let text = format!(
        "{XDP}{}{}",
        vip("\"a\"", "\"2001:db8::1\"", "443", "\"udp\"", "\"local\""),
        vip(
            "\"b\"",
            "\"2001:DB8:0:0::0001\"",
            "443",
            "\"udp\"",
            "\"local\""
        ),
    );
    assert_error(
        &text,
        "test.toml:11:11: vip[1].address: 2001:db8::1 port 443 udp is already vip[0] (\"a\")",
    );
}

#[test]
fn vip_protocol_unknown() {
    assert_error(
        &format!(
            "{XDP}{}",
            vip("\"web\"", "\"198.18.0.10\"", "80", "\"sctp\"", "\"local\"")
        ),
        "test.toml:7:12: vip[0].protocol: unknown variant `sctp`, expected `tcp` or `udp`",
    );
}

#[test]
fn vip_protocol_as_a_number() {
    // The IP protocol number is a likely guess; toml alone would say "wanted string or table".
    assert_error(
        &format!(
            "{XDP}{}",
            vip("\"web\"", "\"198.18.0.10\"", "80", "6", "\"local\"")
        ),
        "test.toml:7:12: vip[0].protocol: invalid type: integer `6`, expected `tcp` or `udp`",
    );
}

#[test]
fn vip_forward_ipip_needs_backends() {
    // Points at `forward`: the mode is what needs backends.
    assert_error(
        &format!(
            "{XDP}{}",
            vip("\"web\"", "\"198.18.0.10\"", "80", "\"tcp\"", "\"ipip\"")
        ),
        "test.toml:8:11: vip[0]: \"ipip\" forwarding needs at least one backend in backends",
    );
}

#[test]
fn vip_forward_l2_dsr_needs_backends() {
    // An empty list is no better than none.
    assert_error(
        &format!(
            "{XDP}{}backends = []\n",
            vip("\"web\"", "\"198.18.0.10\"", "80", "\"tcp\"", "\"l2-dsr\"")
        ),
        "test.toml:8:11: vip[0]: \"l2-dsr\" forwarding needs at least one backend in backends",
    );
}

#[test]
fn vip_forward_unknown() {
    assert_error(
        &format!(
            "{XDP}{}",
            vip("\"web\"", "\"198.18.0.10\"", "80", "\"tcp\"", "\"nat\"")
        ),
        "test.toml:8:11: vip[0].forward: unknown variant `nat`, expected one of `ipip`, `l2-dsr`, `local`",
    );
}

#[test]
fn vip_forward_not_a_string() {
    assert_error(
        &format!(
            "{XDP}{}",
            vip("\"web\"", "\"198.18.0.10\"", "80", "\"tcp\"", "true")
        ),
        "test.toml:8:11: vip[0].forward: invalid type: boolean `true`, expected one of `ipip`, `l2-dsr`, `local`",
    );
}

#[test]
fn keyword_lists_match_the_enums() {
    // `Keyword::ONE_OF` repeats the variant names for the wrong-type message; serde's own
    // unknown-variant message is derived from the enum, so the two must end the same way.
    fn unknown_word_message<T: Keyword>() -> String {
        let word: StrDeserializer<'_, serde::de::value::Error> = "no-such-word".into_deserializer();
        match super::de::keyword::<_, T>(word) {
            Ok(_) => panic!("\"no-such-word\" parsed as a keyword"),
            Err(err) => err.to_string(),
        }
    }
    for (message, one_of) in [
        (unknown_word_message::<Protocol>(), Protocol::ONE_OF),
        (unknown_word_message::<ForwardMode>(), ForwardMode::ONE_OF),
        (
            unknown_word_message::<XdpAttachMode>(),
            XdpAttachMode::ONE_OF,
        ),
        (unknown_word_message::<UdpHash>(), UdpHash::ONE_OF),
        (unknown_word_message::<HealthCheck>(), HealthCheck::ONE_OF),
    ] {
        assert_eq!(
            message,
            format!("unknown variant `no-such-word`, expected {one_of}"),
        );
    }
}

// ---- Bad configs: not TOML ---------------------------------------------------------------------

#[test]
fn unterminated_string() {
    // toml reports where the closing quote was expected: the end of the line.
    assert_error(
        "[xdp]\ninterface = \"eth0\nmode = \"skb\"\n",
        "test.toml:2:18: invalid TOML: invalid basic string",
    );
}

#[test]
fn unquoted_string() {
    // toml's message spans two lines; it is joined into one.
    assert_error(
        "[xdp]\ninterface = eth0\n",
        "test.toml:2:13: invalid TOML: invalid string; expected `\"`, `'`",
    );
}

#[test]
fn unclosed_table_header() {
    assert_error(
        "[admin]\n[xdp\ninterface = \"eth0\"\n",
        "test.toml:2:5: invalid TOML: invalid table header; expected `.`, `]`",
    );
}

#[test]
fn duplicate_key() {
    assert_error(
        "[xdp]\ninterface = \"eth0\"\ninterface = \"eth1\"\n",
        "test.toml:3:1: invalid TOML: duplicate key `interface` in table `xdp`",
    );
}

#[test]
fn duplicate_table() {
    assert_error(
        "[admin]\n[admin]\n",
        "test.toml:2:1: invalid TOML: invalid table header; duplicate key `admin` in document root",
    );
}

#[test]
fn integer_beyond_toml_range() {
    // TOML integers are 64-bit: this is a parse error, before any key is known.
    assert_error(
        &format!(
            "{XDP}{}",
            vip(
                "\"web\"",
                "\"198.18.0.10\"",
                "99999999999999999999",
                "\"tcp\"",
                "\"local\""
            )
        ),
        "test.toml:6:8: invalid TOML: number too large to fit in target type",
    );
}

// ---- Lines and columns -------------------------------------------------------------------------

fn location(text: &str, offset: usize) -> (usize, usize) {
    let at = Location::of(text, offset);
    (at.line, at.column)
}

#[test]
fn location_of_offsets() {
    let text = "ab\ncd\n\nef";
    assert_eq!(location(text, 0), (1, 1));
    assert_eq!(location(text, 1), (1, 2));
    assert_eq!(location(text, 2), (1, 3), "the newline ends line 1");
    assert_eq!(location(text, 3), (2, 1));
    assert_eq!(location(text, 6), (3, 1), "an empty line");
    assert_eq!(location(text, 8), (4, 2));
    assert_eq!(location(text, text.len()), (4, 3), "the end of the text");
    assert_eq!(location(text, 100), (4, 3), "past the end clamps");
    assert_eq!(location("", 0), (1, 1));
}

#[test]
fn location_counts_characters_not_bytes() {
    let text = "é = \"ü\"\n";
    // 'é' and 'ü' are two bytes each: byte 6 is the 'ü', the fifth character.
    assert_eq!(location(text, 6), (1, 6));
    // An offset inside a character (never produced by toml) must not panic.
    assert_eq!(location(text, 1), (1, 1));
    assert_eq!(location(text, 7), (1, 6));
}

#[test]
fn location_with_crlf_line_ends() {
    let text = "a\r\nbc\r\n";
    assert_eq!(location(text, 3), (2, 1));
    assert_eq!(location(text, 4), (2, 2));
}

#[test]
fn errors_on_later_lines_are_located() {
    // Comments, blank lines, a multi-line string and a multi-line array before the error.
    let text = r#"# The balancer's config.

[admin]
# Loopback only.
listen = "127.0.0.1:9100"

[xdp]
interface = """
eth0"""
max_vips = 4

vip = [
  { name = "a", address = "198.18.0.10", port = 80, protocol = "tcp", forward = "local" },
]
"#;
    // The inline array sits under [xdp], so it is an unknown key there, on line 12.
    assert_error(
        text,
        "test.toml:12:1: xdp.vip: unknown field `vip`, expected one of `interface`, `mode`, `max_vips`, `pin_path`, `table_size`, `max_backends`, `max_connections`, `max_acl_rules`, `acl`",
    );

    let text = r#"# The balancer's config.

[admin]
listen = "127.0.0.1:9100"

[xdp]
interface = "eth0"
mode = "skb"

[[vip]]
name = "a"
address = "198.18.0.10"
port = 80
protocol = "tcp"
forward = "local"

[[vip]]
name = "b"
address = "198.18.0.11"
port = 80
protocol = "tcp"
forward   =   "ipip"
"#;
    assert_error(
        text,
        "test.toml:22:15: vip[1]: \"ipip\" forwarding needs at least one backend in backends",
    );
}

#[test]
fn errors_with_crlf_and_non_ascii_are_located() {
    let text = "# café\r\n[xdp]\r\ninterface = \"eth0\"\r\nmode = \"über\"\r\n";
    assert_error(
        text,
        "test.toml:4:8: xdp.mode: unknown variant `über`, expected one of `auto`, `driver`, `skb`",
    );
    // Columns count characters: "ééé" is 3 columns, not 6 bytes (a byte column would be 59).
    let text = format!(
        "vip = [{{ name = \"ééé\", address = \"198.18.0.10\", port = 0, protocol = \"tcp\", forward = \"local\" }}]\n{XDP}"
    );
    assert_error(
        &text,
        "test.toml:1:56: vip[0].port: must be between 1 and 65535, not 0",
    );
    let text = format!("{XDP}{}", local_vip("ünïcode", "198.18.0.10"));
    assert_error(
        &text,
        "test.toml:4:8: vip[0].name: \"ünïcode\" must be non-empty and use only letters, digits, '-', '_' and '.'",
    );
}

#[test]
fn invalid_with_a_defaulted_span_has_no_line() {
    // Defaulted values (max_vips) carry the empty span 0..0: there is no line to show.
    let defaulted = Spanned::new(0..0, 512_u32);
    let err = Invalid::at("xdp.max_vips", &defaulted, "is wrong").located("[xdp]\n", ORIGIN);
    assert_eq!(err.to_string(), "test.toml: xdp.max_vips: is wrong");

    let written = Spanned::new(17..19, 8_u32);
    let err =
        Invalid::at("xdp.max_vips", &written, "is wrong").located("[xdp]\nmax_vips = 8\n", ORIGIN);
    assert_eq!(err.to_string(), "test.toml:2:12: xdp.max_vips: is wrong");
}

// ---- Loading from a file -----------------------------------------------------------------------

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("balancer-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    let path = dir.join("balancer.toml");
    std::fs::write(&path, "[xdp]\ninterface = \"eth0\"\nmode = \"fast\"\n")
        .expect("write the config");
    let err = Config::load(&path).expect_err("mode = \"fast\" is invalid");
    std::fs::remove_dir_all(&dir).expect("remove the temporary directory");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3:8: xdp.mode: unknown variant `fast`, expected one of `auto`, `driver`, `skb`",
            path.display()
        )
    );
}

#[test]
fn load_of_a_missing_file() {
    let path = std::path::Path::new("/nonexistent/balancer.toml");
    let err = Config::load(path).expect_err("the file does not exist");
    assert_eq!(
        err.to_string(),
        "/nonexistent/balancer.toml: cannot read the config file: No such file or directory (os error 2)"
    );
}

/// `s` as a TOML basic string (for names with tabs and quotes).
fn toml_string(s: &str) -> String {
    toml::Value::from(s).to_string()
}
