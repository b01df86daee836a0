//! A minimal Socket.IO v5 client over WebSocket (Engine.IO v4), enough to
//! hold thousands of connections from one process: connect with `auth`,
//! answer pings, hand events on, acknowledge notifications.

use std::time::Instant;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An event as a client got it: when, its name, its data.
pub type Received = (Instant, String, Value);

/// A connected client, before it starts listening.
pub struct Client {
    socket: Socket,
}

impl Client {
    /// Opens the WebSocket transport and connects to namespace `/` with
    /// this `auth`; fails if the server refuses.
    pub async fn connect(addr: std::net::SocketAddr, auth: &Value) -> anyhow::Result<Self> {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .context("opening the WebSocket")?;
        let open = next_text(&mut socket).await?;
        anyhow::ensure!(
            open.starts_with('0'),
            "expected the Engine.IO open packet, got {open}"
        );
        socket
            .send(Message::Text(format!("40{auth}").into()))
            .await?;
        loop {
            let packet = next_text(&mut socket).await?;
            match packet.as_bytes() {
                [b'4', b'0', ..] => return Ok(Self { socket }),
                [b'4', b'4', ..] => anyhow::bail!("refused: {}", &packet[2..]),
                [b'2'] => socket.send(Message::Text("3".into())).await?,
                _ => {}
            }
        }
    }

    /// Answers pings until the connection ends, sending every event
    /// (when it arrived, name, data) to `events` if given, and emitting
    /// `acknowledge` for each notification id that arrives on `acks`.
    pub async fn listen(
        mut self,
        events: Option<mpsc::UnboundedSender<Received>>,
        mut acks: Option<mpsc::UnboundedReceiver<String>>,
    ) {
        loop {
            let ack = async {
                match &mut acks {
                    Some(acks) => acks.recv().await,
                    None => std::future::pending().await,
                }
            };
            let packet = tokio::select! {
                packet = next_text(&mut self.socket) => packet,
                Some(id) = ack => {
                    let emit = serde_json::json!(["acknowledge", { "notificationId": id }]);
                    if self.socket.send(Message::Text(format!("42{emit}").into())).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let Ok(packet) = packet else { return };
            if packet == "2" {
                if self.socket.send(Message::Text("3".into())).await.is_err() {
                    return;
                }
            } else if let (Some(events), Some(body)) = (&events, packet.strip_prefix("42"))
                && let Ok(Value::Array(mut parts)) = serde_json::from_str::<Value>(body)
                && parts.len() == 2
            {
                let data = parts.pop().unwrap_or_default();
                let name = parts
                    .pop()
                    .and_then(|n| n.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let _ = events.send((Instant::now(), name, data));
            }
        }
    }
}

async fn next_text(socket: &mut Socket) -> anyhow::Result<String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Close(_))) | None => anyhow::bail!("connection closed"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        }
    }
}
