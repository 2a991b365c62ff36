//! The collector's settings: one TOML file, with command-line flags on top.
//!
//! Every setting has a flag and a key of the same name, so a test or a quick
//! run needs no file and a service has one place to look.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::Tokens;
use crate::error::CollectorError;

/// Default limit of a compressed request body.
pub const DEFAULT_BODY_LIMIT: u64 = 16 * 1024 * 1024;
/// Default limit of a decompressed ingest body (a zip bomb stops here).
pub const DEFAULT_DECOMPRESSED_LIMIT: u64 = 256 * 1024 * 1024;
/// Default number of ingest bodies decompressed and parsed at once: with the
/// decompressed limit, this bounds the memory of ingest whatever the number of
/// parallel requests.
pub const DEFAULT_CONCURRENT_DECOMPRESSIONS: usize = 2;
/// Default time a whole request (head, body, answer) may take.
pub const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_secs(45);
/// Default limits of the syslog TCP listener.
pub const DEFAULT_SYSLOG_LIMITS: SyslogLimits = SyslogLimits {
    max_connections: 512,
    max_per_source: 32,
    idle_timeout: Duration::from_secs(300),
    frame_timeout: Duration::from_secs(30),
};

/// How many syslog TCP connections are served and how long they may idle.
/// Syslog senders are not authenticated, so these keep them from taking the
/// file handles and memory the agents' HTTPS uploads need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyslogLimits {
    /// Connections open at once, from all senders.
    pub max_connections: usize,
    /// Connections open at once from one source address.
    pub max_per_source: usize,
    /// A connection that sends nothing this long is closed.
    pub idle_timeout: Duration,
    /// A frame that has begun must be complete within this long.
    pub frame_timeout: Duration,
}

/// The settings file, as written (`--config FILE`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub listen: Option<SocketAddr>,
    pub db: Option<PathBuf>,
    pub syslog_listen: Option<SocketAddr>,
    /// Agent id -> token.
    #[serde(default)]
    pub tokens: BTreeMap<String, String>,
    /// A file of `AGENT-ID TOKEN [HOST,HOST...]` lines (`#` comments), kept
    /// out of the main file so it can have tighter permissions.
    pub tokens_file: Option<PathBuf>,
    /// Agent id -> the host names its events may carry (default: the host of
    /// its first batch).
    #[serde(default)]
    pub token_hosts: BTreeMap<String, Vec<String>>,
    /// Reader name -> token for the query API (the map, reports). Without
    /// any, queries are open only when the collector listens on loopback.
    #[serde(default)]
    pub read_tokens: BTreeMap<String, String>,
    pub tls: Option<TlsSettings>,
    pub body_limit: Option<u64>,
    pub decompressed_limit: Option<u64>,
    pub concurrent_decompressions: Option<usize>,
    pub request_deadline_seconds: Option<u64>,
    pub syslog_max_connections: Option<usize>,
    pub syslog_max_per_source: Option<usize>,
    pub syslog_idle_timeout_seconds: Option<u64>,
    /// Events older than this many days are deleted (0 or absent: keep all).
    pub retention_days: Option<u32>,
}

/// Where the collector's certificate and key are. Both absent: a self-signed
/// pair is made next to the database on first start and reused after.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsSettings {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Extra DNS names / IP addresses for a generated certificate (it always
    /// has the host name, `localhost`, 127.0.0.1 and ::1).
    #[serde(default)]
    pub names: Vec<String>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, CollectorError> {
        let text = std::fs::read_to_string(path).map_err(|e| CollectorError::Config {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| CollectorError::Config {
            path: path.to_owned(),
            // toml's message names the line and column and shows the spot.
            reason: e.to_string(),
        })
    }
}

/// The settings the collector runs with, after file and flags are merged.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub listen: SocketAddr,
    pub db: PathBuf,
    pub syslog_listen: Option<SocketAddr>,
    pub tokens: Tokens,
    pub read_tokens: Tokens,
    pub tls: TlsSettings,
    pub body_limit: u64,
    pub decompressed_limit: u64,
    pub concurrent_decompressions: usize,
    pub request_deadline: Duration,
    pub syslog_limits: SyslogLimits,
    pub retention_days: Option<u32>,
}

impl CollectorConfig {
    /// Settings with defaults for everything but where to listen and store.
    pub fn new(listen: SocketAddr, db: PathBuf) -> CollectorConfig {
        CollectorConfig {
            listen,
            db,
            syslog_listen: None,
            tokens: Tokens::default(),
            read_tokens: Tokens::default(),
            tls: TlsSettings::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            decompressed_limit: DEFAULT_DECOMPRESSED_LIMIT,
            concurrent_decompressions: DEFAULT_CONCURRENT_DECOMPRESSIONS,
            request_deadline: DEFAULT_REQUEST_DEADLINE,
            syslog_limits: DEFAULT_SYSLOG_LIMITS,
            retention_days: None,
        }
    }

