//! The backend for fleets: ClickHouse over its HTTP interface, written by
//! any number of stateless collectors at once.
//!
//! ClickHouse has no transactions and no unique keys, so exactly-once cannot
//! come from "check, then insert" as in SQLite: two collectors may store the
//! same batch at the same time, and a collector may die between two inserts
//! of one batch. Instead every row carries a deterministic identity and
//! every table that must not double count is a `ReplacingMergeTree` on that
//! identity, read with `FINAL` (see docs/STORE.md, "Exactly once"):
//! - a raw event is identified by (agent, state, run, sequence number) or by
//!   its content key and hour, so a re-sent event replaces its copy;
//! - a batch's rollup rows and its space row carry a key derived from the
//!   identities of the events they count, so a batch re-sent after a
//!   partial insert writes the same rows again instead of adding to them;
//! - the sequence ranges, written last, are what makes a batch "stored" for
//!   the duplicate count the collector answers with; a batch whose ranges
//!   never arrived is stored again, which replaces whatever got in.
//!
//! The [`Store`] trait is synchronous (SQLite is) and the collector runs
//! tokio; the client is async. The backend owns a small runtime of its own
//! and each call is spawned on it and waited for on a channel: a blocking
//! wait works from plain threads, from `spawn_blocking` and from the CLI
//! alike, where a `block_on` would panic inside another runtime.
//!
//! Where each part is: [`location`] (the `clickhouse://` address),
//! [`schema`] (tables and the migration list), [`rows`] (the typed rows),
//! [`write`] (ingest, a group of batches at a time), [`fold`] (closed
//! hours and days folded), [`read`] (rollups, addresses, raw events),
//! [`agents`] (sequence spaces, drops, downtime, refusals, statuses),
//! [`groups`] (host groups and labels), [`tokens`] (access tokens),
//! [`policies`] (the policy loop's records), [`rule_hits`] (rule
//! counters), [`names`] (remote names, from the raw events), [`hits`]
//! (firewall hits, from the raw events), [`retention`].

mod agents;
mod fold;
mod groups;
mod hits;
mod location;
mod names;
mod policies;
mod read;
mod retention;
mod rows;
mod rule_hits;
mod schema;
mod tokens;
mod write;

use std::future::Future;
use std::sync::{mpsc, Arc};

use connscope_event::{ConnectionEvent, Timestamp};

use connscope_protocol::policy::{FirewallNotice, FirewallState};

use crate::{
    AgentId, AgentStatus, AssignmentChange, AssignmentTarget, ConnectionQuery, ConnectionRecord,
    DriftRecord, EdgeTotal, EventQuery, ExportSink, FirewallHitQuery, FirewallHitTotal, FoldReport,
    HostAddress, HostFirewall, HostGroup, HostLabel, HostNotice, HourlyEdgeTotal, IngestReport,
    KeyedEvent, NameSighting, Origin, PolicyAssignment, PolicyVersion, RefusalCount, Retention,
    RetentionReport, RollupQuery, RuleCount, RuleHits, Store, StoreError, TimeRange, TokenRecord,
    TokenRefusal,
};
pub use location::ClickHouseLocation;

/// A store in a ClickHouse database.
pub struct ClickHouseStore {
    client: clickhouse::Client,
    runtime: Option<tokio::runtime::Runtime>,
    /// To the store's writer (see [`write::writer`]).
    writes: tokio::sync::mpsc::UnboundedSender<write::Pending>,
}

