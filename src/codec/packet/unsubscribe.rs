//! UNSUBSCRIBE (MQTT 5.0 section 3.10, 3.1.1 section 3.10): a packet identifier, 5.0 user
//! properties, and one or more topic filters.

use bytes::Bytes;

use crate::codec::property::{self, FromProperties, Property, WriteProperties};
use crate::codec::strings::{read_topic_filter, write_str};
use crate::codec::wire::{Sink, read_packet_id};
use crate::codec::{DecodeError, EncodeError, ProtocolVersion, Unsubscribe, UserProperty};

pub(super) fn decode(
    mut body: Bytes,
    version: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = read_packet_id(&mut body)?;
    let UnsubscribeProperties(user_properties) = if version.is_v5() {
        property::decode(&mut body)?
    } else {
        UnsubscribeProperties::default()
    };
    let mut filters = Vec::new();
    while !body.is_empty() {
        filters.push(read_topic_filter(&mut body)?);
    }
    // [MQTT-3.10.3-2] at least one topic filter.
    if filters.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe {
        packet_id,
        user_properties,
        filters,
    })
}

pub(super) fn write<S: Sink>(
    unsubscribe: &Unsubscribe,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    if unsubscribe.filters.is_empty() {
        // [MQTT-3.10.3-2]
        return Err(EncodeError::NotAllowed(
            "an UNSUBSCRIBE without topic filters",
        ));
    }
    s.write_u16(unsubscribe.packet_id.get());
    if version.is_v5() {
        property::write(s, &UserPropertiesRef(&unsubscribe.user_properties))?;
    }
    for filter in &unsubscribe.filters {
        write_str(s, "Topic Filter", filter.as_str())?;
    }
    Ok(())
}

/// Section 3.10.2.1: UNSUBSCRIBE carries only User Properties.
#[derive(Default)]
struct UnsubscribeProperties(Vec<UserProperty>);

impl FromProperties for UnsubscribeProperties {
    fn apply(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::User(v) => self.0.push(v),
            _ => return Err(property::not_allowed()),
        }
        Ok(())
    }
}

struct UserPropertiesRef<'a>(&'a [UserProperty]);

impl WriteProperties for UserPropertiesRef<'_> {
    fn write_each<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        property::write_user_properties(s, self.0)
    }
}
