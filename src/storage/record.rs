//! The binary encoding of stored values, shared by the database backends.
//!
//! Each value starts with a record version byte ([`RECORD_VERSION`]), so a later release can read
//! old records while it rewrites them; the store as a whole is versioned by `FORMAT_VERSION`. Keys
//! are not part of a value: a session's client id, a subscription's filter, a queue entry's `seq`
//! live in the backend's key and are passed back in on decoding.
//!
//! Integers are LEB128 varints (most are small: expiry intervals, ids, lengths), strings and byte
//! strings carry a varint length, and optional fields are announced by a flags word so an absent
//! field costs a bit. Instants are stored as wall-clock unix milliseconds and come back relative to
//! the [`Clock`] of the load, so a message's remaining expiry survives a restart.
//!
//! Decoding trusts nothing: every length is checked against what is left, every enum and string
//! is validated, and trailing bytes are an error. A failure is a [`RecordError`], which the backend
//! turns into `StoreError::Corrupt` with the file and the key.

use std::fmt;
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use smallvec::SmallVec;

use super::{QueuedEntry, QueuedState, SessionRecord, StoredWill};
use crate::codec::{
    PayloadFormat, PublishProperties, QoS, RetainHandling, SubscriptionOptions, UserProperty,
};
use crate::message::Message;
use crate::session::Subscription;
use crate::topic::{TopicFilter, TopicName};

/// The version byte every value starts with.
pub(crate) const RECORD_VERSION: u8 = 1;

/// Why a stored value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordError(pub(crate) String);

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(reason: impl Into<String>) -> RecordError {
    RecordError(reason.into())
}

/// One reading of both clocks, so every instant of one batch or load converts with the same
/// offset between monotonic and wall-clock time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub(crate) instant: Instant,
    pub(crate) system: SystemTime,
}

