//! Enrollment (`POST /api/v1/enroll`: an enrollment secret exchanged for the
//! agent's own token) and `POST /api/v1/whoami` (what `agent enroll` checks
//! the new token with). The protocol is in `connscope_protocol::enroll`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use connscope_event::Timestamp;
use connscope_protocol::enroll::{EnrollRequest, EnrollResponse, WhoAmI};

use crate::enrolled::{digest_of, new_agent_token};
use crate::kit::{authenticate, bearer, read_json, ApiError, AppState};

/// An enrollment request is a host name: a few bytes.
const ENROLL_BODY_LIMIT: usize = 4096;

pub(crate) async fn enroll(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EnrollResponse>, ApiError> {
    let unauthorized = |why: String| {
        state
            .counters
            .unauthorized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ApiError::new(StatusCode::UNAUTHORIZED, why)
    };
    let Some(secret) = bearer(&headers) else {
        return Err(unauthorized(
            "enrolling takes the enrollment token's secret as bearer token".into(),
        ));
    };
    let enrollment = digest_of(secret);
    let request: EnrollRequest =
        read_json(body, ENROLL_BODY_LIMIT, "an enrollment request").await?;
    crate::auth::check_agent_id(&request.host)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("host: {e}")))?;
    let (record, token) = new_agent_token(&request.host);
    let store = state.store.clone();
    let redeemed = tokio::task::spawn_blocking(move || {
        store.redeem_enrollment(&enrollment, &record, Timestamp::now())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))??;
    match redeemed {
        Ok(stored) => {
            tracing::info!(agent = %stored.agent, token = %stored.id, "enrolled an agent");
            Ok(Json(EnrollResponse {
                agent: stored.agent,
                token,
            }))
        }
        Err(refusal) => {
            tracing::warn!(host = %request.host, %refusal, "refused an enrollment");
            Err(unauthorized(format!("enrollment refused: {refusal}")))
        }
    }
}

pub(crate) async fn whoami(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<WhoAmI>, ApiError> {
    let agent = authenticate(&state, &headers).await?;
    Ok(Json(WhoAmI { agent: agent.0 }))
}
