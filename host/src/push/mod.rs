//! Clinician notifications: the outbox the projections commit to is pushed
//! to every device of the recipient over Socket.IO and plain WebSocket
//! (SPEC "WebSocket notifications"), through a NATS core subject so a device
//! on any instance gets it. The subject carries ids only; each instance
//! reads what it delivers from the database. Devices that were away get what they missed;
//! urgent notifications are resent until acknowledged and escalated when
//! they are not.

mod fanout;
mod hub;
mod schedule;
mod socketio;
mod ws;

pub use hub::{
    ACKNOWLEDGED_EVENT, CRITICAL_EVENT, Device, Hub, NOTIFICATION_EVENT, REPLAY_TRUNCATED_EVENT,
    SESSION_EXPIRED_EVENT, SESSION_REPLACED_EVENT,
};

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::auth::{Claims, Recipient, TokenVerifier};
use crate::rate::Limited;
use crate::shared::{NotificationQueue, NotificationSink, Shared};
use crate::store::StoredNotification;
use crate::store::audit::{self, ANONYMOUS, NewAudit};
use crate::store::notifications::{self, Acknowledgement, Acknowledger};
use fanout::{AcknowledgedNotice, Wire};
use hub::{Conn, Delivery};

/// The largest message a device may send (an `acknowledge` or a
/// `reauthenticate` is well under 1 KiB); a larger one closes its
/// connection.
pub const MAX_MESSAGE_BYTES: usize = 64 << 10;

/// Why a device was closed to make room for its user's newer one.
const REPLACED_REASON: &str = "the user connected more devices than MAX_DEVICES_PER_USER";

/// How a device is connected, for the audit log.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Transport {
    /// Socket.IO, either transport.
    SocketIo,
    /// Plain WebSocket at `/ws`.
    WebSocket,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::SocketIo => "socket.io",
            Transport::WebSocket => "websocket",
        }
    }
}

/// Pushes notifications to devices; cheap to clone.
#[derive(Clone)]
pub struct Notifier(Arc<Inner>);

struct Inner {
    shared: Shared,
    /// This instance, in its announcements.
    instance: Uuid,
    subject: String,
    hub: Hub,
    /// Where escalations and swept notifications join the projections'.
    pushes: NotificationSink,
}

/// A connected client: who, from which device, and what it has.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    claims: Claims,
    device: String,
    has: LastSeqs,
    address: Option<String>,
}

/// What a connecting device already has, per room: the last seq of its
/// user's notifications (`lastSeq`) and of its role's (`roleLastSeq`,
/// escalations). A room without one is not replayed: the device gets its
/// live notifications and its unacknowledged urgent ones.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LastSeqs {
    /// `lastSeq`.
    pub user: Option<i64>,
    /// `roleLastSeq`.
    pub role: Option<i64>,
}

impl LastSeqs {
    /// Per room, in the order of [`Claims::recipients`].
    fn per_room(self) -> [Option<i64>; 2] {
        [self.user, self.role]
    }
}

impl Session {
    /// Checks a client's credentials: a valid token (the HTTP API's JWT)
    /// for a user; the device id is the client's, or the connection's.
    async fn open(
        tokens: &TokenVerifier,
        token: Option<&str>,
        has: LastSeqs,
        device: String,
        address: Option<std::net::SocketAddr>,
    ) -> Result<Self, String> {
        let token =
            token.ok_or("a token is required (auth.token, Authorization: Bearer or ?token=)")?;
        let claims = tokens.verify(token).await.map_err(|e| e.to_string())?;
        if Recipient::is_ambiguous_user_id(&claims.sub) {
            return Err("a user id may not start with `role:`".into());
        }
        if has.per_room().iter().flatten().any(|seq| *seq < 0) {
            return Err("lastSeq and roleLastSeq must be 0 or more".into());
        }
        Ok(Self {
            claims,
            device,
            has,
            address: address.map(|a| a.ip().to_string()),
        })
    }

    /// An entry of this session's user doing `action` on its device.
    fn audit_entry(&self, action: &str) -> NewAudit {
        NewAudit {
            ip_address: self.address.clone(),
            ..NewAudit::now(&self.claims.sub, action, "Socket", &self.device)
        }
    }
}

/// Why a handshake was refused.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The credentials: why (audited).
    Invalid(String),
    /// Too many handshakes of the user, or refusals of the address: when
    /// to try again (counted, not audited).
    Limited(Limited),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Invalid(reason) => f.write_str(reason),
            Refusal::Limited(limited) => write!(
                f,
                "too many connection attempts: retry in {} s",
                limited.retry_after_secs()
            ),
        }
    }
}

