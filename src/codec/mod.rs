//! The MQTT wire codec: every packet of MQTT 3.1 (`MQIsdp`, level 3), 3.1.1 (level 4) and 5.0
//! (level 5), both directions.
//!
//! Pure: no sockets, clocks or tokio. [`decode`] is check-then-parse: it looks at the fixed header,
//! returns `Ok(None)` until the whole frame is buffered, refuses a frame larger than the maximum
//! packet size before buffering it, and consumes bytes only when it returns a packet. Every
//! malformed input is a [`DecodeError`] that names the reason code to answer with; nothing here
//! panics on input. Encoding never truncates: lengths are converted with `try_from`, and a value
//! too large for its field is an [`EncodeError`].
//!
//! Rules that depend on who sends a packet (a client must not send a Subscription Identifier in
//! PUBLISH, say) belong to the session, not here: this codec also serves the load generator and
//! tests, which speak as clients.
#![deny(clippy::cast_possible_truncation)]

mod error;
mod packet;
mod property;
mod reason;
mod strings;
mod varint;
mod wire;

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};

pub use error::{DecodeError, EncodeError};
pub use packet::{decode, encode, encode_publish_header, encoded_len, publish_encoded_len};
pub use reason::{ReasonCode, ReasonContext};

use crate::topic::{TopicFilter, TopicName};

/// The largest packet MQTT can frame: a remaining length of 268,435,455 plus the fixed header.
pub const MAX_PACKET_SIZE: u32 = 268_435_455 + 5;

/// The largest Subscription Identifier (a variable byte integer, section 3.8.2.1.2).
pub const MAX_SUBSCRIPTION_ID: u32 = 268_435_455;

/// Protocol level, from the CONNECT packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1, protocol name `MQTT`, level 4.
    V311,
    /// MQTT 5.0, protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two QoS bits; 3 is not a QoS.
    pub fn from_u8(bits: u8) -> Option<QoS> {
        match bits {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A packet identifier: never zero ([MQTT-2.2.1-3]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    pub fn new(id: u16) -> Option<PacketId> {
        NonZeroU16::new(id).map(PacketId)
    }

    pub fn get(self) -> u16 {
        self.0.get()
    }
}

/// A User Property (0x26): a name and a value, both UTF-8 strings; may repeat, order kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserProperty {
    pub key: String,
    pub value: String,
}

/// Retain Handling of a subscription (section 3.8.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages when the subscription is made.
    #[default]
    SendAtSubscribe,
    /// 1: send them only if the subscription did not already exist.
    SendIfNew,
    /// 2: never send retained messages for this subscription.
    DoNotSend,
}

/// Subscription Options byte of SUBSCRIBE (for 3.1.1 only the QoS is on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

/// Payload Format Indicator (0x01).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PayloadFormat {
    /// 0: unspecified bytes.
    #[default]
    Unspecified,
    /// 1: UTF-8 character data.
    Utf8,
}

/// Every MQTT control packet.
#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    /// Boxed: it is large and arrives once per connection.
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResponse),
    PubRec(PubResponse),
    PubRel(PubResponse),
    PubComp(PubResponse),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// The packet's name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

/// CONNECT (section 3.1).
#[derive(Clone, Debug, PartialEq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) or Clean Start (5.0).
    pub clean_start: bool,
    /// Seconds; 0 turns keep alive off.
    pub keep_alive: u16,
    /// May be empty: the server then assigns one (5.0) or the session is clean (3.1.1).
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub properties: ConnectProperties,
}

/// The Will of a CONNECT.
#[derive(Clone, Debug, PartialEq)]
pub struct Will {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: WillProperties,
}

/// CONNECT properties (section 3.1.2.11).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ConnectProperties {
    /// Absent means 0: the session ends when the connection closes.
    pub session_expiry_interval: Option<u32>,
    /// Absent means 65,535; zero is a protocol error.
    pub receive_maximum: Option<NonZeroU16>,
    /// Absent means no limit beyond the protocol's; zero is a protocol error.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// Absent means 0: the server must not send topic aliases.
    pub topic_alias_maximum: Option<u16>,
    pub request_response_information: Option<bool>,
    pub request_problem_information: Option<bool>,
    pub user_properties: Vec<UserProperty>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
}

/// Will properties (section 3.1.3.2).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct WillProperties {
    pub will_delay_interval: Option<u32>,
    pub payload_format: Option<PayloadFormat>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<TopicName>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<UserProperty>,
}

/// CONNACK (section 3.2). For 3.1/3.1.1 the reason is carried as the return code
/// ([`ReasonCode::to_v3_connack`]) and properties are not on the wire.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason: ReasonCode,
    pub properties: ConnAckProperties,
}

/// CONNACK properties (section 3.2.2.3).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ConnAckProperties {
    pub session_expiry_interval: Option<u32>,
    pub receive_maximum: Option<NonZeroU16>,
    /// Only 0 or 1 may be sent; absent means 2.
    pub maximum_qos: Option<QoS>,
    pub retain_available: Option<bool>,
    pub maximum_packet_size: Option<NonZeroU32>,
    pub assigned_client_identifier: Option<String>,
    pub topic_alias_maximum: Option<u16>,
    pub reason_string: Option<String>,
    pub user_properties: Vec<UserProperty>,
    pub wildcard_subscription_available: Option<bool>,
    pub subscription_identifiers_available: Option<bool>,
    pub shared_subscription_available: Option<bool>,
    pub server_keep_alive: Option<u16>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
}

