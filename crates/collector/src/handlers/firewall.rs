//! `POST /api/v1/firewall/check`: which edges of the map a proposed ruleset
//! would block, for the map's firewall mode.
//!
//! The checking itself is `connscope_firewall::check`, the same replay as
//! `connscope firewall check`; this module only reads the ruleset from the
//! request body and translates between the checker's unit (one host's flow:
//! direction, local and peer address) and the map's (a graph edge from a
//! client node to a service or external node). Several flows can fall on one
//! edge (a host with two addresses), so an edge is `blocked` or `allowed` only
//! when all of its flows are; otherwise it is `maybe-blocked`.
//!
//! The ruleset comes from the browser and is untrusted: its size is bounded,
//! `include` is refused (the collector reads no files for a request), and the
//! parser reports errors with line and column instead of failing opaquely.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use connscope_event::{Protocol, Timestamp};
use connscope_firewall::check::describe;
use connscope_firewall::nft::json::{parse_json, JsonRulesetError};
use connscope_firewall::nft::{parse_str, Ruleset};
use connscope_firewall::{check, FlowDirection, ObservedFlow, Outcome};
use connscope_query::join::HostDirectory;
use connscope_store::{is_host_address, Store, StoreError, TimeRange};
use serde::{Deserialize, Serialize};

use crate::handlers::queries::GraphParams;
use crate::kit::{authorize_read, read_body, ApiError, AppState};

/// The largest ruleset accepted, in bytes: far above real host firewalls,
/// far below anything that could hurt the collector.
pub const RULESET_LIMIT: usize = 1 << 20;

/// Query parameters: the host whose firewall it is, and the time range.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckParams {
    pub host: Option<String>,
    /// As for `/api/v1/graph` (default `-24h`).
    pub from: Option<String>,
    /// As for `/api/v1/graph` (default `now`).
    pub to: Option<String>,
}

/// A ruleset that cannot be read: why, and where (1-based) when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulesetError {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

/// Reads nft text, or `nft -j` JSON when it starts with `{` (as the CLI does).
pub fn read_ruleset(text: &str) -> Result<Ruleset, RulesetError> {
    if text.trim_start().starts_with('{') {
        return parse_json(text).map_err(|e| {
            let (line, column) = match &e {
                JsonRulesetError::Syntax { line, column, .. } => {
                    (u32::try_from(*line).ok(), u32::try_from(*column).ok())
                }
                JsonRulesetError::Shape(_) => (None, None),
            };
            RulesetError {
                error: format!("ruleset: {e}"),
                line,
                column,
            }
        });
    }
    parse_str("ruleset", text).map_err(|e| RulesetError {
        error: e.to_string(),
        line: (e.line > 0).then_some(e.line),
        column: (e.col > 0).then_some(e.col),
    })
}

