//! PUBLISH (MQTT 5.0 section 3.3, 3.1.1 section 3.3).
//!
//! DUP, QoS and RETAIN come from the fixed header, checked by the framing. The payload is the
//! rest of the frame, a slice of it, never copied. There is one encoder, over a [`PublishView`]:
//! fan-out builds a view per subscriber from a shared message, and `encode(Packet::Publish)`
//! builds one from the packet.

use bytes::Bytes;

use super::{PublishFlags, kind};
use crate::codec::property::{self, FromProperties, Property, WriteProperties, id};
use crate::codec::strings::{read_topic_name, write_str};
use crate::codec::wire::{Sink, read_packet_id};
use crate::codec::{
    DecodeError, EncodeError, ProtocolVersion, Publish, PublishProperties, PublishView, QoS,
};

pub(super) fn decode(
    flags: PublishFlags,
    mut body: Bytes,
    version: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    // [MQTT-3.3.2-1] the topic name is a UTF-8 string, [MQTT-3.3.2-2] without wildcards. It is
    // empty only when a 5.0 topic alias stands for it (section 3.3.2.3.4); the session checks
    // the alias. Before 5.0 it has at least one character ([MQTT-4.7.3-1]).
    let topic = read_topic_name(&mut body, version.is_v5())?;
    // [MQTT-2.2.1-2] a packet identifier exactly when QoS > 0, [MQTT-2.2.1-3] non-zero.
    let packet_id = if flags.qos == QoS::AtMostOnce {
        None
    } else {
        Some(read_packet_id(&mut body)?)
    };
    let properties = if version.is_v5() {
        property::decode(&mut body)?
    } else {
        PublishProperties::default()
    };
    Ok(Publish {
        dup: flags.dup,
        qos: flags.qos,
        retain: flags.retain,
        topic,
        packet_id,
        properties,
        payload: body,
    })
}

/// A view of `publish` for the one PUBLISH encoder.
pub(super) fn view(publish: &Publish) -> PublishView<'_> {
    PublishView {
        dup: publish.dup,
        qos: publish.qos,
        retain: publish.retain,
        topic: publish.topic.as_str(),
        packet_id: publish.packet_id,
        properties: &publish.properties,
        topic_alias: publish.properties.topic_alias,
        subscription_identifiers: &publish.properties.subscription_identifiers,
        message_expiry_interval: publish.properties.message_expiry_interval,
        payload_len: publish.payload.len(),
    }
}

/// The fixed header's first byte for `view`.
pub(super) fn first_byte(view: &PublishView<'_>) -> u8 {
    kind::PUBLISH << 4 | u8::from(view.dup) << 3 | view.qos.as_u8() << 1 | u8::from(view.retain)
}

/// Writes the variable header: topic, packet identifier, and for 5.0 the properties.
pub(super) fn write_header<S: Sink>(
    view: &PublishView<'_>,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    if view.packet_id.is_some() != (view.qos != QoS::AtMostOnce) {
        // [MQTT-2.2.1-2]
        return Err(EncodeError::NotAllowed(
            "a packet identifier on a QoS 0 PUBLISH, or none on QoS 1 or 2",
        ));
    }
    if view.dup && view.qos == QoS::AtMostOnce {
        // [MQTT-3.3.1-2]
        return Err(EncodeError::NotAllowed("DUP on a QoS 0 PUBLISH"));
    }
    if view.topic.is_empty() && !version.is_v5() {
        // [MQTT-4.7.3-1] only a 5.0 topic alias can stand for the topic name.
        return Err(EncodeError::NotAllowed("an empty topic name before MQTT 5"));
    }
    write_str(s, "Topic Name", view.topic)?;
    if let Some(packet_id) = view.packet_id {
        s.write_u16(packet_id.get());
    }
    if version.is_v5() {
        property::write(s, &ViewProperties(view))?;
    }
    Ok(())
}

/// The properties of a view: the per-delivery fields come from the view itself.
struct ViewProperties<'v, 'a>(&'v PublishView<'a>);

