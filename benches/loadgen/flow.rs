//! The message-flow scenarios: fan-in, fan-out and pairs.
//!
//! Each publisher is one task that owns its socket and does everything with non-blocking reads
//! and writes: it encodes publishes into a batch buffer while its inflight limit, its end-to-end
//! window and its pacer allow, writes the batch in one call, and reads acknowledgements (answering
//! PUBREC with PUBREL) in the same loop; it sleeps only when none of that can progress. Each
//! subscriber is one task that reads a chunk, decodes every packet in it, writes the chunk's
//! acknowledgements in one write, and then publishes how far it has read each publisher, which is
//! what the publishers' windows are measured against.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use starling::codec::{Packet, PacketId, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::burst::{self, Burst};
use crate::mqtt::{self, Conn, KEEP_ALIVE_SECS, READ_CHUNK, STAMP_LEN};
use crate::procfs::{self, Sample};
use crate::report::{self, Account, PubReport, SubReport, Track};
use crate::{FlowArgs, Shape, loopback_target, run_tag};

/// A publisher writes once it has this many bytes encoded (or nothing more may be sent).
const OUT_BATCH: usize = 64 * 1024;

/// A publisher paused on its window looks again after this long even without a wake-up: if
/// nothing of its messages was read meanwhile, the broker dropped them (they show as lost in the
/// account), and the shortfall is forgiven so the publisher is not stuck for the rest of the run.
/// QoS 0 messages may be dropped; QoS 1/2 ones only by a broker that fails the run, so those
/// publishers wait longer before they conclude so. On a busy 2-core host a broker can be
/// descheduled for 100 ms: forgiving that early overfills its queues.
const WINDOW_RECHECK_QOS0: Duration = Duration::from_millis(500);
const WINDOW_RECHECK_QOS12: Duration = Duration::from_secs(1);

/// The subscribers are done once nothing has arrived for this long after publishing stopped.
const QUIET_END: Duration = Duration::from_secs(1);

/// Largest sequence number accepted from a payload: bounds the accounting bitmaps.
const MAX_SEQ: u64 = 1 << 34;

/// What every task of one run shares.
pub struct Shared {
    /// Time zero of the payload timestamps.
    epoch: Instant,
    /// Messages sent before this (ns since `epoch`) are warm-up: not in the latency figures.
    measure_from_ns: u64,
    /// Publishers stop producing when this is cancelled.
    stop: CancellationToken,
    /// Subscribers stop reading when this is cancelled.
    subs_stop: CancellationToken,
    pubs: Vec<PubShared>,
    /// Deliveries (duplicates included) per subscriber, updated once per read.
    delivered: Vec<AtomicU64>,
    /// With `--burst`: when the burst began and ended, to sort messages into phases.
    burst_marks: Option<Arc<burst::Marks>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn total_delivered(&self) -> u64 {
        self.delivered
            .iter()
            .map(|d| d.load(Ordering::Acquire))
            .sum()
    }

    fn total_sent(&self) -> u64 {
        self.pubs
            .iter()
            .map(|p| p.sent.load(Ordering::Acquire))
            .sum()
    }
}

/// One publisher's state as the subscribers and the progress line see it.
struct PubShared {
    /// Messages put on the wire so far (the next sequence number).
    sent: AtomicU64,
    /// For each subscriber that should get this publisher's messages: one past the highest
    /// sequence number it has read.
    seen: Box<[AtomicU64]>,
    /// Set while the publisher waits for its window; subscribers then wake it.
    paused: AtomicBool,
    wake: Notify,
}

impl PubShared {
    /// How far the slowest of this publisher's subscribers has read.
    fn floor(&self) -> u64 {
        self.seen
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .min()
            .unwrap_or(0)
    }
}

/// Who publishes where and who reads what, plus the knobs, fixed before the run starts.
pub struct Plan {
    pub args: FlowArgs,
    pub qos: QoS,
    pub window: u64,
    pub pub_topics: Vec<String>,
    pub sub_filters: Vec<String>,
    /// For each publisher, its subscribers in order; a subscriber's position in this list is its
    /// slot in `PubShared::seen`.
    pub subs_of_pub: Vec<Vec<usize>>,
    pub rate_per_pub: Option<f64>,
}

