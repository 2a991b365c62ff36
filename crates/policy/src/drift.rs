//! Drift: a connection on an edge that the policy assigned to its host does
//! not allow, whether that policy audits or enforces there. The collector
//! hands every stored batch to a [`DriftDetector`]; what it returns is one
//! [`DriftRecord`] per edge of the batch, which the store keeps once
//! ([`Store::record_drift`]) and the collector alerts on when new.
//!
//! The check is the what-if checker's ([`connscope_firewall::check`]) on the
//! host's plan of the policy rendered and read back, as `policy check` and
//! the backtest do, so drift, the backtest figure and the map agree on what
//! a policy allows. Rendered rulesets are cached per (policy, version,
//! host): a version's document never changes. Which assignment a host runs
//! is cached too and dropped when the store's assignment revision moves,
//! which is read at most every [`REVISION_POLL`], and when a host's cache
//! entry is older than [`HOST_REFRESH`] (group membership follows addresses).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connscope_event::{ConnectionEvent, Direction, EventKind, Protocol, Timestamp};
use connscope_firewall::check::check_flow;
use connscope_firewall::nft::{read_ruleset, Ruleset, RulesetError};
use connscope_firewall::{FlowDirection, ObservedFlow, Outcome};
use connscope_protocol::policy::Staging;
use connscope_store::{DriftRecord, Store};

use crate::assign::{AssignError, Assignments};
use crate::document::{Policy, PolicyError};

/// How often the store's assignment revision is read at most.
pub const REVISION_POLL: Duration = Duration::from_secs(2);
/// How long a host's resolved assignment is kept without a revision change.
pub const HOST_REFRESH: Duration = Duration::from_secs(60);

/// Why a batch could not be checked for drift.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error(transparent)]
    Assign(#[from] AssignError),
    #[error(transparent)]
    Store(#[from] connscope_store::StoreError),
    #[error("policy {name} version {version} is assigned but not in the store")]
    MissingVersion { name: String, version: u32 },
    #[error("policy {name} version {version} in the store: {source}")]
    BadDocument {
        name: String,
        version: u32,
        source: PolicyError,
    },
    #[error(
        "the ruleset of policy {name} version {version} for {host} does not read back: {source}"
    )]
    Render {
        name: String,
        version: u32,
        host: String,
        source: RulesetError,
    },
}

/// What a host runs, as the detector needs it.
#[derive(Clone)]
struct HostPolicy {
    name: String,
    version: u32,
    staging: Staging,
    ruleset: Arc<Ruleset>,
}

struct HostEntry {
    policy: Option<HostPolicy>,
    resolved: Instant,
}

/// Finds drift in batches of events; one per collector, kept across batches.
#[derive(Default)]
pub struct DriftDetector {
    revision: Option<u64>,
    revision_read: Option<Instant>,
    hosts: HashMap<String, HostEntry>,
    rulesets: HashMap<(String, u32, String), Arc<Ruleset>>,
}

/// An edge as drift counts it: host, direction, protocol, service port, peer.
type EdgeKey = (String, Direction, Protocol, u16, IpAddr);

impl DriftDetector {
    pub fn new() -> DriftDetector {
        DriftDetector::default()
    }

