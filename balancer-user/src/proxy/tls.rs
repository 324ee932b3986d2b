//! TLS for the proxy's listeners: the rustls server config of a `[[listener]]` with `tls`, whose
//! certificate is chosen per connection by the client's SNI, and the check that a request's
//! `Host` belongs to the connection's SNI.
//!
//! Certificate choice: every configured certificate is indexed by the DNS names of its leaf
//! (its DNS SANs, or its subject CN when it has no DNS SAN). An SNI matches exact names first,
//! then wildcard names (`*.example.test` covers exactly one more label: `a.example.test`, not
//! `a.b.example.test` nor `example.test`, as in RFC 6125 §6.4.3), case-insensitively and
//! ignoring a trailing dot; among certificates with the same name the first listed wins. No SNI,
//! or an SNI no certificate names, gets the first certificate (the default).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer,
    pem::{self, PemObject},
};

use crate::config::{CertificatePaths, TlsConfig};

/// ALPN protocols offered to clients, in order of preference.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a listener's TLS config could not be built. Every message names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file is missing or unreadable.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed PEM (a section without its end line, bad base64, ...).
    #[error("{}: malformed PEM: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    /// The certificate file holds no `CERTIFICATE` section.
    #[error("{}: no certificate found (expected a PEM \"CERTIFICATE\" section)", path.display())]
    NoCertificate { path: PathBuf },
    /// The key file holds no private key section.
    #[error(
        "{}: no private key found (expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \
         \"EC PRIVATE KEY\" section)",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },
    /// The key is of a kind rustls (ring) cannot sign with, or is encrypted or corrupt.
    #[error("{}: unsupported private key: {detail}", path.display())]
    UnsupportedKey { path: PathBuf, detail: String },
    /// The private key is not the one of the certificate's public key.
    #[error(
        "{}: private key does not match the certificate in {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// A certificate of the chain is not valid DER X.509.
    #[error("{}: cannot parse certificate: {detail}", path.display())]
    BadCertificate { path: PathBuf, detail: String },
    /// `TlsConfig::certificates` is empty (validation prevents it).
    #[error("no TLS certificate configured")]
    NoCertificates,
    /// rustls refused the config (does not happen with the ring provider).
    #[error("building the TLS server config: {0}")]
    Config(#[source] rustls::Error),
}

/// The rustls server config of a TLS listener: TLS 1.2 and 1.3 with the ring provider, ALPN
/// `h2` then `http/1.1`, no client authentication, and the certificate chosen by SNI (see the
/// module doc). Loads and checks every certificate and key file.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = SniResolver::new(load_all(tls, &provider)?)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The DNS names each certificate is chosen for, in config order (lowercase, no trailing dot;
/// wildcards as `*.suffix`). Loads and checks the files like `server_config`.
#[cfg(test)]
pub fn certificate_names(tls: &TlsConfig) -> Result<Vec<Vec<String>>, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    Ok(load_all(tls, &provider)?
        .into_iter()
        .map(|loaded| loaded.names)
        .collect())
}

/// Whether a request's `Host` (or `:authority`) names the same host as the connection's TLS
/// SNI: case-insensitive, trailing dots ignored, a `:port` and the brackets of an IPv6 literal
/// stripped from `host`. An SNI is never an IP address, so an IP-literal host never matches.
/// The proxy answers 421 (Misdirected Request) when this is false.
pub fn sni_matches_host(sni: &str, host: &str) -> bool {
    let host = crate::http::authority::bare_host(host.trim());
    let sni = trim_dot(sni.trim());
    !sni.is_empty() && sni.eq_ignore_ascii_case(trim_dot(host))
}

