//! The sled backend (cargo feature `sled`): a directory, `<dir>/starling.sled`, holding one sled
//! tree whose keys start with a byte naming their kind.
//!
//! | kind | key | value |
//! |---|---|---|
//! | 0 meta | `0` `format_version` | `u32`, big-endian |
//! | 1 sessions | `1` client | session record |
//! | 2 subscriptions | `2` len(client) client filter | options and identifier |
//! | 3 messages | `3` id (u64 BE) | message |
//! | 4 queue | `4` len(client) client seq (u64 BE) | queue entry |
//! | 5 incoming | `5` len(client) client packet id (u16 BE) | empty |
//! | 6 retained | `6` topic | message |
//!
//! `len(client)` is a big-endian `u32`, so `kind len(client) client` prefixes exactly one
//! session's rows (no client id can be a prefix of another's key), and big-endian numbers sort
//! the queue and incoming ids in order. Values are encoded by [`super::record`].
//!
//! Atomicity: one tree and [`sled::Tree::apply_batch`], which sled recovers all or nothing,
//! rather than a tree per kind and sled's multi-tree transactions, because those cannot scan:
//! `DeleteSession` needs a prefix scan, and it must see the rows earlier ops of the same batch
//! wrote. So a batch is first resolved against the tree plus an overlay of its own writes (under
//! a mutex, so no other batch interleaves), then applied as one sled batch.
//!
//! Durability: a durable batch is followed by [`sled::Db::flush`] (write and fsync of sled's
//! log). Others reach the disk with sled's own background flush (every 500 ms by default) or the
//! next flush; dropping the store flushes too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;

use super::record::{self, Clock, RecordError};
use super::redb::io_error;
use super::{FORMAT_VERSION, MessageId, Snapshot, Store, StoreError, StoreOp, StoredSession};

/// The database directory inside the data directory.
pub const DIR_NAME: &str = "starling.sled";

/// sled's page cache (its default is 1 GiB).
const CACHE_CAPACITY: u64 = 32 * 1024 * 1024;

const SESSIONS: u8 = 1;
const SUBSCRIPTIONS: u8 = 2;
const MESSAGES: u8 = 3;
const QUEUE: u8 = 4;
const INCOMING: u8 = 5;
const RETAINED: u8 = 6;

/// Kind 0, meta.
const VERSION_KEY: &[u8] = b"\x00format_version";

/// A [`Store`] in a sled database.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    /// Serialises batches (and loads): each is resolved against the tree before it is applied.
    write: Mutex<()>,
}

impl Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens the store in `dir` (created if missing), or creates an empty one. Refuses a database
    /// it cannot read as a store ([`StoreError::Corrupt`]) or that a newer Starling wrote
    /// ([`StoreError::NewerFormat`]).
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let path = dir.join(DIR_NAME);
        // sled opens a damaged log as an empty database, so "new" is decided from the directory,
        // not from what sled finds in it.
        let existed = fs::read_dir(&path).is_ok_and(|mut d| d.next().is_some());
        fs::create_dir_all(&path).map_err(|e| {
            io_error(
                &e,
                &format!("cannot create the store directory {}", path.display()),
            )
        })?;
        wait_for_lock_release(&path.join("db"));
        let opened = sled::Config::new()
            .path(&path)
            .cache_capacity(CACHE_CAPACITY)
            .open();
        let store = SledStore {
            db: opened.map_err(|e| open_error(&path, e))?,
            path,
            write: Mutex::new(()),
        };
        match store.db.get(VERSION_KEY).map_err(|e| store.error(e))? {
            Some(v) => {
                let found = <[u8; 4]>::try_from(&*v)
                    .map(u32::from_be_bytes)
                    .map_err(|_| store.corrupt("the format version is not 4 bytes"))?;
                if found > FORMAT_VERSION {
                    return Err(StoreError::NewerFormat {
                        path: store.path,
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                if found < FORMAT_VERSION {
                    return Err(store.corrupt(format!("unknown format version {found}")));
                }
            }
            None if !existed => {
                store
                    .db
                    .insert(VERSION_KEY, &FORMAT_VERSION.to_be_bytes())
                    .map_err(|e| store.error(e))?;
                store.db.flush().map_err(|e| store.error(e))?;
            }
            None => {
                return Err(store.corrupt(
                    "not a Starling store, or sled found its log damaged and discarded it (no \
                     format version)",
                ));
            }
        }
        Ok(store)
    }

    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    fn record_error(&self, kind: &str, key: impl Debug, e: RecordError) -> StoreError {
        self.corrupt(format!("{kind} key {key:?}: {e}"))
    }

    fn error(&self, e: sled::Error) -> StoreError {
        match e {
            sled::Error::Io(io) => match io.kind() {
                io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => {
                    self.corrupt(io.to_string())
                }
                _ => io_error(&io, &format!("store at {}", self.path.display())),
            },
            sled::Error::Corruption { .. } => self.corrupt(e.to_string()),
            other => StoreError::Unavailable(format!("store at {}: {other}", self.path.display())),
        }
    }

    /// Reads every row of one kind (keys still start with the kind byte).
    fn rows(&self, kind: u8) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> {
        self.db
            .scan_prefix([kind])
            .map(move |row| row.map_err(|e| self.error(e)))
    }

    /// The session an owned row belongs to, and where the rest of its key starts. Every write
    /// checks the session exists, so a row without one means something else changed the files.
    fn owner<'s>(
        &self,
        sessions: &'s mut BTreeMap<String, StoredSession>,
        kind: &str,
        k: &[u8],
    ) -> Result<(&'s mut StoredSession, usize), StoreError> {
        let (client, rest) = split_client(&k[1..])
            .ok_or_else(|| self.corrupt(format!("{kind} key {k:?} is malformed")))?;
        let at = k.len() - rest.len();
        let session = sessions.get_mut(client).ok_or_else(|| {
            self.corrupt(format!("{kind} has rows of a missing session {client:?}"))
        })?;
        Ok((session, at))
    }
}

