//! `connscope firewall backtest` end to end: the generated office in a real
//! SQLite store and the real binary, as table and as JSON.

use std::process::{Command, Output};

use connscope_firewall::office::Office;
use connscope_store::SqliteStore;

fn office_db(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("office.db");
    let store = SqliteStore::open(&path).unwrap();
    Office::generate(16, 1).write(&store).unwrap();
    path.to_str().unwrap().to_owned()
}

fn backtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(["firewall", "backtest"])
        .args(args)
        .output()
        .unwrap()
}

/// Days as RFC 3339, the way a user types them.
fn day(n: u32) -> String {
    let range = Office::days(n, n);
    range.from.to_string()
}

#[test]
fn the_json_report_agrees_with_the_table_and_names_the_blocked_edges() {
    let dir = tempfile::tempdir().unwrap();
    let db = office_db(&dir);
    let (learn_to, until) = (day(13), day(17));
    let common = [
        "--db",
        &db,
        "--learn-from",
        &day(1),
        "--learn-to",
        &learn_to,
        "--until",
        &until,
    ];
    let json = backtest(&[&common[..], &["--format", "json"]].concat());
    assert_eq!(
        json.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let exact = &report["planners"][0];
    assert_eq!(exact["planner"], "exact");
    let blocked = exact["blocked_connections"].as_u64().unwrap();
    assert!(blocked > 0);
    let hosts = exact["hosts"].as_array().unwrap();
    let ws16 = hosts.iter().find(|h| h["host"] == "ws-16").unwrap();
    assert_eq!(ws16["no_history"], true);
    assert_eq!(ws16["blocked_connections"], ws16["tested_connections"]);
    // Each blocked edge names its graph edge: the client's record and the
    // server's of the same connections name the same one.
    let file_share = "host:ws-16->service:fs:445/tcp:445/tcp";
    let named = |host: &serde_json::Value| {
        host["blocked"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["edge"] == file_share)
            .count()
    };
    let fs = hosts.iter().find(|h| h["host"] == "fs").unwrap();
    assert_eq!((named(ws16), named(fs)), (1, 1), "{ws16}\n{fs}");

    let table = backtest(&common);
    assert_eq!(table.status.code(), Some(1));
    let text = String::from_utf8(table.stdout).unwrap();
    let total = text.lines().find(|l| l.starts_with("total")).unwrap();
    let columns: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(columns[2], blocked.to_string(), "{text}");
    assert!(text.contains("ws-16 (no history)"), "{text}");
    assert!(
        text.contains("port 5986 (10.16.2.14 -> 10.16.1.11): 1 connection(s), not seen in the learning window"),
        "{text}"
    );
}

#[test]
fn rolling_windows_print_a_stability_figure_and_bad_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = office_db(&dir);
    let out = backtest(&[
        "--db",
        &db,
        "--learn-from",
        &day(1),
        "--learn-to",
        &day(13),
        "--until",
        &day(17),
        "--window",
        "7d",
        "--step",
        "1d",
        "--generalize",
        "exact",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("  learn ").count(), 9, "{text}");
    assert!(text.contains("new edges per week"), "{text}");

    let bad = backtest(&[
        "--db",
        &db,
        "--learn-to",
        &day(13),
        "--until",
        &day(17),
        "--planner",
        "magic",
    ]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("--generalize: \"magic\""), "{stderr}");
}
