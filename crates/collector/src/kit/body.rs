//! Request bodies read whole, with a size limit.

use axum::body::Body;
use axum::http::StatusCode;
use http_body_util::{BodyExt, Limited};

use super::error::ApiError;

/// Reads the whole body, refusing it past `limit` bytes (as sent, compressed).
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("reading the body: {e}"),
        )),
    }
}

/// Reads the whole body as JSON of type `T`; a body that is not is refused
/// with serde's reason, as "not a `what`".
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    body: Body,
    limit: usize,
    what: &str,
) -> Result<T, ApiError> {
    let body = read_body(body, limit).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("not {what}: {e}")))
}
