//! `connscope import`: tcpspy syslog files (plain, rotated, gzipped) into a
//! store. Rules for years, zones, directions and identity: docs/IMPORT.md.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use connscope_import::{import_files, ImportOptions};
use jiff::tz::TimeZone;

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    store: super::store_args::StoreArgs,
    /// Time zone of classic syslog timestamps (IANA name, e.g. Europe/Berlin). Default: this machine's.
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
    /// Log files: plain or gzip (detected by content), in any order.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

/// Exit status 0 when every line was read, 1 when some lines or files could
/// not be (the rest is imported all the same).
pub fn run(args: ImportArgs) -> Result<ExitCode> {
    let time_zone = match &args.tz {
        Some(name) => Some(TimeZone::get(name).with_context(|| format!("--tz {name}"))?),
        None => None,
    };
    let store = args.store.open()?;
    let options = ImportOptions {
        time_zone,
        progress: std::io::stderr().is_terminal(),
        ..ImportOptions::default()
    };
    let summary = import_files(&*store, &args.files, &options, &mut |e| eprintln!("{e}"))?;
    eprintln!(
        "{} files, {} lines: {} events imported, {} already in the store, {} lines skipped (other programs, status lines), {} errors",
        summary.files, summary.lines, summary.imported, summary.duplicates, summary.skipped, summary.errors
    );
    Ok(if summary.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
