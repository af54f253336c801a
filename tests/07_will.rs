//! Will messages: when they are published (abnormal close, keep-alive timeout, protocol violation,
//! takeover, 5.0 DISCONNECT 0x04) and when not (normal DISCONNECT), their retain flag, QoS and 5.0
//! properties, and the 5.0 Will Delay Interval with its interplay with session expiry.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{RawClient, TestBroker, connect_packet, topic, will};
use starling::codec::{
    Connect, Disconnect, DisconnectProperties, Packet, PayloadFormat, ProtocolVersion, PubResponse,
    Publish, PublishProperties, QoS, ReasonCode, UserProperty, Will, WillProperties,
};

const V31: ProtocolVersion = ProtocolVersion::V31;
const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// A short window for asserting that nothing arrives.
const QUIET: Duration = Duration::from_millis(300);

/// A client subscribed to `filter` at QoS 2, watching for wills.
async fn observer(
    broker: &TestBroker,
    version: ProtocolVersion,
    id: &str,
    filter: &str,
) -> RawClient {
    let (mut client, _) = RawClient::connect(broker.addr, version, id, true).await;
    client.subscribe(filter, QoS::ExactlyOnce).await;
    client
}

/// A CONNECT carrying `will`, with the given clean start and (5.0) session expiry.
fn will_connect(
    version: ProtocolVersion,
    id: &str,
    will: Will,
    clean_start: bool,
    expiry: Option<u32>,
) -> Connect {
    let mut connect = connect_packet(version, id, clean_start);
    connect.will = Some(will);
    connect.properties.session_expiry_interval = expiry;
    connect
}

/// A 5.0 will with a Will Delay Interval.
fn delayed_will(topic_name: &str, payload: &[u8], delay: u32) -> Will {
    let mut will = will(topic_name, payload, QoS::AtLeastOnce, false);
    will.properties.will_delay_interval = Some(delay);
    will
}

/// Expects the next packet to be the will: topic and payload as given.
async fn expect_will(observer: &mut RawClient, topic_name: &str, payload: &[u8]) -> Publish {
    let publish = observer.recv_publish().await;
    assert_eq!(publish.topic.as_str(), topic_name);
    assert_eq!(&publish.payload[..], payload);
    publish
}

async fn expect_no_will(observer: &mut RawClient, wait: Duration) {
    let packet = observer.recv_within(wait).await;
    assert_eq!(packet, None, "no will is expected");
}

// ---------------------------------------------------------------------------------------------
// When the will is published

#[tokio::test]
async fn will_is_published_when_the_socket_drops() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V311, "w-drop-obs", "w/drop/+").await;
    for (version, name) in [(V31, "v31"), (V311, "v311"), (V5, "v5")] {
        let will_topic = format!("w/drop/{name}");
        let connect = will_connect(
            version,
            &format!("w-drop-{name}"),
            will(&will_topic, b"gone", QoS::AtLeastOnce, false),
            true,
            None,
        );
        let (client, _) = RawClient::connect_with(broker.addr, connect).await;
        drop(client);
        // [MQTT-3.1.2-8] published when the connection closes without DISCONNECT.
        let publish = expect_will(&mut watcher, &will_topic, b"gone").await;
        assert_eq!(publish.qos, QoS::AtLeastOnce, "{version:?}");
        assert!(!publish.retain, "{version:?}");
    }
}

#[tokio::test]
async fn will_is_published_on_keep_alive_timeout_without_waiting_for_the_client() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V311, "w-ka-obs", "w/ka").await;
    let mut connect = will_connect(
        V311,
        "w-ka",
        will("w/ka", b"timed out", QoS::AtMostOnce, false),
        true,
        None,
    );
    connect.keep_alive = 1;
    // The client goes silent but keeps its socket open, as a dead peer behind a NAT would.
    let (_silent, _) = RawClient::connect_with(broker.addr, connect).await;
    // [MQTT-3.1.2-22] at 1.5 x keep alive the server disconnects "as if the network had failed",
    // which publishes the will: it must not wait for the unresponsive client to close its side.
    match watcher.recv_within(Duration::from_millis(2500)).await {
        Some(Packet::Publish(publish)) => assert_eq!(&publish.payload[..], b"timed out"),
        other => panic!("expected the will by 1.5 s + 1 s, got {other:?}"),
    }
}

