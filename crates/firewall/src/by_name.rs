//! Outbound rules by name (`firewall plan --outbound by-name`), and what
//! they allow when checked against history.
//!
//! A CDN or cloud address changes within days; the name a host asked for
//! does not. So for outbound flows to an address the host itself learned a
//! name for (a DNS answer it received, or the TLS server name it sent:
//! [`connscope_query::naming`]), the plan allows the name: an nft set per
//! name and family (`connscope_names::name_set`, the same mapping the agent
//! fills the sets with, `connscope agent --nft-name-sets`), empty when the
//! ruleset is loaded, `flags timeout` so each answer's addresses expire with
//! it. Addresses without a name stay literal rules.
//!
//! Checking history against such a ruleset asks what the set held when each
//! connection was made. The store does not keep the sets, but it keeps the
//! named connections: an address was in a name's set at a time if the host
//! made a connection named so to it within the name's lifetime
//! ([`connscope_query::naming::NAME_LIFETIME_NANOS`]). A flow (an edge over a
//! range) is checked hour by hour: its address is in the set when every hour
//! of its connections is so covered, partly (an unknown, so *maybe blocked*)
//! when only some are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use connscope_event::{Family, Protocol, Timestamp};
use connscope_names::name_set;
use connscope_query::naming::RemoteNames;

use crate::check::{check_flow, FlowVerdict};
use crate::fleet::{FleetFlows, FleetPlanner, GroupMembers};
use crate::flow::{FlowDirection, ObservedFlow};
use crate::net::Prefix;
use crate::nft::{Ruleset, Value};
use crate::plan::{plan, Evidence, NameRule, Plan, PlanOptions};

/// Splits `host`'s flows into those allowed by name and the rest: an
/// outbound flow seen at least `options.min_count` times, to an address
/// `host` learned a name for in the range, is allowed by that name (the name
/// it used most for the address); everything else is left for the address
/// planners. Rules of one name and protocol share their ports.
pub fn split_by_name(
    host: &str,
    flows: &[ObservedFlow],
    names: &RemoteNames,
    options: PlanOptions,
) -> (Vec<ObservedFlow>, Vec<NameRule>) {
    let mut literal = Vec::new();
    // (name, protocol) -> (ports, addresses, evidence)
    type Seen = (BTreeSet<u16>, BTreeSet<IpAddr>, Evidence);
    let mut by_name: BTreeMap<(String, Protocol), Seen> = BTreeMap::new();
    for flow in flows {
        let normal = flow.normalized();
        let named = (normal.direction == FlowDirection::Outbound
            && !normal.is_loopback()
            && normal.connections >= options.min_count)
            .then(|| names.name_of(host, normal.remote))
            .flatten();
        let Some(name) = named else {
            literal.push(flow.clone());
            continue;
        };
        let evidence = Evidence::of(&normal);
        match by_name.get_mut(&(name.to_owned(), normal.protocol)) {
            Some((ports, addresses, merged)) => {
                ports.insert(normal.service_port);
                addresses.insert(normal.remote);
                merged.merge(&evidence);
            }
            None => {
                by_name.insert(
                    (name.to_owned(), normal.protocol),
                    (
                        BTreeSet::from([normal.service_port]),
                        BTreeSet::from([normal.remote]),
                        evidence,
                    ),
                );
            }
        }
    }
    let rules = by_name
        .into_iter()
        .map(
            |((name, protocol), (ports, addresses, evidence))| NameRule {
                name,
                protocol,
                ports: ports.into_iter().collect(),
                addresses_seen: addresses.into_iter().collect(),
                evidence,
            },
        )
        .collect();
    (literal, rules)
}

/// `planner`'s plans for the fleet, with each host's named outbound flows
/// allowed by name ([`split_by_name`]) instead of by address: the planner
/// learns from the literal flows only, so it never widens a named address
/// into a subnet.
pub fn plan_fleet_by_name(
    planner: &dyn FleetPlanner,
    fleet: &FleetFlows,
    groups: &[GroupMembers],
    names: &RemoteNames,
    options: PlanOptions,
) -> BTreeMap<String, Plan> {
    let mut named: BTreeMap<String, Vec<NameRule>> = BTreeMap::new();
    let literal: FleetFlows = fleet
        .iter()
        .map(|(host, flows)| {
            let (literal, rules) = split_by_name(host, flows, names, options);
            named.insert(host.clone(), rules);
            (host.clone(), literal)
        })
        .collect();
    let mut plans = planner.plan_fleet(&literal, groups);
    for (host, rules) in named {
        plans
            .entry(host.clone())
            .or_insert_with(|| plan(&host, &[], options))
            .named_rules = rules;
    }
    plans
}

