//! A store kept in process memory: the reference backend for the [`Store`] contract.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{SessionRecord, Snapshot, Store, StoreError, StoreOp, StoredSession};
use crate::message::Message;
use crate::session::Subscription;

/// Sessions and retained messages in maps behind one mutex: a batch is applied under the lock, so
/// it is all-or-nothing for readers, as a database transaction would be.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: BTreeMap<Arc<str>, (SessionRecord, BTreeMap<String, Subscription>)>,
    retained: BTreeMap<String, Arc<Message>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let inner = self.inner.lock();
        Ok(Snapshot {
            sessions: inner
                .sessions
                .values()
                .map(|(record, subscriptions)| StoredSession {
                    record: record.clone(),
                    subscriptions: subscriptions.values().cloned().collect(),
                })
                .collect(),
            retained: inner.retained.values().cloned().collect(),
        })
    }

    fn apply(&self, batch: Vec<StoreOp>) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        for op in batch {
            match op {
                StoreOp::PutSession(record) => {
                    inner
                        .sessions
                        .entry(record.client_id.clone())
                        .and_modify(|(existing, _)| *existing = record.clone())
                        .or_insert_with(|| (record, BTreeMap::new()));
                }
                StoreOp::DeleteSession { client_id } => {
                    inner.sessions.remove(&client_id);
                }
                StoreOp::PutSubscription {
                    client_id,
                    subscription,
                } => {
                    if let Some((_, subscriptions)) = inner.sessions.get_mut(&client_id) {
                        subscriptions.insert(subscription.filter.as_str().to_owned(), subscription);
                    }
                }
                StoreOp::DeleteSubscription { client_id, filter } => {
                    if let Some((_, subscriptions)) = inner.sessions.get_mut(&client_id) {
                        subscriptions.remove(filter.as_str());
                    }
                }
                StoreOp::PutRetained(message) => {
                    inner
                        .retained
                        .insert(message.topic.as_str().to_owned(), message);
                }
                StoreOp::DeleteRetained(topic) => {
                    inner.retained.remove(topic.as_str());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;

    use super::*;
    use crate::codec::{PublishProperties, QoS, SubscriptionOptions};
    use crate::topic::{TopicFilter, TopicName};

    fn record(id: &str) -> SessionRecord {
        SessionRecord {
            client_id: Arc::from(id),
            expiry_interval: 60,
            disconnected_at: None,
        }
    }

    fn subscription(filter: &str) -> Subscription {
        Subscription {
            filter: TopicFilter::new(filter).expect("valid"),
            options: SubscriptionOptions::default(),
            id: None,
        }
    }

    fn retained(topic: &str) -> Arc<Message> {
        Arc::new(Message {
            topic: TopicName::new(topic).expect("valid"),
            payload: Bytes::from_static(b"v"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at: None,
            origin: None,
        })
    }

    #[test]
    fn sessions_keep_their_subscriptions_until_deleted() {
        let store = MemoryStore::new();
        store
            .apply(vec![
                StoreOp::PutSession(record("a")),
                StoreOp::PutSubscription {
                    client_id: Arc::from("a"),
                    subscription: subscription("x/#"),
                },
                StoreOp::PutSubscription {
                    client_id: Arc::from("a"),
                    subscription: subscription("y"),
                },
                StoreOp::DeleteSubscription {
                    client_id: Arc::from("a"),
                    filter: TopicFilter::new("y").expect("valid"),
                },
                StoreOp::PutSession(SessionRecord {
                    disconnected_at: Some(SystemTime::UNIX_EPOCH),
                    ..record("a")
                }),
                StoreOp::PutSession(record("b")),
                StoreOp::DeleteSession {
                    client_id: Arc::from("b"),
                },
            ])
            .expect("applied");
        let snapshot = store.load().expect("loaded");
        assert_eq!(snapshot.sessions.len(), 1);
        let a = &snapshot.sessions[0];
        assert_eq!(a.record.disconnected_at, Some(SystemTime::UNIX_EPOCH));
        assert_eq!(
            a.subscriptions,
            vec![subscription("x/#")],
            "updating the record kept them"
        );
    }

    #[test]
    fn retained_messages_are_replaced_and_deleted_by_topic() {
        let store = MemoryStore::new();
        store
            .apply(vec![
                StoreOp::PutRetained(retained("a")),
                StoreOp::PutRetained(retained("b")),
                StoreOp::PutRetained(retained("a")),
                StoreOp::DeleteRetained(TopicName::new("b").expect("valid")),
            ])
            .expect("applied");
        let topics: Vec<String> = store
            .load()
            .expect("loaded")
            .retained
            .iter()
            .map(|m| m.topic.to_string())
            .collect();
        assert_eq!(topics, vec!["a"]);
    }
}
