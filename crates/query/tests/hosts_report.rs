//! `report hosts` per agent state: which state, a restart without state, and
//! losses by reason apart from the unexplained ones (issue 14.1, 14.7).

use connscope_event::test_support::EventBuilder;
use connscope_event::ConnectionEvent;
use connscope_protocol::drop_reason;
use connscope_query::report::{hosts_report, Format};
use connscope_store::{AgentId, Origin, SqliteStore, Store};

const T0: i64 = 1_795_548_137 * 1_000_000_000; // 2026-11-24T19:22:17Z

fn events(sequences: std::ops::RangeInclusive<u64>) -> Vec<ConnectionEvent> {
    sequences
        .map(|seq| {
            EventBuilder::connect("10.0.0.1:40000", "10.0.0.2:22")
                .at_nanos(T0 + seq as i64 * 1_000_000_000)
                .sequence(seq)
                .host("ws1")
                .build()
        })
        .collect()
}

fn origin(instance: &str) -> Origin {
    Origin {
        instance: instance.into(),
        boot: "b1".into(),
        first_sequence: 1,
    }
}

#[test]
fn one_row_per_state_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    let agent = AgentId("ws1".into());
    let first = "0123456789abcdef0123456789abcdef";
    let wiped = "fedcba9876543210fedcba9876543210";
    store
        .ingest_from(&agent, &origin(first), &events(1..=3))
        .unwrap();
    store
        .ingest_from(&agent, &origin(first), &events(9..=10))
        .unwrap();
    store
        .record_dropped_from(&agent, first, drop_reason::CRASH, &[(4, 6)])
        .unwrap();
    store
        .ingest_from(&agent, &origin(wiped), &events(1..=2))
        .unwrap();
    let report = hosts_report(&store.agents().unwrap());
    assert_eq!(
        report.render(Format::Table),
        "\
HOST  AGENT                      EVENTS  LAST_SEEN                  SEQUENCES  MISSING      DROPPED  GAPS
ws1   ws1/01234567                    5  2026-11-24T19:22:27+00:00  1-3 9-10         5  3 (crash 3)  4-8
ws1   ws1/fedcba98 (state lost)       2  2026-11-24T19:22:19+00:00  1-2              0            0
"
    );
    let json: serde_json::Value = serde_json::from_str(&report.render(Format::Json)).unwrap();
    assert_eq!(json[0]["unexplained"], 2);
    assert_eq!(
        json[0]["dropped_by_reason"],
        serde_json::json!({"crash": 3})
    );
    assert_eq!(json[1]["lost_state"], true);
    assert_eq!(json[1]["instance"], wiped);
}
