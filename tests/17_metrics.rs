//! `/metrics` after known workloads: every counter a workload moves is asserted at its exact value,
//! through real clients on raw sockets and a real HTTP request.

mod common;

use common::http::{get, sample};
use common::{RawClient, TestBroker, connect_packet};
use starling::codec::{Packet, ProtocolVersion, PubResponse, QoS, ReasonCode};
use starling::config::Config;
use tokio::io::AsyncReadExt;

const V311: ProtocolVersion = ProtocolVersion::V311;

/// A broker with the HTTP listener on a free port and no `$SYS` traffic to blur the counts.
async fn broker_with(adjust: impl FnOnce(&mut Config)) -> TestBroker {
    TestBroker::start_with(|c| {
        c.http.bind = Some("127.0.0.1:0".parse().expect("addr"));
        c.sys_interval = 0;
        adjust(c);
    })
    .await
}

async fn scrape(broker: &TestBroker) -> String {
    let http = broker.http.expect("HTTP listener");
    let response = get(http, "/metrics", None).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        response.headers
    );
    response.body
}

/// The value of a series, failing the test (with the scrape) when it is missing.
fn value(metrics: &str, series: &str) -> f64 {
    sample(metrics, series).unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
}

#[tokio::test]
async fn a_known_workload_gives_exact_counts_by_qos() {
    let broker = broker_with(|_| {}).await;
    let (mut sub, _) = RawClient::connect(broker.addr, V311, "sub", true).await;
    assert_eq!(
        sub.subscribe("m/#", QoS::AtLeastOnce).await,
        [ReasonCode::GrantedQoS1]
    );
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "pub", true).await;
    for _ in 0..3 {
        publisher.publish("m/a", b"hello", QoS::AtMostOnce, 0).await; // 5 bytes, + PINGREQ
    }
    publisher
        .publish("m/b", b"qos-one", QoS::AtLeastOnce, 1)
        .await; // 7 bytes
    publisher
        .publish("m/b", b"qos-one", QoS::AtLeastOnce, 2)
        .await;
    publisher
        .publish("m/c", b"qos-two-msg", QoS::ExactlyOnce, 3)
        .await; // 11 bytes, + PUBREL
    // The subscriber gets all six, the QoS 2 one downgraded to its granted QoS 1.
    for _ in 0..6 {
        let publish = sub.recv_publish().await;
        if let Some(id) = publish.packet_id {
            assert_eq!(publish.qos, QoS::AtLeastOnce);
            sub.send(&Packet::PubAck(PubResponse::success(id))).await;
        }
    }
    sub.ping().await;

    let m = scrape(&broker).await;
    let port = broker.addr.port();
    for (series, expected) in [
        (r#"mqtt_messages_received_total{qos="0"}"#, 3.0),
        (r#"mqtt_messages_received_total{qos="1"}"#, 2.0),
        (r#"mqtt_messages_received_total{qos="2"}"#, 1.0),
        (r#"mqtt_payload_received_bytes_total{qos="0"}"#, 15.0),
        (r#"mqtt_payload_received_bytes_total{qos="1"}"#, 14.0),
        (r#"mqtt_payload_received_bytes_total{qos="2"}"#, 11.0),
        (r#"mqtt_messages_sent_total{qos="0"}"#, 3.0),
        (r#"mqtt_messages_sent_total{qos="1"}"#, 3.0),
        (r#"mqtt_messages_sent_total{qos="2"}"#, 0.0),
        (r#"mqtt_payload_sent_bytes_total{qos="0"}"#, 15.0),
        (r#"mqtt_payload_sent_bytes_total{qos="1"}"#, 25.0),
        // pub: CONNECT, 3 x (PUBLISH, PINGREQ), 2 PUBLISH, PUBLISH + PUBREL; sub: CONNECT,
        // SUBSCRIBE, 3 PUBACK, PINGREQ.
        ("mqtt_packets_received_total", 17.0),
        // pub: CONNACK, 3 PINGRESP, 2 PUBACK, PUBREC, PUBCOMP; sub: CONNACK, SUBACK, 6 PUBLISH,
        // PINGRESP.
        ("mqtt_packets_sent_total", 17.0),
        (r#"mqtt_connections_total{protocol="3.1.1"}"#, 2.0),
        (r#"mqtt_connections_total{protocol="5.0"}"#, 0.0),
        (
            &format!(r#"mqtt_sockets_total{{listener="127.0.0.1:{port}"}}"#),
            2.0,
        ),
        ("mqtt_connections_current", 2.0),
        (r#"mqtt_sessions_current{state="online"}"#, 2.0),
        (r#"mqtt_sessions_current{state="offline"}"#, 0.0),
        ("mqtt_subscriptions_current", 1.0),
        ("mqtt_retained_messages_current", 0.0),
        ("mqtt_queued_messages_current", 0.0),
        ("mqtt_inflight_messages_current", 0.0),
        ("mqtt_publish_deliver_seconds_count", 6.0),
        (r#"mqtt_messages_dropped_total{reason="queue_full"}"#, 0.0),
        (r#"mqtt_disconnects_total{reason="client_disconnect"}"#, 0.0),
    ] {
        assert_eq!(value(&m, series), expected, "{series}");
    }
    assert!(
        value(&m, "mqtt_network_received_bytes_total") > 54.0,
        "at least the payloads"
    );
    assert!(m.contains("# HELP mqtt_messages_received_total PUBLISH packets received"));
    assert!(m.contains("# TYPE mqtt_publish_deliver_seconds histogram"));

    // Two normal disconnects are counted as such, and the gauges follow.
    sub.disconnect().await;
    publisher.disconnect().await;
    let m = scrape(&broker).await;
    assert_eq!(
        value(&m, r#"mqtt_disconnects_total{reason="client_disconnect"}"#),
        2.0
    );
    assert_eq!(value(&m, r#"mqtt_sessions_current{state="online"}"#), 0.0);
    assert_eq!(value(&m, "mqtt_subscriptions_current"), 0.0);
    broker.stop().await;
}

#[tokio::test]
async fn drops_queues_refusals_and_decode_errors_are_counted_by_reason() {
    let broker = broker_with(|c| c.limits.max_queued_messages = 1).await;

    // An offline persistent session with room for one message.
    let (mut away, _) = RawClient::connect(broker.addr, V311, "away", false).await;
    away.subscribe("d/#", QoS::AtLeastOnce).await;
    away.disconnect().await;
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "pub", true).await;
    for id in 1..=3 {
        publisher
            .publish("d/x", b"1234", QoS::AtLeastOnce, id)
            .await;
    }
    publisher.publish("d/x", b"1234", QoS::AtMostOnce, 0).await;

    // An unsupported protocol level, and a first packet that is not CONNECT.
    let mut old = RawClient::connect_tcp(broker.addr, V311).await;
    old.send_raw(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 7, 0x02, 0, 60, 0, 1, b'x',
    ])
    .await;
    let mut refusal = [0u8; 4];
    old.stream.read_exact(&mut refusal).await.expect("CONNACK");
    assert_eq!(refusal, [0x20, 0x02, 0x00, 0x01]);
    let mut rude = RawClient::connect_tcp(broker.addr, V311).await;
    rude.send(&Packet::PingReq).await;
    assert!(rude.recv_until_closed().await.is_empty());

    // A malformed packet after CONNECT: a PUBLISH whose topic runs past its end.
    let (mut broken, _) = RawClient::connect(broker.addr, V311, "broken", true).await;
    broken.send_raw(&[0x30, 0x02, 0x00, 0x05]).await;
    assert!(broken.recv_until_closed().await.is_empty());

    let m = scrape(&broker).await;
    for (series, expected) in [
        (r#"mqtt_messages_dropped_total{reason="queue_full"}"#, 2.0),
        (r#"mqtt_messages_dropped_total{reason="offline_qos0"}"#, 1.0),
        (r#"mqtt_messages_dropped_total{reason="expired"}"#, 0.0),
        ("mqtt_queued_messages_current", 1.0),
        ("mqtt_queued_bytes_current", 4.0),
        (r#"mqtt_sessions_current{state="offline"}"#, 1.0),
        (r#"mqtt_sessions_current{state="online"}"#, 1.0),
        (
            r#"mqtt_connections_refused_total{reason="unsupported_protocol"}"#,
            1.0,
        ),
        (
            r#"mqtt_connections_refused_total{reason="bad_connect"}"#,
            1.0,
        ),
        (
            r#"mqtt_decode_errors_total{reason="unsupported_protocol_version"}"#,
            1.0,
        ),
        (r#"mqtt_decode_errors_total{reason="malformed"}"#, 1.0),
        (r#"mqtt_disconnects_total{reason="protocol_error"}"#, 1.0),
        (r#"mqtt_disconnects_total{reason="client_disconnect"}"#, 1.0),
        (r#"mqtt_connections_total{protocol="3.1.1"}"#, 3.0),
    ] {
        assert_eq!(value(&m, series), expected, "{series}");
    }
    // The refused and broken connections stay open until their peers close too (the broker
    // drains them so its last bytes arrive); then only the publisher's is left.
    drop((old, rude, broken));
    let mut open = value(&m, "mqtt_connections_current");
    for _ in 0..100 {
        if open == 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        open = value(&scrape(&broker).await, "mqtt_connections_current");
    }
    assert_eq!(open, 1.0);

    // The queued message is delivered when the session comes back, and the gauges drop to 0.
    let (mut back, ack) = RawClient::connect(broker.addr, V311, "away", false).await;
    assert!(ack.session_present);
    let publish = back.recv_publish().await;
    back.send(&Packet::PubAck(PubResponse::success(
        publish.packet_id.expect("QoS 1"),
    )))
    .await;
    back.ping().await;
    let m = scrape(&broker).await;
    assert_eq!(value(&m, "mqtt_queued_messages_current"), 0.0);
    assert_eq!(value(&m, "mqtt_inflight_messages_current"), 0.0);
    broker.stop().await;
}

#[tokio::test]
async fn failed_logins_are_counted_as_auth_failures_and_refusals() {
    let broker = broker_with(|c| c.auth.allow_anonymous = Some(false)).await;
    let (_, ack) = RawClient::connect(broker.addr, V311, "anonymous", true).await;
    assert_eq!(ack.reason, ReasonCode::NotAuthorized);
    let mut connect = connect_packet(V311, "named", true);
    connect.username = Some("bob".into());
    connect.password = Some(b"guess".to_vec().into());
    let (_, ack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword);

    let m = scrape(&broker).await;
    for (series, expected) in [
        (r#"mqtt_auth_failures_total{reason="not_authorized"}"#, 1.0),
        (r#"mqtt_auth_failures_total{reason="bad_credentials"}"#, 1.0),
        (
            r#"mqtt_connections_refused_total{reason="not_authorized"}"#,
            1.0,
        ),
        (
            r#"mqtt_connections_refused_total{reason="bad_credentials"}"#,
            1.0,
        ),
        (r#"mqtt_connections_total{protocol="3.1.1"}"#, 0.0),
    ] {
        assert_eq!(value(&m, series), expected, "{series}");
    }
    broker.stop().await;
}

#[tokio::test]
async fn connections_beyond_max_connections_are_counted_as_refused() {
    let broker = broker_with(|c| c.limits.max_connections = 1).await;
    let (_first, _) = RawClient::connect(broker.addr, V311, "first", true).await;
    let mut second = RawClient::connect_tcp(broker.addr, V311).await;
    assert!(
        second.recv_until_closed().await.is_empty(),
        "closed at once"
    );
    let m = scrape(&broker).await;
    assert_eq!(
        value(
            &m,
            r#"mqtt_connections_refused_total{reason="max_connections"}"#
        ),
        1.0
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_config_built_in_code_cannot_open_http_beyond_loopback_without_a_token() {
    let mut config = Config::default();
    config.listeners[0].bind = "127.0.0.1:0".parse().expect("addr");
    config.http.bind = Some("0.0.0.0:0".parse().expect("addr"));
    let refused = starling::Server::bind(config).await;
    let error = refused.err().expect("refused").to_string();
    assert!(error.contains("needs http.token"), "{error}");
}

#[tokio::test]
async fn without_http_bind_there_is_no_http_listener() {
    let broker = TestBroker::start().await;
    assert!(broker.http.is_none());
    // The broker counts anyway (for $SYS); only the exporter is missing. The connection is
    // counted before its CONNACK goes out.
    let (client, _) = RawClient::connect(broker.addr, V311, "c", true).await;
    assert_eq!(broker.broker.metrics().totals().connections, 1);
    client.disconnect().await;
    broker.stop().await;
}
