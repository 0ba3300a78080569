//! The one error type of the API and its one mapping to HTTP: every failure, whatever its
//! status, answers `{"success": false, "error": "<sentence>", "code": "<code>"}`.
//!
//! Server-side failures (5xx) log their details and answer a generic sentence: internal errors
//! can carry paths, SQL or configuration a client has no business seeing.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    /// A sentence saying what went wrong and what to do about it.
    pub error: String,
    /// A stable machine code: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `session_not_found`, `tool_not_found`, `invalid_arguments`, `tool_failed`,
    /// `payload_too_large`, `request_timeout`, `rate_limited`, `unavailable`, `internal`; inside
    /// an HTTP 200 chat answer also `llm_unavailable`, `cap_exceeded`, `canceled`.
    pub code: String,
}

/// A failed request: its status, machine code and the sentence for the caller.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `bad_request`: the body or a parameter is wrong.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 400 `invalid_arguments`: a tool's arguments do not fit its schema.
    pub fn invalid_arguments(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_arguments", message)
    }

    /// 401 `unauthorized`: no usable key.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`: the key's role may not do this.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 with `not_found` or a more specific code (`tool_not_found`).
    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 405 `bad_request`: the path exists with other methods.
    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "bad_request", message)
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 408 `request_timeout`: the client did not send its whole body in time.
    pub fn request_timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
    }

    /// 429 `rate_limited` with `Retry-After: seconds`.
    pub fn rate_limited(seconds: u64) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "this API key sent more requests than its rate limit allows; wait {seconds} s \
                 (see Retry-After) and slow down, or ask the operator to raise --rate-limit"
            ),
        );
        e.retry_after = Some(seconds);
        e
    }

    /// 503 `unavailable`: a resource is busy; the same request can succeed later.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after = Some(5);
        e
    }

    /// 500 `internal`: logs `detail` (with the request's id, from the span) and answers a
    /// sentence that says where to look, never the detail itself.
    pub fn internal(doing: &str, detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "failed while {doing}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!(
                "the server failed while {doing}; the details are in the server log under this \
                 response's x-request-id"
            ),
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            tracing::debug!(code = self.code, error = %self.message, "refused");
        }
        let body = ErrorBody {
            success: false,
            error: self.message,
            code: self.code.to_string(),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was never read, so the connection cannot carry another
            // request; saying so keeps clients from reusing it and failing their next call.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
