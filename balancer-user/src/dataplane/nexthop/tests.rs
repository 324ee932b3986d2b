//! The kernel's answers are built as rtnetlink would decode them; the values mirror
//! what a throwaway namespace pair (veth 198.18.0.1/24 + 2001:2::1/64 <-> .2 / ::2)
//! answers to `ip route get`, `ip link` and `ip neigh`.

use netlink_packet_route::{
    AddressFamily,
    address::AddressHeaderFlags,
    neighbour::{NeighbourAddress, NeighbourHeader},
    route::RouteHeader,
};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn route(kind: RouteType, attributes: Vec<RouteAttribute>) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header = RouteHeader {
        address_family: AddressFamily::Inet,
        destination_prefix_length: 32,
        kind,
        ..RouteHeader::default()
    };
    message.attributes = attributes;
    message
}

fn address(s: &str) -> RouteAddress {
    ip(s).into()
}

const PEER_MAC: [u8; 6] = [0xc2, 0xeb, 0x9a, 0x76, 0xe9, 0x56];
const OWN_MAC: [u8; 6] = [0x5a, 0xdb, 0x4b, 0xd2, 0xe7, 0x57];

fn link(index: u32, kind: LinkLayerType, name: &str, mtu: u32, mac: Option<&[u8]>) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message.header.link_layer_type = kind;
    message.attributes = vec![
        LinkAttribute::IfName(name.to_owned()),
        LinkAttribute::Mtu(mtu),
    ];
    if let Some(mac) = mac {
        message
            .attributes
            .push(LinkAttribute::Address(mac.to_vec()));
    }
    message
}

fn neighbour(address: &str, state: NeighbourState, lladdr: Option<&[u8]>) -> NeighbourMessage {
    let address = ip(address);
    let mut message = NeighbourMessage::default();
    message.header = NeighbourHeader {
        family: if address.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        },
        ifindex: 2,
        state,
        ..NeighbourHeader::default()
    };
    message
        .attributes
        .push(NeighbourAttribute::Destination(address.into()));
    if let Some(lladdr) = lladdr {
        message
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(lladdr.to_vec()));
    }
    message
}

fn veth() -> LinkInfo {
    link_info(&link(2, LinkLayerType::Ether, "nhva", 1500, Some(&OWN_MAC))).unwrap()
}

#[test]
fn route_on_link_v4() {
    let answer = route(
        RouteType::Unicast,
        vec![
            RouteAttribute::Destination(address("198.18.0.2")),
            RouteAttribute::Oif(2),
            RouteAttribute::PrefSource(address("198.18.0.1")),
        ],
    );
    assert_eq!(
        route_info(&answer),
        RouteInfo {
            kind: RouteType::Unicast,
            oif: Some(2),
            gateway: None,
            prefsrc: Some(ip("198.18.0.1")),
        }
    );
}

#[test]
fn route_via_gateway_v4_and_v6() {
    let v4 = route(
        RouteType::Unicast,
        vec![
            RouteAttribute::Gateway(address("198.18.0.2")),
            RouteAttribute::Oif(2),
            RouteAttribute::PrefSource(address("198.18.0.1")),
        ],
    );
    let info = route_info(&v4);
    assert_eq!(info.gateway, Some(ip("198.18.0.2")));
    assert_eq!(neighbour_of(ip("198.18.1.5"), &info), ip("198.18.0.2"));
    let v6 = route(
        RouteType::Unicast,
        vec![
            RouteAttribute::Gateway(address("fe80::1c8a:9eff:febe:3362")),
            RouteAttribute::Oif(2),
            RouteAttribute::PrefSource(address("2001:2::1")),
        ],
    );
    let info = route_info(&v6);
    assert_eq!(info.gateway, Some(ip("fe80::1c8a:9eff:febe:3362")));
    assert_eq!(info.prefsrc, Some(ip("2001:2::1")));
}

