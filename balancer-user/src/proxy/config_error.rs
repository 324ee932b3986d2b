//! Why the proxy state cannot be built from a config: what `check-config`, the start and a
//! refused reload report. Each text names the listener, pool or route, then the file or key.

use std::path::PathBuf;

use crate::{
    headers::edits::EditsError,
    health::CheckTlsError,
    proxy::{
        error::ErrorPageError,
        tls::TlsError,
        upstream_tls::{ClientTlsError, TlsFilesError},
    },
    sticky::StickyError,
};

/// Why [`ProxyState::build`](super::state::ProxyState::build) refused a config.
#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    #[error("listener {listener}: {source}")]
    ListenerTls {
        listener: String,
        source: Box<TlsError>,
    },
    /// Boxed: the pool errors are the largest, and a `Result` carries its error inline.
    #[error("pool {pool}: {source}")]
    Pool {
        pool: String,
        source: Box<PoolError>,
    },
    #[error("route {route}: {source}")]
    RouteErrorPage {
        route: String,
        source: ErrorPageError,
    },
    #[error("route {route}: no pool {pool:?}")]
    NoPool { route: String, pool: String },
    #[error("route {route}: static_dir {}: {source}", dir.display())]
    StaticDir {
        route: String,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("route {route}: static_dir {} is not a directory", dir.display())]
    NotADirectory { route: String, dir: PathBuf },
    #[error("route {route}: {source}")]
    HeaderEdits { route: String, source: EditsError },
}

/// Why one pool cannot be built (the text follows "pool NAME: ").
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    ErrorPage(#[from] ErrorPageError),
    #[error(transparent)]
    TlsFiles(#[from] TlsFilesError),
    #[error(transparent)]
    ClientTls(#[from] ClientTlsError),
    #[error("sticky: {0}")]
    Sticky(#[source] StickyError),
    #[error("sticky key_file {}: {source}", path.display())]
    StickyKeyRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "sticky key_file {}: {bytes} bytes; a signing key needs at least {min}",
        path.display(),
        min = crate::config::StickyConfig::MIN_KEY_BYTES
    )]
    StickyKeyShort { path: PathBuf, bytes: usize },
    #[error("health tls_ca_file {}: {source}", path.display())]
    CheckCaRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("health tls_ca_file {0}")]
    CheckTls(#[source] CheckTlsError),
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::StickyConfig;

    fn io() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::NotFound)
    }

    /// Each text against the `format!` that made it when these errors were strings.
    #[test]
    fn texts_are_those_of_the_string_errors() {
        let (name, path) = ("app", Path::new("/etc/balancer/key"));
        let pool = |source| {
            ProxyConfigError::Pool {
                pool: name.to_string(),
                source: Box::new(source),
            }
            .to_string()
        };
        assert_eq!(
            pool(PoolError::StickyKeyShort {
                path: path.to_path_buf(),
                bytes: 3,
            }),
            format!(
                "pool {}: sticky key_file {}: {} bytes; a signing key needs at least {}",
                name,
                path.display(),
                3,
                StickyConfig::MIN_KEY_BYTES
            )
        );
        assert_eq!(
            pool(PoolError::StickyKeyRead {
                path: path.to_path_buf(),
                source: io(),
            }),
            format!(
                "pool {}: sticky key_file {}: {}",
                name,
                path.display(),
                io()
            )
        );
        assert_eq!(
            pool(PoolError::CheckCaRead {
                path: path.to_path_buf(),
                source: io(),
            }),
            format!(
                "pool {}: health tls_ca_file {}: {}",
                name,
                path.display(),
                io()
            )
        );
        let sticky = StickyError::NoKey;
        assert_eq!(
            pool(PoolError::Sticky(sticky.clone())),
            format!("pool {name}: sticky: {sticky}")
        );
        assert_eq!(
            pool(PoolError::TlsFiles(TlsFilesError::NoSystemBundle)),
            format!(
                "pool {name}: https:// servers are verified against the system's CA certificates, and none were found (looked for {}); set tls_ca_file",
                crate::config::ServerTlsConfig::SYSTEM_CA_BUNDLES.join(", ")
            )
        );
        let route = "api";
        assert_eq!(
            ProxyConfigError::NoPool {
                route: route.to_string(),
                pool: name.to_string(),
            }
            .to_string(),
            format!("route {route}: no pool {name:?}")
        );
        assert_eq!(
            ProxyConfigError::StaticDir {
                route: route.to_string(),
                dir: path.to_path_buf(),
                source: io(),
            }
            .to_string(),
            format!("route {}: static_dir {}: {}", route, path.display(), io())
        );
        assert_eq!(
            ProxyConfigError::NotADirectory {
                route: route.to_string(),
                dir: path.to_path_buf(),
            }
            .to_string(),
            format!(
                "route {}: static_dir {} is not a directory",
                route,
                path.display()
            )
        );
    }
}
