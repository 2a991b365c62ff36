//! The small workstation office the policy tests draft from: ws1-ws3 use
//! the file server five times each and ws3 once reaches a database, all in
//! group `ws` (a name pattern), in a real SQLite store.

use std::path::Path;

use connscope_event::test_support::EventBuilder;
use connscope_event::Direction;
use connscope_store::{AgentId, GroupKind, HostGroup, SqliteStore, Store};

/// Writes the office to `dir/store.db`, its connections `step` nanoseconds
/// apart from `start`, and returns the store's path.
pub fn store(dir: &Path, start: i64, step: i64) -> String {
    let path = dir.join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    let mut seq = 0;
    let mut ingest = |host: &str, local: &str, remote: &str| {
        seq += 1;
        let event = EventBuilder::connect(local, remote)
            .at_nanos(start + seq * step)
            .direction(Direction::Outgoing)
            .sequence(seq as u64)
            .host(host)
            .process(7, "/usr/bin/smbclient")
            .user("alice")
            .build();
        store.ingest(&AgentId(host.into()), &[event]).unwrap();
    };
    for i in 1..=3 {
        for _ in 0..5 {
            ingest(
                &format!("ws{i}"),
                &format!("10.0.1.{i}:4000{i}"),
                "10.0.0.9:445",
            );
        }
    }
    ingest("ws3", "10.0.1.3:40100", "10.0.0.20:5432");
    store
        .put_group(&HostGroup {
            name: "ws".into(),
            kind: GroupKind::Names,
            patterns: vec!["ws*".into()],
            labels: Vec::new(),
        })
        .unwrap();
    path.display().to_string()
}
