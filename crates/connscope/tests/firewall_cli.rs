//! `connscope firewall` end to end: a real SQLite store, the real binary, and
//! `nft -c` (in a throw-away network namespace) on what it prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use connscope_event::test_support::EventBuilder;
use connscope_event::{ConnectionEvent, Direction};
use connscope_store::{AgentId, SqliteStore, Store};

fn event(seq: u64, dir: Direction, local: &str, remote: &str, exe: &str) -> ConnectionEvent {
    EventBuilder::connect(local, remote)
        .at_nanos(1_795_548_137_000_000_000 + seq as i64 * 1_000_000_000)
        .direction(dir)
        .sequence(seq)
        .host("web1")
        .process(7, exe)
        .user("www-data")
        .build()
}

fn store(dir: &Path) -> String {
    let path = dir.join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    let events = vec![
        event(
            1,
            Direction::Incoming,
            "192.0.2.10:22",
            "198.51.100.1:40001",
            "/usr/sbin/sshd",
        ),
        event(
            2,
            Direction::Incoming,
            "192.0.2.10:80",
            "198.51.100.1:40003",
            "/usr/sbin/nginx",
        ),
        event(
            3,
            Direction::Incoming,
            "192.0.2.10:80",
            "198.51.100.3:40005",
            "/usr/sbin/nginx",
        ),
        event(
            4,
            Direction::Outgoing,
            "192.0.2.10:40006",
            "203.0.113.9:80",
            "/tmp/evil\"; flush ruleset;",
        ),
        event(
            5,
            Direction::Incoming,
            "[2001:db8::10]:443",
            "[2001:db8:1::7]:40007",
            "/usr/sbin/nginx",
        ),
    ];
    store.ingest(&AgentId("web1".into()), &events).unwrap();
    path.display().to_string()
}

fn connscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `contents` to `name` in `dir` and returns the path.
fn write_file(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// `connscope firewall SUBCOMMAND --db DB --host web1 --ruleset RULESET`.
fn firewall_with_ruleset(subcommand: &str, db: &str, ruleset: &Path) -> Output {
    connscope(&[
        "firewall",
        subcommand,
        "--db",
        db,
        "--host",
        "web1",
        "--ruleset",
        ruleset.to_str().unwrap(),
    ])
}

/// Adds the network namespace `csfw-TAG-PID` and returns its name; the test
/// deletes it once done with it.
fn add_netns(tag: &str) -> String {
    let ns = format!("csfw-{tag}-{}", std::process::id());
    assert!(Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap()
        .success());
    ns
}

#[test]
#[cfg_attr(
    not(feature = "system-tests"),
    ignore = "root: nft in a netns; scripts/test runs it"
)]
fn plan_passes_nft_check_and_check_lists_exactly_the_blocked_service() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());

    let plan = connscope(&[
        "firewall", "plan", "--db", &db, "--host", "web1", "--widen", "24", "--reject",
    ]);
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let plan_file = write_file(dir.path(), "plan.nft", &plan.stdout);
    let ns = add_netns("cli");
    let nft = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "nft",
            "-c",
            "-f",
            plan_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    assert!(
        nft.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&nft.stderr),
        text(&plan)
    );
    assert!(
        text(&plan).contains("ip saddr 198.51.100.0/24 tcp dport { 22, 80 } accept"),
        "{}",
        text(&plan)
    );

    // The plan blocks none of the history it was made from.
    let own = firewall_with_ruleset("check", &db, &plan_file);
    assert_eq!(own.status.code(), Some(0), "{}", text(&own));

    let block_http = write_file(
        dir.path(),
        "block-http.nft",
        "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\ttcp dport http drop\n\t}\n}\n",
    );
    let out = firewall_with_ruleset("check", &db, &block_http);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = text(&out);
    let blocked: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("BLOCKED"))
        .collect();
    assert_eq!(blocked.len(), 2, "{report}");
    assert!(
        blocked
            .iter()
            .all(|l| l.contains("inbound tcp port 80") && l.contains("nginx")),
        "{report}"
    );
    assert!(
        report.contains("2 of 5 observed edges would be blocked"),
        "{report}"
    );

    // A broken ruleset is an error with file, line, column and a caret.
    let broken = write_file(
        dir.path(),
        "broken.nft",
        "table inet f {\n\tchain c {\n\t\ttcp dport 99999 accept\n\t}\n}\n",
    );
    let out = firewall_with_ruleset("check", &db, &broken);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains(&format!("{}:3:13:", broken.display())) && err.contains('^'),
        "{err}"
    );
}

