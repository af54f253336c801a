//! CONNACK (MQTT 5.0 section 3.2, 3.1.1 section 3.2).
//!
//! 3.1 and 3.1.1 carry a return code from 0 to 5, mapped onto [`ReasonCode`] both ways
//! (`from_v3_connack`, `to_v3_connack`), and no properties. 5.0 carries a reason code and
//! properties. Session Present is 0 whenever the connection is refused.

use bytes::Bytes;

use super::{check_reason, read_reason};
use crate::codec::property::{self, FromProperties, Property, WriteProperties, id};
use crate::codec::wire::{Sink, finish, read_u8};
use crate::codec::{
    ConnAck, ConnAckProperties, DecodeError, EncodeError, ProtocolVersion, ReasonCode,
    ReasonContext,
};

const SESSION_PRESENT: u8 = 0x01;

pub(super) fn decode(mut body: Bytes, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    // A server that does not speak 5.0 refuses a 5.0 CONNECT in its own format, `20 02 00 01`
    // ("unacceptable protocol version", 3.1.1 [MQTT-3.1.2-2]): a 5.0 client reads that too.
    let v3_refusal = body.len() == 2 && body.get(1) == Some(&1);
    if !version.is_v5() || v3_refusal {
        return decode_v3(body);
    }
    let session_present = read_flags(&mut body)?;
    let reason = read_reason(&mut body, ReasonContext::ConnAck)?;
    check_session_present(session_present, reason)?;
    let properties = property::decode(&mut body)?;
    finish(&body)?;
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

/// 3.1 and 3.1.1: flags and a return code, remaining length exactly 2.
fn decode_v3(mut body: Bytes) -> Result<ConnAck, DecodeError> {
    let session_present = read_flags(&mut body)?;
    // 3.1.1 section 3.2.2.3: return codes 6 to 255 are reserved.
    let reason = ReasonCode::from_v3_connack(read_u8(&mut body)?)
        .ok_or(DecodeError::Protocol("reserved CONNACK return code"))?;
    check_session_present(session_present, reason)?;
    finish(&body)?;
    Ok(ConnAck {
        session_present,
        reason,
        properties: ConnAckProperties::default(),
    })
}

fn read_flags(body: &mut Bytes) -> Result<bool, DecodeError> {
    let flags = read_u8(body)?;
    // [MQTT-3.2.2-1] (3.1.1 section 3.2.2.1) bits 7 to 1 of the acknowledge flags are reserved
    // and 0.
    if flags & !SESSION_PRESENT != 0 {
        return Err(DecodeError::Malformed("reserved CONNACK flags are set"));
    }
    Ok(flags & SESSION_PRESENT != 0)
}

fn check_session_present(session_present: bool, reason: ReasonCode) -> Result<(), DecodeError> {
    // [MQTT-3.2.2-6] (3.1.1: [MQTT-3.2.2-4]) a refusal has Session Present 0.
    if session_present && reason != ReasonCode::Success {
        return Err(DecodeError::Protocol(
            "Session Present set on a refused connection",
        ));
    }
    Ok(())
}

/// In 3.1/3.1.1 the reason becomes its return code (reasons 3.1.1 cannot name become 3, "server
/// unavailable") and the properties are not written.
pub(super) fn write<S: Sink>(
    connack: &ConnAck,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    check_reason(connack.reason, ReasonContext::ConnAck)?;
    if connack.session_present && connack.reason != ReasonCode::Success {
        // [MQTT-3.2.2-6]
        return Err(EncodeError::NotAllowed(
            "Session Present on a refused connection",
        ));
    }
    s.write_u8(if connack.session_present {
        SESSION_PRESENT
    } else {
        0
    });
    if version.is_v5() {
        s.write_u8(connack.reason.as_u8());
        property::write(s, &connack.properties)
    } else {
        s.write_u8(connack.reason.to_v3_connack());
        Ok(())
    }
}

/// Section 3.2.2.3.
impl FromProperties for ConnAckProperties {
    fn apply(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::SessionExpiryInterval(v) => self.session_expiry_interval = Some(v),
            Property::ReceiveMaximum(v) => self.receive_maximum = Some(v),
            Property::MaximumQoS(v) => self.maximum_qos = Some(v),
            Property::RetainAvailable(v) => self.retain_available = Some(v),
            Property::MaximumPacketSize(v) => self.maximum_packet_size = Some(v),
            Property::AssignedClientIdentifier(v) => self.assigned_client_identifier = Some(v),
            Property::TopicAliasMaximum(v) => self.topic_alias_maximum = Some(v),
            Property::ReasonString(v) => self.reason_string = Some(v),
            Property::User(v) => self.user_properties.push(v),
            Property::WildcardSubscriptionAvailable(v) => {
                self.wildcard_subscription_available = Some(v);
            }
            Property::SubscriptionIdentifierAvailable(v) => {
                self.subscription_identifiers_available = Some(v);
            }
            Property::SharedSubscriptionAvailable(v) => {
                self.shared_subscription_available = Some(v);
            }
            Property::ServerKeepAlive(v) => self.server_keep_alive = Some(v),
            Property::ResponseInformation(v) => self.response_information = Some(v),
            Property::ServerReference(v) => self.server_reference = Some(v),
            Property::AuthenticationMethod(v) => self.authentication_method = Some(v),
            Property::AuthenticationData(v) => self.authentication_data = Some(v),
            _ => return Err(property::not_allowed()),
        }
        Ok(())
    }
}