impl ClickHouseStore {
    /// Connects to the database at `location`, creating the database's
    /// tables (or bringing them up to date) on first use.
    pub fn open(location: &ClickHouseLocation) -> Result<ClickHouseStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("connscope-clickhouse")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Open {
                path: location.to_string(),
                reason: format!("cannot start the client's runtime: {e}"),
            })?;
        let client = location.client();
        let (writes, queue) = tokio::sync::mpsc::unbounded_channel();
        runtime.spawn(write::writer(client.clone(), queue));
        let store = ClickHouseStore {
            client,
            runtime: Some(runtime),
            writes,
        };
        let client = store.client.clone();
        let database = location.database.clone();
        store
            .run(async move { schema::bring_up_to_date(&client, &database).await })
            .map_err(|e| StoreError::Open {
                path: location.to_string(),
                reason: e.to_string(),
            })?;
        Ok(store)
    }

    /// Makes `location`'s database a store sharded over `cluster` (see
    /// docs/STORE.md, "Sharding"): a `Distributed` table per table, over the
    /// stores in `shard_database` on each shard, sharded so that every copy
    /// of a row meets on one shard. Opening `location` afterwards uses it.
    pub fn create_distributed(
        location: &ClickHouseLocation,
        cluster: &str,
        shard_database: &str,
    ) -> Result<(), StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let (client, database) = (location.client(), location.database.clone());
        let (cluster, shard_database) = (cluster.to_owned(), shard_database.to_owned());
        let (done, result) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            let created =
                schema::create_distributed(&client, &database, &cluster, &shard_database).await;
            let _ = done.send(created);
        });
        let created = result
            .recv()
            .map_err(|_| StoreError::Backend("creating the tables panicked".into()));
        // Dropping a runtime blocks, which panics inside another runtime.
        runtime.shutdown_background();
        created?
    }

    /// Hands `batch` to the store's writer and waits for its answer.
    fn write(&self, batch: write::Batch) -> Result<IngestReport, StoreError> {
        let (answer, report) = mpsc::sync_channel(1);
        self.writes
            .send(write::Pending { batch, answer })
            .map_err(|_| StoreError::Backend("the ClickHouse writer has stopped".into()))?;
        report
            .recv()
            .map_err(|_| StoreError::Backend("the ClickHouse writer has stopped".into()))?
    }

    /// Runs `work` on the backend's runtime and waits for its result.
    fn run<T, F>(&self, work: F) -> T
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (done, result) = mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().expect("runtime lives until drop");
        runtime.spawn(async move {
            // The receiver waits below; it is gone only if the caller panicked.
            let _ = done.send(work.await);
        });
        result
            .recv()
            .expect("a ClickHouse call panicked on the backend's runtime")
    }
}

