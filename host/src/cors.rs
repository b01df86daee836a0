//! Which browser pages may use the host (`CORS_ORIGINS`): the API and the
//! notification port answer their preflights and requests with CORS
//! headers, and refuse a request from a page of any other origin (a
//! browser sends `Origin`; a native client or a server usually does not,
//! and is not refused for it).

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, RETRY_AFTER};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::ApiError;

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The origins allowed besides the host's own, as browsers send them
/// (`scheme://host[:port]`, lower case), and the host's other port, whose
/// pages are its own too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<HeaderValue>, Option<u16>);

impl AllowedOrigins {
    /// Reads a comma-separated list such as
    /// `http://localhost:5174,https://portal.example.org`.
    pub fn parse(list: &str) -> anyhow::Result<Self> {
        let mut origins = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let origin = entry.to_ascii_lowercase();
            let authority = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            anyhow::ensure!(
                authority.is_some_and(|a| !a.is_empty() && !a.contains(['/', '?', '#', '*'])),
                "CORS_ORIGINS: `{entry}` is not an origin (scheme://host[:port], no path)"
            );
            origins.push(HeaderValue::from_str(&origin)?);
        }
        Ok(Self(origins, None))
    }

    /// The same, with pages from `port` of the requested host name counted
    /// as the host's own (the console on the API port, for the socket port).
    pub fn with_own_port(mut self, port: u16) -> Self {
        self.1 = Some(port);
        self
    }

    /// Whether a request with this `Origin` (and `Host`) may go on: a
    /// listed origin, or the host's own.
    fn allows(&self, origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
        let same_host = || {
            let origin = origin.to_str().unwrap_or_default();
            let Some(authority) = origin.split_once("://").map(|(_, a)| a) else {
                return false;
            };
            let Some(host) = host.and_then(|h| h.to_str().ok()) else {
                return false;
            };
            let other_port = self.1.map(|port| {
                let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
                format!("{name}:{port}")
            });
            authority == host || other_port.is_some_and(|own| authority == own)
        };
        self.0.iter().any(|allowed| allowed == origin) || same_host()
    }

    /// `router` behind the origin check (outermost, so a refused page
    /// reaches nothing) and the CORS headers for the listed origins.
    pub fn guard<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        router
            .layer(self.layer())
            .layer(middleware::from_fn_with_state(
                self.clone(),
                refuse_other_origins,
            ))
    }

    /// The CORS headers for the allowed origins (the listed ones, and the
    /// host's other port, which is another origin to a browser): the
    /// methods and headers the API uses, and `Retry-After` readable by the
    /// page.
    fn layer(&self) -> CorsLayer {
        let origins = self.clone();
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin, request| {
                origins.allows(origin, request.headers.get(HOST))
            }))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([AUTHORIZATION, CONTENT_TYPE])
            .expose_headers([RETRY_AFTER])
            .max_age(PREFLIGHT_MAX_AGE)
    }
}

/// Refuses, with a JSON 403, a request whose `Origin` is neither listed
/// nor the host's own.
async fn refuse_other_origins(
    State(origins): State<AllowedOrigins>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    match headers.get(ORIGIN) {
        Some(origin) if !origins.allows(origin, headers.get(HOST)) => {
            tracing::warn!(origin = ?origin, path = request.uri().path(), "request from an origin not in CORS_ORIGINS refused");
            ApiError::forbidden("this origin is not allowed (CORS_ORIGINS)").into_response()
        }
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_read_strictly_and_compared_as_browsers_send_them() {
        let origins = AllowedOrigins::parse(" http://localhost:5174, HTTPS://Portal.example.org ")
            .expect("valid");
        let value = HeaderValue::from_static;
        assert!(origins.allows(&value("http://localhost:5174"), None));
        assert!(origins.allows(&value("https://portal.example.org"), None));
        assert!(!origins.allows(&value("http://localhost:5175"), None));
        assert!(!origins.allows(&value("null"), None));
        // The host's own pages.
        let host = value("127.0.0.1:3000");
        assert!(origins.allows(&value("http://127.0.0.1:3000"), Some(&host)));
        assert!(!origins.allows(&value("http://evil.example"), Some(&host)));
        // The console, on the host's other port, on the socket port.
        let socket_port = origins.clone().with_own_port(3020);
        let socket_host = value("127.0.0.1:3021");
        assert!(socket_port.allows(&value("http://127.0.0.1:3020"), Some(&socket_host)));
        assert!(!socket_port.allows(&value("http://127.0.0.1:3022"), Some(&socket_host)));
        assert!(!socket_port.allows(&value("http://evil.example:3020"), Some(&socket_host)));
        assert!(!origins.allows(&value("http://127.0.0.1:3020"), Some(&socket_host)));
        assert_eq!(
            AllowedOrigins::parse("").unwrap(),
            AllowedOrigins::default()
        );
        for bad in [
            "localhost:5174",
            "http://a/b",
            "*",
            "https://",
            "http://*.example",
        ] {
            assert!(AllowedOrigins::parse(bad).is_err(), "{bad}");
        }
    }
}
