//! The store: where the collector puts connection events and where reports,
//! the map and the firewall planner read them back.
//!
//! Storage sits behind the [`Store`] trait, with two backends: SQLite,
//! embedded, for a home network or an office ([`SqliteStore`]), and
//! ClickHouse for fleets written by several stateless collectors
//! ([`ClickHouseStore`]). The trait speaks in the shared event model and in
//! small query/result types, never in SQL; [`open`] opens either from a
//! [`StoreLocation`], so no caller names a backend. docs/STORE.md has both.
//!
//! What a backend keeps:
//! - **raw events**, deleted by [`Store::apply_retention`] after a while;
//! - **hourly edge rollups** ([`EdgeTotal`]), kept much longer, which is what the
//!   map and the reports read so they stay fast on large stores;
//! - **sequence ranges per agent state and run** ([`SequenceRanges`],
//!   [`Origin`]), which make delivery exactly-once and show any gap; they
//!   outlive the raw events, so a batch re-sent after retention is still
//!   recognised; with what agents reported losing, and why, and when they
//!   were not running;
//! - **host addresses**: the local addresses each host was seen with, so an
//!   edge whose remote end is a monitored host can be joined with that host's
//!   own record;
//! - **remote names** ([`NameSighting`]): per hour, the names each host
//!   learned for the remote addresses it connected to (DNS answers, TLS
//!   server names), kept as long as the rollups they name;
//! - **host groups and labels** ([`HostGroup`], [`HostLabel`]): the user's
//!   definitions only; membership is resolved by `connscope-query`;
//! - **access tokens** ([`TokenRecord`]): digests of agent and enrollment
//!   tokens, so collectors sharing a store share who may send;
//! - **rule hit counters** ([`RuleHits`]): per host, policy version and rule,
//!   the packets its firewall rule matched and when it last matched, from
//!   the counters agents report (`connscope policy hygiene` reads them).
//! - **the policy loop** ([`PolicyVersion`], [`PolicyAssignment`],
//!   [`HostFirewall`], [`DriftRecord`]): policy documents by version, their
//!   assignments to groups and hosts with every change, what each host's
//!   firewall last reported, and drift edges.
//!
//! Firewall hits (`would-block` and `blocked` events, [`FirewallHitTotal`])
//! are raw events like any other and read from them.
//!
//! The logic that is not SQL (which rollup an event belongs to, range-set
//! arithmetic, content keys) lives in plain Rust modules here, so every backend
//! computes the same thing.

mod block;
mod checks;
mod clickhouse;
mod group;
mod hash;
mod hits;
mod key;
mod location;
mod policy;
mod rollup;
mod rule_hits;
mod sequence;
mod sqlite;
mod status;
mod token;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use connscope_event::{ConnectionEvent, Direction, NameSource, Protocol, Timestamp};
use connscope_protocol::policy::{FirewallNotice, FirewallState};

pub use clickhouse::{ClickHouseLocation, ClickHouseStore};
pub use group::{GroupKind, HostGroup, HostLabel};
pub use hits::{is_firewall_hit, FirewallHitQuery, FirewallHitTotal};
pub use key::EventKey;
pub use location::{open, StoreLocation};
pub use policy::{
    AssignedVersion, AssignmentChange, AssignmentTarget, DriftRecord, HostFirewall, HostNotice,
    PolicyAssignment, PolicyVersion,
};
pub use rollup::{hour_start, is_host_address, rollup_user, EdgeCounts, EdgeKey, RollupBatch};
pub use rule_hits::{rule_hits_of, HostRuleCounter, RuleCount, RuleHits};
pub use sequence::SequenceRanges;
pub use sqlite::SqliteStore;
pub use token::{TokenKind, TokenRecord, TokenRefusal};

/// The identity of a sender of events (from its token). Sequence numbers are
/// unique per agent *state* ([`Origin`]), so deduplication and gap detection
/// are per agent and state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub String);

