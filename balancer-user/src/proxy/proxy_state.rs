//! Everything a request needs, built from one `L7Config` and swapped whole on reload: routes,
//! pools, TLS configs, error pages. Building it opens every file the config names (certificates,
//! keys, error pages, static directories), so a reload with a bad file is refused before anything
//! changes, and `check-config` reports the same errors.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, sync::Arc};

use super::{
    config_error::{PoolError, ProxyConfigError},
    error::ErrorPages,
    metrics::{ListenerMetrics, RouteMetrics},
    pool::Pool,
    route::{AllowedHosts, RouteTable},
    tls, upstream_tls,
};
use crate::config::{L7Config, ListenerConfig, PoolConfig, RouteTarget, StickyConfig, StickyKey};
use crate::headers::{edits::CompiledEdits, trust::TrustPolicy};

pub struct ProxyState {
    pub config: L7Config,
    pub routes: RouteTable,
    /// Per route, in config order.
    pub route_runtime: Vec<RouteRuntime>,
    pub listeners: HashMap<String, ListenerRuntime>,
    pub pools: HashMap<String, Arc<Pool>>,
    /// `proxy.access_log_file`, opened by `Proxy` (not here: `check-config` must not create
    /// files).
    pub access_log_file: Option<Arc<super::log_file::AccessLogFile>>,
    /// `proxy.temp_dir`, or the system's temporary directory.
    pub temp_dir: PathBuf,
}

pub struct RouteRuntime {
    /// The route's name, shared with the access records of its requests.
    pub name: Arc<str>,
    pub target: Target,
    pub error_pages: Arc<ErrorPages>,
    pub request_edits: CompiledEdits,
    pub response_edits: CompiledEdits,
    /// The path prefix the server does not see (`strip_prefix` routes), without its trailing
    /// slash: what `X-Forwarded-Prefix` says and rewriting puts back. `None` for "/".
    pub stripped_prefix: Option<String>,
    /// The route's request series, looked up once.
    pub metrics: Arc<RouteMetrics>,
}

pub enum Target {
    Pool(Arc<Pool>),
    Static(PathBuf),
}

pub struct ListenerRuntime {
    pub config: ListenerConfig,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub allowed_hosts: AllowedHosts,
    pub trust: TrustPolicy,
    pub metrics: ListenerMetrics,
}

impl ProxyState {
    /// The listener bound to `bind`. Connections know their listener by address, not name:
    /// a reload keeps the socket of an address and may rename its listener.
    pub fn listener_at(&self, bind: SocketAddr) -> Option<&ListenerRuntime> {
        self.listeners
            .values()
            .find(|listener| listener.config.bind == bind)
    }

