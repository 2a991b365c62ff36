//! `connscope map export`: the connection map as one self-contained HTML file
//! (code, style and graph inlined) that works offline from a `file://` URL.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use connscope_event::Timestamp;
use connscope_query::groups::{members, GroupView};
use connscope_query::{build_graph, GraphFilterArgs, TimeRangeArgs};
use connscope_store::{Store, TimeRange};

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
    let mut doc = serde_json::to_value(&graph).context("writing the graph as JSON")?;
    doc["groups"] = groups_document(&*store, range)?;
    let html = connscope_map::export_html(&doc)?;
    std::fs::write(&args.output, html)
        .with_context(|| format!("writing {}", args.output.display()))?;
    tracing::info!(nodes = graph.nodes.len(), edges = graph.edges.len(), file = %args.output.display(), "map exported");
    Ok(ExitCode::SUCCESS)
}

/// The store's host groups and labels as `GET /api/v1/groups` answers them
/// (members among the hosts seen in the exported range), so the export folds
/// hosts into the same groups as the served map.
fn groups_document(store: &dyn Store, range: TimeRange) -> anyhow::Result<serde_json::Value> {
    let groups = store.groups().context("reading the host groups")?;
    let memberships = members(store, range).context("resolving the host groups")?;
    let groups: Vec<GroupView> = groups
        .into_iter()
        .zip(memberships)
        .map(|(g, m)| GroupView::new(g, m))
        .collect();
    let labels: Vec<serde_json::Value> = store
        .host_labels()
        .context("reading the host labels")?
        .into_iter()
        .map(|l| serde_json::json!({"host": l.host, "key": l.key, "value": l.value}))
        .collect();
    Ok(serde_json::json!({"groups": groups, "host_labels": labels}))
}
