//! The demo's connscope: the collector on loopback of the machine's own
//! namespace with the embedded SQLite store, and one agent per office host.
//!
//! An agent runs beside the collector and reports one namespace (`--netns`
//! with the namespace's inode: the eBPF programs drop every other namespace's
//! events in the kernel), under the host's name, with its own token and state
//! directory: to the collector it is that host's agent, as on a real network.
//! The store's host groups are written before the collector opens it, so the
//! map's first level is the office's groups from the first look.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use connscope_query::groups::check_group;
use connscope_store::{GroupKind, HostGroup, SqliteStore, Store};

use super::child::Child;
use super::office::{Host, Office, Role};

/// The collector as started: its address and certificate fingerprint; it
/// stops when this is dropped.
pub struct Collector {
    _process: Child,
    pub url: String,
    pub fingerprint: String,
}

/// The groups of the office, as `connscope groups add` would define them.
pub fn groups(hosts: &[Host]) -> Vec<HostGroup> {
    let names = |role: Role| -> Vec<String> {
        hosts
            .iter()
            .filter(|h| h.role == role)
            .map(|h| h.name.to_owned())
            .collect()
    };
    let mut servers = names(Role::FileServer);
    servers.extend(names(Role::WebServer));
    servers.extend(names(Role::DnsServer));
    let group = |name: &str, kind, patterns: Vec<String>, role: &str| HostGroup {
        name: name.to_owned(),
        kind,
        patterns,
        labels: vec![("role".to_owned(), role.to_owned())],
    };
    vec![
        group(
            "workstations",
            GroupKind::Names,
            vec!["ws-*".to_owned()],
            "workstation",
        ),
        group("servers", GroupKind::Hosts, servers, "server"),
        group(
            "printers",
            GroupKind::Hosts,
            names(Role::Printer),
            "printer",
        ),
    ]
}

/// Writes the office's groups into the store (replacing groups of the same
/// name, so a second run finds them as it left them).
pub fn write_groups(db: &Path, office: &Office) -> Result<Vec<HostGroup>> {
    let store = SqliteStore::open(db).with_context(|| format!("opening {}", db.display()))?;
    let groups = groups(&office.hosts);
    for group in &groups {
        check_group(group).with_context(|| format!("the demo's group {}", group.name))?;
        store
            .put_group(group)
            .with_context(|| format!("storing the group {}", group.name))?;
    }
    Ok(groups)
}

/// Starts the collector with one token per host and reads its address and
/// fingerprint from its standard output.
pub fn start_collector(
    exe: &Path,
    db: &Path,
    listen: SocketAddr,
    office: &Office,
    tokens: &[String],
) -> Result<Collector> {
    let mut command = Command::new(exe);
    command
        .arg("collector")
        .arg("--db")
        .arg(db)
        .args(["--listen", &listen.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    for (host, token) in office.hosts.iter().zip(tokens) {
        command.args(["--token", &format!("{}={token}", host.name)]);
        command.args(["--token-hosts", &format!("{}={}", host.name, host.name)]);
    }
    let mut child = Child::spawn(command, "collector")?;
    let stdout = child.stdout().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.context("reading the collector's output")?;
        if let Some(rest) = line.strip_prefix("listening: ") {
            url = Some(rest.to_owned());
        }
        if let Some(fingerprint) = line.strip_prefix("fingerprint: ") {
            let Some(url) = url else {
                bail!("the collector printed its fingerprint before its address");
            };
            // Keep reading, so a late line never meets a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(Collector {
                _process: child,
                url,
                fingerprint: fingerprint.to_owned(),
            });
        }
    }
    bail!("the collector stopped before it was listening on {listen} (is the port in use?)")
}

/// What an agent logs once its capture runs.
const AGENT_READY: &str = "monitoring connections";
/// How long the agents may take to load their eBPF programs.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts one agent per office host, each reporting its host's namespace,
/// and waits until every one captures (so no scheduled flow is missed).
/// Their logs pass through to the demo's standard error.
pub fn start_agents(
    exe: &Path,
    dir: &Path,
    office: &Office,
    collector: &Collector,
    tokens: &[String],
) -> Result<Vec<Child>> {
    let mut agents = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for (host, token) in office.hosts.iter().zip(tokens) {
        let netns_file = Path::new("/run/netns").join(&host.netns);
        let inode = std::fs::metadata(&netns_file)
            .with_context(|| format!("reading {}", netns_file.display()))?
            .ino();
        let mut command = Command::new(exe);
        command
            .args(["agent", "-p", "--no-default-rules", "--udp"])
            .args(["--netns", &inode.to_string()])
            .args(["--host-name", host.name])
            .arg("--state-dir")
            .arg(dir.join("agents").join(host.name))
            .args(["--collector", &collector.url])
            .args(["--collector-token", token])
            .args(["--collector-fingerprint", &collector.fingerprint])
            .env("CONNSCOPE_LOG", agent_log_filter())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut agent = Child::spawn(command, format!("the agent of {}", host.name))?;
        let stderr = agent.stderr().expect("stderr is piped");
        let ready = ready_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if line.contains(AGENT_READY) {
                    let _ = ready.send(());
                }
            }
        });
        agents.push(agent);
    }
    let deadline = Instant::now() + AGENT_START_TIMEOUT;
    for _ in 0..agents.len() {
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(200)).is_ok() {
                break;
            }
            if super::child::stop_requested() {
                bail!("stopped by a signal while the agents were starting");
            }
            if let Some(dead) = agents
                .iter_mut()
                .find_map(|a| (!a.running()).then(|| a.what().to_owned()))
            {
                bail!("{dead} stopped at start (see its messages above)");
            }
            if Instant::now() >= deadline {
                bail!("the agents did not all start capturing in {AGENT_START_TIMEOUT:?}");
            }
        }
    }
    Ok(agents)
}

/// The agents' log filter: the demo's own (`CONNSCOPE_LOG`, else info), with
/// the agent's start-up line always shown, since the demo waits for it.
fn agent_log_filter() -> String {
    let own = std::env::var("CONNSCOPE_LOG").unwrap_or_else(|_| "info".to_owned());
    format!("{own},connscope_agent=info")
}

/// A fresh random token per host.
pub fn random_tokens(count: usize) -> Result<Vec<String>> {
    let mut bytes = vec![0u8; 16 * count];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes
        .chunks(16)
        .map(|chunk| chunk.iter().map(|b| format!("{b:02x}")).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::demo::office::plan;
    use connscope_query::groups::resolve;

    #[test]
    fn every_host_of_the_office_is_in_exactly_one_valid_group() {
        let hosts = plan("csdemo-1-");
        let seen = hosts
            .iter()
            .map(|h| (h.name.to_owned(), [std::net::IpAddr::V4(h.v4)].into()))
            .collect();
        let mut members = Vec::new();
        for group in groups(&hosts) {
            check_group(&group).unwrap();
            members.extend(resolve(&group, &seen).unwrap().hosts);
        }
        members.sort();
        let mut names: Vec<_> = hosts.iter().map(|h| h.name.to_owned()).collect();
        names.sort();
        assert_eq!(members, names);
    }
}
