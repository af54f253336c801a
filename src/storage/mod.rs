//! The seam between the broker's in-memory state and a store that outlives the process.
//!
//! The broker keeps its working state in memory (router, retained trie, session slots) and
//! describes every durable change as a [`StoreOp`]; a [`Store`] applies them in batches, one
//! transaction per batch, and hands everything back as a [`Snapshot`] when the broker starts.
//!
//! What is stored: persistent sessions (expiry, will, when they went offline), their
//! subscriptions, their outgoing QoS 1/2 messages (queued and in flight, with their state), the
//! packet ids of incoming QoS 2 messages awaiting PUBREL, and retained messages. A message body is
//! stored once under a [`MessageId`] and referenced by every queue entry that carries it; the
//! broker counts the references in memory and deletes the body with the last one (orphans left by
//! a crash are collected at load). QoS 0 messages are never stored.
//!
//! Backends ([`open`] by [`StoreKind`]):
//! - [`RedbStore`] (`<data dir>/starling.redb`), the supported one: one redb table per kind of
//!   record, a batch is one write transaction; a non-durable batch is a commit without fsync that
//!   the next durable commit or [`Store::flush`] persists. After an I/O error (a full disk) it
//!   reopens the file and replays the non-durable batches the reopen lost, so it recovers when
//!   space returns.
//! - `SledStore` (feature `sled`, `<data dir>/starling.sled/`): one sled tree with
//!   kind-prefixed keys, a batch is one atomic `apply_batch`, a durable one is followed by a
//!   flush.
//! - [`MemoryStore`]: the reference model the others are tested against (`tests.rs` runs random
//!   op sequences through both and compares what they load, also after a reopen).
//!
//! Both database backends encode values with `record.rs` (versioned per record, expiry stored as
//! wall-clock time) and write [`FORMAT_VERSION`] into a new store. A file they cannot decode is
//! [`StoreError::Corrupt`] with its path and is left in place: the operator decides. For the
//! broker's tests, [`FailingStore`] wraps any store and fails batches on demand.

mod failing;
mod memory;
mod record;
mod redb;
#[cfg(feature = "sled")]
mod sled;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use thiserror::Error;

pub use self::redb::RedbStore;
#[cfg(feature = "sled")]
pub use self::sled::SledStore;
pub use failing::{FailSwitch, FailingStore, OpKind};
pub use memory::MemoryStore;
pub use writer::{StoreFailed, StoreWriter, SyncMode, Ticket};

use crate::codec::QoS;
use crate::message::Message;
use crate::session::Subscription;
use crate::topic::{TopicFilter, TopicName};

/// The on-disk format this binary writes and reads. A store with a newer version is refused.
pub const FORMAT_VERSION: u32 = 1;

/// Which backend keeps the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A redb file, `<data dir>/starling.redb`: the supported backend.
    #[default]
    Redb,
    /// A sled database, `<data dir>/starling.sled/`; only in builds with the `sled` feature.
    Sled,
    /// Process memory: nothing survives the process (tests, and brokers that want no disk).
    Memory,
}

/// Opens the store of `kind` in the data directory `dir` (ignored for `Memory`, required for the
/// others).
pub fn open(kind: StoreKind, dir: Option<&Path>) -> Result<Arc<dyn Store>, StoreError> {
    let dir = || {
        dir.ok_or_else(|| {
            StoreError::Unavailable(format!("the {kind:?} store needs a data directory"))
        })
    };
    match kind {
        StoreKind::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreKind::Redb => Ok(Arc::new(RedbStore::open(dir()?)?)),
        StoreKind::Sled => open_sled(dir()?),
    }
}

#[cfg(feature = "sled")]
fn open_sled(dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(SledStore::open(dir)?))
}

#[cfg(not(feature = "sled"))]
fn open_sled(_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    Err(StoreError::Unavailable(
        "this Starling was built without the sled backend: use the redb store, or rebuild with \
         `cargo build --features sled`"
            .into(),
    ))
}

/// A durable store for sessions, their messages and retained messages.
pub trait Store: Send + Sync + 'static {
    /// Everything stored, to rebuild the broker at start.
    fn load(&self) -> Result<Snapshot, StoreError>;

    /// Applies a batch of changes in order, all or nothing (one transaction). When `durable`, it
    /// returns only once the batch would survive a power loss; otherwise it may sit in the OS
    /// cache until the next durable batch or [`Store::flush`].
    fn apply(&self, batch: &[StoreOp], durable: bool) -> Result<(), StoreError>;

    /// Makes every batch applied so far durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// Names a stored message body. Assigned by the broker, unique for the store's lifetime.
pub type MessageId = u64;

