//! The collector's settings: one TOML file, with command-line flags on top.
//!
//! Every setting has a flag and a key of the same name, so a test or a quick
//! run needs no file and a service has one place to look. Both are a
//! [`ConfigFile`] (the command line fills one from its flags), and
//! [`CollectorConfig::merge`] is the one place a layer is applied.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use connscope_alert::AlertSink;
use connscope_store::StoreLocation;
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

/// One layer of settings: the settings file as written (`--config FILE`),
/// or the command line's flags of the same names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub listen: Option<SocketAddr>,
    /// The SQLite store file (short for `store = "sqlite:PATH"`).
    pub db: Option<PathBuf>,
    /// The store: `sqlite:PATH` or `clickhouse://[user[:password]@]host:port/database`.
    pub store: Option<String>,
    pub syslog_listen: Option<SocketAddr>,
    /// Agent id -> token, in the order given (a flag may repeat an agent).
    #[serde(default, deserialize_with = "table")]
    pub tokens: Vec<(String, String)>,
    /// A file of `AGENT-ID TOKEN [HOST,HOST...]` lines (`#` comments), kept
    /// out of the main file so it can have tighter permissions.
    pub tokens_file: Option<PathBuf>,
    /// Agent id -> the host names its events may carry (default: the host of
    /// its first batch).
    #[serde(default, deserialize_with = "table")]
    pub token_hosts: Vec<(String, Vec<String>)>,
    /// Reader name -> token for the query API (the map, reports). Without
    /// any, queries are open only when the collector listens on loopback.
    #[serde(default, deserialize_with = "table")]
    pub read_tokens: Vec<(String, String)>,
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
    /// Where drift alerts go (built by the command line into
    /// [`CollectorConfig::alerts`]).
    pub alerts: Option<connscope_alert::AlertConfig>,
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

/// A TOML table as its (key, value) pairs.
fn table<'de, D, V>(deserializer: D) -> Result<Vec<(String, V)>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    Ok(BTreeMap::<String, V>::deserialize(deserializer)?
        .into_iter()
        .collect())
}

/// Where a layer of settings comes from, named in its errors.
enum Layer<'a> {
    File(&'a Path),
    Flags,
}

impl Layer<'_> {
    /// The error of `key`'s value.
    fn error(&self, key: &'static str, reason: String) -> CollectorError {
        match self {
            Layer::File(path) => CollectorError::Config {
                path: path.to_path_buf(),
                reason,
            },
            Layer::Flags => CollectorError::Flag { flag: key, reason },
        }
    }
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
    pub store: StoreLocation,
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
    /// Where a new drift edge is told as it is found (docs/POLICY.md
    /// "Alerts"); none: drift is only recorded, for `report drift` and the map.
    pub alerts: Option<Arc<dyn AlertSink>>,
}

impl CollectorConfig {
    /// Settings with defaults for everything but where to listen and store.
    pub fn new(listen: SocketAddr, store: impl Into<StoreLocation>) -> CollectorConfig {
        CollectorConfig {
            listen,
            store: store.into(),
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
            alerts: None,
        }
    }

    /// A settings file's values (if there is one) with the flags' on top.
    pub fn merge(
        file: Option<(&Path, ConfigFile)>,
        mut flags: ConfigFile,
    ) -> Result<CollectorConfig, CollectorError> {
        let (file_path, mut file) = match file {
            Some((path, file)) => (Some(path), file),
            None => (None, ConfigFile::default()),
        };
        let missing = |what: &str| match file_path {
            Some(path) => CollectorError::Config {
                path: path.to_owned(),
                reason: format!("no {what}: set `{what}` in the file or pass --{what}"),
            },
            None => CollectorError::NoListenOrDb,
        };
        let listen = flags
            .listen
            .or(file.listen)
            .ok_or_else(|| missing("listen"))?;
        let store = match Self::store_of(&mut flags, &Layer::Flags)? {
            Some(store) => store,
            None => {
                let layer = file_path.map_or(Layer::Flags, Layer::File);
                Self::store_of(&mut file, &layer)?.ok_or_else(|| missing("db"))?
            }
        };
        let mut config = CollectorConfig::new(listen, store);
        if let Some(path) = file_path {
            config.apply(file, &Layer::File(path))?;
        }
        config.apply(flags, &Layer::Flags)?;
        Ok(config)
    }

