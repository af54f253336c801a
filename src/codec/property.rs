//! MQTT 5 properties (section 2.2.2): a variable-byte-integer length, then identifier-value
//! pairs, each value typed by its identifier.
//!
//! This file owns what is common to every packet: identifiers, value types and value ranges,
//! duplicate detection, and the length prefix. Which properties a packet may carry (table 2-4 of
//! section 2.2.2.2) is decided by that packet's [`FromProperties`] impl, next to its decoder, so
//! each packet's list reads like its section of the spec.
//!
//! Invariants: a property list never reads past its length, and its length never past the frame
//! (both Malformed); an unknown identifier is Malformed; a repeated property is a Protocol Error
//! unless it is a User Property or a Subscription Identifier, the only two the spec lets repeat
//! (in SUBSCRIBE the Subscription Identifier may not, which `subscribe.rs` checks).

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;

use super::strings::{read_binary, read_string, read_topic_name, write_binary, write_str};
use super::varint;
use super::wire::{Counter, Sink, read_u8, read_u16, read_u32};
use super::{AckProperties, DecodeError, EncodeError, PayloadFormat, QoS, UserProperty};
use crate::topic::TopicName;

/// Property identifiers (MQTT 5.0 table 2-4).
pub(crate) mod id {
    pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub(crate) const CONTENT_TYPE: u8 = 0x03;
    pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
    pub(crate) const CORRELATION_DATA: u8 = 0x09;
    pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
    pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
    pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
    pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
    pub(crate) const REASON_STRING: u8 = 0x1F;
    pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
    pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub(crate) const TOPIC_ALIAS: u8 = 0x23;
    pub(crate) const MAXIMUM_QOS: u8 = 0x24;
    pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
    pub(crate) const USER_PROPERTY: u8 = 0x26;
    pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// One decoded property, its value already checked against its range.
#[derive(Debug)]
pub(crate) enum Property {
    PayloadFormat(PayloadFormat),
    MessageExpiryInterval(u32),
    ContentType(String),
    ResponseTopic(TopicName),
    CorrelationData(Bytes),
    SubscriptionIdentifier(NonZeroU32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(String),
    ServerKeepAlive(u16),
    AuthenticationMethod(String),
    AuthenticationData(Bytes),
    RequestProblemInformation(bool),
    WillDelayInterval(u32),
    RequestResponseInformation(bool),
    ResponseInformation(String),
    ServerReference(String),
    ReasonString(String),
    ReceiveMaximum(NonZeroU16),
    TopicAliasMaximum(u16),
    TopicAlias(NonZeroU16),
    MaximumQoS(QoS),
    RetainAvailable(bool),
    User(UserProperty),
    MaximumPacketSize(NonZeroU32),
    WildcardSubscriptionAvailable(bool),
    SubscriptionIdentifierAvailable(bool),
    SharedSubscriptionAvailable(bool),
}

impl Property {
    fn id(&self) -> u8 {
        match self {
            Property::PayloadFormat(_) => id::PAYLOAD_FORMAT_INDICATOR,
            Property::MessageExpiryInterval(_) => id::MESSAGE_EXPIRY_INTERVAL,
            Property::ContentType(_) => id::CONTENT_TYPE,
            Property::ResponseTopic(_) => id::RESPONSE_TOPIC,
            Property::CorrelationData(_) => id::CORRELATION_DATA,
            Property::SubscriptionIdentifier(_) => id::SUBSCRIPTION_IDENTIFIER,
            Property::SessionExpiryInterval(_) => id::SESSION_EXPIRY_INTERVAL,
            Property::AssignedClientIdentifier(_) => id::ASSIGNED_CLIENT_IDENTIFIER,
            Property::ServerKeepAlive(_) => id::SERVER_KEEP_ALIVE,
            Property::AuthenticationMethod(_) => id::AUTHENTICATION_METHOD,
            Property::AuthenticationData(_) => id::AUTHENTICATION_DATA,
            Property::RequestProblemInformation(_) => id::REQUEST_PROBLEM_INFORMATION,
            Property::WillDelayInterval(_) => id::WILL_DELAY_INTERVAL,
            Property::RequestResponseInformation(_) => id::REQUEST_RESPONSE_INFORMATION,
            Property::ResponseInformation(_) => id::RESPONSE_INFORMATION,
            Property::ServerReference(_) => id::SERVER_REFERENCE,
            Property::ReasonString(_) => id::REASON_STRING,
            Property::ReceiveMaximum(_) => id::RECEIVE_MAXIMUM,
            Property::TopicAliasMaximum(_) => id::TOPIC_ALIAS_MAXIMUM,
            Property::TopicAlias(_) => id::TOPIC_ALIAS,
            Property::MaximumQoS(_) => id::MAXIMUM_QOS,
            Property::RetainAvailable(_) => id::RETAIN_AVAILABLE,
            Property::User(_) => id::USER_PROPERTY,
            Property::MaximumPacketSize(_) => id::MAXIMUM_PACKET_SIZE,
            Property::WildcardSubscriptionAvailable(_) => id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            Property::SubscriptionIdentifierAvailable(_) => id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            Property::SharedSubscriptionAvailable(_) => id::SHARED_SUBSCRIPTION_AVAILABLE,
        }
    }
}

/// A packet's property set, filled one decoded property at a time.
pub(crate) trait FromProperties: Default {
    /// Stores `property`, or refuses it with [`not_allowed`] if this packet may not carry it.
    fn apply(&mut self, property: Property) -> Result<(), DecodeError>;
}

/// A packet's property set, written without its length (see [`write()`]).
pub(crate) trait WriteProperties {
    fn write_each<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError>;
}

/// The error for a property that table 2-4 does not list for the packet carrying it.
pub(crate) fn not_allowed() -> DecodeError {
    // Section 2.2.2.2: each property belongs to the packets table 2-4 lists it for.
    DecodeError::Protocol("property not allowed in this packet")
}

/// The error for a property included more than once.
pub(crate) fn duplicate() -> DecodeError {
    // Sections 3.1.2.11 to 3.15.2.2: "It is a Protocol Error to include [the property] more
    // than once", for every property but User Property and Subscription Identifier.
    DecodeError::Protocol("property included more than once")
}

/// Decodes a property list: its length, then every property in it, into `P`.
pub(crate) fn decode<P: FromProperties>(buf: &mut Bytes) -> Result<P, DecodeError> {
    let len = usize::try_from(varint::read(buf)?)
        .map_err(|_| DecodeError::Malformed("property length exceeds the packet"))?;
    if len > buf.len() {
        return Err(DecodeError::Malformed("property length exceeds the packet"));
    }
    let mut list = buf.split_to(len);
    let mut seen: u64 = 0;
    let mut properties = P::default();
    while !list.is_empty() {
        let property = read_one(&mut list)?;
        let id = property.id();
        if id != id::USER_PROPERTY && id != id::SUBSCRIPTION_IDENTIFIER {
            let bit = 1u64 << id;
            if seen & bit != 0 {
                return Err(duplicate());
            }
            seen |= bit;
        }
        properties.apply(property)?;
    }
    Ok(properties)
}

fn read_one(buf: &mut Bytes) -> Result<Property, DecodeError> {
    // Section 2.2.2.2: the identifier is a variable byte integer; every defined one fits a byte.
    let identifier = varint::read(buf)?;
    let Ok(identifier) = u8::try_from(identifier) else {
        return Err(unknown());
    };
    Ok(match identifier {
        id::PAYLOAD_FORMAT_INDICATOR => Property::PayloadFormat(match read_u8(buf)? {
            0 => PayloadFormat::Unspecified,
            1 => PayloadFormat::Utf8,
            // Section 3.3.2.3.2: the indicator is 0 or 1.
            _ => {
                return Err(DecodeError::Protocol(
                    "payload format indicator is not 0 or 1",
                ));
            }
        }),
        id::MESSAGE_EXPIRY_INTERVAL => Property::MessageExpiryInterval(read_u32(buf)?),
        id::CONTENT_TYPE => Property::ContentType(read_string(buf)?),
        // [MQTT-3.3.2-14] the Response Topic is a topic name: no wildcards, not empty.
        id::RESPONSE_TOPIC => Property::ResponseTopic(read_topic_name(buf, false)?),
        id::CORRELATION_DATA => Property::CorrelationData(read_binary(buf)?),
        id::SUBSCRIPTION_IDENTIFIER => {
            // Sections 3.3.2.3.8 and 3.8.2.1.2: 1 to 268,435,455; zero is a Protocol Error.
            // The upper bound is the variable byte integer's own.
            Property::SubscriptionIdentifier(
                NonZeroU32::new(varint::read(buf)?)
                    .ok_or(DecodeError::Protocol("subscription identifier is zero"))?,
            )
        }
        id::SESSION_EXPIRY_INTERVAL => Property::SessionExpiryInterval(read_u32(buf)?),
        id::ASSIGNED_CLIENT_IDENTIFIER => Property::AssignedClientIdentifier(read_string(buf)?),
        id::SERVER_KEEP_ALIVE => Property::ServerKeepAlive(read_u16(buf)?),
        id::AUTHENTICATION_METHOD => Property::AuthenticationMethod(read_string(buf)?),
        id::AUTHENTICATION_DATA => Property::AuthenticationData(read_binary(buf)?),
        // Section 3.1.2.11.7: 0 or 1.
        id::REQUEST_PROBLEM_INFORMATION => Property::RequestProblemInformation(read_bool(buf)?),
        id::WILL_DELAY_INTERVAL => Property::WillDelayInterval(read_u32(buf)?),
        // Section 3.1.2.11.6: 0 or 1.
        id::REQUEST_RESPONSE_INFORMATION => Property::RequestResponseInformation(read_bool(buf)?),
        id::RESPONSE_INFORMATION => Property::ResponseInformation(read_string(buf)?),
        id::SERVER_REFERENCE => Property::ServerReference(read_string(buf)?),
        id::REASON_STRING => Property::ReasonString(read_string(buf)?),
        // Sections 3.1.2.11.3 and 3.2.2.3.3: a Receive Maximum of 0 is a Protocol Error.
        id::RECEIVE_MAXIMUM => Property::ReceiveMaximum(
            NonZeroU16::new(read_u16(buf)?)
                .ok_or(DecodeError::Protocol("receive maximum is zero"))?,
        ),
        id::TOPIC_ALIAS_MAXIMUM => Property::TopicAliasMaximum(read_u16(buf)?),
        // [MQTT-3.3.2-8] a Topic Alias of 0 is not permitted.
        id::TOPIC_ALIAS => Property::TopicAlias(
            NonZeroU16::new(read_u16(buf)?).ok_or(DecodeError::TopicAliasZero)?,
        ),
        id::MAXIMUM_QOS => Property::MaximumQoS(match read_u8(buf)? {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            // Section 3.2.2.3.4: a Maximum QoS other than 0 or 1 is a Protocol Error.
            _ => return Err(DecodeError::Protocol("maximum QoS is not 0 or 1")),
        }),
        // Section 3.2.2.3.5: 0 or 1.
        id::RETAIN_AVAILABLE => Property::RetainAvailable(read_bool(buf)?),
        id::USER_PROPERTY => Property::User(UserProperty {
            key: read_string(buf)?,
            value: read_string(buf)?,
        }),
        // Sections 3.1.2.11.4 and 3.2.2.3.6: a Maximum Packet Size of 0 is a Protocol Error.
        id::MAXIMUM_PACKET_SIZE => Property::MaximumPacketSize(
            NonZeroU32::new(read_u32(buf)?)
                .ok_or(DecodeError::Protocol("maximum packet size is zero"))?,
        ),
        // Sections 3.2.2.3.11 to 3.2.2.3.13: 0 or 1.
        id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
            Property::WildcardSubscriptionAvailable(read_bool(buf)?)
        }
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
            Property::SubscriptionIdentifierAvailable(read_bool(buf)?)
        }
        id::SHARED_SUBSCRIPTION_AVAILABLE => Property::SharedSubscriptionAvailable(read_bool(buf)?),
        _ => return Err(unknown()),
    })
}

