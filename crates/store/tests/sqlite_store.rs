//! The SQLite backend on real files: the store suite (see `suite`), and
//! what only SQLite has: atomic batches, files, versions, blocks.

#[path = "../benches/support/raw_event_table.rs"]
mod raw_event_table;
mod suite;

use connscope_event::{CloseStats, EventKind};
use connscope_store::{
    AgentId, ConnectionQuery, EventQuery, RollupQuery, SqliteStore, Store, StoreError, TimeRange,
};
use raw_event_table::RawEventTable;
use suite::{all_events, numbered, origin, SEC};

/// A SQLite store in a directory of its own.
struct SqliteBackend {
    dir: tempfile::TempDir,
}

impl suite::Backend for SqliteBackend {
    fn store(&self) -> Box<dyn Store> {
        Box::new(SqliteStore::open(self.dir.path().join("store.db")).unwrap())
    }
}

fn sqlite() -> SqliteBackend {
    SqliteBackend {
        dir: tempfile::tempdir().unwrap(),
    }
}

store_suite!(sqlite);

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    (dir, store)
}

#[test]
fn a_failing_write_rolls_the_whole_batch_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    // Sabotage the rollup table from outside, so the batch fails after its
    // events were inserted inside the transaction.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON edge_rollups BEGIN SELECT RAISE(ABORT, 'full'); END",
    )
    .unwrap();
    let err = store
        .ingest(&AgentId("ws1".into()), &numbered(1..=5))
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    conn.execute_batch("DROP TRIGGER refuse").unwrap();
    assert!(all_events(&store).is_empty());
    assert!(store.agents().unwrap().is_empty());
    assert_eq!(
        store
            .ingest(&AgentId("ws1".into()), &numbered(1..=5))
            .unwrap()
            .stored,
        5
    );
    // The names the failed batch gave ids to were rolled back with it; the
    // rollups of the batch that succeeded still read back by name.
    let totals = store
        .edge_totals(&RollupQuery {
            range: TimeRange::ALL,
            host: Some("ws1".into()),
        })
        .unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0].counts.connections, 5);
    assert_eq!(totals[0].executable, "/usr/bin/ssh");
}

#[test]
fn the_raw_event_table_writes_a_row_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = numbered(1..=3);
    events[1].kind = EventKind::Disconnect;
    events[1].close = Some(CloseStats {
        duration_ns: 5,
        bytes_sent: 6,
        bytes_received: 7,
        packets_sent: Some(8),
        packets_received: None,
    });
    events[2].process = None;
    let mut raw = RawEventTable::open(dir.path().join("raw.db")).unwrap();
    raw.insert(1, &events).unwrap();
    drop(raw);
    let conn = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    let rows: Vec<(i64, String, Option<String>, Option<i64>)> = conn
        .prepare("SELECT sequence, kind, executable, bytes_received FROM events ORDER BY sequence")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        [
            (1, "connect".into(), Some("/usr/bin/ssh".into()), None),
            (2, "disconnect".into(), Some("/usr/bin/ssh".into()), Some(7)),
            (3, "connect".into(), None, None),
        ]
    );
}

#[test]
fn a_store_of_another_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
         INSERT INTO meta VALUES ('schema_version', '2');",
    )
    .unwrap();
    let err = SqliteStore::open(&path)
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains("old.db") && err.contains("schema version 2, this build reads version 3"),
        "{err}"
    );
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        tables, 2,
        "the meta table and its index only: nothing was added"
    );
}

#[test]
fn a_damaged_block_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    store
        .ingest(&AgentId("ws1".into()), &numbered(1..=3))
        .unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE event_blocks SET data = substr(data, 1, 20)", [])
        .unwrap();
    let err = store
        .events(&EventQuery {
            range: TimeRange::ALL,
            host: None,
            limit: 10,
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("block 1: damaged event block at byte"),
        "{err}"
    );
    let err = store
        .connections(
            &ConnectionQuery {
                range: TimeRange::ALL,
                hosts: vec!["ws1".into()],
            },
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("block 1: damaged event block at byte"),
        "{err}"
    );
}

