//! A pool at run time: its servers with their connections, in-flight counts and failure
//! windows, and the selection policy. Kept across reloads while its config is unchanged, so
//! idle connections and counters survive.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Instant,
};

use super::{
    balance::{self, Candidate, Selector},
    error::ErrorPages,
    upstream::ServerConnections,
};
use crate::config::{PoolConfig, ServerConfig};

pub struct Pool {
    pub config: PoolConfig,
    pub servers: Vec<Server>,
    selector: Box<dyn Selector>,
    pub error_pages: Arc<ErrorPages>,
}

pub struct Server {
    pub config: ServerConfig,
    /// `url` as text, for logs and metrics.
    pub label: String,
    pub connections: Arc<ServerConnections>,
    /// Stable identity for consistent hashing: a fixed-key hash of the URL.
    id: u64,
    in_flight: AtomicU32,
    /// A failed connect excludes the server until then (`retry.after_failure`).
    failed_until: Mutex<Option<Instant>>,
    pub requests: AtomicU64,
    pub connect_failures: AtomicU64,
}

impl Server {
    fn new(pool: &PoolConfig, config: &ServerConfig) -> Server {
        let label = config.url.to_string();
        Server {
            connections: ServerConnections::new(
                config.url.clone(),
                pool.keepalive,
                pool.timeouts.connect,
                pool.h2c,
            ),
            id: balance::server_id(&config.url),
            label,
            config: config.clone(),
            in_flight: AtomicU32::new(0),
            failed_until: Mutex::new(None),
            requests: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the server is inside its failure window at `now`.
    pub fn failing(&self, now: Instant) -> bool {
        let mut until = self
            .failed_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *until {
            Some(deadline) if deadline > now => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }
}

/// Counts a request against its server until dropped (the response body finished).
pub struct ServerLoad {
    pool: Arc<Pool>,
    index: usize,
}

impl ServerLoad {
    pub fn server(&self) -> &Server {
        &self.pool.servers[self.index]
    }
}

impl Drop for ServerLoad {
    fn drop(&mut self) {
        self.pool.servers[self.index]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    pub fn new(config: &PoolConfig, error_pages: Arc<ErrorPages>) -> Pool {
        Pool {
            servers: config
                .servers
                .iter()
                .map(|server| Server::new(config, server))
                .collect(),
            selector: balance::selector(&config.balance),
            config: config.clone(),
            error_pages,
        }
    }

    /// Picks a server for a request with hash `key`, never one in `exclude`, and counts the
    /// request on it. `None`: no server can take it.
    pub fn pick(
        self: &Arc<Self>,
        key: Option<&[u8]>,
        exclude: Option<usize>,
    ) -> Option<ServerLoad> {
        let now = Instant::now();
        let candidates: Vec<Candidate> = self
            .servers
            .iter()
            .enumerate()
            .map(|(index, server)| Candidate {
                id: server.id,
                weight: server.config.weight,
                in_flight: server.in_flight(),
                eligible: Some(index) != exclude && !server.failing(now),
            })
            .collect();
        let index = self.selector.select(&candidates, key)?;
        let server = &self.servers[index];
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        server.requests.fetch_add(1, Ordering::Relaxed);
        Some(ServerLoad {
            pool: self.clone(),
            index,
        })
    }

    /// A connect to the server of `load` failed: skip it for `retry.after_failure`.
    pub fn connect_failed(&self, load: &ServerLoad) {
        let server = &self.servers[load.index];
        server.connect_failures.fetch_add(1, Ordering::Relaxed);
        if !self.config.retry.after_failure.is_zero() {
            *server
                .failed_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(Instant::now() + self.config.retry.after_failure);
        }
    }

    pub fn index_of(load: &ServerLoad) -> usize {
        load.index
    }

    /// Drops idle upstream connections (the pool is being replaced).
    pub fn close_idle(&self) {
        for server in &self.servers {
            server.connections.close_idle();
        }
    }
}
