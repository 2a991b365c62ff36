//! `connscope policy draft|show|edit-check|diff|check|render`: policies as
//! files a person reviews (docs/POLICY.md). `draft` and `check` read the
//! store; the others work on files alone (or on versions kept in the store:
//! `diff ws@3 ws@4`), so a policy can be reviewed and edited away from the
//! collector. The versions and assignments the collector keeps are
//! [`super::policy_store`]'s.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use connscope_event::Timestamp;
use connscope_firewall::PlanOptions;
use connscope_policy::{
    check, describe, diff, draft, hygiene, render, DraftOptions, Generalization, HygieneOptions,
    HygieneReport, Mode, Policy, Target,
};
use connscope_query::TimeRangeArgs;
use connscope_store::{SqliteStore, StoreLocation, TimeRange};

use super::flag_error;
use super::policy_store;

/// The NFLOG group a policy's would-block and blocked packets are logged to,
/// unless told otherwise.
const DEFAULT_LOG_GROUP: u16 = 6464;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Propose a policy for a group or host from its history.
    Draft(DraftArgs),
    /// A policy's rules, review list and provenance, in plain words.
    Show(FileArgs),
    /// Check a policy file; every mistake is named by its line or rule.
    EditCheck(FileArgs),
    /// What changed between two versions (exit status 1 when anything did).
    Diff(DiffArgs),
    /// Replay the history of the policy's hosts against it (exit status 1
    /// when it would have blocked a connection).
    Check(CheckArgs),
    /// One host's ruleset of the policy, for `nft -f`.
    Render(RenderArgs),
    /// Rules no host's firewall counted in N days, and rules much wider than
    /// the traffic they carried (exit status 1 when one should be removed or
    /// narrowed).
    Hygiene(HygieneArgs),
    /// Keep a policy file as the next version of its policy in the store.
    Push(policy_store::PushArgs),
    /// The versions of a policy kept in the store.
    Versions(policy_store::VersionsArgs),
    /// Assign a policy version to a group or host in audit mode (all of it,
    /// a direction, or ports), after showing its backtest figure.
    Stage(policy_store::StageArgs),
    /// Enforce a group's or host's policy (all of it, a direction, or ports);
    /// refused while the backtest shows connections it would block.
    Enforce(policy_store::EnforceArgs),
    /// Back to the assignment before the last change (version and staging).
    Rollback(policy_store::RollbackArgs),
    /// Every host's policy, mode and what its agent last reported.
    Status(policy_store::StatusArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum GeneralizeArg {
    Exact,
    Subnet,
    Group,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("target").required(true)))]
