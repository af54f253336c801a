//! A burst of new connections during a message flow (`--burst N`): shows whether accepting
//! connections stalls the clients that are already connected.
//!
//! The burst runs on a thread of its own with a single-threaded runtime, so its connect work
//! never queues behind (or ahead of) the flow's tasks in the same workers; it still shares the
//! host's cores with the flow and the broker, as a real burst of clients would. The flow's
//! messages are sorted into three phases by their send time: before the burst (from the end of
//! the warm-up), during it (first connect attempt to last handshake), and after it; each phase
//! gets its own latency histogram and delivery count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use starling::codec::ProtocolVersion;
use tokio_util::sync::CancellationToken;

use crate::idle::{Many, Opened, open_many};
use crate::report::{PubReport, SubReport, latency_json};

/// Phase names, in order.
pub const PHASES: [&str; 3] = ["before", "during", "after"];

/// When the burst started and ended, in nanoseconds since the flow's epoch (`u64::MAX` until
/// it happens), shared with the flow's publishers and subscribers.
pub struct Marks {
    /// Messages sent before this are warm-up, in no phase.
    measure_from_ns: u64,
    started_ns: AtomicU64,
    ended_ns: AtomicU64,
}

impl Marks {
    pub fn new(measure_from_ns: u64) -> Marks {
        Marks {
            measure_from_ns,
            started_ns: AtomicU64::new(u64::MAX),
            ended_ns: AtomicU64::new(u64::MAX),
        }
    }

    /// The send time at which phase `k` begins (`u64::MAX` while that has not happened).
    pub fn boundary(&self, k: usize) -> u64 {
        match k {
            0 => self.measure_from_ns,
            1 => self.started_ns.load(Ordering::Acquire),
            _ => self.ended_ns.load(Ordering::Acquire),
        }
    }

    /// The phase of a message sent at `sent_ns`, or `None` for warm-up.
    pub fn phase_of(&self, sent_ns: u64) -> Option<usize> {
        (0..PHASES.len())
            .rev()
            .find(|&k| sent_ns >= self.boundary(k))
    }
}

/// What the burst connects to and how.
#[derive(Clone)]
pub struct Burst {
    pub target: SocketAddr,
    pub connections: usize,
    pub concurrency: usize,
    pub per_source: usize,
    pub version: ProtocolVersion,
    pub limit: Duration,
    pub tag: String,
}

/// What the burst achieved.
pub struct Outcome {
    opened: usize,
    failed: usize,
    first_error: Option<String>,
    open_s: Option<f64>,
}

/// Starts the burst thread: at `start_at` it opens every connection, marks the burst's start
/// and end in `marks` (as nanoseconds since `epoch`), holds the connections until `stop` is
/// cancelled, then closes them.
pub fn spawn(
    burst: Burst,
    epoch: Instant,
    start_at: Instant,
    marks: Arc<Marks>,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<anyhow::Result<Outcome>>> {
    let since_epoch = move || u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    std::thread::Builder::new()
        .name("loadgen-burst".to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the burst's runtime")?;
            runtime.block_on(async move {
                tokio::select! {
                    () = tokio::time::sleep_until(start_at.into()) => {}
                    () = stop.cancelled() => {
                        return Ok(Outcome { opened: 0, failed: 0, first_error: None, open_s: None });
                    }
                }
                let began = Instant::now();
                marks.started_ns.store(since_epoch(), Ordering::Release);
                eprintln!("burst: opening {} connections", burst.connections);
                let Opened {
                    conns,
                    failures,
                    first_error,
                } = open_many(
                    &Many {
                        target: burst.target,
                        n: burst.connections,
                        per_source: burst.per_source,
                        concurrency: burst.concurrency,
                        version: burst.version,
                        limit: burst.limit,
                        tag: &burst.tag,
                        what: "burst",
                    },
                    Some(&stop),
                )
                .await;
                marks.ended_ns.store(since_epoch(), Ordering::Release);
                let open_s = began.elapsed().as_secs_f64();
                eprintln!(
                    "burst: {} of {} open in {open_s:.2} s, {failures} failed",
                    conns.len(),
                    burst.connections
                );
                let opened = conns.len();
                stop.cancelled().await;
                // Dropping the sockets closes them; the broker sees them go without DISCONNECT,
                // which is as much work for it as for any vanished client.
                drop(conns);
                Ok(Outcome {
                    opened,
                    failed: failures,
                    first_error,
                    open_s: Some(open_s),
                })
            })
        })
        .context("cannot start the burst thread")
}

/// The burst's part of the result line: its connect figures, and per phase the flow's send
/// window, messages expected and received, and latency.
pub fn to_json(
    burst: &Burst,
    outcome: &Outcome,
    marks: &Marks,
    publish_end_ns: u64,
    subs_of_pub: &[Vec<usize>],
    pubs: &[PubReport],
    subs: &[SubReport],
) -> anyhow::Result<Value> {
    let mut phases = serde_json::Map::new();
    for (k, name) in PHASES.iter().enumerate() {
        let from_ns = marks.boundary(k).min(publish_end_ns);
        let to_ns = if k + 1 < PHASES.len() {
            marks.boundary(k + 1).min(publish_end_ns)
        } else {
            publish_end_ns
        };
        let (mut expected, mut received) = (0u64, 0u64);
        for (p, subscribers) in subs_of_pub.iter().enumerate() {
            let (from_seq, to_seq) = pubs[p].phase_range(k);
            for &s in subscribers {
                expected += to_seq - from_seq;
                if let Some(track) = subs[s].tracks.get(p) {
                    received += track.count_range(from_seq, to_seq);
                }
            }
        }
        let mut latency: Histogram<u64> = crate::flow::new_histogram()?;
        for s in subs {
            if let Some(h) = s.phase_latency.get(k) {
                latency.add(h).context("merging phase histograms")?;
            }
        }
        phases.insert(
            (*name).to_owned(),
            json!({
                "from_s": from_ns as f64 / 1e9,
                "to_s": to_ns as f64 / 1e9,
                "expected": expected,
                "received": received,
                "lost": expected.saturating_sub(received),
                "latency_us": latency_json(&latency),
            }),
        );
    }
    Ok(json!({
        "connections": burst.connections,
        "concurrency": burst.concurrency,
        "opened": outcome.opened,
        "failed": outcome.failed,
        "first_error": outcome.first_error,
        "open_s": outcome.open_s,
        "connects_per_s": outcome.open_s.filter(|s| *s > 0.0).map(|s| outcome.opened as f64 / s),
        "phases": phases,
    }))
}
