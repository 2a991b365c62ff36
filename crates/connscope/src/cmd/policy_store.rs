//! `connscope policy push|versions|stage|enforce|rollback|status`: the
//! policies the collector keeps and what each group or host is assigned
//! (docs/POLICY.md, "Versions and assignments"). Everything here writes to
//! or reads the store; agents pick a change up at their next poll, so there
//! is nothing to push to hosts.
//!
//! Staging or enforcing first shows the backtest figure: the policy replayed
//! against the target's recent history (`policy check`), per host. Enforcing
//! refuses when connections of that history would be blocked in what becomes
//! enforced, unless told `--accept-blocked`: enforcement is where real
//! networks break, so the cost is shown before, never found after.

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args, ValueEnum};
use connscope_event::{Protocol, Timestamp};
use connscope_firewall::FlowDirection;
use connscope_policy::{check, policy_status, staging_text, Assignments, Policy, Target};
use connscope_protocol::policy::{DirectionStage, StageMode, StagedPort, Staging};
use connscope_query::TimeRangeArgs;
use connscope_store::{
    AssignedVersion, AssignmentChange, AssignmentTarget, PolicyAssignment, Store, TimeRange,
};

use super::flag_error;
use super::store_args::StoreArgs;

/// The history a staging or enforcement is costed against by default.
const BACKTEST_DAYS: i64 = 7;

#[derive(Args)]
pub struct PushArgs {
    /// The policy file (TOML); its `name` is the policy's name in the store.
    policy: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// Why this version (shown by `policy versions`).
    #[arg(long, default_value = "", value_name = "TEXT")]
    comment: String,
    /// Who pushes it (default: $SUDO_USER or $USER).
    #[arg(long, value_name = "NAME")]
    author: Option<String>,
}