fn trim_dot(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// A DNS name as indexed and looked up: lowercase, without a trailing dot.
fn normalize(name: &str) -> String {
    trim_dot(name.trim()).to_ascii_lowercase()
}

/// One configured certificate, ready to serve.
struct Loaded {
    key: Arc<CertifiedKey>,
    /// Normalized DNS names (see `certificate_names`).
    names: Vec<String>,
}

fn load_all(tls: &TlsConfig, provider: &CryptoProvider) -> Result<Vec<Loaded>, TlsError> {
    if tls.certificates.is_empty() {
        return Err(TlsError::NoCertificates);
    }
    tls.certificates
        .iter()
        .map(|paths| load(paths, provider))
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, error: pem::Error) -> TlsError {
    match error {
        pem::Error::Io(source) => TlsError::Read {
            path: path.to_path_buf(),
            source,
        },
        other => TlsError::Pem {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

fn load(paths: &CertificatePaths, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let CertificatePaths { cert, key } = paths;

    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, e))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate { path: cert.clone() });
    };
    let names = leaf_names(cert, leaf)?;
    for intermediate in &chain[1..] {
        x509_parser::parse_x509_certificate(intermediate).map_err(|e| {
            TlsError::BadCertificate {
                path: cert.clone(),
                detail: format!("chain certificate: {e}"),
            }
        })?;
    }

    let key_pem = read(key)?;
    let private_key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(private_key) => private_key,
        Err(pem::Error::NoItemsFound) if contains(&key_pem, b"ENCRYPTED PRIVATE KEY") => {
            return Err(TlsError::UnsupportedKey {
                path: key.clone(),
                detail: "encrypted private keys are not supported; decrypt it first".into(),
            });
        }
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoPrivateKey { path: key.clone() });
        }
        Err(e) => return Err(pem_error(key, e)),
    };
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|e| TlsError::UnsupportedKey {
            path: key.clone(),
            detail: e.to_string(),
        })?;

    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot tell its public key; nothing to compare (as rustls does).
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        Err(e) => {
            return Err(TlsError::BadCertificate {
                path: cert.clone(),
                detail: e.to_string(),
            });
        }
    }

    Ok(Loaded {
        key: Arc::new(certified),
        names,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The DNS SANs of the leaf, or its subject CNs when it has none.
fn leaf_names(path: &Path, leaf: &CertificateDer<'_>) -> Result<Vec<String>, TlsError> {
    use x509_parser::extensions::GeneralName;

    let bad = |detail: String| TlsError::BadCertificate {
        path: path.to_path_buf(),
        detail,
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| bad(e.to_string()))?;

    if !parsed.validity().is_valid() {
        tracing::warn!(
            file = %path.display(),
            not_before = %parsed.validity().not_before,
            not_after = %parsed.validity().not_after,
            "TLS certificate is not valid now (expired or not yet valid)"
        );
    }

    let sans = parsed
        .subject_alternative_name()
        .map_err(|e| bad(format!("subject alternative names: {e}")))?;
    fn add(names: &mut Vec<String>, name: &str) {
        let name = normalize(name);
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    let mut names: Vec<String> = Vec::new();
    if let Some(sans) = sans {
        for general_name in &sans.value.general_names {
            if let GeneralName::DNSName(name) = general_name {
                add(&mut names, name);
            }
        }
    }
    if names.is_empty() {
        for common_name in parsed.subject().iter_common_name() {
            if let Ok(name) = common_name.as_str() {
                add(&mut names, name);
            }
        }
    }
    Ok(names)
}

/// Chooses a listener's certificate by the SNI of each ClientHello.
struct SniResolver {
    /// In config order; `[0]` is the default.
    keys: Vec<Arc<CertifiedKey>>,
    /// Exact name → index of the first certificate naming it.
    exact: HashMap<String, usize>,
    /// `suffix` of a `*.suffix` name → index of the first certificate naming it.
    wildcard: HashMap<String, usize>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("certificates", &self.keys.len())
            .field("exact", &self.exact)
            .field("wildcard", &self.wildcard)
            .finish()
    }
}

impl SniResolver {
    fn new(loaded: Vec<Loaded>) -> Result<Self, TlsError> {
        if loaded.is_empty() {
            return Err(TlsError::NoCertificates);
        }
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut keys = Vec::with_capacity(loaded.len());
        for (index, Loaded { key, names }) in loaded.into_iter().enumerate() {
            for name in names {
                if let Some(suffix) = name.strip_prefix("*.") {
                    // Only a whole leftmost '*' label is a wildcard; partial ones
                    // ("w*.example.test") are never matched.
                    if !suffix.is_empty() && !suffix.contains('*') {
                        wildcard.entry(suffix.to_string()).or_insert(index);
                    }
                } else if !name.contains('*') {
                    exact.entry(name).or_insert(index);
                }
            }
            keys.push(key);
        }
        Ok(Self {
            keys,
            exact,
            wildcard,
        })
    }

    /// Index of the certificate for an SNI (see the module doc).
    fn select(&self, sni: Option<&str>) -> usize {
        let Some(sni) = sni.map(normalize).filter(|s| !s.is_empty()) else {
            return 0;
        };
        if let Some(&index) = self.exact.get(&sni) {
            return index;
        }
        match sni.split_once('.') {
            Some((label, suffix)) if !label.is_empty() && !suffix.is_empty() => {
                self.wildcard.get(suffix).copied().unwrap_or(0)
            }
            _ => 0,
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.keys[self.select(client_hello.server_name())].clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use rustls::{ClientConfig, ProtocolVersion};
    use rustls_pki_types::ServerName;
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::health::AnyCertificate;

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "balancer-tls-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A generated certificate: its PEM files and the leaf's DER.
    struct TestCert {
        paths: CertificatePaths,
        der: CertificateDer<'static>,
        key_pem: String,
    }

    fn params(sans: &[&str]) -> rcgen::CertificateParams {
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
    }

    fn make_cert_with(
        dir: &TempDir,
        file: &str,
        params: rcgen::CertificateParams,
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> TestCert {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let key_pem = key.serialize_pem();
        TestCert {
            paths: CertificatePaths {
                cert: dir.write(&format!("{file}.crt"), cert.pem()),
                key: dir.write(&format!("{file}.key"), &key_pem),
            },
            der: cert.der().clone(),
            key_pem,
        }
    }

    fn make_cert(dir: &TempDir, file: &str, sans: &[&str]) -> TestCert {
        make_cert_with(dir, file, params(sans), &rcgen::PKCS_ECDSA_P256_SHA256)
    }

    fn tls_config(certs: &[&TestCert]) -> TlsConfig {
        TlsConfig {
            certificates: certs.iter().map(|c| c.paths.clone()).collect(),
        }
    }

    /// Three certificates: the default, an exact one and a wildcard one.
    struct Fixture {
        _dir: TempDir,
        default: TestCert,
        exact: TestCert,
        wildcard: TestCert,
        server: Arc<rustls::ServerConfig>,
    }

    fn fixture() -> Fixture {
        let dir = TempDir::new();
        let default = make_cert(&dir, "default", &["default.test"]);
        let exact = make_cert(&dir, "exact", &["a.example.test", "www.a.example.test"]);
        let wildcard = make_cert(&dir, "wildcard", &["*.example.test"]);
        let server = server_config(&tls_config(&[&default, &exact, &wildcard])).unwrap();
        Fixture {
            _dir: dir,
            default,
            exact,
            wildcard,
            server,
        }
    }

    struct ClientOptions {
        versions: &'static [&'static rustls::SupportedProtocolVersion],
        alpn: &'static [&'static [u8]],
        sni: bool,
    }

    const TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

    const DEFAULT_CLIENT: ClientOptions = ClientOptions {
        versions: &[&rustls::version::TLS13, &rustls::version::TLS12],
        alpn: &[b"h2", b"http/1.1"],
        sni: true,
    };

    fn client_config(options: &ClientOptions) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(options.versions)
            .unwrap()
            .dangerous()
            // Any certificate: the tests look at which one was sent, not whether a client
            // would trust it.
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        config.alpn_protocols = options.alpn.iter().map(|p| p.to_vec()).collect();
        config.enable_sni = options.sni;
        Arc::new(config)
    }

    /// What a completed handshake agreed on.
    #[derive(Debug)]
    struct Outcome {
        leaf: CertificateDer<'static>,
        alpn: Option<Vec<u8>>,
        version: ProtocolVersion,
        server_sni: Option<String>,
    }

    /// A real handshake over an in-memory pipe, then one byte each way.
    async fn handshake(
        server: &Arc<rustls::ServerConfig>,
        name: &str,
        options: &ClientOptions,
    ) -> Outcome {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(server.clone());
        let connector = TlsConnector::from(client_config(options));
        let name = ServerName::try_from(name.to_string()).unwrap();
        let (server_stream, client_stream) = tokio::join!(
            acceptor.accept(server_io),
            connector.connect(name, client_io)
        );
        let mut server_stream = server_stream.expect("server handshake");
        let mut client_stream = client_stream.expect("client handshake");

        let (ping, pong) = tokio::join!(
            async {
                client_stream.write_all(b"?").await.unwrap();
                client_stream.flush().await.unwrap();
                let mut byte = [0u8];
                client_stream.read_exact(&mut byte).await.unwrap();
                byte[0]
            },
            async {
                let mut byte = [0u8];
                server_stream.read_exact(&mut byte).await.unwrap();
                server_stream.write_all(b"!").await.unwrap();
                server_stream.flush().await.unwrap();
                byte[0]
            }
        );
        assert_eq!((ping, pong), (b'!', b'?'));

        let (_, client) = client_stream.get_ref();
        let (_, server_conn) = server_stream.get_ref();
        assert_eq!(client.alpn_protocol(), server_conn.alpn_protocol());
        assert_eq!(client.protocol_version(), server_conn.protocol_version());
        Outcome {
            leaf: client.peer_certificates().unwrap()[0].clone().into_owned(),
            alpn: client.alpn_protocol().map(<[u8]>::to_vec),
            version: client.protocol_version().unwrap(),
            server_sni: server_conn.server_name().map(str::to_string),
        }
    }

    #[tokio::test]
    async fn sni_exact_name_picks_its_certificate() {
        let f = fixture();
        for name in ["a.example.test", "www.a.example.test", "A.Example.TEST"] {
            let outcome = handshake(&f.server, name, &DEFAULT_CLIENT).await;
            assert_eq!(outcome.leaf, f.exact.der, "{name}");
        }
        let outcome = handshake(&f.server, "default.test", &DEFAULT_CLIENT).await;
        assert_eq!(outcome.leaf, f.default.der);
        assert_eq!(outcome.server_sni.as_deref(), Some("default.test"));
    }

    #[tokio::test]
    async fn sni_wildcard_covers_one_label() {
        let f = fixture();
        let outcome = handshake(&f.server, "b.example.test", &DEFAULT_CLIENT).await;
        assert_eq!(outcome.leaf, f.wildcard.der);
        let outcome = handshake(&f.server, "Other.EXAMPLE.test", &DEFAULT_CLIENT).await;
        assert_eq!(outcome.leaf, f.wildcard.der);
        // Two labels, or none, are not covered by `*.example.test`.
        for name in ["x.b.example.test", "example.test"] {
            let outcome = handshake(&f.server, name, &DEFAULT_CLIENT).await;
            assert_eq!(outcome.leaf, f.default.der, "{name}");
        }
    }

    #[tokio::test]
    async fn unknown_sni_and_no_sni_get_the_default() {
        let f = fixture();
        let outcome = handshake(&f.server, "nothing.invalid", &DEFAULT_CLIENT).await;
        assert_eq!(outcome.leaf, f.default.der);

        let no_sni = ClientOptions {
            sni: false,
            ..DEFAULT_CLIENT
        };
        let outcome = handshake(&f.server, "a.example.test", &no_sni).await;
        assert_eq!(outcome.server_sni, None);
        assert_eq!(outcome.leaf, f.default.der);
        // An IP address is never sent as SNI either.
        let outcome = handshake(&f.server, "127.0.0.1", &DEFAULT_CLIENT).await;
        assert_eq!(outcome.server_sni, None);
        assert_eq!(outcome.leaf, f.default.der);
    }

    #[tokio::test]
    async fn alpn_prefers_h2_and_falls_back_to_http1() {
        let f = fixture();
        let outcome = handshake(&f.server, "a.example.test", &DEFAULT_CLIENT).await;
        assert_eq!(outcome.alpn.as_deref(), Some(&b"h2"[..]));
        // The server's preference wins over the client's order.
        let reversed = ClientOptions {
            alpn: &[b"http/1.1", b"h2"],
            ..DEFAULT_CLIENT
        };
        let outcome = handshake(&f.server, "a.example.test", &reversed).await;
        assert_eq!(outcome.alpn.as_deref(), Some(&b"h2"[..]));
        let http1 = ClientOptions {
            alpn: &[b"http/1.1"],
            ..DEFAULT_CLIENT
        };
        let outcome = handshake(&f.server, "a.example.test", &http1).await;
        assert_eq!(outcome.alpn.as_deref(), Some(&b"http/1.1"[..]));
        let none = ClientOptions {
            alpn: &[],
            ..DEFAULT_CLIENT
        };
        let outcome = handshake(&f.server, "a.example.test", &none).await;
        assert_eq!(outcome.alpn, None);
    }

    #[tokio::test]
    async fn tls12_and_tls13_are_negotiated() {
        let f = fixture();
        let outcome = handshake(&f.server, "b.example.test", &DEFAULT_CLIENT).await;
        assert_eq!(outcome.version, ProtocolVersion::TLSv1_3);
        let tls12 = ClientOptions {
            versions: TLS12_ONLY,
            ..DEFAULT_CLIENT
        };
        let outcome = handshake(&f.server, "b.example.test", &tls12).await;
        assert_eq!(outcome.version, ProtocolVersion::TLSv1_2);
        assert_eq!(outcome.leaf, f.wildcard.der);
        assert_eq!(outcome.alpn.as_deref(), Some(&b"h2"[..]));

        let versions: Vec<_> = f
            .server
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|suite| suite.version().version)
            .collect();
        assert!(versions.contains(&ProtocolVersion::TLSv1_2));
        assert!(versions.contains(&ProtocolVersion::TLSv1_3));
        assert!(f.server.alpn_protocols == [b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[tokio::test]
    async fn other_key_types_are_served() {
        let dir = TempDir::new();
        let p384 = make_cert_with(
            &dir,
            "p384",
            params(&["p384.test"]),
            &rcgen::PKCS_ECDSA_P384_SHA384,
        );
        let ed25519 = make_cert_with(&dir, "ed", params(&["ed.test"]), &rcgen::PKCS_ED25519);
        // The same P-256 key as a SEC1 "EC PRIVATE KEY".
        let sec1 = make_cert(&dir, "sec1", &["sec1.test"]);
        let sec1_der = sec1_from_pkcs8(&sec1.key_pem);
        let sec1_pem = pem_encode("EC PRIVATE KEY", &sec1_der);
        let sec1_paths = CertificatePaths {
            cert: sec1.paths.cert.clone(),
            key: dir.write("sec1-ec.key", sec1_pem),
        };
        let tls = TlsConfig {
            certificates: vec![p384.paths.clone(), ed25519.paths.clone(), sec1_paths],
        };
        let server = server_config(&tls).unwrap();
        assert_eq!(
            handshake(&server, "p384.test", &DEFAULT_CLIENT).await.leaf,
            p384.der
        );
        assert_eq!(
            handshake(&server, "ed.test", &DEFAULT_CLIENT).await.leaf,
            ed25519.der
        );
        assert_eq!(
            handshake(&server, "sec1.test", &DEFAULT_CLIENT).await.leaf,
            sec1.der
        );
    }

    /// A certificate chain (leaf, then its issuer) is sent whole.
    #[tokio::test]
    async fn chain_is_sent() {
        let dir = TempDir::new();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = params(&[]);
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = params(&["leaf.test"]).signed_by(&leaf_key, &ca).unwrap();
        let tls = TlsConfig {
            certificates: vec![CertificatePaths {
                cert: dir.write("chain.crt", format!("{}{}", leaf.pem(), ca.pem())),
                key: dir.write("leaf.key", leaf_key.serialize_pem()),
            }],
        };
        let server = server_config(&tls).unwrap();

        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from("leaf.test").unwrap();
        let (_, client) = tokio::join!(
            TlsAcceptor::from(server).accept(server_io),
            TlsConnector::from(client_config(&DEFAULT_CLIENT)).connect(name, client_io)
        );
        let client = client.unwrap();
        let sent = client.get_ref().1.peer_certificates().unwrap();
        assert_eq!(sent, &[leaf.der().clone(), ca.der().clone()]);
    }

    /// The inner ECPrivateKey of an EC PKCS#8 document: `SEQUENCE { INTEGER, SEQUENCE,
    /// OCTET STRING }`, the third element's contents.
    fn sec1_from_pkcs8(pem: &str) -> Vec<u8> {
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        let der = der.secret_pkcs8_der();
        // Returns (tag, contents, rest) of one DER TLV.
        fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
            let tag = input[0];
            let (len, header) = match input[1] {
                n if n < 0x80 => (n as usize, 2),
                0x81 => (input[2] as usize, 3),
                0x82 => (((input[2] as usize) << 8) | input[3] as usize, 4),
                other => panic!("length form {other:#x}"),
            };
            (tag, &input[header..header + len], &input[header + len..])
        }
        let (tag, body, _) = tlv(der);
        assert_eq!(tag, 0x30);
        let (_, _, rest) = tlv(body); // version
        let (_, _, rest) = tlv(rest); // algorithm
        let (tag, key, _) = tlv(rest);
        assert_eq!(tag, 0x04);
        key.to_vec()
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    b64.push('=');
                }
            }
        }
        let mut pem = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str(&format!("-----END {label}-----\n"));
        pem
    }

    #[test]
    fn names_are_sans_else_cn() {
        let dir = TempDir::new();
        let mut with_cn = params(&["Www.Example.TEST.", "*.Example.test", "www.example.test"]);
        with_cn
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ignored.test");
        let with_cn = make_cert_with(&dir, "sans", with_cn, &rcgen::PKCS_ECDSA_P256_SHA256);
        let mut cn_only = params(&[]);
        cn_only.distinguished_name = rcgen::DistinguishedName::new();
        cn_only
            .distinguished_name
            .push(rcgen::DnType::CommonName, "CN-Only.test");
        let cn_only = make_cert_with(&dir, "cn", cn_only, &rcgen::PKCS_ECDSA_P256_SHA256);
        let names = certificate_names(&tls_config(&[&with_cn, &cn_only])).unwrap();
        assert_eq!(
            names,
            vec![
                vec!["www.example.test".to_string(), "*.example.test".to_string()],
                vec!["cn-only.test".to_string()],
            ]
        );
    }

    fn resolver(names: &[&[&str]]) -> SniResolver {
        let dir = TempDir::new();
        let loaded = names
            .iter()
            .enumerate()
            .map(|(i, names)| {
                let cert = make_cert(&dir, &i.to_string(), &["unused.invalid"]);
                Loaded {
                    key: load(&cert.paths, &rustls::crypto::ring::default_provider())
                        .unwrap()
                        .key,
                    names: names.iter().map(|n| normalize(n)).collect(),
                }
            })
            .collect();
        SniResolver::new(loaded).unwrap()
    }

    #[test]
    fn selection_rules() {
        let r = resolver(&[
            &["default.test"],
            &["*.example.test", "shared.test"],
            &[
                "a.example.test",
                "shared.test",
                "*.example.test",
                "w*.other.test",
            ],
        ]);
        let cases: &[(Option<&str>, usize)] = &[
            (None, 0),
            (Some(""), 0),
            (Some("default.test"), 0),
            (Some("DEFAULT.test."), 0),
            // Exact beats a wildcard listed earlier.
            (Some("a.example.test"), 2),
            (Some("a.example.test."), 2),
            (Some("b.example.test"), 1),
            (Some("B.EXAMPLE.TEST."), 1),
            (Some("b.a.example.test"), 0),
            (Some("x.y.example.test"), 0),
            (Some("example.test"), 0),
            (Some(".example.test"), 0),
            // The first listed wins a tie.
            (Some("shared.test"), 1),
            // Partial wildcards are not matched.
            (Some("www.other.test"), 0),
            (Some("w*.other.test"), 0),
            (Some("localhost"), 0),
        ];
        for &(sni, expected) in cases {
            assert_eq!(r.select(sni), expected, "{sni:?}");
        }
    }

    #[test]
    fn sni_host_comparison() {
        assert!(sni_matches_host("a.example.test", "a.example.test"));
        assert!(sni_matches_host("a.example.test", "A.Example.Test"));
        assert!(sni_matches_host("a.example.test", "a.example.test:8443"));
        assert!(sni_matches_host("a.example.test.", "a.example.test"));
        assert!(sni_matches_host("a.example.test", "a.example.test.:443"));
        assert!(!sni_matches_host("a.example.test", "b.example.test"));
        assert!(!sni_matches_host("a.example.test", "example.test"));
        assert!(!sni_matches_host("a.example.test", "a.example.test.evil"));
        assert!(!sni_matches_host("a.example.test", "[::1]:443"));
        assert!(!sni_matches_host("a.example.test", "[::1]"));
        assert!(!sni_matches_host("a.example.test", ""));
        assert!(!sni_matches_host("", ""));
        assert!(!sni_matches_host("a.example.test", "a.example.test:x"));
        // A bracketed literal compares without its brackets and port.
        assert!(sni_matches_host("::1", "[::1]:8443"));
    }

    fn err_of(tls: &TlsConfig) -> (TlsError, String) {
        let err = server_config(tls).unwrap_err();
        let message = err.to_string();
        (err, message)
    }

    #[test]
    fn missing_and_empty_files() {
        let dir = TempDir::new();
        let good = make_cert(&dir, "good", &["good.test"]);

        let missing = dir.0.join("missing.crt");
        let (err, message) = err_of(&TlsConfig {
            certificates: vec![CertificatePaths {
                cert: missing.clone(),
                key: good.paths.key.clone(),
            }],
        });
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
        assert!(message.contains(&*missing.to_string_lossy()), "{message}");
        assert!(message.contains("No such file or directory"), "{message}");

        let missing_key = dir.0.join("missing.key");
        let (err, message) = err_of(&TlsConfig {
            certificates: vec![CertificatePaths {
                cert: good.paths.cert.clone(),
                key: missing_key.clone(),
            }],
        });
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
        assert!(
            message.contains(&*missing_key.to_string_lossy()),
            "{message}"
        );

        let empty = dir.write("empty.crt", "");
        let (err, message) = err_of(&TlsConfig {
            certificates: vec![CertificatePaths {
                cert: empty.clone(),
                key: good.paths.key.clone(),
            }],
        });
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
        assert!(message.contains(&*empty.to_string_lossy()), "{message}");

        // Text that is no PEM at all has no certificate either.
        let text = dir.write("text.crt", "hello, world\n");
        let (err, _) = err_of(&TlsConfig {
            certificates: vec![CertificatePaths {
                cert: text,
                key: good.paths.key.clone(),
            }],
        });
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");

        // A later entry fails the whole config too.
        let (err, _) = err_of(&TlsConfig {
            certificates: vec![
                good.paths.clone(),
                CertificatePaths {
                    cert: empty,
                    key: good.paths.key.clone(),
                },
            ],
        });
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");

        assert!(matches!(
            server_config(&TlsConfig {
                certificates: vec![]
            }),
            Err(TlsError::NoCertificates)
        ));
    }

    #[test]
    fn key_errors() {
        let dir = TempDir::new();
        let a = make_cert(&dir, "a", &["a.test"]);
        let b = make_cert(&dir, "b", &["b.test"]);

        // A key file holding only a certificate.
        let (err, message) = err_of(&TlsConfig {
            certificates: vec![CertificatePaths {
                cert: a.paths.cert.clone(),
                key: a.paths.cert.clone(),
            }],
        });
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
        assert!(
            message.contains(&*a.paths.cert.to_string_lossy()),
            "{message}"
        );

        let (err, message) = err_of(&TlsConfig {
            certificates: vec![CertificatePaths {
                cert: a.paths.cert.clone(),
                key: b.paths.key.clone(),
            }],
        });
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        assert!(
            message.contains(&*a.paths.cert.to_string_lossy()),
            "{message}"
        );
        assert!(
            message.contains(&*b.paths.key.to_string_lossy()),
            "{message}"
        );

        let garbage_key = dir.write("garbage.key", pem_encode("PRIVATE KEY", b"not a key"));
        let (err, message) = err_of(&TlsConfig {
            certificates: vec![CertificatePaths {
                cert: a.paths.cert.clone(),
                key: garbage_key.clone(),
            }],
        });
        assert!(matches!(err, TlsError::UnsupportedKey { .. }), "{err:?}");
        assert!(
            message.contains(&*garbage_key.to_string_lossy()),
            "{message}"
        );

        let encrypted = dir.write(
            "encrypted.key",
            pem_encode("ENCRYPTED PRIVATE KEY", b"opaque"),
        );
        let (err, message) = err_of(&TlsConfig {
            certificates: vec![CertificatePaths {
                cert: a.paths.cert.clone(),
                key: encrypted.clone(),
            }],
        });
        assert!(matches!(err, TlsError::UnsupportedKey { .. }), "{err:?}");
        assert!(message.contains("encrypted"), "{message}");
        assert!(message.contains(&*encrypted.to_string_lossy()), "{message}");

        // Certificate and key in one file works.
        let combined = dir.write(
            "combined.pem",
            format!(
                "{}{}",
                std::fs::read_to_string(&a.paths.cert).unwrap(),
                a.key_pem
            ),
        );
        server_config(&TlsConfig {
            certificates: vec![CertificatePaths {
                cert: combined.clone(),
                key: combined,
            }],
        })
        .unwrap();
    }

    #[test]
    fn garbage_pem_and_bad_certificates() {
        let dir = TempDir::new();
        let good = make_cert(&dir, "good", &["good.test"]);

        let bad_base64 = dir.write(
            "bad64.crt",
            "-----BEGIN CERTIFICATE-----\n!!!! not base64 ????\n-----END CERTIFICATE-----\n",
        );
        let (err, message) = err_of(&TlsConfig {
            certificates: vec![CertificatePaths {
                cert: bad_base64.clone(),
                key: good.paths.key.clone(),
            }],
        });
        assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");
        assert!(
            message.contains(&*bad_base64.to_string_lossy()),
            "{message}"
        );

        let unterminated = dir.write("open.crt", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let (err, message) = err_of(&TlsConfig {
            certificates: vec![CertificatePaths {
                cert: unterminated.clone(),
                key: good.paths.key.clone(),
            }],
        });
        assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");
        assert!(
            message.contains(&*unterminated.to_string_lossy()),
            "{message}"
        );

        let not_der = dir.write(
            "notder.crt",
            pem_encode("CERTIFICATE", b"this is not an X.509 certificate"),
        );
        let (err, message) = err_of(&TlsConfig {
            certificates: vec![CertificatePaths {
                cert: not_der.clone(),
                key: good.paths.key.clone(),
            }],
        });
        assert!(matches!(err, TlsError::BadCertificate { .. }), "{err:?}");
        assert!(message.contains(&*not_der.to_string_lossy()), "{message}");

        // A broken certificate after a good leaf.
        let chain = dir.write(
            "chain.crt",
            format!(
                "{}{}",
                std::fs::read_to_string(&good.paths.cert).unwrap(),
                pem_encode("CERTIFICATE", b"junk")
            ),
        );
        let (err, message) = err_of(&TlsConfig {
            certificates: vec![CertificatePaths {
                cert: chain.clone(),
                key: good.paths.key.clone(),
            }],
        });
        assert!(matches!(err, TlsError::BadCertificate { .. }), "{err:?}");
        assert!(message.contains(&*chain.to_string_lossy()), "{message}");
    }
}
