//! The collector's side of the policy loop through the real binary and a
//! real SQLite store: versions pushed and compared, a group staged,
//! enforced port by port with the backtest figure shown first (and refused
//! while it is not 0), rolled back exactly, the status table, `report hosts`
//! with each host's policy, and `report drift`.

mod workstations;

use std::process::{Command, Output};

use connscope_event::{Direction, Protocol, Timestamp};
use connscope_protocol::policy::{DirectionStage, StageMode, StagedPort, Staging};
use connscope_store::{AssignmentTarget, DriftRecord, SqliteStore, Store};

const HOUR: i64 = 3_600_000_000_000;

fn connscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(args)
        .env("USER", "ann")
        .env_remove("SUDO_USER")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn ok(args: &[&str]) -> String {
    let out = connscope(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    text(&out)
}

/// The group's current staging, from the store.
fn staging(db: &str) -> (u32, Staging) {
    let store = SqliteStore::open(db).unwrap();
    let assigned = store
        .assignment_history(&AssignmentTarget::Group("ws".into()))
        .unwrap()
        .pop()
        .unwrap()
        .assigned
        .unwrap();
    (assigned.version, assigned.staging)
}

fn backtest_total(output: &str) -> Vec<u64> {
    let line = output
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap_or_else(|| panic!("no total in {output}"));
    line.split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn versions_are_pushed_staged_enforced_by_port_and_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = workstations::store(
        dir.path(),
        Timestamp::now().as_nanos() - 24 * HOUR,
        HOUR / 2,
    );
    let v1 = dir.path().join("ws-v1.toml");
    let v1s = v1.to_str().unwrap();
    ok(&["policy", "draft", "--db", &db, "--group", "ws", "-o", v1s]);
    assert_eq!(ok(&["policy", "push", v1s, "--db", &db]), "ws version 1\n");
    assert!(ok(&["policy", "push", v1s, "--db", &db]).starts_with("ws version 1 (unchanged"));

    // A reviewer drops ws3's database exception: version 2.
    let edited = std::fs::read_to_string(&v1).unwrap();
    let start = edited
        .find("[[outbound]]\nprotocol = \"tcp\"\nports = [5432]")
        .unwrap();
    let end = edited[start + 1..]
        .find("[[")
        .map_or(edited.len(), |e| start + 1 + e);
    let v2 = dir.path().join("ws-v2.toml");
    std::fs::write(&v2, format!("{}{}", &edited[..start], &edited[end..])).unwrap();
    let v2s = v2.to_str().unwrap();
    let pushed = ok(&[
        "policy",
        "push",
        v2s,
        "--db",
        &db,
        "--comment",
        "no db for ws3",
    ]);
    assert_eq!(pushed, "ws version 2\n");
    let versions = ok(&["policy", "versions", "ws", "--db", &db]);
    let rows: Vec<&str> = versions.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{versions}");
    assert!(rows[1].trim_start().starts_with("2 ") && rows[1].contains("ann"));
    assert!(rows[1].ends_with("no db for ws3"), "{versions}");
    let out = connscope(&["policy", "diff", "ws@1", "ws@2", "--db", &db]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out), "- outbound tcp 5432 to 10.0.0.20 (only ws3)\n");
    // A file against a stored version.
    let out = connscope(&["policy", "diff", "ws@2", v2s, "--db", &db]);
    assert_eq!((out.status.code(), text(&out)), (Some(0), String::new()));
    let missing = connscope(&["policy", "diff", "ws@9", v2s, "--db", &db]);
    assert!(
        text(&missing).contains("ws@9: no version 9"),
        "{}",
        text(&missing)
    );
    // A broken file is refused by push with its line, and nothing is kept.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, edited.replace("10.0.0.9", "10.0.0.999")).unwrap();
    let out = connscope(&["policy", "push", broken.to_str().unwrap(), "--db", &db]);
    assert!(!out.status.success());
    assert!(text(&out).contains("line"), "{}", text(&out));

    // Staging shows the figure: ws3's database connection would be blocked,
    // none of it enforced.
    let staged = ok(&["policy", "stage", "--group", "ws", "--db", &db]);
    assert_eq!(backtest_total(&staged), [16, 1, 0], "{staged}");
    assert!(staged.contains("ws3"), "{staged}");
    assert!(
        staged.contains("staged: group ws runs ws version 2 (in audit, out audit)"),
        "{staged}"
    );
    assert_eq!(staging(&db), (2, Staging::default()));

    // Enforcing the file server's port costs nothing: done, the rest audits.
    let smb = StagedPort {
        protocol: Protocol::Tcp,
        port: 445,
    };
    let out = ok(&[
        "policy",
        "enforce",
        "--group",
        "ws",
        "--direction",
        "outbound",
        "--port",
        "tcp/445",
        "--db",
        &db,
    ]);
    assert_eq!(backtest_total(&out), [16, 1, 0], "{out}");
    let port_enforced = Staging {
        inbound: DirectionStage::default(),
        outbound: DirectionStage {
            mode: StageMode::Audit,
            except_ports: vec![smb],
        },
    };
    assert_eq!(staging(&db), (2, port_enforced.clone()));

    // Enforcing everything would block ws3's database: refused, unchanged.
    let out = connscope(&["policy", "enforce", "--group", "ws", "--db", &db]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(backtest_total(&text(&out)), [16, 1, 1]);
    assert!(text(&out).contains("refusing to enforce: 1 connection(s)"));
    assert_eq!(staging(&db), (2, port_enforced.clone()));
    ok(&[
        "policy",
        "enforce",
        "--group",
        "ws",
        "--db",
        &db,
        "--accept-blocked",
    ]);
    let (_, all) = staging(&db);
    assert_eq!(
        (all.inbound.mode, all.outbound.mode),
        (StageMode::Enforce, StageMode::Enforce)
    );
    assert!(all.outbound.except_ports.is_empty());

    // Rollback: exactly the assignment before.
    let out = ok(&["policy", "rollback", "--group", "ws", "--db", &db]);
    assert!(
        out.contains("rolled back: group ws runs ws version 2"),
        "{out}"
    );
    assert_eq!(staging(&db), (2, port_enforced));

    // One host goes ahead of its group from where it is: its own
    // assignment, the group's version and staging with outbound enforced.
    let out = ok(&[
        "policy",
        "enforce",
        "--host",
        "ws1",
        "--direction",
        "outbound",
        "--db",
        &db,
    ]);
    assert!(
        out.contains("enforced: host ws1 runs ws version 2 (in audit, out enforce)"),
        "{out}"
    );
    assert_eq!(
        staging(&db).1.outbound.mode,
        StageMode::Audit,
        "the group is unchanged"
    );
    ok(&["policy", "rollback", "--host", "ws1", "--db", &db]);

    // A host pinned to version 1 beats its group; the status says so.
    ok(&[
        "policy",
        "stage",
        "--host",
        "ws3",
        "--policy",
        "ws",
        "--version",
        "1",
        "--db",
        &db,
    ]);
    let status = ok(&["policy", "status", "--db", &db]);
    let row = |host: &str| {
        status
            .lines()
            .find(|l| l.starts_with(host))
            .unwrap_or_else(|| panic!("no {host} in {status}"))
            .to_owned()
    };
    assert!(row("ws1").contains("ws@2"), "{status}");
    assert!(
        row("ws1").contains("out audit (enforce tcp/445)"),
        "{status}"
    );
    assert!(row("ws1").contains("unknown"), "{status}");
    assert!(row("ws1").ends_with("group ws"), "{status}");
    assert!(row("ws3").contains("ws@1"), "{status}");
    assert!(row("ws3").ends_with("host ws3 (also in ws)"), "{status}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["policy", "status", "--db", &db, "--format", "json"])).unwrap();
    assert_eq!(json["hosts"].as_array().unwrap().len(), 3);
    assert_eq!(json["hosts"][2]["version"], 1);
    assert_eq!(json["hosts"][2]["state"], "unknown");

    // Rolling the host back past its first assignment withdraws it.
    let out = ok(&["policy", "rollback", "--host", "ws3", "--db", &db]);
    assert!(out.contains("host ws3 has no policy now"), "{out}");
    let status = ok(&["policy", "status", "--db", &db]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("ws3") && l.contains("ws@2")),
        "{status}"
    );
    let out = connscope(&["policy", "enforce", "--host", "ws3", "--db", &db]);
    assert!(
        text(&out).contains("host ws3 has no policy assigned"),
        "{}",
        text(&out)
    );
}

#[test]
fn report_drift_lists_each_edge_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let store = SqliteStore::open(&db).unwrap();
    let now = Timestamp::now().as_nanos();
    let record = |remote: &str, at: i64| DriftRecord {
        host: "srv".into(),
        direction: Direction::Incoming,
        protocol: Protocol::Tcp,
        port: 8080,
        remote: remote.parse().unwrap(),
        local: "10.0.0.5".parse().unwrap(),
        remote_name: Some("ws1.example.org".into()),
        executable: Some("/usr/bin/python3".into()),
        user: Some("www-data".into()),
        policy: "servers".into(),
        version: 2,
        mode: StageMode::Audit,
        first_seen: Timestamp::from_nanos(at),
        last_seen: Timestamp::from_nanos(at),
        connections: 1,
    };
    assert!(store
        .record_drift(&record("10.0.1.1", now - 2 * HOUR))
        .unwrap());
    assert!(!store.record_drift(&record("10.0.1.1", now - HOUR)).unwrap());
    assert!(store
        .record_drift(&record("10.0.1.2", now - 10 * 24 * HOUR))
        .unwrap());
    let dbs = db.to_str().unwrap();

    let table = ok(&["report", "drift", "--db", dbs, "--since", "-7d"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("HOST"), "{table}");
    for cell in [
        "srv",
        "incoming",
        "tcp/8080",
        "10.0.1.1 (ws1.example.org)",
        "/usr/bin/python3",
        "www-data",
        "servers@2",
        "audit",
    ] {
        assert!(lines[1].contains(cell), "{cell} in {table}");
    }
    assert!(lines[1].ends_with(" 2"), "{table}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(&["report", "drift", "--db", dbs, "--format", "json"])).unwrap();
    let drift = json["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 2, "{json}");
    assert_eq!(drift[0]["remote"], "10.0.1.2");
    assert_eq!(drift[1]["connections"], 2);
    assert_eq!(drift[1]["mode"], "audit");
}
