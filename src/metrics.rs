//! What the broker counts, and the names it is exported under.
//!
//! Every metric name is a constant in [`names`], `mqtt_<noun>_<unit|total>`; labels are the
//! bounded enums below (protocol version, QoS, reason) or a configured listener, never a client id
//! or a topic.
//!
//! Counters live in [`Metrics`], owned by the broker, as plain atomics on cache lines of their own:
//! the publish path pays one relaxed `fetch_add` per counter and never looks anything up. They are
//! plain atomics rather than handles of a `metrics` recorder because three readers need their
//! values: `$SYS` (src/sys.rs), the dashboard and `/metrics`. At scrape time the HTTP module copies
//! them into a `metrics-exporter-prometheus` recorder, which renders the text. Gauges that are
//! cheap to compute (sessions, subscriptions, retained messages, queues) are computed then, from the
//! broker, and not tracked per event. The three histograms are `metrics` handles of that recorder,
//! installed only while an HTTP listener drains them (see [`Metrics::enable_histograms`]).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::broker::Broker;
use crate::codec::{DecodeError, Packet, ProtocolVersion, QoS, ReasonCode};
use crate::topic::TopicName;

/// Metric names, in one place.
pub mod names {
    /// Network connections open now (a connection counts from accept, before its CONNECT).
    pub const CONNECTIONS_CURRENT: &str = "mqtt_connections_current";
    /// MQTT connections accepted (CONNACK success), by `protocol`.
    pub const CONNECTIONS_TOTAL: &str = "mqtt_connections_total";
    /// Connections refused before or at CONNECT, by `reason`.
    pub const CONNECTIONS_REFUSED_TOTAL: &str = "mqtt_connections_refused_total";
    /// TCP connections accepted, by `listener`.
    pub const SOCKETS_TOTAL: &str = "mqtt_sockets_total";
    /// Connections that ended after CONNACK, by `reason`.
    pub const DISCONNECTS_TOTAL: &str = "mqtt_disconnects_total";
    /// Failed logins, by `reason`.
    pub const AUTH_FAILURES_TOTAL: &str = "mqtt_auth_failures_total";
    /// PUBLISH packets received from clients, by `qos`.
    pub const MESSAGES_RECEIVED_TOTAL: &str = "mqtt_messages_received_total";
    /// PUBLISH packets sent to clients, by `qos`.
    pub const MESSAGES_SENT_TOTAL: &str = "mqtt_messages_sent_total";
    /// Payload bytes of the PUBLISH packets received, by `qos`.
    pub const PAYLOAD_RECEIVED_BYTES_TOTAL: &str = "mqtt_payload_received_bytes_total";
    /// Payload bytes of the PUBLISH packets sent, by `qos`.
    pub const PAYLOAD_SENT_BYTES_TOTAL: &str = "mqtt_payload_sent_bytes_total";
    /// MQTT packets of every type received.
    pub const PACKETS_RECEIVED_TOTAL: &str = "mqtt_packets_received_total";
    /// MQTT packets of every type sent.
    pub const PACKETS_SENT_TOTAL: &str = "mqtt_packets_sent_total";
    /// Bytes read from client sockets.
    pub const NETWORK_RECEIVED_BYTES_TOTAL: &str = "mqtt_network_received_bytes_total";
    /// Bytes written to client sockets.
    pub const NETWORK_SENT_BYTES_TOTAL: &str = "mqtt_network_sent_bytes_total";
    /// Messages that did not reach one subscriber, by `reason`.
    pub const MESSAGES_DROPPED_TOTAL: &str = "mqtt_messages_dropped_total";
    /// Packets that could not be decoded (the connection was closed), by `reason`.
    pub const DECODE_ERRORS_TOTAL: &str = "mqtt_decode_errors_total";
    /// Offline sessions ended by their expiry interval.
    pub const SESSIONS_EXPIRED_TOTAL: &str = "mqtt_sessions_expired_total";
    /// Sessions now, by `state` (`online`, `offline`).
    pub const SESSIONS_CURRENT: &str = "mqtt_sessions_current";
    /// Subscriptions now (each shared-subscription member counts).
    pub const SUBSCRIPTIONS_CURRENT: &str = "mqtt_subscriptions_current";
    /// Retained messages now.
    pub const RETAINED_MESSAGES_CURRENT: &str = "mqtt_retained_messages_current";
    /// Messages waiting in session queues now.
    pub const QUEUED_MESSAGES_CURRENT: &str = "mqtt_queued_messages_current";
    /// Payload bytes waiting in session queues now.
    pub const QUEUED_BYTES_CURRENT: &str = "mqtt_queued_bytes_current";
    /// QoS 1/2 messages sent and not yet acknowledged now.
    pub const INFLIGHT_MESSAGES_CURRENT: &str = "mqtt_inflight_messages_current";
    /// Seconds since the broker started.
    pub const UPTIME_SECONDS: &str = "mqtt_uptime_seconds";
    /// Time the storage thread took to apply one batch (one transaction).
    pub const STORE_COMMIT_SECONDS: &str = "mqtt_store_commit_seconds";
    /// Changes in one batch the storage thread applied.
    pub const STORE_BATCH_OPS: &str = "mqtt_store_batch_ops";
    /// From receiving a PUBLISH to encoding it for one subscriber (queue time included).
    pub const PUBLISH_DELIVER_SECONDS: &str = "mqtt_publish_deliver_seconds";
}

