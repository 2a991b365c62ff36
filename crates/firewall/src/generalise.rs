//! Planners that generalise as far as the evidence supports, beside the
//! strict [`ExactPlanner`](crate::fleet::ExactPlanner).
//!
//! A plan that allows exactly the peers it saw blocks tomorrow's legitimate
//! traffic of every host that happened to be quiet while it was learned (a
//! workstation switched off over the holidays loses its file server). Two
//! kinds of evidence say what such a host will need:
//!
//! - **Its group** ([`GroupPlanner`]): when enough members of a group used a
//!   service, the whole group gets it. A member's rules are the group's
//!   (what its peers did), and a service used by enough members of a group
//!   is open to every member's address. The group's address space is what
//!   the flows show its members' own (`local`) addresses to be: a member never
//!   seen has no address to allow, but still gets the group's outbound rules.
//! - **Its subnet** ([`SubnetPlanner`]): peers of a service that share a
//!   network (a /24, a /64) are widened to the smallest prefix spanning them,
//!   never further; a lone peer stays exact.
//!
//! Both only ever add to what the host was seen doing, so a plan still lets
//! through every flow it was built from. Each rule that reaches further says
//! why ([`Basis`]), in the JSON plan and in the rule comment.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use connscope_event::Protocol;

use crate::fleet::{FleetFlows, FleetPlanner, GroupMembers};
use crate::flow::{FlowDirection, ObservedFlow};
use crate::net::{addr_bits, normalize, Prefix};
use crate::plan::{plan, Basis, Evidence, IpFamily, MemberException, Plan, PlanOptions, PlanRule};

/// Widens each service's peers to the subnets they span.
#[derive(Debug, Clone, Copy)]
pub struct SubnetPlanner {
    pub options: PlanOptions,
    /// The widest IPv4 network peers are widened to (24: a /24 at most).
    pub max_v4: u8,
    /// The widest IPv6 network peers are widened to.
    pub max_v6: u8,
}

impl Default for SubnetPlanner {
    fn default() -> Self {
        SubnetPlanner {
            options: PlanOptions::default(),
            max_v4: 24,
            max_v6: 64,
        }
    }
}

impl SubnetPlanner {
    /// One host's plan, its peers widened.
    pub fn plan_host(&self, host: &str, flows: &[ObservedFlow]) -> Plan {
        let mut plan = plan(host, flows, self.options);
        for rule in &mut plan.rules {
            self.widen(rule);
        }
        plan
    }

    /// The widest network peers of `family` may be widened to.
    fn max_len(&self, family: IpFamily) -> u8 {
        match family {
            IpFamily::Ipv4 => self.max_v4.min(32),
            IpFamily::Ipv6 => self.max_v6.min(128),
        }
    }

    fn widen(&self, rule: &mut PlanRule) {
        let Some(peers) = &rule.peers else { return };
        let widened = widen_peers(peers, self.max_len(rule.family));
        if widened.subnets > 0 {
            rule.peers = Some(widened.peers);
            rule.basis = Some(Basis::Subnet {
                peers_seen: widened.peers_seen,
                subnets: widened.subnets,
            });
        }
    }
}

/// Peers widened to the subnets they span.
struct Widened {
    peers: Vec<Prefix>,
    /// Host addresses that went into a subnet, and how many subnets.
    peers_seen: usize,
    subnets: usize,
}

/// Host addresses clustered by the widest network (`max` bits) they may
/// become; a cluster of two or more becomes the smallest network holding it,
/// a lone address stays exact.
fn widen_peers(peers: &[Prefix], max: u8) -> Widened {
    let mut clusters: BTreeMap<Prefix, Vec<IpAddr>> = BTreeMap::new();
    let mut kept = Vec::new();
    for peer in peers {
        if peer.is_host() {
            let net = Prefix::new(peer.addr(), max).expect("length clamped to the family");
            clusters.entry(net).or_default().push(peer.addr());
        } else {
            kept.push(*peer);
        }
    }
    let (mut peers_seen, mut subnets) = (0, 0);
    for addrs in clusters.into_values() {
        if addrs.len() < 2 {
            kept.extend(addrs.into_iter().map(Prefix::host));
            continue;
        }
        peers_seen += addrs.len();
        subnets += 1;
        kept.push(spanning(&addrs));
    }
    Widened {
        peers: normalize(kept),
        peers_seen,
        subnets,
    }
}

