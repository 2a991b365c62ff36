//! The store suite: what every backend must do alike (exactly-once ingest,
//! gaps and drops, rollups that agree with the raw events, retention,
//! groups), written once against the `Store` trait and run by each
//! backend's test file on its own store (`store_suite!`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use connscope_event::test_support::EventBuilder;
use connscope_event::{CloseStats, ConnectionEvent, Direction, EventKind, Timestamp};
use connscope_protocol::drop_reason;
use connscope_store::{
    AgentId, ConnectionQuery, ConnectionRecord, EdgeCounts, EdgeKey, EdgeTotal, EventKey,
    EventQuery, FirewallHitQuery, FirewallHitTotal, HourlyEdgeTotal, KeyedEvent, Origin, Retention,
    RollupBatch, RollupQuery, RuleCount, RuleHits, Store, StoreError, TimeRange,
};

/// A backend under test: opens its one store, again and again (a reopen
/// is another process's view of the same data).
pub trait Backend {
    fn store(&self) -> Box<dyn Store>;
}

/// `#[test]` functions that run each suite test on the store of `$backend()`.
#[macro_export]
macro_rules! store_suite {
    ($backend:path) => {
        $crate::store_suite!(@each $backend;
            resent_batches_are_stored_once_and_gaps_show,
            sequences_are_per_agent,
            a_batch_with_one_invalid_event_stores_nothing,
            edge_totals_come_in_text_order_and_see_names_added_later,
            hourly_totals_are_the_totals_split_by_hour,
            events_read_back_as_written,
            unnumbered_events_are_identified_by_key,
            dropped_ranges_explain_gaps_and_bad_ones_are_refused,
            events_come_oldest_first_across_blocks_and_limits,
            connections_are_the_connect_events_of_the_hosts_asked_for,
            rollups_agree_with_raw_events,
            host_addresses_are_the_local_ends_without_loopback,
            retention_drops_old_raw_events_but_keeps_rollups_and_dedup,
            a_new_instance_is_a_new_sequence_space,
            a_restored_snapshot_reuses_numbers_and_says_so,
            drops_by_reason_and_the_unexplained_rest,
            bad_origins_are_refused_whole,
            an_agent_with_only_refusals_is_listed,
            downtime_windows_are_kept,
            groups_are_replaced_in_place_removed_and_labels_set_and_cleared,
            tokens_are_kept_as_digests_redeemed_once_and_revoked,
            remote_names_are_per_hour_host_address_and_name,
            rule_counters_become_packets_and_last_hits_per_rule,
            policy_versions_count_up_and_an_identical_push_is_the_latest,
            assignments_keep_their_history_under_one_rising_revision,
            firewall_reports_keep_the_newest_state_and_every_notice_once,
            a_drift_edge_is_recorded_once_and_grows,
            retention_ages_the_policy_loop_but_keeps_its_audit_trail,
            firewall_hits_are_summed_per_host_kind_port_remote_program_and_user,
            folding_closed_hours_changes_no_answer_and_resent_batches_stay_once,
        );
    };
    (@each $backend:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let backend = $backend();
                suite::$name(&backend);
            }
        )*
    };
}

pub const SEC: i64 = 1_000_000_000;

pub fn event(seq: u64, secs: i64, host: &str, local: &str, remote: &str) -> ConnectionEvent {
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

pub fn numbered(range: std::ops::RangeInclusive<u64>) -> Vec<ConnectionEvent> {
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

pub fn all_events(store: &dyn Store) -> Vec<ConnectionEvent> {
    store
        .events(&EventQuery {
            range: TimeRange::ALL,
            host: None,
            limit: usize::MAX,
        })
        .unwrap()
}

pub fn origin(instance: &str, boot: &str, first_sequence: u64) -> Origin {
    Origin {
        instance: instance.into(),
        boot: boot.into(),
        first_sequence,
    }
}

pub fn resent_batches_are_stored_once_and_gaps_show(backend: &dyn Backend) {
    let store = backend.store();
    let agent = AgentId("ws1".into());
    let r = store.ingest(&agent, &numbered(1..=10)).unwrap();
    assert_eq!((r.stored, r.duplicates), (10, 0));
    // A retry overlapping what is stored, plus new numbers after a gap.
    let mut retry = numbered(5..=12);
    retry.extend(numbered(20..=25));
    let r = store.ingest(&agent, &retry).unwrap();
    assert_eq!((r.stored, r.duplicates), (8, 6));
    assert_eq!(all_events(&*store).len(), 18);

    let agents = store.agents().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].host, "ws1");
    assert_eq!(agents[0].events, 18);
    assert_eq!(agents[0].sequences.ranges(), &[(1, 12), (20, 25)]);
    assert_eq!(agents[0].sequences.gaps(), vec![(13, 19)]);

    // The gap closes when the missing batch arrives, even in another process
    // (a new connection to the same file).
    drop(store);
    let store = backend.store();
    let r = store.ingest(&agent, &numbered(13..=19)).unwrap();
    assert_eq!((r.stored, r.duplicates), (7, 0));
    assert_eq!(store.agents().unwrap()[0].sequences.ranges(), &[(1, 25)]);
    // Duplicates inside one batch count once.
    let r = store
        .ingest(&agent, &[numbered(26..=26), numbered(26..=26)].concat())
        .unwrap();
    assert_eq!((r.stored, r.duplicates), (1, 1));
}

