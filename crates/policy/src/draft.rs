//! Drafting a policy from history: the plans' planners over the fleet, then
//! the target's rules regrouped as a person reviews them.
//!
//! For a group, rules the group's evidence supports are every member's; what
//! only some members did becomes their exceptions (`hosts = [...]`), merged
//! when several members did the same; so the draft is the members' union and
//! loading it blocks none of their observed flows. Exceptions seen fewer than
//! `rare_below` times are allowed but listed for review: the rare backup job a
//! person should confirm. A re-draft keeps every rule of the previous version
//! a person approved.

use std::collections::BTreeMap;

use connscope_firewall::from_store::{fleet_flows, fleet_groups};
use connscope_firewall::net::Prefix;
use connscope_firewall::plan::{PlanRule, ReviewItem};
use connscope_firewall::{
    Basis, ExactPlanner, FleetFlows, FleetPlanner, FlowDirection, GroupPlanner, PlanOptions,
    SubnetPlanner,
};
use connscope_query::groups::MembersError;
use connscope_store::{Store, StoreError, TimeRange};

use crate::document::{Drafted, Policy, ReviewEntry, Rule, RuleEvidence, Target, FORMAT};

/// How far a draft generalises from the evidence (as `firewall plan
/// --generalize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generalization {
    Exact,
    Subnet,
    Group,
}

impl Generalization {
    pub fn as_str(self) -> &'static str {
        match self {
            Generalization::Exact => "exact",
            Generalization::Subnet => "subnet",
            Generalization::Group => "group",
        }
    }
}

/// What a draft is made with.
#[derive(Debug, Clone)]
pub struct DraftOptions {
    pub generalize: Generalization,
    /// The share of members that must have used something for the group to
    /// get it (the group planner's `min_share`).
    pub min_share: f64,
    pub plan: PlanOptions,
    /// Exceptions seen fewer times than this are listed for review.
    pub rare_below: u64,
    /// The previous version: its approved rules are kept.
    pub previous: Option<Policy>,
}

impl Default for DraftOptions {
    fn default() -> Self {
        DraftOptions {
            generalize: Generalization::Group,
            min_share: GroupPlanner::default().min_share,
            plan: PlanOptions::default(),
            rare_below: 3,
            previous: None,
        }
    }
}

/// Why no draft could be made.
#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Members(#[from] MembersError),
    #[error("no group {0:?} in the store (see `connscope groups list`)")]
    NoGroup(String),
    #[error("{0} has no connections stored in the range")]
    NoHistory(Target),
}

