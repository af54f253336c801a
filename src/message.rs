//! The application message as the broker holds it: decoded once, shared by every subscriber, the
//! retained cache and the session queues as `Arc<Message>`.
//!
//! The payload is copied once out of the read buffer into an exact-size `Bytes` (so a stored message
//! does not pin a large read buffer); every delivery after that is a reference count, and the
//! encoder writes the payload as its own slice of a vectored write.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{PublishProperties, QoS};
use crate::storage::{MessageId, QueuedEntry, QueuedState, StoreOp, StoreWriter};
use crate::topic::TopicName;

/// Identifies the session that published a message, for No Local ([MQTT-3.8.3-3]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin(pub u64);

/// An application message in flight through the broker.
#[derive(Debug)]
pub struct Message {
    pub topic: TopicName,
    pub payload: Bytes,
    /// The QoS it was published with; each delivery uses the minimum of this and the granted QoS.
    pub qos: QoS,
    /// The RETAIN flag as published.
    pub retain: bool,
    /// Forwarded unchanged, except: no topic alias, no subscription identifiers, and the message
    /// expiry interval recomputed per delivery from `expires_at`.
    pub properties: PublishProperties,
    /// When the Message Expiry Interval runs out ([MQTT-3.3.2-5]); `None` never expires.
    pub expires_at: Option<Instant>,
    /// The publishing session, or `None` for messages the broker makes itself.
    pub origin: Option<Origin>,
    /// When the broker received (or made) it: the start of the publish-to-deliver latency.
    /// `None` for messages that were not published live (restored from a store, stored wills).
    pub published_at: Option<Instant>,
}

impl Message {
    /// A copy (the payload is shared, not copied). `Message` is not `Clone` so that copies stay
    /// deliberate: the broker shares one `Arc<Message>` everywhere else.
    pub fn clone_fields(&self) -> Message {
        Message {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.clone(),
            expires_at: self.expires_at,
            origin: self.origin,
            published_at: self.published_at,
        }
    }

    /// True once the message expiry interval has passed: it must not be delivered.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The Message Expiry Interval to forward: what is left of it, in whole seconds rounded up so a
    /// message is never cut short ([MQTT-3.3.2-6]). `None` when the message does not expire.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }

    /// Bytes this message costs in a queue, for the `max_queued_bytes` limit (payload only, as
    /// mosquitto counts it).
    pub fn queued_size(&self) -> usize {
        self.payload.len()
    }
}

/// Computes the expiry deadline of a message received at `now` with the given interval.
pub fn expiry_deadline(now: Instant, interval: Option<u32>) -> Option<Instant> {
    interval.map(|secs| now + Duration::from_secs(u64::from(secs)))
}

/// One message on its way to one subscriber, after routing decided QoS, retain flag and
/// subscription identifiers for that subscriber.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// min(published QoS, granted QoS of the best matching subscription).
    pub qos: QoS,
    /// RETAIN as it goes to this subscriber (Retain As Published, or retained replay).
    pub retain: bool,
    /// The identifiers of every matching subscription that has one (5.0).
    pub subscription_ids: smallvec::SmallVec<[NonZeroU32; 1]>,
    /// Where this delivery is stored, for a persistent session with a store; `None` otherwise.
    pub stored: Option<StoredRef>,
}

impl Delivery {
    /// A delivery that is not stored.
    pub fn new(
        message: Arc<Message>,
        qos: QoS,
        retain: bool,
        subscription_ids: smallvec::SmallVec<[NonZeroU32; 1]>,
    ) -> Self {
        Delivery {
            message,
            qos,
            retain,
            subscription_ids,
            stored: None,
        }
    }

    /// The queue entry this delivery is stored as, in `state`.
    pub fn queued_entry(&self, state: QueuedState) -> Option<(u64, QueuedEntry)> {
        let stored = self.stored.as_ref()?;
        Some((
            stored.seq,
            QueuedEntry {
                message: stored.body.id,
                qos: self.qos,
                retain: self.retain,
                subscription_ids: self.subscription_ids.clone(),
                state,
            },
        ))
    }
}

/// A delivery's entry in its session's stored queue.
#[derive(Clone, Debug)]
pub struct StoredRef {
    /// The entry's key in the session's queue.
    pub seq: u64,
    pub body: Arc<StoredBody>,
}

/// A stored message body, shared by every queue entry that carries it: the `Arc`'s count is the
/// body's reference count (mosquitto's msg_store refcount), and the last one gone deletes it.
pub struct StoredBody {
    pub id: MessageId,
    writer: Arc<StoreWriter>,
}

impl StoredBody {
    pub fn new(id: MessageId, writer: Arc<StoreWriter>) -> Self {
        StoredBody { id, writer }
    }
}

impl Drop for StoredBody {
    fn drop(&mut self) {
        // After shutdown closed the writer this records nothing: dropping the broker's state at
        // exit must not delete it from disk.
        self.writer.submit([StoreOp::DeleteMessage(self.id)]);
    }
}

impl std::fmt::Debug for StoredBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredBody").field("id", &self.id).finish()
    }
}
