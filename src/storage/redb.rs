//! The redb backend: one file, `<dir>/starling.redb`, one table per kind of record.
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"format_version"` | `u32` |
//! | `sessions` | client id | session record |
//! | `subscriptions` | (client id, filter) | options and identifier |
//! | `messages` | message id (`u64`) | message |
//! | `queue` | (client id, seq) | queue entry |
//! | `incoming` | (client id, packet id) | `()` |
//! | `retained` | topic | message |
//!
//! Values are encoded by [`super::record`]. redb orders tuple keys element by element, so a
//! session's subscriptions, queue and incoming ids are each one key range, which is how
//! `DeleteSession` removes them.
//!
//! Durability: a batch is one write transaction. A durable batch commits with
//! [`Durability::Immediate`] (fsync before `commit` returns); any other with
//! [`Durability::None`], which redb keeps in memory and the page cache until the next durable
//! commit, which persists it too. [`Store::flush`] is an empty durable commit.
//!
//! redb latches an I/O error: once a write fails (a full disk, say), every later transaction
//! fails with `PreviousIo` until the database is reopened, and the reopened database is back at
//! its last durable commit. So after an I/O error this store drops the database and reopens it on
//! the next call, then replays the non-durable batches committed since the last durable commit
//! (kept in memory for this, as cheap `Arc` clones, and made durable once they exceed
//! [`MAX_PENDING_OPS`]) before the new batch: a full disk that gets space back recovers without a
//! restart and without losing what the broker was told was applied.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::redb::{
    Database, DatabaseError, Durability, Error as RedbError, ReadableDatabase, ReadableTable,
    Table, TableDefinition, WriteTransaction,
};
use parking_lot::Mutex;

use super::record::{self, Clock, RecordError};
use super::{FORMAT_VERSION, MessageId, Snapshot, Store, StoreError, StoreOp, StoredSession};

/// The database file inside the data directory.
pub const FILE_NAME: &str = "starling.redb";

/// Non-durable ops kept for replay after an I/O error; past this, the next batch is committed
/// durably, which empties the list. Bounds memory when the broker rarely asks for durability.
pub const MAX_PENDING_OPS: usize = 4096;

/// redb's page cache. Its default (1 GiB) is sized for a database server; the broker reads the
/// store once at start and then only writes.
const CACHE_SIZE: usize = 32 * 1024 * 1024;

const VERSION_KEY: &str = "format_version";

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const SUBSCRIPTIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("subscriptions");
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
const INCOMING: TableDefinition<(&str, u16), ()> = TableDefinition::new("incoming");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");

type Opener = Box<dyn Fn() -> Result<Database, DatabaseError> + Send + Sync>;

/// A [`Store`] in a redb database file.
pub struct RedbStore {
    path: PathBuf,
    open: Opener,
    state: Mutex<State>,
}

struct State {
    /// `None` after an I/O error, until the next call reopens it.
    db: Option<Database>,
    /// Non-durable ops committed since the last durable commit, in order.
    pending: Vec<StoreOp>,
}

impl Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the store in `dir` (created if missing), or creates an empty one. Refuses a file it
    /// cannot read as a store ([`StoreError::Corrupt`]) or that a newer Starling wrote
    /// ([`StoreError::NewerFormat`]), leaving it in place.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        fs::create_dir_all(dir).map_err(|e| {
            io_error(
                &e,
                &format!("cannot create the data directory {}", dir.display()),
            )
        })?;
        let path = dir.join(FILE_NAME);
        let file = path.clone();
        RedbStore::with_opener(
            path,
            Box::new(move || {
                Database::builder()
                    .set_cache_size(CACHE_SIZE)
                    .set_check_integrity_on_open(true)
                    .create(&file)
            }),
        )
    }

    /// Opens through `open`, which tests point at a storage backend that can fail on demand.
    fn with_opener(path: PathBuf, open: Opener) -> Result<RedbStore, StoreError> {
        let store = RedbStore {
            path,
            open,
            state: Mutex::new(State {
                db: None,
                pending: Vec::new(),
            }),
        };
        let db = store.open_checked()?;
        store.state.lock().db = Some(db);
        Ok(store)
    }

    /// Opens the database and checks (or, if new, writes) its format version, creating every
    /// table so readers never meet a missing one.
    fn open_checked(&self) -> Result<Database, StoreError> {
        let db = (self.open)().map_err(|e| self.error(e.into(), "cannot open the store"))?;
        let found = {
            let txn = db
                .begin_read()
                .map_err(|e| self.error(e.into(), "cannot read the store"))?;
            let fresh = txn
                .list_tables()
                .map_err(|e| self.error(e.into(), "cannot read the store"))?
                .next()
                .is_none();
            if fresh {
                None
            } else {
                let meta = txn.open_table(META).map_err(|e| {
                    self.corrupt(format!("not a Starling store (no format version: {e})"))
                })?;
                let version = meta
                    .get(VERSION_KEY)
                    .map_err(|e| self.error(e.into(), "cannot read the store"))?
                    .ok_or_else(|| self.corrupt("not a Starling store (no format version)"))?;
                Some(version.value())
            }
        };
        match found {
            Some(v) if v > FORMAT_VERSION => {
                return Err(StoreError::NewerFormat {
                    path: self.path.clone(),
                    found: v,
                    supported: FORMAT_VERSION,
                });
            }
            Some(v) if v < FORMAT_VERSION => {
                return Err(self.corrupt(format!("unknown format version {v}")));
            }
            _ => {}
        }
        let init = || -> Result<(), RedbError> {
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                if found.is_none() {
                    meta.insert(VERSION_KEY, FORMAT_VERSION)?;
                }
                drop(Tables::open(&txn)?);
            }
            txn.commit()?;
            Ok(())
        };
        init().map_err(|e| self.error(e, "cannot initialise the store"))?;
        Ok(db)
    }

    /// Runs `f` on the open database, reopening it (and replaying what the reopen lost) after an
    /// earlier I/O error. An I/O error in `f` drops the database for the next call to reopen.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database, &mut Vec<StoreOp>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let db = match state.db.take() {
            Some(db) => db,
            None => {
                let db = self.open_checked()?;
                if !state.pending.is_empty() {
                    tracing::info!(
                        ops = state.pending.len(),
                        "store reopened after an I/O error; replaying non-durable batches"
                    );
                    self.write(&db, &state.pending, true)?;
                    state.pending.clear();
                }
                db
            }
        };
        let result = f(&db, &mut state.pending);
        match &result {
            Err(e @ (StoreError::Full(_) | StoreError::Unavailable(_))) => {
                tracing::warn!(error = %e, "store failed; it is reopened on next use");
            }
            _ => state.db = Some(db),
        }
        result
    }

    /// Applies `batch` in one write transaction.
    fn write(&self, db: &Database, batch: &[StoreOp], durable: bool) -> Result<(), StoreError> {
        let run = || -> Result<(), RedbError> {
            let mut txn = db.begin_write()?;
            txn.set_durability(if durable {
                Durability::Immediate
            } else {
                Durability::None
            })?;
            {
                let mut t = Tables::open(&txn)?;
                let clock = Clock::now();
                for op in batch {
                    t.apply(op, clock)?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        run().map_err(|e| self.error(e, "cannot write to the store"))
    }

    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    fn record_error(&self, table: &str, key: impl Debug, e: RecordError) -> StoreError {
        self.corrupt(format!("{table} key {key:?}: {e}"))
    }

    /// Sorts a redb error into the store's kinds: a full disk, a file that is not a store, or
    /// anything else (the disk or the file went away).
    fn error(&self, e: RedbError, what: &str) -> StoreError {
        match e {
            RedbError::Io(io) => self.io_error(&io, what),
            RedbError::Backend(inner) => match inner.downcast::<io::Error>() {
                Ok(io) => self.io_error(&io, what),
                Err(other) => {
                    StoreError::Unavailable(format!("{what} at {}: {other}", self.path.display()))
                }
            },
            RedbError::Corrupted(_)
            | RedbError::UpgradeRequired(_)
            | RedbError::TableTypeMismatch { .. }
            | RedbError::TableIsMultimap(_)
            | RedbError::TableIsNotMultimap(_)
            | RedbError::TypeDefinitionChanged { .. } => self.corrupt(e.to_string()),
            RedbError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                "{what} at {}: another process has it open",
                self.path.display()
            )),
            other => StoreError::Unavailable(format!("{what} at {}: {other}", self.path.display())),
        }
    }

    /// A file that ends early or holds invalid data is not a store; other I/O errors are the
    /// disk's.
    fn io_error(&self, e: &io::Error, what: &str) -> StoreError {
        match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => {
                self.corrupt(format!("{what}: {e}"))
            }
            _ => io_error(e, &format!("{what} at {}", self.path.display())),
        }
    }
}

/// A full disk or exceeded quota is [`StoreError::Full`]; other I/O errors are
/// [`StoreError::Unavailable`].
pub(super) fn io_error(e: &io::Error, what: &str) -> StoreError {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    let full = matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT));
    if full {
        StoreError::Full(format!("{what}: {e}"))
    } else {
        StoreError::Unavailable(format!("{what}: {e}"))
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.with_db(|db, _| self.read_all(db))
    }

    fn apply(&self, batch: &[StoreOp], durable: bool) -> Result<(), StoreError> {
        self.with_db(|db, pending| {
            let durable = durable || pending.len() + batch.len() > MAX_PENDING_OPS;
            self.write(db, batch, durable)?;
            if durable {
                pending.clear();
            } else {
                pending.extend_from_slice(batch);
            }
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.with_db(|db, pending| {
            if !pending.is_empty() {
                self.write(db, &[], true)?;
                pending.clear();
            }
            Ok(())
        })
    }
}

impl RedbStore {
    /// Reads everything and deletes message bodies no queue entry references, in one write
    /// transaction.
    fn read_all(&self, db: &Database) -> Result<Snapshot, StoreError> {
        let clock = Clock::now();
        let failed = |e: RedbError| self.error(e, "cannot read the store");
        let txn = db.begin_write().map_err(|e| failed(e.into()))?;
        let mut snapshot = Snapshot::default();
        let mut orphans = Vec::new();
        {
            let mut t = Tables::open(&txn).map_err(failed)?;
            let mut sessions: BTreeMap<String, StoredSession> = BTreeMap::new();
            for row in t.sessions.iter().map_err(|e| failed(e.into()))? {
                let (k, v) = row.map_err(|e| failed(e.into()))?;
                let client = k.value();
                let record = record::decode_session(Arc::from(client), v.value(), clock)
                    .map_err(|e| self.record_error("sessions", client, e))?;
                sessions.insert(
                    client.to_owned(),
                    StoredSession {
                        record,
                        subscriptions: Vec::new(),
                        queue: Vec::new(),
                        incoming: Vec::new(),
                    },
                );
            }
            for row in t.subscriptions.iter().map_err(|e| failed(e.into()))? {
                let (k, v) = row.map_err(|e| failed(e.into()))?;
                let (client, filter) = k.value();
                let subscription = record::decode_subscription(filter, v.value())
                    .map_err(|e| self.record_error("subscriptions", (client, filter), e))?;
                self.owner(&mut sessions, "subscriptions", client)?
                    .subscriptions
                    .push(subscription);
            }
            let mut referenced = BTreeSet::new();
            for row in t.queue.iter().map_err(|e| failed(e.into()))? {
                let (k, v) = row.map_err(|e| failed(e.into()))?;
                let (client, seq) = k.value();
                let entry = record::decode_queued(v.value())
                    .map_err(|e| self.record_error("queue", (client, seq), e))?;
                referenced.insert(entry.message);
                self.owner(&mut sessions, "queue", client)?
                    .queue
                    .push((seq, entry));
            }
            for row in t.incoming.iter().map_err(|e| failed(e.into()))? {
                let (k, _) = row.map_err(|e| failed(e.into()))?;
                let (client, packet_id) = k.value();
                self.owner(&mut sessions, "incoming", client)?
                    .incoming
                    .push(packet_id);
            }
            for row in t.messages.iter().map_err(|e| failed(e.into()))? {
                let (k, v) = row.map_err(|e| failed(e.into()))?;
                let id: MessageId = k.value();
                if referenced.contains(&id) {
                    let message = record::decode_message(v.value(), clock)
                        .map_err(|e| self.record_error("messages", id, e))?;
                    snapshot.messages.insert(id, Arc::new(message));
                } else {
                    orphans.push(id);
                }
            }
            for row in t.retained.iter().map_err(|e| failed(e.into()))? {
                let (k, v) = row.map_err(|e| failed(e.into()))?;
                let message = record::decode_message(v.value(), clock)
                    .map_err(|e| self.record_error("retained", k.value(), e))?;
                snapshot.retained.push(Arc::new(message));
            }
            for id in &orphans {
                t.messages.remove(id).map_err(|e| failed(e.into()))?;
            }
            snapshot.sessions = sessions.into_values().collect();
        }
        if orphans.is_empty() {
            txn.abort().map_err(|e| failed(e.into()))?;
        } else {
            tracing::info!(
                count = orphans.len(),
                "deleted unreferenced stored messages"
            );
            txn.commit().map_err(|e| failed(e.into()))?;
        }
        Ok(snapshot)
    }

    /// The session a row belongs to. Every write checks the session exists, so a row without one
    /// means the file was changed by something else.
    fn owner<'a>(
        &self,
        sessions: &'a mut BTreeMap<String, StoredSession>,
        table: &str,
        client: &str,
    ) -> Result<&'a mut StoredSession, StoreError> {
        sessions.get_mut(client).ok_or_else(|| {
            self.corrupt(format!("{table} has rows of a missing session {client:?}"))
        })
    }
}

/// Every table of the store, open in one write transaction.
struct Tables<'txn> {
    sessions: Table<'txn, &'static str, &'static [u8]>,
    subscriptions: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    messages: Table<'txn, u64, &'static [u8]>,
    queue: Table<'txn, (&'static str, u64), &'static [u8]>,
    incoming: Table<'txn, (&'static str, u16), ()>,
    retained: Table<'txn, &'static str, &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Tables<'txn>, RedbError> {
        Ok(Tables {
            sessions: txn.open_table(SESSIONS)?,
            subscriptions: txn.open_table(SUBSCRIPTIONS)?,
            messages: txn.open_table(MESSAGES)?,
            queue: txn.open_table(QUEUE)?,
            incoming: txn.open_table(INCOMING)?,
            retained: txn.open_table(RETAINED)?,
        })
    }

    fn has_session(&self, client: &str) -> Result<bool, RedbError> {
        Ok(self.sessions.get(client)?.is_some())
    }

    /// Applies one op as [`super::MemoryStore`] does: rows of a session that is not stored are
    /// ignored.
    fn apply(&mut self, op: &StoreOp, clock: Clock) -> Result<(), RedbError> {
        match op {
            StoreOp::PutSession(r) => {
                self.sessions
                    .insert(&*r.client_id, &*record::encode_session(r, clock))?;
            }
            StoreOp::DeleteSession { client_id } => {
                let c: &str = client_id;
                self.sessions.remove(c)?;
                // The smallest string after `c` and every string it prefixes: the end of `c`'s
                // range in the (client, filter) order.
                let next = format!("{c}\0");
                self.subscriptions
                    .retain_in((c, "")..(next.as_str(), ""), |_, _| false)?;
                self.queue.retain_in((c, 0)..=(c, u64::MAX), |_, _| false)?;
                self.incoming
                    .retain_in((c, 0)..=(c, u16::MAX), |_, _| false)?;
            }
            StoreOp::PutSubscription {
                client_id,
                subscription,
            } => {
                if self.has_session(client_id)? {
                    self.subscriptions.insert(
                        (&**client_id, subscription.filter.as_str()),
                        &*record::encode_subscription(subscription),
                    )?;
                }
            }
            StoreOp::DeleteSubscription { client_id, filter } => {
                self.subscriptions.remove((&**client_id, filter.as_str()))?;
            }
            StoreOp::PutMessage { id, message } => {
                self.messages
                    .insert(id, &*record::encode_message(message, clock))?;
            }
            StoreOp::DeleteMessage(id) => {
                self.messages.remove(id)?;
            }
            StoreOp::PutQueued {
                client_id,
                seq,
                entry,
            } => {
                if self.has_session(client_id)? {
                    self.queue
                        .insert((&**client_id, *seq), &*record::encode_queued(entry))?;
                }
            }
            StoreOp::DeleteQueued { client_id, seq } => {
                self.queue.remove((&**client_id, *seq))?;
            }
            StoreOp::PutIncoming {
                client_id,
                packet_id,
            } => {
                if self.has_session(client_id)? {
                    self.incoming.insert((&**client_id, *packet_id), ())?;
                }
            }
            StoreOp::DeleteIncoming {
                client_id,
                packet_id,
            } => {
                self.incoming.remove((&**client_id, *packet_id))?;
            }
            StoreOp::PutRetained(message) => {
                self.retained.insert(
                    message.topic.as_str(),
                    &*record::encode_message(message, clock),
                )?;
            }
            StoreOp::DeleteRetained(topic) => {
                self.retained.remove(topic.as_str())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use ::redb::{ReadableTableMetadata, StorageBackend};
    use bytes::Bytes;

    use super::*;
    use crate::codec::{PublishProperties, QoS};
    use crate::message::Message;
    use crate::storage::{MemoryStore, SessionRecord};
    use crate::topic::TopicName;

    fn raw(dir: &Path) -> Database {
        Database::create(dir.join(FILE_NAME)).expect("raw open")
    }

    #[test]
    fn a_fresh_store_records_its_format_version() {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(RedbStore::open(dir.path()).expect("opens"));
        let db = raw(dir.path());
        let txn = db.begin_read().expect("read");
        let meta = txn.open_table(META).expect("meta");
        let version = meta.get(VERSION_KEY).expect("get").map(|v| v.value());
        assert_eq!(version, Some(FORMAT_VERSION));
    }

    #[test]
    fn a_store_from_a_newer_starling_is_refused_and_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(RedbStore::open(dir.path()).expect("opens"));
        {
            let db = raw(dir.path());
            let txn = db.begin_write().expect("write");
            txn.open_table(META)
                .expect("meta")
                .insert(VERSION_KEY, FORMAT_VERSION + 1)
                .expect("insert");
            txn.commit().expect("commit");
        }
        match RedbStore::open(dir.path()) {
            Err(StoreError::NewerFormat {
                path,
                found,
                supported,
            }) => {
                assert_eq!(path, dir.path().join(FILE_NAME));
                assert_eq!((found, supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
            }
            other => panic!("want NewerFormat, got {other:?}"),
        }
        // Refusing it changed nothing: the newer version is still recorded.
        let db = raw(dir.path());
        let txn = db.begin_read().expect("read");
        let version = txn
            .open_table(META)
            .expect("meta")
            .get(VERSION_KEY)
            .expect("get")
            .map(|v| v.value());
        assert_eq!(version, Some(FORMAT_VERSION + 1));
    }

    #[test]
    fn a_redb_file_of_another_program_is_corrupt_not_overwritten() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let db = raw(dir.path());
            let txn = db.begin_write().expect("write");
            let other: TableDefinition<u8, u8> = TableDefinition::new("other");
            txn.open_table(other)
                .expect("other")
                .insert(1, 2)
                .expect("insert");
            txn.commit().expect("commit");
        }
        let err = RedbStore::open(dir.path()).expect_err("refused");
        assert!(
            matches!(&err, StoreError::Corrupt { detail, .. } if detail.contains("no format version")),
            "{err}"
        );
    }

    #[test]
    fn orphaned_bodies_are_deleted_from_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RedbStore::open(dir.path()).expect("opens");
        store
            .apply(
                &[StoreOp::PutMessage {
                    id: 3,
                    message: message(),
                }],
                true,
            )
            .expect("applies");
        assert!(store.load().expect("loads").messages.is_empty());
        drop(store);
        let db = raw(dir.path());
        let txn = db.begin_read().expect("read");
        let rows = txn
            .open_table(MESSAGES)
            .expect("messages")
            .len()
            .expect("len");
        assert_eq!(rows, 0);
    }

    #[test]
    fn a_damaged_file_is_refused_as_corrupt_or_loads_intact_never_panics() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RedbStore::open(dir.path()).expect("opens");
        let ops: Vec<StoreOp> = (0..50)
            .map(|i| StoreOp::PutRetained(message_to(&format!("t/{i}"))))
            .collect();
        store.apply(&ops, true).expect("applies");
        drop(store);
        let file = dir.path().join(FILE_NAME);
        let good = std::fs::read(&file).expect("read");
        let mut refused = 0;
        // One flipped byte at a time, spread over the whole file.
        for k in 0..32 {
            let at = k * good.len() / 32 + 17;
            let mut bad = good.clone();
            bad[at] ^= 0x5A;
            std::fs::write(&file, &bad).expect("write");
            match RedbStore::open(dir.path()) {
                Err(StoreError::Corrupt { path, .. }) => {
                    assert_eq!(path, file);
                    refused += 1;
                }
                Err(other) => panic!("byte {at}: want Corrupt, got {other}"),
                Ok(store) => {
                    let snapshot = store.load().expect("an opened store loads");
                    assert_eq!(snapshot.retained.len(), 50, "byte {at}");
                    assert!(
                        snapshot
                            .retained
                            .iter()
                            .all(|m| m.payload == message().payload)
                    );
                }
            }
        }
        assert!(refused > 0, "some flips hit live pages");
    }

    fn message() -> Arc<Message> {
        message_to("t")
    }

    fn message_to(topic: &str) -> Arc<Message> {
        Arc::new(Message {
            topic: TopicName::new(topic).expect("valid"),
            payload: Bytes::from_static(&[7; 2048]),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at: None,
            origin: None,
            published_at: None,
        })
    }

    /// A disk in memory that survives reopening the database, and runs full on demand: while
    /// full, writes and growth fail with `StorageFull`, as ENOSPC does.
    #[derive(Debug, Clone, Default)]
    struct Disk {
        bytes: Arc<Mutex<Vec<u8>>>,
        full: Arc<AtomicBool>,
    }

    impl Disk {
        fn check_space(&self) -> io::Result<()> {
            if self.full.load(Ordering::SeqCst) {
                Err(io::Error::from(io::ErrorKind::StorageFull))
            } else {
                Ok(())
            }
        }
    }

    impl StorageBackend for Disk {
        fn len(&self) -> io::Result<u64> {
            Ok(self.bytes.lock().len() as u64)
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
            let bytes = self.bytes.lock();
            let start = usize::try_from(offset).map_err(io::Error::other)?;
            let src = bytes
                .get(start..start + out.len())
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            out.copy_from_slice(src);
            Ok(())
        }

        fn set_len(&self, len: u64) -> io::Result<()> {
            let len = usize::try_from(len).map_err(io::Error::other)?;
            let mut bytes = self.bytes.lock();
            if len > bytes.len() {
                self.check_space()?;
            }
            bytes.resize(len, 0);
            Ok(())
        }

        fn sync_data(&self) -> io::Result<()> {
            self.check_space()
        }

        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.check_space()?;
            let start = usize::try_from(offset).map_err(io::Error::other)?;
            let mut bytes = self.bytes.lock();
            let dst = bytes
                .get_mut(start..start + data.len())
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            dst.copy_from_slice(data);
            Ok(())
        }
    }

    fn session(id: &str) -> StoreOp {
        StoreOp::PutSession(SessionRecord {
            client_id: Arc::from(id),
            expiry_interval: 60,
            disconnected_at: None,
            will: None,
        })
    }

    #[test]
    fn a_full_disk_fails_batches_with_full_and_recovers_without_losing_applied_ones() {
        let disk = Disk::default();
        let backend = disk.clone();
        let store = RedbStore::with_opener(
            PathBuf::from("test.redb"),
            Box::new(move || Database::builder().create_with_backend(backend.clone())),
        )
        .expect("opens");
        let model = MemoryStore::new();
        let apply = |batch: &[StoreOp], durable: bool| {
            let result = store.apply(batch, durable);
            if result.is_ok() {
                model.apply(batch, durable).expect("model applies");
            }
            result
        };
        apply(&[session("durable")], true).expect("applies");
        // Non-durable: committed in memory only, lost by the reopen that recovery needs.
        apply(
            &[session("pending"), StoreOp::PutRetained(message())],
            false,
        )
        .expect("applies");

        disk.full.store(true, Ordering::SeqCst);
        let err = apply(&[session("refused")], true).expect_err("disk is full");
        assert!(matches!(err, StoreError::Full(_)), "{err}");
        let err = apply(&[session("refused too")], false).expect_err("still full");
        assert!(matches!(err, StoreError::Full(_)), "{err}");
        assert!(matches!(store.flush(), Err(StoreError::Full(_))));

        disk.full.store(false, Ordering::SeqCst);
        apply(&[session("after")], false).expect("recovers once space returns");
        let want = model.load().expect("model loads");
        let got = store.load().expect("loads");
        let ids = |s: &Snapshot| -> Vec<String> {
            s.sessions
                .iter()
                .map(|s| s.record.client_id.to_string())
                .collect()
        };
        assert_eq!(ids(&got), vec!["after", "durable", "pending"]);
        assert_eq!(ids(&got), ids(&want));
        assert_eq!(got.retained.len(), 1, "the replayed retained message");
    }
}
