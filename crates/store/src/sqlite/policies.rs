//! The policy loop's records in SQLite (schema version 10): policy versions
//! by (name, version); assignments as an append-only log whose row id is the
//! revision (AUTOINCREMENT, so a revision is never given twice); one row per
//! host for its last firewall report; notices keyed by what the host said,
//! so a re-sent report adds nothing; one row per drift edge, inserted only
//! if absent in the writer's transaction, which is what makes its alert go
//! out once.

use std::sync::Mutex;

use connscope_event::Timestamp;
use connscope_protocol::policy::{FirewallNotice, FirewallState, Staging};
use rusqlite::{OptionalExtension, Row};

use super::column::{clamp, parse_column, Corrupt};
use super::connection::{lock, Reader, Writer};
use crate::policy::{mode_name, parse_mode};
use crate::{
    AssignedVersion, AssignmentChange, AssignmentTarget, DriftRecord, HostFirewall, HostNotice,
    PolicyAssignment, PolicyVersion, StoreError, TimeRange,
};

/// Version 10's tables.
pub(super) const POLICY_TABLES: &str = "
CREATE TABLE policy_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    document TEXT NOT NULL,
    created INTEGER NOT NULL,
    author TEXT NOT NULL,
    comment TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE policy_assignments (
    revision INTEGER PRIMARY KEY AUTOINCREMENT,
    target_kind TEXT NOT NULL,
    target TEXT NOT NULL,
    policy TEXT,
    version INTEGER,
    staging TEXT,
    at INTEGER NOT NULL,
    by TEXT NOT NULL
);
CREATE INDEX policy_assignments_by_target ON policy_assignments (target_kind, target, revision);
CREATE TABLE host_firewalls (
    host TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    reported_at INTEGER NOT NULL
);
CREATE TABLE firewall_notices (
    host TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (host, at, kind, detail)
) WITHOUT ROWID;
CREATE TABLE drift_edges (
    host TEXT NOT NULL,
    direction TEXT NOT NULL,
    protocol TEXT NOT NULL,
    port INTEGER NOT NULL,
    remote TEXT NOT NULL,
    local TEXT NOT NULL,
    remote_name TEXT,
    executable TEXT,
    user_name TEXT,
    policy TEXT NOT NULL,
    version INTEGER NOT NULL,
    mode TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    connections INTEGER NOT NULL,
    PRIMARY KEY (host, direction, protocol, port, remote)
);
CREATE INDEX drift_edges_by_time ON drift_edges (last_seen);
";

fn json_error(column: &'static str, value: &str) -> Corrupt {
    Corrupt {
        column,
        value: value.to_owned(),
    }
}

fn version_of(r: &Row<'_>) -> rusqlite::Result<PolicyVersion> {
    Ok(PolicyVersion {
        name: r.get(0)?,
        version: r.get(1)?,
        document: r.get(2)?,
        created: Timestamp::from_nanos(r.get(3)?),
        author: r.get(4)?,
        comment: r.get(5)?,
    })
}

const VERSION_COLUMNS: &str = "name, version, document, created, author, comment";

pub(super) fn put_version(
    writer: &Mutex<Writer>,
    name: &str,
    document: &str,
    author: &str,
    comment: &str,
    at: Timestamp,
) -> Result<PolicyVersion, StoreError> {
    lock(writer).transaction(|tx, _| {
        let latest = tx
            .query_row(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM policy_versions WHERE name = ?1
                     ORDER BY version DESC LIMIT 1"
                ),
                [name],
                version_of,
            )
            .optional()?;
        if let Some(latest) = &latest {
            if latest.document == document {
                return Ok(latest.clone());
            }
        }
        let stored = PolicyVersion {
            name: name.to_owned(),
            version: latest.map_or(1, |v| v.version + 1),
            document: document.to_owned(),
            created: at,
            author: author.to_owned(),
            comment: comment.to_owned(),
        };
        tx.execute(
            "INSERT INTO policy_versions VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                stored.name,
                stored.version,
                stored.document,
                stored.created.as_nanos(),
                stored.author,
                stored.comment
            ],
        )?;
        Ok(stored)
    })
}

pub(super) fn versions(
    reader: &Mutex<Reader>,
    name: &str,
    version: Option<u32>,
) -> Result<Vec<PolicyVersion>, StoreError> {
    let guard = lock(reader);
    let mut stmt = guard.conn.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS} FROM policy_versions
         WHERE name = ?1 AND (?2 IS NULL OR version = ?2) ORDER BY version"
    ))?;
    let rows = stmt.query_map(rusqlite::params![name, version], version_of)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

