#![cfg(feature = "system-tests")] // Debian's Chromium, driven from node
//! The connection map in a real browser: runs `web/tests/map-e2e.mjs` (headless
//! Debian Chromium driven by playwright-core) against this build's `connscope`
//! binary: a real collector on 127.0.0.1 with a real SQLite store, and the
//! `map export` file opened from file://. The script prints one line per check
//! and `N passed, N failed`; screenshots land in target/tmp/map-e2e/.
//!
//! `web/tests/map-office.mjs` measures readability (issue 17) on the generated
//! office store (`Office::map_store`, plus firewall hits of its last day:
//! workstations' backups a policy would block, a server's refused
//! clients), served and exported, and at 2,000 nodes / 10,000 edges;
//! screenshots in target/tmp/map-office/.

mod browser;

use std::net::SocketAddr;
use std::path::Path;

use connscope_event::test_support::EventBuilder;
use connscope_event::{Direction, EventKind, Timestamp};
use connscope_firewall::office::Office;
use connscope_protocol::policy::Staging;
use connscope_store::{
    AgentId, AssignedVersion, AssignmentChange, AssignmentTarget, SqliteStore, Store,
};

#[test]
fn the_map_draws_filters_and_exports_in_chromium() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("map-e2e");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    seed_aged_audit(&db);
    browser::run_browser_script("map-e2e.mjs", &out, &["--db".as_ref(), db.as_os_str()]);
    for shot in ["served-details.png", "export.png"] {
        assert!(out.join(shot).is_file(), "no screenshot {shot}");
    }
}

#[test]
fn the_office_map_is_readable_at_first_sight_and_fully_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("office.db");
    let (office, store) = Office::map_store(&db).expect("the office store is written");
    add_firewall_hits(&office, &store);
    drop(store);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("map-office");
    browser::run_browser_script("map-office.mjs", &out, &["--db".as_ref(), db.as_os_str()]);
    for shot in ["office-first.png", "office-open.png", "big-open.png"] {
        assert!(out.join(shot).is_file(), "no screenshot {shot}");
    }
}

/// Host `lab1` has audited policy `labs` for ten days: the one part of the
/// loop the script cannot write through the CLI, which stamps assignments
/// with the present. The store is the real one the script's collector then
/// serves; everything else of the loop is written by the script through
/// the CLI and the collector's API.
fn seed_aged_audit(db: &Path) {
    let store = SqliteStore::open(db).unwrap();
    let document = "format = 1\nname = \"labs\"\ntarget = { host = \"lab1\" }\n\n\
        [[inbound]]\nprotocol = \"tcp\"\nports = [22]\npeers = [\"10.77.0.0/24\"]\n";
    let ten_days_ago = Timestamp::from_nanos(Timestamp::now().as_nanos() - 10 * 86_400_000_000_000);
    let version = store
        .put_policy("labs", document, "ann", "lab hosts", ten_days_ago)
        .unwrap();
    store
        .assign_policy(&AssignmentChange {
            target: AssignmentTarget::Host("lab1".into()),
            assigned: Some(AssignedVersion {
                policy: "labs".into(),
                version: version.version,
                staging: Staging::default(),
            }),
            at: ten_days_ago,
            by: "ann".into(),
        })
        .unwrap();
}

/// The policy loop's hits in the office's last hour of data: three
/// workstations' backups to the first server that their policy (in audit
/// mode) would block, one of them also to an outside address, and the
/// server refusing (enforce mode) a workstation's PostgreSQL client.
fn add_firewall_hits(office: &Office, store: &dyn Store) {
    let last = store
        .agents()
        .unwrap()
        .iter()
        .map(|a| a.last_seen)
        .max()
        .expect("the office has data");
    let at = |minutes: i64| Timestamp::from_nanos(last.as_nanos() - minutes * 60_000_000_000);
    let hosts = |group: &str| {
        office
            .hosts
            .iter()
            .filter(|h| h.group == group && h.logs)
            .collect::<Vec<_>>()
    };
    let (workstations, servers) = (hosts("workstations"), hosts("servers"));
    let server = servers[0];
    for (i, ws) in workstations.iter().take(3).enumerate() {
        let mut events = vec![EventBuilder::connect(
            SocketAddr::new(ws.ip, 41_000),
            SocketAddr::new(server.ip, 873),
        )
        .kind(EventKind::WouldBlock)
        .at(at(50 - i as i64))
        .host(&ws.name)
        .user("root")
        .process(700 + i as u32, "/usr/bin/rsync")
        .build()];
        if i == 0 {
            events.push(
                EventBuilder::connect(SocketAddr::new(ws.ip, 41_001), "198.51.100.200:8022")
                    .kind(EventKind::WouldBlock)
                    .at(at(40))
                    .host(&ws.name)
                    .user("alice")
                    .process(800, "/usr/bin/tar")
                    .build(),
            );
        }
        store.ingest(&AgentId(ws.name.clone()), &events).unwrap();
    }
    let refused = EventBuilder::connect(
        SocketAddr::new(server.ip, 5432),
        SocketAddr::new(workstations[3].ip, 52_000),
    )
    .kind(EventKind::Blocked)
    .direction(Direction::Incoming)
    .at(at(30))
    .host(&server.name)
    .build();
    store
        .ingest(&AgentId(server.name.clone()), &[refused])
        .unwrap();
}
