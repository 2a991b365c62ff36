//! How an agent decides it talks to the right collector.
//!
//! Collectors usually run with a self-signed certificate they made on first
//! start, so there is no public CA to lean on. An agent either pins a CA (or
//! the collector's own certificate) from a PEM file, verified the normal
//! webpki way including the host name, or pins the SHA-256 fingerprint of the
//! collector's certificate, which the collector prints at start. A fingerprint
//! pin ignores names and dates on purpose: the pin *is* the identity, and the
//! TLS handshake signature still proves the collector holds the key.
//!
//! The crypto (ring), PEM reading and fingerprints are the collector's too:
//! they are in `connscope_protocol::tls`.

use std::path::PathBuf;
use std::sync::Arc;

use connscope_protocol::tls::{crypto_provider, load_certs, Fingerprint, TlsError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// What the agent trusts as the collector.
#[derive(Debug, Clone)]
pub enum CollectorTrust {
    /// Certificates (PEM) to use as trust anchors: a CA, or the collector's
    /// self-signed certificate itself. Host names are checked.
    CaFile(PathBuf),
    /// The SHA-256 fingerprint of the collector's certificate.
    Fingerprint(Fingerprint),
}

/// Client TLS settings for talking to the collector.
pub fn client_config(trust: &CollectorTrust) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = crypto_provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match trust {
        CollectorTrust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(path)? {
                roots.add(cert).map_err(|e| TlsError::CaFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        CollectorTrust::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                pin: *pin,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Accepts exactly the certificate with the pinned fingerprint.
#[derive(Debug)]
struct PinnedCertificate {
    pin: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let found = Fingerprint::of(end_entity);
        if found == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "collector certificate fingerprint {found} does not match the pinned {}",
                self.pin
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_ca_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "").unwrap();
        let err = client_config(&CollectorTrust::CaFile(path)).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
