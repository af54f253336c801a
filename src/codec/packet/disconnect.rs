//! DISCONNECT (MQTT 5.0 section 3.14, 3.1.1 section 3.14).
//!
//! Before 5.0 it has no variable header: the reason is always Success (normal disconnection),
//! and another reason cannot be expressed. In 5.0 a remaining length of 0 means Success with no
//! properties (mosquitto_pub -V 5 sends `e0 00`), 1 means a reason code alone, and more means a
//! reason code and properties (section 3.14.2.1). The encoder picks the shortest form.

use bytes::Bytes;

use super::{check_reason, read_reason};
use crate::codec::property::{self, FromProperties, Property, WriteProperties, id};
use crate::codec::wire::{Sink, finish};
use crate::codec::{
    DecodeError, Disconnect, DisconnectProperties, EncodeError, ProtocolVersion, ReasonCode,
    ReasonContext,
};

pub(super) fn decode(mut body: Bytes, version: ProtocolVersion) -> Result<Disconnect, DecodeError> {
    let mut disconnect = Disconnect::new(ReasonCode::Success);
    if version.is_v5() && !body.is_empty() {
        disconnect.reason = read_reason(&mut body, ReasonContext::Disconnect)?;
        // Section 3.14.2.2.1: below a remaining length of 2 there is no property length.
        if !body.is_empty() {
            disconnect.properties = property::decode(&mut body)?;
        }
    }
    // 3.1.1 section 3.14.1: the remaining length is 0.
    finish(&body)?;
    Ok(disconnect)
}

pub(super) fn write<S: Sink>(
    disconnect: &Disconnect,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    check_reason(disconnect.reason, ReasonContext::Disconnect)?;
    if !version.is_v5() {
        if disconnect.reason != ReasonCode::Success {
            return Err(EncodeError::NotAllowed(
                "a DISCONNECT reason other than Success before MQTT 5",
            ));
        }
        return Ok(());
    }
    let no_properties = disconnect.properties == DisconnectProperties::default();
    if disconnect.reason == ReasonCode::Success && no_properties {
        return Ok(());
    }
    s.write_u8(disconnect.reason.as_u8());
    if no_properties {
        return Ok(());
    }
    property::write(s, &disconnect.properties)
}

/// Section 3.14.2.2.
impl FromProperties for DisconnectProperties {
    fn apply(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::SessionExpiryInterval(v) => self.session_expiry_interval = Some(v),
            Property::ReasonString(v) => self.reason_string = Some(v),
            Property::User(v) => self.user_properties.push(v),
            Property::ServerReference(v) => self.server_reference = Some(v),
            _ => return Err(property::not_allowed()),
        }
        Ok(())
    }
}

impl WriteProperties for DisconnectProperties {
    fn write_each<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        property::write_u32(s, id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        property::write_string(
            s,
            id::REASON_STRING,
            "Reason String",
            self.reason_string.as_deref(),
        )?;
        property::write_user_properties(s, &self.user_properties)?;
        property::write_string(
            s,
            id::SERVER_REFERENCE,
            "Server Reference",
            self.server_reference.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::packet::testing::{
        assert_decodes, assert_wire, decode_err, encode_err, encoded,
    };
    use crate::codec::{Packet, UserProperty};

    fn disconnect(reason: ReasonCode) -> Packet {
        Packet::Disconnect(Disconnect::new(reason))
    }

    #[test]
    fn v3_both_ways() {
        for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
            assert_wire(version, b"\xE0\x00", &disconnect(ReasonCode::Success));
            assert_eq!(
                decode_err(version, b"\xE0\x01\x00"),
                DecodeError::Malformed("unexpected bytes after the end of the packet")
            );
            assert!(matches!(
                encode_err(version, &disconnect(ReasonCode::ServerShuttingDown)),
                EncodeError::NotAllowed(_)
            ));
        }
    }

    #[test]
    fn v5_short_forms_both_ways() {
        // mosquitto_pub -V 5 ends with `e0 00`.
        assert_wire(
            ProtocolVersion::V5,
            b"\xE0\x00",
            &disconnect(ReasonCode::Success),
        );
        assert_wire(
            ProtocolVersion::V5,
            b"\xE0\x01\x8E",
            &disconnect(ReasonCode::SessionTakenOver),
        );
        assert_decodes(
            ProtocolVersion::V5,
            b"\xE0\x01\x00",
            &disconnect(ReasonCode::Success),
        );
        assert_decodes(
            ProtocolVersion::V5,
            b"\xE0\x02\x00\x00",
            &disconnect(ReasonCode::Success),
        );
    }

    #[test]
    fn v5_with_every_property_both_ways() {
        let packet = Packet::Disconnect(Disconnect {
            reason: ReasonCode::DisconnectWithWillMessage,
            properties: DisconnectProperties {
                session_expiry_interval: Some(0),
                reason_string: Some("bye".into()),
                user_properties: vec![UserProperty {
                    key: "k".into(),
                    value: "v".into(),
                }],
                server_reference: Some("s2".into()),
            },
        });
        let bytes = b"\xE0\x19\x04\x17\x11\x00\x00\x00\x00\x1F\x00\x03bye\
            \x26\x00\x01k\x00\x01v\x1C\x00\x02s2";
        assert_wire(ProtocolVersion::V5, bytes, &packet);
        // Success with properties takes the long form.
        let mut success = Disconnect::new(ReasonCode::Success);
        success.properties.session_expiry_interval = Some(1);
        assert_wire(
            ProtocolVersion::V5,
            b"\xE0\x07\x00\x05\x11\x00\x00\x00\x01",
            &Packet::Disconnect(success.clone()),
        );
        // 3.1.1 writes no properties.
        assert_eq!(
            encoded(ProtocolVersion::V311, &Packet::Disconnect(success)),
            b"\xE0\x00"
        );
    }

    #[test]
    fn reasons_and_properties_must_belong_to_disconnect() {
        // 0x01 is Granted QoS 1; 0x18 is Continue authentication.
        for reason in [0x01, 0x18] {
            assert_eq!(
                decode_err(ProtocolVersion::V5, &[0xE0, 0x01, reason]),
                DecodeError::Protocol("reason code not allowed in this packet")
            );
        }
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\xE0\x05\x00\x03\x23\x00\x01"),
            DecodeError::Protocol("property not allowed in this packet")
        );
        assert_eq!(
            encode_err(ProtocolVersion::V5, &disconnect(ReasonCode::GrantedQoS1)),
            EncodeError::NotAllowed("this reason code in this packet")
        );
    }
}
