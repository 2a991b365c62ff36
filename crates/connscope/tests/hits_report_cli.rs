//! `connscope report hits` as a user runs it: a real store holding
//! would-block and blocked events, the table, the JSON (the API's body),
//! the range and a bad flag named.

use std::process::Command;

use connscope_event::test_support::EventBuilder;
use connscope_event::{EventKind, Timestamp};
use connscope_store::{AgentId, SqliteStore, Store};

fn connscope(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn report_hits_lists_what_the_policies_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let now = Timestamp::now().as_nanos();
    let hour = 3_600_000_000_000;
    let hit = |seq: u64, at: i64, kind: EventKind| {
        EventBuilder::connect("10.9.0.1:40000", "10.9.0.3:873")
            .kind(kind)
            .at_nanos(at)
            .sequence(seq)
            .host("ws-01")
            .user("backup")
            .process(77, "/usr/bin/rsync")
            .build()
    };
    let store = SqliteStore::open(&db).unwrap();
    store
        .ingest(
            &AgentId("ws-01".into()),
            &[
                hit(1, now - 48 * hour, EventKind::WouldBlock),
                hit(2, now - hour, EventKind::WouldBlock),
                hit(3, now - hour / 2, EventKind::Blocked),
            ],
        )
        .unwrap();
    drop(store);
    let db = db.to_str().unwrap();

    let (code, stdout, stderr) = connscope(&["report", "hits", "--db", db]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("HOST") && lines[0].contains("EXECUTABLE"),
        "{stdout}"
    );
    assert!(
        lines[2].contains("would-block") && lines[2].contains("/usr/bin/rsync"),
        "{stdout}"
    );

    let (code, stdout, stderr) = connscope(&[
        "report", "hits", "--db", db, "--since", "-24h", "--format", "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let hits = json["hits"].as_array().unwrap();
    let counts: Vec<(&str, u64)> = hits
        .iter()
        .map(|h| (h["kind"].as_str().unwrap(), h["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts, [("blocked", 1), ("would-block", 1)], "{stdout}");
    assert_eq!(hits[0]["user"], "backup");
    assert_eq!(hits[0]["port"], 873);

    let (code, _, stderr) = connscope(&["report", "hits", "--db", db, "--since", "-1x"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--from: invalid time \"-1x\""), "{stderr}");
}
