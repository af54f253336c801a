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
