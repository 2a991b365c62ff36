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
//! Raw events are not a row each but a block per batch and host
//! ([`crate::block`]), and the keys of unnumbered events a sorted array per
//! agent and hour: per event, SQLite then does no work at all, which took
//! ingest from the ~250,000 rows/s a row per event allows to what the Rust
//! side can do.
//!
//! Where each part is: [`schema`] (tables and the migration list),
//! [`connection`] (the writer and the reader), [`write`] (an ingest) with
//! [`dedup`] (what is already stored), [`read`] (rollups, addresses, raw
//! events), [`spaces`] (agent and sequence-space ids, range sets),
//! [`agents`] (drops, downtime, refusals, statuses), [`groups`] (host
//! groups and labels), [`tokens`] (access token digests), [`rule_hits`]
//! (firewall rule counters), [`names`] (the
//! groups and labels), [`policies`] (the policy loop's records), [`tokens`] (access token digests), [`names`] (the
//! groups and labels), [`tokens`] (access token digests), [`hits`] (firewall hits, from the
//! blocks), [`names`] (the
//! dictionary of the rollups' text), [`retention`], and [`column`] (values
//! in and out of columns).

mod agents;
mod batch;
mod column;
mod connection;
mod dedup;
mod groups;
mod hits;
mod names;
mod policies;
mod read;
mod retention;
mod rule_hits;
mod schema;
mod spaces;
mod tokens;
mod write;

use std::path::Path;
use std::sync::Mutex;

use connscope_event::{ConnectionEvent, Timestamp};
use rusqlite::Connection;

use connscope_protocol::policy::{FirewallNotice, FirewallState};

use crate::{
    AgentId, AgentStatus, AssignmentChange, AssignmentTarget, ConnectionQuery, ConnectionRecord,
    DriftRecord, EdgeTotal, EventQuery, ExportSink, FirewallHitQuery, FirewallHitTotal, FoldReport,
    HostAddress, HostFirewall, HostGroup, HostLabel, HostNotice, HourlyEdgeTotal, IngestReport,
    KeyedEvent, NameSighting, Origin, PolicyAssignment, PolicyVersion, RefusalCount, Retention,
    RetentionReport, RollupQuery, RuleCount, RuleHits, Store, StoreError, TimeRange, TokenRecord,
    TokenRefusal,
};
use batch::Batch;
use connection::{configure, Reader, Writer};

/// A store in one SQLite file.
pub struct SqliteStore {
    writer: Mutex<Writer>,
    reader: Mutex<Reader>,
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
        schema::bring_up_to_date(&mut conn).map_err(|e| open_error(e.to_string()))?;
        let reader = Connection::open(path).map_err(|e| open_error(e.to_string()))?;
        configure(&reader).map_err(|e| open_error(e.to_string()))?;
        Ok(SqliteStore {
            writer: Mutex::new(Writer {
                conn,
                ids: Default::default(),
            }),
            reader: Mutex::new(Reader {
                conn: reader,
                names: Default::default(),
            }),
        })
    }
}

impl Store for SqliteStore {
    fn ingest_from(
        &self,
        agent: &AgentId,
        origin: &Origin,
        events: &[ConnectionEvent],
    ) -> Result<IngestReport, StoreError> {
        write::ingest(&self.writer, agent, origin, Batch::Plain(events))
    }

    fn ingest_keyed(
        &self,
        agent: &AgentId,
        events: &[KeyedEvent],
    ) -> Result<IngestReport, StoreError> {
        write::ingest(&self.writer, agent, &Origin::legacy(), Batch::Keyed(events))
    }

    fn edge_totals(&self, query: &RollupQuery) -> Result<Vec<EdgeTotal>, StoreError> {
        Ok(read::rollups(&self.reader, query, false)?
            .into_iter()
            .map(|hourly| hourly.total)
            .collect())
    }

    fn edge_totals_by_hour(&self, query: &RollupQuery) -> Result<Vec<HourlyEdgeTotal>, StoreError> {
        read::rollups(&self.reader, query, true)
    }

    fn record_dropped_from(
        &self,
        agent: &AgentId,
        instance: &str,
        reason: &str,
        ranges: &[(u64, u64)],
    ) -> Result<(), StoreError> {
        agents::record_dropped_from(&self.writer, agent, instance, reason, ranges)
    }

    fn record_downtime(
        &self,
        agent: &AgentId,
        instance: &str,
        windows: &[(Timestamp, Timestamp)],
    ) -> Result<(), StoreError> {
        agents::record_downtime(&self.writer, agent, instance, windows)
    }

    fn record_refusal(
        &self,
        agent: &AgentId,
        reason: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        agents::record_refusal(&self.writer, agent, reason, at)
    }

    fn refusals(&self) -> Result<Vec<RefusalCount>, StoreError> {
        agents::refusals(&self.reader)
    }

    fn agents(&self) -> Result<Vec<AgentStatus>, StoreError> {
        agents::statuses(&self.reader)
    }

    fn host_addresses(&self) -> Result<Vec<HostAddress>, StoreError> {
        read::host_addresses(&self.reader)
    }

    fn events(&self, query: &EventQuery) -> Result<Vec<ConnectionEvent>, StoreError> {
        read::events(&self.reader, query)
    }

