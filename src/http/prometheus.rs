//! `/metrics`: the broker's counters and gauges rendered by `metrics-exporter-prometheus`.
//!
//! The recorder is private to this listener (no global recorder, so brokers in one process, as in
//! the tests, never mix their numbers) and has no listener of its own: this module renders its
//! text on the HTTP route. At each scrape the counters are copied in with `absolute` and the gauges
//! computed and set; the histograms are the recorder's own handles, recorded by the broker.

use std::time::Instant;

use metrics::{Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::broker::Broker;
use std::fmt::Write as _;

use crate::metrics::{Gauges, Histograms, LATENCY_BUCKETS, names};

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Batch size buckets, in changes.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0,
];

/// Help text for every metric, shown as `# HELP` lines.
const HELP: &[(&str, &str, Option<Unit>)] = &[
    (
        names::CONNECTIONS_CURRENT,
        "Network connections open now.",
        None,
    ),
    (
        names::CONNECTIONS_TOTAL,
        "MQTT connections accepted, by protocol version.",
        None,
    ),
    (
        names::CONNECTIONS_REFUSED_TOTAL,
        "Connections refused before becoming a session, by reason.",
        None,
    ),
    (
        names::SOCKETS_TOTAL,
        "TCP connections accepted, by listener.",
        None,
    ),
    (
        names::DISCONNECTS_TOTAL,
        "Sessions' connections ended, by reason.",
        None,
    ),
    (
        names::AUTH_FAILURES_TOTAL,
        "Failed logins, by reason.",
        None,
    ),
    (
        names::MESSAGES_RECEIVED_TOTAL,
        "PUBLISH packets received, by QoS.",
        None,
    ),
    (
        names::MESSAGES_SENT_TOTAL,
        "PUBLISH packets sent, by QoS.",
        None,
    ),
    (
        names::PAYLOAD_RECEIVED_BYTES_TOTAL,
        "Payload bytes received in PUBLISH packets, by QoS.",
        Some(Unit::Bytes),
    ),
    (
        names::PAYLOAD_SENT_BYTES_TOTAL,
        "Payload bytes sent in PUBLISH packets, by QoS.",
        Some(Unit::Bytes),
    ),
    (
        names::PACKETS_RECEIVED_TOTAL,
        "MQTT packets of every type received.",
        None,
    ),
    (
        names::PACKETS_SENT_TOTAL,
        "MQTT packets of every type sent.",
        None,
    ),
    (
        names::NETWORK_RECEIVED_BYTES_TOTAL,
        "Bytes read from client sockets.",
        Some(Unit::Bytes),
    ),
    (
        names::NETWORK_SENT_BYTES_TOTAL,
        "Bytes written to client sockets.",
        Some(Unit::Bytes),
    ),
    (
        names::MESSAGES_DROPPED_TOTAL,
        "Messages that did not reach one subscriber, by reason.",
        None,
    ),
    (
        names::DECODE_ERRORS_TOTAL,
        "Packets that could not be decoded, by reason.",
        None,
    ),
    (
        names::SESSIONS_EXPIRED_TOTAL,
        "Offline sessions ended by their expiry interval.",
        None,
    ),
    (names::SESSIONS_CURRENT, "Sessions now, by state.", None),
    (names::SUBSCRIPTIONS_CURRENT, "Subscriptions now.", None),
    (
        names::RETAINED_MESSAGES_CURRENT,
        "Retained messages now.",
        None,
    ),
    (
        names::QUEUED_MESSAGES_CURRENT,
        "Messages waiting in session queues now.",
        None,
    ),
    (
        names::QUEUED_BYTES_CURRENT,
        "Payload bytes waiting in session queues now.",
        Some(Unit::Bytes),
    ),
    (
        names::INFLIGHT_MESSAGES_CURRENT,
        "QoS 1/2 messages sent and not yet acknowledged now.",
        None,
    ),
    (
        names::UPTIME_SECONDS,
        "Seconds since the broker started.",
        Some(Unit::Seconds),
    ),
    (
        names::STORE_COMMIT_SECONDS,
        "Time to apply one batch of changes to the store.",
        Some(Unit::Seconds),
    ),
    (
        names::STORE_BATCH_OPS,
        "Changes in one batch applied to the store.",
        None,
    ),
    (
        names::PUBLISH_DELIVER_SECONDS,
        "From receiving a PUBLISH to encoding it for one subscriber.",
        Some(Unit::Seconds),
    ),
];

