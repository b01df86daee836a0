//! Clinician notifications: the outbox the projections commit to is pushed
//! to every device of the recipient over Socket.IO and plain WebSocket
//! (SPEC "WebSocket notifications"), through a NATS core subject so a device
//! on any instance gets it. Devices that were away get what they missed;
//! urgent notifications are resent until acknowledged and escalated when
//! they are not.

mod fanout;
mod hub;
mod schedule;
mod socketio;
mod ws;

pub use hub::{ACKNOWLEDGED_EVENT, CRITICAL_EVENT, Device, Hub, NOTIFICATION_EVENT};

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::api::{Claims, verify_token};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::outbox::{self, Acknowledged, Acknowledger};
use fanout::Wire;
use hub::{Conn, Delivery, recipient_of, room_of};

/// The most notifications a reconnecting device is sent per query.
const REPLAY_PAGE: i64 = 500;

/// Pushes notifications to devices; cheap to clone.
#[derive(Clone)]
pub struct Notifier(Arc<Inner>);

struct Inner {
    pool: PgPool,
    nats: async_nats::Client,
    subject: String,
    hub: Hub,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    pushes: mpsc::UnboundedSender<Vec<Value>>,
}

/// A connected client: who, from which device, and what it has.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    claims: Claims,
    device: String,
    last_seq: Option<i64>,
    address: Option<String>,
}

impl Session {
    /// Checks a client's credentials: a valid token (the HTTP API's JWT)
    /// for a user; the device id is the client's, or the connection's.
    fn open(
        secret: &str,
        token: Option<&str>,
        last_seq: Option<i64>,
        device: String,
        address: Option<std::net::SocketAddr>,
    ) -> Result<Self, String> {
        let token =
            token.ok_or("a token is required (auth.token, Authorization: Bearer or ?token=)")?;
        let claims = verify_token(secret, token).map_err(|e| e.message().to_owned())?;
        if claims.sub.starts_with("role:") {
            return Err("a user id may not start with `role:`".into());
        }
        if last_seq.is_some_and(|seq| seq < 0) {
            return Err("lastSeq must be 0 or more".into());
        }
        Ok(Self {
            claims,
            device,
            last_seq,
            address: address.map(|a| a.ip().to_string()),
        })
    }

    /// The recipients whose notifications this client gets and may
    /// acknowledge: the user's own and the role's.
    fn recipients(&self) -> Vec<String> {
        vec![
            self.claims.sub.clone(),
            outbox::role_recipient(&self.claims.role),
        ]
    }
}

impl Notifier {
    /// Subscribes to the instances' subject and starts pushing, resending,
    /// escalating and sweeping; returns the tasks that do it.
    pub async fn start(
        pool: PgPool,
        nats: async_nats::Client,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Self, Vec<JoinHandle<()>>)> {
        let subject = fanout::subject(&config.subject_prefix);
        let subscription = nats
            .subscribe(subject.clone())
            .await
            .with_context(|| format!("subscribing to {subject}"))?;
        let (pushes, queue) = mpsc::unbounded_channel();
        let notifier = Self(Arc::new(Inner {
            pool,
            nats,
            subject,
            hub: Hub::default(),
            config,
            metrics,
            pushes,
        }));
        let tasks = vec![
            tokio::spawn(notifier.clone().listen(subscription)),
            tokio::spawn(notifier.clone().pusher(queue)),
            tokio::spawn(schedule::resend(notifier.clone())),
            tokio::spawn(schedule::escalate_and_sweep(notifier.clone())),
        ];
        Ok((notifier, tasks))
    }

