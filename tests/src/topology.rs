//! Ready-made topologies on the benchmarking ranges 198.18.0.0/15 and 2001:2::/48.
//! No namespace gets a route towards the machine's real interfaces.

use crate::netns::{Netns, unique_suffix};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// A client namespace and a balancer namespace joined by one veth pair:
///
/// ```text
/// client (198.18.0.1, 2001:2::1) ── veth ── balancer (198.18.0.2, 2001:2::2)
///                                            VIPs on lo, routed from the client
/// ```
pub struct ClientBalancer {
    // Field order is drop order: namespaces go last.
    pub client_if: String,
    pub balancer_if: String,
    pub client: Netns,
    pub balancer: Netns,
}

impl ClientBalancer {
    pub const CLIENT_V4: &'static str = "198.18.0.1";
    pub const BALANCER_V4: &'static str = "198.18.0.2";
    pub const CLIENT_V6: &'static str = "2001:2::1";
    pub const BALANCER_V6: &'static str = "2001:2::2";

    /// Builds the topology; `vips` are put on the balancer's loopback and routed from the client.
    pub fn new(tag: &str, vips: &[&str]) -> anyhow::Result<ClientBalancer> {
        let suffix = unique_suffix();
        let client = Netns::new(format!("bl-{tag}-c-{suffix}"))?;
        let balancer = Netns::new(format!("bl-{tag}-b-{suffix}"))?;
        let client_if = format!("blc{suffix}");
        let balancer_if = format!("blb{suffix}");
        let topology = ClientBalancer {
            client_if,
            balancer_if,
            client,
            balancer,
        };
        topology.wire(vips)?;
        Ok(topology)
    }

    fn wire(&self, vips: &[&str]) -> anyhow::Result<()> {
        let (c, b) = (&self.client, &self.balancer);
        c.ip(&[
            "link",
            "add",
            &self.client_if,
            "type",
            "veth",
            "peer",
            "name",
            &self.balancer_if,
            "netns",
            b.name(),
        ])?;
        c.ip(&[
            "addr",
            "add",
            &format!("{}/24", Self::CLIENT_V4),
            "dev",
            &self.client_if,
        ])?;
        b.ip(&[
            "addr",
            "add",
            &format!("{}/24", Self::BALANCER_V4),
            "dev",
            &self.balancer_if,
        ])?;
        // nodad: addresses usable at once, no 1-2 s wait for duplicate address detection.
        c.ip(&[
            "addr",
            "add",
            &format!("{}/64", Self::CLIENT_V6),
            "dev",
            &self.client_if,
            "nodad",
        ])?;
        b.ip(&[
            "addr",
            "add",
            &format!("{}/64", Self::BALANCER_V6),
            "dev",
            &self.balancer_if,
            "nodad",
        ])?;
        c.ip(&["link", "set", &self.client_if, "up"])?;
        b.ip(&["link", "set", &self.balancer_if, "up"])?;
        for vip in vips {
            let v6 = vip.contains(':');
            let (prefix, via) = if v6 {
                ("128", Self::BALANCER_V6)
            } else {
                ("32", Self::BALANCER_V4)
            };
            b.ip(&["addr", "add", &format!("{vip}/{prefix}"), "dev", "lo"])?;
            c.ip(&["route", "add", &format!("{vip}/{prefix}"), "via", via])?;
        }
        Ok(())
    }

    /// Whether an XDP program is attached to the balancer's veth (per `ip -d link`).
    pub fn balancer_has_xdp(&self) -> anyhow::Result<bool> {
        let link = crate::run_in(
            &self.balancer_path(),
            "ip",
            &["-d", "link", "show", &self.balancer_if],
        )?;
        Ok(link.contains("prog/xdp"))
    }

    pub fn client_path(&self) -> String {
        self.client.path()
    }

    pub fn balancer_path(&self) -> String {
        self.balancer.path()
    }
}
