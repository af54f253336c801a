//! CONNECT (MQTT 5.0 section 3.1, 3.1.1 section 3.1, and 3.1's `MQIsdp` CONNECT).
//!
//! The first packet of a connection, so it is decoded in the layout its own protocol name and
//! level announce, whatever the connection's context says; the decoded version then governs every
//! later packet. 3.1 and 3.1.1 share a layout; 5.0 adds properties after the keep alive and Will
//! properties before the Will topic.
//!
//! Client identifier policy (empty identifiers, the 23-character limit of 3.1) is the session's:
//! it answers with a CONNACK, not a disconnect, so only the string rules are checked here.

use bytes::Bytes;

use crate::codec::property::{self, FromProperties, Property, WriteProperties, id};
use crate::codec::strings::{read_binary, read_string, read_topic_name, write_binary, write_str};
use crate::codec::wire::{Sink, finish, read_u8, read_u16};
use crate::codec::{
    Connect, ConnectProperties, DecodeError, EncodeError, ProtocolVersion, QoS, Will,
    WillProperties,
};

const MQTT: &[u8] = b"MQTT";
const MQISDP: &[u8] = b"MQIsdp";

/// Connect Flags bits (section 3.1.2.3).
mod flag {
    pub(super) const RESERVED: u8 = 0x01;
    pub(super) const CLEAN_START: u8 = 0x02;
    pub(super) const WILL: u8 = 0x04;
    pub(super) const WILL_QOS_SHIFT: u8 = 3;
    pub(super) const WILL_RETAIN: u8 = 0x20;
    pub(super) const PASSWORD: u8 = 0x40;
    pub(super) const USERNAME: u8 = 0x80;
}

