//! A session's subscriptions, one per filter ([MQTT-3.8.4-3]).
//!
//! Most devices hold one to a few subscriptions, and a hash table per session costs about 250
//! bytes even for one entry, more than the rest of an idle session. So a few subscriptions sit
//! in a vector, searched linearly; past [`FEW`] they move to a hash map, so a client with
//! thousands of subscriptions still subscribes in constant time.

use std::collections::HashMap;

use super::Subscription;
use crate::topic::TopicFilter;

/// Up to this many subscriptions are kept in a vector.
const FEW: usize = 8;

#[derive(Debug)]
pub(super) enum Subscriptions {
    Few(Vec<Subscription>),
    Many(HashMap<TopicFilter, Subscription>),
}

impl Default for Subscriptions {
    fn default() -> Self {
        Subscriptions::Few(Vec::new())
    }
}

impl Subscriptions {
    pub fn len(&self) -> usize {
        match self {
            Subscriptions::Few(few) => few.len(),
            Subscriptions::Many(many) => many.len(),
        }
    }

    pub fn contains(&self, filter: &TopicFilter) -> bool {
        match self {
            Subscriptions::Few(few) => few.iter().any(|s| &s.filter == filter),
            Subscriptions::Many(many) => many.contains_key(filter),
        }
    }

    /// Adds a subscription, replacing the one with the same filter.
    pub fn insert(&mut self, subscription: Subscription) {
        match self {
            Subscriptions::Few(few) => {
                if let Some(existing) = few.iter_mut().find(|s| s.filter == subscription.filter) {
                    *existing = subscription;
                } else if few.len() < FEW {
                    // Grow one at a time: the common session holds one subscription.
                    few.reserve_exact(1);
                    few.push(subscription);
                } else {
                    let mut many: HashMap<_, _> =
                        few.drain(..).map(|s| (s.filter.clone(), s)).collect();
                    many.insert(subscription.filter.clone(), subscription);
                    *self = Subscriptions::Many(many);
                }
            }
            Subscriptions::Many(many) => {
                many.insert(subscription.filter.clone(), subscription);
            }
        }
    }

    /// Removes the subscription with this filter; whether there was one.
    pub fn remove(&mut self, filter: &TopicFilter) -> bool {
        match self {
            Subscriptions::Few(few) => match few.iter().position(|s| &s.filter == filter) {
                Some(index) => {
                    // Order does not matter; the vector keeps no spare room once empty.
                    few.swap_remove(index);
                    if few.is_empty() {
                        *few = Vec::new();
                    }
                    true
                }
                None => false,
            },
            Subscriptions::Many(many) => many.remove(filter).is_some(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        let (few, many) = match self {
            Subscriptions::Few(few) => (Some(few.iter()), None),
            Subscriptions::Many(many) => (None, Some(many.values())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}

impl FromIterator<Subscription> for Subscriptions {
    fn from_iter<I: IntoIterator<Item = Subscription>>(iter: I) -> Self {
        let mut subscriptions = Subscriptions::default();
        for subscription in iter {
            subscriptions.insert(subscription);
        }
        subscriptions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{QoS, SubscriptionOptions};

    fn sub(filter: &str, qos: QoS) -> Subscription {
        Subscription {
            filter: TopicFilter::new(filter).expect("valid filter"),
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
            id: None,
        }
    }

    fn filter(f: &str) -> TopicFilter {
        TopicFilter::new(f).expect("valid filter")
    }

    #[test]
    fn one_per_filter_across_the_switch_to_a_map() {
        let mut subs = Subscriptions::default();
        for n in 0..3 * FEW {
            subs.insert(sub(&format!("a/{n}"), QoS::AtMostOnce));
            // Replacing keeps one per filter, in both forms.
            subs.insert(sub(&format!("a/{n}"), QoS::AtLeastOnce));
            assert_eq!(subs.len(), n + 1);
            assert_eq!(
                matches!(subs, Subscriptions::Many(_)),
                n + 1 > FEW,
                "form after {} subscriptions",
                n + 1
            );
        }
        assert!(subs.iter().all(|s| s.options.qos == QoS::AtLeastOnce));
        let mut seen: Vec<_> = subs.iter().map(|s| s.filter.as_str().to_owned()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3 * FEW);
        assert!(subs.contains(&filter("a/0")));
        assert!(subs.remove(&filter("a/0")));
        assert!(!subs.remove(&filter("a/0")));
        assert!(!subs.contains(&filter("a/0")));
        assert_eq!(subs.len(), 3 * FEW - 1);
    }

    #[test]
    fn few_subscriptions_stay_in_a_vector_and_removal_frees_it() {
        let mut subs: Subscriptions = [sub("x/#", QoS::AtMostOnce), sub("y", QoS::ExactlyOnce)]
            .into_iter()
            .collect();
        let Subscriptions::Few(few) = &subs else {
            panic!("two subscriptions should stay in a vector");
        };
        assert_eq!(few.capacity(), 2);
        assert!(subs.contains(&filter("y")));
        assert!(!subs.contains(&filter("x")));
        assert!(subs.remove(&filter("x/#")));
        assert!(subs.remove(&filter("y")));
        assert_eq!(subs.len(), 0);
        let Subscriptions::Few(few) = &subs else {
            panic!("still a vector");
        };
        assert_eq!(few.capacity(), 0);
    }
}
