//! Issue 17: the seed's provider portal runs on another origin
//! (`http://localhost:5174`). With it in `CORS_ORIGINS` its pages can
//! read the API and open notification sockets (Socket.IO starts with HTTP
//! long-polling); a page of any other origin is refused, and a client
//! that sends no `Origin` (a native app, a server) is unaffected.

use reqwest::Method;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, AUTHORIZATION, ORIGIN,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{SEED, TestEnv};

const PORTAL: &str = "http://localhost:5174";
const OTHER: &str = "http://evil.example";

/// A request from a page of `origin`: its status and its
/// `Access-Control-Allow-Origin`.
async fn from_page(
    method: Method,
    url: &str,
    origin: Option<&str>,
    headers: &[(reqwest::header::HeaderName, &str)],
) -> (u16, Option<String>, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(origin) = origin {
        request = request.header(ORIGIN, origin);
    }
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let response = request.send().await.expect("the host answers");
    let allowed = response
        .headers()
        .get(ACCESS_CONTROL_ALLOW_ORIGIN)
        .map(|v| v.to_str().unwrap().to_owned());
    (
        response.status().as_u16(),
        allowed,
        response.headers().clone(),
    )
}

/// Opens `/ws` as a browser page of `origin` would: the HTTP status of
/// the upgrade.
async fn websocket_from(ws_addr: std::net::SocketAddr, token: &str, origin: &str) -> u16 {
    let mut request = format!("ws://{ws_addr}/ws?token={token}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert(ORIGIN.as_str(), origin.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portals_origin_may_read_the_chart_and_open_sockets_and_no_other() {
    let mut env = TestEnv::new("cors").await;
    env.config.cors_origins = projector::cors::AllowedOrigins::parse(PORTAL).unwrap();
    let host = env.start().await;
    env.publish(SEED).await;
    env.settle(&host).await;
    let token = env.token("u-dr-smith", "provider");
    let chart = format!(
        "http://{}/api/aggregate/patients/p-john-doe",
        host.http_addr
    );

    // The preflight of the portal's chart request, then the request.
    let preflight = [
        (ACCESS_CONTROL_REQUEST_METHOD, "GET"),
        (ACCESS_CONTROL_REQUEST_HEADERS, "authorization"),
    ];
    let (status, allowed, headers) =
        from_page(Method::OPTIONS, &chart, Some(PORTAL), &preflight).await;
    assert_eq!((status, allowed.as_deref()), (200, Some(PORTAL)));
    let allowed_headers = headers[ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    let bearer = format!("Bearer {token}");
    let (status, allowed, _) = from_page(
        Method::GET,
        &chart,
        Some(PORTAL),
        &[(AUTHORIZATION, &bearer)],
    )
    .await;
    assert_eq!((status, allowed.as_deref()), (200, Some(PORTAL)));

    // Another origin: refused, preflight and request alike, with no CORS
    // header a browser would honour.
    for method in [Method::OPTIONS, Method::GET] {
        let (status, allowed, _) =
            from_page(method, &chart, Some(OTHER), &[(AUTHORIZATION, &bearer)]).await;
        assert_eq!((status, allowed), (403, None));
    }
    // No Origin at all (a server, a native app): as before.
    let (status, allowed, _) =
        from_page(Method::GET, &chart, None, &[(AUTHORIZATION, &bearer)]).await;
    assert_eq!((status, allowed), (200, None));

    // Socket.IO's first request is a long-polling handshake.
    let handshake = format!("http://{}/socket.io/?EIO=4&transport=polling", host.ws_addr);
    let (status, allowed, _) = from_page(Method::GET, &handshake, Some(PORTAL), &[]).await;
    assert_eq!((status, allowed.as_deref()), (200, Some(PORTAL)));
    let (status, allowed, _) = from_page(Method::GET, &handshake, Some(OTHER), &[]).await;
    assert_eq!((status, allowed), (403, None));
    // Browsers do not apply CORS to WebSockets: the host checks the origin.
    assert_eq!(websocket_from(host.ws_addr, &token, PORTAL).await, 101);
    assert_eq!(websocket_from(host.ws_addr, &token, OTHER).await, 403);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cors_origins_only_the_hosts_own_pages_and_clients_without_an_origin_are_served() {
    let env = TestEnv::new("cors_none").await;
    let host = env.start().await;
    let health = format!("http://{}/api/aggregate/patients/p-1", host.http_addr);
    let (status, allowed, _) = from_page(Method::GET, &health, Some(PORTAL), &[]).await;
    assert_eq!((status, allowed), (403, None));
    let own = format!("http://{}", host.http_addr);
    let (status, _, _) = from_page(Method::GET, &health, Some(&own), &[]).await;
    assert_eq!(
        status, 401,
        "the host's own page gets as far as the token check"
    );
    let handshake = format!("http://{}/socket.io/?EIO=4&transport=polling", host.ws_addr);
    let (status, _, _) = from_page(Method::GET, &handshake, None, &[]).await;
    assert_eq!(status, 200);
    host.stop();
}
