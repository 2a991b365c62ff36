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

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use connscope_event::{
    CloseStats, ConnectFailure, ConnectionEvent, Direction, EventKind, ProcessInfo, Protocol,
    Timestamp,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::{
    check_event, hour_start, is_host_address, AgentId, AgentStatus, EdgeCounts, EdgeTotal,
    EventKey, EventQuery, HostAddress, IngestReport, KeyedEvent, Retention, RetentionReport,
    RollupBatch, RollupQuery, SequenceRanges, Store, StoreError,
};

/// Bumped when the layout below changes; a store with another version is refused.
const SCHEMA_VERSION: i64 = 2;

/// Every table but the raw events ([`EVENTS_TABLE`]).
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
CREATE TABLE IF NOT EXISTS event_keys (
    agent_id INTEGER NOT NULL,
    event_key INTEGER NOT NULL,
    hour INTEGER NOT NULL,
    PRIMARY KEY (agent_id, event_key)
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

/// The raw events, apart from [`SCHEMA`] because [`RawEventTable`] creates
/// this table alone.
const EVENTS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS events (
    agent_id INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    host TEXT NOT NULL,
    netns INTEGER NOT NULL,
    protocol TEXT NOT NULL,
    direction TEXT NOT NULL,
    local_ip TEXT NOT NULL,
    local_port INTEGER NOT NULL,
    remote_ip TEXT NOT NULL,
    remote_port INTEGER NOT NULL,
    pid INTEGER,
    executable TEXT,
    comm TEXT,
    command_line TEXT,
    cgroup TEXT,
    uid INTEGER,
    user_name TEXT,
    duration_ns INTEGER,
    bytes_sent INTEGER,
    bytes_received INTEGER,
    packets_sent INTEGER,
    packets_received INTEGER,
    failure TEXT,
    preexisting INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (ts);
";

const INSERT_EVENT: &str = "INSERT INTO events VALUES
    (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
     ?21, ?22, ?23, ?24, ?25, ?26)";

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
    /// Agent ids never change once assigned, so they can be cached.
    agent_ids: HashMap<String, i64>,
    names: NameIds,
}

struct Reader {
    conn: Connection,
    /// Id -> name, loaded as rollups name ids not seen yet.
    names: HashMap<i64, String>,
    /// The highest id in `names`: ids are handed out in increasing order, so
    /// `name_id > newest` is what is new.
    newest: i64,
}

/// The writer's name -> id cache. It may hold ids of the transaction in
/// progress, so it is cleared when a transaction fails.
#[derive(Default)]
struct NameIds {
    by_name: HashMap<String, i64>,
    by_ip: HashMap<IpAddr, i64>,
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
        let conn = Connection::open(path).map_err(|e| open_error(e.to_string()))?;
        configure(&conn).map_err(|e| open_error(e.to_string()))?;
        conn.execute_batch(SCHEMA)
            .and_then(|()| conn.execute_batch(EVENTS_TABLE))
            .map_err(|e| open_error(e.to_string()))?;
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE name = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| open_error(e.to_string()))?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )
                .map_err(|e| open_error(e.to_string()))?;
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(open_error(format!(
                    "schema version {v}, this build reads version {SCHEMA_VERSION}"
                )))
            }
        }
        let reader = Connection::open(path).map_err(|e| open_error(e.to_string()))?;
        configure(&reader).map_err(|e| open_error(e.to_string()))?;
        Ok(SqliteStore {
            writer: Mutex::new(Writer {
                conn,
                agent_ids: HashMap::new(),
                names: NameIds::default(),
            }),
            reader: Mutex::new(Reader {
                conn: reader,
                names: HashMap::new(),
                newest: i64::MIN,
            }),
        })
    }

    fn ingest_batch(&self, agent: &AgentId, batch: Batch<'_>) -> Result<IngestReport, StoreError> {
        for i in 0..batch.len() {
            check_event(i, batch.event(i))?;
        }
        let mut guard = lock(&self.writer);
        let result = Self::write_batch(&mut guard, agent, batch);
        if result.is_err() {
            // Rolled back: ids given in the transaction no longer exist.
            guard.names.clear();
            guard.agent_ids.clear();
        }
        result
    }

    fn write_batch(
        writer: &mut Writer,
        agent: &AgentId,
        batch: Batch<'_>,
    ) -> Result<IngestReport, StoreError> {
        let tx = writer
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let agent_id = match writer.agent_ids.get(&agent.0) {
            Some(&id) => id,
            None => {
                tx.execute(
                    "INSERT INTO agents (name, host, events) VALUES (?1, '', 0)
                     ON CONFLICT (name) DO NOTHING",
                    [&agent.0],
                )?;
                let id: i64 = tx.query_row(
                    "SELECT agent_id FROM agents WHERE name = ?1",
                    [&agent.0],
                    |r| r.get(0),
                )?;
                writer.agent_ids.insert(agent.0.clone(), id);
                id
            }
        };

        let numbered = (0..batch.len()).any(|i| batch.event(i).sequence != 0);
        let old_ranges = if numbered {
            load_ranges(&tx, agent_id)?
        } else {
            SequenceRanges::new()
        };
        let mut ranges = old_ranges.clone();

        let mut report = IngestReport::default();
        let mut rollups = RollupBatch::new();
        let mut addresses: HashMap<(&str, IpAddr), (Timestamp, Timestamp)> = HashMap::new();
        let mut span: Option<(Timestamp, Timestamp)> = None;
        let mut last_host = None;
        {
            let mut insert_key = tx.prepare_cached(
                "INSERT INTO event_keys VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )?;
            let mut insert_stmt = tx.prepare_cached(INSERT_EVENT)?;
            for i in 0..batch.len() {
                let event = batch.event(i);
                let new = if event.sequence != 0 {
                    ranges.insert(event.sequence)
                } else {
                    let key = batch.key(i);
                    insert_key.execute(params![
                        agent_id,
                        key.0 as i64,
                        hour_start(event.timestamp).as_nanos()
                    ])? == 1
                };
                if !new {
                    report.duplicates += 1;
                    continue;
                }
                insert_event(&mut insert_stmt, agent_id, event)?;
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
        }

        if ranges != old_ranges {
            store_ranges(&tx, agent_id, &old_ranges, &ranges)?;
        }
        {
            let mut upsert = tx.prepare_cached(UPSERT_ROLLUP)?;
            let names = &mut writer.names;
            for (key, counts) in rollups.rows() {
                upsert.execute(params![
                    key.hour.as_nanos(),
                    names.id(&tx, &key.host)?,
                    names.id(&tx, key.direction.as_str())?,
                    names.ip_id(&tx, key.local_ip)?,
                    names.ip_id(&tx, key.remote_ip)?,
                    key.service_port,
                    names.id(&tx, key.protocol.as_str())?,
                    names.id(&tx, &key.executable)?,
                    names.id(&tx, &key.user)?,
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
            tx.execute(
                "UPDATE agents SET host = ?2, events = events + ?3,
                    first_seen = min(coalesce(first_seen, ?4), ?4),
                    last_seen = max(coalesce(last_seen, ?5), ?5)
                 WHERE agent_id = ?1",
                params![
                    agent_id,
                    host,
                    clamp(report.stored),
                    first.as_nanos(),
                    last.as_nanos()
                ],
            )?;
        }
        tx.commit()?;
        tracing::debug!(agent = %agent, stored = report.stored, duplicates = report.duplicates, "ingested");
        Ok(report)
    }
}

/// The store's raw `events` table alone, in a file of its own: the floor any
/// SQLite-backed ingest pays, for benchmarks to measure [`SqliteStore`]'s
/// ingest against in the same run.
///
/// It shares with [`SqliteStore`] exactly what makes the comparison fair (the
/// connection settings, the table and index definition, the row format), so
/// the two cannot drift apart, and nothing else: a batch is one transaction
/// of one prepared insert per event, without the work [`Store::ingest`] does
/// (validation, duplicate check, sequence ranges, rollups, host addresses).
/// The file it writes is no store: [`SqliteStore::open`] does not read it.
pub struct RawEventTable {
    conn: Connection,
}

impl RawEventTable {
    /// Opens the file at `path` (created if missing) with the store's
    /// settings, and creates the `events` table and its index there.
    pub fn open(path: impl AsRef<Path>) -> Result<RawEventTable, StoreError> {
        let path = path.as_ref();
        let open = || {
            let conn = Connection::open(path)?;
            configure(&conn)?;
            conn.execute_batch(EVENTS_TABLE)?;
            Ok::<_, rusqlite::Error>(conn)
        };
        let conn = open().map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(RawEventTable { conn })
    }

    /// Inserts `events` as they are, as rows of agent number `agent_id`, in
    /// one transaction.
    pub fn insert(&mut self, agent_id: i64, events: &[ConnectionEvent]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(INSERT_EVENT)?;
            for event in events {
                insert_event(&mut stmt, agent_id, event)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// The events of an ingest call, with or without producer-supplied keys.
#[derive(Clone, Copy)]
enum Batch<'a> {
    Plain(&'a [ConnectionEvent]),
    Keyed(&'a [KeyedEvent]),
}

impl Batch<'_> {
    fn len(&self) -> usize {
        match self {
            Batch::Plain(events) => events.len(),
            Batch::Keyed(events) => events.len(),
        }
    }

    fn event(&self, i: usize) -> &ConnectionEvent {
        match self {
            Batch::Plain(events) => &events[i],
            Batch::Keyed(events) => &events[i].event,
        }
    }

    fn key(&self, i: usize) -> EventKey {
        match self {
            Batch::Plain(events) => EventKey::of_event(&events[i]),
            Batch::Keyed(events) => events[i].key,
        }
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn load_ranges(conn: &Connection, agent_id: i64) -> Result<SequenceRanges, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT first_seq, last_seq FROM agent_sequences WHERE agent_id = ?1")?;
    let rows = stmt.query_map([agent_id], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(SequenceRanges::from_ranges(
        rows.collect::<Result<Vec<_>, _>>()?,
    ))
}

/// Writes only the ranges that changed: usually one range grew.
fn store_ranges(
    conn: &Connection,
    agent_id: i64,
    old: &SequenceRanges,
    new: &SequenceRanges,
) -> Result<(), StoreError> {
    let old_set: HashSet<_> = old.ranges().iter().collect();
    let new_set: HashSet<_> = new.ranges().iter().collect();
    let mut delete =
        conn.prepare_cached("DELETE FROM agent_sequences WHERE agent_id = ?1 AND first_seq = ?2")?;
    for (first, _) in old_set.difference(&new_set) {
        delete.execute(params![agent_id, *first as i64])?;
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO agent_sequences VALUES (?1, ?2, ?3)
         ON CONFLICT (agent_id, first_seq) DO UPDATE SET last_seq = excluded.last_seq",
    )?;
    for (first, last) in new_set.difference(&old_set) {
        insert.execute(params![agent_id, *first as i64, *last as i64])?;
    }
    Ok(())
}

/// An address as text in a buffer on the stack: every raw event row has two,
/// and a heap string for each showed in the import's profile.
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    fn of(ip: IpAddr) -> IpText {
        use std::fmt::Write;
        let mut text = IpText {
            buf: [0; 48],
            len: 0,
        };
        // The longest address text is 45 bytes.
        write!(text, "{ip}").expect("an address fits in 48 bytes");
        text
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("only whole strs are written")
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Inserts one event row (26 columns).
fn insert_event(
    stmt: &mut rusqlite::CachedStatement<'_>,
    agent_id: i64,
    e: &ConnectionEvent,
) -> rusqlite::Result<usize> {
    let p = e.process.as_ref();
    let c = e.close.as_ref();
    stmt.execute(params![
        agent_id,
        e.sequence as i64,
        e.timestamp.as_nanos(),
        e.kind.as_str(),
        e.host,
        e.netns as i64,
        e.protocol.as_str(),
        e.direction.as_str(),
        IpText::of(e.local.ip()).as_str(),
        e.local.port(),
        IpText::of(e.remote.ip()).as_str(),
        e.remote.port(),
        p.map(|p| p.pid),
        p.and_then(|p| p.executable.as_deref()),
        p.and_then(|p| p.comm.as_deref()),
        p.and_then(|p| p.command_line.as_deref()),
        p.and_then(|p| p.cgroup.as_deref()),
        e.uid,
        e.user_name,
        c.map(|c| clamp(c.duration_ns)),
        c.map(|c| clamp(c.bytes_sent)),
        c.map(|c| clamp(c.bytes_received)),
        c.and_then(|c| c.packets_sent).map(clamp),
        c.and_then(|c| c.packets_received).map(clamp),
        e.failure.map(|f| f.as_str()),
        e.preexisting,
    ])
}

fn parse_column<T: std::str::FromStr>(column: &'static str, value: &str) -> Result<T, Corrupt> {
    value.parse().map_err(|_| Corrupt {
        column,
        value: value.to_owned(),
    })
}

fn read_event(
    row: &rusqlite::Row<'_>,
) -> Result<Result<ConnectionEvent, Corrupt>, rusqlite::Error> {
    let kind: String = row.get("kind")?;
    let protocol: String = row.get("protocol")?;
    let direction: String = row.get("direction")?;
    let local_ip: String = row.get("local_ip")?;
    let remote_ip: String = row.get("remote_ip")?;
    let failure: Option<String> = row.get("failure")?;
    let pid: Option<u32> = row.get("pid")?;
    let process = match pid {
        Some(pid) => Some(ProcessInfo {
            pid,
            executable: row.get("executable")?,
            comm: row.get("comm")?,
            command_line: row.get("command_line")?,
            cgroup: row.get("cgroup")?,
        }),
        None => None,
    };
    let duration: Option<i64> = row.get("duration_ns")?;
    let close = match duration {
        Some(duration) => Some(CloseStats {
            duration_ns: duration as u64,
            bytes_sent: row.get::<_, Option<i64>>("bytes_sent")?.unwrap_or(0) as u64,
            bytes_received: row.get::<_, Option<i64>>("bytes_received")?.unwrap_or(0) as u64,
            packets_sent: row.get::<_, Option<i64>>("packets_sent")?.map(|n| n as u64),
            packets_received: row
                .get::<_, Option<i64>>("packets_received")?
                .map(|n| n as u64),
        }),
        None => None,
    };
    let sequence: i64 = row.get("sequence")?;
    let ts: i64 = row.get("ts")?;
    let netns: i64 = row.get("netns")?;
    let local_port: u16 = row.get("local_port")?;
    let remote_port: u16 = row.get("remote_port")?;
    let host: String = row.get("host")?;
    let uid: Option<u32> = row.get("uid")?;
    let user_name: Option<String> = row.get("user_name")?;
    let preexisting: bool = row.get("preexisting")?;
    Ok((|| {
        let local_ip: IpAddr = parse_column("local_ip", &local_ip)?;
        let remote_ip: IpAddr = parse_column("remote_ip", &remote_ip)?;
        Ok(ConnectionEvent {
            kind: parse_column::<EventKind>("kind", &kind)?,
            timestamp: Timestamp::from_nanos(ts),
            sequence: sequence as u64,
            host,
            netns: netns as u64,
            protocol: parse_column::<Protocol>("protocol", &protocol)?,
            direction: parse_column::<Direction>("direction", &direction)?,
            local: (local_ip, local_port).into(),
            remote: (remote_ip, remote_port).into(),
            process,
            uid,
            user_name,
            close,
            failure: failure
                .map(|f| parse_column::<ConnectFailure>("failure", &f))
                .transpose()?,
            preexisting,
        })
    })())
}

impl Store for SqliteStore {
    fn ingest(
        &self,
        agent: &AgentId,
        events: &[ConnectionEvent],
    ) -> Result<IngestReport, StoreError> {
        self.ingest_batch(agent, Batch::Plain(events))
    }

    fn ingest_keyed(
        &self,
        agent: &AgentId,
        events: &[KeyedEvent],
    ) -> Result<IngestReport, StoreError> {
        self.ingest_batch(agent, Batch::Keyed(events))
    }

    fn edge_totals(&self, query: &RollupQuery) -> Result<Vec<EdgeTotal>, StoreError> {
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
        let mut sums: HashMap<[i64; 8], [i64; 6]> = HashMap::new();
        {
            let mut stmt = reader.conn.prepare_cached(
                "SELECT host, direction, local_ip, remote_ip, service_port, protocol, executable,
                        user_name, connections, failures, bytes_sent, bytes_received, first_seen,
                        last_seen
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
                sums.entry(key)
                    .and_modify(|sum| {
                        for i in 0..4 {
                            sum[i] = sum[i].saturating_add(n[i]);
                        }
                        sum[4] = sum[4].min(n[4]);
                        sum[5] = sum[5].max(n[5]);
                    })
                    .or_insert(n);
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
            .iter()
            .map(|(k, n)| {
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
                (text, n)
            })
            .collect();
        // The order of the text, as the trait promised when it was SQL.
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut totals = Vec::with_capacity(rows.len());
        for ((host, direction, local_ip, remote_ip, port, protocol, executable, user), n) in rows {
            totals.push(EdgeTotal {
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
            });
        }
        Ok(totals)
    }

    fn agents(&self) -> Result<Vec<AgentStatus>, StoreError> {
        let guard = lock(&self.reader);
        let conn = &guard.conn;
        let mut ranges: HashMap<i64, Vec<(u64, u64)>> = HashMap::new();
        let mut stmt =
            conn.prepare_cached("SELECT agent_id, first_seq, last_seq FROM agent_sequences")?;
        for row in stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })? {
            let (id, first, last) = row?;
            ranges.entry(id).or_default().push((first, last));
        }
        let mut stmt = conn.prepare_cached(
            "SELECT agent_id, name, host, events, first_seen, last_seen FROM agents
             WHERE first_seen IS NOT NULL ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        let mut agents = Vec::new();
        for row in rows {
            let (id, name, host, events, first, last) = row?;
            agents.push(AgentStatus {
                agent: AgentId(name),
                host,
                events: events as u64,
                first_seen: Timestamp::from_nanos(first),
                last_seen: Timestamp::from_nanos(last),
                sequences: SequenceRanges::from_ranges(ranges.remove(&id).unwrap_or_default()),
            });
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
        let guard = lock(&self.reader);
        let conn = &guard.conn;
        let mut stmt = conn.prepare_cached(
            "SELECT * FROM events WHERE ts >= ?1 AND ts < ?2 AND (?3 IS NULL OR host = ?3)
             ORDER BY ts, rowid LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                query.range.from.as_nanos(),
                query.range.to.as_nanos(),
                query.host,
                clamp(query.limit as u64)
            ],
            read_event,
        )?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    fn apply_retention(
        &self,
        retention: &Retention,
        now: Timestamp,
    ) -> Result<RetentionReport, StoreError> {
        let before = |age: std::time::Duration| {
            Timestamp::from_nanos(now.as_nanos().saturating_sub(clamp(age.as_nanos() as u64)))
        };
        let mut guard = lock(&self.writer);
        let tx = guard
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut report = RetentionReport {
            events_deleted: tx.execute(
                "DELETE FROM events WHERE ts < ?1",
                [before(retention.raw_events).as_nanos()],
            )? as u64,
            rollups_deleted: 0,
        };
        if let Some(age) = retention.rollups {
            // Only whole hours that ended before the cutoff go.
            let cutoff = hour_start(before(age)).as_nanos();
            report.rollups_deleted =
                tx.execute("DELETE FROM edge_rollups WHERE hour < ?1", [cutoff])? as u64;
            tx.execute("DELETE FROM event_keys WHERE hour < ?1", [cutoff])?;
        }
        tx.commit()?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_the_display_form_even_at_its_longest() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
            "2001:db8::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::of(ip).as_str(), ip.to_string());
        }
    }
}