    fn connections(
        &self,
        query: &ConnectionQuery,
        each: &mut dyn FnMut(&str, &ConnectionRecord),
    ) -> Result<(), StoreError> {
        read::connections(&self.reader, query, each)
    }

    fn apply_retention(
        &self,
        retention: &Retention,
        now: Timestamp,
    ) -> Result<RetentionReport, StoreError> {
        retention::apply(&self.writer, retention, now)
    }

    fn put_group(&self, group: &HostGroup) -> Result<(), StoreError> {
        groups::put(&self.writer, group)
    }

    fn groups(&self) -> Result<Vec<HostGroup>, StoreError> {
        groups::all(&self.reader)
    }

    fn remove_group(&self, name: &str) -> Result<bool, StoreError> {
        groups::remove(&self.writer, name)
    }

    fn set_host_label(&self, host: &str, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        groups::set_host_label(&self.writer, host, key, value)
    }

    fn host_labels(&self) -> Result<Vec<HostLabel>, StoreError> {
        groups::host_labels(&self.reader)
    }

    fn add_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        tokens::add(&self.writer, token)
    }

    fn token_by_digest(&self, digest: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        tokens::find(&self.reader, digest)
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        tokens::all(&self.reader)
    }

    fn revoke_token(&self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        tokens::revoke(&self.writer, id, at)
    }

    fn touch_token(&self, digest: &[u8; 32], at: Timestamp) -> Result<(), StoreError> {
        tokens::touch(&self.writer, digest, at)
    }

    fn redeem_enrollment(
        &self,
        enrollment: &[u8; 32],
        agent_token: &TokenRecord,
        at: Timestamp,
    ) -> Result<Result<TokenRecord, TokenRefusal>, StoreError> {
        tokens::redeem(&self.writer, enrollment, agent_token, at)
    }

    fn probe_write(&self, at: Timestamp) -> Result<(), StoreError> {
        tokens::probe_write(&self.writer, at)
    }

    fn remote_names(&self, query: &RollupQuery) -> Result<Vec<NameSighting>, StoreError> {
        read::remote_names(&self.reader, query)
    }

    fn export_events(&self, each: &mut ExportSink<'_>) -> Result<(), StoreError> {
        read::export(&self.reader, each)
    }

    fn record_rule_counters(
        &self,
        host: &str,
        policy: &str,
        version: u32,
        revision: u64,
        at: Timestamp,
        counters: &[RuleCount],
    ) -> Result<(), StoreError> {
        rule_hits::record(&self.writer, host, policy, version, revision, at, counters)
    }

    fn rule_hits(&self, policy: &str, version: Option<u32>) -> Result<Vec<RuleHits>, StoreError> {
        rule_hits::read(&self.reader, policy, version)
    }

    fn put_policy(
        &self,
        name: &str,
        document: &str,
        author: &str,
        comment: &str,
        at: Timestamp,
    ) -> Result<PolicyVersion, StoreError> {
        policies::put_version(&self.writer, name, document, author, comment, at)
    }

    fn policy_versions(&self, name: &str) -> Result<Vec<PolicyVersion>, StoreError> {
        policies::versions(&self.reader, name, None)
    }

    fn policy_version(
        &self,
        name: &str,
        version: u32,
    ) -> Result<Option<PolicyVersion>, StoreError> {
        Ok(policies::versions(&self.reader, name, Some(version))?.pop())
    }

    fn assign_policy(&self, change: &AssignmentChange) -> Result<PolicyAssignment, StoreError> {
        policies::assign(&self.writer, change)
    }

    fn policy_assignments(&self) -> Result<Vec<PolicyAssignment>, StoreError> {
        policies::assignments(&self.reader, None)
    }

    fn assignment_history(
        &self,
        target: &AssignmentTarget,
    ) -> Result<Vec<PolicyAssignment>, StoreError> {
        policies::assignments(&self.reader, Some(target))
    }

    fn assignment_revision(&self) -> Result<u64, StoreError> {
        policies::revision(&self.reader)
    }

    fn put_firewall_report(
        &self,
        host: &str,
        state: &FirewallState,
        reported_at: Timestamp,
        notices: &[FirewallNotice],
    ) -> Result<(), StoreError> {
        policies::put_report(&self.writer, host, state, reported_at, notices)
    }

    fn firewall_states(&self) -> Result<Vec<HostFirewall>, StoreError> {
        policies::states(&self.reader)
    }

    fn firewall_notices(&self, host: Option<&str>) -> Result<Vec<HostNotice>, StoreError> {
        policies::notices(&self.reader, host)
    }

    fn record_drift(&self, sighting: &DriftRecord) -> Result<bool, StoreError> {
        policies::record_drift(&self.writer, sighting)
    }

    fn drift(&self, range: TimeRange) -> Result<Vec<DriftRecord>, StoreError> {
        policies::drift(&self.reader, range)
    }

    fn firewall_hits(&self, query: &FirewallHitQuery) -> Result<Vec<FirewallHitTotal>, StoreError> {
        hits::firewall_hits(&self.reader, query)
    }

    fn fold_rollups(&self, _now: Timestamp) -> Result<FoldReport, StoreError> {
        // The rollups are one row per edge and hour already.
        Ok(FoldReport::default())
    }
}
