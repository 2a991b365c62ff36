//! Where a store is, as the command line and the collector's settings
//! name it: one key for both backends.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::{ClickHouseLocation, ClickHouseStore, SqliteStore, Store, StoreError};

/// A store's location: `sqlite:PATH` (or a plain path) or
/// `clickhouse://[user[:password]@]host:port/database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    ClickHouse(ClickHouseLocation),
}

impl FromStr for StoreLocation {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<StoreLocation, StoreError> {
        if text.starts_with("clickhouse:") {
            return Ok(StoreLocation::ClickHouse(ClickHouseLocation::parse(text)?));
        }
        let path = text.strip_prefix("sqlite:").unwrap_or(text);
        if path.is_empty() {
            return Err(StoreError::Open {
                path: text.to_owned(),
                reason: "no path: give sqlite:PATH or clickhouse://host:port/database".into(),
            });
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(path)))
    }
}

impl From<PathBuf> for StoreLocation {
    /// A SQLite file.
    fn from(path: PathBuf) -> StoreLocation {
        StoreLocation::Sqlite(path)
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreLocation::ClickHouse(location) => location.fmt(f),
        }
    }
}

/// Opens the store at `location`, creating it (its file, or its database
/// and tables) if it does not exist yet.
pub fn open(location: &StoreLocation) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match location {
        StoreLocation::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
        StoreLocation::ClickHouse(location) => Arc::new(ClickHouseStore::open(location)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_a_path_sqlite_path_or_clickhouse_address() {
        assert_eq!(
            "/var/lib/cs.db".parse::<StoreLocation>().unwrap(),
            StoreLocation::Sqlite("/var/lib/cs.db".into())
        );
        assert_eq!(
            "sqlite:rel.db".parse::<StoreLocation>().unwrap(),
            StoreLocation::Sqlite("rel.db".into())
        );
        let ch = "clickhouse://h:9/db".parse::<StoreLocation>().unwrap();
        assert_eq!(ch.to_string(), "clickhouse://h:9/db");
        assert!("sqlite:".parse::<StoreLocation>().is_err());
        assert!("clickhouse://h:9/".parse::<StoreLocation>().is_err());
    }
}
