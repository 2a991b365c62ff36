//! The embedded default backend: one SQLite file in WAL mode.
//!
//! WAL lets the map and reports read while the collector writes. One writer
//! connection does every ingest in one transaction per batch (all of the batch
//! or none of it; the duplicate check happens in that same transaction), with
//! cached prepared statements. A second connection serves reads.
//!
//! The SQL sticks to what SQLite, PostgreSQL and (with table engines instead of
//! upserts) ClickHouse all have: integer and text columns, timestamps as
//! integer nanoseconds UTC, addresses as text, and `""` instead of NULL in key
//! columns (NULLs never compare equal, which would defeat the unique keys).
//!
//! The rollups' text key columns (host, direction, addresses, protocol,
//! executable, user) hold ids into a `names` dictionary instead of the text:
//! a rollup upsert then compares small integers, and the graph query sums
//! ~100,000 hourly rows per day in a hash map keyed by eight integers, looking
//! up names only for the few thousand edges that result. Ids never change
//! once given, so both connections cache them. Names are never deleted (they
//! are few: hosts, addresses, programs and users, not connections).
//!
//! Raw events are not a row each but a block per batch and host
//! ([`crate::block`]), and the keys of unnumbered events a sorted array per
//! agent and hour: per event, SQLite then does no work at all, which took
//! ingest from the ~250,000 rows/s a row per event allows to what the Rust
//! side can do.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use connscope_event::{is_ipv4_mapped, normalize_endpoints, ConnectionEvent, Timestamp};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use crate::block::{self, BlockEncoder};
use crate::{
    check_event, hour_start, is_host_address, AgentId, AgentStatus, ConnectionQuery,
    ConnectionRecord, EdgeCounts, EdgeTotal, EventKey, EventQuery, FastHash, HostAddress,
    HourlyEdgeTotal, IngestReport, KeyedEvent, Origin, RefusalCount, Retention, RetentionReport,
    RollupBatch, RollupQuery, SequenceRanges, Store, StoreError,
};

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
];

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
/// at a random place per event.
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

const UPSERT_ROLLUP: &str = "INSERT INTO edge_rollups VALUES
    (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
    ON CONFLICT (hour, host, direction, local_ip, remote_ip, service_port, protocol, executable, user_name)
    DO UPDATE SET
        connections = connections + excluded.connections,
        failures = failures + excluded.failures,
        bytes_sent = bytes_sent + excluded.bytes_sent,
        bytes_received = bytes_received + excluded.bytes_received,
        first_seen = min(first_seen, excluded.first_seen),
        last_seen = max(last_seen, excluded.last_seen)";

const UPSERT_ADDRESS: &str = "INSERT INTO host_addresses VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (host, ip) DO UPDATE SET
        first_seen = min(first_seen, excluded.first_seen),
        last_seen = max(last_seen, excluded.last_seen)";

/// A store in one SQLite file.
pub struct SqliteStore {
    writer: Mutex<Writer>,
    reader: Mutex<Reader>,
}

struct Writer {
    conn: Connection,
    ids: Ids,
}

/// The writer's caches of ids handed out by the database. They may hold ids
/// of the transaction in progress, so they are emptied when one fails.
#[derive(Default)]
struct Ids {
    /// Agent ids never change once assigned, so they can be cached.
    agents: HashMap<String, i64, FastHash>,
    /// (agent id, instance, boot) -> space id; as fixed as agent ids.
    spaces: HashMap<(i64, String, String), i64, FastHash>,
    names: NameIds,
}

impl Writer {
    /// Runs `work` in one transaction and commits it: all of it or, on
    /// error, none of it. Ids given out in a failed transaction no longer
    /// exist afterwards, so the caches forget them.
    fn transaction<T>(
        &mut self,
        work: impl FnOnce(&rusqlite::Transaction<'_>, &mut Ids) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = work(&tx, &mut self.ids)?;
            tx.commit()?;
            Ok(value)
        })();
        if result.is_err() {
            self.ids.agents.clear();
            self.ids.spaces.clear();
            self.ids.names.clear();
        }
        result
    }
}

struct Reader {
    conn: Connection,
    /// Id -> name, loaded as rollups name ids not seen yet.
    names: HashMap<i64, String>,
    /// The highest id in `names`: ids are handed out in increasing order, so
    /// `name_id > newest` is what is new.
    newest: i64,
}

/// The writer's name -> id cache (see [`Ids`]).
#[derive(Default)]
struct NameIds {
    by_name: HashMap<String, i64, FastHash>,
    by_ip: HashMap<IpAddr, i64, FastHash>,
}

impl NameIds {
    fn id(&mut self, conn: &Connection, name: &str) -> rusqlite::Result<i64> {
        if let Some(&id) = self.by_name.get(name) {
            return Ok(id);
        }
        conn.prepare_cached("INSERT INTO names (name) VALUES (?1) ON CONFLICT (name) DO NOTHING")?
            .execute([name])?;
        let id = conn
            .prepare_cached("SELECT name_id FROM names WHERE name = ?1")?
            .query_row([name], |r| r.get(0))?;
        self.by_name.insert(name.to_owned(), id);
        Ok(id)
    }