impl std::fmt::Display for AgentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which sequence space a batch of numbered events belongs to.
///
/// Sequence numbers are unique only within one agent *state* (the
/// `instance`, created with the agent's state directory): a wiped state
/// directory or a token copied to a second host numbers from 1 again, under
/// a new instance. Within an instance, each run of the agent (`boot`, new at
/// every start) numbers from where the state said (`first_sequence`), so a
/// state restored from a snapshot shows as two boots using the same numbers
/// instead of as duplicates. Duplicates are recognised within one boot only:
/// a retry re-sends a batch with the boot that numbered it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Empty for senders that send none (agents before instance ids, imports,
    /// syslog): they all share one space per agent, as before.
    pub instance: String,
    pub boot: String,
    /// The first number this boot handed out (1 for a new instance).
    pub first_sequence: u64,
}

impl Origin {
    /// The space of senders without an instance id.
    pub fn legacy() -> Origin {
        Origin {
            instance: String::new(),
            boot: String::new(),
            first_sequence: 1,
        }
    }
}

/// Why an agent reported sequence numbers as dropped (`report hosts` shows
/// each apart from what is unexplained). The reasons agents send are the wire
/// contract's (`connscope_protocol::drop_reason`); the store keeps whatever
/// reason it is given and owns only the one it applies itself.
pub mod drop_reason {
    /// Its spool was full and the oldest unsent batches were deleted: what a
    /// report that names no reason means.
    pub const SPOOL_FULL: &str = "spool-full";
}

/// What one ingest call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Events newly stored.
    pub stored: u64,
    /// Events already stored before (same agent and sequence number), skipped.
    pub duplicates: u64,
    /// Of `duplicates`, those whose content differs from the stored event:
    /// not a retry but a sender numbering two events alike (the stored one
    /// is kept; logged, counted per agent state).
    pub conflicts: u64,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The batch holds an event the store refuses; nothing of the batch was stored.
    #[error("event {index} of the batch is invalid (nothing stored): {reason}")]
    InvalidEvent { index: usize, reason: String },
    /// A sequence range the store refuses; nothing of the call was stored.
    #[error("sequence range {index} is invalid (nothing stored): {reason}")]
    InvalidRange { index: usize, reason: String },
    /// The batch names an origin the store refuses; nothing of it was stored.
    #[error("invalid origin (nothing stored): {0}")]
    InvalidOrigin(String),
    /// The store file cannot be opened or has an unknown layout.
    #[error("cannot open store {path}: {reason}")]
    Open { path: String, reason: String },
    /// The backend failed (disk full, locked, corrupt, ...).
    #[error("storage backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An event without a sequence number, with the identity its producer gives it.
///
/// Used by the importer: a log line has no sequence number, and its content
/// key (see [`EventKey`]) is derived from the raw line, so importing the same
/// line again — from a renamed, rotated or gzipped file — is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedEvent {
    pub key: EventKey,
    /// Where the store files the key: keys are unique per agent within the
    /// hour this falls in. It must come out the same whenever the producer
    /// makes the same key again, so it is not always the event's time: a
    /// classic syslog line's UTC time depends on the `--tz` it was read with,
    /// its wall-clock time does not.
    pub key_time: Timestamp,
    pub event: ConnectionEvent,
}

/// A half-open span of time, `from <= t < to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Timestamp,
    pub to: Timestamp,
}

impl TimeRange {
    /// Everything a store can hold.
    pub const ALL: TimeRange = TimeRange {
        from: Timestamp::from_nanos(i64::MIN),
        to: Timestamp::from_nanos(i64::MAX),
    };

    pub fn contains(&self, t: Timestamp) -> bool {
        self.from <= t && t < self.to
    }
}

/// Which rollups to read. Rollups are hourly: a range selects the hours that
/// start in `[hour_start(from), to)`, i.e. it is widened to whole hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupQuery {
    pub range: TimeRange,
    /// Only rollups logged by this host.
    pub host: Option<String>,
}

/// One rollup edge summed over the hours of a [`RollupQuery`]: what `host`
/// logged about connections between `local_ip` and `remote_ip` on
/// `service_port`, per process and user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeTotal {
    pub host: String,
    pub direction: Direction,
    pub local_ip: IpAddr,
    pub remote_ip: IpAddr,
    /// The server side's port, whichever end logged it.
    pub service_port: u16,
    pub protocol: Protocol,
    /// Full executable path; empty when not known.
    pub executable: String,
    /// User name, or the uid in decimal when there is no name; empty when unknown.
    pub user: String,
    pub counts: EdgeCounts,
}

