//! What `GET /api/v1/policies/status`, `GET /api/v1/drift`, `policy status`
//! and `report drift` show: one shape each, built here so the API and the CLI
//! say the same (docs/API.md has the JSON).

use connscope_event::Timestamp;
use std::collections::BTreeMap;

use connscope_protocol::policy::{DirectionStage, FirewallState, StageMode, Staging};
use connscope_query::report::HostPolicyBrief;
use connscope_store::{DriftRecord, Store};
use serde::Serialize;

use crate::assign::{AssignError, Assignments};

/// One host's policy, as assigned and as its agent last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPolicyStatus {
    pub host: String,
    pub policy: Option<String>,
    pub version: Option<u32>,
    /// The assignment's revision (the agent loads it when its own is lower).
    pub revision: Option<u64>,
    pub staging: Option<Staging>,
    /// Where the assignment comes from: `group NAME` or `host NAME`.
    pub assigned_by: Option<String>,
    /// Assigned groups the host is also in, which lose to `assigned_by`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadowed: Vec<String>,
    /// `loaded`, `none`, `broken-glass`, `failed`, or `unknown` (never reported).
    pub state: &'static str,
    pub reason: Option<String>,
    /// RFC 3339.
    pub reported_at: Option<String>,
    pub loaded_revision: Option<u64>,
}

/// The body of `GET /api/v1/policies/status`.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyStatus {
    pub hosts: Vec<HostPolicyStatus>,
}

/// Every host the store knows with its assignment and reported state,
/// ordered by host.
pub fn policy_status(store: &dyn Store, now: Timestamp) -> Result<PolicyStatus, AssignError> {
    let assignments = Assignments::load(store, now)?;
    let mut reports: std::collections::BTreeMap<_, _> = store
        .firewall_states()?
        .into_iter()
        .map(|s| (s.host.clone(), s))
        .collect();
    let hosts = assignments
        .all_hosts(store)?
        .into_iter()
        .map(|(host, assigned)| {
            let report = reports.remove(&host);
            let (state, reason, loaded_revision) = match report.as_ref().map(|r| &r.state) {
                None => ("unknown", None, None),
                Some(FirewallState::Loaded { revision, .. }) => ("loaded", None, Some(*revision)),
                Some(FirewallState::None) => ("none", None, None),
                Some(FirewallState::BrokenGlass) => ("broken-glass", None, None),
                Some(FirewallState::Failed { reason }) => ("failed", Some(reason.clone()), None),
            };
            let current = assigned.as_ref().and_then(|a| {
                a.assignment
                    .assigned
                    .clone()
                    .map(|v| (v, a.assignment.revision, a.assignment.target.to_string()))
            });
            let (policy, version, revision, staging, assigned_by) = match current {
                Some((v, revision, by)) => (
                    Some(v.policy),
                    Some(v.version),
                    Some(revision),
                    Some(v.staging),
                    Some(by),
                ),
                None => (None, None, None, None, None),
            };
            HostPolicyStatus {
                policy,
                version,
                revision,
                staging,
                assigned_by,
                shadowed: assigned.map(|a| a.shadowed).unwrap_or_default(),
                state,
                reason,
                reported_at: report.map(|r| r.reported_at.to_string()),
                loaded_revision,
                host,
            }
        })
        .collect();
    Ok(PolicyStatus { hosts })
}

/// One drift edge as the API and `report drift --format json` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftEntry {
    pub host: String,
    /// `incoming` or `outgoing`.
    pub direction: &'static str,
    pub protocol: &'static str,
    pub port: u16,
    pub local: String,
    pub remote: String,
    pub remote_name: Option<String>,
    pub executable: Option<String>,
    pub user: Option<String>,
    pub policy: String,
    pub version: u32,
    pub mode: StageMode,
    pub first_seen: String,
    pub last_seen: String,
    pub connections: u64,
}

impl From<DriftRecord> for DriftEntry {
    fn from(d: DriftRecord) -> DriftEntry {
        DriftEntry {
            host: d.host,
            direction: d.direction.as_str(),
            protocol: d.protocol.as_str(),
            port: d.port,
            local: d.local.to_string(),
            remote: d.remote.to_string(),
            remote_name: d.remote_name,
            executable: d.executable,
            user: d.user,
            policy: d.policy,
            version: d.version,
            mode: d.mode,
            first_seen: d.first_seen.to_string(),
            last_seen: d.last_seen.to_string(),
            connections: d.connections,
        }
    }
}

/// The body of `GET /api/v1/drift`.
#[derive(Debug, Clone, Serialize)]
pub struct DriftList {
    pub drift: Vec<DriftEntry>,
}

fn mode_name(mode: StageMode) -> &'static str {
    match mode {
        StageMode::Audit => "audit",
        StageMode::Enforce => "enforce",
    }
}

/// `in audit, out enforce (audit tcp/22)`: each direction's mode and the
/// ports that run in the other one.
pub fn staging_text(staging: &Staging) -> String {
    let side = |name: &str, stage: &DirectionStage| {
        let mut text = format!("{name} {}", mode_name(stage.mode));
        if !stage.except_ports.is_empty() {
            let ports: Vec<String> = stage
                .except_ports
                .iter()
                .map(|p| format!("{}/{}", p.protocol, p.port))
                .collect();
            let other = match stage.mode {
                StageMode::Audit => StageMode::Enforce,
                StageMode::Enforce => StageMode::Audit,
            };
            text.push_str(&format!(" ({} {})", mode_name(other), ports.join(" ")));
        }
        text
    };
    format!(
        "{}, {}",
        side("in", &staging.inbound),
        side("out", &staging.outbound)
    )
}

/// `audit` or `enforce` when the whole policy runs so, else [`staging_text`].
pub fn mode_text(staging: &Staging) -> String {
    let (i, o) = (&staging.inbound, &staging.outbound);
    if i.mode == o.mode && i.except_ports.is_empty() && o.except_ports.is_empty() {
        mode_name(i.mode).to_owned()
    } else {
        staging_text(staging)
    }
}

/// What `report hosts` shows per host: the hosts with a policy assigned or
/// a firewall report.
pub fn host_briefs(status: &PolicyStatus) -> BTreeMap<String, HostPolicyBrief> {
    status
        .hosts
        .iter()
        .filter(|h| h.policy.is_some() || h.state != "unknown")
        .map(|h| {
            let brief = HostPolicyBrief {
                policy: h
                    .policy
                    .as_ref()
                    .zip(h.version)
                    .map(|(p, v)| format!("{p}@{v}")),
                mode: h.staging.as_ref().map(mode_text),
                state: h.state.to_owned(),
            };
            (h.host.clone(), brief)
        })
        .collect()
}
