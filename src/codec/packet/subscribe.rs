//! SUBSCRIBE (MQTT 5.0 section 3.8, 3.1.1 section 3.8): a packet identifier, 5.0 properties,
//! and one or more topic filters, each with its options byte.
//!
//! Before 5.0 the options byte holds only the requested QoS; the 5.0-only options (No Local,
//! Retain As Published, Retain Handling) are not written for those versions.

use bytes::Bytes;

use crate::codec::property::{self, FromProperties, Property, WriteProperties};
use crate::codec::strings::{read_topic_filter, write_str};
use crate::codec::wire::{Sink, read_packet_id, read_u8};
use crate::codec::{
    DecodeError, EncodeError, ProtocolVersion, QoS, RetainHandling, Subscribe, SubscribeProperties,
    SubscriptionOptions,
};
use crate::topic::TopicFilter;

/// Subscription Options bits (section 3.8.3.1).
mod option {
    pub(super) const QOS: u8 = 0b0000_0011;
    pub(super) const NO_LOCAL: u8 = 0b0000_0100;
    pub(super) const RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
    pub(super) const RETAIN_HANDLING_SHIFT: u8 = 4;
    pub(super) const RESERVED_V5: u8 = 0b1100_0000;
    pub(super) const RESERVED_V3: u8 = 0b1111_1100;
}

pub(super) fn decode(mut body: Bytes, version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
    let packet_id = read_packet_id(&mut body)?;
    let properties = if version.is_v5() {
        property::decode(&mut body)?
    } else {
        SubscribeProperties::default()
    };
    let mut filters = Vec::new();
    while !body.is_empty() {
        let filter = read_topic_filter(&mut body)?;
        let options = read_u8(&mut body)?;
        let options = if version.is_v5() {
            options_v5(options, &filter)?
        } else {
            options_v3(options)?
        };
        filters.push((filter, options));
    }
    // [MQTT-3.8.3-3] at least one topic filter.
    if filters.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

fn options_v3(options: u8) -> Result<SubscriptionOptions, DecodeError> {
    // [MQTT-3-8.3-4] (3.1.1) the upper six bits are reserved and 0, and QoS is 0, 1 or 2.
    if options & option::RESERVED_V3 != 0 {
        return Err(DecodeError::Malformed(
            "reserved subscription option bits are set",
        ));
    }
    let qos = QoS::from_u8(options).ok_or(DecodeError::Malformed("subscription with QoS 3"))?;
    Ok(SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    })
}

fn options_v5(options: u8, filter: &TopicFilter) -> Result<SubscriptionOptions, DecodeError> {
    // [MQTT-3.8.3-5] bits 6 and 7 are reserved and 0.
    if options & option::RESERVED_V5 != 0 {
        return Err(DecodeError::Malformed(
            "reserved subscription option bits are set",
        ));
    }
    // Section 3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3."
    let qos = QoS::from_u8(options & option::QOS)
        .ok_or(DecodeError::Protocol("subscription with QoS 3"))?;
    let no_local = options & option::NO_LOCAL != 0;
    // [MQTT-3.8.3-4] No Local on a shared subscription is a Protocol Error.
    if no_local && filter.is_shared() {
        return Err(DecodeError::Protocol("No Local on a shared subscription"));
    }
    let retain_handling = match options >> option::RETAIN_HANDLING_SHIFT {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        // Section 3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3."
        _ => return Err(DecodeError::Protocol("Retain Handling 3")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local,
        retain_as_published: options & option::RETAIN_AS_PUBLISHED != 0,
        retain_handling,
    })
}

pub(super) fn write<S: Sink>(
    subscribe: &Subscribe,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    if subscribe.filters.is_empty() {
        // [MQTT-3.8.3-3]
        return Err(EncodeError::NotAllowed("a SUBSCRIBE without topic filters"));
    }
    s.write_u16(subscribe.packet_id.get());
    if version.is_v5() {
        property::write(s, &subscribe.properties)?;
    }
    for (filter, options) in &subscribe.filters {
        write_str(s, "Topic Filter", filter.as_str())?;
        s.write_u8(if version.is_v5() {
            if options.no_local && filter.is_shared() {
                // [MQTT-3.8.3-4]
                return Err(EncodeError::NotAllowed("No Local on a shared subscription"));
            }
            options_byte_v5(options)
        } else {
            options.qos.as_u8()
        });
    }
    Ok(())
}

