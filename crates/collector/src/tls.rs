//! The collector's TLS identity.
//!
//! A collector must be reachable over HTTPS from the first start, without a
//! PKI in place. So unless it is given a certificate and key, it makes a
//! self-signed pair next to its database (`collector-cert.pem`,
//! `collector-key.pem`, the key readable by root only), reuses it on every
//! later start, and prints the certificate's SHA-256 fingerprint for agents to
//! pin (`--collector-fingerprint`), or the certificate file can be handed to
//! agents as `--collector-ca`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use connscope_protocol::tls::{crypto_provider, load_certs};
use connscope_protocol::Fingerprint;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::ServerConfig;

use crate::config::TlsSettings;
use crate::error::CollectorError;

pub const GENERATED_CERT: &str = "collector-cert.pem";
pub const GENERATED_KEY: &str = "collector-key.pem";

/// The server's TLS settings and what to tell the operator about them.
pub struct TlsIdentity {
    pub server_config: Arc<ServerConfig>,
    pub cert_path: PathBuf,
    pub fingerprint: Fingerprint,
    /// The pair was made during this start.
    pub generated: bool,
}

fn tls_err(path: &Path, reason: impl ToString) -> CollectorError {
    CollectorError::Tls {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Loads the configured pair, or the generated one beside `db`, making it first
/// if it does not exist yet.
pub fn load_or_generate(settings: &TlsSettings, db: &Path) -> Result<TlsIdentity, CollectorError> {
    let (cert_path, key_path, generated) = match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone(), false),
        (None, None) => {
            let dir = db
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let cert = dir.join(GENERATED_CERT);
            let key = dir.join(GENERATED_KEY);
            let generated = !cert.exists() && !key.exists();
            if generated {
                generate(&cert, &key, &settings.names)?;
            }
            (cert, key, generated)
        }
        _ => {
            return Err(tls_err(
                settings
                    .cert
                    .as_deref()
                    .or(settings.key.as_deref())
                    .unwrap_or(db),
                "give both the certificate and the key, or neither (to use a generated pair)",
            ))
        }
    };
    let certs = load_certs(&cert_path).map_err(|e| tls_err(&cert_path, e))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| tls_err(&key_path, e))?;
    let fingerprint = Fingerprint::of(&certs[0]);
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| tls_err(&cert_path, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsIdentity {
        server_config: Arc::new(config),
        cert_path,
        fingerprint,
        generated,
    })
}

/// The served certificate's path and fingerprint, as a collector with these
/// settings would serve it; never makes one (`collector enroll` runs beside
/// a collector that already started, and must not leave a pair it cannot read).
pub fn served_fingerprint(
    settings: &TlsSettings,
    db: &Path,
) -> Result<(PathBuf, Fingerprint), CollectorError> {
    let cert_path = match &settings.cert {
        Some(cert) => cert.clone(),
        None => db
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join(GENERATED_CERT),
    };
    if !cert_path.exists() {
        return Err(tls_err(
            &cert_path,
            "no certificate yet: start the collector once (it makes one), or configure tls.cert",
        ));
    }
    let certs = load_certs(&cert_path).map_err(|e| tls_err(&cert_path, e))?;
    let fingerprint = Fingerprint::of(&certs[0]);
    Ok((cert_path, fingerprint))
}

fn generate(
    cert_path: &Path,
    key_path: &Path,
    extra_names: &[String],
) -> Result<(), CollectorError> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(host) = connscope_names::host_name().filter(|host| host != "localhost") {
        names.push(host);
    }
    names.extend(extra_names.iter().cloned());
    let pair = rcgen::generate_simple_self_signed(names).map_err(|e| tls_err(cert_path, e))?;
    if let Some(dir) = cert_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| tls_err(dir, e))?;
    }
    // The key first, private from its creation: never world-readable, not even briefly.
    let mut key = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_path)
        .map_err(|e| tls_err(key_path, e))?;
    key.write_all(pair.signing_key.serialize_pem().as_bytes())
        .and_then(|()| key.sync_all())
        .map_err(|e| tls_err(key_path, e))?;
    fs::write(cert_path, pair.cert.pem()).map_err(|e| tls_err(cert_path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sub/connscope.db");
        let settings = TlsSettings {
            names: vec!["10.1.2.3".into()],
            ..TlsSettings::default()
        };
        let first = load_or_generate(&settings, &db).unwrap();
        assert!(first.generated);
        let key_mode = fs::metadata(dir.path().join("sub").join(GENERATED_KEY))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
            0o600
        );
        let second = load_or_generate(&settings, &db).unwrap();
        assert!(!second.generated);
        assert_eq!(first.fingerprint, second.fingerprint);
    }

    #[test]
    fn half_a_pair_is_refused() {
        let settings = TlsSettings {
            cert: Some("/nonexistent/cert.pem".into()),
            ..TlsSettings::default()
        };
        let err = load_or_generate(&settings, Path::new("db"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("both the certificate and the key"), "{err}");
    }
}
