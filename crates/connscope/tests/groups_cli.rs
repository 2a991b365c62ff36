//! `connscope groups` and the reports that read groups, as a user runs them:
//! an imported store, bad input refused with what is wrong, suggestions that
//! change nothing until applied, `report hosts` and `report edges --by group`.

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

/// `ws-01` and `ws-02` (10.9.0.0/24) ssh to `srv` (10.9.1.2) three times
/// and twice; `srv` logs all five.
fn office(dir: &std::path::Path) -> String {
    let mut log = String::new();
    for (ws, ip, n) in [("ws-01", "10.9.0.11", 3), ("ws-02", "10.9.0.12", 2)] {
        for i in 0..n {
            let port = 50000 + i;
            log += &format!("Nov 24 20:10:1{i} {ws} tcpspy[1]: connect: proc /usr/bin/ssh, user joe, local {ip}:{port}, remote 10.9.1.2:ssh\n");
            log += &format!("Nov 24 20:10:1{i} srv tcpspy[2]: connect: proc /usr/sbin/sshd, user root, local 10.9.1.2:22, remote {ip}:{port}\n");
        }
    }
    let path = dir.join("syslog");
    std::fs::write(&path, log).unwrap();
    let db = dir.join("store.db").to_str().unwrap().to_string();
    let (code, _, stderr) =
        connscope(&["import", "--db", &db, "--tz", "UTC", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    db
}

#[test]
fn groups_are_managed_suggested_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = &office(dir.path());

    // Bad input names what is wrong and stores nothing.
    for (args, wanted) in [
        (
            vec!["", "--names", "ws-*"],
            "a group name must not be empty",
        ),
        (
            vec!["<i>x</i>", "--names", "ws-*"],
            "group name \"<i>x</i>\" contains '<'",
        ),
        (
            vec!["ws", "--names", "ws-[0-"],
            "name pattern \"ws-[0-\" is not a valid glob",
        ),
        (
            vec!["net", "--addresses", "10.9.0.1/24"],
            "did you mean 10.9.0.0/24?",
        ),
        (
            vec!["net", "--addresses", "10.9.0.0/33"],
            "prefix length \"33\" is not 0 to 32",
        ),
        (
            vec!["ws", "--names", "ws-*", "--label", "role"],
            "label \"role\" is not key=value",
        ),
    ] {
        let mut full = vec!["groups", "add", "--db", db];
        full.extend(args);
        let (code, _, stderr) = connscope(&full);
        assert_eq!(code, 1, "{full:?}");
        assert!(stderr.contains(wanted), "{full:?}: {stderr}");
    }
    let (_, stdout, _) = connscope(&["groups", "list", "--db", db]);
    assert!(stdout.starts_with("no groups"), "{stdout}");

    // Suggestions print their would-be members and store nothing...
    let (code, stdout, _) = connscope(&["groups", "suggest", "--db", db]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("net-10-9-0-0-24\taddresses 10.9.0.0/24\t2 hosts share 10.9.0.0/24\n    would have: ws-01 ws-02"),
        "{stdout}"
    );
    assert!(stdout.contains("ws\tnames ws-*\t"), "{stdout}");
    let (_, stdout, _) = connscope(&["groups", "list", "--db", db]);
    assert!(stdout.starts_with("no groups"), "{stdout}");
    // ...until applied.
    let (code, stdout, stderr) = connscope(&[
        "groups",
        "suggest",
        "--db",
        db,
        "--apply",
        "net-10-9-0-0-24",
    ]);
    assert_eq!(
        (code, stdout.as_str()),
        (0, "added group net-10-9-0-0-24\n"),
        "{stderr}"
    );

    let (code, stdout, stderr) = connscope(&[
        "groups",
        "add",
        "--db",
        db,
        "servers",
        "--hosts",
        "srv",
        "gone",
        "--label",
        "role=server",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("1 member(s) now"), "{stdout}");
    let (code, _, stderr) = connscope(&["groups", "add", "--db", db, "servers", "--hosts", "srv"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("group \"servers\" exists"), "{stderr}");

    let (_, stdout, _) = connscope(&["groups", "show", "--db", db, "servers"]);
    assert_eq!(
        stdout,
        "group servers\n  hosts: srv gone\n  labels: role=server\n  members (1):\n    srv\n  listed but not seen: gone\n"
    );
    let (_, stdout, _) = connscope(&["groups", "list", "--db", db]);
    assert_eq!(
        stdout,
        "net-10-9-0-0-24\taddresses 10.9.0.0/24\t\t2 member(s)\nservers\thosts srv gone\trole=server\t1 member(s)\n"
    );

    let (code, stdout, _) = connscope(&[
        "groups",
        "label",
        "--db",
        db,
        "ws-01",
        "location=hq",
        "role=ws",
    ]);
    assert_eq!((code, stdout.as_str()), (0, "ws-01: location=hq,role=ws\n"));
    let (_, stdout, _) = connscope(&["groups", "label", "--db", db, "ws-01", "role="]);
    assert_eq!(stdout, "ws-01: location=hq\n");

    // Reports read the groups.
    let (_, stdout, _) = connscope(&["report", "hosts", "--db", db, "--format", "csv"]);
    let rows: Vec<&str> = stdout.lines().collect();
    assert!(rows[0].starts_with("host,groups,agent"), "{stdout}");
    assert!(
        rows.iter().any(|r| r.starts_with("srv,servers,")),
        "{stdout}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with("ws-02,net-10-9-0-0-24,")),
        "{stdout}"
    );
    let (code, stdout, stderr) = connscope(&[
        "report", "edges", "--db", db, "--by", "group", "--format", "csv",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "client_group,server_group,server_port,protocol,edges,connections,failures\n\
         net-10-9-0-0-24,servers,22,tcp,2,5,0\n"
    );

    let (code, stdout, _) = connscope(&["groups", "remove", "--db", db, "servers"]);
    assert_eq!((code, stdout.as_str()), (0, "removed group servers\n"));
    let (code, _, stderr) = connscope(&["groups", "remove", "--db", db, "servers"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no group \"servers\""), "{stderr}");
    let (_, stdout, _) = connscope(&[
        "report", "edges", "--db", db, "--by", "group", "--format", "csv",
    ]);
    assert!(
        stdout.ends_with("net-10-9-0-0-24,(ungrouped),22,tcp,2,5,0\n"),
        "{stdout}"
    );
}