/// A bounded set of label values.
pub trait Label: Copy + 'static {
    const ALL: &'static [Self];
    fn label(self) -> &'static str;
}

/// Declares a label enum: its variants, their label values, and `ALL`/`COUNT` to size counters.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub const COUNT: usize = Self::ALL.len();

            /// The label value.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }
        }

        impl Label for $name {
            const ALL: &'static [Self] = $name::ALL;

            fn label(self) -> &'static str {
                $name::label(self)
            }
        }
    };
}

label_enum! {
    /// Why a connection was refused before it became an MQTT session.
    RefusalReason {
        /// `max_connections` (global or the listener's) reached.
        MaxConnections => "max_connections",
        /// `max_connection_rate` exceeded for the address.
        RateLimited => "rate_limited",
        /// No CONNECT within `connect_timeout`.
        ConnectTimeout => "connect_timeout",
        /// The first packet was not a valid CONNECT.
        BadConnect => "bad_connect",
        UnsupportedProtocol => "unsupported_protocol",
        /// Empty client id where not allowed, or keep alive above `max_keepalive` (3.1.1).
        ClientIdRejected => "client_id_rejected",
        BadCredentials => "bad_credentials",
        NotAuthorized => "not_authorized",
        BadAuthMethod => "bad_auth_method",
        RetainUnsupported => "retain_unsupported",
        /// The session could not be taken over in time, or an internal error.
        ServerUnavailable => "server_unavailable",
    }
}

impl RefusalReason {
    /// The refusal a CONNACK reason code stands for.
    pub fn from_connack(reason: ReasonCode) -> Self {
        match reason {
            ReasonCode::UnsupportedProtocolVersion => RefusalReason::UnsupportedProtocol,
            ReasonCode::ClientIdentifierNotValid => RefusalReason::ClientIdRejected,
            ReasonCode::BadUserNameOrPassword => RefusalReason::BadCredentials,
            ReasonCode::NotAuthorized => RefusalReason::NotAuthorized,
            ReasonCode::BadAuthenticationMethod => RefusalReason::BadAuthMethod,
            ReasonCode::RetainNotSupported => RefusalReason::RetainUnsupported,
            _ => RefusalReason::ServerUnavailable,
        }
    }
}

label_enum! {
    /// How a connection that had a session ended.
    DisconnectReason {
        /// The client sent DISCONNECT.
        Client => "client_disconnect",
        /// The client closed the socket without DISCONNECT.
        PeerClosed => "peer_closed",
        KeepAliveTimeout => "keepalive_timeout",
        /// The client broke a protocol rule or sent a malformed packet.
        ProtocolError => "protocol_error",
        IoError => "io_error",
        /// The client stopped reading for 60 s.
        WriteStalled => "write_stalled",
        /// Another connection took over the client id.
        TakenOver => "taken_over",
        /// The store could not record its messages.
        StoreFailed => "store_failed",
        /// Kicked through the admin API.
        Administrative => "administrative",
        /// The broker shut down.
        Shutdown => "shutdown",
    }
}

