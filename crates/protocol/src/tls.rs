//! The TLS identity both sides check, chosen once: ring as the crypto (no
//! aws-lc-rs: it needs cmake and a long C build), certificates read from PEM
//! files, and SHA-256 certificate fingerprints, which the collector prints at
//! start and an agent may pin instead of a CA.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::crypto::{ring as ring_provider, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

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

    pub const fn from_bytes(bytes: [u8; 32]) -> Fingerprint {
        Fingerprint(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
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

/// The process-wide choice of crypto: ring.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(ring_provider::default_provider())
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
}
