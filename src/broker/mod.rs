//! The state every connection shares: the subscription index, the retained store and the session
//! registry, and the operations that span them (routing a message, opening and closing a session).
//!
//! Routing runs on the publisher's own task. It takes read locks on the index shards the topic
//! touches, collects the matching sessions, releases the locks, and then offers each session one
//! delivery (overlapping subscriptions of one session merge into one copy carrying every matching
//! subscription identifier and the highest granted QoS). It never waits on a subscriber: a full
//! queue refuses the delivery and counts it.

mod housekeeping;
mod slot;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use smallvec::SmallVec;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

pub use housekeeping::{Housekeeping, Timer, TimerKind};
pub use slot::{AttachError, Attached, Control, Ended, Rejected, SessionSlot};

use crate::codec::{QoS, ReasonCode, SubscriptionOptions};
use crate::config::Limits;
use crate::message::{Delivery, Message};
use crate::retained::{RetainedChange, RetainedStore};
use crate::router::{Matched, SubscriberId, SubscriptionIndex};
use crate::session::{EXPIRY_NEVER, PendingWill, Session, Subscription};
use crate::storage::{SessionRecord, Snapshot, Store, StoreOp};
use crate::topic::TopicFilter;

/// How long a new connection waits for the previous owner of its client id to let go.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// A subscription as the router stores it.
#[derive(Debug)]
pub struct Subscriber {
    pub slot: Arc<SessionSlot>,
    pub options: SubscriptionOptions,
    pub id: Option<NonZeroU32>,
}

/// The broker's shared state.
pub struct Broker {
    pub limits: Limits,
    router: SubscriptionIndex<Subscriber>,
    retained: RetainedStore,
    /// Client id -> session. A plain mutex: it is taken on connect and disconnect only, never on
    /// the publish path, and never across an `.await`.
    sessions: Mutex<HashMap<Arc<str>, Arc<SessionSlot>>>,
    next_subscriber: AtomicU64,
    /// Seed and counter for assigned client ids: unique across restarts and within a run.
    boot_nanos: u128,
    next_assigned: AtomicU64,
    timers: mpsc::UnboundedSender<Timer>,
    /// Where durable changes go; `None` keeps everything in memory only.
    store: Option<Arc<dyn Store>>,
}

/// A session opened for a new connection.
pub struct Opened {
    pub slot: Arc<SessionSlot>,
    /// The resumed session, or `None` when a new one starts.
    pub resumed: Option<Box<Session>>,
}

/// Why a session could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The connection that owns the client id did not let go in time.
    TakeoverTimedOut,
}

impl Broker {
    /// A broker with no sessions; `timers` feeds the [`Housekeeping`] task, and durable changes go
    /// to `store` if there is one.
    pub fn new(
        limits: Limits,
        timers: mpsc::UnboundedSender<Timer>,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        Broker {
            limits,
            router: SubscriptionIndex::new(),
            retained: RetainedStore::new(),
            sessions: Mutex::new(HashMap::new()),
            next_subscriber: AtomicU64::new(1),
            boot_nanos: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            next_assigned: AtomicU64::new(1),
            timers,
            store,
        }
    }

    /// Rebuilds offline sessions (with their subscriptions and expiry timers) and retained
    /// messages from a store's snapshot. Called once, before any client connects.
    pub fn restore(&self, snapshot: Snapshot, now: Instant) {
        let wall_now = SystemTime::now();
        for stored in snapshot.sessions {
            let record = stored.record;
            let id = SubscriberId(self.next_subscriber.fetch_add(1, Ordering::Relaxed));
            let slot = Arc::new(SessionSlot::new(id, record.client_id.clone()));
            let session = Session::restore(
                record.client_id.clone(),
                slot.origin(),
                record.expiry_interval,
                stored.subscriptions,
                now,
            );
            for subscription in session.subscriptions() {
                self.subscribe(&slot, subscription, false);
            }
            let generation = slot.park(Box::new(session), None);
            if record.expiry_interval != EXPIRY_NEVER {
                // Offline time before the restart counts against the expiry interval.
                let away = record
                    .disconnected_at
                    .and_then(|at| wall_now.duration_since(at).ok())
                    .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
                let left = record.expiry_interval.saturating_sub(away);
                self.arm(&slot, generation, TimerKind::SessionExpiry, now, left);
            }
            self.sessions.lock().insert(record.client_id, slot);
        }
        for message in snapshot.retained {
            if !message.is_expired(now) {
                self.retained.set(message);
            }
        }
    }

