//! A backtest of by-name plans on a real store: the name a workstation uses
//! moves to a new address between the learning and the tested days. The
//! address plan blocks the new address; the by-name plan, its set filled as
//! the test day's named connections say, lets it through, and still blocks
//! an address no name stood for.

use connscope_event::test_support::EventBuilder;
use connscope_event::{ConnectionEvent, Timestamp};
use connscope_firewall::backtest::backtest_store;
use connscope_firewall::by_name::ByName;
use connscope_firewall::{ExactPlanner, FleetPlanner};
use connscope_store::{AgentId, SqliteStore, Store, TimeRange};

const DAY: i64 = 86_400 * 1_000_000_000;
const T0: i64 = 1_795_478_400 * 1_000_000_000; // 2026-11-24T00:00:00Z

fn connect(seq: u64, day: i64, remote: &str, name: Option<&str>) -> ConnectionEvent {
    let mut b = EventBuilder::connect(format!("10.0.0.1:{}", 40000 + seq), remote)
        .at_nanos(T0 + day * DAY + 10 * 3_600 * 1_000_000_000)
        .sequence(seq)
        .host("ws1")
        .process(7, "/usr/bin/firefox");
    if let Some(name) = name {
        b = b.named(name);
    }
    b.build()
}

#[test]
fn a_by_name_plan_follows_a_moved_name_where_the_address_plan_blocks_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    store
        .ingest(
            &AgentId("ws1".into()),
            &[
                connect(1, 0, "203.0.113.7:443", Some("www.example.org")),
                connect(2, 0, "192.0.2.9:443", None),
                // The next day: the name's new address, and an unnamed one.
                connect(3, 1, "203.0.113.8:443", Some("www.example.org")),
                connect(4, 1, "192.0.2.9:443", None),
                connect(5, 1, "198.51.100.66:443", None),
            ],
        )
        .unwrap();
    let at = |day: i64| Timestamp::from_nanos(T0 + day * DAY);
    let learn = TimeRange {
        from: at(0),
        to: at(1),
    };
    let test = TimeRange {
        from: at(1),
        to: at(2),
    };
    let exact = ExactPlanner::default();
    let by_name = ByName {
        inner: Box::new(ExactPlanner::default()),
    };
    let planners: [&dyn FleetPlanner; 2] = [&exact, &by_name];
    let result = backtest_store(&store, &planners, learn, test, &[]).unwrap();
    let blocked: Vec<(String, Vec<String>)> = result
        .planners
        .iter()
        .map(|p| {
            (
                p.planner.clone(),
                p.hosts[0]
                    .blocked
                    .iter()
                    .map(|b| b.remote.to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        blocked,
        [
            (
                "exact".to_owned(),
                vec!["198.51.100.66".to_owned(), "203.0.113.8".to_owned()]
            ),
            ("exact+by-name".to_owned(), vec!["198.51.100.66".to_owned()]),
        ]
    );
}
