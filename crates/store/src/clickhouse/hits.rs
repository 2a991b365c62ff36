//! Firewall hits, grouped in SQL over the raw events of their kinds; the
//! same rows SQLite sums in Rust ([`crate::hits`]).

use clickhouse::{Client, Row};
use connscope_event::Timestamp;
use serde::Deserialize;

use super::read::{filing_hours, parse};
use crate::hits::sort_hits;
use crate::{FirewallHitQuery, FirewallHitTotal, StoreError};

#[derive(Debug, Row, Deserialize)]
struct Hit {
    host: String,
    kind: String,
    direction: String,
    protocol: String,
    service_port: u16,
    remote_ip: String,
    executable: Option<String>,
    hit_user: Option<String>,
    local_ip: String,
    remote_name: Option<String>,
    hits: u64,
    first_seen: i64,
    last_seen: i64,
}

pub(super) async fn firewall_hits(
    client: &Client,
    query: &FirewallHitQuery,
) -> Result<Vec<FirewallHitTotal>, StoreError> {
    let (first_hour, last_hour) = filing_hours(query.range.from, query.range.to);
    let rows = client
        .query(
            "SELECT host, kind, direction, protocol,
                    multiIf(direction = 'outgoing', remote_port,
                            direction = 'incoming', local_port,
                            least(local_port, remote_port)) AS service_port,
                    remote_ip, executable,
                    if(isNotNull(user_name), user_name, toString(uid)) AS hit_user,
                    argMax(local_ip, ts) AS local_ip,
                    argMax(remote_name, ts) AS remote_name,
                    count() AS hits, min(ts) AS first_seen, max(ts) AS last_seen
             FROM events FINAL
             WHERE hour >= ? AND hour < ? AND ts >= ? AND ts < ?
               AND kind IN ('would-block', 'blocked') AND (? = '' OR host = ?)
             GROUP BY host, kind, direction, protocol, service_port, remote_ip,
                      executable, hit_user",
        )
        .bind(first_hour)
        .bind(last_hour)
        .bind(query.range.from.as_nanos())
        .bind(query.range.to.as_nanos())
        .bind(query.host.as_deref().unwrap_or(""))
        .bind(query.host.as_deref().unwrap_or(""))
        .fetch_all::<Hit>()
        .await?;
    let mut hits = rows
        .into_iter()
        .map(|r| {
            Ok(FirewallHitTotal {
                kind: parse("kind", &r.kind)?,
                direction: parse("direction", &r.direction)?,
                protocol: parse("protocol", &r.protocol)?,
                service_port: r.service_port,
                local_ip: parse("local_ip", &r.local_ip)?,
                remote_ip: parse("remote_ip", &r.remote_ip)?,
                remote_name: r.remote_name,
                executable: r.executable,
                user: r.hit_user,
                count: r.hits,
                first_seen: Timestamp::from_nanos(r.first_seen),
                last_seen: Timestamp::from_nanos(r.last_seen),
                host: r.host,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    sort_hits(&mut hits);
    Ok(hits)
}