#[test]
fn route_v4_via_v6_gateway() {
    // `ip route add 198.18.20.0/24 via inet6 fe80::... dev nhva` (RFC 5549): RTA_VIA.
    let answer = route(
        RouteType::Unicast,
        vec![
            RouteAttribute::Via(RouteVia::Inet6(
                "fe80::1c8a:9eff:febe:3362".parse().unwrap(),
            )),
            RouteAttribute::Oif(2),
            RouteAttribute::PrefSource(address("198.18.0.1")),
        ],
    );
    assert_eq!(
        route_info(&answer).gateway,
        Some(ip("fe80::1c8a:9eff:febe:3362"))
    );
}

#[test]
fn route_without_prefsrc_or_oif() {
    let info = route_info(&route(RouteType::Unicast, vec![RouteAttribute::Oif(2)]));
    assert_eq!((info.oif, info.prefsrc), (Some(2), None));
    assert_eq!(route_info(&route(RouteType::Unicast, vec![])).oif, None);
}

#[test]
fn route_errors_from_the_kernel() {
    let cases = [
        (libc::ENETUNREACH, "unreachable"),
        (libc::EHOSTUNREACH, "no route to host"),
        (libc::EACCES, "prohibit"),
        (libc::EINVAL, "blackhole"),
    ];
    for (errno, want) in cases {
        let reason = route_refusal(errno).unwrap();
        assert!(reason.contains(want), "{errno} -> {reason:?}");
    }
    assert_eq!(route_refusal(libc::EPERM), None);
    assert_eq!(route_refusal(libc::ENOBUFS), None);
}

#[test]
fn link_veth_and_jumbo() {
    assert_eq!(
        veth(),
        LinkInfo {
            ifindex: 2,
            name: "nhva".into(),
            mtu: 1500,
            link_type: "ether".into(),
            mac: Some(OWN_MAC),
        }
    );
    let jumbo = link_info(&link(
        2,
        LinkLayerType::Ether,
        "nhva",
        9000,
        Some(&[0xce, 0x6b, 0x50, 0xad, 0x25, 0x7b]),
    ))
    .unwrap();
    assert_eq!(jumbo.mtu, 9000);
    assert_eq!(jumbo.mac, Some([0xce, 0x6b, 0x50, 0xad, 0x25, 0x7b]));
}

#[test]
fn links_without_a_mac() {
    let lo = link_info(&link(
        1,
        LinkLayerType::Loopback,
        "lo",
        65536,
        Some(&[0; 6]),
    ))
    .unwrap();
    assert_eq!((lo.ifindex, lo.mtu, lo.mac), (1, 65536, None));
    assert_eq!(lo.link_type, "loopback");
    let tun = link_info(&link(3, LinkLayerType::None, "nhtun", 1500, None)).unwrap();
    assert_eq!((tun.ifindex, tun.mac), (3, None));
    assert_eq!(tun.link_type, "none");
    let zero = link_info(&link(4, LinkLayerType::Ether, "z", 1500, Some(&[0; 6]))).unwrap();
    assert_eq!(zero.mac, None);
}

#[test]
fn link_garbage() {
    assert!(link_info(&link(2, LinkLayerType::Ether, "x", 1500, Some(&[1, 2, 3]))).is_err());
    let mut nameless = link(2, LinkLayerType::Ether, "x", 1500, None);
    nameless.attributes.remove(0);
    assert_eq!(link_info(&nameless).unwrap_err(), Malformed::NoLinkName(2));
}

