//! The SQLite backend on real files: exactly-once ingest, gaps, atomic
//! batches, rollups that agree with the raw events, retention.

#[path = "../benches/support/raw_event_table.rs"]
mod raw_event_table;

use std::collections::BTreeMap;
use std::time::Duration;

use connscope_event::test_support::EventBuilder;
use connscope_event::{CloseStats, ConnectionEvent, Direction, EventKind, Timestamp};
use connscope_protocol::drop_reason;
use connscope_store::{
    AgentId, ConnectionQuery, ConnectionRecord, EdgeCounts, EdgeKey, EventKey, EventQuery,
    KeyedEvent, Origin, Retention, RollupBatch, RollupQuery, SqliteStore, Store, StoreError,
    TimeRange,
};
use raw_event_table::RawEventTable;

const SEC: i64 = 1_000_000_000;

fn event(seq: u64, secs: i64, host: &str, local: &str, remote: &str) -> ConnectionEvent {
    EventBuilder::connect(local, remote)
        .at_nanos(1_800_000_000 * SEC + secs * SEC)
        .sequence(seq)
        .host(host)
        .uid(1000)
        .user("joe")
        .process(42, "/usr/bin/ssh")
        .comm("ssh")
        .build()
}

fn numbered(range: std::ops::RangeInclusive<u64>) -> Vec<ConnectionEvent> {
    range
        .map(|n| {
            event(
                n,
                n as i64,
                "ws1",
                &format!("10.0.0.1:{}", 40000 + n),
                "10.0.0.2:22",
            )
        })
        .collect()
}

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    (dir, store)
}

fn all_events(store: &SqliteStore) -> Vec<ConnectionEvent> {
    store
        .events(&EventQuery {
            range: TimeRange::ALL,
            host: None,
            limit: usize::MAX,
        })
        .unwrap()
}

#[test]
fn resent_batches_are_stored_once_and_gaps_show() {
    let (dir, store) = open();
    let agent = AgentId("ws1".into());
    let r = store.ingest(&agent, &numbered(1..=10)).unwrap();
    assert_eq!((r.stored, r.duplicates), (10, 0));
    // A retry overlapping what is stored, plus new numbers after a gap.
    let mut retry = numbered(5..=12);
    retry.extend(numbered(20..=25));
    let r = store.ingest(&agent, &retry).unwrap();
    assert_eq!((r.stored, r.duplicates), (8, 6));
    assert_eq!(all_events(&store).len(), 18);

    let agents = store.agents().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].host, "ws1");
    assert_eq!(agents[0].events, 18);
    assert_eq!(agents[0].sequences.ranges(), &[(1, 12), (20, 25)]);
    assert_eq!(agents[0].sequences.gaps(), vec![(13, 19)]);

    // The gap closes when the missing batch arrives, even in another process
    // (a new connection to the same file).
    drop(store);
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    let r = store.ingest(&agent, &numbered(13..=19)).unwrap();
    assert_eq!((r.stored, r.duplicates), (7, 0));
    assert_eq!(store.agents().unwrap()[0].sequences.ranges(), &[(1, 25)]);
    // Duplicates inside one batch count once.
    let r = store
        .ingest(&agent, &[numbered(26..=26), numbered(26..=26)].concat())
        .unwrap();
    assert_eq!((r.stored, r.duplicates), (1, 1));
}

#[test]
fn sequences_are_per_agent() {
    let (_dir, store) = open();
    store
        .ingest(&AgentId("a".into()), &numbered(1..=3))
        .unwrap();
    let r = store
        .ingest(&AgentId("b".into()), &numbered(1..=3))
        .unwrap();
    assert_eq!(r.stored, 3);
}

