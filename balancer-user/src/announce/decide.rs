//! Which VIP addresses this host announces now: a pure function of the process's state, the
//! operator's withdraw and the backends' states, so every rule is unit-tested without a kernel.

use std::{collections::BTreeSet, net::IpAddr};

use serde::Serialize;

use crate::dataplane::VipModel;

/// What the decision depends on besides the VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// The process serves (false from SIGTERM on: the routers must stop sending first).
    pub serving: bool,
    /// The XDP program is attached: without it nothing forwards the VIPs' packets.
    pub xdp_attached: bool,
    /// An operator withdrew the whole host (`POST /api/announce/withdraw`).
    pub withdrawn: bool,
}

/// One VIP as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipHealth {
    pub name: String,
    pub address: IpAddr,
    /// `forward = "local"`: served by this host's own proxy, which is up while the process is.
    pub local: bool,
    /// Backends in the data plane's `up` state with a weight above 0: those that take new
    /// flows. `draining` ones keep their flows but take no new ones, so they do not count.
    pub up_backends: usize,
}

/// The decision for one VIP, as `/api/state` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub name: String,
    pub address: IpAddr,
    pub announced: bool,
    pub reason: String,
}

/// The VIPs of the data plane's model, as the decision needs them.
pub fn vip_health(vips: &[VipModel]) -> Vec<VipHealth> {
    vips.iter()
        .map(|vip| VipHealth {
            name: vip.info.name.clone(),
            address: vip.info.address,
            local: !vip.forwards(),
            up_backends: vip
                .backends
                .iter()
                .filter(|backend| {
                    backend.state_code == balancer_common::BACKEND_UP && backend.weight > 0
                })
                .count(),
        })
        .collect()
}

/// Each VIP's verdict, in the order given.
pub fn verdicts(host: Host, vips: &[VipHealth]) -> Vec<Verdict> {
    vips.iter()
        .map(|vip| {
            let refused = if !host.serving {
                Some("the process is stopping".to_string())
            } else if !host.xdp_attached {
                Some("the XDP program is not attached".to_string())
            } else if host.withdrawn {
                Some("withdrawn by the operator".to_string())
            } else if !vip.local && vip.up_backends == 0 {
                Some("no backend is up".to_string())
            } else {
                None
            };
            let reason = refused.clone().unwrap_or_else(|| {
                if vip.local {
                    "served by this host's proxy".to_string()
                } else {
                    format!("{} backends up", vip.up_backends)
                }
            });
            Verdict {
                name: vip.name.clone(),
                address: vip.address,
                announced: refused.is_none(),
                reason,
            }
        })
        .collect()
}

/// The addresses to announce: a route is per address, and several VIPs (ports, protocols) may
/// share one; the address is announced while any of them should be, because the router cannot
/// send one port here and another elsewhere.
pub fn addresses(verdicts: &[Verdict]) -> BTreeSet<IpAddr> {
    verdicts
        .iter()
        .filter(|verdict| verdict.announced)
        .map(|verdict| verdict.address)
        .collect()
}

/// The routes to add and to remove to go from `installed` to `wanted`. Removals come first in
/// the caller's order of work: a withdraw should not wait behind additions.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub remove: Vec<IpAddr>,
    pub add: Vec<IpAddr>,
}

pub fn changes(installed: &BTreeSet<IpAddr>, wanted: &BTreeSet<IpAddr>) -> Changes {
    Changes {
        remove: installed.difference(wanted).copied().collect(),
        add: wanted.difference(installed).copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: Host = Host {
        serving: true,
        xdp_attached: true,
        withdrawn: false,
    };

    fn vip(name: &str, address: &str, up_backends: usize) -> VipHealth {
        VipHealth {
            name: name.to_string(),
            address: address.parse().expect("test address"),
            local: false,
            up_backends,
        }
    }

    fn announced(host: Host, vips: &[VipHealth]) -> Vec<String> {
        addresses(&verdicts(host, vips))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_vip_with_an_up_backend_is_announced() {
        let vips = [vip("web", "198.18.0.10", 1), vip("v6", "2001:2::10", 3)];
        assert_eq!(announced(UP, &vips), ["198.18.0.10", "2001:2::10"]);
        assert_eq!(verdicts(UP, &vips)[1].reason, "3 backends up");
    }

    #[test]
    fn a_vip_without_an_up_backend_is_not() {
        let vips = [vip("web", "198.18.0.10", 0), vip("dns", "198.18.0.11", 2)];
        assert_eq!(announced(UP, &vips), ["198.18.0.11"]);
        assert_eq!(verdicts(UP, &vips)[0].reason, "no backend is up");
    }

    #[test]
    fn a_local_vip_is_announced_while_the_host_serves() {
        let mut local = vip("l7", "198.18.0.12", 0);
        local.local = true;
        assert_eq!(announced(UP, std::slice::from_ref(&local)), ["198.18.0.12"]);
        let stopping = Host {
            serving: false,
            ..UP
        };
        assert!(announced(stopping, &[local]).is_empty());
    }

    #[test]
    fn each_host_condition_withdraws_everything() {
        let vips = [vip("web", "198.18.0.10", 2)];
        for (host, reason) in [
            (
                Host {
                    serving: false,
                    ..UP
                },
                "the process is stopping",
            ),
            (
                Host {
                    xdp_attached: false,
                    ..UP
                },
                "the XDP program is not attached",
            ),
            (
                Host {
                    withdrawn: true,
                    ..UP
                },
                "withdrawn by the operator",
            ),
        ] {
            let verdict = &verdicts(host, &vips)[0];
            assert!(!verdict.announced, "{host:?} must withdraw");
            assert_eq!(verdict.reason, reason);
        }
    }

    #[test]
    fn an_address_shared_by_vips_is_announced_while_any_of_them_is_up() {
        let vips = [
            vip("http", "198.18.0.10", 0),
            vip("https", "198.18.0.10", 1),
        ];
        assert_eq!(announced(UP, &vips), ["198.18.0.10"]);
        let vips = [
            vip("http", "198.18.0.10", 0),
            vip("https", "198.18.0.10", 0),
        ];
        assert!(announced(UP, &vips).is_empty());
    }

    #[test]
    fn changes_remove_what_is_no_longer_wanted_and_add_what_is_new() {
        let set = |addresses: &[&str]| -> BTreeSet<IpAddr> {
            addresses
                .iter()
                .map(|a| a.parse().expect("address"))
                .collect()
        };
        let changes = changes(
            &set(&["198.18.0.10", "198.18.0.11"]),
            &set(&["198.18.0.11", "2001:2::10"]),
        );
        assert_eq!(
            changes.remove,
            vec!["198.18.0.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(changes.add, vec!["2001:2::10".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            super::changes(&set(&["198.18.0.10"]), &set(&["198.18.0.10"])),
            Changes::default(),
            "nothing to do when the table already holds what is wanted"
        );
    }
}
