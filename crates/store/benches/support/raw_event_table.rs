//! The benchmarks' peer: a plain SQLite bulk insert of raw events, one row
//! per event with a time index, in a file of its own, measured against
//! `SqliteStore`'s ingest in the same run (the store's and the collector's
//! ingest benches include this file; `tests/sqlite_store.rs` tests it).
//!
//! It shares the store's connection settings and nothing else: a batch is
//! one transaction of one prepared insert per event, without the work
//! `Store::ingest` does (validation, duplicate check, sequence ranges,
//! blocks, rollups, host addresses). The file it writes is no store.

use std::net::IpAddr;
use std::path::Path;

use connscope_event::ConnectionEvent;
use rusqlite::{params, Connection};

/// One row per event: what a plain SQLite ingest would write.
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

/// The `events` table of one file.
pub struct RawEventTable {
    conn: Connection,
}

impl RawEventTable {
    /// Opens the file at `path` (created if missing) with the store's
    /// settings, and creates the `events` table and its index there.
    pub fn open(path: impl AsRef<Path>) -> rusqlite::Result<RawEventTable> {
        let conn = Connection::open(path)?;
        // The settings of the store's connections (`sqlite/connection.rs`).
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -65_536)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.execute_batch(EVENTS_TABLE)?;
        Ok(RawEventTable { conn })
    }

    /// Inserts `events` as they are, as rows of agent number `agent_id`, in
    /// one transaction.
    pub fn insert(&mut self, agent_id: i64, events: &[ConnectionEvent]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(INSERT_EVENT)?;
            for event in events {
                insert_event(&mut stmt, agent_id, event)?;
            }
        }
        tx.commit()
    }
}

/// An address as text in a buffer on the stack: every row has two, and a
/// heap string for each showed in the import's profile.
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

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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

#[cfg(test)]
mod tests {
    // No `use super::*`: a bench compiles this module without its tests.
    #[test]
    fn ip_text_is_the_display_form_even_at_its_longest() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
            "2001:db8::1",
        ] {
            let ip: super::IpAddr = ip.parse().unwrap();
            assert_eq!(super::IpText::of(ip).as_str(), ip.to_string());
        }
    }
}