#[test]
fn a_batch_with_one_invalid_event_stores_nothing() {
    let (_dir, store) = open();
    let agent = AgentId("ws1".into());
    let mut batch = numbered(1..=5);
    batch[3].close = Some(CloseStats::default()); // a connect with close stats
    let err = store.ingest(&agent, &batch).unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidEvent { index: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("close statistics"), "{err}");
    assert!(all_events(&store).is_empty());
    assert!(store.agents().unwrap().is_empty());
    assert!(store
        .edge_totals(&RollupQuery {
            range: TimeRange::ALL,
            host: None
        })
        .unwrap()
        .is_empty());
    // The same numbers are still free: nothing of the failed batch was recorded.
    assert_eq!(store.ingest(&agent, &numbered(1..=5)).unwrap().stored, 5);
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
fn edge_totals_come_in_text_order_and_see_names_added_later() {
    let (_dir, store) = open();
    let read = |host: Option<&str>| {
        store
            .edge_totals(&RollupQuery {
                range: TimeRange::ALL,
                host: host.map(str::to_owned),
            })
            .unwrap()
    };
    assert!(read(Some("nobody")).is_empty());
    store
        .ingest(
            &AgentId("b".into()),
            &[
                event(1, 1, "b", "10.0.0.2:40000", "10.0.0.9:22"),
                event(2, 2, "b", "10.0.0.2:40001", "10.0.0.10:22"),
            ],
        )
        .unwrap();
    assert_eq!(read(None).len(), 2);
    // New names after the reader cached the first ones.
    store
        .ingest(
            &AgentId("a".into()),
            &[event(1, 3, "a", "10.0.0.1:40000", "10.0.0.2:22")],
        )
        .unwrap();
    let order: Vec<String> = read(None)
        .iter()
        .map(|t| format!("{} {} {}", t.host, t.local_ip, t.remote_ip))
        .collect();
    // As text: "10.0.0.10" sorts before "10.0.0.9".
    assert_eq!(
        order,
        [
            "a 10.0.0.1 10.0.0.2",
            "b 10.0.0.2 10.0.0.10",
            "b 10.0.0.2 10.0.0.9"
        ]
    );
    assert_eq!(read(Some("a")).len(), 1);
}

#[test]
fn hourly_totals_are_the_totals_split_by_hour() {
    let (_dir, store) = open();
    let hour = 3_600;
    // Two connections in the first hour, one two hours later, and a failed
    // attempt in between that counts no connection.
    let mut failed = event(3, hour + 5, "ws1", "10.0.0.1:40002", "10.0.0.2:22");
    failed.kind = EventKind::ConnectFailed;
    failed.failure = Some(connscope_event::ConnectFailure::Refused);
    let batch = [
        event(1, 1, "ws1", "10.0.0.1:40000", "10.0.0.2:22"),
        event(2, 2, "ws1", "10.0.0.1:40001", "10.0.0.2:22"),
        failed,
        event(4, 2 * hour + 7, "ws1", "10.0.0.1:40003", "10.0.0.2:22"),
    ];
    store.ingest(&AgentId("ws1".into()), &batch).unwrap();
    let query = RollupQuery {
        range: TimeRange::ALL,
        host: None,
    };
    let hourly = store.edge_totals_by_hour(&query).unwrap();
    let totals = store.edge_totals(&query).unwrap();
    assert_eq!(hourly.len(), 1);
    assert_eq!(hourly[0].total, totals[0]);
    assert_eq!(hourly[0].total.counts.connections, 3);
    assert_eq!(hourly[0].total.counts.failures, 1);
    let first_hour = batch[0].timestamp.as_nanos() / (hour * SEC) * (hour * SEC);
    let hours: Vec<(i64, u64)> = hourly[0]
        .hours
        .iter()
        .map(|&(t, n)| ((t.as_nanos() - first_hour) / (hour * SEC), n))
        .collect();
    assert_eq!(
        hours,
        [(0, 2), (2, 1)],
        "the failure's hour has no connection"
    );
}

#[test]
fn events_read_back_as_written() {
    let (_dir, store) = open();
    let mut close = event(2, 5, "ws1", "[2001:db8::1]:40000", "[2001:db8::2]:443");
    close.kind = EventKind::Disconnect;
    close.close = Some(CloseStats {
        duration_ns: 5,
        bytes_sent: 100,
        bytes_received: 2000,
        packets_sent: None,
        packets_received: Some(3),
    });
    close.netns = 4026531840;
    close.preexisting = true;
    let mut failed = event(3, 6, "ws1", "10.0.0.1:40001", "10.0.0.9:25");
    failed.kind = EventKind::ConnectFailed;
    failed.failure = Some(connscope_event::ConnectFailure::Refused);
    failed.process = None;
    failed.user_name = None;
    let batch = vec![
        event(1, 1, "ws1", "10.0.0.1:40000", "10.0.0.2:22"),
        close,
        failed,
    ];
    store.ingest(&AgentId("ws1".into()), &batch).unwrap();
    assert_eq!(all_events(&store), batch);
}

/// The benchmarks' peer writes a row per event, with every field.
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
fn unnumbered_events_are_identified_by_key() {
    let (_dir, store) = open();
    let agent = AgentId("import:ws1".into());
    let keyed: Vec<KeyedEvent> = (0..4)
        .map(|n| {
            let event = event(0, n, "ws1", "10.0.0.1:40000", "10.0.0.2:22");
            KeyedEvent {
                key: EventKey::of_bytes(&[format!("line {n}").as_bytes()]),
                key_time: event.timestamp,
                event,
            }
        })
        .collect();
    assert_eq!(store.ingest_keyed(&agent, &keyed).unwrap().stored, 4);
    let r = store.ingest_keyed(&agent, &keyed[1..]).unwrap();
    assert_eq!((r.stored, r.duplicates), (0, 3));
    // Without keys, the content is the identity.
    let plain = vec![event(0, 100, "ws1", "10.0.0.1:1", "10.0.0.2:22")];
    assert_eq!(store.ingest(&agent, &plain).unwrap().stored, 1);
    assert_eq!(store.ingest(&agent, &plain).unwrap().duplicates, 1);
    let agents = store.agents().unwrap();
    assert!(agents[0].sequences.is_empty());
    assert_eq!(agents[0].events, 5);

    // Keys are filed by their key time, not the event's: an event whose time
    // moved (a log line read with another --tz) is still the same event.
    let moved = |hours: i64, n: usize| KeyedEvent {
        event: event(
            0,
            hours * 3600 + n as i64,
            "ws1",
            "10.0.0.1:40000",
            "10.0.0.2:22",
        ),
        ..keyed[n].clone()
    };
    let r = store
        .ingest_keyed(&agent, &[moved(14, 0), moved(-12, 1), moved(26, 2)])
        .unwrap();
    assert_eq!((r.stored, r.duplicates), (0, 3));
    // The same key in another hour is another event.
    let elsewhere = KeyedEvent {
        key_time: Timestamp::from_nanos(keyed[0].key_time.as_nanos() + 3_600 * SEC),
        ..keyed[0].clone()
    };
    assert_eq!(store.ingest_keyed(&agent, &[elsewhere]).unwrap().stored, 1);
    // Equal keys in one batch: the first is new, the rest repeat.
    let fresh = KeyedEvent {
        key: EventKey::of_bytes(&[b"line 9"]),
        ..keyed[0].clone()
    };
    let r = store
        .ingest_keyed(&agent, &[fresh.clone(), fresh.clone(), fresh])
        .unwrap();
    assert_eq!((r.stored, r.duplicates), (1, 2));
}

#[test]
fn dropped_ranges_explain_gaps_and_bad_ones_are_refused() {
    let (_dir, store) = open();
    let agent = AgentId("ws1".into());
    store.ingest(&agent, &numbered(1..=3)).unwrap();
    store.ingest(&agent, &numbered(11..=12)).unwrap();
    // The agent deleted 4-8 from its full spool; 9-10 are simply missing.
    store.record_dropped(&agent, &[(4, 6), (7, 8)]).unwrap();
    store.record_dropped(&agent, &[(5, 8)]).unwrap();
    let err = store
        .record_dropped(&agent, &[(20, 21), (9, 2)])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "sequence range 1 is invalid (nothing stored): 9-2: the first number is above the last"
    );
    assert!(store.record_dropped(&agent, &[(0, 1)]).is_err());
    let agents = store.agents().unwrap();
    let a = &agents[0];
    assert_eq!(
        a.dropped.ranges(),
        &[(4, 8)],
        "nothing of the refused calls"
    );
    let gaps = a.gaps();
    assert_eq!(gaps.ranges, [(4, 10)]);
    assert_eq!((gaps.missing, gaps.dropped), (7, 5));
}

