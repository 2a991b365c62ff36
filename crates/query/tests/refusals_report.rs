//! `report refusals` from a real store: refused batches show, per agent and
//! reason, although nothing of them was stored (issue 14, 5).

use connscope_event::Timestamp;
use connscope_query::report::{refusals_report, Format};
use connscope_store::{AgentId, SqliteStore, Store};

#[test]
fn refused_batches_are_reported_per_agent_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
    let at = |secs: i64| Timestamp::from_nanos(1_795_548_137_000_000_000 + secs * 1_000_000_000);
    for (agent, reason, secs) in [
        ("web1", "too-large", 0),
        ("web1", "too-large", 60),
        ("ws1", "host-mismatch", 30),
    ] {
        store
            .record_refusal(&AgentId(agent.into()), reason, at(secs))
            .unwrap();
    }
    let report = refusals_report(&store.refusals().unwrap());
    assert_eq!(
        report.render(Format::Table),
        "\
AGENT  REASON         BATCHES  LAST_AT
web1   too-large            2  2026-11-24T19:23:17+00:00
ws1    host-mismatch        1  2026-11-24T19:22:47+00:00
"
    );
    let json: serde_json::Value = serde_json::from_str(&report.render(Format::Json)).unwrap();
    assert_eq!(json[1]["reason"], "host-mismatch");
    assert_eq!(json[0]["batches"], 2);
}
