//! `groups suggest`: groups the store's history hints at, for the user to
//! adopt or ignore. Nothing here writes: a suggestion becomes a group only
//! when the user adds it (`groups add`, `groups suggest --apply`).
//!
//! Three hints, each cheap and explainable: hosts sharing a subnet (/24 of
//! IPv4, /64 of IPv6 addresses), hosts named alike (`ws-01`, `ws-02` ->
//! `ws-*`), and hosts that use exactly the same services (same servers,
//! ports and protocols outbound), which is what a planner generalising over
//! a group wants its members to have in common. Each proposes at least two
//! members; its members are resolved as [`crate::groups::members`] would,
//! so a name pattern shows every host it would catch, not only the ones
//! that suggested it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use connscope_event::{Direction, Protocol};
use connscope_store::{GroupKind, HostGroup, RollupQuery, Store, TimeRange};
use serde::Serialize;

use crate::groups::{check_group, hosts_seen, resolve, Cidr, MembersError};

/// A group the user may add, with the members it would have now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suggestion {
    pub name: String,
    #[serde(serialize_with = "serialize_kind")]
    pub kind: GroupKind,
    pub patterns: Vec<String>,
    pub hosts: Vec<String>,
    /// Why it is proposed, in a few words.
    pub why: String,
}

fn serialize_kind<S: serde::Serializer>(kind: &GroupKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

impl Suggestion {
    /// The definition `groups suggest --apply` stores.
    pub fn group(&self) -> HostGroup {
        HostGroup {
            name: self.name.clone(),
            kind: self.kind,
            patterns: self.patterns.clone(),
            labels: Vec::new(),
        }
    }
}

/// Suggestions from the history in `range`: subnets, then name patterns,
/// then alike behaviour, each ordered by name. Groups already stored under
/// the same definition are left out.
pub fn suggest(store: &dyn Store, range: TimeRange) -> Result<Vec<Suggestion>, MembersError> {
    let hosts = hosts_seen(store, range)?;
    let existing: BTreeSet<(GroupKind, Vec<String>)> = store
        .groups()?
        .into_iter()
        .map(|g| (g.kind, g.patterns))
        .collect();
    let mut out = Vec::new();
    let mut propose = |name: String, kind, patterns: Vec<String>, why: String| {
        let group = HostGroup {
            name,
            kind,
            patterns,
            labels: Vec::new(),
        };
        if existing.contains(&(group.kind, group.patterns.clone())) || check_group(&group).is_err()
        {
            return Ok::<_, MembersError>(());
        }
        let members = resolve(&group, &hosts)?;
        if members.hosts.len() >= 2 {
            out.push(Suggestion {
                name: group.name,
                kind: group.kind,
                patterns: group.patterns,
                hosts: members.hosts,
                why,
            });
        }
        Ok(())
    };

    let mut subnets: BTreeMap<Cidr, BTreeSet<&str>> = BTreeMap::new();
    for (host, addresses) in &hosts {
        for &ip in addresses {
            if !is_link_local(ip) {
                let prefix = if ip.is_ipv4() { 24 } else { 64 };
                subnets
                    .entry(Cidr::of(ip, prefix))
                    .or_default()
                    .insert(host);
            }
        }
    }
    for (subnet, members) in subnets {
        let name = format!("net-{}", subnet.to_string().replace([':', '.', '/'], "-"));
        let why = format!("{} hosts share {subnet}", members.len());
        propose(name, GroupKind::Addresses, vec![subnet.to_string()], why)?;
    }

    let mut prefixes: BTreeMap<String, usize> = BTreeMap::new();
    for host in hosts.keys() {
        if let Some(prefix) = name_prefix(host) {
            *prefixes.entry(prefix).or_default() += 1;
        }
    }
    for (prefix, count) in prefixes {
        if count >= 2 {
            let name = prefix.trim_end_matches(['-', '_', '.']).to_string();
            let why = format!("{count} host names start {prefix:?} followed by a number");
            propose(name, GroupKind::Names, vec![format!("{prefix}*")], why)?;
        }
    }

    for (i, (services, members)) in alike(store, range)?.into_iter().enumerate() {
        let why = format!("they use the same {} services and no others", services);
        propose(format!("alike-{}", i + 1), GroupKind::Hosts, members, why)?;
    }
    Ok(out)
}

/// `ws-01.corp` -> `ws-`, `web3` -> `web`; none for a name not ending in a
/// number (before its domain) or that is only a number.
fn name_prefix(host: &str) -> Option<String> {
    let short = host.split('.').next().unwrap_or(host);
    let prefix = short.trim_end_matches(|c: char| c.is_ascii_digit());
    (prefix.len() < short.len() && !prefix.trim_end_matches(['-', '_']).is_empty())
        .then(|| prefix.to_string())
}

/// Shared by every interface, so never a sign of belonging together.
fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Sets of at least two hosts whose outbound services (server address,
/// port, protocol) in `range` are the same non-empty set, with the set's
/// size; in the order of their first member.
fn alike(store: &dyn Store, range: TimeRange) -> Result<Vec<(usize, Vec<String>)>, MembersError> {
    let mut used: BTreeMap<String, BTreeSet<(IpAddr, u16, Protocol)>> = BTreeMap::new();
    for edge in store.edge_totals(&RollupQuery { range, host: None })? {
        if edge.direction == Direction::Outgoing {
            used.entry(edge.host).or_default().insert((
                edge.remote_ip,
                edge.service_port,
                edge.protocol,
            ));
        }
    }
    let mut by_set: BTreeMap<BTreeSet<(IpAddr, u16, Protocol)>, Vec<String>> = BTreeMap::new();
    for (host, services) in used {
        by_set.entry(services).or_default().push(host);
    }
    let mut sets: Vec<(usize, Vec<String>)> = by_set
        .into_iter()
        .filter(|(_, hosts)| hosts.len() >= 2)
        .map(|(services, hosts)| (services.len(), hosts))
        .collect();
    sets.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(sets)
}
