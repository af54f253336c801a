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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::packet::testing::{
        ALL_VERSIONS, assert_wire, decode_err, encode_err, encoded,
    };
    use crate::codec::{Packet, PacketId, ReasonCode};
    use crate::topic::{TopicError, TopicFilter};

    fn unsubscribe(filters: &[&str], user_properties: Vec<UserProperty>) -> Packet {
        Packet::Unsubscribe(Unsubscribe {
            packet_id: PacketId::new(3).expect("non-zero"),
            user_properties,
            filters: filters
                .iter()
                .map(|f| TopicFilter::new(f).expect("valid"))
                .collect(),
        })
    }

    #[test]
    fn v3_both_ways() {
        for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
            assert_wire(
                version,
                b"\xA2\x09\x00\x03\x00\x01#\x00\x02a/",
                &unsubscribe(&["#", "a/"], Vec::new()),
            );
        }
    }

    #[test]
    fn v5_with_every_property_both_ways() {
        let users = vec![UserProperty {
            key: "k".into(),
            value: "v".into(),
        }];
        assert_wire(
            ProtocolVersion::V5,
            b"\xA2\x0D\x00\x03\x07\x26\x00\x01k\x00\x01v\x00\x01+",
            &unsubscribe(&["+"], users.clone()),
        );
        // 3.1.1 has no properties to write.
        assert_eq!(
            encoded(ProtocolVersion::V311, &unsubscribe(&["+"], users)),
            b"\xA2\x05\x00\x03\x00\x01+"
        );
    }

    #[test]
    fn at_least_one_filter() {
        // [MQTT-3.10.3-2]
        for version in ALL_VERSIONS {
            let bytes: &[u8] = if version.is_v5() {
                b"\xA2\x03\x00\x03\x00"
            } else {
                b"\xA2\x02\x00\x03"
            };
            let err = decode_err(version, bytes);
            assert_eq!(
                err,
                DecodeError::Protocol("UNSUBSCRIBE without topic filters")
            );
            assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
            assert!(matches!(
                encode_err(version, &unsubscribe(&[], Vec::new())),
                EncodeError::NotAllowed(_)
            ));
        }
    }

    #[test]
    fn invalid_filters_and_properties_are_refused() {
        assert_eq!(
            decode_err(ProtocolVersion::V311, b"\xA2\x06\x00\x03\x00\x02#a"),
            DecodeError::TopicFilter(TopicError::MisplacedMultiLevelWildcard)
        );
        // Only User Properties: a Reason String is not allowed here.
        assert_eq!(
            decode_err(
                ProtocolVersion::V5,
                b"\xA2\x09\x00\x03\x03\x1F\x00\x00\x00\x01#"
            ),
            DecodeError::Protocol("property not allowed in this packet")
        );
        assert_eq!(
            decode_err(ProtocolVersion::V311, b"\xA2\x05\x00\x00\x00\x01#"),
            DecodeError::Protocol("packet identifier is zero")
        );
    }
}