#[test]
fn events_come_oldest_first_across_blocks_and_limits() {
    let (_dir, store) = open();
    // Two agents whose batches overlap in time, in several blocks each.
    for (agent, offset) in [("a", 0), ("b", 1)] {
        for chunk in 0..3u64 {
            let batch: Vec<ConnectionEvent> = (1..=10u64)
                .map(|i| {
                    let n = chunk * 10 + i;
                    event(n, 2 * n as i64 + offset, agent, "10.0.0.1:1", "10.0.0.2:22")
                })
                .collect();
            store.ingest(&AgentId(agent.into()), &batch).unwrap();
        }
    }
    let read = |from: i64, limit: usize, host: Option<&str>| -> Vec<String> {
        store
            .events(&EventQuery {
                range: TimeRange {
                    from: Timestamp::from_nanos(1_800_000_000 * SEC + from * SEC),
                    to: Timestamp::from_nanos(i64::MAX),
                },
                host: host.map(str::to_owned),
                limit,
            })
            .unwrap()
            .iter()
            .map(|e| format!("{}{}", e.host, e.sequence))
            .collect()
    };
    assert_eq!(read(0, 5, None), ["a1", "b1", "a2", "b2", "a3"]);
    assert_eq!(read(41, 4, None), ["b20", "a21", "b21", "a22"]);
    assert_eq!(read(41, 3, Some("b")), ["b20", "b21", "b22"]);
    assert_eq!(read(0, usize::MAX, None).len(), 60);
    assert!(read(0, 0, None).is_empty());
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
fn connections_are_the_connect_events_of_the_hosts_asked_for() {
    let (_dir, store) = open();
    let mut ws1 = numbered(1..=4);
    ws1[1].kind = EventKind::Disconnect;
    ws1[1].close = Some(CloseStats::default());
    store.ingest(&AgentId("ws1".into()), &ws1).unwrap();
    let mut srv = event(1, 3, "srv", "10.0.0.2:22", "10.0.0.1:40003");
    srv.direction = Direction::Incoming;
    store
        .ingest(&AgentId("srv".into()), &[srv.clone()])
        .unwrap();
    store
        .ingest(
            &AgentId("other".into()),
            &[event(1, 3, "other", "10.0.0.9:1", "10.0.0.2:22")],
        )
        .unwrap();

    let at = |secs: i64| Timestamp::from_nanos(1_800_000_000 * SEC + secs * SEC);
    let mut got = Vec::new();
    store
        .connections(
            &ConnectionQuery {
                range: TimeRange {
                    from: at(2),
                    to: at(4),
                },
                hosts: vec!["srv".into(), "ws1".into(), "absent".into()],
            },
            &mut |host, c| got.push((host.to_owned(), *c)),
        )
        .unwrap();
    got.sort_by_key(|(host, _)| host.clone());
    let record = |e: &ConnectionEvent| ConnectionRecord {
        timestamp: e.timestamp,
        direction: e.direction,
        protocol: e.protocol,
        local: e.local,
        remote: e.remote,
    };
    // ws1's 2 is a disconnect, its 1 and 4 are outside the range; "other"
    // was not asked for.
    assert_eq!(
        got,
        [
            ("srv".into(), record(&srv)),
            ("ws1".into(), record(&ws1[2]))
        ]
    );
    assert_eq!(record(&srv).service_port(), 22);
    assert_eq!(record(&ws1[2]).service_port(), 22);
}

/// A mixed workload: several hosts, directions, processes, users, hours,
/// disconnects with bytes, failures, duplicates.
fn workload() -> Vec<(AgentId, Vec<ConnectionEvent>)> {
    let mut out = Vec::new();
    for (h, host) in ["a", "b", "c"].iter().enumerate() {
        let mut events = Vec::new();
        for n in 1..=600u64 {
            let secs = (n as i64) * 37 + h as i64;
            let port = [22, 443, 5432][(n % 3) as usize];
            let mut ev = event(
                n,
                secs,
                host,
                &format!("10.0.0.{}:{}", h + 1, 30000 + n),
                &format!("10.0.1.{}:{port}", n % 4),
            );
            match n % 5 {
                0 => {
                    ev.kind = EventKind::Disconnect;
                    ev.close = Some(CloseStats {
                        duration_ns: 1,
                        bytes_sent: n,
                        bytes_received: 2 * n,
                        ..CloseStats::default()
                    });
                }
                1 => {
                    ev.kind = EventKind::ConnectFailed;
                    ev.failure = Some(connscope_event::ConnectFailure::Timeout);
                }
                2 => {
                    ev.direction = Direction::Incoming;
                    ev.local = format!("10.0.0.{}:{port}", h + 1).parse().unwrap();
                    ev.remote = format!("10.0.1.{}:{}", n % 4, 30000 + n).parse().unwrap();
                }
                _ => {}
            }
            if n % 7 == 0 {
                ev.process = None;
                ev.user_name = None;
            }
            events.push(ev);
        }
        out.push((AgentId(host.to_string()), events));
    }
    out
}

/// host, direction, local, remote, service port, executable, user
type TotalKey = (String, String, String, String, u16, String, String);

#[test]
fn rollups_agree_with_raw_events() {
    let (_dir, store) = open();
    for (agent, events) in workload() {
        for chunk in events.chunks(97) {
            store.ingest(&agent, chunk).unwrap();
        }
        // A full re-send changes nothing.
        assert_eq!(store.ingest(&agent, &events).unwrap().stored, 0);
    }
    // Recompute from the raw events read back, summed over all hours.
    let mut expected: BTreeMap<TotalKey, EdgeCounts> = BTreeMap::new();
    let mut batch = RollupBatch::new();
    for ev in all_events(&store) {
        batch.add(&ev);
    }
    for (key, counts) in batch.rows() {
        let EdgeKey {
            host,
            direction,
            local_ip,
            remote_ip,
            service_port,
            executable,
            user,
            ..
        } = key.clone();
        expected
            .entry((
                host,
                direction.to_string(),
                local_ip.to_string(),
                remote_ip.to_string(),
                service_port,
                executable,
                user,
            ))
            .and_modify(|c| c.merge(counts))
            .or_insert(*counts);
    }
    let stored = store
        .edge_totals(&RollupQuery {
            range: TimeRange::ALL,
            host: None,
        })
        .unwrap();
    assert_eq!(stored.len(), expected.len());
    for t in &stored {
        let key = (
            t.host.clone(),
            t.direction.to_string(),
            t.local_ip.to_string(),
            t.remote_ip.to_string(),
            t.service_port,
            t.executable.clone(),
            t.user.clone(),
        );
        assert_eq!(expected.get(&key), Some(&t.counts), "{key:?}");
    }
    let connections: u64 = stored.iter().map(|t| t.counts.connections).sum();
    assert_eq!(
        connections,
        3 * 600 * 3 / 5,
        "connects and incoming accepts"
    );
    // A host filter and a time range narrow the rollups.
    let only_b = store
        .edge_totals(&RollupQuery {
            range: TimeRange::ALL,
            host: Some("b".into()),
        })
        .unwrap();
    assert!(!only_b.is_empty() && only_b.iter().all(|t| t.host == "b"));
    let first_hour = TimeRange {
        from: Timestamp::from_nanos(1_800_000_000 * SEC),
        to: Timestamp::from_nanos(1_800_000_000 * SEC + 1),
    };
    let early = store
        .edge_totals(&RollupQuery {
            range: first_hour,
            host: None,
        })
        .unwrap();
    assert!(early
        .iter()
        .all(|t| t.counts.first_seen.as_nanos() < 1_800_000_000 * SEC + 3600 * SEC));
    assert!(early.len() < stored.len());
}

#[test]
fn host_addresses_are_the_local_ends_without_loopback() {
    let (_dir, store) = open();
    store
        .ingest(
            &AgentId("a".into()),
            &[
                event(1, 1, "a", "10.0.0.1:40000", "10.0.0.2:22"),
                event(2, 2, "a", "127.0.0.1:40000", "127.0.0.1:22"),
                event(3, 3, "a", "[2001:db8::1]:40000", "[2001:db8::2]:22"),
            ],
        )
        .unwrap();
    let ips: Vec<String> = store
        .host_addresses()
        .unwrap()
        .iter()
        .map(|a| format!("{}={}", a.host, a.ip))
        .collect();
    assert_eq!(ips, ["a=10.0.0.1", "a=2001:db8::1"]);
}

#[test]
fn retention_drops_old_raw_events_but_keeps_rollups_and_dedup() {
    let (_dir, store) = open();
    let agent = AgentId("ws1".into());
    store.ingest(&agent, &numbered(1..=100)).unwrap();
    let before = store
        .edge_totals(&RollupQuery {
            range: TimeRange::ALL,
            host: None,
        })
        .unwrap();
    // Keep the last 50 seconds of raw events (numbers 51..=100).
    let now = Timestamp::from_nanos(1_800_000_000 * SEC + 101 * SEC);
    let report = store
        .apply_retention(
            &Retention {
                raw_events: Duration::from_secs(50),
                rollups: None,
            },
            now,
        )
        .unwrap();
    assert_eq!(report.events_deleted, 50);
    assert_eq!(all_events(&store).len(), 50);
    assert_eq!(
        store
            .edge_totals(&RollupQuery {
                range: TimeRange::ALL,
                host: None
            })
            .unwrap(),
        before
    );
    // A re-sent old batch is still recognised after its raw events are gone.
    assert_eq!(
        store.ingest(&agent, &numbered(1..=10)).unwrap().duplicates,
        10
    );
    assert_eq!(all_events(&store).len(), 50);
    // Rollup retention removes whole hours older than the cutoff.
    let much_later = Timestamp::from_nanos(now.as_nanos() + 3 * 3600 * SEC);
    let report = store
        .apply_retention(
            &Retention {
                raw_events: Duration::from_secs(1),
                rollups: Some(Duration::from_secs(3600)),
            },
            much_later,
        )
        .unwrap();
    assert_eq!(report.events_deleted, 50);
    assert_eq!(report.rollups_deleted, before.len() as u64);
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

fn origin(instance: &str, boot: &str, first_sequence: u64) -> Origin {
    Origin {
        instance: instance.into(),
        boot: boot.into(),
        first_sequence,
    }
}

/// Issue 14.1: an agent state wiped (or a token copied to a second host)
/// numbers from 1 again under a new instance: its events are new, not
/// duplicates, and it shows as a restart with lost state.
#[test]
fn a_new_instance_is_a_new_sequence_space() {
    let (_dir, store) = open();
    let agent = AgentId("ws1".into());
    let first = origin("aaaa", "b1", 1);
    let r = store
        .ingest_from(&agent, &first, &numbered(1..=10))
        .unwrap();
    assert_eq!((r.stored, r.duplicates), (10, 0));
    let wiped = origin("bbbb", "b1", 1);
    let r = store
        .ingest_from(&agent, &wiped, &numbered(1..=10))
        .unwrap();
    assert_eq!((r.stored, r.duplicates), (10, 0), "a new state is no retry");
    // A retry within each instance is still a duplicate.
    let r = store
        .ingest_from(&agent, &wiped, &numbered(5..=12))
        .unwrap();
    assert_eq!((r.stored, r.duplicates), (2, 6));
    assert_eq!(all_events(&store).len(), 22);

    let agents = store.agents().unwrap();
    assert_eq!(agents.len(), 2, "{agents:#?}");
    assert_eq!(
        (agents[0].instance.as_str(), agents[0].lost_state),
        ("aaaa", false)
    );
    assert_eq!(
        (agents[1].instance.as_str(), agents[1].lost_state),
        ("bbbb", true)
    );
    assert_eq!(agents[0].sequences.ranges(), &[(1, 10)]);
    assert_eq!(agents[1].sequences.ranges(), &[(1, 12)]);
    assert_eq!((agents[0].events, agents[1].events), (10, 12));
}

/// A state restored from a snapshot: the same instance, a new run, numbers
/// going backwards. Nothing is skipped as a duplicate; the reuse is counted.
#[test]
fn a_restored_snapshot_reuses_numbers_and_says_so() {
    let (_dir, store) = open();
    let agent = AgentId("ws1".into());
    store
        .ingest_from(&agent, &origin("aaaa", "boot1", 1), &numbered(1..=20))
        .unwrap();
    // The snapshot was taken when the state said 11.
    let restored = origin("aaaa", "boot2", 11);
    let r = store
        .ingest_from(&agent, &restored, &numbered(11..=25))
        .unwrap();
    assert_eq!((r.stored, r.duplicates), (15, 0));
    let r = store
        .ingest_from(&agent, &restored, &numbered(25..=25))
        .unwrap();
    assert_eq!(
        (r.stored, r.duplicates),
        (0, 1),
        "retries of one run still dedup"
    );
    let agents = store.agents().unwrap();
    assert_eq!(agents.len(), 1);
    let a = &agents[0];
    assert_eq!((a.boots, a.reused, a.lost_state), (2, 10, false));
    assert_eq!(a.sequences.ranges(), &[(1, 25)]);
    assert_eq!(a.events, 35);
}

/// Drops carry a reason, per instance; the gap report tells each reason
/// apart from what is unexplained, counting from where the instance started.
#[test]
fn drops_by_reason_and_the_unexplained_rest() {
    let (_dir, store) = open();
    let agent = AgentId("ws1".into());
    // An agent state from before instance ids had reached 100.
    let upgraded = origin("cccc", "b1", 100);
    store
        .ingest_from(&agent, &upgraded, &numbered(100..=102))
        .unwrap();
    store
        .ingest_from(&agent, &upgraded, &numbered(120..=121))
        .unwrap();
    store
        .record_dropped_from(&agent, "cccc", drop_reason::CRASH, &[(103, 110)])
        .unwrap();
    store
        .record_dropped_from(&agent, "cccc", drop_reason::REFUSED, &[(111, 115)])
        .unwrap();
    // Another instance's drops do not explain this one's gaps.
    store
        .record_dropped_from(&agent, "dddd", drop_reason::REFUSED, &[(116, 119)])
        .unwrap();
    let err = store
        .record_dropped_from(&agent, "cccc", "no such\nreason", &[(1, 1)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("reason \"no such\\nreason\""), "{err}");
    let agents = store.agents().unwrap();
    let a = agents.iter().find(|a| a.instance == "cccc").unwrap();
    assert!(!a.lost_state, "an upgraded state continues its numbers");
    let gaps = a.gaps();
    assert_eq!(gaps.ranges, [(103, 119)]);
    assert_eq!((gaps.missing, gaps.dropped, gaps.unexplained), (17, 13, 4));
    assert_eq!(
        gaps.dropped_by_reason,
        [("crash".to_owned(), 8), ("refused".to_owned(), 5)]
    );
}

#[test]
fn bad_origins_are_refused_whole() {
    let (_dir, store) = open();
    let agent = AgentId("ws1".into());
    for bad in [
        origin("a b", "x", 1),
        origin("a", &"x".repeat(65), 1),
        origin("a", "x", 0),
    ] {
        let err = store
            .ingest_from(&agent, &bad, &numbered(1..=2))
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidOrigin(_)), "{err}");
    }
    assert!(all_events(&store).is_empty());
}

/// A store written by version 3 (today's main) opens, migrated: its agents'
/// ranges and drops are the space without an instance, and agents that send
/// an instance id from now on get their own.
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
    assert_eq!(version, "9");
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
        err.contains("schema version 99, this build reads version 3 and later ones up to 9"),
        "{err}"
    );
}