    /// Hands durable changes to the store. A failing store is reported and the broker carries on
    /// from memory.
    fn persist(&self, ops: Vec<StoreOp>) {
        if let Some(store) = &self.store
            && let Err(e) = store.apply(&ops, false)
        {
            tracing::error!("store write failed: {e}");
        }
    }

    /// Records a session now served by a connection: persistent sessions are stored.
    pub fn session_opened(&self, slot: &SessionSlot, expiry_interval: u32) {
        if expiry_interval != 0 {
            self.persist(vec![StoreOp::PutSession(SessionRecord {
                client_id: slot.client_id.clone(),
                expiry_interval,
                disconnected_at: None,
                will: None,
            })]);
        }
    }

    /// A client id for a client that sent none (5.0 Assigned Client Identifier).
    pub fn assign_client_id(&self) -> String {
        let n = self.next_assigned.fetch_add(1, Ordering::Relaxed);
        format!("auto-{:x}-{n}", self.boot_nanos)
    }

    /// Number of sessions, online and offline.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Number of subscriptions in the router.
    pub fn subscription_count(&self) -> usize {
        self.router.len()
    }

    /// Delivers a message to every matching subscription and updates the retained store.
    /// Returns how many sessions accepted it.
    pub fn route(&self, message: Arc<Message>) -> usize {
        if message.retain && self.limits.retain_available {
            match self.retained.set(message.clone()) {
                RetainedChange::Added | RetainedChange::Replaced => {
                    self.persist(vec![StoreOp::PutRetained(message.clone())]);
                }
                RetainedChange::Removed => {
                    self.persist(vec![StoreOp::DeleteRetained(message.topic.clone())]);
                }
                RetainedChange::Unchanged => {}
            }
        }
        let mut targets: SmallVec<[Target; 4]> = SmallVec::new();
        self.router
            .for_each_match(&message.topic, |matched| match matched {
                Matched::Direct { value, .. } => {
                    // [MQTT-3.8.3-3] No Local: not back to the session that published it.
                    if value.options.no_local && message.origin == Some(value.slot.origin()) {
                        return;
                    }
                    targets.push(Target::new(value, &message, false));
                }
                Matched::Shared(group) => {
                    // Round robin among members, preferring one that is connected now.
                    if let Some((_, value)) = group.pick(|member| member.slot.is_online()) {
                        targets.push(Target::new(value, &message, true));
                    }
                }
            });
        merge_overlapping(&mut targets);
        let mut accepted = 0;
        for target in targets {
            let delivery = Delivery {
                message: message.clone(),
                qos: message.qos.min(target.qos),
                retain: target.retain,
                subscription_ids: target.ids,
            };
            match target.slot.push(delivery, &self.limits) {
                Ok(()) => accepted += 1,
                Err(reason) => debug!(client = %target.slot.client_id, ?reason, "delivery refused"),
            }
        }
        accepted
    }

    /// Adds or replaces a subscription in the router (and in the store, for a `persistent`
    /// session).
    pub fn subscribe(
        &self,
        slot: &Arc<SessionSlot>,
        subscription: &Subscription,
        persistent: bool,
    ) {
        if persistent {
            self.persist(vec![StoreOp::PutSubscription {
                client_id: slot.client_id.clone(),
                subscription: subscription.clone(),
            }]);
        }
        self.router.subscribe(
            &subscription.filter,
            slot.id,
            Subscriber {
                slot: slot.clone(),
                options: subscription.options,
                id: subscription.id,
            },
        );
    }

