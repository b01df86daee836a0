//! `/ws`: the same notifications as plain WebSocket JSON frames
//! `{"event": "...", "data": {...}}`, for clients without Socket.IO.
//! A client acknowledges with `{"event": "acknowledge", "data":
//! {"notificationId": "..."}, "id": 1}` and gets `{"event": "ack", "id": 1,
//! "data": {...}}` back; it sends a fresh token with `{"event":
//! "reauthenticate", "data": {"token": "..."}}` before the connection's
//! expires (`session_expired`, then a close).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use super::hub::{Conn, Device};
use super::{LastSeqs, MAX_MESSAGE_BYTES, Notifier, Refusal, Session, Transport};
use crate::error::ApiError;

/// Frames a connection may have queued before it counts as not keeping up.
const BUFFER: usize = 8192;

/// What the URL may carry.
#[derive(Debug, Deserialize)]
pub struct Params {
    token: Option<String>,
    #[serde(rename = "lastSeq")]
    last_seq: Option<i64>,
    #[serde(rename = "roleLastSeq")]
    role_last_seq: Option<i64>,
    #[serde(rename = "deviceId")]
    device_id: Option<String>,
}

/// Checks the token (`Authorization: Bearer` or `?token=`) before the
/// upgrade: a refusal is an HTTP 401 with a JSON body (429 over a rate). A
/// message over [`MAX_MESSAGE_BYTES`] closes the connection.
pub async fn upgrade(
    State(notifier): State<Notifier>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    let device = params
        .device_id
        .unwrap_or_else(|| format!("ws-{}", uuid::Uuid::new_v4().simple()));
    let opened = Session::open(
        notifier.tokens(),
        bearer.or(params.token.as_deref()),
        LastSeqs {
            user: params.last_seq,
            role: params.role_last_seq,
        },
        device,
        Some(address),
    )
    .await;
    match notifier.admit(opened, Some(address), Transport::WebSocket) {
        Ok(session) => upgrade
            .max_message_size(MAX_MESSAGE_BYTES)
            .max_frame_size(MAX_MESSAGE_BYTES)
            .on_upgrade(move |socket| serve(notifier, session, socket)),
        Err(Refusal::Invalid(reason)) => ApiError::unauthorized(reason).into_response(),
        Err(Refusal::Limited(limited)) => ApiError::rate_limited(limited).into_response(),
    }
}

async fn serve(notifier: Notifier, session: Session, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (frames, mut queue) = mpsc::channel::<Message>(BUFFER);
    let kick = Arc::new(Notify::new());
    let device = Connection {
        frames: frames.clone(),
        kick: kick.clone(),
    };
    let conn = match notifier
        .open(&session, Box::new(device), Transport::WebSocket)
        .await
    {
        Ok(conn) => conn,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "WebSocket not connected");
            let _ = sink.send(Message::Close(None)).await;
            return;
        }
    };
    let write = async {
        while let Some(frame) = queue.recv().await {
            if sink.send(frame).await.is_err() {
                break;
            }
        }
    };
    let read = async {
        while let Some(Ok(message)) = stream.next().await {
            let reply = match message {
                Message::Text(text) => handle(&notifier, &session, &conn, text.as_str()).await,
                Message::Close(_) => break,
                _ => continue,
            };
            if frames.send(Message::Text(reply.into())).await.is_err() {
                break;
            }
        }
    };
    let kicked = tokio::select! {
        () = write => false,
        () = read => false,
        () = kick.notified() => true,
    };
    if kicked {
        // What was queued before the kick (a `session_expired` notice) goes
        // out first.
        while let Ok(frame) = queue.try_recv() {
            if sink.send(frame).await.is_err() {
                break;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    }
    notifier.close(&session, &conn, "closed");
}

/// Answers one frame from the client.
async fn handle(notifier: &Notifier, session: &Session, conn: &Conn, text: &str) -> String {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return Frame::error("frames are JSON objects {\"event\", \"data\"}");
    };
    match frame.get("event").and_then(Value::as_str) {
        Some("acknowledge") => {
            let data = notifier
                .acknowledge(session, frame.get("data").unwrap_or(&Value::Null))
                .await;
            Frame {
                event: "ack",
                id: frame.get("id"),
                data,
            }
            .text()
        }
        Some("reauthenticate") => Frame {
            event: "reauthenticated",
            id: frame.get("id"),
            data: notifier
                .reauthenticate(session, conn, frame.get("data").unwrap_or(&Value::Null))
                .await,
        }
        .text(),
        _ => Frame::error("unknown event; clients send `acknowledge` or `reauthenticate`"),
    }
}

/// A frame to the client: `{"event", "id"?, "data"}`.
#[derive(Serialize)]
struct Frame<'a, T> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    data: T,
}

/// What an `error` frame carries.
#[derive(Serialize)]
struct FrameError {
    error: &'static str,
}

impl<T: Serialize> Frame<'_, T> {
    fn text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Frame<'_, FrameError> {
    fn error(error: &'static str) -> String {
        Frame {
            event: "error",
            id: None,
            data: FrameError { error },
        }
        .text()
    }
}

/// A WebSocket as a device: frames go through a bounded queue to the
/// connection's writer.
struct Connection {
    frames: mpsc::Sender<Message>,
    kick: Arc<Notify>,
}

impl Device for Connection {
    fn send(&self, event: &str, data: &Value) -> bool {
        let frame = Frame {
            event,
            id: None,
            data,
        }
        .text();
        self.frames.try_send(Message::Text(frame.into())).is_ok()
    }

    fn close(&self) {
        self.kick.notify_one();
    }
}
