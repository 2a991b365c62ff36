//! `connscope report edges|hosts|ports|refusals`: what the store holds, as aligned
//! tables for people or JSON/CSV for scripts (`report edges --format json` is
//! the stable interface documented in docs/API.md).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use connscope_event::Timestamp;
use connscope_query::graph::GraphFilter;
use connscope_query::join::{load_edges, HostDirectory};
use connscope_query::parse_time_arg;
use connscope_query::report::{edges_report, hosts_report, ports_report, refusals_report, Format};
use connscope_store::{SqliteStore, Store, TimeRange};

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
}

#[derive(Args)]
pub struct ReportArgs {
    /// The store to read.
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// Start of the time range: RFC 3339 (2026-11-24T19:00:00Z), `now`, or back from now (-24h, -7d). Default: the beginning.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    from: Option<String>,
    /// End of the time range (exclusive), same forms as --from. Default: no end.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    to: Option<String>,
    /// table (aligned, for people), json or csv.
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    format: Format,
    /// Only edges with this monitored host at either end (edges, ports).
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Only this service port (edges, ports).
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
}

impl ReportArgs {
    fn range(&self) -> Result<TimeRange> {
        let now = Timestamp::now();
        let from = match &self.from {
            Some(text) => parse_time_arg(text, now)?,
            None => TimeRange::ALL.from,
        };
        let to = match &self.to {
            Some(text) => parse_time_arg(text, now)?,
            None => TimeRange::ALL.to,
        };
        anyhow::ensure!(from < to, "--from must be before --to");
        Ok(TimeRange { from, to })
    }
}

pub fn run(command: ReportCommand) -> Result<ExitCode> {
    let (args, kind) = match &command {
        ReportCommand::Edges(a) => (a, "edges"),
        ReportCommand::Hosts(a) => (a, "hosts"),
        ReportCommand::Ports(a) => (a, "ports"),
        ReportCommand::Refusals(a) => (a, "refusals"),
    };
    anyhow::ensure!(args.db.is_file(), "{}: no such store", args.db.display());
    let store =
        SqliteStore::open(&args.db).with_context(|| format!("opening {}", args.db.display()))?;
    let report = if kind == "hosts" {
        hosts_report(&store.agents()?)
    } else if kind == "refusals" {
        refusals_report(&store.refusals()?)
    } else {
        let range = args.range()?;
        let hosts = HostDirectory::new(&store.host_addresses()?);
        let filter = GraphFilter {
            host: args.host.clone(),
            port: args.port,
            ..GraphFilter::default()
        };
        let edges: Vec<_> = load_edges(&store, range)?
            .into_iter()
            .filter(|e| filter.matches(e, &hosts))
            .collect();
        if kind == "edges" {
            edges_report(&edges)
        } else {
            ports_report(&edges)
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(report.render(args.format).as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
