//! Where the XDP program must send a packet for a backend: the outgoing
//! interface, both MAC addresses, the source address and the MTU.
//!
//! The kernel already knows all of this (routing table, neighbour table,
//! links); we ask it over rtnetlink in the process's current network namespace
//! (`RTM_GETROUTE` for the backend, as `ip route get` does; `RTM_GETLINK` for the
//! outgoing interface; `RTM_GETNEIGH` for the one neighbour entry of the next hop).
//! This module is pure: it turns the kernel's answers into a [`NextHop`] or the reason
//! there is none, and tells which change notifications concern the hops in use. The
//! netlink I/O (queries, subscription to neighbour, route and link changes, ARP/ND
//! solicitation) lives in [`netlink`].

pub mod netlink;

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netlink_packet_route::{
    RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage, AddressScope},
    link::{LinkAttribute, LinkLayerType, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};

pub use netlink::{
    ChangeStream, Resolver, interface_addresses, resolve_all, solicit, watch_changes,
};

/// Everything the data plane needs to put a packet for one backend on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// Index of the outgoing interface (for `bpf_redirect`).
    pub ifindex: u32,
    /// Name of the outgoing interface.
    pub interface: String,
    /// MAC address of the outgoing interface.
    pub src_mac: [u8; 6],
    /// MAC address of the next hop (the backend itself or the gateway).
    pub dst_mac: [u8; 6],
    /// The address the kernel would use as source towards the backend (the route's `prefsrc`).
    pub src_addr: IpAddr,
    /// MTU of the outgoing interface (saturated at `u16::MAX`).
    pub mtu: u16,
    /// The gateway the route goes through, `None` when the backend is on-link.
    pub via_gateway: Option<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum NextHopError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("unexpected netlink answer to {what}: {detail}")]
    Parse {
        what: String,
        #[source]
        detail: Malformed,
    },
    #[error("no interface named {interface}: {source}")]
    NoInterface {
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no route to backend {backend}: {reason}")]
    NoRoute { backend: IpAddr, reason: String },
    #[error("backend {backend} is a {kind} address here (via {interface}), not a remote host")]
    NotUnicast {
        backend: IpAddr,
        kind: String,
        interface: String,
    },
    #[error("the route to backend {backend} (via {interface}) has no source address")]
    NoSourceAddress { backend: IpAddr, interface: String },
    #[error(
        "interface {interface} (towards backend {backend}) has no Ethernet MAC address \
         (link type {link_type}); XDP forwarding needs one"
    )]
    NoMac {
        backend: IpAddr,
        interface: String,
        link_type: String,
    },
    #[error(
        "the next hop {neighbour} for backend {backend} on {interface} is not resolved yet ({state})"
    )]
    NeighbourNotResolved {
        backend: IpAddr,
        neighbour: IpAddr,
        interface: String,
        /// `no neighbour entry`, `INCOMPLETE`, `FAILED`, ...
        state: String,
    },
}

/// What was wrong with a netlink answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("no answer")]
    NoAnswer,
    #[error("the route has no outgoing interface")]
    NoOutgoingInterface,
    #[error("link {0} has no name")]
    NoLinkName(u32),
    #[error("link {0} has no MTU")]
    NoMtu(String),
    #[error("link {link}: bad MAC address {address:02x?}")]
    BadLinkAddress { link: String, address: Vec<u8> },
    #[error("bad link-layer address {0:02x?}")]
    BadNeighbourAddress(Vec<u8>),
    #[error("unexpected message {0}")]
    Unexpected(String),
}

impl NextHopError {
    /// True when trying again later may succeed without any configuration
    /// change (the neighbour is still being resolved): call [`solicit`] and retry.
    pub fn is_transient(&self) -> bool {
        matches!(self, NextHopError::NeighbourNotResolved { .. })
    }

    /// True when the kernel's answer shows that a next hop resolved earlier is wrong now
    /// (no route, a local address, no source address or MAC): forwarding with it would send
    /// packets where the kernel itself would not. Every other failure (a neighbour being
    /// re-resolved, a netlink query failing) teaches nothing new, and the last resolved hop
    /// stays the best knowledge there is.
    pub fn invalidates_last_hop(&self) -> bool {
        matches!(
            self,
            NextHopError::NoRoute { .. }
                | NextHopError::NotUnicast { .. }
                | NextHopError::NoSourceAddress { .. }
                | NextHopError::NoMac { .. }
        )
    }

