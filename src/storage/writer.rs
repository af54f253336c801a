//! The storage thread: every durable change goes through one [`StoreWriter`], which applies them
//! in batches (one transaction each) on a thread of its own, so no connection task ever waits on
//! the disk.
//!
//! Group commit: while the thread commits one batch, changes pile up in the log and become the
//! next batch. Each submission returns a [`Ticket`]; in [`SyncMode::Always`] a connection holds
//! back its acknowledgements until its ticket is settled, that is, until the batch holding its
//! changes is durable. In [`SyncMode::Periodic`] every batch is committed without waiting for the
//! disk and made durable at least every `sync_interval`; tickets settle at once.
//!
//! A failed batch is reported, and connections waiting on it learn it failed (they close instead
//! of acknowledging). Until a batch succeeds again the writer reports a fault, and connections
//! refuse new QoS 1/2 publishes. While faulty and idle, the thread probes the store every second
//! so it notices when space returns.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use tracing::{error, info};

use super::{Store, StoreError, StoreOp};
use crate::codec::ReasonCode;

/// How often a faulty, idle writer retries the store.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Failed ranges remembered for waiters; consecutive failures merge, so this is never reached in
/// practice.
const FAILED_RANGES: usize = 256;

/// When acknowledged changes reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Acknowledgements wait until the batch holding their changes is durable (group commit).
    Always,
    /// Every batch is committed at once, durable at least every `sync_interval`.
    #[default]
    Periodic,
}

/// Names the point in the log a connection's changes reached; see [`StoreWriter::poll_settled`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Ticket(u64);

impl Ticket {
    /// A ticket that is always settled.
    pub const NONE: Ticket = Ticket(0);

    pub fn max(self, other: Ticket) -> Ticket {
        Ticket(self.0.max(other.0))
    }
}

/// The batch holding a ticket's changes could not be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreFailed;

/// The handle the broker submits changes through.
pub struct StoreWriter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    store: Arc<dyn Store>,
    mode: SyncMode,
    sync_interval: Duration,
    log: Mutex<Log>,
    work: Condvar,
    /// Every ticket up to this one has been applied (or failed).
    settled: AtomicU64,
    failed: Mutex<VecDeque<(u64, u64)>>,
    wakers: Mutex<Vec<Waker>>,
    /// The reason connections give while the store fails; `None` while healthy.
    fault: Mutex<Option<ReasonCode>>,
    faulty: AtomicBool,
    closed: AtomicBool,
    /// Commit time and batch size histograms, once something reads them.
    observed: OnceLock<(metrics::Histogram, metrics::Histogram)>,
}

#[derive(Default)]
struct Log {
    ops: Vec<StoreOp>,
    /// Operations ever submitted: the log position, and the latest ticket.
    submitted: u64,
    stop: bool,
}