/// The reply to a client's `acknowledge`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AckReply {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    notification_id: Option<Uuid>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    already_acknowledged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    acknowledged: Option<Acknowledgement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

/// Why a device is being disconnected.
#[derive(Serialize)]
struct ExpiredNotice {
    reason: &'static str,
}

/// Why a device is being disconnected for its user's newer one.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReplacedNotice {
    reason: &'static str,
    max_devices_per_user: usize,
}

/// What a connecting device was told it did not get: the notifications
/// of `userId` (its user, or `role:<role>`) after `lastSeq` and before
/// `firstSeq`, past `REPLAY_LIMIT`. It fetches them with
/// `GET /api/notifications?after=` (`roleAfter=` for the role's).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct TruncatedNotice {
    user_id: String,
    last_seq: i64,
    first_seq: i64,
    limit: i64,
}

/// What a connecting device is sent before going live.
struct Replay {
    /// What it missed since its `lastSeq` and `roleLastSeq`, the newest
    /// `REPLAY_LIMIT` of each, in the order they were stored.
    missed: Vec<Delivery>,
    /// Per room where older ones were left out.
    truncated: Vec<TruncatedNotice>,
    /// Every unacknowledged urgent notification of its user and role,
    /// however many and however old.
    unacknowledged: Vec<Delivery>,
}

/// The reply to a client's `reauthenticate`.
#[derive(Debug, Serialize)]
pub struct ReauthReply {
    ok: bool,
    /// The connection's expiry now, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl ReauthReply {
    fn refused(error: String) -> Self {
        Self {
            ok: false,
            expires: None,
            error: Some(error),
        }
    }
}

impl AckReply {
    fn refused(notification_id: Option<Uuid>, error: &'static str) -> Self {
        Self {
            notification_id,
            error: Some(error),
            ..Self::default()
        }
    }
}

impl Notifier {
    /// Subscribes to the instances' subject and starts pushing what arrives
    /// on `queue` (in order), resending, escalating and sweeping; `pushes`
    /// is `queue`'s sender, for escalations and sweeps. Returns the tasks
    /// that do it.
    pub async fn start(
        shared: Shared,
        pushes: NotificationSink,
        queue: NotificationQueue,
    ) -> anyhow::Result<(Self, Vec<JoinHandle<()>>)> {
        let subject = fanout::subject(&shared.config.subject_prefix);
        let subscription = shared
            .nats
            .subscribe(subject.clone())
            .await
            .with_context(|| format!("subscribing to {subject}"))?;
        let notifier = Self(Arc::new(Inner {
            instance: shared.member,
            shared,
            subject,
            hub: Hub::default(),
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

    /// The Socket.IO server and `/ws`, for the notifications port; pages
    /// of origins not in `CORS_ORIGINS` are refused on both transports,
    /// but the host's console, served on `http_port` of the same host
    /// name, is the host's own.
    pub fn router(&self, http_port: u16) -> Router {
        let sockets = Router::new()
            .route("/ws", get(ws::upgrade))
            .with_state(self.clone())
            .layer(socketio::layer(self.clone()));
        self.config()
            .cors_origins
            .clone()
            .with_own_port(http_port)
            .guard(sockets)
    }

    /// The devices connected to this instance.
    pub fn hub(&self) -> &Hub {
        &self.0.hub
    }

    fn config(&self) -> &crate::config::Config {
        &self.0.shared.config
    }

    fn tokens(&self) -> &TokenVerifier {
        &self.0.shared.tokens
    }

    /// Delivers queued notifications to the devices here and publishes
    /// them to the other instances, in the order they were committed, and
    /// records them as pushed.
    async fn pusher(self, mut queue: NotificationQueue) {
        while let Some(mut stored) = queue.recv().await {
            while let Ok(more) = queue.try_recv() {
                stored.extend(more);
            }
            if let Err(e) = self.publish(stored).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "notifications not pushed; the sweep will retry"
                );
            }
        }
    }

    /// Delivers the notifications as this instance stored them to the
    /// devices here (a critical alert waits for neither NATS nor another
    /// read), publishes them, then records them as pushed without holding
    /// up the next push.
    async fn publish(&self, stored: Vec<StoredNotification>) -> anyhow::Result<()> {
        for notification in &stored {
            self.0.hub.deliver(&Delivery::of(notification));
        }
        let ids: Vec<Uuid> = stored.iter().map(|n| n.notification_id).collect();
        for chunk in ids.chunks(fanout::CHUNK) {
            self.announce(&Wire::Notifications {
                ids: chunk.to_vec(),
                from: Some(self.0.instance),
            })
            .await?;
        }
        let shared = &self.0.shared;
        shared.nats.flush().await.context("flushing to NATS")?;
        let pool = shared.pool.clone();
        tokio::spawn(async move {
            if let Err(e) = notifications::mark_pushed(&pool, &ids).await {
                tracing::warn!(error = %e, "notifications pushed but not marked; the sweep will push them again");
            }
        });
        Ok(())
    }

    async fn announce(&self, wire: &Wire) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(wire)?;
        self.0
            .shared
            .nats
            .publish(self.0.subject.clone(), payload.into())
            .await
            .context("publishing to NATS")
    }

    /// Delivers what any instance announces to the devices connected here,
    /// as the database holds it.
    async fn listen(self, mut subscription: async_nats::Subscriber) {
        while let Some(message) = subscription.next().await {
            let heard = match serde_json::from_slice::<Wire>(&message.payload) {
                Ok(wire) => self.heard(wire).await,
                Err(e) => Err(anyhow::anyhow!("unreadable: {e}")),
            };
            if let Err(e) = heard {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "message on the notifications subject not delivered"
                );
            }
        }
        tracing::error!("notifications subscription ended");
    }

