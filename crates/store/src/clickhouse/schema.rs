//! The tables, and the list of steps that creates and migrates them.
//!
//! Every statement is idempotent (`IF NOT EXISTS`), so collectors starting
//! together may all run a step; the step's version is recorded after it.
//! The SQL keeps to what ClickHouse 18.16 (Debian 12) and current releases
//! both take (see docs/STORE.md): no column codecs and no `TTL` (19.x),
//! no `LowCardinality` (experimental in 18.16); compression is the server's
//! (LZ4, or ZSTD by its `<compression>` setting) and retention is
//! [`super::retention`]'s.

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// The schema version this build writes.
pub(super) const VERSION: u32 = MIGRATIONS.len() as u32;

/// Step `i` takes the database from version `i` to `i + 1`.
const MIGRATIONS: &[&[&str]] = &[
    &[
        // Raw events: one row each, partitioned by day, sorted for one host's
        // time range; the sort key ends in the event's identity, so a re-sent
        // event is the same row to the ReplacingMergeTree.
        "CREATE TABLE IF NOT EXISTS events (
        day Date, hour Int64, host String, ts Int64,
        agent String, instance String, boot String, sequence UInt64, content_key UInt64,
        kind String, protocol String, direction String, netns UInt64,
        local_ip String, local_port UInt16, remote_ip String, remote_port UInt16,
        pid Nullable(UInt32), executable Nullable(String), comm Nullable(String),
        command_line Nullable(String), cgroup Nullable(String),
        uid Nullable(UInt32), user_name Nullable(String),
        closed UInt8, duration_ns UInt64, bytes_sent UInt64, bytes_received UInt64,
        packets_sent Nullable(UInt64), packets_received Nullable(UInt64),
        failure Nullable(String), preexisting UInt8,
        remote_name Nullable(String), remote_name_source Nullable(String)
    ) ENGINE = ReplacingMergeTree()
    PARTITION BY day
    ORDER BY (host, hour, agent, instance, boot, sequence, content_key)",
        "CREATE TABLE IF NOT EXISTS event_keys (
        agent String, hour Int64, content_key UInt64
    ) ENGINE = ReplacingMergeTree()
    PARTITION BY toYYYYMM(toDate(intDiv(hour, 1000000000)))
    ORDER BY (agent, hour, content_key)",
        // Hourly edge rollups, one row per edge, hour and batch that counted
        // in it; read summed over batches.
        "CREATE TABLE IF NOT EXISTS edge_rollups (
        day Date, hour Int64, host String, direction String, local_ip String,
        remote_ip String, service_port UInt16, protocol String, executable String,
        user_name String, batch_key UInt64,
        connections UInt64, failures UInt64, bytes_sent UInt64, bytes_received UInt64,
        first_seen Int64, last_seen Int64
    ) ENGINE = ReplacingMergeTree()
    PARTITION BY toYYYYMM(day)
    ORDER BY (hour, host, direction, local_ip, remote_ip, service_port, protocol,
              executable, user_name, batch_key)",
        "CREATE TABLE IF NOT EXISTS spaces (
        agent String, instance String, boot String, batch_key UInt64,
        first_sequence UInt64, host String, events UInt64,
        first_ts Int64, last_ts Int64, stored_at Int64
    ) ENGINE = ReplacingMergeTree()
    ORDER BY (agent, instance, boot, batch_key)",
        "CREATE TABLE IF NOT EXISTS sequence_ranges (
        agent String, instance String, boot String, first_seq UInt64, last_seq UInt64
    ) ENGINE = ReplacingMergeTree()
    ORDER BY (agent, instance, boot, first_seq, last_seq)",
        "CREATE TABLE IF NOT EXISTS dropped_ranges (
        agent String, instance String, boot String, first_seq UInt64, last_seq UInt64
    ) ENGINE = ReplacingMergeTree()
    ORDER BY (agent, instance, boot, first_seq, last_seq)",
        "CREATE TABLE IF NOT EXISTS downtime (
        agent String, instance String, down_from Int64, down_to Int64
    ) ENGINE = ReplacingMergeTree()
    ORDER BY (agent, instance, down_from, down_to)",
        "CREATE TABLE IF NOT EXISTS refusals (
        agent String, reason String, at Int64
    ) ENGINE = MergeTree()
    ORDER BY (agent, reason, at)",
        "CREATE TABLE IF NOT EXISTS host_addresses (
        host String, ip String, first_seen Int64, last_seen Int64
    ) ENGINE = ReplacingMergeTree()
    ORDER BY (host, ip, first_seen, last_seen)",
        "CREATE TABLE IF NOT EXISTS host_groups (
        name String, kind String, patterns Array(String),
        label_keys Array(String), label_values Array(String),
        added Int64, removed UInt8, version UInt64
    ) ENGINE = ReplacingMergeTree(version)
    ORDER BY name",
        "CREATE TABLE IF NOT EXISTS host_labels (
        host String, key String, value String, removed UInt8, version UInt64
    ) ENGINE = ReplacingMergeTree(version)
    ORDER BY (host, key)",
    ],
    &[
        // Version 2: access tokens as digests (`super::tokens`), and the row a
        // collector writes to show the store takes writes (`/readyz`).
        "CREATE TABLE IF NOT EXISTS access_tokens (
        id String, kind String, digest String, agent String, created Int64,
        expires Nullable(Int64), reusable UInt8, uses UInt64,
        last_used Nullable(Int64), revoked Nullable(Int64), version UInt64
    ) ENGINE = ReplacingMergeTree(version)
    ORDER BY id",
        "CREATE TABLE IF NOT EXISTS write_probes (id UInt8, at Int64)
    ENGINE = ReplacingMergeTree(at)
    ORDER BY id",
    ],
    &[
        // Version 3: the policy loop (`super::policies`): policy versions,
        // assignments with their history, hosts' firewall reports and
        // notices, drift sightings.
        "CREATE TABLE IF NOT EXISTS policy_versions (
        name String, version UInt32, document String, created Int64,
        author String, comment String
    ) ENGINE = ReplacingMergeTree()
    ORDER BY (name, version)",
        "CREATE TABLE IF NOT EXISTS policy_assignments (
        revision UInt64, target_kind String, target String, assigned UInt8,
        policy String, version UInt32, staging String, at Int64, by String
    ) ENGINE = ReplacingMergeTree()
    ORDER BY (revision, target_kind, target)",
        "CREATE TABLE IF NOT EXISTS host_firewalls (
        host String, state String, reported_at Int64, version UInt64
    ) ENGINE = ReplacingMergeTree(version)
    ORDER BY host",
        "CREATE TABLE IF NOT EXISTS firewall_notices (
        host String, at String, kind String, detail String
    ) ENGINE = ReplacingMergeTree()
    ORDER BY (host, at, kind, detail)",
        "CREATE TABLE IF NOT EXISTS drift_sightings (
        host String, direction String, protocol String, port UInt16, remote String,
        local String, remote_name String, executable String, user_name String,
        policy String, version UInt32, mode String,
        first_seen Int64, last_seen Int64, connections UInt64
    ) ENGINE = MergeTree()
    ORDER BY (host, direction, protocol, port, remote, first_seen)",
    ],
    &[
        // Version 4: firewall rule hit counters (`super::rule_hits`), the
        // newest reading of a rule on a host winning (`reading`: its time;
        // 18.16 takes only an unsigned version column).
        "CREATE TABLE IF NOT EXISTS rule_counters (
        policy String, policy_version UInt32, rule String, host String,
        revision UInt64, read_packets UInt64, read_bytes UInt64,
        packets UInt64, bytes UInt64,
        first_reported Int64, last_reported Int64, last_hit Nullable(Int64),
        reading UInt64
    ) ENGINE = ReplacingMergeTree(reading)
    ORDER BY (policy, policy_version, rule, host)",
    ],
    &[
        // Version 5: closed hours folded (`super::fold`). The hours each
        // wholly stored batch has rollups in; the batches a fold counted;
        // an edge's hour and day summed over its batches, the latest fold
        // (highest version) replacing the earlier.
        "CREATE TABLE IF NOT EXISTS batch_hours (hour Int64, batch_key UInt64)
    ENGINE = ReplacingMergeTree()
    PARTITION BY toYYYYMM(toDate(intDiv(hour, 1000000000)))
    ORDER BY (hour, batch_key)",
        "CREATE TABLE IF NOT EXISTS fold_marks (
        hour Int64, batch_key UInt64, version UInt64, folded_at Int64
    ) ENGINE = ReplacingMergeTree()
    PARTITION BY toYYYYMM(toDate(intDiv(hour, 1000000000)))
    ORDER BY (hour, batch_key, version)",
        // Folded batch rows due for deletion (a mutation's subquery in
        // 18.16 may not join, so the join's answer is kept here).
        "CREATE TABLE IF NOT EXISTS fold_deletions (hour Int64, batch_key UInt64)
    ENGINE = ReplacingMergeTree()
    PARTITION BY toYYYYMM(toDate(intDiv(hour, 1000000000)))
    ORDER BY (hour, batch_key)",
        "CREATE TABLE IF NOT EXISTS folded_hours (
        day Date, hour Int64, host String, direction String, local_ip String,
        remote_ip String, service_port UInt16, protocol String, executable String,
        user_name String, connections UInt64, failures UInt64, bytes_sent UInt64,
        bytes_received UInt64, first_seen Int64, last_seen Int64, version UInt64
    ) ENGINE = ReplacingMergeTree(version)
    PARTITION BY toYYYYMM(day)
    ORDER BY (hour, host, direction, local_ip, remote_ip, service_port, protocol,
              executable, user_name)",
        "CREATE TABLE IF NOT EXISTS folded_days (
        day Date, hour Int64, host String, direction String, local_ip String,
        remote_ip String, service_port UInt16, protocol String, executable String,
        user_name String, connections UInt64, failures UInt64, bytes_sent UInt64,
        bytes_received UInt64, first_seen Int64, last_seen Int64, version UInt64
    ) ENGINE = ReplacingMergeTree(version)
    PARTITION BY toYYYYMM(day)
    ORDER BY (day, host, direction, local_ip, remote_ip, service_port, protocol,
              executable, user_name)",
    ],
];

