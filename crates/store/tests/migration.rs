//! A store written by an older build opens, is migrated, and keeps what it
//! had. `fixtures/schema-v3.db.gz` was written by commit 9bd8160 (schema
//! version 3): `connscope import` of tcpspy-log's `syslog-rfc3339.log`.

use std::io::Read;

use connscope_event::Timestamp;
use connscope_store::{AgentId, RefusalCount, SqliteStore, Store};

/// A gzipped fixture store written out to a temporary directory, to be
/// opened (and migrated) there; the directory lives as long as the first value.
fn unpacked(gzipped: &[u8], name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(gzipped)
        .read_to_end(&mut bytes)
        .unwrap();
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// The schema version the store's `meta` table records.
fn schema_version(conn: &rusqlite::Connection) -> String {
    conn.query_row(
        "SELECT value FROM meta WHERE name = 'schema_version'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

fn group_names(store: &SqliteStore) -> Vec<String> {
    store
        .groups()
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect()
}

#[test]
fn a_version_3_store_is_migrated_and_counts_refusals() {
    let (_dir, path) = unpacked(include_bytes!("fixtures/schema-v3.db.gz"), "v3.db");

    let store = SqliteStore::open(&path).unwrap();
    let agents = store.agents().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!((agents[0].host.as_str(), agents[0].events), ("vm", 24));
    assert!(store.refusals().unwrap().is_empty());

    let web1 = AgentId("web1".into());
    for (reason, secs) in [("too-large", 10), ("too-large", 20), ("bad-event", 5)] {
        store
            .record_refusal(&web1, reason, Timestamp::from_nanos(secs * 1_000_000_000))
            .unwrap();
    }
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    let count = |reason: &str, batches, secs: i64| RefusalCount {
        agent: web1.clone(),
        reason: reason.into(),
        batches,
        last_at: Timestamp::from_nanos(secs * 1_000_000_000),
    };
    assert_eq!(
        store.refusals().unwrap(),
        [count("bad-event", 1, 5), count("too-large", 2, 20)]
    );
    assert_eq!(
        store.agents().unwrap().len(),
        1,
        "a refusal stores no events"
    );
}

/// `fixtures/v6-dual-stack.db.gz`, written at schema version 6 (see the
/// fixtures' README): it opens at version 7 with its hosts and addresses,
/// and keeps host groups and labels from then on.
#[test]
fn a_version_6_store_is_migrated_and_keeps_groups() {
    use connscope_store::{GroupKind, HostGroup, HostLabel};

    let (_dir, path) = unpacked(include_bytes!("fixtures/v6-dual-stack.db.gz"), "v6.db");

    let store = SqliteStore::open(&path).unwrap();
    let hosts: Vec<(String, String)> = store
        .host_addresses()
        .unwrap()
        .into_iter()
        .map(|a| (a.host, a.ip.to_string()))
        .collect();
    assert_eq!(
        hosts,
        [
            ("app1".to_string(), "192.0.2.10".to_string()),
            ("ws1".to_string(), "192.0.2.20".to_string())
        ]
    );
    assert!(store.groups().unwrap().is_empty());

    let servers = HostGroup {
        name: "servers".into(),
        kind: GroupKind::Addresses,
        patterns: vec!["192.0.2.0/28".into(), "2001:db8::/64".into()],
        labels: vec![("role".into(), "server".into())],
    };
    let workstations = HostGroup {
        name: "workstations".into(),
        kind: GroupKind::Names,
        patterns: vec!["ws*".into()],
        labels: vec![],
    };
    store.put_group(&servers).unwrap();
    store.put_group(&workstations).unwrap();
    store.set_host_label("ws1", "location", Some("hq")).unwrap();
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.groups().unwrap(), [servers, workstations]);
    assert_eq!(
        store.host_labels().unwrap(),
        [HostLabel {
            host: "ws1".into(),
            key: "location".into(),
            value: "hq".into()
        }]
    );
    assert_eq!(
        schema_version(&rusqlite::Connection::open(&path).unwrap()),
        "12"
    );
}

/// `fixtures/v7-dual-stack.db.gz`, written at schema version 7 (see the
/// fixtures' README): it opens at version 10 with its hosts and its group,
/// keeps access tokens as digests from then on, and revokes them.
#[test]
fn a_version_7_store_is_migrated_and_keeps_tokens() {
    use connscope_store::{TokenKind, TokenRecord, TokenRefusal};

    let (_dir, path) = unpacked(include_bytes!("fixtures/v7-dual-stack.db.gz"), "v7.db");

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.host_addresses().unwrap().len(), 2);
    assert_eq!(group_names(&store), ["servers"]);
    assert!(store.tokens().unwrap().is_empty());

    let at = |secs: i64| Timestamp::from_nanos(secs * 1_000_000_000);
    let enrollment = TokenRecord {
        id: "e1".into(),
        kind: TokenKind::Enrollment,
        digest: [1; 32],
        agent: "ws1".into(),
        created: at(100),
        expires: Some(at(200)),
        reusable: false,
        uses: 0,
        last_used: None,
        revoked: None,
    };
    store.add_token(&enrollment).unwrap();
    assert!(store.add_token(&enrollment).is_err(), "an id is kept once");
    let agent_token = TokenRecord {
        id: "a1".into(),
        kind: TokenKind::Agent,
        digest: [2; 32],
        agent: "ignored".into(),
        expires: None,
        ..enrollment.clone()
    };
    let stored = store
        .redeem_enrollment(&[1; 32], &agent_token, at(150))
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.kind, stored.agent.as_str()),
        (TokenKind::Agent, "ws1")
    );
    let again = TokenRecord {
        id: "a2".into(),
        digest: [3; 32],
        ..agent_token.clone()
    };
    assert_eq!(
        store.redeem_enrollment(&[1; 32], &again, at(160)).unwrap(),
        Err(TokenRefusal::Used)
    );
    assert_eq!(
        store.redeem_enrollment(&[9; 32], &again, at(160)).unwrap(),
        Err(TokenRefusal::Unknown)
    );
    store.touch_token(&[2; 32], at(170)).unwrap();
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    let ws1 = store.token_by_digest(&[2; 32]).unwrap().unwrap();
    assert_eq!(ws1.last_used, Some(at(170)));
    assert!(ws1.valid_at(at(1000)).is_ok(), "agent tokens do not expire");
    assert!(store.revoke_token("a1", at(180)).unwrap());
    assert!(!store.revoke_token("nope", at(180)).unwrap());
    let ws1 = store.token_by_digest(&[2; 32]).unwrap().unwrap();
    assert_eq!(ws1.valid_at(at(181)), Err(TokenRefusal::Revoked));
    let used = store.token_by_digest(&[1; 32]).unwrap().unwrap();
    assert_eq!(
        (used.uses, used.valid_at(at(250))),
        (1, Err(TokenRefusal::Expired))
    );
    assert_eq!(store.tokens().unwrap().len(), 2);
    store.probe_write(at(300)).unwrap();
}