/// An [`EdgeTotal`] with its connections hour by hour, for histograms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourlyEdgeTotal {
    pub total: EdgeTotal,
    /// (hour start, connections in that hour), oldest first; hours without
    /// connections are left out.
    pub hours: Vec<(Timestamp, u64)>,
}

/// One sender of events (one state of it: an agent whose state was wiped
/// shows twice) and what the store has from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    pub agent: AgentId,
    /// The agent state's instance id; empty for senders without one.
    pub instance: String,
    /// Another instance of this agent was seen before this one: the agent
    /// started again without its state (wiped, or a copied token).
    pub lost_state: bool,
    /// Runs of the agent seen with this state.
    pub boots: u64,
    /// Sequence numbers used by more than one run of this state: its state
    /// was restored from a snapshot. Those events are all stored.
    pub reused: u64,
    /// Numbers resent with other content than stored (see
    /// [`IngestReport::conflicts`]).
    pub conflicts: u64,
    /// Where numbering of this instance starts (1, or the number an agent
    /// state from before instance ids had reached).
    pub first_sequence: u64,
    /// The host name in its most recent batch.
    pub host: String,
    /// Events stored from it, ever (retention does not lower this).
    pub events: u64,
    /// Oldest and newest event timestamps stored from it (the epoch for a
    /// state with reported drops and nothing stored).
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// The sequence numbers stored; empty for senders of unnumbered events.
    pub sequences: SequenceRanges,
    /// The sequence numbers it reported dropping (see
    /// [`Store::record_dropped_from`]), whatever the reason: gaps it explained.
    pub dropped: SequenceRanges,
    /// `dropped` by reason (see [`drop_reason`]), ordered by reason.
    pub dropped_by_reason: Vec<(String, SequenceRanges)>,
    /// When the agent reported it was not running (and so saw no
    /// connections), oldest first.
    pub downtime: Vec<(Timestamp, Timestamp)>,
}

/// Batches of one agent the collector refused for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalCount {
    pub agent: AgentId,
    /// A short name: `too-large`, `bad-event`, `host-mismatch`, ...
    pub reason: String,
    pub batches: u64,
    /// When the last of them was refused.
    pub last_at: Timestamp,
}

/// The holes in one sender's sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceGaps {
    /// The numbers missing between the first and the highest one stored or
    /// dropped, as inclusive ranges.
    pub ranges: Vec<(u64, u64)>,
    /// How many numbers `ranges` covers.
    pub missing: u64,
    /// Of `missing`, how many the sender reported dropped: known losses.
    pub dropped: u64,
    /// `dropped` by reason; a number reported for two reasons counts in both.
    pub dropped_by_reason: Vec<(String, u64)>,
    /// `missing - dropped`: lost without an explanation.
    pub unexplained: u64,
}

impl AgentStatus {
    /// What is missing from this sender, and how much of it it explained:
    /// the numbers from where it started to the highest one stored or
    /// reported dropped (all of a sender's batches may have been refused).
    pub fn gaps(&self) -> SequenceGaps {
        let last = self.sequences.last().max(self.dropped.last());
        let ranges = last.map_or_else(Vec::new, |last| {
            self.sequences.gaps_within(self.first_sequence, last)
        });
        let missing = ranges.iter().map(|&(first, last)| last - first + 1).sum();
        let dropped = self.dropped.count_within(&ranges);
        SequenceGaps {
            missing,
            dropped,
            dropped_by_reason: self
                .dropped_by_reason
                .iter()
                .map(|(reason, set)| (reason.clone(), set.count_within(&ranges)))
                .collect(),
            unexplained: missing - dropped,
            ranges,
        }
    }
}

