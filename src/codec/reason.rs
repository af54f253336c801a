//! MQTT 5 reason codes, and the 3.1/3.1.1 return codes they stand for.
//!
//! One enum for every packet: the same number means the same thing wherever it appears (0x00 is
//! Success, Normal disconnection and Granted QoS 0 alike). Which codes a packet may carry is checked
//! by [`ReasonCode::allowed_in`], on decode and encode.

use std::fmt;

/// A reason code from MQTT 5.0 section 2.4. 3.1.1 return codes map onto it (see `codec::packet`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReasonCode {
    /// Success, Normal disconnection, Granted QoS 0.
    Success = 0x00,
    GrantedQoS1 = 0x01,
    GrantedQoS2 = 0x02,
    DisconnectWithWillMessage = 0x04,
    NoMatchingSubscribers = 0x10,
    NoSubscriptionExisted = 0x11,
    ContinueAuthentication = 0x18,
    ReAuthenticate = 0x19,
    UnspecifiedError = 0x80,
    MalformedPacket = 0x81,
    ProtocolError = 0x82,
    ImplementationSpecificError = 0x83,
    UnsupportedProtocolVersion = 0x84,
    ClientIdentifierNotValid = 0x85,
    BadUserNameOrPassword = 0x86,
    NotAuthorized = 0x87,
    ServerUnavailable = 0x88,
    ServerBusy = 0x89,
    Banned = 0x8A,
    ServerShuttingDown = 0x8B,
    BadAuthenticationMethod = 0x8C,
    KeepAliveTimeout = 0x8D,
    SessionTakenOver = 0x8E,
    TopicFilterInvalid = 0x8F,
    TopicNameInvalid = 0x90,
    PacketIdentifierInUse = 0x91,
    PacketIdentifierNotFound = 0x92,
    ReceiveMaximumExceeded = 0x93,
    TopicAliasInvalid = 0x94,
    PacketTooLarge = 0x95,
    MessageRateTooHigh = 0x96,
    QuotaExceeded = 0x97,
    AdministrativeAction = 0x98,
    PayloadFormatInvalid = 0x99,
    RetainNotSupported = 0x9A,
    QoSNotSupported = 0x9B,
    UseAnotherServer = 0x9C,
    ServerMoved = 0x9D,
    SharedSubscriptionsNotSupported = 0x9E,
    ConnectionRateExceeded = 0x9F,
    MaximumConnectTime = 0xA0,
    SubscriptionIdentifiersNotSupported = 0xA1,
    WildcardSubscriptionsNotSupported = 0xA2,
}

/// The packets that carry reason codes; each allows its own subset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReasonContext {
    ConnAck,
    /// PUBACK and PUBREC.
    PubAckOrRec,
    /// PUBREL and PUBCOMP.
    PubRelOrComp,
    SubAck,
    UnsubAck,
    Disconnect,
    Auth,
}

impl ReasonCode {
    /// The wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Parses a wire value; `None` for numbers MQTT 5 does not define.
    pub fn from_u8(value: u8) -> Option<Self> {
        use ReasonCode::*;
        Some(match value {
            0x00 => Success,
            0x01 => GrantedQoS1,
            0x02 => GrantedQoS2,
            0x04 => DisconnectWithWillMessage,
            0x10 => NoMatchingSubscribers,
            0x11 => NoSubscriptionExisted,
            0x18 => ContinueAuthentication,
            0x19 => ReAuthenticate,
            0x80 => UnspecifiedError,
            0x81 => MalformedPacket,
            0x82 => ProtocolError,
            0x83 => ImplementationSpecificError,
            0x84 => UnsupportedProtocolVersion,
            0x85 => ClientIdentifierNotValid,
            0x86 => BadUserNameOrPassword,
            0x87 => NotAuthorized,
            0x88 => ServerUnavailable,
            0x89 => ServerBusy,
            0x8A => Banned,
            0x8B => ServerShuttingDown,
            0x8C => BadAuthenticationMethod,
            0x8D => KeepAliveTimeout,
            0x8E => SessionTakenOver,
            0x8F => TopicFilterInvalid,
            0x90 => TopicNameInvalid,
            0x91 => PacketIdentifierInUse,
            0x92 => PacketIdentifierNotFound,
            0x93 => ReceiveMaximumExceeded,
            0x94 => TopicAliasInvalid,
            0x95 => PacketTooLarge,
            0x96 => MessageRateTooHigh,
            0x97 => QuotaExceeded,
            0x98 => AdministrativeAction,
            0x99 => PayloadFormatInvalid,
            0x9A => RetainNotSupported,
            0x9B => QoSNotSupported,
            0x9C => UseAnotherServer,
            0x9D => ServerMoved,
            0x9E => SharedSubscriptionsNotSupported,
            0x9F => ConnectionRateExceeded,
            0xA0 => MaximumConnectTime,
            0xA1 => SubscriptionIdentifiersNotSupported,
            0xA2 => WildcardSubscriptionsNotSupported,
            _ => return None,
        })
    }

    /// True for codes 0x80 and above, which report failure.
    pub fn is_error(self) -> bool {
        self.as_u8() >= 0x80
    }