/// The answer: one verdict per graph edge of the host in the range.
#[derive(Debug, Serialize)]
pub struct CheckAnswer {
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

/// One graph edge (ids as in `/api/v1/graph`) and what the ruleset does to it.
#[derive(Debug, Serialize)]
pub struct EdgeVerdict {
    pub source: String,
    pub target: String,
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

/// The graph edge a flow of `host` is part of: the same node ids as
/// `connscope_query`'s graph (a peer address that belongs to a monitored host
/// is that host; a loopback address is the host itself).
fn edge_ends(host: &str, flow: &ObservedFlow, hosts: &HostDirectory) -> (String, String) {
    let peer_host = if is_host_address(flow.remote) {
        hosts.host_of(flow.remote)
    } else {
        Some(host)
    };
    let service = |h: &str| format!("service:{h}:{}/{}", flow.service_port, flow.protocol);
    let external = || format!("external:{}", flow.remote);
    match flow.direction {
        FlowDirection::Inbound => (
            peer_host.map_or_else(external, |h| format!("host:{h}")),
            service(host),
        ),
        FlowDirection::Outbound => (
            format!("host:{host}"),
            peer_host.map_or_else(external, service),
        ),
    }
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Checks every flow of `host` in `range` and folds the verdicts per edge.
pub fn check_host(
    store: &dyn Store,
    host: &str,
    range: TimeRange,
    ruleset: &Ruleset,
) -> Result<CheckAnswer, StoreError> {
    let stored = connscope_firewall::from_store::observed_flows(store, host, range)?;
    let hosts = HostDirectory::new(&store.host_addresses()?);
    let verdicts = check(ruleset, &stored.flows);
    type Key = (String, String, u16, Protocol);
    let mut edges: BTreeMap<Key, (Vec<Outcome>, EdgeVerdict)> = BTreeMap::new();
    for (flow, verdict) in stored.flows.iter().zip(&verdicts) {
        let (source, target) = edge_ends(host, flow, &hosts);
        let key = (
            source.clone(),
            target.clone(),
            flow.service_port,
            flow.protocol,
        );
        let (outcomes, edge) = edges.entry(key).or_insert_with(|| {
            (
                Vec::new(),
                EdgeVerdict {
                    source,
                    target,
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
            push_unique(
                &mut edge.accepted_by,
                describe(ruleset, connscope_firewall::check::Decider::Rule(*a)),
            );
        }
        for u in &verdict.unknowns {
            push_unique(&mut edge.unknowns, u.clone());
        }
    }
    let mut answer = CheckAnswer {
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

/// A refusal: the API's usual one, or a ruleset error with its position.
pub(crate) enum Refusal {
    Api(ApiError),
    Ruleset(RulesetError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        Refusal::Api(e)
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        Refusal::Api(e.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Api(e) => e.into_response(),
            Refusal::Ruleset(e) => (StatusCode::BAD_REQUEST, Json(e)).into_response(),
        }
    }
}

pub(crate) async fn check_handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<CheckParams>, QueryRejection>,
    body: Body,
) -> Result<Json<CheckAnswer>, Refusal> {
    authorize_read(&state, &headers)?;
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let host = params.host.filter(|h| !h.is_empty()).ok_or_else(|| {
        bad("query parameter host: required (the host the ruleset is for)".into())
    })?;
    let (range, _) = GraphParams {
        from: params.from,
        to: params.to,
        ..GraphParams::default()
    }
    .resolve(Timestamp::now())
    .map_err(|e| bad(e.to_string()))?;
    let body = read_body(body, RULESET_LIMIT).await?;
    let text =
        String::from_utf8(body).map_err(|e| bad(format!("the ruleset is not UTF-8 text: {e}")))?;
    let store = state.store.clone();
    // Parsing (up to a megabyte, with variable expansion) and the store are
    // CPU and disk work: off the reactor.
    let answer = tokio::task::spawn_blocking(move || {
        let ruleset = read_ruleset(&text).map_err(Refusal::Ruleset)?;
        Ok::<_, Refusal>(check_host(store.as_ref(), &host, range, &ruleset)?)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))??;
    Ok(Json(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_ruleset_names_line_and_column() {
        let err =
            read_ruleset("table inet f {\n  chain input {\n    tcp dport 70000 accept\n  }\n}\n")
                .unwrap_err();
        assert_eq!(err.line, Some(3), "{err:?}");
        assert!(err.column.is_some(), "{err:?}");
        assert!(err.error.starts_with("ruleset:3:"), "{err:?}");

        let err = read_ruleset("{\"nftables\": [\n  {\"table\": }\n]}").unwrap_err();
        assert_eq!((err.line, err.column.is_some()), (Some(2), true), "{err:?}");

        let err = read_ruleset("include \"/etc/passwd\"\n").unwrap_err();
        assert_eq!(err.line, Some(1), "{err:?}");
    }

    #[test]
    fn flows_land_on_the_graphs_edge_ids() {
        let hosts = HostDirectory::new(&[connscope_store::HostAddress {
            host: "db1".into(),
            ip: "10.0.0.2".parse().unwrap(),
            first_seen: Timestamp::from_nanos(1),
            last_seen: Timestamp::from_nanos(1),
        }]);
        let flow = |direction, remote: &str, port| ObservedFlow {
            direction,
            protocol: Protocol::Tcp,
            local: "10.0.0.1".parse().unwrap(),
            remote: remote.parse().unwrap(),
            service_port: port,
            connections: 1,
            first_seen: Timestamp::from_nanos(1),
            last_seen: Timestamp::from_nanos(1),
            processes: Vec::new(),
            users: Vec::new(),
        };
        let ends = |f: ObservedFlow| edge_ends("web1", &f, &hosts);
        assert_eq!(
            ends(flow(FlowDirection::Outbound, "10.0.0.2", 5432)),
            ("host:web1".into(), "service:db1:5432/tcp".into())
        );
        assert_eq!(
            ends(flow(FlowDirection::Outbound, "192.0.2.9", 443)),
            ("host:web1".into(), "external:192.0.2.9".into())
        );
        assert_eq!(
            ends(flow(FlowDirection::Inbound, "192.0.2.9", 22)),
            ("external:192.0.2.9".into(), "service:web1:22/tcp".into())
        );
        assert_eq!(
            ends(flow(FlowDirection::Inbound, "10.0.0.2", 80)),
            ("host:db1".into(), "service:web1:80/tcp".into())
        );
        assert_eq!(
            ends(flow(FlowDirection::Outbound, "127.0.0.1", 631)),
            ("host:web1".into(), "service:web1:631/tcp".into())
        );
    }
}