    /// The neighbour whose entry is missing, if that is the reason.
    pub fn pending_neighbour(&self) -> Option<IpAddr> {
        match self {
            NextHopError::NeighbourNotResolved { neighbour, .. } => Some(*neighbour),
            _ => None,
        }
    }
}

/// A backend's address and what resolving its next hop gave.
pub type Resolved = (IpAddr, Result<NextHop, NextHopError>);

/// The name of interface `ifindex` in the current network namespace, if it exists.
pub fn interface_name(ifindex: u32) -> Option<String> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires; on success it
    // holds a NUL-terminated name.
    let found = unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: NUL-terminated within the buffer (checked by the call's success).
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// The kernel's refusal of a route lookup (`RTM_GETROUTE` answered with an error) as a
/// "no route" reason; `None` when the error says something else.
fn route_refusal(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::ENETUNREACH => "network is unreachable",
        libc::EHOSTUNREACH => "no route to host (unreachable route)",
        libc::EACCES => "administratively prohibited (prohibit route)",
        libc::EINVAL => "blackhole route",
        _ => return None,
    })
}

/// The parts of an `RTM_GETROUTE` answer we use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteInfo {
    kind: RouteType,
    /// The outgoing interface (`RTA_OIF`).
    oif: Option<u32>,
    /// `RTA_GATEWAY`, or `RTA_VIA` for an IPv4 route via an IPv6 gateway (RFC 5549).
    gateway: Option<IpAddr>,
    /// `RTA_PREFSRC`.
    prefsrc: Option<IpAddr>,
}

fn route_address(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some((*v4).into()),
        RouteAddress::Inet6(v6) => Some((*v6).into()),
        _ => None,
    }
}

fn route_info(route: &RouteMessage) -> RouteInfo {
    let mut info = RouteInfo {
        kind: route.header.kind,
        oif: None,
        gateway: None,
        prefsrc: None,
    };
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Oif(index) => info.oif = Some(*index),
            RouteAttribute::Gateway(address) => info.gateway = route_address(address),
            RouteAttribute::Via(RouteVia::Inet(v4)) => info.gateway = Some((*v4).into()),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => info.gateway = Some((*v6).into()),
            RouteAttribute::PrefSource(address) => info.prefsrc = route_address(address),
            _ => {}
        }
    }
    info
}

/// The parts of an `RTM_GETLINK` answer we use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LinkInfo {
    ifindex: u32,
    name: String,
    mtu: u32,
    /// `ether`, `loopback`, `none`, ... as iproute2 names them.
    link_type: String,
    /// `None` unless the link is Ethernet with a non-zero 6-byte address.
    mac: Option<[u8; 6]>,
}

fn link_type_name(kind: LinkLayerType) -> String {
    match kind {
        LinkLayerType::Ether => "ether".to_owned(),
        LinkLayerType::Loopback => "loopback".to_owned(),
        LinkLayerType::None => "none".to_owned(),
        other => other.to_string().to_lowercase(),
    }
}

fn link_info(link: &LinkMessage) -> Result<LinkInfo, Malformed> {
    let mut name = None;
    let mut mtu = None;
    let mut address = None;
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Mtu(m) => mtu = Some(*m),
            LinkAttribute::Address(a) => address = Some(a.as_slice()),
            _ => {}
        }
    }
    let name = name.ok_or(Malformed::NoLinkName(link.header.index))?;
    let mtu = mtu.ok_or_else(|| Malformed::NoMtu(name.clone()))?;
    let mac = match (link.header.link_layer_type, address) {
        (LinkLayerType::Ether, Some(address)) => Some(<[u8; 6]>::try_from(address).map_err(
            |_| Malformed::BadLinkAddress {
                link: name.clone(),
                address: address.to_vec(),
            },
        )?),
        _ => None,
    }
    .filter(|mac| *mac != [0; 6]);
    Ok(LinkInfo {
        ifindex: link.header.index,
        name,
        mtu,
        link_type: link_type_name(link.header.link_layer_type),
        mac,
    })
}

