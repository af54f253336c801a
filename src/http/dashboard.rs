//! The live dashboard: static files embedded in the binary, and the one JSON view its script
//! polls (`/api/dashboard`, every second).
//!
//! A sampler task reads the broker's counters once a second into a ring of the last five minutes
//! (message rates, connections) and ends a "top topics" window every five seconds. So the
//! dashboard's cost is independent of the publish rate, and zero on the publish path besides the
//! topic sample.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Reply, State, not_found};
use crate::metrics::{Gauges, Totals};

/// Samples kept: one a second for five minutes.
const HISTORY: usize = 300;

/// How long a "top topics" window lasts.
const TOP_WINDOW: Duration = Duration::from_secs(5);

/// Topics and queues the dashboard lists.
const TOP: usize = 10;

/// One second of the broker's life.
#[derive(Debug, Clone, Copy)]
struct Point {
    /// Unix time, seconds.
    at: u64,
    received_per_sec: f64,
    sent_per_sec: f64,
    connections: u64,
}

#[derive(Debug, Default)]
pub struct Dashboard {
    history: Mutex<VecDeque<Point>>,
    top_topics: Mutex<Vec<(String, f64)>>,
}

/// Samples the counters every second until `stop`; also drains the metric histograms.
pub(super) async fn sample(state: Arc<State>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<(Instant, Totals)> = None;
    let mut window_started = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = Instant::now();
        let totals = state.broker.metrics().totals();
        if let Some((then, before)) = previous {
            let secs = now.duration_since(then).as_secs_f64().max(0.001);
            let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / secs;
            let point = Point {
                at: unix_seconds(SystemTime::now()),
                received_per_sec: rate(totals.messages_received, before.messages_received),
                sent_per_sec: rate(totals.messages_sent, before.messages_sent),
                connections: state
                    .broker
                    .sessions()
                    .iter()
                    .filter(|slot| slot.is_online())
                    .count() as u64,
            };
            let mut history = state.dashboard.history.lock();
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(point);
        }
        previous = Some((now, totals));
        if now.duration_since(window_started) >= TOP_WINDOW {
            let elapsed = now.duration_since(window_started);
            window_started = now;
            let top = state.broker.metrics().topics().take_top(TOP, elapsed);
            *state.dashboard.top_topics.lock() = top
                .into_iter()
                .map(|(topic, rate)| (topic.as_str().to_owned(), rate))
                .collect();
            state.exporter.upkeep();
        }
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What the dashboard shows, now.
pub(super) fn view(state: &State) -> Value {
    let broker = &state.broker;
    let gauges = Gauges::read(broker);
    let history: Vec<Value> = state
        .dashboard
        .history
        .lock()
        .iter()
        .map(|p| {
            json!([
                p.at,
                round(p.received_per_sec),
                round(p.sent_per_sec),
                p.connections
            ])
        })
        .collect();
    let latest = history
        .last()
        .cloned()
        .unwrap_or_else(|| json!([0, 0.0, 0.0, 0]));
    // The deepest queues, without sorting every session: a bounded min-heap.
    let mut deepest: BinaryHeap<Reverse<(usize, usize, String, bool)>> = BinaryHeap::new();
    for slot in broker.sessions() {
        let (messages, bytes) = slot.queue_depth();
        if messages == 0 {
            continue;
        }
        deepest.push(Reverse((
            messages,
            bytes,
            slot.client_id.to_string(),
            slot.is_online(),
        )));
        if deepest.len() > TOP {
            deepest.pop();
        }
    }
    let mut deepest: Vec<_> = deepest.into_iter().map(|Reverse(entry)| entry).collect();
    deepest.sort_by(|a, b| b.cmp(a));
    let totals = broker.metrics().totals();
    json!({
        "uptime_seconds": state.info.started.elapsed().as_secs(),
        "connections": gauges.online,
        "sessions": gauges.sessions,
        "subscriptions": gauges.subscriptions,
        "retained": gauges.retained,
        "queued_messages": gauges.queued_messages,
        "inflight": gauges.inflight,
        "messages_received": totals.messages_received,
        "messages_sent": totals.messages_sent,
        "dropped": totals.dropped,
        "rate_in": latest[1],
        "rate_out": latest[2],
        "history": history,
        "top_topics": state.dashboard.top_topics.lock().iter()
            .map(|(topic, rate)| json!({"topic": topic, "rate": round(*rate)}))
            .collect::<Vec<_>>(),
        "deepest_queues": deepest.into_iter()
            .map(|(messages, bytes, client_id, online)| json!({
                "client_id": client_id, "queued": messages, "queued_bytes": bytes, "online": online,
            }))
            .collect::<Vec<_>>(),
        "recent_disconnects": broker.metrics().recent_disconnects().into_iter().rev()
            .map(|d| json!({
                "at": unix_seconds(d.at), "client_id": &*d.client_id, "reason": d.reason.label(),
            }))
            .collect::<Vec<_>>(),
    })
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// A static file of the dashboard.
pub(super) fn asset(name: &str) -> Reply {
    let (body, kind): (&'static str, &'static str) = match name {
        "index.html" => (
            include_str!("assets/index.html"),
            "text/html; charset=utf-8",
        ),
        "dashboard.js" => (
            include_str!("assets/dashboard.js"),
            "text/javascript; charset=utf-8",
        ),
        "dashboard.css" => (
            include_str!("assets/dashboard.css"),
            "text/css; charset=utf-8",
        ),
        _ => return not_found(),
    };
    let mut reply = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *reply.status_mut() = StatusCode::OK;
    reply
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    reply
}
