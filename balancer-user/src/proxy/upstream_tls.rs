//! TLS to https:// servers: the rustls client config of a pool, built from its `tls_*` files
//! when the config is loaded (a bad file refuses the load, or the reload, with the file named),
//! and what one server's connections need of it (the name to send and verify).
//!
//! One `ClientConfig` per pool: its session cache (TLS resumption) is per pool too, so a
//! session made under one trust or client-certificate setting is never resumed under another.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, ServerName,
    pem::{self, PemObject},
};
use tokio_rustls::TlsConnector;

use crate::config::{PoolConfig, ServerTlsConfig, ServerUrl};

/// A file named in the config: where it was read, and its content.
type FileContent = (PathBuf, Vec<u8>);

/// The contents of a pool's TLS files, read on every load: a reload picks up changed files,
/// and a pool whose files did not change is kept (with its connections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `tls_ca_file`, else the system bundle: where it was read and its PEM.
    roots: FileContent,
    /// `tls_cert_file` and `tls_key_file`.
    client: Option<(FileContent, FileContent)>,
}

/// Why a pool's TLS files cannot be read; the text names the key and file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFilesError {
    #[error("{key} {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("system CA bundle {path}: {source}")]
    SystemBundle {
        path: &'static str,
        source: std::io::Error,
    },
    #[error(
        "https:// servers are verified against the system's CA certificates, and none were found (looked for {}); set tls_ca_file",
        ServerTlsConfig::SYSTEM_CA_BUNDLES.join(", ")
    )]
    NoSystemBundle,
}

/// Why a pool's client config cannot be built from its TLS files.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("building the TLS client config: {0}")]
    Build(#[source] rustls::Error),
    /// `key`: the config key of the file (or "system CA bundle").
    #[error("{key} {}: {problem}", path.display())]
    File {
        key: &'static str,
        path: PathBuf,
        #[source]
        problem: TlsFileProblem,
    },
}