impl WriteProperties for ViewProperties<'_, '_> {
    fn write_each<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let view = self.0;
        let base = view.properties;
        property::write_u8(
            s,
            id::PAYLOAD_FORMAT_INDICATOR,
            base.payload_format.map(property::payload_format_byte),
        );
        property::write_u32(s, id::MESSAGE_EXPIRY_INTERVAL, view.message_expiry_interval);
        property::write_u16(s, id::TOPIC_ALIAS, view.topic_alias.map(|v| v.get()));
        property::write_response_topic(s, base.response_topic.as_ref())?;
        property::write_bytes(
            s,
            id::CORRELATION_DATA,
            "Correlation Data",
            base.correlation_data.as_deref(),
        )?;
        property::write_user_properties(s, &base.user_properties)?;
        property::write_subscription_ids(s, view.subscription_identifiers)?;
        property::write_string(
            s,
            id::CONTENT_TYPE,
            "Content Type",
            base.content_type.as_deref(),
        )
    }
}

/// Section 3.3.2.3.
impl FromProperties for PublishProperties {
    fn apply(&mut self, property: Property) -> Result<(), DecodeError> {
        match property {
            Property::PayloadFormat(v) => self.payload_format = Some(v),
            Property::MessageExpiryInterval(v) => self.message_expiry_interval = Some(v),
            Property::TopicAlias(v) => self.topic_alias = Some(v),
            Property::ResponseTopic(v) => self.response_topic = Some(v),
            Property::CorrelationData(v) => self.correlation_data = Some(v),
            Property::User(v) => self.user_properties.push(v),
            // Section 3.3.2.3.8: one per matching subscription, so it may repeat here.
            Property::SubscriptionIdentifier(v) => self.subscription_identifiers.push(v),
            Property::ContentType(v) => self.content_type = Some(v),
            _ => return Err(property::not_allowed()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU16, NonZeroU32};

    use bytes::BytesMut;

    use super::*;
    use crate::codec::packet::testing::{
        ALL_VERSIONS, assert_wire, cat, decode_err, decode_one, encode_err, encoded, frame,
    };
    use crate::codec::{
        MAX_SUBSCRIPTION_ID, Packet, PacketId, PayloadFormat, ReasonCode, UserProperty,
        encode_publish_header, publish_encoded_len,
    };
    use crate::topic::{TopicError, TopicName};

    fn publish(qos: QoS, packet_id: Option<u16>, topic: &str, payload: &'static [u8]) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: TopicName::new_allow_empty(topic).expect("valid"),
            packet_id: packet_id.and_then(PacketId::new),
            properties: PublishProperties::default(),
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn v3_qos0_qos1_qos2_both_ways() {
        for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
            assert_wire(
                version,
                b"\x30\x0A\x00\x03a/bhello",
                &Packet::Publish(publish(QoS::AtMostOnce, None, "a/b", b"hello")),
            );
            let mut retained = publish(QoS::AtLeastOnce, Some(10), "a/b", b"");
            retained.retain = true;
            assert_wire(
                version,
                b"\x33\x07\x00\x03a/b\x00\x0A",
                &Packet::Publish(retained),
            );
            let mut dup = publish(QoS::ExactlyOnce, Some(0xFFFF), "t", b"\x00\xFF");
            dup.dup = true;
            assert_wire(
                version,
                b"\x3C\x07\x00\x01t\xFF\xFF\x00\xFF",
                &Packet::Publish(dup),
            );
        }
    }

    fn full_properties() -> PublishProperties {
        PublishProperties {
            payload_format: Some(PayloadFormat::Utf8),
            message_expiry_interval: Some(3600),
            topic_alias: NonZeroU16::new(7),
            response_topic: Some(TopicName::new("re/ply").expect("valid")),
            correlation_data: Some(Bytes::from_static(b"\x01\x02\x03")),
            user_properties: vec![
                UserProperty {
                    key: "a".into(),
                    value: "1".into(),
                },
                UserProperty {
                    key: "a".into(),
                    value: "2".into(),
                },
            ],
            subscription_identifiers: vec![
                NonZeroU32::new(1).expect("non-zero"),
                NonZeroU32::new(MAX_SUBSCRIPTION_ID).expect("non-zero"),
            ],
            content_type: Some("json".into()),
        }
    }

    const FULL_PROPERTIES: &[u8] = &[
        0x35, // property length 53
        0x01, 0x01, // Payload Format Indicator UTF-8
        0x02, 0x00, 0x00, 0x0E, 0x10, // Message Expiry Interval 3600
        0x23, 0x00, 0x07, // Topic Alias 7
        0x08, 0x00, 0x06, b'r', b'e', b'/', b'p', b'l', b'y', // Response Topic
        0x09, 0x00, 0x03, 0x01, 0x02, 0x03, // Correlation Data
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'1', // User Property a=1
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'2', // User Property a=2
        0x0B, 0x01, // Subscription Identifier 1
        0x0B, 0xFF, 0xFF, 0xFF, 0x7F, // Subscription Identifier 268435455
        0x03, 0x00, 0x04, b'j', b's', b'o', b'n', // Content Type "json"
    ];

    #[test]
    fn v5_with_every_property_both_ways() {
        let mut packet = publish(QoS::AtLeastOnce, Some(1), "a/b", b"{}");
        packet.properties = full_properties();
        let bytes = frame(
            0x32,
            &cat(&[b"\x00\x03a/b\x00\x01", FULL_PROPERTIES, b"{}"]),
        );
        assert_wire(ProtocolVersion::V5, &bytes, &Packet::Publish(packet));
    }

    #[test]
    fn v5_minimal_and_aliased_both_ways() {
        assert_wire(
            ProtocolVersion::V5,
            b"\x30\x05\x00\x01t\x00x",
            &Packet::Publish(publish(QoS::AtMostOnce, None, "t", b"x")),
        );
        // An empty topic name with a Topic Alias standing for it.
        let mut aliased = publish(QoS::AtMostOnce, None, "", b"x");
        aliased.properties.topic_alias = NonZeroU16::new(1);
        assert_wire(
            ProtocolVersion::V5,
            b"\x30\x07\x00\x00\x03\x23\x00\x01x",
            &Packet::Publish(aliased),
        );
    }

    #[test]
    fn v3_properties_are_not_written() {
        let mut packet = publish(QoS::AtMostOnce, None, "t", b"x");
        packet.properties = full_properties();
        assert_eq!(
            encoded(ProtocolVersion::V311, &Packet::Publish(packet)),
            b"\x30\x04\x00\x01tx"
        );
    }

    #[test]
    fn an_empty_topic_name_is_refused_before_v5() {
        for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
            let err = decode_err(version, b"\x30\x03\x00\x00x");
            assert_eq!(err, DecodeError::TopicName(TopicError::Empty));
            assert_eq!(err.reason_code(), ReasonCode::TopicNameInvalid);
            assert_eq!(
                encode_err(
                    version,
                    &Packet::Publish(publish(QoS::AtMostOnce, None, "", b""))
                ),
                EncodeError::NotAllowed("an empty topic name before MQTT 5")
            );
        }
    }

    #[test]
    fn wildcards_in_the_topic_name_are_refused() {
        // [MQTT-3.3.2-2]
        for version in ALL_VERSIONS {
            let props: &[u8] = if version.is_v5() { b"\x00" } else { b"" };
            for topic in [&b"a/#"[..], b"+", b"a/+/b"] {
                let len = u8::try_from(topic.len()).expect("short");
                let bytes = frame(0x30, &cat(&[&[0x00, len], topic, props]));
                assert_eq!(
                    decode_err(version, &bytes),
                    DecodeError::TopicName(TopicError::WildcardInName)
                );
            }
        }
    }

    #[test]
    fn topic_string_rules() {
        assert_eq!(
            decode_err(ProtocolVersion::V311, b"\x30\x05\x00\x03a\x00b"),
            DecodeError::Malformed("string contains U+0000")
        );
        assert_eq!(
            decode_err(ProtocolVersion::V311, b"\x30\x05\x00\x03\xED\xA0\x80"),
            DecodeError::Malformed("string is not well-formed UTF-8")
        );
        let bom = decode_one(ProtocolVersion::V311, b"\x30\x06\x00\x04\xEF\xBB\xBFt");
        let Ok(Packet::Publish(bom)) = bom else {
            panic!("a PUBLISH: {bom:?}");
        };
        assert_eq!(bom.topic.as_str(), "\u{FEFF}t");
    }

    #[test]
    fn the_packet_identifier_is_present_at_qos_1_and_2_and_not_zero() {
        // [MQTT-2.2.1-3]
        let err = decode_err(ProtocolVersion::V311, b"\x32\x05\x00\x01t\x00\x00");
        assert_eq!(err, DecodeError::Protocol("packet identifier is zero"));
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
        assert_eq!(
            decode_err(ProtocolVersion::V311, b"\x34\x04\x00\x01t\x01"),
            crate::codec::wire::TRUNCATED
        );
        // At QoS 0 the bytes after the topic are payload.
        let qos0 = decode_one(ProtocolVersion::V311, b"\x30\x05\x00\x01t\x00\x00");
        assert_eq!(
            qos0,
            Ok(Packet::Publish(publish(
                QoS::AtMostOnce,
                None,
                "t",
                b"\x00\x00"
            )))
        );
        let mut no_id = publish(QoS::AtLeastOnce, None, "t", b"");
        assert!(matches!(
            encode_err(ProtocolVersion::V311, &Packet::Publish(no_id.clone())),
            EncodeError::NotAllowed(_)
        ));
        no_id.qos = QoS::AtMostOnce;
        no_id.packet_id = PacketId::new(1);
        assert!(matches!(
            encode_err(ProtocolVersion::V311, &Packet::Publish(no_id)),
            EncodeError::NotAllowed(_)
        ));
        let mut dup0 = publish(QoS::AtMostOnce, None, "t", b"");
        dup0.dup = true;
        assert_eq!(
            encode_err(ProtocolVersion::V5, &Packet::Publish(dup0)),
            EncodeError::NotAllowed("DUP on a QoS 0 PUBLISH")
        );
    }

    fn v5_with_properties(properties: &[u8]) -> Vec<u8> {
        let len = u8::try_from(properties.len()).expect("short");
        frame(0x30, &cat(&[b"\x00\x01t", &[len], properties]))
    }

    #[test]
    fn property_rules() {
        for (properties, expected) in [
            (&[0x23, 0x00, 0x00][..], DecodeError::TopicAliasZero),
            (
                &[0x0B, 0x00],
                DecodeError::Protocol("subscription identifier is zero"),
            ),
            (
                &[0x01, 0x02],
                DecodeError::Protocol("payload format indicator is not 0 or 1"),
            ),
            (
                &[0x23, 0x00, 0x01, 0x23, 0x00, 0x02],
                DecodeError::Protocol("property included more than once"),
            ),
            (
                &[0x11, 0x00, 0x00, 0x00, 0x01],
                DecodeError::Protocol("property not allowed in this packet"),
            ),
            (
                &[0x7F, 0x00],
                DecodeError::Malformed("unknown property identifier"),
            ),
            (
                &[0x08, 0x00, 0x01, b'#'],
                DecodeError::TopicName(TopicError::WildcardInName),
            ),
            (
                &[0x08, 0x00, 0x00],
                DecodeError::TopicName(TopicError::Empty),
            ),
        ] {
            assert_eq!(
                decode_err(ProtocolVersion::V5, &v5_with_properties(properties)),
                expected,
                "{properties:02X?}"
            );
        }
        // A property length running past the frame.
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\x30\x05\x00\x01t\x05\x01"),
            DecodeError::Malformed("property length exceeds the packet")
        );
        // A property value running past the property length: the rest is payload.
        assert_eq!(
            decode_err(
                ProtocolVersion::V5,
                b"\x30\x08\x00\x01t\x02\x02\x00\x00\x00"
            ),
            crate::codec::wire::TRUNCATED
        );
    }

