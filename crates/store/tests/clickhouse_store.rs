#![cfg(feature = "system-tests")] // starts clickhouse-server (Debian's package)
//! The ClickHouse backend on a real server of each test's own: the store
//! suite (see `suite`), the same answers as SQLite on the same input, and
//! what only ClickHouse has: collectors racing on one batch, a batch
//! re-sent after a half-finished insert, schema versions.

#[path = "support/clickhouse_server.rs"]
mod clickhouse_server;
mod suite;

use clickhouse_server::ClickHouseServer;
use connscope_store::{ClickHouseLocation, ClickHouseStore, Store};

/// A database on a server of the test's own.
struct ClickHouseBackend {
    server: ClickHouseServer,
}

impl suite::Backend for ClickHouseBackend {
    fn store(&self) -> Box<dyn Store> {
        let location = ClickHouseLocation::parse(&self.server.location("connscope")).unwrap();
        Box::new(ClickHouseStore::open(&location).unwrap())
    }
}

fn clickhouse() -> ClickHouseBackend {
    ClickHouseBackend {
        server: ClickHouseServer::start(),
    }
}

store_suite!(clickhouse);