impl WriteProperties for ConnAckProperties {
    fn write_each<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        if self.maximum_qos.is_some_and(|qos| qos.as_u8() > 1) {
            // Section 3.2.2.3.4: Maximum QoS is sent only as 0 or 1; absent means 2.
            return Err(EncodeError::NotAllowed("a Maximum QoS of 2"));
        }
        property::write_u32(s, id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        property::write_u16(
            s,
            id::RECEIVE_MAXIMUM,
            self.receive_maximum.map(|v| v.get()),
        );
        property::write_u8(s, id::MAXIMUM_QOS, self.maximum_qos.map(|qos| qos.as_u8()));
        property::write_bool(s, id::RETAIN_AVAILABLE, self.retain_available);
        property::write_u32(
            s,
            id::MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(|v| v.get()),
        );
        property::write_string(
            s,
            id::ASSIGNED_CLIENT_IDENTIFIER,
            "Assigned Client Identifier",
            self.assigned_client_identifier.as_deref(),
        )?;
        property::write_u16(s, id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        property::write_string(
            s,
            id::REASON_STRING,
            "Reason String",
            self.reason_string.as_deref(),
        )?;
        property::write_user_properties(s, &self.user_properties)?;
        property::write_bool(
            s,
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        property::write_bool(
            s,
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        property::write_bool(
            s,
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        property::write_u16(s, id::SERVER_KEEP_ALIVE, self.server_keep_alive);
        property::write_string(
            s,
            id::RESPONSE_INFORMATION,
            "Response Information",
            self.response_information.as_deref(),
        )?;
        property::write_string(
            s,
            id::SERVER_REFERENCE,
            "Server Reference",
            self.server_reference.as_deref(),
        )?;
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

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU16, NonZeroU32};

    use bytes::Bytes;

    use super::*;
    use crate::codec::packet::testing::{
        ALL_VERSIONS, assert_decodes, assert_wire, cat, decode_err, encode_err, encoded, frame,
    };
    use crate::codec::{Packet, QoS, UserProperty};

    fn connack(session_present: bool, reason: ReasonCode) -> Packet {
        Packet::ConnAck(ConnAck {
            session_present,
            reason,
            properties: ConnAckProperties::default(),
        })
    }

    #[test]
    fn v3_both_ways() {
        for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
            assert_wire(
                version,
                b"\x20\x02\x00\x00",
                &connack(false, ReasonCode::Success),
            );
            assert_wire(
                version,
                b"\x20\x02\x01\x00",
                &connack(true, ReasonCode::Success),
            );
            for code in 1..=5u8 {
                let reason = ReasonCode::from_v3_connack(code).expect("defined");
                assert_wire(version, &[0x20, 0x02, 0x00, code], &connack(false, reason));
            }
        }
    }

    #[test]
    fn v3_maps_reasons_it_cannot_name_to_server_unavailable() {
        let quota = connack(false, ReasonCode::QuotaExceeded);
        assert_eq!(encoded(ProtocolVersion::V311, &quota), b"\x20\x02\x00\x03");
        let banned = connack(false, ReasonCode::Banned);
        assert_eq!(encoded(ProtocolVersion::V31, &banned), b"\x20\x02\x00\x05");
    }

    #[test]
    fn v5_minimal_both_ways() {
        assert_wire(
            ProtocolVersion::V5,
            b"\x20\x03\x01\x00\x00",
            &connack(true, ReasonCode::Success),
        );
        assert_wire(
            ProtocolVersion::V5,
            b"\x20\x03\x00\x9F\x00",
            &connack(false, ReasonCode::ConnectionRateExceeded),
        );
    }

    #[test]
    fn v5_with_every_property_both_ways() {
        let properties: &[u8] = &[
            0x11, 0x00, 0x00, 0x01, 0x00, // Session Expiry Interval 256
            0x21, 0x00, 0x14, // Receive Maximum 20
            0x24, 0x01, // Maximum QoS 1
            0x25, 0x00, // Retain Available 0
            0x27, 0x00, 0x01, 0x00, 0x00, // Maximum Packet Size 65536
            0x12, 0x00, 0x02, b'i', b'd', // Assigned Client Identifier "id"
            0x22, 0x00, 0x0A, // Topic Alias Maximum 10
            0x1F, 0x00, 0x02, b'o', b'k', // Reason String "ok"
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // User Property k=v
            0x28, 0x01, // Wildcard Subscription Available 1
            0x29, 0x00, // Subscription Identifiers Available 0
            0x2A, 0x01, // Shared Subscription Available 1
            0x13, 0x00, 0x1E, // Server Keep Alive 30
            0x1A, 0x00, 0x01, b'r', // Response Information "r"
            0x1C, 0x00, 0x01, b's', // Server Reference "s"
            0x15, 0x00, 0x01, b'm', // Authentication Method "m"
            0x16, 0x00, 0x01, 0xFF, // Authentication Data FF
        ];
        let len = u8::try_from(properties.len()).expect("short");
        let bytes = frame(0x20, &cat(&[&[0x00, 0x00, len], properties]));
        let packet = Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::Success,
            properties: ConnAckProperties {
                session_expiry_interval: Some(256),
                receive_maximum: NonZeroU16::new(20),
                maximum_qos: Some(QoS::AtLeastOnce),
                retain_available: Some(false),
                maximum_packet_size: NonZeroU32::new(65_536),
                assigned_client_identifier: Some("id".into()),
                topic_alias_maximum: Some(10),
                reason_string: Some("ok".into()),
                user_properties: vec![UserProperty {
                    key: "k".into(),
                    value: "v".into(),
                }],
                wildcard_subscription_available: Some(true),
                subscription_identifiers_available: Some(false),
                shared_subscription_available: Some(true),
                server_keep_alive: Some(30),
                response_information: Some("r".into()),
                server_reference: Some("s".into()),
                authentication_method: Some("m".into()),
                authentication_data: Some(Bytes::from_static(b"\xFF")),
            },
        });
        assert_wire(ProtocolVersion::V5, &bytes, &packet);
    }

    #[test]
    fn a_v5_client_understands_a_v311_refusal() {
        assert_decodes(
            ProtocolVersion::V5,
            b"\x20\x02\x00\x01",
            &connack(false, ReasonCode::UnsupportedProtocolVersion),
        );
        // Any other two-byte CONNACK is not a 5.0 one.
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\x20\x02\x00\x00"),
            crate::codec::wire::TRUNCATED
        );
    }