    #[test]
    fn the_payload_is_a_slice_of_the_frame() {
        let mut buf = BytesMut::from(&b"\x30\x08\x00\x03a/bpay"[..]);
        let start = buf.as_ptr();
        let packet = crate::codec::decode(&mut buf, &crate::codec::DecodeContext::default());
        let Ok(Some(Packet::Publish(publish))) = packet else {
            panic!("a PUBLISH: {packet:?}");
        };
        // The payload starts 7 bytes into the frame (2 header, 5 topic) and was not copied.
        assert_eq!(&publish.payload[..], b"pay");
        assert_eq!(publish.payload.as_ptr(), start.wrapping_add(7));
    }

    fn view<'a>(properties: &'a PublishProperties, ids: &'a [NonZeroU32]) -> PublishView<'a> {
        PublishView {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "a/b",
            packet_id: PacketId::new(2),
            properties,
            topic_alias: None,
            subscription_identifiers: ids,
            message_expiry_interval: Some(9),
            payload_len: 3,
        }
    }

    #[test]
    fn the_header_encoder_takes_per_delivery_fields_from_the_view() {
        // The shared properties carry an alias, identifiers and an expiry of their own; the
        // view's fields replace them.
        let mut shared = PublishProperties {
            topic_alias: NonZeroU16::new(5),
            subscription_identifiers: vec![NonZeroU32::new(99).expect("non-zero")],
            message_expiry_interval: Some(1000),
            ..PublishProperties::default()
        };
        shared.content_type = Some("c".into());
        let ids = [NonZeroU32::new(3).expect("non-zero")];
        let view = view(&shared, &ids);
        let mut out = BytesMut::new();
        encode_publish_header(&view, ProtocolVersion::V5, &mut out).expect("encodable");
        let header = b"\x33\x16\x00\x03a/b\x00\x02\x0B\x02\x00\x00\x00\x09\x0B\x03\x03\x00\x01c";
        assert_eq!(&out[..], &header[..]);
        assert_eq!(
            publish_encoded_len(&view, ProtocolVersion::V5),
            Ok(header.len() + 3)
        );
        // With the payload appended it is the PUBLISH those fields describe.
        out.extend_from_slice(b"xyz");
        let expected = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: TopicName::new("a/b").expect("valid"),
            packet_id: PacketId::new(2),
            properties: PublishProperties {
                message_expiry_interval: Some(9),
                subscription_identifiers: ids.to_vec(),
                content_type: Some("c".into()),
                ..PublishProperties::default()
            },
            payload: Bytes::from_static(b"xyz"),
        };
        assert_eq!(
            decode_one(ProtocolVersion::V5, &out),
            Ok(Packet::Publish(expected))
        );
    }

    #[test]
    fn encode_is_the_header_encoder_plus_the_payload() {
        let mut packet = publish(QoS::ExactlyOnce, Some(77), "x/y", b"body");
        packet.properties = full_properties();
        for version in ALL_VERSIONS {
            let mut split = BytesMut::new();
            encode_publish_header(&view_of(&packet), version, &mut split).expect("encodable");
            split.extend_from_slice(&packet.payload);
            assert_eq!(
                encoded(version, &Packet::Publish(packet.clone())),
                &split[..]
            );
        }
    }

    fn view_of(publish: &Publish) -> PublishView<'_> {
        super::view(publish)
    }

    #[test]
    fn oversized_fields_are_refused_not_truncated() {
        let properties = PublishProperties::default();
        let mut huge = view(&properties, &[]);
        huge.message_expiry_interval = None;
        huge.payload_len = 268_435_455;
        // Topic, packet identifier and an empty property list.
        let header_body = 5 + 2 + 1;
        assert_eq!(
            publish_encoded_len(&huge, ProtocolVersion::V5),
            Err(EncodeError::PacketTooLarge(268_435_455 + header_body))
        );
        huge.payload_len = 268_435_455 - header_body;
        assert_eq!(
            publish_encoded_len(&huge, ProtocolVersion::V5),
            Ok(268_435_455 + 5)
        );
        let long_topic = "t".repeat(65_536);
        let mut long = view(&properties, &[]);
        long.topic = &long_topic;
        let mut out = BytesMut::new();
        assert_eq!(
            encode_publish_header(&long, ProtocolVersion::V311, &mut out),
            Err(EncodeError::StringTooLong {
                field: "Topic Name",
                len: 65_536
            })
        );
        assert!(out.is_empty());
        let too_big = [NonZeroU32::new(MAX_SUBSCRIPTION_ID + 1).expect("non-zero")];
        let ids = view(&properties, &too_big);
        assert_eq!(
            publish_encoded_len(&ids, ProtocolVersion::V5),
            Err(EncodeError::VarIntTooLarge {
                field: "Subscription Identifier",
                value: u64::from(MAX_SUBSCRIPTION_ID + 1)
            })
        );
    }
}