/// PUBLISH (section 3.3).
#[derive(Clone, Debug, PartialEq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty only when a topic alias stands for it (5.0).
    pub topic: TopicName,
    /// Present exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    pub properties: PublishProperties,
    pub payload: Bytes,
}

/// PUBLISH properties (section 3.3.2.3).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PublishProperties {
    pub payload_format: Option<PayloadFormat>,
    pub message_expiry_interval: Option<u32>,
    pub topic_alias: Option<NonZeroU16>,
    pub response_topic: Option<TopicName>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<UserProperty>,
    /// Server to client only; one per matching subscription that has an identifier.
    pub subscription_identifiers: Vec<NonZeroU32>,
    pub content_type: Option<String>,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share this shape (sections 3.4 to 3.7).
#[derive(Clone, Debug, PartialEq)]
pub struct PubResponse {
    pub packet_id: PacketId,
    /// Always `Success` for 3.1/3.1.1; the short 5.0 form (remaining length 2) means `Success`.
    pub reason: ReasonCode,
    pub properties: AckProperties,
}

impl PubResponse {
    /// A success response with no properties.
    pub fn success(packet_id: PacketId) -> Self {
        PubResponse {
            packet_id,
            reason: ReasonCode::Success,
            properties: AckProperties::default(),
        }
    }
}

/// The properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct AckProperties {
    pub reason_string: Option<String>,
    pub user_properties: Vec<UserProperty>,
}

/// SUBSCRIBE (section 3.8).
#[derive(Clone, Debug, PartialEq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    pub properties: SubscribeProperties,
    /// At least one ([MQTT-3.8.3-3]).
    pub filters: Vec<(TopicFilter, SubscriptionOptions)>,
}

/// SUBSCRIBE properties (section 3.8.2.1).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SubscribeProperties {
    /// 1 to 268,435,455; zero is a protocol error.
    pub subscription_identifier: Option<NonZeroU32>,
    pub user_properties: Vec<UserProperty>,
}

/// SUBACK (section 3.9). 3.1.1 return codes 0, 1, 2 and 0x80 are the same numbers as the 5.0
/// reason codes GrantedQoS0..2 and UnspecifiedError.
#[derive(Clone, Debug, PartialEq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub properties: AckProperties,
    pub reasons: Vec<ReasonCode>,
}

/// UNSUBSCRIBE (section 3.10).
#[derive(Clone, Debug, PartialEq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    pub user_properties: Vec<UserProperty>,
    /// At least one ([MQTT-3.10.3-2]).
    pub filters: Vec<TopicFilter>,
}

/// UNSUBACK (section 3.11). In 3.1/3.1.1 there is no payload: `reasons` is empty.
#[derive(Clone, Debug, PartialEq)]
pub struct UnsubAck {
    pub packet_id: PacketId,
    pub properties: AckProperties,
    pub reasons: Vec<ReasonCode>,
}

/// DISCONNECT (section 3.14). In 3.1/3.1.1 it has no variable header: reason `Success`.
#[derive(Clone, Debug, PartialEq)]
pub struct Disconnect {
    pub reason: ReasonCode,
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with the given reason and no properties.
    pub fn new(reason: ReasonCode) -> Self {
        Disconnect {
            reason,
            properties: DisconnectProperties::default(),
        }
    }
}

/// DISCONNECT properties (section 3.14.2.2).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DisconnectProperties {
    pub session_expiry_interval: Option<u32>,
    pub reason_string: Option<String>,
    pub user_properties: Vec<UserProperty>,
    pub server_reference: Option<String>,
}

/// AUTH (section 3.15), 5.0 only.
#[derive(Clone, Debug, PartialEq)]
pub struct Auth {
    pub reason: ReasonCode,
    pub properties: AuthProperties,
}

/// AUTH properties (section 3.15.2.2).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct AuthProperties {
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub reason_string: Option<String>,
    pub user_properties: Vec<UserProperty>,
}

/// A PUBLISH to encode without building a [`Publish`]: fan-out encodes one per subscriber from a
/// shared message, so the per-subscriber fields come from here and the rest is borrowed.
///
/// `properties.topic_alias`, `properties.subscription_identifiers` and
/// `properties.message_expiry_interval` are ignored: the fields of the same names here are used.
#[derive(Clone, Copy, Debug)]
pub struct PublishView<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty when `topic_alias` names a topic the receiver already knows.
    pub topic: &'a str,
    pub packet_id: Option<PacketId>,
    pub properties: &'a PublishProperties,
    pub topic_alias: Option<NonZeroU16>,
    pub subscription_identifiers: &'a [NonZeroU32],
    pub message_expiry_interval: Option<u32>,
    pub payload_len: usize,
}

/// What the decoder needs to know about the connection.
#[derive(Clone, Copy, Debug)]
pub struct DecodeContext {
    /// The version negotiated by CONNECT. A CONNECT itself is decoded whatever this says.
    pub version: ProtocolVersion,
    /// The largest whole frame (fixed header included) this side accepts ([MQTT-3.1.2-24]).
    pub max_packet_size: u32,
}

impl Default for DecodeContext {
    fn default() -> Self {
        DecodeContext {
            version: ProtocolVersion::V311,
            max_packet_size: MAX_PACKET_SIZE,
        }
    }
}

/// Appends a packet to `out`; a convenience over [`encode`] for callers that own a `BytesMut`.
pub fn encode_to_bytes(packet: &Packet, version: ProtocolVersion) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out)?;
    Ok(out.freeze())
}