pub(super) fn decode(mut body: Bytes) -> Result<Connect, DecodeError> {
    let protocol = read_protocol(&mut body)?;
    let v5 = protocol.is_v5();
    let flags = read_u8(&mut body)?;
    // [MQTT-3.1.2-3] the reserved flag is 0. 3.1 does not define it, and mosquitto does not
    // check it there.
    if flags & flag::RESERVED != 0 && protocol != ProtocolVersion::V31 {
        return Err(DecodeError::Malformed("reserved CONNECT flag is set"));
    }
    let has_will = flags & flag::WILL != 0;
    let will_qos_bits = (flags >> flag::WILL_QOS_SHIFT) & 0b11;
    let will_retain = flags & flag::WILL_RETAIN != 0;
    let has_username = flags & flag::USERNAME != 0;
    let has_password = flags & flag::PASSWORD != 0;
    // [MQTT-3.1.2-12] (3.1.1: [MQTT-3.1.2-14]) Will QoS 3 is malformed.
    let will_qos = QoS::from_u8(will_qos_bits).ok_or(DecodeError::Malformed("Will QoS 3"))?;
    if !has_will {
        // [MQTT-3.1.2-11] (3.1.1: [MQTT-3.1.2-13]) no Will, so Will QoS is 0.
        if will_qos != QoS::AtMostOnce {
            return Err(DecodeError::Malformed("Will QoS set without a Will"));
        }
        // [MQTT-3.1.2-13] (3.1.1: [MQTT-3.1.2-15]) no Will, so Will Retain is 0.
        if will_retain {
            return Err(DecodeError::Malformed("Will Retain set without a Will"));
        }
    }
    // [MQTT-3.1.2-22] before 5.0 a password needs a user name; 5.0 allows it alone
    // (section 3.1.2.9).
    if has_password && !has_username && !v5 {
        return Err(DecodeError::Malformed("password without a user name"));
    }
    let keep_alive = read_u16(&mut body)?;
    let properties = if v5 {
        property::decode(&mut body)?
    } else {
        ConnectProperties::default()
    };
    // [MQTT-3.1.3-3] the Client Identifier comes first in the payload, [MQTT-3.1.3-4] as a
    // UTF-8 string.
    let client_id = read_string(&mut body)?;
    let will = if has_will {
        let properties = if v5 {
            property::decode(&mut body)?
        } else {
            WillProperties::default()
        };
        Some(Will {
            properties,
            // [MQTT-3.1.3-11] (3.1.1: [MQTT-3.1.3-10]) the Will Topic is a UTF-8 string; as a
            // topic name it is not empty and has no wildcards.
            topic: read_topic_name(&mut body, false)?,
            payload: read_binary(&mut body)?,
            qos: will_qos,
            retain: will_retain,
        })
    } else {
        None
    };
    // [MQTT-3.1.3-12] (3.1.1: [MQTT-3.1.3-11]) the User Name is a UTF-8 string.
    let username = has_username.then(|| read_string(&mut body)).transpose()?;
    // Section 3.1.3.6 (3.1.1 section 3.1.3.5): the Password is binary data.
    let password = has_password.then(|| read_binary(&mut body)).transpose()?;
    finish(&body)?;
    Ok(Connect {
        protocol,
        clean_start: flags & flag::CLEAN_START != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// Reads the protocol name and level. The name is compared as bytes: one that is not UTF-8 is
/// simply not a name this broker knows.
fn read_protocol(body: &mut Bytes) -> Result<ProtocolVersion, DecodeError> {
    let name = read_binary(body)?;
    let level = read_u8(body)?;
    match (&name[..], level) {
        (MQTT, 4) => Ok(ProtocolVersion::V311),
        (MQTT, 5) => Ok(ProtocolVersion::V5),
        (MQISDP, 3) => Ok(ProtocolVersion::V31),
        // [MQTT-3.1.2-2] a known name at a level this broker does not speak: the session
        // answers with "unsupported protocol version".
        (MQTT | MQISDP, level) => Err(DecodeError::UnsupportedProtocolVersion(level)),
        // [MQTT-3.1.2-1] any other name: the connection is closed.
        _ => Err(DecodeError::UnknownProtocolName),
    }
}

pub(super) fn write<S: Sink>(connect: &Connect, s: &mut S) -> Result<(), EncodeError> {
    let v5 = connect.protocol.is_v5();
    let (name, level) = match connect.protocol {
        ProtocolVersion::V31 => (MQISDP, 3),
        ProtocolVersion::V311 => (MQTT, 4),
        ProtocolVersion::V5 => (MQTT, 5),
    };
    if connect.password.is_some() && connect.username.is_none() && !v5 {
        // [MQTT-3.1.2-22]
        return Err(EncodeError::NotAllowed(
            "a password without a user name before MQTT 5",
        ));
    }
    let mut flags = 0;
    if connect.clean_start {
        flags |= flag::CLEAN_START;
    }
    if let Some(will) = &connect.will {
        if will.topic.is_empty() {
            // [MQTT-4.7.3-1] the Will Topic is a topic name, at least one character long.
            return Err(EncodeError::NotAllowed("an empty Will Topic"));
        }
        flags |= flag::WILL | will.qos.as_u8() << flag::WILL_QOS_SHIFT;
        if will.retain {
            flags |= flag::WILL_RETAIN;
        }
    }
    if connect.username.is_some() {
        flags |= flag::USERNAME;
    }
    if connect.password.is_some() {
        flags |= flag::PASSWORD;
    }
    write_binary(s, "protocol name", name)?;
    s.write_u8(level);
    s.write_u8(flags);
    s.write_u16(connect.keep_alive);
    if v5 {
        property::write(s, &connect.properties)?;
    }
    write_str(s, "Client Identifier", &connect.client_id)?;
    if let Some(will) = &connect.will {
        if v5 {
            property::write(s, &will.properties)?;
        }
        write_str(s, "Will Topic", will.topic.as_str())?;
        write_binary(s, "Will Payload", &will.payload)?;
    }
    if let Some(username) = &connect.username {
        write_str(s, "User Name", username)?;
    }
    if let Some(password) = &connect.password {
        write_binary(s, "Password", password)?;
    }
    Ok(())
}

/// Section 3.1.2.11.
impl FromProperties for ConnectProperties {
    fn apply(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::SessionExpiryInterval(v) => self.session_expiry_interval = Some(v),
            Property::ReceiveMaximum(v) => self.receive_maximum = Some(v),
            Property::MaximumPacketSize(v) => self.maximum_packet_size = Some(v),
            Property::TopicAliasMaximum(v) => self.topic_alias_maximum = Some(v),
            Property::RequestResponseInformation(v) => {
                self.request_response_information = Some(v);
            }
            Property::RequestProblemInformation(v) => self.request_problem_information = Some(v),
            Property::User(v) => self.user_properties.push(v),
            Property::AuthenticationMethod(v) => self.authentication_method = Some(v),
            Property::AuthenticationData(v) => self.authentication_data = Some(v),
            _ => return Err(property::not_allowed()),
        }
        Ok(())
    }
}

impl WriteProperties for ConnectProperties {
    fn write_each<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        property::write_u32(s, id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        property::write_u16(
            s,
            id::RECEIVE_MAXIMUM,
            self.receive_maximum.map(|v| v.get()),
        );
        property::write_u32(
            s,
            id::MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(|v| v.get()),
        );
        property::write_u16(s, id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        property::write_bool(
            s,
            id::REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        property::write_bool(
            s,
            id::REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        property::write_user_properties(s, &self.user_properties)?;
        property::write_string(
            s,
            id::AUTHENTICATION_METHOD,
            "Authentication Method",
            self.authentication_method.as_deref(),
        )?;
        property::write_bytes(
            s,
            id::AUTHENTICATION_DATA,
            "Authentication Data",
            self.authentication_data.as_deref(),
        )
    }
}

/// Section 3.1.3.2.
impl FromProperties for WillProperties {
    fn apply(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::WillDelayInterval(v) => self.will_delay_interval = Some(v),
            Property::PayloadFormat(v) => self.payload_format = Some(v),
            Property::MessageExpiryInterval(v) => self.message_expiry_interval = Some(v),
            Property::ContentType(v) => self.content_type = Some(v),
            Property::ResponseTopic(v) => self.response_topic = Some(v),
            Property::CorrelationData(v) => self.correlation_data = Some(v),
            Property::User(v) => self.user_properties.push(v),
            _ => return Err(property::not_allowed()),
        }
        Ok(())
    }
}

impl WriteProperties for WillProperties {
    fn write_each<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        property::write_u32(s, id::WILL_DELAY_INTERVAL, self.will_delay_interval);
        property::write_u8(
            s,
            id::PAYLOAD_FORMAT_INDICATOR,
            self.payload_format.map(property::payload_format_byte),
        );
        property::write_u32(s, id::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        property::write_string(
            s,
            id::CONTENT_TYPE,
            "Content Type",
            self.content_type.as_deref(),
        )?;
        property::write_response_topic(s, self.response_topic.as_ref())?;
        property::write_bytes(
            s,
            id::CORRELATION_DATA,
            "Correlation Data",
            self.correlation_data.as_deref(),
        )?;
        property::write_user_properties(s, &self.user_properties)
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU16, NonZeroU32};

    use super::*;
    use crate::codec::packet::testing::{
        assert_decodes, assert_wire, cat, decode_err, encode_err, frame,
    };
    use crate::codec::{Packet, PayloadFormat, ReasonCode, UserProperty};
    use crate::topic::{TopicError, TopicName};

    fn topic(name: &str) -> TopicName {
        TopicName::new(name).expect("valid topic")
    }

    fn user(key: &str, value: &str) -> UserProperty {
        UserProperty {
            key: key.into(),
            value: value.into(),
        }
    }

    fn minimal(protocol: ProtocolVersion, client_id: &str) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }

    fn packet(connect: Connect) -> Packet {
        Packet::Connect(Box::new(connect))
    }

    /// A 3.1.1 CONNECT body with the given flags and payload after the keep alive.
    fn v311_body(flags: u8, payload: &[u8]) -> Vec<u8> {
        cat(&[b"\x00\x04MQTT\x04", &[flags], b"\x00\x3C", payload])
    }

    #[test]
    fn v311_minimal_both_ways() {
        let bytes = frame(0x10, &v311_body(0x02, b"\x00\x03cid"));
        assert_eq!(
            bytes,
            b"\x10\x0F\x00\x04MQTT\x04\x02\x00\x3C\x00\x03cid".to_vec()
        );
        for version in ALL_CONTEXTS {
            assert_wire(
                version,
                &bytes,
                &packet(minimal(ProtocolVersion::V311, "cid")),
            );
        }
    }

    /// CONNECT is decoded in its own version's layout whatever the context says.
    const ALL_CONTEXTS: [ProtocolVersion; 3] = crate::codec::packet::testing::ALL_VERSIONS;

    #[test]
    fn v31_mqisdp_both_ways() {
        let bytes = frame(
            0x10,
            &cat(&[b"\x00\x06MQIsdp\x03\x02\x00\x3C", b"\x00\x03cid"]),
        );
        assert_wire(
            ProtocolVersion::V311,
            &bytes,
            &packet(minimal(ProtocolVersion::V31, "cid")),
        );
    }

    #[test]
    fn v311_will_user_name_and_password_both_ways() {
        // Flags: user name, password, Will Retain, Will QoS 2, Will, Clean Session clear.
        let bytes = frame(
            0x10,
            &v311_body(
                0xF4,
                b"\x00\x01c\x00\x03w/t\x00\x03\x00\xFF\x01\x00\x01u\x00\x02\xC3\x28",
            ),
        );
        let mut connect = minimal(ProtocolVersion::V311, "c");
        connect.clean_start = false;
        connect.will = Some(Will {
            topic: topic("w/t"),
            payload: Bytes::from_static(b"\x00\xFF\x01"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: WillProperties::default(),
        });
        connect.username = Some("u".into());
        // The password is binary: not UTF-8 is fine.
        connect.password = Some(Bytes::from_static(b"\xC3\x28"));
        assert_wire(ProtocolVersion::V311, &bytes, &packet(connect));
    }

    fn full_v5() -> Connect {
        Connect {
            protocol: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 60,
            client_id: "cid".into(),
            will: Some(Will {
                topic: topic("w/t"),
                payload: Bytes::from_static(b"hi"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: WillProperties {
                    will_delay_interval: Some(5),
                    payload_format: Some(PayloadFormat::Utf8),
                    message_expiry_interval: Some(60),
                    content_type: Some("text".into()),
                    response_topic: Some(topic("r/es")),
                    correlation_data: Some(Bytes::from_static(b"\x0A\x0B")),
                    user_properties: vec![user("a", "b")],
                },
            }),
            username: Some("u".into()),
            password: Some(Bytes::from_static(b"pw")),
            properties: ConnectProperties {
                session_expiry_interval: Some(120),
                receive_maximum: NonZeroU16::new(10),
                maximum_packet_size: NonZeroU32::new(4096),
                topic_alias_maximum: Some(5),
                request_response_information: Some(true),
                request_problem_information: Some(false),
                user_properties: vec![user("k", "v")],
                authentication_method: Some("md".into()),
                authentication_data: Some(Bytes::from_static(b"\x01\x02")),
            },
        }
    }

    const FULL_V5_PROPERTIES: &[u8] = &[
        0x25, // property length 37
        0x11, 0x00, 0x00, 0x00, 0x78, // Session Expiry Interval 120
        0x21, 0x00, 0x0A, // Receive Maximum 10
        0x27, 0x00, 0x00, 0x10, 0x00, // Maximum Packet Size 4096
        0x22, 0x00, 0x05, // Topic Alias Maximum 5
        0x19, 0x01, // Request Response Information 1
        0x17, 0x00, // Request Problem Information 0
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // User Property k=v
        0x15, 0x00, 0x02, b'm', b'd', // Authentication Method "md"
        0x16, 0x00, 0x02, 0x01, 0x02, // Authentication Data 01 02
    ];

    const FULL_V5_WILL_PROPERTIES: &[u8] = &[
        0x26, // property length 38
        0x18, 0x00, 0x00, 0x00, 0x05, // Will Delay Interval 5
        0x01, 0x01, // Payload Format Indicator UTF-8
        0x02, 0x00, 0x00, 0x00, 0x3C, // Message Expiry Interval 60
        0x03, 0x00, 0x04, b't', b'e', b'x', b't', // Content Type "text"
        0x08, 0x00, 0x04, b'r', b'/', b'e', b's', // Response Topic "r/es"
        0x09, 0x00, 0x02, 0x0A, 0x0B, // Correlation Data
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b', // User Property a=b
    ];

    fn full_v5_bytes() -> Vec<u8> {
        frame(
            0x10,
            &cat(&[
                b"\x00\x04MQTT\x05",
                &[0xEE], // user name, password, Will Retain, Will QoS 1, Will, Clean Start
                b"\x00\x3C",
                FULL_V5_PROPERTIES,
                b"\x00\x03cid",
                FULL_V5_WILL_PROPERTIES,
                b"\x00\x03w/t\x00\x02hi\x00\x01u\x00\x02pw",
            ]),
        )
    }

    #[test]
    fn v5_with_every_property_both_ways() {
        for version in ALL_CONTEXTS {
            assert_wire(version, &full_v5_bytes(), &packet(full_v5()));
        }
    }

    #[test]
    fn v5_minimal_has_an_empty_property_list() {
        let bytes = frame(0x10, b"\x00\x04MQTT\x05\x02\x00\x3C\x00\x00\x03cid");
        assert_wire(
            ProtocolVersion::V311,
            &bytes,
            &packet(minimal(ProtocolVersion::V5, "cid")),
        );
    }

    #[test]
    fn v5_allows_a_password_without_a_user_name() {
        let bytes = frame(0x10, b"\x00\x04MQTT\x05\x42\x00\x3C\x00\x00\x00\x00\x02pw");
        let mut connect = minimal(ProtocolVersion::V5, "");
        connect.password = Some(Bytes::from_static(b"pw"));
        assert_wire(ProtocolVersion::V5, &bytes, &packet(connect));
    }

    #[test]
    fn v3_refuses_a_password_without_a_user_name() {
        // [MQTT-3.1.2-22]
        let bytes = frame(0x10, &v311_body(0x42, b"\x00\x00\x00\x02pw"));
        let err = decode_err(ProtocolVersion::V311, &bytes);
        assert_eq!(err, DecodeError::Malformed("password without a user name"));
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
        let mut connect = minimal(ProtocolVersion::V311, "");
        connect.password = Some(Bytes::from_static(b"pw"));
        assert!(matches!(
            encode_err(ProtocolVersion::V311, &packet(connect)),
            EncodeError::NotAllowed(_)
        ));
    }

    #[test]
    fn unknown_protocol_names_are_refused() {
        for name in [
            &b"\x00\x04MQTX\x04"[..],
            b"\x00\x04MQT\xFF\x04",
            b"\x00\x00\x04",
        ] {
            let bytes = frame(0x10, &cat(&[name, b"\x02\x00\x3C\x00\x00"]));
            let err = decode_err(ProtocolVersion::V311, &bytes);
            assert_eq!(err, DecodeError::UnknownProtocolName);
            assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
        }
    }

    #[test]
    fn known_names_at_other_levels_are_unsupported_versions() {
        for (name, level) in [
            (&b"\x00\x04MQTT"[..], 3),
            (b"\x00\x04MQTT", 6),
            (b"\x00\x06MQIsdp", 4),
            (b"\x00\x06MQIsdp", 5),
        ] {
            let bytes = frame(0x10, &cat(&[name, &[level], b"\x02\x00\x3C\x00\x00"]));
            let err = decode_err(ProtocolVersion::V311, &bytes);
            assert_eq!(err, DecodeError::UnsupportedProtocolVersion(level));
            assert_eq!(err.reason_code(), ReasonCode::UnsupportedProtocolVersion);
        }
    }

    #[test]
    fn the_reserved_flag_must_be_zero_except_in_v31() {
        // [MQTT-3.1.2-3]
        let err = decode_err(
            ProtocolVersion::V311,
            &frame(0x10, &v311_body(0x03, b"\x00\x00")),
        );
        assert_eq!(err, DecodeError::Malformed("reserved CONNECT flag is set"));
        let v5 = frame(0x10, b"\x00\x04MQTT\x05\x03\x00\x3C\x00\x00\x00");
        assert_eq!(
            decode_err(ProtocolVersion::V5, &v5),
            DecodeError::Malformed("reserved CONNECT flag is set")
        );
        let v31 = frame(0x10, b"\x00\x06MQIsdp\x03\x03\x00\x3C\x00\x01c");
        assert_decodes(
            ProtocolVersion::V311,
            &v31,
            &packet(minimal(ProtocolVersion::V31, "c")),
        );
    }

    #[test]
    fn will_qos_3_is_malformed() {
        // [MQTT-3.1.2-12]
        let bytes = frame(0x10, &v311_body(0x1E, b"\x00\x00\x00\x01w\x00\x00"));
        assert_eq!(
            decode_err(ProtocolVersion::V311, &bytes),
            DecodeError::Malformed("Will QoS 3")
        );
    }

    #[test]
    fn will_qos_without_a_will_is_malformed() {
        // [MQTT-3.1.2-11]
        let bytes = frame(0x10, &v311_body(0x0A, b"\x00\x00"));
        let err = decode_err(ProtocolVersion::V311, &bytes);
        assert_eq!(err, DecodeError::Malformed("Will QoS set without a Will"));
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    }

    #[test]
    fn will_retain_without_a_will_is_malformed() {
        // [MQTT-3.1.2-13]
        let bytes = frame(0x10, &v311_body(0x22, b"\x00\x00"));
        assert_eq!(
            decode_err(ProtocolVersion::V311, &bytes),
            DecodeError::Malformed("Will Retain set without a Will")
        );
    }

    #[test]
    fn the_will_topic_is_a_non_empty_topic_name() {
        let empty = frame(0x10, &v311_body(0x06, b"\x00\x00\x00\x00\x00\x00"));
        let err = decode_err(ProtocolVersion::V311, &empty);
        assert_eq!(err, DecodeError::TopicName(TopicError::Empty));
        assert_eq!(err.reason_code(), ReasonCode::TopicNameInvalid);
        let wildcard = frame(0x10, &v311_body(0x06, b"\x00\x00\x00\x01#\x00\x00"));
        assert_eq!(
            decode_err(ProtocolVersion::V311, &wildcard),
            DecodeError::TopicName(TopicError::WildcardInName)
        );
        let mut connect = minimal(ProtocolVersion::V311, "c");
        connect.will = Some(Will {
            topic: TopicName::empty(),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties::default(),
        });
        assert_eq!(
            encode_err(ProtocolVersion::V311, &packet(connect)),
            EncodeError::NotAllowed("an empty Will Topic")
        );
    }

    #[test]
    fn client_identifier_string_rules() {
        // [MQTT-1.5.4-2] U+0000, [MQTT-1.5.4-1] ill-formed UTF-8 and a surrogate.
        for (id, message) in [
            (&b"\x00\x03a\x00b"[..], "string contains U+0000"),
            (b"\x00\x02\xC3\x28", "string is not well-formed UTF-8"),
            (b"\x00\x03\xED\xA0\x80", "string is not well-formed UTF-8"),
        ] {
            let err = decode_err(ProtocolVersion::V311, &frame(0x10, &v311_body(0x02, id)));
            assert_eq!(err, DecodeError::Malformed(message));
        }
        // Empty identifiers and long ones are the session's to judge.
        let empty = frame(0x10, &v311_body(0x00, b"\x00\x00"));
        let mut connect = minimal(ProtocolVersion::V311, "");
        connect.clean_start = false;
        assert_wire(ProtocolVersion::V311, &empty, &packet(connect));
        // A BOM is kept.
        let bom = frame(0x10, &v311_body(0x02, b"\x00\x04\xEF\xBB\xBFa"));
        assert_decodes(
            ProtocolVersion::V311,
            &bom,
            &packet(minimal(ProtocolVersion::V311, "\u{FEFF}a")),
        );
    }

    #[test]
    fn truncated_fields_inside_the_frame_are_malformed() {
        // The client identifier claims 5 bytes; the frame ends after 2.
        let bytes = frame(0x10, &v311_body(0x02, b"\x00\x05ab"));
        assert_eq!(
            decode_err(ProtocolVersion::V311, &bytes),
            crate::codec::wire::TRUNCATED
        );
        // The frame ends inside the keep alive.
        assert_eq!(
            decode_err(
                ProtocolVersion::V311,
                &frame(0x10, b"\x00\x04MQTT\x04\x02\x00")
            ),
            crate::codec::wire::TRUNCATED
        );
        // The user name flag is set but the payload ends.
        assert_eq!(
            decode_err(
                ProtocolVersion::V311,
                &frame(0x10, &v311_body(0x82, b"\x00\x00"))
            ),
            crate::codec::wire::TRUNCATED
        );
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let bytes = frame(0x10, &v311_body(0x02, b"\x00\x01c\xFF"));
        assert_eq!(
            decode_err(ProtocolVersion::V311, &bytes),
            DecodeError::Malformed("unexpected bytes after the end of the packet")
        );
    }

    fn v5_with_properties(properties: &[u8]) -> Vec<u8> {
        let len = u8::try_from(properties.len()).expect("short");
        frame(
            0x10,
            &cat(&[
                b"\x00\x04MQTT\x05\x02\x00\x3C",
                &[len],
                properties,
                b"\x00\x01c",
            ]),
        )
    }

    #[test]
    fn property_values_out_of_range_are_protocol_errors() {
        for (properties, message) in [
            (&[0x21, 0x00, 0x00][..], "receive maximum is zero"),
            (
                &[0x27, 0x00, 0x00, 0x00, 0x00],
                "maximum packet size is zero",
            ),
            (&[0x17, 0x02], "boolean property is not 0 or 1"),
            (&[0x19, 0xFF], "boolean property is not 0 or 1"),
        ] {
            let err = decode_err(ProtocolVersion::V5, &v5_with_properties(properties));
            assert_eq!(err, DecodeError::Protocol(message), "{properties:02X?}");
            assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
        }
    }

    #[test]
    fn duplicate_and_misplaced_properties_are_protocol_errors() {
        let duplicate = [0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2];
        assert_eq!(
            decode_err(ProtocolVersion::V5, &v5_with_properties(&duplicate)),
            DecodeError::Protocol("property included more than once")
        );
        // Topic Alias belongs to PUBLISH; Will Delay Interval to the Will properties.
        for misplaced in [&[0x23, 0x00, 0x01][..], &[0x18, 0, 0, 0, 1]] {
            assert_eq!(
                decode_err(ProtocolVersion::V5, &v5_with_properties(misplaced)),
                DecodeError::Protocol("property not allowed in this packet")
            );
        }
        // Session Expiry Interval belongs to CONNECT, not to the Will.
        let will = frame(
            0x10,
            b"\x00\x04MQTT\x05\x06\x00\x3C\x00\x00\x01c\x05\x11\x00\x00\x00\x01\x00\x01w\x00\x00",
        );
        assert_eq!(
            decode_err(ProtocolVersion::V5, &will),
            DecodeError::Protocol("property not allowed in this packet")
        );
        // User Properties repeat freely, in order.
        let users = [0x26, 0, 1, b'a', 0, 1, b'1', 0x26, 0, 1, b'a', 0, 1, b'2'];
        let mut connect = minimal(ProtocolVersion::V5, "c");
        connect.properties.user_properties = vec![user("a", "1"), user("a", "2")];
        assert_wire(
            ProtocolVersion::V5,
            &v5_with_properties(&users),
            &packet(connect),
        );
    }
}
