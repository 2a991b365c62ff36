//! Host groups and host labels in SQLite: a row per group (its id keeps the
//! order groups were first added in, which a replaced group keeps), a row
//! per pattern and per label.

use std::sync::Mutex;

use super::column::Corrupt;
use super::connection::{lock, Reader, Writer};
use crate::{GroupKind, HostGroup, HostLabel, StoreError};

/// Version 7's tables.
pub(super) const GROUP_TABLES: &str = "
CREATE TABLE host_groups (
    group_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL
);
CREATE TABLE host_group_patterns (
    group_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    pattern TEXT NOT NULL,
    PRIMARY KEY (group_id, position)
);
CREATE TABLE host_group_labels (
    group_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (group_id, key)
);
CREATE TABLE host_labels (
    host TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (host, key)
);
";

pub(super) fn put(writer: &Mutex<Writer>, group: &HostGroup) -> Result<(), StoreError> {
    lock(writer).transaction(|tx, _| {
        tx.execute(
            "INSERT INTO host_groups (name, kind) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET kind = excluded.kind",
            (&group.name, group.kind.as_str()),
        )?;
        let id: i64 = tx.query_row(
            "SELECT group_id FROM host_groups WHERE name = ?1",
            [&group.name],
            |r| r.get(0),
        )?;
        tx.execute("DELETE FROM host_group_patterns WHERE group_id = ?1", [id])?;
        tx.execute("DELETE FROM host_group_labels WHERE group_id = ?1", [id])?;
        for (position, pattern) in group.patterns.iter().enumerate() {
            tx.execute(
                "INSERT INTO host_group_patterns VALUES (?1, ?2, ?3)",
                (id, position as i64, pattern),
            )?;
        }
        for (key, value) in &group.labels {
            tx.execute(
                "INSERT INTO host_group_labels VALUES (?1, ?2, ?3)
                 ON CONFLICT (group_id, key) DO UPDATE SET value = excluded.value",
                (id, key, value),
            )?;
        }
        Ok(())
    })
}

pub(super) fn all(reader: &Mutex<Reader>) -> Result<Vec<HostGroup>, StoreError> {
    let guard = lock(reader);
    let conn = &guard.conn;
    let mut groups = Vec::new();
    let mut ids = Vec::new();
    {
        let mut stmt =
            conn.prepare_cached("SELECT group_id, name, kind FROM host_groups ORDER BY group_id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (id, name, kind) = row?;
            let kind = GroupKind::parse(&kind).ok_or(Corrupt {
                column: "host_groups.kind",
                value: kind,
            })?;
            ids.push(id);
            groups.push(HostGroup {
                name,
                kind,
                patterns: Vec::new(),
                labels: Vec::new(),
            });
        }
    }
    let mut patterns = conn.prepare_cached(
        "SELECT pattern FROM host_group_patterns WHERE group_id = ?1 ORDER BY position",
    )?;
    let mut labels = conn.prepare_cached(
        "SELECT key, value FROM host_group_labels WHERE group_id = ?1 ORDER BY key",
    )?;
    for (group, id) in groups.iter_mut().zip(ids) {
        group.patterns = patterns
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        group.labels = labels
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
    }
    Ok(groups)
}

pub(super) fn remove(writer: &Mutex<Writer>, name: &str) -> Result<bool, StoreError> {
    lock(writer).transaction(|tx, _| {
        let id: Option<i64> = rusqlite::OptionalExtension::optional(tx.query_row(
            "SELECT group_id FROM host_groups WHERE name = ?1",
            [name],
            |r| r.get(0),
        ))?;
        let Some(id) = id else { return Ok(false) };
        for table in ["host_group_patterns", "host_group_labels", "host_groups"] {
            tx.execute(&format!("DELETE FROM {table} WHERE group_id = ?1"), [id])?;
        }
        Ok(true)
    })
}

pub(super) fn set_host_label(
    writer: &Mutex<Writer>,
    host: &str,
    key: &str,
    value: Option<&str>,
) -> Result<(), StoreError> {
    lock(writer).transaction(|tx, _| {
        match value {
            Some(value) => tx.execute(
                "INSERT INTO host_labels VALUES (?1, ?2, ?3)
                 ON CONFLICT (host, key) DO UPDATE SET value = excluded.value",
                (host, key, value),
            )?,
            None => tx.execute(
                "DELETE FROM host_labels WHERE host = ?1 AND key = ?2",
                (host, key),
            )?,
        };
        Ok(())
    })
}

pub(super) fn host_labels(reader: &Mutex<Reader>) -> Result<Vec<HostLabel>, StoreError> {
    let guard = lock(reader);
    let mut stmt = guard
        .conn
        .prepare_cached("SELECT host, key, value FROM host_labels ORDER BY host, key")?;
    let rows = stmt.query_map([], |r| {
        Ok(HostLabel {
            host: r.get(0)?,
            key: r.get(1)?,
            value: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
