//! The proxy's Prometheus metrics, updated per request and registered by the admin endpoint.
//!
//! A family lookup hashes and clones its labels under a lock; the per-request series are
//! therefore looked up once per route and config generation (`RouteMetrics`) and kept, and the
//! per-connection ones once per listener and generation (`ListenerMetrics`).

use std::sync::{Mutex, OnceLock, PoisonError};

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

/// What the header policy did, and why (a fixed word such as "underscore" or
/// "x-forwarded-for:malformed").
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub listener: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RewriteLabels {
    pub route: String,
    /// "headers" (Location-like and Set-Cookie values) or "html" (HTML bodies).
    pub what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CompressLabels {
    pub route: String,
    /// The content coding: "br", "zstd" or "gzip".
    pub encoding: &'static str,
}

type DurationFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: DurationFamily,
    pub connections: Family<ListenerLabels, Gauge>,
    pub connections_accepted: Family<ListenerLabels, Counter>,
    pub upstream_connect_failures: Family<ServerLabels, Counter>,
    /// Request header fields removed from client requests, by reason.
    pub headers_removed: Family<PolicyLabels, Counter>,
    /// Forwarded headers from trusted proxies that were malformed, so not believed.
    pub forwarded_anomalies: Family<PolicyLabels, Counter>,
    /// Requests refused by the header policy (disallowed host, underscore header).
    pub requests_refused: Family<PolicyLabels, Counter>,
    /// Response headers and bodies rewritten to the public URL.
    pub rewrites: Family<RewriteLabels, Counter>,
    /// Responses compressed by the proxy (route `compress`), by coding.
    pub compressed: Family<CompressLabels, Counter>,
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
            headers_removed: Family::default(),
            forwarded_anomalies: Family::default(),
            requests_refused: Family::default(),
            rewrites: Family::default(),
            compressed: Family::default(),
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
        registry.register(
            "balancer_http_headers_removed",
            "Request header fields removed before forwarding (untrusted forwarded headers, underscores, identity headers, CGI name collisions), by listener and reason",
            self.headers_removed.clone(),
        );
        registry.register(
            "balancer_http_forwarded_anomalies",
            "Malformed or repeated forwarded headers from trusted proxies, ignored, by listener and header",
            self.forwarded_anomalies.clone(),
        );
        registry.register(
            "balancer_http_requests_refused",
            "Requests refused by the header policy, by listener and reason",
            self.requests_refused.clone(),
        );
        registry.register(
            "balancer_http_rewrites",
            "Response headers and bodies rewritten to the public URL, by route",
            self.rewrites.clone(),
        );
        registry.register(
            "balancer_http_compressed_responses",
            "Responses the proxy compressed (route compress), by route and content coding",
            self.compressed.clone(),
        );
    }
}

/// One route's request series, looked up in the families on first use and kept for the life of
/// the config generation (a reload builds new ones, which find the same series again).
#[derive(Default)]
pub struct RouteMetrics {
    route: String,
    pool: String,
    duration: OnceLock<Histogram>,
    /// By status code; a route answers few distinct codes, so a short list.
    requests: Mutex<Vec<(u16, Counter)>>,
}

impl RouteMetrics {
    pub fn new(route: &str, pool: &str) -> RouteMetrics {
        RouteMetrics {
            route: route.to_owned(),
            pool: pool.to_owned(),
            ..RouteMetrics::default()
        }
    }

    /// Counts one answered request with `code` that took `seconds`.
    pub fn observe(&self, metrics: &HttpMetrics, code: u16, seconds: f64) {
        let counter = {
            let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
            match requests.iter().find(|(known, _)| *known == code) {
                Some((_, counter)) => counter.clone(),
                None => {
                    let counter = metrics
                        .requests
                        .get_or_create(&RequestLabels {
                            route: self.route.clone(),
                            pool: self.pool.clone(),
                            code,
                        })
                        .clone();
                    requests.push((code, counter.clone()));
                    counter
                }
            }
        };
        counter.inc();
        self.duration
            .get_or_init(|| {
                metrics
                    .duration
                    .get_or_create(&RouteLabels {
                        route: self.route.clone(),
                    })
                    .clone()
            })
            .observe(seconds);
    }
}

/// One listener's connection series, looked up on first use and kept for the life of the
/// config generation, as [`RouteMetrics`]: every accepted connection counts in both.
#[derive(Default)]
pub struct ListenerMetrics {
    listener: String,
    accepted: OnceLock<Counter>,
    open: OnceLock<Gauge>,
}

impl ListenerMetrics {
    pub fn new(listener: &str) -> ListenerMetrics {
        ListenerMetrics {
            listener: listener.to_owned(),
            ..ListenerMetrics::default()
        }
    }

    fn labels(&self) -> ListenerLabels {
        ListenerLabels {
            listener: self.listener.clone(),
        }
    }

    /// `balancer_http_connections_accepted_total` of this listener.
    pub fn accepted(&self, metrics: &HttpMetrics) -> &Counter {
        self.accepted.get_or_init(|| {
            metrics
                .connections_accepted
                .get_or_create(&self.labels())
                .clone()
        })
    }

    /// `balancer_http_connections` of this listener.
    pub fn open(&self, metrics: &HttpMetrics) -> &Gauge {
        self.open
            .get_or_init(|| metrics.connections.get_or_create(&self.labels()).clone())
    }
}
