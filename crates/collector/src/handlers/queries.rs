//! Read side of the API: what `/api/v1/hosts` and `/api/v1/graph` answer.

use std::collections::BTreeMap;

use connscope_event::{Direction, Protocol, Timestamp};
use connscope_query::{build_graph, parse_time_arg, Graph, GraphFilter, Scope};
use connscope_store::{Store, StoreError, TimeRange};
use serde::{Deserialize, Serialize};

/// One sender of events as `/api/v1/hosts` lists it.
#[derive(Debug, Default, Serialize)]
pub struct HostRow {
    /// Agent id (from its token), or `syslog@HOST` for syslog senders.
    pub agent: String,
    /// The agent state's instance id (one row per state); empty when the
    /// sender sends none.
    pub instance: String,
    /// Another state of this agent came first: restarted without its state.
    pub lost_state: bool,
    /// Runs of this state, and numbers more than one of them used (a state
    /// restored from a snapshot).
    pub boots: u64,
    pub reused: u64,
    /// Numbers resent with other content than stored.
    pub conflicts: u64,
    /// Host name in its most recent batch.
    pub host: String,
    pub events: u64,
    /// `None` for an agent none of whose batches were stored.
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    /// Stored sequence ranges, inclusive; empty for unnumbered (syslog) senders.
    pub sequences: Vec<(u64, u64)>,
    /// Sequence ranges missing between the stored ones.
    pub gaps: Vec<(u64, u64)>,
    /// Number of sequence numbers in `gaps`.
    pub missing: u64,
    /// Of `missing`, the numbers the agent reported deleting unsent from its
    /// full spool.
    pub dropped: u64,
    /// Batches the collector refused, by reason (nothing of them is stored).
    pub refused: BTreeMap<String, u64>,
    /// `dropped` by reason.
    pub dropped_by_reason: Vec<(String, u64)>,
    /// `missing - dropped`.
    pub unexplained: u64,
    /// When the agent was not running (from, to), RFC 3339.
    pub downtime: Vec<(String, String)>,
}

/// Every agent with stored events or refused batches, ordered by agent id.
pub fn hosts(store: &dyn Store) -> Result<Vec<HostRow>, StoreError> {
    let mut refused: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for r in store.refusals()? {
        refused
            .entry(r.agent.0)
            .or_default()
            .insert(r.reason, r.batches);
    }
    let mut rows: Vec<HostRow> = store
        .agents()?
        .into_iter()
        .map(|a| {
            let gaps = a.gaps();
            HostRow {
                refused: refused.remove(&a.agent.0).unwrap_or_default(),
                agent: a.agent.0,
                instance: a.instance,
                lost_state: a.lost_state,
                boots: a.boots,
                reused: a.reused,
                conflicts: a.conflicts,
                host: a.host,
                events: a.events,
                first_seen: Some(a.first_seen.to_string()),
                last_seen: Some(a.last_seen.to_string()),
                sequences: a.sequences.ranges().to_vec(),
                gaps: gaps.ranges,
                missing: gaps.missing,
                dropped: gaps.dropped,
                dropped_by_reason: gaps.dropped_by_reason,
                unexplained: gaps.unexplained,
                downtime: a
                    .downtime
                    .iter()
                    .map(|(from, to)| (from.to_string(), to.to_string()))
                    .collect(),
            }
        })
        .collect();
    // Refusals are per agent (token), not per state: they go with the first
    // row of their agent, or make one when nothing of the agent was stored.
    rows.extend(refused.into_iter().map(|(agent, refused)| HostRow {
        agent,
        refused,
        ..HostRow::default()
    }));
    rows.sort_by(|a, b| a.agent.cmp(&b.agent));
    Ok(rows)
}

/// Query parameters of `/api/v1/graph`; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphParams {
    /// Start of the range: RFC 3339, `now` or `-24h` style (default `-24h`).
    pub from: Option<String>,
    /// End of the range (default `now`).
    pub to: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub protocol: Option<String>,
    /// Full executable path or file name.
    pub exe: Option<String>,
    pub user: Option<String>,
    /// `outgoing` or `incoming`.
    pub direction: Option<String>,
    /// `internal` or `external`.
    pub scope: Option<String>,
}

/// A query parameter that cannot be used; names the parameter.
#[derive(Debug, thiserror::Error)]
#[error("query parameter {name}: {reason}")]
pub struct ParamError {
    pub name: &'static str,
    pub reason: String,
}

impl GraphParams {
    /// The time range and filter these parameters ask for, relative to `now`.
    pub fn resolve(&self, now: Timestamp) -> Result<(TimeRange, GraphFilter), ParamError> {
        let time = |name: &'static str, value: &Option<String>, default: &str| {
            parse_time_arg(
                value
                    .as_deref()
                    .filter(|v| !v.is_empty())
                    .unwrap_or(default),
                now,
            )
            .map_err(|e| ParamError {
                name,
                reason: e.to_string(),
            })
        };
        let range = TimeRange {
            from: time("from", &self.from, "-24h")?,
            to: time("to", &self.to, "now")?,
        };
        if range.from >= range.to {
            return Err(ParamError {
                name: "from",
                reason: "must be before `to`".into(),
            });
        }
        let text = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
        let protocol = match text(&self.protocol) {
            None => None,
            Some(p) => Some(p.parse::<Protocol>().map_err(|e| ParamError {
                name: "protocol",
                reason: e.to_string(),
            })?),
        };
        let direction = match self.direction.as_deref().filter(|v| !v.is_empty()) {
            None => None,
            Some("outgoing") => Some(Direction::Outgoing),
            Some("incoming") => Some(Direction::Incoming),
            Some(other) => {
                return Err(ParamError {
                    name: "direction",
                    reason: format!("{other:?}: expected outgoing or incoming"),
                })
            }
        };
        let scope = match self.scope.as_deref().filter(|v| !v.is_empty()) {
            None => None,
            Some("internal") => Some(Scope::Internal),
            Some("external") => Some(Scope::External),
            Some(other) => {
                return Err(ParamError {
                    name: "scope",
                    reason: format!("{other:?}: expected internal or external"),
                })
            }
        };
        Ok((
            range,
            GraphFilter {
                host: text(&self.host),
                port: self.port,
                protocol,
                executable: text(&self.exe),
                user: text(&self.user),
                direction,
                scope,
            },
        ))
    }
}

/// The graph JSON (see `connscope_query::graph`) for the parameters.
pub fn graph(
    store: &dyn Store,
    range: TimeRange,
    filter: &GraphFilter,
) -> Result<Graph, StoreError> {
    build_graph(store, range, filter)
}
