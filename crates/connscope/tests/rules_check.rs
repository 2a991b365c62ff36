//! `connscope rules check` end to end: the real binary, real users, real files.

use std::process::{Command, Output};

fn connscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(args)
        .output()
        .expect("connscope runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The man page example names users bob and joe; create them if missing
/// (tests run as root). Another test may create them at the same time, so a
/// failed useradd is fine as long as the user exists afterwards.
fn ensure_user(name: &str) {
    let exists = || {
        Command::new("getent")
            .args(["passwd", name])
            .output()
            .unwrap()
            .status
            .success()
    };
    if !exists() {
        let _ = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/usr/sbin/nologin", name])
            .status();
    }
    assert!(exists(), "user {name} could not be created");
}

#[test]
fn man_page_example_is_printed_normalised() {
    ensure_user("bob");
    ensure_user("joe");
    let out = connscope(&[
        "rules",
        "check",
        "-e",
        r#"not raddr 10.0.0.0/255.0.0.0 and rport 25 and (user "bob" or user "joe")"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "((not raddr 10.0.0.0/8 and rport 25) and (user \"bob\" or user \"joe\"))\n"
    );
}

#[test]
fn missing_port_is_reported_with_line_and_column() {
    ensure_user("joe");
    let out = connscope(&["rules", "check", "-e", r#"user "joe" and rport"#]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(
            "-e #1:1:21: expected a port or service name after 'rport', found end of rule\n    \
             user \"joe\" and rport\n                        ^\n"
        ),
        "{stderr}"
    );
}

#[test]
fn every_error_in_every_source_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tcpspy.rules");
    std::fs::write(
        &file,
        "# comment\nlport 22 or lport 21\nrport 70000\nip and\n",
    )
    .unwrap();
    let out = connscope(&[
        "rules",
        "check",
        "-e",
        "ip",
        "-e",
        "lport -",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let file = file.display();
    for expected in [
        "-e #2:1:7: a port range needs at least one end".to_owned(),
        format!("{file}:3:7: port 70000 is out of range (0-65535)"),
        format!("{file}:4:7: expected a condition after 'and', found end of file"),
        "3 errors in the rules".to_owned(),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn rules_from_expressions_and_files_are_listed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules");
    std::fs::write(
        &file,
        "# /etc/tcpspy.rules example\nuser 1003\nlport 22 or lport 21\n(lport 23 and user \"root\") or raddr 192.168.1.20\n",
    )
    .unwrap();
    let out = connscope(&[
        "rules",
        "check",
        "-e",
        "IP6 and rport \"ssh\"",
        "-e",
        " ",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "(ip6 and rport \"ssh\")\n\
         # -e #2: whitespace only, matches no connection\n\
         user 1003\n\
         (lport 22 or lport 21)\n\
         ((lport 23 and user \"root\") or raddr 192.168.1.20)\n"
    );
}

#[test]
fn no_rules_means_everything_is_logged() {
    let out = connscope(&["rules", "check"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        "# no rules: all connections would be logged\n"
    );
}

#[test]
fn juxtaposed_rules_are_split_with_a_warning() {
    let out = connscope(&["rules", "check", "-e", "ip6 lport 22"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "ip6\nlport 22\n");
    assert!(text(&out.stderr).contains("warning: -e #1:1:5: a new rule starts here"));
}