    /// The drift in `events` (a stored batch): one record per edge not
    /// allowed by its host's policy, carrying the batch's connections on it;
    /// hosts without an assignment have none. Only `connect` events that
    /// succeeded and know their direction count: a failed attempt made no edge.
    pub fn check(
        &mut self,
        store: &dyn Store,
        events: &[ConnectionEvent],
    ) -> Result<Vec<DriftRecord>, DriftError> {
        self.refresh(store)?;
        let mut edges: BTreeMap<EdgeKey, DriftRecord> = BTreeMap::new();
        for event in events {
            if event.kind != EventKind::Connect || event.failure.is_some() {
                continue;
            }
            let Some(policy) = self.policy_of(store, &event.host)? else {
                continue;
            };
            let (direction, port) = match event.direction {
                Direction::Incoming => (FlowDirection::Inbound, event.local.port()),
                Direction::Outgoing => (FlowDirection::Outbound, event.remote.port()),
                // No side is known to be the server: no edge to judge.
                Direction::Unknown => continue,
            };
            let key = (
                event.host.clone(),
                event.direction,
                event.protocol,
                port,
                event.remote.ip(),
            );
            if let Some(record) = edges.get_mut(&key) {
                record.first_seen = record.first_seen.min(event.timestamp);
                record.last_seen = record.last_seen.max(event.timestamp);
                record.connections += 1;
                continue;
            }
            let flow = ObservedFlow {
                direction,
                protocol: event.protocol,
                local: event.local.ip(),
                remote: event.remote.ip(),
                service_port: port,
                connections: 1,
                first_seen: event.timestamp,
                last_seen: event.timestamp,
                processes: Vec::new(),
                users: Vec::new(),
            };
            if check_flow(&policy.ruleset, &flow).outcome == Outcome::Allowed {
                continue;
            }
            let stage = match direction {
                FlowDirection::Inbound => &policy.staging.inbound,
                FlowDirection::Outbound => &policy.staging.outbound,
            };
            edges.insert(
                key,
                DriftRecord {
                    host: event.host.clone(),
                    direction: event.direction,
                    protocol: event.protocol,
                    port,
                    remote: event.remote.ip(),
                    local: event.local.ip(),
                    remote_name: event.remote_name.as_ref().map(|n| n.name.clone()),
                    executable: event
                        .process
                        .as_ref()
                        .and_then(|p| p.executable.clone().or_else(|| p.comm.clone())),
                    user: event
                        .user_name
                        .clone()
                        .or_else(|| event.uid.map(|uid| uid.to_string())),
                    policy: policy.name.clone(),
                    version: policy.version,
                    mode: stage.mode_for(event.protocol, port),
                    first_seen: event.timestamp,
                    last_seen: event.timestamp,
                    connections: 1,
                },
            );
        }
        Ok(edges.into_values().collect())
    }

    /// Forgets the hosts' assignments when the store's revision moved.
    fn refresh(&mut self, store: &dyn Store) -> Result<(), DriftError> {
        if self
            .revision_read
            .is_some_and(|read| read.elapsed() < REVISION_POLL)
        {
            return Ok(());
        }
        let revision = store.assignment_revision()?;
        self.revision_read = Some(Instant::now());
        if self.revision != Some(revision) {
            self.revision = Some(revision);
            self.hosts.clear();
        }
        Ok(())
    }

    fn policy_of(
        &mut self,
        store: &dyn Store,
        host: &str,
    ) -> Result<Option<HostPolicy>, DriftError> {
        if self.revision == Some(0) {
            return Ok(None);
        }
        if let Some(entry) = self.hosts.get(host) {
            if entry.resolved.elapsed() < HOST_REFRESH {
                return Ok(entry.policy.clone());
            }
        }
        let policy = self.resolve(store, host)?;
        self.hosts.insert(
            host.to_owned(),
            HostEntry {
                policy: policy.clone(),
                resolved: Instant::now(),
            },
        );
        Ok(policy)
    }

    fn resolve(&mut self, store: &dyn Store, host: &str) -> Result<Option<HostPolicy>, DriftError> {
        let assignments = Assignments::load(store, Timestamp::now())?;
        let Some(resolved) = assignments.for_host(store, host)? else {
            return Ok(None);
        };
        let Some(assigned) = resolved.assignment.assigned else {
            return Ok(None);
        };
        let key = (assigned.policy.clone(), assigned.version, host.to_owned());
        let ruleset = match self.rulesets.get(&key) {
            Some(ruleset) => ruleset.clone(),
            None => {
                let ruleset = Arc::new(host_ruleset(
                    store,
                    &assigned.policy,
                    assigned.version,
                    host,
                )?);
                self.rulesets.insert(key, ruleset.clone());
                ruleset
            }
        };
        Ok(Some(HostPolicy {
            name: assigned.policy,
            version: assigned.version,
            staging: assigned.staging,
            ruleset,
        }))
    }
}