/// Drafts a policy for `target` from the history in `range`.
pub fn draft(
    store: &dyn Store,
    target: &Target,
    range: TimeRange,
    options: &DraftOptions,
) -> Result<Policy, DraftError> {
    let groups = fleet_groups(store, range)?;
    let fleet: FleetFlows = fleet_flows(store, range)?
        .into_iter()
        .map(|(host, stored)| (host, stored.flows))
        .collect();
    let members: Vec<String> = match target {
        Target::Group(name) => groups
            .iter()
            .find(|g| g.name == *name)
            .ok_or_else(|| DraftError::NoGroup(name.clone()))?
            .hosts
            .iter()
            .cloned()
            .collect(),
        Target::Host(host) => vec![host.clone()],
    };
    if !members.iter().any(|m| fleet.contains_key(m)) {
        return Err(DraftError::NoHistory(target.clone()));
    }
    let subnet = SubnetPlanner {
        options: options.plan,
        ..SubnetPlanner::default()
    };
    let planner: Box<dyn FleetPlanner> = match options.generalize {
        Generalization::Exact => Box::new(ExactPlanner {
            options: options.plan,
        }),
        Generalization::Subnet => Box::new(subnet),
        Generalization::Group => Box::new(GroupPlanner {
            options: options.plan,
            min_share: options.min_share,
            ungrouped: subnet,
        }),
    };
    let plans = planner.plan_fleet(&fleet, &groups);

    let group_name = match target {
        Target::Group(name) => Some(name.as_str()),
        Target::Host(_) => None,
    };
    let mut drafted = Drafting::default();
    for member in &members {
        let Some(plan) = plans.get(member) else {
            continue;
        };
        for rule in &plan.rules {
            let shared = group_name.is_some_and(
                |g| matches!(&rule.basis, Some(Basis::Group { group, .. }) if group == g),
            );
            let own = !shared && group_name.is_some();
            drafted.add(rule.direction, rule, own.then_some(member));
        }
        drafted.held_back(member, &plan.review);
    }

    let (rules, review) = drafted.finish();
    // The history the draft stands on: the range, narrowed to the members'
    // first and last connection in it.
    let seen = members
        .iter()
        .filter_map(|m| fleet.get(m))
        .flatten()
        .map(|f| (f.first_seen, f.last_seen));
    let from = seen
        .clone()
        .map(|s| s.0)
        .min()
        .map_or(range.from, |f| f.max(range.from));
    let to = seen
        .map(|s| s.1)
        .max()
        .map_or(range.to, |t| t.min(range.to));
    let mut policy = Policy {
        format: FORMAT,
        name: group_name.map_or_else(|| members[0].clone(), str::to_owned),
        target: target.clone(),
        drafted: Some(Drafted {
            from,
            to,
            generalize: options.generalize.as_str().to_owned(),
            min_share: options.min_share,
            min_count: options.plan.min_count,
            members: if group_name.is_some() {
                members.clone()
            } else {
                Vec::new()
            },
        }),
        inbound: Vec::new(),
        outbound: Vec::new(),
        review,
    };
    for (direction, rule) in rules {
        if rule.hosts.len() == 1 && rule.evidence.connections < options.rare_below {
            policy
                .review
                .push(rare_entry(direction, &rule, options.rare_below));
        }
        section_mut(&mut policy, direction).push(rule);
    }
    if let Some(previous) = &options.previous {
        keep_approved(&mut policy, previous);
    }
    Ok(policy)
}

/// What a rule matches, without whom it is for: rules equal in this let the
/// same packets through.
type MatchKey = (FlowDirection, String, Vec<u16>, Option<Vec<Prefix>>, String);

fn match_key(direction: FlowDirection, rule: &Rule) -> MatchKey {
    (
        direction,
        rule.protocol.to_string(),
        rule.ports.clone(),
        rule.peers.clone(),
        format!("{:?}", rule.resolved_family()),
    )
}

/// The rules of a draft as they are collected: per match, the rule every
/// member gets (if the group's evidence supports one) and each member's own.
#[derive(Default)]
struct Drafting {
    rules: BTreeMap<MatchKey, (Option<Rule>, BTreeMap<String, Rule>)>,
    review: Vec<ReviewEntry>,
}

impl Drafting {
    /// Adds a plan rule: every member's, or `member`'s exception.
    fn add(&mut self, direction: FlowDirection, rule: &PlanRule, member: Option<&String>) {
        let new = Rule {
            protocol: rule.protocol,
            ports: rule.ports.clone(),
            family: rule.peers.is_none().then_some(rule.family),
            peers: rule.peers.clone(),
            hosts: Vec::new(),
            approved: false,
            basis: rule.basis.clone(),
            evidence: RuleEvidence {
                connections: rule.evidence.connections,
                first_seen: Some(rule.evidence.first_seen),
                last_seen: Some(rule.evidence.last_seen),
                processes: rule.evidence.processes.iter().cloned().collect(),
                users: rule.evidence.users.iter().cloned().collect(),
            },
        };
        let (shared, own) = self.rules.entry(match_key(direction, &new)).or_default();
        let slot = match member {
            // Every member's plan carries the group's rule with the group's
            // evidence: once is all of it.
            None if shared.is_some() => return,
            None => shared,
            Some(member) => match own.get_mut(member) {
                Some(existing) => return merge_evidence(existing, &new),
                None => {
                    own.insert(member.clone(), new);
                    return;
                }
            },
        };
        match slot {
            Some(existing) => merge_evidence(existing, &new),
            None => *slot = Some(new),
        }
    }