    /// The store a layer names with `db` or `store` (not both).
    fn store_of(
        layer: &mut ConfigFile,
        source: &Layer<'_>,
    ) -> Result<Option<StoreLocation>, CollectorError> {
        match (layer.db.take(), layer.store.take()) {
            (Some(_), Some(_)) => Err(source.error("store", "give db or store, not both".into())),
            (Some(db), None) => Ok(Some(StoreLocation::Sqlite(db))),
            (None, Some(store)) => {
                store
                    .parse()
                    .map(Some)
                    .map_err(|e: connscope_store::StoreError| {
                        source.error("store", format!("store: {e}"))
                    })
            }
            (None, None) => Ok(None),
        }
    }

    /// Sets what `layer` sets (`listen` and the store are [`Self::merge`]'s).
    fn apply(&mut self, layer: ConfigFile, source: &Layer<'_>) -> Result<(), CollectorError> {
        if layer.syslog_listen.is_some() {
            self.syslog_listen = layer.syslog_listen;
        }
        for (agent, token) in &layer.tokens {
            self.tokens
                .insert(agent, token)
                .map_err(|reason| source.error("token", reason))?;
        }
        for (reader, token) in &layer.read_tokens {
            self.read_tokens
                .insert(reader, token)
                .map_err(|reason| source.error("read-token", reason))?;
        }
        if let Some(path) = &layer.tokens_file {
            self.tokens.load_file(path)?;
        }
        for (agent, hosts) in &layer.token_hosts {
            self.tokens
                .bind_hosts(agent, hosts.iter().map(String::as_str))
                .map_err(|reason| source.error("token-hosts", reason))?;
        }
        if let Some(tls) = layer.tls {
            if tls.cert.is_some() || tls.key.is_some() {
                self.tls.cert = tls.cert;
                self.tls.key = tls.key;
            }
            self.tls.names.extend(tls.names);
        }
        if let Some(limit) = layer.body_limit {
            self.body_limit = limit;
        }
        if let Some(limit) = layer.decompressed_limit {
            self.decompressed_limit = limit;
        }
        if let Some(days) = layer.retention_days {
            self.retention_days = (days > 0).then_some(days);
        }
        if let Some(n) = layer.concurrent_decompressions {
            self.concurrent_decompressions = n;
        }
        if let Some(secs) = layer.request_deadline_seconds {
            self.request_deadline = Duration::from_secs(secs);
        }
        let limits = &mut self.syslog_limits;
        limits.max_connections = layer
            .syslog_max_connections
            .unwrap_or(limits.max_connections);
        limits.max_per_source = layer.syslog_max_per_source.unwrap_or(limits.max_per_source);
        if let Some(secs) = layer.syslog_idle_timeout_seconds {
            limits.idle_timeout = Duration::from_secs(secs);
        }
        Ok(())
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
        let flags = ConfigFile {
            listen: Some("127.0.0.1:9000".parse().unwrap()),
            ..ConfigFile::default()
        };
        let config = CollectorConfig::merge(Some((&path, file)), flags).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(
            config.store,
            StoreLocation::Sqlite("/var/lib/connscope/db.sqlite".into())
        );
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
        let err = CollectorConfig::merge(Some((&path, file)), ConfigFile::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no db"), "{err}");
    }

    #[test]
    fn flags_are_a_layer_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let file = ConfigFile {
            listen: Some("127.0.0.1:1".parse().unwrap()),
            db: Some("/file.sqlite".into()),
            tokens: vec![("web1".into(), "tok-web1-0123456789".into())],
            tls: Some(TlsSettings {
                names: vec!["from-file".into()],
                ..TlsSettings::default()
            }),
            body_limit: Some(1000),
            retention_days: Some(30),
            ..ConfigFile::default()
        };
        let flags = ConfigFile {
            db: Some("/flag.sqlite".into()),
            // One agent given twice keeps both tokens, as with the file's lines.
            tokens: vec![
                ("web2".into(), "tok-web2-0123456789".into()),
                ("web2".into(), "tok-web2-other-0123456789".into()),
            ],
            token_hosts: vec![("web1".into(), vec!["web1.lan".into()])],
            tls: Some(TlsSettings {
                names: vec!["from-flag".into()],
                ..TlsSettings::default()
            }),
            retention_days: Some(0),
            ..ConfigFile::default()
        };
        let config = CollectorConfig::merge(Some((&path, file)), flags).unwrap();
        assert_eq!(config.listen.port(), 1);
        assert_eq!(config.store, StoreLocation::Sqlite("/flag.sqlite".into()));
        assert_eq!(config.tokens.len(), 3);
        let web1 = config.tokens.agent_for("tok-web1-0123456789").unwrap();
        assert_eq!(config.tokens.hosts_of(web1).unwrap().len(), 1);
        assert!(config
            .tokens
            .agent_for("tok-web2-other-0123456789")
            .is_some());
        assert_eq!(config.tls.names, ["from-file", "from-flag"]);
        assert_eq!(config.body_limit, 1000);
        assert_eq!(config.retention_days, None);

        let bad = ConfigFile {
            tokens: vec![("web1".into(), "short".into())],
            ..ConfigFile::default()
        };
        let file = ConfigFile {
            listen: Some("127.0.0.1:1".parse().unwrap()),
            db: Some("/file.sqlite".into()),
            ..ConfigFile::default()
        };
        let err = CollectorConfig::merge(Some((&path, file)), bad).unwrap_err();
        assert!(err.to_string().starts_with("--token: "), "{err}");
        let err = CollectorConfig::merge(None, ConfigFile::default()).unwrap_err();
        assert!(err.to_string().contains("give --listen and --db"), "{err}");
    }

