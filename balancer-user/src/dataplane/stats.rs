//! Reading the per-CPU counters and summing them over CPUs.

use std::net::IpAddr;

use aya::maps::{MapData, PerCpuArray};
use balancer_common::{Action, Counter, PacketReason};
use serde::Serialize;

use crate::config::{ForwardMode, Protocol};

/// What the control plane knows of a VIP it wrote into the map.
#[derive(Debug, Clone, Serialize)]
pub struct VipInfo {
    pub id: u32,
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub forward: ForwardMode,
}

#[derive(Debug, Clone, Serialize)]
pub struct VipStats {
    #[serde(flatten)]
    pub vip: VipInfo,
    /// Counters per XDP verdict, in `Action::ALL` order.
    #[serde(serialize_with = "serialize_by_action")]
    pub by_action: [Counter; Action::COUNT as usize],
}

impl VipStats {
    pub fn total(&self) -> Counter {
        let mut total = Counter::default();
        self.by_action.iter().for_each(|c| total.add(c));
        total
    }
}

/// A point-in-time view of every XDP counter, summed over CPUs.
#[derive(Debug, Clone, Serialize)]
pub struct XdpStats {
    pub vips: Vec<VipStats>,
    #[serde(serialize_with = "serialize_by_reason")]
    pub by_reason: [Counter; PacketReason::COUNT as usize],
}

/// Owns the stats maps (taken out of the loaded object) so readers need no lock on the program.
pub struct StatsReader {
    vip_stats: PerCpuArray<MapData, Counter>,
    reason_stats: PerCpuArray<MapData, Counter>,
    vips: Vec<VipInfo>,
}

impl StatsReader {
    pub(super) fn new(
        vip_stats: PerCpuArray<MapData, Counter>,
        reason_stats: PerCpuArray<MapData, Counter>,
        vips: Vec<VipInfo>,
    ) -> Self {
        Self {
            vip_stats,
            reason_stats,
            vips,
        }
    }

    pub fn vips(&self) -> &[VipInfo] {
        &self.vips
    }

    pub fn read(&self) -> Result<XdpStats, aya::maps::MapError> {
        let mut vips = Vec::with_capacity(self.vips.len());
        for vip in &self.vips {
            let mut by_action = [Counter::default(); Action::COUNT as usize];
            for action in Action::ALL {
                by_action[action as usize] =
                    sum_cpus(&self.vip_stats, action.vip_stats_index(vip.id))?;
            }
            vips.push(VipStats {
                vip: vip.clone(),
                by_action,
            });
        }
        let mut by_reason = [Counter::default(); PacketReason::COUNT as usize];
        for reason in PacketReason::ALL {
            by_reason[reason as usize] = sum_cpus(&self.reason_stats, reason as u32)?;
        }
        Ok(XdpStats { vips, by_reason })
    }
}

fn sum_cpus(
    map: &PerCpuArray<MapData, Counter>,
    index: u32,
) -> Result<Counter, aya::maps::MapError> {
    let mut total = Counter::default();
    map.get(&index, 0)?.iter().for_each(|c| total.add(c));
    Ok(total)
}

#[derive(Serialize)]
struct CounterJson {
    packets: u64,
    bytes: u64,
}

/// `{label: {packets, bytes}, …}` in the order given.
fn serialize_labelled<'a, S: serde::Serializer>(
    s: S,
    entries: impl ExactSizeIterator<Item = (&'a str, Counter)>,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(entries.len()))?;
    for (label, c) in entries {
        map.serialize_entry(
            label,
            &CounterJson {
                packets: c.packets,
                bytes: c.bytes,
            },
        )?;
    }
    map.end()
}

fn serialize_by_action<S: serde::Serializer>(
    counters: &[Counter; Action::COUNT as usize],
    s: S,
) -> Result<S::Ok, S::Error> {
    serialize_labelled(
        s,
        Action::ALL
            .iter()
            .map(|a| (a.label(), counters[*a as usize])),
    )
}

fn serialize_by_reason<S: serde::Serializer>(
    counters: &[Counter; PacketReason::COUNT as usize],
    s: S,
) -> Result<S::Ok, S::Error> {
    serialize_labelled(
        s,
        PacketReason::ALL
            .iter()
            .map(|r| (r.label(), counters[*r as usize])),
    )
}