/// A name `host` learned for `remote_ip` within one hour: the named events
/// of that hour (see [`connscope_event::RemoteName`]). Rollups carry no
/// names; readers name their remote ends from these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameSighting {
    /// The start of the hour.
    pub hour: Timestamp,
    pub host: String,
    pub remote_ip: IpAddr,
    /// Byte for byte as the host received it.
    pub name: String,
    pub source: NameSource,
    /// Connect events so named in the hour.
    pub connections: u64,
    /// The first and last named event of the hour (any kind).
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// An address a host was seen with as the local end of its own events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddress {
    pub host: String,
    pub ip: IpAddr,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// Which raw events to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    pub range: TimeRange,
    pub host: Option<String>,
    /// At most this many, oldest first.
    pub limit: usize,
}

/// Which connections to read from the raw events: those made in `range`
/// and logged by one of `hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionQuery {
    pub range: TimeRange,
    pub hosts: Vec<String>,
}

/// One `connect` event as its host logged it, reduced to what finds the
/// other end's record of the same connection: its 4-tuple and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub timestamp: Timestamp,
    pub direction: Direction,
    pub protocol: Protocol,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl ConnectionRecord {
    /// The service port of the rollup this connection was counted in.
    pub fn service_port(&self) -> u16 {
        rollup::service_port_of(self.direction, self.local.port(), self.remote.port())
    }
}

/// How long data is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw events older than this are deleted.
    pub raw_events: Duration,
    /// Rollups (and the content keys of unnumbered events, which must live as
    /// long as the rollups they were counted in) older than this are deleted;
    /// `None` keeps them forever.
    pub rollups: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw_events: Duration::from_secs(30 * 86_400),
            rollups: Some(Duration::from_secs(800 * 86_400)),
        }
    }
}

/// What [`Store::apply_retention`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub events_deleted: u64,
    pub rollups_deleted: u64,
    /// Drift edges last seen before the raw-event cutoff.
    pub drift_deleted: u64,
    /// Firewall notices the hosts dated before the raw-event cutoff.
    pub notices_deleted: u64,
    /// Rule counters (one per policy version, rule and host) of versions
    /// assigned nowhere and last reported before the raw-event cutoff.
    pub rule_counters_deleted: u64,
}

/// What [`Store::fold_rollups`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FoldReport {
    /// Hours whose rollups got a new fold.
    pub hours_folded: u64,
    /// Batches counted into those folds.
    pub batches_folded: u64,
    /// Days whose daily rollups were (re)built.
    pub days_built: u64,
}

/// What [`Store::export_events`] gives each batch to: the agent, the
/// sequence space, the events.
pub type ExportSink<'a> =
    dyn FnMut(&AgentId, &Origin, &[ConnectionEvent]) -> Result<(), StoreError> + 'a;

/// A place connection events are kept.
pub trait Store: Send + Sync {
    /// Stores a batch atomically: all of it or, on error, none of it. Events whose
    /// (agent, origin, sequence) is already stored are skipped and counted as
    /// duplicates, which makes at-least-once delivery exactly-once in the store.
    ///
    /// Unnumbered events (sequence 0) are identified by [`EventKey::of_event`],
    /// a hash of their content.
    fn ingest_from(
        &self,
        agent: &AgentId,
        origin: &Origin,
        events: &[ConnectionEvent],
    ) -> Result<IngestReport, StoreError>;

    /// [`Store::ingest_from`] with the batch shared rather than lent: a
    /// backend that stores it on a thread of its own (ClickHouse's writer)
    /// keeps it without copying every event, and the caller still reads
    /// the events afterwards.
    fn ingest_shared(
        &self,
        agent: &AgentId,
        origin: &Origin,
        events: Arc<Vec<ConnectionEvent>>,
    ) -> Result<IngestReport, StoreError> {
        self.ingest_from(agent, origin, &events)
    }

    /// [`Store::ingest_from`] for a sender without an instance id.
    fn ingest(
        &self,
        agent: &AgentId,
        events: &[ConnectionEvent],
    ) -> Result<IngestReport, StoreError> {
        self.ingest_from(agent, &Origin::legacy(), events)
    }

