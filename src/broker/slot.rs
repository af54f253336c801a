//! A session's place in the broker: its mailbox, which the router fills from any publisher's task,
//! and its ownership, which decides which connection (if any) runs the session now.
//!
//! One `parking_lot::Mutex` guards both. It is held for a few pointer moves at a time and never
//! across an `.await`; publishers lock only the slots they deliver to, so there is no global lock on
//! the publish path. Lock order: the session registry, then a slot; never the reverse.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::Context;
use std::time::SystemTime;

use atomic_waker::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::codec::{ProtocolVersion, QoS, ReasonCode};
use crate::config::Limits;
use crate::message::{Delivery, Origin};
use crate::router::SubscriberId;
use crate::session::{PendingWill, Session};
use crate::storage::SessionRecord;

/// Stores a delivery for a persistent session as it enters the queue (see [`SessionSlot::push`]).
pub type Stamp<'a> = dyn FnMut(&Arc<str>, &mut Delivery) + 'a;

/// A request to the connection that owns the session.
#[derive(Debug)]
pub enum Control {
    /// Another connection with the same client id arrived: close with 0x8E and hand the session
    /// back, then signal.
    TakeOver(oneshot::Sender<()>),
    /// Close the connection with this reason (server shutdown, administrative action).
    Close(ReasonCode),
}

/// How a delivery entered the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued, and the oldest queued QoS 0 message was dropped to make room.
    ReplacedQos0,
}

/// Who runs a session now, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub peer: SocketAddr,
    pub protocol: ProtocolVersion,
    pub username: Option<Arc<str>>,
    pub keep_alive: u16,
    pub connected_at: SystemTime,
}

/// Why a delivery did not enter the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The queue is at `max_queued_messages` / `max_queued_bytes`.
    QueueFull,
    /// QoS 0 for an offline session, which is not queued unless `queue_qos0_messages` is set.
    OfflineQoS0,
    /// The session has ended; the delivery has nowhere to go.
    Ended,
}

/// A session as the rest of the broker sees it.
#[derive(Debug)]
pub struct SessionSlot {
    pub id: SubscriberId,
    pub client_id: Arc<str>,
    inner: Mutex<SlotInner>,
    /// Wakes the owning connection's task when a delivery or control arrives.
    waker: AtomicWaker,
    /// Mirrors `inner.online` for shared-subscription picks, which must not lock every member.
    online: AtomicBool,
    /// QoS 1/2 messages in flight, as the owning connection last reported (for metrics).
    inflight: AtomicU32,
}

#[derive(Debug, Default)]
struct SlotInner {
    queue: VecDeque<Delivery>,
    queued_bytes: usize,
    online: bool,
    /// Bumped on every attach, so timers armed for an earlier disconnect can tell they are stale.
    generation: u64,
    /// The session while no connection runs it.
    parked: Option<Box<Session>>,
    /// A will waiting for its Will Delay Interval (or the end of the session).
    pending_will: Option<Box<PendingWill>>,
    control: Option<Control>,
    ended: bool,
    /// Deliveries dropped since the queue last had room, for the log line when it recovers.
    dropped: u64,
    /// The session's stored record while it is persistent and a store is in use: its QoS 1/2
    /// deliveries are stored as they are queued.
    /// Boxed, as are the will and the client info: most sessions are clean and idle, and the
    /// slot is part of every connection's memory.
    record: Option<Box<SessionRecord>>,
    /// The connection running the session, while one does.
    client: Option<Box<ClientInfo>>,
}

/// What a connection gets when it attaches to a slot.
pub struct Attached {
    /// The parked session, if one is resumed.
    pub session: Option<Box<Session>>,
    /// A will that was waiting for its delay. Resuming the session cancels it; a clean start,
    /// which ends the session, publishes it (section 3.1.3.2.2).
    pub pending_will: Option<PendingWill>,
}

impl SessionSlot {
    /// A new slot for a session about to be attached by its first connection.
    pub fn new(id: SubscriberId, client_id: Arc<str>) -> Self {
        SessionSlot {
            id,
            client_id,
            inner: Mutex::new(SlotInner::default()),
            waker: AtomicWaker::new(),
            online: AtomicBool::new(false),
            inflight: AtomicU32::new(0),
        }
    }