    /// Builds the state for `config`, reusing the pools of `previous` whose config did not
    /// change (their connections and counters carry over); rebuilt pools keep the health and
    /// operator state of their servers, by url. Nothing starts running here (see
    /// `Pool::activate`): a refused reload leaves nothing behind.
    pub fn build(
        config: &L7Config,
        previous: Option<&ProxyState>,
    ) -> Result<ProxyState, ProxyConfigError> {
        let mut listeners = HashMap::new();
        for listener in &config.listeners {
            let tls = match &listener.tls {
                Some(tls) => Some(tls::server_config(tls).map_err(|source| {
                    ProxyConfigError::ListenerTls {
                        listener: listener.name.clone(),
                        source: Box::new(source),
                    }
                })?),
                None => None,
            };
            listeners.insert(
                listener.name.clone(),
                ListenerRuntime {
                    config: listener.clone(),
                    tls,
                    allowed_hosts: AllowedHosts::new(&listener.allowed_hosts),
                    trust: TrustPolicy::from_listener(listener),
                    metrics: ListenerMetrics::new(&listener.name),
                },
            );
        }

        let mut pools = HashMap::new();
        for pool in &config.pools {
            let in_pool = |source: PoolError| ProxyConfigError::Pool {
                pool: pool.name.clone(),
                source: Box::new(source),
            };
            let sticky_key = sticky_key(pool).map_err(in_pool)?;
            let check_ca = check_ca(pool).map_err(in_pool)?;
            let server_tls = upstream_tls::read_files(pool).map_err(|err| in_pool(err.into()))?;
            let reused = previous
                .and_then(|state| state.pools.get(&pool.name))
                .filter(|existing| {
                    existing.config == *pool
                        && existing.sticky_key() == sticky_key.as_deref()
                        && existing.check_ca() == check_ca.as_deref()
                        && existing.server_tls_files() == server_tls.as_ref()
                })
                .cloned();
            let pool = match reused {
                Some(existing) => existing,
                None => Arc::new(
                    new_pool(
                        pool,
                        previous.and_then(|state| state.pools.get(&pool.name)),
                        sticky_key,
                        check_ca,
                        server_tls,
                    )
                    .map_err(in_pool)?,
                ),
            };
            pools.insert(pool.config.name.clone(), pool);
        }

        let mut route_runtime = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let error_pages = Arc::new(ErrorPages::load(&route.error_pages).map_err(|source| {
                ProxyConfigError::RouteErrorPage {
                    route: route.name.clone(),
                    source,
                }
            })?);
            let target = match &route.target {
                RouteTarget::Pool(name) => {
                    Target::Pool(pools.get(name).cloned().ok_or_else(|| {
                        ProxyConfigError::NoPool {
                            route: route.name.clone(),
                            pool: name.clone(),
                        }
                    })?)
                }
                RouteTarget::Static(dir) => {
                    let metadata =
                        std::fs::metadata(dir).map_err(|source| ProxyConfigError::StaticDir {
                            route: route.name.clone(),
                            dir: dir.clone(),
                            source,
                        })?;
                    if !metadata.is_dir() {
                        return Err(ProxyConfigError::NotADirectory {
                            route: route.name.clone(),
                            dir: dir.clone(),
                        });
                    }
                    Target::Static(dir.clone())
                }
            };
            let edits = |edits| {
                CompiledEdits::new(edits).map_err(|source| ProxyConfigError::HeaderEdits {
                    route: route.name.clone(),
                    source,
                })
            };
            let stripped_prefix = route
                .strip_prefix
                .then(|| route.path.trim_end_matches('/'))
                .filter(|prefix| !prefix.is_empty())
                .map(ToString::to_string);
            let pool_name = match &target {
                Target::Pool(pool) => pool.config.name.as_str(),
                Target::Static(_) => "",
            };
            let metrics = Arc::new(RouteMetrics::new(&route.name, pool_name));
            route_runtime.push(RouteRuntime {
                name: Arc::from(route.name.as_str()),
                metrics,
                target,
                error_pages,
                request_edits: edits(&route.request_headers)?,
                response_edits: edits(&route.response_headers)?,
                stripped_prefix,
            });
        }

        Ok(ProxyState {
            config: config.clone(),
            routes: RouteTable::new(
                &config.routes,
                &config
                    .listeners
                    .iter()
                    .map(|listener| listener.name.as_str())
                    .collect::<Vec<_>>(),
            ),
            route_runtime,
            listeners,
            pools,
            access_log_file: None,
            temp_dir: config
                .proxy
                .temp_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir),
        })
    }
}

/// A pool for `config`; its servers also in `previous` (the pool of that name being replaced)
/// keep their health state.
fn new_pool(
    config: &PoolConfig,
    previous: Option<&Arc<Pool>>,
    sticky_key: Option<Vec<u8>>,
    check_ca: Option<Vec<u8>>,
    server_tls: Option<upstream_tls::TlsFiles>,
) -> Result<Pool, PoolError> {
    let error_pages = ErrorPages::load(&config.error_pages)?;
    let server_tls = match server_tls {
        Some(files) => {
            let client = upstream_tls::client_config(&config.tls, &files, config.h2)?;
            Some((files, client))
        }
        None => None,
    };
    Pool::new(
        config,
        Arc::new(error_pages),
        previous.map(AsRef::as_ref),
        server_tls,
    )
    .with_sticky(sticky_key)
    .map_err(PoolError::Sticky)?
    .with_check_tls(check_ca)
    .map_err(PoolError::CheckTls)
}

/// The content of a pool's `health.tls_ca_file`, read on every load so a reload picks up a new
/// CA.
fn check_ca(pool: &PoolConfig) -> Result<Option<Vec<u8>>, PoolError> {
    let Some(path) = pool
        .health
        .as_ref()
        .and_then(|health| health.tls.as_ref())
        .and_then(|tls| tls.ca_file.as_ref())
    else {
        return Ok(None);
    };
    std::fs::read(path)
        .map(Some)
        .map_err(|source| PoolError::CheckCaRead {
            path: path.clone(),
            source,
        })
}

