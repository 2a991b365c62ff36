//! Agents' reports and status: the ranges they reported dropped, when they
//! were down, the batches the collector refused, and the status of each
//! agent state read back from its sequence spaces and all of that.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use connscope_event::Timestamp;
use rusqlite::params;

use super::connection::{lock, Reader, Writer};
use super::spaces::{agent_id, load_ranges, store_ranges, RangeSet};
use crate::checks::{check_dropped, check_label};
use crate::status::Statuses;
use crate::{AgentId, AgentStatus, RefusalCount, SequenceRanges, StoreError};

/// Adds `ranges` to what `agent`'s state `instance` reported dropped for `reason`.
pub(super) fn record_dropped_from(
    writer: &Mutex<Writer>,
    agent: &AgentId,
    instance: &str,
    reason: &str,
    ranges: &[(u64, u64)],
) -> Result<(), StoreError> {
    check_dropped(instance, reason, ranges)?;
    lock(writer).transaction(|tx, ids| {
        let set = RangeSet::Dropped {
            agent: agent_id(tx, &mut ids.agents, agent)?,
            instance,
            reason,
        };
        let old = load_ranges(tx, &set)?;
        let mut new = old.clone();
        for &(first, last) in ranges {
            new.insert_range(first, last);
        }
        store_ranges(tx, &set, &old, &new)
    })
}

/// Adds the `windows` in which `agent`'s state `instance` was not running.
pub(super) fn record_downtime(
    writer: &Mutex<Writer>,
    agent: &AgentId,
    instance: &str,
    windows: &[(Timestamp, Timestamp)],
) -> Result<(), StoreError> {
    check_label("instance", instance)?;
    if let Some(index) = windows.iter().position(|(from, to)| from > to) {
        return Err(StoreError::InvalidRange {
            index,
            reason: format!(
                "downtime {} to {}: ends before it starts",
                windows[index].0, windows[index].1
            ),
        });
    }
    lock(writer).transaction(|tx, ids| {
        let agent_id = agent_id(tx, &mut ids.agents, agent)?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO agent_downtime VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (agent_id, instance, down_from)
                 DO UPDATE SET down_to = max(down_to, excluded.down_to)",
        )?;
        for (from, to) in windows {
            insert.execute(params![agent_id, instance, from.as_nanos(), to.as_nanos()])?;
        }
        Ok(())
    })
}

/// Counts one batch of `agent` refused for `reason`.
pub(super) fn record_refusal(
    writer: &Mutex<Writer>,
    agent: &AgentId,
    reason: &str,
    at: Timestamp,
) -> Result<(), StoreError> {
    lock(writer).transaction(|tx, _| {
        tx.execute(
            "INSERT INTO agent_refusals VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (agent, reason) DO UPDATE SET
                     batches = batches + 1, last_at = max(last_at, excluded.last_at)",
            rusqlite::params![agent.0, reason, at.as_nanos()],
        )?;
        Ok(())
    })
}

/// Refused batches per agent and reason.
pub(super) fn refusals(reader: &Mutex<Reader>) -> Result<Vec<RefusalCount>, StoreError> {
    let guard = lock(reader);
    let mut stmt = guard.conn.prepare_cached(
        "SELECT agent, reason, batches, last_at FROM agent_refusals ORDER BY agent, reason",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RefusalCount {
            agent: AgentId(r.get(0)?),
            reason: r.get(1)?,
            batches: r.get::<_, i64>(2)? as u64,
            last_at: Timestamp::from_nanos(r.get(3)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The status of every agent state, from its sequence spaces, drops and downtime.
pub(super) fn statuses(reader: &Mutex<Reader>) -> Result<Vec<AgentStatus>, StoreError> {
    let guard = lock(reader);
    let conn = &guard.conn;
    let mut stored: HashMap<i64, Vec<(u64, u64)>> = HashMap::new();
    let mut stmt =
        conn.prepare_cached("SELECT space_id, first_seq, last_seq FROM agent_sequences")?;
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })? {
        let (space, first, last) = row?;
        stored
            .entry(space)
            .or_default()
            .push((first as u64, last as u64));
    }
    // (agent id, instance) -> reason -> ranges
    type ByReason = BTreeMap<String, Vec<(u64, u64)>>;
    let mut dropped: HashMap<(i64, String), ByReason> = HashMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT agent_id, instance, reason, first_seq, last_seq FROM agent_dropped_ranges",
    )?;
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })? {
        let (agent, instance, reason, first, last) = row?;
        dropped
            .entry((agent, instance))
            .or_default()
            .entry(reason)
            .or_default()
            .push((first as u64, last as u64));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT s.space_id, s.agent_id, a.name, s.instance, s.first_seq, s.host, s.events,
                    s.first_seen, s.last_seen, s.conflicts
             FROM sequence_spaces s JOIN agents a ON a.agent_id = s.agent_id
             WHERE s.first_seen IS NOT NULL ORDER BY a.name, s.space_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, i64>(8)?,
            r.get::<_, i64>(9)?,
        ))
    })?;
    let mut statuses = Statuses::default();
    for row in rows {
        let (space, _agent_id, name, instance, first_seq, host, events, first, last, conflicts) =
            row?;
        let (first, last) = (Timestamp::from_nanos(first), Timestamp::from_nanos(last));
        let boot = SequenceRanges::from_ranges(stored.remove(&space).unwrap_or_default());
        let status = statuses.of(&name, &instance, first_seq as u64, (first, last));
        status.boots += 1;
        // Numbers an earlier run of this state already used: the state
        // was restored from a snapshot.
        status.reused += status.sequences.count_within(boot.ranges());
        for &(f, l) in boot.ranges() {
            status.sequences.insert_range(f, l);
        }
        status.first_sequence = status.first_sequence.min(first_seq as u64);
        status.events += events as u64;
        status.conflicts += conflicts as u64;
        if last >= status.last_seen || status.host.is_empty() {
            status.host = host;
        }
        status.first_seen = status.first_seen.min(first);
        status.last_seen = status.last_seen.max(last);
    }
    let names: HashMap<i64, String> = conn
        .prepare_cached("SELECT agent_id, name FROM agents")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT agent_id, instance, down_from, down_to FROM agent_downtime
             ORDER BY down_from",
    )?;
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })? {
        let (agent_id, instance, from, to) = row?;
        let name = names.get(&agent_id).map_or("", String::as_str);
        if let Some(status) = statuses.get(name, &instance) {
            status
                .downtime
                .push((Timestamp::from_nanos(from), Timestamp::from_nanos(to)));
        }
    }
    // Instances with drops and nothing stored (every batch refused) are
    // listed too, after the others.
    let mut dropped: Vec<_> = dropped.into_iter().collect();
    dropped.sort_by_key(|((agent_id, instance), _)| (names.get(agent_id), instance.clone()));
    for ((agent_id, instance), reasons) in dropped {
        let name = names.get(&agent_id).map_or("", String::as_str);
        let first = reasons
            .values()
            .flatten()
            .map(|&(f, _)| f)
            .min()
            .unwrap_or(1);
        let never = Timestamp::from_nanos(0);
        let status = statuses.of(name, &instance, first, (never, never));
        for (reason, ranges) in reasons {
            for &(f, l) in &ranges {
                status.dropped.insert_range(f, l);
            }
            status
                .dropped_by_reason
                .push((reason, SequenceRanges::from_ranges(ranges)));
        }
    }
    Ok(statuses.list)
}
