//! Who may ask: agent tokens write (ingest), reader tokens read (queries)
//! and change the operators' definitions (host groups).

use std::sync::atomic::Ordering;

use axum::http::{header, HeaderMap, StatusCode};
use connscope_store::{AgentId, TokenRefusal};

use super::error::ApiError;
use super::state::AppState;

/// The token of `Authorization: Bearer TOKEN`; the scheme in any case (RFC 7235).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then_some(token.trim())
}

/// The agent an ingest request comes from, by its token: one of the
/// configured tokens (file, flags), else one kept in the store (enrolled).
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<AgentId, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(unauthorized(state, "missing bearer token"));
    };
    if let Some(agent) = state.tokens.agent_for(token) {
        return Ok(agent.clone());
    }
    let verdict = match state.stored_tokens.cached(token) {
        Some(Ok(agent)) => return Ok(agent),
        Some(Err(refusal)) if refusal != TokenRefusal::Unknown => {
            return Err(unauthorized(state, refusal))
        }
        _ => stored_verdict(state, token).await?,
    };
    match verdict {
        (Ok(agent), _) => Ok(agent),
        (Err(TokenRefusal::Unknown), false) if state.tokens.is_empty() => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "HTTPS ingest is off: no agent tokens configured on this collector",
        )),
        (Err(TokenRefusal::Unknown), _) => Err(unauthorized(state, "unknown bearer token")),
        (Err(refusal), _) => Err(unauthorized(state, refusal)),
    }
}

/// The store's verdict on `token` (off the reactor), and whether any agent
/// token is live there.
async fn stored_verdict(
    state: &AppState,
    token: &str,
) -> Result<(Result<AgentId, TokenRefusal>, bool), ApiError> {
    let (stored, token) = (state.stored_tokens.clone(), token.to_owned());
    let verdict = tokio::task::spawn_blocking(move || {
        let verdict = stored.agent_for(&token)?;
        // Only an unknown token needs to know whether ingest is on at all.
        let any = match verdict {
            Err(TokenRefusal::Unknown) => stored.any_live()?,
            _ => true,
        };
        Ok::<_, connscope_store::StoreError>((verdict, any))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))??;
    Ok(verdict)
}

fn unauthorized(state: &AppState, why: impl ToString) -> ApiError {
    state.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
    ApiError::new(StatusCode::UNAUTHORIZED, why)
}

/// Queries take a reader token; agent tokens only write.
pub(crate) fn authorize_read(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.open_reads || bearer(headers).is_some_and(|t| state.readers.agent_for(t).is_some()) {
        return Ok(());
    }
    Err(unauthorized(state, "missing or unknown reader token"))
}

/// Changes to what operators define (host groups) take a reader token, even
/// where reads are open (a loopback listener without reader tokens): an
/// open read shows data, an open write would let any local user reshape
/// every firewall plan. Agent tokens never do.
pub(crate) fn authorize_change(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if bearer(headers).is_some_and(|t| state.readers.agent_for(t).is_some()) {
        return Ok(());
    }
    Err(unauthorized(state, "changing groups takes a reader token"))
}