    /// The Socket.IO server and `/ws`, for the notifications port.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/ws", get(ws::upgrade))
            .with_state(self.clone())
            .layer(socketio::layer(self.clone()))
    }

    /// The devices connected to this instance.
    pub fn hub(&self) -> &Hub {
        &self.0.hub
    }

    /// Hands committed notifications to every instance, in order. Never
    /// waits: the projection goes on to ack; a push that fails is swept.
    pub fn push(&self, notifications: Vec<Value>) {
        if !notifications.is_empty() {
            let _ = self.0.pushes.send(notifications);
        }
    }

    /// Publishes queued notifications in the order they were committed and
    /// records them as pushed.
    async fn pusher(self, mut queue: mpsc::UnboundedReceiver<Vec<Value>>) {
        while let Some(mut notifications) = queue.recv().await {
            while let Ok(more) = queue.try_recv() {
                notifications.extend(more);
            }
            if let Err(e) = self.publish(notifications).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "notifications not pushed; the sweep will retry"
                );
            }
        }
    }

    /// Publishes, then records the notifications as pushed without holding
    /// up the next push.
    async fn publish(&self, notifications: Vec<Value>) -> anyhow::Result<()> {
        let ids: Vec<Uuid> = notifications
            .iter()
            .filter_map(|n| n["notificationId"].as_str()?.parse().ok())
            .collect();
        for chunk in notifications.chunks(fanout::CHUNK) {
            self.announce(&Wire::Notifications {
                notifications: chunk.to_vec(),
            })
            .await?;
        }
        self.0.nats.flush().await.context("flushing to NATS")?;
        let pool = self.0.pool.clone();
        tokio::spawn(async move {
            if let Err(e) = outbox::mark_pushed(&pool, &ids).await {
                tracing::warn!(error = %e, "notifications pushed but not marked; the sweep will push them again");
            }
        });
        Ok(())
    }

    async fn announce(&self, wire: &Wire) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(wire)?;
        self.0
            .nats
            .publish(self.0.subject.clone(), payload.into())
            .await
            .context("publishing to NATS")
    }

    /// Delivers what any instance announces to the devices connected here.
    async fn listen(self, mut subscription: async_nats::Subscriber) {
        while let Some(message) = subscription.next().await {
            match serde_json::from_slice::<Wire>(&message.payload) {
                Ok(Wire::Notifications { notifications }) => {
                    for delivery in notifications.into_iter().filter_map(Delivery::from_json) {
                        self.0.hub.deliver(&delivery);
                    }
                }
                Ok(Wire::Acknowledged { notification }) => {
                    let room = room_of(notification["userId"].as_str().unwrap_or_default());
                    let data = json!({
                        "notificationId": notification["notificationId"],
                        "acknowledged": notification["acknowledged"],
                    });
                    self.0.hub.broadcast(&room, ACKNOWLEDGED_EVENT, &data);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable message on the notifications subject")
                }
            }
        }
        tracing::error!("notifications subscription ended");
    }

    /// Connects a device: it gets what it missed since `lastSeq`, then
    /// live notifications, and every unacknowledged urgent one again.
    async fn open(&self, session: &Session, device: Box<dyn Device>) -> anyhow::Result<Arc<Conn>> {
        let claims = &session.claims;
        let conn = self.0.hub.register(
            &claims.sub,
            &claims.role,
            session.last_seq.unwrap_or(0),
            device,
        );
        let replay = async {
            let mut missed = Vec::new();
            if let Some(mut after) = session.last_seq {
                loop {
                    let page = outbox::since(&self.0.pool, &claims.sub, after, REPLAY_PAGE).await?;
                    let full = page.len() as i64 == REPLAY_PAGE;
                    missed.extend(page.into_iter().filter_map(Delivery::from_json));
                    match missed.last() {
                        Some(last) if full => after = last.seq,
                        _ => break,
                    }
                }
            }
            let unacknowledged =
                outbox::unacknowledged(&self.0.pool, &session.recipients()).await?;
            let unacknowledged: Vec<Delivery> = unacknowledged
                .into_iter()
                .filter_map(Delivery::from_json)
                .collect();
            anyhow::Ok((missed, unacknowledged))
        };
        match replay.await {
            Ok((missed, unacknowledged)) => {
                if !conn.go_live(&missed, &unacknowledged) {
                    self.0.hub.drop_conn(&conn);
                }
                Ok(conn)
            }
            Err(e) => {
                self.0.hub.drop_conn(&conn);
                Err(e.context("reading the notifications a device missed"))
            }
        }
    }

    /// Disconnects a device.
    fn close(&self, conn: &Conn) {
        self.0.hub.unregister(conn);
    }

    /// Acknowledges a notification for a client; the reply says how it went.
    async fn acknowledge(&self, session: &Session, request: &Value) -> Value {
        let Some(id) = request
            .get("notificationId")
            .and_then(Value::as_str)
            .and_then(|id| id.parse::<Uuid>().ok())
        else {
            return json!({"ok": false, "error": "acknowledge needs {\"notificationId\": \"<uuid>\"}"});
        };
        let recipients = session.recipients();
        let by = Acknowledger {
            user_id: &session.claims.sub,
            recipients: &recipients,
            device: &session.device,
            address: session.address.as_deref(),
        };
        match outbox::acknowledge(&self.0.pool, id, &by).await {
            Ok(Acknowledged::Now(notification)) => {
                let acknowledged = notification["acknowledged"].clone();
                if let Some(waited) = waited(&notification) {
                    self.0.metrics.acknowledged(waited);
                }
                if let Err(e) = self.announce(&Wire::Acknowledged { notification }).await {
                    tracing::warn!(error = format!("{e:#}"), "acknowledgement not announced");
                }
                json!({"ok": true, "notificationId": id, "acknowledged": acknowledged})
            }
            Ok(Acknowledged::Before(notification)) => json!({
                "ok": true, "notificationId": id, "alreadyAcknowledged": true,
                "acknowledged": notification["acknowledged"],
            }),
            Ok(Acknowledged::NotFound) => {
                json!({"ok": false, "notificationId": id, "error": "no such notification for this user"})
            }
            Err(e) => {
                tracing::error!(error = %e, "acknowledgement not recorded");
                json!({"ok": false, "notificationId": id, "error": "the acknowledgement could not be recorded; try again"})
            }
        }
    }

    /// Resends every unacknowledged urgent notification to the devices
    /// connected here.
    async fn resend_unacknowledged(&self) -> anyhow::Result<()> {
        let recipients: Vec<String> = self
            .0
            .hub
            .rooms()
            .iter()
            .map(|room| recipient_of(room).to_owned())
            .collect();
        if recipients.is_empty() {
            return Ok(());
        }
        for notification in outbox::unacknowledged(&self.0.pool, &recipients).await? {
            if let Some(delivery) = Delivery::from_json(notification) {
                self.0.hub.resend(&delivery);
            }
        }
        Ok(())
    }

    /// Escalates what waited too long, and pushes what a stopped host
    /// committed but never pushed.
    async fn escalate_and_sweep(&self) -> anyhow::Result<()> {
        let config = &self.0.config;
        let escalated =
            outbox::escalate_due(&self.0.pool, config.escalate_after, &config.escalation_role)
                .await?;
        if !escalated.is_empty() {
            tracing::warn!(count = escalated.len(), role = %config.escalation_role, "unacknowledged urgent notifications escalated");
            self.push(escalated);
        }
        let unpushed = outbox::unpushed(&self.0.pool, schedule::SWEEP_GRACE).await?;
        if !unpushed.is_empty() {
            tracing::info!(
                count = unpushed.len(),
                "pushing notifications left unpushed"
            );
            self.push(unpushed);
        }
        Ok(())
    }
}

/// How long a notification waited from being stored to being acknowledged.
fn waited(notification: &Value) -> Option<std::time::Duration> {
    let time = |at: &Value| chrono::DateTime::parse_from_rfc3339(at.as_str()?).ok();
    let created = time(&notification["createdAt"])?;
    let acknowledged = time(&notification["acknowledged"]["at"])?;
    (acknowledged - created).to_std().ok()
}