label_enum! {
    /// Why a message did not reach one subscriber.
    DropReason {
        /// The subscriber's queue was full (a queued QoS 0 message that gave way counts too).
        QueueFull => "queue_full",
        /// QoS 0 for an offline session (not queued unless `queue_qos0_messages`).
        OfflineQos0 => "offline_qos0",
        /// Its message expiry interval ran out while it waited.
        Expired => "expired",
        /// Larger than the subscriber's Maximum Packet Size.
        TooLarge => "too_large",
        /// The subscriber's ACL does not let it read the topic.
        NotAuthorized => "not_authorized",
        /// The session ended while the message was on its way.
        SessionEnded => "session_ended",
    }
}

label_enum! {
    /// Why a packet could not be decoded.
    DecodeReason {
        Malformed => "malformed",
        Protocol => "protocol_error",
        PacketTooLarge => "packet_too_large",
        UnsupportedProtocolVersion => "unsupported_protocol_version",
        UnknownProtocolName => "unknown_protocol_name",
        TopicName => "invalid_topic_name",
        TopicAliasZero => "topic_alias_zero",
        TopicFilter => "invalid_topic_filter",
    }
}

impl From<&DecodeError> for DecodeReason {
    fn from(error: &DecodeError) -> Self {
        match error {
            DecodeError::Malformed(_) => DecodeReason::Malformed,
            DecodeError::Protocol(_) => DecodeReason::Protocol,
            DecodeError::PacketTooLarge { .. } => DecodeReason::PacketTooLarge,
            DecodeError::UnsupportedProtocolVersion(_) => DecodeReason::UnsupportedProtocolVersion,
            DecodeError::UnknownProtocolName => DecodeReason::UnknownProtocolName,
            DecodeError::TopicName(_) => DecodeReason::TopicName,
            DecodeError::TopicAliasZero => DecodeReason::TopicAliasZero,
            DecodeError::TopicFilter(_) => DecodeReason::TopicFilter,
        }
    }
}

label_enum! {
    /// Why a login failed.
    AuthFailure {
        /// A username that is unknown or has the wrong password.
        BadCredentials => "bad_credentials",
        /// An anonymous client where those are not allowed.
        NotAuthorized => "not_authorized",
        /// The check itself could not run.
        Unavailable => "unavailable",
    }
}

impl AuthFailure {
    pub fn from_connack(reason: ReasonCode) -> Self {
        match reason {
            ReasonCode::BadUserNameOrPassword => AuthFailure::BadCredentials,
            ReasonCode::NotAuthorized => AuthFailure::NotAuthorized,
            _ => AuthFailure::Unavailable,
        }
    }
}

/// The `protocol` label of a protocol version.
pub fn protocol_label(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V31 => "3.1",
        ProtocolVersion::V311 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

/// The `qos` label of a QoS.
pub fn qos_label(qos: QoS) -> &'static str {
    match qos {
        QoS::AtMostOnce => "0",
        QoS::AtLeastOnce => "1",
        QoS::ExactlyOnce => "2",
    }
}

const PROTOCOLS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];
const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

fn protocol_index(version: ProtocolVersion) -> usize {
    match version {
        ProtocolVersion::V31 => 0,
        ProtocolVersion::V311 => 1,
        ProtocolVersion::V5 => 2,
    }
}

/// Counters written by every core keep to their own cache lines, so that publishers on one core
/// and subscribers on another do not invalidate each other's.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Line<T>(T);

/// Messages and payload bytes by QoS, in one direction.
#[derive(Debug, Default)]
struct Flow {
    messages: [AtomicU64; 3],
    bytes: [AtomicU64; 3],
}

impl Flow {
    fn add(&self, qos: QoS, payload: usize) {
        let i = qos as usize;
        self.messages[i].fetch_add(1, Relaxed);
        self.bytes[i].fetch_add(payload as u64, Relaxed);
    }

    fn messages(&self) -> u64 {
        self.messages.iter().map(|c| c.load(Relaxed)).sum()
    }

