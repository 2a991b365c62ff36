//! The graph says when the store's data starts and ends, whatever range it
//! shows: the map opens on the last day with data and says so.

use connscope_event::test_support::EventBuilder;
use connscope_event::{Direction, Timestamp};
use connscope_query::{build_graph, data_span, GraphFilter};
use connscope_store::{AgentId, SqliteStore, Store, TimeRange};

const HOUR: i64 = 3_600 * 1_000_000_000;
const T0: i64 = 1_795_478_400_000_000_000; // 2026-11-24T00:00:00Z

#[test]
fn the_graph_carries_the_span_of_all_data_even_for_an_empty_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    assert_eq!(
        data_span(&store).unwrap(),
        None,
        "an empty store has no span"
    );
    let at = |host: &str, hours: i64| {
        EventBuilder::connect("10.0.0.1:40000", "10.0.0.2:22")
            .at_nanos(T0 + hours * HOUR)
            .direction(Direction::Outgoing)
            .host(host)
            .build()
    };
    store
        .ingest(&AgentId("a".into()), &[at("a", 5), at("a", 30)])
        .unwrap();
    store
        .ingest(&AgentId("b".into()), &[at("b", 2), at("b", 20)])
        .unwrap();

    // A range with nothing in it (a day after the data) still says where the data is.
    let later = TimeRange {
        from: Timestamp::from_nanos(T0 + 48 * HOUR),
        to: Timestamp::from_nanos(T0 + 72 * HOUR),
    };
    let graph = build_graph(&store, later, &GraphFilter::default()).unwrap();
    assert!(graph.edges.is_empty());
    let json = serde_json::to_value(&graph).unwrap();
    assert_eq!(
        json["data_span"],
        serde_json::json!({"first": "2026-11-24T02:00:00+00:00", "last": "2026-11-25T06:00:00+00:00"})
    );
}
