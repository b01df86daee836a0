//! The devices connected to this instance, by room, and the order in which
//! each gets its notifications: what it missed first, then live ones, each
//! once.
//!
//! Rooms are by [`Recipient`]: a user (every device of theirs) and a role
//! (every device of a role's users, for escalations). Socket.IO sockets and plain
//! WebSockets are both [`Device`]s here, so both get the same messages in
//! the same order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde_json::Value;

use crate::auth::{Claims, Recipient};
use crate::store::StoredNotification;
use crate::sync::{Locked, ReadWrite};

/// Where a connected client's messages go (a Socket.IO socket, a WebSocket).
pub trait Device: Send + Sync {
    /// Sends one event; false when the device is gone or cannot keep up.
    fn send(&self, event: &str, data: &Value) -> bool;
    /// Closes the connection (the client reconnects with `lastSeq`).
    fn close(&self);
}

/// The Socket.IO event of a normal notification.
pub const NOTIFICATION_EVENT: &str = "notification";
/// The Socket.IO event of an urgent one.
pub const CRITICAL_EVENT: &str = "critical_alert";
/// Sent to a user's devices when one of them acknowledged a notification.
pub const ACKNOWLEDGED_EVENT: &str = "notification_acknowledged";
/// Sent to a device just before it is disconnected because its token
/// expired (it may send a fresh one with `reauthenticate` before then).
pub const SESSION_EXPIRED_EVENT: &str = "session_expired";

/// Sent to a device just before it is disconnected because its user
/// connected more than `MAX_DEVICES_PER_USER` devices to this host (it is
/// the oldest of them).
pub const SESSION_REPLACED_EVENT: &str = "session_replaced";
/// Sent to a connecting device, before its replay, when it missed more
/// than `REPLAY_LIMIT` notifications: which ones it was not sent.
pub const REPLAY_TRUNCATED_EVENT: &str = "replay_truncated";

/// A stored notification on its way to its recipient's devices.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Whose devices.
    pub recipient: Recipient,
    /// Its recipient's seq.
    pub seq: i64,
    /// Urgent ones go out as `critical_alert`.
    pub urgent: bool,
    /// The notification as clients see it.
    pub body: Arc<Value>,
}

impl Delivery {
    /// A stored notification's delivery.
    pub fn of(notification: &StoredNotification) -> Self {
        Self {
            recipient: notification.recipient.clone(),
            seq: notification.seq,
            urgent: notification.urgent,
            body: Arc::new(notification.to_json()),
        }
    }

    /// The event it is sent as.
    pub fn event(&self) -> &'static str {
        if self.urgent {
            CRITICAL_EVENT
        } else {
            NOTIFICATION_EVENT
        }
    }
}

/// How many recent notifications a connection remembers, so one pushed
/// twice (a sweep racing a push) reaches it once.
const RECENT: usize = 32;

/// One connected device.
pub struct Conn {
    id: u64,
    rooms: [Recipient; 2],
    device: Box<dyn Device>,
    state: Mutex<ConnState>,
    /// When its token expires, seconds since the epoch; a fresh token
    /// moves it on.
    expires: AtomicU64,
    /// Why the host ended it, if it did (for the audit log).
    ended: OnceLock<&'static str>,
}

/// Until the device has its replay it is not live: deliveries wait in
/// `pending`, then go out after the replay, skipping what it already got.
struct ConnState {
    live: bool,
    pending: Vec<Delivery>,
    /// Per room: seqs at or below are the client's already.
    floor: [i64; 2],
    recent: VecDeque<(u8, i64)>,
}

impl Conn {
    /// When its token expires, seconds since the epoch.
    pub fn expires(&self) -> u64 {
        self.expires.load(Ordering::Acquire)
    }

    /// Moves the expiry on to a fresh token's.
    pub fn extend(&self, expires: u64) {
        self.expires.fetch_max(expires, Ordering::AcqRel);
    }