const ASSIGNMENT_COLUMNS: &str = "revision, target_kind, target, policy, version, staging, at, by";

type AssignmentRow = (
    i64,
    String,
    String,
    Option<String>,
    Option<u32>,
    Option<String>,
    i64,
    String,
);

fn assignment_row(r: &Row<'_>) -> rusqlite::Result<AssignmentRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn assignment(row: AssignmentRow) -> Result<PolicyAssignment, Corrupt> {
    let (revision, kind, target, policy, version, staging, at, by) = row;
    let target = AssignmentTarget::from_parts(&kind, target)
        .ok_or_else(|| json_error("policy_assignments.target_kind", &kind))?;
    let assigned = match (policy, version, staging) {
        (Some(policy), Some(version), Some(staging)) => Some(AssignedVersion {
            policy,
            version,
            staging: serde_json::from_str::<Staging>(&staging)
                .map_err(|_| json_error("policy_assignments.staging", &staging))?,
        }),
        _ => None,
    };
    Ok(PolicyAssignment {
        target,
        assigned,
        revision: revision as u64,
        at: Timestamp::from_nanos(at),
        by,
    })
}

pub(super) fn assign(
    writer: &Mutex<Writer>,
    change: &AssignmentChange,
) -> Result<PolicyAssignment, StoreError> {
    let staging = change
        .assigned
        .as_ref()
        .map(|a| serde_json::to_string(&a.staging).expect("staging serialises"));
    lock(writer).transaction(|tx, _| {
        tx.execute(
            "INSERT INTO policy_assignments
                 (target_kind, target, policy, version, staging, at, by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![
                change.target.kind(),
                change.target.name(),
                change.assigned.as_ref().map(|a| &a.policy),
                change.assigned.as_ref().map(|a| a.version),
                staging,
                change.at.as_nanos(),
                change.by
            ],
        )?;
        Ok(PolicyAssignment {
            target: change.target.clone(),
            assigned: change.assigned.clone(),
            revision: tx.last_insert_rowid() as u64,
            at: change.at,
            by: change.by.clone(),
        })
    })
}

pub(super) fn assignments(
    reader: &Mutex<Reader>,
    target: Option<&AssignmentTarget>,
) -> Result<Vec<PolicyAssignment>, StoreError> {
    let guard = lock(reader);
    let rows: Vec<AssignmentRow> = match target {
        Some(target) => guard
            .conn
            .prepare_cached(&format!(
                "SELECT {ASSIGNMENT_COLUMNS} FROM policy_assignments
                 WHERE target_kind = ?1 AND target = ?2 ORDER BY revision"
            ))?
            .query_map([target.kind(), target.name()], assignment_row)?
            .collect::<rusqlite::Result<_>>()?,
        None => guard
            .conn
            .prepare_cached(&format!(
                "SELECT {ASSIGNMENT_COLUMNS} FROM policy_assignments
                 WHERE revision IN (SELECT max(revision) FROM policy_assignments
                                    GROUP BY target_kind, target)
                   AND policy IS NOT NULL
                 ORDER BY target_kind, target"
            ))?
            .query_map([], assignment_row)?
            .collect::<rusqlite::Result<_>>()?,
    };
    let mut all: Vec<PolicyAssignment> =
        rows.into_iter().map(assignment).collect::<Result<_, _>>()?;
    if target.is_none() {
        all.sort_by(|a, b| a.target.cmp(&b.target));
    }
    Ok(all)
}

pub(super) fn revision(reader: &Mutex<Reader>) -> Result<u64, StoreError> {
    let guard = lock(reader);
    let revision: Option<i64> =
        guard
            .conn
            .query_row("SELECT max(revision) FROM policy_assignments", [], |r| {
                r.get(0)
            })?;
    Ok(revision.unwrap_or(0) as u64)
}

pub(super) fn put_report(
    writer: &Mutex<Writer>,
    host: &str,
    state: &FirewallState,
    reported_at: Timestamp,
    notices: &[FirewallNotice],
) -> Result<(), StoreError> {
    let state = serde_json::to_string(state).expect("a firewall state serialises");
    lock(writer).transaction(|tx, _| {
        // An older report arriving late does not replace a newer one.
        tx.execute(
            "INSERT INTO host_firewalls VALUES (?1, ?2, ?3)
             ON CONFLICT (host) DO UPDATE SET state = excluded.state,
                 reported_at = excluded.reported_at
             WHERE excluded.reported_at >= host_firewalls.reported_at",
            rusqlite::params![host, state, reported_at.as_nanos()],
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO firewall_notices VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )?;
        for notice in notices {
            insert.execute([host, &notice.at, &notice.kind, &notice.detail])?;
        }
        Ok(())
    })
}

pub(super) fn states(reader: &Mutex<Reader>) -> Result<Vec<HostFirewall>, StoreError> {
    let guard = lock(reader);
    let mut stmt = guard
        .conn
        .prepare_cached("SELECT host, state, reported_at FROM host_firewalls ORDER BY host")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut states = Vec::new();
    for row in rows {
        let (host, state, reported_at) = row?;
        states.push(HostFirewall {
            host,
            state: serde_json::from_str(&state)
                .map_err(|_| json_error("host_firewalls.state", &state))?,
            reported_at: Timestamp::from_nanos(reported_at),
        });
    }
    Ok(states)
}

pub(super) fn notices(
    reader: &Mutex<Reader>,
    host: Option<&str>,
) -> Result<Vec<HostNotice>, StoreError> {
    let guard = lock(reader);
    let mut stmt = guard.conn.prepare_cached(
        "SELECT host, at, kind, detail FROM firewall_notices
         WHERE ?1 IS NULL OR host = ?1 ORDER BY host, at, kind, detail",
    )?;
    let rows = stmt.query_map([host], |r| {
        Ok(HostNotice {
            host: r.get(0)?,
            notice: FirewallNotice {
                at: r.get(1)?,
                kind: r.get(2)?,
                detail: r.get(3)?,
            },
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn record_drift(
    writer: &Mutex<Writer>,
    sighting: &DriftRecord,
) -> Result<bool, StoreError> {
    let d = sighting;
    lock(writer).transaction(|tx, _| {
        let inserted = tx.execute(
            "INSERT INTO drift_edges VALUES
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
             ON CONFLICT DO NOTHING",
            rusqlite::params![
                d.host,
                d.direction.as_str(),
                d.protocol.as_str(),
                d.port,
                d.remote.to_string(),
                d.local.to_string(),
                d.remote_name,
                d.executable,
                d.user,
                d.policy,
                d.version,
                mode_name(d.mode),
                d.first_seen.as_nanos(),
                d.last_seen.as_nanos(),
                clamp(d.connections)
            ],
        )? == 1;
        if !inserted {
            tx.execute(
                "UPDATE drift_edges SET
                     first_seen = min(first_seen, ?6), last_seen = max(last_seen, ?7),
                     connections = connections + ?8
                 WHERE host = ?1 AND direction = ?2 AND protocol = ?3 AND port = ?4
                   AND remote = ?5",
                rusqlite::params![
                    d.host,
                    d.direction.as_str(),
                    d.protocol.as_str(),
                    d.port,
                    d.remote.to_string(),
                    d.first_seen.as_nanos(),
                    d.last_seen.as_nanos(),
                    clamp(d.connections)
                ],
            )?;
        }
        Ok(inserted)
    })
}

pub(super) fn drift(
    reader: &Mutex<Reader>,
    range: TimeRange,
) -> Result<Vec<DriftRecord>, StoreError> {
    let guard = lock(reader);
    let mut stmt = guard.conn.prepare_cached(
        "SELECT host, direction, protocol, port, remote, local, remote_name, executable,
                user_name, policy, version, mode, first_seen, last_seen, connections
         FROM drift_edges WHERE last_seen >= ?1 AND first_seen < ?2
         ORDER BY host, first_seen, direction, protocol, port, remote",
    )?;
    let rows = stmt.query_map([range.from.as_nanos(), range.to.as_nanos()], |r| {
        Ok((
            (
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u16>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ),
            (
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, String>(9)?,
                r.get::<_, u32>(10)?,
                r.get::<_, String>(11)?,
            ),
            (
                r.get::<_, i64>(12)?,
                r.get::<_, i64>(13)?,
                r.get::<_, i64>(14)?,
            ),
        ))
    })?;
    let mut records = Vec::new();
    for row in rows {
        let (
            (host, direction, protocol, port, remote, local),
            (remote_name, executable, user, policy, version, mode),
            (first, last, connections),
        ) = row?;
        records.push(DriftRecord {
            host,
            direction: parse_column("drift_edges.direction", &direction)?,
            protocol: parse_column("drift_edges.protocol", &protocol)?,
            port,
            remote: parse_column("drift_edges.remote", &remote)?,
            local: parse_column("drift_edges.local", &local)?,
            remote_name,
            executable,
            user,
            policy,
            version,
            mode: parse_mode(&mode).ok_or_else(|| json_error("drift_edges.mode", &mode))?,
            first_seen: Timestamp::from_nanos(first),
            last_seen: Timestamp::from_nanos(last),
            connections: connections as u64,
        });
    }
    Ok(records)
}
