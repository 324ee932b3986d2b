//! The netlink side of next-hop resolution against the real kernel, in the balancer
//! host's namespace of an L4 topology (veth0 198.18.0.2/24 + 2001:2::2/64, b1 at .11 / ::b):
//! an on-link backend and one behind a gateway (IPv4 and IPv6, neighbours solicited until
//! resolved), a neighbour nobody answers for, unreachable / prohibit / blackhole routes,
//! no route at all, a local address, and the interface's addresses for `balancer decap`.
//! The resolver runs in-process on a thread that entered the namespace.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context, ensure};
use balancer::dataplane::nexthop::{self, NextHop, NextHopError};
use balancer_tests::{Family, L4Topology};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mac_bytes(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

/// Every answer the test needs, asked from inside the namespace.
struct Answers {
    at_start: Vec<(IpAddr, Result<NextHop, NextHopError>)>,
    others: Vec<(IpAddr, Result<NextHop, NextHopError>)>,
    addresses: Vec<IpAddr>,
}

#[test]
fn resolves_against_the_kernel() -> anyhow::Result<()> {
    let topology = L4Topology::new("nhnl", 1)?;
    let lb = topology.lb();
    let b1_v4 = topology.backend_addr(1, Family::V4);
    let b1_v6 = topology.backend_addr(1, Family::V6);
    lb.ip(&["route", "add", "198.18.50.0/24", "via", &b1_v4.to_string()])?;
    lb.ip(&[
        "-6",
        "route",
        "add",
        "2001:2:50::/48",
        "via",
        &b1_v6.to_string(),
    ])?;
    lb.ip(&["route", "add", "unreachable", "198.18.60.0/24"])?;
    lb.ip(&["route", "add", "prohibit", "198.18.61.0/24"])?;
    lb.ip(&["route", "add", "blackhole", "198.18.62.0/24"])?;
    lb.ip(&["-6", "route", "add", "unreachable", "2001:2:60::/48"])?;
    let interface = topology.lb_interface().to_string();

    let answers = lb.run(move || -> anyhow::Result<Answers> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            // As a start does: solicited and asked again until resolved (b1 answers).
            let at_start = nexthop::resolve_all(
                &[b1_v4, b1_v6, ip("198.18.50.1"), ip("2001:2:50::1"), b1_v4],
                Duration::from_secs(3),
            )
            .await;
            let resolver = nexthop::Resolver::open()?;
            let mut others = Vec::new();
            for address in [
                "198.18.0.99",
                "198.18.60.1",
                "198.18.61.1",
                "198.18.62.1",
                "2001:2:60::1",
                "203.0.113.1",
                "198.18.0.2",
            ] {
                others.push((ip(address), resolver.resolve(ip(address)).await));
            }
            let addresses = nexthop::interface_addresses(&interface).await?;
            Ok(Answers {
                at_start,
                others,
                addresses,
            })
        })
    })??;

    let b1_mac = mac_bytes(&topology.backend_mac(1));
    let lb_mac = mac_bytes(&topology.lb_mac());
    ensure!(
        answers.at_start.len() == 4,
        "duplicates are resolved once: {:?}",
        answers.at_start
    );
    for (backend, result) in &answers.at_start {
        let hop = result
            .as_ref()
            .map_err(|err| anyhow::anyhow!("{err}"))
            .with_context(|| format!("resolving {backend}"))?;
        let (source, gateway) = match backend {
            IpAddr::V4(_) => (
                IpAddr::from(L4Topology::LB_V4),
                (*backend == ip("198.18.50.1")).then_some(b1_v4),
            ),
            IpAddr::V6(_) => (
                IpAddr::from(L4Topology::LB_V6),
                (*backend == ip("2001:2:50::1")).then_some(b1_v6),
            ),
        };
        ensure!(
            hop.interface == topology.lb_interface()
                && hop.dst_mac == b1_mac
                && hop.src_mac == lb_mac
                && hop.src_addr == source
                && hop.mtu == 1500
                && hop.via_gateway == gateway,
            "{backend}: {hop:?}"
        );
    }

    let other = |address: &str| -> &Result<NextHop, NextHopError> {
        &answers
            .others
            .iter()
            .find(|(a, _)| *a == ip(address))
            .expect("asked")
            .1
    };
    let nobody = other("198.18.0.99").as_ref().unwrap_err();
    ensure!(
        nobody.is_transient() && nobody.pending_neighbour() == Some(ip("198.18.0.99")),
        "{nobody}"
    );
    for (address, reason) in [
        ("198.18.60.1", "no route to host"),
        ("198.18.61.1", "prohibited"),
        ("198.18.62.1", "blackhole"),
        ("2001:2:60::1", "unreachable"),
        ("203.0.113.1", "network is unreachable"),
    ] {
        let err = other(address).as_ref().unwrap_err();
        ensure!(
            matches!(err, NextHopError::NoRoute { .. })
                && err.invalidates_last_hop()
                && err.to_string().contains(reason),
            "{address}: {err} (want a NoRoute saying {reason:?})"
        );
    }
    let local = other("198.18.0.2").as_ref().unwrap_err();
    ensure!(
        matches!(local, NextHopError::NotUnicast { kind, .. } if kind == "local"),
        "{local}"
    );

    ensure!(
        answers.addresses.contains(&IpAddr::from(L4Topology::LB_V4))
            && answers.addresses.contains(&IpAddr::from(L4Topology::LB_V6))
            && answers.addresses.iter().all(|a| match a {
                IpAddr::V6(v6) => !v6.is_unicast_link_local(),
                IpAddr::V4(_) => true,
            }),
        "addresses of veth0: {:?}",
        answers.addresses
    );
    Ok(())
}
