//! Every query path over a real store holding events at any i64 time, asked
//! for any range (issue 14, 2): the map export once panicked on an integer
//! overflow after one event with an absurd time.

use connscope_event::test_support::EventBuilder;
use connscope_event::{ConnectionEvent, Direction, Timestamp};
use connscope_query::report::{edges_report, hosts_report, ports_report};
use connscope_query::{build_graph, load_edges, GraphFilter};
use connscope_store::{AgentId, SqliteStore, Store, TimeRange};
use proptest::prelude::*;

fn event(seq: u64, nanos: i64, outgoing: bool) -> ConnectionEvent {
    let (direction, local, remote) = if outgoing {
        (Direction::Outgoing, "10.0.0.1:40000", "10.0.0.2:22")
    } else {
        (Direction::Incoming, "10.0.0.2:22", "10.0.0.1:40000")
    };
    EventBuilder::connect(local, remote)
        .at_nanos(nanos)
        .direction(direction)
        .sequence(seq)
        .host(if outgoing { "a" } else { "b" })
        .build()
}

/// Times from the whole i64 range, with its ends and their neighbours often.
fn any_time() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        (i64::MIN..i64::MIN + 7_200_000_000_000),
        (i64::MAX - 7_200_000_000_000..=i64::MAX),
        any::<i64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn queries_answer_for_any_stored_times_and_any_range(
        times in prop::collection::vec((any_time(), any::<bool>()), 1..6),
        from in any_time(),
        to in any_time(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
        for (seq, (nanos, outgoing)) in times.iter().enumerate() {
            let agent = AgentId(if *outgoing { "a" } else { "b" }.into());
            store.ingest(&agent, &[event(seq as u64 + 1, *nanos, *outgoing)]).unwrap();
        }
        for range in [
            TimeRange { from: Timestamp::from_nanos(from.min(to)), to: Timestamp::from_nanos(from.max(to)) },
            TimeRange::ALL,
        ] {
            let graph = build_graph(&store, range, &GraphFilter::default()).unwrap();
            prop_assert!(graph.timeline.len() <= 241);
            let total: u64 = graph.timeline.iter().map(|b| b.connections).sum();
            prop_assert!(total <= times.len() as u64);
            let edges = load_edges(&store, range).unwrap();
            edges_report(&edges);
            ports_report(&edges);
        }
        hosts_report(&store.agents().unwrap());
    }
}
