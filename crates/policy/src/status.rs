//! What `GET /api/v1/policies/status`, `GET /api/v1/drift`, `policy status`
//! and `report drift` show: one shape each, built here so the API and the CLI
//! say the same (docs/API.md has the JSON).

use connscope_event::Timestamp;
use std::collections::BTreeMap;

use connscope_protocol::policy::{DirectionStage, FirewallState, StageMode, Staging};
use connscope_query::report::HostPolicyBrief;
use connscope_store::{AssignmentTarget, DriftRecord, PolicyAssignment, Store};
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
    /// RFC 3339: when the host's current policy version and staging were put
    /// in place (see [`staged_since`]); how long it has audited.
    pub staged_since: Option<String>,
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
    let mut histories = BTreeMap::new();
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
            let current = match assigned.as_ref() {
                Some(a) => match &a.assignment.assigned {
                    Some(v) => {
                        let since = staged_since(store, &mut histories, &a.assignment)?;
                        Some((
                            v.clone(),
                            a.assignment.revision,
                            a.assignment.target.to_string(),
                            since,
                        ))
                    }
                    None => None,
                },
                None => None,
            };
            let (policy, version, revision, staging, staged_since, assigned_by) = match current {
                Some((v, revision, by, since)) => (
                    Some(v.policy),
                    Some(v.version),
                    Some(revision),
                    Some(v.staging),
                    Some(since.to_string()),
                    Some(by),
                ),
                None => (None, None, None, None, None, None),
            };
            Ok(HostPolicyStatus {
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
                staged_since,
            })
        })
        .collect::<Result<_, AssignError>>()?;
    Ok(PolicyStatus { hosts })
}

/// When `current` (a target's latest change) was put in place as it is:
/// the time of the earliest change in the unbroken run of the target's
/// latest changes that assign the same policy, version and staging. A new
/// mode restarts the audit period, and so does a new version (its rules
/// were never audited); re-assigning the same thing does not. Each
/// target's history is read once per status (`histories`).
fn staged_since(
    store: &dyn Store,
    histories: &mut BTreeMap<AssignmentTarget, Vec<PolicyAssignment>>,
    current: &PolicyAssignment,
) -> Result<Timestamp, AssignError> {
    if !histories.contains_key(&current.target) {
        let history = store.assignment_history(&current.target)?;
        histories.insert(current.target.clone(), history);
    }
    Ok(run_start(&histories[&current.target], current))
}

/// The start of `current`'s run in `history` (oldest first).
fn run_start(history: &[PolicyAssignment], current: &PolicyAssignment) -> Timestamp {
    history
        .iter()
        .filter(|c| c.revision <= current.revision)
        .rev()
        .take_while(|c| c.assigned == current.assigned)
        .last()
        .map_or(current.at, |c| c.at)
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

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_store::AssignedVersion;

    fn change(revision: u64, day: i64, version: u32, audit_out: bool) -> PolicyAssignment {
        let mut staging = Staging::default();
        staging.inbound.mode = StageMode::Enforce;
        staging.outbound.mode = if audit_out {
            StageMode::Audit
        } else {
            StageMode::Enforce
        };
        PolicyAssignment {
            target: AssignmentTarget::Group("workstations".into()),
            assigned: Some(AssignedVersion {
                policy: "workstations".into(),
                version,
                staging,
            }),
            revision,
            at: Timestamp::from_nanos(day * 86_400_000_000_000),
            by: "admin".into(),
        }
    }

    #[test]
    fn the_staging_starts_at_the_change_that_put_mode_and_version_in_place() {
        let history = vec![
            change(1, 1, 1, true),
            change(2, 3, 2, true),
            change(4, 5, 2, false),
            change(6, 8, 2, true),
            change(9, 9, 2, true),
        ];
        let start =
            |i: usize| run_start(&history[..=i], &history[i]).as_nanos() / 86_400_000_000_000;
        assert_eq!(start(0), 1, "the first assignment");
        assert_eq!(start(1), 3, "a new version restarts the audit");
        assert_eq!(
            start(2),
            5,
            "enforcing the outbound direction is a new mode"
        );
        assert_eq!(start(3), 8, "back to audit: audited again from then");
        assert_eq!(start(4), 8, "the same assignment again changes nothing");
        let withdrawn = PolicyAssignment {
            assigned: None,
            ..change(10, 10, 2, true)
        };
        let after = change(11, 11, 2, true);
        let history = [history, vec![withdrawn, after.clone()]].concat();
        assert_eq!(
            run_start(&history, &after).as_nanos() / 86_400_000_000_000,
            11,
            "a withdrawal breaks the run"
        );
        assert_eq!(
            run_start(&[], &after),
            after.at,
            "no history: the change itself"
        );
    }
}
