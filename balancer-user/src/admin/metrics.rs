//! `GET /metrics`: Prometheus/OpenMetrics text, read from the maps at scrape time.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::AdminContext;
use crate::dataplane::XdpStats;
use crate::proxy::server_health::Transition;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn render(context: &AdminContext) -> Result<String, aya::maps::MapError> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BuildInfo));
    if let Some(proxy) = &context.proxy {
        proxy.metrics().register(&mut registry);
        registry.register_collector(Box::new(PoolServers::read(&proxy.state())));
    }
    if let Some(xdp) = &context.xdp {
        let stats = xdp.read()?;
        registry.register_collector(Box::new(XdpCollector {
            interface: xdp.interface.clone(),
            mode: xdp.mode.as_str(),
            stats,
        }));
    }
    if let Some(announcer) = &context.announce {
        registry.register_collector(Box::new(AnnounceCollector(announcer.view())));
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

/// `[announce]`: what this host announces, as of the announcer's last pass.
#[derive(Debug)]
struct AnnounceCollector(crate::announce::AnnounceView);

impl Collector for AnnounceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let family = encoder.encode_descriptor(
                "balancer_announce_withdrawn",
                "1 while an operator has withdrawn this host (POST /api/announce/withdraw)",
                None,
                MetricType::Gauge,
            )?;
            let withdrawn = i64::from(self.0.operator_withdrawn);
            ConstGauge::new(withdrawn).encode(family)?;
        }
        let mut family = encoder.encode_descriptor(
            "balancer_vip_announced",
            "1 while the VIP's address is announced (its route is in announce.table)",
            None,
            MetricType::Gauge,
        )?;
        for vip in &self.0.vips {
            let address = vip.address.to_string();
            let announced = i64::from(self.0.announced.contains(&vip.address));
            let labels = [("vip", vip.name.as_str()), ("address", address.as_str())];
            ConstGauge::new(announced).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
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
        for (name, help, pick) in [
            (
                "balancer_xdp_backend_packets",
                "Packets forwarded to each VIP backend",
                PACKETS,
            ),
            (
                "balancer_xdp_backend_bytes",
                "Bytes forwarded to each VIP backend (frames as sent: after encapsulation)",
                BYTES,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for vip in &self.stats.vips {
                for backend in &vip.backends {
                    let address = backend.backend.address.to_string();
                    let labels = [
                        ("vip", vip.vip.name.as_str()),
                        ("backend", address.as_str()),
                    ];
                    let value = pick(&balancer_common::Counter {
                        packets: backend.packets,
                        bytes: backend.bytes,
                    });
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "balancer_xdp_backend_up",
                "1 when the VIP backend takes new flows, 0 when draining or down",
                None,
                MetricType::Gauge,
            )?;
            for vip in &self.stats.vips {
                for backend in &vip.backends {
                    let address = backend.backend.address.to_string();
                    let labels = [
                        ("vip", vip.vip.name.as_str()),
                        ("backend", address.as_str()),
                        ("state", backend.backend.state),
                    ];
                    let up = i64::from(backend.backend.state == "up");
                    ConstGauge::new(up).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "balancer_xdp_flow_events",
                "Connection-table lookups of forwarded packets by outcome",
                None,
                MetricType::Counter,
            )?;
            for event in balancer_common::FlowEvent::ALL {
                ConstCounter::new(self.stats.flow_events[event as usize])
                    .encode(family.encode_family(&[("event", event.label())])?)?;
            }
        }
        Ok(())
    }
}

/// The pool servers' state at scrape time.
#[derive(Debug)]
struct PoolServers {
    /// (pool, server, takes new sessions, changes by `Transition::ALL`, requests in flight).
    servers: Vec<(String, String, bool, Vec<u64>, u32)>,
    /// (pool, queue depth, requests that waited, their total wait in µs, queue timeouts).
    queues: Vec<(String, usize, u64, u64, u64)>,
    /// (pool, retries made, retries the budget refused).
    retries: Vec<(String, u64, u64)>,
}

impl PoolServers {
    fn read(state: &crate::proxy::proxy_state::ProxyState) -> PoolServers {
        let now = std::time::Instant::now();
        let mut servers = Vec::new();
        let mut queues = Vec::new();
        let mut retries = Vec::new();
        for (name, pool) in &state.pools {
            retries.push((
                name.clone(),
                pool.retry_budget
                    .made
                    .load(std::sync::atomic::Ordering::Relaxed),
                pool.retry_budget
                    .refused
                    .load(std::sync::atomic::Ordering::Relaxed),
            ));
            let stats = &pool.queue_stats;
            let count = |counter: &std::sync::atomic::AtomicU64| {
                counter.load(std::sync::atomic::Ordering::Relaxed)
            };
            queues.push((
                name.clone(),
                pool.queue_depth(),
                count(&stats.waited),
                count(&stats.wait_micros),
                count(&stats.timeouts),
            ));
            for (index, server) in pool.servers.iter().enumerate() {
                let changes = Transition::ALL
                    .iter()
                    .map(|&to| server.health.changes(to))
                    .collect();
                let up = pool.view(index, now).takes_new;
                servers.push((
                    name.clone(),
                    server.label.to_string(),
                    up,
                    changes,
                    server.in_flight(),
                ));
            }
        }
        servers.sort();
        queues.sort();
        retries.sort();
        PoolServers {
            servers,
            queues,
            retries,
        }
    }
}

impl Collector for PoolServers {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "balancer_backend_up",
                "1 when the pool server takes new sessions (healthy, enabled, not ejected)",
                None,
                MetricType::Gauge,
            )?;
            for (pool, server, up, _, _) in &self.servers {
                let labels = [("pool", pool.as_str()), ("server", server.as_str())];
                ConstGauge::new(i64::from(*up)).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "balancer_backend_in_flight",
                "Requests in flight to the pool server (what max_conns limits)",
                None,
                MetricType::Gauge,
            )?;
            for (pool, server, _, _, in_flight) in &self.servers {
                let labels = [("pool", pool.as_str()), ("server", server.as_str())];
                ConstGauge::new(i64::from(*in_flight)).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "balancer_pool_queue_depth",
                "Requests waiting for a server below its max_conns",
                None,
                MetricType::Gauge,
            )?;
            for (pool, depth, ..) in &self.queues {
                ConstGauge::new(i64::try_from(*depth).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&[("pool", pool.as_str())])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "balancer_pool_queued_requests",
                "Requests that waited in the pool's queue",
                None,
                MetricType::Counter,
            )?;
            for (pool, _, waited, ..) in &self.queues {
                ConstCounter::new(*waited)
                    .encode(family.encode_family(&[("pool", pool.as_str())])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "balancer_pool_queue_wait_seconds",
                "Time requests spent in the pool's queue",
                None,
                MetricType::Counter,
            )?;
            for (pool, _, _, micros, _) in &self.queues {
                ConstCounter::new(*micros as f64 / 1e6)
                    .encode(family.encode_family(&[("pool", pool.as_str())])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "balancer_pool_queue_timeouts",
                "Requests answered 503 after queue_timeout in the pool's queue",
                None,
                MetricType::Counter,
            )?;
            for (pool, .., timeouts) in &self.queues {
                ConstCounter::new(*timeouts)
                    .encode(family.encode_family(&[("pool", pool.as_str())])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "balancer_upstream_retries",
                "Requests sent again to another server after one ended without an answer",
                None,
                MetricType::Counter,
            )?;
            for (pool, made, _) in &self.retries {
                ConstCounter::new(*made)
                    .encode(family.encode_family(&[("pool", pool.as_str())])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "balancer_upstream_retries_refused",
                "Retries the pool's retry budget refused",
                None,
                MetricType::Counter,
            )?;
            for (pool, _, refused) in &self.retries {
                ConstCounter::new(*refused)
                    .encode(family.encode_family(&[("pool", pool.as_str())])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "balancer_backend_state_changes",
            "Changes of a pool server's state (health, passive ejection, operator), by new state",
            None,
            MetricType::Counter,
        )?;
        for (pool, server, _, changes, _) in &self.servers {
            for (to, count) in Transition::ALL.iter().zip(changes) {
                let labels = [
                    ("pool", pool.as_str()),
                    ("server", server.as_str()),
                    ("to", to.label()),
                ];
                ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

type Pick = fn(&balancer_common::Counter) -> u64;
const PACKETS: Pick = |c| c.packets;
const BYTES: Pick = |c| c.bytes;