/// The HMAC key of an insert-mode sticky pool: as written, or read from its file (trimmed) on
/// every load, so a reload picks up a new key.
fn sticky_key(pool: &PoolConfig) -> Result<Option<Vec<u8>>, PoolError> {
    let Some(StickyConfig::Insert { key, .. }) = &pool.sticky else {
        return Ok(None);
    };
    let bytes = match key {
        StickyKey::Inline(text) => text.as_bytes().to_vec(),
        StickyKey::File(path) => {
            let text = std::fs::read(path).map_err(|source| PoolError::StickyKeyRead {
                path: path.clone(),
                source,
            })?;
            let trimmed = text.trim_ascii().to_vec();
            if trimmed.len() < StickyConfig::MIN_KEY_BYTES {
                return Err(PoolError::StickyKeyShort {
                    path: path.clone(),
                    bytes: trimmed.len(),
                });
            }
            trimmed
        }
    };
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A scratch directory, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let path =
                std::env::temp_dir().join(format!("balancer-state-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("scratch dir");
            Dir(path)
        }

        fn file(&self, name: &str, content: &str) -> String {
            let path = self.0.join(name);
            std::fs::write(&path, content).expect("write");
            path.display().to_string()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn l7(pool_keys: &str) -> L7Config {
        let text = format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\n\n\
             [[route]]\nlistener = \"web\"\npool = \"app\"\n\n\
             [pool.app]\nservers = [ {{ url = \"https://app.internal:8443\" }} ]\n{pool_keys}\n"
        );
        Config::parse(&text, "test.toml").expect("valid config").l7
    }

    fn build_error(pool_keys: &str) -> String {
        match ProxyState::build(&l7(pool_keys), None) {
            Ok(_) => panic!("{pool_keys:?} should be refused"),
            Err(err) => err.to_string(),
        }
    }

    fn certificate(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn unreadable_and_bad_tls_files_are_refused_naming_them() {
        let dir = Dir::new("tls-files");
        let (cert, key) = certificate("client.test");
        let ca = dir.file("ca.pem", &cert);
        let garbage = dir.file("garbage.pem", "not a certificate");
        let client = dir.file("client.pem", &cert);
        let client_key = dir.file("client.key", &key);
        let missing = dir.0.join("missing.pem").display().to_string();
        assert_eq!(
            build_error(&format!("tls_ca_file = \"{missing}\"")),
            format!("pool app: tls_ca_file {missing}: No such file or directory (os error 2)")
        );
        assert_eq!(
            build_error(&format!(
                "tls_ca_file = \"{ca}\"\ntls_cert_file = \"{missing}\"\ntls_key_file = \"{client_key}\""
            )),
            format!("pool app: tls_cert_file {missing}: No such file or directory (os error 2)")
        );
        assert_eq!(
            build_error(&format!(
                "tls_ca_file = \"{ca}\"\ntls_cert_file = \"{client}\"\ntls_key_file = \"{missing}\""
            )),
            format!("pool app: tls_key_file {missing}: No such file or directory (os error 2)")
        );
        assert_eq!(
            build_error(&format!("tls_ca_file = \"{garbage}\"")),
            format!(
                "pool app: tls_ca_file {garbage}: no certificate found (expected a PEM \"CERTIFICATE\" section)"
            )
        );
        let state = ProxyState::build(
            &l7(&format!(
                "tls_ca_file = \"{ca}\"\ntls_cert_file = \"{client}\"\ntls_key_file = \"{client_key}\""
            )),
            None,
        )
        .expect("good files");
        let pool = &state.pools["app"];
        assert!(pool.server_tls.is_some());
    }

    #[test]
    fn default_roots_are_the_system_bundle() {
        match ProxyState::build(&l7(""), None) {
            Ok(state) => assert!(state.pools["app"].server_tls.is_some()),
            // A machine without a CA bundle: the error says what to do.
            Err(err) => {
                let err = err.to_string();
                assert!(
                    crate::config::ServerTlsConfig::SYSTEM_CA_BUNDLES
                        .iter()
                        .all(|path| !std::path::Path::new(path).exists()),
                    "a bundle exists, yet: {err}"
                );
                assert!(err.ends_with("set tls_ca_file"), "{err}");
            }
        }
    }

    #[test]
    fn a_reload_keeps_the_pool_while_its_tls_files_are_unchanged() {
        let dir = Dir::new("tls-reload");
        let (cert, _) = certificate("app.internal");
        let ca = dir.file("ca.pem", &cert);
        let config = l7(&format!("tls_ca_file = \"{ca}\""));
        let first = ProxyState::build(&config, None).expect("state");
        let same = ProxyState::build(&config, Some(&first)).expect("state");
        assert!(Arc::ptr_eq(&first.pools["app"], &same.pools["app"]));
        // A new CA in the same file: a new pool (and client config, and session cache).
        let (other, _) = certificate("app.internal");
        dir.file("ca.pem", &other);
        let changed = ProxyState::build(&config, Some(&same)).expect("state");
        assert!(!Arc::ptr_eq(&same.pools["app"], &changed.pools["app"]));
        // A broken file refuses the reload (the caller keeps the running state).
        dir.file("ca.pem", "broken");
        assert!(ProxyState::build(&config, Some(&changed)).is_err());
    }
}