impl Plan {
    fn new(shape: Shape, args: FlowArgs) -> anyhow::Result<Plan> {
        if args.payload < STAMP_LEN {
            bail!("--payload must be at least {STAMP_LEN} bytes (publisher, sequence, timestamp)");
        }
        let clients = args.clients.unwrap_or(match shape {
            Shape::FanIn => 8,
            Shape::FanOut | Shape::Pairs => 16,
        });
        if clients == 0 {
            bail!("--clients must be at least 1");
        }
        let tag = run_tag();
        let (pub_topics, sub_filters, subs_of_pub): (Vec<String>, Vec<String>, Vec<Vec<usize>>) =
            match shape {
                Shape::FanIn => (
                    (0..clients).map(|i| format!("lg/{tag}/in/{i}")).collect(),
                    vec![format!("lg/{tag}/in/+")],
                    vec![vec![0]; clients],
                ),
                Shape::FanOut => (
                    vec![format!("lg/{tag}/out")],
                    vec![format!("lg/{tag}/out"); clients],
                    vec![(0..clients).collect()],
                ),
                Shape::Pairs => (
                    (0..clients).map(|i| format!("lg/{tag}/pair/{i}")).collect(),
                    (0..clients).map(|i| format!("lg/{tag}/pair/{i}")).collect(),
                    (0..clients).map(|i| vec![i]).collect(),
                ),
            };
        let pubs_per_sub = match shape {
            Shape::FanIn => clients,
            Shape::FanOut | Shape::Pairs => 1,
        };
        let window = args
            .window
            .unwrap_or_else(|| (512 / pubs_per_sub as u64).max(16))
            .max(1);
        if args.burst.is_some() {
            if args.count.is_some() {
                bail!("--burst runs for a --duration, not a --count");
            }
            // Burst connections do not ping: the whole run stays within their keep alive.
            if args.warmup + args.duration + args.drain >= f64::from(KEEP_ALIVE_SECS) {
                bail!(
                    "--burst: warm-up + duration + drain must stay below the keep alive ({KEEP_ALIVE_SECS} s)"
                );
            }
        }
        let rate_per_pub = match args.rate {
            Some(rate) if rate > 0.0 => Some(rate / pub_topics.len() as f64),
            Some(_) => bail!("--rate must be positive"),
            None => None,
        };
        Ok(Plan {
            qos: crate::qos_of(args.qos),
            window,
            pub_topics,
            sub_filters,
            subs_of_pub,
            rate_per_pub,
            args,
        })
    }

    fn publishers(&self) -> usize {
        self.pub_topics.len()
    }

    fn subscribers(&self) -> usize {
        self.sub_filters.len()
    }

    /// For subscriber `sub`: its slot in each publisher's `seen`, or `None` for publishers it
    /// should not hear from.
    fn slots_of(&self, sub: usize) -> Vec<Option<usize>> {
        self.subs_of_pub
            .iter()
            .map(|subs| subs.iter().position(|&s| s == sub))
            .collect()
    }
}

