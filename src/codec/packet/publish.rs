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
