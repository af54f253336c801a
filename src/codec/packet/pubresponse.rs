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
