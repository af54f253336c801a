//! Codec errors. Each decode error knows the MQTT 5 reason code a server answers it with.

use thiserror::Error;

use super::ReasonCode;
use crate::topic::TopicError;

/// Why a frame could not be decoded. "Need more bytes" is not an error: `decode` returns `Ok(None)`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes break a rule of the packet format.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet is well formed but breaks a protocol rule.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The whole frame is larger than the negotiated maximum packet size.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    PacketTooLarge { size: u64, max: u32 },
    /// CONNECT names a protocol level this broker does not speak.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// CONNECT names neither `MQTT` nor `MQIsdp`: the connection is closed without CONNACK
    /// ([MQTT-3.1.2-1]).
    #[error("unknown protocol name")]
    UnknownProtocolName,
    /// A topic name breaks the topic rules.
    #[error("invalid topic name: {0}")]
    TopicName(TopicError),
    /// A PUBLISH carries a Topic Alias of 0 ([MQTT-3.3.2-8]).
    #[error("protocol error: topic alias is zero")]
    TopicAliasZero,
    /// A topic filter breaks the topic filter rules.
    #[error("invalid topic filter: {0}")]
    TopicFilter(TopicError),
}

impl DecodeError {
    /// The reason code for the CONNACK or DISCONNECT that answers this error (section 4.13).
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            // Section 3.3.4: "A Topic Alias value of 0 or greater than the Maximum Topic Alias is
            // a Protocol Error, the receiver uses DISCONNECT with Reason Code of 0x94".
            DecodeError::TopicAliasZero => ReasonCode::TopicAliasInvalid,
            DecodeError::Malformed(_) | DecodeError::TopicFilter(_) => ReasonCode::MalformedPacket,
            DecodeError::Protocol(_) | DecodeError::UnknownProtocolName => {
                ReasonCode::ProtocolError
            }
            DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnsupportedProtocolVersion(_) => ReasonCode::UnsupportedProtocolVersion,
            DecodeError::TopicName(_) => ReasonCode::TopicNameInvalid,
        }
    }
}

/// Why a packet could not be encoded: a value does not fit its field. Nothing is truncated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("{field} is {len} bytes, more than a two-byte length prefix can carry")]
    StringTooLong { field: &'static str, len: usize },
    #[error("packet needs a remaining length of {0}, more than 268435455")]
    PacketTooLarge(usize),
    #[error("{field} value {value} does not fit a variable byte integer")]
    VarIntTooLarge { field: &'static str, value: u64 },
    #[error("{0} is not allowed here")]
    NotAllowed(&'static str),
}