/// 14.5: an agent whose every batch was refused still shows, its refused
/// numbers explained.
#[test]
fn an_agent_with_only_refusals_is_listed() {
    let (_dir, store) = open();
    let agent = AgentId("ws9".into());
    store
        .record_dropped_from(&agent, "eeee", drop_reason::REFUSED, &[(1, 40)])
        .unwrap();
    let agents = store.agents().unwrap();
    assert_eq!(agents.len(), 1, "{agents:#?}");
    assert_eq!((agents[0].agent.0.as_str(), agents[0].events), ("ws9", 0));
    let gaps = agents[0].gaps();
    assert_eq!((gaps.missing, gaps.dropped, gaps.unexplained), (40, 40, 0));
}

/// 14.1: a "duplicate" whose content differs is reported, never a silent skip.
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

/// 14.7: the windows an agent was not running are kept with its state.
#[test]
fn downtime_windows_are_kept() {
    let (_dir, store) = open();
    let agent = AgentId("ws1".into());
    store
        .ingest_from(&agent, &origin("aaaa", "b1", 1), &numbered(1..=3))
        .unwrap();
    let t = |s: i64| Timestamp::from_nanos(1_800_000_000 * SEC + s * SEC);
    store
        .record_downtime(&agent, "aaaa", &[(t(10), t(20))])
        .unwrap();
    store
        .record_downtime(&agent, "aaaa", &[(t(10), t(20)), (t(30), t(31))])
        .unwrap();
    let err = store
        .record_downtime(&agent, "aaaa", &[(t(5), t(4))])
        .unwrap_err();
    assert!(err.to_string().contains("ends before it starts"), "{err}");
    assert_eq!(
        store.agents().unwrap()[0].downtime,
        [(t(10), t(20)), (t(30), t(31))]
    );
}