    /// Why the host ended this connection, if it did.
    pub fn ended(&self) -> Option<&'static str> {
        self.ended.get().copied()
    }

    /// Sends one event to this device only.
    pub fn send(&self, event: &str, data: &Value) -> bool {
        self.device.send(event, data)
    }

    fn room_index(&self, room: &Recipient) -> Option<u8> {
        self.rooms.iter().position(|r| r == room).map(|i| i as u8)
    }

    /// Sends a delivery unless the device has it already; false if the
    /// device failed.
    fn send_once(&self, state: &mut ConnState, delivery: &Delivery) -> bool {
        let Some(room) = self.room_index(&delivery.recipient) else {
            return true;
        };
        if delivery.seq <= state.floor[room as usize]
            || state.recent.contains(&(room, delivery.seq))
        {
            return true;
        }
        if state.recent.len() == RECENT {
            state.recent.pop_front();
        }
        state.recent.push_back((room, delivery.seq));
        self.device.send(delivery.event(), &delivery.body)
    }

    /// Sends what the device missed (each room's in seq order), then what arrived
    /// meanwhile, then unacknowledged urgent ones again; from here on
    /// deliveries go straight out. False if the device failed.
    pub fn go_live(&self, missed: &[Delivery], unacknowledged: &[Delivery]) -> bool {
        let mut state = self.state.locked();
        let mut ok = missed.iter().all(|d| self.send_once(&mut state, d));
        for delivery in missed {
            if let Some(room) = self.room_index(&delivery.recipient) {
                let floor = &mut state.floor[room as usize];
                *floor = (*floor).max(delivery.seq);
            }
        }
        let mut pending = std::mem::take(&mut state.pending);
        pending.sort_by_key(|d| d.seq);
        ok = ok && pending.iter().all(|d| self.send_once(&mut state, d));
        state.live = true;
        ok && unacknowledged.iter().all(|d| {
            let room = self.room_index(&d.recipient);
            let sent = room.is_some_and(|r| state.recent.contains(&(r, d.seq)));
            sent || self.device.send(d.event(), &d.body)
        })
    }

    fn deliver(&self, delivery: &Delivery) -> bool {
        let mut state = self.state.locked();
        if state.live {
            self.send_once(&mut state, delivery)
        } else {
            state.pending.push(delivery.clone());
            true
        }
    }

    fn resend(&self, delivery: &Delivery) -> bool {
        let state = self.state.locked();
        !state.live || self.device.send(delivery.event(), &delivery.body)
    }
}

/// The connections of this instance, by room.
#[derive(Default)]
pub struct Hub {
    rooms: RwLock<HashMap<Recipient, Vec<Arc<Conn>>>>,
    next_id: AtomicU64,
}