/// Each table and the sharding key that sends every copy of one of its
/// rows to the same shard (where `FINAL` collapses them).
pub(super) const SHARDING: &[(&str, &str)] = &[
    ("events", "cityHash64(agent)"),
    ("event_keys", "cityHash64(agent)"),
    ("edge_rollups", "batch_key"),
    ("spaces", "cityHash64(agent)"),
    ("sequence_ranges", "cityHash64(agent)"),
    ("dropped_ranges", "cityHash64(agent)"),
    ("downtime", "cityHash64(agent)"),
    ("refusals", "cityHash64(agent)"),
    ("host_addresses", "cityHash64(host)"),
    ("host_groups", "cityHash64(name)"),
    ("host_labels", "cityHash64(host, key)"),
    ("access_tokens", "cityHash64(id)"),
    ("write_probes", "id"),
    ("policy_versions", "cityHash64(name)"),
    ("policy_assignments", "cityHash64(target_kind, target)"),
    ("host_firewalls", "cityHash64(host)"),
    ("firewall_notices", "cityHash64(host)"),
    ("drift_sightings", "cityHash64(host)"),
    ("rule_counters", "cityHash64(policy, host)"),
    // The fold's tables, by the hour (or day) a fold works on.
    ("batch_hours", "cityHash64(hour)"),
    ("fold_marks", "cityHash64(hour)"),
    ("fold_deletions", "cityHash64(hour)"),
    ("folded_hours", "cityHash64(hour)"),
    ("folded_days", "cityHash64(day)"),
];

