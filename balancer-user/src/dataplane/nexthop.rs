//! Where the XDP program must send a packet for a backend: the outgoing
//! interface, both MAC addresses, the source address and the MTU.
//!
//! The kernel already knows all of this (routing table, neighbour table,
//! links); we ask it through iproute2's JSON output (`ip -j route get`,
//! `ip -j neigh show`, `ip -j link show`) in the process's current network
//! namespace. The parsing is pure and unit-tested on output captured from
//! iproute2 6.1; only [`resolve`] and [`solicit`] do I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::process::Command;

use serde::Deserialize;

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
    #[error("could not run `ip {args}`: {source} (is iproute2 installed?)")]
    Spawn {
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`ip {args}` failed ({status}): {stderr}")]
    Ip {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("unexpected output from `ip {args}`: {detail}")]
    Parse { args: String, detail: String },
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

impl NextHopError {
    /// True when trying again later may succeed without any configuration
    /// change (the neighbour is still being resolved): call [`solicit`] and retry.
    pub fn is_transient(&self) -> bool {
        matches!(self, NextHopError::NeighbourNotResolved { .. })
    }

    /// True when the kernel's answer shows that a next hop resolved earlier is wrong now
    /// (no route, a local address, no source address or MAC): forwarding with it would send
    /// packets where the kernel itself would not. Every other failure (a neighbour being
    /// re-resolved, `ip` failing) teaches nothing new, and the last resolved hop stays the
    /// best knowledge there is.
    pub fn invalidates_last_hop(&self) -> bool {
        matches!(
            self,
            NextHopError::NoRoute { .. }
                | NextHopError::NotUnicast { .. }
                | NextHopError::NoSourceAddress { .. }
                | NextHopError::NoMac { .. }
        )
    }
}

/// A backend's address and what resolving its next hop gave.
pub type Resolved = (IpAddr, Result<NextHop, NextHopError>);

/// Resolves each of `backends` once (duplicates are resolved once), before the data plane
/// uses them. A neighbour not resolved yet is solicited and asked again every
/// `RESOLVE_RETRY` until `patience` is up, so a start that takes forwarding over finds its
/// next hops known rather than dropping the first packets as `next_hop_unresolved`.
///
/// Blocking: runs `ip` (three times per backend and attempt) and sleeps between attempts.
pub fn resolve_all(backends: &[IpAddr], patience: std::time::Duration) -> Vec<Resolved> {
    let deadline = std::time::Instant::now() + patience;
    let mut results: Vec<Resolved> = Vec::new();
    for backend in backends {
        if results.iter().all(|(address, _)| address != backend) {
            results.push((*backend, resolve(*backend)));
        }
    }
    loop {
        let pending: Vec<usize> = (0..results.len())
            .filter(|i| matches!(&results[*i].1, Err(err) if err.is_transient()))
            .collect();
        if pending.is_empty() || std::time::Instant::now() >= deadline {
            return results;
        }
        for i in &pending {
            solicit(results[*i].0);
        }
        std::thread::sleep(RESOLVE_RETRY);
        for i in pending {
            results[i].1 = resolve(results[i].0);
        }
    }
}

/// Pause between two attempts of [`resolve_all`] (ARP/ND on a LAN answers within it).
const RESOLVE_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

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

/// Resolves the next hop for `backend` in the current network namespace.
///
/// Blocking: runs `ip` up to three times. A neighbour that is not resolved
/// yet is an error ([`NextHopError::NeighbourNotResolved`], see
/// [`NextHopError::is_transient`]); [`solicit`] makes the kernel start resolving it.
pub fn resolve(backend: IpAddr) -> Result<NextHop, NextHopError> {
    let backend_str = backend.to_string();
    let route_args = ["-j", "route", "get", backend_str.as_str()];
    let route_json = match run_ip(&route_args) {
        Ok(out) => out,
        Err(NextHopError::Ip {
            args,
            status,
            stderr,
        }) => {
            return Err(match classify_route_error(&stderr) {
                Some(reason) => NextHopError::NoRoute { backend, reason },
                None => NextHopError::Ip {
                    args,
                    status,
                    stderr,
                },
            });
        }
        Err(e) => return Err(e),
    };
    let route = parse_route_get(&route_json).map_err(|detail| NextHopError::Parse {
        args: route_args.join(" "),
        detail,
    })?;
    if route.kind != "unicast" {
        return Err(NextHopError::NotUnicast {
            backend,
            kind: route.kind,
            interface: route.dev,
        });
    }
    let src_addr = route.prefsrc.ok_or_else(|| NextHopError::NoSourceAddress {
        backend,
        interface: route.dev.clone(),
    })?;

    let link_args = ["-j", "link", "show", "dev", route.dev.as_str()];
    let link = parse_link(&run_ip(&link_args)?).map_err(|detail| NextHopError::Parse {
        args: link_args.join(" "),
        detail,
    })?;
    let src_mac = link.mac.ok_or_else(|| NextHopError::NoMac {
        backend,
        interface: route.dev.clone(),
        link_type: link.link_type.clone(),
    })?;

    let neighbour = route.gateway.unwrap_or(backend);
    let neighbour_str = neighbour.to_string();
    let neigh_args = [
        "-j",
        "neigh",
        "show",
        "to",
        neighbour_str.as_str(),
        "dev",
        route.dev.as_str(),
    ];
    let lookup =
        parse_neigh(&run_ip(&neigh_args)?, neighbour).map_err(|detail| NextHopError::Parse {
            args: neigh_args.join(" "),
            detail,
        })?;
    let dst_mac = match lookup {
        NeighLookup::Usable { mac, .. } => mac,
        NeighLookup::NotResolved { state } => {
            return Err(NextHopError::NeighbourNotResolved {
                backend,
                neighbour,
                interface: route.dev,
                state: state.unwrap_or_else(|| "no neighbour entry".to_owned()),
            });
        }
    };

    Ok(NextHop {
        ifindex: link.ifindex,
        interface: route.dev,
        src_mac,
        dst_mac,
        src_addr,
        mtu: u16::try_from(link.mtu).unwrap_or(u16::MAX),
        via_gateway: route.gateway,
    })
}

/// Best effort: makes the kernel start ARP/ND for the next hop towards
/// `backend` by sending one UDP datagram to its discard port (9) from an
/// unbound socket. Errors are ignored.
pub fn solicit(backend: IpAddr) {
    let any: IpAddr = match backend {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    if let Ok(socket) = UdpSocket::bind((any, 0))
        && socket.connect((backend, 9)).is_ok()
    {
        let _ = socket.send(&[0]);
    }
}

/// Every address of an interface except link-local IPv6 ones (`ip -j addr show dev IF`):
/// what `balancer decap` accepts as outer destinations.
pub fn interface_addresses(interface: &str) -> Result<Vec<IpAddr>, NextHopError> {
    let args = ["-j", "addr", "show", "dev", interface];
    let json = run_ip(&args)?;
    parse_addresses(&json).map_err(|detail| NextHopError::Parse {
        args: args.join(" "),
        detail,
    })
}

fn parse_addresses(json: &str) -> Result<Vec<IpAddr>, String> {
    #[derive(serde::Deserialize)]
    struct Link {
        #[serde(default)]
        addr_info: Vec<AddrInfo>,
    }
    #[derive(serde::Deserialize)]
    struct AddrInfo {
        local: Option<IpAddr>,
        scope: Option<String>,
    }
    let links: Vec<Link> = serde_json::from_str(json).map_err(|err| err.to_string())?;
    Ok(links
        .into_iter()
        .flat_map(|link| link.addr_info)
        .filter(|info| info.scope.as_deref() != Some("link"))
        .filter_map(|info| info.local)
        .collect())
}

/// Where `ip` may live when `PATH` lacks the sbin directories.
const IP_FALLBACKS: [&str; 2] = ["/usr/sbin/ip", "/sbin/ip"];

fn run_ip(args: &[&str]) -> Result<String, NextHopError> {
    let mut result = Command::new("ip").args(args).env("LC_ALL", "C").output();
    for fallback in IP_FALLBACKS {
        match &result {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                result = Command::new(fallback)
                    .args(args)
                    .env("LC_ALL", "C")
                    .output();
            }
            _ => break,
        }
    }
    let output = result.map_err(|source| NextHopError::Spawn {
        args: args.join(" "),
        source,
    })?;
    if !output.status.success() {
        return Err(NextHopError::Ip {
            args: args.join(" "),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    String::from_utf8(output.stdout).map_err(|e| NextHopError::Parse {
        args: args.join(" "),
        detail: format!("not UTF-8: {e}"),
    })
}

/// Maps the kernel's answer to a failed `ip route get` to a "no route" reason;
/// `None` when the failure is something else.
fn classify_route_error(stderr: &str) -> Option<String> {
    let answer = stderr.trim().strip_prefix("RTNETLINK answers: ")?;
    let reason = match answer {
        "Network is unreachable" => "network is unreachable",
        "No route to host" => "no route to host (unreachable route)",
        "Permission denied" => "administratively prohibited (prohibit route)",
        "Invalid argument" => "blackhole route",
        _ => return None,
    };
    Some(reason.to_owned())
}

/// The parts of `ip -j route get` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteInfo {
    /// `unicast`, `local`, `broadcast`, ... (iproute2 omits `type` for unicast).
    kind: String,
    dev: String,
    /// `gateway`, or `via.host` for an IPv4 route via an IPv6 gateway.
    gateway: Option<IpAddr>,
    prefsrc: Option<IpAddr>,
}

#[derive(Deserialize)]
struct RawRoute {
    #[serde(rename = "type")]
    kind: Option<String>,
    dev: Option<String>,
    gateway: Option<IpAddr>,
    via: Option<RawVia>,
    prefsrc: Option<IpAddr>,
}

#[derive(Deserialize)]
struct RawVia {
    host: IpAddr,
}

fn parse_route_get(json: &str) -> Result<RouteInfo, String> {
    let routes: Vec<RawRoute> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let route = routes
        .into_iter()
        .next()
        .ok_or_else(|| "no route in the answer".to_owned())?;
    let dev = route
        .dev
        .ok_or_else(|| "the route has no outgoing device".to_owned())?;
    Ok(RouteInfo {
        kind: route.kind.unwrap_or_else(|| "unicast".to_owned()),
        dev,
        gateway: route.gateway.or(route.via.map(|via| via.host)),
        prefsrc: route.prefsrc,
    })
}

/// The parts of `ip -j link show dev IF` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LinkInfo {
    ifindex: u32,
    mtu: u32,
    link_type: String,
    /// `None` unless the link is Ethernet with a non-zero 6-byte address.
    mac: Option<[u8; 6]>,
}

#[derive(Deserialize)]
struct RawLink {
    ifindex: u32,
    mtu: u32,
    link_type: Option<String>,
    address: Option<String>,
}

fn parse_link(json: &str) -> Result<LinkInfo, String> {
    let links: Vec<RawLink> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let link = links
        .into_iter()
        .next()
        .ok_or_else(|| "no link in the answer".to_owned())?;
    let link_type = link.link_type.unwrap_or_else(|| "unknown".to_owned());
    let mac = match (&*link_type, link.address.as_deref()) {
        ("ether", Some(address)) => {
            Some(parse_mac(address).ok_or_else(|| format!("bad MAC address {address:?}"))?)
        }
        _ => None,
    }
    .filter(|mac| *mac != [0; 6]);
    Ok(LinkInfo {
        ifindex: link.ifindex,
        mtu: link.mtu,
        link_type,
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

/// NUD states in which the kernel itself would send to the entry's `lladdr`.
const USABLE_STATES: [&str; 5] = ["REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT"];

#[derive(Deserialize)]
struct RawNeigh {
    dst: IpAddr,
    lladdr: Option<String>,
    #[serde(default)]
    state: Vec<String>,
}

/// Parses `ip -j neigh show to ADDR dev IF` and judges the entry for `neighbour`.
fn parse_neigh(json: &str, neighbour: IpAddr) -> Result<NeighLookup, String> {
    let entries: Vec<RawNeigh> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let Some(entry) = entries.into_iter().find(|e| e.dst == neighbour) else {
        return Ok(NeighLookup::NotResolved { state: None });
    };
    let state = entry.state.join(",");
    let usable = entry
        .state
        .iter()
        .any(|s| USABLE_STATES.contains(&s.as_str()));
    match (usable, entry.lladdr) {
        (true, Some(lladdr)) => {
            let mac = parse_mac(&lladdr).ok_or_else(|| format!("bad lladdr {lladdr:?}"))?;
            Ok(NeighLookup::Usable { mac, state })
        }
        _ => Ok(NeighLookup::NotResolved {
            state: Some(if state.is_empty() {
                "no state".to_owned()
            } else {
                state
            }),
        }),
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod address_tests {
    use super::parse_addresses;

    #[test]
    fn addresses_skip_link_local() {
        let json = r#"[{"ifindex":2,"ifname":"veth0","addr_info":[{"family":"inet","local":"198.18.0.11","prefixlen":24,"scope":"global"},{"family":"inet6","local":"2001:2::b","prefixlen":64,"scope":"global"},{"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]}]"#;
        let addresses = parse_addresses(json).unwrap();
        assert_eq!(
            addresses,
            vec![
                "198.18.0.11".parse::<std::net::IpAddr>().unwrap(),
                "2001:2::b".parse().unwrap()
            ]
        );
    }
}

#[cfg(test)]
mod tests {
    //! Fixtures are `ip -j` output from iproute2 6.1 captured in throwaway
    //! network namespaces (veth pair 198.18.0.1/24 + 2001:2::1/64 <-> .2 / ::2).

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn route_on_link_v4() {
        let json = r#"[{"dst":"198.18.0.2","dev":"nhva","prefsrc":"198.18.0.1","flags":[],"uid":0,"cache":[]}]"#;
        assert_eq!(
            parse_route_get(json).unwrap(),
            RouteInfo {
                kind: "unicast".into(),
                dev: "nhva".into(),
                gateway: None,
                prefsrc: Some(ip("198.18.0.1")),
            }
        );
    }

    #[test]
    fn route_via_gateway_v4() {
        let json = r#"[{"dst":"198.18.1.5","gateway":"198.18.0.2","dev":"nhva","prefsrc":"198.18.0.1","flags":[],"uid":0,"cache":[]}]"#;
        let route = parse_route_get(json).unwrap();
        assert_eq!(route.gateway, Some(ip("198.18.0.2")));
        assert_eq!(route.prefsrc, Some(ip("198.18.0.1")));
        assert_eq!(route.dev, "nhva");
    }

    #[test]
    fn route_on_link_v6() {
        let json = r#"[{"dst":"2001:2::2","from":"::","dev":"nhva","protocol":"kernel","prefsrc":"2001:2::1","metric":256,"flags":[],"pref":"medium"}]"#;
        let route = parse_route_get(json).unwrap();
        assert_eq!(route.kind, "unicast");
        assert_eq!(route.gateway, None);
        assert_eq!(route.prefsrc, Some(ip("2001:2::1")));
    }

    #[test]
    fn route_via_gateway_v6() {
        let json = r#"[{"dst":"2001:2:1::5","from":"::","gateway":"2001:2::2","dev":"nhva","prefsrc":"2001:2::1","metric":1024,"flags":[],"pref":"medium"}]"#;
        let route = parse_route_get(json).unwrap();
        assert_eq!(route.gateway, Some(ip("2001:2::2")));
        assert_eq!(route.prefsrc, Some(ip("2001:2::1")));
    }

    #[test]
    fn route_v6_via_link_local_gateway() {
        let json = r#"[{"dst":"2001:2:20::1","from":"::","gateway":"fe80::1c8a:9eff:febe:3362","dev":"nhva","prefsrc":"2001:2::1","metric":1024,"flags":[],"pref":"medium"}]"#;
        let route = parse_route_get(json).unwrap();
        assert_eq!(route.gateway, Some(ip("fe80::1c8a:9eff:febe:3362")));
    }

    #[test]
    fn route_v4_via_v6_gateway() {
        // `ip route add 198.18.20.0/24 via inet6 fe80::... dev nhva` (RFC 5549)
        let json = r#"[{"dst":"198.18.20.1","via":{"family":"inet6","host":"fe80::1c8a:9eff:febe:3362"},"dev":"nhva","prefsrc":"198.18.0.1","flags":[],"uid":0,"cache":[]}]"#;
        let route = parse_route_get(json).unwrap();
        assert_eq!(route.gateway, Some(ip("fe80::1c8a:9eff:febe:3362")));
        assert_eq!(route.prefsrc, Some(ip("198.18.0.1")));
    }

    #[test]
    fn route_local_and_broadcast_types() {
        let local = r#"[{"type":"local","dst":"198.18.0.1","dev":"lo","prefsrc":"198.18.0.1","flags":[],"uid":0,"cache":["local"]}]"#;
        let route = parse_route_get(local).unwrap();
        assert_eq!((route.kind.as_str(), route.dev.as_str()), ("local", "lo"));
        let brd = r#"[{"type":"broadcast","dst":"198.18.0.255","dev":"nhva","prefsrc":"198.18.0.1","flags":[],"uid":0,"cache":["local","brd"]}]"#;
        assert_eq!(parse_route_get(brd).unwrap().kind, "broadcast");
    }

    #[test]
    fn route_without_prefsrc() {
        // `ip -j route get 198.18.0.2 from 198.18.0.1`
        let json = r#"[{"dst":"198.18.0.2","from":"198.18.0.1","dev":"nhva","flags":[],"uid":0,"cache":[]}]"#;
        assert_eq!(parse_route_get(json).unwrap().prefsrc, None);
    }

    #[test]
    fn route_garbage() {
        assert!(parse_route_get("[]").unwrap_err().contains("no route"));
        assert!(parse_route_get("").is_err());
        assert!(parse_route_get(r#"[{"dst":"198.18.0.2"}]"#).is_err());
    }

    #[test]
    fn route_errors_from_the_kernel() {
        let cases = [
            ("RTNETLINK answers: Network is unreachable", "unreachable"),
            ("RTNETLINK answers: No route to host\n", "no route to host"),
            ("RTNETLINK answers: Permission denied", "prohibit"),
            ("RTNETLINK answers: Invalid argument", "blackhole"),
        ];
        for (stderr, want) in cases {
            let reason = classify_route_error(stderr).unwrap();
            assert!(reason.contains(want), "{stderr:?} -> {reason:?}");
        }
        assert_eq!(
            classify_route_error("Error: any valid prefix is expected rather than \"x\"."),
            None
        );
        assert_eq!(
            classify_route_error("RTNETLINK answers: Operation not permitted"),
            None
        );
    }

    #[test]
    fn link_veth() {
        let json = r#"[{"ifindex":2,"link_index":2,"ifname":"nhva","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"5a:db:4b:d2:e7:57","broadcast":"ff:ff:ff:ff:ff:ff","link_netnsid":0}]"#;
        assert_eq!(
            parse_link(json).unwrap(),
            LinkInfo {
                ifindex: 2,
                mtu: 1500,
                link_type: "ether".into(),
                mac: Some([0x5a, 0xdb, 0x4b, 0xd2, 0xe7, 0x57]),
            }
        );
    }

    #[test]
    fn link_jumbo_and_no_carrier() {
        let json = r#"[{"ifindex":2,"link_index":2,"ifname":"nhva","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP"],"mtu":9000,"qdisc":"noqueue","operstate":"DOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"ce:6b:50:ad:25:7b","broadcast":"ff:ff:ff:ff:ff:ff","link_netnsid":0}]"#;
        let link = parse_link(json).unwrap();
        assert_eq!(link.mtu, 9000);
        assert_eq!(link.mac, Some([0xce, 0x6b, 0x50, 0xad, 0x25, 0x7b]));
    }

    #[test]
    fn link_loopback_has_no_mac() {
        let json = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue","operstate":"UNKNOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00"}]"#;
        let link = parse_link(json).unwrap();
        assert_eq!((link.ifindex, link.mtu, link.mac), (1, 65536, None));
        assert_eq!(link.link_type, "loopback");
    }

    #[test]
    fn link_tun_has_no_mac() {
        let json = r#"[{"ifindex":3,"ifname":"nhtun","flags":["NO-CARRIER","POINTOPOINT","MULTICAST","NOARP","UP"],"mtu":1500,"qdisc":"pfifo_fast","operstate":"DOWN","linkmode":"DEFAULT","group":"default","txqlen":500,"link_type":"none"}]"#;
        let link = parse_link(json).unwrap();
        assert_eq!((link.ifindex, link.mac), (3, None));
        assert_eq!(link.link_type, "none");
    }

    #[test]
    fn link_garbage() {
        assert!(parse_link("[]").is_err());
        assert!(
            parse_link(
                r#"[{"ifindex":2,"mtu":1500,"link_type":"ether","address":"zz:00:00:00:00:00"}]"#
            )
            .is_err()
        );
    }

    #[test]
    fn neigh_usable_states() {
        let cases = [
            (
                r#"[{"dst":"198.18.0.2","lladdr":"c2:eb:9a:76:e9:56","state":["REACHABLE"]}]"#,
                "198.18.0.2",
                "REACHABLE",
            ),
            (
                r#"[{"dst":"2001:2::2","lladdr":"c2:eb:9a:76:e9:56","state":["REACHABLE"]}]"#,
                "2001:2::2",
                "REACHABLE",
            ),
            (
                r#"[{"dst":"198.18.0.2","lladdr":"c2:eb:9a:76:e9:56","state":["DELAY"]}]"#,
                "198.18.0.2",
                "DELAY",
            ),
            (
                r#"[{"dst":"198.18.0.2","lladdr":"c2:eb:9a:76:e9:56","state":["PROBE"]}]"#,
                "198.18.0.2",
                "PROBE",
            ),
            (
                // Same shape as DELAY/PROBE.
                r#"[{"dst":"198.18.0.2","lladdr":"c2:eb:9a:76:e9:56","state":["STALE"]}]"#,
                "198.18.0.2",
                "STALE",
            ),
            (
                r#"[{"dst":"fe80::1c8a:9eff:febe:3362","lladdr":"c2:eb:9a:76:e9:56","router":null,"state":["DELAY"]}]"#,
                "fe80::1c8a:9eff:febe:3362",
                "DELAY",
            ),
        ];
        for (json, addr, want_state) in cases {
            assert_eq!(
                parse_neigh(json, ip(addr)).unwrap(),
                NeighLookup::Usable {
                    mac: [0xc2, 0xeb, 0x9a, 0x76, 0xe9, 0x56],
                    state: want_state.into()
                },
                "{json}"
            );
        }
        let permanent =
            r#"[{"dst":"198.18.0.9","lladdr":"02:00:00:00:00:09","state":["PERMANENT"]}]"#;
        assert_eq!(
            parse_neigh(permanent, ip("198.18.0.9")).unwrap(),
            NeighLookup::Usable {
                mac: [2, 0, 0, 0, 0, 9],
                state: "PERMANENT".into()
            }
        );
    }

    #[test]
    fn neigh_not_resolved() {
        let not = |json: &str, addr: &str| match parse_neigh(json, ip(addr)).unwrap() {
            NeighLookup::NotResolved { state } => state,
            other => panic!("{json} -> {other:?}"),
        };
        assert_eq!(not("[]", "198.18.0.77"), None);
        assert_eq!(
            not(
                r#"[{"dst":"198.18.0.77","state":["INCOMPLETE"]}]"#,
                "198.18.0.77"
            ),
            Some("INCOMPLETE".into())
        );
        assert_eq!(
            not(
                r#"[{"dst":"2001:2::77","state":["INCOMPLETE"]}]"#,
                "2001:2::77"
            ),
            Some("INCOMPLETE".into())
        );
        assert_eq!(
            not(
                r#"[{"dst":"198.18.0.77","state":["FAILED"]}]"#,
                "198.18.0.77"
            ),
            Some("FAILED".into())
        );
        // A table listing other neighbours only.
        let table = r#"[{"dst":"198.18.0.9","lladdr":"02:00:00:00:00:09","state":["PERMANENT"]},{"dst":"198.18.0.2","lladdr":"c2:eb:9a:76:e9:56","state":["REACHABLE"]},{"dst":"198.18.0.77","state":["FAILED"]},{"dst":"2001:2::77","state":["FAILED"]},{"dst":"2001:2::2","lladdr":"c2:eb:9a:76:e9:56","state":["REACHABLE"]}]"#;
        assert_eq!(not(table, "198.18.0.3"), None);
        assert_eq!(not(table, "2001:2::77"), Some("FAILED".into()));
        assert!(matches!(
            parse_neigh(table, ip("2001:2::2")).unwrap(),
            NeighLookup::Usable { .. }
        ));
    }

    #[test]
    fn neigh_garbage() {
        assert!(parse_neigh("nope", ip("198.18.0.2")).is_err());
        assert!(
            parse_neigh(
                r#"[{"dst":"198.18.0.2","lladdr":"c2:eb:9a","state":["REACHABLE"]}]"#,
                ip("198.18.0.2")
            )
            .is_err()
        );
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("02:00:5e:10:AB:ff"),
            Some([2, 0, 0x5e, 0x10, 0xab, 0xff])
        );
        assert_eq!(parse_mac("02:00:5e:10:ab"), None);
        assert_eq!(parse_mac("02:00:5e:10:ab:ff:00"), None);
        assert_eq!(parse_mac("2:0:5e:10:ab:ff"), None);
        assert_eq!(parse_mac(""), None);
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
    }
}