/// sled releases the lock on its log from background threads some time after the database is
/// dropped, so a store reopened in the same process (a server restarted in place) waits for it,
/// briefly: another process holding it gets sled's own error once the wait is over.
fn wait_for_lock_release(log: &Path) {
    let Ok(file) = fs::File::open(log) else {
        return;
    };
    for _ in 0..200 {
        match file.try_lock() {
            // Closing the file releases the lock just taken.
            Ok(()) => return,
            Err(fs::TryLockError::WouldBlock) => thread::sleep(Duration::from_millis(10)),
            Err(fs::TryLockError::Error(_)) => return,
        }
    }
}

/// Opening errors: sled reports an unreadable configuration as `Unsupported`.
fn open_error(path: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => {
            io_error(&io, &format!("cannot open the store at {}", path.display()))
        }
        other => StoreError::Corrupt {
            path: path.to_owned(),
            detail: other.to_string(),
        },
    }
}

impl Store for SledStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let _write = self.write.lock();
        let clock = Clock::now();
        let mut sessions: BTreeMap<String, StoredSession> = BTreeMap::new();
        for row in self.rows(SESSIONS) {
            let (k, v) = row?;
            let client = std::str::from_utf8(&k[1..])
                .map_err(|_| self.corrupt(format!("session key {k:?} is not UTF-8")))?;
            let record = record::decode_session(Arc::from(client), &v, clock)
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
        for row in self.rows(SUBSCRIPTIONS) {
            let (k, v) = row?;
            let (session, at) = self.owner(&mut sessions, "subscriptions", &k)?;
            let filter = std::str::from_utf8(&k[at..])
                .map_err(|_| self.corrupt(format!("subscription key {k:?} is not UTF-8")))?;
            let subscription = record::decode_subscription(filter, &v)
                .map_err(|e| self.record_error("subscriptions", &k, e))?;
            session.subscriptions.push(subscription);
        }
        let mut referenced = BTreeSet::new();
        for row in self.rows(QUEUE) {
            let (k, v) = row?;
            let (session, at) = self.owner(&mut sessions, "queue", &k)?;
            let seq = <[u8; 8]>::try_from(&k[at..])
                .map(u64::from_be_bytes)
                .map_err(|_| self.corrupt(format!("queue key {k:?} is malformed")))?;
            let entry = record::decode_queued(&v).map_err(|e| self.record_error("queue", &k, e))?;
            referenced.insert(entry.message);
            session.queue.push((seq, entry));
        }
        for row in self.rows(INCOMING) {
            let (k, _) = row?;
            let (session, at) = self.owner(&mut sessions, "incoming", &k)?;
            let packet_id = <[u8; 2]>::try_from(&k[at..])
                .map(u16::from_be_bytes)
                .map_err(|_| self.corrupt(format!("incoming key {k:?} is malformed")))?;
            session.incoming.push(packet_id);
        }
        let mut snapshot = Snapshot::default();
        let mut orphans = sled::Batch::default();
        let mut orphan_count = 0usize;
        for row in self.rows(MESSAGES) {
            let (k, v) = row?;
            let id: MessageId = <[u8; 8]>::try_from(&k[1..])
                .map(u64::from_be_bytes)
                .map_err(|_| self.corrupt(format!("message key {k:?} is malformed")))?;
            if referenced.contains(&id) {
                let message = record::decode_message(&v, clock)
                    .map_err(|e| self.record_error("messages", id, e))?;
                snapshot.messages.insert(id, Arc::new(message));
            } else {
                orphans.remove(key(MESSAGES, &[&id.to_be_bytes()]));
                orphan_count += 1;
            }
        }
        for row in self.rows(RETAINED) {
            let (k, v) = row?;
            let message = record::decode_message(&v, clock)
                .map_err(|e| self.record_error("retained", String::from_utf8_lossy(&k[1..]), e))?;
            snapshot.retained.push(Arc::new(message));
        }
        if orphan_count > 0 {
            tracing::info!(count = orphan_count, "deleted unreferenced stored messages");
            self.db.apply_batch(orphans).map_err(|e| self.error(e))?;
            self.db.flush().map_err(|e| self.error(e))?;
        }
        snapshot.sessions = sessions.into_values().collect();
        Ok(snapshot)
    }

    fn apply(&self, batch: &[StoreOp], durable: bool) -> Result<(), StoreError> {
        let _write = self.write.lock();
        let clock = Clock::now();
        let mut overlay = Overlay {
            tree: &self.db,
            writes: BTreeMap::new(),
        };
        for op in batch {
            overlay.apply(op, clock).map_err(|e| self.error(e))?;
        }
        let mut sled_batch = sled::Batch::default();
        for (k, v) in overlay.writes {
            match v {
                Some(v) => sled_batch.insert(k, v),
                None => sled_batch.remove(k),
            }
        }
        self.db.apply_batch(sled_batch).map_err(|e| self.error(e))?;
        if durable {
            self.db.flush().map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(|e| self.error(e))
    }
}

