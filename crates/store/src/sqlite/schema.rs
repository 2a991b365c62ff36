//! The layout of the store's file: the tables a new store is created with
//! and the one list of migrations every store (new or old) is brought
//! through to the version this build writes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use connscope_event::{is_ipv4_mapped, normalize_endpoints};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::groups::GROUP_TABLES;
use super::names::NameIds;
use super::policies::POLICY_TABLES;
use super::rule_hits::RULE_HIT_TABLES;
use super::tokens::TOKEN_TABLES;
use super::write::{UPSERT_ADDRESS, UPSERT_ROLLUP};

/// The layout this build writes: [`BASE_VERSION`] moved on by every step of
/// [`MIGRATIONS`]. A store of a newer (or older than base) version is refused.
const SCHEMA_VERSION: i64 = BASE_VERSION + MIGRATIONS.len() as i64;

/// The version [`SCHEMA`] creates; new stores are created at it and then
/// migrated like old ones, so both always end up with the same layout.
const BASE_VERSION: i64 = 3;

/// One schema change: takes a store from the version before it to the next,
/// inside the transaction that also records the new version.
type Migration = fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>;

/// The steps from [`BASE_VERSION`], in order: step `i` takes a store from
/// version `BASE_VERSION + i` to the next. Later changes append a step.
const MIGRATIONS: &[Migration] = &[
    agent_refusals,
    normalized_addresses,
    sequence_spaces_per_instance,
    host_groups,
    access_tokens,
    remote_names,
    policy_loop,
    rule_hit_counters,
    firewall_hit_counts,
];

/// Why a store's file cannot be brought to this build's layout.
#[derive(Debug, thiserror::Error)]
pub(super) enum SchemaError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migrating from schema version {from}: {source}")]
    Migration { from: i64, source: rusqlite::Error },
    #[error(
        "schema version {found}, this build reads version {} and later ones up to {}",
        BASE_VERSION,
        SCHEMA_VERSION
    )]
    Unknown { found: String },
}

/// Creates the tables of a new store, or checks an existing store's
/// version, then migrates either to [`SCHEMA_VERSION`].
pub(super) fn bring_up_to_date(conn: &mut Connection) -> Result<(), SchemaError> {
    // The version is checked before anything is created, so a store of
    // another version is left as it was.
    let version: Option<String> = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .and_then(|tables| match tables {
            0 => Ok(None),
            _ => conn
                .query_row(
                    "SELECT value FROM meta WHERE name = 'schema_version'",
                    [],
                    |r| r.get(0),
                )
                .optional(),
        })?;
    // A new store is created at the base layout and migrated like an old
    // one; only an existing store's migration is worth telling the user.
    let existed = version.is_some();
    let version = match version {
        None => {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA}
                 INSERT INTO meta VALUES ('schema_version', '{BASE_VERSION}')
                 ON CONFLICT (name) DO NOTHING; COMMIT;"
            ))?;
            // Another process may have created it meanwhile, at any version.
            conn.query_row(
                "SELECT value FROM meta WHERE name = 'schema_version'",
                [],
                |r| r.get::<_, String>(0),
            )?
        }
        Some(v) => v,
    };
    match version.parse::<i64>() {
        Ok(v) if (BASE_VERSION..=SCHEMA_VERSION).contains(&v) => {
            migrate(conn, v).map_err(|source| SchemaError::Migration { from: v, source })?;
            if existed && v < SCHEMA_VERSION {
                tracing::info!(from = v, to = SCHEMA_VERSION, "migrated the store's schema");
            }
            Ok(())
        }
        _ => Err(SchemaError::Unknown { found: version }),
    }
}

/// Brings a store of version `from` to [`SCHEMA_VERSION`], one transaction
/// per step, so a failed step leaves the store at the last good version.
fn migrate(conn: &mut Connection, from: i64) -> rusqlite::Result<()> {
    for (version, step) in (BASE_VERSION..)
        .zip(MIGRATIONS)
        .skip((from - BASE_VERSION) as usize)
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        step(&tx)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'schema_version'",
            [(version + 1).to_string()],
        )?;
        tx.commit()?;
        tracing::debug!(
            from = version,
            to = version + 1,
            "migrated the store's schema"
        );
    }
    Ok(())
}