#[test]
fn neigh_usable_states() {
    for (address, state, name) in [
        ("198.18.0.2", NeighbourState::Reachable, "REACHABLE"),
        ("2001:2::2", NeighbourState::Reachable, "REACHABLE"),
        ("198.18.0.2", NeighbourState::Delay, "DELAY"),
        ("198.18.0.2", NeighbourState::Probe, "PROBE"),
        ("198.18.0.2", NeighbourState::Stale, "STALE"),
        ("fe80::1c8a:9eff:febe:3362", NeighbourState::Delay, "DELAY"),
        ("198.18.0.9", NeighbourState::Permanent, "PERMANENT"),
    ] {
        let entry = neighbour(address, state, Some(&PEER_MAC));
        assert_eq!(
            neigh_lookup(Some(&entry)).unwrap(),
            NeighLookup::Usable {
                mac: PEER_MAC,
                state: name.into()
            },
            "{address} {name}"
        );
    }
}

#[test]
fn neigh_not_resolved() {
    let not = |entry: Option<&NeighbourMessage>| match neigh_lookup(entry).unwrap() {
        NeighLookup::NotResolved { state } => state,
        other => panic!("{entry:?} -> {other:?}"),
    };
    assert_eq!(not(None), None);
    let incomplete = neighbour("198.18.0.77", NeighbourState::Incomplete, None);
    assert_eq!(not(Some(&incomplete)), Some("INCOMPLETE".into()));
    let incomplete6 = neighbour("2001:2::77", NeighbourState::Incomplete, None);
    assert_eq!(not(Some(&incomplete6)), Some("INCOMPLETE".into()));
    let failed = neighbour("198.18.0.77", NeighbourState::Failed, None);
    assert_eq!(not(Some(&failed)), Some("FAILED".into()));
    // An old address kept in a FAILED entry is not used.
    let failed_mac = neighbour("198.18.0.77", NeighbourState::Failed, Some(&PEER_MAC));
    assert_eq!(not(Some(&failed_mac)), Some("FAILED".into()));
    // A usable state without an address (never sent by the kernel) is not usable either.
    let bare = neighbour("198.18.0.77", NeighbourState::Reachable, None);
    assert_eq!(not(Some(&bare)), Some("REACHABLE".into()));
}

#[test]
fn neigh_garbage() {
    let short = neighbour(
        "198.18.0.2",
        NeighbourState::Reachable,
        Some(&[0xc2, 0xeb, 0x9a]),
    );
    assert!(neigh_lookup(Some(&short)).is_err());
}

fn on_link() -> RouteInfo {
    RouteInfo {
        kind: RouteType::Unicast,
        oif: Some(2),
        gateway: None,
        prefsrc: Some(ip("198.18.0.1")),
    }
}

fn usable() -> NeighLookup {
    NeighLookup::Usable {
        mac: PEER_MAC,
        state: "REACHABLE".into(),
    }
}

#[test]
fn choose_on_link_and_via_gateway() {
    let hop = choose(ip("198.18.0.2"), &on_link(), &veth(), usable()).unwrap();
    assert_eq!(
        hop,
        NextHop {
            ifindex: 2,
            interface: "nhva".into(),
            src_mac: OWN_MAC,
            dst_mac: PEER_MAC,
            src_addr: ip("198.18.0.1"),
            mtu: 1500,
            via_gateway: None,
        }
    );
    let routed = RouteInfo {
        gateway: Some(ip("198.18.0.254")),
        ..on_link()
    };
    let hop = choose(ip("198.18.1.5"), &routed, &veth(), usable()).unwrap();
    assert_eq!(hop.via_gateway, Some(ip("198.18.0.254")));
    let jumbo = LinkInfo {
        mtu: 70000,
        ..veth()
    };
    assert_eq!(
        choose(ip("198.18.0.2"), &on_link(), &jumbo, usable())
            .unwrap()
            .mtu,
        u16::MAX
    );
}

