//! Firewall hits as the API and `report hits` give them: what a policy in
//! audit mode would have dropped (`would-block`) and what it dropped in
//! enforce mode (`blocked`), per host, remote end, program and user, from
//! [`Store::firewall_hits`]. The JSON shape (`{"hits":[...]}`) is the
//! stable interface of `GET /api/v1/firewall/hits` (docs/API.md): fields
//! are only ever added.

use connscope_store::{FirewallHitQuery, FirewallHitTotal, Store, StoreError, TimeRange};
use serde::Serialize;

use crate::report::{rfc3339, Report};

/// One aggregated hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirewallHitRecord {
    pub host: String,
    /// `would-block` or `blocked`.
    pub kind: &'static str,
    /// `incoming`, `outgoing` or `unknown`, seen from `host`.
    pub direction: &'static str,
    pub protocol: &'static str,
    /// The service port: the local one for incoming hits, else the remote one.
    pub port: u16,
    /// The host's address of the latest hit.
    pub local: String,
    pub remote: String,
    /// The latest name the host knew the remote address by.
    pub remote_name: Option<String>,
    pub executable: Option<String>,
    /// The user name, else the uid in decimal.
    pub user: Option<String>,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
}

impl From<&FirewallHitTotal> for FirewallHitRecord {
    fn from(h: &FirewallHitTotal) -> Self {
        FirewallHitRecord {
            host: h.host.clone(),
            kind: h.kind.as_str(),
            direction: h.direction.as_str(),
            protocol: h.protocol.as_str(),
            port: h.service_port,
            local: h.local_ip.to_string(),
            remote: h.remote_ip.to_string(),
            remote_name: h.remote_name.clone(),
            executable: h.executable.clone(),
            user: h.user.clone(),
            count: h.count,
            first_seen: rfc3339(h.first_seen),
            last_seen: rfc3339(h.last_seen),
        }
    }
}

/// The body of `GET /api/v1/firewall/hits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirewallHits {
    pub hits: Vec<FirewallHitRecord>,
}

/// The hits in `range`, of `host` only when given, in the store's order
/// (host, kind, direction, protocol, port, remote, executable, user).
pub fn firewall_hits(
    store: &dyn Store,
    range: TimeRange,
    host: Option<&str>,
) -> Result<FirewallHits, StoreError> {
    let totals = store.firewall_hits(&FirewallHitQuery {
        range,
        host: host.map(str::to_owned),
    })?;
    Ok(FirewallHits {
        hits: totals.iter().map(FirewallHitRecord::from).collect(),
    })
}

/// `report hits`: one row per aggregated hit; JSON is the API's body.
pub fn hits_report(hits: &FirewallHits) -> Report {
    let rows = hits
        .hits
        .iter()
        .map(|h| {
            vec![
                h.host.clone(),
                h.kind.to_owned(),
                h.direction.to_owned(),
                format!("{}/{}", h.port, h.protocol),
                h.local.clone(),
                match &h.remote_name {
                    Some(name) => format!("{} ({name})", h.remote),
                    None => h.remote.clone(),
                },
                h.executable.clone().unwrap_or_else(|| "-".into()),
                h.user.clone().unwrap_or_else(|| "-".into()),
                h.count.to_string(),
                h.first_seen.clone(),
                h.last_seen.clone(),
            ]
        })
        .collect();
    Report::new(
        vec![
            "host",
            "kind",
            "direction",
            "port",
            "local",
            "remote",
            "executable",
            "user",
            "count",
            "first_seen",
            "last_seen",
        ],
        vec![
            false, false, false, true, false, false, false, false, true, false, false,
        ],
        rows,
        serde_json::to_value(hits).expect("hit records serialise"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::test_support::EventBuilder;
    use connscope_event::{Direction, EventKind, Timestamp};
    use connscope_store::{AgentId, SqliteStore};

    const SEC: i64 = 1_000_000_000;

    fn store_with_hits() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
        let t0 = 1_800_000_000 * SEC;
        let events = vec![
            EventBuilder::connect("10.0.0.1:40000", "192.0.2.9:873")
                .kind(EventKind::WouldBlock)
                .at_nanos(t0)
                .sequence(1)
                .host("ws-01")
                .uid(0)
                .user("root")
                .process(9, "/usr/bin/rsync")
                .named("backup.example.org")
                .build(),
            EventBuilder::connect("10.0.0.1:22", "198.51.100.7:50000")
                .kind(EventKind::Blocked)
                .direction(Direction::Incoming)
                .at_nanos(t0 + SEC)
                .sequence(2)
                .host("ws-01")
                .build(),
        ];
        store.ingest(&AgentId("ws-01".into()), &events).unwrap();
        (dir, store)
    }

    #[test]
    fn the_json_is_the_documented_shape() {
        let (_dir, store) = store_with_hits();
        let hits = firewall_hits(&store, TimeRange::ALL, None).unwrap();
        let json = serde_json::to_value(&hits).unwrap();
        assert_eq!(
            json["hits"][0],
            serde_json::json!({
                "host": "ws-01", "kind": "blocked", "direction": "incoming",
                "protocol": "tcp", "port": 22, "local": "10.0.0.1",
                "remote": "198.51.100.7", "remote_name": null, "executable": null,
                "user": null, "count": 1,
                "first_seen": rfc3339(Timestamp::from_nanos(1_800_000_001 * SEC)),
                "last_seen": rfc3339(Timestamp::from_nanos(1_800_000_001 * SEC)),
            })
        );
        assert_eq!(json["hits"][1]["kind"], "would-block");
        assert_eq!(json["hits"][1]["port"], 873);
        assert_eq!(json["hits"][1]["executable"], "/usr/bin/rsync");
        assert_eq!(json["hits"][1]["user"], "root");
        assert_eq!(json["hits"][1]["remote_name"], "backup.example.org");
        assert!(firewall_hits(&store, TimeRange::ALL, Some("ws-02"))
            .unwrap()
            .hits
            .is_empty());
    }

    #[test]
    fn the_table_has_a_row_per_hit_with_its_program() {
        let (_dir, store) = store_with_hits();
        let table = hits_report(&firewall_hits(&store, TimeRange::ALL, None).unwrap())
            .render(crate::report::Format::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("HOST"), "{table}");
        assert!(
            lines[2].contains("would-block")
                && lines[2].contains("192.0.2.9 (backup.example.org)")
                && lines[2].contains("/usr/bin/rsync")
                && lines[2].contains("root"),
            "{table}"
        );
    }
}
