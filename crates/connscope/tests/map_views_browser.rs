#![cfg(feature = "system-tests")] // Debian's Chromium, driven from node
//! The map's other views (matrix, table) and the backtest panel in a real
//! browser: runs `web/tests/views-e2e.mjs` against this build's `connscope`
//! binary, a real collector on 127.0.0.1 serving a real SQLite store with the
//! generated office (`connscope_firewall::office`: 30 hosts in 4 groups over
//! 16 days, its groups stored as `connscope groups` keeps them) and a kiosk
//! whose process and user names are CSV formulas and markup. Screenshots land
//! in target/tmp/views-e2e/.

mod browser;

use std::path::Path;

use connscope_event::test_support::EventBuilder;
use connscope_event::Direction;
use connscope_firewall::office::{Office, START_NS};
use connscope_store::{AgentId, GroupKind, HostGroup, Store};

/// Names a spreadsheet would run as formulas, or that break a naive CSV
/// (comma, quote, newline) or page (markup).
const HOSTILE_EXE: &str = "=HYPERLINK(\"http://x.invalid/?\",\"click\"),\"\n=1+1";
const HOSTILE_USER: &str = "@SUM(1+1)<img src=x onerror=alert(1)>";
const HOSTILE_EXE_2: &str = "+cmd|' /C calc'!A0";
const HOSTILE_EXE_3: &str = "-2+3,\"x\"";

#[test]
fn matrix_table_and_backtest_views_in_chromium() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("views-e2e");
    std::fs::create_dir_all(&out).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("office.db");
    let (office, store) = Office::in_store(&db).unwrap();
    for group in office.groups() {
        store
            .put_group(&HostGroup {
                name: group.name.clone(),
                kind: GroupKind::Hosts,
                patterns: group.hosts.iter().cloned().collect(),
                labels: Vec::new(),
            })
            .unwrap();
    }
    // A kiosk on day 16 using the file server and the intranet.
    let day16 = START_NS + 15 * 86_400 * 1_000_000_000 + 9 * 3_600 * 1_000_000_000;
    let kiosk: Vec<_> = [
        ("10.16.2.10:445", HOSTILE_EXE),
        ("10.16.2.12:443", HOSTILE_EXE_2),
        ("10.16.2.11:993", HOSTILE_EXE_3),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (server, exe))| {
        EventBuilder::connect(format!("10.16.1.99:{}", 40_000 + i).as_str(), server)
            .at_nanos(day16 + i as i64 * 60_000_000_000)
            .direction(Direction::Outgoing)
            .sequence(i as u64 + 1)
            .host("kiosk-01")
            .process(4242, exe)
            .user(HOSTILE_USER)
            .build()
    })
    .collect();
    store.ingest(&AgentId("kiosk-01".into()), &kiosk).unwrap();
    drop(store);
    browser::run_browser_script("views-e2e.mjs", &out, &["--db".as_ref(), db.as_os_str()]);
    for shot in [
        "matrix.png",
        "table.png",
        "backtest.png",
        "export-views.png",
    ] {
        assert!(out.join(shot).is_file(), "no screenshot {shot}");
    }
}
