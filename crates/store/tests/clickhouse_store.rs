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

/// Deletes the rows of `table` where `condition` holds behind the store's
/// back, and waits for every mutation to finish.
fn lose_where(server: &ClickHouseServer, table: &str, condition: &str) {
    server
        .query(&format!(
            "ALTER TABLE connscope.{table} DELETE WHERE {condition}"
        ))
        .unwrap();
    settle(server);
}

fn settle(server: &ClickHouseServer) {
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

fn rows_in(server: &ClickHouseServer, table: &str) -> u64 {
    let sql = format!("SELECT count() FROM connscope.{table} FINAL");
    server.query(&sql).unwrap().trim().parse().unwrap()
}

/// The fold takes only batches stored whole: one a collector died on
/// before its markers keeps its own rows, which its retry replaces, and the
/// next fold takes it. Folded batch rows are deleted later; every read
/// counts each event once throughout.
#[test]
fn folding_takes_only_finished_batches_and_a_retry_after_it_counts_once() {
    let backend = clickhouse();
    let store = backend.store();
    let agent = AgentId("ws1".into());
    let (done, half) = (numbered(1..=300), numbered(301..=600));
    store.ingest(&agent, &done).unwrap();
    store.ingest(&agent, &half).unwrap();
    // The second batch's collector died before its markers.
    lose_where(&backend.server, "sequence_ranges", "first_seq > 300");
    lose_where(
        &backend.server,
        "batch_hours",
        "batch_key IN (SELECT batch_key FROM connscope.spaces WHERE first_ts > 1800000300000000000)",
    );
    let all = (600, 600, 600, vec![(1, 600)]);
    let at = |hours: i64| {
        connscope_event::Timestamp::from_nanos(
            (1_800_000_000 + 2 * 86_400 + hours * 3600) * 1_000_000_000,
        )
    };
    let report = store.fold_rollups(at(0)).unwrap();
    assert_eq!(
        (
            report.hours_folded,
            report.batches_folded,
            report.days_built
        ),
        (1, 1, 1)
    );
    assert_eq!(counted(&*store), (600, 600, 600, vec![(1, 300)]));

    // The retry: not known as stored, so stored again over its own rows.
    assert_eq!(store.ingest(&agent, &half).unwrap().stored, 300);
    assert_eq!(counted(&*store), all);
    let report = store.fold_rollups(at(1)).unwrap();
    assert_eq!((report.hours_folded, report.batches_folded), (1, 1));
    assert_eq!(counted(&*store), all);
    // Late enough for both batches' rows to go.
    store.fold_rollups(at(2)).unwrap();
    settle(&backend.server);
    assert_eq!(rows_in(&backend.server, "edge_rollups"), 0);
    assert_eq!(rows_in(&backend.server, "folded_hours"), 1);
    assert_eq!(rows_in(&backend.server, "folded_days"), 1);
    assert_eq!(counted(&*store), all);
    // Both re-sent once more: duplicates, nothing counted twice.
    for batch in [&done, &half] {
        assert_eq!(store.ingest(&agent, batch).unwrap().duplicates, 300);
    }
    let report = store.fold_rollups(at(3)).unwrap();
    assert_eq!(report.hours_folded, 0);
    assert_eq!(counted(&*store), all);
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

/// Callers of one store re-sending the same batches at once put copies in
/// groups that are written while the next is prepared: every event is
/// reported stored to exactly one caller, and a duplicate to the others.
#[test]
fn copies_in_groups_written_one_after_another_are_reported_stored_once() {
    let backend = clickhouse();
    let store = backend.store();
    let agent = AgentId("ws1".into());
    let batches: Vec<_> = (0..30u64)
        .map(|b| numbered(b * 200 + 1..=b * 200 + 200))
        .collect();
    let (stored, duplicates) = std::thread::scope(|s| {
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let (store, agent, batches) = (&store, &agent, &batches);
                s.spawn(move || {
                    batches.iter().fold((0, 0), |(stored, dups), batch| {
                        let r = store.ingest(agent, batch).unwrap();
                        (stored + r.stored, dups + r.duplicates)
                    })
                })
            })
            .collect();
        callers
            .into_iter()
            .map(|c| c.join().unwrap())
            .fold((0, 0), |(s, d), (a, b)| (s + a, d + b))
    });
    assert_eq!((stored, duplicates), (6000, 3 * 6000));
    assert_eq!(counted(&*store), (6000, 6000, 6000, vec![(1, 6000)]));
}