    /// Like [`Store::ingest`], for unnumbered events whose producer supplies the
    /// identity. An event that does carry a sequence number is identified by it.
    fn ingest_keyed(
        &self,
        agent: &AgentId,
        events: &[KeyedEvent],
    ) -> Result<IngestReport, StoreError>;

    /// Rollup edges summed over the hours of the query.
    fn edge_totals(&self, query: &RollupQuery) -> Result<Vec<EdgeTotal>, StoreError>;

    /// [`Store::edge_totals`] with each edge's connections per hour: the map's
    /// edges and its histogram from one read.
    fn edge_totals_by_hour(&self, query: &RollupQuery) -> Result<Vec<HourlyEdgeTotal>, StoreError>;

    /// Records that `agent`'s state `instance` lost the events numbered
    /// `ranges` (inclusive) for `reason` (see [`drop_reason`]): the gap they
    /// leave is a known loss. Recording the same ranges again changes nothing.
    fn record_dropped_from(
        &self,
        agent: &AgentId,
        instance: &str,
        reason: &str,
        ranges: &[(u64, u64)],
    ) -> Result<(), StoreError>;

    /// Counts one batch of `agent` refused for `reason` at `at`, so a refusal
    /// (which stores nothing of the batch) still shows in reports.
    fn record_refusal(
        &self,
        agent: &AgentId,
        reason: &str,
        at: Timestamp,
    ) -> Result<(), StoreError>;

    /// The refused batches, by agent and reason, ordered so.
    fn refusals(&self) -> Result<Vec<RefusalCount>, StoreError>;

    /// [`Store::record_dropped_from`] for a sender without an instance id,
    /// whose spool was full.
    fn record_dropped(&self, agent: &AgentId, ranges: &[(u64, u64)]) -> Result<(), StoreError> {
        self.record_dropped_from(agent, "", drop_reason::SPOOL_FULL, ranges)
    }

    /// Records that `agent`'s state `instance` was not running in each of
    /// `windows` (from, to): connections then were not seen. Recording a
    /// window again changes nothing.
    fn record_downtime(
        &self,
        agent: &AgentId,
        instance: &str,
        windows: &[(Timestamp, Timestamp)],
    ) -> Result<(), StoreError>;

    /// Every sender with stored events, one entry per instance, with its
    /// sequence ranges and what it reported dropped, ordered by agent id and
    /// then by when the instance was first seen.
    fn agents(&self) -> Result<Vec<AgentStatus>, StoreError>;

    /// Every (host, local address) pair seen.
    fn host_addresses(&self) -> Result<Vec<HostAddress>, StoreError>;

    /// Raw events, oldest first.
    fn events(&self, query: &EventQuery) -> Result<Vec<ConnectionEvent>, StoreError>;

    /// Gives `each` the `connect` events of the query still kept as raw
    /// events (see [`Retention::raw_events`]), with the host that logged
    /// them, in no particular order: what joins a connection's two records
    /// one by one. Each was counted in a rollup, so where a host's rollup
    /// counts more connections in an hour than this gives, some of its raw
    /// events are gone. Streamed, not collected: a day can hold millions.
    fn connections(
        &self,
        query: &ConnectionQuery,
        each: &mut dyn FnMut(&str, &ConnectionRecord),
    ) -> Result<(), StoreError>;

    /// Deletes what is older than `retention` allows, measured back from `now`:
    /// raw events, rollups, and the policy loop's records that age with the
    /// raw events (drift edges, firewall notices, rule counters of versions
    /// no longer assigned). Policy versions and assignment history are the
    /// audit trail and are never deleted.
    fn apply_retention(
        &self,
        retention: &Retention,
        now: Timestamp,
    ) -> Result<RetentionReport, StoreError>;

    /// Stores `group`, replacing a group of the same name (its definition
    /// and labels). Callers check the patterns; the store keeps them as given.
    fn put_group(&self, group: &HostGroup) -> Result<(), StoreError>;

    /// Every group, in the order they were first added: the order in which a
    /// planner that must pick one group for a host tries them.
    fn groups(&self) -> Result<Vec<HostGroup>, StoreError>;