    fn bytes(&self) -> u64 {
        self.bytes.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// One direction of the wire: packets and socket bytes.
#[derive(Debug, Default)]
struct Wire {
    packets: AtomicU64,
    bytes: AtomicU64,
}

/// The histograms, present only while something drains them (an HTTP listener).
#[derive(Debug, Clone)]
pub struct Histograms {
    pub store_commit: metrics::Histogram,
    pub store_batch: metrics::Histogram,
}

/// One ended connection, for the dashboard's "recent disconnects".
#[derive(Debug, Clone)]
pub struct DisconnectRecord {
    pub at: SystemTime,
    pub client_id: Arc<str>,
    pub reason: DisconnectReason,
}

/// Recent disconnects kept for the dashboard.
const RECENT_DISCONNECTS: usize = 32;

/// The broker's counters. See the [module docs](self).
#[derive(Debug, Default)]
pub struct Metrics {
    received: Line<Flow>,
    sent: Line<Flow>,
    wire_in: Line<Wire>,
    wire_out: Line<Wire>,
    connections_open: AtomicI64,
    connections: [AtomicU64; 3],
    refused: [AtomicU64; RefusalReason::COUNT],
    disconnects: [AtomicU64; DisconnectReason::COUNT],
    auth_failures: [AtomicU64; AuthFailure::COUNT],
    dropped: [AtomicU64; DropReason::COUNT],
    decode_errors: [AtomicU64; DecodeReason::COUNT],
    sessions_expired: AtomicU64,
    /// TCP connections accepted, by listener name.
    sockets: Mutex<Vec<(String, Arc<AtomicU64>)>>,
    histograms: OnceLock<Histograms>,
    deliver_latency: DeliverLatency,
    recent: Mutex<VecDeque<DisconnectRecord>>,
    topics: TopicSampler,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// A PUBLISH came in.
    pub fn received(&self, qos: QoS, payload: usize) {
        self.received.0.add(qos, payload);
    }

    /// A PUBLISH went out (its packet is counted by [`Metrics::packet_sent`]).
    pub fn sent(&self, qos: QoS, payload: usize) {
        self.sent.0.add(qos, payload);
    }

    /// A packet of any type was decoded; a PUBLISH is counted as a message too.
    pub fn packet_received(&self, packet: &Packet) {
        self.wire_in.0.packets.fetch_add(1, Relaxed);
        if let Packet::Publish(publish) = packet {
            self.received(publish.qos, publish.payload.len());
        }
    }

    pub fn packets_sent(&self, count: u64) {
        if count != 0 {
            self.wire_out.0.packets.fetch_add(count, Relaxed);
        }
    }

    pub fn bytes_read(&self, bytes: usize) {
        self.wire_in.0.bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub fn bytes_written(&self, bytes: usize) {
        self.wire_out.0.bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// A batch to add publish-to-deliver latencies to, while the histograms are recorded.
    pub fn latency_batch(&self) -> Option<LatencyBatch> {
        self.histograms.get().map(|_| LatencyBatch::default())
    }

    /// Adds a batch of latencies to the publish-to-deliver histogram.
    pub fn delivered_batch(&self, batch: &LatencyBatch) {
        self.deliver_latency.add(batch);
    }

    /// The publish-to-deliver histogram: counts per bucket of [`LATENCY_BUCKETS`] (the last one
    /// past the largest bound), and the sum of latencies in seconds.
    pub fn deliver_latency(&self) -> (Vec<u64>, f64) {
        self.deliver_latency.snapshot()
    }

    /// A network connection was accepted; the guard counts it open until dropped.
    pub fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.connections_open.fetch_add(1, Relaxed);
        OpenConnection(self.clone())
    }

    /// An MQTT connection was accepted (CONNACK success).
    pub fn connected(&self, version: ProtocolVersion) {
        self.connections[protocol_index(version)].fetch_add(1, Relaxed);
    }

    pub fn refused(&self, reason: RefusalReason) {
        self.refused[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn auth_failed(&self, reason: AuthFailure) {
        self.auth_failures[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn decode_error(&self, error: &DecodeError) {
        self.decode_errors[DecodeReason::from(error) as usize].fetch_add(1, Relaxed);
    }

    pub fn session_expired(&self) {
        self.sessions_expired.fetch_add(1, Relaxed);
    }

    /// A session's connection ended: counted, and remembered for the dashboard.
    pub fn disconnected(&self, client_id: &Arc<str>, reason: DisconnectReason) {
        self.disconnects[reason as usize].fetch_add(1, Relaxed);
        let mut recent = self.recent.lock();
        if recent.len() == RECENT_DISCONNECTS {
            recent.pop_front();
        }
        recent.push_back(DisconnectRecord {
            at: SystemTime::now(),
            client_id: client_id.clone(),
            reason,
        });
    }

    /// The counter a listener's accept loop bumps for each TCP connection.
    pub fn listener(&self, name: String) -> Arc<AtomicU64> {
        let mut sockets = self.sockets.lock();
        if let Some((_, counter)) = sockets.iter().find(|(n, _)| *n == name) {
            return counter.clone();
        }
        let counter = Arc::new(AtomicU64::new(0));
        sockets.push((name, counter.clone()));
        counter
    }

    /// Installs the histograms (once; later calls keep the first). Until then they are not
    /// recorded at all: a histogram nobody drains would grow without bound.
    pub fn enable_histograms(&self, histograms: Histograms) {
        let _ = self.histograms.set(histograms);
    }

    pub fn histograms(&self) -> Option<&Histograms> {
        self.histograms.get()
    }

    /// The topic sampler behind the dashboard's "top topics".
    pub fn topics(&self) -> &TopicSampler {
        &self.topics
    }

    /// The most recent disconnects, oldest first.
    pub fn recent_disconnects(&self) -> Vec<DisconnectRecord> {
        self.recent.lock().iter().cloned().collect()
    }

    /// The totals `$SYS` and the dashboard read.
    pub fn totals(&self) -> Totals {
        let sum = |counters: &[AtomicU64]| counters.iter().map(|c| c.load(Relaxed)).sum();
        Totals {
            messages_received: self.received.0.messages(),
            messages_sent: self.sent.0.messages(),
            payload_received: self.received.0.bytes(),
            payload_sent: self.sent.0.bytes(),
            packets_received: self.wire_in.0.packets.load(Relaxed),
            packets_sent: self.wire_out.0.packets.load(Relaxed),
            bytes_received: self.wire_in.0.bytes.load(Relaxed),
            bytes_sent: self.wire_out.0.bytes.load(Relaxed),
            dropped: sum(&self.dropped),
            sockets: self
                .sockets
                .lock()
                .iter()
                .map(|(_, c)| c.load(Relaxed))
                .sum(),
            connections: sum(&self.connections),
            connections_open: self.connections_open.load(Relaxed).max(0) as u64,
            sessions_expired: self.sessions_expired.load(Relaxed),
        }
    }

    /// Every counter with its labels, for the Prometheus exporter.
    pub fn for_each_counter(
        &self,
        mut visit: impl FnMut(&'static str, &[(&'static str, String)], u64),
    ) {
        let value = |c: &AtomicU64| c.load(Relaxed);
        for (i, qos) in QOS.iter().enumerate() {
            let labels = [("qos", qos_label(*qos).to_owned())];
            visit(
                names::MESSAGES_RECEIVED_TOTAL,
                &labels,
                value(&self.received.0.messages[i]),
            );
            visit(
                names::MESSAGES_SENT_TOTAL,
                &labels,
                value(&self.sent.0.messages[i]),
            );
            visit(
                names::PAYLOAD_RECEIVED_BYTES_TOTAL,
                &labels,
                value(&self.received.0.bytes[i]),
            );
            visit(
                names::PAYLOAD_SENT_BYTES_TOTAL,
                &labels,
                value(&self.sent.0.bytes[i]),
            );
        }
        visit(
            names::PACKETS_RECEIVED_TOTAL,
            &[],
            value(&self.wire_in.0.packets),
        );
        visit(
            names::PACKETS_SENT_TOTAL,
            &[],
            value(&self.wire_out.0.packets),
        );
        visit(
            names::NETWORK_RECEIVED_BYTES_TOTAL,
            &[],
            value(&self.wire_in.0.bytes),
        );
        visit(
            names::NETWORK_SENT_BYTES_TOTAL,
            &[],
            value(&self.wire_out.0.bytes),
        );
        for (i, version) in PROTOCOLS.iter().enumerate() {
            let labels = [("protocol", protocol_label(*version).to_owned())];
            visit(
                names::CONNECTIONS_TOTAL,
                &labels,
                value(&self.connections[i]),
            );
        }
        for (name, counter) in self.sockets.lock().iter() {
            visit(
                names::SOCKETS_TOTAL,
                &[("listener", name.clone())],
                value(counter),
            );
        }
        by_reason::<RefusalReason>(&mut visit, names::CONNECTIONS_REFUSED_TOTAL, &self.refused);
        by_reason::<DisconnectReason>(&mut visit, names::DISCONNECTS_TOTAL, &self.disconnects);
        by_reason::<AuthFailure>(&mut visit, names::AUTH_FAILURES_TOTAL, &self.auth_failures);
        by_reason::<DropReason>(&mut visit, names::MESSAGES_DROPPED_TOTAL, &self.dropped);
        by_reason::<DecodeReason>(&mut visit, names::DECODE_ERRORS_TOTAL, &self.decode_errors);
        visit(
            names::SESSIONS_EXPIRED_TOTAL,
            &[],
            value(&self.sessions_expired),
        );
    }
}

/// Reports one counter per value of the `reason` label `L`.
fn by_reason<L: Label>(
    visit: &mut impl FnMut(&'static str, &[(&'static str, String)], u64),
    name: &'static str,
    counters: &[AtomicU64],
) {
    for (reason, counter) in L::ALL.iter().zip(counters) {
        visit(
            name,
            &[("reason", reason.label().to_owned())],
            counter.load(Relaxed),
        );
    }
}

/// Counts one open network connection until dropped.
#[derive(Debug)]
pub struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

/// The counters `$SYS` and the dashboard read, summed over labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// PUBLISH packets received and sent.
    pub messages_received: u64,
    pub messages_sent: u64,
    /// Their payload bytes.
    pub payload_received: u64,
    pub payload_sent: u64,
    /// Packets of every type.
    pub packets_received: u64,
    pub packets_sent: u64,
    /// Socket bytes.
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub dropped: u64,
    /// TCP connections accepted.
    pub sockets: u64,
    /// MQTT connections accepted.
    pub connections: u64,
    /// Network connections open now.
    pub connections_open: u64,
    pub sessions_expired: u64,
}

/// The broker's state now, computed on demand (at a scrape, a `$SYS` update, a dashboard poll)
/// rather than tracked per event: one pass over the sessions, each slot locked briefly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    pub sessions: usize,
    pub online: usize,
    pub subscriptions: usize,
    pub retained: usize,
    pub queued_messages: usize,
    pub queued_bytes: usize,
    pub inflight: usize,
}

impl Gauges {
    pub fn read(broker: &Broker) -> Gauges {
        let mut gauges = Gauges {
            subscriptions: broker.subscription_count(),
            retained: broker.retained_count(),
            ..Gauges::default()
        };
        for slot in broker.sessions() {
            gauges.sessions += 1;
            gauges.online += usize::from(slot.is_online());
            let (messages, bytes) = slot.queue_depth();
            gauges.queued_messages += messages;
            gauges.queued_bytes += bytes;
            gauges.inflight += slot.inflight();
        }
        gauges
    }