    /// Whether MQTT 5.0 allows this code in a packet of the given kind (tables in sections 3.2.2.2,
    /// 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1, 3.15.2.1).
    pub fn allowed_in(self, context: ReasonContext) -> bool {
        use ReasonCode::*;
        match context {
            ReasonContext::ConnAck => matches!(
                self,
                Success
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | UnsupportedProtocolVersion
                    | ClientIdentifierNotValid
                    | BadUserNameOrPassword
                    | NotAuthorized
                    | ServerUnavailable
                    | ServerBusy
                    | Banned
                    | BadAuthenticationMethod
                    | TopicNameInvalid
                    | PacketTooLarge
                    | QuotaExceeded
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QoSNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | ConnectionRateExceeded
            ),
            ReasonContext::PubAckOrRec => matches!(
                self,
                Success
                    | NoMatchingSubscribers
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicNameInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | PayloadFormatInvalid
            ),
            ReasonContext::PubRelOrComp => matches!(self, Success | PacketIdentifierNotFound),
            ReasonContext::SubAck => matches!(
                self,
                Success
                    | GrantedQoS1
                    | GrantedQoS2
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | SharedSubscriptionsNotSupported
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            ReasonContext::UnsubAck => matches!(
                self,
                Success
                    | NoSubscriptionExisted
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
            ),
            ReasonContext::Disconnect => matches!(
                self,
                Success
                    | DisconnectWithWillMessage
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | ServerBusy
                    | ServerShuttingDown
                    | KeepAliveTimeout
                    | SessionTakenOver
                    | TopicFilterInvalid
                    | TopicNameInvalid
                    | ReceiveMaximumExceeded
                    | TopicAliasInvalid
                    | PacketTooLarge
                    | MessageRateTooHigh
                    | QuotaExceeded
                    | AdministrativeAction
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QoSNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | SharedSubscriptionsNotSupported
                    | ConnectionRateExceeded
                    | MaximumConnectTime
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            ReasonContext::Auth => {
                matches!(self, Success | ContinueAuthentication | ReAuthenticate)
            }
        }
    }

    /// The MQTT 3.1/3.1.1 CONNACK return code that stands for this reason (section 3.2.2.3).
    /// Reasons with no 3.1.1 equivalent become 3, "server unavailable", the catch-all refusal.
    pub fn to_v3_connack(self) -> u8 {
        match self {
            ReasonCode::Success => 0,
            ReasonCode::UnsupportedProtocolVersion => 1,
            ReasonCode::ClientIdentifierNotValid => 2,
            ReasonCode::BadUserNameOrPassword => 4,
            ReasonCode::NotAuthorized | ReasonCode::Banned => 5,
            _ => 3,
        }
    }

    /// The reason a 3.1/3.1.1 CONNACK return code stands for; `None` for codes above 5.
    pub fn from_v3_connack(code: u8) -> Option<Self> {
        Some(match code {
            0 => ReasonCode::Success,
            1 => ReasonCode::UnsupportedProtocolVersion,
            2 => ReasonCode::ClientIdentifierNotValid,
            3 => ReasonCode::ServerUnavailable,
            4 => ReasonCode::BadUserNameOrPassword,
            5 => ReasonCode::NotAuthorized,
            _ => return None,
        })
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (0x{:02X})", self, self.as_u8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_defined_code_round_trips_and_undefined_ones_do_not_parse() {
        let mut defined = 0;
        for value in 0..=u8::MAX {
            if let Some(code) = ReasonCode::from_u8(value) {
                assert_eq!(code.as_u8(), value);
                defined += 1;
            }
        }
        assert_eq!(
            defined, 43,
            "MQTT 5.0 defines 43 distinct reason code values"
        );
        assert_eq!(ReasonCode::from_u8(0x03), None);
        assert_eq!(ReasonCode::from_u8(0xA3), None);
    }

    #[test]
    fn placement_follows_the_spec_tables() {
        assert!(ReasonCode::SessionTakenOver.allowed_in(ReasonContext::Disconnect));
        assert!(!ReasonCode::SessionTakenOver.allowed_in(ReasonContext::ConnAck));
        assert!(ReasonCode::PacketIdentifierNotFound.allowed_in(ReasonContext::PubRelOrComp));
        assert!(!ReasonCode::NoMatchingSubscribers.allowed_in(ReasonContext::PubRelOrComp));
        assert!(ReasonCode::GrantedQoS2.allowed_in(ReasonContext::SubAck));
        assert!(!ReasonCode::GrantedQoS2.allowed_in(ReasonContext::UnsubAck));
        assert!(ReasonCode::ReAuthenticate.allowed_in(ReasonContext::Auth));
        assert!(!ReasonCode::ServerShuttingDown.allowed_in(ReasonContext::ConnAck));
    }

    #[test]
    fn v3_connack_codes_map_both_ways() {
        for code in 0..=5u8 {
            let reason = ReasonCode::from_v3_connack(code).expect("defined code");
            assert_eq!(reason.to_v3_connack(), code);
        }
        assert_eq!(ReasonCode::from_v3_connack(6), None);
        assert_eq!(ReasonCode::QuotaExceeded.to_v3_connack(), 3);
    }
}
