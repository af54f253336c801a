//! UNSUBACK (MQTT 5.0 section 3.11, 3.1.1 section 3.11).
//!
//! Before 5.0 it is a packet identifier alone (remaining length 2) and `reasons` is empty; the
//! reasons are not written for those versions. In 5.0 properties follow, then one reason code
//! per topic filter of the UNSUBSCRIBE.

use bytes::Bytes;

use super::{check_reason, read_reason};
use crate::codec::property;
use crate::codec::wire::{Sink, finish, read_packet_id};
use crate::codec::{
    AckProperties, DecodeError, EncodeError, ProtocolVersion, ReasonContext, UnsubAck,
};

pub(super) fn decode(mut body: Bytes, version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
    let packet_id = read_packet_id(&mut body)?;
    if !version.is_v5() {
        // 3.1.1 section 3.11.1: the remaining length is 2.
        finish(&body)?;
        return Ok(UnsubAck {
            packet_id,
            properties: AckProperties::default(),
            reasons: Vec::new(),
        });
    }
    let properties = property::decode(&mut body)?;
    let mut reasons = Vec::with_capacity(body.len());
    while !body.is_empty() {
        reasons.push(read_reason(&mut body, ReasonContext::UnsubAck)?);
    }
    // Section 3.11.3: one reason per topic filter, and an UNSUBSCRIBE has at least one.
    if reasons.is_empty() {
        return Err(DecodeError::Protocol("UNSUBACK without reason codes"));
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        reasons,
    })
}

pub(super) fn write<S: Sink>(
    unsuback: &UnsubAck,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    for &reason in &unsuback.reasons {
        check_reason(reason, ReasonContext::UnsubAck)?;
    }
    s.write_u16(unsuback.packet_id.get());
    if !version.is_v5() {
        return Ok(());
    }
    if unsuback.reasons.is_empty() {
        return Err(EncodeError::NotAllowed(
            "a 5.0 UNSUBACK without reason codes",
        ));
    }
    property::write(s, &unsuback.properties)?;
    for reason in &unsuback.reasons {
        s.write_u8(reason.as_u8());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::packet::testing::{assert_wire, decode_err, encode_err, encoded};
    use crate::codec::{Packet, PacketId, ReasonCode, UserProperty};

    fn unsuback(reasons: Vec<ReasonCode>) -> Packet {
        Packet::UnsubAck(UnsubAck {
            packet_id: PacketId::new(3).expect("non-zero"),
            properties: AckProperties::default(),
            reasons,
        })
    }

    #[test]
    fn v3_both_ways() {
        for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
            assert_wire(version, b"\xB0\x02\x00\x03", &unsuback(Vec::new()));
            assert_eq!(
                decode_err(version, b"\xB0\x03\x00\x03\x00"),
                DecodeError::Malformed("unexpected bytes after the end of the packet")
            );
            // The 5.0 reasons are not written.
            assert_eq!(
                encoded(version, &unsuback(vec![ReasonCode::NoSubscriptionExisted])),
                b"\xB0\x02\x00\x03"
            );
        }
    }

    #[test]
    fn v5_with_every_property_both_ways() {
        let packet = Packet::UnsubAck(UnsubAck {
            packet_id: PacketId::new(3).expect("non-zero"),
            properties: AckProperties {
                reason_string: Some("r".into()),
                user_properties: vec![UserProperty {
                    key: "k".into(),
                    value: "v".into(),
                }],
            },
            reasons: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
        });
        assert_wire(
            ProtocolVersion::V5,
            b"\xB0\x10\x00\x03\x0B\x1F\x00\x01r\x26\x00\x01k\x00\x01v\x00\x11",
            &packet,
        );
        assert_wire(
            ProtocolVersion::V5,
            b"\xB0\x04\x00\x03\x00\x87",
            &unsuback(vec![ReasonCode::NotAuthorized]),
        );
    }

    #[test]
    fn v5_needs_allowed_reasons_and_at_least_one() {
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\xB0\x03\x00\x03\x00"),
            DecodeError::Protocol("UNSUBACK without reason codes")
        );
        // 0x01 (Granted QoS 1) belongs to SUBACK.
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\xB0\x04\x00\x03\x00\x01"),
            DecodeError::Protocol("reason code not allowed in this packet")
        );
        assert!(matches!(
            encode_err(ProtocolVersion::V5, &unsuback(Vec::new())),
            EncodeError::NotAllowed(_)
        ));
        assert_eq!(
            encode_err(
                ProtocolVersion::V5,
                &unsuback(vec![ReasonCode::GrantedQoS1])
            ),
            EncodeError::NotAllowed("this reason code in this packet")
        );
    }
}
