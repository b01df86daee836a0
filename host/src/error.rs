//! Every error an HTTP endpoint returns (the API's and the `/ws` upgrade's):
//! `{"error": "...", "code": "..."}` with a status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An API error; its response is JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no valid token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: a valid token without the right.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: no such resource.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the resource is not in a state that allows this.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// What went wrong, for clients that are not sent the JSON body.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The status, for the audit log.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // A view whose plugin is not loaded has no table yet.
        if let sqlx::Error::Database(db) = &e
            && db.code().as_deref() == Some("42P01")
        {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "view_unavailable",
                "this view's plugin is not loaded",
            );
        }
        // The API's statements are cancelled at API_STATEMENT_TIMEOUT, and
        // its requests give up waiting for a connection as long.
        if let sqlx::Error::Database(db) = &e
            && db.code().as_deref() == Some("57014")
        {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "query_timeout",
                "the database did not answer in time (API_STATEMENT_TIMEOUT); try again",
            );
        }
        if let sqlx::Error::PoolTimedOut = e {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_busy",
                "every database connection of the API stayed busy (API_STATEMENT_TIMEOUT); try again",
            );
        }
        tracing::error!(error = %e, "database error");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable",
        )
    }
}

/// What an error response said, kept in its extensions for the audit log
/// (a refusal is recorded with its reason).
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

/// The body of an error response.
#[derive(serde::Serialize)]
struct ErrorBody {
    error: String,
    code: &'static str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = ErrorMessage(self.message.clone());
        let body = ErrorBody {
            error: self.message,
            code: self.code,
        };
        let mut response = (self.status, Json(body)).into_response();
        response.extensions_mut().insert(message);
        response
    }
}

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// Known routes, wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}
