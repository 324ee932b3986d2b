//! The kernel routing table `announce.table`, through rtnetlink: one unicast route `dev lo`
//! with protocol `PROTOCOL` per announced VIP address. The protocol number is how this
//! balancer knows its own routes (to flush them at start) and how BIRD's `learn` takes them:
//! BIRD ignores routes of the kernel's own protocols and `local`-type routes.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use netlink_packet_route::{
    AddressFamily,
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
};
use rtnetlink::{Handle, RouteMessageBuilder};

/// The route protocol of announced VIPs (see /etc/iproute2/rt_protos: 250 is unassigned).
pub const PROTOCOL: u8 = 250;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("the loopback interface lo has no index: {0}")]
    NoLoopback(#[source] std::io::Error),
    #[error("{what} in table {table}: {source}")]
    Netlink {
        what: String,
        table: u32,
        #[source]
        source: rtnetlink::Error,
    },
}

/// Routes of protocol `PROTOCOL` in one table.
pub struct RouteTable {
    handle: Handle,
    table: u32,
    loopback: u32,
}

impl RouteTable {
    /// Opens a netlink connection served by a task on the current tokio runtime.
    pub fn open(table: u32) -> Result<Self, RouteError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(RouteError::Socket)?;
        tokio::spawn(connection);
        let loopback = loopback_index().map_err(RouteError::NoLoopback)?;
        Ok(Self {
            handle,
            table,
            loopback,
        })
    }

    pub fn table(&self) -> u32 {
        self.table
    }

    /// Installs the host route of `address` (replacing one that is already there, so a
    /// route left by a previous run is no error).
    pub async fn add(&self, address: IpAddr) -> Result<(), RouteError> {
        self.handle
            .route()
            .add(self.message(address))
            .replace()
            .execute()
            .await
            .map_err(|source| self.error(format!("adding the route to {address}"), source))
    }

    /// Removes the host route of `address`; one that is already gone is no error. Only a
    /// route of our protocol matches: the kernel compares the protocol of a delete request.
    pub async fn remove(&self, address: IpAddr) -> Result<(), RouteError> {
        let result = self
            .handle
            .route()
            .del(self.message(address))
            .execute()
            .await;
        match result {
            Err(rtnetlink::Error::NetlinkError(message))
                if message.to_io().raw_os_error() == Some(libc::ESRCH) =>
            {
                Ok(())
            }
            other => other
                .map_err(|source| self.error(format!("removing the route to {address}"), source)),
        }
    }

    /// Every route of our protocol in the table: host routes to VIPs (and whatever else a
    /// crashed or older run or an operator put there with that protocol).
    pub async fn ours(&self) -> Result<Vec<RouteMessage>, RouteError> {
        let mut found = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut filter = RouteMessage::default();
            filter.header.address_family = family;
            let mut routes = self.handle.route().get(filter).execute();
            while let Some(route) = routes
                .try_next()
                .await
                .map_err(|source| self.error("listing routes".to_string(), source))?
            {
                // Without NETLINK_GET_STRICT_CHK the kernel dumps every table: filter here.
                if table_of(&route) == self.table && u8::from(route.header.protocol) == PROTOCOL {
                    found.push(route);
                }
            }
        }
        Ok(found)
    }

    /// Removes every route of our protocol from the table; returns their destinations.
    pub async fn flush(&self) -> Result<Vec<String>, RouteError> {
        let mut removed = Vec::new();
        for route in self.ours().await? {
            let shown = describe(&route);
            self.handle
                .route()
                .del(route)
                .execute()
                .await
                .map_err(|source| {
                    self.error(format!("removing the stale route {shown}"), source)
                })?;
            removed.push(shown);
        }
        Ok(removed)
    }

    fn message(&self, address: IpAddr) -> RouteMessage {
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(address, prefix)
            .expect("a host prefix fits its own family")
            .table_id(self.table)
            .protocol(RouteProtocol::from(PROTOCOL))
            .scope(RouteScope::Universe)
            .kind(RouteType::Unicast)
            .output_interface(self.loopback)
            .build()
    }

    fn error(&self, what: String, source: rtnetlink::Error) -> RouteError {
        RouteError::Netlink {
            what,
            table: self.table,
            source,
        }
    }
}

/// Tables above 255 travel in an attribute; the header then says 252 (RT_TABLE_COMPAT).
fn table_of(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

/// "198.18.0.10/32", for logs.
fn describe(route: &RouteMessage) -> String {
    let destination = route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(address)) => Some(address.to_string()),
            RouteAttribute::Destination(RouteAddress::Inet6(address)) => Some(address.to_string()),
            RouteAttribute::Destination(other) => Some(format!("{other:?}")),
            _ => None,
        });
    format!(
        "{}/{}",
        destination.unwrap_or_else(|| "default".to_string()),
        route.header.destination_prefix_length
    )
}

fn loopback_index() -> std::io::Result<u32> {
    // SAFETY: the name is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if index == 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(index)
    }
}
