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

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use smallvec::SmallVec;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

pub use housekeeping::{Housekeeping, Timer, TimerKind};
pub use slot::{
    AttachError, Attached, ClientInfo, Control, Ended, Pushed, Rejected, SessionSlot, Stamp,
};

use crate::codec::{PacketId, QoS, ReasonCode, SubscriptionOptions};
use crate::config::Limits;
use crate::message::{Delivery, Message, StoredBody, StoredRef};
use crate::metrics::{DropReason, Histograms, Metrics};
use crate::retained::{RetainedChange, RetainedStore};
use crate::router::{Matched, SubscriberId, SubscriptionIndex};
use crate::session::{EXPIRY_NEVER, OutboundState, PendingWill, Session, Subscription};
use crate::storage::{
    MessageId, QueuedState, SessionRecord, Snapshot, StoreFailed, StoreOp, StoreWriter, Ticket,
};
use crate::topic::{TopicFilter, TopicName};

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
    /// Swapped whole by a reload; see [`Broker::limits`].
    limits: ArcSwap<Limits>,
    metrics: Arc<Metrics>,
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
    store: Option<Arc<StoreWriter>>,
    /// Stored message ids and queue seqs come from this one counter, so both are unique.
    next_stored: AtomicU64,
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
        store: Option<Arc<StoreWriter>>,
    ) -> Self {
        Broker {
            limits: ArcSwap::from_pointee(limits),
            metrics: Arc::new(Metrics::new()),
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
            next_stored: AtomicU64::new(1),
        }
    }

    /// Rebuilds sessions (subscriptions, queued and in-flight messages, incoming QoS 2 state,
    /// wills, expiry timers) and retained messages from a store's snapshot. Called once, before any
    /// client connects. Sessions that were connected when the broker stopped are offline now:
    /// their wills go out (after their delay), as for any connection that ended without
    /// DISCONNECT.
    pub fn restore(&self, snapshot: Snapshot, now: Instant) {
        let wall_now = SystemTime::now();
        let mut highest: u64 = snapshot.messages.keys().next_back().copied().unwrap_or(0);
        let mut bodies: HashMap<MessageId, Arc<StoredBody>> = HashMap::new();
        let mut wills_due = Vec::new();
        let mut fixes = Vec::new();
        for stored in snapshot.sessions {
            let mut record = stored.record;
            let client_id = record.client_id.clone();
            let id = SubscriberId(self.next_subscriber.fetch_add(1, Ordering::Relaxed));
            let slot = Arc::new(SessionSlot::new(id, client_id.clone()));

            let mut inflight = Vec::new();
            let mut queued = Vec::new();
            for (seq, entry) in stored.queue {
                highest = highest.max(seq);
                let message = snapshot.messages.get(&entry.message);
                let Some(message) = message.filter(|m| {
                    !m.is_expired(now) || matches!(entry.state, QueuedState::Released { .. })
                }) else {
                    // Expired, or its body was lost with a failed batch: nothing to send.
                    fixes.push(StoreOp::DeleteQueued {
                        client_id: client_id.clone(),
                        seq,
                    });
                    continue;
                };
                let body = match (&self.store, bodies.get(&entry.message)) {
                    (_, Some(body)) => Some(body.clone()),
                    (Some(writer), None) => {
                        let body = Arc::new(StoredBody::new(entry.message, writer.clone()));
                        bodies.insert(entry.message, body.clone());
                        Some(body)
                    }
                    (None, None) => None,
                };
                let delivery = Delivery {
                    message: message.clone(),
                    qos: entry.qos,
                    retain: entry.retain,
                    subscription_ids: entry.subscription_ids,
                    stored: body.map(|body| StoredRef { seq, body }),
                };
                let sent = |packet_id: u16, state| PacketId::new(packet_id).map(|id| (id, state));
                let exchange = match entry.state {
                    QueuedState::Queued => None,
                    QueuedState::Sent { packet_id } if entry.qos == QoS::ExactlyOnce => {
                        sent(packet_id, OutboundState::AwaitingPubRec)
                    }
                    QueuedState::Sent { packet_id } => {
                        sent(packet_id, OutboundState::AwaitingPubAck)
                    }
                    QueuedState::Released { packet_id } => {
                        sent(packet_id, OutboundState::AwaitingPubComp)
                    }
                };
                match exchange {
                    Some((id, state)) => inflight.push((id, delivery, state)),
                    None => queued.push(delivery),
                }
            }

            let session = Session::restore(
                client_id.clone(),
                slot.origin(),
                record.expiry_interval,
                stored.subscriptions,
                inflight,
                stored.incoming,
                now,
            );
            for subscription in session.subscriptions() {
                self.subscribe(&slot, subscription, false);
            }
            slot.restore_queue(queued);

            // Offline time before the restart counts against the expiry and the will delay.
            let was_connected = record.disconnected_at.is_none();
            let away = record
                .disconnected_at
                .and_then(|at| wall_now.duration_since(at).ok())
                .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
            let expiry_left = if record.expiry_interval == EXPIRY_NEVER {
                None
            } else {
                Some(record.expiry_interval.saturating_sub(away))
            };
            let will = record.will.take().map(PendingWill::from_stored);
            let will_left = will.as_ref().map(|w| w.delay.saturating_sub(away));
            let (due_now, delayed) = match (will, will_left) {
                (Some(will), Some(0)) => (Some(will), None),
                (will, _) => (None, will),
            };
            record.will = delayed.as_ref().map(PendingWill::to_stored);
            if was_connected {
                record.disconnected_at = Some(wall_now);
            }
            if was_connected || due_now.is_some() {
                fixes.push(StoreOp::PutSession(record.clone()));
            }
            if self.store.is_some() {
                slot.set_record(Some(record));
            }
            let generation = slot.park(Box::new(session), delayed);
            if let Some(left) = will_left.filter(|&left| left > 0) {
                let left = expiry_left.map_or(left, |e| left.min(e));
                self.arm(&slot, generation, TimerKind::Will, now, left);
            }
            if let Some(left) = expiry_left {
                self.arm(&slot, generation, TimerKind::SessionExpiry, now, left);
            }
            wills_due.extend(due_now);
            self.sessions.lock().insert(client_id, slot);
        }
        drop(bodies);
        self.next_stored.store(highest + 1, Ordering::Relaxed);
        for message in snapshot.retained {
            if message.is_expired(now) {
                fixes.push(StoreOp::DeleteRetained(message.topic.clone()));
            } else {
                self.retained.set(message);
            }
        }
        self.persist(fixes);
        // Every session is back in the router: the wills reach their persistent subscribers.
        for will in wills_due {
            self.route(will.publish(now));
        }
    }

    /// The limits in force. A reload may replace them: callers read them per use and do not
    /// keep the guard.
    pub fn limits(&self) -> arc_swap::Guard<Arc<Limits>> {
        self.limits.load()
    }

    /// Replaces the limits (SIGHUP). Values fixed at connect (windows, aliases, packet size)
    /// change for new connections only.
    pub fn set_limits(&self, limits: Limits) {
        self.limits.store(Arc::new(limits));
    }

    /// The broker's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Records the histograms from now on, the store's commit timings included.
    pub fn enable_histograms(&self, histograms: Histograms) {
        if let Some(writer) = &self.store {
            writer.observe(
                histograms.store_commit.clone(),
                histograms.store_batch.clone(),
            );
        }
        self.metrics.enable_histograms(histograms);
    }

    /// Every session, online and offline, in no particular order.
    pub fn sessions(&self) -> Vec<Arc<SessionSlot>> {
        self.sessions.lock().values().cloned().collect()
    }

    /// The session of `client_id`, if there is one.
    pub fn session(&self, client_id: &str) -> Option<Arc<SessionSlot>> {
        self.sessions.lock().get(client_id).cloned()
    }

    /// A session's subscriptions, sorted by filter. Walks the whole subscription index: for
    /// administrative views only.
    pub fn subscriptions_of(&self, slot: &SessionSlot) -> Vec<Subscription> {
        let mut found = Vec::new();
        self.router.subscriptions_of(slot.id, |filter, subscriber| {
            if let Ok(filter) = TopicFilter::new(&filter) {
                found.push(Subscription {
                    filter,
                    options: subscriber.options,
                    id: subscriber.id,
                });
            }
        });
        found.sort_by(|a, b| a.filter.as_str().cmp(b.filter.as_str()));
        found
    }

    /// Removes the retained message of `topic` (and from the store); false if there was none.
    /// Unlike an empty retained PUBLISH, nothing is delivered to subscribers.
    pub fn delete_retained(&self, topic: &TopicName) -> bool {
        let clear = Arc::new(Message {
            topic: topic.clone(),
            payload: bytes::Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Default::default(),
            expires_at: None,
            origin: None,
            published_at: None,
        });
        match self.retained.set(clear) {
            RetainedChange::Removed => {
                if !is_sys(topic) {
                    self.persist([StoreOp::DeleteRetained(topic.clone())]);
                }
                true
            }
            _ => false,
        }
    }

    /// Hands durable changes to the storage thread; the ticket settles once they are applied.
    pub fn persist(&self, ops: impl IntoIterator<Item = StoreOp>) -> Ticket {
        match &self.store {
            Some(writer) => writer.submit(ops),
            None => Ticket::NONE,
        }
    }

    /// Ready once the changes behind `ticket` were applied; `Err` if they could not be.
    pub fn poll_settled(
        &self,
        cx: &mut std::task::Context<'_>,
        ticket: Ticket,
    ) -> std::task::Poll<Result<(), StoreFailed>> {
        match &self.store {
            Some(writer) if ticket != Ticket::NONE => writer.poll_settled(cx, ticket),
            _ => std::task::Poll::Ready(Ok(())),
        }
    }

    /// Why QoS 1/2 messages must be refused now (the store fails), if they must.
    pub fn store_fault(&self) -> Option<ReasonCode> {
        self.store.as_ref().and_then(|writer| writer.fault())
    }

    /// Stops recording changes and makes what was recorded durable (server shutdown).
    pub fn close_store(&self) {
        if let Some(writer) = &self.store {
            writer.close();
        }
    }

    /// Records a session now served by a connection: a persistent session is stored (with its
    /// will), and one that stops being persistent is deleted from the store. The ticket settles
    /// once that is on disk, which CONNACK waits for in `always` mode.
    pub fn session_opened(&self, slot: &SessionSlot, session: &mut Session) -> Ticket {
        if self.store.is_none() {
            return Ticket::NONE;
        }
        let expiry_interval = session.expiry_interval();
        session.set_durable(expiry_interval != 0);
        if expiry_interval == 0 {
            if slot.record().is_some() {
                slot.set_record(None);
                return self.persist([StoreOp::DeleteSession {
                    client_id: slot.client_id.clone(),
                }]);
            }
            return Ticket::NONE;
        }
        let record = SessionRecord {
            client_id: slot.client_id.clone(),
            expiry_interval,
            disconnected_at: None,
            will: session.will_record(),
        };
        slot.set_record(Some(record.clone()));
        self.persist([StoreOp::PutSession(record)])
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

    /// Delivers a message to every matching subscription and updates the retained store. QoS
    /// 1/2 deliveries to persistent sessions are stored, the body once; the ticket settles when
    /// all of that is applied (an acknowledgement of the message waits for it in `always` mode).
    pub fn route(&self, message: Arc<Message>) -> Ticket {
        let mut ticket = Ticket::NONE;
        let limits = self.limits();
        self.metrics.topics().observe(&message.topic);
        // As mosquitto, `$SYS` messages are never stored: they describe this run of the broker.
        let durable = self.store.is_some() && !is_sys(&message.topic);
        if message.retain && limits.retain_available {
            match self.retained.set(message.clone()) {
                _ if !durable => {}
                RetainedChange::Added | RetainedChange::Replaced => {
                    ticket = self.persist([StoreOp::PutRetained(message.clone())]);
                }
                RetainedChange::Removed => {
                    ticket = self.persist([StoreOp::DeleteRetained(message.topic.clone())]);
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
        let mut body: Option<Arc<StoredBody>> = None;
        let mut stamp = |client_id: &Arc<str>, delivery: &mut Delivery| {
            let Some(writer) = &self.store else {
                return;
            };
            let body = body.get_or_insert_with(|| {
                let id = self.next_stored.fetch_add(1, Ordering::Relaxed);
                let put = StoreOp::PutMessage {
                    id,
                    message: message.clone(),
                };
                ticket = ticket.max(writer.submit([put]));
                Arc::new(StoredBody::new(id, writer.clone()))
            });
            let seq = self.next_stored.fetch_add(1, Ordering::Relaxed);
            delivery.stored = Some(StoredRef {
                seq,
                body: body.clone(),
            });
            if let Some((seq, entry)) = delivery.queued_entry(QueuedState::Queued) {
                let put = StoreOp::PutQueued {
                    client_id: client_id.clone(),
                    seq,
                    entry,
                };
                ticket = ticket.max(writer.submit([put]));
            }
        };
        for target in targets {
            let delivery = Delivery::new(
                message.clone(),
                message.qos.min(target.qos),
                target.retain,
                target.ids,
            );
            let stamp = durable.then_some(&mut stamp as &mut Stamp<'_>);
            match target.slot.push(delivery, &limits, stamp) {
                Ok(Pushed::Queued) => {}
                Ok(Pushed::ReplacedQos0) => self.metrics.dropped(DropReason::QueueFull),
                Err(reason) => {
                    self.metrics.dropped(match reason {
                        Rejected::QueueFull => DropReason::QueueFull,
                        Rejected::OfflineQoS0 => DropReason::OfflineQos0,
                        Rejected::Ended => DropReason::SessionEnded,
                    });
                    debug!(client = %target.slot.client_id, ?reason, "delivery refused");
                }
            }
        }
        ticket
    }

    /// Adds or replaces a subscription in the router (and in the store, for a `persistent`
    /// session; SUBACK waits for the ticket in `always` mode).
    pub fn subscribe(
        &self,
        slot: &Arc<SessionSlot>,
        subscription: &Subscription,
        persistent: bool,
    ) -> Ticket {
        let ticket = if persistent {
            self.persist([StoreOp::PutSubscription {
                client_id: slot.client_id.clone(),
                subscription: subscription.clone(),
            }])
        } else {
            Ticket::NONE
        };
        self.router.subscribe(
            &subscription.filter,
            slot.id,
            Subscriber {
                slot: slot.clone(),
                options: subscription.options,
                id: subscription.id,
            },
        );
        ticket
    }

    pub fn unsubscribe(
        &self,
        slot: &SessionSlot,
        filter: &TopicFilter,
        persistent: bool,
    ) -> Ticket {
        self.router.unsubscribe(filter, slot.id);
        if persistent {
            self.persist([StoreOp::DeleteSubscription {
                client_id: slot.client_id.clone(),
                filter: filter.clone(),
            }])
        } else {
            Ticket::NONE
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
            if self.store.is_some() {
                let record = SessionRecord {
                    client_id: slot.client_id.clone(),
                    expiry_interval: expiry,
                    disconnected_at: Some(SystemTime::now()),
                    will: delayed.as_ref().map(PendingWill::to_stored),
                };
                slot.set_record(Some(record.clone()));
                self.persist([StoreOp::PutSession(record)]);
            }
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
                    if let Some(mut record) = timer.slot.record() {
                        record.will = None;
                        timer.slot.set_record(Some(record.clone()));
                        self.persist([StoreOp::PutSession(record)]);
                    }
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
                    self.metrics.session_expired();
                    self.clean_up(&timer.slot, ended);
                }
            }
        }
    }

    /// Drops retained messages whose expiry has passed, and expired messages waiting in the
    /// queues of offline sessions, from memory and from the store.
    pub fn sweep_expired(&self, now: Instant) {
        let dropped = self.retained.remove_expired(now);
        if !dropped.is_empty() {
            debug!(dropped = dropped.len(), "expired retained messages removed");
            self.persist(
                dropped
                    .into_iter()
                    .map(|message| StoreOp::DeleteRetained(message.topic.clone())),
            );
        }
        let slots: Vec<_> = self.sessions.lock().values().cloned().collect();
        for slot in slots.iter().filter(|slot| !slot.is_online()) {
            let expired = slot.remove_expired(now);
            if expired.is_empty() {
                continue;
            }
            debug!(client = %slot.client_id, dropped = expired.len(), "expired queued messages removed");
            for _ in &expired {
                self.metrics.dropped(DropReason::Expired);
            }
            self.persist(expired.into_iter().filter_map(|delivery| {
                delivery.stored.map(|stored| StoreOp::DeleteQueued {
                    client_id: slot.client_id.clone(),
                    seq: stored.seq,
                })
            }));
        }
    }

    /// Removes an ended session's subscriptions and record, and publishes its waiting will.
    fn clean_up(&self, slot: &SessionSlot, ended: Ended) {
        if ended.stored {
            self.persist([StoreOp::DeleteSession {
                client_id: slot.client_id.clone(),
            }]);
        }
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

impl Drop for Broker {
    fn drop(&mut self) {
        // Before the sessions go: dropping their deliveries must not delete stored messages.
        self.close_store();
    }
}

/// Whether a topic is in the broker's own `$SYS` tree.
fn is_sys(topic: &TopicName) -> bool {
    topic.as_str().starts_with("$SYS/")
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
            published_at: None,
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
        broker.sweep_expired(now);
        assert_eq!(broker.retained_count(), 2, "not expired yet");
        broker.sweep_expired(now + Duration::from_secs(2));
        assert_eq!(broker.retained_count(), 1, "only the expired one went");
    }
}
