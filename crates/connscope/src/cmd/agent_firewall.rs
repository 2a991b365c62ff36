//! `connscope agent --manage-firewall`: the agent's side of the policy loop,
//! and `connscope agent firewall off|on`, the break-glass on the host.
//!
//! Two threads run beside the agent's capture while it manages the firewall:
//! the *manager* fetches the host's assignment over the agent's own pinned
//! TLS client (or reads `--policy-file` on a host without a collector),
//! loads it through `connscope-enforce`, checks for tampering and reports
//! state, notices and counters; the *NFLOG reader* turns the policy's
//! would-block and blocked log records into events that join the agent's
//! pipeline, so they are numbered, spooled and shipped like connections.
//! A collector that cannot be reached changes nothing on the host.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use connscope_capture_nflog::{HitReport, NflogCapture, NflogConfig};
use connscope_enforce::{
    break_glass, glass_restored, hit_event, EnforceConfig, EnforceError, Enforcer, Nft,
};
use connscope_event::ConnectionEvent;
use connscope_firewall::net::Prefix;
use connscope_policy::{GoldenRules, Policy};
use connscope_protocol::policy::{
    AssignedPolicy, DirectionStage, FirewallReport, FirewallState, StageMode, Staging,
};
use connscope_transport::{collector_addresses, ClientError, CollectorClient, CollectorTrust};
use hyper::StatusCode;
use tracing::{debug, error, info, warn};

/// The NFLOG group of the policy's log rules (as `connscope policy render`).
pub const DEFAULT_LOG_GROUP: u16 = 6464;
const DEFAULT_POLICY_POLL_SECS: u64 = 5;
/// How often the loaded table is compared with what was loaded.
const TAMPER_CHECK: Duration = Duration::from_secs(2);
/// How often an unchanged firewall is reported (its counters).
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// The flags of the firewall the agent manages (flattened into the agent's).
#[derive(Args, Debug)]
pub struct FirewallFlags {
    /// Manage this host's firewall: load the policy the collector assigns
    /// to this host (or --policy-file) as connscope's own nftables table,
    /// keep it loaded, and ship its would-block and blocked packets as
    /// events (needs root: not with -U).
    #[arg(long, conflicts_with = "user")]
    pub(crate) manage_firewall: bool,
    /// A network administrators log in from (CIDR, repeatable): SSH from it
    /// stays open under any policy.
    #[arg(long = "admin-network", value_name = "CIDR")]
    pub(crate) admin_networks: Vec<Prefix>,
    /// The SSH port the admin networks keep open (repeatable) [default: 22].
    #[arg(long = "admin-ssh-port", value_name = "PORT")]
    pub(crate) admin_ssh_ports: Vec<u16>,
    /// NFLOG group the policy logs would-block and blocked packets to
    /// [default: 6464].
    #[arg(long, value_name = "N")]
    pub(crate) firewall_log_group: Option<u16>,
    /// Seconds between fetches of the host's policy [default: 5].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) policy_poll: Option<u64>,
    /// Load this policy file (docs/POLICY.md) instead of fetching one: a
    /// host without a collector. Read again when it changes.
    #[arg(long, value_name = "FILE")]
    pub(crate) policy_file: Option<PathBuf>,
    /// How --policy-file is staged, both directions [default: audit].
    #[arg(long, value_enum)]
    pub(crate) staging: Option<StagingArg>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StagingArg {
    Audit,
    Enforce,
}

impl std::str::FromStr for StagingArg {
    type Err = String;

