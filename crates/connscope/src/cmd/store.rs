//! `connscope store migrate`: copy a store to another (SQLite to ClickHouse
//! as a fleet outgrows one machine), with every event in the agent and
//! sequence space it was stored under, so gaps, drops and downtime read the
//! same afterwards.
//!
//! Resumable without bookkeeping: the target recognises what it has
//! (exactly-once ingest, idempotent drops, downtime, groups and labels;
//! refusals are topped up to the source's counts), so an interrupted copy is
//! simply run again.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use connscope_store::{open, StoreLocation};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy a store (events with their agents' sequence spaces and names,
    /// drops, downtime, refusals, groups, labels, access tokens) into
    /// another; run it again to resume.
    Migrate(MigrateArgs),
}

#[derive(Args)]
pub struct MigrateArgs {
    /// The store to copy: sqlite:PATH or clickhouse://...
    #[arg(long, value_name = "LOCATION")]
    from: StoreLocation,
    /// The store to copy into (created if missing): sqlite:PATH or
    /// clickhouse://[user[:password]@]host:port/database.
    #[arg(long, value_name = "LOCATION")]
    to: StoreLocation,
}

pub fn run(command: StoreCommand) -> Result<ExitCode> {
    match command {
        StoreCommand::Migrate(args) => migrate(&args),
    }
}

fn migrate(args: &MigrateArgs) -> Result<ExitCode> {
    if let StoreLocation::Sqlite(path) = &args.from {
        anyhow::ensure!(path.is_file(), "{}: no such store", path.display());
    }
    let from = open(&args.from).with_context(|| format!("opening {}", args.from))?;
    let to = open(&args.to).with_context(|| format!("opening {}", args.to))?;

    for group in from.groups()? {
        to.put_group(&group)?;
    }
    for label in from.host_labels()? {
        to.set_host_label(&label.host, &label.key, Some(&label.value))?;
    }
    // The agents' tokens (digests only), so enrolled agents keep shipping.
    for token in from.tokens()? {
        if to.token_by_digest(&token.digest)?.is_none() {
            to.add_token(&token)?;
        }
    }

    let agents = from.agents()?;
    let total: u64 = agents.iter().map(|a| a.events).sum();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
            .expect("a valid template"),
    );
    let (mut stored, mut present) = (0u64, 0u64);
    from.export_events(&mut |agent, origin, events| {
        let report = to.ingest_from(agent, origin, events)?;
        stored += report.stored;
        present += report.duplicates;
        bar.inc(events.len() as u64);
        Ok(())
    })?;
    bar.finish_and_clear();

    for status in &agents {
        for (reason, ranges) in &status.dropped_by_reason {
            to.record_dropped_from(&status.agent, &status.instance, reason, ranges.ranges())?;
        }
        to.record_downtime(&status.agent, &status.instance, &status.downtime)?;
    }
    let copied: HashMap<_, _> = to
        .refusals()?
        .into_iter()
        .map(|r| ((r.agent, r.reason), r.batches))
        .collect();
    for refusal in from.refusals()? {
        let have = copied
            .get(&(refusal.agent.clone(), refusal.reason.clone()))
            .copied()
            .unwrap_or(0);
        for _ in have..refusal.batches {
            to.record_refusal(&refusal.agent, &refusal.reason, refusal.last_at)?;
        }
    }
    println!(
        "migrated {} to {}: {stored} events copied, {present} already there",
        args.from, args.to
    );
    Ok(ExitCode::SUCCESS)
}
