//! Enrollment and the store's tokens, the administrator's side of
//! `connscope_protocol::enroll`:
//!
//! - `connscope collector enroll HOST` (on the collector host, against its
//!   store) prints the one line to run on HOST;
//! - `connscope agent enroll URL TOKEN` (on HOST) exchanges the token for
//!   the agent's own over the pinned connection, writes the token file and
//!   the agent's settings, and checks the new token works;
//! - `connscope collector tokens list|revoke` shows and revokes the stored
//!   tokens (never their secrets: the store has only digests).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use connscope_collector::enrolled::new_enrollment;
use connscope_collector::tls::served_fingerprint;
use connscope_collector::{ConfigFile, TlsSettings};
use connscope_event::Timestamp;
use connscope_store::{SqliteStore, Store, TokenKind, TokenRecord};
use connscope_transport::client::CollectorClient;
use connscope_transport::{CollectorTrust, Fingerprint};

/// The collector's settings file the package installs.
const COLLECTOR_CONFIG: &str = "/etc/connscope/collector.toml";
/// The agent's settings file and token file the package uses.
pub(crate) const AGENT_CONFIG: &str = "/etc/connscope/agent.toml";
const AGENT_TOKEN_FILE: &str = "/etc/connscope/agent.token";

/// Which store a collector-side command works on.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// The collector's settings file (its `db`, `listen` and `tls`); default
    /// /etc/connscope/collector.toml when it exists.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The collector's SQLite database (instead of the settings file's).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
}

