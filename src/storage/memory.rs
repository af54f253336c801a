//! A store kept in process memory: the reference backend for the [`Store`] contract, and the
//! model the database backends are tested against.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{
    MessageId, QueuedEntry, SessionRecord, Snapshot, Store, StoreError, StoreOp, StoredSession,
};
use crate::message::Message;
use crate::session::Subscription;

/// Everything in maps behind one mutex: a batch is applied under the lock, so it is
/// all-or-nothing for readers, as a database transaction would be. Survives a restart of the
/// server inside one process (tests use that), not of the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default, Clone)]
struct Inner {
    sessions: BTreeMap<Arc<str>, StoredState>,
    messages: BTreeMap<MessageId, Arc<Message>>,
    retained: BTreeMap<String, Arc<Message>>,
}

#[derive(Debug, Clone)]
struct StoredState {
    record: SessionRecord,
    subscriptions: BTreeMap<String, Subscription>,
    queue: BTreeMap<u64, QueuedEntry>,
    incoming: BTreeSet<u16>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let mut inner = self.inner.lock();
        let referenced: BTreeSet<MessageId> = inner
            .sessions
            .values()
            .flat_map(|s| s.queue.values().map(|e| e.message))
            .collect();
        inner.messages.retain(|id, _| referenced.contains(id));
        Ok(Snapshot {
            sessions: inner
                .sessions
                .values()
                .map(|s| StoredSession {
                    record: s.record.clone(),
                    subscriptions: s.subscriptions.values().cloned().collect(),
                    queue: s.queue.iter().map(|(k, v)| (*k, v.clone())).collect(),
                    incoming: s.incoming.iter().copied().collect(),
                })
                .collect(),
            messages: inner.messages.clone(),
            retained: inner.retained.values().cloned().collect(),
        })
    }

    fn apply(&self, batch: &[StoreOp], _durable: bool) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        for op in batch {
            match op {
                StoreOp::PutSession(record) => {
                    inner
                        .sessions
                        .entry(record.client_id.clone())
                        .and_modify(|s| s.record = record.clone())
                        .or_insert_with(|| StoredState {
                            record: record.clone(),
                            subscriptions: BTreeMap::new(),
                            queue: BTreeMap::new(),
                            incoming: BTreeSet::new(),
                        });
                }
                StoreOp::DeleteSession { client_id } => {
                    inner.sessions.remove(client_id);
                }
                StoreOp::PutSubscription {
                    client_id,
                    subscription,
                } => {
                    if let Some(s) = inner.sessions.get_mut(client_id) {
                        s.subscriptions.insert(
                            subscription.filter.as_str().to_owned(),
                            subscription.clone(),
                        );
                    }
                }
                StoreOp::DeleteSubscription { client_id, filter } => {
                    if let Some(s) = inner.sessions.get_mut(client_id) {
                        s.subscriptions.remove(filter.as_str());
                    }
                }
                StoreOp::PutMessage { id, message } => {
                    inner.messages.insert(*id, message.clone());
                }
                StoreOp::DeleteMessage(id) => {
                    inner.messages.remove(id);
                }
                StoreOp::PutQueued {
                    client_id,
                    seq,
                    entry,
                } => {
                    if let Some(s) = inner.sessions.get_mut(client_id) {
                        s.queue.insert(*seq, entry.clone());
                    }
                }
                StoreOp::DeleteQueued { client_id, seq } => {
                    if let Some(s) = inner.sessions.get_mut(client_id) {
                        s.queue.remove(seq);
                    }
                }
                StoreOp::PutIncoming {
                    client_id,
                    packet_id,
                } => {
                    if let Some(s) = inner.sessions.get_mut(client_id) {
                        s.incoming.insert(*packet_id);
                    }
                }
                StoreOp::DeleteIncoming {
                    client_id,
                    packet_id,
                } => {
                    if let Some(s) = inner.sessions.get_mut(client_id) {
                        s.incoming.remove(packet_id);
                    }
                }
                StoreOp::PutRetained(message) => {
                    inner
                        .retained
                        .insert(message.topic.as_str().to_owned(), message.clone());
                }
                StoreOp::DeleteRetained(topic) => {
                    inner.retained.remove(topic.as_str());
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
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
            will: None,
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
            published_at: None,
        })
    }

    #[test]
    fn sessions_keep_their_subscriptions_until_deleted() {
        let store = MemoryStore::new();
        store
            .apply(
                &[
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
                ],
                false,
            )
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
            .apply(
                &[
                    StoreOp::PutRetained(retained("a")),
                    StoreOp::PutRetained(retained("b")),
                    StoreOp::PutRetained(retained("a")),
                    StoreOp::DeleteRetained(TopicName::new("b").expect("valid")),
                ],
                false,
            )
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