    /// Every gauge with its labels, for the Prometheus exporter.
    pub fn for_each(&self, mut visit: impl FnMut(&'static str, &[(&'static str, String)], f64)) {
        let n = |v: usize| v as f64;
        visit(
            names::SESSIONS_CURRENT,
            &[("state", "online".to_owned())],
            n(self.online),
        );
        visit(
            names::SESSIONS_CURRENT,
            &[("state", "offline".to_owned())],
            n(self.sessions - self.online),
        );
        visit(names::SUBSCRIPTIONS_CURRENT, &[], n(self.subscriptions));
        visit(names::RETAINED_MESSAGES_CURRENT, &[], n(self.retained));
        visit(names::QUEUED_MESSAGES_CURRENT, &[], n(self.queued_messages));
        visit(names::QUEUED_BYTES_CURRENT, &[], n(self.queued_bytes));
        visit(names::INFLIGHT_MESSAGES_CURRENT, &[], n(self.inflight));
    }
}

/// One publish in this many has its topic counted.
pub const TOPIC_SAMPLE_EVERY: u32 = 16;

/// Distinct topics counted per window, at most; further topics wait for the next window.
const TOPIC_SAMPLE_CAPACITY: usize = 1024;

thread_local! {
    /// Publishes seen on this thread, for 1-in-N sampling without a shared counter.
    static TICK: Cell<u32> = const { Cell::new(0) };
}

