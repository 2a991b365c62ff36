//! Which events of a batch are already stored: numbered events by their
//! space's sequence ranges, unnumbered ones by content key in per-agent,
//! per-hour sorted key arrays; and which repeats are not retries at all.

use std::collections::{HashMap, HashSet};

use connscope_event::ConnectionEvent;
use rusqlite::{params, Connection, OptionalExtension};

use super::batch::Batch;
use super::column::{block_events, clamp, Corrupt};
use crate::block::{self, BlockEncoder};
use crate::hash::FastHash;
use crate::{hour_start, SequenceRanges, StoreError};

/// The sequence numbers of `batch` that repeat a number of the same space
/// (stored before, or earlier in the batch) with other content: not a
/// retry but an error of the sender, which must not pass as a duplicate.
///
/// A stored copy is found while its raw events are kept (retention), in
/// the blocks of the space whose sequence range holds the repeats (blocks
/// from before schema version 6 have none); a repeat whose copy is not
/// found counts as a plain duplicate. Only repeats cost work.
pub(super) fn conflicting_repeats(
    conn: &Connection,
    space: i64,
    batch: Batch<'_>,
    fresh: &[bool],
    stored_before: &SequenceRanges,
) -> Result<Vec<u64>, StoreError> {
    let repeats: Vec<usize> = (0..batch.len())
        .filter(|&i| !fresh[i] && batch.event(i).sequence != 0)
        .collect();
    if repeats.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: HashSet<u64> = repeats.iter().map(|&i| batch.event(i).sequence).collect();
    let firsts: Vec<&ConnectionEvent> = (0..batch.len())
        .filter(|&i| fresh[i] && wanted.contains(&batch.event(i).sequence))
        .map(|i| batch.event(i))
        .collect();
    let mut earlier: HashMap<u64, ConnectionEvent> = normalized(&firsts)?
        .into_iter()
        .map(|e| (e.sequence, e))
        .collect();
    if !wanted.iter().any(|&n| stored_before.contains(n)) {
        return compare_repeats(batch, &repeats, &earlier);
    }
    let low = wanted.iter().min().copied().unwrap_or(0);
    let high = wanted.iter().max().copied().unwrap_or(0);
    let mut stmt = conn.prepare_cached(
        "SELECT block_id, host, data FROM event_blocks
         WHERE space_id = ?1 AND last_seq >= ?2 AND first_seq <= ?3",
    )?;
    let mut rows = stmt.query(params![space, clamp(low), clamp(high)])?;
    while let Some(row) = rows.next()? {
        let (id, host): (i64, String) = (row.get(0)?, row.get(1)?);
        let events = block_events(row, id, &host, 2)?;
        for event in events {
            if wanted.contains(&event.sequence) && stored_before.contains(event.sequence) {
                earlier.insert(event.sequence, event);
            }
        }
    }
    compare_repeats(batch, &repeats, &earlier)
}

/// The sequence numbers of `repeats` whose event differs from `earlier`'s.
fn compare_repeats(
    batch: Batch<'_>,
    repeats: &[usize],
    earlier: &HashMap<u64, ConnectionEvent>,
) -> Result<Vec<u64>, StoreError> {
    let resent: Vec<&ConnectionEvent> = repeats.iter().map(|&i| batch.event(i)).collect();
    let resent = normalized(&resent)?;
    Ok(resent
        .into_iter()
        .filter(|e| earlier.get(&e.sequence).is_some_and(|first| first != e))
        .map(|e| e.sequence)
        .collect())
}

/// `events` as the store gives them back (what a block keeps of them), so
/// a resent event compares equal to its stored copy. One block for all.
fn normalized(events: &[&ConnectionEvent]) -> Result<Vec<ConnectionEvent>, StoreError> {
    let mut block = BlockEncoder::default();
    for event in events {
        block.push(event);
    }
    let mut decoded = block::decode(&block.finish(), "").map_err(|e| Corrupt {
        column: "event_blocks.data",
        value: format!("events do not read back: {e}"),
    })?;
    if decoded.len() != events.len() {
        return Err(StoreError::from(Corrupt {
            column: "event_blocks.data",
            value: format!("{} events read back as {}", events.len(), decoded.len()),
        }));
    }
    // A block keeps no host (its row does): each event's own.
    for (copy, event) in decoded.iter_mut().zip(events) {
        copy.host.clone_from(&event.host);
    }
    Ok(decoded)
}

/// Which events of `batch` are not stored yet. Numbered events are looked
/// up in (and added to) the agent's sequence `ranges`; the others by content
/// key in the agent's per-hour key sets, which are updated here: a batch
/// costs a read per hour it has keys in and a write per hour it adds keys to.
/// Of equal keys within the batch, the first is new.
pub(super) fn new_events(
    conn: &Connection,
    agent_id: i64,
    batch: Batch<'_>,
    ranges: &mut SequenceRanges,
) -> Result<Vec<bool>, StoreError> {
    let mut fresh = vec![false; batch.len()];
    let mut by_hour: HashMap<i64, Vec<(u64, usize)>, FastHash> = HashMap::default();
    for (i, new) in fresh.iter_mut().enumerate() {
        let event = batch.event(i);
        if event.sequence != 0 {
            *new = ranges.insert(event.sequence);
        } else {
            let (key, key_time) = batch.key(i);
            let hour = hour_start(key_time).as_nanos();
            by_hour.entry(hour).or_default().push((key.0, i));
        }
    }
    let mut load =
        conn.prepare_cached("SELECT keys FROM event_key_sets WHERE agent_id = ?1 AND hour = ?2")?;
    let mut save = conn.prepare_cached(
        "INSERT INTO event_key_sets VALUES (?1, ?2, ?3)
         ON CONFLICT (agent_id, hour) DO UPDATE SET keys = excluded.keys",
    )?;
    for (hour, mut keys) in by_hour {
        let stored: Option<Vec<u8>> = load
            .query_row(params![agent_id, hour], |r| r.get(0))
            .optional()?;
        let mut set = stored
            .map(|bytes| decode_keys(&bytes))
            .transpose()?
            .unwrap_or_default();
        keys.sort_unstable();
        let before = set.len();
        for (j, &(key, i)) in keys.iter().enumerate() {
            let repeat = j > 0 && keys[j - 1].0 == key;
            if !repeat && set[..before].binary_search(&key).is_err() {
                fresh[i] = true;
                set.push(key);
            }
        }
        if set.len() > before {
            // Both halves are sorted: the sort merges them in linear time.
            set.sort();
            save.execute(params![agent_id, hour, encode_keys(&set)])?;
        }
    }
    Ok(fresh)
}

fn encode_keys(keys: &[u64]) -> Vec<u8> {
    keys.iter().flat_map(|k| k.to_le_bytes()).collect()
}

fn decode_keys(bytes: &[u8]) -> Result<Vec<u64>, Corrupt> {
    if bytes.len() % 8 != 0 {
        return Err(Corrupt {
            column: "event_key_sets.keys",
            value: format!("{} bytes, not a multiple of 8", bytes.len()),
        });
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|k| u64::from_le_bytes(k.try_into().expect("chunks of 8")))
        .collect())
}
