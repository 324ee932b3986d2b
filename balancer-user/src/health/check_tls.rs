//! The TLS client config of the HTTP checks that speak TLS to a server's health port
//! (a pool's `health.tls`).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
};
use rustls_pki_types::{
    CertificateDer, ServerName, UnixTime,
    pem::{self, PemObject},
};

/// The TLS client config of a pool's checks (ring, TLS 1.2 and 1.3, ALPN http/1.1): verifying
/// the server's certificate against the CA certificates in `ca` (the file's path and content),
/// or not at all without it. Errors name the file.
pub fn check_tls_config(ca: Option<(&Path, &[u8])>) -> Result<Arc<ClientConfig>, CheckTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(CheckTlsError::Build)?;
    let mut config = match ca {
        Some((path, pem)) => {
            let certificates = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, pem::Error>>()
                .map_err(|source| CheckTlsError::MalformedPem {
                    path: path.to_path_buf(),
                    source,
                })?;
            if certificates.is_empty() {
                return Err(CheckTlsError::NoCertificate(path.to_path_buf()));
            }
            let mut roots = RootCertStore::empty();
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|source| CheckTlsError::InvalidCa {
                        path: path.to_path_buf(),
                        source,
                    })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Why the checks' TLS client config cannot be built; the text names the CA file.
#[derive(Debug, thiserror::Error)]
pub enum CheckTlsError {
    #[error("building the TLS client config: {0}")]
    Build(#[source] rustls::Error),
    #[error("{}: malformed PEM: {source}", path.display())]
    MalformedPem { path: PathBuf, source: pem::Error },
    #[error("{}: no certificate found (expected a PEM \"CERTIFICATE\" section)", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: invalid CA certificate: {source}", path.display())]
    InvalidCa {
        path: PathBuf,
        source: rustls::Error,
    },
}

/// Accepts any server certificate (`tls_ca_file` not given), still checking that the server
/// holds its key (the handshake signatures).
#[derive(Debug)]
pub(crate) struct AnyCertificate(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_tls_config_names_a_bad_ca_file() {
        let path = Path::new("/etc/balancer/ca.pem");
        for (pem, expected) in [
            (
                &b"not pem"[..],
                "/etc/balancer/ca.pem: no certificate found (expected a PEM \"CERTIFICATE\" section)",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n",
                "/etc/balancer/ca.pem: malformed PEM: ",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "/etc/balancer/ca.pem: invalid CA certificate: ",
            ),
        ] {
            let err = check_tls_config(Some((path, pem)))
                .expect_err("a bad CA file")
                .to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        assert!(check_tls_config(None).is_ok());
    }
}
