//! Topic aliases (MQTT 5.0 section 3.3.2.3.4), one map per direction, living as long as the
//! network connection: aliases never survive a reconnect ([MQTT-3.3.2-7]).

use std::collections::HashMap;
use std::num::NonZeroU16;

use crate::topic::TopicName;

/// Aliases the client set towards us: alias -> topic.
#[derive(Debug, Default)]
pub struct InboundAliases {
    /// Index `alias - 1`; grown on demand up to the maximum we announced.
    topics: Vec<Option<TopicName>>,
}

/// Why an inbound alias could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasError {
    /// Above the Topic Alias Maximum we announced ([MQTT-3.3.2-9]): reason 0x94.
    OutOfRange,
    /// An empty topic with an alias we have never been told (section 3.3.2.3.4): protocol error.
    Unknown,
}

impl InboundAliases {
    /// Applies a PUBLISH's topic and alias: sets the alias when a topic comes with it, looks it up
    /// when the topic is empty. Returns the topic to route.
    pub fn resolve(
        &mut self,
        topic: &TopicName,
        alias: NonZeroU16,
        maximum: u16,
    ) -> Result<TopicName, AliasError> {
        if alias.get() > maximum {
            return Err(AliasError::OutOfRange);
        }
        let index = usize::from(alias.get() - 1);
        if topic.is_empty() {
            return self
                .topics
                .get(index)
                .and_then(Option::clone)
                .ok_or(AliasError::Unknown);
        }
        if self.topics.len() <= index {
            self.topics.resize(index + 1, None);
        }
        self.topics[index] = Some(topic.clone());
        Ok(topic.clone())
    }
}

/// Aliases we give the client: topic -> alias, assigned first come first served up to the
/// client's Topic Alias Maximum. Once all are taken, further topics go out in full: replacing
/// aliases would cost a full topic on every switch, which is what sending the topic costs anyway.
#[derive(Debug, Default)]
pub struct OutboundAliases {
    /// Boxed although a map is on the heap already: most clients take no aliases, and the empty
    /// map would cost every session 48 bytes.
    #[allow(clippy::box_collection)]
    assigned: Option<Box<HashMap<TopicName, NonZeroU16>>>,
}

/// How to address a PUBLISH to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundTopic {
    /// Send the topic, no alias.
    Full,
    /// Send the topic and this new alias; commit it with [`OutboundAliases::commit`] once sent.
    Assign(NonZeroU16),
    /// The client knows this alias: send an empty topic with it.
    Known(NonZeroU16),
}

impl OutboundAliases {
    /// Decides how to address `topic`, without changing anything yet (the PUBLISH may still be
    /// dropped as too large, and then the client would never learn the alias).
    pub fn plan(&self, topic: &TopicName, maximum: u16) -> OutboundTopic {
        if let Some(&alias) = self.assigned.as_ref().and_then(|a| a.get(topic)) {
            return OutboundTopic::Known(alias);
        }
        let next = self.assigned.as_ref().map_or(0, |a| a.len()) + 1;
        match u16::try_from(next).ok().and_then(NonZeroU16::new) {
            Some(alias) if alias.get() <= maximum => OutboundTopic::Assign(alias),
            _ => OutboundTopic::Full,
        }
    }

    /// Records an alias the client has now been sent.
    pub fn commit(&mut self, topic: &TopicName, alias: NonZeroU16) {
        self.assigned
            .get_or_insert_with(Box::default)
            .insert(topic.clone(), alias);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(n: u16) -> NonZeroU16 {
        NonZeroU16::new(n).expect("non-zero")
    }

    fn topic(s: &str) -> TopicName {
        TopicName::new(s).expect("valid")
    }

    #[test]
    fn inbound_alias_is_set_then_resolved_from_an_empty_topic() {
        let mut aliases = InboundAliases::default();
        assert_eq!(
            aliases.resolve(&TopicName::empty(), alias(1), 10),
            Err(AliasError::Unknown)
        );
        assert_eq!(
            aliases.resolve(&topic("a/b"), alias(3), 10),
            Ok(topic("a/b"))
        );
        assert_eq!(
            aliases.resolve(&TopicName::empty(), alias(3), 10),
            Ok(topic("a/b"))
        );
        assert_eq!(aliases.resolve(&topic("c"), alias(3), 10), Ok(topic("c")));
        assert_eq!(
            aliases.resolve(&TopicName::empty(), alias(3), 10),
            Ok(topic("c"))
        );
        assert_eq!(
            aliases.resolve(&topic("x"), alias(11), 10),
            Err(AliasError::OutOfRange)
        );
    }

    #[test]
    fn outbound_aliases_are_assigned_until_the_client_maximum() {
        let mut aliases = OutboundAliases::default();
        assert_eq!(aliases.plan(&topic("a"), 0), OutboundTopic::Full);
        let first = aliases.plan(&topic("a"), 2);
        assert_eq!(first, OutboundTopic::Assign(alias(1)));
        aliases.commit(&topic("a"), alias(1));
        assert_eq!(aliases.plan(&topic("a"), 2), OutboundTopic::Known(alias(1)));
        assert_eq!(
            aliases.plan(&topic("b"), 2),
            OutboundTopic::Assign(alias(2))
        );
        aliases.commit(&topic("b"), alias(2));
        assert_eq!(aliases.plan(&topic("c"), 2), OutboundTopic::Full);
    }
}
