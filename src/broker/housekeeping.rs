//! Timers that outlive connections: session expiry and delayed wills; and a periodic sweep of
//! expired retained messages, which nobody may ever ask for again.
//!
//! One task holds every armed timer in a `BTreeMap` ordered by deadline and sleeps until the
//! earliest. Timers are never cancelled: each names the session generation it was armed for, and
//! a session that reconnected since has a newer generation, so the stale timer finds nothing to do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Broker, SessionSlot};

/// How often expired retained messages are swept out. Delivery never serves an expired message
/// anyway; the sweep only returns their memory.
const RETAINED_SWEEP: Duration = Duration::from_secs(60);

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// End the session if it is still offline.
    SessionExpiry,
    /// Publish the will if the session has not resumed.
    Will,
}

/// A timer armed when a connection closed.
#[derive(Debug)]
pub struct Timer {
    pub at: Instant,
    pub slot: Arc<SessionSlot>,
    pub generation: u64,
    pub kind: TimerKind,
}

/// The task that fires [`Timer`]s.
pub struct Housekeeping {
    timers: mpsc::UnboundedReceiver<Timer>,
    /// Keyed by deadline, then arrival order so equal deadlines do not collide.
    pending: BTreeMap<(Instant, u64), Timer>,
    arrivals: u64,
}

impl Housekeeping {
    pub fn new(timers: mpsc::UnboundedReceiver<Timer>) -> Self {
        Housekeeping {
            timers,
            pending: BTreeMap::new(),
            arrivals: 0,
        }
    }

    /// Runs until `shutdown` completes or every sender is gone.
    pub async fn run(
        mut self,
        broker: Arc<Broker>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut sweep = tokio::time::interval(RETAINED_SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self.pending.first_key_value().map(|((at, _), _)| *at);
            // Cancellation-safe: `recv` and `tick` lose nothing when another branch wins, and the
            // sleep is recreated from `pending` on every turn.
            tokio::select! {
                () = &mut shutdown => break,
                _ = sweep.tick() => broker.sweep_expired(tokio::time::Instant::now().into_std()),
                timer = self.timers.recv() => match timer {
                    Some(timer) => self.insert(timer),
                    None => break,
                },
                () = sleep_until(next), if next.is_some() => {
                    let now = tokio::time::Instant::now().into_std();
                    while let Some(entry) = self.pending.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        broker.fire(entry.remove());
                    }
                }
            }
        }
    }

    fn insert(&mut self, timer: Timer) {
        self.arrivals += 1;
        self.pending.insert((timer.at, self.arrivals), timer);
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}