    /// Merges a settings file under explicit values (flags win).
    pub fn from_file(
        file: ConfigFile,
        listen: Option<SocketAddr>,
        db: Option<PathBuf>,
        file_path: &Path,
    ) -> Result<CollectorConfig, CollectorError> {
        let missing = |what: &str| CollectorError::Config {
            path: file_path.to_owned(),
            reason: format!("no {what}: set `{what}` in the file or pass --{what}"),
        };
        let listen = listen.or(file.listen).ok_or_else(|| missing("listen"))?;
        let db = db.or(file.db).ok_or_else(|| missing("db"))?;
        let mut config = CollectorConfig::new(listen, db);
        config.syslog_listen = file.syslog_listen;
        for (agent, token) in file.tokens {
            config
                .tokens
                .insert(&agent, &token)
                .map_err(|reason| CollectorError::Config {
                    path: file_path.to_owned(),
                    reason,
                })?;
        }
        for (reader, token) in file.read_tokens {
            config
                .read_tokens
                .insert(&reader, &token)
                .map_err(|reason| CollectorError::Config {
                    path: file_path.to_owned(),
                    reason,
                })?;
        }
        if let Some(path) = &file.tokens_file {
            config.tokens.load_file(path)?;
        }
        for (agent, hosts) in &file.token_hosts {
            config
                .tokens
                .bind_hosts(agent, hosts.iter().map(String::as_str))
                .map_err(|reason| CollectorError::Config {
                    path: file_path.to_owned(),
                    reason,
                })?;
        }
        config.tls = file.tls.unwrap_or_default();
        config.body_limit = file.body_limit.unwrap_or(DEFAULT_BODY_LIMIT);
        config.decompressed_limit = file
            .decompressed_limit
            .unwrap_or(DEFAULT_DECOMPRESSED_LIMIT);
        config.retention_days = file.retention_days.filter(|d| *d > 0);
        if let Some(n) = file.concurrent_decompressions {
            config.concurrent_decompressions = n;
        }
        if let Some(secs) = file.request_deadline_seconds {
            config.request_deadline = Duration::from_secs(secs);
        }
        let limits = &mut config.syslog_limits;
        limits.max_connections = file
            .syslog_max_connections
            .unwrap_or(limits.max_connections);
        limits.max_per_source = file.syslog_max_per_source.unwrap_or(limits.max_per_source);
        if let Some(secs) = file.syslog_idle_timeout_seconds {
            limits.idle_timeout = Duration::from_secs(secs);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(
            &tokens,
            "# agents\nweb2 tok-web2-0123456789\n\ndb1   tok-db1-0123456789\n",
        )
        .unwrap();
        let path = dir.path().join("collector.toml");
        std::fs::write(
            &path,
            format!(
                r#"
listen = "127.0.0.1:8443"
db = "/var/lib/connscope/db.sqlite"
syslog-listen = "127.0.0.1:5514"
tokens-file = "{}"
body-limit = 1000
decompressed-limit = 5000
concurrent-decompressions = 3
request-deadline-seconds = 20
syslog-max-connections = 100
syslog-max-per-source = 4
syslog-idle-timeout-seconds = 60
retention-days = 30
[tokens]
web1 = "tok-web1-0123456789"
[token-hosts]
web1 = ["web1", "web1.lan"]
[tls]
names = ["collector.test"]
"#,
                tokens.display()
            ),
        )
        .unwrap();
        let file = ConfigFile::load(&path).unwrap();
        let config =
            CollectorConfig::from_file(file, Some("127.0.0.1:9000".parse().unwrap()), None, &path)
                .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.db, PathBuf::from("/var/lib/connscope/db.sqlite"));
        assert_eq!(config.syslog_listen.unwrap().port(), 5514);
        assert_eq!(config.tokens.len(), 3);
        assert_eq!(
            config.tokens.agent_for("tok-db1-0123456789").unwrap().0,
            "db1"
        );
        assert_eq!(config.body_limit, 1000);
        assert_eq!(config.decompressed_limit, 5000);
        assert_eq!(config.retention_days, Some(30));
        assert_eq!(config.concurrent_decompressions, 3);
        assert_eq!(config.request_deadline, Duration::from_secs(20));
        assert_eq!(
            config.syslog_limits,
            SyslogLimits {
                max_connections: 100,
                max_per_source: 4,
                idle_timeout: Duration::from_secs(60),
                ..DEFAULT_SYSLOG_LIMITS
            }
        );
        let web1 = config.tokens.agent_for("tok-web1-0123456789").unwrap();
        assert_eq!(config.tokens.hosts_of(web1).unwrap().len(), 2);
        assert_eq!(config.tls.names, vec!["collector.test".to_owned()]);
    }

    #[test]
    fn mistakes_name_the_file_and_spot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nlisten-port = 5\n").unwrap();
        let err = ConfigFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("c.toml") && err.contains("line 2"), "{err}");
        assert!(err.contains("listen-port"), "{err}");

        std::fs::write(&path, "listen = \"127.0.0.1:1\"\n").unwrap();
        let file = ConfigFile::load(&path).unwrap();
        let err = CollectorConfig::from_file(file, None, None, &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no db"), "{err}");
    }
}