fn unknown() -> DecodeError {
    DecodeError::Malformed("unknown property identifier")
}

/// Reads a byte-valued flag, which must be 0 or 1.
fn read_bool(buf: &mut Bytes) -> Result<bool, DecodeError> {
    match read_u8(buf)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Protocol("boolean property is not 0 or 1")),
    }
}

/// Writes a property list: its length, measured by a first pass, then the properties.
pub(crate) fn write<S: Sink, P: WriteProperties>(
    s: &mut S,
    properties: &P,
) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    properties.write_each(&mut counter)?;
    let len = varint::checked(counter.len()).ok_or(EncodeError::VarIntTooLarge {
        field: "property length",
        value: u64::try_from(counter.len()).unwrap_or(u64::MAX),
    })?;
    varint::write(s, len);
    properties.write_each(s)
}

pub(crate) fn write_u8<S: Sink>(s: &mut S, id: u8, value: Option<u8>) {
    if let Some(value) = value {
        s.write_u8(id);
        s.write_u8(value);
    }
}

pub(crate) fn write_bool<S: Sink>(s: &mut S, id: u8, value: Option<bool>) {
    write_u8(s, id, value.map(u8::from));
}

pub(crate) fn write_u16<S: Sink>(s: &mut S, id: u8, value: Option<u16>) {
    if let Some(value) = value {
        s.write_u8(id);
        s.write_u16(value);
    }
}

