//! Host groups and labels: a row per change, the latest version of a
//! name (or host and key) wins when read with `FINAL`; removal is a row
//! marked removed. A replaced group keeps the time it was first added,
//! which orders the groups.

use clickhouse::Client;

use super::rows;
use super::write::insert_rows;
use crate::{GroupKind, HostGroup, HostLabel, StoreError};

/// A version newer than any written before by this clock: nanoseconds now.
pub(super) fn version_now() -> u64 {
    connscope_event::Timestamp::now().as_nanos().max(0) as u64
}

async fn current(client: &Client, name: &str) -> Result<Option<rows::Group>, StoreError> {
    Ok(client
        .query("SELECT ?fields FROM host_groups FINAL WHERE name = ? AND removed = 0")
        .bind(name)
        .fetch_optional::<rows::Group>()
        .await?)
}

pub(super) async fn put(client: &Client, group: &HostGroup) -> Result<(), StoreError> {
    let version = version_now();
    let added = match current(client, &group.name).await? {
        Some(old) => old.added,
        None => version as i64,
    };
    let mut labels = group.labels.clone();
    labels.sort();
    let row = rows::Group {
        name: group.name.clone(),
        kind: group.kind.as_str().to_owned(),
        patterns: group.patterns.clone(),
        label_keys: labels.iter().map(|(k, _)| k.clone()).collect(),
        label_values: labels.into_iter().map(|(_, v)| v).collect(),
        added,
        removed: 0,
        version,
    };
    insert_rows(client, "host_groups", &[row]).await
}

pub(super) async fn all(client: &Client) -> Result<Vec<HostGroup>, StoreError> {
    let rows = client
        .query("SELECT ?fields FROM host_groups FINAL WHERE removed = 0 ORDER BY added, name")
        .fetch_all::<rows::Group>()
        .await?;
    rows.into_iter()
        .map(|r| {
            let kind = GroupKind::parse(&r.kind).ok_or_else(|| {
                StoreError::Backend(
                    format!("group {:?} has unknown kind {:?}", r.name, r.kind).into(),
                )
            })?;
            Ok(HostGroup {
                name: r.name,
                kind,
                patterns: r.patterns,
                labels: r.label_keys.into_iter().zip(r.label_values).collect(),
            })
        })
        .collect()
}

pub(super) async fn remove(client: &Client, name: &str) -> Result<bool, StoreError> {
    let Some(mut old) = current(client, name).await? else {
        return Ok(false);
    };
    old.removed = 1;
    old.version = version_now().max(old.version + 1);
    insert_rows(client, "host_groups", &[old]).await?;
    Ok(true)
}

pub(super) async fn set_host_label(client: &Client, row: rows::Label) -> Result<(), StoreError> {
    insert_rows(client, "host_labels", &[row]).await
}

pub(super) async fn host_labels(client: &Client) -> Result<Vec<HostLabel>, StoreError> {
    let rows = client
        .query("SELECT ?fields FROM host_labels FINAL WHERE removed = 0 ORDER BY host, key")
        .fetch_all::<rows::Label>()
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| HostLabel {
            host: r.host,
            key: r.key,
            value: r.value,
        })
        .collect())
}
