//! Rule hit counters in ClickHouse: a row per reading that changed a rule's
//! state, the newest reading of a (policy, version, rule, host) winning
//! when read with `FINAL` (`reading`, the reading's time, is the
//! ReplacingMergeTree's version column). The arithmetic is [`HostRuleCounter::after`], as in
//! SQLite. Without transactions, two collectors storing two readings of one
//! host at once could both start from the same state; an agent reports to
//! one collector at a time, so readings of one host come one after another.

use clickhouse::{Client, Row};
use connscope_event::Timestamp;
use serde::{Deserialize, Serialize};

use super::write::insert_rows;
use crate::{rule_hits_of, HostRuleCounter, RuleCount, RuleHits, StoreError};

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct Counter {
    policy: String,
    policy_version: u32,
    rule: String,
    host: String,
    revision: u64,
    read_packets: u64,
    read_bytes: u64,
    packets: u64,
    bytes: u64,
    first_reported: i64,
    last_reported: i64,
    last_hit: Option<i64>,
    reading: u64,
}

impl Counter {
    fn state(&self) -> HostRuleCounter {
        HostRuleCounter {
            revision: self.revision,
            read_packets: self.read_packets,
            read_bytes: self.read_bytes,
            packets: self.packets,
            bytes: self.bytes,
            first_reported: Timestamp::from_nanos(self.first_reported),
            last_reported: Timestamp::from_nanos(self.last_reported),
            last_hit: self.last_hit.map(Timestamp::from_nanos),
        }
    }
}

pub(super) async fn record(
    client: &Client,
    host: &str,
    policy: &str,
    version: u32,
    revision: u64,
    at: Timestamp,
    counters: &[RuleCount],
) -> Result<(), StoreError> {
    let kept = client
        .query(
            "SELECT ?fields FROM rule_counters FINAL
             WHERE policy = ? AND policy_version = ? AND host = ?",
        )
        .bind(policy)
        .bind(version)
        .bind(host)
        .fetch_all::<Counter>()
        .await?;
    let rows: Vec<Counter> = counters
        .iter()
        .filter_map(|count| {
            let before = kept
                .iter()
                .find(|k| k.rule == count.rule)
                .map(Counter::state);
            let after = HostRuleCounter::after(before.as_ref(), revision, at, count)?;
            Some(Counter {
                policy: policy.to_owned(),
                policy_version: version,
                rule: count.rule.clone(),
                host: host.to_owned(),
                revision: after.revision,
                read_packets: after.read_packets,
                read_bytes: after.read_bytes,
                packets: after.packets,
                bytes: after.bytes,
                first_reported: after.first_reported.as_nanos(),
                last_reported: after.last_reported.as_nanos(),
                last_hit: after.last_hit.map(Timestamp::as_nanos),
                reading: after.last_reported.as_nanos().max(0) as u64,
            })
        })
        .collect();
    insert_rows(client, "rule_counters", &rows).await
}

pub(super) async fn read(
    client: &Client,
    policy: &str,
    version: Option<u32>,
) -> Result<Vec<RuleHits>, StoreError> {
    let query = match version {
        Some(version) => client
            .query(
                "SELECT ?fields FROM rule_counters FINAL WHERE policy = ? AND policy_version = ?",
            )
            .bind(policy)
            .bind(version),
        None => client
            .query("SELECT ?fields FROM rule_counters FINAL WHERE policy = ?")
            .bind(policy),
    };
    let rows = query.fetch_all::<Counter>().await?;
    Ok(rule_hits_of(rows.into_iter().map(|row| {
        let state = row.state();
        (row.policy, row.policy_version, row.rule, state)
    })))
}