impl StoreWriter {
    /// Starts the storage thread for `store`.
    pub fn start(
        store: Arc<dyn Store>,
        mode: SyncMode,
        sync_interval: Duration,
    ) -> std::io::Result<StoreWriter> {
        let shared = Arc::new(Shared {
            store,
            mode,
            sync_interval,
            log: Mutex::new(Log::default()),
            work: Condvar::new(),
            settled: AtomicU64::new(0),
            failed: Mutex::new(VecDeque::new()),
            wakers: Mutex::new(Vec::new()),
            fault: Mutex::new(None),
            faulty: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            observed: OnceLock::new(),
        });
        let thread = std::thread::Builder::new()
            .name("starling-store".to_owned())
            .spawn({
                let shared = shared.clone();
                move || shared.run()
            })?;
        Ok(StoreWriter {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Records each batch's commit time and size from now on (the first call wins).
    pub fn observe(&self, commit_seconds: metrics::Histogram, batch_ops: metrics::Histogram) {
        let _ = self.shared.observed.set((commit_seconds, batch_ops));
    }

    pub fn mode(&self) -> SyncMode {
        self.shared.mode
    }

    /// Appends changes to the log. The returned ticket matters in `always` mode only; in
    /// `periodic` mode it is [`Ticket::NONE`].
    pub fn submit(&self, ops: impl IntoIterator<Item = StoreOp>) -> Ticket {
        if self.shared.closed.load(Ordering::Acquire) {
            return Ticket::NONE;
        }
        // Collected before locking: producing an op may drop a stored body, whose `Drop` submits
        // too.
        let ops: SmallVec<[StoreOp; 2]> = ops.into_iter().collect();
        if ops.is_empty() {
            return Ticket::NONE;
        }
        let added = ops.len() as u64;
        let mut log = self.shared.log.lock();
        log.ops.extend(ops);
        log.submitted += added;
        let ticket = log.submitted;
        drop(log);
        self.shared.work.notify_one();
        match self.shared.mode {
            SyncMode::Always => Ticket(ticket),
            SyncMode::Periodic => Ticket::NONE,
        }
    }

    /// Ready once the batch holding `ticket` was applied: `Err` if it failed.
    pub fn poll_settled(
        &self,
        cx: &mut Context<'_>,
        ticket: Ticket,
    ) -> Poll<Result<(), StoreFailed>> {
        if let Some(outcome) = self.shared.outcome(ticket) {
            return Poll::Ready(outcome);
        }
        self.shared.wakers.lock().push(cx.waker().clone());
        // The thread may have settled it between the check and the registration.
        match self.shared.outcome(ticket) {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }

    /// Waits until `ticket` is settled.
    pub async fn settled(&self, ticket: Ticket) -> Result<(), StoreFailed> {
        std::future::poll_fn(|cx| self.poll_settled(cx, ticket)).await
    }

    /// The reason to refuse messages with while the store fails (0x97 when it is full, 0x80
    /// otherwise); `None` while it works.
    pub fn fault(&self) -> Option<ReasonCode> {
        if !self.shared.faulty.load(Ordering::Relaxed) {
            return None;
        }
        *self.shared.fault.lock()
    }

    /// True once [`StoreWriter::close`] ran: changes are no longer recorded. Dropping state at
    /// shutdown must not be mistaken for deleting it.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Applies what is left, makes it durable, and stops the thread. Later submissions are
    /// ignored.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.log.lock().stop = true;
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.lock().take()
            && thread.join().is_err()
        {
            error!("the storage thread panicked");
        }
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn outcome(&self, ticket: Ticket) -> Option<Result<(), StoreFailed>> {
        if ticket.0 > self.settled.load(Ordering::Acquire) {
            return None;
        }
        let failed = self
            .failed
            .lock()
            .iter()
            .any(|&(first, last)| (first..=last).contains(&ticket.0));
        Some(if failed { Err(StoreFailed) } else { Ok(()) })
    }

    fn run(&self) {
        let durable = self.mode == SyncMode::Always;
        let mut batch = Vec::new();
        let mut dirty_since: Option<Instant> = None;
        loop {
            let (first, last, stop) = {
                let mut log = self.log.lock();
                while log.ops.is_empty() && !log.stop {
                    let wait = match (dirty_since, self.faulty.load(Ordering::Relaxed)) {
                        (_, true) => PROBE_INTERVAL,
                        (Some(since), false) => {
                            let due = since + self.sync_interval;
                            let now = Instant::now();
                            if now >= due {
                                break;
                            }
                            due - now
                        }
                        (None, false) => Duration::from_secs(3600),
                    };
                    if self.work.wait_for(&mut log, wait).timed_out() {
                        break;
                    }
                }
                std::mem::swap(&mut log.ops, &mut batch);
                let last = log.submitted;
                (last - batch.len() as u64 + 1, last, log.stop)
            };
            if batch.is_empty() {
                if self.faulty.load(Ordering::Relaxed) {
                    // Probe: an empty durable batch succeeds once the store works again.
                    self.record(self.store.apply(&[], true));
                } else if dirty_since.take().is_some() {
                    self.record(self.store.flush());
                }
            } else {
                let started = Instant::now();
                let result = self.store.apply(&batch, durable);
                if let Some((commit, size)) = self.observed.get() {
                    commit.record(started.elapsed().as_secs_f64());
                    size.record(batch.len() as f64);
                }
                if result.is_err() {
                    let mut failed = self.failed.lock();
                    match failed.back_mut() {
                        Some(range) if range.1 + 1 == first => range.1 = last,
                        _ => failed.push_back((first, last)),
                    }
                    if failed.len() > FAILED_RANGES {
                        failed.pop_front();
                    }
                } else if !durable && dirty_since.is_none() {
                    dirty_since = Some(Instant::now());
                }
                self.record(result);
                batch.clear();
                self.settled.store(last, Ordering::Release);
                for waker in self.wakers.lock().drain(..) {
                    waker.wake();
                }
            }
            if stop {
                if dirty_since.is_some() {
                    self.record(self.store.flush());
                }
                return;
            }
        }
    }

    /// Tracks the store's health from an outcome, logging each change once.
    fn record(&self, result: Result<(), StoreError>) {
        match result {
            Ok(()) => {
                if self.faulty.swap(false, Ordering::Relaxed) {
                    *self.fault.lock() = None;
                    info!("the store works again; accepting QoS 1/2 messages");
                }
            }
            Err(e) => {
                let reason = match e {
                    StoreError::Full(_) => ReasonCode::QuotaExceeded,
                    _ => ReasonCode::UnspecifiedError,
                };
                *self.fault.lock() = Some(reason);
                if !self.faulty.swap(true, Ordering::Relaxed) {
                    error!(
                        "store write failed: {e}; refusing QoS 1/2 messages until it works again"
                    );
                } else {
                    tracing::debug!("store still failing: {e}");
                }
            }
        }
    }
}