    /// Delivers one announcement: the notifications it names that the
    /// database holds and that were just pushed, or the acknowledgement the
    /// database records.
    async fn heard(&self, wire: Wire) -> anyhow::Result<()> {
        let pool = &self.0.shared.pool;
        match wire {
            Wire::Notifications { from, .. } if from == Some(self.0.instance) => {}
            Wire::Notifications { ids, .. } => {
                for notification in notifications::announced(pool, &ids, fanout::FRESH_FOR).await? {
                    self.0.hub.deliver(&Delivery::of(&notification));
                }
            }
            Wire::Acknowledged { notification_id } => {
                let Some(notification) = notifications::get(pool, notification_id).await? else {
                    return Ok(());
                };
                let Some(acknowledged) = notification.acknowledgement() else {
                    return Ok(());
                };
                let notice = AcknowledgedNotice {
                    notification_id,
                    acknowledged: Some(acknowledged),
                };
                let data = serde_json::to_value(&notice)?;
                self.0
                    .hub
                    .broadcast(&notification.recipient, ACKNOWLEDGED_EVENT, &data);
            }
        }
        Ok(())
    }

    /// Admits a handshake whose credentials were checked into `opened`: a
    /// valid one within its user's rate (handshakes count as API requests);
    /// an invalid one is audited, within its address's rate of refusals.
    pub(crate) fn admit(
        &self,
        opened: Result<Session, String>,
        address: Option<std::net::SocketAddr>,
        transport: Transport,
    ) -> Result<Session, Refusal> {
        let limits = &self.0.shared.limits;
        match opened {
            Ok(session) => {
                limits.user(&session.claims.sub).map_err(Refusal::Limited)?;
                Ok(session)
            }
            Err(reason) => {
                if let Some(address) = address {
                    limits.refusal(address.ip()).map_err(Refusal::Limited)?;
                }
                self.refused(address, transport, &reason);
                Err(Refusal::Invalid(reason))
            }
        }
    }

    /// Connects a device: it gets what it missed since `lastSeq` (the
    /// newest `REPLAY_LIMIT`), then live notifications, and every
    /// unacknowledged urgent one again. Past `MAX_DEVICES_PER_USER`, the
    /// user's oldest connection here is closed to make room.
    async fn open(
        &self,
        session: &Session,
        device: Box<dyn Device>,
        transport: Transport,
    ) -> anyhow::Result<Arc<Conn>> {
        let floors = session.has.per_room().map(|seq| seq.unwrap_or(0));
        let conn = self.0.hub.register(&session.claims, floors, device);
        self.make_room(&session.claims);
        match self.replay(session).await {
            Ok(replay) => {
                let truncated: String = replay
                    .truncated
                    .iter()
                    .map(|t| match Recipient::from_column(&t.user_id) {
                        Recipient::User(_) => format!(" truncated_before_seq={}", t.first_seq),
                        Recipient::Role(_) => format!(" role_truncated_before_seq={}", t.first_seq),
                    })
                    .collect();
                self.audit(NewAudit {
                    detail: Some(format!(
                        "transport={} replayed={} unacknowledged={}{truncated}",
                        transport.as_str(),
                        replay.missed.len(),
                        replay.unacknowledged.len()
                    )),
                    ..session.audit_entry("socket.connected")
                });
                let told = replay.truncated.iter().all(|notice| {
                    conn.send(
                        REPLAY_TRUNCATED_EVENT,
                        &serde_json::to_value(notice).unwrap_or_default(),
                    )
                });
                if !told || !conn.go_live(&replay.missed, &replay.unacknowledged) {
                    self.0
                        .hub
                        .drop_conn(&conn, "the device did not take its replay");
                }
                self.expire_with_token(Arc::downgrade(&conn));
                Ok(conn)
            }
            Err(e) => {
                self.0.hub.drop_conn(&conn, "its replay could not be read");
                Err(e.context("reading the notifications a device missed"))
            }
        }
    }

