//! Names through the command line, on a real SQLite store and the real
//! binary: `report edges --by name` groups external servers by the name the
//! host learned, `firewall plan --outbound by-name` allows them by name (an
//! nft set per name; iptables refused), and `firewall check` of that plan
//! fills its name sets from the store, so the host's own history passes,
//! while an address-only plan's check of the same history is unchanged.

use std::path::Path;
use std::process::{Command, Output};

use connscope_event::test_support::EventBuilder;
use connscope_event::ConnectionEvent;
use connscope_store::{AgentId, SqliteStore, Store};

const HOSTILE: &str = "<img src=x onerror=alert(1)>\"; flush ruleset;\n.example";

fn connect(seq: u64, remote: &str, name: Option<&str>) -> ConnectionEvent {
    let mut b = EventBuilder::connect(format!("192.0.2.10:{}", 40000 + seq), remote)
        .at_nanos(1_795_548_137_000_000_000 + seq as i64 * 1_000_000_000)
        .sequence(seq)
        .host("ws1")
        .process(7, "/usr/bin/curl")
        .user("joe");
    if let Some(name) = name {
        b = b.named(name);
    }
    b.build()
}

fn store(dir: &Path) -> String {
    let path = dir.join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    store
        .ingest(
            &AgentId("ws1".into()),
            &[
                connect(1, "203.0.113.7:443", Some("www.example.co.uk")),
                connect(2, "203.0.113.8:443", Some("www.example.co.uk")),
                connect(3, "198.51.100.9:443", Some(HOSTILE)),
                connect(4, "192.0.2.99:443", None),
            ],
        )
        .unwrap();
    path.display().to_string()
}

fn connscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn report_edges_by_name_plan_by_name_and_check_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());

    let json = stdout(&connscope(&[
        "report", "edges", "--db", &db, "--by", "name", "--format", "json",
    ]));
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let names: Vec<(Option<&str>, Option<&str>, usize)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["server_name"].as_str(),
                r["server_domain"].as_str(),
                r["addresses"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            (Some(HOSTILE), Some(HOSTILE), 1),
            (Some("www.example.co.uk"), Some("example.co.uk"), 2),
            (None, None, 1),
        ]
    );
    let table = stdout(&connscope(&[
        "report", "edges", "--db", &db, "--by", "name",
    ]));
    assert!(table.contains("flush ruleset;\\n.example"), "{table}");

    let plan = stdout(&connscope(&[
        "firewall",
        "plan",
        "--db",
        &db,
        "--host",
        "ws1",
        "--outbound",
        "by-name",
    ]));
    assert!(plan.contains("set name4_www_example_co_uk_"), "{plan}");
    assert!(
        plan.contains("ip daddr 192.0.2.99 tcp dport 443 accept"),
        "{plan}"
    );
    assert!(
        !plan.contains("203.0.113.7") && !plan.contains("flush ruleset;"),
        "{plan}"
    );
    let refused = connscope(&[
        "firewall",
        "plan",
        "--db",
        &db,
        "--host",
        "ws1",
        "--outbound",
        "by-name",
        "--format",
        "iptables",
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--outbound by-name needs nftables sets"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // The host's own history passes its by-name plan: check fills the
    // name sets from the store.
    let file = dir.path().join("plan.nft");
    std::fs::write(&file, &plan).unwrap();
    let check = connscope(&[
        "firewall",
        "check",
        "--db",
        &db,
        "--host",
        "ws1",
        "--ruleset",
        file.to_str().unwrap(),
    ]);
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("0 of 4 observed edges would be blocked")
    );
}
