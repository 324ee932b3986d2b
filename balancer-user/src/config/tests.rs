//! Parsing and validation of the config file, and the exact text of every error: an operator
//! reads these to find the line to fix, so they are pinned word for word.

mod announce;
mod l7;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use ipnet::IpNet;

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
    assert_eq!(
        xdp.max_connections,
        balancer_common::DEFAULT_MAX_CONNECTIONS
    );
    assert_eq!(xdp.max_acl_rules, balancer_common::DEFAULT_MAX_ACL_RULES);
    assert_eq!(xdp.acl, AclConfig::default());
    assert!(xdp.acl.is_empty());
    assert_eq!(xdp.maglev_slots(), 64 * 65_537 * 2);
    assert_eq!(xdp.flow_grace, std::time::Duration::from_secs(60));
}

#[test]
fn flow_grace_is_read_and_zero_turns_it_off() {
    for (text, grace) in [
        ("\"1s\"", std::time::Duration::from_secs(1)),
        ("\"250ms\"", std::time::Duration::from_millis(250)),
        ("\"0s\"", std::time::Duration::ZERO),
        ("\"1h\"", std::time::Duration::from_secs(3600)),
    ] {
        let config = parse(&format!("{XDP}flow_grace = {text}\n"));
        assert_eq!(
            config.xdp.expect("[xdp] is present").flow_grace,
            grace,
            "flow_grace = {text}"
        );
    }
}

#[test]
fn flow_grace_needs_a_unit_and_a_bound() {
    assert_error(
        &format!("{XDP}flow_grace = \"60\"\n"),
        "test.toml:3:14: xdp.flow_grace: invalid value: string \"60\", expected a duration with a unit, such as \"500ms\", \"2s\" or \"1m\"",
    );
    assert_error(
        &format!("{XDP}flow_grace = \"61m\"\n"),
        "test.toml:3:14: xdp.flow_grace: 1h 1m is longer than the limit of 1h",
    );
    assert_error(
        &format!("{XDP}flow_grace = 60\n"),
        "test.toml:3:14: xdp.flow_grace: invalid type: integer `60`, expected a string with a duration with a unit, such as \"500ms\", \"2s\" or \"1m\"",
    );
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
        "test.toml:2:1: bogus: unknown field `bogus`, expected one of `admin`, `xdp`, `vip`, `proxy`, `listener`, `route`, `pool`, `announce`",
    );
}

#[test]
fn unknown_top_level_table() {
    // The column is that of the name inside the brackets.
    assert_error(
        "[upstream]\nname = \"https\"\n",
        "test.toml:1:2: upstream: unknown field `upstream`, expected one of `admin`, `xdp`, `vip`, `proxy`, `listener`, `route`, `pool`, `announce`",
    );
}

#[test]
fn unknown_key_in_admin() {
    assert_error(
        "[admin]\nlisten = \"127.0.0.1:9100\"\ntoken = \"x\"\n",
        "test.toml:3:1: admin.token: unknown field `token`, expected `listen` or `token_file`",
    );
}