fn options_byte_v5(options: &SubscriptionOptions) -> u8 {
    let retain_handling: u8 = match options.retain_handling {
        RetainHandling::SendAtSubscribe => 0,
        RetainHandling::SendIfNew => 1,
        RetainHandling::DoNotSend => 2,
    };
    options.qos.as_u8()
        | if options.no_local {
            option::NO_LOCAL
        } else {
            0
        }
        | if options.retain_as_published {
            option::RETAIN_AS_PUBLISHED
        } else {
            0
        }
        | retain_handling << option::RETAIN_HANDLING_SHIFT
}

/// Section 3.8.2.1.
impl FromProperties for SubscribeProperties {
    fn apply(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::SubscriptionIdentifier(v) => {
                // Section 3.8.2.1.2: at most one Subscription Identifier in a SUBSCRIBE.
                if self.subscription_identifier.replace(v).is_some() {
                    return Err(property::duplicate());
                }
            }
            Property::User(v) => self.user_properties.push(v),
            _ => return Err(property::not_allowed()),
        }
        Ok(())
    }
}

impl WriteProperties for SubscribeProperties {
    fn write_each<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        property::write_subscription_ids(s, self.subscription_identifier.as_slice())?;
        property::write_user_properties(s, &self.user_properties)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::codec::packet::testing::{
        ALL_VERSIONS, assert_wire, cat, decode_err, encode_err, encoded, frame,
    };
    use crate::codec::{Packet, PacketId, ReasonCode, UserProperty};
    use crate::topic::TopicError;

    fn filter(text: &str) -> TopicFilter {
        TopicFilter::new(text).expect("valid filter")
    }

    fn qos_only(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }

    fn subscribe(filters: Vec<(TopicFilter, SubscriptionOptions)>) -> Subscribe {
        Subscribe {
            packet_id: PacketId::new(10).expect("non-zero"),
            properties: SubscribeProperties::default(),
            filters,
        }
    }