/// One durable change.
#[derive(Debug, Clone)]
pub enum StoreOp {
    /// Creates or updates a persistent session's record (not its subscriptions or queue).
    PutSession(SessionRecord),
    /// Removes a session with every subscription, queue entry and incoming packet id it had.
    /// Message bodies are not touched: the broker deletes those it no longer references.
    DeleteSession {
        client_id: Arc<str>,
    },
    /// Adds or replaces (by filter) a subscription of a stored session.
    PutSubscription {
        client_id: Arc<str>,
        subscription: Subscription,
    },
    DeleteSubscription {
        client_id: Arc<str>,
        filter: TopicFilter,
    },
    /// Stores a message body. Its `expires_at` is kept as wall-clock time; `origin` is not kept.
    PutMessage {
        id: MessageId,
        message: Arc<Message>,
    },
    DeleteMessage(MessageId),
    /// Adds or replaces an entry in a session's outgoing queue. `seq` orders the queue.
    PutQueued {
        client_id: Arc<str>,
        seq: u64,
        entry: QueuedEntry,
    },
    DeleteQueued {
        client_id: Arc<str>,
        seq: u64,
    },
    /// An incoming QoS 2 packet id that was acknowledged with PUBREC and awaits PUBREL.
    PutIncoming {
        client_id: Arc<str>,
        packet_id: u16,
    },
    DeleteIncoming {
        client_id: Arc<str>,
        packet_id: u16,
    },
    /// Stores a retained message in full (not by reference), replacing the topic's previous one.
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
    /// The will of the connection serving the session (or of its last connection, while the
    /// will delay runs). Its `expires_at` is kept as wall-clock time.
    pub will: Option<StoredWill>,
}

/// A will message with its delay.
#[derive(Debug, Clone)]
pub struct StoredWill {
    pub message: Arc<Message>,
    /// Will Delay Interval in seconds (0 for 3.1.1).
    pub delay_interval: u32,
}

impl PartialEq for StoredWill {
    fn eq(&self, other: &Self) -> bool {
        self.delay_interval == other.delay_interval && message_eq(&self.message, &other.message)
    }
}

/// Compares what a store keeps of two messages: everything but `origin`, and `expires_at` to
/// within a second (it round-trips through wall-clock time).
pub fn message_eq(a: &Message, b: &Message) -> bool {
    let expiry_close = match (a.expires_at, b.expires_at) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            let d = if x > y { x - y } else { y - x };
            d.as_secs() < 1
        }
        _ => false,
    };
    a.topic == b.topic
        && a.payload == b.payload
        && a.qos == b.qos
        && a.retain == b.retain
        && a.properties == b.properties
        && expiry_close
}

/// One message on its way to one persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEntry {
    pub message: MessageId,
    /// min(published QoS, granted QoS); never QoS 0.
    pub qos: QoS,
    /// RETAIN as it goes to this subscriber.
    pub retain: bool,
    pub subscription_ids: SmallVec<[NonZeroU32; 1]>,
    pub state: QueuedState,
}

/// Where an outgoing message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuedState {
    /// Not sent yet.
    Queued,
    /// PUBLISH sent with this packet id; awaiting PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent { packet_id: u16 },
    /// QoS 2: PUBREC received and PUBREL sent; awaiting PUBCOMP.
    Released { packet_id: u16 },
}

/// Everything a store holds.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub sessions: Vec<StoredSession>,
    /// Every stored message body that some queue entry references. Unreferenced bodies are
    /// deleted by `load` rather than returned.
    pub messages: BTreeMap<MessageId, Arc<Message>>,
    pub retained: Vec<Arc<Message>>,
}

/// A session with everything stored under it, as loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    pub record: SessionRecord,
    pub subscriptions: Vec<Subscription>,
    /// Its outgoing queue, by ascending `seq`.
    pub queue: Vec<(u64, QueuedEntry)>,
    /// Incoming QoS 2 packet ids awaiting PUBREL, ascending.
    pub incoming: Vec<u16>,
}

/// Why a store operation failed.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The disk is full or a quota was hit: nothing of the batch was stored. Recovers when space
    /// returns.
    #[error("store is out of space: {0}")]
    Full(String),
    /// A write or read failed for another reason (I/O error, closed database).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The files cannot be read as a store. Never discarded silently: the operator decides.
    #[error(
        "the store at {path} is corrupt or unreadable ({detail}); move it aside to start with an \
         empty store, or restore it from a backup"
    )]
    Corrupt { path: PathBuf, detail: String },
    /// Written by a newer Starling.
    #[error(
        "the store at {path} has format version {found}, newer than this binary's {supported}; \
         run a newer Starling or move the store aside"
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}
