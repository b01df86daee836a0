//! Every error an HTTP endpoint returns (the API's and the `/ws` upgrade's):
//! `{"error": "...", "code": "..."}` with a status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::rate::Limited;

/// An API error; its response is JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds until a retry may succeed (`Retry-After`).
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429: over a rate; the response says when to try again. It is not
    /// audited (see [`RateLimited`]).
    pub fn rate_limited(limited: Limited) -> Self {
        let seconds = limited.retry_after_secs();
        Self {
            retry_after: Some(seconds),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests: retry in {seconds} s"),
            )
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
        // A value the database refuses for what it is (SQLSTATE class 22,
        // data exception: a NUL character in a parameter, say) is the
        // request's fault, not the database's.
        if let sqlx::Error::Database(db) = &e
            && db.code().is_some_and(|code| code.starts_with("22"))
        {
            return Self::bad_request(format!("a parameter was refused: {}", db.message()));
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

/// Marks a response refused for its rate: it is counted, not audited, or
/// whoever is over the rate would still write a row per request.
#[derive(Debug, Clone, Copy)]
pub struct RateLimited;

/// The body of an error response: what went wrong, for a person, and a
/// stable code, for a program.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong.
    error: String,
    /// A stable code: `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `rate_limited` and so on.
    code: &'static str,
}

/// The errors any authenticated endpoint may answer, as the API document
/// lists them beside each endpoint's own.
pub struct CommonErrors;

impl utoipa::IntoResponses for CommonErrors {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        [
            ("400", "A parameter is malformed."),
            ("401", "No valid token."),
            ("403", "The token's role may not do this."),
            (
                "429",
                "Over the caller's rate; `Retry-After` says when to try again.",
            ),
            (
                "503",
                "The database did not answer in time, or a view's plugin is not loaded.",
            ),
        ]
        .into_iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build();
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", content)
                .build();
            (status.to_owned(), response.into())
        })
        .collect()
    }
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
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response.extensions_mut().insert(RateLimited);
        }
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