#[test]
fn unknown_key_in_xdp() {
    // A plausible name for table_size: it must not be ignored.
    assert_error(
        &format!("{XDP}maglev_size = 65537\n"),
        "test.toml:3:1: xdp.maglev_size: unknown field `maglev_size`, expected one of `interface`, `mode`, `max_vips`, `pin_path`, `table_size`, `max_backends`, `max_connections`, `max_acl_rules`, `flow_grace`, `acl`",
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
        "test.toml:3:1: xdp.vip: unknown field `vip`, expected one of `interface`, `mode`, `max_vips`, `pin_path`, `table_size`, `max_backends`, `max_connections`, `max_acl_rules`, `flow_grace`, `acl`",
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
    assert_error(
        &format!(
            "{XDP}{}",
            vip("\"web\"", "\"198.18.0.10\"", "80", "\"tcp\"", "\"l2-dsr\"")
        ),
        "test.toml:8:11: vip[0]: \"l2-dsr\" forwarding needs at least one backend in backends",
    );
    // An empty list is no better than none; then the list is what is pointed at.
    assert_error(
        &format!(
            "{XDP}{}backends = []\n",
            vip("\"web\"", "\"198.18.0.10\"", "80", "\"tcp\"", "\"l2-dsr\"")
        ),
        "test.toml:9:12: vip[0].backends: \"l2-dsr\" forwarding needs at least one backend",
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

// ---- L4 data plane: good configs ---------------------------------------------------------------

/// An `ipip` VIP "web" on TCP port 80 of `address` (lines 1-6 of its table, as in `vip`),
/// followed by `rest`; after `XDP` its table starts on line 3 and `rest` on line 9.
fn ipip_vip(address: &str, rest: &str) -> String {
    l4_vip(address, "tcp", "ipip", rest)
}

fn l4_vip(address: &str, protocol: &str, forward: &str, rest: &str) -> String {
    format!(
        "{}{rest}",
        vip(
            "\"web\"",
            &format!("\"{address}\""),
            "80",
            &format!("\"{protocol}\""),
            &format!("\"{forward}\"")
        )
    )
}

/// One backend for a VIP of 198.18.100.1.
const BACKENDS: &str = "backends = [{ address = \"198.18.0.11\" }]\n";

fn net(text: &str) -> IpNet {
    text.parse().expect("a valid CIDR")
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("a valid address")
}

fn backend(address: &str, weight: u32) -> BackendConfig {
    BackendConfig {
        address: ip(address),
        weight,
    }
}

#[test]
fn full_l4_config_parses_every_field() {
    let text = r#"
[xdp]
interface = "veth0"
mode = "skb"
max_vips = 16
pin_path = "/sys/fs/bpf/balancer"
table_size = 65537
max_backends = 32
max_connections = 1048576
max_acl_rules = 1024
acl = { allow = ["198.18.0.0/24", "2001:2::/48"], deny = ["198.18.0.66/32", "2001:2::/64"] }

[[vip]]
name = "web"
address = "198.18.100.1"
port = 80
protocol = "tcp"
forward = "ipip"
backends = [ { address = "198.18.0.11", weight = 1 }, { address = "198.18.0.12", weight = 2 } ]
health = { check = "tcp", port = 8080, interval = "1s", timeout = "500ms", rise = 2, fall = 3 }
acl = { deny = ["198.18.0.99"] }

[[vip]]
name = "dns"
address = "2001:2::53"
port = 53
protocol = "udp"
forward = "l2-dsr"
udp_hash = "source"
backends = [ { address = "2001:2::1:53", weight = 0 }, { address = "2001:2::2:53" } ]
health = { check = "http", port = 8080, path = "/healthz", host = "www.example.test", expect = [200, 204], interval = "2m", rise = 1, fall = 100 }
acl = { allow = ["2001:2::/56"] }
"#;
    let config = parse(text);

    let xdp = config.xdp.as_ref().expect("[xdp] is present");
    assert_eq!(xdp.interface.get_ref(), "veth0");
    assert_eq!(xdp.mode, XdpAttachMode::Skb);
    assert_eq!(xdp.max_vips(), 16);
    assert_eq!(xdp.pin_path, Some(PathBuf::from("/sys/fs/bpf/balancer")));
    assert_eq!(xdp.table_size, 65_537);
    assert_eq!(xdp.max_backends, 32);
    assert_eq!(xdp.max_connections, 1_048_576);
    assert_eq!(xdp.max_acl_rules, 1_024);
    assert_eq!(xdp.maglev_slots(), 16 * 65_537 * 2);
    assert_eq!(
        xdp.acl,
        AclConfig {
            allow: vec![net("198.18.0.0/24"), net("2001:2::/48")],
            deny: vec![net("198.18.0.66/32"), net("2001:2::/64")],
        }
    );

    // Spanned fields compare by value only, so the expected VIPs need no real spans.
    let web = VipConfig {
        name: Spanned::new(0..0, "web".to_string()),
        address: Spanned::new(0..0, ip("198.18.100.1")),
        port: Spanned::new(0..0, 80),
        protocol: Protocol::Tcp,
        forward: Spanned::new(0..0, ForwardMode::Ipip),
        backends: vec![backend("198.18.0.11", 1), backend("198.18.0.12", 2)],
        udp_hash: UdpHash::FiveTuple,
        health: Some(HealthCheckConfig {
            kind: HealthCheckKind::Tcp,
            port: Some(8080),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
        }),
        acl: AclConfig {
            allow: vec![],
            deny: vec![net("198.18.0.99/32")],
        },
    };
    let dns = VipConfig {
        name: Spanned::new(0..0, "dns".to_string()),
        address: Spanned::new(0..0, ip("2001:2::53")),
        port: Spanned::new(0..0, 53),
        protocol: Protocol::Udp,
        forward: Spanned::new(0..0, ForwardMode::L2Dsr),
        backends: vec![backend("2001:2::1:53", 0), backend("2001:2::2:53", 1)],
        udp_hash: UdpHash::Source,
        health: Some(HealthCheckConfig {
            kind: HealthCheckKind::Http {
                path: "/healthz".to_string(),
                host: Some("www.example.test".to_string()),
                expect: vec![200, 204],
            },
            port: Some(8080),
            interval: Duration::from_secs(120),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 100,
        }),
        acl: AclConfig {
            allow: vec![net("2001:2::/56")],
            deny: vec![],
        },
    };
    assert_eq!(config.vips, [web, dns]);
    assert_eq!(config.vips[1].name(), "dns");
    assert_eq!(config.vips[1].address(), ip("2001:2::53"));
    assert_eq!(config.vips[1].port(), 53);
    assert_eq!(config.vips[1].forward(), ForwardMode::L2Dsr);
    assert_eq!(UdpHash::Source.as_str(), "source");
    assert_eq!(UdpHash::FiveTuple.as_str(), "5-tuple");
}

#[test]
fn ipip_vip_defaults() {
    let config = parse(&format!("{XDP}{}", ipip_vip("198.18.100.1", BACKENDS)));
    let vip = &config.vips[0];
    assert_eq!(vip.forward(), ForwardMode::Ipip);
    assert_eq!(
        vip.backends,
        [backend("198.18.0.11", 1)],
        "weight 1 by default"
    );
    assert_eq!(vip.udp_hash, UdpHash::FiveTuple);
    assert_eq!(vip.health, None);
    assert!(vip.acl.is_empty());
}

#[test]
fn local_vip_has_no_backends() {
    let config = parse(&format!("{XDP}{}", local_vip("web", "198.18.0.10")));
    assert!(config.vips[0].backends.is_empty());
}

#[test]
fn backends_as_an_array_of_tables() {
    let text = format!(
        "{XDP}{}[[vip.backends]]\naddress = \"198.18.0.11\"\n[[vip.backends]]\naddress = \"198.18.0.12\"\nweight = 3\n",
        ipip_vip("198.18.100.1", "")
    );
    let config = parse(&text);
    assert_eq!(
        config.vips[0].backends,
        [backend("198.18.0.11", 1), backend("198.18.0.12", 3)]
    );
}

#[test]
fn udp_hash_on_udp_vips() {
    for (word, hash) in [("5-tuple", UdpHash::FiveTuple), ("source", UdpHash::Source)] {
        let text = format!(
            "{XDP}{}",
            l4_vip(
                "198.18.100.1",
                "udp",
                "ipip",
                &format!("{BACKENDS}udp_hash = \"{word}\"\n")
            )
        );
        assert_eq!(parse(&text).vips[0].udp_hash, hash, "udp_hash = {word:?}");
    }
    // A local UDP VIP may say it too.
    let text = format!(
        "{XDP}{}",
        l4_vip("198.18.100.1", "udp", "local", "udp_hash = \"source\"\n")
    );
    assert_eq!(parse(&text).vips[0].udp_hash, UdpHash::Source);
}

#[test]
fn health_check_defaults() {
    let text = format!(
        "{XDP}{}",
        ipip_vip(
            "198.18.100.1",
            &format!("{BACKENDS}health = {{ check = \"tcp\" }}\n")
        )
    );
    let health = parse(&text).vips[0].health.clone().expect("health is set");
    assert_eq!(
        health,
        HealthCheckConfig {
            kind: HealthCheckKind::Tcp,
            port: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    );
    assert_eq!(health.interval, HealthCheckConfig::DEFAULT_INTERVAL);
    assert_eq!(health.timeout, HealthCheckConfig::DEFAULT_TIMEOUT);
    // No port: the VIP's.
    assert_eq!(health.port_or(80), 80);

    let text = format!(
        "{XDP}{}",
        ipip_vip(
            "198.18.100.1",
            &format!("{BACKENDS}health = {{ check = \"http\", port = 8080 }}\n")
        )
    );
    let health = parse(&text).vips[0].health.clone().expect("health is set");
    assert_eq!(
        health.kind,
        HealthCheckKind::Http {
            path: "/".to_string(),
            host: None,
            expect: vec![],
        }
    );
    assert_eq!(health.port_or(80), 8080);
}

#[test]
fn health_check_as_a_sub_table() {
    let text = format!(
        "{XDP}{}[vip.health]\ncheck = \"http\"\npath = \"/status?full=1\"\nhost = \"[2001:2::1]:8443\"\n",
        ipip_vip("198.18.100.1", BACKENDS)
    );
    let health = parse(&text).vips[0].health.clone().expect("health is set");
    assert_eq!(
        health.kind,
        HealthCheckKind::Http {
            path: "/status?full=1".to_string(),
            host: Some("[2001:2::1]:8443".to_string()),
            expect: vec![],
        }
    );
}

#[test]
fn short_interval_shortens_the_default_timeout() {
    let text = format!(
        "{XDP}{}",
        ipip_vip(
            "198.18.100.1",
            &format!("{BACKENDS}health = {{ check = \"tcp\", interval = \"500ms\" }}\n")
        )
    );
    let health = parse(&text).vips[0].health.clone().expect("health is set");
    assert_eq!(health.interval, Duration::from_millis(500));
    assert_eq!(health.timeout, Duration::from_millis(500));
}

#[test]
fn health_durations_at_their_limits() {
    for (interval, timeout, expected) in [
        (
            "100ms",
            "100ms",
            (Duration::from_millis(100), Duration::from_millis(100)),
        ),
        (
            "1h",
            "1h",
            (Duration::from_secs(3600), Duration::from_secs(3600)),
        ),
        (
            "1m 30s",
            "1ms",
            (Duration::from_secs(90), Duration::from_millis(1)),
        ),
    ] {
        let text = format!(
            "{XDP}{}",
            ipip_vip(
                "198.18.100.1",
                &format!(
                    "{BACKENDS}health = {{ check = \"tcp\", interval = \"{interval}\", timeout = \"{timeout}\" }}\n"
                )
            )
        );
        let health = parse(&text).vips[0].health.clone().expect("health is set");
        assert_eq!(
            (health.interval, health.timeout),
            expected,
            "{interval} / {timeout}"
        );
    }
}

#[test]
fn accepts_status_without_expect_is_any_2xx_or_3xx() {
    let mut health = HealthCheckConfig {
        kind: HealthCheckKind::Http {
            path: "/".to_string(),
            host: None,
            expect: vec![],
        },
        port: None,
        interval: HealthCheckConfig::DEFAULT_INTERVAL,
        timeout: HealthCheckConfig::DEFAULT_TIMEOUT,
        rise: HealthCheckConfig::DEFAULT_RISE,
        fall: HealthCheckConfig::DEFAULT_FALL,
    };
    for kind in [health.kind.clone(), HealthCheckKind::Tcp] {
        health.kind = kind;
        for (status, accepted) in [
            (100, false),
            (199, false),
            (200, true),
            (204, true),
            (302, true),
            (399, true),
            (400, false),
            (404, false),
            (500, false),
            (503, false),
        ] {
            assert_eq!(health.accepts_status(status), accepted, "status {status}");
        }
    }
}

#[test]
fn accepts_status_with_expect_is_only_those() {
    let health = HealthCheckConfig {
        kind: HealthCheckKind::Http {
            path: "/".to_string(),
            host: None,
            expect: vec![200, 204, 503],
        },
        port: None,
        interval: HealthCheckConfig::DEFAULT_INTERVAL,
        timeout: HealthCheckConfig::DEFAULT_TIMEOUT,
        rise: 2,
        fall: 3,
    };
    for (status, accepted) in [
        (200, true),
        (201, false),
        (204, true),
        (301, false),
        (503, true),
        (500, false),
    ] {
        assert_eq!(health.accepts_status(status), accepted, "status {status}");
    }
}

#[test]
fn acl_bare_addresses_are_host_rules() {
    let text = format!("{XDP}acl = {{ deny = [\"198.18.0.66\", \"2001:2::1\", \"0.0.0.0/0\"] }}\n");
    let acl = parse(&text).xdp.expect("[xdp] is present").acl;
    assert_eq!(
        acl.deny,
        [
            net("198.18.0.66/32"),
            net("2001:2::1/128"),
            net("0.0.0.0/0")
        ]
    );
    assert!(acl.allow.is_empty());
}

#[test]
fn acl_overlapping_rules_are_accepted() {
    // The longest prefix decides: an allowed network with a denied address in it is fine.
    let text = format!(
        "{XDP}acl = {{ allow = [\"198.18.0.0/24\"], deny = [\"198.18.0.66/32\", \"198.18.0.0/25\"] }}\n"
    );
    let acl = parse(&text).xdp.expect("[xdp] is present").acl;
    assert_eq!(acl.allow, [net("198.18.0.0/24")]);
    assert_eq!(acl.deny, [net("198.18.0.66/32"), net("198.18.0.0/25")]);
}

#[test]
fn xdp_sizes_at_their_limits() {
    for (line, check) in [
        (
            "table_size = 251",
            (|xdp| xdp.table_size == 251) as fn(&super::XdpConfig) -> bool,
        ),
        ("table_size = 1048573", |xdp| xdp.table_size == 1_048_573),
        ("max_backends = 1", |xdp| xdp.max_backends == 1),
        ("max_backends = 4096", |xdp| xdp.max_backends == 4_096),
        ("max_connections = 1024", |xdp| xdp.max_connections == 1_024),
        ("max_connections = 16777216", |xdp| {
            xdp.max_connections == 16_777_216
        }),
        ("max_acl_rules = 1", |xdp| xdp.max_acl_rules == 1),
        ("max_acl_rules = 1048576", |xdp| {
            xdp.max_acl_rules == 1_048_576
        }),
    ] {
        let config = parse(&format!("{XDP}{line}\n"));
        assert!(check(&config.xdp.expect("[xdp] is present")), "{line}");
    }
    // Just below the Maglev array's limit: 256 × 524287 × 2 = 268434944 slots.
    let config = parse(&format!("{XDP}max_vips = 256\ntable_size = 524287\n"));
    assert_eq!(
        config.xdp.expect("[xdp] is present").maglev_slots(),
        268_434_944
    );
}

#[test]
fn pin_path_is_normalized() {
    for written in [
        "/sys/fs/bpf/balancer",
        "/sys/fs/bpf/balancer/",
        "/sys/fs/bpf//balancer",
        "/sys/fs/bpf/./balancer",
    ] {
        let config = parse(&format!("{XDP}pin_path = \"{written}\"\n"));
        assert_eq!(
            config.xdp.expect("[xdp] is present").pin_path,
            Some(PathBuf::from("/sys/fs/bpf/balancer")),
            "pin_path = {written:?}"
        );
    }
    let config = parse(&format!("{XDP}pin_path = \"/sys/fs/bpf/lb/edge-1\"\n"));
    assert_eq!(
        config.xdp.expect("[xdp] is present").pin_path,
        Some(PathBuf::from("/sys/fs/bpf/lb/edge-1"))
    );
}

#[test]
fn backends_up_to_max_backends_with_any_weights() {
    let text = format!(
        "[xdp]\ninterface = \"eth0\"\nmax_backends = 3\n{}",
        ipip_vip(
            "198.18.100.1",
            "backends = [{ address = \"198.18.0.11\", weight = 0 }, { address = \"198.18.0.12\", weight = 65535 }, { address = \"198.18.0.13\", weight = 0 }]\n"
        )
    );
    assert_eq!(
        parse(&text).vips[0].backends,
        [
            backend("198.18.0.11", 0),
            backend("198.18.0.12", 65_535),
            backend("198.18.0.13", 0)
        ]
    );
}

#[test]
fn acl_rules_up_to_max_acl_rules_per_family() {
    // Two IPv4 and two IPv6 rules fit a limit of two: the families have separate tables.
    let text = format!(
        "[xdp]\ninterface = \"eth0\"\nmax_acl_rules = 2\nacl = {{ allow = [\"198.18.0.0/24\", \"2001:2::/64\"] }}\n{}{}",
        ipip_vip(
            "198.18.100.1",
            &format!("{BACKENDS}acl = {{ deny = [\"198.18.0.66\"] }}\n")
        ),
        vip("\"web6\"", "\"2001:2::100\"", "80", "\"tcp\"", "\"local\"")
            + "acl = { deny = [\"2001:2::66\"] }\n"
    );
    let config = parse(&text);
    assert_eq!(config.vips[0].acl.deny, [net("198.18.0.66/32")]);
    assert_eq!(config.vips[1].acl.deny, [net("2001:2::66/128")]);
}

#[test]
fn host_header_values() {
    use super::validate::is_valid_host_header;
    for good in [
        "www.example.test",
        "www.example.test:8080",
        "localhost",
        "198.18.0.11",
        "198.18.0.11:80",
        "[2001:2::1]",
        "[2001:2::1]:443",
        "my_app.internal",
        "a-b.c",
    ] {
        assert!(is_valid_host_header(good), "{good:?} is a valid Host");
    }
    for bad in [
        "",
        "www.example.test/",
        "http://www.example.test",
        "user@www.example.test",
        "www.example.test:",
        "www.example.test:0",
        "www.example.test:65536",
        "www.example.test:http",
        "2001:2::1",
        "[2001:2::1",
        "[2001:2::1]x",
        "[www.example.test]",
        "www..example.test",
        "-www.example.test",
        "www.example.test-",
        "www example.test",
        ".example.test",
    ] {
        assert!(!is_valid_host_header(bad), "{bad:?} is not a valid Host");
    }
}

#[test]
fn table_sizes_are_checked_for_primality() {
    use super::de::is_prime;
    let primes: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
    assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
    for prime in [251, 65_521, 65_537, 524_287, 1_048_573] {
        assert!(is_prime(prime), "{prime} is prime");
    }
    for composite in [253, 65_535, 65_536, 1_048_575, 4_294_967_295] {
        assert!(!is_prime(composite), "{composite} is not prime");
    }
}

// ---- Bad configs: [xdp] sizes, pin_path and acl ------------------------------------------------

#[test]
fn pin_path_relative() {
    assert_error(
        &format!("{XDP}pin_path = \"balancer\"\n"),
        "test.toml:3:12: xdp.pin_path: \"balancer\" must be an absolute path, such as \"/sys/fs/bpf/balancer\"",
    );
}

#[test]
fn pin_path_outside_the_bpf_file_system() {
    for path in [
        "/tmp/balancer",
        "/sys/fs/bpfx/balancer",
        "/sys/fs/bpf",
        "/sys/fs/bpf/",
        "/sys/fs/bpf/../balancer",
        "/sys/fs/bpf/balancer/../../x",
    ] {
        assert_error(
            &format!("{XDP}pin_path = \"{path}\"\n"),
            &format!(
                "test.toml:3:12: xdp.pin_path: \"{path}\" must be a directory below /sys/fs/bpf/ (the BPF file system), such as \"/sys/fs/bpf/balancer\""
            ),
        );
    }
}

#[test]
fn pin_path_not_a_string() {
    assert_error(
        &format!("{XDP}pin_path = true\n"),
        "test.toml:3:12: xdp.pin_path: invalid type: boolean `true`, expected a string",
    );
}

#[test]
fn table_size_not_prime() {
    assert_error(
        &format!("{XDP}table_size = 65536\n"),
        "test.toml:3:14: xdp.table_size: must be a prime number between 251 and 1048573, not 65536 (the nearest primes are 65521 and 65537)",
    );
    assert_error(
        &format!("{XDP}table_size = 1048572\n"),
        "test.toml:3:14: xdp.table_size: must be a prime number between 251 and 1048573, not 1048572 (the nearest primes are 1048571 and 1048573)",
    );
}

#[test]
fn table_size_out_of_range() {
    for value in ["250", "2", "1048583", "-65537", "4294967311"] {
        assert_error(
            &format!("{XDP}table_size = {value}\n"),
            &format!(
                "test.toml:3:14: xdp.table_size: must be a prime number between 251 and 1048573, not {value}"
            ),
        );
    }
}

#[test]
fn table_size_not_an_integer() {
    assert_error(
        &format!("{XDP}table_size = \"65537\"\n"),
        "test.toml:3:14: xdp.table_size: invalid type: string \"65537\", expected a prime number between 251 and 1048573",
    );
}

#[test]
fn maglev_array_too_large() {
    // Both written: points at table_size.
    assert_error(
        &format!("{XDP}max_vips = 4096\ntable_size = 65537\n"),
        "test.toml:4:14: xdp.table_size: max_vips = 4096 and table_size = 65537 need 4096 * 65537 * 2 = 536879104 Maglev slots (two tables per VIP), more than the limit of 268435456; lower one of them",
    );
    // The default table size: points at max_vips, the value that was written.
    assert_error(
        &format!("{XDP}max_vips = 2048\n"),
        "test.toml:3:12: xdp.max_vips: max_vips = 2048 and table_size = 65537 need 2048 * 65537 * 2 = 268439552 Maglev slots (two tables per VIP), more than the limit of 268435456; lower one of them",
    );
}

#[test]
fn max_backends_out_of_range() {
    for value in ["0", "4097", "-1"] {
        assert_error(
            &format!("{XDP}max_backends = {value}\n"),
            &format!("test.toml:3:16: xdp.max_backends: must be between 1 and 4096, not {value}"),
        );
    }
}

#[test]
fn max_connections_out_of_range() {
    for value in ["1023", "16777217", "0"] {
        assert_error(
            &format!("{XDP}max_connections = {value}\n"),
            &format!(
                "test.toml:3:19: xdp.max_connections: must be between 1024 and 16777216, not {value}"
            ),
        );
    }
}

#[test]
fn max_acl_rules_out_of_range() {
    for value in ["0", "1048577"] {
        assert_error(
            &format!("{XDP}max_acl_rules = {value}\n"),
            &format!(
                "test.toml:3:17: xdp.max_acl_rules: must be between 1 and 1048576, not {value}"
            ),
        );
    }
}

#[test]
fn acl_not_a_cidr() {
    for (cidr, column) in [
        ("198.18.0.0/33", 18),
        ("198.18.0", 18),
        ("2001:2::/129", 18),
        ("198.18.0.0/", 18),
        ("any", 18),
    ] {
        assert_error(
            &format!("{XDP}acl = {{ allow = [\"{cidr}\"] }}\n"),
            &format!(
                "test.toml:3:{column}: xdp.acl.allow[0]: invalid value: string \"{cidr}\", expected a CIDR such as \"198.18.0.0/24\" or \"2001:2::/48\", or a single address"
            ),
        );
    }
}

#[test]
fn acl_entry_not_a_string() {
    assert_error(
        &format!("{XDP}acl = {{ deny = [\"198.18.0.0/24\", 3323068416] }}\n"),
        "test.toml:3:34: xdp.acl.deny[1]: invalid type: integer `3323068416`, expected a string with a CIDR such as \"198.18.0.0/24\" or \"2001:2::/48\", or a single address",
    );
}

#[test]
fn acl_host_bits_set() {
    assert_error(
        &format!("{XDP}acl = {{ allow = [\"198.18.0.0/24\", \"198.18.1.1/24\"] }}\n"),
        "test.toml:3:35: xdp.acl.allow[1]: \"198.18.1.1/24\" has host bits set: did you mean 198.18.1.0/24?",
    );
    assert_error(
        &format!("{XDP}acl = {{ deny = [\"2001:2::1/48\"] }}\n"),
        "test.toml:3:17: xdp.acl.deny[0]: \"2001:2::1/48\" has host bits set: did you mean 2001:2::/48?",
    );
}

#[test]
fn acl_cidr_both_allowed_and_denied() {
    // Compared as networks, not as text.
    assert_error(
        &format!(
            "{XDP}acl = {{ allow = [\"198.18.0.0/24\", \"2001:2::/64\"], deny = [\"198.18.0.66\", \"2001:2:0::/64\"] }}\n"
        ),
        "test.toml:3:74: xdp.acl.deny[1]: 2001:2::/64 is also allow[1]: a source cannot be both allowed and denied",
    );
}

#[test]
fn acl_cidr_twice_in_one_list() {
    assert_error(
        &format!("{XDP}acl = {{ deny = [\"198.18.0.66\", \"198.18.0.66/32\"] }}\n"),
        "test.toml:3:32: xdp.acl.deny[1]: 198.18.0.66/32 is already deny[0]",
    );
}

#[test]
fn acl_unknown_key() {
    assert_error(
        &format!("{XDP}acl = {{ permit = [\"198.18.0.0/24\"] }}\n"),
        "test.toml:3:9: xdp.acl.permit: unknown field `permit`, expected `allow` or `deny`",
    );
}

#[test]
fn acl_list_not_an_array() {
    assert_error(
        &format!("{XDP}acl = {{ allow = \"198.18.0.0/24\" }}\n"),
        "test.toml:3:17: xdp.acl.allow: invalid type: string \"198.18.0.0/24\", expected an array of CIDRs, such as [\"198.18.0.0/24\", \"2001:2::/48\"]",
    );
    assert_error(
        &format!("{XDP}acl = [\"198.18.0.0/24\"]\n"),
        "test.toml:3:7: xdp.acl: invalid type: sequence, expected a table",
    );
}

#[test]
fn acl_rules_beyond_max_acl_rules() {
    // xdp.acl holds two IPv4 rules; the VIP's second deny is the third.
    let text = format!(
        "[xdp]\ninterface = \"eth0\"\nmax_acl_rules = 2\nacl = {{ allow = [\"198.18.0.0/24\", \"2001:2::/64\"], deny = [\"198.18.0.66\"] }}\n{}",
        ipip_vip(
            "198.18.100.1",
            &format!("{BACKENDS}acl = {{ deny = [\"198.18.0.67\", \"198.18.0.68\"] }}\n")
        )
    );
    assert_error(
        &text,
        "test.toml:12:17: vip[0].acl.deny[0]: 4 IPv4 ACL rules are configured (xdp.acl and every VIP's acl together) but xdp.max_acl_rules is 2",
    );
}

#[test]
fn vip_acl_of_the_other_family() {
    let text = format!(
        "{XDP}{}",
        ipip_vip(
            "198.18.100.1",
            &format!("{BACKENDS}acl = {{ allow = [\"198.18.0.0/24\", \"2001:2::/64\"] }}\n")
        )
    );
    assert_error(
        &text,
        "test.toml:10:35: vip[0].acl.allow[1]: 2001:2::/64 is IPv6 but the VIP's address 198.18.100.1 is IPv4; put it in xdp.acl or in a VIP of its family",
    );
}

#[test]
fn vip_acl_cidr_both_allowed_and_denied() {
    let text = format!(
        "{XDP}{}",
        ipip_vip(
            "198.18.100.1",
            &format!(
                "{BACKENDS}acl = {{ allow = [\"198.18.0.66\"], deny = [\"198.18.0.66/32\"] }}\n"
            )
        )
    );
    assert_error(
        &text,
        "test.toml:10:42: vip[0].acl.deny[0]: 198.18.0.66/32 is also allow[0]: a source cannot be both allowed and denied",
    );
}

#[test]
fn tables_written_as_arrays() {
    // serde would take a struct's fields by position from an array; a table must be a table.
    assert_error(
        "xdp = [\"eth0\"]\n",
        "test.toml:1:7: xdp: invalid type: sequence, expected a table",
    );
    assert_error(
        &format!(
            "{XDP}{}",
            ipip_vip("198.18.100.1", "backends = [[\"198.18.0.11\", 2]]\n")
        ),
        "test.toml:9:13: vip[0].backends[0]: invalid type: sequence, expected a table such as { address = \"198.18.0.11\", weight = 1 }",
    );
    assert_error(
        &format!(
            "{XDP}{}",
            ipip_vip(
                "198.18.100.1",
                &format!("{BACKENDS}health = [\"tcp\", 80]\n")
            )
        ),
        "test.toml:10:10: vip[0].health: invalid type: sequence, expected a table",
    );
    assert_error(
        "admin = [\"127.0.0.1:9100\"]\n",
        "test.toml:1:9: admin: invalid type: sequence, expected a table",
    );
}

// ---- Bad configs: backends ---------------------------------------------------------------------

#[test]
fn local_vip_with_backends() {
    // Even an empty list: the key has no meaning for a local VIP.
    for backends in [BACKENDS, "backends = []\n"] {
        let text = format!("{XDP}{}{backends}", local_vip("web", "198.18.0.10"));
        assert_error(
            &text,
            "test.toml:9:12: vip[0].backends: a local VIP has no backends: the local proxy serves it (remove backends, or forward with \"ipip\" or \"l2-dsr\")",
        );
    }
}

#[test]
fn backend_unknown_key() {
    let text = format!(
        "{XDP}{}",
        ipip_vip(
            "198.18.100.1",
            "backends = [{ address = \"198.18.0.11\", port = 8080 }]\n"
        )
    );
    assert_error(
        &text,
        "test.toml:9:40: vip[0].backends[0].port: unknown field `port`, expected `address` or `weight`",
    );
}

#[test]
fn backend_without_address() {
    let text = format!(
        "{XDP}{}",
        ipip_vip("198.18.100.1", "backends = [{ weight = 1 }]\n")
    );
    // Points at the backend's table: the key is absent.
    assert_error(
        &text,
        "test.toml:9:13: vip[0].backends[0]: missing field `address`",
    );
}

#[test]
fn backend_written_as_an_address() {
    let text = format!(
        "{XDP}{}",
        ipip_vip("198.18.100.1", "backends = [\"198.18.0.11\"]\n")
    );
    assert_error(
        &text,
        "test.toml:9:13: vip[0].backends[0]: invalid type: string \"198.18.0.11\", expected a table such as { address = \"198.18.0.11\", weight = 1 }",
    );
}

#[test]
fn backends_not_an_array() {
    let text = format!(
        "{XDP}{}",
        ipip_vip("198.18.100.1", "backends = { address = \"198.18.0.11\" }\n")
    );
    assert_error(
        &text,
        "test.toml:9:12: vip[0].backends: invalid type: map, expected an array of backends, such as [{ address = \"198.18.0.11\", weight = 1 }]",
    );
}

#[test]
fn backend_address_not_an_address() {
    let text = format!(
        "{XDP}{}",
        ipip_vip("198.18.100.1", "backends = [{ address = \"backend-1\" }]\n")
    );
    assert_error(
        &text,
        "test.toml:9:25: vip[0].backends[0].address: invalid value: string \"backend-1\", expected an IPv4 or IPv6 address",
    );
}

#[test]
fn backend_address_of_the_other_family() {
    let text = format!(
        "{XDP}{}",
        ipip_vip(
            "198.18.100.1",
            "backends = [{ address = \"2001:2::11\" }]\n"
        )
    );
    assert_error(
        &text,
        "test.toml:9:25: vip[0].backends[0].address: 2001:2::11 is IPv6 but the VIP's address 198.18.100.1 is IPv4",
    );
    let text = format!(
        "{XDP}{}",
        ipip_vip(
            "2001:2::100",
            "backends = [{ address = \"198.18.0.11\" }]\n"
        )
    );
    assert_error(
        &text,
        "test.toml:9:25: vip[0].backends[0].address: 198.18.0.11 is IPv4 but the VIP's address 2001:2::100 is IPv6",
    );
}

#[test]
fn backend_address_that_cannot_be_a_backend() {
    for address in [
        "0.0.0.0",
        "127.0.0.1",
        "224.0.0.5",
        "255.255.255.255",
        "::",
        "::1",
        "ff02::1",
    ] {
        let vip_address = if address.contains(':') {
            "2001:2::100"
        } else {
            "198.18.100.1"
        };
        let text = format!(
            "{XDP}{}",
            ipip_vip(
                vip_address,
                &format!("backends = [{{ address = \"{address}\" }}]\n")
            )
        );
        assert_error(
            &text,
            &format!(
                "test.toml:9:25: vip[0].backends[0].address: {address} cannot be a backend (unspecified, loopback, multicast or broadcast)"
            ),
        );
    }
}

#[test]
fn backend_is_the_vip_itself() {
    let text = format!(
        "{XDP}{}",
        ipip_vip(
            "198.18.100.1",
            "backends = [{ address = \"198.18.100.1\" }]\n"
        )
    );
    assert_error(
        &text,
        "test.toml:9:25: vip[0].backends[0].address: 198.18.100.1 is the VIP's own address",
    );
}

#[test]
fn duplicate_backend() {
    // Compared as addresses, not as text.
    let text = format!(
        "{XDP}{}",
        ipip_vip(
            "2001:2::100",
            "backends = [\n  { address = \"2001:2::11\" },\n  { address = \"2001:2::12\" },\n  { address = \"2001:2:0:0::11\", weight = 5 },\n]\n"
        )
    );
    assert_error(
        &text,
        "test.toml:12:15: vip[0].backends[2].address: 2001:2::11 is already backends[0]",
    );
}

#[test]
fn backend_weight_out_of_range() {
    for weight in ["65536", "-1"] {
        let text = format!(
            "{XDP}{}",
            ipip_vip(
                "198.18.100.1",
                &format!("backends = [{{ address = \"198.18.0.11\", weight = {weight} }}]\n")
            )
        );
        assert_error(
            &text,
            &format!(
                "test.toml:9:49: vip[0].backends[0].weight: must be between 0 and 65535, not {weight}"
            ),
        );
    }
}

#[test]
fn every_backend_weight_zero() {
    let text = format!(
        "{XDP}{}",
        ipip_vip(
            "198.18.100.1",
            "backends = [{ address = \"198.18.0.11\", weight = 0 }, { address = \"198.18.0.12\", weight = 0 }]\n"
        )
    );
    assert_error(
        &text,
        "test.toml:9:12: vip[0].backends: every backend has weight 0, so new flows have nowhere to go; give at least one a weight above 0",
    );
}

#[test]
fn more_backends_than_max_backends() {
    let text = format!(
        "[xdp]\ninterface = \"eth0\"\nmax_backends = 2\n{}",
        ipip_vip(
            "198.18.100.1",
            "backends = [\n  { address = \"198.18.0.11\" },\n  { address = \"198.18.0.12\" },\n  { address = \"198.18.0.13\" },\n]\n"
        )
    );
    // Points at the first backend that does not fit.
    assert_error(
        &text,
        "test.toml:13:15: vip[0].backends[2]: 3 backends are configured but xdp.max_backends is 2",
    );
}

#[test]
fn more_backends_than_the_default_max_backends() {
    let count = balancer_common::DEFAULT_BACKENDS_PER_VIP + 1;
    let mut backends = "backends = [\n".to_string();
    for index in 0..count {
        backends.push_str(&format!("  {{ address = \"198.18.1.{index}\" }},\n"));
    }
    backends.push_str("]\n");
    let text = format!("{XDP}{}", ipip_vip("198.18.100.1", &backends));
    // backends[128] is on line 10 + 128.
    assert_error(
        &text,
        "test.toml:138:15: vip[0].backends[128]: 129 backends are configured but xdp.max_backends is 128",
    );
}

// ---- Bad configs: udp_hash ---------------------------------------------------------------------

#[test]
fn udp_hash_on_a_tcp_vip() {
    let text = format!(
        "{XDP}{}",
        ipip_vip(
            "198.18.100.1",
            &format!("{BACKENDS}udp_hash = \"5-tuple\"\n")
        )
    );
    assert_error(
        &text,
        "test.toml:10:12: vip[0].udp_hash: only allowed when protocol = \"udp\" (a tcp VIP hashes the 5-tuple)",
    );
}

#[test]
fn udp_hash_unknown() {
    let text = format!(
        "{XDP}{}",
        l4_vip(
            "198.18.100.1",
            "udp",
            "ipip",
            &format!("{BACKENDS}udp_hash = \"src\"\n")
        )
    );
    assert_error(
        &text,
        "test.toml:10:12: vip[0].udp_hash: unknown variant `src`, expected `5-tuple` or `source`",
    );
}

// ---- Bad configs: health -----------------------------------------------------------------------

/// An ipip VIP with one backend and `health = { <fields> }` on line 10, where the table's
/// first field starts at column 12.
fn with_health(fields: &str) -> String {
    format!(
        "{XDP}{}",
        ipip_vip(
            "198.18.100.1",
            &format!("{BACKENDS}health = {{ {fields} }}\n")
        )
    )
}

#[test]
fn health_on_a_local_vip() {
    let text = format!(
        "{XDP}{}health = {{ check = \"tcp\" }}\n",
        local_vip("web", "198.18.0.10")
    );
    assert_error(
        &text,
        "test.toml:9:10: vip[0].health: a local VIP has no backends to check (the local proxy checks its pools' servers); remove health",
    );
}

#[test]
fn health_without_check() {
    assert_error(
        &with_health("interval = \"1s\""),
        "test.toml:10:10: vip[0].health: missing field `check`",
    );
}

#[test]
fn health_check_unknown() {
    assert_error(
        &with_health("check = \"icmp\""),
        "test.toml:10:20: vip[0].health.check: unknown variant `icmp`, expected `tcp` or `http`",
    );
}

#[test]
fn health_unknown_key() {
    assert_error(
        &with_health("check = \"http\", method = \"HEAD\""),
        "test.toml:10:28: vip[0].health.method: unknown field `method`, expected one of `check`, `port`, `interval`, `timeout`, `rise`, `fall`, `path`, `host`, `expect`",
    );
}

#[test]
fn health_http_keys_with_a_tcp_check() {
    for (field, column) in [
        ("path = \"/healthz\"", 45),
        ("host = \"www.example.test\"", 45),
        ("expect = [200]", 47),
    ] {
        let name = field.split(' ').next().expect("a key");
        assert_error(
            &with_health(&format!("check = \"tcp\", port = 80, {field}")),
            &format!(
                "test.toml:10:{column}: vip[0].health.{name}: only allowed with check = \"http\", not \"tcp\""
            ),
        );
    }
}

#[test]
fn health_interval_without_a_unit() {
    assert_error(
        &with_health("check = \"tcp\", interval = \"2\""),
        "test.toml:10:38: vip[0].health.interval: invalid value: string \"2\", expected a duration with a unit, such as \"500ms\", \"2s\" or \"1m\"",
    );
    assert_error(
        &with_health("check = \"tcp\", interval = 2"),
        "test.toml:10:38: vip[0].health.interval: invalid type: integer `2`, expected a string with a duration with a unit, such as \"500ms\", \"2s\" or \"1m\"",
    );
}

#[test]
fn health_interval_out_of_range() {
    for interval in ["99ms", "1h 1s", "0s"] {
        assert_error(
            &with_health(&format!("check = \"tcp\", interval = \"{interval}\"")),
            &format!(
                "test.toml:10:38: vip[0].health.interval: must be between 100ms and 1h, not {interval}"
            ),
        );
    }
}

#[test]
fn health_timeout_zero() {
    assert_error(
        &with_health("check = \"tcp\", interval = \"1s\", timeout = \"0ms\""),
        "test.toml:10:54: vip[0].health.timeout: must be above 0 and at most the interval (1s), not 0s",
    );
}

#[test]
fn health_timeout_longer_than_the_interval() {
    assert_error(
        &with_health("check = \"tcp\", interval = \"1s\", timeout = \"1500ms\""),
        "test.toml:10:54: vip[0].health.timeout: must be above 0 and at most the interval (1s), not 1s 500ms",
    );
    // The default interval is 2s, and the message says it is the default.
    assert_error(
        &with_health("check = \"tcp\", timeout = \"3s\""),
        "test.toml:10:37: vip[0].health.timeout: must be above 0 and at most the interval (2s, the default), not 3s",
    );
}

#[test]
fn health_rise_and_fall_out_of_range() {
    assert_error(
        &with_health("check = \"tcp\", rise = 0"),
        "test.toml:10:34: vip[0].health.rise: must be between 1 and 100, not 0",
    );
    assert_error(
        &with_health("check = \"tcp\", fall = 101"),
        "test.toml:10:34: vip[0].health.fall: must be between 1 and 100, not 101",
    );
}

#[test]
fn health_port_zero() {
    assert_error(
        &with_health("check = \"tcp\", port = 0"),
        "test.toml:10:34: vip[0].health.port: must be between 1 and 65535, not 0",
    );
}

#[test]
fn health_path_not_absolute() {
    for (path, shown) in [
        ("healthz", "healthz"),
        ("", ""),
        ("/health z", "/health z"),
        ("/health\\n", "/health\\n"),
    ] {
        assert_error(
            &with_health(&format!("check = \"http\", path = \"{path}\"")),
            &format!(
                "test.toml:10:35: vip[0].health.path: \"{shown}\" must start with '/' and contain no whitespace or control characters"
            ),
        );
    }
}

#[test]
fn health_host_invalid() {
    for host in [
        "www.example.test/",
        "http://www.example.test",
        "2001:2::1",
        "www.example.test:0",
    ] {
        assert_error(
            &with_health(&format!("check = \"http\", host = \"{host}\"")),
            &format!(
                "test.toml:10:35: vip[0].health.host: \"{host}\" is not a valid Host header value (a host name or IP address, optionally with :port)"
            ),
        );
    }
}

#[test]
fn health_expect_out_of_range() {
    assert_error(
        &with_health("check = \"http\", expect = [200, 99]"),
        "test.toml:10:43: vip[0].health.expect[1]: must be between 100 and 599, not 99",
    );
    assert_error(
        &with_health("check = \"http\", expect = [600]"),
        "test.toml:10:38: vip[0].health.expect[0]: must be between 100 and 599, not 600",
    );
}

#[test]
fn health_expect_twice_the_same_code() {
    assert_error(
        &with_health("check = \"http\", expect = [200, 204, 200]"),
        "test.toml:10:48: vip[0].health.expect[2]: 200 is already expect[0]",
    );
}

#[test]
fn health_expect_not_an_array() {
    assert_error(
        &with_health("check = \"http\", expect = 200"),
        "test.toml:10:37: vip[0].health.expect: invalid type: integer `200`, expected an array of HTTP status codes, such as [200, 204]",
    );
}

#[test]
fn health_not_a_table() {
    assert_error(
        &format!(
            "{XDP}{}",
            ipip_vip("198.18.100.1", &format!("{BACKENDS}health = \"tcp\"\n"))
        ),
        "test.toml:10:10: vip[0].health: invalid type: string \"tcp\", expected a table",
    );
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
        "test.toml:12:1: xdp.vip: unknown field `vip`, expected one of `interface`, `mode`, `max_vips`, `pin_path`, `table_size`, `max_backends`, `max_connections`, `max_acl_rules`, `flow_grace`, `acl`",
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

#[test]
fn too_many_backend_slots_are_refused() {
    let text =
        "[xdp]\ninterface = \"eth0\"\nmax_vips = 4096\ntable_size = 251\nmax_backends = 4096\n";
    let err = Config::parse(text, "b.toml").unwrap_err().to_string();
    assert_eq!(
        err,
        "b.toml:3:12: xdp.max_vips: max_vips = 4096 and max_backends = 4096 need 16777216 backend slots, more than the limit of 8388608; lower one of them"
    );
}

#[test]
fn admin_token_file() {
    let config = Config::parse_in(
        "[admin]\nlisten = \"198.18.0.1:9100\"\ntoken_file = \"admin.token\"\n",
        ORIGIN,
        std::path::Path::new("/etc/balancer"),
    )
    .expect("valid");
    assert_eq!(
        config.admin.token_file.as_deref(),
        Some(std::path::Path::new("/etc/balancer/admin.token"))
    );
    assert_error(
        "[admin]\nlisten = \"198.18.0.1:9100\"\n",
        "test.toml:2:10: admin.listen: 198.18.0.1:9100 is reachable from other hosts: set token_file (a bearer token every request must carry), or listen on a loopback address",
    );
    assert_error(
        "[admin]\nlisten = \"[::]:9100\"\n",
        "test.toml:2:10: admin.listen: [::]:9100 is reachable from other hosts: set token_file (a bearer token every request must carry), or listen on a loopback address",
    );
    assert!(Config::parse("[admin]\nlisten = \"[::1]:9100\"\n", ORIGIN).is_ok());
    // Errors point at the key, not at the [admin] header.
    assert_error(
        "[admin]\nlisten = \"127.0.0.1:9100\"\ntoken_file = \"\"\n",
        "test.toml:3:14: admin.token_file: is empty: give the path of the file holding the token",
    );
}
