//! The `$SYS` tree seen by real clients: rumqttc and `mosquitto_sub` subscribe to `$SYS/#` and
//! watch the values move while other clients work. (The load average formula and the
//! publish-on-change rule are unit-tested in src/sys.rs.)

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::flows::V4Client;
use common::tools::{on_path, tool_available};
use common::{RawClient, TestBroker};
use starling::codec::{ProtocolVersion, QoS};
use starling::storage::{MemoryStore, Store};

const V311: ProtocolVersion = ProtocolVersion::V311;

/// How long a test watches `$SYS` at most.
const WATCH: Duration = Duration::from_secs(15);

/// Every value each `$SYS/broker/...` topic took, in order, with whether it came retained.
#[derive(Debug, Default)]
struct Seen(HashMap<String, Vec<(String, bool)>>);

impl Seen {
    fn record(&mut self, topic: &str, payload: &[u8], retain: bool) {
        let topic = topic.strip_prefix("$SYS/broker/").unwrap_or(topic);
        self.0
            .entry(topic.to_owned())
            .or_default()
            .push((String::from_utf8_lossy(payload).into_owned(), retain));
    }

    fn values(&self, topic: &str) -> Vec<&str> {
        self.0
            .get(topic)
            .map(|v| v.iter().map(|(value, _)| value.as_str()).collect())
            .unwrap_or_default()
    }

    fn last_number(&self, topic: &str) -> f64 {
        self.values(topic)
            .last()
            .and_then(|v| v.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

#[tokio::test]
async fn a_sys_subscriber_sees_mosquitto_topics_and_their_values_move() {
    let broker = TestBroker::start_with(|c| c.sys_interval = 1).await;
    // Subscribing after the first update, the tree comes as retained messages.
    common::flows::eventually("the first $SYS update", || {
        broker.broker.retained_count() > 0
    })
    .await;
    let mut watcher = V4Client::connect(broker.addr, "sys-watcher", |_| {}).await;
    watcher.subscribe("$SYS/#", rumqttc::QoS::AtMostOnce).await;
    let mut seen = Seen::default();
    // The retained tree arrives at once.
    while !seen.0.contains_key("version") {
        let publish = watcher.next_publish().await;
        seen.record(&publish.topic, &publish.payload, publish.retain);
    }
    assert_eq!(
        seen.0["version"],
        [(
            format!("starling version {}", env!("CARGO_PKG_VERSION")),
            true
        )],
        "retained, once"
    );

    // Work for the tree to report: a second client publishes 20 messages.
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "sys-publisher", true).await;
    for n in 0..20u16 {
        publisher
            .publish("work/t", b"payload", QoS::AtLeastOnce, n + 1)
            .await;
    }
    let deadline = tokio::time::Instant::now() + WATCH;
    let done = |seen: &Seen| {
        seen.values("uptime").len() >= 3
            && seen.last_number("clients/connected") == 2.0
            && seen.last_number("publish/messages/received") == 20.0
            && seen.last_number("load/publish/received/1min") > 0.0
    };
    while !done(&seen) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "$SYS did not move as expected within {WATCH:?}: {seen:#?}"
        );
        let publish = watcher.next_publish().await;
        seen.record(&publish.topic, &publish.payload, publish.retain);
    }
    let uptimes: Vec<u64> = seen
        .values("uptime")
        .iter()
        .map(|v| {
            v.strip_suffix(" seconds")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("uptime {v:?}"))
        })
        .collect();
    assert!(
        uptimes.windows(2).all(|w| w[0] < w[1]),
        "uptime rises: {uptimes:?}"
    );
    // Counters and gauges in mosquitto's formats.
    for topic in [
        "clients/total",
        "clients/maximum",
        "clients/disconnected",
        "subscriptions/count",
        "retained messages/count",
        "messages/received",
        "bytes/received",
        "publish/bytes/received",
        "load/connections/5min",
        "load/bytes/received/15min",
    ] {
        assert!(
            seen.0.contains_key(topic),
            "no $SYS/broker/{topic}: {seen:#?}"
        );
    }
    assert!(
        seen.last_number("publish/bytes/received") >= 140.0,
        "20 x 7 bytes"
    );
    broker.stop().await;
}

#[tokio::test]
async fn mosquitto_sub_reads_the_sys_tree() {
    if !tool_available(
        on_path("mosquitto_sub"),
        "mosquitto_sub not found",
        "install mosquitto-clients",
    ) {
        return;
    }
    let broker = TestBroker::start_with(|c| c.sys_interval = 1).await;
    let port = broker.addr.port().to_string();
    // Watches for about 3 updates, then stops by itself (-W).
    let watch = tokio::task::spawn_blocking(move || {
        std::process::Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "$SYS/#",
                "-v",
                "-W",
                "3",
            ])
            .output()
    });
    let output = tokio::time::timeout(WATCH, watch)
        .await
        .expect("mosquitto_sub ends")
        .expect("joined")
        .expect("mosquitto_sub runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut seen = Seen::default();
    for line in stdout.lines() {
        if let Some((topic, value)) = line.split_once(' ') {
            seen.record(topic, value.as_bytes(), false);
        }
    }
    assert_eq!(
        seen.values("version"),
        [format!("starling version {}", env!("CARGO_PKG_VERSION"))]
    );
    assert!(seen.values("uptime").len() >= 2, "{stdout}");
    // mosquitto_sub itself is the one connected client, by the last update at the latest.
    assert_eq!(
        seen.values("clients/connected").last(),
        Some(&"1"),
        "{stdout}"
    );
    assert!(
        seen.0.contains_key("load/messages/received/1min"),
        "{stdout}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn sys_interval_0_publishes_nothing() {
    let broker = TestBroker::start_with(|c| c.sys_interval = 0).await;
    let (mut watcher, _) = RawClient::connect(broker.addr, V311, "watcher", true).await;
    watcher.subscribe("$SYS/#", QoS::AtMostOnce).await;
    assert!(
        watcher
            .recv_within(Duration::from_millis(1500))
            .await
            .is_none(),
        "no $SYS message"
    );
    assert_eq!(broker.broker.retained_count(), 0);
    broker.stop().await;
}

#[tokio::test]
async fn sys_messages_are_never_stored() {
    let store = Arc::new(MemoryStore::new());
    let broker = TestBroker::start_with_store(
        |c| c.sys_interval = 1,
        Some(store.clone() as Arc<dyn Store>),
    )
    .await;
    let (mut client, _) = RawClient::connect(broker.addr, V311, "keeper", true).await;
    client
        .send(&starling::codec::Packet::Publish(
            common::flows::retained_packet("kept/t", b"v", QoS::AtLeastOnce, 1),
        ))
        .await;
    client.recv().await; // PUBACK: routed and handed to the store
    common::flows::eventually("the $SYS tree", || broker.broker.retained_count() > 10).await;
    broker.stop().await;
    let retained: Vec<String> = store
        .load()
        .expect("load")
        .retained
        .iter()
        .map(|m| m.topic.as_str().to_owned())
        .collect();
    assert_eq!(retained, ["kept/t"]);
}
