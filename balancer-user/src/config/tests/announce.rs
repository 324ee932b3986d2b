//! `[announce]`: the routing table the balancer owns and the withdraw delay. As in the parent
//! module, every error's text is pinned word for word.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{ORIGIN, XDP, assert_error, parse};
use crate::config::{AnnounceConfig, Config};

#[test]
fn no_announce_section_announces_nothing() {
    assert_eq!(parse(XDP).announce, None);
}

#[test]
fn empty_announce_section_takes_the_defaults() {
    let config = parse(&format!("{XDP}[announce]\n"));
    assert_eq!(
        config.announce,
        Some(AnnounceConfig {
            table: 200,
            withdraw_delay: Duration::from_secs(2),
            state_file: PathBuf::from("/var/lib/balancer/announce.json"),
        })
    );
}

#[test]
fn every_key_is_read() {
    let text = format!(
        "{XDP}[announce]\ntable = 4000000000\nwithdraw_delay = \"500ms\"\nstate_file = \"run/announce.json\"\n"
    );
    let config = Config::parse_in(&text, ORIGIN, Path::new("/etc/balancer"))
        .unwrap_or_else(|err| panic!("expected {text:?} to parse, got {err}"));
    assert_eq!(
        config.announce,
        Some(AnnounceConfig {
            table: 4_000_000_000,
            withdraw_delay: Duration::from_millis(500),
            state_file: PathBuf::from("/etc/balancer/run/announce.json"),
        }),
        "a relative state_file is resolved against the config's directory"
    );
}

#[test]
fn zero_withdraw_delay_is_allowed() {
    let config = parse(&format!("{XDP}[announce]\nwithdraw_delay = \"0s\"\n"));
    assert_eq!(
        config.announce.map(|announce| announce.withdraw_delay),
        Some(Duration::ZERO)
    );
}

#[test]
fn the_kernels_own_tables_are_refused() {
    for (id, name) in [(253, "default"), (254, "main"), (255, "local")] {
        assert_error(
            &format!("{XDP}[announce]\ntable = {id}\n"),
            &format!(
                "test.toml:4:9: announce.table: {id} is the kernel's \"{name}\" table: give a table of the balancer's own, such as 200"
            ),
        );
    }
}

#[test]
fn table_zero_and_out_of_range_are_refused() {
    assert_error(
        &format!("{XDP}[announce]\ntable = 0\n"),
        "test.toml:4:9: announce.table: must be between 1 and 4294967295, not 0",
    );
    assert_error(
        &format!("{XDP}[announce]\ntable = 4294967296\n"),
        "test.toml:4:9: announce.table: must be between 1 and 4294967295, not 4294967296",
    );
}

#[test]
fn withdraw_delay_needs_a_unit_and_a_bound() {
    assert_error(
        &format!("{XDP}[announce]\nwithdraw_delay = \"2\"\n"),
        "test.toml:4:18: announce.withdraw_delay: invalid value: string \"2\", expected a duration with a unit, such as \"500ms\", \"2s\" or \"1m\"",
    );
    assert_error(
        &format!("{XDP}[announce]\nwithdraw_delay = \"11m\"\n"),
        "test.toml:4:18: announce.withdraw_delay: 11m is longer than the limit of 10m",
    );
}

#[test]
fn empty_state_file_is_refused() {
    assert_error(
        &format!("{XDP}[announce]\nstate_file = \"\"\n"),
        "test.toml:4:14: announce.state_file: is empty: give the path of the file that keeps an operator's withdraw",
    );
}

#[test]
fn announce_needs_the_data_plane() {
    assert_error(
        "[announce]\ntable = 200\n",
        "test.toml:1:1: announce: announces VIPs, which need the XDP data plane: add an [xdp] section",
    );
}

#[test]
fn unknown_key_in_announce() {
    // `delay` would read as the withdraw delay to a reader: it must not be ignored.
    assert_error(
        &format!("{XDP}[announce]\ndelay = \"2s\"\n"),
        "test.toml:4:1: announce.delay: unknown field `delay`, expected one of `table`, `withdraw_delay`, `state_file`",
    );
}