    #[test]
    fn v3_both_ways() {
        for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
            let packet = subscribe(vec![
                (filter("a/+"), qos_only(QoS::AtLeastOnce)),
                (filter("#"), qos_only(QoS::ExactlyOnce)),
                (filter("$share/g/x"), qos_only(QoS::AtMostOnce)),
            ]);
            let bytes = frame(
                0x82,
                b"\x00\x0A\x00\x03a/+\x01\x00\x01#\x02\x00\x0A$share/g/x\x00",
            );
            assert_wire(version, &bytes, &Packet::Subscribe(packet));
        }
    }

    #[test]
    fn v5_with_options_and_every_property_both_ways() {
        let packet = Subscribe {
            packet_id: PacketId::new(1).expect("non-zero"),
            properties: SubscribeProperties {
                subscription_identifier: NonZeroU32::new(128),
                user_properties: vec![UserProperty {
                    key: "k".into(),
                    value: "v".into(),
                }],
            },
            filters: vec![
                (
                    filter("a/b"),
                    SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                ),
                (
                    filter("$share/g/c"),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: RetainHandling::SendIfNew,
                    },
                ),
            ],
        };
        let bytes = frame(
            0x82,
            &cat(&[
                b"\x00\x01",
                b"\x0A\x0B\x80\x01\x26\x00\x01k\x00\x01v", // Subscription Identifier 128, k=v
                b"\x00\x03a/b\x2E",                        // QoS 2, No Local, RAP, RH 2
                b"\x00\x0A$share/g/c\x11",                 // QoS 1, RH 1
            ]),
        );
        assert_wire(ProtocolVersion::V5, &bytes, &Packet::Subscribe(packet));
    }

    #[test]
    fn v3_writes_only_the_qos_of_the_options() {
        let packet = subscribe(vec![(
            filter("a"),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        )]);
        assert_eq!(
            encoded(ProtocolVersion::V311, &Packet::Subscribe(packet)),
            b"\x82\x06\x00\x0A\x00\x01a\x01"
        );
    }

    #[test]
    fn at_least_one_filter() {
        // [MQTT-3.8.3-3]
        for version in ALL_VERSIONS {
            let bytes: &[u8] = if version.is_v5() {
                b"\x82\x03\x00\x01\x00"
            } else {
                b"\x82\x02\x00\x01"
            };
            let err = decode_err(version, bytes);
            assert_eq!(
                err,
                DecodeError::Protocol("SUBSCRIBE without topic filters")
            );
            assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
            assert!(matches!(
                encode_err(version, &Packet::Subscribe(subscribe(Vec::new()))),
                EncodeError::NotAllowed(_)
            ));
        }
    }

    #[test]
    fn v3_reserved_option_bits_and_qos_3_are_malformed() {
        // [MQTT-3-8.3-4]
        let reserved = decode_err(ProtocolVersion::V311, b"\x82\x06\x00\x01\x00\x01a\x04");
        assert_eq!(
            reserved,
            DecodeError::Malformed("reserved subscription option bits are set")
        );
        assert_eq!(
            decode_err(ProtocolVersion::V31, b"\x82\x06\x00\x01\x00\x01a\x03"),
            DecodeError::Malformed("subscription with QoS 3")
        );
    }

    #[test]
    fn v5_option_rules() {
        for (options, expected) in [
            // [MQTT-3.8.3-5] reserved bits 6 and 7.
            (
                0x40,
                DecodeError::Malformed("reserved subscription option bits are set"),
            ),
            (
                0x80,
                DecodeError::Malformed("reserved subscription option bits are set"),
            ),
            // Section 3.8.3.1: Maximum QoS 3 and Retain Handling 3.
            (0x03, DecodeError::Protocol("subscription with QoS 3")),
            (0x30, DecodeError::Protocol("Retain Handling 3")),
        ] {
            let bytes = [0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', options];
            assert_eq!(
                decode_err(ProtocolVersion::V5, &bytes),
                expected,
                "{options:02X}"
            );
        }
    }

    #[test]
    fn no_local_on_a_shared_subscription_is_a_protocol_error() {
        // [MQTT-3.8.3-4]
        let bytes = frame(0x82, b"\x00\x01\x00\x00\x0A$share/g/a\x04");
        let err = decode_err(ProtocolVersion::V5, &bytes);
        assert_eq!(
            err,
            DecodeError::Protocol("No Local on a shared subscription")
        );
        let packet = subscribe(vec![(
            filter("$share/g/a"),
            SubscriptionOptions {
                no_local: true,
                ..SubscriptionOptions::default()
            },
        )]);
        assert!(matches!(
            encode_err(ProtocolVersion::V5, &Packet::Subscribe(packet)),
            EncodeError::NotAllowed(_)
        ));
    }

    #[test]
    fn invalid_and_truncated_filters() {
        // A second filter cut short inside the frame.
        assert_eq!(
            decode_err(
                ProtocolVersion::V311,
                b"\x82\x09\x00\x01\x00\x03a/#\x00\x01"
            ),
            crate::codec::wire::TRUNCATED
        );
        // An options byte missing.
        assert_eq!(
            decode_err(ProtocolVersion::V311, b"\x82\x05\x00\x01\x00\x01a"),
            crate::codec::wire::TRUNCATED
        );
        for (text, error) in [
            (&b"a#"[..], TopicError::MisplacedMultiLevelWildcard),
            (b"", TopicError::Empty),
            (b"$share//a", TopicError::BadShareGroup),
        ] {
            let len = u8::try_from(text.len()).expect("short");
            let bytes = frame(0x82, &cat(&[b"\x00\x01\x00", &[len], text, b"\x00"]));
            let err = decode_err(ProtocolVersion::V311, &bytes);
            assert_eq!(err, DecodeError::TopicFilter(error));
            assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
        }
    }

    #[test]
    fn subscription_identifier_rules() {
        // Zero, repeated, or in the wrong packet's company.
        for (properties, expected) in [
            (&[0x02, 0x0B, 0x00][..], "subscription identifier is zero"),
            (
                &[0x04, 0x0B, 0x01, 0x0B, 0x02],
                "property included more than once",
            ),
            (&[0x02, 0x01, 0x00], "property not allowed in this packet"),
        ] {
            let bytes = frame(0x82, &cat(&[b"\x00\x01", properties, b"\x00\x01a\x00"]));
            assert_eq!(
                decode_err(ProtocolVersion::V5, &bytes),
                DecodeError::Protocol(expected),
                "{properties:02X?}"
            );
        }
    }

    #[test]
    fn packet_identifier_zero_is_refused() {
        assert_eq!(
            decode_err(ProtocolVersion::V311, b"\x82\x06\x00\x00\x00\x01a\x00"),
            DecodeError::Protocol("packet identifier is zero")
        );
    }
}