/// Makes `database` a sharded store: each table a `Distributed` table
/// over `cluster` (the server's `remote_servers`), whose shards each hold
/// a store in `shard_database` (made by opening it there). The store is
/// then opened on `database`.
pub(super) async fn create_distributed(
    client: &Client,
    database: &str,
    cluster: &str,
    shard_database: &str,
) -> Result<(), StoreError> {
    for name in [database, cluster, shard_database] {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(StoreError::Open {
                path: database.to_owned(),
                reason: format!("{name:?}: names are letters, digits and '_'"),
            });
        }
    }
    client
        .clone()
        .with_database("system")
        .query(&format!("CREATE DATABASE IF NOT EXISTS `{database}`"))
        .execute()
        .await?;
    for (table, key) in SHARDING {
        client
            .query(&format!(
                "CREATE TABLE IF NOT EXISTS `{database}`.`{table}` AS `{shard_database}`.`{table}`
                 ENGINE = Distributed(`{cluster}`, `{shard_database}`, `{table}`, {key})"
            ))
            .execute()
            .await?;
    }
    Ok(())
}

#[derive(Row, Serialize, Deserialize)]
struct Applied {
    version: u32,
}

/// Creates `database` and brings its tables to [`VERSION`].
pub(super) async fn bring_up_to_date(client: &Client, database: &str) -> Result<(), StoreError> {
    // The name was checked to be letters, digits and '_' (see `location`).
    client
        .clone()
        .with_database("system")
        .query(&format!("CREATE DATABASE IF NOT EXISTS `{database}`"))
        .execute()
        .await?;
    client
        .query(
            "CREATE TABLE IF NOT EXISTS schema_versions (version UInt32)
             ENGINE = ReplacingMergeTree() ORDER BY version",
        )
        .execute()
        .await?;
    let current = client
        .query("SELECT max(version) AS version FROM schema_versions")
        .fetch_one::<Applied>()
        .await?
        .version;
    if current > VERSION {
        return Err(StoreError::Open {
            path: database.to_owned(),
            reason: format!(
                "the database has schema version {current}, newer than this build's {VERSION}"
            ),
        });
    }
    for (step, statements) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        for statement in *statements {
            client.query(statement).execute().await?;
        }
        let mut insert = client.insert::<Applied>("schema_versions").await?;
        insert
            .write(&Applied {
                version: step as u32 + 1,
            })
            .await?;
        insert.end().await?;
        tracing::info!(version = step + 1, "ClickHouse store schema migrated");
    }
    Ok(())
}