#[test]
fn choose_refuses_what_the_kernel_would_not_forward() {
    let local = RouteInfo {
        kind: RouteType::Local,
        ..on_link()
    };
    let lo = link_info(&link(
        1,
        LinkLayerType::Loopback,
        "lo",
        65536,
        Some(&[0; 6]),
    ))
    .unwrap();
    let err = choose(ip("198.18.0.1"), &local, &lo, usable()).unwrap_err();
    assert!(
        matches!(&err, NextHopError::NotUnicast { kind, interface, .. } if kind == "local" && interface == "lo"),
        "{err}"
    );
    assert!(err.invalidates_last_hop());

    let unreachable = RouteInfo {
        kind: RouteType::Unreachable,
        ..on_link()
    };
    let err = choose(ip("198.18.9.9"), &unreachable, &lo, usable()).unwrap_err();
    assert!(matches!(err, NextHopError::NoRoute { .. }), "{err}");

    let no_source = RouteInfo {
        prefsrc: None,
        ..on_link()
    };
    let err = choose(ip("198.18.0.2"), &no_source, &veth(), usable()).unwrap_err();
    assert!(matches!(err, NextHopError::NoSourceAddress { .. }), "{err}");

    let tun = link_info(&link(3, LinkLayerType::None, "nhtun", 1500, None)).unwrap();
    let err = choose(ip("198.18.0.2"), &on_link(), &tun, usable()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "interface nhtun (towards backend 198.18.0.2) has no Ethernet MAC address \
         (link type none); XDP forwarding needs one"
    );
}

#[test]
fn choose_waits_for_the_gateways_neighbour_entry() {
    let routed = RouteInfo {
        gateway: Some(ip("198.18.0.254")),
        ..on_link()
    };
    let err = choose(
        ip("198.18.1.5"),
        &routed,
        &veth(),
        NeighLookup::NotResolved { state: None },
    )
    .unwrap_err();
    assert!(err.is_transient());
    assert!(!err.invalidates_last_hop());
    assert_eq!(err.pending_neighbour(), Some(ip("198.18.0.254")));
    assert_eq!(
        err.to_string(),
        "the next hop 198.18.0.254 for backend 198.18.1.5 on nhva is not resolved yet \
         (no neighbour entry)"
    );
}

#[test]
fn error_messages() {
    let e = NextHopError::NeighbourNotResolved {
        backend: ip("198.18.1.5"),
        neighbour: ip("198.18.0.2"),
        interface: "eth0".into(),
        state: "INCOMPLETE".into(),
    };
    assert!(e.is_transient());
    assert!(!e.invalidates_last_hop());
    assert_eq!(
        e.to_string(),
        "the next hop 198.18.0.2 for backend 198.18.1.5 on eth0 is not resolved yet (INCOMPLETE)"
    );
    let e = NextHopError::NoRoute {
        backend: ip("203.0.113.1"),
        reason: "network is unreachable".into(),
    };
    assert!(!e.is_transient());
    assert!(e.invalidates_last_hop());
    assert_eq!(
        e.to_string(),
        "no route to backend 203.0.113.1: network is unreachable"
    );
    let e = NextHopError::Socket(std::io::Error::other("no netlink"));
    assert!(!e.is_transient());
    assert!(
        !e.invalidates_last_hop(),
        "a failed query keeps the last hop"
    );
}

#[test]
fn addresses_skip_link_local() {
    let entry = |index: u32, scope: AddressScope, attributes: Vec<AddressAttribute>| {
        let mut message = AddressMessage::default();
        message.header.index = index;
        message.header.scope = scope;
        message.header.flags = AddressHeaderFlags::Permanent;
        message.attributes = attributes;
        message
    };
    let dump = [
        entry(
            2,
            AddressScope::Universe,
            vec![
                AddressAttribute::Address(ip("198.18.0.11")),
                AddressAttribute::Local(ip("198.18.0.11")),
            ],
        ),
        // Point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL our own.
        entry(
            2,
            AddressScope::Universe,
            vec![
                AddressAttribute::Address(ip("198.18.9.2")),
                AddressAttribute::Local(ip("198.18.9.1")),
            ],
        ),
        entry(
            2,
            AddressScope::Universe,
            vec![AddressAttribute::Address(ip("2001:2::b"))],
        ),
        entry(
            2,
            AddressScope::Link,
            vec![AddressAttribute::Address(ip("fe80::1"))],
        ),
        entry(
            3,
            AddressScope::Universe,
            vec![AddressAttribute::Address(ip("198.18.5.5"))],
        ),
    ];
    assert_eq!(
        interface_addresses_of(2, &dump),
        vec![ip("198.18.0.11"), ip("198.18.9.1"), ip("2001:2::b")]
    );
}