#[test]
fn groups_are_replaced_in_place_removed_and_labels_set_and_cleared() {
    use connscope_store::{GroupKind, HostGroup, HostLabel};

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("groups.db")).unwrap();
    let group = |name: &str, kind, patterns: &[&str], labels: &[(&str, &str)]| HostGroup {
        name: name.into(),
        kind,
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let a = group("a", GroupKind::Hosts, &["h2", "h1"], &[("role", "db")]);
    let b = group("b", GroupKind::Names, &["ws-*"], &[]);
    store.put_group(&a).unwrap();
    store.put_group(&b).unwrap();
    // Replacing `a` keeps its place (first added) and drops its old rows.
    let a2 = group(
        "a",
        GroupKind::Addresses,
        &["10.0.0.0/8"],
        &[("location", "hq"), ("role", "web")],
    );
    store.put_group(&a2).unwrap();
    assert_eq!(store.groups().unwrap(), [a2.clone(), b.clone()]);
    assert!(store.remove_group("a").unwrap());
    assert!(!store.remove_group("a").unwrap());
    assert_eq!(store.groups().unwrap(), [b]);

    store.set_host_label("h1", "role", Some("db")).unwrap();
    store.set_host_label("h1", "role", Some("web")).unwrap();
    store.set_host_label("h0", "location", Some("hq")).unwrap();
    let label = |host: &str, key: &str, value: &str| HostLabel {
        host: host.into(),
        key: key.into(),
        value: value.into(),
    };
    assert_eq!(
        store.host_labels().unwrap(),
        [label("h0", "location", "hq"), label("h1", "role", "web")]
    );
    store.set_host_label("h0", "location", None).unwrap();
    assert_eq!(store.host_labels().unwrap(), [label("h1", "role", "web")]);
}

