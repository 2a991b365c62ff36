//! `policy check`: the history of the policy's hosts replayed against it with
//! the what-if checker, as `firewall backtest` replays a draft plan.
//!
//! The policy stands in for a planner ([`FleetPlanner`]) that gives each
//! member the plan [`Policy::plan_for`] makes, so the replay, the rendering to
//! nftables and the figures are the backtest's own. A blocked edge is "not
//! seen" when no host used its service in the window the policy was drafted
//! from: the new traffic the draft could not have known.

use std::collections::BTreeMap;

use connscope_firewall::backtest::{backtest, BacktestError, PlannerResult};
use connscope_firewall::from_store::{fleet_flows, fleet_groups};
use connscope_firewall::{FleetFlows, FleetPlanner, GroupMembers, Plan};
use connscope_store::{Store, TimeRange};

use crate::document::{Policy, Target};

/// Why the history could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Backtest(#[from] BacktestError),
    #[error("no group {0:?} in the store (see `connscope groups list`)")]
    NoGroup(String),
}

struct PolicyPlanner<'a> {
    policy: &'a Policy,
    hosts: Vec<String>,
}

impl FleetPlanner for PolicyPlanner<'_> {
    fn name(&self) -> String {
        format!("policy {}", self.policy.name)
    }

    fn plan_fleet(&self, _flows: &FleetFlows, _groups: &[GroupMembers]) -> BTreeMap<String, Plan> {
        self.hosts
            .iter()
            .map(|host| (host.clone(), self.policy.plan_for(host)))
            .collect()
    }
}

/// The hosts the policy is for: its host, or its group's members seen in `range`.
pub(crate) fn target_hosts(
    store: &dyn Store,
    policy: &Policy,
    range: TimeRange,
) -> Result<Vec<String>, CheckError> {
    Ok(match &policy.target {
        Target::Host(host) => vec![host.clone()],
        Target::Group(name) => fleet_groups(store, range)
            .map_err(BacktestError::from)?
            .into_iter()
            .find(|g| g.name == *name)
            .ok_or_else(|| CheckError::NoGroup(name.clone()))?
            .hosts
            .into_iter()
            .collect(),
    })
}

/// Replays what the policy's hosts did in `range` against it: per host and
/// in total, the connections and edges it would block beside what it allows.
pub fn check(
    store: &dyn Store,
    policy: &Policy,
    range: TimeRange,
) -> Result<PlannerResult, CheckError> {
    let hosts = target_hosts(store, policy, range)?;
    let flows_of = |range| -> Result<FleetFlows, BacktestError> {
        Ok(fleet_flows(store, range)?
            .into_iter()
            .filter(|(host, _)| hosts.contains(host))
            .map(|(host, stored)| (host, stored.flows))
            .collect())
    };
    let test = flows_of(range)?;
    let drafted_from = match &policy.drafted {
        Some(d) => flows_of(TimeRange {
            from: d.from,
            to: d.to,
        })?,
        None => test.clone(),
    };
    let planner = PolicyPlanner { policy, hosts };
    let mut result = backtest(&[&planner], &drafted_from, &test, &[])?;
    Ok(result.planners.remove(0))
}