fn notification(message: RouteNetlinkMessage) -> NetlinkMessage<RouteNetlinkMessage> {
    NetlinkMessage::from(message)
}

#[test]
fn notifications_are_classified() {
    let entry = neighbour("198.18.0.2", NeighbourState::Stale, Some(&PEER_MAC));
    assert_eq!(
        classify(&notification(RouteNetlinkMessage::NewNeighbour(
            entry.clone()
        ))),
        Some(Change::Neighbour(ip("198.18.0.2")))
    );
    assert_eq!(
        classify(&notification(RouteNetlinkMessage::DelNeighbour(neighbour(
            "2001:2::2",
            NeighbourState::Failed,
            None
        )))),
        Some(Change::Neighbour(ip("2001:2::2")))
    );
    let mut bridge_fdb = entry;
    bridge_fdb.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::Other(
        vec![1, 2, 3, 4, 5, 6],
    ))];
    assert_eq!(
        classify(&notification(RouteNetlinkMessage::NewNeighbour(bridge_fdb))),
        None
    );
    assert_eq!(
        classify(&notification(RouteNetlinkMessage::DelRoute(route(
            RouteType::Unicast,
            vec![]
        )))),
        Some(Change::Route)
    );
    assert_eq!(
        classify(&notification(RouteNetlinkMessage::NewLink(link(
            2,
            LinkLayerType::Ether,
            "nhva",
            1500,
            None
        )))),
        Some(Change::Link)
    );
    assert_eq!(
        classify(&notification(RouteNetlinkMessage::NewAddress(
            AddressMessage::default()
        ))),
        None
    );
    let mut overrun = notification(RouteNetlinkMessage::NewLink(LinkMessage::default()));
    overrun.payload = NetlinkPayload::Overrun(Vec::new());
    assert_eq!(classify(&overrun), Some(Change::Lost));
}

#[test]
fn only_neighbours_of_hops_in_use_or_awaited_count() {
    let on_link = NextHop {
        ifindex: 2,
        interface: "nhva".into(),
        src_mac: OWN_MAC,
        dst_mac: PEER_MAC,
        src_addr: ip("198.18.0.1"),
        mtu: 1500,
        via_gateway: None,
    };
    let routed = NextHop {
        via_gateway: Some(ip("198.18.0.254")),
        ..on_link.clone()
    };
    let waiting: Result<NextHop, NextHopError> = Err(NextHopError::NeighbourNotResolved {
        backend: ip("2001:2:1::5"),
        neighbour: ip("fe80::1"),
        interface: "nhva".into(),
        state: "INCOMPLETE".into(),
    });
    let results = [
        (ip("198.18.0.2"), Ok(on_link)),
        (ip("198.18.1.5"), Ok(routed)),
        (ip("2001:2:1::5"), waiting),
    ];
    let watched = watched_neighbours(results.iter().map(|(a, r)| (*a, Some(r))));
    for address in [
        "198.18.0.2",
        "198.18.1.5",
        "198.18.0.254",
        "2001:2:1::5",
        "fe80::1",
    ] {
        assert!(
            concerns(&Change::Neighbour(ip(address)), &watched),
            "{address}"
        );
    }
    assert!(!concerns(&Change::Neighbour(ip("198.18.0.99")), &watched));
    for change in [Change::Route, Change::Link, Change::Lost] {
        assert!(concerns(&change, &HashSet::new()), "{change:?}");
    }
}