impl Clock {
    pub(crate) fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            system: SystemTime::now(),
        }
    }

    /// Unix milliseconds of `at`; 0 if it falls before 1970 (it has expired long ago then).
    fn unix_millis_of(self, at: Instant) -> u64 {
        let wall = if at >= self.instant {
            self.system.checked_add(at - self.instant)
        } else {
            self.system.checked_sub(self.instant - at)
        };
        wall.and_then(|w| w.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The instant of a stored wall-clock time. A time in the past that the monotonic clock cannot
    /// reach (before boot) becomes "now": the message has expired either way.
    fn instant_of_unix_millis(self, millis: u64) -> Result<Instant, RecordError> {
        let wall = UNIX_EPOCH
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| bad("expiry time out of range"))?;
        match wall.duration_since(self.system) {
            Ok(ahead) => self
                .instant
                .checked_add(ahead)
                .ok_or_else(|| bad("expiry time out of range")),
            Err(behind) => Ok(self
                .instant
                .checked_sub(behind.duration())
                .unwrap_or(self.instant)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Values

/// Encodes a session record; the client id is the key.
pub(crate) fn encode_session(record: &SessionRecord, clock: Clock) -> Vec<u8> {
    let mut w = Writer::new();
    let flags = u8::from(record.disconnected_at.is_some()) | u8::from(record.will.is_some()) << 1;
    w.u8(flags);
    w.varint(u64::from(record.expiry_interval));
    if let Some(at) = record.disconnected_at {
        let (secs, nanos) = split_system_time(at);
        w.varint(zigzag(secs));
        w.varint(u64::from(nanos));
    }
    if let Some(will) = &record.will {
        w.varint(u64::from(will.delay_interval));
        w.message(&will.message, clock);
    }
    w.finish()
}

pub(crate) fn decode_session(
    client_id: Arc<str>,
    bytes: &[u8],
    clock: Clock,
) -> Result<SessionRecord, RecordError> {
    let mut r = Reader::new(bytes)?;
    let flags = r.u8()?;
    if flags & !0b11 != 0 {
        return Err(bad("unknown session flags"));
    }
    let expiry_interval = r.u32()?;
    let disconnected_at = if flags & 1 != 0 {
        let secs = unzigzag(r.varint()?);
        let nanos = r.u32()?;
        Some(join_system_time(secs, nanos)?)
    } else {
        None
    };
    let will = if flags & 2 != 0 {
        let delay_interval = r.u32()?;
        let message = Arc::new(r.message(clock)?);
        Some(StoredWill {
            message,
            delay_interval,
        })
    } else {
        None
    };
    r.finish()?;
    Ok(SessionRecord {
        client_id,
        expiry_interval,
        disconnected_at,
        will,
    })
}

/// Encodes a subscription's options and identifier; the filter is the key.
pub(crate) fn encode_subscription(subscription: &Subscription) -> Vec<u8> {
    let mut w = Writer::new();
    let o = subscription.options;
    let handling = match o.retain_handling {
        RetainHandling::SendAtSubscribe => 0,
        RetainHandling::SendIfNew => 1,
        RetainHandling::DoNotSend => 2,
    };
    w.u8(o.qos.as_u8()
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | handling << 4);
    w.varint(subscription.id.map_or(0, |id| u64::from(id.get())));
    w.finish()
}

pub(crate) fn decode_subscription(filter: &str, bytes: &[u8]) -> Result<Subscription, RecordError> {
    let mut r = Reader::new(bytes)?;
    let filter = TopicFilter::new(filter).map_err(|e| bad(format!("bad filter: {e}")))?;
    let options = r.u8()?;
    if options & 0b1100_0000 != 0 {
        return Err(bad("unknown subscription option bits"));
    }
    let retain_handling = match (options >> 4) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(bad("bad retain handling")),
    };
    let id = NonZeroU32::new(r.u32()?);
    r.finish()?;
    Ok(Subscription {
        filter,
        options: SubscriptionOptions {
            qos: qos(options & 0b11)?,
            no_local: options & 0b100 != 0,
            retain_as_published: options & 0b1000 != 0,
            retain_handling,
        },
        id,
    })
}

/// Encodes a message body (a queued message's, or a retained message in full).
pub(crate) fn encode_message(message: &Message, clock: Clock) -> Vec<u8> {
    let mut w = Writer::new();
    w.message(message, clock);
    w.finish()
}

pub(crate) fn decode_message(bytes: &[u8], clock: Clock) -> Result<Message, RecordError> {
    let mut r = Reader::new(bytes)?;
    let message = r.message(clock)?;
    r.finish()?;
    Ok(message)
}

/// Encodes a queue entry; the client id and `seq` are the key.
pub(crate) fn encode_queued(entry: &QueuedEntry) -> Vec<u8> {
    let mut w = Writer::new();
    let (state, packet_id) = match entry.state {
        QueuedState::Queued => (0, None),
        QueuedState::Sent { packet_id } => (1, Some(packet_id)),
        QueuedState::Released { packet_id } => (2, Some(packet_id)),
    };
    w.u8(entry.qos.as_u8() | u8::from(entry.retain) << 2 | state << 3);
    w.varint(entry.message);
    if let Some(packet_id) = packet_id {
        w.varint(u64::from(packet_id));
    }
    w.varint(entry.subscription_ids.len() as u64);
    for id in &entry.subscription_ids {
        w.varint(u64::from(id.get()));
    }
    w.finish()
}

pub(crate) fn decode_queued(bytes: &[u8]) -> Result<QueuedEntry, RecordError> {
    let mut r = Reader::new(bytes)?;
    let flags = r.u8()?;
    if flags & 0b1110_0000 != 0 {
        return Err(bad("unknown queue entry flags"));
    }
    let message = r.varint()?;
    let state = match (flags >> 3) & 0b11 {
        0 => QueuedState::Queued,
        1 => QueuedState::Sent {
            packet_id: r.u16()?,
        },
        2 => QueuedState::Released {
            packet_id: r.u16()?,
        },
        _ => return Err(bad("bad queue entry state")),
    };
    let count = r.count()?;
    let mut subscription_ids = SmallVec::with_capacity(count);
    for _ in 0..count {
        subscription_ids.push(r.subscription_id()?);
    }
    r.finish()?;
    Ok(QueuedEntry {
        message,
        qos: qos(flags & 0b11)?,
        retain: flags & 0b100 != 0,
        subscription_ids,
        state,
    })
}

// ---------------------------------------------------------------------------------------------
// Messages

// Message flags, one bit per optional field.
const M_RETAIN: u16 = 1 << 2;
const M_EXPIRES_AT: u16 = 1 << 3;
const M_PAYLOAD_FORMAT: u16 = 1 << 4;
const M_PAYLOAD_UTF8: u16 = 1 << 5;
const M_EXPIRY_INTERVAL: u16 = 1 << 6;
const M_TOPIC_ALIAS: u16 = 1 << 7;
const M_RESPONSE_TOPIC: u16 = 1 << 8;
const M_CORRELATION_DATA: u16 = 1 << 9;
const M_CONTENT_TYPE: u16 = 1 << 10;
const M_USER_PROPERTIES: u16 = 1 << 11;
const M_SUBSCRIPTION_IDS: u16 = 1 << 12;
const M_KNOWN: u16 = (1 << 13) - 1;

impl Writer {
    fn message(&mut self, m: &Message, clock: Clock) {
        let p = &m.properties;
        let mut flags = u16::from(m.qos.as_u8());
        let mut set = |bit: u16, on: bool| {
            if on {
                flags |= bit;
            }
        };
        set(M_RETAIN, m.retain);
        set(M_EXPIRES_AT, m.expires_at.is_some());
        set(M_PAYLOAD_FORMAT, p.payload_format.is_some());
        set(
            M_PAYLOAD_UTF8,
            p.payload_format == Some(PayloadFormat::Utf8),
        );
        set(M_EXPIRY_INTERVAL, p.message_expiry_interval.is_some());
        set(M_TOPIC_ALIAS, p.topic_alias.is_some());
        set(M_RESPONSE_TOPIC, p.response_topic.is_some());
        set(M_CORRELATION_DATA, p.correlation_data.is_some());
        set(M_CONTENT_TYPE, p.content_type.is_some());
        set(M_USER_PROPERTIES, !p.user_properties.is_empty());
        set(M_SUBSCRIPTION_IDS, !p.subscription_identifiers.is_empty());
        self.varint(u64::from(flags));
        self.bytes(m.topic.as_str().as_bytes());
        self.bytes(&m.payload);
        if let Some(at) = m.expires_at {
            self.varint(clock.unix_millis_of(at));
        }
        if let Some(interval) = p.message_expiry_interval {
            self.varint(u64::from(interval));
        }
        if let Some(alias) = p.topic_alias {
            self.varint(u64::from(alias.get()));
        }
        if let Some(topic) = &p.response_topic {
            self.bytes(topic.as_str().as_bytes());
        }
        if let Some(data) = &p.correlation_data {
            self.bytes(data);
        }
        if let Some(content_type) = &p.content_type {
            self.bytes(content_type.as_bytes());
        }
        if !p.user_properties.is_empty() {
            self.varint(p.user_properties.len() as u64);
            for u in &p.user_properties {
                self.bytes(u.key.as_bytes());
                self.bytes(u.value.as_bytes());
            }
        }
        if !p.subscription_identifiers.is_empty() {
            self.varint(p.subscription_identifiers.len() as u64);
            for id in &p.subscription_identifiers {
                self.varint(u64::from(id.get()));
            }
        }
    }
}

impl Reader<'_> {
    fn message(&mut self, clock: Clock) -> Result<Message, RecordError> {
        let flags = u16::try_from(self.varint()?)
            .ok()
            .filter(|f| f & !M_KNOWN == 0)
            .ok_or_else(|| bad("unknown message flags"))?;
        let qos = qos((flags & 0b11) as u8)?;
        let topic = self.topic("topic")?;
        let payload = Bytes::copy_from_slice(self.bytes()?);
        let expires_at = if flags & M_EXPIRES_AT != 0 {
            Some(clock.instant_of_unix_millis(self.varint()?)?)
        } else {
            None
        };
        let payload_format = match (flags & M_PAYLOAD_FORMAT != 0, flags & M_PAYLOAD_UTF8 != 0) {
            (false, false) => None,
            (true, false) => Some(PayloadFormat::Unspecified),
            (true, true) => Some(PayloadFormat::Utf8),
            (false, true) => return Err(bad("payload format flags disagree")),
        };
        let message_expiry_interval = if flags & M_EXPIRY_INTERVAL != 0 {
            Some(self.u32()?)
        } else {
            None
        };
        let topic_alias = if flags & M_TOPIC_ALIAS != 0 {
            Some(NonZeroU16::new(self.u16()?).ok_or_else(|| bad("topic alias is zero"))?)
        } else {
            None
        };
        let response_topic = if flags & M_RESPONSE_TOPIC != 0 {
            Some(self.topic("response topic")?)
        } else {
            None
        };
        let correlation_data = if flags & M_CORRELATION_DATA != 0 {
            Some(Bytes::copy_from_slice(self.bytes()?))
        } else {
            None
        };
        let content_type = if flags & M_CONTENT_TYPE != 0 {
            Some(self.string()?.to_owned())
        } else {
            None
        };
        let mut user_properties = Vec::new();
        if flags & M_USER_PROPERTIES != 0 {
            let count = self.count()?;
            user_properties.reserve(count);
            for _ in 0..count {
                let key = self.string()?.to_owned();
                let value = self.string()?.to_owned();
                user_properties.push(UserProperty { key, value });
            }
        }
        let mut subscription_identifiers = Vec::new();
        if flags & M_SUBSCRIPTION_IDS != 0 {
            let count = self.count()?;
            subscription_identifiers.reserve(count);
            for _ in 0..count {
                subscription_identifiers.push(self.subscription_id()?);
            }
        }
        Ok(Message {
            topic,
            payload,
            qos,
            retain: flags & M_RETAIN != 0,
            properties: PublishProperties {
                payload_format,
                message_expiry_interval,
                topic_alias,
                response_topic,
                correlation_data,
                user_properties,
                subscription_identifiers,
                content_type,
            },
            expires_at,
            origin: None,
            published_at: None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Primitives

/// Builds one value: the version byte, then the fields.
struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Writer {
        Writer(vec![RECORD_VERSION])
    }

    fn finish(self) -> Vec<u8> {
        self.0
    }

    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

/// Reads one value, checking every step against what is left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Starts reading a value, checking its version byte.
    fn new(bytes: &'a [u8]) -> Result<Reader<'a>, RecordError> {
        let mut r = Reader(bytes);
        match r.u8()? {
            RECORD_VERSION => Ok(r),
            v => Err(bad(format!("unknown record version {v}"))),
        }
    }

    fn finish(self) -> Result<(), RecordError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(bad("trailing bytes after the record"))
        }
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        let (&first, rest) = self.0.split_first().ok_or_else(truncated)?;
        self.0 = rest;
        Ok(first)
    }

    fn varint(&mut self) -> Result<u64, RecordError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7F);
            if shift == 63 && bits > 1 {
                return Err(bad("varint overflows 64 bits"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        u32::try_from(self.varint()?).map_err(|_| bad("value exceeds 32 bits"))
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        u16::try_from(self.varint()?).map_err(|_| bad("value exceeds 16 bits"))
    }

    /// A length or count, which can never exceed the bytes left (each item takes at least one).
    fn count(&mut self) -> Result<usize, RecordError> {
        usize::try_from(self.varint()?)
            .ok()
            .filter(|&n| n <= self.0.len())
            .ok_or_else(truncated)
    }

    fn bytes(&mut self) -> Result<&'a [u8], RecordError> {
        let len = self.count()?;
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn string(&mut self) -> Result<&'a str, RecordError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| bad("string is not UTF-8"))
    }

    /// A topic name, checked as `TopicName` checks one but allowed empty, so that any message the
    /// broker stored loads again.
    fn topic(&mut self, what: &str) -> Result<TopicName, RecordError> {
        TopicName::new_allow_empty(self.string()?).map_err(|e| bad(format!("bad {what}: {e}")))
    }

    fn subscription_id(&mut self) -> Result<NonZeroU32, RecordError> {
        NonZeroU32::new(self.u32()?).ok_or_else(|| bad("subscription identifier is zero"))
    }
}

fn truncated() -> RecordError {
    bad("record is truncated")
}

fn qos(bits: u8) -> Result<QoS, RecordError> {
    QoS::from_u8(bits).ok_or_else(|| bad("bad QoS"))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Seconds and nanoseconds since the epoch, the seconds negative before it (nanoseconds then
/// count forwards from that second), so any `SystemTime` round-trips exactly.
fn split_system_time(at: SystemTime) -> (i64, u32) {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (-secs, 0),
                n => (-secs - 1, 1_000_000_000 - n),
            }
        }
    }
}

fn join_system_time(secs: i64, nanos: u32) -> Result<SystemTime, RecordError> {
    if nanos >= 1_000_000_000 {
        return Err(bad("nanoseconds out of range"));
    }
    let base = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    base.and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
        .ok_or_else(|| bad("time out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::message_eq;

    fn full_message(clock: Clock) -> Message {
        Message {
            topic: TopicName::new("a/b").expect("valid"),
            payload: Bytes::from_static(b"\x00payload\xff"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: PublishProperties {
                payload_format: Some(PayloadFormat::Utf8),
                message_expiry_interval: Some(90),
                topic_alias: NonZeroU16::new(7),
                response_topic: Some(TopicName::new("reply/here").expect("valid")),
                correlation_data: Some(Bytes::from_static(b"corr")),
                user_properties: vec![
                    UserProperty {
                        key: "k".into(),
                        value: "v".into(),
                    },
                    UserProperty {
                        key: "k".into(),
                        value: "second".into(),
                    },
                ],
                subscription_identifiers: vec![
                    NonZeroU32::new(1).expect("nonzero"),
                    NonZeroU32::new(268_435_455).expect("nonzero"),
                ],
                content_type: Some("text/plain".into()),
            },
            expires_at: Some(clock.instant + Duration::from_secs(90)),
            origin: Some(crate::message::Origin(5)),
            published_at: None,
        }
    }

    #[test]
    fn a_message_with_every_property_round_trips_without_its_origin() {
        let clock = Clock::now();
        let m = full_message(clock);
        let back = decode_message(&encode_message(&m, clock), clock).expect("decodes");
        assert!(message_eq(&m, &back), "{m:?} != {back:?}");
        assert_eq!(back.origin, None);
        let bare = Message {
            properties: PublishProperties::default(),
            expires_at: None,
            retain: false,
            qos: QoS::AtMostOnce,
            ..full_message(clock)
        };
        let encoded = encode_message(&bare, clock);
        // Version, flags, topic and payload with their lengths: absent fields cost nothing.
        assert_eq!(encoded.len(), 1 + 1 + (1 + 3) + (1 + 9));
        assert!(message_eq(
            &bare,
            &decode_message(&encoded, clock).expect("decodes")
        ));
    }

    #[test]
    fn expiry_keeps_its_wall_clock_time_across_a_restart() {
        let before = Clock::now();
        let m = full_message(before);
        let stored = encode_message(&m, before);
        // A later process: both clocks moved on by ten seconds.
        let after = Clock {
            instant: before.instant + Duration::from_secs(10),
            system: before.system + Duration::from_secs(10),
        };
        let back = decode_message(&stored, after).expect("decodes");
        let left = back.remaining_expiry(after.instant).expect("expires");
        assert!((79..=80).contains(&left), "80 s left, got {left}");
        // Expired while the broker was down: it comes back expired, not refused.
        let much_later = Clock {
            instant: after.instant,
            system: before.system + Duration::from_secs(3600),
        };
        let back = decode_message(&stored, much_later).expect("decodes");
        assert!(back.is_expired(much_later.instant));
    }

    #[test]
    fn sessions_round_trip_with_will_and_times_either_side_of_the_epoch() {
        let clock = Clock::now();
        for at in [
            None,
            Some(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)),
            Some(UNIX_EPOCH - Duration::new(5, 1)),
            Some(UNIX_EPOCH - Duration::from_secs(5)),
        ] {
            let record = SessionRecord {
                client_id: Arc::from("c"),
                expiry_interval: u32::MAX,
                disconnected_at: at,
                will: Some(StoredWill {
                    message: Arc::new(full_message(clock)),
                    delay_interval: 30,
                }),
            };
            let bytes = encode_session(&record, clock);
            let back = decode_session(Arc::from("c"), &bytes, clock).expect("decodes");
            assert_eq!(back, record);
        }
    }

    #[test]
    fn subscriptions_and_queue_entries_round_trip() {
        for (handling, id) in [
            (RetainHandling::SendAtSubscribe, None),
            (RetainHandling::SendIfNew, NonZeroU32::new(9)),
            (RetainHandling::DoNotSend, NonZeroU32::new(268_435_455)),
        ] {
            let s = Subscription {
                filter: TopicFilter::new("$share/g/a/+").expect("valid"),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: handling,
                },
                id,
            };
            let back = decode_subscription("$share/g/a/+", &encode_subscription(&s));
            assert_eq!(back, Ok(s));
        }
        for state in [
            QueuedState::Queued,
            QueuedState::Sent { packet_id: 65535 },
            QueuedState::Released { packet_id: 1 },
        ] {
            let e = QueuedEntry {
                message: u64::MAX,
                qos: QoS::AtLeastOnce,
                retain: true,
                subscription_ids: [3, 4].into_iter().filter_map(NonZeroU32::new).collect(),
                state,
            };
            assert_eq!(decode_queued(&encode_queued(&e)), Ok(e));
        }
    }

    #[test]
    fn every_truncation_and_bad_byte_is_an_error_not_a_panic() {
        let clock = Clock::now();
        let record = SessionRecord {
            client_id: Arc::from("c"),
            expiry_interval: 60,
            disconnected_at: Some(SystemTime::now()),
            will: Some(StoredWill {
                message: Arc::new(full_message(clock)),
                delay_interval: 5,
            }),
        };
        let bytes = encode_session(&record, clock);
        for len in 0..bytes.len() {
            assert!(decode_session(Arc::from("c"), &bytes[..len], clock).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode_session(Arc::from("c"), &longer, clock),
            Err(bad("trailing bytes after the record"))
        );
        let mut newer = bytes;
        newer[0] = RECORD_VERSION + 1;
        assert_eq!(
            decode_session(Arc::from("c"), &newer, clock),
            Err(bad("unknown record version 2"))
        );
        // A length that claims more than is left, and an overlong varint.
        assert_eq!(
            decode_message(&[RECORD_VERSION, 0, 0xFF, 0x7F], clock).map(|_| ()),
            Err(truncated())
        );
        assert!(
            decode_queued(&[
                RECORD_VERSION,
                0,
                0xFF,
                0xFF,
                0xFF,
                0xFF,
                0xFF,
                0xFF,
                0xFF,
                0xFF,
                0xFF,
                0xFF,
                0x01
            ])
            .is_err()
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let clock = Clock::now();
            let mut versioned = vec![RECORD_VERSION];
            versioned.extend_from_slice(&bytes);
            for input in [&bytes, &versioned] {
                let _ = decode_message(input, clock);
                let _ = decode_session(Arc::from("c"), input, clock);
                let _ = decode_subscription("a", input);
                let _ = decode_queued(input);
            }
        }
    }
}