/// A group whose write fails answers its callers with the error; groups
/// prepared meanwhile that took none of its events as stored go on, and
/// once the store takes writes again the re-sent batches are stored once.
#[test]
fn after_failed_writes_the_writer_goes_on_and_resent_batches_count_once() {
    let backend = clickhouse();
    let store = backend.store();
    let agent = AgentId("ws1".into());
    let batches: Vec<_> = (0..10u64)
        .map(|b| numbered(b * 100 + 1..=b * 100 + 100))
        .collect();
    assert_eq!(store.ingest(&agent, &batches[0]).unwrap().stored, 100);
    // The markers' table gone: every write fails at its markers.
    backend
        .server
        .query("RENAME TABLE connscope.sequence_ranges TO connscope.ranges_away")
        .unwrap();
    for batch in &batches[1..] {
        let error = store.ingest(&agent, batch).unwrap_err();
        assert!(error.to_string().contains("sequence_ranges"), "{error}");
    }
    backend
        .server
        .query("RENAME TABLE connscope.ranges_away TO connscope.sequence_ranges")
        .unwrap();
    // Each agent re-sends what was not answered, several at once.
    let stored: u64 = std::thread::scope(|s| {
        let callers: Vec<_> = batches[1..]
            .iter()
            .map(|batch| {
                let (store, agent) = (&store, &agent);
                s.spawn(move || store.ingest(agent, batch).unwrap().stored)
            })
            .collect();
        callers.into_iter().map(|c| c.join().unwrap()).sum()
    });
    assert_eq!(stored, 900);
    assert_eq!(counted(&*store), (1000, 1000, 1000, vec![(1, 1000)]));
}

/// Two servers as two shards, and a `Distributed` table per table on the
/// first (the shards' stores in database `shard`, the fleet's in `fleet`).
struct ShardedBackend {
    first: ClickHouseServer,
    second: ClickHouseServer,
}

impl Backend for ShardedBackend {
    fn store(&self) -> Box<dyn Store> {
        let location = ClickHouseLocation::parse(&self.first.location("fleet")).unwrap();
        Box::new(ClickHouseStore::open(&location).unwrap())
    }
}

fn sharded() -> ShardedBackend {
    let second = ClickHouseServer::start();
    let shard = |port: u16| {
        format!("<shard><replica><host>127.0.0.1</host><port>{port}</port></replica></shard>")
    };
    let first = ClickHouseServer::start_with_clusters(|tcp| {
        format!("<cs>{}{}</cs>", shard(tcp), shard(second.tcp_port))
    });
    for server in [&first, &second] {
        ClickHouseStore::open(&ClickHouseLocation::parse(&server.location("shard")).unwrap())
            .unwrap();
    }
    let fleet = ClickHouseLocation::parse(&first.location("fleet")).unwrap();
    ClickHouseStore::create_distributed(&fleet, "cs", "shard").unwrap();
    ShardedBackend { first, second }
}

/// The suite's tests that hold on a sharded store as they are (retention
/// is a mutation, which a `Distributed` table does not take).
mod on_shards {
    use super::{sharded, suite};
    use crate::store_suite;

    store_suite!(@each sharded;
        resent_batches_are_stored_once_and_gaps_show,
        sequences_are_per_agent,
        unnumbered_events_are_identified_by_key,
        connections_are_the_connect_events_of_the_hosts_asked_for,
        rollups_agree_with_raw_events,
        a_new_instance_is_a_new_sequence_space,
        drops_by_reason_and_the_unexplained_rest,
        groups_are_replaced_in_place_removed_and_labels_set_and_cleared,
        policy_versions_count_up_and_an_identical_push_is_the_latest,
        assignments_keep_their_history_under_one_rising_revision,
        firewall_reports_keep_the_newest_state_and_every_notice_once,
        a_drift_edge_is_recorded_once_and_grows,
    );
}

/// Agents spread over both shards; a batch re-sent through another store
/// (collector) meets its copy on its shard and counts once.
#[test]
fn a_sharded_store_spreads_agents_and_stores_each_event_once() {
    let backend = sharded();
    let (one, other) = (backend.store(), backend.store());
    for a in 0..8 {
        let agent = AgentId(format!("agent-{a}"));
        one.ingest(&agent, &numbered(1..=100)).unwrap();
        let r = other.ingest(&agent, &numbered(51..=150)).unwrap();
        assert_eq!((r.stored, r.duplicates), (50, 50));
    }
    let local = |server: &ClickHouseServer| -> u64 {
        server
            .query("SELECT count() FROM shard.events FINAL")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (first, second) = (local(&backend.first), local(&backend.second));
    assert!(first > 0 && second > 0, "{first} + {second}: not spread");
    assert_eq!(first + second, 8 * 150);
    let agents = one.agents().unwrap();
    assert_eq!(agents.len(), 8);
    assert!(agents
        .iter()
        .all(|a| a.events == 150 && a.sequences.ranges() == [(1, 150)]));
    assert_eq!(counted(&*one).1, 8 * 150);
}