    /// The policy's rules by direction: a match every member gets is one
    /// rule; otherwise the members who did it share one exception.
    fn finish(self) -> (Vec<(FlowDirection, Rule)>, Vec<ReviewEntry>) {
        let mut rules = Vec::new();
        for (key, (shared, own)) in self.rules {
            let direction = key.0;
            if let Some(shared) = shared {
                rules.push((direction, shared));
                continue;
            }
            let mut members = own.into_iter();
            let Some((first_host, mut merged)) = members.next() else {
                continue;
            };
            merged.hosts.push(first_host);
            for (host, rule) in members {
                merge_evidence(&mut merged, &rule);
                merged.hosts.push(host);
            }
            rules.push((direction, merged));
        }
        (rules, self.review)
    }

    fn held_back(&mut self, member: &str, items: &[ReviewItem]) {
        for item in items {
            self.review.push(ReviewEntry {
                host: member.to_owned(),
                direction: item.flow.direction,
                protocol: item.flow.protocol,
                port: item.flow.service_port,
                peer: Prefix::host(item.flow.remote),
                connections: item.flow.connections,
                allowed: false,
                reason: item.reason.clone(),
            });
        }
    }
}

fn merge_evidence(into: &mut Rule, from: &Rule) {
    let (a, b) = (&mut into.evidence, &from.evidence);
    a.connections += b.connections;
    a.first_seen = a
        .first_seen
        .min(b.first_seen)
        .or(a.first_seen.or(b.first_seen));
    a.last_seen = a.last_seen.max(b.last_seen);
    for p in &b.processes {
        if !a.processes.contains(p) {
            a.processes.push(p.clone());
        }
    }
    for u in &b.users {
        if !a.users.contains(u) {
            a.users.push(u.clone());
        }
    }
    a.processes.sort();
    a.users.sort();
}

fn rare_entry(direction: FlowDirection, rule: &Rule, rare_below: u64) -> ReviewEntry {
    let peer = rule
        .peers
        .as_ref()
        .and_then(|p| p.first().copied())
        .unwrap_or_else(|| match rule.resolved_family() {
            connscope_firewall::plan::IpFamily::Ipv4 => "0.0.0.0/0".parse().expect("a network"),
            connscope_firewall::plan::IpFamily::Ipv6 => "::/0".parse().expect("a network"),
        });
    ReviewEntry {
        host: rule.hosts[0].clone(),
        direction,
        protocol: rule.protocol,
        port: rule.ports[0],
        peer,
        connections: rule.evidence.connections,
        allowed: true,
        reason: format!(
            "only this member, {} connection(s) (fewer than {rare_below}): allowed, confirm or remove",
            rule.evidence.connections
        ),
    }
}

fn section_mut(policy: &mut Policy, direction: FlowDirection) -> &mut Vec<Rule> {
    match direction {
        FlowDirection::Inbound => &mut policy.inbound,
        FlowDirection::Outbound => &mut policy.outbound,
    }
}