pub fn sequences_are_per_agent(backend: &dyn Backend) {
    let store = backend.store();
    store
        .ingest(&AgentId("a".into()), &numbered(1..=3))
        .unwrap();
    let r = store
        .ingest(&AgentId("b".into()), &numbered(1..=3))
        .unwrap();
    assert_eq!(r.stored, 3);
}

pub fn a_batch_with_one_invalid_event_stores_nothing(backend: &dyn Backend) {
    let store = backend.store();
    let agent = AgentId("ws1".into());
    let mut batch = numbered(1..=5);
    batch[3].close = Some(CloseStats::default()); // a connect with close stats
    let err = store.ingest(&agent, &batch).unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidEvent { index: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("close statistics"), "{err}");
    assert!(all_events(&*store).is_empty());
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

pub fn edge_totals_come_in_text_order_and_see_names_added_later(backend: &dyn Backend) {
    let store = backend.store();
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

pub fn hourly_totals_are_the_totals_split_by_hour(backend: &dyn Backend) {
    let store = backend.store();
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

pub fn events_read_back_as_written(backend: &dyn Backend) {
    let store = backend.store();
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
    assert_eq!(all_events(&*store), batch);
}

/// The benchmarks' peer writes a row per event, with every field.
pub fn unnumbered_events_are_identified_by_key(backend: &dyn Backend) {
    let store = backend.store();
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

pub fn dropped_ranges_explain_gaps_and_bad_ones_are_refused(backend: &dyn Backend) {
    let store = backend.store();
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

pub fn events_come_oldest_first_across_blocks_and_limits(backend: &dyn Backend) {
    let store = backend.store();
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

pub fn connections_are_the_connect_events_of_the_hosts_asked_for(backend: &dyn Backend) {
    let store = backend.store();
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

pub fn rollups_agree_with_raw_events(backend: &dyn Backend) {
    let store = backend.store();
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
    for ev in all_events(&*store) {
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

pub fn host_addresses_are_the_local_ends_without_loopback(backend: &dyn Backend) {
    let store = backend.store();
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

pub fn retention_drops_old_raw_events_but_keeps_rollups_and_dedup(backend: &dyn Backend) {
    let store = backend.store();
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
    assert_eq!(all_events(&*store).len(), 50);
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
    assert_eq!(all_events(&*store).len(), 50);
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

pub fn a_new_instance_is_a_new_sequence_space(backend: &dyn Backend) {
    let store = backend.store();
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
    assert_eq!(all_events(&*store).len(), 22);

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
pub fn a_restored_snapshot_reuses_numbers_and_says_so(backend: &dyn Backend) {
    let store = backend.store();
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
pub fn drops_by_reason_and_the_unexplained_rest(backend: &dyn Backend) {
    let store = backend.store();
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

pub fn bad_origins_are_refused_whole(backend: &dyn Backend) {
    let store = backend.store();
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
    assert!(all_events(&*store).is_empty());
}

/// A store written by version 3 (today's main) opens, migrated: its agents'
/// ranges and drops are the space without an instance, and agents that send
/// an instance id from now on get their own.
pub fn an_agent_with_only_refusals_is_listed(backend: &dyn Backend) {
    let store = backend.store();
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
/// 14.7: the windows an agent was not running are kept with its state.
pub fn downtime_windows_are_kept(backend: &dyn Backend) {
    let store = backend.store();
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

pub fn groups_are_replaced_in_place_removed_and_labels_set_and_cleared(backend: &dyn Backend) {
    use connscope_store::{GroupKind, HostGroup, HostLabel};

    let store = backend.store();
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

pub fn tokens_are_kept_as_digests_redeemed_once_and_revoked(backend: &dyn Backend) {
    use connscope_store::{TokenKind, TokenRecord, TokenRefusal};
    let store = backend.store();
    let at =
        |secs: i64| Timestamp::from_nanos(1_800_000_000 * 1_000_000_000 + secs * 1_000_000_000);
    let enrollment = TokenRecord {
        id: "e1".into(),
        kind: TokenKind::Enrollment,
        digest: [1; 32],
        agent: "ws1".into(),
        created: at(0),
        expires: Some(at(100)),
        reusable: false,
        uses: 0,
        last_used: None,
        revoked: None,
    };
    store.add_token(&enrollment).unwrap();
    assert!(store.add_token(&enrollment).is_err(), "an id is kept once");
    let old = TokenRecord {
        id: "a0".into(),
        kind: TokenKind::Agent,
        digest: [7; 32],
        expires: None,
        ..enrollment.clone()
    };
    store.add_token(&old).unwrap();
    let fresh = TokenRecord {
        id: "a1".into(),
        digest: [2; 32],
        agent: "ignored".into(),
        ..old.clone()
    };
    let stored = store
        .redeem_enrollment(&[1; 32], &fresh, at(10))
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.kind, stored.agent.as_str()),
        (TokenKind::Agent, "ws1")
    );
    let again = TokenRecord {
        id: "a2".into(),
        digest: [3; 32],
        ..fresh.clone()
    };
    assert_eq!(
        store.redeem_enrollment(&[1; 32], &again, at(11)).unwrap(),
        Err(TokenRefusal::Used)
    );
    assert_eq!(
        store.redeem_enrollment(&[9; 32], &again, at(11)).unwrap(),
        Err(TokenRefusal::Unknown)
    );

    let store = backend.store();
    assert_eq!(
        store
            .token_by_digest(&[7; 32])
            .unwrap()
            .unwrap()
            .valid_at(at(12)),
        Err(TokenRefusal::Revoked),
        "the host's earlier token is revoked by its new one"
    );
    store.touch_token(&[2; 32], at(20)).unwrap();
    store.touch_token(&[2; 32], at(15)).unwrap();
    let ws1 = store.token_by_digest(&[2; 32]).unwrap().unwrap();
    assert_eq!(
        (ws1.last_used, ws1.valid_at(at(1000))),
        (Some(at(20)), Ok(()))
    );
    assert!(store.revoke_token("a1", at(30)).unwrap());
    assert!(store.revoke_token("a1", at(40)).unwrap());
    assert!(!store.revoke_token("nope", at(30)).unwrap());
    assert_eq!(
        store.token_by_digest(&[2; 32]).unwrap().unwrap().revoked,
        Some(at(30))
    );
    let used = store.token_by_digest(&[1; 32]).unwrap().unwrap();
    assert_eq!(
        (used.uses, used.valid_at(at(200))),
        (1, Err(TokenRefusal::Expired))
    );
    let ids: Vec<String> = store.tokens().unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(ids.len(), 3);
    store.probe_write(at(50)).unwrap();
}

pub fn remote_names_are_per_hour_host_address_and_name(backend: &dyn Backend) {
    let store = backend.store();
    let named = |seq: u64, secs: i64, name: &str| {
        let mut e = event(seq, secs, "ws1", "10.0.0.1:40000", "192.0.2.9:443");
        e.remote_name = Some(connscope_event::RemoteName {
            name: name.into(),
            source: connscope_event::NameSource::Dns,
        });
        e
    };
    let events = vec![
        named(1, 0, "<b>www</b>.example.org"),
        named(2, 10, "<b>www</b>.example.org"),
        named(3, 3_700, "<b>www</b>.example.org"),
        event(4, 20, "ws1", "10.0.0.1:40001", "192.0.2.10:443"),
    ];
    store.ingest(&AgentId("ws1".into()), &events).unwrap();
    let names = store
        .remote_names(&RollupQuery {
            range: TimeRange::ALL,
            host: Some("ws1".into()),
        })
        .unwrap();
    let got: Vec<(String, String, u64)> = names
        .iter()
        .map(|n| (n.remote_ip.to_string(), n.name.clone(), n.connections))
        .collect();
    assert_eq!(
        got,
        [
            (
                "192.0.2.9".to_owned(),
                "<b>www</b>.example.org".to_owned(),
                2
            ),
            (
                "192.0.2.9".to_owned(),
                "<b>www</b>.example.org".to_owned(),
                1
            ),
        ]
    );
    assert!(names[0].hour < names[1].hour);
    assert!(store
        .remote_names(&RollupQuery {
            range: TimeRange::ALL,
            host: Some("ws2".into())
        })
        .unwrap()
        .is_empty());
}

/// Readings of two hosts running one policy (since load, restarting at each
/// load): packets add up over loads and hosts, the last hit is the last
/// reading that went up, a late reading changes nothing, and versions and
/// policies stay apart.
pub fn rule_counters_become_packets_and_last_hits_per_rule(backend: &dyn Backend) {
    let store = backend.store();
    let at = |secs: i64| Timestamp::from_nanos(1_795_000_000_000_000_000 + secs * SEC);
    let counts = |inbound: u64, outbound: u64| {
        vec![
            RuleCount {
                rule: "inbound[0]".into(),
                packets: inbound,
                bytes: inbound * 60,
            },
            RuleCount {
                rule: "outbound[0]".into(),
                packets: outbound,
                bytes: outbound * 60,
            },
        ]
    };
    let record = |host: &str, version: u32, revision: u64, secs: i64, counters: Vec<RuleCount>| {
        store
            .record_rule_counters(host, "ws", version, revision, at(secs), &counters)
            .unwrap()
    };
    record("ws1", 1, 1, 0, counts(0, 3));
    record("ws1", 1, 1, 60, counts(0, 3));
    record("ws1", 1, 1, 120, counts(0, 7));
    // Reloaded (tamper restore): counts from zero again.
    record("ws1", 1, 1, 180, counts(0, 2));
    // A reading from before the last one, come late: ignored.
    record("ws1", 1, 1, 150, counts(50, 50));
    record("ws2", 1, 1, 30, counts(0, 1));
    record("ws2", 1, 1, 90, counts(0, 1));
    record("ws1", 2, 2, 240, counts(4, 0));
    store
        .record_rule_counters("db1", "servers", 1, 1, at(0), &counts(9, 9))
        .unwrap();

    let hits = store.rule_hits("ws", Some(1)).unwrap();
    let expected = |rule: &str, hosts, packets, last_hit: Option<i64>| RuleHits {
        policy: "ws".into(),
        version: 1,
        rule: rule.into(),
        hosts,
        packets,
        bytes: packets * 60,
        first_reported: at(0),
        last_reported: at(180),
        last_hit: last_hit.map(at),
    };
    assert_eq!(
        hits,
        [
            expected("inbound[0]", 2, 0, None),
            expected("outbound[0]", 2, 3 + 4 + 2 + 1, Some(180)),
        ]
    );
    let all = backend.store().rule_hits("ws", None).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[2].version, 2);
    assert_eq!(
        (all[2].rule.as_str(), all[2].packets, all[2].last_hit),
        ("inbound[0]", 4, Some(at(240)))
    );
    assert!(store.rule_hits("nobody", None).unwrap().is_empty());
    assert_eq!(store.rule_hits("servers", None).unwrap().len(), 2);
}

pub fn policy_versions_count_up_and_an_identical_push_is_the_latest(backend: &dyn Backend) {
    let store = backend.store();
    let at = |s: i64| Timestamp::from_nanos(1_800_000_000 * SEC + s * SEC);
    assert!(store.policy_versions("ws").unwrap().is_empty());
    let v1 = store
        .put_policy("ws", "format = 1\n", "ann", "first", at(1))
        .unwrap();
    assert_eq!((v1.version, v1.author.as_str()), (1, "ann"));
    let again = store
        .put_policy("ws", "format = 1\n", "bob", "same", at(2))
        .unwrap();
    assert_eq!(again, v1, "an identical document is the latest version");
    let v2 = store
        .put_policy("ws", "format = 1\n# more\n", "bob", "", at(3))
        .unwrap();
    assert_eq!(v2.version, 2);
    store
        .put_policy("db", "format = 1\n", "ann", "", at(4))
        .unwrap();
    // Back to the first text is a new version, not version 1 again.
    let v3 = store
        .put_policy("ws", "format = 1\n", "ann", "undo", at(5))
        .unwrap();
    assert_eq!(v3.version, 3);
    let versions = backend.store().policy_versions("ws").unwrap();
    assert_eq!(versions, [v1.clone(), v2.clone(), v3]);
    assert_eq!(store.policy_version("ws", 2).unwrap(), Some(v2));
    assert_eq!(store.policy_version("ws", 9).unwrap(), None);
    assert_eq!(store.policy_versions("db").unwrap().len(), 1);
}

pub fn assignments_keep_their_history_under_one_rising_revision(backend: &dyn Backend) {
    use connscope_protocol::policy::{DirectionStage, StageMode, StagedPort, Staging};
    use connscope_store::{AssignedVersion, AssignmentChange, AssignmentTarget};

    let store = backend.store();
    assert_eq!(store.assignment_revision().unwrap(), 0);
    let group = AssignmentTarget::Group("workstations".into());
    let host = AssignmentTarget::Host("ws-01".into());
    let change =
        |target: &AssignmentTarget, assigned: Option<(u32, Staging)>, s: i64| AssignmentChange {
            target: target.clone(),
            assigned: assigned.map(|(version, staging)| AssignedVersion {
                policy: "ws".into(),
                version,
                staging,
            }),
            at: Timestamp::from_nanos(1_800_000_000 * SEC + s * SEC),
            by: "ann".into(),
        };
    let ssh_enforced = Staging {
        inbound: DirectionStage::default(),
        outbound: DirectionStage {
            mode: StageMode::Audit,
            except_ports: vec![StagedPort {
                protocol: connscope_event::Protocol::Tcp,
                port: 22,
            }],
        },
    };
    let first = store
        .assign_policy(&change(&group, Some((1, Staging::default())), 1))
        .unwrap();
    let second = store
        .assign_policy(&change(&group, Some((2, ssh_enforced.clone())), 2))
        .unwrap();
    let pinned = store
        .assign_policy(&change(&host, Some((1, Staging::default())), 3))
        .unwrap();
    let withdrawn = store.assign_policy(&change(&host, None, 4)).unwrap();
    assert!(first.revision < second.revision);
    assert!(second.revision < pinned.revision && pinned.revision < withdrawn.revision);
    let reopened = backend.store();
    assert_eq!(reopened.assignment_revision().unwrap(), withdrawn.revision);
    assert_eq!(
        reopened.assignment_history(&group).unwrap(),
        [first, second.clone()]
    );
    assert_eq!(
        reopened.assignment_history(&host).unwrap(),
        [pinned, withdrawn]
    );
    // The current ones: the group's latest; the host's was withdrawn.
    assert_eq!(reopened.policy_assignments().unwrap(), [second]);
    assert!(reopened
        .assignment_history(&AssignmentTarget::Host("workstations".into()))
        .unwrap()
        .is_empty());
}

pub fn firewall_reports_keep_the_newest_state_and_every_notice_once(backend: &dyn Backend) {
    use connscope_protocol::policy::{FirewallNotice, FirewallState, Staging};

    let store = backend.store();
    let at = |s: i64| Timestamp::from_nanos(1_800_000_000 * SEC + s * SEC);
    let notice = |kind: &str, s: &str| FirewallNotice {
        at: s.into(),
        kind: kind.into(),
        detail: format!("{kind} detail"),
    };
    let loaded = FirewallState::Loaded {
        name: "ws".into(),
        version: 2,
        revision: 5,
        staging: Staging::default(),
    };
    let tampered = notice("tampered", "2027-01-15T08:00:01Z");
    let loaded_notice = notice("loaded", "2027-01-15T08:00:00Z");
    store
        .put_firewall_report(
            "ws-01",
            &loaded,
            at(10),
            &[loaded_notice.clone(), tampered.clone()],
        )
        .unwrap();
    // Re-sent (the answer was lost): nothing doubles.
    store
        .put_firewall_report("ws-01", &loaded, at(10), std::slice::from_ref(&tampered))
        .unwrap();
    store
        .put_firewall_report("ws-02", &FirewallState::BrokenGlass, at(11), &[])
        .unwrap();
    let failed = FirewallState::Failed {
        reason: "nft: syntax error".into(),
    };
    store
        .put_firewall_report("ws-01", &failed, at(12), &[])
        .unwrap();
    let reopened = backend.store();
    let states: Vec<_> = reopened
        .firewall_states()
        .unwrap()
        .into_iter()
        .map(|s| (s.host, s.state, s.reported_at))
        .collect();
    assert_eq!(
        states,
        [
            ("ws-01".to_string(), failed, at(12)),
            ("ws-02".to_string(), FirewallState::BrokenGlass, at(11)),
        ]
    );
    let notices: Vec<_> = reopened
        .firewall_notices(Some("ws-01"))
        .unwrap()
        .into_iter()
        .map(|n| n.notice)
        .collect();
    assert_eq!(notices, [loaded_notice, tampered]);
    assert!(reopened.firewall_notices(Some("ws-02")).unwrap().is_empty());
    assert_eq!(reopened.firewall_notices(None).unwrap().len(), 2);
}

pub fn a_drift_edge_is_recorded_once_and_grows(backend: &dyn Backend) {
    use connscope_event::Protocol;
    use connscope_protocol::policy::StageMode;
    use connscope_store::{DriftRecord, TimeRange};

    let store = backend.store();
    let at = |s: i64| Timestamp::from_nanos(1_800_000_000 * SEC + s * SEC);
    let sighting = |remote: &str, first: i64, last: i64, n: u64, exe: &str| DriftRecord {
        host: "srv".into(),
        direction: Direction::Incoming,
        protocol: Protocol::Tcp,
        port: 8080,
        remote: remote.parse().unwrap(),
        local: "10.0.0.5".parse().unwrap(),
        remote_name: None,
        executable: Some(exe.into()),
        user: Some("www-data".into()),
        policy: "servers".into(),
        version: 2,
        mode: StageMode::Audit,
        first_seen: at(first),
        last_seen: at(last),
        connections: n,
    };
    let first = sighting("10.0.0.7", 10, 12, 3, "/usr/bin/python3");
    assert!(store.record_drift(&first).unwrap(), "a new edge is new");
    // Seen again, by another process and from another collector: the same edge.
    assert!(!backend
        .store()
        .record_drift(&sighting("10.0.0.7", 20, 25, 2, "/usr/bin/other"))
        .unwrap());
    let other = sighting("10.0.0.8", 30, 30, 1, "/usr/bin/python3");
    assert!(store.record_drift(&other).unwrap());
    let all = store.drift(TimeRange::ALL).unwrap();
    let grown = DriftRecord {
        last_seen: at(25),
        connections: 5,
        ..first
    };
    assert_eq!(all, [grown.clone(), other.clone()]);
    let late = TimeRange {
        from: at(26),
        to: at(100),
    };
    assert_eq!(store.drift(late).unwrap(), [other]);
    let early = TimeRange {
        from: at(0),
        to: at(10),
    };
    assert!(store.drift(early).unwrap().is_empty());
}

pub fn firewall_hits_are_summed_per_host_kind_port_remote_program_and_user(backend: &dyn Backend) {
    let store = backend.store();
    let t0 = 1_800_000_000 * SEC;
    let hit = |seq: u64, secs: i64, kind: EventKind, local: &str, remote: &str| {
        EventBuilder::connect(local, remote)
            .kind(kind)
            .at_nanos(t0 + secs * SEC)
            .sequence(seq)
            .host("ws1")
            .uid(1000)
            .user("joe")
            .process(42, "/usr/bin/rsync")
    };
    let hostile = "/tmp/<img src=x onerror=alert(1)>";
    let events = vec![
        // Two would-block hits of one edge, the second named and from the
        // host's other address: one row, the latest local end and name.
        hit(
            1,
            0,
            EventKind::WouldBlock,
            "10.0.0.1:40000",
            "192.0.2.9:873",
        )
        .build(),
        hit(
            2,
            30,
            EventKind::WouldBlock,
            "10.0.0.5:40001",
            "192.0.2.9:873",
        )
        .named("backup.example.org")
        .build(),
        // Blocked is its own row.
        hit(3, 40, EventKind::Blocked, "10.0.0.1:40002", "192.0.2.9:873").build(),
        // An incoming hit: the service port is the local one.
        hit(
            4,
            50,
            EventKind::WouldBlock,
            "10.0.0.1:22",
            "198.51.100.7:51000",
        )
        .direction(Direction::Incoming)
        .process(7, hostile)
        .build(),
        // A hit without a process or user name: the uid stands in.
        {
            let mut e = hit(
                5,
                60,
                EventKind::WouldBlock,
                "10.0.0.1:40003",
                "192.0.2.9:873",
            )
            .build();
            e.process = None;
            e.user_name = None;
            e
        },
        // Connections are no hits; nor is a hit outside the range.
        event(6, 70, "ws1", "10.0.0.1:40004", "192.0.2.9:873"),
        hit(
            7,
            4_000,
            EventKind::Blocked,
            "10.0.0.1:40005",
            "192.0.2.9:873",
        )
        .build(),
    ];
    store.ingest(&AgentId("ws1".into()), &events).unwrap();
    let other = vec![
        hit(1, 10, EventKind::Blocked, "10.0.0.2:40000", "192.0.2.9:873")
            .host("ws2")
            .build(),
    ];
    store.ingest(&AgentId("ws2".into()), &other).unwrap();

    let range = TimeRange {
        from: Timestamp::from_nanos(t0),
        to: Timestamp::from_nanos(t0 + 3_600 * SEC),
    };
    let hits = store
        .firewall_hits(&FirewallHitQuery {
            range,
            host: Some("ws1".into()),
        })
        .unwrap();
    let at = |secs: i64| Timestamp::from_nanos(t0 + secs * SEC);
    let row = |kind, direction, port, local: &str, remote: &str| FirewallHitTotal {
        host: "ws1".into(),
        kind,
        direction,
        protocol: connscope_event::Protocol::Tcp,
        service_port: port,
        local_ip: local.parse().unwrap(),
        remote_ip: remote.parse().unwrap(),
        remote_name: None,
        executable: Some("/usr/bin/rsync".into()),
        user: Some("joe".into()),
        count: 1,
        first_seen: at(0),
        last_seen: at(0),
    };
    let expected = vec![
        FirewallHitTotal {
            first_seen: at(40),
            last_seen: at(40),
            ..row(
                EventKind::Blocked,
                Direction::Outgoing,
                873,
                "10.0.0.1",
                "192.0.2.9",
            )
        },
        FirewallHitTotal {
            executable: Some(hostile.into()),
            first_seen: at(50),
            last_seen: at(50),
            ..row(
                EventKind::WouldBlock,
                Direction::Incoming,
                22,
                "10.0.0.1",
                "198.51.100.7",
            )
        },
        FirewallHitTotal {
            executable: None,
            user: Some("1000".into()),
            first_seen: at(60),
            last_seen: at(60),
            ..row(
                EventKind::WouldBlock,
                Direction::Outgoing,
                873,
                "10.0.0.1",
                "192.0.2.9",
            )
        },
        FirewallHitTotal {
            local_ip: "10.0.0.5".parse().unwrap(),
            remote_name: Some("backup.example.org".into()),
            count: 2,
            last_seen: at(30),
            ..row(
                EventKind::WouldBlock,
                Direction::Outgoing,
                873,
                "10.0.0.1",
                "192.0.2.9",
            )
        },
    ];
    assert_eq!(hits, expected);

    let all = store
        .firewall_hits(&FirewallHitQuery { range, host: None })
        .unwrap();
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(all[4].host, "ws2");
    assert_eq!(all[4].kind, EventKind::Blocked);
    // Hits are no connections: the rollups do not count them.
    let edges = store
        .edge_totals(&RollupQuery {
            range,
            host: Some("ws1".into()),
        })
        .unwrap();
    let connections: u64 = edges.iter().map(|e| e.counts.connections).sum();
    assert_eq!(connections, 1);
}

pub fn retention_ages_the_policy_loop_but_keeps_its_audit_trail(backend: &dyn Backend) {
    use connscope_event::Protocol;
    use connscope_protocol::policy::{FirewallNotice, FirewallState, StageMode, Staging};
    use connscope_store::{AssignedVersion, AssignmentChange, AssignmentTarget, DriftRecord};

    const DAY: i64 = 86_400;
    let store = backend.store();
    // Day 0 is 2027-01-15T08:00:00Z; retention runs on day 40 and keeps 30 days.
    let at = |s: i64| Timestamp::from_nanos(1_800_000_000 * SEC + s * SEC);
    let group = AssignmentTarget::Group("workstations".into());
    for (version, s) in [(1, 0), (2, DAY)] {
        store
            .put_policy("ws", &format!("# version {version}"), "ann", "", at(s))
            .unwrap();
        store
            .assign_policy(&AssignmentChange {
                target: group.clone(),
                assigned: Some(AssignedVersion {
                    policy: "ws".into(),
                    version,
                    staging: Staging::default(),
                }),
                at: at(s),
                by: "ann".into(),
            })
            .unwrap();
    }
    let counts = [
        RuleCount {
            rule: "inbound[0]".into(),
            packets: 4,
            bytes: 240,
        },
        RuleCount {
            rule: "outbound[0]".into(),
            packets: 1,
            bytes: 60,
        },
    ];
    let record = |policy: &str, version: u32, s: i64| {
        store
            .record_rule_counters("ws-01", policy, version, 1, at(s), &counts)
            .unwrap()
    };
    // Old and no longer assigned: goes. Old but assigned: stays. Never
    // assigned but reported lately (a host-local test load): stays.
    record("ws", 1, 0);
    record("ws", 2, DAY);
    record("lab", 1, 39 * DAY);

    let edge = |remote: &str, first: i64, last: i64| DriftRecord {
        host: "srv".into(),
        direction: Direction::Incoming,
        protocol: Protocol::Tcp,
        port: 8080,
        remote: remote.parse().unwrap(),
        local: "10.0.0.5".parse().unwrap(),
        remote_name: None,
        executable: Some("/usr/bin/python3".into()),
        user: Some("www-data".into()),
        policy: "ws".into(),
        version: 2,
        mode: StageMode::Audit,
        first_seen: at(first),
        last_seen: at(last),
        connections: 1,
    };
    store.record_drift(&edge("10.0.0.7", 0, DAY)).unwrap();
    store.record_drift(&edge("10.0.0.8", 0, DAY)).unwrap();
    // Seen again lately: the whole edge stays, its first sighting with it.
    store
        .record_drift(&edge("10.0.0.8", 39 * DAY, 39 * DAY))
        .unwrap();

    let notice = |at: &str| FirewallNotice {
        at: at.into(),
        kind: "tampered".into(),
        detail: format!("restored ({at})"),
    };
    let notices = [
        notice("2027-01-15T08:00:00Z"),
        notice("2027-02-23T08:00:00+01:00"),
        notice("not a time"),
    ];
    store
        .put_firewall_report("ws-01", &FirewallState::BrokenGlass, at(39 * DAY), &notices)
        .unwrap();

    let retention = Retention {
        raw_events: Duration::from_secs(30 * DAY as u64),
        rollups: None,
    };
    let report = store.apply_retention(&retention, at(40 * DAY)).unwrap();
    assert_eq!(
        (
            report.drift_deleted,
            report.notices_deleted,
            report.rule_counters_deleted
        ),
        (1, 1, 2)
    );

    let reopened = backend.store();
    let kept_counters: Vec<_> = ["ws", "lab"]
        .iter()
        .flat_map(|p| reopened.rule_hits(p, None).unwrap())
        .map(|h| (h.policy, h.version, h.rule))
        .collect();
    assert_eq!(
        kept_counters,
        [
            ("ws".to_string(), 2, "inbound[0]".to_string()),
            ("ws".to_string(), 2, "outbound[0]".to_string()),
            ("lab".to_string(), 1, "inbound[0]".to_string()),
            ("lab".to_string(), 1, "outbound[0]".to_string()),
        ]
    );
    let drift = reopened.drift(TimeRange::ALL).unwrap();
    assert_eq!(
        drift
            .iter()
            .map(|d| (d.remote.to_string(), d.first_seen, d.connections))
            .collect::<Vec<_>>(),
        [("10.0.0.8".to_string(), at(0), 2)]
    );
    let kept_notices: Vec<_> = reopened
        .firewall_notices(None)
        .unwrap()
        .into_iter()
        .map(|n| n.notice)
        .collect();
    assert_eq!(kept_notices, notices[1..]);
    // The audit trail stays whole.
    assert_eq!(reopened.policy_versions("ws").unwrap().len(), 2);
    assert_eq!(reopened.assignment_history(&group).unwrap().len(), 2);
    // Applied again: nothing more to delete.
    let again = reopened.apply_retention(&retention, at(40 * DAY)).unwrap();
    assert_eq!(
        (
            again.drift_deleted,
            again.notices_deleted,
            again.rule_counters_deleted
        ),
        (0, 0, 0)
    );
}

/// Every rollup read the map and reports make: all time (whole days), the
/// first hours (a part of a day), one host, and hour by hour.
fn rollup_reads(
    store: &dyn Store,
) -> (
    Vec<EdgeTotal>,
    Vec<EdgeTotal>,
    Vec<EdgeTotal>,
    Vec<HourlyEdgeTotal>,
) {
    let query = |range, host: Option<&str>| RollupQuery {
        range,
        host: host.map(str::to_owned),
    };
    let first_hours = TimeRange {
        from: Timestamp::from_nanos(1_800_000_000 * SEC),
        to: Timestamp::from_nanos(1_800_000_000 * SEC + 3 * 3600 * SEC),
    };
    (
        store.edge_totals(&query(TimeRange::ALL, None)).unwrap(),
        store.edge_totals(&query(first_hours, None)).unwrap(),
        store
            .edge_totals(&query(TimeRange::ALL, Some("b")))
            .unwrap(),
        store
            .edge_totals_by_hour(&query(TimeRange::ALL, None))
            .unwrap(),
    )
}

/// The rollups recomputed from the raw events read back, per edge.
fn totals_of_raw_events(store: &dyn Store) -> BTreeMap<TotalKey, EdgeCounts> {
    let mut batch = RollupBatch::new();
    for ev in all_events(store) {
        batch.add(&ev);
    }
    let mut totals: BTreeMap<TotalKey, EdgeCounts> = BTreeMap::new();
    for (key, counts) in batch.rows() {
        totals
            .entry((
                key.host.clone(),
                key.direction.to_string(),
                key.local_ip.to_string(),
                key.remote_ip.to_string(),
                key.service_port,
                key.executable.clone(),
                key.user.clone(),
            ))
            .and_modify(|c| c.merge(counts))
            .or_insert(*counts);
    }
    totals
}

fn keyed_totals(totals: &[EdgeTotal]) -> BTreeMap<TotalKey, EdgeCounts> {
    totals
        .iter()
        .map(|t| {
            (
                (
                    t.host.clone(),
                    t.direction.to_string(),
                    t.local_ip.to_string(),
                    t.remote_ip.to_string(),
                    t.service_port,
                    t.executable.clone(),
                    t.user.clone(),
                ),
                t.counts,
            )
        })
        .collect()
}

pub fn folding_closed_hours_changes_no_answer_and_resent_batches_stay_once(backend: &dyn Backend) {
    let store = backend.store();
    let work = workload();
    for (agent, events) in &work {
        for chunk in events.chunks(97) {
            store.ingest(agent, chunk).unwrap();
        }
    }
    let before = rollup_reads(&*store);
    assert_eq!(keyed_totals(&before.0), totals_of_raw_events(&*store));
    // Days after the workload's hours: all of them closed.
    let later =
        |hours: i64| Timestamp::from_nanos((1_800_000_000 + 3 * 86_400 + hours * 3600) * SEC);
    store.fold_rollups(later(0)).unwrap();
    assert_eq!(rollup_reads(&*store), before, "after folding");
    // Again (nothing new), and late enough to drop the folded batch rows.
    store.fold_rollups(later(0)).unwrap();
    store.fold_rollups(later(1)).unwrap();
    assert_eq!(rollup_reads(&*store), before, "after folding again");

    // A batch re-sent after its hours were folded is stored once.
    let (agent, events) = &work[0];
    let again = store.ingest(agent, &events[..97]).unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 97));
    store.fold_rollups(later(2)).unwrap();
    assert_eq!(rollup_reads(&*store), before, "after a re-sent batch");

    // A late batch for folded hours counts, before and after its own fold.
    let late: Vec<ConnectionEvent> = (601..=650u64)
        .map(|n| {
            event(
                n,
                (n as i64 - 600) * 300,
                "a",
                "10.0.0.1:40000",
                "10.0.1.9:443",
            )
        })
        .collect();
    assert_eq!(store.ingest(agent, &late).unwrap().stored, 50);
    let with_late = rollup_reads(&*store);
    assert_eq!(keyed_totals(&with_late.0), totals_of_raw_events(&*store));
    assert_ne!(with_late.0, before.0);
    store.fold_rollups(later(3)).unwrap();
    store.fold_rollups(later(4)).unwrap();
    assert_eq!(
        rollup_reads(&*store),
        with_late,
        "after folding the late batch"
    );
    assert_eq!(store.ingest(agent, &late).unwrap().duplicates, 50);
    assert_eq!(
        rollup_reads(&*store),
        with_late,
        "after re-sending the late batch"
    );
    // Hour by hour adds up to the totals.
    for hourly in &with_late.3 {
        let sum: u64 = hourly.hours.iter().map(|(_, n)| n).sum();
        assert_eq!(sum, hourly.total.counts.connections, "{:?}", hourly.total);
    }
}
