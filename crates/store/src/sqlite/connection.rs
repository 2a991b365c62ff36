//! The store's two connections: one writer, which does each change in one
//! transaction, and one reader, which WAL lets read while the writer writes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, TransactionBehavior};

use super::names::{IdNames, NameIds};
use crate::hash::FastHash;
use crate::StoreError;

/// The one connection that writes, with its caches of the ids it gave out.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) ids: Ids,
}

/// The writer's caches of ids handed out by the database. They may hold ids
/// of the transaction in progress, so they are emptied when one fails.
#[derive(Default)]
pub(super) struct Ids {
    /// Agent ids never change once assigned, so they can be cached.
    pub(super) agents: HashMap<String, i64, FastHash>,
    /// (agent id, instance, boot) -> space id; as fixed as agent ids.
    pub(super) spaces: HashMap<(i64, String, String), i64, FastHash>,
    pub(super) names: NameIds,
}

impl Writer {
    /// Runs `work` in one transaction and commits it: all of it or, on
    /// error, none of it. Ids given out in a failed transaction no longer
    /// exist afterwards, so the caches forget them.
    pub(super) fn transaction<T>(
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

/// The connection that reads, with its cache of names.
pub(super) struct Reader {
    pub(super) conn: Connection,
    pub(super) names: IdNames,
}

/// The connection behind `mutex`, even if a panic poisoned it.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves no half-done transaction behind
    // (it rolled back on drop), so the connection is still fine to use.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The settings of both connections (and of the benches' raw-insert peer).
pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL in WAL mode: a power cut may lose the last transactions, never
    // corrupt the file; agents re-send what was not acknowledged.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}
