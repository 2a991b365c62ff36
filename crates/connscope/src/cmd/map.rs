//! `connscope map export`: the connection map as one self-contained HTML file
//! (code, style and graph inlined) that works offline from a `file://` URL.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use connscope_event::{Direction, Protocol, Timestamp};
use connscope_query::{build_graph, parse_time_arg, GraphFilter, Scope};
use connscope_store::{SqliteStore, TimeRange};

#[derive(Subcommand)]
pub enum MapCommand {
    /// Write the map of a store as one HTML file that works offline.
    Export(ExportArgs),
}

#[derive(Args)]
pub struct ExportArgs {
    /// SQLite database of the collector.
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// The HTML file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE.html")]
    output: PathBuf,
    /// Start of the time range: RFC 3339 (2026-11-24T19:00:00Z), `now`, or -24h, -7d, ...
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    from: Option<String>,
    /// End of the time range (same forms as --from); default: now.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    to: Option<String>,
    /// Only edges with this monitored host on either end.
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// Only edges to this service port.
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// Only edges of this protocol.
    #[arg(long, value_name = "PROTO", value_parser = ["tcp", "udp"])]
    protocol: Option<String>,
    /// Only edges where a process has this executable (full path or file name).
    #[arg(long = "exe", value_name = "PATH")]
    executable: Option<String>,
    /// Only edges where a process ran as this user.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Only edges out of (or into) monitored hosts (--host, if given).
    #[arg(long, value_enum)]
    direction: Option<DirectionArg>,
    /// Only internal edges, or only edges with an external end.
    #[arg(long, value_enum)]
    scope: Option<ScopeArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum DirectionArg {
    In,
    Out,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScopeArg {
    Internal,
    External,
}

pub fn run(command: MapCommand) -> anyhow::Result<ExitCode> {
    match command {
        MapCommand::Export(args) => export(args),
    }
}

fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let now = Timestamp::now();
    let time = |arg: &Option<String>, default: Timestamp| -> anyhow::Result<Timestamp> {
        Ok(match arg {
            Some(text) => parse_time_arg(text, now)?,
            None => default,
        })
    };
    let range = TimeRange {
        from: time(&args.from, TimeRange::ALL.from)?,
        to: time(&args.to, TimeRange::ALL.to)?,
    };
    anyhow::ensure!(range.from < range.to, "--from must be before --to");
    let filter = GraphFilter {
        host: args.host,
        port: args.port,
        protocol: args
            .protocol
            .as_deref()
            .map(str::parse::<Protocol>)
            .transpose()?,
        executable: args.executable,
        user: args.user,
        direction: args.direction.map(|d| match d {
            DirectionArg::In => Direction::Incoming,
            DirectionArg::Out => Direction::Outgoing,
        }),
        scope: args.scope.map(|s| match s {
            ScopeArg::Internal => Scope::Internal,
            ScopeArg::External => Scope::External,
        }),
    };
    anyhow::ensure!(args.db.is_file(), "{}: no such database", args.db.display());
    let store =
        SqliteStore::open(&args.db).with_context(|| format!("opening {}", args.db.display()))?;
    let graph = build_graph(&store, range, &filter).context("reading the graph")?;
    let html = connscope_map::export_html(&graph)?;
    std::fs::write(&args.output, html)
        .with_context(|| format!("writing {}", args.output.display()))?;
    tracing::info!(nodes = graph.nodes.len(), edges = graph.edges.len(), file = %args.output.display(), "map exported");
    Ok(ExitCode::SUCCESS)
}
