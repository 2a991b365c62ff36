//! `connscope import` and `connscope report` as a user runs them: real files,
//! real store, exit statuses, error positions on stderr, stable JSON on stdout.

use std::process::Command;

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
fn import_then_report() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("syslog");
    std::fs::write(
        &log,
        "Nov 24 20:10:19 ws1 tcpspy[1]: connect: proc /usr/bin/ssh, user joe, local 10.9.0.1:50786, remote 10.9.0.2:ssh\n\
         Nov 24 20:10:19 srv tcpspy[2]: connect: proc /usr/sbin/sshd, user root, local 10.9.0.2:22, remote 10.9.0.1:50786\n\
         Nov 24 20:10:20 ws1 kernel: something else\n\
         Nov 24 20:10:21 ws1 tcpspy[1]: connect: bad\n",
    )
    .unwrap();
    let db = dir.path().join("store.db");
    let (db, log) = (db.to_str().unwrap(), log.to_str().unwrap());

    let (code, _, stderr) = connscope(&["import", "--db", db, "--tz", "UTC", log]);
    assert_eq!(code, 1, "a garbled line makes the exit status 1: {stderr}");
    assert!(stderr.contains(&format!("{log}:4:")), "{stderr}");
    assert!(
        stderr.contains("4 lines: 2 events imported, 0 already in the store, 1 lines skipped"),
        "{stderr}"
    );
    let (_, _, stderr) = connscope(&["import", "--db", db, "--tz", "UTC", log]);
    assert!(
        stderr.contains("0 events imported, 2 already in the store"),
        "{stderr}"
    );

    let (code, stdout, stderr) = connscope(&[
        "report", "edges", "--db", db, "--format", "json", "--from", "-100000d",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let edges: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(edges.as_array().unwrap().len(), 1);
    let e = &edges[0];
    assert_eq!(
        (e["client_host"].as_str(), e["server_host"].as_str()),
        (Some("ws1"), Some("srv"))
    );
    assert_eq!(
        (e["server_port"].as_u64(), e["connections"].as_u64()),
        (Some(22), Some(1))
    );
    assert!(e["first_seen"].as_str().unwrap().ends_with("+00:00"));

    let (code, stdout, _) = connscope(&["report", "hosts", "--db", db]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("HOST  AGENT"), "{stdout}");
    assert!(stdout.contains("import:ws1"), "{stdout}");

    let (code, _, stderr) = connscope(&["report", "ports", "--db", db, "--from", "yesterday"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("invalid time \"yesterday\""), "{stderr}");
    assert!(stderr.contains("--from: "), "the flag is named: {stderr}");
    let (code, _, stderr) = connscope(&["report", "edges", "--db", db, "--direction", "up"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--direction: \"up\""), "{stderr}");
    let (code, _, stderr) = connscope(&["report", "edges", "--db", &format!("{db}.missing")]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no such store"), "{stderr}");
}
