//! `connscope map export`: the connection map as one self-contained HTML file
//! (code, style and graph inlined) that works offline from a `file://` URL.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use connscope_event::Timestamp;
use connscope_query::{build_graph, GraphFilterArgs, TimeRangeArgs};
use connscope_store::TimeRange;

use super::flag_error;

#[derive(Subcommand)]
pub enum MapCommand {
    /// Write the map of a store as one HTML file that works offline.
    Export(ExportArgs),
}

#[derive(Args)]
#[command(after_help = "Without --from or --to the range is everything stored.")]
pub struct ExportArgs {
    #[command(flatten)]
    store: super::store_args::StoreArgs,
    /// The HTML file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE.html")]
    output: PathBuf,
    #[command(flatten)]
    range: TimeRangeArgs,
    #[command(flatten)]
    filter: GraphFilterArgs,
}

pub fn run(command: MapCommand) -> anyhow::Result<ExitCode> {
    match command {
        MapCommand::Export(args) => export(args),
    }
}

fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let range = args
        .range
        .resolve(Timestamp::now(), TimeRange::ALL)
        .map_err(flag_error)?;
    let filter = args.filter.resolve().map_err(flag_error)?;
    let store = args.store.open_existing()?;
    let graph = build_graph(&*store, range, &filter).context("reading the graph")?;
    let html = connscope_map::export_html(&graph)?;
    std::fs::write(&args.output, html)
        .with_context(|| format!("writing {}", args.output.display()))?;
    tracing::info!(nodes = graph.nodes.len(), edges = graph.edges.len(), file = %args.output.display(), "map exported");
    Ok(ExitCode::SUCCESS)
}
