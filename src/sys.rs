//! The `$SYS` topics, with mosquitto's names and formats, so dashboards and scripts written for
//! mosquitto work unchanged.
//!
//! Every `sys_interval` seconds the broker publishes, retained and at QoS 2 as mosquitto does,
//! through its normal routing (so ACLs and the `$` rule apply as for any topic): the uptime every
//! time, everything else only when its value changed. `$SYS/broker/version` goes out once at
//! start. `$SYS` messages are never written to the store (see `Broker::route`).
//!
//! The load averages (`$SYS/broker/load/.../1min`, `5min`, `15min`) are mosquitto's: each interval
//! the change of a counter is scaled to a per-minute rate `r`, and the average moves towards it as
//! `load = r + e^(-dt/T) (load - r)` with `T` = 60, 300 or 900 seconds; a load is republished when
//! it moved by 0.01 or more. The first update publishes them all as 0.00.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::broker::Broker;
use crate::codec::{PublishProperties, QoS};
use crate::message::Message;
use crate::metrics::{Gauges, Totals};
use crate::topic::TopicName;

/// The averaging windows of the load topics: suffix and time constant in seconds.
const WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// The load topics (`$SYS/broker/load/<name>/<window>`) and the counter each follows.
/// Reads one counter from the totals.
type Counter = fn(&Totals) -> u64;

const LOADS: [(&str, Counter); 9] = [
    ("messages/received", |t| t.packets_received),
    ("messages/sent", |t| t.packets_sent),
    ("publish/dropped", |t| t.dropped),
    ("publish/received", |t| t.messages_received),
    ("publish/sent", |t| t.messages_sent),
    ("bytes/received", |t| t.bytes_received),
    ("bytes/sent", |t| t.bytes_sent),
    ("sockets", |t| t.sockets),
    ("connections", |t| t.connections),
];

/// What the `$SYS` tree last said, to publish changes only.
#[derive(Debug)]
pub struct SysTree {
    started: Instant,
    /// The previous update: when, and the counters then.
    last: Option<(Instant, Totals)>,
    /// `loads[i][w]`: load `LOADS[i]` over `WINDOWS[w]`.
    loads: [[f64; 3]; 9],
    clients_maximum: usize,
    published: HashMap<String, String>,
}

impl SysTree {
    pub fn new(started: Instant) -> Self {
        SysTree {
            started,
            last: None,
            loads: [[0.0; 3]; 9],
            clients_maximum: 0,
            published: HashMap::new(),
        }
    }

    /// The topics to publish at `now`, given the counters and the broker's state: `(topic,
    /// payload)` pairs, topics without the `$SYS/broker/` prefix.
    pub fn update(
        &mut self,
        now: Instant,
        totals: Totals,
        gauges: Gauges,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.last.is_none() {
            out.push((
                "version".to_owned(),
                format!("starling version {}", env!("CARGO_PKG_VERSION")),
            ));
        }
        let uptime = now.saturating_duration_since(self.started).as_secs();
        out.push(("uptime".to_owned(), format!("{uptime} seconds")));

        let mut changed = |topic: &str, value: String| {
            if self.published.get(topic) != Some(&value) {
                self.published.insert(topic.to_owned(), value.clone());
                out.push((topic.to_owned(), value));
            }
        };
        let offline = gauges.sessions - gauges.online;
        changed("clients/total", gauges.sessions.to_string());
        if gauges.sessions > self.clients_maximum || self.last.is_none() {
            self.clients_maximum = self.clients_maximum.max(gauges.sessions);
            changed("clients/maximum", self.clients_maximum.to_string());
        }
        changed("clients/inactive", offline.to_string());
        changed("clients/disconnected", offline.to_string());
        changed("clients/active", gauges.online.to_string());
        changed("clients/connected", gauges.online.to_string());
        changed("clients/expired", totals.sessions_expired.to_string());
        let stored = gauges.retained + gauges.queued_messages;
        changed("messages/stored", stored.to_string());
        changed("store/messages/count", stored.to_string());
        changed("store/messages/bytes", gauges.queued_bytes.to_string());
        changed("subscriptions/count", gauges.subscriptions.to_string());
        changed("retained messages/count", gauges.retained.to_string());
        changed("messages/received", totals.packets_received.to_string());
        changed("messages/sent", totals.packets_sent.to_string());
        changed("publish/messages/dropped", totals.dropped.to_string());
        changed(
            "publish/messages/received",
            totals.messages_received.to_string(),
        );
        changed("publish/messages/sent", totals.messages_sent.to_string());
        changed("bytes/received", totals.bytes_received.to_string());
        changed("bytes/sent", totals.bytes_sent.to_string());
        changed(
            "publish/bytes/received",
            totals.payload_received.to_string(),
        );
        changed("publish/bytes/sent", totals.payload_sent.to_string());

        match self.last {
            None => {
                for (name, _) in LOADS {
                    for (window, _) in WINDOWS {
                        out.push((format!("load/{name}/{window}"), "0.00".to_owned()));
                    }
                }
            }
            Some((then, before)) => {
                let dt = now.saturating_duration_since(then).as_secs_f64().max(0.001);
                for (i, (name, counter)) in LOADS.iter().enumerate() {
                    let per_minute =
                        counter(&totals).saturating_sub(counter(&before)) as f64 * 60.0 / dt;
                    for (w, (window, constant)) in WINDOWS.iter().enumerate() {
                        let current = self.loads[i][w];
                        let next = per_minute + (-dt / constant).exp() * (current - per_minute);
                        if (next - current).abs() >= 0.01 {
                            out.push((format!("load/{name}/{window}"), format!("{next:.2}")));
                        }
                        self.loads[i][w] = next;
                    }
                }
            }
        }
        self.last = Some((now, totals));
        out
    }
}

