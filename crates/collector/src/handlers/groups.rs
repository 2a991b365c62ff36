//! `/api/v1/groups`: host groups for the map and scripts. `GET` lists every
//! group with its members (among the hosts seen in `from`/`to`, by default
//! everything stored) and the host labels; `POST /api/v1/groups/NAME`
//! stores a definition (replacing one of that name), `DELETE` removes it.
//!
//! Reading takes a reader token like every query; changing takes a reader
//! token always ([`authorize_change`]); agent tokens do neither. Checking a
//! definition and resolving members are `connscope_query::groups`', the
//! same as `connscope groups`.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use connscope_event::Timestamp;
use connscope_query::groups::{check_group, hosts_seen, members, resolve, GroupView, MembersError};
use connscope_query::TimeRangeArgs;
use connscope_store::{GroupKind, HostGroup, HostLabel, TimeRange};
use serde::{Deserialize, Serialize};

use crate::handlers::queries::ParamError;
use crate::kit::{authorize_change, authorize_read, read_body, ApiError, AppState};

/// The largest definition accepted, in bytes.
const DEFINITION_LIMIT: usize = 64 * 1024;

/// `GET /api/v1/groups`.
#[derive(Debug, Serialize)]
pub struct GroupsBody {
    /// In the order they were added (the first listing a host is its group
    /// where one must be picked).
    pub groups: Vec<GroupView>,
    pub host_labels: Vec<HostLabelBody>,
}

#[derive(Debug, Serialize)]
pub struct HostLabelBody {
    pub host: String,
    pub key: String,
    pub value: String,
}

/// `POST /api/v1/groups/NAME`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// `names`, `addresses` or `hosts`.
    pub kind: String,
    pub patterns: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn members_error(e: MembersError) -> ApiError {
    match e {
        MembersError::Store(e) => e.into(),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other),
    }
}

fn internal(e: impl ToString) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)
}

pub(crate) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<TimeRangeArgs>, QueryRejection>,
) -> Result<Json<GroupsBody>, ApiError> {
    authorize_read(&state, &headers)?;
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let range = params
        .resolve(Timestamp::now(), TimeRange::ALL)
        .map_err(|e| bad(ParamError(e).to_string()))?;
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let groups = store.groups()?;
        let memberships = members(store.as_ref(), range).map_err(members_error)?;
        Ok(Json(GroupsBody {
            groups: groups
                .into_iter()
                .zip(memberships)
                .map(|(g, m)| GroupView::new(g, m))
                .collect(),
            host_labels: store
                .host_labels()?
                .into_iter()
                .map(|HostLabel { host, key, value }| HostLabelBody { host, key, value })
                .collect(),
        }))
    })
    .await
    .map_err(internal)?
}

pub(crate) async fn put(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    request: Body,
) -> Result<Json<GroupView>, ApiError> {
    authorize_change(&state, &headers)?;
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
    let bytes = read_body(request, DEFINITION_LIMIT).await?;
    let definition: Definition =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("the group definition: {e}")))?;
    let kind = GroupKind::parse(&definition.kind).ok_or_else(|| {
        bad(format!(
            "kind {:?}: expected names, addresses or hosts",
            definition.kind
        ))
    })?;
    let group = HostGroup {
        name,
        kind,
        patterns: definition.patterns,
        labels: definition.labels.into_iter().collect(),
    };
    check_group(&group).map_err(|e| bad(e.to_string()))?;
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        store.put_group(&group)?;
        let hosts = hosts_seen(store.as_ref(), TimeRange::ALL)?;
        let membership = resolve(&group, &hosts).map_err(members_error)?;
        tracing::info!(group = %group.name, kind = group.kind.as_str(), "group stored");
        Ok(Json(GroupView::new(group, membership)))
    })
    .await
    .map_err(internal)?
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize_change(&state, &headers)?;
    let store = state.store.clone();
    let removed = tokio::task::spawn_blocking(move || store.remove_group(&name))
        .await
        .map_err(internal)??;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "no such group"))
    }
}