    /// Deletes the group `name`; false when there was none.
    fn remove_group(&self, name: &str) -> Result<bool, StoreError>;

    /// Sets `host`'s label `key` to `value`, or removes it with `None`.
    fn set_host_label(&self, host: &str, key: &str, value: Option<&str>) -> Result<(), StoreError>;

    /// Every host label, ordered by host and key.
    fn host_labels(&self) -> Result<Vec<HostLabel>, StoreError>;

    /// Keeps a new token (its digest); an id or digest already kept is an error.
    fn add_token(&self, token: &TokenRecord) -> Result<(), StoreError>;

    /// The token with this digest, revoked and expired ones included.
    fn token_by_digest(&self, digest: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError>;

    /// Every token, oldest first.
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Revokes the token `id` at `at`; false when there is no such token
    /// (revoking a revoked token again keeps the first time).
    fn revoke_token(&self, id: &str, at: Timestamp) -> Result<bool, StoreError>;

    /// Records that the token with this digest was presented at `at`.
    fn touch_token(&self, digest: &[u8; 32], at: Timestamp) -> Result<(), StoreError>;

    /// Exchanges the enrollment token `enrollment` (a digest) for `agent_token`
    /// in one transaction: the enrollment token must be valid at `at` and,
    /// unless reusable, unused; its use is counted; the agent token's agent is
    /// the enrollment token's host (or, for a reusable token without one,
    /// `agent_token.agent` as given); earlier agent tokens of that agent are
    /// revoked, so a host has one live token. Returns the stored agent token.
    fn redeem_enrollment(
        &self,
        enrollment: &[u8; 32],
        agent_token: &TokenRecord,
        at: Timestamp,
    ) -> Result<Result<TokenRecord, TokenRefusal>, StoreError>;

    /// Writes a small record (the time of this check) and commits it: the
    /// store takes writes now (`/readyz`).
    fn probe_write(&self, at: Timestamp) -> Result<(), StoreError>;

    /// The names hosts learned for remote addresses in the hours of `query`
    /// (widened to whole hours like rollups), one per (hour, host, address,
    /// name, source), ordered by host, address, name, source and hour.
    fn remote_names(&self, query: &RollupQuery) -> Result<Vec<NameSighting>, StoreError>;

    /// Gives `each` every raw event still kept, in batches, with the agent
    /// and sequence space ([`Origin`]) it was stored under: what copies a
    /// store to another backend with its sequence spaces (`connscope store
    /// migrate`). Stops at the first error `each` returns.
    fn export_events(&self, each: &mut ExportSink<'_>) -> Result<(), StoreError>;

    /// Keeps the rule counters `host` read at `at` from its loaded table of
    /// `policy` `version` (assignment `revision`): each rule's counter since
    /// the table was loaded, turned into packets over all loads and the time
    /// the counter last went up ([`HostRuleCounter::after`]). A reading
    /// older than the last kept for a rule is ignored.
    fn record_rule_counters(
        &self,
        host: &str,
        policy: &str,
        version: u32,
        revision: u64,
        at: Timestamp,
        counters: &[RuleCount],
    ) -> Result<(), StoreError>;

    /// Per version (only `version`, when given) and rule of `policy`, over
    /// every host that reported it: packets and the last time a counter
    /// went up, ordered by version and rule.
    fn rule_hits(&self, policy: &str, version: Option<u32>) -> Result<Vec<RuleHits>, StoreError>;

    /// Keeps `document` as the next version of policy `name` and returns
    /// it; a document identical to the latest version is not kept again:
    /// that version is returned. Callers check the document.
    fn put_policy(
        &self,
        name: &str,
        document: &str,
        author: &str,
        comment: &str,
        at: Timestamp,
    ) -> Result<PolicyVersion, StoreError>;

    /// Every version of policy `name`, oldest first (none: empty).
    fn policy_versions(&self, name: &str) -> Result<Vec<PolicyVersion>, StoreError>;

    /// One version of policy `name`.
    fn policy_version(&self, name: &str, version: u32)
        -> Result<Option<PolicyVersion>, StoreError>;

    /// Records a change of a target's assignment, numbered with the next
    /// revision, and returns it as stored.
    fn assign_policy(&self, change: &AssignmentChange) -> Result<PolicyAssignment, StoreError>;

    /// The current assignment of every target that has one (withdrawn ones
    /// left out), ordered by target.
    fn policy_assignments(&self) -> Result<Vec<PolicyAssignment>, StoreError>;

    /// Every change of `target`'s assignment, oldest first.
    fn assignment_history(
        &self,
        target: &AssignmentTarget,
    ) -> Result<Vec<PolicyAssignment>, StoreError>;

    /// The highest revision given out (0 before the first assignment): a
    /// reader that cached assignments compares it to know they changed.
    fn assignment_revision(&self) -> Result<u64, StoreError>;

    /// Keeps `report` as `host`'s last firewall state, replacing an older
    /// one, and adds its notices (a notice reported again is kept once).
    fn put_firewall_report(
        &self,
        host: &str,
        state: &FirewallState,
        reported_at: Timestamp,
        notices: &[FirewallNotice],
    ) -> Result<(), StoreError>;

    /// The last firewall report of every host that sent one, ordered by host.
    fn firewall_states(&self) -> Result<Vec<HostFirewall>, StoreError>;

    /// The notices hosts reported (only `host`'s when given), ordered by
    /// host and then by the time the host gave them.
    fn firewall_notices(&self, host: Option<&str>) -> Result<Vec<HostNotice>, StoreError>;

    /// Adds `sighting` (one or more connections of one edge) to the drift
    /// records: true when it made the edge's record, which happens once per
    /// edge however many collectors see it (the caller alerts then); false
    /// when the edge had one, whose last time and count grow.
    fn record_drift(&self, sighting: &DriftRecord) -> Result<bool, StoreError>;

    /// The drift edges seen in `range` (last seen at or after its start,
    /// first seen before its end), ordered by host, first time and edge.
    fn drift(&self, range: TimeRange) -> Result<Vec<DriftRecord>, StoreError>;

    /// The `would-block` and `blocked` events of `query` still kept as raw
    /// events, summed per (host, kind, direction, protocol, service port,
    /// remote address, executable, user), ordered so (see
    /// [`FirewallHitTotal`]).
    fn firewall_hits(&self, query: &FirewallHitQuery) -> Result<Vec<FirewallHitTotal>, StoreError>;

    /// Compacts the rollups of hours closed by `now`, run by the
    /// collector's maintenance loop; idempotent, safe to run from several
    /// collectors at once, and no read answers differently for it. A
    /// backend that keeps one row per edge and hour anyway (SQLite) has
    /// nothing to do. ClickHouse sums an hour's per-batch rows into one row
    /// per edge and builds daily rows for long ranges (see docs/STORE.md).
    fn fold_rollups(&self, now: Timestamp) -> Result<FoldReport, StoreError>;
}

/// The checks every backend makes before storing anything of a batch.
pub fn check_event(index: usize, event: &ConnectionEvent) -> Result<(), StoreError> {
    let invalid = |reason: String| StoreError::InvalidEvent { index, reason };
    event.validate().map_err(|e| invalid(e.to_string()))?;
    if event.host.is_empty() {
        return Err(invalid("the host name is empty".into()));
    }
    if event.sequence > i64::MAX as u64 {
        return Err(invalid(format!(
            "sequence {} is beyond 2^63-1",
            event.sequence
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::EventKind;

    #[test]
    fn check_event_names_the_index_and_reason() {
        let mut ev = ConnectionEvent::new(
            EventKind::Connect,
            Timestamp::from_nanos(1),
            Protocol::Tcp,
            Direction::Outgoing,
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:22".parse().unwrap(),
        );
        let err = check_event(3, &ev).unwrap_err().to_string();
        assert_eq!(
            err,
            "event 3 of the batch is invalid (nothing stored): the host name is empty"
        );
        ev.host = "a".into();
        check_event(0, &ev).unwrap();
        ev.remote = "[::1]:22".parse().unwrap();
        assert!(check_event(7, &ev)
            .unwrap_err()
            .to_string()
            .contains("event 7"));
    }
}