    #[test]
    fn the_store_key_names_either_backend_and_db_is_its_sqlite_shorthand() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collector.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\nstore = \"clickhouse://cs@127.0.0.1:8123/connscope\"\n",
        )
        .unwrap();
        let file = ConfigFile::load(&path).unwrap();
        let config = CollectorConfig::merge(Some((&path, file)), ConfigFile::default()).unwrap();
        assert_eq!(
            config.store.to_string(),
            "clickhouse://cs@127.0.0.1:8123/connscope"
        );
        // A flag's store wins over the file's.
        let file = ConfigFile::load(&path).unwrap();
        let flags = ConfigFile {
            db: Some("/flag.sqlite".into()),
            ..ConfigFile::default()
        };
        let config = CollectorConfig::merge(Some((&path, file)), flags).unwrap();
        assert_eq!(config.store, StoreLocation::Sqlite("/flag.sqlite".into()));
        // Both in one layer, or a bad address, is an error naming the file.
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\ndb = \"/a\"\nstore = \"sqlite:/b\"\n",
        )
        .unwrap();
        let file = ConfigFile::load(&path).unwrap();
        let err = CollectorConfig::merge(Some((&path, file)), ConfigFile::default()).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\nstore = \"clickhouse://h:1/\"\n",
        )
        .unwrap();
        let file = ConfigFile::load(&path).unwrap();
        let err = CollectorConfig::merge(Some((&path, file)), ConfigFile::default()).unwrap_err();
        assert!(err.to_string().contains("collector.toml"), "{err}");
        assert!(err.to_string().contains("database name"), "{err}");
    }
}
