//! The map's firewall mode: what a proposed ruleset would do to each edge of
//! the graph that one host logged.
//!
//! The checker's unit is one host's flow (direction, local and peer address);
//! the map's is a graph edge. [`connscope_query::logged_edge`] says which edge
//! a flow falls on, so verdicts come back keyed by the graph's own
//! [`EdgeId`]s and nobody rebuilds them. Several flows can fall on one edge (a
//! host with two addresses), so an edge is `blocked` or `allowed` only when
//! all of its flows are; otherwise it is `maybe-blocked`.

use std::collections::BTreeMap;

use connscope_event::{Direction, Protocol};
use connscope_query::join::HostDirectory;
use connscope_query::{logged_edge, EdgeEnds, EdgeId, NodeId};
use connscope_store::{Store, StoreError, TimeRange};
use serde::Serialize;

use crate::check::{check, describe, Decider, Outcome};
use crate::flow::{FlowDirection, ObservedFlow};
use crate::from_store::observed_flows;
use crate::nft::Ruleset;

/// The answer: one verdict per graph edge of the host in the range.
#[derive(Debug, Serialize)]
pub struct EdgeChecks {
    pub host: String,
    pub from: String,
    pub to: String,
    /// Edges per verdict.
    pub allowed: usize,
    pub blocked: usize,
    pub maybe_blocked: usize,
    pub edges: Vec<EdgeVerdict>,
    /// Statements of the ruleset that are not evaluated (treated as unknown).
    pub unsupported: Vec<NotEvaluated>,
    /// Edges of unknown direction (imported tcpspy logs), not checked.
    pub unknown_direction_edges: usize,
}

#[derive(Debug, Serialize)]
pub struct NotEvaluated {
    pub location: String,
    pub text: String,
}

/// One graph edge (ids as in the graph) and what the ruleset does to it.
#[derive(Debug, Serialize)]
pub struct EdgeVerdict {
    pub id: EdgeId,
    pub source: NodeId,
    pub target: NodeId,
    pub port: u16,
    pub protocol: String,
    /// `allowed`, `blocked` or `maybe-blocked`.
    pub verdict: &'static str,
    pub connections: u64,
    /// Rules or policies that drop it (`LOCATION: table ... chain ...: RULE`).
    pub dropped_by: Vec<String>,
    /// Accept rules that let it through.
    pub accepted_by: Vec<String>,
    /// Matches that could not be decided, as written.
    pub unknowns: Vec<String>,
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// The graph edge a flow of `host` falls on.
fn edge_of(host: &str, flow: &ObservedFlow, hosts: &HostDirectory) -> Option<EdgeEnds> {
    let direction = match flow.direction {
        FlowDirection::Inbound => Direction::Incoming,
        FlowDirection::Outbound => Direction::Outgoing,
    };
    logged_edge(
        host,
        direction,
        flow.remote,
        flow.service_port,
        flow.protocol,
        hosts,
    )
}

/// Checks every flow of `host` in `range` against `ruleset` and folds the
/// verdicts per graph edge.
pub fn check_edges(
    store: &dyn Store,
    host: &str,
    range: TimeRange,
    ruleset: &Ruleset,
) -> Result<EdgeChecks, StoreError> {
    let stored = observed_flows(store, host, range)?;
    let hosts = HostDirectory::new(&store.host_addresses()?);
    let verdicts = check(ruleset, &stored.flows);
    type Key = (NodeId, NodeId, u16, Protocol);
    let mut edges: BTreeMap<Key, (Vec<Outcome>, EdgeVerdict)> = BTreeMap::new();
    for (flow, verdict) in stored.flows.iter().zip(&verdicts) {
        let Some(ends) = edge_of(host, flow, &hosts) else {
            continue;
        };
        let key = (
            ends.source.clone(),
            ends.target.clone(),
            flow.service_port,
            flow.protocol,
        );
        let (outcomes, edge) = edges.entry(key).or_insert_with(|| {
            (
                Vec::new(),
                EdgeVerdict {
                    id: ends.id,
                    source: ends.source,
                    target: ends.target,
                    port: flow.service_port,
                    protocol: flow.protocol.to_string(),
                    verdict: "allowed",
                    connections: 0,
                    dropped_by: Vec::new(),
                    accepted_by: Vec::new(),
                    unknowns: Vec::new(),
                },
            )
        });
        outcomes.push(verdict.outcome);
        edge.connections += flow.connections;
        for d in &verdict.dropped_by {
            push_unique(&mut edge.dropped_by, describe(ruleset, *d));
        }
        for a in &verdict.accepted_by {
            push_unique(&mut edge.accepted_by, describe(ruleset, Decider::Rule(*a)));
        }
        for u in &verdict.unknowns {
            push_unique(&mut edge.unknowns, u.clone());
        }
    }
    let mut answer = EdgeChecks {
        host: host.to_owned(),
        from: range.from.to_string(),
        to: range.to.to_string(),
        allowed: 0,
        blocked: 0,
        maybe_blocked: 0,
        edges: Vec::with_capacity(edges.len()),
        unsupported: ruleset
            .unsupported
            .iter()
            .map(|u| NotEvaluated {
                location: u.location.to_string(),
                text: u.text.clone(),
            })
            .collect(),
        unknown_direction_edges: stored.unknown_direction_edges,
    };
    for (outcomes, mut edge) in edges.into_values() {
        let all = |o: Outcome| outcomes.iter().all(|x| *x == o);
        edge.verdict = if all(Outcome::Allowed) {
            answer.allowed += 1;
            "allowed"
        } else if all(Outcome::Blocked) {
            answer.blocked += 1;
            "blocked"
        } else {
            answer.maybe_blocked += 1;
            "maybe-blocked"
        };
        answer.edges.push(edge);
    }
    Ok(answer)
}
