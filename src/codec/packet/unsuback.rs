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