/// Runs one flow scenario and returns its result line.
pub async fn run(shape: Shape, args: FlowArgs) -> anyhow::Result<String> {
    let plan = Arc::new(Plan::new(shape, args)?);
    let args = &plan.args;
    let common = &args.common;
    if let Some(reason) = &common.skip {
        return Ok(skipped_line(shape, &plan, reason));
    }
    let target = loopback_target(common).await?;
    let version = common.mqtt.protocol();
    let persistent = common.persistent;
    let limit = Duration::from_secs_f64(common.connect_timeout);
    let tag = run_tag();

    // Subscribers first, so nothing published is missed; then the publishers.
    let mut subs = JoinSet::new();
    for (i, filter) in plan.sub_filters.iter().enumerate() {
        let (filter, qos, id) = (filter.clone(), plan.qos, format!("lg-{tag}-s{i}"));
        subs.spawn(async move {
            let mut conn = Conn::open(target, None, &id, version, persistent, limit).await?;
            conn.subscribe(&filter, qos).await?;
            anyhow::Ok((i, conn))
        });
    }
    let sub_conns = collect_indexed(subs, plan.subscribers()).await?;
    let mut pubs = JoinSet::new();
    for i in 0..plan.publishers() {
        let id = format!("lg-{tag}-p{i}");
        pubs.spawn(async move {
            let conn = Conn::open(target, None, &id, version, persistent, limit).await?;
            anyhow::Ok((i, conn))
        });
    }
    let pub_conns = collect_indexed(pubs, plan.publishers()).await?;
    eprintln!(
        "loadgen: {} {} publisher(s) -> {} subscriber(s), QoS {}, MQTT {}, window {}, connected",
        shape.name(),
        plan.publishers(),
        plan.subscribers(),
        args.qos,
        common.mqtt.name(),
        plan.window
    );

    let measure_from = if args.count.is_some() {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(args.warmup)
    };
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        measure_from_ns: u64::try_from(measure_from.as_nanos()).unwrap_or(u64::MAX),
        stop: CancellationToken::new(),
        subs_stop: CancellationToken::new(),
        pubs: plan
            .subs_of_pub
            .iter()
            .map(|subs| PubShared {
                sent: AtomicU64::new(0),
                seen: subs.iter().map(|_| AtomicU64::new(0)).collect(),
                paused: AtomicBool::new(false),
                wake: Notify::new(),
            })
            .collect(),
        delivered: (0..plan.subscribers()).map(|_| AtomicU64::new(0)).collect(),
        burst_marks: args.burst.map(|_| {
            Arc::new(burst::Marks::new(
                u64::try_from(measure_from.as_nanos()).unwrap_or(u64::MAX),
            ))
        }),
    });
    let start = Sample::take(common.broker_pid);
    let burst_plan = args.burst.map(|connections| Burst {
        target,
        connections,
        concurrency: args.burst_concurrency,
        per_source: args.burst_per_source,
        version,
        limit,
        tag: format!("{tag}b"),
    });
    let burst_thread = match (&burst_plan, &shared.burst_marks) {
        (Some(b), Some(marks)) => {
            let at = args.burst_at.unwrap_or(args.duration / 3.0).max(0.0);
            let start_at = shared.epoch + measure_from + Duration::from_secs_f64(at);
            let b = b.clone();
            Some(burst::spawn(
                b,
                shared.epoch,
                start_at,
                marks.clone(),
                shared.stop.clone(),
            )?)
        }
        _ => None,
    };
    let mut sub_tasks = Vec::new();
    for (i, conn) in sub_conns.into_iter().enumerate() {
        sub_tasks.push(tokio::spawn(subscribe_loop(
            i,
            conn,
            plan.clone(),
            shared.clone(),
        )));
    }
    let mut pub_tasks = Vec::new();
    for (i, conn) in pub_conns.into_iter().enumerate() {
        pub_tasks.push(tokio::spawn(publish_loop(
            i,
            conn,
            plan.clone(),
            shared.clone(),
        )));
    }

    // Measure: warm-up, then the measured interval (or, with --count, until every publisher is
    // done), with a progress line each second.
    let (from, from_delivered, from_sent) = if measure_from.is_zero() {
        (start, 0, 0)
    } else {
        progress_until(&shared, start.at + measure_from, start.at, &pub_tasks).await;
        let s = Sample::take(common.broker_pid);
        (s, shared.total_delivered(), shared.total_sent())
    };
    let publish_end = if args.count.is_some() {
        start.at + Duration::from_secs_f64(args.timeout)
    } else {
        from.at + Duration::from_secs_f64(args.duration)
    };
    progress_until(&shared, publish_end, start.at, &pub_tasks).await;
    shared.stop.cancel();
    let publish_end_ns = shared.now_ns();
    let mut to = Sample::take(common.broker_pid);
    let (mut to_delivered, mut to_sent) = (shared.total_delivered(), shared.total_sent());

    // Publishers finish their acknowledgements (bounded by --drain inside each task).
    let mut pub_reports = Vec::new();
    let mut conns = Vec::new();
    for task in pub_tasks {
        let (report, conn) = task.await.context("publisher task")??;
        pub_reports.push(report);
        conns.push(conn);
    }
    // Subscribers read until they have everything, or nothing more comes.
    let sent: Vec<u64> = pub_reports.iter().map(|r| r.sent).collect();
    let last = wait_for_deliveries(&plan, &shared, &sent).await;
    if args.count.is_some() {
        // The measured interval of a --count run ends with its last delivery.
        to = Sample::take(common.broker_pid);
        to.at = last;
        to_delivered = shared.total_delivered();
        to_sent = shared.total_sent();
    }
    shared.subs_stop.cancel();
    let mut sub_reports = Vec::new();
    for task in sub_tasks {
        let (report, conn) = task.await.context("subscriber task")??;
        sub_reports.push(report);
        conns.push(conn);
    }
    close_all(conns).await;
    let burst_outcome = match burst_thread {
        Some(thread) => Some(
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .context("waiting for the burst thread")?
                .map_err(|_| anyhow::anyhow!("the burst thread panicked"))??,
        ),
        None => None,
    };
    let burst_json = match (&burst_plan, &burst_outcome, &shared.burst_marks) {
        (Some(b), Some(outcome), Some(marks)) => burst::to_json(
            b,
            outcome,
            marks,
            publish_end_ns,
            &plan.subs_of_pub,
            &pub_reports,
            &sub_reports,
        )?,
        _ => serde_json::Value::Null,
    };

    let account = Account::settle(plan.qos, &plan.subs_of_pub, &pub_reports, &sub_reports);
    let latency = report::merge_latency(&sub_reports)?;
    let elapsed = to.at.duration_since(from.at).as_secs_f64();
    let per_s = |n: u64| {
        if elapsed > 0.0 {
            n as f64 / elapsed
        } else {
            0.0
        }
    };
    let line = serde_json::json!({
        "scenario": shape.name(),
        "label": common.label,
        "mqtt": common.mqtt.name(),
        "qos": args.qos,
        "publishers": plan.publishers(),
        "subscribers": plan.subscribers(),
        "payload": args.payload,
        "window": plan.window,
        "inflight": args.inflight,
        "rate": args.rate,
        "count": args.count,
        "warmup_s": measure_from.as_secs_f64(),
        "elapsed_s": elapsed,
        "published": sent.iter().sum::<u64>(),
        "delivered": sub_reports.iter().map(|r| r.delivered).sum::<u64>(),
        "publishes_per_s": per_s(to_sent - from_sent),
        "deliveries_per_s": per_s(to_delivered - from_delivered),
        "latency_us": latency,
        "accounting": account.to_json(),
        "broker": procfs::broker_json(common.broker_pid, &from, &to),
        "generator_cpu_percent": procfs::cpu_percent(from.own_cpu, to.own_cpu, from.at, to.at),
        "burst": burst_json,
    });
    Ok(line.to_string())
}

