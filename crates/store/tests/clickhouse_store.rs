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

use std::time::Duration;

use connscope_store::{AgentId, EventQuery, RollupQuery, TimeRange};
use suite::{numbered, Backend};

/// Deletes every row of `tables` behind the store's back (and waits for
/// it): what a collector that died before writing them left.
fn lose(server: &ClickHouseServer, tables: &[&str]) {
    for table in tables {
        server
            .query(&format!("ALTER TABLE connscope.{table} DELETE WHERE 1 = 1"))
            .unwrap();
    }
    for _ in 0..600 {
        let left = server
            .query("SELECT count() FROM system.mutations WHERE is_done = 0")
            .unwrap();
        if left.trim() == "0" {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("mutations did not finish");
}

/// Events, connections in the rollups, and the agent's event count and ranges.
fn counted(store: &dyn Store) -> (usize, u64, u64, Vec<(u64, u64)>) {
    let events = store
        .events(&EventQuery {
            range: TimeRange::ALL,
            host: None,
            limit: usize::MAX,
        })
        .unwrap()
        .len();
    let connections = store
        .edge_totals(&RollupQuery {
            range: TimeRange::ALL,
            host: None,
        })
        .unwrap()
        .iter()
        .map(|t| t.counts.connections)
        .sum();
    let agents = store.agents().unwrap();
    let (stored, ranges) = agents.first().map_or((0, Vec::new()), |a| {
        (a.events, a.sequences.ranges().to_vec())
    });
    (events, connections, stored, ranges)
}

/// A collector that dies part-way through a batch leaves some of its rows;
/// the agent re-sends the batch to another collector, and the store ends
/// with every event once: raw, in the rollups and in the agent's count.
#[test]
fn a_batch_resent_after_a_half_finished_insert_is_stored_once() {
    let backend = clickhouse();
    let agent = AgentId("ws1".into());
    let batch = numbered(1..=500);
    // Died after everything but the markers, and after the raw events only.
    for lost in [
        &["sequence_ranges"][..],
        &[
            "sequence_ranges",
            "spaces",
            "edge_rollups",
            "host_addresses",
        ][..],
    ] {
        let first = backend.store();
        assert_eq!(first.ingest(&agent, &batch).unwrap().stored, 500);
        lose(&backend.server, lost);
        let second = backend.store();
        // Not known as stored, so stored again: over its own rows.
        assert_eq!(second.ingest(&agent, &batch).unwrap().stored, 500);
        assert_eq!(
            counted(&*second),
            (500, 500, 500, vec![(1, 500)]),
            "{lost:?}"
        );
        // Now marked: a third copy is a duplicate.
        let r = second.ingest(&agent, &batch).unwrap();
        assert_eq!((r.stored, r.duplicates), (0, 500));
        lose(
            &backend.server,
            &[
                "events",
                "sequence_ranges",
                "spaces",
                "edge_rollups",
                "host_addresses",
            ],
        );
    }
}

/// Two collectors given the same batches at the same time (an agent that
/// timed out on one and re-sent to the other) store each event once.
#[test]
fn two_collectors_racing_on_the_same_batches_store_them_once() {
    let backend = clickhouse();
    let agent = AgentId("ws1".into());
    let batches: Vec<_> = (0..20u64)
        .map(|b| numbered(b * 100 + 1..=b * 100 + 100))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let store = backend.store();
            let (agent, batches) = (&agent, &batches);
            s.spawn(move || {
                for batch in batches {
                    store.ingest(agent, batch).unwrap();
                }
            });
        }
    });
    assert_eq!(
        counted(&*backend.store()),
        (2000, 2000, 2000, vec![(1, 2000)])
    );
}