    fn ip_id(&mut self, conn: &Connection, ip: IpAddr) -> rusqlite::Result<i64> {
        if let Some(&id) = self.by_ip.get(&ip) {
            return Ok(id);
        }
        let id = self.id(conn, &ip.to_string())?;
        self.by_ip.insert(ip, id);
        Ok(id)
    }

    fn clear(&mut self) {
        self.by_name.clear();
        self.by_ip.clear();
    }
}

impl Reader {
    /// The name of `id`, loading the names added since the last load if needed.
    fn name(&mut self, id: i64) -> Result<&str, StoreError> {
        if !self.names.contains_key(&id) {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT name_id, name FROM names WHERE name_id > ?1")?;
            let rows = stmt.query_map([self.newest], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (new_id, name) = row?;
                self.newest = self.newest.max(new_id);
                self.names.insert(new_id, name);
            }
        }
        self.names.get(&id).map(String::as_str).ok_or_else(|| {
            StoreError::from(Corrupt {
                column: "name id",
                value: id.to_string(),
            })
        })
    }
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

/// A row that does not read back as what was written (a damaged file, or one
/// written by something else).
#[derive(Debug, thiserror::Error)]
#[error("unreadable {column} in the store: {value:?}")]
struct Corrupt {
    column: &'static str,
    value: String,
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(err))
    }
}