/// A batch's writes over the tree: reads see the batch's own earlier writes.
struct Overlay<'a> {
    tree: &'a sled::Tree,
    /// `None` deletes.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Overlay<'_> {
    fn exists(&self, key: &[u8]) -> sled::Result<bool> {
        match self.writes.get(key) {
            Some(v) => Ok(v.is_some()),
            None => Ok(self.tree.contains_key(key)?),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    fn delete_prefix(&mut self, prefix: &[u8]) -> sled::Result<()> {
        for row in self.tree.scan_prefix(prefix).keys() {
            self.writes.insert(row?.to_vec(), None);
        }
        for (_, v) in self
            .writes
            .range_mut(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            *v = None;
        }
        Ok(())
    }

    /// Applies one op as [`super::MemoryStore`] does: rows of a session that is not stored are
    /// ignored.
    fn apply(&mut self, op: &StoreOp, clock: Clock) -> sled::Result<()> {
        let session = |c: &str| key(SESSIONS, &[c.as_bytes()]);
        match op {
            StoreOp::PutSession(r) => {
                self.put(session(&r.client_id), record::encode_session(r, clock));
            }
            StoreOp::DeleteSession { client_id } => {
                self.delete(session(client_id));
                for kind in [SUBSCRIPTIONS, QUEUE, INCOMING] {
                    self.delete_prefix(&owned_key(kind, client_id, &[]))?;
                }
            }
            StoreOp::PutSubscription {
                client_id,
                subscription,
            } => {
                if self.exists(&session(client_id))? {
                    self.put(
                        owned_key(
                            SUBSCRIPTIONS,
                            client_id,
                            subscription.filter.as_str().as_bytes(),
                        ),
                        record::encode_subscription(subscription),
                    );
                }
            }
            StoreOp::DeleteSubscription { client_id, filter } => {
                self.delete(owned_key(
                    SUBSCRIPTIONS,
                    client_id,
                    filter.as_str().as_bytes(),
                ));
            }
            StoreOp::PutMessage { id, message } => {
                self.put(
                    key(MESSAGES, &[&id.to_be_bytes()]),
                    record::encode_message(message, clock),
                );
            }
            StoreOp::DeleteMessage(id) => self.delete(key(MESSAGES, &[&id.to_be_bytes()])),
            StoreOp::PutQueued {
                client_id,
                seq,
                entry,
            } => {
                if self.exists(&session(client_id))? {
                    self.put(
                        owned_key(QUEUE, client_id, &seq.to_be_bytes()),
                        record::encode_queued(entry),
                    );
                }
            }
            StoreOp::DeleteQueued { client_id, seq } => {
                self.delete(owned_key(QUEUE, client_id, &seq.to_be_bytes()));
            }
            StoreOp::PutIncoming {
                client_id,
                packet_id,
            } => {
                if self.exists(&session(client_id))? {
                    self.put(
                        owned_key(INCOMING, client_id, &packet_id.to_be_bytes()),
                        Vec::new(),
                    );
                }
            }
            StoreOp::DeleteIncoming {
                client_id,
                packet_id,
            } => self.delete(owned_key(INCOMING, client_id, &packet_id.to_be_bytes())),
            StoreOp::PutRetained(message) => {
                self.put(
                    key(RETAINED, &[message.topic.as_str().as_bytes()]),
                    record::encode_message(message, clock),
                );
            }
            StoreOp::DeleteRetained(topic) => {
                self.delete(key(RETAINED, &[topic.as_str().as_bytes()]));
            }
        }
        Ok(())
    }
}

fn key(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(kind);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// The key of a row a session owns: its kind, the client id with its length, then `rest`.
fn owned_key(kind: u8, client: &str, rest: &[u8]) -> Vec<u8> {
    // Client ids are MQTT strings (at most 65,535 bytes), so the length always fits.
    let len = u32::try_from(client.len()).unwrap_or(u32::MAX);
    key(kind, &[&len.to_be_bytes(), client.as_bytes(), rest])
}

/// Splits an owned row's key (after its kind byte) into the client id and the rest.
fn split_client(k: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = k.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (client, rest) = rest.split_at(len);
    Some((std::str::from_utf8(client).ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_from_a_newer_starling_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledStore::open(dir.path()).expect("opens");
        store
            .db
            .insert(VERSION_KEY, &(FORMAT_VERSION + 1).to_be_bytes())
            .expect("insert");
        drop(store);
        match SledStore::open(dir.path()) {
            Err(StoreError::NewerFormat { path, found, .. }) => {
                assert_eq!(path, dir.path().join(DIR_NAME));
                assert_eq!(found, FORMAT_VERSION + 1);
            }
            other => panic!("want NewerFormat, got {other:?}"),
        }
    }

    #[test]
    fn a_sled_database_of_another_program_is_corrupt() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let db = sled::open(dir.path().join(DIR_NAME)).expect("raw open");
            db.insert(b"someone else's", b"data").expect("insert");
        }
        let err = SledStore::open(dir.path()).expect_err("refused");
        assert!(
            matches!(&err, StoreError::Corrupt { detail, .. } if detail.contains("no format version")),
            "{err}"
        );
    }

    #[test]
    fn a_damaged_log_is_refused_not_taken_for_a_new_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(SledStore::open(dir.path()).expect("opens"));
        let log = dir.path().join(DIR_NAME).join("db");
        let len = fs::metadata(&log).expect("log").len();
        fs::write(&log, vec![0xA5; usize::try_from(len).expect("small")]).expect("damage");
        let err = SledStore::open(dir.path()).expect_err("refused");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(
            SledStore::open(dir.path()).is_err(),
            "still refused: the refusal wrote no version"
        );
    }

    #[test]
    fn owned_keys_split_back_into_client_and_rest() {
        let k = owned_key(QUEUE, "a\u{0}b", &7u64.to_be_bytes());
        assert_eq!(
            split_client(&k[1..]),
            Some(("a\u{0}b", &7u64.to_be_bytes()[..]))
        );
        assert_eq!(
            split_client(&[0, 0, 0, 9, b'a']),
            None,
            "length past the end"
        );
    }
}
