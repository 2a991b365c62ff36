//! The agent <-> collector wire contract, shared by both sides so it cannot
//! drift: paths, headers and the small JSON bodies (documented in docs/API.md).

use serde::{Deserialize, Serialize};

pub use crate::spool::DroppedReport;

/// POST a batch: gzip-compressed JSON Lines, one event per line.
pub const INGEST_PATH: &str = "/api/v1/ingest";
/// POST a [`DroppedReport`] (plain JSON): events the agent's spool had to delete.
pub const DROPPED_PATH: &str = "/api/v1/dropped";
/// The one body compression agents use and the collector requires on ingest.
pub const BODY_ENCODING: &str = "gzip";
/// Media type of an ingest body before compression.
pub const JSON_LINES: &str = "application/x-ndjson";

/// The collector's answer to a stored batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    /// Events newly stored.
    pub stored: u64,
    /// Events it already had (a retried batch), skipped.
    pub duplicates: u64,
}

/// The collector's answer to anything it refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
    /// The 1-based line of the batch that is wrong, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}
