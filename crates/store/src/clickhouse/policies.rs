//! The policy loop's records in ClickHouse (schema version 3).
//!
//! No transactions and no unique keys here, so what SQLite does inside one
//! transaction is a read just before the write, and each table is shaped so
//! a repeated write is harmless:
//! - a policy version is a row per (name, version) in a `ReplacingMergeTree`;
//!   two pushes of *different* documents for one name in the same instant
//!   would both take the next number and one would replace the other
//!   (pushes are an administrator's, one at a time);
//! - assignments are an append-only log keyed by revision, the next revision
//!   being the highest stored plus one (the same caveat for two changes at
//!   one instant: they may share a revision, and both are kept);
//! - a host's firewall report replaces the older one (`ReplacingMergeTree`
//!   versioned by the report's time); notices are keyed by what they say;
//! - drift is a row per sighting (a batch's connections on one edge), read
//!   summed per edge; whether an edge is new is a count just before the
//!   insert, so two collectors seeing the same new edge in the same instant
//!   may both alert (the alert sinks' per-edge deduplication absorbs the
//!   repeat within one collector; docs/STORE.md says so).

use clickhouse::{Client, Row};
use connscope_event::Timestamp;
use connscope_protocol::policy::{FirewallNotice, FirewallState, Staging};
use serde::{Deserialize, Serialize};

use super::write::insert_rows;
use crate::policy::{mode_name, parse_mode};
use crate::{
    AssignedVersion, AssignmentChange, AssignmentTarget, DriftRecord, HostFirewall, HostNotice,
    PolicyAssignment, PolicyVersion, StoreError, TimeRange,
};

fn corrupt(column: &str, value: &str) -> StoreError {
    StoreError::Backend(format!("column {column} holds {value:?}, which does not parse").into())
}

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct Version {
    name: String,
    version: u32,
    document: String,
    created: i64,
    author: String,
    comment: String,
}

impl From<Version> for PolicyVersion {
    fn from(v: Version) -> Self {
        PolicyVersion {
            name: v.name,
            version: v.version,
            document: v.document,
            created: Timestamp::from_nanos(v.created),
            author: v.author,
            comment: v.comment,
        }
    }
}

pub(super) async fn put_version(
    client: &Client,
    name: String,
    document: String,
    author: String,
    comment: String,
    at: Timestamp,
) -> Result<PolicyVersion, StoreError> {
    let latest = client
        .query(
            "SELECT ?fields FROM policy_versions FINAL WHERE name = ?
             ORDER BY version DESC LIMIT 1",
        )
        .bind(&name)
        .fetch_optional::<Version>()
        .await?;
    if let Some(latest) = &latest {
        if latest.document == document {
            return Ok(latest.clone().into());
        }
    }
    let row = Version {
        version: latest.map_or(1, |v| v.version + 1),
        name,
        document,
        created: at.as_nanos(),
        author,
        comment,
    };
    insert_rows(client, "policy_versions", std::slice::from_ref(&row)).await?;
    Ok(row.into())
}

pub(super) async fn versions(
    client: &Client,
    name: String,
    version: Option<u32>,
) -> Result<Vec<PolicyVersion>, StoreError> {
    let rows = match version {
        Some(version) => {
            client
                .query(
                    "SELECT ?fields FROM policy_versions FINAL
                     WHERE name = ? AND version = ? ORDER BY version",
                )
                .bind(&name)
                .bind(version)
                .fetch_all::<Version>()
                .await?
        }
        None => {
            client
                .query("SELECT ?fields FROM policy_versions FINAL WHERE name = ? ORDER BY version")
                .bind(&name)
                .fetch_all::<Version>()
                .await?
        }
    };
    Ok(rows.into_iter().map(PolicyVersion::from).collect())
}

/// One change of an assignment; `assigned` 0 is a withdrawal.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct Assignment {
    revision: u64,
    target_kind: String,
    target: String,
    assigned: u8,
    policy: String,
    version: u32,
    staging: String,
    at: i64,
    by: String,
}

fn assignment(row: Assignment) -> Result<PolicyAssignment, StoreError> {
    let target = AssignmentTarget::from_parts(&row.target_kind, row.target)
        .ok_or_else(|| corrupt("policy_assignments.target_kind", &row.target_kind))?;
    let assigned = match row.assigned {
        0 => None,
        _ => Some(AssignedVersion {
            policy: row.policy,
            version: row.version,
            staging: serde_json::from_str::<Staging>(&row.staging)
                .map_err(|_| corrupt("policy_assignments.staging", &row.staging))?,
        }),
    };
    Ok(PolicyAssignment {
        target,
        assigned,
        revision: row.revision,
        at: Timestamp::from_nanos(row.at),
        by: row.by,
    })
}