/// The result line of a run that was not made: the same keys that place a real one in its row
/// of the report, with the reason instead of figures.
fn skipped_line(shape: Shape, plan: &Plan, reason: &str) -> String {
    let args = &plan.args;
    serde_json::json!({
        "scenario": shape.name(),
        "label": args.common.label,
        "mqtt": args.common.mqtt.name(),
        "qos": args.qos,
        "publishers": plan.publishers(),
        "subscribers": plan.subscribers(),
        "payload": args.payload,
        "rate": args.rate,
        "count": args.count,
        "burst": args.burst.map(|n| serde_json::json!({ "connections": n })),
        "skipped": reason,
        "accounting": { "verdict": "n/a" },
    })
    .to_string()
}

/// Waits for every task of a connect phase and puts the connections in index order.
async fn collect_indexed(
    mut set: JoinSet<anyhow::Result<(usize, Conn)>>,
    n: usize,
) -> anyhow::Result<Vec<Conn>> {
    let mut slots: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, conn) = joined.context("connect task")??;
        slots[i] = Some(conn);
    }
    slots
        .into_iter()
        .map(|c| c.context("a connection is missing"))
        .collect()
}

/// Prints a progress line each second until `until` (or until every publisher has ended).
async fn progress_until(
    shared: &Shared,
    until: Instant,
    start: Instant,
    pubs: &[tokio::task::JoinHandle<anyhow::Result<(PubReport, Conn)>>],
) {
    let mut last = (
        Instant::now(),
        shared.total_delivered(),
        shared.total_sent(),
    );
    loop {
        let now = Instant::now();
        if now >= until || pubs.iter().all(|t| t.is_finished()) {
            return;
        }
        let next = (last.0 + Duration::from_secs(1)).min(until);
        tokio::time::sleep_until(next.into()).await;
        let (at, delivered, sent) = (
            Instant::now(),
            shared.total_delivered(),
            shared.total_sent(),
        );
        let dt = at.duration_since(last.0).as_secs_f64().max(1e-9);
        let unread: u64 = shared
            .pubs
            .iter()
            .map(|p| p.sent.load(Ordering::Relaxed).saturating_sub(p.floor()))
            .sum();
        eprintln!(
            "[{:6.1}s] deliveries {:>10.0}/s  publishes {:>10.0}/s  unread {unread}",
            at.duration_since(start).as_secs_f64(),
            (delivered - last.1) as f64 / dt,
            (sent - last.2) as f64 / dt,
        );
        last = (at, delivered, sent);
    }
}

