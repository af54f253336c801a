//! Topic names and topic filters, validated at construction (MQTT 5.0 section 4.7).
//!
//! A [`TopicName`] is what a PUBLISH is addressed to: no wildcards. A [`TopicFilter`] is what a
//! SUBSCRIBE asks for: `+` and `#` allowed where the spec allows them, optionally inside a shared
//! subscription `$share/{group}/{filter}`. Both are cheap to clone (`Arc<str>`), because the same
//! topic is held by the message, the retained cache and the topic-alias maps at once.
//!
//! The UTF-8 rules common to every MQTT string (no U+0000, no surrogates) are enforced by the codec
//! before these constructors run; these add the topic rules, and reject control characters
//! (U+0001..U+001F, U+007F..U+009F), which the spec lets a receiver treat as malformed
//! (section 1.5.4) and which mosquitto refuses in topics too.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

/// The longest topic the wire format can carry: a two-byte length prefix.
pub const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// Why a topic name or filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    #[error("topic name contains a wildcard")]
    WildcardInName,
    #[error("'#' must be the last level of a filter and stand alone in it")]
    MisplacedMultiLevelWildcard,
    #[error("'+' must stand alone in its level")]
    MisplacedSingleLevelWildcard,
    #[error("topic contains a control character or U+0000")]
    ControlCharacter,
    #[error("shared subscription needs a non-empty group name without wildcards or '/'")]
    BadShareGroup,
    #[error("shared subscription has no topic filter after its group")]
    EmptySharedFilter,
}

