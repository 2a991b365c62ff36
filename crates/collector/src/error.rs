//! Why the collector could not start: the one error of starting, shared by
//! the settings, the tokens and the TLS identity.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("--{flag}: {reason}")]
    Flag { flag: &'static str, reason: String },
    #[error("give --listen and --db, or a --config file that sets them")]
    NoListenOrDb,
    #[error("TLS: {path}: {reason}")]
    Tls { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
