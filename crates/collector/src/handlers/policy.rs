//! The policy loop's endpoints: agents fetch the policy assigned to their
//! host and report their firewall's state (agent token: the host is always
//! the token's agent, never something the request names); readers see every
//! host's policy status and the drift edges (reader token).

use std::str::FromStr;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use connscope_event::Timestamp;
use connscope_policy::{policy_status, Assignments, DriftList, PolicyStatus};
use connscope_protocol::policy::{AssignedPolicy, FirewallReport};
use connscope_query::args::last_day;
use connscope_query::TimeRangeArgs;
use connscope_store::Store;

use crate::kit::{authenticate, authorize_read, read_json, ApiError, AppState};

/// `GET AGENT_POLICY_PATH`: the asking host's assigned policy, or 204.
pub(crate) async fn assigned(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let agent = authenticate(&state, &headers).await?;
    let store = state.store.clone();
    let assigned = tokio::task::spawn_blocking(move || assigned_to(store.as_ref(), &agent.0))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))??;
    Ok(match assigned {
        Some(policy) => Json(policy).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

fn assigned_to(store: &dyn Store, host: &str) -> Result<Option<AssignedPolicy>, ApiError> {
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, host, "cannot resolve a host's policy");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    };
    let assignments = Assignments::load(store, Timestamp::now()).map_err(|e| unavailable(&e))?;
    let Some(resolved) = assignments
        .for_host(store, host)
        .map_err(|e| unavailable(&e))?
    else {
        return Ok(None);
    };
    let Some(assigned) = resolved.assignment.assigned else {
        return Ok(None);
    };
    let stored = store
        .policy_version(&assigned.policy, assigned.version)?
        .ok_or_else(|| {
            unavailable(&format!(
                "policy {} version {} is assigned but not in the store",
                assigned.policy, assigned.version
            ))
        })?;
    Ok(Some(AssignedPolicy {
        name: stored.name,
        version: stored.version,
        document: stored.document,
        staging: assigned.staging,
        revision: resolved.assignment.revision,
    }))
}

/// `POST AGENT_FIREWALL_PATH`: the host's firewall state and notices.
pub(crate) async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let agent = authenticate(&state, &headers).await?;
    let report: FirewallReport = read_json(body, state.body_limit, "a firewall report").await?;
    if report.host != agent.0 {
        tracing::warn!(%agent, host = %report.host, "a firewall report for another host refused");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this token reports for host {:?}, not {:?}",
                agent.0, report.host
            ),
        ));
    }
    let at = Timestamp::from_str(&report.at).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("at {:?}: not an RFC 3339 time: {e}", report.at),
        )
    })?;
    for notice in &report.notices {
        match notice.kind.as_str() {
            "tampered" | "broken-glass" => tracing::warn!(
                host = %report.host, kind = %notice.kind, at = %notice.at,
                detail = %notice.detail, "firewall notice"
            ),
            _ => tracing::info!(
                host = %report.host, kind = %notice.kind, at = %notice.at,
                detail = %notice.detail, "firewall notice"
            ),
        }
    }
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        store.put_firewall_report(&report.host, &report.state, at, &report.notices)?;
        // The rule counters feed `policy hygiene`.
        connscope_policy::record_counters(store.as_ref(), &report)
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
        Ok::<_, ApiError>(())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))??;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/policies/status`.
pub(crate) async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<PolicyStatus>, ApiError> {
    authorize_read(&state, &headers)?;
    let store = state.store.clone();
    let status =
        tokio::task::spawn_blocking(move || policy_status(store.as_ref(), Timestamp::now()))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(Json(status))
}

/// `GET /api/v1/drift?from=&to=` (the last day when not given).
pub(crate) async fn drift(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<TimeRangeArgs>, QueryRejection>,
) -> Result<Json<DriftList>, ApiError> {
    authorize_read(&state, &headers)?;
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let now = Timestamp::now();
    let range = params
        .resolve(now, last_day(now))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("query parameter {e}")))?;
    let store = state.store.clone();
    let drift = tokio::task::spawn_blocking(move || store.drift(range))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))??;
    Ok(Json(DriftList {
        drift: drift.into_iter().map(Into::into).collect(),
    }))
}