    pub fn unsubscribe(&self, slot: &SessionSlot, filter: &TopicFilter, persistent: bool) {
        self.router.unsubscribe(filter, slot.id);
        if persistent {
            self.persist(vec![StoreOp::DeleteSubscription {
                client_id: slot.client_id.clone(),
                filter: filter.clone(),
            }]);
        }
    }

    /// The retained messages a new subscription matches.
    pub fn retained_matching(&self, filter: &TopicFilter, now: Instant) -> Vec<Arc<Message>> {
        self.retained.matching(filter, now)
    }

    /// Finds or creates the session for a connecting client, taking it over from a connection
    /// that still owns it. With `clean_start`, any existing session ends first.
    pub async fn open_session(
        &self,
        client_id: &Arc<str>,
        clean_start: bool,
    ) -> Result<Opened, OpenError> {
        let deadline = tokio::time::Instant::now() + TAKEOVER_TIMEOUT;
        loop {
            let waiting = {
                let mut sessions = self.sessions.lock();
                let Some(slot) = sessions.get(client_id).cloned() else {
                    return Ok(self.create_session(&mut sessions, client_id));
                };
                match slot.attach() {
                    Ok(attached) if !clean_start => {
                        // [MQTT-3.1.3-9] a will still waiting for its delay is not sent when the
                        // session resumes: `attached.pending_will` is dropped here.
                        return Ok(Opened {
                            slot,
                            resumed: attached.session,
                        });
                    }
                    Ok(attached) => {
                        // Clean start: the old session ends; a new slot takes its place so no
                        // delivery racing with the cleanup reaches the new session.
                        sessions.remove(client_id);
                        let ended = slot.end(None);
                        let opened = self.create_session(&mut sessions, client_id);
                        drop(sessions);
                        if let Some(mut ended) = ended {
                            // `attach` took the parked session and its waiting will out of
                            // the slot: the session's subscriptions leave the router, and the
                            // will goes out now since its session ends before the delay passed
                            // (section 3.1.3.2.2).
                            ended.session = attached.session;
                            ended.will = ended.will.or(attached.pending_will);
                            self.clean_up(&slot, ended);
                        }
                        return Ok(opened);
                    }
                    Err(AttachError::Ended) => {
                        sessions.remove(client_id);
                        continue;
                    }
                    Err(AttachError::Owned) => {
                        let (tx, rx) = oneshot::channel();
                        match slot.request(Control::TakeOver(tx)) {
                            Ok(()) => rx,
                            // It went offline between the two calls: try again.
                            Err(_) => continue,
                        }
                    }
                }
            };
            // Err from the channel means the owner dropped the request after parking: fine too.
            if tokio::time::timeout_at(deadline, waiting).await.is_err() {
                warn!(client = %client_id, "previous connection did not release the session in time");
                return Err(OpenError::TakeoverTimedOut);
            }
        }
    }

    fn create_session(
        &self,
        sessions: &mut HashMap<Arc<str>, Arc<SessionSlot>>,
        client_id: &Arc<str>,
    ) -> Opened {
        let id = SubscriberId(self.next_subscriber.fetch_add(1, Ordering::Relaxed));
        let slot = Arc::new(SessionSlot::new(id, client_id.clone()));
        // A fresh slot is neither owned nor ended: attaching cannot fail, and holds no session.
        let _ = slot.attach();
        sessions.insert(client_id.clone(), slot.clone());
        Opened {
            slot,
            resumed: None,
        }
    }