/// `fixtures/v7-names.db.gz`, written at schema version 7 (see the
/// fixtures' README): it opens at version 10, its blocks read as unnamed
/// events, and named events are stored and named from then on.
#[test]
fn a_version_7_store_is_migrated_and_keeps_names() {
    use connscope_event::test_support::EventBuilder;
    use connscope_store::{EventQuery, RollupQuery, TimeRange};

    let (_dir, path) = unpacked(include_bytes!("fixtures/v7-names.db.gz"), "v7.db");

    let store = SqliteStore::open(&path).unwrap();
    let all = EventQuery {
        range: TimeRange::ALL,
        host: None,
        limit: usize::MAX,
    };
    let old = store.events(&all).unwrap();
    assert_eq!(old.len(), 10);
    assert!(old.iter().all(|e| e.remote_name.is_none()));
    let everything = RollupQuery {
        range: TimeRange::ALL,
        host: None,
    };
    assert!(store.remote_names(&everything).unwrap().is_empty());

    let named = EventBuilder::connect("192.0.2.20:41000", "198.51.100.7:443")
        .host("ws1")
        .sequence(1)
        .at_nanos(1_800_000_000_000_000_000)
        .named("<b>www</b>.example.org")
        .build();
    store
        .ingest(&AgentId("ws1".into()), std::slice::from_ref(&named))
        .unwrap();
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    let events = store.events(&all).unwrap();
    assert_eq!(events.len(), 11);
    assert!(events.contains(&named));
    let names = store.remote_names(&everything).unwrap();
    assert_eq!(names.len(), 1);
    assert_eq!(
        (
            names[0].host.as_str(),
            names[0].name.as_str(),
            names[0].connections
        ),
        ("ws1", "<b>www</b>.example.org", 1)
    );
    assert_eq!(
        schema_version(&rusqlite::Connection::open(&path).unwrap()),
        "12"
    );
}