/// Keeps every approved rule of `previous`: a matching new rule is marked
/// approved (with the new evidence), a rule the new history no longer shows is
/// carried over as it was.
fn keep_approved(policy: &mut Policy, previous: &Policy) {
    for (direction, rules) in previous.sections() {
        for old in rules.iter().filter(|r| r.approved) {
            let section = section_mut(policy, direction);
            let same = |r: &&mut Rule| {
                match_key(direction, r) == match_key(direction, old) && r.hosts == old.hosts
            };
            match section.iter_mut().find(same) {
                Some(new) => new.approved = true,
                None => section.push(old.clone()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::test_support::EventBuilder;
    use connscope_event::{Direction, Timestamp};
    use connscope_store::{AgentId, GroupKind, HostGroup, SqliteStore};

    /// ws1-ws3 use the file server; ws3 also once reaches a database; ws4
    /// only resolves names.
    fn store(dir: &std::path::Path) -> SqliteStore {
        let store = SqliteStore::open(dir.join("s.db")).unwrap();
        let mut seq = 0;
        let mut ingest = |host: &str, local: &str, remote: &str, times: u64| {
            for _ in 0..times {
                seq += 1;
                let e = EventBuilder::connect(local, remote)
                    .at_nanos(1_795_548_137_000_000_000 + seq * 1_000_000_000)
                    .direction(Direction::Outgoing)
                    .sequence(seq as u64)
                    .host(host)
                    .process(7, "/usr/bin/smbclient")
                    .user("alice")
                    .build();
                store.ingest(&AgentId(host.into()), &[e]).unwrap();
            }
        };
        for i in 1..=3 {
            ingest(
                &format!("ws{i}"),
                &format!("10.0.1.{i}:4000{i}"),
                "10.0.0.9:445",
                5,
            );
        }
        ingest("ws3", "10.0.1.3:40100", "10.0.0.20:5432", 1);
        ingest("ws4", "10.0.1.4:40004", "10.0.0.53:53", 4);
        store
            .put_group(&HostGroup {
                name: "ws".into(),
                kind: GroupKind::Names,
                patterns: vec!["ws*".into()],
                labels: Vec::new(),
            })
            .unwrap();
        store
    }

    #[test]
    fn a_group_draft_is_the_members_union_with_rare_exceptions_for_review() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let all = TimeRange {
            from: Timestamp::from_nanos(0),
            to: Timestamp::from_nanos(i64::MAX),
        };
        let policy = draft(
            &store,
            &Target::Group("ws".into()),
            all,
            &DraftOptions::default(),
        )
        .unwrap();
        let text = policy.to_toml();
        // The file server is the group's (3 of 4), the database ws3's alone.
        let smb = policy.outbound.iter().find(|r| r.ports == [445]).unwrap();
        assert!(smb.hosts.is_empty(), "{text}");
        assert!(
            matches!(
                smb.basis,
                Some(Basis::Group {
                    used_by: 3,
                    members: 4,
                    ..
                })
            ),
            "{text}"
        );
        let db = policy.outbound.iter().find(|r| r.ports == [5432]).unwrap();
        assert_eq!(db.hosts, ["ws3"], "{text}");
        assert!(
            policy
                .review
                .iter()
                .any(|r| r.host == "ws3" && r.port == 5432 && r.allowed),
            "{text}"
        );
        assert_eq!(Policy::parse(&text).unwrap(), policy);

        // A person approves the database rule; a re-draft on history without
        // it keeps it.
        let mut approved = policy.clone();
        approved
            .outbound
            .iter_mut()
            .find(|r| r.ports == [5432])
            .unwrap()
            .approved = true;
        let before_db = TimeRange {
            from: all.from,
            to: Timestamp::from_nanos(1_795_548_137_000_000_000 + 15 * 1_000_000_000),
        };
        let redraft = draft(
            &store,
            &Target::Group("ws".into()),
            before_db,
            &DraftOptions {
                previous: Some(approved),
                ..DraftOptions::default()
            },
        )
        .unwrap();
        let kept = redraft.outbound.iter().find(|r| r.ports == [5432]).unwrap();
        assert!(kept.approved && kept.hosts == ["ws3"]);
    }

    #[test]
    fn unknown_groups_and_silent_hosts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let all = TimeRange {
            from: Timestamp::from_nanos(0),
            to: Timestamp::from_nanos(i64::MAX),
        };
        let err = draft(
            &store,
            &Target::Group("nope".into()),
            all,
            &DraftOptions::default(),
        );
        assert!(err.unwrap_err().to_string().contains("no group \"nope\""));
        let err = draft(
            &store,
            &Target::Host("ghost".into()),
            all,
            &DraftOptions::default(),
        );
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("host ghost has no connections"));
    }
}