#[tokio::test]
async fn v5_will_is_published_on_keep_alive_timeout_after_disconnect_0x8d() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V5, "w-ka5-obs", "w/ka5").await;
    let mut connect = will_connect(
        V5,
        "w-ka5",
        will("w/ka5", b"timed out", QoS::AtMostOnce, false),
        true,
        None,
    );
    connect.keep_alive = 1;
    let (mut client, _) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(
        client.recv_until_closed().await,
        [Packet::Disconnect(Disconnect::new(
            ReasonCode::KeepAliveTimeout
        ))]
    );
    expect_will(&mut watcher, "w/ka5", b"timed out").await;
}

#[tokio::test]
async fn will_is_published_when_the_broker_closes_for_a_protocol_violation() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V311, "w-viol-obs", "w/viol/+").await;
    // A SUBSCRIBE with fixed-header flags 0000 instead of 0010 is malformed ([MQTT-3.8.1-1]).
    let bad_subscribe = [0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00];
    for (version, name) in [(V311, "v311"), (V5, "v5")] {
        let will_topic = format!("w/viol/{name}");
        let connect = will_connect(
            version,
            &format!("w-viol-{name}"),
            will(&will_topic, b"broke", QoS::AtMostOnce, false),
            true,
            None,
        );
        let (mut client, _) = RawClient::connect_with(broker.addr, connect).await;
        client.send_raw(&bad_subscribe).await;
        let expected: Vec<Packet> = if version.is_v5() {
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::MalformedPacket,
            ))]
        } else {
            Vec::new()
        };
        assert_eq!(client.recv_until_closed().await, expected);
        expect_will(&mut watcher, &will_topic, b"broke").await;
    }
}

#[tokio::test]
async fn will_is_published_when_a_second_connect_breaks_the_protocol() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V311, "w-2c-obs", "w/second").await;
    let connect = will_connect(
        V311,
        "w-2c",
        will("w/second", b"twice", QoS::AtMostOnce, false),
        true,
        None,
    );
    let (mut client, _) = RawClient::connect_with(broker.addr, connect.clone()).await;
    client.send(&Packet::Connect(Box::new(connect))).await;
    assert!(client.recv_until_closed().await.is_empty());
    expect_will(&mut watcher, "w/second", b"twice").await;
}

#[tokio::test]
async fn v5_disconnect_breaking_the_session_expiry_rule_publishes_the_will() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V5, "w-expbad-obs", "w/expbad").await;
    let connect = will_connect(
        V5,
        "w-expbad",
        will("w/expbad", b"bad disconnect", QoS::AtMostOnce, false),
        true,
        None,
    );
    let (mut client, _) = RawClient::connect_with(broker.addr, connect).await;
    // Session expiry 0 at CONNECT cannot become non-zero at DISCONNECT (section 3.14.2.2.2): the
    // DISCONNECT is a protocol error, not a normal disconnection, so the will stays.
    client
        .send(&Packet::Disconnect(Disconnect {
            reason: ReasonCode::Success,
            properties: DisconnectProperties {
                session_expiry_interval: Some(10),
                ..DisconnectProperties::default()
            },
        }))
        .await;
    assert_eq!(
        client.recv_until_closed().await,
        [Packet::Disconnect(Disconnect::new(
            ReasonCode::ProtocolError
        ))]
    );
    expect_will(&mut watcher, "w/expbad", b"bad disconnect").await;
}

#[tokio::test]
async fn will_is_published_when_the_session_is_taken_over() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V311, "w-to-obs", "w/to/+").await;
    for (version, name) in [(V311, "v311"), (V5, "v5")] {
        let id = format!("w-to-{name}");
        let will_topic = format!("w/to/{name}");
        let connect = will_connect(
            version,
            &id,
            will(&will_topic, b"replaced", QoS::AtMostOnce, false),
            true,
            None,
        );
        let (mut old, _) = RawClient::connect_with(broker.addr, connect).await;
        let (_new, ack) = RawClient::connect(broker.addr, version, &id, true).await;
        assert_eq!(ack.reason, ReasonCode::Success);
        let expected: Vec<Packet> = if version.is_v5() {
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::SessionTakenOver,
            ))]
        } else {
            Vec::new()
        };
        assert_eq!(old.recv_until_closed().await, expected);
        expect_will(&mut watcher, &will_topic, b"replaced").await;
    }
}