    /// The connection that owned a session has closed. The session ends now (expiry 0) or is
    /// parked with its timers armed; the will goes out now or after its delay.
    pub fn close_session(
        &self,
        slot: &Arc<SessionSlot>,
        session: Box<Session>,
        will: Option<PendingWill>,
        now: Instant,
    ) {
        let takeover = slot.take_takeover();
        let expiry = session.expiry_interval();
        if expiry == 0 {
            let ended = {
                let mut sessions = self.sessions.lock();
                if sessions
                    .get(&slot.client_id)
                    .is_some_and(|s| Arc::ptr_eq(s, slot))
                {
                    sessions.remove(&slot.client_id);
                }
                slot.end(None)
            };
            if let Some(mut ended) = ended {
                // The session ends with the connection, so a delayed will goes out now
                // (section 3.1.3.2.2).
                ended.session = Some(session);
                ended.will = will;
                self.clean_up(slot, ended);
            }
        } else {
            let (now_will, delayed) = match will {
                Some(will) if will.delay == 0 => (Some(will), None),
                delayed => (None, delayed),
            };
            self.persist(vec![StoreOp::PutSession(SessionRecord {
                client_id: slot.client_id.clone(),
                expiry_interval: expiry,
                disconnected_at: Some(SystemTime::now()),
                will: None,
            })]);
            let delay = delayed.as_ref().map(|will| will.delay);
            let generation = slot.park(session, delayed);
            if let Some(delay) = delay {
                self.arm(slot, generation, TimerKind::Will, now, delay.min(expiry));
            }
            if expiry != EXPIRY_NEVER {
                self.arm(slot, generation, TimerKind::SessionExpiry, now, expiry);
            }
            if let Some(will) = now_will {
                self.route(will.publish(now));
            }
        }
        if let Some(tx) = takeover {
            let _ = tx.send(());
        }
    }

    fn arm(
        &self,
        slot: &Arc<SessionSlot>,
        generation: u64,
        kind: TimerKind,
        now: Instant,
        secs: u32,
    ) {
        let timer = Timer {
            at: now + Duration::from_secs(u64::from(secs)),
            slot: slot.clone(),
            generation,
            kind,
        };
        // The housekeeping task lives as long as the broker runs; after shutdown nothing needs
        // the timer any more.
        let _ = self.timers.send(timer);
    }

    /// A timer armed at disconnect has fired.
    pub fn fire(&self, timer: Timer) {
        match timer.kind {
            TimerKind::Will => {
                if let Some(will) = timer.slot.take_due_will(timer.generation) {
                    debug!(client = %timer.slot.client_id, "publishing delayed will");
                    self.route(will.publish(clock()));
                }
            }
            TimerKind::SessionExpiry => {
                let ended = {
                    let mut sessions = self.sessions.lock();
                    let ended = timer.slot.end(Some(timer.generation));
                    if ended.is_some()
                        && sessions
                            .get(&timer.slot.client_id)
                            .is_some_and(|s| Arc::ptr_eq(s, &timer.slot))
                    {
                        sessions.remove(&timer.slot.client_id);
                    }
                    ended
                };
                if let Some(ended) = ended {
                    debug!(client = %timer.slot.client_id, "session expired");
                    self.clean_up(&timer.slot, ended);
                }
            }
        }
    }

    /// Drops retained messages whose expiry has passed.
    pub fn sweep_retained(&self, now: Instant) {
        let dropped = self.retained.remove_expired(now);
        if dropped > 0 {
            debug!(dropped, "expired retained messages removed");
        }
    }

    /// Removes an ended session's subscriptions and record, and publishes its waiting will.
    fn clean_up(&self, slot: &SessionSlot, ended: Ended) {
        self.persist(vec![StoreOp::DeleteSession {
            client_id: slot.client_id.clone(),
        }]);
        if let Some(session) = ended.session {
            for subscription in session.subscriptions() {
                self.router.unsubscribe(&subscription.filter, slot.id);
            }
        }
        if let Some(will) = ended.will {
            self.route(will.publish(clock()));
        }
    }

    /// Asks every connected client's connection to close with `reason` (server shutdown).
    pub fn close_all(&self, reason: ReasonCode) {
        let slots: Vec<_> = self.sessions.lock().values().cloned().collect();
        for slot in slots {
            let _ = slot.request(Control::Close(reason));
        }
    }
}

/// The broker's clock: tokio's, so tests with paused time drive expiry.
fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// One session a message goes to, before overlapping subscriptions are merged.
struct Target {
    slot: Arc<SessionSlot>,
    qos: QoS,
    retain: bool,
    ids: SmallVec<[NonZeroU32; 1]>,
    shared: bool,
}

