#![cfg(feature = "system-tests")] // starts clickhouse-server
//! `connscope store migrate` from SQLite to ClickHouse: afterwards `report`,
//! `map export`, `firewall plan|check` and `groups` print the same on the
//! copy as on the original; run again, it copies nothing twice.

#[path = "../../store/tests/support/clickhouse_server.rs"]
mod clickhouse_server;

use std::path::Path;
use std::process::{Command, Output};

use clickhouse_server::ClickHouseServer;
use connscope_event::test_support::EventBuilder;
use connscope_event::{Direction, Timestamp};
use connscope_store::{AgentId, GroupKind, HostGroup, Origin, SqliteStore, Store};

fn connscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A small office: web1 serves ssh and http to two workstations, which
/// log their side too; a gap, a reported drop and a downtime window.
fn office(path: &Path) {
    let store = SqliteStore::open(path).unwrap();
    let start = Timestamp::now().as_nanos() - 6 * 3_600_000_000_000;
    let at = |n: u64| start + n as i64 * 60_000_000_000;
    let origin = |instance: &str| Origin {
        instance: instance.into(),
        boot: "boot-1".into(),
        first_sequence: 1,
    };
    let mut web = Vec::new();
    let mut workstations: Vec<Vec<_>> = vec![Vec::new(), Vec::new()];
    for n in 1..=200u64 {
        let ws = (n % 2) as usize;
        let client = format!("10.0.0.{}", 10 + ws);
        let port = if n % 3 == 0 { 80 } else { 22 };
        web.push(
            EventBuilder::connect(
                "10.0.0.1:".to_owned() + &port.to_string(),
                format!("{client}:{}", 40_000 + n).as_str(),
            )
            .direction(Direction::Incoming)
            .at_nanos(at(n))
            .sequence(n)
            .host("web1")
            .process(
                10,
                if port == 22 {
                    "/usr/sbin/sshd"
                } else {
                    "/usr/sbin/nginx"
                },
            )
            .build(),
        );
        let seq = workstations[ws].len() as u64 + 1;
        workstations[ws].push(
            EventBuilder::connect(
                format!("{client}:{}", 40_000 + n).as_str(),
                format!("10.0.0.1:{port}").as_str(),
            )
            .direction(Direction::Outgoing)
            .at_nanos(at(n))
            .sequence(seq)
            .host(format!("ws-{ws}"))
            .uid(1000)
            .user("joe")
            .process(20, "/usr/bin/ssh")
            .build(),
        );
    }
    let web_agent = AgentId("web1".into());
    // 151..=160 never arrive; 161..=170 were reported dropped.
    store
        .ingest_from(&web_agent, &origin("web1-state"), &web[..150])
        .unwrap();
    store
        .ingest_from(&web_agent, &origin("web1-state"), &web[170..])
        .unwrap();
    store
        .record_dropped_from(&web_agent, "web1-state", "spool-full", &[(161, 170)])
        .unwrap();
    store
        .record_downtime(
            &web_agent,
            "web1-state",
            &[(
                Timestamp::from_nanos(at(300)),
                Timestamp::from_nanos(at(310)),
            )],
        )
        .unwrap();
    for (ws, events) in workstations.iter().enumerate() {
        let agent = AgentId(format!("ws-{ws}"));
        store
            .ingest_from(&agent, &origin(&format!("ws-{ws}-state")), events)
            .unwrap();
    }
    store
        .record_refusal(&web_agent, "too-large", Timestamp::from_nanos(at(5)))
        .unwrap();
    store
        .put_group(&HostGroup {
            name: "workstations".into(),
            kind: GroupKind::Names,
            patterns: vec!["ws-*".into()],
            labels: vec![("role".into(), "desk".into())],
        })
        .unwrap();
    store
        .set_host_label("web1", "room", Some("basement"))
        .unwrap();
}

#[test]
fn a_store_migrated_to_clickhouse_reads_the_same() {
    let server = ClickHouseServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("office.db");
    office(&db);
    let sqlite = format!("sqlite:{}", db.display());
    let clickhouse = server.location("office");

    let first = ok(connscope(&[
        "store",
        "migrate",
        "--from",
        &sqlite,
        "--to",
        &clickhouse,
    ]));
    assert!(
        first.contains("380 events copied, 0 already there"),
        "{first}"
    );
    // Run again (an interrupted copy is resumed so): nothing twice.
    let again = ok(connscope(&[
        "store",
        "migrate",
        "--from",
        &sqlite,
        "--to",
        &clickhouse,
    ]));
    assert!(
        again.contains("0 events copied, 380 already there"),
        "{again}"
    );

    let plan = dir.path().join("plan.nft");
    let same = |args: &[&str]| {
        let on = |store: &str| ok(connscope(&[args, &["--store", store]].concat()));
        let (original, copy) = (on(&sqlite), on(&clickhouse));
        assert_eq!(original, copy, "{args:?}");
        original
    };
    let hosts = same(&["report", "hosts"]);
    assert!(hosts.contains("web1"), "{hosts}");
    same(&["report", "hosts", "--format", "json"]);
    same(&["report", "edges", "--format", "json"]);
    same(&["report", "ports"]);
    same(&["report", "refusals"]);
    same(&["groups", "list"]);
    let nft = same(&["firewall", "plan", "--host", "web1"]);
    assert!(nft.contains("22"), "{nft}");
    std::fs::write(&plan, &nft).unwrap();
    same(&[
        "firewall",
        "check",
        "--host",
        "web1",
        "--ruleset",
        plan.to_str().unwrap(),
    ]);
    let html = |store: &str, name: &str| {
        let out = dir.path().join(name);
        ok(connscope(&[
            "map",
            "export",
            "--store",
            store,
            "--output",
            out.to_str().unwrap(),
        ]));
        std::fs::read(out).unwrap()
    };
    assert!(
        html(&sqlite, "a.html") == html(&clickhouse, "b.html"),
        "map export differs"
    );
}
