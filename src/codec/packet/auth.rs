//! AUTH (MQTT 5.0 section 3.15), for extended authentication; 5.0 only, so the framing refuses
//! packet type 15 for earlier versions and the encoder refuses to write it for them.
//!
//! A remaining length of 0 means Success with no properties, 1 a reason code alone (section
//! 3.15.2.2.1), more a reason code and properties. The encoder picks the shortest form.

use bytes::Bytes;

use super::{check_reason, read_reason};
use crate::codec::property::{self, FromProperties, Property, WriteProperties, id};
use crate::codec::wire::{Sink, finish};
use crate::codec::{
    Auth, AuthProperties, DecodeError, EncodeError, ProtocolVersion, ReasonCode, ReasonContext,
};

pub(super) fn decode(mut body: Bytes) -> Result<Auth, DecodeError> {
    let mut auth = Auth {
        reason: ReasonCode::Success,
        properties: AuthProperties::default(),
    };
    if !body.is_empty() {
        auth.reason = read_reason(&mut body, ReasonContext::Auth)?;
        if !body.is_empty() {
            auth.properties = property::decode(&mut body)?;
        }
    }
    finish(&body)?;
    Ok(auth)
}

pub(super) fn write<S: Sink>(
    auth: &Auth,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    if !version.is_v5() {
        return Err(EncodeError::NotAllowed("AUTH before MQTT 5"));
    }
    check_reason(auth.reason, ReasonContext::Auth)?;
    let no_properties = auth.properties == AuthProperties::default();
    if auth.reason == ReasonCode::Success && no_properties {
        return Ok(());
    }
    s.write_u8(auth.reason.as_u8());
    if no_properties {
        return Ok(());
    }
    property::write(s, &auth.properties)
}

/// Section 3.15.2.2.
impl FromProperties for AuthProperties {
    fn apply(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::AuthenticationMethod(v) => self.authentication_method = Some(v),
            Property::AuthenticationData(v) => self.authentication_data = Some(v),
            Property::ReasonString(v) => self.reason_string = Some(v),
            Property::User(v) => self.user_properties.push(v),
            _ => return Err(property::not_allowed()),
        }
        Ok(())
    }
}

impl WriteProperties for AuthProperties {
    fn write_each<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
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
        )?;
        property::write_string(
            s,
            id::REASON_STRING,
            "Reason String",
            self.reason_string.as_deref(),
        )?;
        property::write_user_properties(s, &self.user_properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::packet::testing::{assert_decodes, assert_wire, decode_err, encode_err};
    use crate::codec::{Packet, UserProperty};

    fn auth(reason: ReasonCode) -> Packet {
        Packet::Auth(Auth {
            reason,
            properties: AuthProperties::default(),
        })
    }

    #[test]
    fn short_forms_both_ways() {
        assert_wire(ProtocolVersion::V5, b"\xF0\x00", &auth(ReasonCode::Success));
        assert_wire(
            ProtocolVersion::V5,
            b"\xF0\x01\x18",
            &auth(ReasonCode::ContinueAuthentication),
        );
        assert_decodes(
            ProtocolVersion::V5,
            b"\xF0\x02\x00\x00",
            &auth(ReasonCode::Success),
        );
    }

    #[test]
    fn with_every_property_both_ways() {
        let packet = Packet::Auth(Auth {
            reason: ReasonCode::ReAuthenticate,
            properties: AuthProperties {
                authentication_method: Some("SCRAM".into()),
                authentication_data: Some(Bytes::from_static(b"\x00\x01")),
                reason_string: Some("r".into()),
                user_properties: vec![UserProperty {
                    key: "k".into(),
                    value: "v".into(),
                }],
            },
        });
        let bytes = b"\xF0\x1A\x19\x18\x15\x00\x05SCRAM\x16\x00\x02\x00\x01\x1F\x00\x01r\
            \x26\x00\x01k\x00\x01v";
        assert_wire(ProtocolVersion::V5, bytes, &packet);
    }

    #[test]
    fn auth_is_v5_only() {
        for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
            let err = decode_err(version, b"\xF0\x00");
            assert_eq!(err, DecodeError::Malformed("AUTH exists only in MQTT 5"));
            assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
            assert_eq!(
                encode_err(version, &auth(ReasonCode::Success)),
                EncodeError::NotAllowed("AUTH before MQTT 5")
            );
        }
    }

    #[test]
    fn reasons_and_properties_must_belong_to_auth() {
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\xF0\x01\x80"),
            DecodeError::Protocol("reason code not allowed in this packet")
        );
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\xF0\x07\x18\x05\x11\x00\x00\x00\x01"),
            DecodeError::Protocol("property not allowed in this packet")
        );
        assert_eq!(
            encode_err(ProtocolVersion::V5, &auth(ReasonCode::NotAuthorized)),
            EncodeError::NotAllowed("this reason code in this packet")
        );
    }
}