/// After the publishers are done: waits until every subscriber has read as many messages as it
/// was sent, or nothing arrives for `QUIET_END`, or `--drain` runs out. Returns when the last
/// delivery was seen.
async fn wait_for_deliveries(plan: &Plan, shared: &Shared, sent: &[u64]) -> Instant {
    let mut expected = vec![0u64; plan.subscribers()];
    for (p, subs) in plan.subs_of_pub.iter().enumerate() {
        for &s in subs {
            expected[s] += sent[p];
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(plan.args.drain);
    let mut seen = shared.total_delivered();
    let mut last = Instant::now();
    loop {
        let done = expected
            .iter()
            .zip(&shared.delivered)
            .all(|(want, got)| got.load(Ordering::Acquire) >= *want);
        let now = Instant::now();
        if done || now >= deadline || now.duration_since(last) >= QUIET_END {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let total = shared.total_delivered();
        if total != seen {
            seen = total;
            last = Instant::now();
        }
    }
}

/// Sends DISCONNECT on every connection, at most a few seconds in all.
async fn close_all(conns: Vec<Conn>) {
    let mut set = JoinSet::new();
    for conn in conns {
        set.spawn(conn.close());
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while set.join_next().await.is_some() {}
    })
    .await;
}

/// Packet identifiers in use by one publisher.
struct IdPool {
    used: Vec<bool>,
    next: u16,
}

impl IdPool {
    fn new() -> IdPool {
        IdPool {
            used: vec![false; usize::from(u16::MAX) + 1],
            next: 1,
        }
    }

    /// The next free identifier, in rotation.
    fn take(&mut self) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            let id = self.next;
            self.next = self.next.checked_add(1).unwrap_or(1);
            let slot = &mut self.used[usize::from(id)];
            if !*slot {
                *slot = true;
                return PacketId::new(id);
            }
        }
        None
    }

    /// Frees `id`; false if it was not in use (an acknowledgement for nothing).
    fn release(&mut self, id: PacketId) -> bool {
        std::mem::replace(&mut self.used[usize::from(id.get())], false)
    }
}

/// Why a publisher stopped producing in one round.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Blocked {
    Nothing,
    Inflight,
    Window,
    Rate,
}