#[derive(Row, Deserialize)]
struct Revision {
    revision: u64,
}

pub(super) async fn revision(client: &Client) -> Result<u64, StoreError> {
    Ok(client
        .query("SELECT max(revision) AS revision FROM policy_assignments")
        .fetch_one::<Revision>()
        .await?
        .revision)
}

pub(super) async fn assign(
    client: &Client,
    change: AssignmentChange,
) -> Result<PolicyAssignment, StoreError> {
    let revision = revision(client).await? + 1;
    let row = Assignment {
        revision,
        target_kind: change.target.kind().to_owned(),
        target: change.target.name().to_owned(),
        assigned: u8::from(change.assigned.is_some()),
        policy: change
            .assigned
            .as_ref()
            .map(|a| a.policy.clone())
            .unwrap_or_default(),
        version: change.assigned.as_ref().map_or(0, |a| a.version),
        staging: change
            .assigned
            .as_ref()
            .map(|a| serde_json::to_string(&a.staging).expect("staging serialises"))
            .unwrap_or_default(),
        at: change.at.as_nanos(),
        by: change.by.clone(),
    };
    insert_rows(client, "policy_assignments", &[row]).await?;
    Ok(PolicyAssignment {
        target: change.target,
        assigned: change.assigned,
        revision,
        at: change.at,
        by: change.by,
    })
}

pub(super) async fn assignments(
    client: &Client,
    target: Option<AssignmentTarget>,
) -> Result<Vec<PolicyAssignment>, StoreError> {
    let rows = match &target {
        Some(target) => {
            client
                .query(
                    "SELECT ?fields FROM policy_assignments FINAL
                     WHERE target_kind = ? AND target = ? ORDER BY revision",
                )
                .bind(target.kind())
                .bind(target.name())
                .fetch_all::<Assignment>()
                .await?
        }
        // Every change, the latest of each target kept here: an IN over a
        // subquery is refused on a sharded store, and changes are few.
        None => {
            let mut latest: std::collections::BTreeMap<(String, String), Assignment> =
                Default::default();
            for row in client
                .query("SELECT ?fields FROM policy_assignments FINAL ORDER BY revision")
                .fetch_all::<Assignment>()
                .await?
            {
                latest.insert((row.target_kind.clone(), row.target.clone()), row);
            }
            latest
                .into_values()
                .filter(|row| row.assigned == 1)
                .collect()
        }
    };
    let mut all = rows
        .into_iter()
        .map(assignment)
        .collect::<Result<Vec<_>, _>>()?;
    if target.is_none() {
        all.sort_by(|a, b| a.target.cmp(&b.target));
    }
    Ok(all)
}

/// A host's last report; `version` (the report's time) picks the newest.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct Firewall {
    host: String,
    state: String,
    reported_at: i64,
    version: u64,
}

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct Notice {
    host: String,
    at: String,
    kind: String,
    detail: String,
}

pub(super) async fn put_report(
    client: &Client,
    host: String,
    state: FirewallState,
    reported_at: Timestamp,
    notices: Vec<FirewallNotice>,
) -> Result<(), StoreError> {
    let row = Firewall {
        host: host.clone(),
        state: serde_json::to_string(&state).expect("a firewall state serialises"),
        reported_at: reported_at.as_nanos(),
        version: reported_at.as_nanos().max(0) as u64,
    };
    insert_rows(client, "host_firewalls", &[row]).await?;
    let notices: Vec<Notice> = notices
        .into_iter()
        .map(|n| Notice {
            host: host.clone(),
            at: n.at,
            kind: n.kind,
            detail: n.detail,
        })
        .collect();
    insert_rows(client, "firewall_notices", &notices).await
}

pub(super) async fn states(client: &Client) -> Result<Vec<HostFirewall>, StoreError> {
    client
        .query("SELECT ?fields FROM host_firewalls FINAL ORDER BY host")
        .fetch_all::<Firewall>()
        .await?
        .into_iter()
        .map(|row| {
            Ok(HostFirewall {
                state: serde_json::from_str(&row.state)
                    .map_err(|_| corrupt("host_firewalls.state", &row.state))?,
                host: row.host,
                reported_at: Timestamp::from_nanos(row.reported_at),
            })
        })
        .collect()
}

