//! Active health checks of a pool's servers: one task per server sends `GET path` every
//! `interval` on a fresh connection made by the proxy's own connector (TCP or unix socket,
//! h2c when the pool speaks it), so a check sees what a request would, without borrowing a
//! kept-alive connection. Results go through the server's state (rise/fall, re-admission after
//! a passive ejection). The tasks end when the pool is deactivated or dropped.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use hyper::{
    Request,
    header::{CONNECTION, HOST, USER_AGENT},
};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::{Body, error, pool::Pool, upstream::ServerConnections};
use crate::config::{KeepaliveConfig, PoolHealthConfig, ServerUrl};
use crate::health::{CheckOutcome, USER_AGENT_VALUE, accepts_2xx_3xx};

/// Starts one checker per server of `pool`, until `stop` is cancelled.
pub fn spawn_checks(pool: &Arc<Pool>, check: &PoolHealthConfig, stop: &CancellationToken) {
    for index in 0..pool.servers.len() {
        tokio::spawn(check_loop(
            Arc::downgrade(pool),
            index,
            check.clone(),
            stop.clone(),
        ));
    }
}

async fn check_loop(
    pool: Weak<Pool>,
    index: usize,
    check: PoolHealthConfig,
    stop: CancellationToken,
) {
    let Some((url, h2c)) = pool
        .upgrade()
        .map(|pool| (pool.servers[index].config.url.clone(), pool.config.h2c))
    else {
        return;
    };
    // The first tick is at once: a new server is checked as soon as it is configured.
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = probe(&url, h2c, &check) => outcome,
        };
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.record_check(index, outcome.passed(), &outcome.to_string());
    }
}

/// One check of the server at `url`: passes when `GET path` answers, within `timeout`, with a
/// status in `expect` (empty: any 2xx or 3xx).
pub async fn probe(url: &ServerUrl, h2c: bool, check: &PoolHealthConfig) -> CheckOutcome {
    let attempt = async {
        // reuse = false: the connection is made for this check and closed after it.
        let connections = ServerConnections::new(
            url.clone(),
            KeepaliveConfig {
                reuse: false,
                idle_timeout: check.timeout.max(Duration::from_millis(1)),
                max_idle: 0,
            },
            check.timeout,
            h2c,
        );
        let host = check.host.clone().unwrap_or_else(|| url.authority());
        let mut request = Request::get(check.path.as_str())
            .header(HOST, host)
            .header(USER_AGENT, USER_AGENT_VALUE);
        if !h2c {
            // HTTP/2 has no Connection header (RFC 9113 §8.2.2).
            request = request.header(CONNECTION, "close");
        }
        let request: Request<Body> = request
            .body(error::empty())
            .map_err(|err| format!("invalid check request: {err}"))?;
        let checkout = connections
            .checkout()
            .await
            .map_err(|err| err.to_string())?;
        let response = checkout
            .send(request)
            .await
            .map_err(|err| format!("no response: {err}"))?;
        let status = response.status().as_u16();
        let accepted = if check.expect.is_empty() {
            accepts_2xx_3xx(status)
        } else {
            check.expect.contains(&status)
        };
        if accepted {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(Ok(())) => CheckOutcome::Passed,
        Ok(Err(why)) => CheckOutcome::Failed(why),
        Err(_) => CheckOutcome::Failed(format!("timeout after {:?}", check.timeout)),
    }
}