#[test]
fn named_events_round_trip_and_names_are_kept_per_hour_and_address() {
    use connscope_event::NameSource;

    let (_dir, store) = open();
    let hostile = [
        "<img src=x onerror=alert(1)>.example",
        "a\"; flush ruleset; \"\u{7}\n.example",
        "bücher.example",
    ];
    let mut events = Vec::new();
    for (i, name) in hostile.iter().enumerate() {
        let mut e = event(
            i as u64 + 1,
            i as i64,
            "ws1",
            "10.0.0.1:40000",
            "203.0.113.7:443",
        );
        e.remote_name = Some(connscope_event::RemoteName {
            name: (*name).into(),
            source: NameSource::Dns,
        });
        events.push(e);
    }
    // The same address and name an hour later, learned from the SNI.
    let mut later = event(4, 3600, "ws1", "10.0.0.1:40001", "203.0.113.7:443");
    later.remote_name = Some(connscope_event::RemoteName {
        name: hostile[0].into(),
        source: NameSource::Sni,
    });
    events.push(later);
    events.push(event(5, 3601, "ws1", "10.0.0.1:40002", "203.0.113.8:443"));
    store.ingest(&AgentId("ws1".into()), &events).unwrap();
    assert_eq!(all_events(&store), events);

    let everything = RollupQuery {
        range: TimeRange::ALL,
        host: None,
    };
    let names = store.remote_names(&everything).unwrap();
    let got: Vec<(i64, &str, &str, NameSource, u64)> = names
        .iter()
        .map(|n| {
            (
                (n.hour.as_nanos() - 1_800_000_000 * SEC) / SEC,
                n.remote_ip.to_string().leak() as &str,
                n.name.as_str(),
                n.source,
                n.connections,
            )
        })
        .collect();
    // Ordered by host, address, name (bytes: '<' before 'a'), source, hour.
    assert_eq!(
        got,
        [
            (0, "203.0.113.7", hostile[0], NameSource::Dns, 1),
            (3600, "203.0.113.7", hostile[0], NameSource::Sni, 1),
            (0, "203.0.113.7", hostile[1], NameSource::Dns, 1),
            (0, "203.0.113.7", hostile[2], NameSource::Dns, 1),
        ]
    );
    // A name beyond 253 bytes is refused with the batch.
    let mut long = event(6, 5, "ws1", "10.0.0.1:40003", "203.0.113.9:443");
    long.remote_name = Some(connscope_event::RemoteName {
        name: "x".repeat(300),
        source: NameSource::Sni,
    });
    let err = store
        .ingest(&AgentId("ws1".into()), &[long])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "event 0 of the batch is invalid (nothing stored): the remote name is 300 bytes long; at most 253 are kept"
    );
    // Names go with their rollups.
    store
        .apply_retention(
            &Retention {
                raw_events: Duration::from_secs(1),
                rollups: Some(Duration::from_secs(3600)),
            },
            Timestamp::from_nanos(1_800_000_000 * SEC + 3 * 3600 * SEC),
        )
        .unwrap();
    assert!(store.remote_names(&everything).unwrap().is_empty());
}