/// The smallest network holding every address (all of one family).
fn spanning(addrs: &[IpAddr]) -> Prefix {
    let low = addrs.iter().map(|a| addr_bits(*a)).min().unwrap_or(0);
    let high = addrs.iter().map(|a| addr_bits(*a)).max().unwrap_or(0);
    let differ = low ^ high;
    let len = if addrs[0].is_ipv4() {
        (differ as u32).leading_zeros()
    } else {
        differ.leading_zeros()
    };
    Prefix::new(addrs[0], len as u8).expect("a common prefix fits the family")
}

impl FleetPlanner for SubnetPlanner {
    fn name(&self) -> String {
        "subnet".to_owned()
    }

    fn plan_fleet(&self, flows: &FleetFlows, _groups: &[GroupMembers]) -> BTreeMap<String, Plan> {
        flows
            .iter()
            .map(|(host, flows)| (host.clone(), self.plan_host(host, flows)))
            .collect()
    }
}

/// Plans each host with what its groups did: the safe default.
#[derive(Debug, Clone, Copy)]
pub struct GroupPlanner {
    pub options: PlanOptions,
    /// The share of a group's members (0 to 1) that must have used a service
    /// before the whole group gets it; 0 means any one member.
    pub min_share: f64,
    /// How hosts in no group are planned.
    pub ungrouped: SubnetPlanner,
}

impl Default for GroupPlanner {
    fn default() -> Self {
        GroupPlanner {
            options: PlanOptions::default(),
            min_share: 0.5,
            ungrouped: SubnetPlanner::default(),
        }
    }
}

fn family_of(addr: IpAddr) -> IpFamily {
    if addr.is_ipv4() {
        IpFamily::Ipv4
    } else {
        IpFamily::Ipv6
    }
}

/// One service as a rule names it, without its peers.
type ServiceKey = (FlowDirection, Protocol, IpFamily, u16);

/// What the group's members did on one service (or edge): who, and the evidence.
#[derive(Default)]
struct Usage {
    members: BTreeSet<String>,
    evidence: Option<Evidence>,
}

impl Usage {
    fn add(&mut self, member: &str, flow: &ObservedFlow) {
        self.members.insert(member.to_owned());
        match &mut self.evidence {
            Some(e) => e.merge(&Evidence::of(flow)),
            None => self.evidence = Some(Evidence::of(flow)),
        }
    }
}

/// A flow that may count as evidence: normalised, off loopback, with a known
/// peer, seen often enough.
fn usable(flow: &ObservedFlow, options: &PlanOptions) -> Option<ObservedFlow> {
    let flow = flow.normalized();
    let usable = !flow.is_loopback()
        && !flow.remote.is_unspecified()
        && flow.connections >= options.min_count;
    usable.then_some(flow)
}

/// A group with its address space as the flows show it.
struct KnownGroup<'a> {
    group: &'a GroupMembers,
    /// Every address a member was seen using, with the member(s).
    addresses: BTreeMap<IpAddr, BTreeSet<String>>,
    /// How many members must have used something for the group to get it.
    needed: usize,
    /// What every member gets from the group, computed once.
    profile: Vec<PlanRule>,
    /// How far the group's addresses widen into its address space.
    widen: SubnetPlanner,
}

/// A group's addresses of one family, as peers of a rule: the networks its
/// members' addresses span (within the widest network `widen` allows), so a
/// member not seen while learning, addressed among its peers, is not shut
/// out of what its group uses; and the ranges declared as the group's, for
/// a member addressed anywhere in them.
fn address_space(
    addresses: &BTreeMap<IpAddr, BTreeSet<String>>,
    declared: &[Prefix],
    family: IpFamily,
    widen: &SubnetPlanner,
) -> Vec<Prefix> {
    let hosts: Vec<Prefix> = addresses
        .keys()
        .filter(|a| family_of(**a) == family)
        .map(|a| Prefix::host(*a))
        .collect();
    let mut space = widen_peers(&hosts, widen.max_len(family)).peers;
    space.extend(
        declared
            .iter()
            .filter(|p| p.is_ipv4() == (family == IpFamily::Ipv4)),
    );
    normalize(space)
}