pub(crate) fn write_u32<S: Sink>(s: &mut S, id: u8, value: Option<u32>) {
    if let Some(value) = value {
        s.write_u8(id);
        s.write_u32(value);
    }
}

pub(crate) fn write_string<S: Sink>(
    s: &mut S,
    id: u8,
    field: &'static str,
    value: Option<&str>,
) -> Result<(), EncodeError> {
    if let Some(value) = value {
        s.write_u8(id);
        write_str(s, field, value)?;
    }
    Ok(())
}

pub(crate) fn write_bytes<S: Sink>(
    s: &mut S,
    id: u8,
    field: &'static str,
    value: Option<&[u8]>,
) -> Result<(), EncodeError> {
    if let Some(value) = value {
        s.write_u8(id);
        write_binary(s, field, value)?;
    }
    Ok(())
}

/// Writes a Response Topic, which the decoder requires to be a non-empty topic name.
pub(crate) fn write_response_topic<S: Sink>(
    s: &mut S,
    topic: Option<&TopicName>,
) -> Result<(), EncodeError> {
    if topic.is_some_and(TopicName::is_empty) {
        // [MQTT-4.7.3-1] topic names are at least one character long.
        return Err(EncodeError::NotAllowed("an empty Response Topic"));
    }
    write_string(
        s,
        id::RESPONSE_TOPIC,
        "Response Topic",
        topic.map(TopicName::as_str),
    )
}

