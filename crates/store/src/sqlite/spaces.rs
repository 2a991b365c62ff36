//! Agents' and sequence spaces' ids (given on first sight), the labels that
//! name a state, a run or a drop reason, and the sets of sequence ranges kept
//! per space (stored) or per state and reason (dropped).

use std::collections::{HashMap, HashSet};

use rusqlite::{params, params_from_iter, Connection};

use super::column::clamp;
use crate::hash::FastHash;
use crate::{AgentId, Origin, SequenceRanges, StoreError};

/// One set of sequence ranges and the key that selects its rows.
pub(super) enum RangeSet<'a> {
    /// The numbers stored from one sequence space.
    Stored { space: i64 },
    /// The numbers an agent's instance reported dropped for one reason.
    Dropped {
        agent: i64,
        instance: &'a str,
        reason: &'a str,
    },
}

impl RangeSet<'_> {
    fn table(&self) -> &'static str {
        match self {
            RangeSet::Stored { .. } => "agent_sequences",
            RangeSet::Dropped { .. } => "agent_dropped_ranges",
        }
    }

    fn key_columns(&self) -> &'static [&'static str] {
        match self {
            RangeSet::Stored { .. } => &["space_id"],
            RangeSet::Dropped { .. } => &["agent_id", "instance", "reason"],
        }
    }

    fn key(&self) -> Vec<rusqlite::types::Value> {
        use rusqlite::types::Value;
        match *self {
            RangeSet::Stored { space } => vec![Value::Integer(space)],
            RangeSet::Dropped {
                agent,
                instance,
                reason,
            } => vec![
                Value::Integer(agent),
                Value::Text(instance.to_owned()),
                Value::Text(reason.to_owned()),
            ],
        }
    }

    /// `c1 = ?1 AND c2 = ?2 ...`
    fn key_condition(&self) -> String {
        let columns = self.key_columns().iter().enumerate();
        let terms: Vec<String> = columns.map(|(i, c)| format!("{c} = ?{}", i + 1)).collect();
        terms.join(" AND ")
    }
}

/// The space of `origin` under `agent_id`, made on first sight.
pub(super) fn space_id(
    conn: &Connection,
    cache: &mut HashMap<(i64, String, String), i64, FastHash>,
    agent_id: i64,
    origin: &Origin,
) -> rusqlite::Result<i64> {
    let key = (agent_id, origin.instance.clone(), origin.boot.clone());
    if let Some(&id) = cache.get(&key) {
        return Ok(id);
    }
    conn.execute(
        "INSERT INTO sequence_spaces (agent_id, instance, boot, first_seq, host, events)
         VALUES (?1, ?2, ?3, ?4, '', 0)
         ON CONFLICT (agent_id, instance, boot) DO NOTHING",
        params![agent_id, key.1, key.2, clamp(origin.first_sequence)],
    )?;
    let id: i64 = conn.query_row(
        "SELECT space_id FROM sequence_spaces WHERE agent_id = ?1 AND instance = ?2 AND boot = ?3",
        params![agent_id, key.1, key.2],
        |r| r.get(0),
    )?;
    cache.insert(key, id);
    Ok(id)
}

/// The number of `agent`, given on first sight.
pub(super) fn agent_id(
    conn: &Connection,
    cache: &mut HashMap<String, i64, FastHash>,
    agent: &AgentId,
) -> rusqlite::Result<i64> {
    if let Some(&id) = cache.get(&agent.0) {
        return Ok(id);
    }
    conn.execute(
        "INSERT INTO agents (name, host, events) VALUES (?1, '', 0)
         ON CONFLICT (name) DO NOTHING",
        [&agent.0],
    )?;
    let id: i64 = conn.query_row(
        "SELECT agent_id FROM agents WHERE name = ?1",
        [&agent.0],
        |r| r.get(0),
    )?;
    cache.insert(agent.0.clone(), id);
    Ok(id)
}

pub(super) fn load_ranges(
    conn: &Connection,
    set: &RangeSet<'_>,
) -> Result<SequenceRanges, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT first_seq, last_seq FROM {} WHERE {}",
        set.table(),
        set.key_condition()
    ))?;
    let rows = stmt.query_map(params_from_iter(set.key()), |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(SequenceRanges::from_ranges(
        rows.collect::<Result<Vec<_>, _>>()?,
    ))
}

/// Writes only the ranges that changed: usually one range grew.
pub(super) fn store_ranges(
    conn: &Connection,
    set: &RangeSet<'_>,
    old: &SequenceRanges,
    new: &SequenceRanges,
) -> Result<(), StoreError> {
    let old_set: HashSet<_> = old.ranges().iter().collect();
    let new_set: HashSet<_> = new.ranges().iter().collect();
    let (table, key) = (set.table(), set.key());
    let n = key.len();
    let mut delete = conn.prepare_cached(&format!(
        "DELETE FROM {table} WHERE {} AND first_seq = ?{}",
        set.key_condition(),
        n + 1
    ))?;
    for (first, _) in old_set.difference(&new_set) {
        let first = rusqlite::types::Value::Integer(*first as i64);
        delete.execute(params_from_iter(key.iter().chain([&first])))?;
    }
    let columns = set.key_columns().join(", ");
    let placeholders: Vec<String> = (1..=n + 2).map(|i| format!("?{i}")).collect();
    let mut insert = conn.prepare_cached(&format!(
        "INSERT INTO {table} ({columns}, first_seq, last_seq) VALUES ({})
         ON CONFLICT ({columns}, first_seq) DO UPDATE SET last_seq = excluded.last_seq",
        placeholders.join(", ")
    ))?;
    for (first, last) in new_set.difference(&old_set) {
        let bounds = [*first as i64, *last as i64].map(rusqlite::types::Value::Integer);
        insert.execute(params_from_iter(key.iter().chain(&bounds)))?;
    }
    Ok(())
}