fn group_basis(group: &GroupMembers, used_by: usize) -> Basis {
    Basis::Group {
        group: group.name.clone(),
        used_by,
        members: group.hosts.len(),
    }
}

impl KnownGroup<'_> {
    fn basis(&self, used_by: usize) -> Basis {
        group_basis(self.group, used_by)
    }

    fn peers(&self, family: IpFamily) -> Vec<Prefix> {
        address_space(&self.addresses, &self.group.declared, family, &self.widen)
    }
}

impl GroupPlanner {
    fn known<'a>(&self, flows: &FleetFlows, group: &'a GroupMembers) -> KnownGroup<'a> {
        let mut addresses: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
        for member in &group.hosts {
            for flow in flows.get(member).into_iter().flatten() {
                let flow = flow.normalized();
                if flow.is_loopback() || flow.local.is_loopback() || flow.local.is_unspecified() {
                    continue;
                }
                addresses
                    .entry(flow.local)
                    .or_default()
                    .insert(member.clone());
            }
        }
        let share = (self.min_share.clamp(0.0, 1.0) * group.hosts.len() as f64).ceil() as usize;
        let needed = share.max(1);
        KnownGroup {
            group,
            profile: self.profile(flows, group, &addresses, needed),
            addresses,
            needed,
            widen: self.ungrouped,
        }
    }

    /// The rules every member of `group` gets: the edges (to peers outside
    /// the group) that at least `needed` members used.
    fn profile(
        &self,
        flows: &FleetFlows,
        group: &GroupMembers,
        addresses: &BTreeMap<IpAddr, BTreeSet<String>>,
        needed: usize,
    ) -> Vec<PlanRule> {
        let mut profile = Vec::new();
        // Peers outside the group, by the widest network they may become:
        // members using one service of several peers there (three printers,
        // say) are a group using it, whichever peer each one happened to use.
        let mut edges: BTreeMap<(ServiceKey, Prefix), (Usage, Vec<IpAddr>)> = BTreeMap::new();
        let mut within: BTreeMap<(Protocol, IpFamily, u16), Usage> = BTreeMap::new();
        for member in &group.hosts {
            for flow in flows.get(member).into_iter().flatten() {
                let Some(flow) = usable(flow, &self.options) else {
                    continue;
                };
                let key = (
                    flow.direction,
                    flow.protocol,
                    family_of(flow.remote),
                    flow.service_port,
                );
                // A peer inside the group is one member's address, not
                // every member's: members talking to members on a service
                // (either end counts as using it) is evidence for the
                // service within the whole group, both ways.
                if let Some(peers) = addresses.get(&flow.remote) {
                    let usage = within.entry((key.1, key.2, key.3)).or_default();
                    usage.add(member, &flow);
                    usage.members.extend(peers.iter().cloned());
                    continue;
                }
                let network = Prefix::new(flow.remote, self.ungrouped.max_len(key.2))
                    .expect("length clamped to the family");
                let (usage, peers) = edges.entry((key, network)).or_default();
                usage.add(member, &flow);
                if !peers.contains(&flow.remote) {
                    peers.push(flow.remote);
                }
            }
        }
        let mut per_service: BTreeMap<(ServiceKey, usize), (Vec<Prefix>, Evidence)> =
            BTreeMap::new();
        for ((key, _), (usage, seen)) in edges {
            let peer = if seen.len() < 2 {
                Prefix::host(seen[0])
            } else {
                spanning(&seen)
            };
            let used_by = usage.members.len();
            let (Some(evidence), true) = (usage.evidence, used_by >= needed) else {
                continue;
            };
            match per_service.get_mut(&(key, used_by)) {
                Some((peers, merged)) => {
                    peers.push(peer);
                    merged.merge(&evidence);
                }
                None => {
                    per_service.insert((key, used_by), (vec![peer], evidence));
                }
            }
        }
        for ((key, used_by), (peers, evidence)) in per_service {
            profile.push(rule(
                key,
                Some(normalize(peers)),
                evidence,
                group_basis(group, used_by),
            ));
        }
        for ((protocol, family, port), usage) in within {
            let used_by = usage.members.len();
            let (Some(evidence), true) = (usage.evidence, used_by >= needed) else {
                continue;
            };
            for direction in [FlowDirection::Inbound, FlowDirection::Outbound] {
                profile.push(rule(
                    (direction, protocol, family, port),
                    Some(address_space(
                        addresses,
                        &group.declared,
                        family,
                        &self.ungrouped,
                    )),
                    evidence.clone(),
                    group_basis(group, used_by),
                ));
            }
        }
        merge_ports(profile)
    }

    /// The rules `host` gets from its groups: the services enough members of
    /// its own groups used (a member's rules are the group's), and its
    /// services that enough members of any group used (open to the group).
    fn group_rules(&self, host: &str, flows: &FleetFlows, groups: &[KnownGroup]) -> Vec<PlanRule> {
        let mut rules = Vec::new();
        for group in groups {
            if group.group.hosts.contains(host) {
                rules.extend(group.profile.iter().cloned());
            }
            // This host's services used by the group's members.
            let mut services: BTreeMap<ServiceKey, Usage> = BTreeMap::new();
            for flow in flows.get(host).into_iter().flatten() {
                let Some(flow) = usable(flow, &self.options) else {
                    continue;
                };
                let Some(members) = group.addresses.get(&flow.remote) else {
                    continue;
                };
                let key = (
                    flow.direction,
                    flow.protocol,
                    family_of(flow.remote),
                    flow.service_port,
                );
                let usage = services.entry(key).or_default();
                for member in members {
                    usage.add(member, &flow);
                }
            }
            for (key, usage) in services {
                let used_by = usage.members.len();
                let (Some(evidence), true) = (usage.evidence, used_by >= group.needed) else {
                    continue;
                };
                let peers = group.peers(key.2);
                rules.push(rule(key, Some(peers), evidence, group.basis(used_by)));
            }
        }
        merge_ports(rules)
    }
}

