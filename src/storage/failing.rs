//! A store that fails on demand, so tests can drive the broker through a full or broken disk
//! (`StoreError::Full` and friends) without filling one.

use std::sync::Arc;

use parking_lot::Mutex;

use super::{Snapshot, Store, StoreError, StoreOp};

/// Wraps a store and refuses batches while its [`FailSwitch`] says so. A refused batch is not
/// passed on: nothing of it is stored, as the contract promises for a failed `apply`. `load`
/// always passes through; `flush` fails only under [`FailSwitch::fail_all`].
pub struct FailingStore {
    inner: Arc<dyn Store>,
    switch: FailSwitch,
}

impl FailingStore {
    pub fn new(inner: Arc<dyn Store>) -> FailingStore {
        FailingStore {
            inner,
            switch: FailSwitch::default(),
        }
    }

    /// The switch, shared: flip it from the test while the broker holds the store.
    pub fn switch(&self) -> FailSwitch {
        self.switch.clone()
    }
}

/// Decides which batches a [`FailingStore`] refuses, and with what error. Starts off.
#[derive(Clone, Default)]
pub struct FailSwitch(Arc<Mutex<Switch>>);

#[derive(Default)]
struct Switch {
    rule: Rule,
    refused: u64,
}

#[derive(Default)]
enum Rule {
    #[default]
    Off,
    All(StoreError),
    Ops(OpKind, StoreError),
    Next(u64, StoreError),
}

impl FailSwitch {
    /// Refuses every batch, and every flush, until [`FailSwitch::recover`].
    pub fn fail_all(&self, error: StoreError) {
        self.0.lock().rule = Rule::All(error);
    }

    /// Refuses every batch that contains an op of this kind, until [`FailSwitch::recover`].
    pub fn fail_ops(&self, kind: OpKind, error: StoreError) {
        self.0.lock().rule = Rule::Ops(kind, error);
    }

    /// Refuses the next `n` batches, then recovers by itself.
    pub fn fail_next(&self, n: u64, error: StoreError) {
        self.0.lock().rule = if n == 0 {
            Rule::Off
        } else {
            Rule::Next(n, error)
        };
    }

    /// Lets everything through again.
    pub fn recover(&self) {
        self.0.lock().rule = Rule::Off;
    }

    /// How many batches and flushes were refused so far: lets a test check that the broker did
    /// reach the store while it was failing.
    pub fn refused(&self) -> u64 {
        self.0.lock().refused
    }

    fn check_batch(&self, batch: &[StoreOp]) -> Result<(), StoreError> {
        let mut switch = self.0.lock();
        let error = match &mut switch.rule {
            Rule::Off => return Ok(()),
            Rule::All(e) => e.clone(),
            Rule::Ops(kind, e) => {
                if !batch.iter().any(|op| OpKind::of(op) == *kind) {
                    return Ok(());
                }
                e.clone()
            }
            Rule::Next(n, e) => {
                let e = e.clone();
                *n -= 1;
                if *n == 0 {
                    switch.rule = Rule::Off;
                }
                e
            }
        };
        switch.refused += 1;
        Err(error)
    }

    fn check_flush(&self) -> Result<(), StoreError> {
        let mut switch = self.0.lock();
        if let Rule::All(e) = &switch.rule {
            let e = e.clone();
            switch.refused += 1;
            return Err(e);
        }
        Ok(())
    }
}

impl Store for FailingStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }

    fn apply(&self, batch: &[StoreOp], durable: bool) -> Result<(), StoreError> {
        self.switch.check_batch(batch)?;
        self.inner.apply(batch, durable)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.switch.check_flush()?;
        self.inner.flush()
    }
}

/// The kind of a [`StoreOp`], to aim a failure at one kind of change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    PutSession,
    DeleteSession,
    PutSubscription,
    DeleteSubscription,
    PutMessage,
    DeleteMessage,
    PutQueued,
    DeleteQueued,
    PutIncoming,
    DeleteIncoming,
    PutRetained,
    DeleteRetained,
}

impl OpKind {
    pub fn of(op: &StoreOp) -> OpKind {
        match op {
            StoreOp::PutSession(_) => OpKind::PutSession,
            StoreOp::DeleteSession { .. } => OpKind::DeleteSession,
            StoreOp::PutSubscription { .. } => OpKind::PutSubscription,
            StoreOp::DeleteSubscription { .. } => OpKind::DeleteSubscription,
            StoreOp::PutMessage { .. } => OpKind::PutMessage,
            StoreOp::DeleteMessage(_) => OpKind::DeleteMessage,
            StoreOp::PutQueued { .. } => OpKind::PutQueued,
            StoreOp::DeleteQueued { .. } => OpKind::DeleteQueued,
            StoreOp::PutIncoming { .. } => OpKind::PutIncoming,
            StoreOp::DeleteIncoming { .. } => OpKind::DeleteIncoming,
            StoreOp::PutRetained(_) => OpKind::PutRetained,
            StoreOp::DeleteRetained(_) => OpKind::DeleteRetained,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryStore, SessionRecord};
    use crate::topic::TopicName;

    fn session(id: &str) -> StoreOp {
        StoreOp::PutSession(SessionRecord {
            client_id: Arc::from(id),
            expiry_interval: 60,
            disconnected_at: None,
            will: None,
        })
    }

    fn stored(store: &dyn Store) -> Vec<String> {
        let snapshot = store.load().expect("loads");
        snapshot
            .sessions
            .iter()
            .map(|s| s.record.client_id.to_string())
            .collect()
    }

    fn full() -> StoreError {
        StoreError::Full("test".into())
    }

    #[test]
    fn refused_batches_store_nothing_until_recovered() {
        let store = FailingStore::new(Arc::new(MemoryStore::new()));
        let switch = store.switch();
        switch.fail_all(full());
        let err = store.apply(&[session("a")], true).expect_err("refused");
        assert!(matches!(err, StoreError::Full(_)));
        assert!(store.flush().is_err(), "a failing disk fails flushes too");
        assert!(stored(&store).is_empty());
        switch.recover();
        store.apply(&[session("b")], true).expect("applies");
        store.flush().expect("flushes");
        assert_eq!(stored(&store), vec!["b"]);
        assert_eq!(switch.refused(), 2);
    }

    #[test]
    fn an_op_kind_fails_only_the_batches_that_carry_it() {
        let store = FailingStore::new(Arc::new(MemoryStore::new()));
        let switch = store.switch();
        let delete = StoreOp::DeleteRetained(TopicName::new("t").expect("valid"));
        switch.fail_ops(OpKind::DeleteRetained, StoreError::Unavailable("x".into()));
        store
            .apply(&[session("a")], false)
            .expect("no retained delete");
        assert!(store.apply(&[session("b"), delete.clone()], false).is_err());
        store.flush().expect("only fail_all fails flushes");
        assert_eq!(stored(&store), vec!["a"], "the whole batch was refused");
        switch.recover();
        store.apply(&[delete], false).expect("recovered");
    }

    #[test]
    fn the_next_n_batches_fail_then_it_recovers_by_itself() {
        let store = FailingStore::new(Arc::new(MemoryStore::new()));
        let switch = store.switch();
        switch.fail_next(2, full());
        assert!(store.apply(&[session("a")], false).is_err());
        assert!(store.apply(&[session("b")], false).is_err());
        store.apply(&[session("c")], false).expect("third passes");
        assert_eq!(stored(&store), vec!["c"]);
        assert_eq!(switch.refused(), 2);
    }
}
