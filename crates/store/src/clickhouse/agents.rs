//! Agents' reports and status: ranges reported dropped, downtime, refused
//! batches, and each agent state's status read back from its sequence
//! spaces. Every table here is written idempotently (a repeated report is
//! the same row) and read by union, min or max.

use std::collections::{BTreeMap, HashMap};

use clickhouse::{Client, Row};
use connscope_event::Timestamp;
use serde::Deserialize;

use super::rows;
use super::write::insert_rows;
use crate::checks::{check_dropped, check_label};
use crate::status::Statuses;
use crate::{AgentId, AgentStatus, RefusalCount, SequenceRanges, StoreError};

/// The rows of a drop report, checked as the SQLite backend checks them.
pub(super) fn dropped_rows(
    agent: &AgentId,
    instance: &str,
    reason: &str,
    ranges: &[(u64, u64)],
) -> Result<Vec<rows::Range>, StoreError> {
    check_dropped(instance, reason, ranges)?;
    Ok(ranges
        .iter()
        .map(|&(first, last)| rows::Range {
            agent: agent.0.clone(),
            instance: instance.to_owned(),
            boot: reason.to_owned(),
            first_seq: first,
            last_seq: last,
        })
        .collect())
}

pub(super) async fn record_dropped(
    client: &Client,
    rows: Vec<rows::Range>,
) -> Result<(), StoreError> {
    insert_rows(client, "dropped_ranges", &rows).await
}

pub(super) fn downtime_rows(
    agent: &AgentId,
    instance: &str,
    windows: &[(Timestamp, Timestamp)],
) -> Result<Vec<rows::Downtime>, StoreError> {
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
    Ok(windows
        .iter()
        .map(|(from, to)| rows::Downtime {
            agent: agent.0.clone(),
            instance: instance.to_owned(),
            down_from: from.as_nanos(),
            down_to: to.as_nanos(),
        })
        .collect())
}

pub(super) async fn record_downtime(
    client: &Client,
    rows: Vec<rows::Downtime>,
) -> Result<(), StoreError> {
    insert_rows(client, "downtime", &rows).await
}

pub(super) async fn record_refusal(client: &Client, row: rows::Refusal) -> Result<(), StoreError> {
    insert_rows(client, "refusals", &[row]).await
}

#[derive(Row, Deserialize)]
struct RefusalSum {
    agent: String,
    reason: String,
    batches: u64,
    last_at: i64,
}

pub(super) async fn refusals(client: &Client) -> Result<Vec<RefusalCount>, StoreError> {
    let rows = client
        .query(
            "SELECT agent, reason, count() AS batches, max(at) AS last_at
             FROM refusals GROUP BY agent, reason ORDER BY agent, reason",
        )
        .fetch_all::<RefusalSum>()
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| RefusalCount {
            agent: AgentId(r.agent),
            reason: r.reason,
            batches: r.batches,
            last_at: Timestamp::from_nanos(r.last_at),
        })
        .collect())
}

/// Reason -> ranges reported dropped for it, of one agent state.
type ByReason = BTreeMap<String, Vec<(u64, u64)>>;

/// One sequence space (agent, state, run) summed over its batches.
#[derive(Row, Deserialize)]
struct SpaceSum {
    agent: String,
    instance: String,
    boot: String,
    first_sequence: u64,
    host: String,
    events: u64,
    first_ts: i64,
    last_ts: i64,
}

/// The status of every agent state.
pub(super) async fn statuses(client: &Client) -> Result<Vec<AgentStatus>, StoreError> {
    let mut stored: HashMap<(String, String, String), Vec<(u64, u64)>> = HashMap::new();
    for r in client
        .query("SELECT ?fields FROM sequence_ranges")
        .fetch_all::<rows::Range>()
        .await?
    {
        stored
            .entry((r.agent, r.instance, r.boot))
            .or_default()
            .push((r.first_seq, r.last_seq));
    }
    let mut dropped: BTreeMap<(String, String), ByReason> = BTreeMap::new();
    for r in client
        .query("SELECT ?fields FROM dropped_ranges")
        .fetch_all::<rows::Range>()
        .await?
    {
        dropped
            .entry((r.agent, r.instance))
            .or_default()
            .entry(r.boot)
            .or_default()
            .push((r.first_seq, r.last_seq));
    }
    // A space in the order its runs were first stored, as SQLite's ids give it.
    let spaces = client
        .query(
            "SELECT agent, instance, boot, any(first_sequence) AS first_sequence,
                    argMax(host, stored_at) AS host, sum(events) AS events,
                    min(first_ts) AS first_ts, max(last_ts) AS last_ts
             FROM spaces FINAL
             GROUP BY agent, instance, boot
             ORDER BY agent, min(stored_at), instance, boot",
        )
        .fetch_all::<SpaceSum>()
        .await?;
    let mut statuses = Statuses::default();
    for space in spaces {
        let (first, last) = (
            Timestamp::from_nanos(space.first_ts),
            Timestamp::from_nanos(space.last_ts),
        );
        let boot = SequenceRanges::from_ranges(
            stored
                .remove(&(space.agent.clone(), space.instance.clone(), space.boot))
                .unwrap_or_default(),
        );
        let status = statuses.of(
            &space.agent,
            &space.instance,
            space.first_sequence,
            (first, last),
        );
        status.boots += 1;
        status.reused += status.sequences.count_within(boot.ranges());
        for &(f, l) in boot.ranges() {
            status.sequences.insert_range(f, l);
        }
        status.first_sequence = status.first_sequence.min(space.first_sequence);
        status.events += space.events;
        if last >= status.last_seen || status.host.is_empty() {
            status.host = space.host;
        }
        status.first_seen = status.first_seen.min(first);
        status.last_seen = status.last_seen.max(last);
    }
    for r in client
        .query(
            "SELECT agent, instance, down_from, max(down_to) AS down_to
             FROM downtime GROUP BY agent, instance, down_from ORDER BY down_from",
        )
        .fetch_all::<rows::Downtime>()
        .await?
    {
        if let Some(status) = statuses.get(&r.agent, &r.instance) {
            status.downtime.push((
                Timestamp::from_nanos(r.down_from),
                Timestamp::from_nanos(r.down_to),
            ));
        }
    }
    for ((agent, instance), reasons) in dropped {
        let first = reasons
            .values()
            .flatten()
            .map(|&(f, _)| f)
            .min()
            .unwrap_or(1);
        let never = Timestamp::from_nanos(0);
        let status = statuses.of(&agent, &instance, first, (never, never));
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
