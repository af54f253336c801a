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
