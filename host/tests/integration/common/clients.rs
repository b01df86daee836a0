//! Notification clients as users run them: the official Socket.IO client
//! (Node's `socket.io-client`, driven over stdin/stdout) and a plain
//! WebSocket client.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;

/// An event a client received: its name and data.
pub type Received = (String, Value);

/// How long a test waits for something that should come.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Socket.IO through the official client.
pub struct SocketIo {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Lines read while looking for another kind.
    unread: VecDeque<Value>,
}

impl SocketIo {
    /// Starts the client against `addr` with this handshake `auth`; returns
    /// once it is connected or refused (see [`SocketIo::first`]).
    pub async fn start(addr: SocketAddr, auth: Value) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/socketio-client");
        assert!(
            dir.join("node_modules/socket.io-client").exists(),
            "the Socket.IO test client is not installed: run scripts/test (npm ci in {})",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("client.js"))
            .arg(format!("http://{addr}"))
            .arg(auth.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            lines,
            unread: VecDeque::new(),
        }
    }

    /// Connects as a user; panics if refused.
    pub async fn connect(addr: SocketAddr, auth: Value) -> Self {
        let mut client = Self::start(addr, auth).await;
        let first = client.first().await;
        assert_eq!(first["type"], "connect", "{first}");
        client
    }

    async fn line(&mut self, within: Duration) -> Option<Value> {
        match tokio::time::timeout(within, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Some(serde_json::from_str(&line).expect("client prints JSON")),
            _ => None,
        }
    }

    /// The first thing that happened: `connect` or `connect_error`.
    pub async fn first(&mut self) -> Value {
        self.line(PATIENCE)
            .await
            .expect("the client reports its connection")
    }

    /// The next event within `within`, if any.
    pub async fn next_event(&mut self, within: Duration) -> Option<Received> {
        loop {
            let line = match self.unread.pop_front() {
                Some(line) => line,
                None => self.line(within).await?,
            };
            if line["type"] == "event" {
                let event = line["event"].as_str().unwrap_or_default().to_owned();
                return Some((event, line["data"].clone()));
            }
        }
    }

    /// Acknowledges a notification; returns the server's reply.
    pub async fn acknowledge(&mut self, notification_id: &str) -> Value {
        let command = json!({"cmd": "ack", "notificationId": notification_id}).to_string() + "\n";
        self.stdin
            .write_all(command.as_bytes())
            .await
            .expect("client stdin");
        loop {
            let line = self.line(PATIENCE).await.expect("an acknowledgement reply");
            if line["type"] == "ack" {
                return line["data"].clone();
            }
            self.unread.push_back(line);
        }
    }

    /// Emits an event without waiting for a reply.
    pub async fn emit(&mut self, event: &str, data: Value) {
        let command = json!({"cmd": "emit", "event": event, "data": data}).to_string() + "\n";
        self.stdin
            .write_all(command.as_bytes())
            .await
            .expect("client stdin");
    }

    /// Whether the server disconnects the client within `within`.
    pub async fn disconnected(&mut self, within: Duration) -> bool {
        let end = tokio::time::Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match self.line(left).await {
                Some(line) if line["type"] == "disconnect" => return true,
                Some(line) => self.unread.push_back(line),
                None => return false,
            }
        }
    }

    /// Disconnects.
    pub async fn close(mut self) {
        let _ = self.stdin.write_all(b"{\"cmd\": \"close\"}\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// A plain WebSocket on `/ws`.
pub struct WebSocket {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    unread: VecDeque<Value>,
}

impl WebSocket {
    /// Connects to `/ws` with a query string and optional bearer token;
    /// `Err(status)` if the upgrade was refused.
    pub async fn connect(addr: SocketAddr, query: &str, bearer: Option<&str>) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{addr}/ws?{query}")
            .into_client_request()
            .expect("request");
        if let Some(token) = bearer {
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((stream, _)) => Ok(Self {
                stream,
                unread: VecDeque::new(),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("WebSocket connect: {e}"),
        }
    }

    async fn frame(&mut self, within: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(within, self.stream.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Some(serde_json::from_str(text.as_str()).expect("JSON frame"));
                }
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }

    /// The next event frame within `within`, if any.
    pub async fn next_event(&mut self, within: Duration) -> Option<Received> {
        let frame = match self.unread.pop_front() {
            Some(frame) => frame,
            None => self.frame(within).await?,
        };
        let event = frame["event"].as_str().unwrap_or_default().to_owned();
        Some((event, frame["data"].clone()))
    }

    /// Sends a text frame as it is.
    pub async fn send_text(&mut self, text: String) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Whether the server ends the connection within `within` (a close
    /// frame, or the connection dropped), reading past anything else.
    pub async fn ends(&mut self, within: Duration) -> bool {
        let end = tokio::time::Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => return true,
                Ok(Some(Ok(_))) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Acknowledges a notification; returns the server's reply.
    pub async fn acknowledge(&mut self, notification_id: &str) -> Value {
        self.request(
            "acknowledge",
            json!({"notificationId": notification_id}),
            "ack",
        )
        .await
    }

    /// Sends a fresh token for the connection; returns the server's reply.
    pub async fn reauthenticate(&mut self, token: &str) -> Value {
        self.request("reauthenticate", json!({"token": token}), "reauthenticated")
            .await
    }

    /// Sends `event` with `data` and waits for the `reply` frame with the
    /// same id; returns its data.
    async fn request(&mut self, event: &str, data: Value, reply: &str) -> Value {
        let frame = json!({"event": event, "id": 7, "data": data});
        self.stream
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
        loop {
            let frame = self.frame(PATIENCE).await.expect("a reply");
            if frame["event"] == reply {
                assert_eq!(frame["id"], 7);
                return frame["data"].clone();
            }
            self.unread.push_back(frame);
        }
    }
}

/// Either kind of client, as the tests read it.
pub trait Events {
    /// The next event within `within`, if any.
    async fn next_event(&mut self, within: Duration) -> Option<Received>;
}

impl Events for SocketIo {
    async fn next_event(&mut self, within: Duration) -> Option<Received> {
        SocketIo::next_event(self, within).await
    }
}

impl Events for WebSocket {
    async fn next_event(&mut self, within: Duration) -> Option<Received> {
        WebSocket::next_event(self, within).await
    }
}

/// Reads events until none comes for `quiet`; returns them in order.
pub async fn drain(client: &mut impl Events, quiet: Duration) -> Vec<Received> {
    let mut events = Vec::new();
    while let Some(event) = client.next_event(quiet).await {
        events.push(event);
    }
    events
}

/// Reads `count` events, waiting up to [`PATIENCE`] for each; fewer if
/// they stop coming.
pub async fn take(client: &mut impl Events, count: usize) -> Vec<Received> {
    let mut events = Vec::new();
    while events.len() < count {
        match client.next_event(PATIENCE).await {
            Some(event) => events.push(event),
            None => break,
        }
    }
    events
}

/// Every event that arrives within `window` from now.
pub async fn during(client: &mut impl Events, window: Duration) -> Vec<Received> {
    let end = tokio::time::Instant::now() + window;
    let mut events = Vec::new();
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        match client.next_event(left).await {
            Some(event) if !left.is_zero() => events.push(event),
            _ => return events,
        }
    }
}
