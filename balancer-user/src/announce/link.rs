//! Whether an XDP program is attached to the data plane's interface, asked of the kernel
//! through rtnetlink on every pass: when it is not (another tool detached it, the interface
//! went away), nothing forwards the VIPs' packets here, so the host must not attract them.

use futures_util::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkXdp, XdpAttached};
use rtnetlink::Handle;

use super::routes::RouteError;

pub struct XdpLink {
    handle: Handle,
    interface: String,
}

impl XdpLink {
    /// Opens a netlink connection served by a task on the current tokio runtime.
    pub fn open(interface: &str) -> Result<Self, RouteError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(RouteError::Socket)?;
        tokio::spawn(connection);
        Ok(Self {
            handle,
            interface: interface.to_string(),
        })
    }

    /// Whether the interface has an XDP program attached; an interface that no longer
    /// exists has none.
    pub async fn attached(&self) -> Result<bool, rtnetlink::Error> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(self.interface.clone())
            .execute();
        match links.try_next().await {
            Ok(link) => Ok(link.is_some_and(|link| has_xdp(&link.attributes))),
            Err(rtnetlink::Error::NetlinkError(message))
                if message.to_io().raw_os_error() == Some(libc::ENODEV) =>
            {
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }
}

/// IFLA_XDP of a link: attached in any mode (driver, generic, offloaded, several).
fn has_xdp(attributes: &[LinkAttribute]) -> bool {
    attributes.iter().any(|attribute| match attribute {
        LinkAttribute::Xdp(xdp) => xdp
            .iter()
            .any(|nla| matches!(nla, LinkXdp::Attached(mode) if *mode != XdpAttached::None)),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attached_in_any_mode_counts_and_none_does_not() {
        for mode in [
            XdpAttached::Driver,
            XdpAttached::SocketBuffer,
            XdpAttached::Multiple,
        ] {
            let attributes = [LinkAttribute::Xdp(vec![
                LinkXdp::Attached(mode),
                LinkXdp::ProgId(7),
            ])];
            assert!(has_xdp(&attributes), "{mode:?} is attached");
        }
        assert!(!has_xdp(&[LinkAttribute::Xdp(vec![LinkXdp::Attached(
            XdpAttached::None
        )])]));
        assert!(!has_xdp(&[]), "a link without IFLA_XDP has no program");
    }
}