/// A host's ruleset as Debian keeps it: a top file including a glob of
/// files, one found through `-I`.
#[test]
fn check_reads_a_ruleset_split_over_included_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(dir.path().join("nftables.d")).unwrap();
    std::fs::create_dir_all(&lib).unwrap();
    write_file(
        &lib,
        "table.nft",
        "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority 0; policy drop;\n\t}\n}\n",
    );
    write_file(
        &dir.path().join("nftables.d"),
        "10-ssh.nft",
        "add rule inet filter input tcp dport 22 accept\n",
    );
    write_file(
        &dir.path().join("nftables.d"),
        "20-web.nft",
        "add rule inet filter input tcp dport { 80, 443 } accept\n",
    );
    let conf = write_file(
        dir.path(),
        "nftables.conf",
        format!(
            "include \"table.nft\"\ninclude \"{}/nftables.d/*.nft\"\n",
            dir.path().display()
        ),
    );
    let check = |extra: &[&str]| {
        let mut args = vec![
            "firewall",
            "check",
            "--db",
            &db,
            "--host",
            "web1",
            "--ruleset",
            conf.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        connscope(&args)
    };

    let out = check(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains(&format!("{}:1:", conf.display())) && err.contains("table.nft"),
        "{err}"
    );

    let out = check(&["-I", lib.to_str().unwrap()]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    // The included rules let ssh and http in; answers to the outbound
    // connection and IPv6 neighbour discovery meet the policy.
    assert!(
        report.contains("2 of 5 observed edges would be blocked"),
        "{report}"
    );
    assert!(
        !report.contains("inbound tcp port 22") && !report.contains("inbound tcp port 80"),
        "{report}"
    );
}

#[test]
fn diff_against_a_file_reports_blocked_and_unused() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    let ruleset = write_file(
        dir.path(),
        "current.nft",
        "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority 0; policy drop;\n\t\tct state established,related accept\n\t\ttcp dport { 22, 80 } accept\n\t\ttcp dport 3306 accept\n\t}\n}\n",
    );
    let out = firewall_with_ruleset("diff", &db, &ruleset);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("Observed but blocked (1):"), "{report}");
    assert!(report.contains("inbound tcp port 443"), "{report}");
    assert!(report.contains("Allowed but never used (1):"), "{report}");
    assert!(report.contains("tcp dport 3306 accept"), "{report}");
    assert!(report.contains("Listening ports: not checked"), "{report}");
}

#[test]
#[cfg_attr(
    not(feature = "system-tests"),
    ignore = "root: nft in a netns; scripts/test runs it"
)]
fn diff_live_reads_the_loaded_ruleset_of_its_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    let ns = add_netns("live");
    let rules = write_file(
        dir.path(),
        "loaded.nft",
        // Without the established line the input policy would drop the answers
        // to the outbound connection too, and `check` replays answers.
        "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority 0; policy drop;\n\t\tct state established,related accept\n\t\ttcp dport 22 accept\n\t\tudp dport 5353 limit rate 5/second accept\n\t}\n}\n",
    );
    let load = Command::new("ip")
        .args(["netns", "exec", &ns, "nft", "-f", rules.to_str().unwrap()])
        .status()
        .unwrap();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            env!("CARGO_BIN_EXE_connscope"),
            "firewall",
            "diff",
            "--db",
            &db,
            "--host",
            "web1",
            "--live",
        ])
        .output()
        .unwrap();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    assert!(load.success());
    let report = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Port 80 (twice) and 443 are blocked; the rate-limited rule is reported as not evaluated.
    assert!(report.contains("Observed but blocked (3):"), "{report}");
    assert!(report.contains("Not evaluated"), "{report}");
    assert!(report.contains("limit"), "{report}");
}
