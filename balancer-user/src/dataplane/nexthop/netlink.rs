//! The netlink I/O of next-hop resolution: the three questions per backend, the
//! subscription to neighbour, route and link changes, and the ARP/ND solicitation of a
//! missing neighbour. Everything that judges the answers is in the parent module.

use std::{
    collections::HashSet,
    net::{IpAddr, UdpSocket},
    pin::Pin,
    time::Duration,
};

use futures_util::{FutureExt, Stream, StreamExt, TryStreamExt};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{NeighbourAttribute, NeighbourMessage},
    route::{RouteAttribute, RouteMessage, RouteType},
};
use rtnetlink::{
    Handle, MulticastGroup,
    packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload},
};

use super::{
    Change, LinkInfo, Malformed, NeighLookup, NextHop, NextHopError, Resolved, RouteInfo, choose,
    concerns, interface_addresses_of, link_info, neigh_lookup, neighbour_of, route_info,
    route_refusal, unspecified,
};

/// A netlink connection for next-hop questions, served by a task on the current tokio
/// runtime (the task ends when the last clone of the resolver is dropped).
#[derive(Clone)]
pub struct Resolver {
    handle: Handle,
}

impl Resolver {
    pub fn open() -> Result<Resolver, NextHopError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NextHopError::Socket)?;
        tokio::spawn(connection);
        Ok(Resolver { handle })
    }

    /// Resolves the next hop for `backend` in the current network namespace: the route
    /// the kernel would take (`RTM_GETROUTE`, as `ip route get`), its outgoing link and
    /// the neighbour entry of the gateway or the backend on that link. A neighbour that
    /// is not resolved yet is an error ([`NextHopError::NeighbourNotResolved`], see
    /// [`NextHopError::is_transient`]); [`solicit`] makes the kernel start resolving it.
    pub async fn resolve(&self, backend: IpAddr) -> Result<NextHop, NextHopError> {
        let route = self.route(backend).await?;
        let oif = route.oif.ok_or_else(|| NextHopError::Parse {
            what: format!("the route lookup for {backend}"),
            detail: Malformed::NoOutgoingInterface,
        })?;
        let link = self.link(oif).await?;
        let neighbour = if route.kind == RouteType::Unicast {
            let neighbour = neighbour_of(backend, &route);
            let entry = self.neighbour(neighbour, oif).await?;
            neigh_lookup(entry.as_ref()).map_err(|detail| NextHopError::Parse {
                what: format!("the neighbour lookup for {neighbour} on {}", link.name),
                detail,
            })?
        } else {
            // `choose` refuses the route before it looks at a neighbour.
            NeighLookup::NotResolved { state: None }
        };
        choose(backend, &route, &link, neighbour)
    }

    async fn route(&self, backend: IpAddr) -> Result<RouteInfo, NextHopError> {
        let mut message = RouteMessage::default();
        let (family, length) = match backend {
            IpAddr::V4(_) => (AddressFamily::Inet, 32),
            IpAddr::V6(_) => (AddressFamily::Inet6, 128),
        };
        message.header.address_family = family;
        message.header.destination_prefix_length = length;
        message
            .attributes
            .push(RouteAttribute::Destination(backend.into()));
        // With a destination, rtnetlink asks without NLM_F_DUMP: one lookup, one answer.
        let mut answers = self.handle.route().get(message).execute();
        match answers.try_next().await {
            Ok(Some(route)) => Ok(route_info(&route)),
            Ok(None) => Err(NextHopError::Parse {
                what: format!("the route lookup for {backend}"),
                detail: Malformed::NoAnswer,
            }),
            Err(rtnetlink::Error::NetlinkError(error))
                if error
                    .to_io()
                    .raw_os_error()
                    .and_then(route_refusal)
                    .is_some() =>
            {
                let reason = error.to_io().raw_os_error().and_then(route_refusal);
                Err(NextHopError::NoRoute {
                    backend,
                    reason: reason.unwrap_or_default().to_owned(),
                })
            }
            Err(source) => Err(NextHopError::Netlink {
                what: format!("looking the route to {backend} up"),
                source,
            }),
        }
    }

    async fn link(&self, ifindex: u32) -> Result<LinkInfo, NextHopError> {
        let what = || format!("the link lookup for interface {ifindex}");
        let mut answers = self.handle.link().get().match_index(ifindex).execute();
        match answers.try_next().await {
            Ok(Some(link)) => link_info(&link).map_err(|detail| NextHopError::Parse {
                what: what(),
                detail,
            }),
            Ok(None) => Err(NextHopError::Parse {
                what: what(),
                detail: Malformed::NoAnswer,
            }),
            Err(source) => Err(NextHopError::Netlink {
                what: what(),
                source,
            }),
        }
    }

    /// The neighbour entry of `address` on interface `ifindex` (`RTM_GETNEIGH` for one
    /// entry, not a dump); `None` when the kernel has none.
    async fn neighbour(
        &self,
        address: IpAddr,
        ifindex: u32,
    ) -> Result<Option<NeighbourMessage>, NextHopError> {
        let what = || format!("looking the neighbour {address} up on interface {ifindex}");
        let mut message = NeighbourMessage::default();
        message.header.family = match address {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        message.header.ifindex = ifindex;
        message
            .attributes
            .push(NeighbourAttribute::Destination(address.into()));
        let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(message));
        request.header.flags = NLM_F_REQUEST;
        let mut answers =
            self.handle
                .clone()
                .request(request)
                .map_err(|source| NextHopError::Netlink {
                    what: what(),
                    source,
                })?;
        let Some(answer) = answers.next().await else {
            return Err(NextHopError::Parse {
                what: what(),
                detail: Malformed::NoAnswer,
            });
        };
        match answer.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(entry)) => {
                Ok(Some(entry))
            }
            NetlinkPayload::Error(error) if error.to_io().raw_os_error() == Some(libc::ENOENT) => {
                Ok(None)
            }
            NetlinkPayload::Error(error) => Err(NextHopError::Netlink {
                what: what(),
                source: rtnetlink::Error::NetlinkError(error),
            }),
            other => Err(NextHopError::Parse {
                what: what(),
                detail: Malformed::Unexpected(format!("{other:?}")),
            }),
        }
    }

    /// Every address of `interface` except link-local ones.
    pub async fn interface_addresses(&self, interface: &str) -> Result<Vec<IpAddr>, NextHopError> {
        let ifindex = if_index(interface).map_err(|source| NextHopError::NoInterface {
            interface: interface.to_owned(),
            source,
        })?;
        let addresses: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute()
            .try_collect()
            .await
            .map_err(|source| NextHopError::Netlink {
                what: format!("listing the addresses of {interface}"),
                source,
            })?;
        Ok(interface_addresses_of(ifindex, &addresses))
    }
}

