//! The proxy's Prometheus metrics, updated per request and registered by the admin endpoint.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub pool: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub pool: String,
    pub server: String,
}

type DurationFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: DurationFamily,
    pub connections: Family<ListenerLabels, Gauge>,
    pub connections_accepted: Family<ListenerLabels, Counter>,
    pub upstream_connect_failures: Family<ServerLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    // 1 ms to ~65 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 17,
    ))
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            connections: Family::default(),
            connections_accepted: Family::default(),
            upstream_connect_failures: Family::default(),
        }
    }
}

impl HttpMetrics {
    /// Adds the families to `registry` (they share their values with `self`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "balancer_http_requests",
            "HTTP requests answered, by route, pool and status code",
            self.requests.clone(),
        );
        registry.register(
            "balancer_http_request_duration_seconds",
            "Time from the request head to the end of the response body",
            self.duration.clone(),
        );
        registry.register(
            "balancer_http_connections",
            "Client connections open, by listener",
            self.connections.clone(),
        );
        registry.register(
            "balancer_http_connections_accepted",
            "Client connections accepted, by listener",
            self.connections_accepted.clone(),
        );
        registry.register(
            "balancer_upstream_connect_failures",
            "Failed connects to pool servers",
            self.upstream_connect_failures.clone(),
        );
    }
}
