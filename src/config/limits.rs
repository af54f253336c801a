//! Broker limits, with mosquitto's names and defaults where mosquitto has the setting.
//!
//! Every bound the broker enforces is a field here with its default in one place, so a reader can
//! see what a client is allowed and an operator can change it. `0` means "no limit" where
//! mosquitto uses that convention.

use serde::{Deserialize, Serialize};

/// Limits applied to every client. See `config/starling.toml` for the operator's view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// QoS 1/2 messages sent to a client and not yet acknowledged, at most; also the Receive
    /// Maximum announced to 5.0 clients for their QoS 2 publishes. A 5.0 client's own Receive
    /// Maximum lowers the outgoing window further. mosquitto: 20. 0 = 65,535.
    pub max_inflight_messages: u16,
    /// Messages waiting for a client beyond its inflight window (online or offline), at most.
    /// When full, new messages for that client are dropped and counted. mosquitto: 1000. 0 = none.
    pub max_queued_messages: usize,
    /// Payload bytes waiting for a client, at most. mosquitto: 0 (no limit).
    pub max_queued_bytes: usize,
    /// Largest packet accepted from a client, in bytes, fixed header included; announced to 5.0
    /// clients. mosquitto: 0 (the protocol's 268,435,460).
    pub max_packet_size: u32,
    /// Longest keep alive a client may ask for, in seconds. 5.0 clients asking more (or 0) are told
    /// this value as Server Keep Alive; 3.1/3.1.1 clients asking more are refused (CONNACK 2), as
    /// mosquitto does. mosquitto: 65535.
    pub max_keepalive: u16,
    /// Connections open at once across all listeners, at most. mosquitto: -1 (none); here 0.
    pub max_connections: usize,
    /// Topic aliases a 5.0 client may use towards the broker (Topic Alias Maximum in CONNACK).
    /// mosquitto: 10.
    pub max_topic_alias: u16,
    /// Whether QoS 0 messages are queued for offline persistent sessions. mosquitto: false.
    pub queue_qos0_messages: bool,
    /// Whether retained messages are supported (Retain Available). mosquitto: true.
    pub retain_available: bool,
    /// Whether a client may connect with an empty client id (the broker then assigns one).
    /// mosquitto: true.
    pub allow_zero_length_clientid: bool,
    /// Seconds a 3.1/3.1.1 persistent session (clean session 0) is kept while offline; 0 keeps it
    /// forever. 5.0 clients set their own Session Expiry Interval. mosquitto calls this
    /// persistent_client_expiration and also keeps sessions forever by default.
    pub persistent_client_expiration: u32,
    /// Seconds a new connection has to send its CONNECT before it is closed.
    pub connect_timeout: u32,
    /// New connections accepted per second from one IP address (IPv6: one /64), at most; more are
    /// closed at once. Bursts up to this many are allowed. 0 = no limit.
    pub max_connection_rate: u32,
    /// Longest topic name or filter accepted, in bytes. 0 = the protocol's 65,535.
    pub max_topic_length: usize,
    /// Most levels (`a/b/c` has 3) a topic name or filter may have. mosquitto refuses more than
    /// 200. 0 = no limit.
    pub max_topic_levels: usize,
    /// Subscriptions one client may hold at once; further ones are refused (5.0: SUBACK 0x97
    /// Quota exceeded). 0 = no limit.
    pub max_subscriptions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            max_packet_size: 0,
            max_keepalive: 65535,
            max_connections: 0,
            max_topic_alias: 10,
            queue_qos0_messages: false,
            retain_available: true,
            allow_zero_length_clientid: true,
            persistent_client_expiration: 0,
            connect_timeout: 10,
            max_connection_rate: 0,
            max_topic_length: 0,
            max_topic_levels: 200,
            max_subscriptions: 0,
        }
    }
}

impl Limits {
    /// The inflight window and Receive Maximum as a number (0 in the config means 65,535).
    pub fn inflight_window(&self) -> u16 {
        if self.max_inflight_messages == 0 {
            u16::MAX
        } else {
            self.max_inflight_messages
        }
    }

    /// The largest packet accepted, as the decoder wants it.
    pub fn max_packet_size(&self) -> u32 {
        if self.max_packet_size == 0 {
            crate::codec::MAX_PACKET_SIZE
        } else {
            self.max_packet_size
        }
    }

    /// Whether the queue already holds as much as allowed.
    pub fn queue_full(&self, messages: usize, bytes: usize) -> bool {
        (self.max_queued_messages != 0 && messages >= self.max_queued_messages)
            || (self.max_queued_bytes != 0 && bytes >= self.max_queued_bytes)
    }

    /// Whether a topic name or filter is within `max_topic_length` and `max_topic_levels`.
    pub fn topic_within_limits(&self, topic: &str) -> bool {
        let levels = || topic.bytes().filter(|&b| b == b'/').count() + 1;
        (self.max_topic_length == 0 || topic.len() <= self.max_topic_length)
            && (self.max_topic_levels == 0 || levels() <= self.max_topic_levels)
    }
}