pub struct Exporter {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Exporter {
    pub fn new() -> Self {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in [
            (names::STORE_COMMIT_SECONDS, LATENCY_BUCKETS),
            (names::STORE_BATCH_OPS, BATCH_BUCKETS),
        ] {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                .expect("only an empty bucket list is refused, and these are non-empty constants");
        }
        let recorder = builder.build_recorder();
        // The publish-to-deliver histogram is the broker's own (see `render`).
        for (name, help, unit) in HELP
            .iter()
            .filter(|(name, ..)| *name != names::PUBLISH_DELIVER_SECONDS)
        {
            let key = KeyName::from_const_str(name);
            let help = SharedString::const_str(help);
            if name.ends_with("_total") {
                recorder.describe_counter(key, *unit, help);
            } else if name.ends_with("_current") || *name == names::UPTIME_SECONDS {
                recorder.describe_gauge(key, *unit, help);
            } else {
                recorder.describe_histogram(key, *unit, help);
            }
        }
        let handle = recorder.handle();
        Exporter { recorder, handle }
    }

    /// The histogram handles the broker records into.
    pub fn histograms(&self) -> Histograms {
        let histogram = |name: &'static str| {
            self.recorder
                .register_histogram(&Key::from_static_name(name), &METADATA)
        };
        Histograms {
            store_commit: histogram(names::STORE_COMMIT_SECONDS),
            store_batch: histogram(names::STORE_BATCH_OPS),
        }
    }

    /// Drains the histograms into their buckets, so their samples do not pile up between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text for the broker's state now.
    pub fn render(&self, broker: &Broker, started: Instant) -> String {
        let key = |name: &'static str, labels: &[(&'static str, String)]| {
            let labels: Vec<Label> = labels
                .iter()
                .map(|(k, v)| Label::new(*k, v.clone()))
                .collect();
            Key::from_parts(name, labels)
        };
        broker.metrics().for_each_counter(|name, labels, value| {
            self.recorder
                .register_counter(&key(name, labels), &METADATA)
                .absolute(value);
        });
        let gauge = |name, labels: &[(&'static str, String)], value: f64| {
            self.recorder
                .register_gauge(&key(name, labels), &METADATA)
                .set(value);
        };
        Gauges::read(broker).for_each(gauge);
        let totals = broker.metrics().totals();
        gauge(
            names::CONNECTIONS_CURRENT,
            &[],
            totals.connections_open as f64,
        );
        gauge(
            names::UPTIME_SECONDS,
            &[],
            started.elapsed().as_secs_f64().floor(),
        );
        let mut text = self.handle.render();
        render_deliver_latency(&mut text, broker);
        text
    }
}

/// Appends the publish-to-deliver histogram, which the broker keeps in its own atomics (a
/// recorder histogram per delivery cost the publish path too much), in Prometheus' format.
fn render_deliver_latency(text: &mut String, broker: &Broker) {
    let name = names::PUBLISH_DELIVER_SECONDS;
    let help = HELP
        .iter()
        .find(|(n, ..)| *n == name)
        .map_or("", |(_, help, _)| *help);
    let (counts, sum) = broker.metrics().deliver_latency();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, count) in LATENCY_BUCKETS.iter().zip(&counts) {
        cumulative += count;
        let _ = writeln!(text, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += counts.last().copied().unwrap_or(0);
    let _ = writeln!(text, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(text, "{name}_sum {sum}");
    let _ = writeln!(text, "{name}_count {cumulative}");
}
