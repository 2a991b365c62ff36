//! Which policy a host runs: the assignment that applies to it among the
//! store's assignments to groups and hosts.
//!
//! A host assignment beats any group assignment (the exception an
//! administrator made for one machine). Otherwise the host takes the first
//! assigned group it belongs to in the store's group order, the planners'
//! rule ([`Store::groups`]: the order groups were first added); the other
//! assigned groups it is in are named as shadowed, so `policy status` says
//! why a host runs what it runs. Membership is the plans' own
//! ([`connscope_query::groups::resolve`]): name patterns and host lists by
//! the host's name, address ranges by the local addresses it was seen with
//! in the last [`MEMBERSHIP_WINDOW`], so a host that left a range leaves its
//! group's policy with it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use connscope_event::Timestamp;
use connscope_query::groups::{hosts_seen, resolve, MembersError};
use connscope_store::{
    AssignmentTarget, HostGroup, PolicyAssignment, Store, StoreError, TimeRange,
};

/// How far back the addresses a host was seen with count for its address
/// groups: 30 days.
pub const MEMBERSHIP_WINDOW: i64 = 30 * 86_400 * 1_000_000_000;

/// The assignment a host runs and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAssignment {
    pub host: String,
    /// Its target says whether it came from the host or from a group.
    pub assignment: PolicyAssignment,
    /// Assigned groups the host is also in, which lose to `assignment`.
    pub shadowed: Vec<String>,
}

/// Why a host's assignment could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Members(#[from] MembersError),
}

/// The store's assignments and groups, read once, to resolve hosts with.
pub struct Assignments {
    assignments: Vec<PolicyAssignment>,
    groups: Vec<HostGroup>,
    window: TimeRange,
}

impl Assignments {
    /// Reads the current assignments and the groups; `now` ends the
    /// membership window.
    pub fn load(store: &dyn Store, now: Timestamp) -> Result<Assignments, AssignError> {
        Ok(Assignments {
            assignments: store.policy_assignments()?,
            groups: store.groups()?,
            window: TimeRange {
                from: Timestamp::from_nanos(now.as_nanos().saturating_sub(MEMBERSHIP_WINDOW)),
                to: Timestamp::from_nanos(i64::MAX),
            },
        })
    }

    /// `host`'s assignment, its addresses read from the store.
    pub fn for_host(
        &self,
        store: &dyn Store,
        host: &str,
    ) -> Result<Option<HostAssignment>, AssignError> {
        if self.assignments.is_empty() {
            return Ok(None);
        }
        let addresses: BTreeSet<IpAddr> = store
            .host_addresses()?
            .into_iter()
            .filter(|a| a.host == host && a.last_seen >= self.window.from)
            .map(|a| a.ip)
            .collect();
        self.pick(host, addresses)
    }

    /// Every host the store knows (seen in the window, reporting a
    /// firewall, or assigned by name), each with its assignment if any.
    pub fn all_hosts(
        &self,
        store: &dyn Store,
    ) -> Result<BTreeMap<String, Option<HostAssignment>>, AssignError> {
        let mut hosts = hosts_seen(store, self.window)?;
        for state in store.firewall_states()? {
            hosts.entry(state.host).or_default();
        }
        for assignment in &self.assignments {
            if let AssignmentTarget::Host(host) = &assignment.target {
                hosts.entry(host.clone()).or_default();
            }
        }
        hosts
            .into_iter()
            .map(|(host, addresses)| {
                let picked = self.pick(&host, addresses)?;
                Ok((host, picked))
            })
            .collect()
    }

    fn pick(
        &self,
        host: &str,
        addresses: BTreeSet<IpAddr>,
    ) -> Result<Option<HostAssignment>, AssignError> {
        let of_host = BTreeMap::from([(host.to_owned(), addresses)]);
        let mut groups = Vec::new();
        for group in &self.groups {
            let Some(assignment) = self
                .assignments
                .iter()
                .find(|a| a.target == AssignmentTarget::Group(group.name.clone()))
            else {
                continue;
            };
            if !resolve(group, &of_host)?.hosts.is_empty() {
                groups.push(assignment);
            }
        }
        let own = self
            .assignments
            .iter()
            .find(|a| a.target == AssignmentTarget::Host(host.to_owned()));
        let (chosen, shadowed) = match own {
            Some(own) => (own, &groups[..]),
            None => match groups.split_first() {
                Some((first, rest)) => (*first, rest),
                None => return Ok(None),
            },
        };
        Ok(Some(HostAssignment {
            host: host.to_owned(),
            assignment: chosen.clone(),
            shadowed: shadowed
                .iter()
                .map(|a| a.target.name().to_owned())
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::test_support::EventBuilder;
    use connscope_store::{AgentId, AssignedVersion, AssignmentChange, GroupKind, SqliteStore};

    fn assign(store: &SqliteStore, target: AssignmentTarget, policy: &str) -> PolicyAssignment {
        store
            .assign_policy(&AssignmentChange {
                target,
                assigned: Some(AssignedVersion {
                    policy: policy.into(),
                    version: 1,
                    staging: Default::default(),
                }),
                at: Timestamp::from_nanos(1),
                by: "test".into(),
            })
            .unwrap()
    }

    fn group(store: &SqliteStore, name: &str, kind: GroupKind, pattern: &str) {
        store
            .put_group(&HostGroup {
                name: name.into(),
                kind,
                patterns: vec![pattern.into()],
                labels: vec![],
            })
            .unwrap();
    }

    #[test]
    fn a_host_assignment_beats_groups_and_the_first_group_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
        let now = Timestamp::now();
        // ws-01 is seen at 10.1.0.5: in both the name group and the range group.
        let seen = EventBuilder::connect("10.1.0.5:40000", "10.9.0.1:443")
            .host("ws-01")
            .sequence(1)
            .at_nanos(now.as_nanos() - 1_000_000_000)
            .build();
        store.ingest(&AgentId("ws-01".into()), &[seen]).unwrap();
        group(&store, "office", GroupKind::Addresses, "10.1.0.0/16");
        group(&store, "workstations", GroupKind::Names, "ws-*");
        assign(&store, AssignmentTarget::Group("workstations".into()), "ws");
        let by_range = assign(&store, AssignmentTarget::Group("office".into()), "office");

        let resolved = Assignments::load(&store, now).unwrap();
        let ws01 = resolved.for_host(&store, "ws-01").unwrap().unwrap();
        assert_eq!(ws01.assignment, by_range, "office was added first");
        assert_eq!(ws01.shadowed, ["workstations"]);
        // ws-02 was never seen: names still match, the range does not.
        let ws02 = resolved.for_host(&store, "ws-02").unwrap().unwrap();
        assert_eq!(
            ws02.assignment.target,
            AssignmentTarget::Group("workstations".into())
        );
        assert!(ws02.shadowed.is_empty());
        assert_eq!(resolved.for_host(&store, "db-01").unwrap(), None);

        let pinned = assign(&store, AssignmentTarget::Host("ws-01".into()), "special");
        let resolved = Assignments::load(&store, now).unwrap();
        let ws01 = resolved.for_host(&store, "ws-01").unwrap().unwrap();
        assert_eq!(ws01.assignment, pinned);
        assert_eq!(ws01.shadowed, ["office", "workstations"]);
        let all = resolved.all_hosts(&store).unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["ws-01"]);
    }
}