fn rule(key: ServiceKey, peers: Option<Vec<Prefix>>, evidence: Evidence, basis: Basis) -> PlanRule {
    let (direction, protocol, family, port) = key;
    PlanRule {
        direction,
        protocol,
        family,
        peers,
        ports: vec![port],
        evidence,
        basis: Some(basis),
    }
}

/// The rules by each service they allow, so a host's flows are matched
/// against the few rules of their own port rather than all of them.
fn by_service(rules: &[PlanRule]) -> BTreeMap<ServiceKey, Vec<&PlanRule>> {
    let mut map: BTreeMap<ServiceKey, Vec<&PlanRule>> = BTreeMap::new();
    for rule in rules {
        for port in &rule.ports {
            map.entry((rule.direction, rule.protocol, rule.family, *port))
                .or_default()
                .push(rule);
        }
    }
    map
}

/// Rules equal but for their port become one rule with every port.
fn merge_ports(rules: Vec<PlanRule>) -> Vec<PlanRule> {
    let mut merged: Vec<PlanRule> = Vec::new();
    for rule in rules {
        let same = merged.iter_mut().find(|m| {
            (m.direction, m.protocol, m.family, &m.peers, &m.basis)
                == (
                    rule.direction,
                    rule.protocol,
                    rule.family,
                    &rule.peers,
                    &rule.basis,
                )
        });
        match same {
            Some(m) => {
                m.ports.extend(&rule.ports);
                m.ports.sort_unstable();
                m.ports.dedup();
                m.evidence.merge(&rule.evidence);
            }
            None => merged.push(rule),
        }
    }
    merged
}

impl FleetPlanner for GroupPlanner {
    fn name(&self) -> String {
        "group".to_owned()
    }

    /// A plan for every host with flows and every group member (a member
    /// never seen still gets its group's rules).
    fn plan_fleet(&self, flows: &FleetFlows, groups: &[GroupMembers]) -> BTreeMap<String, Plan> {
        let known: Vec<KnownGroup> = groups.iter().map(|g| self.known(flows, g)).collect();
        let hosts: BTreeSet<&String> = flows
            .keys()
            .chain(groups.iter().flat_map(|g| &g.hosts))
            .collect();
        hosts
            .into_iter()
            .map(|host| {
                let own = flows.get(host).map(Vec::as_slice).unwrap_or_default();
                let generalised = self.group_rules(host, flows, &known);
                // The host's own rules cover only what the group does not.
                let by_service = by_service(&generalised);
                let covered = |f: &ObservedFlow| {
                    let key = (f.direction, f.protocol, family_of(f.remote), f.service_port);
                    by_service
                        .get(&key)
                        .is_some_and(|rules| rules.iter().any(|r| r.allows(f)))
                };
                let rest: Vec<ObservedFlow> = own
                    .iter()
                    .filter(|f| usable(f, &self.options).is_none_or(|f| !covered(&f)))
                    .cloned()
                    .collect();
                let mut plan = if groups.iter().any(|g| g.hosts.contains(host)) {
                    plan(host, &rest, self.options)
                } else {
                    self.ungrouped.plan_host(host, &rest)
                };
                plan.rules.splice(0..0, generalised);
                (host.clone(), plan)
            })
            .collect()
    }
}