#[tokio::test]
async fn will_is_not_published_after_a_normal_disconnect() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V311, "w-norm-obs", "w/normal/+").await;
    for (version, name) in [(V31, "v31"), (V311, "v311"), (V5, "v5")] {
        let connect = will_connect(
            version,
            &format!("w-norm-{name}"),
            will(
                &format!("w/normal/{name}"),
                b"never",
                QoS::AtMostOnce,
                false,
            ),
            true,
            None,
        );
        let (client, _) = RawClient::connect_with(broker.addr, connect).await;
        // [MQTT-3.1.2-10] (3.1.1 [MQTT-3.1.2-10]) DISCONNECT 0x00 discards the will.
        assert!(client.disconnect().await.is_empty(), "{version:?}");
        expect_no_will(&mut watcher, QUIET).await;
    }
}

#[tokio::test]
async fn v5_disconnect_with_will_message_publishes_the_will() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V5, "w-04-obs", "w/04").await;
    let connect = will_connect(
        V5,
        "w-04",
        will("w/04", b"asked for", QoS::AtLeastOnce, false),
        true,
        None,
    );
    let (mut client, _) = RawClient::connect_with(broker.addr, connect).await;
    client
        .send(&Packet::Disconnect(Disconnect::new(
            ReasonCode::DisconnectWithWillMessage,
        )))
        .await;
    assert!(client.recv_until_closed().await.is_empty());
    let publish = expect_will(&mut watcher, "w/04", b"asked for").await;
    assert_eq!(publish.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn will_is_published_once_and_not_by_a_resumed_session_without_one() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V311, "w-once-obs", "w/once").await;
    let connect = will_connect(
        V311,
        "w-once",
        will("w/once", b"one", QoS::AtMostOnce, false),
        false,
        None,
    );
    let (client, _) = RawClient::connect_with(broker.addr, connect).await;
    drop(client);
    expect_will(&mut watcher, "w/once", b"one").await;
    // The will belonged to that connection; the resumed session has none.
    let (client, ack) = RawClient::connect(broker.addr, V311, "w-once", false).await;
    assert!(ack.session_present);
    drop(client);
    expect_no_will(&mut watcher, QUIET).await;
}

#[tokio::test]
async fn rumqttc_last_will_is_published_when_the_client_vanishes() {
    use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet as P, QoS as Q};
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V311, "w-rq-obs", "w/rq").await;
    let mut options = MqttOptions::new("w-rq", "127.0.0.1", broker.addr.port());
    options.set_last_will(LastWill::new("w/rq", "rumqttc gone", Q::AtLeastOnce, false));
    let (_client, mut events) = AsyncClient::new(options, 10);
    loop {
        let event = tokio::time::timeout(common::RECV_TIMEOUT, events.poll())
            .await
            .expect("event in time")
            .expect("connected");
        if let Event::Incoming(P::ConnAck(_)) = event {
            break;
        }
    }
    drop(events);
    let publish = expect_will(&mut watcher, "w/rq", b"rumqttc gone").await;
    assert_eq!(publish.qos, QoS::AtLeastOnce);
}

// ---------------------------------------------------------------------------------------------
// Retain, QoS and properties

