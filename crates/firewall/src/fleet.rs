//! Planning many hosts at once.
//!
//! A host's plan need not be learned from its own history alone: what the
//! other members of its group did is evidence of what it will do tomorrow
//! (a workstation switched off while the others were learned still needs the
//! file server). A [`FleetPlanner`] therefore sees every host's flows and the
//! host groups, and answers a plan per host. The planners differ in how far
//! they generalise; a backtest compares them on the same history.

use std::collections::{BTreeMap, BTreeSet};

use crate::flow::ObservedFlow;
use crate::net::Prefix;
use crate::plan::{plan, Plan, PlanOptions};

/// Every host's observed flows, by host name.
pub type FleetFlows = BTreeMap<String, Vec<ObservedFlow>>;

/// A host group as planners see it: its name and its member hosts, resolved
/// from the group's definition (name pattern, address range, list) by the
/// caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupMembers {
    pub name: String,
    pub hosts: BTreeSet<String>,
    /// Address ranges the user declared as the group's (an address group's
    /// CIDRs): its address space whether or not a member was seen there, so
    /// a member the history never showed is still one of the group.
    pub declared: Vec<Prefix>,
}

/// Learns one plan per host from the fleet's history.
pub trait FleetPlanner {
    /// How it generalises, as reports name it (`exact`, `group`, ...).
    fn name(&self) -> String;

    /// A plan for every host of `flows`.
    fn plan_fleet(&self, flows: &FleetFlows, groups: &[GroupMembers]) -> BTreeMap<String, Plan>;

    /// Whether outbound destinations the hosts learned names for are to be
    /// allowed by name (the `by_name` wrapper); whoever holds the names
    /// plans so, as a backtest does.
    fn by_name(&self) -> bool {
        false
    }
}

/// Each host allowed exactly what it was seen doing: the strictest plans.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExactPlanner {
    pub options: PlanOptions,
}

impl FleetPlanner for ExactPlanner {
    fn name(&self) -> String {
        "exact".to_owned()
    }

    fn plan_fleet(&self, flows: &FleetFlows, _groups: &[GroupMembers]) -> BTreeMap<String, Plan> {
        flows
            .iter()
            .map(|(host, flows)| (host.clone(), plan(host, flows, self.options)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowDirection;
    use crate::test_support::FlowBuilder;

    #[test]
    fn the_exact_planner_plans_each_host_from_its_own_flows() {
        let flows: FleetFlows = [
            (
                "a".to_owned(),
                vec![
                    FlowBuilder::new(FlowDirection::Outbound, "10.0.0.1", "10.0.0.9", 445).build(),
                ],
            ),
            (
                "b".to_owned(),
                vec![FlowBuilder::new(FlowDirection::Inbound, "10.0.0.9", "10.0.0.1", 22).build()],
            ),
        ]
        .into();
        let plans = ExactPlanner::default().plan_fleet(&flows, &[]);
        assert_eq!(plans.len(), 2);
        for (host, plan) in &plans {
            assert_eq!(
                plan,
                &crate::plan(host, &flows[host], PlanOptions::default())
            );
        }
    }
}
