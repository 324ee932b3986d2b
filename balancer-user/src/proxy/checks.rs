//! How a pool's servers are checked: the check of each server, and the connector its HTTP
//! checks go through (the proxy's own, so a check sees what a request would). The results go
//! to the pool (`pool.rs`, its `Subscriber`).

use std::{pin::Pin, sync::Arc, time::Duration};

use super::{
    upstream::{ConnTimeouts, ServerConnections},
    upstream_tls::ServerTls,
};
use crate::config::{KeepaliveConfig, PoolConfig, PoolHealthConfig, ServerUrl};
use crate::health::{
    CheckRequest, CheckSpec, Connector, HttpProbe, HttpVia, Probe, ProbeError, accepts_2xx_3xx,
};

/// What a pool's checks need of it: its config and its TLS client configs.
pub struct CheckedPool<'a> {
    pub config: &'a PoolConfig,
    /// The client config of `health.tls` checks to http:// servers.
    pub check_tls: Option<&'a Arc<rustls::ClientConfig>>,
    /// The client config of the pool's https:// servers.
    pub server_tls: Option<&'a Arc<rustls::ClientConfig>>,
}

/// The active check of the server at `url`: `GET path` on a connection of its own, made by the
/// proxy's connector (TCP or unix socket, TLS with the pool's `tls_*` for an https://
/// server, h2c when the pool speaks it), so a check sees what a request would. With
/// `health.port` it goes to the server's host at that port; with `health.tls` (http://
/// servers) it speaks TLS there, verifying against `tls_ca_file` or not at all without it
/// (HAProxy `verify none`).
pub fn check_spec(pool: &CheckedPool, url: &ServerUrl, check: &PoolHealthConfig) -> CheckSpec {
    let url = match (url, check.port) {
        (ServerUrl::Http { host, .. }, Some(port)) => ServerUrl::Http {
            host: host.clone(),
            port,
        },
        (ServerUrl::Https { host, .. }, Some(port)) => ServerUrl::Https {
            host: host.clone(),
            port,
        },
        _ => url.clone(),
    };
    let via = match (&url, pool.check_tls) {
        (ServerUrl::Http { host, port }, Some(config)) => HttpVia::Tls {
            host: host.clone(),
            port: *port,
            config: config.clone(),
        },
        _ => HttpVia::Server {
            connector: Arc::new(CheckConnector {
                tls: pool
                    .server_tls
                    .and_then(|config| ServerTls::new(&url, &pool.config.tls, config)),
                url: url.clone(),
                h2c: pool.config.h2c,
            }),
            url,
        },
    };
    let expect = check.expect.clone();
    CheckSpec {
        probe: Probe::Http(HttpProbe {
            via,
            path: check.path.clone(),
            host: check.host.clone(),
            accepts: Arc::new(move |status| {
                if expect.is_empty() {
                    accepts_2xx_3xx(status)
                } else {
                    expect.contains(&status)
                }
            }),
        }),
        interval: check.interval,
        timeout: check.timeout,
    }
}

/// The proxy's connector for one server's checks: TCP or a unix socket, TLS with `tls` for an
/// https:// server, h2c when the pool speaks it.
struct CheckConnector {
    url: ServerUrl,
    h2c: bool,
    tls: Option<ServerTls>,
}

impl Connector for CheckConnector {
    fn may_be_h2(&self) -> bool {
        // An https:// server may pick h2 when the pool offers it.
        self.h2c || self.tls.as_ref().is_some_and(|tls| tls.offers_h2)
    }

    fn send(
        &self,
        request: CheckRequest,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<u16, ProbeError>> + Send + '_>> {
        Box::pin(async move {
            // reuse = false: the connection is made for this check and closed after it.
            let connections = ServerConnections::with_tls(
                self.url.clone(),
                KeepaliveConfig {
                    reuse: false,
                    idle_timeout: timeout.max(Duration::from_millis(1)),
                    max_idle: 0,
                },
                // The check's timeout covers the answer's head; its body is not read.
                ConnTimeouts {
                    connect: timeout,
                    body_gap: timeout,
                },
                self.h2c,
                self.tls.clone(),
            );
            let checkout = connections
                .checkout()
                .await
                .map_err(|err| ProbeError::Connector(err.to_string()))?;
            let mut request = request
                .map(|_| super::empty_body())
                .map(super::h1::request_body::BoxedBody::new);
            let response = checkout
                .send(&mut request)
                .await
                .map_err(|err| ProbeError::NoResponse(err.to_string()))?;
            Ok(response.status().as_u16())
        })
    }
}
