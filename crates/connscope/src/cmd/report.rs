//! `connscope report edges|hosts|ports|refusals|drift|hits`: what the store holds, as aligned
//! tables for people or JSON/CSV for scripts (`report edges --format json` is
//! the stable interface documented in docs/API.md).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use connscope_event::Timestamp;
use connscope_policy::{host_briefs, policy_status, DriftEntry, DriftList};
use connscope_protocol::policy::StageMode;
use connscope_query::groups::{groups_by_host, members};
use connscope_query::hits::{firewall_hits, hits_report};
use connscope_query::join::{load_edges, HostDirectory};
use connscope_query::naming::RemoteNames;
use connscope_query::report::{
    edges_report_named, group_edges_report, hosts_report_with_policies, name_edges_report,
    ports_report, refusals_report, Format, Report,
};
use connscope_query::{GraphFilterArgs, TimeRangeArgs};
use connscope_store::TimeRange;

use super::flag_error;

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Client -> server edges; a connection logged by both ends counts once.
    Edges(ReportArgs),
    /// Every sender (agent or import), when it was last seen, its events and sequence gaps.
    Hosts(ReportArgs),
    /// Services: per server and port, connections, clients and processes.
    Ports(ReportArgs),
    /// Batches the collector refused, per agent and reason (nothing of them is stored).
    Refusals(ReportArgs),
    /// Drift: edges the policy assigned to their host does not allow, one row
    /// per (host, direction, protocol, port, remote address).
    Drift(DriftArgs),
    /// Firewall hits: what the hosts' policies would have dropped (audit) or
    /// dropped (enforce), per host, remote end, program and user.
    Hits(HitsArgs),
}

#[derive(Args)]
#[command(after_help = "Without --from (--since) or --to the range is everything stored.")]
pub struct HitsArgs {
    #[command(flatten)]
    store: super::store_args::StoreArgs,
    #[command(flatten)]
    range: TimeRangeArgs,
    /// Only the hits this host logged.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// table (aligned, for people), json (the body of GET /api/v1/firewall/hits) or csv.
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    format: Format,
}

#[derive(Args)]
#[command(after_help = "Without --from (--since) or --to the range is everything stored.")]
pub struct DriftArgs {
    #[command(flatten)]
    store: super::store_args::StoreArgs,
    #[command(flatten)]
    range: TimeRangeArgs,
    /// table (aligned, for people), json (the body of GET /api/v1/drift) or csv.
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    format: Format,
}

#[derive(Args)]
#[command(after_help = "Without --from or --to the range is everything stored.")]
pub struct ReportArgs {
    #[command(flatten)]
    store: super::store_args::StoreArgs,
    #[command(flatten)]
    range: TimeRangeArgs,
    /// table (aligned, for people), json or csv.
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    format: Format,
    // Which edges: for `edges` and `ports` only.
    #[command(flatten)]
    filter: GraphFilterArgs,
    /// `edges` only: `group` sums edges between host groups (`connscope groups`);
    /// a host in several groups counts in the one added first. `name` sums
    /// the edges to external servers per name the client host knew them by
    /// (DNS answer or TLS server name), with its registered domain.
    #[arg(long, value_name = "WHAT")]
    by: Option<By>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum By {
    Group,
    Name,
}

pub fn run(command: ReportCommand) -> Result<ExitCode> {
    let (args, kind) = match &command {
        ReportCommand::Drift(args) => return drift(args),
        ReportCommand::Hits(args) => return hits(args),
        ReportCommand::Edges(a) => (a, "edges"),
        ReportCommand::Hosts(a) => (a, "hosts"),
        ReportCommand::Ports(a) => (a, "ports"),
        ReportCommand::Refusals(a) => (a, "refusals"),
    };
    let store = args.store.open_existing()?;
    anyhow::ensure!(
        args.by.is_none() || kind == "edges",
        "--by is for `report edges` only"
    );
    let range = args
        .range
        .resolve(Timestamp::now(), TimeRange::ALL)
        .map_err(flag_error)?;
    let report = if kind == "hosts" {
        let groups = groups_by_host(&members(&*store, range)?);
        let policies = host_briefs(&policy_status(&*store, Timestamp::now())?);
        hosts_report_with_policies(&store.agents()?, &groups, &policies)
    } else if kind == "refusals" {
        refusals_report(&store.refusals()?)
    } else {
        let filter = args.filter.resolve().map_err(flag_error)?;
        let hosts = HostDirectory::new(&store.host_addresses()?);
        let edges: Vec<_> = load_edges(&*store, range)?
            .into_iter()
            .filter(|e| filter.matches(e, &hosts))
            .collect();
        match (args.by, kind) {
            (Some(By::Group), _) => {
                group_edges_report(&edges, &groups_by_host(&members(&*store, range)?))
            }
            (Some(By::Name), _) => name_edges_report(&edges, &RemoteNames::load(&*store, range)?),
            (None, "edges") => edges_report_named(&edges, &RemoteNames::load(&*store, range)?),
            _ => ports_report(&edges),
        }
    };
    print(&report, args.format)
}

/// `report drift`: the drift edges seen in the range, oldest first per host.
fn drift(args: &DriftArgs) -> Result<ExitCode> {
    let store = args.store.open_existing()?;
    let range = args
        .range
        .resolve(Timestamp::now(), TimeRange::ALL)
        .map_err(flag_error)?;
    let entries: Vec<DriftEntry> = store.drift(range)?.into_iter().map(Into::into).collect();
    let rows = entries
        .iter()
        .map(|d| {
            vec![
                d.host.clone(),
                d.direction.to_owned(),
                format!("{}/{}", d.protocol, d.port),
                d.local.clone(),
                match &d.remote_name {
                    Some(name) => format!("{} ({name})", d.remote),
                    None => d.remote.clone(),
                },
                d.executable.clone().unwrap_or_default(),
                d.user.clone().unwrap_or_default(),
                format!("{}@{}", d.policy, d.version),
                match d.mode {
                    StageMode::Audit => "audit".to_owned(),
                    StageMode::Enforce => "enforce".to_owned(),
                },
                d.first_seen.clone(),
                d.last_seen.clone(),
                d.connections.to_string(),
            ]
        })
        .collect();
    let json = serde_json::to_value(DriftList { drift: entries })?;
    let report = Report::new(
        vec![
            "host",
            "direction",
            "service",
            "local",
            "remote",
            "executable",
            "user",
            "policy",
            "mode",
            "first_seen",
            "last_seen",
            "connections",
        ],
        vec![
            false, false, false, false, false, false, false, false, false, false, false, true,
        ],
        rows,
        json,
    );
    print(&report, args.format)
}

fn hits(args: &HitsArgs) -> Result<ExitCode> {
    let store = args.store.open_existing()?;
    let range = args
        .range
        .resolve(Timestamp::now(), TimeRange::ALL)
        .map_err(flag_error)?;
    let report = hits_report(&firewall_hits(&*store, range, args.host.as_deref())?);
    print(&report, args.format)
}

/// Writes `report` to stdout in `format`.
fn print(report: &Report, format: Format) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(report.render(format).as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