/// What is wrong with one TLS file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileProblem {
    #[error("malformed PEM: {0}")]
    MalformedPem(#[source] pem::Error),
    #[error("invalid CA certificate: {0}")]
    InvalidCa(#[source] rustls::Error),
    #[error("no certificate found (expected a PEM \"CERTIFICATE\" section)")]
    NoCertificate,
    #[error("no usable private key: {0}")]
    NoKey(#[source] pem::Error),
    #[error("cannot be used with tls_cert_file: {0}")]
    KeyMismatch(#[source] rustls::Error),
}

/// Reads the TLS files of `pool` when it has https:// servers. Errors name the key and file.
pub fn read_files(pool: &PoolConfig) -> Result<Option<TlsFiles>, TlsFilesError> {
    if !pool.servers.iter().any(|server| server.url.is_https()) {
        return Ok(None);
    }
    let read = |key: &'static str, path: &Path| {
        std::fs::read(path)
            .map(|content| (path.to_path_buf(), content))
            .map_err(|source| TlsFilesError::Read {
                key,
                path: path.to_path_buf(),
                source,
            })
    };
    let roots = match &pool.tls.ca_file {
        Some(path) => read("tls_ca_file", path)?,
        None => system_bundle()?,
    };
    let client = match &pool.tls.client_cert {
        Some(paths) => Some((
            read("tls_cert_file", &paths.cert)?,
            read("tls_key_file", &paths.key)?,
        )),
        None => None,
    };
    Ok(Some(TlsFiles { roots, client }))
}

/// The first system CA bundle that exists.
fn system_bundle() -> Result<FileContent, TlsFilesError> {
    for path in ServerTlsConfig::SYSTEM_CA_BUNDLES {
        match std::fs::read(path) {
            Ok(content) => return Ok((PathBuf::from(path), content)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(TlsFilesError::SystemBundle { path, source }),
        }
    }
    Err(TlsFilesError::NoSystemBundle)
}

/// The pool's client config: ring, TLS 1.2 and 1.3, verifying against the roots in `files`,
/// with the client certificate when given, offering `h2` by ALPN when `h2`. Errors name the
/// file and what is wrong with it.
pub fn client_config(
    tls: &ServerTlsConfig,
    files: &TlsFiles,
    h2: bool,
) -> Result<Arc<ClientConfig>, ClientTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientTlsError::Build)?;
    let (roots_path, roots_pem) = &files.roots;
    let key_name = if tls.ca_file.is_some() {
        "tls_ca_file"
    } else {
        "system CA bundle"
    };
    let bad = |key: &'static str, path: &Path, problem: TlsFileProblem| ClientTlsError::File {
        key,
        path: path.to_path_buf(),
        problem,
    };
    let certificates = CertificateDer::pem_slice_iter(roots_pem)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|err| bad(key_name, roots_path, TlsFileProblem::MalformedPem(err)))?;
    let mut roots = RootCertStore::empty();
    if tls.ca_file.is_some() {
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|err| bad(key_name, roots_path, TlsFileProblem::InvalidCa(err)))?;
        }
    } else {
        // A system bundle may hold certificates webpki cannot use; the others still count.
        roots.add_parsable_certificates(certificates);
    }
    if roots.is_empty() {
        return Err(bad(key_name, roots_path, TlsFileProblem::NoCertificate));
    }
    let builder = builder.with_root_certificates(roots);
    let mut config = match &files.client {
        None => builder.with_no_client_auth(),
        Some(((cert_path, cert_pem), (key_path, key_pem))) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, pem::Error>>()
                .map_err(|err| {
                    bad(
                        "tls_cert_file",
                        cert_path,
                        TlsFileProblem::MalformedPem(err),
                    )
                })?;
            if chain.is_empty() {
                return Err(bad(
                    "tls_cert_file",
                    cert_path,
                    TlsFileProblem::NoCertificate,
                ));
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|err| bad("tls_key_file", key_path, TlsFileProblem::NoKey(err)))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| bad("tls_key_file", key_path, TlsFileProblem::KeyMismatch(err)))?
        }
    };
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// What the connections to one https:// server need: the pool's config and the name to send
/// as SNI (names only; rustls sends none for an IP address) and to verify.
#[derive(Clone)]
pub struct ServerTls {
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
    /// The pool offers `h2` by ALPN.
    pub offers_h2: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("name", &self.name)
            .field("offers_h2", &self.offers_h2)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// For the server at `url` of a pool with `tls` settings and `config`; `None` for a URL
    /// that is not https:// (or a name the config check lets through and rustls does not).
    pub fn new(
        url: &ServerUrl,
        tls: &ServerTlsConfig,
        config: &Arc<ClientConfig>,
    ) -> Option<ServerTls> {
        let ServerUrl::Https { host, .. } = url else {
            return None;
        };
        let name = tls.server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.to_string()).ok()?;
        Some(ServerTls {
            connector: TlsConnector::from(Arc::clone(config)),
            name,
            offers_h2: config.alpn_protocols.iter().any(|p| p == b"h2"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CertificatePaths;

    fn files(roots: &[u8], client: Option<(&[u8], &[u8])>) -> TlsFiles {
        TlsFiles {
            roots: ("/etc/balancer/ca.pem".into(), roots.to_vec()),
            client: client.map(|(cert, key)| {
                (
                    ("/etc/balancer/client.pem".into(), cert.to_vec()),
                    ("/etc/balancer/client.key".into(), key.to_vec()),
                )
            }),
        }
    }

    fn with_ca() -> ServerTlsConfig {
        ServerTlsConfig {
            ca_file: Some("/etc/balancer/ca.pem".into()),
            server_name: None,
            client_cert: Some(CertificatePaths {
                cert: "/etc/balancer/client.pem".into(),
                key: "/etc/balancer/client.key".into(),
            }),
        }
    }

    fn certificate() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["app.internal".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn builds_with_alpn_by_h2() {
        let (cert, key) = certificate();
        let files = files(cert.as_bytes(), Some((cert.as_bytes(), key.as_bytes())));
        let config = client_config(&with_ca(), &files, false).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let config = client_config(&with_ca(), &files, true).expect("config");
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn bad_files_are_named() {
        let (cert, key) = certificate();
        let (other_cert, _) = certificate();
        let garbage_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        for (roots, client, expected) in [
            (
                "not pem",
                None,
                "tls_ca_file /etc/balancer/ca.pem: no certificate found",
            ),
            (
                garbage_cert,
                None,
                "tls_ca_file /etc/balancer/ca.pem: invalid CA certificate: ",
            ),
            (
                cert.as_str(),
                Some(("", key.as_str())),
                "tls_cert_file /etc/balancer/client.pem: no certificate found",
            ),
            (
                cert.as_str(),
                Some((cert.as_str(), "no key")),
                "tls_key_file /etc/balancer/client.key: no usable private key: ",
            ),
            (
                cert.as_str(),
                Some((other_cert.as_str(), key.as_str())),
                "tls_key_file /etc/balancer/client.key: cannot be used with tls_cert_file: ",
            ),
        ] {
            let files = files(
                roots.as_bytes(),
                client.map(|(c, k)| (c.as_bytes(), k.as_bytes())),
            );
            let mut tls = with_ca();
            if client.is_none() {
                tls.client_cert = None;
            }
            let err = client_config(&tls, &files, false)
                .expect_err("a bad file")
                .to_string();
            assert!(
                err.starts_with(expected),
                "{err:?} should start with {expected:?}"
            );
        }
    }

    #[test]
    fn server_name_defaults_to_the_url_host() {
        let (cert, _) = certificate();
        let mut tls = with_ca();
        tls.client_cert = None;
        let config = client_config(&tls, &files(cert.as_bytes(), None), false).expect("config");
        let url = ServerUrl::Https {
            host: "app1.example.test".into(),
            port: 8443,
        };
        let server = ServerTls::new(&url, &tls, &config).expect("https");
        assert_eq!(server.name.to_str(), "app1.example.test");
        tls.server_name = Some("app.internal".into());
        let server = ServerTls::new(&url, &tls, &config).expect("https");
        assert_eq!(server.name.to_str(), "app.internal");
        let ip = ServerUrl::Https {
            host: "198.18.1.2".into(),
            port: 443,
        };
        tls.server_name = None;
        let server = ServerTls::new(&ip, &tls, &config).expect("https");
        assert_eq!(server.name.to_str(), "198.18.1.2");
        let plain = ServerUrl::Http {
            host: "app1.example.test".into(),
            port: 80,
        };
        assert!(ServerTls::new(&plain, &tls, &config).is_none());
    }
}
