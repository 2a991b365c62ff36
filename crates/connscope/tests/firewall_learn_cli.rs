//! `connscope firewall plan --generalize`: the group and subnet planners through
//! the real binary and a real SQLite store. Four workstations, three of which
//! used the file server; the fourth only resolved names.

use std::path::Path;
use std::process::{Command, Output};

use connscope_event::test_support::EventBuilder;
use connscope_event::Direction;
use connscope_store::{AgentId, SqliteStore, Store};

fn store(dir: &Path) -> String {
    let path = dir.join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    let ingest = |host: &str, seq: u64, dir: Direction, local: &str, remote: &str| {
        let event = EventBuilder::connect(local, remote)
            .at_nanos(1_795_548_137_000_000_000 + seq as i64 * 1_000_000_000)
            .direction(dir)
            .sequence(seq)
            .host(host)
            .process(7, "/usr/bin/smbclient")
            .user("alice")
            .build();
        store.ingest(&AgentId(host.into()), &[event]).unwrap();
    };
    for i in 1..=3u64 {
        let ws = format!("10.0.1.{i}");
        ingest(
            &format!("ws{i}"),
            1,
            Direction::Outgoing,
            &format!("{ws}:4000{i}"),
            "10.0.0.9:445",
        );
        ingest(
            "srv",
            i,
            Direction::Incoming,
            "10.0.0.9:445",
            &format!("{ws}:4000{i}"),
        );
    }
    ingest(
        "ws4",
        1,
        Direction::Outgoing,
        "10.0.1.4:40004",
        "10.0.0.53:53",
    );
    path.display().to_string()
}

fn plan(db: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(["firewall", "plan", "--db", db])
        .args(extra)
        .output()
        .unwrap()
}

/// `connscope groups ARGS` on the store, which must succeed.
fn groups(db: &str, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(["groups"])
        .args(args)
        .args(["--db", db])
        .output()
        .unwrap();
    stdout(out);
}

fn stdout(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn learn_group_gives_a_quiet_member_what_its_group_used() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    groups(
        &db,
        &["add", "workstations", "--hosts", "ws1", "ws2", "ws3", "ws4"],
    );

    let ws4 = stdout(plan(&db, &["--host", "ws4"]));
    assert!(
        ws4.contains(
            "\t\tip daddr 10.0.0.9 tcp dport 445 accept comment \"used by 3 of 4 members of workstations, 3 conn "
        ),
        "{ws4}"
    );
    // The server accepts the whole group, ws4 included: the network its
    // members' addresses (10.0.1.1-4) span.
    let srv = stdout(plan(&db, &["--host", "srv"]));
    assert!(
        srv.contains("\t\tip saddr 10.0.1.0/29 tcp dport 445 accept comment \"used by 3 of 4 members of workstations, "),
        "{srv}"
    );
    // Strictest: exactly what ws4 did.
    let exact = stdout(plan(&db, &["--host", "ws4", "--generalize", "exact"]));
    assert!(!exact.contains("10.0.0.9"), "{exact}");
    // A higher bar than the evidence clears: ws4 keeps only its own.
    let strict = stdout(plan(&db, &["--host", "ws4", "--min-share", "1"]));
    assert!(!strict.contains("10.0.0.9"), "{strict}");
    // Without groups, the server's peers are widened to the subnet they span.
    groups(&db, &["remove", "workstations"]);
    let srv = stdout(plan(&db, &["--host", "srv"]));
    assert!(
        srv.contains("\t\tip saddr 10.0.1.0/30 tcp dport 445 accept comment \"3 peers seen, widened to the 1 subnet(s) they span, "),
        "{srv}"
    );
}

#[test]
fn an_address_group_lets_the_server_accept_its_whole_declared_range() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    // A member the history never showed may sit anywhere in 10.0.0.0/22,
    // not only beside its colleagues at 10.0.1.1-4.
    groups(&db, &["add", "office", "--addresses", "10.0.0.0/22"]);
    let srv = stdout(plan(&db, &["--host", "srv"]));
    assert!(
        srv.contains("\t\tip saddr 10.0.0.0/22 tcp dport 445 accept comment \"used by 3 of 5 members of office, "),
        "{srv}"
    );
}

#[test]
fn plan_group_writes_one_ruleset_and_lists_the_exceptions() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    groups(
        &db,
        &["add", "workstations", "--hosts", "ws1", "ws2", "ws3", "ws4"],
    );
    let json = stdout(plan(&db, &["--group", "workstations", "--format", "json"]));
    let group: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(group["host"], "workstations");
    let exceptions: Vec<(&str, u64)> = group["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["host"].as_str().unwrap(),
                e["rule"]["ports"][0].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(exceptions, [("ws4", 53)]);
    assert_eq!(group["rules"][0]["basis"]["used_by"], 3);

    let both = plan(&db, &["--group", "workstations", "--host", "ws1"]);
    assert!(!both.status.success());
    let unknown = plan(&db, &["--group", "nobody"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no group \"nobody\" in the store"));
}