/// Counts a sample of published topics, for "top topics by rate". Off until enabled: the publish
/// path then pays one relaxed load. On, it pays a thread-local increment, and one publish in
/// [`TOPIC_SAMPLE_EVERY`] takes a mutex to count its topic in a bounded map.
#[derive(Debug, Default)]
pub struct TopicSampler {
    enabled: AtomicBool,
    counts: Mutex<HashMap<TopicName, u64>>,
}

impl TopicSampler {
    pub fn enable(&self) {
        self.enabled.store(true, Relaxed);
    }

    /// Called for every routed message.
    pub fn observe(&self, topic: &TopicName) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        let sampled = TICK.with(|tick| {
            let next = tick.get().wrapping_add(1);
            tick.set(next);
            next % TOPIC_SAMPLE_EVERY == 0
        });
        if !sampled {
            return;
        }
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(topic) {
            *count += 1;
        } else if counts.len() < TOPIC_SAMPLE_CAPACITY {
            counts.insert(topic.clone(), 1);
        }
    }

    /// Ends a window of `elapsed`: the busiest `top` topics with their estimated rate in messages
    /// per second, busiest first. Counting starts afresh.
    pub fn take_top(&self, top: usize, elapsed: Duration) -> Vec<(TopicName, f64)> {
        let counts = std::mem::take(&mut *self.counts.lock());
        let mut ranked: Vec<(TopicName, u64)> = counts.into_iter().collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_str().cmp(b.0.as_str())));
        ranked.truncate(top);
        let secs = elapsed.as_secs_f64().max(0.001);
        ranked
            .into_iter()
            .map(|(topic, n)| (topic, (n * u64::from(TOPIC_SAMPLE_EVERY)) as f64 / secs))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_the_bucket_of_their_upper_bound_and_sum_exactly() {
        let histogram = DeliverLatency::default();
        let mut batch = LatencyBatch::default();
        for micros in [50, 100, 101, 9_000, 20_000_000] {
            batch.add(Duration::from_micros(micros));
        }
        histogram.add(&batch);
        histogram.add(&batch);
        let (counts, sum) = histogram.snapshot();
        assert_eq!(counts.len(), LATENCY_BUCKETS.len() + 1);
        // 50 and 100 µs are within the first bound (le 0.0001), 101 µs in the next.
        assert_eq!((counts[0], counts[1]), (4, 2));
        // 9 ms: le 0.01, the seventh bound.
        assert_eq!(counts[6], 2);
        // 20 s is past the largest bound.
        assert_eq!(counts[LATENCY_BUCKETS.len()], 2);
        assert_eq!(counts.iter().sum::<u64>(), 10);
        assert!((sum - 2.0 * 20.009_251).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn label_values_are_distinct_within_each_enum() {
        fn distinct(labels: Vec<&str>) {
            let mut sorted = labels.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), labels.len(), "{labels:?}");
        }
        distinct(RefusalReason::ALL.iter().map(|r| r.label()).collect());
        distinct(DisconnectReason::ALL.iter().map(|r| r.label()).collect());
        distinct(DropReason::ALL.iter().map(|r| r.label()).collect());
        distinct(DecodeReason::ALL.iter().map(|r| r.label()).collect());
        distinct(AuthFailure::ALL.iter().map(|r| r.label()).collect());
    }

    #[test]
    fn totals_sum_the_labelled_counters() {
        let metrics = Metrics::new();
        metrics.received(QoS::AtMostOnce, 3);
        metrics.received(QoS::ExactlyOnce, 4);
        metrics.sent(QoS::AtLeastOnce, 5);
        metrics.dropped(DropReason::QueueFull);
        metrics.dropped(DropReason::Expired);
        let totals = metrics.totals();
        assert_eq!(totals.messages_received, 2);
        assert_eq!(totals.payload_received, 7);
        assert_eq!(totals.messages_sent, 1);
        assert_eq!(totals.payload_sent, 5);
        assert_eq!(totals.dropped, 2);
        let mut seen = Vec::new();
        metrics.for_each_counter(|name, labels, value| {
            if value != 0 {
                seen.push(format!("{name}{labels:?}={value}"));
            }
        });
        assert!(
            seen.contains(&r#"mqtt_messages_received_total[("qos", "2")]=1"#.to_owned()),
            "{seen:?}"
        );
        assert!(
            seen.contains(&r#"mqtt_messages_dropped_total[("reason", "expired")]=1"#.to_owned()),
            "{seen:?}"
        );
    }

    #[test]
    fn the_topic_sampler_is_bounded_and_ranks_by_count() {
        let sampler = TopicSampler::default();
        let hot = TopicName::new("hot").expect("topic");
        sampler.observe(&hot);
        assert!(
            sampler.take_top(10, Duration::from_secs(1)).is_empty(),
            "off until enabled"
        );
        sampler.enable();
        for _ in 0..TOPIC_SAMPLE_EVERY * 10 {
            sampler.observe(&hot);
        }
        for i in 0..(TOPIC_SAMPLE_CAPACITY as u32 + 100) * TOPIC_SAMPLE_EVERY {
            let topic = TopicName::new(&format!("cold/{}", i / TOPIC_SAMPLE_EVERY)).expect("topic");
            sampler.observe(&topic);
        }
        assert!(sampler.counts.lock().len() <= TOPIC_SAMPLE_CAPACITY);
        let top = sampler.take_top(3, Duration::from_secs(2));
        assert_eq!(top[0].0.as_str(), "hot");
        assert_eq!(top[0].1, f64::from(10 * TOPIC_SAMPLE_EVERY) / 2.0);
        assert!(
            sampler.take_top(3, Duration::from_secs(1)).is_empty(),
            "a new window"
        );
    }
}

/// Upper bounds of the latency histograms' buckets, in seconds: 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

const LATENCY_SLOTS: usize = LATENCY_BUCKETS.len() + 1;

/// Publish-to-deliver latency, one sample per delivery: a fixed-bucket histogram of relaxed
/// atomics, fed a whole mailbox read at a time ([`LatencyBatch`]). Recording every delivery
/// through the exporter's histogram (a shared lock-free queue drained each second) cost the
/// publish path a quarter of its throughput; this costs a few atomic adds per batch.
#[derive(Debug, Default)]
struct DeliverLatency {
    counts: [AtomicU64; LATENCY_SLOTS],
    sum_nanos: AtomicU64,
}

impl DeliverLatency {
    fn add(&self, batch: &LatencyBatch) {
        for (count, &add) in self.counts.iter().zip(&batch.counts) {
            if add != 0 {
                count.fetch_add(u64::from(add), Relaxed);
            }
        }
        if batch.sum_nanos != 0 {
            self.sum_nanos.fetch_add(batch.sum_nanos, Relaxed);
        }
    }

    fn snapshot(&self) -> (Vec<u64>, f64) {
        let counts = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        (counts, self.sum_nanos.load(Relaxed) as f64 / 1e9)
    }
}

/// Latencies of one batch of deliveries, added up locally before they reach the histogram.
#[derive(Debug, Default)]
pub struct LatencyBatch {
    counts: [u32; LATENCY_SLOTS],
    sum_nanos: u64,
}

impl LatencyBatch {
    pub fn add(&mut self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[slot] = self.counts[slot].saturating_add(1);
        self.sum_nanos = self
            .sum_nanos
            .saturating_add(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }
}
