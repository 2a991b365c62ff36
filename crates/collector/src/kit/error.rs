//! The API's one error type: every refusal is JSON `{"error": ..., "line": ...}`
//! with a fitting status, and quotes at most [`MAX_ECHO`] bytes of the client's
//! input.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use connscope_protocol::ErrorResponse;
use connscope_store::StoreError;

use crate::binding::BindingError;
use crate::ingest::BatchError;

/// How much of a client's input an error message quotes, at most: enough to
/// recognise it, never a copy of a huge request.
const MAX_ECHO: usize = 300;

/// A refusal, as JSON `{"error": ..., "line": ...}` with a fitting status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: ErrorResponse,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl ToString) -> ApiError {
        ApiError {
            status,
            body: ErrorResponse {
                error: cut_echo(error.to_string()),
                line: None,
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What the client is told.
    pub fn body(&self) -> &ErrorResponse {
        &self.body
    }
}

/// Cuts an error message (which may quote the request) to [`MAX_ECHO`] bytes.
pub(crate) fn cut_echo(mut text: String) -> String {
    if text.len() > MAX_ECHO {
        let total = text.len();
        let end = (0..=MAX_ECHO)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(end);
        text.push_str(&format!("... ({total} bytes in all)"));
    }
    text
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::InvalidEvent { .. }
            | StoreError::InvalidRange { .. }
            | StoreError::InvalidOrigin(_) => ApiError::new(StatusCode::BAD_REQUEST, e),
            _ => {
                tracing::error!(error = %e, "store error");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e)
            }
        }
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> ApiError {
        let status = match e {
            BatchError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BatchError::Encoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            body: ErrorResponse {
                error: cut_echo(e.to_string()),
                line: e.line(),
            },
        }
    }
}

impl From<BindingError> for ApiError {
    fn from(e: BindingError) -> ApiError {
        match e {
            BindingError::Store(e) => e.into(),
            other => ApiError::new(StatusCode::FORBIDDEN, other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
