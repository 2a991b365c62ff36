//! The thin adapter from the store to [`ObservedFlow`]: one host's hourly
//! rollup edges (`Store::edge_totals`), summed per edge over the range, with
//! their processes and users. Rollups rather than raw events so a plan over a
//! year of traffic reads hours, not billions of rows.

use std::collections::BTreeMap;
use std::net::IpAddr;

use connscope_event::{Direction, Protocol, Timestamp};
use connscope_query::groups::{members, Cidr, MembersError};
use connscope_query::naming::RemoteNames;
use connscope_store::{GroupKind, RollupQuery, Store, StoreError, TimeRange};

use crate::by_name::NameSetMembers;
use crate::fleet::GroupMembers;
use crate::flow::{FlowDirection, ObservedFlow};
use crate::net::Prefix;

/// What the store holds for a host, ready for planning and checking.
#[derive(Debug, Clone, Default)]
pub struct StoredFlows {
    pub flows: Vec<ObservedFlow>,
    /// Rollup edges of unknown direction (e.g. imported tcpspy logs, which do
    /// not say who connected), left out: a rule needs to know the side.
    pub unknown_direction_edges: usize,
}

/// The host's flows in `range` (rollup hours, so widened to whole hours).
/// Only established connections count; failed attempts are not evidence that
/// something should be allowed.
pub fn observed_flows(
    store: &dyn Store,
    host: &str,
    range: TimeRange,
) -> Result<StoredFlows, StoreError> {
    let mut fleet = read_flows(store, Some(host), range)?;
    Ok(fleet.remove(host).unwrap_or_default())
}

/// Every logging host's flows in `range`, read in one pass over the rollups:
/// what a fleet planner learns from and a backtest replays.
pub fn fleet_flows(
    store: &dyn Store,
    range: TimeRange,
) -> Result<BTreeMap<String, StoredFlows>, StoreError> {
    read_flows(store, None, range)
}

/// The store's host groups with their members among the hosts seen in
/// `range`, and an address group's ranges as its declared address space, as
/// fleet planners take them.
pub fn fleet_groups(
    store: &dyn Store,
    range: TimeRange,
) -> Result<Vec<GroupMembers>, MembersError> {
    let mut declared: BTreeMap<String, Vec<Prefix>> = BTreeMap::new();
    for group in store.groups()? {
        if group.kind != GroupKind::Addresses {
            continue;
        }
        let mut ranges = Vec::new();
        for pattern in &group.patterns {
            let cidr = Cidr::parse(pattern).map_err(|source| MembersError::Group {
                name: group.name.clone(),
                source,
            })?;
            ranges
                .push(Prefix::new(cidr.network, cidr.prefix).expect("a checked range is a prefix"));
        }
        declared.insert(group.name, ranges);
    }
    Ok(members(store, range)?
        .into_iter()
        .map(|group| GroupMembers {
            declared: declared.remove(&group.name).unwrap_or_default(),
            name: group.name,
            hosts: group.hosts.into_iter().collect(),
        })
        .collect())
}

/// Which name sets held the remote address of each of `host`'s outbound
/// flows in `range`, hour by hour, as the store's named connections say
/// ([`crate::by_name`]): what `firewall check` fills a ruleset's name sets
/// with.
pub fn name_set_members(
    store: &dyn Store,
    host: &str,
    range: TimeRange,
) -> Result<NameSetMembers, StoreError> {
    let names = RemoteNames::load(store, range)?;
    let totals = store.edge_totals_by_hour(&RollupQuery {
        range,
        host: Some(host.to_owned()),
    })?;
    type Key = (IpAddr, IpAddr, u16, Protocol);
    let mut hours: BTreeMap<Key, BTreeMap<Timestamp, u64>> = BTreeMap::new();
    for hourly in totals {
        let t = &hourly.total;
        if t.host != host || t.direction != Direction::Outgoing {
            continue;
        }
        let edge = hours
            .entry((t.local_ip, t.remote_ip, t.service_port, t.protocol))
            .or_default();
        for (hour, connections) in hourly.hours {
            *edge.entry(hour).or_default() += connections;
        }
    }
    let hours: Vec<(Key, Vec<(Timestamp, u64)>)> = hours
        .into_iter()
        .map(|(key, by_hour)| (key, by_hour.into_iter().collect()))
        .collect();
    Ok(NameSetMembers::new(
        host,
        hours.iter().map(|((local, remote, port, protocol), h)| {
            (*local, *remote, *port, *protocol, &h[..])
        }),
        &names,
    ))
}

/// One host's flows, or every host's: summed per edge, per host.
fn read_flows(
    store: &dyn Store,
    host: Option<&str>,
    range: TimeRange,
) -> Result<BTreeMap<String, StoredFlows>, StoreError> {
    let totals = store.edge_totals(&RollupQuery {
        range,
        host: host.map(str::to_owned),
    })?;
    type Key = (FlowDirection, IpAddr, IpAddr, u16, Protocol);
    let mut hosts: BTreeMap<String, (BTreeMap<Key, ObservedFlow>, usize)> = BTreeMap::new();
    for total in totals {
        if host.is_some_and(|h| total.host != h) || total.counts.connections == 0 {
            continue;
        }
        let (edges, unknown) = hosts.entry(total.host.clone()).or_default();
        let direction = match total.direction {
            Direction::Incoming => FlowDirection::Inbound,
            Direction::Outgoing => FlowDirection::Outbound,
            Direction::Unknown => {
                *unknown += 1;
                continue;
            }
        };
        let key = (
            direction,
            total.local_ip,
            total.remote_ip,
            total.service_port,
            total.protocol,
        );
        let flow = edges.entry(key).or_insert_with(|| ObservedFlow {
            direction,
            protocol: total.protocol,
            local: total.local_ip,
            remote: total.remote_ip,
            service_port: total.service_port,
            connections: 0,
            first_seen: total.counts.first_seen,
            last_seen: total.counts.last_seen,
            processes: Vec::new(),
            users: Vec::new(),
        });
        flow.connections += total.counts.connections;
        flow.first_seen = flow.first_seen.min(total.counts.first_seen);
        flow.last_seen = flow.last_seen.max(total.counts.last_seen);
        if !total.executable.is_empty() && !flow.processes.contains(&total.executable) {
            flow.processes.push(total.executable);
        }
        if !total.user.is_empty() && !flow.users.contains(&total.user) {
            flow.users.push(total.user);
        }
    }
    Ok(hosts
        .into_iter()
        .map(|(host, (edges, unknown))| {
            let flows = StoredFlows {
                flows: edges.into_values().collect(),
                unknown_direction_edges: unknown,
            };
            (host, flows)
        })
        .collect())
}
