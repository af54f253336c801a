//! The seam between the broker's in-memory state and a store that outlives the process.
//!
//! The broker keeps its working state in memory (router, retained trie, session slots) and
//! describes every durable change as a [`StoreOp`]; a [`Store`] applies them in batches and hands
//! everything back as a [`Snapshot`] when the broker starts. [`MemoryStore`] is the backend of this
//! release: it survives a restart of the server inside one process (tests use that), not of the
//! process. Database backends implement the same two methods.
//!
//! What is stored: persistent sessions (expiry interval, when they went offline, subscriptions)
//! and retained messages. Not yet: QoS 1/2 messages queued or in flight, which live only in memory.

mod memory;

use std::sync::Arc;
use std::time::SystemTime;

use thiserror::Error;

pub use memory::MemoryStore;

use crate::message::Message;
use crate::session::Subscription;
use crate::topic::{TopicFilter, TopicName};

/// A durable store for sessions and retained messages.
pub trait Store: Send + Sync + 'static {
    /// Everything stored, to rebuild the broker at start.
    fn load(&self) -> Result<Snapshot, StoreError>;

    /// Applies a batch of changes, all or nothing, in order.
    fn apply(&self, batch: Vec<StoreOp>) -> Result<(), StoreError>;
}

/// One durable change.
#[derive(Debug, Clone)]
pub enum StoreOp {
    /// Creates or updates a persistent session's record (not its subscriptions).
    PutSession(SessionRecord),
    /// Removes a session and every subscription it had.
    DeleteSession {
        client_id: Arc<str>,
    },
    PutSubscription {
        client_id: Arc<str>,
        subscription: Subscription,
    },
    DeleteSubscription {
        client_id: Arc<str>,
        filter: TopicFilter,
    },
    PutRetained(Arc<Message>),
    DeleteRetained(TopicName),
}

/// A persistent session as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub client_id: Arc<str>,
    /// Seconds the session outlives its connection (`session::EXPIRY_NEVER` for ever).
    pub expiry_interval: u32,
    /// When its last connection closed; `None` while connected. Wall-clock time, so the expiry
    /// can be resumed after a restart.
    pub disconnected_at: Option<SystemTime>,
}

/// Everything a store holds.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub sessions: Vec<StoredSession>,
    pub retained: Vec<Arc<Message>>,
}

/// A session with its subscriptions, as loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    pub record: SessionRecord,
    pub subscriptions: Vec<Subscription>,
}

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
}
