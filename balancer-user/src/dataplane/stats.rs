//! Reading the per-CPU counters and summing them over CPUs.

use std::net::IpAddr;

use aya::maps::{MapData, PerCpuArray};
use balancer_common::{Action, Counter, FlowEvent, PacketReason};
use serde::Serialize;

use super::control::{BackendModel, VipModel};
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
    /// Forwarding VIPs: each backend with its state and forwarded packets.
    pub backends: Vec<BackendStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendStats {
    #[serde(flatten)]
    pub backend: BackendModel,
    pub packets: u64,
    pub bytes: u64,
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
    /// Connection-table events, in `FlowEvent::ALL` order.
    #[serde(serialize_with = "serialize_flow_events")]
    pub flow_events: [u64; FlowEvent::COUNT as usize],
}

/// Owns the stats maps (taken out of the loaded object) so readers need no lock on the program.
pub struct StatsReader {
    vip_stats: PerCpuArray<MapData, Counter>,
    reason_stats: PerCpuArray<MapData, Counter>,
    backend_stats: PerCpuArray<MapData, Counter>,
    flow_stats: PerCpuArray<MapData, u64>,
}

impl StatsReader {
    pub(super) fn new(
        vip_stats: PerCpuArray<MapData, Counter>,
        reason_stats: PerCpuArray<MapData, Counter>,
        backend_stats: PerCpuArray<MapData, Counter>,
        flow_stats: PerCpuArray<MapData, u64>,
    ) -> Self {
        Self {
            vip_stats,
            reason_stats,
            backend_stats,
            flow_stats,
        }
    }

    /// Reads the counters of the given VIPs (a snapshot of the control model).
    pub fn read(&self, vips: &[VipModel]) -> Result<XdpStats, aya::maps::MapError> {
        let mut out = Vec::with_capacity(vips.len());
        for vip in vips {
            let mut by_action = [Counter::default(); Action::COUNT as usize];
            for action in Action::ALL {
                by_action[action as usize] =
                    sum_cpus(&self.vip_stats, action.vip_stats_index(vip.info.id))?;
            }
            let mut backends = Vec::with_capacity(vip.backends.len());
            for backend in &vip.backends {
                let counter = sum_cpus(&self.backend_stats, backend.slot)?;
                backends.push(BackendStats {
                    backend: backend.clone(),
                    packets: counter.packets,
                    bytes: counter.bytes,
                });
            }
            out.push(VipStats {
                vip: vip.info.clone(),
                by_action,
                backends,
            });
        }
        let mut by_reason = [Counter::default(); PacketReason::COUNT as usize];
        for reason in PacketReason::ALL {
            by_reason[reason as usize] = sum_cpus(&self.reason_stats, reason as u32)?;
        }
        let mut flow_events = [0u64; FlowEvent::COUNT as usize];
        for event in FlowEvent::ALL {
            flow_events[event as usize] = self
                .flow_stats
                .get(&(event as u32), 0)?
                .iter()
                .fold(0u64, |sum, v| sum.wrapping_add(*v));
        }
        Ok(XdpStats {
            vips: out,
            by_reason,
            flow_events,
        })
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

fn serialize_flow_events<S: serde::Serializer>(
    counts: &[u64; FlowEvent::COUNT as usize],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(counts.len()))?;
    for event in FlowEvent::ALL {
        map.serialize_entry(event.label(), &counts[event as usize])?;
    }
    map.end()
}