impl From<Corrupt> for StoreError {
    fn from(err: Corrupt) -> Self {
        StoreError::Backend(Box::new(err))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves no half-done transaction behind
    // (it rolled back on drop), so the connection is still fine to use.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL in WAL mode: a power cut may lose the last transactions, never
    // corrupt the file; agents re-send what was not acknowledged.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

impl SqliteStore {
    /// Opens the store at `path`, creating it (and its schema) if it does not exist.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let open_error = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        let mut conn = Connection::open(path).map_err(|e| open_error(e.to_string()))?;
        configure(&conn).map_err(|e| open_error(e.to_string()))?;
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
            })
            .map_err(|e| open_error(e.to_string()))?;
        // A new store is created at the base layout and migrated like an old
        // one; only an existing store's migration is worth telling the user.
        let existed = version.is_some();
        let version = match version {
            None => {
                conn.execute_batch(&format!(
                    "BEGIN IMMEDIATE; {SCHEMA}
                     INSERT INTO meta VALUES ('schema_version', '{BASE_VERSION}')
                     ON CONFLICT (name) DO NOTHING; COMMIT;"
                ))
                .map_err(|e| open_error(e.to_string()))?;
                // Another process may have created it meanwhile, at any version.
                conn.query_row(
                    "SELECT value FROM meta WHERE name = 'schema_version'",
                    [],
                    |r| r.get::<_, String>(0),
                )
                .map_err(|e| open_error(e.to_string()))?
            }
            Some(v) => v,
        };
        match version.parse::<i64>() {
            Ok(v) if (BASE_VERSION..=SCHEMA_VERSION).contains(&v) => {
                migrate(&mut conn, v)
                    .map_err(|e| open_error(format!("migrating from schema version {v}: {e}")))?;
                if existed && v < SCHEMA_VERSION {
                    tracing::info!(from = v, to = SCHEMA_VERSION, "migrated the store's schema");
                }
            }
            _ => {
                return Err(open_error(format!(
                    "schema version {version}, this build reads version \
                     {BASE_VERSION} and later ones up to {SCHEMA_VERSION}"
                )))
            }
        }
        let reader = Connection::open(path).map_err(|e| open_error(e.to_string()))?;
        configure(&reader).map_err(|e| open_error(e.to_string()))?;
        Ok(SqliteStore {
            writer: Mutex::new(Writer {
                conn,
                ids: Ids::default(),
            }),
            reader: Mutex::new(Reader {
                conn: reader,
                names: HashMap::new(),
                newest: i64::MIN,
            }),
        })
    }

    fn ingest_batch(
        &self,
        agent: &AgentId,
        origin: &Origin,
        batch: Batch<'_>,
    ) -> Result<IngestReport, StoreError> {
        for i in 0..batch.len() {
            check_event(i, batch.event(i))?;
        }
        check_origin(origin)?;
        let report = lock(&self.writer)
            .transaction(|tx, ids| Self::write_batch(tx, ids, agent, origin, batch))?;
        tracing::debug!(agent = %agent, stored = report.stored, duplicates = report.duplicates, "ingested");
        Ok(report)
    }

    fn write_batch(
        tx: &Connection,
        ids: &mut Ids,
        agent: &AgentId,
        origin: &Origin,
        batch: Batch<'_>,
    ) -> Result<IngestReport, StoreError> {
        let agent_id = agent_id(tx, &mut ids.agents, agent)?;
        let space = space_id(tx, &mut ids.spaces, agent_id, origin)?;

        let numbered = (0..batch.len()).any(|i| batch.event(i).sequence != 0);
        let old_ranges = if numbered {
            load_ranges(tx, &RangeSet::Stored { space })?
        } else {
            SequenceRanges::new()
        };
        let mut ranges = old_ranges.clone();
        let fresh = new_events(tx, agent_id, batch, &mut ranges)?;

        let mut report = IngestReport::default();
        let conflicts = conflicting_repeats(tx, space, batch, &fresh, &old_ranges)?;
        if !conflicts.is_empty() {
            report.conflicts = conflicts.len() as u64;
            tracing::warn!(
                agent = %agent,
                instance = %origin.instance,
                boot = %origin.boot,
                sequences = ?SequenceRanges::from_ranges(conflicts.iter().map(|&n| (n, n))).ranges(),
                "resent sequence numbers with other content than stored: kept the stored events"
            );
            tx.execute(
                "UPDATE sequence_spaces SET conflicts = conflicts + ?2 WHERE space_id = ?1",
                params![space, clamp(report.conflicts)],
            )?;
        }
        let mut rollups = RollupBatch::new();
        let mut addresses: HashMap<(&str, IpAddr), (Timestamp, Timestamp), FastHash> =
            HashMap::default();
        let mut span: Option<(Timestamp, Timestamp)> = None;
        let mut last_host = None;
        // One block per host (an agent's batch names one host, but nothing
        // forces it to).
        let mut blocks: Vec<(&str, BlockEncoder<'_>, Numbers)> = Vec::new();
        for (i, &new) in fresh.iter().enumerate() {
            if !new {
                report.duplicates += 1;
                continue;
            }
            let event = batch.event(i);
            let at = match blocks.iter().position(|(host, _, _)| *host == event.host) {
                Some(at) => at,
                None => {
                    blocks.push((&event.host, BlockEncoder::default(), Numbers::default()));
                    blocks.len() - 1
                }
            };
            blocks[at].1.push(event);
            blocks[at].2.add(event.sequence);
            if blocks[at].1.len() >= MAX_BLOCK_EVENTS {
                let (host, full, numbers) = blocks.swap_remove(at);
                insert_block(tx, agent_id, space, host, full, numbers)?;
            }
            rollups.add(event);
            if is_host_address(event.local.ip()) {
                let seen = addresses
                    .entry((event.host.as_str(), event.local.ip()))
                    .or_insert((event.timestamp, event.timestamp));
                seen.0 = seen.0.min(event.timestamp);
                seen.1 = seen.1.max(event.timestamp);
            }
            span = Some(match span {
                None => (event.timestamp, event.timestamp),
                Some((a, b)) => (a.min(event.timestamp), b.max(event.timestamp)),
            });
            last_host = Some(event.host.as_str());
            report.stored += 1;
        }
        for (host, block, numbers) in blocks {
            insert_block(tx, agent_id, space, host, block, numbers)?;
        }

        if ranges != old_ranges {
            store_ranges(tx, &RangeSet::Stored { space }, &old_ranges, &ranges)?;
        }
        {
            let mut upsert = tx.prepare_cached(UPSERT_ROLLUP)?;
            let names = &mut ids.names;
            for (key, counts) in rollups.rows() {
                upsert.execute(params![
                    key.hour.as_nanos(),
                    names.id(tx, &key.host)?,
                    names.id(tx, key.direction.as_str())?,
                    names.ip_id(tx, key.local_ip)?,
                    names.ip_id(tx, key.remote_ip)?,
                    key.service_port,
                    names.id(tx, key.protocol.as_str())?,
                    names.id(tx, &key.executable)?,
                    names.id(tx, &key.user)?,
                    clamp(counts.connections),
                    clamp(counts.failures),
                    clamp(counts.bytes_sent),
                    clamp(counts.bytes_received),
                    counts.first_seen.as_nanos(),
                    counts.last_seen.as_nanos(),
                ])?;
            }
            let mut upsert = tx.prepare_cached(UPSERT_ADDRESS)?;
            for ((host, ip), (first, last)) in &addresses {
                upsert.execute(params![
                    host,
                    ip.to_string(),
                    first.as_nanos(),
                    last.as_nanos()
                ])?;
            }
        }
        if let (Some((first, last)), Some(host)) = (span, last_host) {
            // The agent and the state it sent from keep the same totals.
            for (table, key, id) in [
                ("agents", "agent_id", agent_id),
                ("sequence_spaces", "space_id", space),
            ] {
                tx.execute(
                    &format!(
                        "UPDATE {table} SET host = ?2, events = events + ?3,
                            first_seen = min(coalesce(first_seen, ?4), ?4),
                            last_seen = max(coalesce(last_seen, ?5), ?5)
                         WHERE {key} = ?1"
                    ),
                    params![
                        id,
                        host,
                        clamp(report.stored),
                        first.as_nanos(),
                        last.as_nanos()
                    ],
                )?;
            }
        }
        Ok(report)
    }
}