#[tokio::test]
async fn will_retain_flag_stores_the_will_as_retained() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V311, "w-ret-obs", "w/retained").await;
    let connect = will_connect(
        V311,
        "w-ret",
        will("w/retained", b"last words", QoS::AtLeastOnce, true),
        true,
        None,
    );
    let (client, _) = RawClient::connect_with(broker.addr, connect).await;
    drop(client);
    // A live subscriber gets RETAIN 0 ([MQTT-3.3.1-9] in 3.1.1)...
    let live = expect_will(&mut watcher, "w/retained", b"last words").await;
    assert!(!live.retain);
    assert_eq!(broker.broker.retained_count(), 1);
    // ...and a later subscriber gets the retained copy with RETAIN 1.
    let (mut late, _) = RawClient::connect(broker.addr, V311, "w-ret-late", true).await;
    late.subscribe("w/retained", QoS::AtLeastOnce).await;
    let retained = expect_will(&mut late, "w/retained", b"last words").await;
    assert!(retained.retain);
    assert_eq!(retained.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn will_qos_is_honoured_up_to_the_subscription_qos() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V311, "w-qos-obs", "w/qos/+").await;
    for (will_qos, name) in [
        (QoS::AtMostOnce, "0"),
        (QoS::AtLeastOnce, "1"),
        (QoS::ExactlyOnce, "2"),
    ] {
        let will_topic = format!("w/qos/{name}");
        let connect = will_connect(
            V311,
            &format!("w-qos-{name}"),
            will(&will_topic, b"q", will_qos, false),
            true,
            None,
        );
        let (client, _) = RawClient::connect_with(broker.addr, connect).await;
        drop(client);
        let publish = expect_will(&mut watcher, &will_topic, b"q").await;
        assert_eq!(publish.qos, will_qos);
        assert_eq!(publish.packet_id.is_some(), will_qos != QoS::AtMostOnce);
        if let Some(id) = publish.packet_id {
            let ack = PubResponse::success(id);
            let packet = if will_qos == QoS::AtLeastOnce {
                Packet::PubAck(ack)
            } else {
                Packet::PubRec(ack)
            };
            watcher.send(&packet).await;
            if will_qos == QoS::ExactlyOnce {
                assert!(matches!(watcher.recv().await, Packet::PubRel(_)));
            }
        }
    }
    // A QoS 2 will to a QoS 1 subscription arrives at QoS 1.
    let (mut low, _) = RawClient::connect(broker.addr, V311, "w-qos-low", true).await;
    low.subscribe("w/qos/low", QoS::AtLeastOnce).await;
    let connect = will_connect(
        V311,
        "w-qos-high",
        will("w/qos/low", b"capped", QoS::ExactlyOnce, false),
        true,
        None,
    );
    let (client, _) = RawClient::connect_with(broker.addr, connect).await;
    drop(client);
    let publish = expect_will(&mut low, "w/qos/low", b"capped").await;
    assert_eq!(publish.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn v5_will_properties_are_forwarded() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V5, "w-props-obs", "w/props").await;
    let user_properties = vec![
        UserProperty {
            key: "a".into(),
            value: "1".into(),
        },
        UserProperty {
            key: "b".into(),
            value: "2".into(),
        },
        UserProperty {
            key: "a".into(),
            value: "3".into(),
        },
    ];
    let will = Will {
        properties: WillProperties {
            will_delay_interval: None,
            payload_format: Some(PayloadFormat::Utf8),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some(topic("w/props/reply")),
            correlation_data: Some(Bytes::from_static(b"corr-1")),
            user_properties: user_properties.clone(),
        },
        ..will("w/props", "héllo".as_bytes(), QoS::AtLeastOnce, false)
    };
    let (client, _) =
        RawClient::connect_with(broker.addr, will_connect(V5, "w-props", will, true, None)).await;
    drop(client);
    let publish = expect_will(&mut watcher, "w/props", "héllo".as_bytes()).await;
    // Section 3.1.3.2: every will property travels with the will; the Message Expiry Interval
    // counts from publication (60 s, rounded up).
    assert_eq!(
        publish.properties,
        PublishProperties {
            payload_format: Some(PayloadFormat::Utf8),
            message_expiry_interval: Some(60),
            topic_alias: None,
            response_topic: Some(topic("w/props/reply")),
            correlation_data: Some(Bytes::from_static(b"corr-1")),
            user_properties,
            subscription_identifiers: Vec::new(),
            content_type: Some("text/plain".into()),
        }
    );
}

#[tokio::test]
async fn v5_retained_will_is_refused_when_retain_is_unavailable() {
    let broker = TestBroker::start_with(|c| c.limits.retain_available = false).await;
    let connect = will_connect(
        V5,
        "w-noretain",
        will("w/noretain", b"x", QoS::AtMostOnce, true),
        true,
        None,
    );
    let (mut client, ack) = RawClient::connect_with(broker.addr, connect).await;
    // [MQTT-3.2.2-12] Will Retain 1 when Retain Available is 0: CONNACK 0x9A.
    assert_eq!(ack.reason, ReasonCode::RetainNotSupported);
    assert!(client.recv_until_closed().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Will Delay Interval

#[tokio::test]
async fn delayed_will_is_published_after_the_delay() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V5, "w-delay-obs", "w/delay").await;
    let connect = will_connect(
        V5,
        "w-delay",
        delayed_will("w/delay", b"late", 1),
        true,
        Some(60),
    );
    let (client, _) = RawClient::connect_with(broker.addr, connect).await;
    drop(client);
    // Section 3.1.3.2.2: not before the delay...
    expect_no_will(&mut watcher, Duration::from_millis(600)).await;
    // ...but once it has passed.
    expect_will(&mut watcher, "w/delay", b"late").await;
}