/// Writes Subscription Identifiers, refusing values beyond the variable byte integer's range.
pub(crate) fn write_subscription_ids<S: Sink>(
    s: &mut S,
    ids: &[NonZeroU32],
) -> Result<(), EncodeError> {
    for &sub_id in ids {
        let value = sub_id.get();
        if value > varint::MAX {
            return Err(EncodeError::VarIntTooLarge {
                field: "Subscription Identifier",
                value: u64::from(value),
            });
        }
        s.write_u8(id::SUBSCRIPTION_IDENTIFIER);
        varint::write(s, value);
    }
    Ok(())
}

pub(crate) fn write_user_properties<S: Sink>(
    s: &mut S,
    properties: &[UserProperty],
) -> Result<(), EncodeError> {
    for property in properties {
        s.write_u8(id::USER_PROPERTY);
        write_str(s, "User Property name", &property.key)?;
        write_str(s, "User Property value", &property.value)?;
    }
    Ok(())
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK share one property set.
impl FromProperties for AckProperties {
    fn apply(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::ReasonString(value) => self.reason_string = Some(value),
            Property::User(value) => self.user_properties.push(value),
            _ => return Err(not_allowed()),
        }
        Ok(())
    }
}

impl WriteProperties for AckProperties {
    fn write_each<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        write_string(
            s,
            id::REASON_STRING,
            "Reason String",
            self.reason_string.as_deref(),
        )?;
        write_user_properties(s, &self.user_properties)
    }
}

