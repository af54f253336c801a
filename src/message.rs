//! The application message as the broker holds it: decoded once, shared by every subscriber, the
//! retained cache and the session queues as `Arc<Message>`.
//!
//! The payload is copied once out of the read buffer into an exact-size `Bytes` (so a stored message
//! does not pin a large read buffer); every delivery after that is a reference count, and the
//! encoder writes the payload as its own slice of a vectored write.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{PublishProperties, QoS};
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
}

impl Message {
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
    pub message: std::sync::Arc<Message>,
    /// min(published QoS, granted QoS of the best matching subscription).
    pub qos: QoS,
    /// RETAIN as it goes to this subscriber (Retain As Published, or retained replay).
    pub retain: bool,
    /// The identifiers of every matching subscription that has one (5.0).
    pub subscription_ids: smallvec::SmallVec<[NonZeroU32; 1]>,
}