impl SqliteStore {
    /// Sums the rollups of `query` per edge, keeping each edge's connections
    /// per hour when `hourly`.
    fn read_rollups(
        &self,
        query: &RollupQuery,
        hourly: bool,
    ) -> Result<Vec<HourlyEdgeTotal>, StoreError> {
        let mut guard = lock(&self.reader);
        let reader = &mut *guard;
        let host = match &query.host {
            None => None,
            Some(host) => {
                let id: Option<i64> = reader
                    .conn
                    .prepare_cached("SELECT name_id FROM names WHERE name = ?1")?
                    .query_row([host], |r| r.get(0))
                    .optional()?;
                match id {
                    Some(id) => Some(id),
                    None => return Ok(Vec::new()),
                }
            }
        };
        // Summed here rather than by GROUP BY: hashing integer keys beats
        // SQLite's sort of the whole range.
        // Name ids of the key -> (connections, failures, bytes sent and
        // received, first and last seen), and (hour, connections).
        type Sums = ([i64; 6], Vec<(i64, u64)>);
        let mut sums: HashMap<[i64; 8], Sums, FastHash> = HashMap::default();
        {
            let mut stmt = reader.conn.prepare_cached(
                "SELECT host, direction, local_ip, remote_ip, service_port, protocol, executable,
                        user_name, connections, failures, bytes_sent, bytes_received, first_seen,
                        last_seen, hour
                 FROM edge_rollups
                 WHERE hour >= ?1 AND hour < ?2 AND (?3 IS NULL OR host = ?3)",
            )?;
            let mut rows = stmt.query(params![
                hour_start(query.range.from).as_nanos(),
                query.range.to.as_nanos(),
                host
            ])?;
            while let Some(r) = rows.next()? {
                let mut key = [0i64; 8];
                for (i, k) in key.iter_mut().enumerate() {
                    *k = r.get(i)?;
                }
                let mut n = [0i64; 6];
                for (i, v) in n.iter_mut().enumerate() {
                    *v = r.get(8 + i)?;
                }
                let (sum, hours) = sums
                    .entry(key)
                    .or_insert_with(|| ([0, 0, 0, 0, i64::MAX, i64::MIN], Vec::new()));
                for i in 0..4 {
                    sum[i] = sum[i].saturating_add(n[i]);
                }
                sum[4] = sum[4].min(n[4]);
                sum[5] = sum[5].max(n[5]);
                if hourly && n[0] > 0 {
                    hours.push((r.get(14)?, n[0] as u64));
                }
            }
        }
        // Every id the result names, resolved once.
        for key in sums.keys() {
            for (i, &id) in key.iter().enumerate() {
                if i != 4 {
                    reader.name(id)?;
                }
            }
        }
        let names = &reader.names;
        let name = |id: &i64| names[id].as_str();
        let mut rows: Vec<_> = sums
            .into_iter()
            .map(|(k, (n, hours))| {
                let text = (
                    name(&k[0]),
                    name(&k[1]),
                    name(&k[2]),
                    name(&k[3]),
                    k[4],
                    name(&k[5]),
                    name(&k[6]),
                    name(&k[7]),
                );
                (text, n, hours)
            })
            .collect();
        // The order of the text, as the trait promised when it was SQL.
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut totals = Vec::with_capacity(rows.len());
        for (
            (host, direction, local_ip, remote_ip, port, protocol, executable, user),
            n,
            mut hours,
        ) in rows
        {
            hours.sort_unstable();
            let total = EdgeTotal {
                host: host.to_owned(),
                direction: parse_column("direction", direction)?,
                local_ip: parse_column("local_ip", local_ip)?,
                remote_ip: parse_column("remote_ip", remote_ip)?,
                service_port: u16::try_from(port).map_err(|_| Corrupt {
                    column: "service_port",
                    value: port.to_string(),
                })?,
                protocol: parse_column("protocol", protocol)?,
                executable: executable.to_owned(),
                user: user.to_owned(),
                counts: EdgeCounts {
                    connections: n[0] as u64,
                    failures: n[1] as u64,
                    bytes_sent: n[2] as u64,
                    bytes_received: n[3] as u64,
                    first_seen: Timestamp::from_nanos(n[4]),
                    last_seen: Timestamp::from_nanos(n[5]),
                },
            };
            let hours = hours
                .into_iter()
                .map(|(hour, connections)| (Timestamp::from_nanos(hour), connections))
                .collect();
            totals.push(HourlyEdgeTotal { total, hours });
        }
        Ok(totals)
    }
}

