//! The Socket.IO v5 server the seed's frontend talks to: the token in the
//! handshake's `auth`, `notification` and `critical_alert` events,
//! `acknowledge` with a reply, and `reauthenticate` with a fresh token
//! before the connection's expires (`session_expired`, then a disconnect).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::DisconnectReason;

use super::hub::{Conn, Device};
use super::{LastSeqs, MAX_MESSAGE_BYTES, Notifier, Refusal, Session, Transport};

/// Packets a socket may have queued before it counts as not keeping up: a
/// reconnecting device's replay goes out at once.
const BUFFER: usize = 8192;

/// The Socket.IO layer: namespace `/`, authenticated on connect; a packet
/// over [`MAX_MESSAGE_BYTES`] closes its connection.
pub fn layer(notifier: Notifier) -> SocketIoLayer {
    let max = MAX_MESSAGE_BYTES;
    let (layer, io) = SocketIo::builder()
        .max_buffer_size(BUFFER)
        .max_payload(max as u64)
        .ws_max_message_size(max)
        .ws_max_frame_size(max)
        .with_state(notifier)
        .build_layer();
    io.ns("/", on_connect.with(authenticate));
    layer
}

/// Checks `auth.token` (and reads `auth.lastSeq`, `auth.roleLastSeq`,
/// `auth.deviceId`) before the socket joins the namespace.
async fn authenticate(
    socket: SocketRef,
    State(notifier): State<Notifier>,
    TryData(auth): TryData<Value>,
) -> Result<(), Refusal> {
    let auth = auth.unwrap_or(Value::Null);
    let address = socket
        .req_parts()
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let device = auth
        .get("deviceId")
        .and_then(Value::as_str)
        .map_or_else(|| socket.id.to_string(), str::to_owned);
    let has = LastSeqs {
        user: seq_of(&auth, "lastSeq")?,
        role: seq_of(&auth, "roleLastSeq")?,
    };
    let opened = Session::open(
        notifier.tokens(),
        auth.get("token").and_then(Value::as_str),
        has,
        device,
        address,
    )
    .await;
    let session = notifier.admit(opened, address, Transport::SocketIo)?;
    socket.extensions.insert(session);
    Ok(())
}

/// A seq the handshake's `auth` may carry.
fn seq_of(auth: &Value, field: &str) -> Result<Option<i64>, Refusal> {
    match auth.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(seq) => seq
            .as_i64()
            .map(Some)
            .ok_or_else(|| Refusal::Invalid(format!("auth.{field} must be a whole number"))),
    }
}

async fn on_connect(
    socket: SocketRef,
    State(notifier): State<Notifier>,
    Extension(session): Extension<Session>,
) {
    socket.on(
        "acknowledge",
        async |State(notifier): State<Notifier>,
               Extension(session): Extension<Session>,
               TryData(request): TryData<Value>,
               ack: AckSender| {
            let reply = notifier
                .acknowledge(&session, &request.unwrap_or_default())
                .await;
            let _ = ack.send(&reply);
        },
    );
    socket.on(
        "reauthenticate",
        async |State(notifier): State<Notifier>,
               Extension(session): Extension<Session>,
               Extension(conn): Extension<Arc<Conn>>,
               TryData(request): TryData<Value>,
               ack: AckSender| {
            let reply = notifier
                .reauthenticate(&session, &conn, &request.unwrap_or_default())
                .await;
            let _ = ack.send(&reply);
        },
    );
    match notifier
        .open(
            &session,
            Box::new(Socket(socket.clone())),
            Transport::SocketIo,
        )
        .await
    {
        Ok(conn) => {
            socket.extensions.insert(conn.clone());
            socket.on_disconnect(
                async move |State(notifier): State<Notifier>, reason: DisconnectReason| {
                    notifier.close(&session, &conn, &reason.to_string());
                },
            )
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "socket not connected");
            let _ = socket.disconnect();
        }
    }
}

/// A Socket.IO socket as a device.
struct Socket(SocketRef);

impl Device for Socket {
    fn send(&self, event: &str, data: &Value) -> bool {
        self.0.emit(event, data).is_ok()
    }

    fn close(&self) {
        let _ = self.0.clone().disconnect();
    }
}
