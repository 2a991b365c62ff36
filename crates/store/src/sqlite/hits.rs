//! Firewall hits, summed from the blocks of the range that hold any: each
//! block counts its hits (`firewall_hits`, schema version 10; unknown for
//! older blocks, which are decoded too) and a partial index holds the
//! blocks whose count is not 0, so a read skips the blocks of connections
//! (docs/STORE.md, "Firewall hits").

use std::sync::Mutex;

use rusqlite::params;

use super::column::block_events;
use super::connection::{lock, Reader};
use crate::hits::HitSums;
use crate::{FirewallHitQuery, FirewallHitTotal, StoreError};

pub(super) fn firewall_hits(
    reader: &Mutex<Reader>,
    query: &FirewallHitQuery,
) -> Result<Vec<FirewallHitTotal>, StoreError> {
    let guard = lock(reader);
    let mut stmt = guard.conn.prepare_cached(
        "SELECT block_id, host, data FROM event_blocks
         WHERE firewall_hits IS NOT 0 AND first_ts < ?2 AND last_ts >= ?1
           AND (?3 IS NULL OR host = ?3)",
    )?;
    let mut rows = stmt.query(params![
        query.range.from.as_nanos(),
        query.range.to.as_nanos(),
        query.host,
    ])?;
    let mut sums = HitSums::default();
    while let Some(row) = rows.next()? {
        let (id, host): (i64, String) = (row.get(0)?, row.get(1)?);
        let events = block_events(row, id, &host, 2)?;
        for event in &events {
            sums.add(query, event);
        }
    }
    Ok(sums.finish())
}