impl Target {
    fn new(subscriber: &Subscriber, message: &Message, shared: bool) -> Self {
        Target {
            slot: subscriber.slot.clone(),
            qos: subscriber.options.qos,
            // 5.0 Retain As Published; otherwise RETAIN is 0 for a live delivery
            // ([MQTT-3.3.1-12], 3.1.1 [MQTT-3.3.1-9]).
            retain: message.retain && subscriber.options.retain_as_published,
            ids: subscriber.id.into_iter().collect(),
            shared,
        }
    }
}

/// Merges the non-shared targets of one session into one delivery ([MQTT-3.3.4-2]: the highest
/// QoS of the matching subscriptions; [MQTT-3.3.4-3]: every matching subscription identifier).
fn merge_overlapping(targets: &mut SmallVec<[Target; 4]>) {
    if targets.len() < 2 {
        return;
    }
    targets.sort_unstable_by_key(|t| (t.shared, t.slot.id));
    // In place: `later` is folded into the kept `earlier` one when both are direct subscriptions
    // of the same session.
    targets.dedup_by(|later, earlier| {
        let same = !later.shared && !earlier.shared && later.slot.id == earlier.slot.id;
        if same {
            earlier.qos = earlier.qos.max(later.qos);
            earlier.retain |= later.retain;
            earlier.ids.extend(later.ids.drain(..));
        }
        same
    });
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::codec::PublishProperties;
    use crate::topic::TopicName;

    fn broker() -> Broker {
        let (timers, _) = mpsc::unbounded_channel();
        Broker::new(Limits::default(), timers, None)
    }

    fn retained(topic: &str, expires_at: Option<Instant>) -> Arc<Message> {
        Arc::new(Message {
            topic: TopicName::new(topic).expect("valid"),
            payload: Bytes::from_static(b"v"),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at,
            origin: None,
        })
    }

    #[test]
    fn overlapping_subscriptions_of_one_session_merge_and_shared_ones_stay_apart() {
        let slot = |n| Arc::new(SessionSlot::new(SubscriberId(n), Arc::from("c")));
        let (a, b) = (slot(1), slot(2));
        let target = |slot: &Arc<SessionSlot>, qos, id: u32, shared| Target {
            slot: slot.clone(),
            qos,
            retain: false,
            ids: NonZeroU32::new(id).into_iter().collect(),
            shared,
        };
        let mut targets: SmallVec<[Target; 4]> = SmallVec::new();
        targets.push(target(&b, QoS::AtMostOnce, 5, false));
        targets.push(target(&a, QoS::AtLeastOnce, 1, false));
        targets.push(target(&a, QoS::ExactlyOnce, 2, true));
        targets.push(target(&a, QoS::AtMostOnce, 3, false));
        targets.push(target(&b, QoS::ExactlyOnce, 6, false));
        merge_overlapping(&mut targets);
        let summary: Vec<(u64, QoS, Vec<u32>, bool)> = targets
            .iter()
            .map(|t| {
                // The order of one delivery's identifiers carries no meaning.
                let mut ids: Vec<u32> = t.ids.iter().map(|i| i.get()).collect();
                ids.sort_unstable();
                (t.slot.id.0, t.qos, ids, t.shared)
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, QoS::AtLeastOnce, vec![1, 3], false),
                (2, QoS::ExactlyOnce, vec![5, 6], false),
                (1, QoS::ExactlyOnce, vec![2], true),
            ]
        );
    }

    #[test]
    fn the_sweep_removes_expired_retained_messages_nobody_asked_for() {
        let broker = broker();
        let now = Instant::now();
        broker.route(retained("a", Some(now + Duration::from_secs(1))));
        broker.route(retained("b", None));
        assert_eq!(broker.retained_count(), 2);
        broker.sweep_retained(now);
        assert_eq!(broker.retained_count(), 2, "not expired yet");
        broker.sweep_retained(now + Duration::from_secs(2));
        assert_eq!(broker.retained_count(), 1, "only the expired one went");
    }
}