    /// The origin stamped on this session's publishes, for No Local.
    pub fn origin(&self) -> Origin {
        Origin(self.id.0)
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// Offers a delivery. Applies the queue limits: a full queue first gives up its oldest QoS 0
    /// message to make room for QoS 1/2, and otherwise refuses the new delivery (mosquitto's
    /// policy: keep what is queued, drop what is new). Every refusal is counted and logged.
    ///
    /// `stamp` stores a QoS 1/2 delivery for a persistent session; it runs under the slot's lock,
    /// so the stored entry is in the store's log before the owner can see (and acknowledge) it.
    pub fn push(
        &self,
        mut delivery: Delivery,
        limits: &Limits,
        stamp: Option<&mut Stamp<'_>>,
    ) -> Result<Pushed, Rejected> {
        let mut inner = self.inner.lock();
        if inner.ended {
            return Err(Rejected::Ended);
        }
        if !inner.online && delivery.qos == QoS::AtMostOnce && !limits.queue_qos0_messages {
            return Err(Rejected::OfflineQoS0);
        }
        let size = delivery.message.queued_size();
        let mut pushed = Pushed::Queued;
        if limits.queue_full(inner.queue.len(), inner.queued_bytes) {
            let evicted = delivery.qos != QoS::AtMostOnce && inner.evict_oldest_qos0();
            pushed = Pushed::ReplacedQos0;
            if !evicted {
                inner.dropped += 1;
                if inner.dropped == 1 {
                    warn!(
                        client = %self.client_id,
                        queued = inner.queue.len(),
                        "Outgoing messages are being dropped for client {}.",
                        self.client_id
                    );
                }
                return Err(Rejected::QueueFull);
            }
        }
        if inner.record.is_some()
            && delivery.qos != QoS::AtMostOnce
            && let Some(stamp) = stamp
        {
            stamp(&self.client_id, &mut delivery);
        }
        inner.queued_bytes += size;
        inner.queue.push_back(delivery);
        let online = inner.online;
        drop(inner);
        if online {
            self.waker.wake();
        }
        Ok(pushed)
    }

    /// Moves up to `max` deliveries into `batch`, in order, taking QoS 1/2 ones only while
    /// `window` allows; stops at the first that does not fit so order is kept.
    pub fn pop_batch(&self, batch: &mut Vec<Delivery>, max: usize, mut window: usize) {
        let mut inner = self.inner.lock();
        while batch.len() < max {
            let Some(front) = inner.queue.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce {
                if window == 0 {
                    break;
                }
                window -= 1;
            }
            if let Some(delivery) = inner.queue.pop_front() {
                inner.queued_bytes -= delivery.message.queued_size();
                batch.push(delivery);
            }
        }
        if inner.dropped > 0 && inner.queue.is_empty() {
            info!(
                client = %self.client_id,
                dropped = inner.dropped,
                "client {} caught up; {} messages were dropped while its queue was full",
                self.client_id,
                inner.dropped
            );
            inner.dropped = 0;
        }
    }

    /// What waits that the owner could act on now. Registers the task's waker first, so a push
    /// that lands after the check still wakes it.
    pub fn poll_ready(&self, cx: &mut Context<'_>, window: usize) -> Ready {
        self.waker.register(cx.waker());
        let inner = self.inner.lock();
        Ready {
            control: inner.control.is_some(),
            deliverable: inner
                .queue
                .front()
                .is_some_and(|d| d.qos == QoS::AtMostOnce || window > 0),
        }
    }

    pub fn take_control(&self) -> Option<Control> {
        self.inner.lock().control.take()
    }

    /// Asks the owning connection to do something; returns false if nobody owns the session.
    pub fn request(&self, control: Control) -> Result<(), Control> {
        let mut inner = self.inner.lock();
        if !inner.online {
            return Err(control);
        }
        inner.control = Some(control);
        drop(inner);
        self.waker.wake();
        Ok(())
    }

    /// Messages waiting in the queue.
    pub fn queued(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// Messages and payload bytes waiting in the queue.
    pub fn queue_depth(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.queue.len(), inner.queued_bytes)
    }

    /// The owning connection reports its QoS 1/2 messages in flight.
    pub fn set_inflight(&self, inflight: usize) {
        let inflight = u32::try_from(inflight).unwrap_or(u32::MAX);
        if self.inflight.load(Ordering::Relaxed) != inflight {
            self.inflight.store(inflight, Ordering::Relaxed);
        }
    }

    /// QoS 1/2 messages in flight: as reported by the owner, or held by the parked session.
    pub fn inflight(&self) -> usize {
        let inner = self.inner.lock();
        match &inner.parked {
            Some(session) => session.inflight_len(),
            None if inner.online => self.inflight.load(Ordering::Relaxed) as usize,
            None => 0,
        }
    }

    /// Records who runs the session now (cleared when it is parked or ends).
    pub fn set_client(&self, info: ClientInfo) {
        self.inner.lock().client = Some(Box::new(info));
    }

    /// The connection running the session, if one does.
    pub fn client(&self) -> Option<ClientInfo> {
        self.inner.lock().client.as_deref().cloned()
    }

    /// The stored record of a persistent session, `None` while the session is not stored.
    pub fn record(&self) -> Option<SessionRecord> {
        self.inner.lock().record.as_deref().cloned()
    }

    /// Sets (or clears) the session's stored record; QoS 1/2 deliveries are stored while set.
    pub fn set_record(&self, record: Option<SessionRecord>) {
        self.inner.lock().record = record.map(Box::new);
    }

    /// Puts stored deliveries back in the queue at start, in order, without applying limits
    /// (they were within them when stored).
    pub fn restore_queue(&self, deliveries: impl IntoIterator<Item = Delivery>) {
        let mut inner = self.inner.lock();
        for delivery in deliveries {
            inner.queued_bytes += delivery.message.queued_size();
            inner.queue.push_back(delivery);
        }
    }

    /// Removes queued messages whose expiry has passed and returns them (the broker deletes the
    /// stored ones).
    pub fn remove_expired(&self, now: std::time::Instant) -> Vec<Delivery> {
        let mut inner = self.inner.lock();
        if !inner.queue.iter().any(|d| d.message.is_expired(now)) {
            return Vec::new();
        }
        let (expired, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut inner.queue)
            .into_iter()
            .partition(|d| d.message.is_expired(now));
        inner.queue = kept;
        inner.queued_bytes = inner.queue.iter().map(|d| d.message.queued_size()).sum();
        expired.into()
    }

    /// Makes the calling connection the owner. Fails with the current generation if another
    /// connection owns it (take it over first) or the session has ended.
    pub fn attach(&self) -> Result<Attached, AttachError> {
        let mut inner = self.inner.lock();
        if inner.ended {
            return Err(AttachError::Ended);
        }
        if inner.online {
            return Err(AttachError::Owned);
        }
        inner.online = true;
        inner.generation += 1;
        self.online.store(true, Ordering::Relaxed);
        Ok(Attached {
            session: inner.parked.take(),
            pending_will: inner.pending_will.take().map(|will| *will),
        })
    }

    /// The owner leaves and parks the session (it outlives the connection), with a will that waits
    /// for its delay. Returns the generation that timers for this disconnect must name.
    pub fn park(&self, session: Box<Session>, pending_will: Option<PendingWill>) -> u64 {
        let mut inner = self.inner.lock();
        inner.online = false;
        self.online.store(false, Ordering::Relaxed);
        inner.client = None;
        inner.parked = Some(session);
        inner.pending_will = pending_will.map(Box::new);
        inner.generation
    }

    /// Ends the session: nothing more is queued, and what it held is returned for cleanup (its
    /// subscriptions leave the router, a waiting will goes out: section 3.1.3.2.2).
    /// With `generation`, only if the session is still offline in that generation.
    pub fn end(&self, generation: Option<u64>) -> Option<Ended> {
        let mut inner = self.inner.lock();
        if inner.ended || generation.is_some_and(|g| inner.online || g != inner.generation) {
            return None;
        }
        inner.ended = true;
        inner.online = false;
        inner.client = None;
        self.online.store(false, Ordering::Relaxed);
        inner.queue.clear();
        inner.queued_bytes = 0;
        let stored = inner.record.take().is_some();
        Some(Ended {
            stored,
            session: inner.parked.take(),
            will: inner.pending_will.take().map(|will| *will),
        })
    }

    /// Takes the delayed will if its time has come in this generation.
    pub fn take_due_will(&self, generation: u64) -> Option<PendingWill> {
        let mut inner = self.inner.lock();
        if inner.online || inner.generation != generation {
            return None;
        }
        inner.pending_will.take().map(|will| *will)
    }

    /// Takes the takeover request, so the leaving owner can signal after parking.
    pub fn take_takeover(&self) -> Option<oneshot::Sender<()>> {
        let mut inner = self.inner.lock();
        match inner.control.take() {
            Some(Control::TakeOver(tx)) => Some(tx),
            other => {
                inner.control = other;
                None
            }
        }
    }
}

impl SlotInner {
    fn evict_oldest_qos0(&mut self) -> bool {
        let Some(index) = self.queue.iter().position(|d| d.qos == QoS::AtMostOnce) else {
            return false;
        };
        if let Some(evicted) = self.queue.remove(index) {
            self.queued_bytes -= evicted.message.queued_size();
            self.dropped += 1;
        }
        true
    }
}

/// See [`SessionSlot::poll_ready`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// A [`Control`] request waits.
    pub control: bool,
    /// The next queued delivery fits the window.
    pub deliverable: bool,
}

/// Why a connection could not attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// Another connection runs the session.
    Owned,
    /// The session ended; make a new one.
    Ended,
}

/// What an ended session leaves to clean up.
pub struct Ended {
    /// Whether the session is in the store (and must be deleted there).
    pub stored: bool,
    pub session: Option<Box<Session>>,
    pub will: Option<PendingWill>,
}