impl Drop for ClickHouseStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl From<clickhouse::error::Error> for StoreError {
    fn from(e: clickhouse::error::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

impl Store for ClickHouseStore {
    fn ingest_from(
        &self,
        agent: &AgentId,
        origin: &Origin,
        events: &[ConnectionEvent],
    ) -> Result<IngestReport, StoreError> {
        self.ingest_shared(agent, origin, Arc::new(events.to_vec()))
    }

    fn ingest_shared(
        &self,
        agent: &AgentId,
        origin: &Origin,
        events: Arc<Vec<ConnectionEvent>>,
    ) -> Result<IngestReport, StoreError> {
        self.write(write::Batch::plain(agent, origin, events)?)
    }

    fn ingest_keyed(
        &self,
        agent: &AgentId,
        events: &[KeyedEvent],
    ) -> Result<IngestReport, StoreError> {
        self.write(write::Batch::keyed(agent, events)?)
    }

    fn edge_totals(&self, query: &RollupQuery) -> Result<Vec<EdgeTotal>, StoreError> {
        let (client, query) = (self.client.clone(), query.clone());
        let hourly = self.run(async move { read::rollups(&client, &query, false).await })?;
        Ok(hourly.into_iter().map(|h| h.total).collect())
    }

    fn edge_totals_by_hour(&self, query: &RollupQuery) -> Result<Vec<HourlyEdgeTotal>, StoreError> {
        let (client, query) = (self.client.clone(), query.clone());
        self.run(async move { read::rollups(&client, &query, true).await })
    }

    fn record_dropped_from(
        &self,
        agent: &AgentId,
        instance: &str,
        reason: &str,
        ranges: &[(u64, u64)],
    ) -> Result<(), StoreError> {
        let rows = agents::dropped_rows(agent, instance, reason, ranges)?;
        let client = self.client.clone();
        self.run(async move { agents::record_dropped(&client, rows).await })
    }

    fn record_downtime(
        &self,
        agent: &AgentId,
        instance: &str,
        windows: &[(Timestamp, Timestamp)],
    ) -> Result<(), StoreError> {
        let rows = agents::downtime_rows(agent, instance, windows)?;
        let client = self.client.clone();
        self.run(async move { agents::record_downtime(&client, rows).await })
    }

    fn record_refusal(
        &self,
        agent: &AgentId,
        reason: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let row = rows::Refusal {
            agent: agent.0.clone(),
            reason: reason.to_owned(),
            at: at.as_nanos(),
        };
        let client = self.client.clone();
        self.run(async move { agents::record_refusal(&client, row).await })
    }

    fn refusals(&self) -> Result<Vec<RefusalCount>, StoreError> {
        let client = self.client.clone();
        self.run(async move { agents::refusals(&client).await })
    }

    fn agents(&self) -> Result<Vec<AgentStatus>, StoreError> {
        let client = self.client.clone();
        self.run(async move { agents::statuses(&client).await })
    }

    fn host_addresses(&self) -> Result<Vec<HostAddress>, StoreError> {
        let client = self.client.clone();
        self.run(async move { read::host_addresses(&client).await })
    }

    fn events(&self, query: &EventQuery) -> Result<Vec<ConnectionEvent>, StoreError> {
        let (client, query) = (self.client.clone(), query.clone());
        self.run(async move { read::events(&client, &query).await })
    }

    fn connections(
        &self,
        query: &ConnectionQuery,
        each: &mut dyn FnMut(&str, &ConnectionRecord),
    ) -> Result<(), StoreError> {
        let (client, query) = (self.client.clone(), query.clone());
        // Streamed in chunks: a day can hold millions of connections.
        let (chunks, received) = mpsc::sync_channel(4);
        let runtime = self.runtime.as_ref().expect("runtime lives until drop");
        runtime.spawn(async move {
            if let Err(e) = read::connections(&client, &query, &chunks).await {
                let _ = chunks.send(Err(e));
            }
        });
        for chunk in received {
            for (host, record) in &chunk? {
                each(host, record);
            }
        }
        Ok(())
    }

    fn apply_retention(
        &self,
        retention: &Retention,
        now: Timestamp,
    ) -> Result<RetentionReport, StoreError> {
        let (client, retention) = (self.client.clone(), *retention);
        self.run(async move { retention::apply(&client, &retention, now).await })
    }

    fn put_group(&self, group: &HostGroup) -> Result<(), StoreError> {
        let (client, group) = (self.client.clone(), group.clone());
        self.run(async move { groups::put(&client, &group).await })
    }

    fn groups(&self) -> Result<Vec<HostGroup>, StoreError> {
        let client = self.client.clone();
        self.run(async move { groups::all(&client).await })
    }

    fn remove_group(&self, name: &str) -> Result<bool, StoreError> {
        let (client, name) = (self.client.clone(), name.to_owned());
        self.run(async move { groups::remove(&client, &name).await })
    }

    fn set_host_label(&self, host: &str, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let row = rows::Label {
            host: host.to_owned(),
            key: key.to_owned(),
            value: value.unwrap_or("").to_owned(),
            removed: u8::from(value.is_none()),
            version: groups::version_now(),
        };
        let client = self.client.clone();
        self.run(async move { groups::set_host_label(&client, row).await })
    }

    fn host_labels(&self) -> Result<Vec<HostLabel>, StoreError> {
        let client = self.client.clone();
        self.run(async move { groups::host_labels(&client).await })
    }

    fn add_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let (client, token) = (self.client.clone(), token.clone());
        self.run(async move { tokens::add(&client, &token).await })
    }

    fn token_by_digest(&self, digest: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        let (client, digest) = (self.client.clone(), *digest);
        self.run(async move { tokens::by_digest(&client, &digest).await })
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let client = self.client.clone();
        self.run(async move { tokens::all(&client).await })
    }

    fn revoke_token(&self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        let (client, id) = (self.client.clone(), id.to_owned());
        self.run(async move { tokens::revoke(&client, &id, at).await })
    }

    fn touch_token(&self, digest: &[u8; 32], at: Timestamp) -> Result<(), StoreError> {
        let (client, digest) = (self.client.clone(), *digest);
        self.run(async move { tokens::touch(&client, &digest, at).await })
    }

    fn redeem_enrollment(
        &self,
        enrollment: &[u8; 32],
        agent_token: &TokenRecord,
        at: Timestamp,
    ) -> Result<Result<TokenRecord, TokenRefusal>, StoreError> {
        let (client, enrollment, agent_token) =
            (self.client.clone(), *enrollment, agent_token.clone());
        self.run(async move { tokens::redeem(&client, &enrollment, &agent_token, at).await })
    }

    fn probe_write(&self, at: Timestamp) -> Result<(), StoreError> {
        let client = self.client.clone();
        self.run(async move { tokens::probe_write(&client, at).await })
    }

    fn remote_names(&self, query: &RollupQuery) -> Result<Vec<NameSighting>, StoreError> {
        let (client, query) = (self.client.clone(), query.clone());
        self.run(async move { names::remote_names(&client, &query).await })
    }

    fn export_events(&self, each: &mut ExportSink<'_>) -> Result<(), StoreError> {
        let client = self.client.clone();
        let (batches, received) = mpsc::sync_channel(4);
        let runtime = self.runtime.as_ref().expect("runtime lives until drop");
        runtime.spawn(async move {
            if let Err(e) = read::export(&client, &batches).await {
                let _ = batches.send(Err(e));
            }
        });
        for batch in received {
            let (agent, origin, events) = batch?;
            each(&agent, &origin, &events)?;
        }
        Ok(())
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
        let (client, host, policy, counters) = (
            self.client.clone(),
            host.to_owned(),
            policy.to_owned(),
            counters.to_vec(),
        );
        self.run(async move {
            rule_hits::record(&client, &host, &policy, version, revision, at, &counters).await
        })
    }

    fn rule_hits(&self, policy: &str, version: Option<u32>) -> Result<Vec<RuleHits>, StoreError> {
        let (client, policy) = (self.client.clone(), policy.to_owned());
        self.run(async move { rule_hits::read(&client, &policy, version).await })
    }

    fn put_policy(
        &self,
        name: &str,
        document: &str,
        author: &str,
        comment: &str,
        at: Timestamp,
    ) -> Result<PolicyVersion, StoreError> {
        let client = self.client.clone();
        let (name, document) = (name.to_owned(), document.to_owned());
        let (author, comment) = (author.to_owned(), comment.to_owned());
        self.run(async move {
            policies::put_version(&client, name, document, author, comment, at).await
        })
    }

    fn policy_versions(&self, name: &str) -> Result<Vec<PolicyVersion>, StoreError> {
        let (client, name) = (self.client.clone(), name.to_owned());
        self.run(async move { policies::versions(&client, name, None).await })
    }

    fn policy_version(
        &self,
        name: &str,
        version: u32,
    ) -> Result<Option<PolicyVersion>, StoreError> {
        let (client, name) = (self.client.clone(), name.to_owned());
        Ok(self
            .run(async move { policies::versions(&client, name, Some(version)).await })?
            .pop())
    }

    fn assign_policy(&self, change: &AssignmentChange) -> Result<PolicyAssignment, StoreError> {
        let (client, change) = (self.client.clone(), change.clone());
        self.run(async move { policies::assign(&client, change).await })
    }

    fn policy_assignments(&self) -> Result<Vec<PolicyAssignment>, StoreError> {
        let client = self.client.clone();
        self.run(async move { policies::assignments(&client, None).await })
    }

    fn assignment_history(
        &self,
        target: &AssignmentTarget,
    ) -> Result<Vec<PolicyAssignment>, StoreError> {
        let (client, target) = (self.client.clone(), target.clone());
        self.run(async move { policies::assignments(&client, Some(target)).await })
    }

    fn assignment_revision(&self) -> Result<u64, StoreError> {
        let client = self.client.clone();
        self.run(async move { policies::revision(&client).await })
    }

    fn put_firewall_report(
        &self,
        host: &str,
        state: &FirewallState,
        reported_at: Timestamp,
        notices: &[FirewallNotice],
    ) -> Result<(), StoreError> {
        let client = self.client.clone();
        let (host, state, notices) = (host.to_owned(), state.clone(), notices.to_vec());
        self.run(
            async move { policies::put_report(&client, host, state, reported_at, notices).await },
        )
    }

    fn firewall_states(&self) -> Result<Vec<HostFirewall>, StoreError> {
        let client = self.client.clone();
        self.run(async move { policies::states(&client).await })
    }

    fn firewall_notices(&self, host: Option<&str>) -> Result<Vec<HostNotice>, StoreError> {
        let (client, host) = (self.client.clone(), host.map(str::to_owned));
        self.run(async move { policies::notices(&client, host).await })
    }

    fn record_drift(&self, sighting: &DriftRecord) -> Result<bool, StoreError> {
        let (client, sighting) = (self.client.clone(), sighting.clone());
        self.run(async move { policies::record_drift(&client, sighting).await })
    }

    fn drift(&self, range: TimeRange) -> Result<Vec<DriftRecord>, StoreError> {
        let client = self.client.clone();
        self.run(async move { policies::drift(&client, range).await })
    }

    fn firewall_hits(&self, query: &FirewallHitQuery) -> Result<Vec<FirewallHitTotal>, StoreError> {
        let (client, query) = (self.client.clone(), query.clone());
        self.run(async move { hits::firewall_hits(&client, &query).await })
    }

    fn fold_rollups(&self, now: Timestamp) -> Result<FoldReport, StoreError> {
        let client = self.client.clone();
        self.run(async move { fold::fold(&client, now).await })
    }
}