#[derive(Args)]
pub struct VersionsArgs {
    /// The policy's name.
    name: String,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
#[command(group(ArgGroup::new("target").required(true)))]
pub struct TargetArgs {
    /// A host group (`connscope groups`).
    #[arg(long, value_name = "NAME", group = "target")]
    group: Option<String>,
    /// One host: beats any group assignment of it.
    #[arg(long, value_name = "NAME", group = "target")]
    host: Option<String>,
}

impl TargetArgs {
    fn target(&self) -> AssignmentTarget {
        match (&self.group, &self.host) {
            (Some(group), _) => AssignmentTarget::Group(group.clone()),
            (None, Some(host)) => AssignmentTarget::Host(host.clone()),
            (None, None) => unreachable!("clap requires --group or --host"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DirectionArg {
    Inbound,
    Outbound,
}

#[derive(Args)]
pub struct StageArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// The policy to stage (default: the one assigned now, else the policy
    /// named like the target).
    #[arg(long, value_name = "NAME")]
    policy: Option<String>,
    /// Its version (default: the latest).
    #[arg(long, value_name = "N")]
    version: Option<u32>,
    #[command(flatten)]
    scope: ScopeArgs,
    #[command(flatten)]
    backtest: BacktestArgs,
}

#[derive(Args)]
pub struct EnforceArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    scope: ScopeArgs,
    #[command(flatten)]
    backtest: BacktestArgs,
    /// Enforce even though the backtest shows connections it would block.
    #[arg(long)]
    accept_blocked: bool,
}

/// Which part of the staging a command moves: everything, one direction,
/// or ports (of one direction, or of both).
#[derive(Args)]
pub struct ScopeArgs {
    /// Only this direction.
    #[arg(long, value_enum)]
    direction: Option<DirectionArg>,
    /// Only this service port, as tcp/22 or udp/53 (repeatable).
    #[arg(long = "port", value_name = "PROTO/PORT", value_parser = parse_port)]
    ports: Vec<StagedPort>,
}

#[derive(Args)]
pub struct BacktestArgs {
    /// The history the backtest replays (default: the last 7 days).
    #[command(flatten)]
    range: TimeRangeArgs,
    /// Who makes the change (default: $SUDO_USER or $USER).
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
}

#[derive(Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Who makes the change (default: $SUDO_USER or $USER).
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// table or json (the body of GET /api/v1/policies/status).
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    format: String,
}

fn parse_port(text: &str) -> Result<StagedPort, String> {
    let (protocol, port) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?}: expected PROTO/PORT, like tcp/22"))?;
    let protocol: Protocol = protocol
        .parse()
        .map_err(|_| format!("{text:?}: protocol {protocol:?} is not tcp or udp"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("{text:?}: port {port:?} is not 1 to 65535"))?;
    Ok(StagedPort { protocol, port })
}

fn user(given: &Option<String>) -> String {
    given
        .clone()
        .or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

pub fn push(args: PushArgs) -> Result<ExitCode> {
    let text = fs::read_to_string(&args.policy)
        .with_context(|| format!("reading {}", args.policy.display()))?;
    let policy = Policy::parse(&text).with_context(|| format!("{}", args.policy.display()))?;
    let store = args.store.open()?;
    let before = store
        .policy_versions(&policy.name)?
        .last()
        .map(|v| v.version);
    let stored = store.put_policy(
        &policy.name,
        &text,
        &user(&args.author),
        &args.comment,
        Timestamp::now(),
    )?;
    if before == Some(stored.version) {
        println!(
            "{} version {} (unchanged: the same document as the latest version)",
            stored.name, stored.version
        );
    } else {
        println!("{} version {}", stored.name, stored.version);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn versions(args: VersionsArgs) -> Result<ExitCode> {
    let store = args.store.open_existing()?;
    let versions = store.policy_versions(&args.name)?;
    if versions.is_empty() {
        bail!("no policy {:?} in the store (see `policy push`)", args.name);
    }
    println!(
        "{:>7}  {:<30}  {:<16}  COMMENT",
        "VERSION", "CREATED", "AUTHOR"
    );
    for v in versions {
        println!(
            "{:>7}  {:<30}  {:<16}  {}",
            v.version, v.created, v.author, v.comment
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A policy of the store named `NAME@N`, or `None` when `spec` is not that.
pub fn stored_document(store: &dyn Store, spec: &str) -> Result<Option<(String, String)>> {
    let Some((name, version)) = spec.rsplit_once('@') else {
        return Ok(None);
    };
    let Ok(version) = version.parse::<u32>() else {
        return Ok(None);
    };
    let stored = store
        .policy_version(name, version)?
        .with_context(|| format!("{spec}: no version {version} of policy {name:?} in the store"))?;
    Ok(Some((spec.to_owned(), stored.document)))
}

/// Version `version` of policy `name` from the store, parsed; a name or
/// version the store lacks is an error that says what it has.
pub fn stored_policy(store: &dyn Store, name: &str, version: u32) -> Result<Policy> {
    let Some(stored) = store.policy_version(name, version)? else {
        let kept: Vec<String> = store
            .policy_versions(name)?
            .iter()
            .map(|v| v.version.to_string())
            .collect();
        if kept.is_empty() {
            bail!(
                "no policy {name:?} in the store: push it (`connscope policy push FILE`) \
                 or pass --document FILE"
            );
        }
        bail!(
            "policy {name:?} has no version {version} in the store (it has {})",
            kept.join(", ")
        );
    };
    Policy::parse(&stored.document).with_context(|| format!("policy {name:?} version {version}"))
}

/// The version of policy `name` that groups and hosts are assigned now;
/// none, or several different ones, is an error asking for `--version`.
pub fn assigned_version(store: &dyn Store, name: &str) -> Result<u32> {
    let mut versions: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for assignment in store.policy_assignments()? {
        if let Some(assigned) = assignment.assigned.filter(|a| a.policy == name) {
            versions
                .entry(assigned.version)
                .or_default()
                .push(assignment.target.to_string());
        }
    }
    let mut running = versions.iter();
    match (running.next(), running.next()) {
        (Some((version, _)), None) => Ok(*version),
        (None, _) if store.policy_versions(name)?.is_empty() => bail!(
            "no policy {name:?} in the store: push it (`connscope policy push FILE`) \
             or pass --document FILE"
        ),
        (None, _) => bail!(
            "policy {name:?} is assigned to no group or host now: pass --version N \
             (`connscope policy versions {name}` lists them)"
        ),
        _ => bail!(
            "policy {name:?} runs in several versions now ({}): pass --version N",
            versions
                .iter()
                .map(|(version, targets)| format!("{version} on {}", targets.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// The target's current assignment (its latest change, unless withdrawn);
/// for a host without one of its own, the one it runs through its group,
/// so one host can go ahead of its group (a canary) from where it is.
fn current(store: &dyn Store, target: &AssignmentTarget) -> Result<Option<AssignedVersion>> {
    let own = store.assignment_history(target)?.pop();
    if let (None, AssignmentTarget::Host(host)) = (&own, target) {
        let effective = Assignments::load(store, Timestamp::now())?.for_host(store, host)?;
        return Ok(effective.and_then(|a| a.assignment.assigned));
    }
    Ok(own.and_then(|a| a.assigned))
}

/// Moves `scope` of `staging` to `mode`: everything, a direction, or ports.
fn restage(staging: &mut Staging, scope: &ScopeArgs, mode: StageMode) {
    let directions: Vec<&mut DirectionStage> = match scope.direction {
        Some(DirectionArg::Inbound) => vec![&mut staging.inbound],
        Some(DirectionArg::Outbound) => vec![&mut staging.outbound],
        None => vec![&mut staging.inbound, &mut staging.outbound],
    };
    for stage in directions {
        if scope.ports.is_empty() {
            *stage = DirectionStage {
                mode,
                except_ports: Vec::new(),
            };
            continue;
        }
        for port in &scope.ports {
            stage.except_ports.retain(|p| p != port);
            if stage.mode != mode {
                stage.except_ports.push(*port);
            }
        }
        stage.except_ports.sort();
    }
}

pub fn stage(args: StageArgs) -> Result<ExitCode> {
    let store = args.store.open()?;
    let target = args.target.target();
    let now_assigned = current(&*store, &target)?;
    let name = match (&args.policy, &now_assigned) {
        (Some(name), _) => name.clone(),
        (None, Some(assigned)) => assigned.policy.clone(),
        (None, None) if !store.policy_versions(target.name())?.is_empty() => {
            target.name().to_owned()
        }
        (None, None) => bail!(
            "{target} has no policy assigned and there is no policy named {:?}: give --policy",
            target.name()
        ),
    };
    let version = match args.version {
        Some(version) => version,
        None => store
            .policy_versions(&name)?
            .last()
            .map(|v| v.version)
            .with_context(|| format!("no policy {name:?} in the store (see `policy push`)"))?,
    };
    // The staging moves on from the current one of the same policy.
    let mut staging = match &now_assigned {
        Some(a) if a.policy == name => a.staging.clone(),
        _ => Staging::default(),
    };
    restage(&mut staging, &args.scope, StageMode::Audit);
    let assigned = AssignedVersion {
        policy: name,
        version,
        staging,
    };
    show_backtest(&*store, &target, &assigned, &args.backtest.range)?;
    let stored = assign(&*store, &target, Some(assigned), &args.backtest.by)?;
    describe_change("staged", &stored);
    Ok(ExitCode::SUCCESS)
}

pub fn enforce(args: EnforceArgs) -> Result<ExitCode> {
    let store = args.store.open()?;
    let target = args.target.target();
    let Some(mut assigned) = current(&*store, &target)? else {
        bail!("{target} has no policy assigned: stage one first (`policy stage`)");
    };
    restage(&mut assigned.staging, &args.scope, StageMode::Enforce);
    let blocked = show_backtest(&*store, &target, &assigned, &args.backtest.range)?;
    if blocked > 0 && !args.accept_blocked {
        eprintln!(
            "refusing to enforce: {blocked} connection(s) of that history would be blocked \
             (run again with --accept-blocked to enforce anyway)"
        );
        return Ok(ExitCode::from(1));
    }
    let stored = assign(&*store, &target, Some(assigned), &args.backtest.by)?;
    describe_change("enforced", &stored);
    Ok(ExitCode::SUCCESS)
}

pub fn rollback(args: RollbackArgs) -> Result<ExitCode> {
    let store = args.store.open()?;
    let target = args.target.target();
    let mut history = store.assignment_history(&target)?;
    let Some(latest) = history.pop() else {
        bail!("{target} never had a policy assigned: nothing to roll back");
    };
    let previous = history.pop().and_then(|a| a.assigned);
    if previous.is_none() && latest.assigned.is_none() {
        bail!("{target} has no policy assigned: nothing to roll back");
    }
    let stored = assign(&*store, &target, previous, &args.by)?;
    describe_change("rolled back", &stored);
    Ok(ExitCode::SUCCESS)
}

fn assign(
    store: &dyn Store,
    target: &AssignmentTarget,
    assigned: Option<AssignedVersion>,
    by: &Option<String>,
) -> Result<PolicyAssignment> {
    Ok(store.assign_policy(&AssignmentChange {
        target: target.clone(),
        assigned,
        at: Timestamp::now(),
        by: user(by),
    })?)
}

fn describe_change(what: &str, stored: &PolicyAssignment) {
    match &stored.assigned {
        Some(a) => println!(
            "{what}: {} runs {} version {} ({}), revision {}",
            stored.target,
            a.policy,
            a.version,
            staging_text(&a.staging),
            stored.revision
        ),
        None => println!(
            "{what}: {} has no policy now (revision {}); its hosts keep what they loaded",
            stored.target, stored.revision
        ),
    }
}

/// Replays the target's history against the assigned version and prints
/// the figure per host; returns the connections it would block in what the
/// staging enforces.
fn show_backtest(
    store: &dyn Store,
    target: &AssignmentTarget,
    assigned: &AssignedVersion,
    range: &TimeRangeArgs,
) -> Result<u64> {
    let now = Timestamp::now();
    let default = TimeRange {
        from: Timestamp::from_nanos(now.as_nanos() - BACKTEST_DAYS * 86_400 * 1_000_000_000),
        to: now,
    };
    let range = range.resolve(now, default).map_err(flag_error)?;
    let stored = store
        .policy_version(&assigned.policy, assigned.version)?
        .with_context(|| {
            format!(
                "no version {} of policy {:?} in the store",
                assigned.version, assigned.policy
            )
        })?;
    let mut policy = Policy::parse(&stored.document)
        .with_context(|| format!("policy {} version {}", stored.name, stored.version))?;
    // Replayed for the target's hosts, whatever target the document names.
    policy.target = match target {
        AssignmentTarget::Group(name) => Target::Group(name.clone()),
        AssignmentTarget::Host(name) => Target::Host(name.clone()),
    };
    let result = check(store, &policy, range)?;
    println!(
        "backtest of {} version {} on {target}, {} .. {}:",
        assigned.policy, assigned.version, range.from, range.to
    );
    println!(
        "{:<24} {:>10} {:>14} {:>16}",
        "host", "tested", "would block", "of them enforced"
    );
    let mut enforced_total = 0;
    for host in &result.hosts {
        let enforced: u64 = host
            .blocked
            .iter()
            .filter(|edge| {
                let stage = match edge.direction {
                    FlowDirection::Inbound => &assigned.staging.inbound,
                    FlowDirection::Outbound => &assigned.staging.outbound,
                };
                stage.mode_for(edge.protocol, edge.service_port) == StageMode::Enforce
            })
            .map(|edge| edge.connections)
            .sum();
        enforced_total += enforced;
        println!(
            "{:<24} {:>10} {:>14} {:>16}",
            host.host, host.tested_connections, host.blocked_connections, enforced
        );
    }
    println!(
        "{:<24} {:>10} {:>14} {:>16}",
        "total", result.tested_connections, result.blocked_connections, enforced_total
    );
    Ok(enforced_total)
}

pub fn status(args: StatusArgs) -> Result<ExitCode> {
    let store = args.store.open_existing()?;
    let status = policy_status(&*store, Timestamp::now())?;
    match args.format.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&status)?),
        "table" => {
            println!(
                "{:<20} {:<20} {:>8} {:>7}  {:<44} {:<12} {:<24} ASSIGNED BY",
                "HOST", "POLICY", "REVISION", "LOADED", "STAGING", "STATE", "REPORTED"
            );
            for h in &status.hosts {
                let policy = match (&h.policy, h.version) {
                    (Some(p), Some(v)) => format!("{p}@{v}"),
                    _ => "-".into(),
                };
                let opt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
                let mut by = h.assigned_by.clone().unwrap_or_else(|| "-".into());
                if !h.shadowed.is_empty() {
                    by.push_str(&format!(" (also in {})", h.shadowed.join(", ")));
                }
                let state = match &h.reason {
                    Some(reason) => format!("{}: {reason}", h.state),
                    None => h.state.to_owned(),
                };
                println!(
                    "{:<20} {:<20} {:>8} {:>7}  {:<44} {:<12} {:<24} {by}",
                    h.host,
                    policy,
                    opt(h.revision),
                    opt(h.loaded_revision),
                    h.staging.as_ref().map_or("-".into(), staging_text),
                    state,
                    h.reported_at.as_deref().unwrap_or("-"),
                );
            }
        }
        other => bail!("--format {other:?}: expected table or json"),
    }
    Ok(ExitCode::SUCCESS)
}