/// What the neighbour table says about one address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NeighLookup {
    Usable {
        mac: [u8; 6],
        state: String,
    },
    /// `state` is `None` when there is no entry at all.
    NotResolved {
        state: Option<String>,
    },
}

/// A NUD state as iproute2 prints it.
fn nud_name(state: NeighbourState) -> String {
    match state {
        NeighbourState::Incomplete => "INCOMPLETE".to_owned(),
        NeighbourState::Reachable => "REACHABLE".to_owned(),
        NeighbourState::Stale => "STALE".to_owned(),
        NeighbourState::Delay => "DELAY".to_owned(),
        NeighbourState::Probe => "PROBE".to_owned(),
        NeighbourState::Failed => "FAILED".to_owned(),
        NeighbourState::Noarp => "NOARP".to_owned(),
        NeighbourState::Permanent => "PERMANENT".to_owned(),
        NeighbourState::None => "NONE".to_owned(),
        NeighbourState::Other(bits) => format!("state {bits:#x}"),
        other => format!("{other:?}").to_uppercase(),
    }
}

/// NUD states in which the kernel itself would send to the entry's link-layer address.
fn usable_state(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
    )
}

/// Judges the neighbour entry of the next hop (`None`: the kernel has no entry).
fn neigh_lookup(entry: Option<&NeighbourMessage>) -> Result<NeighLookup, Malformed> {
    let Some(entry) = entry else {
        return Ok(NeighLookup::NotResolved { state: None });
    };
    let state = entry.header.state;
    let lladdr = entry
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            NeighbourAttribute::LinkLayerAddress(address) => Some(address.as_slice()),
            _ => None,
        });
    match (usable_state(state), lladdr) {
        (true, Some(lladdr)) => {
            let mac = <[u8; 6]>::try_from(lladdr)
                .map_err(|_| Malformed::BadNeighbourAddress(lladdr.to_vec()))?;
            Ok(NeighLookup::Usable {
                mac,
                state: nud_name(state),
            })
        }
        _ => Ok(NeighLookup::NotResolved {
            state: Some(nud_name(state)),
        }),
    }
}

/// The neighbour whose MAC a packet for `backend` takes, given its route.
fn neighbour_of(backend: IpAddr, route: &RouteInfo) -> IpAddr {
    route.gateway.unwrap_or(backend)
}

/// The next hop of `backend` from the kernel's answers: its route, the route's outgoing
/// link and the neighbour entry of [`neighbour_of`] on that link. Checked in the order
/// `ip route get` + `ip link` + `ip neigh` would show a problem.
fn choose(
    backend: IpAddr,
    route: &RouteInfo,
    link: &LinkInfo,
    neighbour: NeighLookup,
) -> Result<NextHop, NextHopError> {
    let interface = link.name.clone();
    match route.kind {
        RouteType::Unicast => {}
        RouteType::Unreachable | RouteType::Prohibit | RouteType::BlackHole => {
            return Err(NextHopError::NoRoute {
                backend,
                reason: format!("{} route", route_kind_name(route.kind)),
            });
        }
        other => {
            return Err(NextHopError::NotUnicast {
                backend,
                kind: route_kind_name(other),
                interface,
            });
        }
    }
    let src_addr = route.prefsrc.ok_or_else(|| NextHopError::NoSourceAddress {
        backend,
        interface: interface.clone(),
    })?;
    let src_mac = link.mac.ok_or_else(|| NextHopError::NoMac {
        backend,
        interface: interface.clone(),
        link_type: link.link_type.clone(),
    })?;
    let dst_mac = match neighbour {
        NeighLookup::Usable { mac, .. } => mac,
        NeighLookup::NotResolved { state } => {
            return Err(NextHopError::NeighbourNotResolved {
                backend,
                neighbour: neighbour_of(backend, route),
                interface,
                state: state.unwrap_or_else(|| "no neighbour entry".to_owned()),
            });
        }
    };
    Ok(NextHop {
        ifindex: link.ifindex,
        interface,
        src_mac,
        dst_mac,
        src_addr,
        mtu: u16::try_from(link.mtu).unwrap_or(u16::MAX),
        via_gateway: route.gateway,
    })
}