pub struct DraftArgs {
    /// The collector's SQLite store.
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// Draft for every member of this group (`connscope groups`).
    #[arg(long, value_name = "NAME", group = "target")]
    group: Option<String>,
    /// Draft for this host alone.
    #[arg(long, value_name = "NAME", group = "target")]
    host: Option<String>,
    #[command(flatten)]
    range: TimeRangeArgs,
    /// How far the draft generalises (as `firewall plan --generalize`).
    #[arg(long, value_enum, default_value = "group")]
    generalize: GeneralizeArg,
    /// The share of members that must have used a service for the group to get it.
    #[arg(long, default_value_t = 0.5, value_name = "SHARE")]
    min_share: f64,
    /// Flows seen fewer times are held back for review instead of allowed.
    #[arg(long, default_value_t = 1, value_name = "N")]
    min_count: u64,
    /// A member's own rule seen fewer times is allowed but listed for review.
    #[arg(long, default_value_t = 3, value_name = "N")]
    rare_below: u64,
    /// The previous version: the rules a person approved in it are kept.
    #[arg(long, value_name = "FILE")]
    previous: Option<PathBuf>,
    /// Write the draft here instead of to standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Args)]
pub struct FileArgs {
    /// The policy file (TOML).
    policy: PathBuf,
}

#[derive(Args)]
pub struct DiffArgs {
    /// The older version: a file, or NAME@N for a version kept in the store.
    old: String,
    /// The newer version: a file, or NAME@N.
    new: String,
    /// The SQLite store NAME@N versions are read from.
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// The store NAME@N versions are read from (sqlite:PATH or clickhouse://...).
    #[arg(long, value_name = "LOCATION", conflicts_with = "db")]
    store: Option<StoreLocation>,
}

#[derive(Args)]
pub struct CheckArgs {
    /// The policy file (TOML).
    policy: PathBuf,
    /// The collector's SQLite store.
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    #[command(flatten)]
    range: TimeRangeArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// What the policy would drop is logged and let through.
    Audit,
    /// What the policy does not allow is logged and dropped.
    Enforce,
}

#[derive(Args)]
pub struct RenderArgs {
    /// The policy file (TOML).
    policy: PathBuf,
    /// The host whose ruleset to write (a member of the policy's group).
    #[arg(long, value_name = "NAME")]
    host: String,
    #[arg(long, value_enum, default_value = "audit")]
    mode: ModeArg,
    /// The NFLOG group would-block and blocked packets are logged to.
    #[arg(long, default_value_t = DEFAULT_LOG_GROUP, value_name = "N")]
    log_group: u16,
}

#[derive(Args)]
pub struct HygieneArgs {
    /// The policy's name, as pushed and as its hosts report it.
    name: String,
    /// Judge this document (TOML) instead of a version kept in the store:
    /// a file not pushed yet.
    #[arg(long, value_name = "FILE")]
    document: Option<PathBuf>,
    #[command(flatten)]
    store: super::store_args::StoreArgs,
    /// The version to judge (default: the one assigned now; with
    /// --document, the newest one hosts reported counters of).
    #[arg(long, value_name = "N")]
    version: Option<u32>,
    /// A rule no host counted a packet on for this many days is unused.
    #[arg(long, default_value_t = 14, value_name = "DAYS")]
    unused_days: u32,
    #[arg(long, value_enum, default_value = "text")]
    format: HygieneFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HygieneFormat {
    /// A rule a line, its findings and the suggestion under it.
    Text,
    /// The report as one JSON document (docs/POLICY.md "Rule hygiene").
    Json,
}

pub fn run(command: PolicyCommand) -> Result<ExitCode> {
    match command {
        PolicyCommand::Draft(args) => run_draft(args),
        PolicyCommand::Show(args) => show(&read(&args.policy)?),
        PolicyCommand::EditCheck(args) => {
            let policy = read(&args.policy)?;
            let rules = policy.inbound.len() + policy.outbound.len();
            println!("{}: {rules} rules, no mistakes", args.policy.display());
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Diff(args) => {
            let changes = diff(
                &read_version(&args, &args.old)?,
                &read_version(&args, &args.new)?,
            );
            print!("{changes}");
            Ok(if changes.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        PolicyCommand::Check(args) => run_check(args),
        PolicyCommand::Hygiene(args) => run_hygiene(args),
        PolicyCommand::Push(args) => policy_store::push(args),
        PolicyCommand::Versions(args) => policy_store::versions(args),
        PolicyCommand::Stage(args) => policy_store::stage(args),
        PolicyCommand::Enforce(args) => policy_store::enforce(args),
        PolicyCommand::Rollback(args) => policy_store::rollback(args),
        PolicyCommand::Status(args) => policy_store::status(args),
        PolicyCommand::Render(args) => {
            let policy = read(&args.policy)?;
            let mode = match args.mode {
                ModeArg::Audit => Mode::Audit {
                    log_group: args.log_group,
                },
                ModeArg::Enforce => Mode::Enforce {
                    log_group: args.log_group,
                },
            };
            print!("{}", render(&policy, &args.host, mode));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One side of `diff`: a file, or `NAME@N` from the store when one is given
/// and no file has that name.
fn read_version(args: &DiffArgs, spec: &str) -> Result<Policy> {
    let path = Path::new(spec);
    let location = match (&args.store, &args.db) {
        (Some(location), _) => Some(location.clone()),
        (None, Some(db)) => Some(StoreLocation::Sqlite(db.clone())),
        (None, None) => None,
    };
    match location {
        Some(location) if !path.exists() => {
            let store =
                connscope_store::open(&location).with_context(|| format!("opening {location}"))?;
            match policy_store::stored_document(&*store, spec)? {
                Some((name, text)) => Policy::parse(&text).with_context(|| name),
                None => read(path),
            }
        }
        _ => read(path),
    }
}

/// A policy file, read and checked; its path leads every error.
fn read(path: &Path) -> Result<Policy> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Policy::parse(&text).with_context(|| format!("{}", path.display()))
}

fn open(db: &Path, range: &TimeRangeArgs) -> Result<(SqliteStore, TimeRange)> {
    let range = range
        .resolve(Timestamp::now(), TimeRange::ALL)
        .map_err(flag_error)?;
    Ok((open_store(db)?, range))
}

fn open_store(db: &Path) -> Result<SqliteStore> {
    if !db.is_file() {
        bail!("{}: no such store", db.display());
    }
    SqliteStore::open(db).with_context(|| format!("opening {}", db.display()))
}

fn run_draft(args: DraftArgs) -> Result<ExitCode> {
    let (store, range) = open(&args.db, &args.range)?;
    let target = match (args.group, args.host) {
        (Some(group), _) => Target::Group(group),
        (None, Some(host)) => Target::Host(host),
        (None, None) => bail!("--group or --host is required"),
    };
    let options = DraftOptions {
        generalize: match args.generalize {
            GeneralizeArg::Exact => Generalization::Exact,
            GeneralizeArg::Subnet => Generalization::Subnet,
            GeneralizeArg::Group => Generalization::Group,
        },
        min_share: args.min_share,
        plan: PlanOptions {
            min_count: args.min_count,
            ..PlanOptions::default()
        },
        rare_below: args.rare_below,
        previous: args.previous.as_deref().map(read).transpose()?,
    };
    let policy = draft(&store, &target, range, &options)?;
    let text = policy.to_toml();
    match &args.output {
        Some(path) => {
            fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    if !policy.review.is_empty() {
        tracing::warn!(
            flows = policy.review.len(),
            "flows are listed for review (see `review` in the policy)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show(policy: &Policy) -> Result<ExitCode> {
    println!("policy {} for {}", policy.name, policy.target);
    if let Some(d) = &policy.drafted {
        println!(
            "drafted from {} .. {} ({}, min share {}, min count {}){}",
            d.from,
            d.to,
            d.generalize,
            d.min_share,
            d.min_count,
            if d.members.is_empty() {
                String::new()
            } else {
                format!("; members then: {}", d.members.join(", "))
            }
        );
    }
    for (direction, rules) in policy.sections() {
        for rule in rules {
            let why = rule
                .basis
                .as_ref()
                .map(|b| format!("; {b}"))
                .unwrap_or_default();
            println!(
                "{} {}  [{} conn{why}]",
                if rule.approved {
                    "approved"
                } else {
                    "        "
                },
                describe(direction, rule),
                rule.evidence.connections,
            );
        }
    }
    for item in &policy.review {
        println!(
            "review: {} {} {} port {} peer {}: {}",
            item.host,
            item.direction.as_str(),
            item.protocol,
            item.port,
            item.peer,
            item.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn run_check(args: CheckArgs) -> Result<ExitCode> {
    let policy = read(&args.policy)?;
    let (store, range) = open(&args.db, &args.range)?;
    let result = check(&store, &policy, range)?;
    println!(
        "{:<24} {:>10} {:>10} {:>8}",
        "host", "tested", "blocked", "edges"
    );
    for host in &result.hosts {
        println!(
            "{:<24} {:>10} {:>10} {:>8}",
            host.host,
            host.tested_connections,
            host.blocked_connections,
            host.blocked.len()
        );
    }
    println!(
        "{:<24} {:>10} {:>10} {:>8}",
        "total", result.tested_connections, result.blocked_connections, result.blocked_edges
    );
    for host in &result.hosts {
        for edge in &host.blocked {
            println!(
                "  {}: {} {} port {} ({} -> {}): {} connection(s){}",
                host.host,
                edge.direction.as_str(),
                edge.protocol,
                edge.service_port,
                edge.local,
                edge.remote,
                edge.connections,
                if edge.not_seen_in_learning {
                    ", not seen when the policy was drafted"
                } else {
                    ""
                }
            );
        }
    }
    Ok(if result.blocked_connections == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_hygiene(args: HygieneArgs) -> Result<ExitCode> {
    if args.unused_days == 0 {
        bail!("--unused-days 0: give at least one day");
    }
    let store = args.store.open_existing()?;
    let (policy, version) = match &args.document {
        Some(document) => {
            let policy = read(document)?;
            if policy.name != args.name {
                bail!(
                    "{}: the document is policy {:?}, not {:?}",
                    document.display(),
                    policy.name,
                    args.name
                );
            }
            let version = match args.version {
                Some(version) => version,
                None => store
                    .rule_hits(&args.name, None)?
                    .iter()
                    .map(|h| h.version)
                    .max()
                    .with_context(|| {
                        format!(
                            "no host reported rule counters of policy {:?}: pass --version",
                            args.name
                        )
                    })?,
            };
            (policy, version)
        }
        None => {
            let version = match args.version {
                Some(version) => version,
                None => policy_store::assigned_version(store.as_ref(), &args.name)?,
            };
            (
                policy_store::stored_policy(store.as_ref(), &args.name, version)?,
                version,
            )
        }
    };
    let report = hygiene(
        store.as_ref(),
        &policy,
        version,
        &HygieneOptions {
            unused_days: args.unused_days,
            now: Timestamp::now(),
        },
    )?;
    let suggested = report
        .rules
        .iter()
        .filter(|r| r.suggestion().is_some_and(|s| s != "keep (approved)"))
        .count();
    match args.format {
        HygieneFormat::Text => print_hygiene(&report, suggested),
        HygieneFormat::Json => println!("{}", hygiene_json(&report)),
    }

    Ok(if suggested == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_hygiene(report: &HygieneReport, suggested: usize) {
    println!(
        "policy {} version {}: {} rules; hits over the last {} days ({:.0} .. {:.0})",
        report.policy,
        report.version,
        report.rules.len(),
        report.unused_days,
        report.window.from.to_jiff(),
        report.window.to.to_jiff()
    );
    for rule in &report.rules {
        let counted = match &rule.hits {
            Some(h) => format!("{} packets on {} host(s)", h.packets, h.hosts),
            None => "not counted".to_owned(),
        };
        println!(
            "{:<14} {}{}  [{counted}]",
            rule.place,
            rule.summary,
            if rule.approved { "  (approved)" } else { "" }
        );
        for finding in &rule.findings {
            println!("    {finding}");
        }
        if let Some(suggestion) = rule.suggestion() {
            println!("    -> {suggestion}");
        }
    }
    println!("{suggested} rule(s) to remove or narrow");
}

/// The report as data: every rule with its counters, findings (`kind` and
/// the sentence) and suggestion.
fn hygiene_json(report: &HygieneReport) -> serde_json::Value {
    let time = |t: Timestamp| format!("{:.0}", t.to_jiff());
    let rules: Vec<serde_json::Value> = report
        .rules
        .iter()
        .map(|rule| {
            serde_json::json!({
                "rule": rule.place,
                "summary": rule.summary,
                "approved": rule.approved,
                "counters": rule.hits.as_ref().map(|h| serde_json::json!({
                    "hosts": h.hosts,
                    "packets": h.packets,
                    "bytes": h.bytes,
                    "first_reported": time(h.first_reported),
                    "last_reported": time(h.last_reported),
                    "last_hit": h.last_hit.map(time),
                })),
                "findings": rule.findings.iter().map(|f| serde_json::json!({
                    "kind": f.kind(),
                    "text": f.to_string(),
                })).collect::<Vec<_>>(),
                "suggestion": rule.suggestion(),
            })
        })
        .collect();
    serde_json::json!({
        "policy": report.policy,
        "version": report.version,
        "unused_days": report.unused_days,
        "from": time(report.window.from),
        "to": time(report.window.to),
        "rules": rules,
    })
}