/// One ruleset for every member of `group` (`firewall plan --group`): the
/// rules the group's evidence supports, and every member's own rules on top,
/// listed as exceptions, so that loading it on any member blocks none of the
/// members' observed flows.
pub fn group_plan(group: &GroupMembers, plans: &BTreeMap<String, Plan>) -> Plan {
    let mut shared: Vec<PlanRule> = Vec::new();
    let mut exceptions: Vec<MemberException> = Vec::new();
    let mut result = plan(&group.name, &[], PlanOptions::default());
    for member in &group.hosts {
        let Some(plan) = plans.get(member) else {
            continue;
        };
        result.options = plan.options;
        result.review.extend(plan.review.iter().cloned());
        result.loopback_flows += plan.loopback_flows;
        result.lost_peer_flows += plan.lost_peer_flows;
        for rule in &plan.rules {
            let from_group =
                matches!(&rule.basis, Some(Basis::Group { group: g, .. }) if *g == group.name);
            if from_group {
                let same = shared.iter_mut().find(|s| same_match(s, rule));
                match same {
                    Some(s) => s.evidence.merge(&rule.evidence),
                    None => shared.push(rule.clone()),
                }
            } else {
                exceptions.push(MemberException {
                    host: member.clone(),
                    rule: rule.clone(),
                });
            }
        }
    }
    result.rules = shared;
    result
        .rules
        .extend(exceptions.iter().map(|e| e.rule.clone()));
    result.exceptions = exceptions;
    result.named_rules = crate::plan::merge_name_rules(
        group
            .hosts
            .iter()
            .filter_map(|member| plans.get(member))
            .flat_map(|plan| &plan.named_rules),
    );
    result
}