#[tokio::test]
async fn delayed_will_is_not_published_when_the_session_resumes_within_the_delay() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V5, "w-resume-obs", "w/resume").await;
    let connect = will_connect(
        V5,
        "w-resume",
        delayed_will("w/resume", b"never", 1),
        true,
        Some(60),
    );
    let (client, _) = RawClient::connect_with(broker.addr, connect).await;
    drop(client);
    // [MQTT-3.1.3-9] a new connection to the session within the delay cancels the will.
    let mut resume = connect_packet(V5, "w-resume", false);
    resume.properties.session_expiry_interval = Some(60);
    let (_client, ack) = RawClient::connect_with(broker.addr, resume).await;
    assert!(ack.session_present);
    expect_no_will(&mut watcher, Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn delayed_will_is_not_published_when_a_takeover_resumes_the_session() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V5, "w-toresume-obs", "w/toresume").await;
    let connect = will_connect(
        V5,
        "w-toresume",
        delayed_will("w/toresume", b"never", 1),
        true,
        Some(60),
    );
    let (mut old, _) = RawClient::connect_with(broker.addr, connect).await;
    let mut resume = connect_packet(V5, "w-toresume", false);
    resume.properties.session_expiry_interval = Some(60);
    let (_new, ack) = RawClient::connect_with(broker.addr, resume).await;
    assert!(ack.session_present);
    assert_eq!(
        old.recv_until_closed().await,
        [Packet::Disconnect(Disconnect::new(
            ReasonCode::SessionTakenOver
        ))]
    );
    expect_no_will(&mut watcher, Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn delayed_will_is_published_when_a_clean_start_ends_the_session_within_the_delay() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V5, "w-clean-obs", "w/clean").await;
    let connect = will_connect(
        V5,
        "w-clean",
        delayed_will("w/clean", b"session over", 10),
        true,
        Some(60),
    );
    let (client, _) = RawClient::connect_with(broker.addr, connect).await;
    drop(client);
    // Clean Start discards the old session ([MQTT-3.1.2-4]); section 3.1.3.2.2 publishes the will
    // when the session ends, whichever comes first: here long before the 10 s delay.
    let (_client, ack) = RawClient::connect(broker.addr, V5, "w-clean", true).await;
    assert!(!ack.session_present);
    expect_will(&mut watcher, "w/clean", b"session over").await;
}

#[tokio::test]
async fn delayed_will_is_published_early_when_the_session_expires_first() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V5, "w-early-obs", "w/early").await;
    // Delay 10 s, session expiry 1 s: the will goes when the session ends, at 1 s.
    let connect = will_connect(
        V5,
        "w-early",
        delayed_will("w/early", b"expired", 10),
        true,
        Some(1),
    );
    let (client, _) = RawClient::connect_with(broker.addr, connect).await;
    drop(client);
    expect_no_will(&mut watcher, Duration::from_millis(500)).await;
    expect_will(&mut watcher, "w/early", b"expired").await;
}

#[tokio::test]
async fn delayed_will_is_published_at_once_when_session_expiry_is_zero() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V5, "w-now-obs", "w/now").await;
    let connect = will_connect(
        V5,
        "w-now",
        delayed_will("w/now", b"at once", 10),
        true,
        None,
    );
    let (client, _) = RawClient::connect_with(broker.addr, connect).await;
    drop(client);
    // The session ends with the connection, so the 10 s delay does not apply.
    expect_will(&mut watcher, "w/now", b"at once").await;
}

#[tokio::test]
async fn delayed_will_message_expiry_counts_from_its_publication() {
    let broker = TestBroker::start().await;
    let mut watcher = observer(&broker, V5, "w-wexp-obs", "w/wexp").await;
    let mut will = delayed_will("w/wexp", b"fresh", 1);
    will.properties.message_expiry_interval = Some(1);
    let (client, _) = RawClient::connect_with(
        broker.addr,
        will_connect(V5, "w-wexp", will, true, Some(60)),
    )
    .await;
    drop(client);
    // Section 3.1.3.2.4: the Message Expiry Interval is the will's lifetime once published, so a
    // will delayed by 1 s with a 1 s lifetime is delivered, with 1 s left.
    let publish = expect_will(&mut watcher, "w/wexp", b"fresh").await;
    assert_eq!(publish.properties.message_expiry_interval, Some(1));
}