async fn publish_loop(
    index: usize,
    mut conn: Conn,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
) -> anyhow::Result<(PubReport, Conn)> {
    let me = &shared.pubs[index];
    let args = &plan.args;
    let version = conn.ctx.version;
    let topic = plan.pub_topics[index].as_str();
    let publisher = u32::try_from(index).context("publisher index")?;
    let max_inflight = args.inflight.min(usize::from(conn.receive_maximum)).max(1);
    let drain = Duration::from_secs_f64(args.drain);
    let mut out = BytesMut::with_capacity(OUT_BATCH + args.payload + 256);
    let mut ids = IdPool::new();
    let mut inflight = 0usize;
    let mut seq = 0u64;
    // Messages below this count as read even if they never arrive: lost QoS 0 messages.
    let mut forgiven = 0u64;
    let mut report = PubReport::default();
    let mut stop_by: Option<Instant> = None;
    let started = Instant::now();
    let mut busy_rounds = 0u32;
    loop {
        let mut progressed = false;
        // Acknowledgements.
        loop {
            conn.inbuf.reserve(READ_CHUNK);
            match conn.stream.try_read_buf(&mut conn.inbuf) {
                Ok(0) => bail!("publisher {index}: the broker closed the connection"),
                Ok(_) => {
                    progressed = true;
                    mqtt::quickack(&conn.stream);
                    while let Some(packet) = conn.decode()? {
                        on_ack(
                            packet,
                            &mut ids,
                            &mut inflight,
                            &mut report,
                            &mut out,
                            version,
                        )
                        .with_context(|| format!("publisher {index}"))?;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context(format!("publisher {index}: read")),
            }
        }
        if stop_by.is_none() && (shared.stop.is_cancelled() || args.count.is_some_and(|c| seq >= c))
        {
            stop_by = Some(Instant::now() + drain);
        }
        // Publishes, while every limit allows.
        let mut blocked = Blocked::Nothing;
        let mut due = started;
        if stop_by.is_none() {
            let floor = me.floor().max(forgiven);
            let before = seq;
            while out.len() < OUT_BATCH {
                if args.count.is_some_and(|c| seq >= c) {
                    break;
                }
                if plan.qos != QoS::AtMostOnce && inflight >= max_inflight {
                    blocked = Blocked::Inflight;
                    break;
                }
                if seq - floor >= plan.window {
                    blocked = Blocked::Window;
                    break;
                }
                if let Some(rate) = plan.rate_per_pub {
                    due = started + Duration::from_secs_f64(seq as f64 / rate);
                    if due > Instant::now() {
                        blocked = Blocked::Rate;
                        break;
                    }
                }
                let id = if plan.qos == QoS::AtMostOnce {
                    None
                } else {
                    inflight += 1;
                    Some(ids.take().context("no free packet identifier")?)
                };
                let now_ns = shared.now_ns();
                if let Some(marks) = &shared.burst_marks {
                    for (k, start) in report.phase_start.iter_mut().enumerate() {
                        if start.is_none() && now_ns >= marks.boundary(k) {
                            *start = Some(seq);
                        }
                    }
                }
                mqtt::put_publish(
                    &mut out,
                    version,
                    topic,
                    plan.qos,
                    id,
                    publisher,
                    seq,
                    now_ns,
                    args.payload,
                )?;
                seq += 1;
            }
            if seq != before {
                me.sent.store(seq, Ordering::SeqCst);
                progressed = true;
            }
        }
        if !out.is_empty() {
            match conn.stream.try_write(&out) {
                Ok(n) => {
                    out.advance(n);
                    progressed = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context(format!("publisher {index}: write")),
            }
        }
        if let Some(stop_by) = stop_by {
            if out.is_empty() && inflight == 0 {
                break;
            }
            if Instant::now() >= stop_by {
                report.unacked = inflight as u64;
                break;
            }
        }
        if progressed {
            // Non-blocking calls do not count against tokio's cooperative budget: let the other
            // tasks of this worker run now and then.
            busy_rounds += 1;
            if busy_rounds.is_multiple_of(8) {
                tokio::task::yield_now().await;
            }
            continue;
        }
        // Nothing can move until the socket, a subscriber, the pacer or the clock says so.
        let interest = if out.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        let window_wait = async {
            if blocked != Blocked::Window {
                return std::future::pending().await;
            }
            me.paused.store(true, Ordering::SeqCst);
            let floor = me.floor();
            if seq - floor.max(forgiven) < plan.window {
                return;
            }
            let recheck = if plan.qos == QoS::AtMostOnce {
                WINDOW_RECHECK_QOS0
            } else {
                WINDOW_RECHECK_QOS12
            };
            if tokio::time::timeout(recheck, me.wake.notified())
                .await
                .is_err()
                && me.floor() == floor
            {
                // Nothing was read for a while: what is missing is lost, not slow.
                forgiven = seq;
                report.window_stalls += 1;
            }
        };
        let stop_by = stop_by.unwrap_or(started + Duration::from_secs(86_400));
        tokio::select! {
            ready = conn.stream.ready(interest) => {
                ready.with_context(|| format!("publisher {index}: socket"))?;
            }
            () = window_wait => {}
            () = tokio::time::sleep_until(due.into()), if blocked == Blocked::Rate => {}
            () = shared.stop.cancelled(), if !shared.stop.is_cancelled() => {}
            () = tokio::time::sleep_until(stop_by.into()) => {}
        }
        me.paused.store(false, Ordering::SeqCst);
    }
    report.sent = seq;
    Ok((report, conn))
}

/// Handles one packet read by a publisher.
fn on_ack(
    packet: Packet,
    ids: &mut IdPool,
    inflight: &mut usize,
    report: &mut PubReport,
    out: &mut BytesMut,
    version: starling::codec::ProtocolVersion,
) -> anyhow::Result<()> {
    match packet {
        Packet::PubAck(ack) | Packet::PubComp(ack) => {
            if ids.release(ack.packet_id) {
                *inflight -= 1;
                if ack.reason.is_error() {
                    report.rejected += 1;
                }
            } else {
                report.stray_acks += 1;
            }
        }
        Packet::PubRec(rec) if rec.reason.is_error() => {
            if ids.release(rec.packet_id) {
                *inflight -= 1;
                report.rejected += 1;
            } else {
                report.stray_acks += 1;
            }
        }
        Packet::PubRec(rec) => mqtt::put_response(out, version, Packet::PubRel, rec.packet_id)?,
        Packet::PingResp => {}
        Packet::Disconnect(d) => bail!("DISCONNECT from the broker: {:?}", d.reason),
        other => bail!("unexpected {} from the broker", other.name()),
    }
    Ok(())
}

async fn subscribe_loop(
    index: usize,
    mut conn: Conn,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
) -> anyhow::Result<(SubReport, Conn)> {
    let version = conn.ctx.version;
    let slots = plan.slots_of(index);
    let mut tracks: Vec<Track> = (0..plan.publishers()).map(|_| Track::default()).collect();
    let mut report = SubReport::new()?;
    if shared.burst_marks.is_some() {
        report.phase_latency = burst::PHASES
            .iter()
            .map(|_| new_histogram())
            .collect::<anyhow::Result<_>>()?;
    }
    let mut out = BytesMut::new();
    let mut touched: Vec<usize> = Vec::new();
    loop {
        conn.inbuf.reserve(READ_CHUNK);
        let n = tokio::select! {
            biased;
            () = shared.subs_stop.cancelled() => break,
            read = conn.stream.read_buf(&mut conn.inbuf) => {
                read.with_context(|| format!("subscriber {index}: read"))?
            }
        };
        if n == 0 {
            bail!("subscriber {index}: the broker closed the connection");
        }
        mqtt::quickack(&conn.stream);
        while let Some(packet) = conn.decode()? {
            match packet {
                Packet::Publish(publish) => {
                    report.delivered += 1;
                    match (publish.qos, publish.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => {
                            mqtt::put_response(&mut out, version, Packet::PubAck, id)?;
                        }
                        (QoS::ExactlyOnce, Some(id)) => {
                            mqtt::put_response(&mut out, version, Packet::PubRec, id)?;
                        }
                        _ => {}
                    }
                    let Some((publisher, seq, sent_ns)) = mqtt::read_stamp(&publish.payload) else {
                        report.malformed += 1;
                        continue;
                    };
                    let p = publisher as usize;
                    if slots.get(p).copied().flatten().is_none() {
                        report.misrouted += 1;
                        continue;
                    }
                    if seq > MAX_SEQ {
                        report.malformed += 1;
                        continue;
                    }
                    if tracks[p].record(seq) && !touched.contains(&p) {
                        touched.push(p);
                    }
                    if sent_ns >= shared.measure_from_ns {
                        let latency = shared.now_ns().saturating_sub(sent_ns).max(1);
                        report.latency.saturating_record(latency);
                        if let Some(phase) = shared
                            .burst_marks
                            .as_ref()
                            .and_then(|m| m.phase_of(sent_ns))
                            && let Some(h) = report.phase_latency.get_mut(phase)
                        {
                            h.saturating_record(latency);
                        }
                    }
                }
                Packet::PubRel(rel) => {
                    mqtt::put_response(&mut out, version, Packet::PubComp, rel.packet_id)?;
                }
                Packet::PingResp => {}
                Packet::Disconnect(d) => {
                    bail!(
                        "subscriber {index}: DISCONNECT from the broker: {:?}",
                        d.reason
                    )
                }
                other => bail!("subscriber {index}: unexpected {}", other.name()),
            }
        }
        if !out.is_empty() {
            conn.stream
                .write_all(&out)
                .await
                .with_context(|| format!("subscriber {index}: write"))?;
            out.clear();
        }
        shared.delivered[index].store(report.delivered, Ordering::Release);
        for p in touched.drain(..) {
            let Some(slot) = slots[p] else { continue };
            let publisher = &shared.pubs[p];
            publisher.seen[slot].store(tracks[p].next(), Ordering::SeqCst);
            if publisher.paused.load(Ordering::SeqCst) {
                publisher.wake.notify_one();
            }
        }
    }
    report.tracks = tracks;
    Ok((report, conn))
}

/// A new, empty latency histogram in nanoseconds (1 ns to 1 minute, 3 significant digits).
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).context("histogram bounds")
}