impl AckProperties {
    /// True when there is nothing to write, so the short forms of the acknowledgements apply.
    pub(crate) fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }
}

/// The wire value of a Payload Format Indicator.
pub(crate) fn payload_format_byte(format: PayloadFormat) -> u8 {
    match format {
        PayloadFormat::Unspecified => 0,
        PayloadFormat::Utf8 => 1,
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::codec::ReasonCode;
    use crate::codec::wire::TRUNCATED;

    fn decode_ack(list: &[u8]) -> Result<AckProperties, DecodeError> {
        let mut buf = Bytes::copy_from_slice(list);
        let properties = decode(&mut buf)?;
        assert!(buf.is_empty(), "the list is consumed");
        Ok(properties)
    }

    fn one(bytes: &[u8]) -> Result<Property, DecodeError> {
        read_one(&mut Bytes::copy_from_slice(bytes))
    }

    #[test]
    fn an_empty_list_is_one_zero_byte() {
        assert_eq!(decode_ack(&[0x00]), Ok(AckProperties::default()));
        let mut out = BytesMut::new();
        write(&mut out, &AckProperties::default()).expect("encodable");
        assert_eq!(&out[..], &[0x00]);
    }

    #[test]
    fn a_long_list_takes_a_two_byte_length_both_ways() {
        let properties = AckProperties {
            reason_string: Some("r".repeat(200)),
            user_properties: Vec::new(),
        };
        let mut out = BytesMut::new();
        write(&mut out, &properties).expect("encodable");
        assert_eq!(&out[..5], &[0xCB, 0x01, id::REASON_STRING, 0x00, 0xC8]);
        assert_eq!(decode_ack(&out), Ok(properties));
    }

    #[test]
    fn unknown_identifiers_are_malformed() {
        let unknown = DecodeError::Malformed("unknown property identifier");
        for list in [
            &[0x02, 0x00, 0x00][..],
            &[0x02, 0x04, 0x00],
            &[0x02, 0x2B, 0x00],
            &[0x02, 0x7F, 0x00],
            &[0x03, 0x80, 0x01, 0x00], // identifier 128
        ] {
            let err = decode_ack(list).expect_err("unknown identifier");
            assert_eq!(err, unknown, "{list:02X?}");
            assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
        }
        // [MQTT-1.5.5-1] the identifier is a variable byte integer, minimally encoded.
        assert_eq!(
            decode_ack(&[0x03, 0x9F, 0x00, 0x00]),
            Err(DecodeError::Malformed(
                "variable byte integer is not minimally encoded"
            ))
        );
    }

    #[test]
    fn lengths_past_their_bounds_are_malformed() {
        assert_eq!(
            decode_ack(&[0x05, 0x1F, 0x00]),
            Err(DecodeError::Malformed("property length exceeds the packet"))
        );
        // The value runs past the list even though the buffer goes on.
        let mut buf = Bytes::from_static(&[0x02, 0x1F, 0x00, 0x01, b'r']);
        assert_eq!(decode::<AckProperties>(&mut buf), Err(TRUNCATED));
        assert_eq!(decode_ack(&[]), Err(TRUNCATED));
    }

    #[test]
    fn only_user_properties_and_subscription_identifiers_repeat() {
        let twice = [0x06, 0x1F, 0x00, 0x00, 0x1F, 0x00, 0x00];
        let err = decode_ack(&twice).expect_err("duplicate");
        assert_eq!(
            err,
            DecodeError::Protocol("property included more than once")
        );
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
        let users = [
            0x0B, 0x26, 0x00, 0x01, b'a', 0x00, 0x00, 0x26, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(
            decode_ack(&users).map(|p| p.user_properties),
            Ok(vec![
                UserProperty {
                    key: "a".into(),
                    value: String::new(),
                },
                UserProperty {
                    key: String::new(),
                    value: String::new(),
                },
            ])
        );
    }

    #[test]
    fn a_property_of_another_packet_is_a_protocol_error() {
        assert_eq!(
            decode_ack(&[0x02, 0x24, 0x01]),
            Err(DecodeError::Protocol("property not allowed in this packet"))
        );
    }

    #[test]
    fn byte_valued_booleans_are_0_or_1() {
        for identifier in [
            id::REQUEST_PROBLEM_INFORMATION,
            id::REQUEST_RESPONSE_INFORMATION,
            id::RETAIN_AVAILABLE,
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            id::SHARED_SUBSCRIPTION_AVAILABLE,
        ] {
            assert!(one(&[identifier, 0x00]).is_ok());
            assert!(one(&[identifier, 0x01]).is_ok());
            assert_eq!(
                one(&[identifier, 0x02]).map(|_| ()),
                Err(DecodeError::Protocol("boolean property is not 0 or 1")),
                "{identifier:02X}"
            );
        }
        assert_eq!(
            one(&[id::PAYLOAD_FORMAT_INDICATOR, 0x02]).map(|_| ()),
            Err(DecodeError::Protocol(
                "payload format indicator is not 0 or 1"
            ))
        );
        assert_eq!(
            one(&[id::MAXIMUM_QOS, 0x02]).map(|_| ()),
            Err(DecodeError::Protocol("maximum QoS is not 0 or 1"))
        );
    }

    #[test]
    fn zero_values_that_mean_nothing_are_protocol_errors() {
        for (bytes, message) in [
            (
                &[id::RECEIVE_MAXIMUM, 0x00, 0x00][..],
                "receive maximum is zero",
            ),
            (
                &[id::MAXIMUM_PACKET_SIZE, 0, 0, 0, 0],
                "maximum packet size is zero",
            ),
            (
                &[id::SUBSCRIPTION_IDENTIFIER, 0x00],
                "subscription identifier is zero",
            ),
        ] {
            assert_eq!(one(bytes).map(|_| ()), Err(DecodeError::Protocol(message)));
        }
        assert_eq!(
            one(&[id::TOPIC_ALIAS, 0x00, 0x00]).map(|_| ()),
            Err(DecodeError::TopicAliasZero)
        );
        // The largest Subscription Identifier is the largest variable byte integer.
        assert!(matches!(
            one(&[id::SUBSCRIPTION_IDENTIFIER, 0xFF, 0xFF, 0xFF, 0x7F]),
            Ok(Property::SubscriptionIdentifier(v)) if v.get() == varint::MAX
        ));
    }

    #[test]
    fn an_empty_response_topic_is_not_written() {
        let mut out = BytesMut::new();
        let empty = TopicName::empty();
        assert_eq!(
            write_response_topic(&mut out, Some(&empty)),
            Err(EncodeError::NotAllowed("an empty Response Topic"))
        );
    }
}
