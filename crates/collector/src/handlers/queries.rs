//! Read side of the API: what `/api/v1/hosts` and `/api/v1/graph` answer.

use std::collections::BTreeMap;

use connscope_event::Timestamp;
use connscope_query::args::last_day;
use connscope_query::{build_graph, ArgError, Graph, GraphFilter, GraphFilterArgs, TimeRangeArgs};
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

/// Query parameters of `/api/v1/graph`; all optional, the range a day back
/// from now by default. Their forms are `connscope_query::args`'s, the same as
/// the commands' flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphParams {
    #[serde(flatten)]
    pub range: TimeRangeArgs,
    #[serde(flatten)]
    pub filter: GraphFilterArgs,
}

/// A query parameter that cannot be used; names the parameter.
#[derive(Debug, thiserror::Error)]
#[error("query parameter {0}")]
pub struct ParamError(#[from] pub ArgError);

impl GraphParams {
    /// The time range and filter these parameters ask for, relative to `now`.
    pub fn resolve(&self, now: Timestamp) -> Result<(TimeRange, GraphFilter), ParamError> {
        Ok((
            self.range.resolve(now, last_day(now))?,
            self.filter.resolve()?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Query;
    use axum::http::Uri;

    fn params(query: &str) -> Result<GraphParams, String> {
        let uri: Uri = format!("/api/v1/graph?{query}").parse().unwrap();
        Query::<GraphParams>::try_from_uri(&uri)
            .map(|Query(p)| p)
            .map_err(|e| e.body_text())
    }

    #[test]
    fn parameters_by_name_and_unknown_ones_refused() {
        let now = Timestamp::from_nanos(7 * 86_400 * 1_000_000_000);
        let (range, filter) = params("from=-2d&port=22&direction=incoming&exe=sshd")
            .unwrap()
            .resolve(now)
            .unwrap();
        assert_eq!(range.from.as_nanos(), 5 * 86_400 * 1_000_000_000);
        assert_eq!(range.to, now);
        assert_eq!(filter.port, Some(22));
        assert_eq!(filter.executable.as_deref(), Some("sshd"));
        let (range, _) = params("").unwrap().resolve(now).unwrap();
        assert_eq!(range, last_day(now));
        let unknown = params("from=-1h&color=red").unwrap_err();
        assert!(unknown.contains("unknown field `color`"), "{unknown}");
        let bad = params("port=http").unwrap().resolve(now).unwrap_err();
        assert!(
            bad.to_string().starts_with("query parameter port: "),
            "{bad}"
        );
    }
}