/// The events of an ingest call, with or without producer-supplied keys.
#[derive(Clone, Copy)]
enum Batch<'a> {
    Plain(&'a [ConnectionEvent]),
    Keyed(&'a [KeyedEvent]),
}

impl<'a> Batch<'a> {
    fn len(&self) -> usize {
        match self {
            Batch::Plain(events) => events.len(),
            Batch::Keyed(events) => events.len(),
        }
    }

    fn event(&self, i: usize) -> &'a ConnectionEvent {
        match *self {
            Batch::Plain(events) => &events[i],
            Batch::Keyed(events) => &events[i].event,
        }
    }

    /// The event's key and the time it is filed under.
    fn key(&self, i: usize) -> (EventKey, Timestamp) {
        match self {
            Batch::Plain(events) => (EventKey::of_event(&events[i]), events[i].timestamp),
            Batch::Keyed(events) => (events[i].key, events[i].key_time),
        }
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One set of sequence ranges and the key that selects its rows.
enum RangeSet<'a> {
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
fn space_id(
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

/// Longest instance id, boot id or drop reason kept: they are labels, not data.
const MAX_LABEL: usize = 64;

fn check_label(what: &str, label: &str) -> Result<(), StoreError> {
    let fine = label.len() <= MAX_LABEL
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fine {
        return Ok(());
    }
    let shown: String = label.chars().take(MAX_LABEL).collect();
    Err(StoreError::InvalidOrigin(format!(
        "{what} {shown:?}: at most {MAX_LABEL} letters, digits, '-' or '_'"
    )))
}

fn check_origin(origin: &Origin) -> Result<(), StoreError> {
    check_label("instance", &origin.instance)?;
    check_label("boot", &origin.boot)?;
    if origin.first_sequence == 0 || origin.first_sequence > i64::MAX as u64 {
        return Err(StoreError::InvalidOrigin(format!(
            "first sequence {} is not within 1 to 2^63-1",
            origin.first_sequence
        )));
    }
    Ok(())
}

/// The number of `agent`, given on first sight.
fn agent_id(
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

fn load_ranges(conn: &Connection, set: &RangeSet<'_>) -> Result<SequenceRanges, StoreError> {
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
fn store_ranges(
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

/// A block holds at most this many events, so reading a short time range
/// never decodes a huge one.
const MAX_BLOCK_EVENTS: u64 = 16_384;

/// The lowest and highest sequence number in a block (`None`: unnumbered).
#[derive(Default, Clone, Copy)]
struct Numbers(Option<(u64, u64)>);

impl Numbers {
    fn add(&mut self, sequence: u64) {
        if sequence != 0 {
            let (low, high) = self.0.get_or_insert((sequence, sequence));
            *low = (*low).min(sequence);
            *high = (*high).max(sequence);
        }
    }
}

fn insert_block(
    conn: &Connection,
    agent_id: i64,
    space: i64,
    host: &str,
    block: BlockEncoder<'_>,
    numbers: Numbers,
) -> rusqlite::Result<()> {
    let (first, last) = block.span();
    let events = block.len();
    let (first_seq, last_seq) = numbers.0.map(|(f, l)| (clamp(f), clamp(l))).unzip();
    conn.prepare_cached(
        "INSERT INTO event_blocks
            (agent_id, space_id, host, first_ts, last_ts, events, data, first_seq, last_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        agent_id,
        space,
        host,
        first,
        last,
        clamp(events),
        block.finish(),
        first_seq,
        last_seq
    ])?;
    Ok(())
}

/// The sequence numbers of `batch` that repeat a number of the same space
/// (stored before, or earlier in the batch) with other content: not a
/// retry but an error of the sender, which must not pass as a duplicate.
///
/// A stored copy is found while its raw events are kept (retention), in
/// the blocks of the space whose sequence range holds the repeats (blocks
/// from before schema version 6 have none); a repeat whose copy is not
/// found counts as a plain duplicate. Only repeats cost work.
fn conflicting_repeats(
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
        let data = row.get_ref(2)?.as_blob().map_err(|_| Corrupt {
            column: "event_blocks.data",
            value: format!("block {id} is no blob"),
        })?;
        let events = block::decode(data, &host).map_err(|e| Corrupt {
            column: "event_blocks.data",
            value: format!("block {id}: {e}"),
        })?;
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
fn new_events(
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

fn parse_column<T: std::str::FromStr>(column: &'static str, value: &str) -> Result<T, Corrupt> {
    value.parse().map_err(|_| Corrupt {
        column,
        value: value.to_owned(),
    })
}

impl Store for SqliteStore {
    fn ingest_from(
        &self,
        agent: &AgentId,
        origin: &Origin,
        events: &[ConnectionEvent],
    ) -> Result<IngestReport, StoreError> {
        self.ingest_batch(agent, origin, Batch::Plain(events))
    }

    fn ingest_keyed(
        &self,
        agent: &AgentId,
        events: &[KeyedEvent],
    ) -> Result<IngestReport, StoreError> {
        self.ingest_batch(agent, &Origin::legacy(), Batch::Keyed(events))
    }

    fn edge_totals(&self, query: &RollupQuery) -> Result<Vec<EdgeTotal>, StoreError> {
        Ok(self
            .read_rollups(query, false)?
            .into_iter()
            .map(|hourly| hourly.total)
            .collect())
    }

    fn edge_totals_by_hour(&self, query: &RollupQuery) -> Result<Vec<HourlyEdgeTotal>, StoreError> {
        self.read_rollups(query, true)
    }

    fn record_dropped_from(
        &self,
        agent: &AgentId,
        instance: &str,
        reason: &str,
        ranges: &[(u64, u64)],
    ) -> Result<(), StoreError> {
        check_label("instance", instance)?;
        check_label("reason", reason)?;
        for (index, &(first, last)) in ranges.iter().enumerate() {
            let reason = if first == 0 {
                "sequence numbers start at 1"
            } else if first > last {
                "the first number is above the last"
            } else if last > i64::MAX as u64 {
                "beyond 2^63-1"
            } else {
                continue;
            };
            return Err(StoreError::InvalidRange {
                index,
                reason: format!("{first}-{last}: {reason}"),
            });
        }
        lock(&self.writer).transaction(|tx, ids| {
            let set = RangeSet::Dropped {
                agent: agent_id(tx, &mut ids.agents, agent)?,
                instance,
                reason,
            };
            let old = load_ranges(tx, &set)?;
            let mut new = old.clone();
            for &(first, last) in ranges {
                new.insert_range(first, last);
            }
            store_ranges(tx, &set, &old, &new)
        })
    }

    fn record_downtime(
        &self,
        agent: &AgentId,
        instance: &str,
        windows: &[(Timestamp, Timestamp)],
    ) -> Result<(), StoreError> {
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
        lock(&self.writer).transaction(|tx, ids| {
            let agent_id = agent_id(tx, &mut ids.agents, agent)?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO agent_downtime VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (agent_id, instance, down_from)
                 DO UPDATE SET down_to = max(down_to, excluded.down_to)",
            )?;
            for (from, to) in windows {
                insert.execute(params![agent_id, instance, from.as_nanos(), to.as_nanos()])?;
            }
            Ok(())
        })
    }

    fn record_refusal(
        &self,
        agent: &AgentId,
        reason: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        lock(&self.writer).transaction(|tx, _| {
            tx.execute(
                "INSERT INTO agent_refusals VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (agent, reason) DO UPDATE SET
                     batches = batches + 1, last_at = max(last_at, excluded.last_at)",
                rusqlite::params![agent.0, reason, at.as_nanos()],
            )?;
            Ok(())
        })
    }

    fn refusals(&self) -> Result<Vec<RefusalCount>, StoreError> {
        let guard = lock(&self.reader);
        let mut stmt = guard.conn.prepare_cached(
            "SELECT agent, reason, batches, last_at FROM agent_refusals ORDER BY agent, reason",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RefusalCount {
                agent: AgentId(r.get(0)?),
                reason: r.get(1)?,
                batches: r.get::<_, i64>(2)? as u64,
                last_at: Timestamp::from_nanos(r.get(3)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn agents(&self) -> Result<Vec<AgentStatus>, StoreError> {
        let guard = lock(&self.reader);
        let conn = &guard.conn;
        let mut stored: HashMap<i64, Vec<(u64, u64)>> = HashMap::new();
        let mut stmt =
            conn.prepare_cached("SELECT space_id, first_seq, last_seq FROM agent_sequences")?;
        for row in stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })? {
            let (space, first, last) = row?;
            stored
                .entry(space)
                .or_default()
                .push((first as u64, last as u64));
        }
        // (agent id, instance) -> reason -> ranges
        type ByReason = BTreeMap<String, Vec<(u64, u64)>>;
        let mut dropped: HashMap<(i64, String), ByReason> = HashMap::new();
        let mut stmt = conn.prepare_cached(
            "SELECT agent_id, instance, reason, first_seq, last_seq FROM agent_dropped_ranges",
        )?;
        for row in stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })? {
            let (agent, instance, reason, first, last) = row?;
            dropped
                .entry((agent, instance))
                .or_default()
                .entry(reason)
                .or_default()
                .push((first as u64, last as u64));
        }
        let mut stmt = conn.prepare_cached(
            "SELECT s.space_id, s.agent_id, a.name, s.instance, s.first_seq, s.host, s.events,
                    s.first_seen, s.last_seen, s.conflicts
             FROM sequence_spaces s JOIN agents a ON a.agent_id = s.agent_id
             WHERE s.first_seen IS NOT NULL ORDER BY a.name, s.space_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, i64>(9)?,
            ))
        })?;
        let mut agents: Vec<AgentStatus> = Vec::new();
        // Where each (agent id, instance) is in `agents`.
        let mut index: HashMap<(i64, String), usize> = HashMap::new();
        for row in rows {
            let (space, agent_id, name, instance, first_seq, host, events, first, last, conflicts) =
                row?;
            let (first, last) = (Timestamp::from_nanos(first), Timestamp::from_nanos(last));
            let boot = SequenceRanges::from_ranges(stored.remove(&space).unwrap_or_default());
            let at = *index
                .entry((agent_id, instance.clone()))
                .or_insert_with(|| {
                    let earlier = agents.last().is_some_and(|a| a.agent.0 == name);
                    agents.push(AgentStatus {
                        agent: AgentId(name),
                        lost_state: earlier && first_seq == 1,
                        instance,
                        boots: 0,
                        reused: 0,
                        conflicts: 0,
                        first_sequence: first_seq as u64,
                        host: String::new(),
                        events: 0,
                        first_seen: first,
                        last_seen: last,
                        sequences: SequenceRanges::new(),
                        dropped: SequenceRanges::new(),
                        dropped_by_reason: Vec::new(),
                        downtime: Vec::new(),
                    });
                    agents.len() - 1
                });
            let status = &mut agents[at];
            status.boots += 1;
            // Numbers an earlier run of this state already used: the state
            // was restored from a snapshot.
            status.reused += status.sequences.count_within(boot.ranges());
            for &(f, l) in boot.ranges() {
                status.sequences.insert_range(f, l);
            }
            status.first_sequence = status.first_sequence.min(first_seq as u64);
            status.events += events as u64;
            status.conflicts += conflicts as u64;
            if last >= status.last_seen || status.host.is_empty() {
                status.host = host;
            }
            status.first_seen = status.first_seen.min(first);
            status.last_seen = status.last_seen.max(last);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT agent_id, instance, down_from, down_to FROM agent_downtime
             ORDER BY down_from",
        )?;
        for row in stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })? {
            let (agent_id, instance, from, to) = row?;
            if let Some(&at) = index.get(&(agent_id, instance)) {
                agents[at]
                    .downtime
                    .push((Timestamp::from_nanos(from), Timestamp::from_nanos(to)));
            }
        }
        // Instances with drops and nothing stored (every batch refused) are
        // listed too, after the others.
        let names: HashMap<i64, String> = conn
            .prepare_cached("SELECT agent_id, name FROM agents")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut dropped: Vec<_> = dropped.into_iter().collect();
        dropped.sort_by_key(|((agent_id, instance), _)| (names.get(agent_id), instance.clone()));
        for ((agent_id, instance), reasons) in dropped {
            let at = *index
                .entry((agent_id, instance.clone()))
                .or_insert_with(|| {
                    let name = names.get(&agent_id).cloned().unwrap_or_default();
                    let earlier = agents.iter().any(|a| a.agent.0 == name);
                    let first = reasons
                        .values()
                        .flatten()
                        .map(|&(f, _)| f)
                        .min()
                        .unwrap_or(1);
                    agents.push(AgentStatus {
                        agent: AgentId(name),
                        lost_state: earlier && first == 1,
                        instance,
                        boots: 0,
                        reused: 0,
                        conflicts: 0,
                        first_sequence: first,
                        host: String::new(),
                        events: 0,
                        first_seen: Timestamp::from_nanos(0),
                        last_seen: Timestamp::from_nanos(0),
                        sequences: SequenceRanges::new(),
                        dropped: SequenceRanges::new(),
                        dropped_by_reason: Vec::new(),
                        downtime: Vec::new(),
                    });
                    agents.len() - 1
                });
            let status = &mut agents[at];
            for (reason, ranges) in reasons {
                for &(f, l) in &ranges {
                    status.dropped.insert_range(f, l);
                }
                status
                    .dropped_by_reason
                    .push((reason, SequenceRanges::from_ranges(ranges)));
            }
        }
        Ok(agents)
    }

    fn host_addresses(&self) -> Result<Vec<HostAddress>, StoreError> {
        let guard = lock(&self.reader);
        let conn = &guard.conn;
        let mut stmt = conn.prepare_cached(
            "SELECT host, ip, first_seen, last_seen FROM host_addresses ORDER BY host, ip",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (host, ip, first, last) = row?;
            out.push(HostAddress {
                host,
                ip: parse_column("ip", &ip)?,
                first_seen: Timestamp::from_nanos(first),
                last_seen: Timestamp::from_nanos(last),
            });
        }
        Ok(out)
    }

    fn events(&self, query: &EventQuery) -> Result<Vec<ConnectionEvent>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let guard = lock(&self.reader);
        let mut stmt = guard.conn.prepare_cached(
            "SELECT block_id, host, first_ts, data FROM event_blocks
             WHERE first_ts < ?2 AND last_ts >= ?1 AND (?3 IS NULL OR host = ?3)
             ORDER BY first_ts, block_id",
        )?;
        let mut rows = stmt.query(params![
            query.range.from.as_nanos(),
            query.range.to.as_nanos(),
            query.host,
        ])?;
        // (time, block, position): the order events were stored in breaks ties.
        let mut found: Vec<((i64, i64, usize), ConnectionEvent)> = Vec::new();
        let oldest_first = |found: &mut Vec<((i64, i64, usize), ConnectionEvent)>| {
            found.sort_unstable_by_key(|(order, _)| *order);
            found.truncate(query.limit);
        };
        // The time of the limit-th oldest event found so far: blocks that
        // start after it cannot contribute.
        let mut enough: Option<i64> = None;
        while let Some(row) = rows.next()? {
            let (id, host, first_ts): (i64, String, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
            if enough.is_some_and(|t| first_ts > t) {
                break;
            }
            let data = row.get_ref(3)?;
            let data = data.as_blob().map_err(|_| Corrupt {
                column: "event_blocks.data",
                value: format!("block {id} is no blob"),
            })?;
            let events = block::decode(data, &host).map_err(|e| Corrupt {
                column: "event_blocks.data",
                value: format!("block {id}: {e}"),
            })?;
            found.extend(
                events
                    .into_iter()
                    .enumerate()
                    .filter(|(_, e)| query.range.contains(e.timestamp))
                    .map(|(i, e)| ((e.timestamp.as_nanos(), id, i), e)),
            );
            if found.len() >= query.limit && (enough.is_none() || found.len() >= 2 * query.limit) {
                oldest_first(&mut found);
                enough = found.last().map(|((t, _, _), _)| *t);
            }
        }
        oldest_first(&mut found);
        Ok(found.into_iter().map(|(_, e)| e).collect())
    }

    fn connections(
        &self,
        query: &ConnectionQuery,
        each: &mut dyn FnMut(&str, &ConnectionRecord),
    ) -> Result<(), StoreError> {
        if query.hosts.is_empty() {
            return Ok(());
        }
        let guard = lock(&self.reader);
        let mut stmt = guard.conn.prepare_cached(
            "SELECT block_id, host, data FROM event_blocks WHERE first_ts < ?2 AND last_ts >= ?1",
        )?;
        let mut rows = stmt.query(params![
            query.range.from.as_nanos(),
            query.range.to.as_nanos()
        ])?;
        while let Some(row) = rows.next()? {
            let host = row.get_ref(1)?.as_str().map_err(|_| Corrupt {
                column: "event_blocks.host",
                value: "not text".into(),
            })?;
            if !query.hosts.iter().any(|h| h == host) {
                continue;
            }
            let id: i64 = row.get(0)?;
            let data = row.get_ref(2)?.as_blob().map_err(|_| Corrupt {
                column: "event_blocks.data",
                value: format!("block {id} is no blob"),
            })?;
            block::connects(data, query.range, &mut |c| each(host, c)).map_err(|e| Corrupt {
                column: "event_blocks.data",
                value: format!("block {id}: {e}"),
            })?;
        }
        Ok(())
    }

    fn apply_retention(
        &self,
        retention: &Retention,
        now: Timestamp,
    ) -> Result<RetentionReport, StoreError> {
        let before = |age: std::time::Duration| {
            Timestamp::from_nanos(now.as_nanos().saturating_sub(clamp(age.as_nanos() as u64)))
        };
        lock(&self.writer).transaction(|tx, _| {
            let cutoff = before(retention.raw_events).as_nanos();
            let whole: i64 = tx.query_row(
                "SELECT coalesce(sum(events), 0) FROM event_blocks WHERE last_ts < ?1",
                [cutoff],
                |r| r.get(0),
            )?;
            tx.execute("DELETE FROM event_blocks WHERE last_ts < ?1", [cutoff])?;
            let mut report = RetentionReport {
                events_deleted: whole as u64 + trim_blocks(tx, cutoff)?,
                rollups_deleted: 0,
            };
            if let Some(age) = retention.rollups {
                // Only whole hours that ended before the cutoff go.
                let cutoff = hour_start(before(age)).as_nanos();
                report.rollups_deleted =
                    tx.execute("DELETE FROM edge_rollups WHERE hour < ?1", [cutoff])? as u64;
                // A key's hour may be its event's wall-clock hour, up to 14
                // hours off the rollup's: keys go a day after their rollups.
                tx.execute(
                    "DELETE FROM event_key_sets WHERE hour < ?1",
                    [cutoff.saturating_sub(86_400 * 1_000_000_000)],
                )?;
            }
            Ok(report)
        })
    }
}

/// Rewrites the blocks that hold events on both sides of `cutoff` without
/// the older ones; returns how many events that removed.
fn trim_blocks(conn: &Connection, cutoff: i64) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT block_id, host, data FROM event_blocks WHERE first_ts < ?1 AND last_ts >= ?1",
    )?;
    let straddling = stmt
        .query_map([cutoff], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut removed = 0;
    for (id, host, data) in straddling {
        let events = block::decode(&data, &host).map_err(|e| Corrupt {
            column: "event_blocks.data",
            value: format!("block {id}: {e}"),
        })?;
        let before = events.len();
        let mut kept = BlockEncoder::default();
        for event in events.iter().filter(|e| e.timestamp.as_nanos() >= cutoff) {
            kept.push(event);
        }
        removed += (before as u64).saturating_sub(kept.len());
        let (first, last) = kept.span();
        conn.prepare_cached(
            "UPDATE event_blocks SET first_ts = ?2, last_ts = ?3, events = ?4, data = ?5
             WHERE block_id = ?1",
        )?
        .execute(params![id, first, last, clamp(kept.len()), kept.finish()])?;
    }
    Ok(removed)
}