/// The store's tables at [`BASE_VERSION`]. Raw events are blocks ([`crate::block`]), one row per
/// batch and host; `first_ts`/`last_ts` bound the events inside. The content
/// keys of unnumbered events are kept per agent and hour as one sorted array
/// of 64-bit keys (`keys`, little-endian), so an import checks and adds a
/// batch's keys with a read and a write per hour instead of an index insert
/// at a random place per event. The totals in `agents` (host, events, first
/// and last seen) are written by version 3 builds only: from version 6 on,
/// each sequence space keeps its own.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (
    agent_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    host TEXT NOT NULL,
    events INTEGER NOT NULL,
    first_seen INTEGER,
    last_seen INTEGER
);
CREATE TABLE IF NOT EXISTS agent_sequences (
    agent_id INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (agent_id, first_seq)
);
CREATE TABLE IF NOT EXISTS agent_dropped (
    agent_id INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (agent_id, first_seq)
);
CREATE TABLE IF NOT EXISTS event_blocks (
    block_id INTEGER PRIMARY KEY,
    agent_id INTEGER NOT NULL,
    host TEXT NOT NULL,
    first_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    events INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS event_blocks_by_time ON event_blocks (first_ts);
CREATE TABLE IF NOT EXISTS event_key_sets (
    agent_id INTEGER NOT NULL,
    hour INTEGER NOT NULL,
    keys BLOB NOT NULL,
    PRIMARY KEY (agent_id, hour)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS names (
    name_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS edge_rollups (
    hour INTEGER NOT NULL,
    host INTEGER NOT NULL,
    direction INTEGER NOT NULL,
    local_ip INTEGER NOT NULL,
    remote_ip INTEGER NOT NULL,
    service_port INTEGER NOT NULL,
    protocol INTEGER NOT NULL,
    executable INTEGER NOT NULL,
    user_name INTEGER NOT NULL,
    connections INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    bytes_sent INTEGER NOT NULL,
    bytes_received INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (hour, host, direction, local_ip, remote_ip, service_port, protocol, executable, user_name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS host_addresses (
    host TEXT NOT NULL,
    ip TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (host, ip)
);
";

/// Batches the collector refused, per agent (its name: a refused agent may
/// have no row in `agents`) and reason.
const AGENT_REFUSALS: &str = "
CREATE TABLE IF NOT EXISTS agent_refusals (
    agent TEXT NOT NULL,
    reason TEXT NOT NULL,
    batches INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    PRIMARY KEY (agent, reason)
) WITHOUT ROWID;
";

/// Version 4: refused batches are counted (`agent_refusals`).
fn agent_refusals(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(AGENT_REFUSALS)
}

/// Version 5: addresses as the packets carry them
/// ([`connscope_event::normalize_endpoints`]). A version 3 store may hold
/// rollups and host addresses of IPv4-mapped pairs (dual-stack sockets logged
/// by tcpspy) and of 64-bit tcpspy's `::`/`::` pairs; they are rewritten here
/// and merged into the rows of the normalised addresses, so the two records
/// of one connection join again. Raw events are normalised as blocks are
/// decoded ([`crate::block::decode`]), so their blocks stay as written.
fn normalized_addresses(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    // The few names that are addresses normalisation rewrites.
    let mut rewritable: HashMap<i64, IpAddr> = HashMap::new();
    {
        let mut names = tx.prepare("SELECT name_id, name FROM names")?;
        let rows = names.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (id, name) = row?;
            if let Ok(ip @ IpAddr::V6(v6)) = name.parse::<IpAddr>() {
                if v6.to_ipv4_mapped().is_some() || v6.is_unspecified() {
                    rewritable.insert(id, ip);
                }
            }
        }
    }
    let mut rollups_rewritten = 0;
    if !rewritable.is_empty() {
        let mut rows = Vec::new();
        {
            let mut select = tx.prepare(
                "SELECT hour, host, direction, local_ip, remote_ip, service_port, protocol,
                        executable, user_name, connections, failures, bytes_sent,
                        bytes_received, first_seen, last_seen
                 FROM edge_rollups",
            )?;
            let all = select.query_map([], |r| {
                let mut row = [0i64; 15];
                for (i, column) in row.iter_mut().enumerate() {
                    *column = r.get(i)?;
                }
                Ok(row)
            })?;
            for row in all {
                let row = row?;
                if let (Some(&local), Some(&remote)) =
                    (rewritable.get(&row[3]), rewritable.get(&row[4]))
                {
                    rows.push((row, local, remote));
                }
            }
        }
        let mut ids = NameIds::default();
        let mut delete = tx.prepare(
            "DELETE FROM edge_rollups WHERE hour = ?1 AND host = ?2 AND direction = ?3
             AND local_ip = ?4 AND remote_ip = ?5 AND service_port = ?6 AND protocol = ?7
             AND executable = ?8 AND user_name = ?9",
        )?;
        let mut upsert = tx.prepare(UPSERT_ROLLUP)?;
        for (mut row, local, remote) in rows {
            let (l, r) = normalize_endpoints(SocketAddr::new(local, 0), SocketAddr::new(remote, 0));
            if (l.ip(), r.ip()) == (local, remote) {
                continue;
            }
            delete.execute(rusqlite::params_from_iter(&row[..9]))?;
            row[3] = ids.ip_id(tx, l.ip())?;
            row[4] = ids.ip_id(tx, r.ip())?;
            upsert.execute(rusqlite::params_from_iter(&row))?;
            rollups_rewritten += 1;
        }
    }
    let mut addresses_rewritten = 0;
    {
        let mut select =
            tx.prepare("SELECT host, ip, first_seen, last_seen FROM host_addresses")?;
        let mapped: Vec<(String, String, i64, i64)> = select
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<Vec<(String, String, i64, i64)>>>()?
            .into_iter()
            .filter(|(_, ip, _, _)| ip.parse::<IpAddr>().is_ok_and(is_ipv4_mapped))
            .collect();
        let mut upsert = tx.prepare(UPSERT_ADDRESS)?;
        for (host, ip, first, last) in mapped {
            let v4 = ip.parse::<IpAddr>().expect("parsed above").to_canonical();
            tx.execute(
                "DELETE FROM host_addresses WHERE host = ?1 AND ip = ?2",
                params![host, ip],
            )?;
            upsert.execute(params![host, v4.to_string(), first, last])?;
            addresses_rewritten += 1;
        }
    }
    tracing::debug!(
        rollups_rewritten,
        addresses_rewritten,
        "IPv4-mapped and tcpspy `::` addresses normalised"
    );
    Ok(())
}

/// Version 6: sequence numbers are unique per agent state and run
/// ([`Origin`]), no longer per agent; dropped ranges carry a reason; blocks
/// name their space, so a resent event can be compared with the stored one;
/// agents report when they were not running.
///
/// What a v3 store holds becomes each agent's space without an instance
/// (space id = agent id, so `agent_sequences` rows keep their key), and its
/// dropped ranges are the spool-full drops of that space. Its blocks are not
/// rewritten: they name no space or sequence range, so a resent event is
/// compared only with what was stored from version 6 on.
fn sequence_spaces_per_instance(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE sequence_spaces (
            space_id INTEGER PRIMARY KEY,
            agent_id INTEGER NOT NULL,
            instance TEXT NOT NULL,
            boot TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            host TEXT NOT NULL,
            events INTEGER NOT NULL,
            first_seen INTEGER,
            last_seen INTEGER,
            conflicts INTEGER NOT NULL DEFAULT 0,
            UNIQUE (agent_id, instance, boot)
        );
        INSERT INTO sequence_spaces
            SELECT agent_id, agent_id, '', '', 1, host, events, first_seen, last_seen, 0
            FROM agents;
        ALTER TABLE event_blocks ADD COLUMN space_id INTEGER;
        ALTER TABLE event_blocks ADD COLUMN first_seq INTEGER;
        ALTER TABLE event_blocks ADD COLUMN last_seq INTEGER;
        CREATE INDEX event_blocks_by_sequence ON event_blocks (space_id, last_seq);
        ALTER TABLE agent_sequences RENAME COLUMN agent_id TO space_id;
        CREATE TABLE agent_dropped_ranges (
            agent_id INTEGER NOT NULL,
            instance TEXT NOT NULL,
            reason TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            PRIMARY KEY (agent_id, instance, reason, first_seq)
        );
        INSERT INTO agent_dropped_ranges
            SELECT agent_id, '', 'spool-full', first_seq, last_seq FROM agent_dropped;
        CREATE TABLE agent_downtime (
            agent_id INTEGER NOT NULL,
            instance TEXT NOT NULL,
            down_from INTEGER NOT NULL,
            down_to INTEGER NOT NULL,
            PRIMARY KEY (agent_id, instance, down_from)
        );
        DROP TABLE agent_dropped;",
    )
}

/// Version 7: host groups and host labels, the user's definitions
/// ([`crate::HostGroup`], [`crate::HostLabel`]); nothing older changes.
fn host_groups(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(GROUP_TABLES)
}

/// Version 8: access tokens kept as digests ([`crate::TokenRecord`]), shared
/// by every collector of the store; nothing older changes.
fn access_tokens(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(TOKEN_TABLES)
}

/// Version 9: the names hosts learned for remote addresses, per hour
/// ([`crate::NameSighting`]): what names the rollups' addresses at read time.
/// Plain text columns, not `names` ids: names come from the network, are
/// few per address, and are kept byte for byte. Older stores have none.
fn remote_names(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE remote_names (
            hour INTEGER NOT NULL,
            host TEXT NOT NULL,
            remote_ip TEXT NOT NULL,
            name TEXT NOT NULL,
            source TEXT NOT NULL,
            connections INTEGER NOT NULL,
            first_seen INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            PRIMARY KEY (hour, host, remote_ip, name, source)
        ) WITHOUT ROWID;
        CREATE INDEX remote_names_by_ip ON remote_names (remote_ip, hour);",
    )
}

/// Version 10: the policy loop (docs/POLICY.md): policy versions,
/// assignments with their history, hosts' firewall reports and notices,
/// drift edges ([`crate::PolicyVersion`] and the rest); nothing older changes.
fn policy_loop(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(POLICY_TABLES)
}

/// Version 11: firewall rule hit counters per policy version, rule and host
/// ([`crate::RuleHits`]), from the agents' firewall reports; nothing older
/// changes.
fn rule_hit_counters(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(RULE_HIT_TABLES)
}

/// Version 12: each block's count of firewall hits (`would-block` and
/// `blocked` events), and an index of the blocks that may hold any, so
/// reading hits (`Store::firewall_hits`, which the map asks on every
/// refresh, a week back for its ready-to-enforce view) decodes only those
/// instead of every block of the range. Blocks of older versions have no
/// count (NULL) and are decoded as before.
fn firewall_hit_counts(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE event_blocks ADD COLUMN firewall_hits INTEGER;
        CREATE INDEX event_blocks_with_hits ON event_blocks (first_ts)
            WHERE firewall_hits IS NOT 0;",
    )
}