/// Publishes the `$SYS` tree every `interval` until `stop`.
pub async fn run(broker: Arc<Broker>, interval: Duration, stop: CancellationToken) {
    let started = tokio::time::Instant::now().into_std();
    let mut tree = SysTree::new(started);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = tokio::time::Instant::now().into_std();
        let updates = tree.update(now, broker.metrics().totals(), Gauges::read(&broker));
        for (topic, payload) in updates {
            publish(&broker, &topic, payload, now);
        }
    }
}

fn publish(broker: &Broker, topic: &str, payload: String, now: Instant) {
    let topic = match TopicName::new(&format!("$SYS/broker/{topic}")) {
        Ok(topic) => topic,
        Err(e) => {
            warn!("cannot publish $SYS/broker/{topic}: {e}");
            return;
        }
    };
    broker.route(Arc::new(Message {
        topic,
        payload: Bytes::from(payload),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: PublishProperties::default(),
        expires_at: None,
        origin: None,
        published_at: Some(now),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(updates: &'a [(String, String)], topic: &str) -> Option<&'a str> {
        updates
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_first_update_publishes_everything_and_later_ones_only_changes() {
        let t0 = Instant::now();
        let mut tree = SysTree::new(t0);
        let gauges = Gauges {
            sessions: 3,
            online: 2,
            ..Gauges::default()
        };
        let first = tree.update(t0, Totals::default(), gauges);
        assert_eq!(
            find(&first, "version"),
            Some(concat!("starling version ", env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(find(&first, "uptime"), Some("0 seconds"));
        assert_eq!(find(&first, "clients/connected"), Some("2"));
        assert_eq!(find(&first, "clients/disconnected"), Some("1"));
        assert_eq!(find(&first, "clients/total"), Some("3"));
        assert_eq!(find(&first, "clients/maximum"), Some("3"));
        assert_eq!(find(&first, "load/messages/received/15min"), Some("0.00"));
        assert_eq!(find(&first, "retained messages/count"), Some("0"));

        let totals = Totals {
            messages_received: 5,
            ..Totals::default()
        };
        let second = tree.update(t0 + Duration::from_secs(10), totals, gauges);
        assert_eq!(find(&second, "uptime"), Some("10 seconds"));
        assert_eq!(find(&second, "version"), None, "once");
        assert_eq!(find(&second, "clients/connected"), None, "unchanged");
        assert_eq!(find(&second, "publish/messages/received"), Some("5"));
        // 5 messages in 10 s is 30 a minute; one step of 10 s towards it from 0.
        let expected = 30.0 - (-10.0f64 / 60.0).exp() * 30.0;
        assert_eq!(
            find(&second, "load/publish/received/1min"),
            Some(format!("{expected:.2}").as_str())
        );
        assert_eq!(find(&second, "load/publish/sent/1min"), None, "still 0.00");
    }

    #[test]
    fn a_steady_rate_becomes_the_load_in_messages_per_minute() {
        let t0 = Instant::now();
        let mut tree = SysTree::new(t0);
        let mut totals = Totals::default();
        tree.update(t0, totals, Gauges::default());
        let mut last = String::new();
        for step in 1..=200u64 {
            totals.messages_received += 100; // 10 a second
            let updates = tree.update(
                t0 + Duration::from_secs(10 * step),
                totals,
                Gauges::default(),
            );
            if let Some(load) = find(&updates, "load/publish/received/1min") {
                last = load.to_owned();
            }
        }
        // Republished until it moves by less than 0.01 per update, so within 0.1 of the rate.
        let last: f64 = last.parse().expect("a number with two decimals");
        assert!((last - 600.0).abs() < 0.1, "{last}");
        // The 15 minute load follows more slowly: after 2000 s it has closed 1 - e^(-2000/900)
        // of the gap.
        let fifteen = 600.0 * (1.0 - (-2000.0f64 / 900.0).exp());
        assert!(
            (tree.loads[3][2] - fifteen).abs() < 0.01,
            "{}",
            tree.loads[3][2]
        );
    }
}