/// `fixtures/v9-names.db.gz`, written at schema version 9 (see the
/// fixtures' README): it opens at version 12 with its events and group,
/// and keeps policy versions and assignments from then on.
#[test]
fn a_version_9_store_is_migrated_and_keeps_policies() {
    use connscope_store::{
        AssignedVersion, AssignmentChange, AssignmentTarget, EventQuery, TimeRange,
    };

    let (_dir, path) = unpacked(include_bytes!("fixtures/v9-names.db.gz"), "v9.db");
    let store = SqliteStore::open(&path).unwrap();
    let all = EventQuery {
        range: TimeRange::ALL,
        host: None,
        limit: usize::MAX,
    };
    assert_eq!(store.events(&all).unwrap().len(), 11);
    assert_eq!(store.groups().unwrap()[0].name, "servers");
    assert_eq!(store.assignment_revision().unwrap(), 0);
    assert!(store.firewall_states().unwrap().is_empty());
    let at = Timestamp::from_nanos(1_800_000_000_000_000_000);
    let v1 = store
        .put_policy("servers", "format = 1\n", "ann", "", at)
        .unwrap();
    let assigned = store
        .assign_policy(&AssignmentChange {
            target: AssignmentTarget::Group("servers".into()),
            assigned: Some(AssignedVersion {
                policy: v1.name.clone(),
                version: v1.version,
                staging: Default::default(),
            }),
            at,
            by: "ann".into(),
        })
        .unwrap();
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.policy_versions("servers").unwrap(), [v1]);
    assert_eq!(store.policy_assignments().unwrap(), [assigned]);
    assert_eq!(
        schema_version(&rusqlite::Connection::open(&path).unwrap()),
        "12"
    );
}

/// `fixtures/v9-hits.db.gz`, written at schema version 9 (see the
/// fixtures' README) with would-block and blocked events among
/// connections: it opens at version 12; its blocks, which have no hit
/// count, are still read for hits; blocks stored from then on count theirs,
/// and reading hits goes through the index of blocks that may hold any.
#[test]
fn a_version_9_store_is_migrated_and_keeps_its_firewall_hits() {
    use connscope_event::test_support::EventBuilder;
    use connscope_event::EventKind;
    use connscope_store::{FirewallHitQuery, TimeRange};

    let (_dir, path) = unpacked(include_bytes!("fixtures/v9-hits.db.gz"), "v9.db");
    let all = FirewallHitQuery {
        range: TimeRange::ALL,
        host: None,
    };
    let store = SqliteStore::open(&path).unwrap();
    let old: Vec<(String, EventKind, u16, u64)> = store
        .firewall_hits(&all)
        .unwrap()
        .into_iter()
        .map(|h| (h.host, h.kind, h.service_port, h.count))
        .collect();
    assert_eq!(
        old,
        [
            ("srv-01".to_owned(), EventKind::Blocked, 5432, 1),
            ("ws-01".to_owned(), EventKind::WouldBlock, 873, 2),
        ]
    );

    let at = 1_796_000_100_000_000_000;
    let event = |seq: u64, kind: EventKind| {
        EventBuilder::connect("10.20.0.11:41000", "10.20.0.5:873")
            .kind(kind)
            .host("ws-01")
            .user("root")
            .process(106, "/usr/bin/rsync")
            .sequence(seq)
            .at_nanos(at + seq as i64)
            .build()
    };
    let ws = AgentId("ws-01".into());
    store
        .ingest(&ws, &[event(6, EventKind::WouldBlock)])
        .unwrap();
    store.ingest(&ws, &[event(7, EventKind::Connect)]).unwrap();
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    let hits = store.firewall_hits(&all).unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!((hits[1].kind, hits[1].count), (EventKind::WouldBlock, 3));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let counts: Vec<Option<i64>> = conn
        .prepare("SELECT firewall_hits FROM event_blocks ORDER BY block_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(counts, [None, None, None, Some(1), Some(0)]);
    let plan: String = conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT block_id FROM event_blocks
             WHERE firewall_hits IS NOT 0 AND first_ts < 1 AND last_ts >= 0",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("event_blocks_with_hits"), "{plan}");
    assert_eq!(schema_version(&conn), "12");
}

/// `fixtures/v9-dual-stack.db.gz`, written at schema version 9 (see the
/// fixtures' README): it opens at version 12 with its hosts and group, has
/// no rule counters, and keeps the ones recorded from then on.
#[test]
fn a_version_9_store_is_migrated_and_keeps_rule_counters() {
    use connscope_store::RuleCount;

    let (_dir, path) = unpacked(include_bytes!("fixtures/v9-dual-stack.db.gz"), "v9.db");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.host_addresses().unwrap().len(), 2);
    assert_eq!(group_names(&store), ["servers"]);
    assert!(store.rule_hits("servers", None).unwrap().is_empty());
    let at = |secs: i64| Timestamp::from_nanos(secs * 1_000_000_000);
    let count = |packets| RuleCount {
        rule: "inbound[0]".into(),
        packets,
        bytes: packets * 100,
    };
    store
        .record_rule_counters("app1", "servers", 1, 1, at(100), &[count(2)])
        .unwrap();
    store
        .record_rule_counters("app1", "servers", 1, 1, at(200), &[count(5)])
        .unwrap();
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    let hits = store.rule_hits("servers", Some(1)).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!((hits[0].packets, hits[0].last_hit), (5, Some(at(200))));
}