    /// Closes the user's oldest connections here beyond
    /// `MAX_DEVICES_PER_USER`, telling each why first: a clinician's new
    /// device always works, and one user cannot hold the host's sockets.
    fn make_room(&self, claims: &Claims) {
        let max = self.config().max_devices_per_user;
        let user = Recipient::User(claims.sub.clone());
        for oldest in self.0.hub.oldest_beyond(&user, max) {
            let notice = ReplacedNotice {
                reason: "this user connected another device; the oldest of theirs is closed",
                max_devices_per_user: max,
            };
            oldest.send(
                SESSION_REPLACED_EVENT,
                &serde_json::to_value(notice).unwrap_or_default(),
            );
            self.0.hub.drop_conn(&oldest, REPLACED_REASON);
        }
    }

    /// What a connecting device missed since its `lastSeq` and
    /// `roleLastSeq` (the newest `REPLAY_LIMIT` of each; a notice says
    /// where they start when there were more), and every unacknowledged
    /// urgent notification of its user and role.
    async fn replay(&self, session: &Session) -> anyhow::Result<Replay> {
        let pool = &self.0.shared.api_pool;
        let limit = self.config().replay_limit;
        let recipients = session.claims.recipients();
        let (mut missed, mut truncated) = (Vec::new(), Vec::new());
        for (room, after) in recipients.iter().zip(session.has.per_room()) {
            let Some(after) = after else { continue };
            // One more than the limit tells whether any were left out.
            let mut newest = notifications::newest_since(pool, room, after, limit + 1).await?;
            if newest.len() as i64 > limit {
                newest.remove(0);
                truncated.extend(newest.first().map(|first| TruncatedNotice {
                    user_id: room.column(),
                    last_seq: after,
                    first_seq: first.seq,
                    limit,
                }));
            }
            missed.push(newest);
        }
        let unacknowledged = notifications::unacknowledged(pool, &recipients).await?;
        Ok(Replay {
            missed: notifications::merged(missed)
                .iter()
                .map(Delivery::of)
                .collect(),
            truncated,
            unacknowledged: unacknowledged.iter().map(Delivery::of).collect(),
        })
    }

    /// Disconnects a device when its token expires (or the fresh token it
    /// sent does), telling it why first.
    fn expire_with_token(&self, conn: std::sync::Weak<Conn>) {
        let hub = self.clone();
        tokio::spawn(async move {
            loop {
                let Some(expires) = conn.upgrade().map(|c| c.expires()) else {
                    return;
                };
                let now = chrono::Utc::now().timestamp().max(0) as u64;
                if now >= expires {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_secs(expires - now)).await;
            }
            if let Some(conn) = conn.upgrade() {
                let reason = ExpiredNotice {
                    reason: "the token expired: connect again with a fresh one, or send one with `reauthenticate` before it expires",
                };
                conn.send(
                    SESSION_EXPIRED_EVENT,
                    &serde_json::to_value(reason).unwrap_or_default(),
                );
                hub.0.hub.drop_conn(&conn, "the token expired");
            }
        });
    }

    /// Takes a fresh token for a connected device: the same user and role,
    /// valid, and later than the one it has; the connection then lives
    /// until the new token expires.
    async fn reauthenticate(&self, session: &Session, conn: &Conn, request: &Value) -> ReauthReply {
        let token = request
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match self.tokens().verify(token).await {
            Ok(claims)
                if claims.sub == session.claims.sub && claims.role == session.claims.role =>
            {
                conn.extend(claims.exp);
                ReauthReply {
                    ok: true,
                    expires: Some(conn.expires()),
                    error: None,
                }
            }
            Ok(_) => ReauthReply::refused("the token is another user's or role's".into()),
            Err(e) => ReauthReply::refused(e.to_string()),
        }
    }

    /// Disconnects a device, audited with why: the host's reason if it
    /// ended the connection, else the transport's.
    fn close(&self, session: &Session, conn: &Conn, transport_reason: &str) {
        self.0.hub.unregister(conn);
        let reason = conn.ended().unwrap_or(transport_reason);
        self.audit(NewAudit {
            detail: Some(format!("reason={reason}")),
            ..session.audit_entry("socket.disconnected")
        });
    }

