//! What can go wrong while the agent manages its host's firewall, each with
//! what an administrator needs to act on it.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("cannot run {command}: {source} (is nftables installed?)")]
    NftMissing {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Nft { command: String, stderr: String },
    #[error("nft {found} is too old: connscope needs {needed} or newer (inet tables, NFLOG groups, JSON listings)")]
    NftTooOld { found: String, needed: String },
    #[error("cannot read the version in `nft --version` output {0:?}")]
    NftVersion(String),
    #[error("cannot read nft's JSON listing: {0}")]
    Listing(serde_json::Error),
    #[error("the assigned policy {name} v{version}: {source}")]
    Policy {
        name: String,
        version: u32,
        source: connscope_policy::PolicyError,
    },
    #[error("the rendered ruleset does not parse for the what-if check: {0}")]
    Unchecked(String),
    #[error("the new rules would not let the agent reach its collector {0}")]
    CollectorUnreachable(SocketAddr),
    #[error("the firewall is switched off on this host (`connscope agent firewall off`); `connscope agent firewall on` lets the agent load again")]
    BrokenGlass,
    #[error("{path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a saved assignment: {source}")]
    StateFormat {
        path: PathBuf,
        source: serde_json::Error,
    },
}