fn if_index(interface: &str) -> std::io::Result<u32> {
    let name = std::ffi::CString::new(interface)
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))?;
    // SAFETY: the name is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(index)
    }
}

/// Every address of `interface` except link-local IPv6 ones: what `balancer decap`
/// accepts as outer destinations.
pub async fn interface_addresses(interface: &str) -> Result<Vec<IpAddr>, NextHopError> {
    Resolver::open()?.interface_addresses(interface).await
}

/// Pause between two attempts of [`resolve_all`] (ARP/ND on a LAN answers within it).
const RESOLVE_RETRY: Duration = Duration::from_millis(50);

/// Resolves each of `backends` once (duplicates are resolved once), before the data plane
/// uses them. A neighbour not resolved yet is solicited and asked again every
/// `RESOLVE_RETRY` until `patience` is up, so a start that takes forwarding over finds its
/// next hops known rather than dropping the first packets as `next_hop_unresolved`.
pub async fn resolve_all(backends: &[IpAddr], patience: Duration) -> Vec<Resolved> {
    let deadline = tokio::time::Instant::now() + patience;
    let resolver = match Resolver::open() {
        Ok(resolver) => resolver,
        Err(err) => {
            let message = err.to_string();
            let mut results: Vec<Resolved> = Vec::new();
            for backend in backends {
                if results.iter().all(|(address, _)| address != backend) {
                    results.push((
                        *backend,
                        Err(NextHopError::Socket(std::io::Error::other(message.clone()))),
                    ));
                }
            }
            return results;
        }
    };
    let mut results: Vec<Resolved> = Vec::new();
    for backend in backends {
        if results.iter().all(|(address, _)| address != backend) {
            results.push((*backend, resolver.resolve(*backend).await));
        }
    }
    loop {
        let pending: Vec<usize> = (0..results.len())
            .filter(|i| matches!(&results[*i].1, Err(err) if err.is_transient()))
            .collect();
        if pending.is_empty() || tokio::time::Instant::now() >= deadline {
            return results;
        }
        for i in &pending {
            solicit(results[*i].0);
        }
        tokio::time::sleep(RESOLVE_RETRY).await;
        for i in pending {
            results[i].1 = resolver.resolve(results[i].0).await;
        }
    }
}

/// Best effort: makes the kernel start ARP/ND for the next hop towards
/// `backend` by sending one UDP datagram to its discard port (9) from an
/// unbound socket. Errors are ignored.
pub fn solicit(backend: IpAddr) {
    if let Ok(socket) = UdpSocket::bind((unspecified(backend), 0))
        && socket.connect((backend, 9)).is_ok()
    {
        let _ = socket.send(&[0]);
    }
}

/// Neighbour, route and link change notifications of the current network namespace.
pub struct ChangeStream {
    changes: Pin<Box<dyn Stream<Item = Option<Change>> + Send>>,
    connection: tokio::task::JoinHandle<()>,
}

/// Subscribes to `RTNLGRP_NEIGH`, `RTNLGRP_IPV4_ROUTE`, `RTNLGRP_IPV6_ROUTE` and
/// `RTNLGRP_LINK`. Subscribe before asking, so that no change between the answer and
/// the subscription goes unseen.
pub fn watch_changes() -> Result<ChangeStream, NextHopError> {
    let (connection, _handle, messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Neigh,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
        MulticastGroup::Link,
    ])
    .map_err(NextHopError::Socket)?;
    let connection = tokio::spawn(connection);
    Ok(ChangeStream {
        changes: Box::pin(messages.map(|(message, _)| super::classify(&message))),
        connection,
    })
}

impl ChangeStream {
    /// Waits for a change that concerns the hops whose neighbours are `watched` (see
    /// [`concerns`]), then lets `settle` pass and swallows the notifications that came
    /// meanwhile (a route change brings several at once: one resolution answers them
    /// all). `None` when the subscription ended.
    pub async fn next(&mut self, watched: &HashSet<IpAddr>, settle: Duration) -> Option<Change> {
        let change = loop {
            match self.changes.next().await? {
                Some(change) if concerns(&change, watched) => break change,
                _ => {}
            }
        };
        tokio::time::sleep(settle).await;
        while let Some(Some(_)) = self.changes.next().now_or_never() {}
        Some(change)
    }
}

impl Drop for ChangeStream {
    fn drop(&mut self) {
        self.connection.abort();
    }
}