/// A planner whose plans allow named outbound destinations by name: what a
/// backtest runs as `exact+by-name` (`subnet+by-name`, ...). Its own
/// `plan_fleet` plans as `inner`; the names are added by whoever holds
/// them, through [`plan_fleet_by_name`].
pub struct ByName {
    pub inner: Box<dyn FleetPlanner + Send + Sync>,
}

impl FleetPlanner for ByName {
    fn name(&self) -> String {
        format!("{}+by-name", self.inner.name())
    }

    fn plan_fleet(&self, flows: &FleetFlows, groups: &[GroupMembers]) -> BTreeMap<String, Plan> {
        self.inner.plan_fleet(flows, groups)
    }

    fn by_name(&self) -> bool {
        true
    }
}

/// Whether a name's set held a flow's remote address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// In every hour the flow had connections.
    Always,
    /// In some of them only.
    Partly,
}

/// Per flow (by its host's view: direction, local, remote, port, protocol),
/// the name sets that held its remote address, as the store's named
/// connections say (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct NameSetMembers {
    by_flow: HashMap<FlowKey, Vec<(String, Held)>>,
}

type FlowKey = (IpAddr, IpAddr, u16, Protocol);

fn key(flow: &ObservedFlow) -> FlowKey {
    let normal = flow.normalized();
    (
        normal.local,
        normal.remote,
        normal.service_port,
        normal.protocol,
    )
}

impl NameSetMembers {
    /// From `host`'s outbound edges hour by hour (`edges`: local, remote,
    /// service port, protocol, and the hours with connections) and the
    /// names hosts learned.
    pub fn new<'a>(
        host: &str,
        edges: impl IntoIterator<Item = (IpAddr, IpAddr, u16, Protocol, &'a [(Timestamp, u64)])>,
        names: &RemoteNames,
    ) -> NameSetMembers {
        const HOUR: i64 = 3_600 * 1_000_000_000;
        let mut by_flow: HashMap<FlowKey, Vec<(String, Held)>> = HashMap::new();
        for (local, remote, port, protocol, hours) in edges {
            let family = if remote.is_ipv4() {
                Family::Ipv4
            } else {
                Family::Ipv6
            };
            // A name holds for an hour if it was known at its start or end.
            let mut coverage: BTreeMap<&str, usize> = BTreeMap::new();
            for (hour, _) in hours {
                let start = *hour;
                let end = Timestamp::from_nanos(hour.as_nanos().saturating_add(HOUR - 1));
                let at_start = names.names_at(host, remote, start);
                let at_end = names.names_at(host, remote, end);
                for name in at_start.iter().filter(|n| at_end.contains(n)) {
                    *coverage.entry(name).or_default() += 1;
                }
            }
            let mut partial: BTreeSet<&str> = BTreeSet::new();
            for (hour, _) in hours {
                let end = Timestamp::from_nanos(hour.as_nanos().saturating_add(HOUR - 1));
                partial.extend(names.names_at(host, remote, *hour));
                partial.extend(names.names_at(host, remote, end));
            }
            let sets: Vec<(String, Held)> = partial
                .into_iter()
                .map(|name| {
                    let held = if coverage.get(name) == Some(&hours.len()) {
                        Held::Always
                    } else {
                        Held::Partly
                    };
                    (name_set(name, family), held)
                })
                .collect();
            if !sets.is_empty() {
                by_flow
                    .entry((local, remote, port, protocol))
                    .or_default()
                    .extend(sets);
            }
        }
        NameSetMembers { by_flow }
    }

    /// The name sets that held `flow`'s remote address.
    pub fn of(&self, flow: &ObservedFlow) -> &[(String, Held)] {
        if flow.direction != FlowDirection::Outbound {
            return &[];
        }
        self.by_flow.get(&key(flow)).map_or(&[], Vec::as_slice)
    }
}

