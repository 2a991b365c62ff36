//! The store: where the collector puts connection events and where reports,
//! the map and the firewall planner read them back.
//!
//! Storage sits behind the [`Store`] trait so the embedded SQLite default and a
//! ClickHouse backend for large fleets are interchangeable. The trait speaks in
//! the shared event model and in small query/result types, never in SQL.

use connscope_event::ConnectionEvent;

/// The identity of a sender of numbered events. Sequence numbers are unique per
/// agent, so deduplication and gap detection are per agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub String);

/// What one ingest call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Events newly stored.
    pub stored: u64,
    /// Events already stored before (same agent and sequence number), skipped.
    pub duplicates: u64,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
}

/// A place connection events are kept.
pub trait Store: Send + Sync {
    /// Stores a batch atomically: all of it or, on error, none of it. Events whose
    /// (agent, sequence) is already stored are skipped and counted as duplicates,
    /// which makes at-least-once delivery exactly-once in the store.
    fn ingest(&self, agent: &AgentId, events: &[ConnectionEvent]) -> Result<IngestReport, StoreError>;
}