/// Two rules let the same packets through.
fn same_match(a: &PlanRule, b: &PlanRule) -> bool {
    (a.direction, a.protocol, a.family, &a.peers, &a.ports)
        == (b.direction, b.protocol, b.family, &b.peers, &b.ports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{check, Outcome};
    use crate::render;
    use crate::test_support::FlowBuilder;
    use proptest::prelude::*;
    use FlowDirection::{Inbound, Outbound};

    fn out(local: &str, remote: &str, port: u16) -> ObservedFlow {
        FlowBuilder::new(Outbound, local, remote, port).build()
    }

    fn inb(local: &str, remote: &str, port: u16) -> ObservedFlow {
        FlowBuilder::new(Inbound, local, remote, port).build()
    }

    fn group(name: &str, hosts: &[&str]) -> GroupMembers {
        GroupMembers {
            name: name.to_owned(),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            ..Default::default()
        }
    }

    /// What the rendered plan, read back by the checker, does with the flows.
    fn outcomes(plan: &Plan, flows: &[ObservedFlow]) -> Vec<Outcome> {
        let ruleset = crate::nft::parse_str("plan.nft", &render::nft(plan)).unwrap();
        check(&ruleset, flows)
            .into_iter()
            .map(|v| v.outcome)
            .collect()
    }

    /// Four workstations, three of which used the file server; the fourth was
    /// only seen resolving names, the fifth never.
    fn office() -> (FleetFlows, Vec<GroupMembers>) {
        let mut flows = FleetFlows::new();
        for i in 1..=3 {
            let ws = format!("10.0.1.{i}");
            flows.insert(format!("ws{i}"), vec![out(&ws, "10.0.0.9", 445)]);
        }
        flows.insert("ws4".to_owned(), vec![out("10.0.1.4", "10.0.0.53", 53)]);
        flows.insert(
            "srv".to_owned(),
            (1..=3)
                .map(|i| inb("10.0.0.9", &format!("10.0.1.{i}"), 445))
                .collect(),
        );
        let groups = vec![group("workstations", &["ws1", "ws2", "ws3", "ws4", "ws5"])];
        (flows, groups)
    }

    #[test]
    fn a_service_most_members_used_is_the_whole_groups() {
        let (flows, groups) = office();
        let plans = GroupPlanner::default().plan_fleet(&flows, &groups);
        // ws4 (seen, but never at the file server) and ws5 (never seen) may
        // reach it, because 3 of the 5 workstations did.
        for ws in ["ws4", "ws5"] {
            let plan = &plans[ws];
            assert_eq!(
                outcomes(plan, &[out("10.0.1.4", "10.0.0.9", 445)]),
                [Outcome::Allowed],
                "{ws}"
            );
            assert_eq!(
                outcomes(plan, &[out("10.0.1.4", "10.0.0.9", 139)]),
                [Outcome::Blocked],
                "{ws}"
            );
            let text = render::nft(plan);
            assert!(
                text.contains("comment \"used by 3 of 5 members of workstations, "),
                "{text}"
            );
        }
        // The server accepts ws4, whose address the flows know, but not a
        // stranger.
        let srv = &plans["srv"];
        assert_eq!(
            outcomes(
                srv,
                &[
                    inb("10.0.0.9", "10.0.1.4", 445),
                    inb("10.0.0.9", "10.0.1.99", 445)
                ]
            ),
            [Outcome::Allowed, Outcome::Blocked]
        );
        let json = serde_json::to_value(srv).unwrap();
        assert_eq!(
            json["rules"][0]["basis"],
            serde_json::json!({"kind": "group", "group": "workstations", "used_by": 3, "members": 5})
        );
    }

    #[test]
    fn a_declared_range_lets_in_a_member_addressed_away_from_its_colleagues() {
        let (flows, mut groups) = office();
        let unseen_elsewhere = inb("10.0.0.9", "10.0.7.20", 445);
        let plans = GroupPlanner::default().plan_fleet(&flows, &groups);
        assert_eq!(
            outcomes(&plans["srv"], std::slice::from_ref(&unseen_elsewhere)),
            [Outcome::Blocked]
        );
        groups[0].declared = vec!["10.0.0.0/21".parse().unwrap()];
        let plans = GroupPlanner::default().plan_fleet(&flows, &groups);
        assert_eq!(
            outcomes(
                &plans["srv"],
                &[unseen_elsewhere, inb("10.0.0.9", "10.0.8.20", 445)]
            ),
            [Outcome::Allowed, Outcome::Blocked]
        );
    }

    #[test]
    fn a_service_too_few_members_used_stays_theirs() {
        let (flows, groups) = office();
        for (share, ws4_gets_it) in [(0.6, true), (0.61, false), (0.0, true), (1.0, false)] {
            let planner = GroupPlanner {
                min_share: share,
                ..GroupPlanner::default()
            };
            let plans = planner.plan_fleet(&flows, &groups);
            let got = outcomes(&plans["ws4"], &[out("10.0.1.4", "10.0.0.9", 445)]);
            let want = if ws4_gets_it {
                Outcome::Allowed
            } else {
                Outcome::Blocked
            };
            assert_eq!(got, [want], "share {share}");
        }
        // Any member is enough when the user says so: ws4's name server too.
        let any = GroupPlanner {
            min_share: 0.0,
            ..GroupPlanner::default()
        };
        let plans = any.plan_fleet(&flows, &groups);
        assert_eq!(
            outcomes(&plans["ws1"], &[out("10.0.1.1", "10.0.0.53", 53)]),
            [Outcome::Allowed]
        );
    }

    #[test]
    fn members_talking_to_members_open_the_service_within_the_group() {
        // ws1 and ws2 each pulled from a colleague's port 7000; ws3 never did.
        let flows: FleetFlows = [
            ("ws1", vec![out("10.0.1.1", "10.0.1.2", 7000)]),
            ("ws2", vec![out("10.0.1.2", "10.0.1.3", 7000)]),
            ("ws3", vec![inb("10.0.1.3", "10.0.1.2", 7000)]),
            ("x", vec![out("10.0.9.9", "10.0.1.3", 7000)]),
        ]
        .map(|(h, f)| (h.to_owned(), f))
        .into();
        let groups = [group("ws", &["ws1", "ws2", "ws3"])];
        let plans = GroupPlanner::default().plan_fleet(&flows, &groups);
        assert_eq!(
            outcomes(
                &plans["ws3"],
                &[
                    out("10.0.1.3", "10.0.1.1", 7000),
                    out("10.0.1.3", "10.0.9.9", 7000)
                ]
            ),
            [Outcome::Allowed, Outcome::Blocked]
        );
        // ws1 accepts its colleagues (all 3 used the service, at one end or
        // the other) but not x.
        assert_eq!(
            outcomes(
                &plans["ws1"],
                &[
                    inb("10.0.1.1", "10.0.1.3", 7000),
                    inb("10.0.1.1", "10.0.9.9", 7000)
                ]
            ),
            [Outcome::Allowed, Outcome::Blocked]
        );
    }

    #[test]
    fn hosts_in_no_group_get_their_peers_subnets() {
        let flows = [
            inb("10.0.0.1", "10.0.5.5", 22),
            inb("10.0.0.1", "10.0.5.7", 22),
            inb("10.0.0.1", "10.0.9.9", 22),
            inb("10.0.0.1", "fd00::5", 22),
            inb("10.0.0.1", "fd00::1:6", 22),
        ];
        let fleet: FleetFlows = [("h".to_owned(), flows.to_vec())].into();
        let plan = &GroupPlanner::default().plan_fleet(&fleet, &[])["h"];
        let peers: Vec<String> = plan
            .rules
            .iter()
            .flat_map(|r| r.peers.iter().flatten().map(ToString::to_string))
            .collect();
        assert_eq!(peers, ["10.0.5.4/30", "10.0.9.9", "fd00::/111"]);
        assert_eq!(
            plan.rules[0].basis,
            Some(Basis::Subnet {
                peers_seen: 2,
                subnets: 1
            })
        );
        assert_eq!(
            outcomes(
                plan,
                &[
                    inb("10.0.0.1", "10.0.5.6", 22),
                    inb("10.0.0.1", "10.0.5.8", 22)
                ]
            ),
            [Outcome::Allowed, Outcome::Blocked]
        );
    }

    #[test]
    fn a_groups_ruleset_lists_what_only_some_members_need() {
        let (mut flows, groups) = office();
        flows
            .get_mut("ws2")
            .unwrap()
            .push(out("10.0.1.2", "192.0.2.80", 8080));
        let plans = GroupPlanner::default().plan_fleet(&flows, &groups);
        let plan = group_plan(&groups[0], &plans);
        let exceptions: Vec<(&str, u16)> = plan
            .exceptions
            .iter()
            .map(|e| (e.host.as_str(), e.rule.ports[0]))
            .collect();
        assert_eq!(exceptions, [("ws2", 8080), ("ws4", 53)]);
        let text = render::nft(&plan);
        assert!(
            text.contains("#   ws2: outbound tcp peers 192.0.2.80 port(s) 8080\n"),
            "{text}"
        );
        for member in &groups[0].hosts {
            let own = flows.get(member).cloned().unwrap_or_default();
            assert!(outcomes(&plan, &own).iter().all(|o| *o == Outcome::Allowed));
        }
    }

    fn arb_flow(hosts: usize) -> impl Strategy<Value = (usize, ObservedFlow)> {
        (
            0..hosts,
            any::<bool>(),
            any::<bool>(),
            0..hosts + 4,
            prop::sample::select(vec![22u16, 53, 445, 8080]),
            1..4u64,
            any::<bool>(),
        )
            .prop_map(move |(h, inbound, tcp, peer, port, n, v6)| {
                // Peers: other hosts, strangers, loopback and a lost peer.
                let addr = |i: usize| -> IpAddr {
                    match (i, v6) {
                        (i, false) if i == hosts + 2 => "127.0.0.1".parse().unwrap(),
                        (i, false) if i == hosts + 3 => "0.0.0.0".parse().unwrap(),
                        (i, false) => format!("10.0.{}.{}", i % 3, i + 1).parse().unwrap(),
                        (i, true) => format!("fd00::{:x}", i + 1).parse().unwrap(),
                    }
                };
                let direction = if inbound { Inbound } else { Outbound };
                let flow = FlowBuilder::new(direction, addr(h), addr(peer), port)
                    .protocol(if tcp { Protocol::Tcp } else { Protocol::Udp })
                    .connections(n)
                    .build();
                (h, flow)
            })
    }

    proptest! {
        /// For any fleet history and groups, no planner's plan blocks a flow
        /// it was built from (as the checker reads the rendered ruleset).
        #[test]
        fn no_plan_blocks_its_own_history(
            flows in prop::collection::vec(arb_flow(6), 0..40),
            membership in prop::collection::vec(prop::collection::btree_set(0..7usize, 0..5), 0..3),
            share in prop::sample::select(vec![0.0, 0.3, 0.5, 1.0]),
        ) {
            let mut fleet = FleetFlows::new();
            for (h, flow) in flows {
                fleet.entry(format!("h{h}")).or_default().push(flow);
            }
            let groups: Vec<GroupMembers> = membership
                .iter()
                .enumerate()
                .map(|(i, m)| GroupMembers {
                    name: format!("g{i}"),
                    hosts: m.iter().map(|h| format!("h{h}")).collect(),
                    ..Default::default()
                })
                .collect();
            let planners: [Box<dyn FleetPlanner>; 2] = [
                Box::new(GroupPlanner { min_share: share, ..GroupPlanner::default() }),
                Box::new(SubnetPlanner::default()),
            ];
            for planner in planners {
                let plans = planner.plan_fleet(&fleet, &groups);
                for (host, own) in &fleet {
                    let got = outcomes(&plans[host], own);
                    prop_assert!(got.iter().all(|o| *o == Outcome::Allowed), "{} {host}: {got:?}", planner.name());
                }
                for g in &groups {
                    let plan = group_plan(g, &plans);
                    for member in &g.hosts {
                        let own = fleet.get(member).cloned().unwrap_or_default();
                        let got = outcomes(&plan, &own);
                        prop_assert!(got.iter().all(|o| *o == Outcome::Allowed), "group {} {member}: {got:?}", g.name);
                    }
                }
            }
        }

        /// For any fleet history, an edge to a peer outside a group that
        /// enough of its members used is allowed on every member, whether it
        /// used the edge or not.
        #[test]
        fn every_member_gets_what_enough_members_did(
            flows in prop::collection::vec(arb_flow(6), 0..40),
            members in prop::collection::btree_set(0..7usize, 1..6),
            share in prop::sample::select(vec![0.0, 0.3, 0.5, 1.0]),
        ) {
            let mut fleet = FleetFlows::new();
            for (h, flow) in flows {
                fleet.entry(format!("h{h}")).or_default().push(flow);
            }
            let g = GroupMembers {
                name: "g".to_owned(),
                hosts: members.iter().map(|h| format!("h{h}")).collect(),
                ..Default::default()
            };
            let mine = |m: &String| fleet.get(m).into_iter().flatten()
                .map(ObservedFlow::normalized)
                .filter(|f| !f.is_loopback() && !f.remote.is_unspecified());
            let space: BTreeSet<IpAddr> = g.hosts.iter().flat_map(|m| mine(m).map(|f| f.local)).collect();
            let mut users: BTreeMap<(FlowDirection, Protocol, u16, IpAddr), BTreeSet<&String>> = BTreeMap::new();
            for m in &g.hosts {
                for f in mine(m).filter(|f| !space.contains(&f.remote)) {
                    users.entry((f.direction, f.protocol, f.service_port, f.remote)).or_default().insert(m);
                }
            }
            let needed = ((share * g.hosts.len() as f64).ceil() as usize).max(1);
            let planner = GroupPlanner { min_share: share, ..GroupPlanner::default() };
            let plans = planner.plan_fleet(&fleet, std::slice::from_ref(&g));
            for ((direction, protocol, port, remote), used) in users {
                let local: IpAddr = if remote.is_ipv4() { "10.9.9.9" } else { "fd09::9" }.parse().unwrap();
                let edge = FlowBuilder::new(direction, local, remote, port).protocol(protocol).build();
                for m in g.hosts.iter().filter(|m| used.len() >= needed || used.contains(m)) {
                    let got = outcomes(&plans[m], std::slice::from_ref(&edge));
                    prop_assert_eq!(got[0], Outcome::Allowed, "{} {:?} used by {:?}", m, edge, used);
                }
            }
        }
    }
}
