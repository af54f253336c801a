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
