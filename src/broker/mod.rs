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
use crate::retained::RetainedStore;
use crate::router::{Matched, SubscriberId, SubscriptionIndex};
use crate::session::{EXPIRY_NEVER, Session, Subscription};
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
}

/// A session opened for a new connection.
pub struct Opened {
    pub slot: Arc<SessionSlot>,
    pub generation: u64,
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
    /// A broker with no sessions; `timers` feeds the [`Housekeeping`] task.
    pub fn new(limits: Limits, timers: mpsc::UnboundedSender<Timer>) -> Self {
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
            self.retained.set(message.clone());
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

    /// Adds or replaces a subscription in the router.
    pub fn subscribe(&self, slot: &Arc<SessionSlot>, subscription: &Subscription) {
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

    pub fn unsubscribe(&self, slot: &SessionSlot, filter: &TopicFilter) {
        self.router.unsubscribe(filter, slot.id);
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
                        return Ok(Opened {
                            slot,
                            generation: attached.generation,
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
                            // `attach` took the parked session out of the slot: clean it up too,
                            // or its subscriptions stay in the router.
                            ended.session = attached.session;
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
        let generation = match slot.attach() {
            Ok(attached) => attached.generation,
            // A fresh slot is neither owned nor ended.
            Err(_) => 1,
        };
        sessions.insert(client_id.clone(), slot.clone());
        Opened {
            slot,
            generation,
            resumed: None,
        }
    }

    /// The connection that owned a session has closed. The session ends now (expiry 0) or is
    /// parked with its timers armed; the will goes out now or after its delay.
    pub fn close_session(
        &self,
        slot: &Arc<SessionSlot>,
        session: Box<Session>,
        will: Option<(Arc<Message>, u32)>,
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
                ended.will = will.map(|(message, _)| message);
                self.clean_up(slot, ended);
            }
        } else {
            let (now_will, delayed) = match will {
                Some((message, 0)) => (Some(message), None),
                Some((message, delay)) => (None, Some((message, delay))),
                None => (None, None),
            };
            let generation = slot.park(session, delayed.as_ref().map(|(m, _)| m.clone()));
            if let Some((_, delay)) = delayed {
                let wait = delay.min(expiry);
                self.arm(slot, generation, TimerKind::Will, now, wait);
            }
            if expiry != EXPIRY_NEVER {
                self.arm(slot, generation, TimerKind::SessionExpiry, now, expiry);
            }
            if let Some(message) = now_will {
                self.route(message);
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
                    self.route(will);
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

    /// Removes an ended session's subscriptions and publishes its waiting will.
    fn clean_up(&self, slot: &SessionSlot, ended: Ended) {
        if let Some(session) = ended.session {
            for subscription in session.subscriptions() {
                self.router.unsubscribe(&subscription.filter, slot.id);
            }
        }
        if let Some(will) = ended.will {
            self.route(will);
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
    targets.sort_by_key(|t| (t.shared, t.slot.id));
    let mut merged: SmallVec<[Target; 4]> = SmallVec::with_capacity(targets.len());
    for target in targets.drain(..) {
        match merged.last_mut() {
            Some(last) if !target.shared && !last.shared && last.slot.id == target.slot.id => {
                last.qos = last.qos.max(target.qos);
                last.retain |= target.retain;
                last.ids.extend(target.ids);
            }
            _ => merged.push(target),
        }
    }
    *targets = merged;
}