    fn from_str(s: &str) -> Result<StagingArg, String> {
        <StagingArg as ValueEnum>::from_str(s, false)
    }
}

/// `connscope agent firewall off|on`.
#[derive(Args, Debug)]
pub struct FirewallCommand {
    #[command(subcommand)]
    action: GlassAction,
    /// The agent's state directory [default: the config file's, else
    /// /var/lib/connscope].
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// The agent's settings file, for its state directory.
    #[arg(long, value_name = "FILE", default_value = super::enroll::AGENT_CONFIG)]
    pub(crate) config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum GlassAction {
    /// Break-glass: remove connscope's table now and keep the running agent
    /// from loading one (it reports `broken-glass`) until `firewall on`.
    Off,
    /// Let the agent load its policy again.
    On,
}

/// Runs `connscope agent firewall off|on` (its state directory already
/// read from the settings file when not given), `default_state_dir` when
/// neither says.
pub fn glass(command: FirewallCommand, default_state_dir: &Path) -> anyhow::Result<ExitCode> {
    let state_dir = command
        .state_dir
        .unwrap_or_else(|| default_state_dir.to_owned());
    match command.action {
        GlassAction::Off => {
            let by = std::env::var("SUDO_USER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| format!("uid {}", nix::unistd::getuid()));
            break_glass(&state_dir, &Nft::default(), &by)?;
            println!(
                "connscope's firewall table is removed; the agent loads none until `connscope agent firewall on`"
            );
        }
        GlassAction::On => {
            if glass_restored(&state_dir)? {
                println!("the agent loads its policy again within seconds");
            } else {
                println!("the firewall was not switched off");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the host's assignment comes from.
enum Source {
    Collector(Box<CollectorClient>),
    File { path: PathBuf, staging: Staging },
}

/// Everything checked before the agent starts, so a mistake stops it at once.
pub struct FirewallSetup {
    enforce: EnforceConfig,
    state_dir: PathBuf,
    source: Source,
    poll: Duration,
    events: SyncSender<ConnectionEvent>,
}

/// The collector's URL, token and trust, when the agent ships.
pub type CollectorAccess = (String, String, CollectorTrust);

impl FirewallSetup {
    /// The setup, and the receiver of hit events for the agent's pipeline;
    /// `None` without --manage-firewall.
    pub fn from_flags(
        flags: &FirewallFlags,
        switches_user: bool,
        state_dir: PathBuf,
        host: &str,
        collector: Option<CollectorAccess>,
    ) -> anyhow::Result<Option<(FirewallSetup, Receiver<ConnectionEvent>)>> {
        if !flags.manage_firewall {
            if flags.policy_file.is_some() {
                anyhow::bail!("--policy-file needs --manage-firewall");
            }
            return Ok(None);
        }
        if switches_user {
            anyhow::bail!("--manage-firewall runs nft and keeps root: not with -U");
        }
        let mut golden = GoldenRules {
            collectors: Vec::new(),
            admin_networks: flags.admin_networks.clone(),
            ssh_ports: flags.admin_ssh_ports.clone(),
        };
        // The golden rule keeps the shipping open whichever way the policy
        // comes, a file included.
        if let Some((url, _, _)) = &collector {
            golden.collectors = collector_addresses(url).with_context(|| {
                format!("the collectors' addresses for the golden rule ({url})")
            })?;
        }
        let source = match (&flags.policy_file, collector) {
            (Some(path), _) => {
                let mode = match flags.staging.unwrap_or(StagingArg::Audit) {
                    StagingArg::Audit => StageMode::Audit,
                    StagingArg::Enforce => StageMode::Enforce,
                };
                let stage = DirectionStage {
                    mode,
                    except_ports: Vec::new(),
                };
                read_policy(path)?;
                Source::File {
                    path: path.clone(),
                    staging: Staging {
                        inbound: stage.clone(),
                        outbound: stage,
                    },
                }
            }
            (None, Some((url, token, trust))) => {
                Source::Collector(Box::new(CollectorClient::new(&url, &token, &trust)?))
            }
            (None, None) => {
                anyhow::bail!("--manage-firewall needs a collector (--collector) or --policy-file")
            }
        };
        if flags.staging.is_some() && flags.policy_file.is_none() {
            anyhow::bail!("--staging is for --policy-file; a collector stages its own policies");
        }
        if golden.admin_networks.is_empty() {
            warn!("no --admin-network: no SSH is kept open by a golden rule");
        }
        let (events, receiver) = mpsc::sync_channel(4096);
        let setup = FirewallSetup {
            enforce: EnforceConfig {
                host: host.to_owned(),
                golden,
                log_group: flags.firewall_log_group.unwrap_or(DEFAULT_LOG_GROUP),
                nft: Nft::default(),
            },
            state_dir,
            source,
            poll: Duration::from_secs(flags.policy_poll.unwrap_or(DEFAULT_POLICY_POLL_SECS)),
            events,
        };
        Ok(Some((setup, receiver)))
    }

    /// Starts the NFLOG reader and the manager (call with the agent's
    /// signals blocked, from its `observe` hook).
    pub fn start(self) -> std::io::Result<Running> {
        let stop = Arc::new(AtomicBool::new(false));
        let capture =
            NflogCapture::start(NflogConfig::new(self.enforce.log_group)).map_err(|e| {
                std::io::Error::other(format!("NFLOG group {}: {e}", self.enforce.log_group))
            })?;
        let reader = {
            let (stop, events) = (stop.clone(), self.events.clone());
            std::thread::Builder::new()
                .name("nflog".into())
                .spawn(move || read_hits(capture, &events, &stop))?
        };
        let manager = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("firewall".into())
                .spawn(move || manage(self, &stop))?
        };
        Ok(Running {
            stop,
            threads: vec![reader, manager],
        })
    }
}

/// The firewall threads of a running agent.
pub struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops the threads; connscope's table stays loaded (an agent that
    /// stops does not open the host).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn read_hits(capture: NflogCapture, events: &SyncSender<ConnectionEvent>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match capture.hits.recv_timeout(Duration::from_millis(200)) {
            // One event per attempt: a repeat only updates its packet count.
            Ok(HitReport::Hit(hit)) => {
                if events.send(hit_event(&hit)).is_err() {
                    break;
                }
            }
            Ok(HitReport::Repeated(_)) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let stats = capture.stats();
    info!(
        "nflog: {} packets, {} hits, {} dropped",
        stats.packets, stats.hits, stats.dropped
    );
    if let Err(e) = capture.stop() {
        warn!("nflog: {e}");
    }
}

fn read_policy(path: &Path) -> anyhow::Result<(String, Policy)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the policy file {}", path.display()))?;
    let policy = Policy::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((text, policy))
}

/// The manager's loop: assignment, tamper check, report.
fn manage(setup: FirewallSetup, stop: &AtomicBool) {
    let FirewallSetup {
        enforce,
        state_dir,
        mut source,
        poll,
        ..
    } = setup;
    let host = enforce.host.clone();
    let mut enforcer = Enforcer::new(enforce, &state_dir);
    match enforcer.resume() {
        Ok(Some(kept)) => info!(
            policy = %kept.name, version = kept.version, revision = kept.revision,
            "firewall: enforcing the policy kept from the last run until told otherwise"
        ),
        Ok(None) => {}
        Err(e) => error!("firewall: the kept policy did not load: {e}"),
    }
    let mut contact = Contact::default();
    let mut next_poll = Instant::now();
    let mut next_watch = Instant::now() + TAMPER_CHECK;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_watch {
            next_watch = now + TAMPER_CHECK;
            if let Err(e) = enforcer.watch() {
                error!("firewall: tamper check: {e}");
            }
        }
        if now >= next_poll {
            next_poll = now + poll;
            match &mut source {
                Source::File { path, staging } => apply_file(&mut enforcer, path, staging),
                Source::Collector(client) => {
                    fetch_and_report(&mut enforcer, client, &host, &mut contact)
                }
            }
            if matches!(source, Source::File { .. }) {
                for notice in enforcer.take_notices() {
                    info!(kind = %notice.kind, "firewall: {}", notice.detail);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A policy file applied when it (or the staging) differs from what is
/// loaded; each change is a new revision.
fn apply_file(enforcer: &mut Enforcer, path: &Path, staging: &Staging) {
    let (document, policy) = match read_policy(path) {
        Ok(read) => read,
        Err(e) => {
            error!("firewall: {e:#}; the loaded table stays");
            return;
        }
    };
    let loaded = enforcer.loaded();
    if loaded.is_some_and(|l| l.document == document && l.staging == *staging) {
        return;
    }
    let assigned = AssignedPolicy {
        name: policy.name.clone(),
        version: 0,
        document,
        staging: staging.clone(),
        revision: loaded.map_or(1, |l| l.revision + 1),
    };
    if let Err(e) = enforcer.apply(&assigned) {
        not_applied(&e, &path.display().to_string());
    }
}

/// Logs why an assignment was not applied; break-glass was reported once
/// when it began, not at every poll while it lasts.
fn not_applied(e: &EnforceError, what: &str) {
    match e {
        EnforceError::BrokenGlass => debug!("firewall: {what} not loaded: {e}"),
        _ => error!("firewall: {what}: {e}"),
    }
}

/// What the manager remembers between fetches from a collector.
#[derive(Default)]
struct Contact {
    /// Since when the collector has not answered (RFC 3339).
    lost_since: Option<String>,
    /// It answered 404: a collector from before the policy loop.
    serves_no_policies: bool,
    /// The state of the last delivered report, and when it was delivered.
    reported: Option<(FirewallState, Instant)>,
}

fn fetch_and_report(
    enforcer: &mut Enforcer,
    client: &mut CollectorClient,
    host: &str,
    contact: &mut Contact,
) {
    let Contact {
        lost_since,
        serves_no_policies,
        reported,
    } = contact;
    match client.policy() {
        Ok(assigned) => {
            *serves_no_policies = false;
            if let Some(since) = lost_since.take() {
                let kept = match enforcer.loaded() {
                    Some(l) => format!("policy {} v{} revision {}", l.name, l.version, l.revision),
                    None => "no table".to_owned(),
                };
                enforcer.note(
                    "collector-lost",
                    format!(
                        "no collector from {since} until {}; kept {kept}",
                        jiff::Timestamp::now()
                    ),
                );
            }
            if let Some(assigned) = assigned {
                if let Err(e) = enforcer.apply(&assigned) {
                    not_applied(&e, "the assigned policy");
                }
            }
        }
        Err(ClientError::Status { status, .. }) if status == StatusCode::NOT_FOUND => {
            // A collector from before the policy loop: nothing to fetch or
            // report to, and nothing lost.
            if !std::mem::replace(serves_no_policies, true) {
                warn!("firewall: the collector serves no policies (404); the loaded table stays as it is");
            }
            return;
        }
        Err(e) => {
            if lost_since.is_none() {
                warn!("firewall: cannot fetch the policy ({e}); the loaded table stays as it is");
                *lost_since = Some(jiff::Timestamp::now().to_string());
            }
            return;
        }
    }
    // A report when something changed, else once per REPORT_EVERY for the
    // counters: a fleet's agents do not post every few seconds for nothing.
    let state = enforcer.state();
    let quiet = reported
        .as_ref()
        .is_some_and(|(last, at)| *last == state && at.elapsed() < REPORT_EVERY);
    if quiet && !enforcer.has_notices() {
        return;
    }
    let counters = enforcer.counters().unwrap_or_else(|e| {
        warn!("firewall: counters: {e}");
        Vec::new()
    });
    let notices = enforcer.take_notices();
    let report = FirewallReport {
        host: host.to_owned(),
        at: jiff::Timestamp::now().to_string(),
        state: state.clone(),
        notices,
        counters,
    };
    match client.post_firewall(&report) {
        Ok(()) => *reported = Some((state, Instant::now())),
        Err(e) => {
            warn!("firewall: report not delivered ({e}); its notices go with the next");
            enforcer.return_notices(report.notices);
        }
    }
}
