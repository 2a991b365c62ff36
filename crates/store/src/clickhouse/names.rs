//! The names hosts learned for remote addresses, per hour: read from the
//! raw events that carry them, grouped as SQLite's `remote_names` table
//! keeps them. Derived rather than written beside the events, so a batch
//! stored twice (see the module docs of [`super`]) cannot count twice; the
//! price is that names live as long as the raw events (docs/STORE.md).

use clickhouse::{Client, Row};
use connscope_event::Timestamp;
use serde::Deserialize;

use super::read::{filing_hours, parse};
use crate::{hour_start, NameSighting, RollupQuery, StoreError};

const HOUR_NANOS: i64 = 3_600_000_000_000;

#[derive(Debug, Row, Deserialize)]
struct Sighting {
    named_hour: i64,
    host: String,
    remote_ip: String,
    name: String,
    source: String,
    connections: u64,
    first_seen: i64,
    last_seen: i64,
}

pub(super) async fn remote_names(
    client: &Client,
    query: &RollupQuery,
) -> Result<Vec<NameSighting>, StoreError> {
    let (from, to) = (
        hour_start(query.range.from).as_nanos(),
        query.range.to.as_nanos(),
    );
    let (first_hour, last_hour) = filing_hours(query.range.from, query.range.to);
    let rows = client
        .query(
            "SELECT intDiv(ts, ?) * ? AS named_hour, host, remote_ip,
                    assumeNotNull(remote_name) AS name,
                    assumeNotNull(remote_name_source) AS source,
                    toUInt64(countIf(kind = 'connect')) AS connections,
                    min(ts) AS first_seen, max(ts) AS last_seen
             FROM events FINAL
             WHERE hour >= ? AND hour < ? AND ts >= ? AND ts < ?
               AND isNotNull(remote_name) AND (? = '' OR host = ?)
             GROUP BY named_hour, host, remote_ip, name, source
             ORDER BY host, remote_ip, name, source, named_hour",
        )
        .bind(HOUR_NANOS)
        .bind(HOUR_NANOS)
        .bind(first_hour)
        .bind(last_hour)
        .bind(from)
        .bind(to)
        .bind(query.host.as_deref().unwrap_or(""))
        .bind(query.host.as_deref().unwrap_or(""))
        .fetch_all::<Sighting>()
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(NameSighting {
                hour: Timestamp::from_nanos(r.named_hour),
                remote_ip: parse("remote_ip", &r.remote_ip)?,
                source: parse("remote_name_source", &r.source)?,
                host: r.host,
                name: r.name,
                connections: r.connections,
                first_seen: Timestamp::from_nanos(r.first_seen),
                last_seen: Timestamp::from_nanos(r.last_seen),
            })
        })
        .collect()
}