#[test]
fn store_and_trait_object_are_shareable() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn Store>();
    assert_send_sync::<SqliteStore>();
}

#[test]
fn a_foreign_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-db");
    std::fs::write(
        &path,
        b"this is not SQLite, just some text that is long enough to have a header",
    )
    .unwrap();
    let err = SqliteStore::open(&path)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("not-a-db"), "{err}");
}

/// Issue 14.1: an agent state wiped (or a token copied to a second host)
/// numbers from 1 again under a new instance: its events are new, not
/// duplicates, and it shows as a restart with lost state.
#[test]
fn a_version_3_store_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("fixtures/schema_v3.sql"))
            .unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO meta VALUES ('schema_version', '3');
             INSERT INTO agents VALUES (7, 'ws1', 'ws1', 9, {t}, {t});
             INSERT INTO agent_sequences VALUES (7, 1, 5), (7, 10, 13);
             INSERT INTO agent_dropped VALUES (7, 6, 7);",
            t = 1_800_000_000 * SEC
        ))
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let agent = AgentId("ws1".into());
    let agents = store.agents().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!((agents[0].instance.as_str(), agents[0].events), ("", 9));
    assert_eq!(agents[0].sequences.ranges(), &[(1, 5), (10, 13)]);
    let gaps = agents[0].gaps();
    assert_eq!(gaps.dropped_by_reason, [("spool-full".to_owned(), 2)]);
    assert_eq!(gaps.unexplained, 2);
    // The old agent goes on; a retry of what v3 stored is a duplicate.
    let r = store.ingest(&agent, &numbered(12..=14)).unwrap();
    assert_eq!((r.stored, r.duplicates), (1, 2));
    drop(store);
    // Reopening does not migrate again.
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.agents().unwrap()[0].sequences.ranges(),
        &[(1, 5), (10, 14)]
    );
    let version: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT value FROM meta WHERE name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, "12");
}

#[test]
fn a_newer_store_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v99.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema_version', '99');",
        )
        .unwrap();
    let err = SqliteStore::open(&path).err().unwrap().to_string();
    assert!(
        err.contains("schema version 99, this build reads version 3 and later ones up to 12"),
        "{err}"
    );
}

/// 14.5: an agent whose every batch was refused still shows, its refused
/// numbers explained.
#[test]
fn a_repeat_with_other_content_is_a_conflict() {
    let (_dir, store) = open();
    let agent = AgentId("ws1".into());
    let run = origin("aaaa", "b1", 1);
    store.ingest_from(&agent, &run, &numbered(1..=10)).unwrap();
    // A true retry: no conflict.
    let r = store.ingest_from(&agent, &run, &numbered(3..=5)).unwrap();
    assert_eq!((r.stored, r.duplicates, r.conflicts), (0, 3, 0));
    // Numbers 4 and 5 again, for other connections.
    let mut other = numbered(4..=5);
    for event in &mut other {
        event.remote = "10.0.0.3:443".parse().unwrap();
    }
    let r = store.ingest_from(&agent, &run, &other).unwrap();
    assert_eq!((r.stored, r.duplicates, r.conflicts), (0, 2, 2));
    // Within one batch too.
    let mut twice = numbered(11..=11);
    twice.extend(
        other
            .iter()
            .cloned()
            .map(|mut e| {
                e.sequence = 11;
                e
            })
            .take(1),
    );
    let r = store.ingest_from(&agent, &run, &twice).unwrap();
    assert_eq!((r.stored, r.duplicates, r.conflicts), (1, 1, 1));
    assert_eq!(store.agents().unwrap()[0].conflicts, 3);
    // Another instance's equal numbers are no conflict: they are stored.
    let r = store
        .ingest_from(&agent, &origin("bbbb", "b1", 1), &other)
        .unwrap();
    assert_eq!((r.stored, r.conflicts), (2, 0));
}
