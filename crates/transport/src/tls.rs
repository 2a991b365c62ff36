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
//! Only rustls with the `ring` provider is used (no aws-lc-rs: it needs cmake
//! and a long C build).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as ring_provider, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A SHA-256 certificate fingerprint, shown as 32 colon-separated hex pairs
/// (the `openssl x509 -fingerprint -sha256` form).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        Fingerprint(digest.as_ref().try_into().expect("SHA-256 is 32 bytes"))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = TlsError;

    /// Accepts `AB:CD:...`, plain hex, either case, with an optional `sha256:`
    /// or `SHA256=` prefix.
    fn from_str(s: &str) -> Result<Self, TlsError> {
        let bad = |reason: &str| TlsError::Fingerprint {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = s.trim();
        let hex_part = ["sha256:", "sha256=", "SHA256:", "SHA256="]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p))
            .unwrap_or(trimmed);
        let digits: Vec<u8> = hex_part.bytes().filter(|b| *b != b':').collect();
        if digits.len() != 64 {
            return Err(bad("expected 32 bytes of hex (64 digits, colons optional)"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| bad("not hex"))?;
            out[i] = u8::from_str_radix(text, 16).map_err(|_| bad("not hex"))?;
        }
        Ok(Fingerprint(out))
    }
}

/// A CA file or fingerprint that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid certificate fingerprint {input:?}: {reason}")]
    Fingerprint { input: String, reason: String },
    #[error("CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What the agent trusts as the collector.
#[derive(Debug, Clone)]
pub enum CollectorTrust {
    /// Certificates (PEM) to use as trust anchors: a CA, or the collector's
    /// self-signed certificate itself. Host names are checked.
    CaFile(PathBuf),
    /// The SHA-256 fingerprint of the collector's certificate.
    Fingerprint(Fingerprint),
}

/// The process-wide choice of crypto: ring.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(ring_provider::default_provider())
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

/// Reads every certificate of a PEM file; an empty file is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
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
    fn fingerprint_forms_parse_to_the_same_value() {
        let fp = Fingerprint::of(b"certificate");
        let shown = fp.to_string();
        assert_eq!(shown.len(), 32 * 3 - 1);
        assert_eq!(shown.parse::<Fingerprint>().unwrap(), fp);
        let plain = shown.replace(':', "").to_lowercase();
        assert_eq!(plain.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(
            format!("sha256:{plain}").parse::<Fingerprint>().unwrap(),
            fp
        );
        let err = "AB:CD".parse::<Fingerprint>().unwrap_err().to_string();
        assert!(err.contains("expected 32 bytes"), "{err}");
        let err = "zz"
            .repeat(32)
            .parse::<Fingerprint>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not hex"), "{err}");
    }

    #[test]
    fn an_empty_ca_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "").unwrap();
        let err = client_config(&CollectorTrust::CaFile(path)).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