    /// Audits a connection refused at its handshake, with the reason.
    fn refused(&self, address: Option<std::net::SocketAddr>, transport: Transport, reason: &str) {
        self.audit(NewAudit {
            ip_address: address.map(|a| a.ip().to_string()),
            status: Some(401),
            detail: Some(format!("transport={} {reason}", transport.as_str())),
            ..NewAudit::now(ANONYMOUS, "socket.refused", "Socket", "")
        });
    }

    /// Writes an audit entry without holding up the connection.
    fn audit(&self, entry: NewAudit) {
        let pool = self.0.shared.api_pool.clone();
        tokio::spawn(async move {
            if let Err(e) = audit::insert(&pool, &[entry]).await {
                tracing::error!(error = %e, "socket audit entry not written");
            }
        });
    }

    /// Acknowledges a notification for a client; the reply says how it went.
    async fn acknowledge(&self, session: &Session, request: &Value) -> AckReply {
        let Some(id) = request
            .get("notificationId")
            .and_then(Value::as_str)
            .and_then(|id| id.parse::<Uuid>().ok())
        else {
            return AckReply::refused(None, "acknowledge needs {\"notificationId\": \"<uuid>\"}");
        };
        let recipients = session.claims.recipients();
        let by = Acknowledger {
            user_id: &session.claims.sub,
            recipients: &recipients,
            device: &session.device,
            address: session.address.as_deref(),
        };
        match notifications::acknowledge(&self.0.shared.api_pool, id, &by).await {
            Ok(notifications::Acknowledged::Now(notification, chain)) => {
                if let Some(waited) = notification.waited() {
                    self.0.shared.metrics.acknowledged(waited);
                }
                let acknowledged = notification.acknowledgement();
                // Every copy's devices stop showing it: the escalation's
                // role and the original's user alike.
                for settled in std::iter::once(&notification).chain(&chain) {
                    let wire = Wire::Acknowledged {
                        notification_id: settled.notification_id,
                    };
                    if let Err(e) = self.announce(&wire).await {
                        tracing::warn!(error = format!("{e:#}"), "acknowledgement not announced");
                    }
                }
                AckReply {
                    ok: true,
                    notification_id: Some(id),
                    acknowledged,
                    ..AckReply::default()
                }
            }
            Ok(notifications::Acknowledged::Before(notification)) => AckReply {
                ok: true,
                notification_id: Some(id),
                already_acknowledged: true,
                acknowledged: notification.acknowledgement(),
                ..AckReply::default()
            },
            Ok(notifications::Acknowledged::NotFound) => {
                AckReply::refused(Some(id), "no such notification for this user")
            }
            Err(e) => {
                tracing::error!(error = %e, "acknowledgement not recorded");
                AckReply::refused(
                    Some(id),
                    "the acknowledgement could not be recorded; try again",
                )
            }
        }
    }

    /// Resends every unacknowledged urgent notification to the devices
    /// connected here.
    async fn resend_unacknowledged(&self) -> anyhow::Result<()> {
        let recipients = self.0.hub.recipients();
        if recipients.is_empty() {
            return Ok(());
        }
        for notification in notifications::unacknowledged(&self.0.shared.pool, &recipients).await? {
            self.0.hub.resend(&Delivery::of(&notification));
        }
        Ok(())
    }

    /// Escalates what waited too long, and pushes what a stopped host
    /// committed but never pushed.
    async fn escalate_and_sweep(&self) -> anyhow::Result<()> {
        let config = self.config();
        let pool = &self.0.shared.pool;
        let escalated = notifications::escalate_due(pool, &config.escalation_levels()).await?;
        if !escalated.is_empty() {
            tracing::warn!(
                count = escalated.len(),
                "unacknowledged urgent notifications escalated"
            );
            // Refused ones stay in the outbox, for the sweep.
            let _ = self.0.pushes.offer(escalated);
        }
        let unpushed = notifications::sweep_unpushed(pool, schedule::SWEEP_GRACE).await?;
        if !unpushed.is_empty() {
            tracing::info!(
                count = unpushed.len(),
                "pushing notifications left unpushed"
            );
            let ids: Vec<_> = unpushed.iter().map(|n| n.notification_id).collect();
            if !self.0.pushes.offer(unpushed) {
                // The push queue is full: left for the next sweep to take.
                notifications::unsweep(pool, &ids).await?;
            }
        }
        Ok(())
    }
}
