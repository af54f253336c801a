//! SUBACK (MQTT 5.0 section 3.9, 3.1.1 section 3.9): a packet identifier, 5.0 properties, and
//! one reason code per topic filter of the SUBSCRIBE.
//!
//! Before 5.0 the codes are return codes: 0, 1 and 2 grant a QoS, 0x80 is a failure (3.1.1
//! only; 3.1 has no failure code). They are the same numbers as the 5.0 reason codes Granted
//! QoS 0 to 2 and Unspecified error, so a 5.0 failure reason is written as 0x80 for 3.1.1.

use bytes::Bytes;

use super::{check_reason, read_reason};
use crate::codec::property;
use crate::codec::wire::{Sink, read_packet_id, read_u8};
use crate::codec::{
    AckProperties, DecodeError, EncodeError, ProtocolVersion, ReasonCode, ReasonContext, SubAck,
};

pub(super) fn decode(mut body: Bytes, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let packet_id = read_packet_id(&mut body)?;
    let properties = if version.is_v5() {
        property::decode(&mut body)?
    } else {
        AckProperties::default()
    };
    let mut reasons = Vec::with_capacity(body.len());
    while !body.is_empty() {
        reasons.push(if version.is_v5() {
            read_reason(&mut body, ReasonContext::SubAck)?
        } else {
            read_return_code(&mut body, version)?
        });
    }
    // Section 3.9.3: one code per topic filter, and a SUBSCRIBE has at least one.
    if reasons.is_empty() {
        return Err(DecodeError::Protocol("SUBACK without return codes"));
    }
    Ok(SubAck {
        packet_id,
        properties,
        reasons,
    })
}

fn read_return_code(body: &mut Bytes, version: ProtocolVersion) -> Result<ReasonCode, DecodeError> {
    match read_u8(body)? {
        0x00 => Ok(ReasonCode::Success),
        0x01 => Ok(ReasonCode::GrantedQoS1),
        0x02 => Ok(ReasonCode::GrantedQoS2),
        // [MQTT-3.9.3-2] (3.1.1) 0x80 is the only failure code, and 3.1 has none.
        0x80 if version != ProtocolVersion::V31 => Ok(ReasonCode::UnspecifiedError),
        _ => Err(DecodeError::Protocol("reserved SUBACK return code")),
    }
}

pub(super) fn write<S: Sink>(
    suback: &SubAck,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    if suback.reasons.is_empty() {
        return Err(EncodeError::NotAllowed("a SUBACK without return codes"));
    }
    for &reason in &suback.reasons {
        check_reason(reason, ReasonContext::SubAck)?;
        if reason.is_error() && version == ProtocolVersion::V31 {
            return Err(EncodeError::NotAllowed("a SUBACK failure code in MQTT 3.1"));
        }
    }
    s.write_u16(suback.packet_id.get());
    if version.is_v5() {
        property::write(s, &suback.properties)?;
    }
    for &reason in &suback.reasons {
        s.write_u8(if !version.is_v5() && reason.is_error() {
            ReasonCode::UnspecifiedError.as_u8()
        } else {
            reason.as_u8()
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::packet::testing::{assert_wire, decode_err, encode_err, encoded};
    use crate::codec::{Packet, PacketId, UserProperty};

    fn suback(reasons: Vec<ReasonCode>) -> Packet {
        Packet::SubAck(SubAck {
            packet_id: PacketId::new(7).expect("non-zero"),
            properties: AckProperties::default(),
            reasons,
        })
    }

    #[test]
    fn v311_both_ways() {
        assert_wire(
            ProtocolVersion::V311,
            b"\x90\x06\x00\x07\x00\x01\x02\x80",
            &suback(vec![
                ReasonCode::Success,
                ReasonCode::GrantedQoS1,
                ReasonCode::GrantedQoS2,
                ReasonCode::UnspecifiedError,
            ]),
        );
    }

    #[test]
    fn v31_has_no_failure_code() {
        assert_wire(
            ProtocolVersion::V31,
            b"\x90\x04\x00\x07\x02\x00",
            &suback(vec![ReasonCode::GrantedQoS2, ReasonCode::Success]),
        );
        assert_eq!(
            decode_err(ProtocolVersion::V31, b"\x90\x03\x00\x07\x80"),
            DecodeError::Protocol("reserved SUBACK return code")
        );
        assert!(matches!(
            encode_err(
                ProtocolVersion::V31,
                &suback(vec![ReasonCode::NotAuthorized])
            ),
            EncodeError::NotAllowed(_)
        ));
    }

    #[test]
    fn v311_writes_every_failure_as_0x80() {
        assert_eq!(
            encoded(
                ProtocolVersion::V311,
                &suback(vec![ReasonCode::NotAuthorized, ReasonCode::QuotaExceeded])
            ),
            b"\x90\x04\x00\x07\x80\x80"
        );
    }

    #[test]
    fn v5_with_every_property_both_ways() {
        let packet = Packet::SubAck(SubAck {
            packet_id: PacketId::new(7).expect("non-zero"),
            properties: AckProperties {
                reason_string: Some("r".into()),
                user_properties: vec![UserProperty {
                    key: "k".into(),
                    value: "v".into(),
                }],
            },
            reasons: vec![
                ReasonCode::GrantedQoS1,
                ReasonCode::WildcardSubscriptionsNotSupported,
            ],
        });
        let bytes = b"\x90\x10\x00\x07\x0B\x1F\x00\x01r\x26\x00\x01k\x00\x01v\x01\xA2";
        assert_wire(ProtocolVersion::V5, bytes, &packet);
        assert_wire(
            ProtocolVersion::V5,
            b"\x90\x04\x00\x07\x00\x8F",
            &suback(vec![ReasonCode::TopicFilterInvalid]),
        );
    }

    #[test]
    fn reserved_and_misplaced_codes_are_protocol_errors() {
        // [MQTT-3.9.3-2]
        assert_eq!(
            decode_err(ProtocolVersion::V311, b"\x90\x03\x00\x07\x03"),
            DecodeError::Protocol("reserved SUBACK return code")
        );
        assert_eq!(
            decode_err(ProtocolVersion::V311, b"\x90\x03\x00\x07\x87"),
            DecodeError::Protocol("reserved SUBACK return code")
        );
        // 0x11 (No subscription existed) belongs to UNSUBACK.
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\x90\x04\x00\x07\x00\x11"),
            DecodeError::Protocol("reason code not allowed in this packet")
        );
        assert_eq!(
            encode_err(
                ProtocolVersion::V5,
                &suback(vec![ReasonCode::NoSubscriptionExisted])
            ),
            EncodeError::NotAllowed("this reason code in this packet")
        );
    }

    #[test]
    fn at_least_one_code() {
        assert_eq!(
            decode_err(ProtocolVersion::V311, b"\x90\x02\x00\x07"),
            DecodeError::Protocol("SUBACK without return codes")
        );
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\x90\x03\x00\x07\x00"),
            DecodeError::Protocol("SUBACK without return codes")
        );
        assert!(matches!(
            encode_err(ProtocolVersion::V5, &suback(Vec::new())),
            EncodeError::NotAllowed(_)
        ));
    }
}