/// [`crate::check()`] with the name sets of `ruleset` holding what the
/// store says they held for each flow (see the module docs): a flow whose
/// address was in a name's set is checked with it there.
pub fn check_with_name_sets(
    ruleset: &Ruleset,
    flows: &[ObservedFlow],
    members: &NameSetMembers,
) -> Vec<FlowVerdict> {
    flows
        .iter()
        .map(|flow| {
            let held = members.of(flow);
            if held.is_empty() {
                return check_flow(ruleset, flow);
            }
            let remote = flow.packet_addresses().1;
            let mut filled = ruleset.clone();
            for set in filled.tables.iter_mut().flat_map(|t| t.sets.iter_mut()) {
                for (name, how) in held {
                    if set.name != *name {
                        continue;
                    }
                    match how {
                        Held::Always => {
                            if let Some(elements) = &mut set.elements {
                                elements.push(Value::Addr(Prefix::host(remote)));
                            }
                        }
                        Held::Partly => set.partly.push(remote),
                    }
                }
            }
            check_flow(&filled, flow)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::FlowBuilder;
    use connscope_event::NameSource;
    use connscope_store::NameSighting;

    const H: i64 = 3_600 * 1_000_000_000;

    fn names(at_hour: i64) -> RemoteNames {
        let at = Timestamp::from_nanos(at_hour * H + 60_000_000_000);
        RemoteNames::from_sightings(&[NameSighting {
            hour: Timestamp::from_nanos(at_hour * H),
            host: "ws1".into(),
            remote_ip: "203.0.113.7".parse().unwrap(),
            name: "www.example.org".into(),
            source: NameSource::Dns,
            connections: 1,
            first_seen: at,
            last_seen: at,
        }])
    }

    #[test]
    fn named_outbound_flows_become_name_rules_and_the_rest_stays_literal() {
        let flows = [
            FlowBuilder::new(FlowDirection::Outbound, "10.0.0.1", "203.0.113.7", 443)
                .connections(3)
                .build(),
            FlowBuilder::new(FlowDirection::Outbound, "10.0.0.1", "203.0.113.7", 80).build(),
            FlowBuilder::new(FlowDirection::Outbound, "10.0.0.1", "192.0.2.9", 443).build(),
            FlowBuilder::new(FlowDirection::Inbound, "10.0.0.1", "203.0.113.7", 22).build(),
        ];
        let (literal, rules) = split_by_name("ws1", &flows, &names(100), PlanOptions::default());
        assert_eq!(literal.len(), 2);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].name, "www.example.org");
        assert_eq!(rules[0].ports, [80, 443]);
        assert_eq!(rules[0].evidence.connections, 4);
        assert!(rules[0]
            .set(Family::Ipv4)
            .starts_with("name4_www_example_org_"));
        // Another host did not learn the name: all literal.
        let (literal, rules) = split_by_name("ws2", &flows, &names(100), PlanOptions::default());
        assert_eq!((literal.len(), rules.len()), (4, 0));
    }

    #[test]
    fn a_set_holds_an_address_in_the_hours_its_name_was_known() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let hours = |list: &[i64]| -> Vec<(Timestamp, u64)> {
            list.iter()
                .map(|h| (Timestamp::from_nanos(h * H), 1))
                .collect()
        };
        let all = hours(&[100]);
        let some = hours(&[100, 105]);
        let none = hours(&[110]);
        let names = names(100);
        let members = NameSetMembers::new(
            "ws1",
            [
                (
                    ip("10.0.0.1"),
                    ip("203.0.113.7"),
                    443,
                    Protocol::Tcp,
                    &all[..],
                ),
                (
                    ip("10.0.0.1"),
                    ip("203.0.113.7"),
                    80,
                    Protocol::Tcp,
                    &some[..],
                ),
                (
                    ip("10.0.0.1"),
                    ip("203.0.113.7"),
                    8443,
                    Protocol::Tcp,
                    &none[..],
                ),
            ],
            &names,
        );
        let flow = |port| {
            FlowBuilder::new(FlowDirection::Outbound, "10.0.0.1", "203.0.113.7", port).build()
        };
        let set = name_set("www.example.org", Family::Ipv4);
        assert_eq!(members.of(&flow(443)), [(set.clone(), Held::Always)]);
        assert_eq!(members.of(&flow(80)), [(set, Held::Partly)]);
        assert!(members.of(&flow(8443)).is_empty());
    }

    #[test]
    fn a_rendered_by_name_plan_reads_back_with_empty_timeout_sets_and_checks_by_the_store() {
        use crate::fleet::ExactPlanner;
        use crate::generalise::{GroupPlanner, SubnetPlanner};
        use crate::Outcome;

        let hostile = "<img src=x onerror=alert(1)>\"; flush ruleset;\n.example";
        let at = Timestamp::from_nanos(100 * H + 60_000_000_000);
        let sighting = |name: &str, ip: &str| NameSighting {
            hour: Timestamp::from_nanos(100 * H),
            host: "ws1".into(),
            remote_ip: ip.parse().unwrap(),
            name: name.into(),
            source: NameSource::Dns,
            connections: 1,
            first_seen: at,
            last_seen: at,
        };
        let names = RemoteNames::from_sightings(&[
            sighting(hostile, "203.0.113.7"),
            sighting("www.example.org", "2001:db8::7"),
        ]);
        let flow = |remote: &str| {
            FlowBuilder::new(
                FlowDirection::Outbound,
                if remote.contains(':') {
                    "2001:db8::1"
                } else {
                    "10.0.0.1"
                },
                remote,
                443,
            )
            .seen(at, at)
            .build()
        };
        let flows = vec![flow("203.0.113.7"), flow("2001:db8::7"), flow("192.0.2.9")];
        let fleet: FleetFlows = [("ws1".to_owned(), flows.clone())].into();
        let options = PlanOptions::default();
        let subnet = SubnetPlanner {
            options,
            ..SubnetPlanner::default()
        };
        let planners: [&dyn FleetPlanner; 3] = [
            &ExactPlanner { options },
            &subnet,
            &GroupPlanner {
                options,
                min_share: 0.5,
                ungrouped: subnet,
            },
        ];
        for planner in planners {
            let plans = plan_fleet_by_name(planner, &fleet, &[], &names, options);
            let plan = &plans["ws1"];
            assert_eq!(plan.named_rules.len(), 2, "{}", planner.name());
            let text = crate::render::nft(plan);
            assert!(!text.contains("flush ruleset;"), "{text}");
            let ruleset = crate::nft::read_ruleset("plan.nft", &text).unwrap();
            assert!(ruleset.unsupported.is_empty(), "{:?}", ruleset.unsupported);
            let sets: Vec<_> = ruleset.tables[0]
                .sets
                .iter()
                .filter(|s| s.name.starts_with("name"))
                .collect();
            assert_eq!(sets.len(), 4, "two names, two families each");
            assert!(sets.iter().all(|s| s.elements.as_deref() == Some(&[][..])));
            let outcomes = |verdicts: Vec<FlowVerdict>| -> Vec<Outcome> {
                verdicts.into_iter().map(|v| v.outcome).collect()
            };
            assert_eq!(
                outcomes(crate::check(&ruleset, &flows)),
                [Outcome::Blocked, Outcome::Blocked, Outcome::Allowed],
                "{}: empty sets",
                planner.name()
            );
            let hours = [(Timestamp::from_nanos(100 * H), 1)];
            let ip = |s: &str| s.parse::<IpAddr>().unwrap();
            let members = NameSetMembers::new(
                "ws1",
                [
                    (
                        ip("10.0.0.1"),
                        ip("203.0.113.7"),
                        443,
                        Protocol::Tcp,
                        &hours[..],
                    ),
                    (
                        ip("2001:db8::1"),
                        ip("2001:db8::7"),
                        443,
                        Protocol::Tcp,
                        &hours[..],
                    ),
                ],
                &names,
            );
            assert_eq!(
                outcomes(check_with_name_sets(&ruleset, &flows, &members)),
                [Outcome::Allowed, Outcome::Allowed, Outcome::Allowed],
                "{}: sets as the store says",
                planner.name()
            );
        }
    }
}