/// A route type as iproute2 names it.
fn route_kind_name(kind: RouteType) -> String {
    match kind {
        RouteType::Unicast => "unicast".to_owned(),
        RouteType::Local => "local".to_owned(),
        RouteType::Broadcast => "broadcast".to_owned(),
        RouteType::Anycast => "anycast".to_owned(),
        RouteType::Multicast => "multicast".to_owned(),
        RouteType::BlackHole => "blackhole".to_owned(),
        RouteType::Unreachable => "unreachable".to_owned(),
        RouteType::Prohibit => "prohibit".to_owned(),
        RouteType::Throw => "throw".to_owned(),
        RouteType::Nat => "nat".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Every address of an interface except link-local IPv6 ones (what `balancer decap`
/// accepts as outer destinations), from an address dump.
fn interface_addresses_of(ifindex: u32, addresses: &[AddressMessage]) -> Vec<IpAddr> {
    addresses
        .iter()
        .filter(|message| message.header.index == ifindex)
        .filter(|message| message.header.scope != AddressScope::Link)
        .filter_map(|message| {
            // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on a
            // point-to-point link); IPv6 has only IFA_ADDRESS.
            let local = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(address) => Some(*address),
                _ => None,
            });
            local.or_else(|| {
                message.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(address) => Some(*address),
                    _ => None,
                })
            })
        })
        .collect()
}

/// A change notification (`RTNLGRP_NEIGH`, `RTNLGRP_IPV4_ROUTE`, `RTNLGRP_IPV6_ROUTE`,
/// `RTNLGRP_LINK`), as far as next hops care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A neighbour entry for this address was added, changed or removed.
    Neighbour(IpAddr),
    /// A route was added or removed (any table: policy routing can make any of them count).
    Route,
    /// A link was added, changed (address, MTU, up/down) or removed. An IPv4 route that
    /// goes away with its link is not notified by itself, so this counts too.
    Link,
    /// The kernel dropped notifications (the socket's buffer was full): anything may have
    /// changed.
    Lost,
}

/// What a notification says, `None` for messages next hops never depend on.
pub fn classify(message: &NetlinkMessage<RouteNetlinkMessage>) -> Option<Change> {
    match &message.payload {
        NetlinkPayload::InnerMessage(inner) => match inner {
            RouteNetlinkMessage::NewNeighbour(entry) | RouteNetlinkMessage::DelNeighbour(entry) => {
                entry.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        Some(Change::Neighbour(IpAddr::V4(*v4)))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        Some(Change::Neighbour(IpAddr::V6(*v6)))
                    }
                    _ => None,
                })
            }
            RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_) => {
                Some(Change::Route)
            }
            RouteNetlinkMessage::NewLink(_) | RouteNetlinkMessage::DelLink(_) => Some(Change::Link),
            _ => None,
        },
        NetlinkPayload::Overrun(_) => Some(Change::Lost),
        _ => None,
    }
}

/// Whether `change` can move one of the hops whose neighbours are `watched` (every
/// backend's address and every gateway in use or awaited): neighbour entries of other
/// hosts come and go all the time and are ignored.
pub fn concerns(change: &Change, watched: &HashSet<IpAddr>) -> bool {
    match change {
        Change::Neighbour(address) => watched.contains(address),
        Change::Route | Change::Link | Change::Lost => true,
    }
}

/// The neighbours whose entries decide `results`: each backend and each gateway in use
/// or being resolved.
pub fn watched_neighbours<'a>(
    results: impl IntoIterator<Item = (IpAddr, Option<&'a Result<NextHop, NextHopError>>)>,
) -> HashSet<IpAddr> {
    let mut watched = HashSet::new();
    for (backend, result) in results {
        watched.insert(backend);
        match result {
            Some(Ok(hop)) => watched.extend(hop.via_gateway),
            Some(Err(err)) => watched.extend(err.pending_neighbour()),
            None => {}
        }
    }
    watched
}

fn unspecified(family_of: IpAddr) -> IpAddr {
    match family_of {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

#[cfg(test)]
mod tests;
