//! PUBACK, PUBREC, PUBREL and PUBCOMP (MQTT 5.0 sections 3.4 to 3.7, 3.1.1 sections 3.4 to
//! 3.7): a packet identifier and, in 5.0, an optional reason code and properties.
//!
//! 5.0 shortens them (section 3.4.2.1): remaining length 2 means Success and no properties,
//! 3 means a reason code and no properties. The encoder always picks the shortest form.
//! Before 5.0 the remaining length is exactly 2; reason and properties are not written.

use bytes::Bytes;

use super::{check_reason, read_reason};
use crate::codec::property;
use crate::codec::wire::{Sink, finish, read_packet_id};
use crate::codec::{
    AckProperties, DecodeError, EncodeError, ProtocolVersion, PubResponse, ReasonCode,
    ReasonContext,
};

pub(super) fn decode(
    mut body: Bytes,
    version: ProtocolVersion,
    context: ReasonContext,
) -> Result<PubResponse, DecodeError> {
    let packet_id = read_packet_id(&mut body)?;
    let mut response = PubResponse::success(packet_id);
    if version.is_v5() && !body.is_empty() {
        response.reason = read_reason(&mut body, context)?;
        // Section 3.4.2.2.1: below a remaining length of 4 there is no property length.
        if !body.is_empty() {
            response.properties = property::decode(&mut body)?;
        }
    }
    // Before 5.0 the remaining length is exactly 2 (3.1.1 section 3.4.1).
    finish(&body)?;
    Ok(response)
}

pub(super) fn write<S: Sink>(
    response: &PubResponse,
    version: ProtocolVersion,
    context: ReasonContext,
    s: &mut S,
) -> Result<(), EncodeError> {
    check_reason(response.reason, context)?;
    s.write_u16(response.packet_id.get());
    if !version.is_v5() {
        return Ok(());
    }
    let no_properties = response.properties.is_empty();
    if response.reason == ReasonCode::Success && no_properties {
        return Ok(());
    }
    s.write_u8(response.reason.as_u8());
    if no_properties {
        return Ok(());
    }
    property::write::<S, AckProperties>(s, &response.properties)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::packet::testing::{
        ALL_VERSIONS, assert_decodes, assert_wire, decode_err, encode_err, encoded,
    };
    use crate::codec::{Packet, PacketId, UserProperty};

    fn id(value: u16) -> PacketId {
        PacketId::new(value).expect("non-zero")
    }

    /// A packet's first byte, its constructor, and the reasons it may carry.
    type Kind = (u8, fn(PubResponse) -> Packet, ReasonContext);

    fn kinds() -> [Kind; 4] {
        [
            (0x40, Packet::PubAck, ReasonContext::PubAckOrRec),
            (0x50, Packet::PubRec, ReasonContext::PubAckOrRec),
            (0x62, Packet::PubRel, ReasonContext::PubRelOrComp),
            (0x70, Packet::PubComp, ReasonContext::PubRelOrComp),
        ]
    }

    #[test]
    fn every_version_short_form_both_ways() {
        for version in ALL_VERSIONS {
            for (first, make, _) in kinds() {
                assert_wire(
                    version,
                    &[first, 0x02, 0x12, 0x34],
                    &make(PubResponse::success(id(0x1234))),
                );
            }
        }
    }

    #[test]
    fn v5_reason_only_form_both_ways() {
        for (first, make, context) in kinds() {
            let reason = if context == ReasonContext::PubAckOrRec {
                ReasonCode::NoMatchingSubscribers
            } else {
                ReasonCode::PacketIdentifierNotFound
            };
            let mut response = PubResponse::success(id(1));
            response.reason = reason;
            assert_wire(
                ProtocolVersion::V5,
                &[first, 0x03, 0x00, 0x01, reason.as_u8()],
                &make(response),
            );
        }
    }

    #[test]
    fn v5_with_every_property_both_ways() {
        for (first, make, _) in kinds() {
            let response = PubResponse {
                packet_id: id(2),
                reason: ReasonCode::Success,
                properties: AckProperties {
                    reason_string: Some("why".into()),
                    user_properties: vec![UserProperty {
                        key: "k".into(),
                        value: "v".into(),
                    }],
                },
            };
            let bytes = [
                first, 0x11, 0x00, 0x02, 0x00, 0x0D, // id 2, Success, 13 bytes of properties
                0x1F, 0x00, 0x03, b'w', b'h', b'y', // Reason String "why"
                0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // User Property k=v
            ];
            assert_wire(ProtocolVersion::V5, &bytes, &make(response));
        }
    }

    #[test]
    fn v5_long_forms_of_success_decode_too() {
        assert_decodes(
            ProtocolVersion::V5,
            b"\x40\x03\x00\x01\x00",
            &Packet::PubAck(PubResponse::success(id(1))),
        );
        assert_decodes(
            ProtocolVersion::V5,
            b"\x40\x04\x00\x01\x00\x00",
            &Packet::PubAck(PubResponse::success(id(1))),
        );
    }

    #[test]
    fn v3_remaining_length_is_exactly_two() {
        for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
            assert_eq!(
                decode_err(version, b"\x40\x03\x00\x01\x00"),
                DecodeError::Malformed("unexpected bytes after the end of the packet")
            );
            assert_eq!(
                decode_err(version, b"\x40\x01\x00"),
                crate::codec::wire::TRUNCATED
            );
        }
    }

    #[test]
    fn v3_writes_neither_reason_nor_properties() {
        let mut response = PubResponse::success(id(1));
        response.reason = ReasonCode::NotAuthorized;
        response.properties.reason_string = Some("no".into());
        assert_eq!(
            encoded(ProtocolVersion::V311, &Packet::PubAck(response)),
            b"\x40\x02\x00\x01"
        );
    }

    #[test]
    fn reasons_must_belong_to_the_packet() {
        let not_allowed = DecodeError::Protocol("reason code not allowed in this packet");
        // PUBACK cannot say "packet identifier not found"; PUBREL cannot say "no matching
        // subscribers"; 0x03 is no reason code at all.
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\x40\x03\x00\x01\x92"),
            not_allowed
        );
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\x62\x03\x00\x01\x10"),
            not_allowed
        );
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\x70\x03\x00\x01\x03"),
            not_allowed
        );
        assert_eq!(not_allowed.reason_code(), ReasonCode::ProtocolError);
        let mut response = PubResponse::success(id(1));
        response.reason = ReasonCode::PacketIdentifierNotFound;
        assert_eq!(
            encode_err(ProtocolVersion::V5, &Packet::PubAck(response)),
            EncodeError::NotAllowed("this reason code in this packet")
        );
    }

    #[test]
    fn packet_identifier_zero_is_refused() {
        let err = decode_err(ProtocolVersion::V311, b"\x40\x02\x00\x00");
        assert_eq!(err, DecodeError::Protocol("packet identifier is zero"));
    }

    #[test]
    fn properties_must_belong_to_the_packet() {
        // Topic Alias (0x23) is a PUBLISH property; Reason String twice is a duplicate.
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\x40\x07\x00\x01\x00\x03\x23\x00\x01"),
            DecodeError::Protocol("property not allowed in this packet")
        );
        assert_eq!(
            decode_err(
                ProtocolVersion::V5,
                b"\x40\x0A\x00\x01\x00\x06\x1F\x00\x00\x1F\x00\x00"
            ),
            DecodeError::Protocol("property included more than once")
        );
    }
}
