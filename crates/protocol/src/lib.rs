//! The agent <-> collector contract, shared by both sides so it cannot drift:
//! paths, headers and the small JSON bodies (documented in docs/API.md), the
//! batch codec ([`batch`]), dropped reports, and the TLS identity both check
//! ([`tls`]). The agent's shipping output (`connscope-transport`) and the
//! collector depend on this crate, not on each other.

pub mod batch;
mod dropped;
pub mod enroll;
pub mod policy;
pub mod tls;

use serde::{Deserialize, Serialize};

pub use dropped::DroppedReport;
pub use tls::Fingerprint;

/// Headers of an ingest request naming the batch's sequence space: the
/// agent state's instance id, the run's boot id, and the run's first
/// number. Agents before instance ids send none (see docs/API.md).
pub const INSTANCE_HEADER: &str = "connscope-instance";
pub const BOOT_HEADER: &str = "connscope-boot";
pub const FIRST_SEQUENCE_HEADER: &str = "connscope-first-sequence";

/// Who numbered a batch: sent in the three headers above.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchOrigin {
    pub instance: String,
    pub boot: String,
    pub first_sequence: u64,
}

/// Why an agent reports sequence numbers as dropped ([`DroppedReport::reason`]).
pub mod drop_reason {
    /// Deleted unsent from a full spool (what a report without a reason means).
    pub const SPOOL_FULL: &str = "spool-full";
    /// A spooled batch failed its checks on disk.
    pub const SPOOL_DAMAGED: &str = "spool-damaged";
    /// Could not be written to the spool (disk full, I/O error).
    pub const SPOOL_WRITE: &str = "spool-write-failed";
    /// Refused for good by the collector (HTTP 400 or 413).
    pub const REFUSED: &str = "refused";
    /// Handed out or reserved when the agent crashed.
    pub const CRASH: &str = "crash";
    /// Lost on the kernel side before the agent numbered them: ring buffer
    /// or connection table full, or BPF program runs the kernel skipped
    /// (`recursion_misses`, which may not all have carried an event: an
    /// upper bound).
    pub const CAPTURE_KERNEL: &str = "capture-kernel";
    /// Dropped from the agent's full capture queue (outputs too slow),
    /// before its rules chose: an upper bound of what they would have logged.
    pub const CAPTURE_QUEUE: &str = "capture-queue";
    /// Their sequence numbers could not be written to the agent's state.
    pub const STATE_WRITE: &str = "state-write-failed";
    /// Not a loss of numbers: the agent was not running ([`super::DroppedReport::down`]).
    pub const DOWN: &str = "down";
}

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
    /// Of `duplicates`, numbers it had with other content: the agent
    /// numbered two events alike (the stored ones are kept).
    #[serde(default)]
    pub conflicts: u64,
}

/// The collector's answer to anything it refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
    /// The 1-based line of the batch that is wrong, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}
