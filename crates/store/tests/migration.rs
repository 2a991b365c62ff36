//! A store written by an older build opens, is migrated, and keeps what it
//! had. `fixtures/schema-v3.db.gz` was written by commit 9bd8160 (schema
//! version 3): `connscope import` of tcpspy-log's `syslog-rfc3339.log`.

use std::io::Read;

use connscope_event::Timestamp;
use connscope_store::{AgentId, RefusalCount, SqliteStore, Store};

#[test]
fn a_version_3_store_is_migrated_and_counts_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&include_bytes!("fixtures/schema-v3.db.gz")[..])
        .read_to_end(&mut bytes)
        .unwrap();
    std::fs::write(&path, bytes).unwrap();

    let store = SqliteStore::open(&path).unwrap();
    let agents = store.agents().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!((agents[0].host.as_str(), agents[0].events), ("vm", 24));
    assert!(store.refusals().unwrap().is_empty());

    let web1 = AgentId("web1".into());
    for (reason, secs) in [("too-large", 10), ("too-large", 20), ("bad-event", 5)] {
        store
            .record_refusal(&web1, reason, Timestamp::from_nanos(secs * 1_000_000_000))
            .unwrap();
    }
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    let count = |reason: &str, batches, secs: i64| RefusalCount {
        agent: web1.clone(),
        reason: reason.into(),
        batches,
        last_at: Timestamp::from_nanos(secs * 1_000_000_000),
    };
    assert_eq!(
        store.refusals().unwrap(),
        [count("bad-event", 1, 5), count("too-large", 2, 20)]
    );
    assert_eq!(
        store.agents().unwrap().len(),
        1,
        "a refusal stores no events"
    );
}