/// `host`'s plan of the stored policy version, rendered and read back.
fn host_ruleset(
    store: &dyn Store,
    name: &str,
    version: u32,
    host: &str,
) -> Result<Ruleset, DriftError> {
    let stored =
        store
            .policy_version(name, version)?
            .ok_or_else(|| DriftError::MissingVersion {
                name: name.to_owned(),
                version,
            })?;
    let policy = Policy::parse(&stored.document).map_err(|source| DriftError::BadDocument {
        name: name.to_owned(),
        version,
        source,
    })?;
    let text = connscope_firewall::render::nft(&policy.plan_for(host));
    read_ruleset(&format!("{name}@{version}:{host}"), &text).map_err(|source| DriftError::Render {
        name: name.to_owned(),
        version,
        host: host.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::test_support::EventBuilder;
    use connscope_protocol::policy::{DirectionStage, StageMode, StagedPort};
    use connscope_store::{
        AssignedVersion, AssignmentChange, AssignmentTarget, GroupKind, HostGroup, SqliteStore,
    };

    const POLICY: &str = r#"format = 1
name = "ws"
target = { group = "ws" }

[[outbound]]
protocol = "tcp"
ports = [443]
peers = ["10.9.0.0/16"]
"#;

    fn connect(local: &str, remote: &str, secs: i64) -> ConnectionEvent {
        EventBuilder::connect(local, remote)
            .host("ws-01")
            .at_nanos(1_800_000_000_000_000_000 + secs * 1_000_000_000)
            .process(7, "/usr/bin/rsync")
            .user("backup")
            .build()
    }

    #[test]
    fn an_edge_the_policy_does_not_allow_is_one_record_per_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
        let mut detector = DriftDetector::new();
        let batch = [
            connect("10.1.0.5:40000", "10.9.0.1:443", 1),
            connect("10.1.0.5:40001", "10.7.0.2:873", 2),
            connect("10.1.0.5:40002", "10.7.0.2:873", 5),
        ];
        // Nothing assigned: no drift, whatever the traffic.
        assert!(detector.check(&store, &batch).unwrap().is_empty());

        store
            .put_group(&HostGroup {
                name: "ws".into(),
                kind: GroupKind::Names,
                patterns: vec!["ws-*".into()],
                labels: vec![],
            })
            .unwrap();
        let v1 = store
            .put_policy("ws", POLICY, "ann", "", Timestamp::from_nanos(1))
            .unwrap();
        let rsync = StagedPort {
            protocol: Protocol::Tcp,
            port: 873,
        };
        store
            .assign_policy(&AssignmentChange {
                target: AssignmentTarget::Group("ws".into()),
                assigned: Some(AssignedVersion {
                    policy: v1.name,
                    version: v1.version,
                    staging: Staging {
                        inbound: DirectionStage::default(),
                        outbound: DirectionStage {
                            mode: StageMode::Audit,
                            except_ports: vec![rsync],
                        },
                    },
                }),
                at: Timestamp::from_nanos(2),
                by: "ann".into(),
            })
            .unwrap();
        // A fresh detector sees the assignment at once (the old one within
        // REVISION_POLL).
        let mut detector = DriftDetector::new();
        let drift = detector.check(&store, &batch).unwrap();
        assert_eq!(drift.len(), 1, "{drift:?}");
        let edge = &drift[0];
        assert_eq!(
            (edge.port, edge.remote.to_string(), edge.connections),
            (873, "10.7.0.2".to_string(), 2)
        );
        assert_eq!(edge.executable.as_deref(), Some("/usr/bin/rsync"));
        assert_eq!(edge.user.as_deref(), Some("backup"));
        assert_eq!((edge.policy.as_str(), edge.version), ("ws", 1));
        assert_eq!(edge.mode, StageMode::Enforce, "port 873 is enforced");
        assert_eq!(
            edge.last_seen.as_nanos() - edge.first_seen.as_nanos(),
            3_000_000_000
        );
        // Another host, not in the group: nothing.
        let mut other = batch[1].clone();
        other.host = "db-01".into();
        assert!(detector.check(&store, &[other]).unwrap().is_empty());
    }
}