impl Hub {
    /// Adds a device to its user's and its role's rooms. It is not live
    /// until [`Conn::go_live`]; `floors` are the newest seqs of its user's
    /// and its role's room it already has.
    pub fn register(
        &self,
        claims: &Claims,
        floors: [i64; 2],
        device: Box<dyn Device>,
    ) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            rooms: claims.recipients(),
            expires: AtomicU64::new(claims.exp),
            ended: OnceLock::new(),
            device,
            state: Mutex::new(ConnState {
                live: false,
                pending: Vec::new(),
                floor: floors,
                recent: VecDeque::new(),
            }),
        });
        let mut rooms = self.rooms.writing();
        for room in &conn.rooms {
            rooms.entry(room.clone()).or_default().push(conn.clone());
        }
        conn
    }

    /// Removes a connection from its rooms.
    pub fn unregister(&self, conn: &Conn) {
        let mut rooms = self.rooms.writing();
        for room in &conn.rooms {
            if let Some(conns) = rooms.get_mut(room) {
                conns.retain(|c| c.id != conn.id);
                if conns.is_empty() {
                    rooms.remove(room);
                }
            }
        }
    }

    /// The connections of a room beyond its newest `keep`, oldest first.
    pub fn oldest_beyond(&self, room: &Recipient, keep: usize) -> Vec<Arc<Conn>> {
        let mut members = self.members(room);
        let beyond = members.len().saturating_sub(keep);
        members.sort_by_key(|c| c.id);
        members.truncate(beyond);
        members
    }

    fn members(&self, room: &Recipient) -> Vec<Arc<Conn>> {
        let rooms = self.rooms.reading();
        rooms.get(room).cloned().unwrap_or_default()
    }

    /// Calls `send` for each connection of the room; one that fails is
    /// closed and removed (it recovers by reconnecting with `lastSeq`).
    fn each(&self, room: &Recipient, send: impl Fn(&Conn) -> bool) {
        for conn in self.members(room) {
            if !send(&conn) {
                self.drop_conn(&conn, "the device did not keep up");
            }
        }
    }

    /// Closes and removes a connection (its device failed, or its token
    /// expired), saying why.
    pub fn drop_conn(&self, conn: &Conn, reason: &'static str) {
        let _ = conn.ended.set(reason);
        self.unregister(conn);
        conn.device.close();
    }

    /// A new notification: to every device of its room, once, in order.
    pub fn deliver(&self, delivery: &Delivery) {
        self.each(&delivery.recipient, |c| c.deliver(delivery));
    }

    /// An unacknowledged urgent notification again, to every live device.
    pub fn resend(&self, delivery: &Delivery) {
        self.each(&delivery.recipient, |c| c.resend(delivery));
    }

    /// Any other event to every device of a room.
    pub fn broadcast(&self, room: &Recipient, event: &str, data: &Value) {
        self.each(room, |c| c.device.send(event, data));
    }

    /// The recipients with at least one device here.
    pub fn recipients(&self) -> Vec<Recipient> {
        let rooms = self.rooms.reading();
        rooms.keys().cloned().collect()
    }

    /// How many devices are connected here.
    pub fn connections(&self) -> usize {
        let rooms = self.rooms.reading();
        rooms
            .iter()
            .filter(|(room, _)| matches!(room, Recipient::User(_)))
            .map(|(_, conns)| conns.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that records what it was sent.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<(String, i64)>>>);

    impl Device for Recorder {
        fn send(&self, event: &str, data: &Value) -> bool {
            let seq = data["seq"].as_i64().unwrap_or(-1);
            self.0.lock().unwrap().push((event.to_owned(), seq));
            true
        }
        fn close(&self) {}
    }

    fn delivery(user: &str, seq: i64, urgent: bool) -> Delivery {
        Delivery {
            recipient: Recipient::User(user.into()),
            seq,
            urgent,
            body: Arc::new(serde_json::json!({ "seq": seq })),
        }
    }

    fn claims(user: &str) -> Claims {
        Claims {
            sub: user.into(),
            name: String::new(),
            role: "provider".into(),
            exp: 0,
        }
    }

    #[test]
    fn missed_then_pending_then_live_each_once_in_order() {
        let hub = Hub::default();
        let device = Recorder::default();
        let conn = hub.register(&claims("dr"), [1, 0], Box::new(device.clone()));
        // Live deliveries while the replay is read wait for it.
        hub.deliver(&delivery("dr", 4, false));
        hub.deliver(&delivery("dr", 3, false));
        assert!(device.0.lock().unwrap().is_empty());
        let missed = [delivery("dr", 2, false), delivery("dr", 3, false)];
        assert!(conn.go_live(&missed, &[delivery("dr", 3, false)]));
        hub.deliver(&delivery("dr", 5, true));
        hub.deliver(&delivery("dr", 5, true));
        hub.deliver(&delivery("other", 6, true));
        let seqs: Vec<i64> = device.0.lock().unwrap().iter().map(|(_, s)| *s).collect();
        assert_eq!(seqs, [2, 3, 4, 5]);
        assert_eq!(device.0.lock().unwrap()[3].0, CRITICAL_EVENT);
    }

    #[test]
    fn each_room_is_replayed_above_its_own_floor_and_then_live_once() {
        let hub = Hub::default();
        let device = Recorder::default();
        let conn = hub.register(&claims("dr"), [1, 2], Box::new(device.clone()));
        let role = |seq| Delivery {
            recipient: Recipient::Role("provider".into()),
            ..delivery("dr", seq, true)
        };
        assert!(conn.go_live(
            &[delivery("dr", 2, false), role(3), delivery("dr", 3, false)],
            &[]
        ));
        hub.deliver(&role(2));
        hub.deliver(&role(3));
        hub.deliver(&role(4));
        hub.deliver(&delivery("dr", 3, false));
        let sent: Vec<(String, i64)> = device.0.lock().unwrap().clone();
        assert_eq!(
            sent,
            [
                (NOTIFICATION_EVENT.to_owned(), 2),
                (CRITICAL_EVENT.to_owned(), 3),
                (NOTIFICATION_EVENT.to_owned(), 3),
                (CRITICAL_EVENT.to_owned(), 4),
            ]
        );
    }

    #[test]
    fn the_oldest_connections_beyond_the_newest_are_found() {
        let hub = Hub::default();
        let ids: Vec<u64> = (0..4)
            .map(|_| {
                hub.register(&claims("dr"), [0, 0], Box::new(Recorder::default()))
                    .id
            })
            .collect();
        hub.register(&claims("other"), [0, 0], Box::new(Recorder::default()));
        let room = Recipient::User("dr".into());
        let beyond: Vec<u64> = hub.oldest_beyond(&room, 2).iter().map(|c| c.id).collect();
        assert_eq!(beyond, ids[..2]);
        assert!(hub.oldest_beyond(&room, 4).is_empty());
    }

    #[test]
    fn resends_reach_every_live_device_of_the_room() {
        let hub = Hub::default();
        let (a, b) = (Recorder::default(), Recorder::default());
        hub.register(&claims("dr"), [0, 0], Box::new(a.clone()))
            .go_live(&[], &[]);
        hub.register(&claims("dr"), [0, 0], Box::new(b.clone()))
            .go_live(&[], &[]);
        hub.resend(&delivery("dr", 1, true));
        hub.resend(&delivery("dr", 1, true));
        assert_eq!(a.0.lock().unwrap().len(), 2);
        assert_eq!(b.0.lock().unwrap().len(), 2);
        assert_eq!(hub.connections(), 2);
    }
}
