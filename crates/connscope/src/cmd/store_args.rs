//! Which store a command works on: `--db PATH` (SQLite) or `--store
//! LOCATION` (either backend), one opener for every command.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use connscope_store::{Store, StoreLocation};

#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct StoreArgs {
    /// The SQLite store file (short for --store sqlite:PATH).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// The store: sqlite:PATH or clickhouse://[user[:password]@]host:port/database
    /// (ClickHouse's HTTP interface).
    #[arg(long, value_name = "LOCATION")]
    store: Option<StoreLocation>,
}

impl StoreArgs {
    pub fn location(&self) -> StoreLocation {
        match (&self.store, &self.db) {
            (Some(location), _) => location.clone(),
            (None, Some(path)) => StoreLocation::Sqlite(path.clone()),
            (None, None) => unreachable!("clap requires --db or --store"),
        }
    }

    /// Opens the store, creating it if it does not exist.
    pub fn open(&self) -> Result<Arc<dyn Store>> {
        let location = self.location();
        connscope_store::open(&location).with_context(|| format!("opening {location}"))
    }

    /// Opens a store that must exist already (a SQLite file is not created
    /// by a command that only reads it).
    pub fn open_existing(&self) -> Result<Arc<dyn Store>> {
        if let StoreLocation::Sqlite(path) = self.location() {
            anyhow::ensure!(path.is_file(), "{}: no such store", path.display());
        }
        self.open()
    }
}
