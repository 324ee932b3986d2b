//! `GET /metrics`: Prometheus/OpenMetrics text, read from the maps at scrape time.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::AdminContext;
use crate::dataplane::XdpStats;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn render(context: &AdminContext) -> Result<String, aya::maps::MapError> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BuildInfo));
    if let Some(xdp) = &context.xdp {
        let stats = xdp.stats.read()?;
        registry.register_collector(Box::new(XdpCollector {
            interface: xdp.interface.clone(),
            mode: xdp.mode.as_str(),
            stats,
        }));
    }
    let mut body = String::new();
    encode(&mut body, &registry).expect("writing to a String cannot fail");
    Ok(body)
}

#[derive(Debug)]
struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "balancer_build_info",
            "Version of the running balancer",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1).encode(family.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)
    }
}

#[derive(Debug)]
struct XdpCollector {
    interface: String,
    mode: &'static str,
    stats: XdpStats,
}

impl Collector for XdpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "balancer_xdp_attached",
                "1 while the XDP program is attached to the interface",
                None,
                MetricType::Gauge,
            )?;
            let labels = [("interface", self.interface.as_str()), ("mode", self.mode)];
            ConstGauge::new(1).encode(family.encode_family(&labels)?)?;
        }
        for (name, help, pick) in [
            (
                "balancer_xdp_packets",
                "Packets for each VIP by XDP verdict",
                PACKETS,
            ),
            (
                "balancer_xdp_bytes",
                "Bytes (whole frames) for each VIP by XDP verdict",
                BYTES,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for vip in &self.stats.vips {
                for action in balancer_common::Action::ALL {
                    let labels = [("vip", vip.vip.name.as_str()), ("action", action.label())];
                    let value = pick(&vip.by_action[action as usize]);
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        for (name, help, pick) in [
            (
                "balancer_xdp_reason_packets",
                "Packets seen by the XDP program by reason",
                PACKETS,
            ),
            (
                "balancer_xdp_reason_bytes",
                "Bytes seen by the XDP program by reason",
                BYTES,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for reason in balancer_common::PacketReason::ALL {
                let value = pick(&self.stats.by_reason[reason as usize]);
                ConstCounter::new(value)
                    .encode(family.encode_family(&[("reason", reason.label())])?)?;
            }
        }
        Ok(())
    }
}

type Pick = fn(&balancer_common::Counter) -> u64;
const PACKETS: Pick = |c| c.packets;
const BYTES: Pick = |c| c.bytes;