/// A validated topic name: what a message is published to.
///
/// Invariant: valid MQTT string, no `+` or `#`, at most 65535 bytes. It is empty only in a decoded
/// v5 PUBLISH whose topic alias stands for the topic; the session resolves that before routing.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    /// Validates a topic name that must not be empty.
    pub fn new(topic: &str) -> Result<Self, TopicError> {
        if topic.is_empty() {
            return Err(TopicError::Empty);
        }
        Self::new_allow_empty(topic)
    }

    /// Validates a topic name as it appears on the wire, where an empty name is legal when a
    /// topic alias replaces it ([MQTT-3.3.2-1] with section 3.3.2.3.4).
    pub fn new_allow_empty(topic: &str) -> Result<Self, TopicError> {
        if topic.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        // [MQTT-3.3.2-2] the topic name in a PUBLISH must not contain wildcard characters.
        if topic.contains(['+', '#']) {
            return Err(TopicError::WildcardInName);
        }
        reject_control_characters(topic)?;
        Ok(TopicName(Arc::from(topic)))
    }

    /// The empty topic name of an aliased PUBLISH.
    pub fn empty() -> Self {
        TopicName(Arc::from(""))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The levels of the topic, split on `/`.
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A validated topic filter, possibly a shared subscription (`$share/{group}/{filter}`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter {
    /// The whole filter as the client sent it, `$share/` prefix included.
    full: Arc<str>,
    /// Byte offset where the matching part starts (0 unless shared).
    filter_start: u16,
    /// Length of the share group name (0 unless shared); the group starts at byte 7.
    group_len: u16,
}

const SHARE_PREFIX: &str = "$share/";

impl TopicFilter {
    /// Validates a topic filter (section 4.7.1) and, for `$share/` filters, the share syntax
    /// (section 4.8.2).
    pub fn new(filter: &str) -> Result<Self, TopicError> {
        if filter.is_empty() {
            // [MQTT-4.7.3-1] topic filters must be at least one character long.
            return Err(TopicError::Empty);
        }
        if filter.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        reject_control_characters(filter)?;
        let (filter_start, group_len) = match filter.strip_prefix(SHARE_PREFIX) {
            Some(rest) => {
                // [MQTT-4.8.2-1] a ShareName must be at least one character long and
                // [MQTT-4.8.2-2] must not contain '/', '+' or '#'.
                let slash = rest.find('/').ok_or(TopicError::EmptySharedFilter)?;
                let group = &rest[..slash];
                if group.is_empty() || group.contains(['+', '#']) {
                    return Err(TopicError::BadShareGroup);
                }
                let inner = &rest[slash + 1..];
                if inner.is_empty() {
                    return Err(TopicError::EmptySharedFilter);
                }
                let start = SHARE_PREFIX.len() + slash + 1;
                // Both fit: the whole filter is at most 65535 bytes.
                let start = u16::try_from(start).map_err(|_| TopicError::TooLong)?;
                let group_len = u16::try_from(slash).map_err(|_| TopicError::TooLong)?;
                (start, group_len)
            }
            None => (0, 0),
        };
        validate_wildcards(&filter[usize::from(filter_start)..])?;
        Ok(TopicFilter {
            full: Arc::from(filter),
            filter_start,
            group_len,
        })
    }

    /// The filter exactly as the client sent it (with any `$share/{group}/` prefix).
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The part that is matched against topic names (without any `$share/{group}/` prefix).
    pub fn filter(&self) -> &str {
        &self.full[usize::from(self.filter_start)..]
    }

    /// [`TopicFilter::filter`] as a shared string: the filter's own allocation unless it is a
    /// shared subscription, so an index keyed by it stores no second copy.
    pub fn filter_shared(&self) -> Arc<str> {
        if self.filter_start == 0 {
            self.full.clone()
        } else {
            Arc::from(self.filter())
        }
    }

    /// The share group, for a shared subscription.
    pub fn share_group(&self) -> Option<&str> {
        if self.filter_start == 0 {
            None
        } else {
            let start = SHARE_PREFIX.len();
            Some(&self.full[start..start + usize::from(self.group_len)])
        }
    }

    pub fn is_shared(&self) -> bool {
        self.filter_start != 0
    }

    /// True if the matching part contains `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.filter().contains(['+', '#'])
    }

    /// Whether a topic name matches this filter, with the `$` rule of [MQTT-4.7.2-1].
    pub fn matches(&self, topic: &TopicName) -> bool {
        filter_matches(self.filter(), topic.as_str())
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.full, f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

fn validate_wildcards(filter: &str) -> Result<(), TopicError> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') {
            // [MQTT-4.7.1-1] '#' must be the last character and occupy a whole level.
            if level != "#" || levels.peek().is_some() {
                return Err(TopicError::MisplacedMultiLevelWildcard);
            }
        }
        // [MQTT-4.7.1-2] '+' must occupy an entire level.
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

fn reject_control_characters(s: &str) -> Result<(), TopicError> {
    if s.chars().any(|c| c.is_control()) {
        return Err(TopicError::ControlCharacter);
    }
    Ok(())
}

/// Matches a filter (without `$share/` prefix) against a topic name, level by level.
///
/// `#` matches the parent level too (`a/#` matches `a`), and a filter starting with a wildcard never
/// matches a topic starting with `$` ([MQTT-4.7.2-1]).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    let mut filter_levels = filter.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> TopicName {
        TopicName::new(s).expect("valid topic name")
    }

    #[test]
    fn topic_names_reject_wildcards_control_characters_and_emptiness() {
        assert_eq!(TopicName::new("a/+/c"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::new("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::new(""), Err(TopicError::Empty));
        assert_eq!(TopicName::new("a\u{1}b"), Err(TopicError::ControlCharacter));
        assert_eq!(
            TopicName::new("a\u{9f}b"),
            Err(TopicError::ControlCharacter)
        );
        assert!(TopicName::new_allow_empty("").is_ok());
        assert!(TopicName::new("/").is_ok());
        assert!(TopicName::new("\u{feff}BOM kept").is_ok());
        assert_eq!(
            TopicName::new(&"a".repeat(MAX_TOPIC_LEN + 1)),
            Err(TopicError::TooLong)
        );
    }

    #[test]
    fn filters_follow_wildcard_placement_rules() {
        for ok in [
            "#",
            "+",
            "a/#",
            "a/+/b",
            "+/+",
            "/+",
            "a//b",
            "sport/tennis/#",
        ] {
            assert!(TopicFilter::new(ok).is_ok(), "{ok} should be valid");
        }
        assert_eq!(
            TopicFilter::new("a/#/b"),
            Err(TopicError::MisplacedMultiLevelWildcard)
        );
        assert_eq!(
            TopicFilter::new("a#"),
            Err(TopicError::MisplacedMultiLevelWildcard)
        );
        assert_eq!(
            TopicFilter::new("a/b+"),
            Err(TopicError::MisplacedSingleLevelWildcard)
        );
        assert_eq!(TopicFilter::new(""), Err(TopicError::Empty));
    }

    #[test]
    fn shared_subscriptions_parse_group_and_filter() {
        let f = TopicFilter::new("$share/workers/jobs/+").expect("valid");
        assert!(f.is_shared());
        assert_eq!(f.share_group(), Some("workers"));
        assert_eq!(f.filter(), "jobs/+");
        assert_eq!(f.as_str(), "$share/workers/jobs/+");
        assert_eq!(
            TopicFilter::new("$share//a"),
            Err(TopicError::BadShareGroup)
        );
        assert_eq!(
            TopicFilter::new("$share/g+/a"),
            Err(TopicError::BadShareGroup)
        );
        assert_eq!(
            TopicFilter::new("$share/g"),
            Err(TopicError::EmptySharedFilter)
        );
        assert_eq!(
            TopicFilter::new("$share/g/"),
            Err(TopicError::EmptySharedFilter)
        );
        let plain = TopicFilter::new("$sharex/a").expect("not a share");
        assert!(!plain.is_shared());
    }

    #[test]
    fn matching_follows_the_spec_examples() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "anything/at/all", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("#", "$SYS/uptime", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ];
        for (filter, topic, expected) in cases {
            let f = TopicFilter::new(filter).expect("valid filter");
            assert_eq!(f.matches(&name(topic)), expected, "{filter} vs {topic}");
        }
    }
}