    #[test]
    fn reserved_acknowledge_flags_are_malformed() {
        // [MQTT-3.2.2-1]
        for version in ALL_VERSIONS {
            let bytes: &[u8] = if version.is_v5() {
                b"\x20\x03\x02\x00\x00"
            } else {
                b"\x20\x02\x02\x00"
            };
            let err = decode_err(version, bytes);
            assert_eq!(
                err,
                DecodeError::Malformed("reserved CONNACK flags are set")
            );
            assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
        }
    }

    #[test]
    fn session_present_on_a_refusal_is_a_protocol_error() {
        // [MQTT-3.2.2-6]
        let expected = DecodeError::Protocol("Session Present set on a refused connection");
        assert_eq!(
            decode_err(ProtocolVersion::V311, b"\x20\x02\x01\x05"),
            expected
        );
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\x20\x03\x01\x87\x00"),
            expected
        );
        assert!(matches!(
            encode_err(
                ProtocolVersion::V5,
                &connack(true, ReasonCode::NotAuthorized)
            ),
            EncodeError::NotAllowed(_)
        ));
    }

    #[test]
    fn unknown_return_and_reason_codes_are_protocol_errors() {
        let err = decode_err(ProtocolVersion::V311, b"\x20\x02\x00\x06");
        assert_eq!(err, DecodeError::Protocol("reserved CONNACK return code"));
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
        // 0x8E (Session taken over) is a DISCONNECT reason, 0x03 is undefined.
        for code in [0x8E, 0x03] {
            assert_eq!(
                decode_err(ProtocolVersion::V5, &[0x20, 0x03, 0x00, code, 0x00]),
                DecodeError::Protocol("reason code not allowed in this packet")
            );
        }
        assert_eq!(
            encode_err(
                ProtocolVersion::V311,
                &connack(false, ReasonCode::SessionTakenOver)
            ),
            EncodeError::NotAllowed("this reason code in this packet")
        );
    }

    #[test]
    fn the_v3_remaining_length_is_exactly_two() {
        assert_eq!(
            decode_err(ProtocolVersion::V311, b"\x20\x03\x00\x00\x00"),
            DecodeError::Malformed("unexpected bytes after the end of the packet")
        );
        assert_eq!(
            decode_err(ProtocolVersion::V311, b"\x20\x01\x00"),
            crate::codec::wire::TRUNCATED
        );
    }

    #[test]
    fn property_values_are_checked() {
        for (property, message) in [
            (&[0x24, 0x02][..], "maximum QoS is not 0 or 1"),
            (&[0x25, 0x02], "boolean property is not 0 or 1"),
            (&[0x28, 0x02], "boolean property is not 0 or 1"),
            (&[0x29, 0x02], "boolean property is not 0 or 1"),
            (&[0x2A, 0x02], "boolean property is not 0 or 1"),
            (&[0x21, 0x00, 0x00], "receive maximum is zero"),
            (&[0x27, 0, 0, 0, 0], "maximum packet size is zero"),
            (
                &[0x24, 0x00, 0x24, 0x00],
                "property included more than once",
            ),
            (&[0x17, 0x00], "property not allowed in this packet"),
        ] {
            let len = u8::try_from(property.len()).expect("short");
            let bytes = frame(0x20, &cat(&[&[0x00, 0x00, len], property]));
            assert_eq!(
                decode_err(ProtocolVersion::V5, &bytes),
                DecodeError::Protocol(message),
                "{property:02X?}"
            );
        }
        let mut two = ConnAck {
            session_present: false,
            reason: ReasonCode::Success,
            properties: ConnAckProperties::default(),
        };
        two.properties.maximum_qos = Some(QoS::ExactlyOnce);
        assert_eq!(
            encode_err(ProtocolVersion::V5, &Packet::ConnAck(two)),
            EncodeError::NotAllowed("a Maximum QoS of 2")
        );
    }

    #[test]
    fn v3_does_not_write_properties() {
        let mut with_properties = ConnAck {
            session_present: false,
            reason: ReasonCode::Success,
            properties: ConnAckProperties::default(),
        };
        with_properties.properties.reason_string = Some("hello".into());
        assert_eq!(
            encoded(ProtocolVersion::V311, &Packet::ConnAck(with_properties)),
            b"\x20\x02\x00\x00"
        );
    }
}
