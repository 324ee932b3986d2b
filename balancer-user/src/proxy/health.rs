//! Active health checks of a pool's servers: one task per server sends `GET path` every
//! `interval` on a fresh connection made by the proxy's own connector (TCP or unix socket,
//! h2c when the pool speaks it), so a check sees what a request would, without borrowing a
//! kept-alive connection. Results go through the server's state (rise/fall, re-admission after
//! a passive ejection). The tasks end when the pool is deactivated or dropped.
//!
//! https:// servers are checked over TLS with the pool's `tls_*` settings (its client config,
//! the same name verified), as requests reach them.
//!
//! With `health.port` the checks go to the server's host at that port; with `health.tls` (for
//! http:// servers) they speak TLS there (HTTP/1.1 inside, SNI = the check's host when it is a DNS name), verifying
//! the certificate against `tls_ca_file`, or not at all without it (HAProxy `verify none`).

use std::{
    path::Path,
    pin::pin,
    sync::{Arc, Weak},
    time::Duration,
};

use hyper::{
    Request,
    header::{CONNECTION, HOST, USER_AGENT},
};
use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
};
use rustls_pki_types::{
    CertificateDer, ServerName, UnixTime,
    pem::{self, PemObject},
};
use tokio::{net::TcpStream, time::MissedTickBehavior};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::{Body, pool::Pool, upstream::ServerConnections, upstream_tls::ServerTls};
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
    let Some((url, h2c, tls, server_tls)) = pool.upgrade().map(|pool| {
        let url = pool.servers[index].config.url.clone();
        let server_tls = pool
            .server_tls
            .as_ref()
            .and_then(|config| ServerTls::new(&url, &pool.config.tls, config));
        (url, pool.config.h2c, pool.check_tls.clone(), server_tls)
    }) else {
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
            outcome = probe(&url, h2c, &check, tls.as_ref(), server_tls.as_ref()) => outcome,
        };
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.record_check(index, outcome.passed(), &outcome.to_string());
    }
}

/// One check of the server at `url` (at `check.port` if set; over TLS with `tls`, the config
/// built by [`check_tls_config`] when `check.tls` is set, or with `server_tls`, the pool's, for
/// an https:// server): passes when `GET path` answers, within `timeout`, with a status in
/// `expect` (empty: any 2xx or 3xx).
pub async fn probe(
    url: &ServerUrl,
    h2c: bool,
    check: &PoolHealthConfig,
    tls: Option<&Arc<ClientConfig>>,
    server_tls: Option<&ServerTls>,
) -> CheckOutcome {
    let url = &match (url, check.port) {
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
    // An https:// server may pick h2 when the pool offers it.
    let may_be_h2 = h2c || server_tls.is_some_and(|tls| tls.offers_h2);
    let attempt = async {
        let host = check.host.clone().unwrap_or_else(|| url.authority());
        let mut request = Request::get(check.path.as_str())
            .header(HOST, &host)
            .header(USER_AGENT, USER_AGENT_VALUE);
        if !may_be_h2 || tls.is_some() {
            // HTTP/2 has no Connection header (RFC 9113 §8.2.2).
            request = request.header(CONNECTION, "close");
        }
        let request: Request<Body> = request
            .body(crate::proxy::empty_body())
            .map_err(|err| format!("invalid check request: {err}"))?;
        let status = match (url, tls) {
            (
                ServerUrl::Http {
                    host: address,
                    port,
                },
                Some(tls),
            ) => {
                send_over_tls(
                    address,
                    *port,
                    crate::http::authority::bare_host(&host),
                    tls.clone(),
                    request,
                )
                .await?
            }
            _ => send_plain(url, h2c, server_tls, check.timeout, request).await?,
        };
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

/// Sends `request` through the proxy's own connector (TCP, TLS with `tls` for an https://
/// server, or unix socket; h2c if the pool speaks it), on a connection made for it; its status.
async fn send_plain(
    url: &ServerUrl,
    h2c: bool,
    tls: Option<&ServerTls>,
    timeout: Duration,
    request: Request<Body>,
) -> Result<u16, String> {
    // reuse = false: the connection is made for this check and closed after it.
    let connections = ServerConnections::with_tls(
        url.clone(),
        KeepaliveConfig {
            reuse: false,
            idle_timeout: timeout.max(Duration::from_millis(1)),
            max_idle: 0,
        },
        timeout,
        h2c,
        tls.cloned(),
    );
    let checkout = connections
        .checkout()
        .await
        .map_err(|err| err.to_string())?;
    let response = checkout
        .send(&mut request.map(super::h1::request_body::BoxedBody::new))
        .await
        .map_err(|err| format!("no response: {err}"))?;
    Ok(response.status().as_u16())
}

/// Sends `request` over HTTP/1.1 in TLS to `address`:`port`, with SNI `sni` when it is a DNS
/// name; its status. The connection ends with the returned future (the body is not read).
async fn send_over_tls(
    address: &str,
    port: u16,
    sni: &str,
    tls: Arc<ClientConfig>,
    request: Request<Body>,
) -> Result<u16, String> {
    let name = ServerName::try_from(sni.to_string())
        .map_err(|err| format!("{sni:?} is not a TLS server name: {err}"))?;
    let tcp = TcpStream::connect((address, port))
        .await
        .map_err(|err| format!("connect: {err}"))?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|err| format!("TLS handshake: {err}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("HTTP handshake: {err}"))?;
    let mut response = pin!(sender.send_request(request));
    let mut connection = pin!(connection);
    let response = tokio::select! {
        response = &mut response => response,
        closed = &mut connection => {
            // Closed cleanly: the response, if any, was delivered before.
            closed.map_err(|err| format!("no response: {err}"))?;
            response.await
        }
    };
    let response = response.map_err(|err| format!("no response: {err}"))?;
    Ok(response.status().as_u16())
}

/// The TLS client config of a pool's checks (ring, TLS 1.2 and 1.3, ALPN http/1.1): verifying
/// the server's certificate against the CA certificates in `ca` (the file's path and content),
/// or not at all without it. Errors name the file.
pub fn check_tls_config(ca: Option<(&Path, &[u8])>) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("building the TLS client config: {err}"))?;
    let mut config = match ca {
        Some((path, pem)) => {
            let bad = |detail: String| format!("{}: {detail}", path.display());
            let certificates = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, pem::Error>>()
                .map_err(|err| bad(format!("malformed PEM: {err}")))?;
            if certificates.is_empty() {
                return Err(bad(
                    "no certificate found (expected a PEM \"CERTIFICATE\" section)".to_string(),
                ));
            }
            let mut roots = RootCertStore::empty();
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|err| bad(format!("invalid CA certificate: {err}")))?;
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
            let err = check_tls_config(Some((path, pem))).expect_err("a bad CA file");
            assert!(err.starts_with(expected), "{err}");
        }
        assert!(check_tls_config(None).is_ok());
    }
}