impl StoreArgs {
    /// The settings file (when there is one) and the database path.
    fn settings(&self) -> anyhow::Result<(ConfigFile, PathBuf)> {
        let path = self.config.clone().or_else(|| {
            let default = PathBuf::from(COLLECTOR_CONFIG);
            (self.db.is_none() && default.exists()).then_some(default)
        });
        let file = match &path {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        let db = self
            .db
            .clone()
            .or_else(|| file.db.clone())
            .context("no store: give --db, or --config with a `db` setting")?;
        Ok((file, db))
    }

    /// Opens the collector's existing store as its owner: root running this
    /// beside a collector of the `connscope` user must not leave files of
    /// root's (a write-ahead log, say) that the collector cannot write.
    fn open(&self) -> anyhow::Result<(ConfigFile, PathBuf, SqliteStore)> {
        let (file, db) = self.settings()?;
        let meta = std::fs::metadata(&db).with_context(|| {
            format!(
                "no store at {}: start the collector once first",
                db.display()
            )
        })?;
        if nix::unistd::geteuid().is_root() && meta.uid() != 0 {
            use nix::unistd::{setgid, setuid, Gid, Uid};
            setgid(Gid::from_raw(meta.gid()))
                .and_then(|()| setuid(Uid::from_raw(meta.uid())))
                .with_context(|| format!("becoming the owner of {}", db.display()))?;
        }
        let store = SqliteStore::open(&db)
            .with_context(|| format!("opening the store {}", db.display()))?;
        Ok((file, db, store))
    }
}

#[derive(Args, Debug)]
pub struct CollectorEnrollArgs {
    /// The host to enroll: its agent id. Without it (only with --reusable),
    /// each host enrolls under its own host name.
    #[arg(required_unless_present = "reusable")]
    host: Option<String>,
    /// How long the token may be used: 30m, 24h, 7d, ...
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    expires: String,
    /// Usable by any number of hosts until it expires (one-time otherwise).
    #[arg(long)]
    reusable: bool,
    /// The collector's URL as hosts reach it (default: https://NAME:PORT
    /// with the certificate's first extra name, else this host's name, and
    /// the port it listens on).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Every stored token: id, kind, agent, created, last used, expiry, state.
    List {
        /// table (aligned, for people) or json (for scripts).
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a token by its id (as `tokens list` shows it); collectors
    /// refuse it within seconds.
    Revoke {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct AgentEnrollArgs {
    /// The collector, as `collector enroll` printed it (https://HOST:PORT).
    url: String,
    /// The enrollment token `collector enroll` printed.
    token: String,
    /// The agent's settings file to write the collector into (created when
    /// missing; comments and other settings are kept).
    #[arg(long, value_name = "FILE", default_value = AGENT_CONFIG)]
    config: PathBuf,
    /// Where to keep the agent's token (mode 0600).
    #[arg(long, value_name = "FILE", default_value = AGENT_TOKEN_FILE)]
    token_file: PathBuf,
    /// The host name to enroll as, when the token names no host (default:
    /// this machine's host name).
    #[arg(long, value_name = "NAME")]
    host_name: Option<String>,
}

/// `30m`, `24h`, `7d` (a day is 24 hours here) from now.
fn expiry(text: &str) -> anyhow::Result<Timestamp> {
    let span: jiff::Span = text
        .parse()
        .with_context(|| format!("--expires {text:?}: expected a duration like 30m, 24h or 7d"))?;
    let seconds = span
        .total((
            jiff::Unit::Second,
            jiff::SpanRelativeTo::days_are_24_hours(),
        ))
        .with_context(|| format!("--expires {text:?}"))?;
    if seconds <= 0.0 {
        bail!("--expires {text:?}: the token must be valid for some time");
    }
    let nanos = Timestamp::now().as_nanos() as f64 + seconds * 1e9;
    Ok(Timestamp::from_nanos(nanos.min(i64::MAX as f64) as i64))
}

pub fn collector_enroll(args: CollectorEnrollArgs) -> anyhow::Result<ExitCode> {
    let expires = expiry(&args.expires)?;
    let (file, db, store) = args.store.open()?;
    let tls = file.tls.clone().unwrap_or_default();
    let (_, fingerprint) = served_fingerprint(&tls, &db)?;
    let url = match args.url {
        Some(url) => url,
        None => default_url(&file, &tls)?,
    };
    let (record, token) = new_enrollment(
        &store,
        args.host.as_deref(),
        expires,
        args.reusable,
        fingerprint,
    )?;
    eprintln!(
        "enrollment token {} for {}, {}, valid until {}; run on the host:",
        record.id,
        if record.agent.is_empty() {
            "any host (its own name)"
        } else {
            &record.agent
        },
        if record.reusable {
            "reusable"
        } else {
            "one-time"
        },
        show_time(Some(expires)),
    );
    println!("connscope agent enroll {url} {token}");
    Ok(ExitCode::SUCCESS)
}

fn default_url(file: &ConfigFile, tls: &TlsSettings) -> anyhow::Result<String> {
    let port = file
        .listen
        .map(|addr| addr.port())
        .context("the settings name no `listen` address: give --url")?;
    let name = tls
        .names
        .first()
        .cloned()
        .unwrap_or_else(connscope_names::host_name_or_localhost);
    let host = if name.contains(':') {
        format!("[{name}]")
    } else {
        name
    };
    Ok(format!("https://{host}:{port}"))
}

fn show_time(t: Option<Timestamp>) -> String {
    t.and_then(|t| jiff::Timestamp::from_nanosecond(i128::from(t.as_nanos())).ok())
        .map_or_else(
            || "-".to_owned(),
            |t| {
                t.round(jiff::Unit::Second)
                    .map_or_else(|_| t.to_string(), |t| t.to_string())
            },
        )
}

/// What a token is now: active, used, expired or revoked.
fn state(token: &TokenRecord, now: Timestamp) -> &'static str {
    match token.valid_at(now) {
        Err(refusal) => match refusal {
            connscope_store::TokenRefusal::Revoked => "revoked",
            _ => "expired",
        },
        Ok(()) if token.kind == TokenKind::Enrollment && !token.reusable && token.uses > 0 => {
            "used"
        }
        Ok(()) => "active",
    }
}

pub fn tokens(command: TokensCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokensCommand::List { format, store } => {
            let (_, _, store) = store.open()?;
            let now = Timestamp::now();
            let mut out = std::io::stdout().lock();
            if let ListFormat::Json = format {
                let rows: Vec<serde_json::Value> = store
                    .tokens()?
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": t.id,
                            "kind": t.kind.as_str(),
                            "agent": t.agent,
                            "reusable": t.reusable,
                            "uses": t.uses,
                            "created": show_time(Some(t.created)),
                            "last_used": t.last_used.map(|t| show_time(Some(t))),
                            "expires": t.expires.map(|t| show_time(Some(t))),
                            "revoked": t.revoked.map(|t| show_time(Some(t))),
                            "state": state(t, now),
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            writeln!(
                out,
                "{:<12}  {:<10}  {:<24}  {:<20}  {:<20}  {:<20}  STATE",
                "ID", "KIND", "AGENT", "CREATED", "LAST-USED", "EXPIRES"
            )?;
            for token in store.tokens()? {
                let kind = match (token.kind, token.reusable) {
                    (TokenKind::Enrollment, true) => "enroll*",
                    (TokenKind::Enrollment, false) => "enroll",
                    (TokenKind::Agent, _) => "agent",
                };
                let agent = if token.agent.is_empty() {
                    "(its host name)"
                } else {
                    &token.agent
                };
                writeln!(
                    out,
                    "{:<12}  {:<10}  {:<24}  {:<20}  {:<20}  {:<20}  {}",
                    token.id,
                    kind,
                    agent,
                    show_time(Some(token.created)),
                    show_time(token.last_used),
                    show_time(token.expires),
                    state(&token, now)
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::Revoke { id, store } => {
            let (_, _, store) = store.open()?;
            if !store.revoke_token(&id, Timestamp::now())? {
                bail!("no token {id:?} in the store (see `connscope collector tokens list`)");
            }
            println!(
                "revoked {id}; collectors refuse it within {} s",
                connscope_collector::enrolled::CACHE_FOR.as_secs()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn agent_enroll(args: AgentEnrollArgs) -> anyhow::Result<ExitCode> {
    let token: connscope_protocol::enroll::EnrollmentToken = args.token.parse()?;
    let trust = CollectorTrust::Fingerprint(token.fingerprint);
    let host = args
        .host_name
        .clone()
        .unwrap_or_else(connscope_names::host_name_or_localhost);
    let enrolled = CollectorClient::new(&args.url, &token.secret, &trust)
        .and_then(|mut client| client.enroll(&host))
        .with_context(|| format!("enrolling at {}", args.url))?;
    write_private(&args.token_file, &enrolled.token)?;
    set_agent_settings(&args.config, &args.url, &args.token_file, token.fingerprint)?;
    let checked = CollectorClient::new(&args.url, &enrolled.token, &trust)
        .and_then(|mut client| client.whoami())
        .with_context(|| format!("checking the new token at {}", args.url))?;
    println!(
        "enrolled as agent {} at {}: token in {}, settings in {}; connection checked \
         (collector SHA256:{})",
        checked.agent,
        args.url,
        args.token_file.display(),
        args.config.display(),
        token.fingerprint
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `path` whole or not at all (a file beside it, renamed over it).
fn replace_file(path: &Path, content: &str, mode: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().context("a file name")?.to_string_lossy();
    let temp = dir.join(format!(".{name}.{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(content.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.with_context(|| format!("writing {}", path.display()))
}

fn write_private(path: &Path, token: &str) -> anyhow::Result<()> {
    replace_file(path, &format!("{token}\n"), 0o600)
}

/// Sets the agent settings' `collector`, `collector_token_file` and
/// `collector_fingerprint`, keeping everything else as written.
fn set_agent_settings(
    path: &Path,
    url: &str,
    token_file: &Path,
    fingerprint: Fingerprint,
) -> anyhow::Result<()> {
    let (text, mode) = match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
            (text, mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o644),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    doc["collector"] = toml_edit::value(url);
    doc["collector_token_file"] = toml_edit::value(token_file.display().to_string());
    doc["collector_fingerprint"] = toml_edit::value(format!("SHA256:{fingerprint}"));
    replace_file(path, &doc.to_string(), mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_keep_comments_and_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "# connscope agent\nbackend = \"ebpf\"\n# where to ship\ncollector = \"https://old:1\"\n\n[extra]\nx = 1\n",
        )
        .unwrap();
        let fingerprint = Fingerprint::from_bytes([0xab; 32]);
        set_agent_settings(&path, "https://c:8443", Path::new("/t"), fingerprint).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# connscope agent\nbackend = \"ebpf\"\n# where to ship\ncollector = \"https://c:8443\""), "{text}");
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["collector_token_file"].as_str(), Some("/t"));
        assert!(parsed["collector_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:AB:AB"));
        assert_eq!(parsed["extra"]["x"].as_integer(), Some(1));

        let fresh = dir.path().join("new/agent.toml");
        set_agent_settings(&fresh, "https://c:8443", Path::new("/t"), fingerprint).unwrap();
        assert!(std::fs::read_to_string(&fresh)
            .unwrap()
            .contains("collector = "));
        write_private(&dir.path().join("tok"), "secret").unwrap();
        let mode = std::fs::metadata(dir.path().join("tok"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn expiry_takes_friendly_durations() {
        let now = Timestamp::now().as_nanos();
        let day = expiry("1d").unwrap().as_nanos() - now;
        assert!((86_399e9 as i64..=86_401e9 as i64).contains(&day), "{day}");
        assert!(expiry("soon")
            .unwrap_err()
            .to_string()
            .contains("--expires"));
        assert!(expiry("0s").is_err());
    }
}