pub(super) async fn notices(
    client: &Client,
    host: Option<String>,
) -> Result<Vec<HostNotice>, StoreError> {
    let rows =
        match host {
            Some(host) => {
                client
                    .query(
                        "SELECT ?fields FROM firewall_notices FINAL WHERE host = ?
                     ORDER BY host, at, kind, detail",
                    )
                    .bind(host)
                    .fetch_all::<Notice>()
                    .await?
            }
            None => client
                .query("SELECT ?fields FROM firewall_notices FINAL ORDER BY host, at, kind, detail")
                .fetch_all::<Notice>()
                .await?,
        };
    Ok(rows
        .into_iter()
        .map(|n| HostNotice {
            host: n.host,
            notice: FirewallNotice {
                at: n.at,
                kind: n.kind,
                detail: n.detail,
            },
        })
        .collect())
}

/// One sighting of a drift edge; an empty name, executable or user is none.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct Drift {
    host: String,
    direction: String,
    protocol: String,
    port: u16,
    remote: String,
    local: String,
    remote_name: String,
    executable: String,
    user_name: String,
    policy: String,
    version: u32,
    mode: String,
    first_seen: i64,
    last_seen: i64,
    connections: u64,
}

#[derive(Row, Deserialize)]
struct Count {
    n: u64,
}

pub(super) async fn record_drift(client: &Client, d: DriftRecord) -> Result<bool, StoreError> {
    let row = Drift {
        host: d.host,
        direction: d.direction.as_str().to_owned(),
        protocol: d.protocol.as_str().to_owned(),
        port: d.port,
        remote: d.remote.to_string(),
        local: d.local.to_string(),
        remote_name: d.remote_name.unwrap_or_default(),
        executable: d.executable.unwrap_or_default(),
        user_name: d.user.unwrap_or_default(),
        policy: d.policy,
        version: d.version,
        mode: mode_name(d.mode).to_owned(),
        first_seen: d.first_seen.as_nanos(),
        last_seen: d.last_seen.as_nanos(),
        connections: d.connections,
    };
    let known = client
        .query(
            "SELECT count() AS n FROM drift_sightings
             WHERE host = ? AND direction = ? AND protocol = ? AND port = ? AND remote = ?",
        )
        .bind(&row.host)
        .bind(&row.direction)
        .bind(&row.protocol)
        .bind(row.port)
        .bind(&row.remote)
        .fetch_one::<Count>()
        .await?
        .n;
    insert_rows(client, "drift_sightings", &[row]).await?;
    Ok(known == 0)
}

pub(super) async fn drift(
    client: &Client,
    range: TimeRange,
) -> Result<Vec<DriftRecord>, StoreError> {
    // What the edge's first sighting showed, and the sums of all of them.
    let rows = client
        .query(
            // The aliases inside differ from the columns: ClickHouse aliases
            // are seen by the whole query, and argMin must see the column.
            "SELECT host, direction, protocol, port, remote, l AS local, n AS remote_name,
                    e AS executable, u AS user_name, p AS policy, v AS version, m AS mode,
                    f AS first_seen, t AS last_seen, c AS connections
             FROM (SELECT host, direction, protocol, port, remote,
                          argMin(local, first_seen) AS l, argMin(remote_name, first_seen) AS n,
                          argMin(executable, first_seen) AS e,
                          argMin(user_name, first_seen) AS u, argMin(policy, first_seen) AS p,
                          argMin(version, first_seen) AS v, argMin(mode, first_seen) AS m,
                          min(first_seen) AS f, max(last_seen) AS t, sum(connections) AS c
                   FROM drift_sightings
                   GROUP BY host, direction, protocol, port, remote
                   HAVING t >= ? AND f < ?)
             ORDER BY host, first_seen, direction, protocol, port, remote",
        )
        .bind(range.from.as_nanos())
        .bind(range.to.as_nanos())
        .fetch_all::<Drift>()
        .await?;
    let some = |s: String| (!s.is_empty()).then_some(s);
    rows.into_iter()
        .map(|r| {
            Ok(DriftRecord {
                direction: r
                    .direction
                    .parse()
                    .map_err(|_| corrupt("drift_sightings.direction", &r.direction))?,
                protocol: r
                    .protocol
                    .parse()
                    .map_err(|_| corrupt("drift_sightings.protocol", &r.protocol))?,
                remote: r
                    .remote
                    .parse()
                    .map_err(|_| corrupt("drift_sightings.remote", &r.remote))?,
                local: r
                    .local
                    .parse()
                    .map_err(|_| corrupt("drift_sightings.local", &r.local))?,
                mode: parse_mode(&r.mode)
                    .ok_or_else(|| corrupt("drift_sightings.mode", &r.mode))?,
                host: r.host,
                port: r.port,
                remote_name: some(r.remote_name),
                executable: some(r.executable),
                user: some(r.user_name),
                policy: r.policy,
                version: r.version,
                first_seen: Timestamp::from_nanos(r.first_seen),
                last_seen: Timestamp::from_nanos(r.last_seen),
                connections: r.connections,
            })
        })
        .collect()
}
