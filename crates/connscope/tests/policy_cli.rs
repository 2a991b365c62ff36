//! `connscope policy` through the real binary and a real SQLite store: a
//! draft for a group, checked, shown, edited, compared and replayed.

mod workstations;

use std::process::{Command, Output};

fn connscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn a_drafted_policy_is_checked_edited_compared_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let db = workstations::store(dir.path(), 1_795_548_137_000_000_000, 1_000_000_000);
    let v1 = dir.path().join("ws-v1.toml");
    let v1s = v1.to_str().unwrap();
    let out = connscope(&["policy", "draft", "--db", &db, "--group", "ws", "-o", v1s]);
    assert!(out.status.success(), "{}", text(&out));

    let out = connscope(&["policy", "edit-check", v1s]);
    assert!(out.status.success(), "{}", text(&out));
    let out = connscope(&["policy", "show", v1s]);
    let shown = text(&out);
    assert!(
        shown.contains("outbound tcp 445 to 10.0.0.9  [15 conn; used by 3 of 3 members of ws]"),
        "{shown}"
    );
    assert!(
        shown.contains("outbound tcp 5432 to 10.0.0.20 (only ws3)"),
        "{shown}"
    );
    assert!(
        shown.contains("review: ws3 outbound tcp port 5432"),
        "{shown}"
    );

    // The draft blocks nothing it was drafted from.
    let out = connscope(&["policy", "check", v1s, "--db", &db]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("total                            16          0        0"),
        "{}",
        text(&out)
    );

    // A reviewer removes the database exception: the diff says so, and the
    // replay shows what that costs.
    let v2 = dir.path().join("ws-v2.toml");
    let edited = std::fs::read_to_string(&v1).unwrap();
    let start = edited
        .find("[[outbound]]\nprotocol = \"tcp\"\nports = [5432]")
        .unwrap();
    let end = edited[start + 1..]
        .find("[[")
        .map_or(edited.len(), |e| start + 1 + e);
    std::fs::write(&v2, format!("{}{}", &edited[..start], &edited[end..])).unwrap();
    let v2s = v2.to_str().unwrap();
    let out = connscope(&["policy", "diff", v1s, v2s]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out), "- outbound tcp 5432 to 10.0.0.20 (only ws3)\n");
    let out = connscope(&["policy", "check", v2s, "--db", &db]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("ws3: outbound tcp port 5432 (10.0.1.3 -> 10.0.0.20): 1 connection(s)"),
        "{}",
        text(&out)
    );

    // A broken edit is named by its line.
    std::fs::write(&v2, edited.replace("10.0.0.9", "10.0.0.999")).unwrap();
    let out = connscope(&["policy", "edit-check", v2s]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("ws-v2.toml: line "), "{}", text(&out));
    assert!(text(&out).contains("10.0.0.999"), "{}", text(&out));
}
