//! Rule hit counters in SQLite: one row per policy, version, rule and host,
//! read and rewritten in the writer's transaction.

use std::sync::Mutex;

use connscope_event::Timestamp;
use rusqlite::{params, OptionalExtension, Row};

use super::connection::{lock, Reader, Writer};
use crate::{rule_hits_of, HostRuleCounter, RuleCount, RuleHits, StoreError};

/// Version 10's table.
pub(super) const RULE_HIT_TABLES: &str = "
CREATE TABLE rule_counters (
    policy TEXT NOT NULL,
    version INTEGER NOT NULL,
    rule TEXT NOT NULL,
    host TEXT NOT NULL,
    revision INTEGER NOT NULL,
    read_packets INTEGER NOT NULL,
    read_bytes INTEGER NOT NULL,
    packets INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    first_reported INTEGER NOT NULL,
    last_reported INTEGER NOT NULL,
    last_hit INTEGER,
    PRIMARY KEY (policy, version, rule, host)
) WITHOUT ROWID;
";

const STATE: &str =
    "revision, read_packets, read_bytes, packets, bytes, first_reported, last_reported, last_hit";

/// Counters beyond 2^63-1 packets are clamped there (i64 columns).
fn column(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn counter(row: &Row<'_>, first: usize) -> rusqlite::Result<HostRuleCounter> {
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(first + i)?.max(0) as u64) };
    Ok(HostRuleCounter {
        revision: n(0)?,
        read_packets: n(1)?,
        read_bytes: n(2)?,
        packets: n(3)?,
        bytes: n(4)?,
        first_reported: Timestamp::from_nanos(row.get(first + 5)?),
        last_reported: Timestamp::from_nanos(row.get(first + 6)?),
        last_hit: row
            .get::<_, Option<i64>>(first + 7)?
            .map(Timestamp::from_nanos),
    })
}

pub(super) fn record(
    writer: &Mutex<Writer>,
    host: &str,
    policy: &str,
    version: u32,
    revision: u64,
    at: Timestamp,
    counters: &[RuleCount],
) -> Result<(), StoreError> {
    lock(writer).transaction(|tx, _| {
        let mut read = tx.prepare_cached(&format!(
            "SELECT {STATE} FROM rule_counters
             WHERE policy = ?1 AND version = ?2 AND rule = ?3 AND host = ?4"
        ))?;
        let mut write = tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO rule_counters (policy, version, rule, host, {STATE})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        ))?;
        for count in counters {
            let before = read
                .query_row(params![policy, version, count.rule, host], |r| {
                    counter(r, 0)
                })
                .optional()?;
            let Some(after) = HostRuleCounter::after(before.as_ref(), revision, at, count) else {
                continue;
            };
            write.execute(params![
                policy,
                version,
                count.rule,
                host,
                column(after.revision),
                column(after.read_packets),
                column(after.read_bytes),
                column(after.packets),
                column(after.bytes),
                after.first_reported.as_nanos(),
                after.last_reported.as_nanos(),
                after.last_hit.map(Timestamp::as_nanos),
            ])?;
        }
        Ok(())
    })
}

pub(super) fn read(
    reader: &Mutex<Reader>,
    policy: &str,
    version: Option<u32>,
) -> Result<Vec<RuleHits>, StoreError> {
    let guard = lock(reader);
    let mut stmt = guard.conn.prepare_cached(&format!(
        "SELECT version, rule, {STATE} FROM rule_counters
         WHERE policy = ?1 AND (?2 IS NULL OR version = ?2)"
    ))?;
    let rows = stmt.query_map(params![policy, version], |r| {
        Ok((
            policy.to_owned(),
            r.get::<_, u32>(0)?,
            r.get::<_, String>(1)?,
            counter(r, 2)?,
        ))
    })?;
    let rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rule_hits_of(rows))
}
