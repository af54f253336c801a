//! CONNECT and CONNACK for MQTT 3.1 (MQIsdp), 3.1.1 and 5.0: protocol names and levels, client
//! identifiers, keep alive negotiation and enforcement, the limits a 5.0 CONNACK announces, the
//! connect timeout and connection limits, and real clients (rumqttc v4 and v5).

mod common;

use std::num::NonZeroU16;
use std::time::Duration;

use common::{RawClient, TestBroker, connect_packet};
use starling::codec::{
    self, ConnAck, Connect, Disconnect, Packet, ProtocolVersion, QoS, ReasonCode,
};
use starling::config::ListenerConfig;
use tokio::io::AsyncReadExt;

const V31: ProtocolVersion = ProtocolVersion::V31;
const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// A short window for asserting that nothing arrives.
const QUIET: Duration = Duration::from_millis(300);

/// Reads exactly `n` raw bytes from the broker.
async fn read_bytes(client: &mut RawClient, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(common::RECV_TIMEOUT, client.stream.read_exact(&mut buf))
        .await
        .expect("bytes arrive in time")
        .expect("read");
    buf
}

/// Sends raw CONNECT bytes and returns everything the broker sent before closing.
async fn raw_connect_and_collect(
    broker: &TestBroker,
    version: ProtocolVersion,
    bytes: &[u8],
) -> Vec<Packet> {
    let mut client = RawClient::connect_tcp(broker.addr, version).await;
    client.send_raw(bytes).await;
    client.recv_until_closed().await
}

/// A CONNECT with the given protocol name and level, clean session, keep alive 60, client id "a".
fn connect_bytes(name: &[u8], level: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&u16::try_from(name.len()).expect("short").to_be_bytes());
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, 0x02, 0x00, 0x3C]);
    body.extend_from_slice(&[0x00, 0x01, b'a']);
    let mut packet = vec![0x10, u8::try_from(body.len()).expect("short")];
    packet.extend_from_slice(&body);
    packet
}

fn v5_connect(client_id: &str) -> Connect {
    connect_packet(V5, client_id, true)
}

async fn expect_refusal(broker: &TestBroker, connect: Connect) -> ConnAck {
    let (mut client, ack) = RawClient::connect_with(broker.addr, connect).await;
    let rest = client.recv_until_closed().await;
    assert!(
        rest.is_empty(),
        "nothing after a refusing CONNACK: {rest:?}"
    );
    ack
}

// ---------------------------------------------------------------------------------------------
// CONNACK per version

#[tokio::test]
async fn v311_connack_is_exactly_20_02_00_00() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::connect_tcp(broker.addr, V311).await;
    client
        .send(&Packet::Connect(Box::new(connect_packet(
            V311,
            "c-v311-bytes",
            true,
        ))))
        .await;
    // 3.1.1 section 3.2: type 2, remaining length 2, session present 0, return code 0.
    assert_eq!(read_bytes(&mut client, 4).await, [0x20, 0x02, 0x00, 0x00]);
    assert_eq!(
        client.recv_within(QUIET).await,
        None,
        "nothing else follows"
    );
    client.ping().await;
}

#[tokio::test]
async fn v31_mqisdp_connect_is_accepted_with_a_v3_connack() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::connect_tcp(broker.addr, V31).await;
    client
        .send(&Packet::Connect(Box::new(connect_packet(
            V31, "c-v31", true,
        ))))
        .await;
    assert_eq!(read_bytes(&mut client, 4).await, [0x20, 0x02, 0x00, 0x00]);
    client.ping().await;
}

#[tokio::test]
async fn v31_client_publishes_and_receives() {
    let broker = TestBroker::start().await;
    let (mut client, ack) = RawClient::connect(broker.addr, V31, "c-v31-pubsub", true).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    assert_eq!(
        client.subscribe("v31/t", QoS::AtLeastOnce).await,
        [ReasonCode::GrantedQoS1]
    );
    client.publish("v31/t", b"hello", QoS::AtLeastOnce, 7).await;
    let publish = client.recv_publish().await;
    assert_eq!(publish.topic.as_str(), "v31/t");
    assert_eq!(&publish.payload[..], b"hello");
    assert_eq!(publish.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn v5_connack_is_success_and_announces_default_limits() {
    let broker = TestBroker::start().await;
    let (mut client, ack) = RawClient::connect_with(broker.addr, v5_connect("c-v5")).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    assert!(!ack.session_present);
    let p = &ack.properties;
    // Defaults: max_inflight_messages 20, max_topic_alias 10, no packet size limit, retain on.
    assert_eq!(p.receive_maximum, NonZeroU16::new(20));
    assert_eq!(p.topic_alias_maximum, Some(10));
    assert_eq!(p.maximum_packet_size, None);
    assert_eq!(p.retain_available, None, "absent means retain is available");
    assert_eq!(
        p.assigned_client_identifier, None,
        "the client named itself"
    );
    assert_eq!(
        p.server_keep_alive, None,
        "60 s is within the default maximum"
    );
    client.ping().await;
}

#[tokio::test]
async fn v5_connack_announces_configured_limits() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_inflight_messages = 5;
        c.limits.max_topic_alias = 3;
        c.limits.max_packet_size = 1024;
        c.limits.retain_available = false;
    })
    .await;
    let (_client, ack) = RawClient::connect_with(broker.addr, v5_connect("c-v5-limits")).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    let p = &ack.properties;
    assert_eq!(p.receive_maximum, NonZeroU16::new(5));
    assert_eq!(p.topic_alias_maximum, Some(3));
    assert_eq!(p.maximum_packet_size.map(|m| m.get()), Some(1024));
    assert_eq!(p.retain_available, Some(false));
}

#[tokio::test]
async fn v5_connack_leaves_out_limits_that_are_off() {
    let broker = TestBroker::start_with(|c| {
        // 0 = 65,535 in flight, which is the protocol default: nothing to announce.
        c.limits.max_inflight_messages = 0;
        c.limits.max_topic_alias = 0;
    })
    .await;
    let (_client, ack) = RawClient::connect_with(broker.addr, v5_connect("c-v5-nolimits")).await;
    let p = &ack.properties;
    assert_eq!(p.receive_maximum, None);
    assert_eq!(p.topic_alias_maximum, None, "absent means 0: no aliases");
    assert_eq!(p.maximum_packet_size, None);
    assert_eq!(p.retain_available, None);
}

// ---------------------------------------------------------------------------------------------
// Protocol name and level

#[tokio::test]
async fn unsupported_protocol_level_gets_return_code_1_then_close() {
    let broker = TestBroker::start().await;
    // [MQTT-3.1.2-2]: a known protocol name at a level the server does not speak.
    for (name, level) in [(&b"MQTT"[..], 6u8), (&b"MQTT"[..], 3), (&b"MQIsdp"[..], 4)] {
        let mut client = RawClient::connect_tcp(broker.addr, V311).await;
        client.send_raw(&connect_bytes(name, level)).await;
        assert_eq!(
            read_bytes(&mut client, 4).await,
            [0x20, 0x02, 0x00, 0x01],
            "level {level}"
        );
        let rest = client.recv_until_closed().await;
        assert!(rest.is_empty(), "closed after the refusal: {rest:?}");
    }
}

#[tokio::test]
async fn unknown_protocol_name_is_closed_without_connack() {
    let broker = TestBroker::start().await;
    // [MQTT-3.1.2-1]: the server may not answer with CONNACK; it closes.
    for name in [&b"MQTX"[..], b"mqtt", b"MQIsdpX"] {
        let packets = raw_connect_and_collect(&broker, V311, &connect_bytes(name, 4)).await;
        assert!(packets.is_empty(), "{name:?}: got {packets:?}");
    }
}

#[tokio::test]
async fn malformed_connect_is_closed_without_connack() {
    let broker = TestBroker::start().await;
    let mut bytes = connect_bytes(b"MQTT", 4);
    // [MQTT-3.1.2-3] the reserved connect flag (bit 0) must be 0.
    bytes[9] |= 0x01;
    let packets = raw_connect_and_collect(&broker, V311, &bytes).await;
    assert!(packets.is_empty(), "got {packets:?}");
}

// ---------------------------------------------------------------------------------------------
// Packet order

#[tokio::test]
async fn first_packet_not_connect_is_closed() {
    let broker = TestBroker::start().await;
    // [MQTT-3.1.0-1] the first packet must be CONNECT.
    let pingreq = [0xC0, 0x00];
    let publish = codec::encode_to_bytes(
        &Packet::Publish(common::publish_packet("a/b", b"x", QoS::AtMostOnce, 0)),
        V311,
    )
    .expect("encode");
    let subscribe = [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00];
    for bytes in [&pingreq[..], &publish[..], &subscribe[..]] {
        let packets = raw_connect_and_collect(&broker, V311, bytes).await;
        assert!(packets.is_empty(), "got {packets:?}");
    }
    assert_eq!(broker.broker.session_count(), 0, "no session was created");
}

#[tokio::test]
async fn second_connect_closes_a_v311_connection() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::connect(broker.addr, V311, "c-second-311", true).await;
    client
        .send(&Packet::Connect(Box::new(connect_packet(
            V311,
            "c-second-311",
            true,
        ))))
        .await;
    // [MQTT-3.1.0-2] protocol violation; 3.1.1 has no DISCONNECT from the server.
    let packets = client.recv_until_closed().await;
    assert!(packets.is_empty(), "got {packets:?}");
}

#[tokio::test]
async fn second_connect_closes_a_v31_connection() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::connect(broker.addr, V31, "c-second-31", true).await;
    client
        .send(&Packet::Connect(Box::new(connect_packet(
            V31,
            "c-second-31",
            true,
        ))))
        .await;
    let packets = client.recv_until_closed().await;
    assert!(packets.is_empty(), "got {packets:?}");
}

#[tokio::test]
async fn second_connect_gets_disconnect_protocol_error_in_v5() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::connect_with(broker.addr, v5_connect("c-second-5")).await;
    client
        .send(&Packet::Connect(Box::new(v5_connect("c-second-5"))))
        .await;
    let packets = client.recv_until_closed().await;
    assert_eq!(
        packets,
        [Packet::Disconnect(Disconnect::new(
            ReasonCode::ProtocolError
        ))]
    );
}

// ---------------------------------------------------------------------------------------------
// Client identifiers

#[tokio::test]
async fn v31_empty_client_id_is_refused_with_return_code_2() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::connect_tcp(broker.addr, V31).await;
    client
        .send(&Packet::Connect(Box::new(connect_packet(V31, "", true))))
        .await;
    assert_eq!(read_bytes(&mut client, 4).await, [0x20, 0x02, 0x00, 0x02]);
    let rest = client.recv_until_closed().await;
    assert!(rest.is_empty(), "closed after the refusal: {rest:?}");
}

#[tokio::test]
async fn v311_empty_client_id_with_clean_session_is_accepted_and_works() {
    let broker = TestBroker::start().await;
    let (mut client, ack) = RawClient::connect(broker.addr, V311, "", true).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    assert!(!ack.session_present);
    client.subscribe("anon/t", QoS::AtMostOnce).await;
    client.publish("anon/t", b"mine", QoS::AtMostOnce, 0).await;
    assert_eq!(&client.recv_publish().await.payload[..], b"mine");
}

#[tokio::test]
async fn v311_empty_client_id_without_clean_session_is_refused_with_return_code_2() {
    let broker = TestBroker::start().await;
    // [MQTT-3.1.3-8]
    let mut client = RawClient::connect_tcp(broker.addr, V311).await;
    client
        .send(&Packet::Connect(Box::new(connect_packet(V311, "", false))))
        .await;
    assert_eq!(read_bytes(&mut client, 4).await, [0x20, 0x02, 0x00, 0x02]);
    let rest = client.recv_until_closed().await;
    assert!(rest.is_empty(), "closed after the refusal: {rest:?}");
    assert_eq!(broker.broker.session_count(), 0);
}

#[tokio::test]
async fn v5_empty_client_id_gets_an_assigned_identifier_that_resumes_the_session() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(V5, "", true);
    connect.properties.session_expiry_interval = Some(60);
    let (mut client, ack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    // [MQTT-3.2.2-16] the CONNACK carries the identifier the server assigned.
    let assigned = ack
        .properties
        .assigned_client_identifier
        .expect("Assigned Client Identifier");
    assert!(!assigned.is_empty());
    client.subscribe("assigned/t", QoS::AtLeastOnce).await;
    assert!(client.disconnect().await.is_empty());

    // The assigned id names the session: reconnecting with it resumes the subscription.
    let mut resume = connect_packet(V5, &assigned, false);
    resume.properties.session_expiry_interval = Some(60);
    let (mut client, ack) = RawClient::connect_with(broker.addr, resume).await;
    assert!(ack.session_present);
    assert_eq!(
        ack.properties.assigned_client_identifier, None,
        "not assigned this time"
    );
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "assigned-pub", true).await;
    publisher
        .publish("assigned/t", b"to-assigned", QoS::AtLeastOnce, 1)
        .await;
    assert_eq!(&client.recv_publish().await.payload[..], b"to-assigned");
}

#[tokio::test]
async fn v5_assigned_identifiers_are_distinct() {
    let broker = TestBroker::start().await;
    let (_a, ack_a) = RawClient::connect_with(broker.addr, v5_connect("")).await;
    let (_b, ack_b) = RawClient::connect_with(broker.addr, v5_connect("")).await;
    let a = ack_a.properties.assigned_client_identifier.expect("a id");
    let b = ack_b.properties.assigned_client_identifier.expect("b id");
    assert_ne!(a, b);
    assert_eq!(broker.broker.session_count(), 2);
}

#[tokio::test]
async fn empty_client_id_is_refused_when_the_broker_does_not_allow_it() {
    let broker = TestBroker::start_with(|c| c.limits.allow_zero_length_clientid = false).await;
    let ack = expect_refusal(&broker, v5_connect("")).await;
    assert_eq!(ack.reason, ReasonCode::ClientIdentifierNotValid);
    assert!(!ack.session_present);
    let ack = expect_refusal(&broker, connect_packet(V311, "", true)).await;
    assert_eq!(ack.reason.to_v3_connack(), 2);
}

// ---------------------------------------------------------------------------------------------
// Keep alive negotiation

#[tokio::test]
async fn v5_keep_alive_above_the_maximum_is_lowered_by_server_keep_alive() {
    let broker = TestBroker::start_with(|c| c.limits.max_keepalive = 10).await;
    let mut connect = v5_connect("ka-v5-high");
    connect.keep_alive = 30;
    let (_client, ack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    assert_eq!(ack.properties.server_keep_alive, Some(10));
}

#[tokio::test]
async fn v5_keep_alive_zero_is_given_the_maximum_when_one_is_set() {
    let broker = TestBroker::start_with(|c| c.limits.max_keepalive = 10).await;
    let mut connect = v5_connect("ka-v5-zero");
    connect.keep_alive = 0;
    let (_client, ack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(ack.properties.server_keep_alive, Some(10));
}

#[tokio::test]
async fn v5_keep_alive_within_the_maximum_is_kept_without_server_keep_alive() {
    let broker = TestBroker::start_with(|c| c.limits.max_keepalive = 10).await;
    let mut connect = v5_connect("ka-v5-ok");
    connect.keep_alive = 10;
    let (_client, ack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    assert_eq!(ack.properties.server_keep_alive, None);
}

#[tokio::test]
async fn v311_and_v31_keep_alive_above_the_maximum_is_refused_with_return_code_2() {
    let broker = TestBroker::start_with(|c| c.limits.max_keepalive = 10).await;
    for version in [V311, V31] {
        let mut client = RawClient::connect_tcp(broker.addr, version).await;
        let mut connect = connect_packet(version, "ka-v3-high", true);
        connect.keep_alive = 11;
        client.send(&Packet::Connect(Box::new(connect))).await;
        assert_eq!(
            read_bytes(&mut client, 4).await,
            [0x20, 0x02, 0x00, 0x02],
            "{version:?}"
        );
        let rest = client.recv_until_closed().await;
        assert!(rest.is_empty(), "{version:?}: {rest:?}");
    }
}

#[tokio::test]
async fn v311_keep_alive_at_the_maximum_and_zero_are_accepted() {
    let broker = TestBroker::start_with(|c| c.limits.max_keepalive = 10).await;
    for (id, keep_alive) in [("ka-311-max", 10), ("ka-311-zero", 0)] {
        let mut connect = connect_packet(V311, id, true);
        connect.keep_alive = keep_alive;
        let (mut client, ack) = RawClient::connect_with(broker.addr, connect).await;
        assert_eq!(ack.reason, ReasonCode::Success, "keep alive {keep_alive}");
        client.ping().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Keep alive enforcement

#[tokio::test]
async fn silent_v311_client_is_closed_after_one_and_a_half_keep_alives() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(V311, "ka-silent-311", true);
    connect.keep_alive = 2;
    let (mut client, _) = RawClient::connect_with(broker.addr, connect).await;
    // [MQTT-3.1.2-24] the limit is 1.5 x keep alive = 3 s: still open after 2.3 s (past 1 x),
    // then closed without any packet (3.1.1 has no server DISCONNECT).
    assert_eq!(client.recv_within(Duration::from_millis(2300)).await, None);
    let packets = client.recv_until_closed().await;
    assert!(packets.is_empty(), "got {packets:?}");
}

#[tokio::test]
async fn silent_v5_client_gets_disconnect_keep_alive_timeout() {
    let broker = TestBroker::start().await;
    let mut connect = v5_connect("ka-silent-5");
    connect.keep_alive = 1;
    let (mut client, _) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(client.recv_within(Duration::from_millis(1000)).await, None);
    let packets = client.recv_until_closed().await;
    assert_eq!(
        packets,
        [Packet::Disconnect(Disconnect::new(
            ReasonCode::KeepAliveTimeout
        ))]
    );
}

#[tokio::test]
async fn server_keep_alive_is_what_the_broker_enforces() {
    let broker = TestBroker::start_with(|c| c.limits.max_keepalive = 1).await;
    let mut connect = v5_connect("ka-server-5");
    connect.keep_alive = 600;
    let (mut client, ack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(ack.properties.server_keep_alive, Some(1));
    // [MQTT-3.2.2-21] the client must use the server's value, and the server enforces it.
    let packets = client.recv_until_closed().await;
    assert_eq!(
        packets,
        [Packet::Disconnect(Disconnect::new(
            ReasonCode::KeepAliveTimeout
        ))]
    );
}

#[tokio::test]
async fn pinging_client_stays_connected_past_the_keep_alive() {
    let broker = TestBroker::start().await;
    let pinger = |version: ProtocolVersion, id: &'static str| {
        let addr = broker.addr;
        async move {
            let mut connect = connect_packet(version, id, true);
            connect.keep_alive = 1;
            let (mut client, _) = RawClient::connect_with(addr, connect).await;
            // Five pings 400 ms apart: 2 s in all, past the 1.5 s limit a silent client gets.
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(400)).await;
                client.ping().await;
            }
        }
    };
    tokio::join!(pinger(V311, "ka-ping-311"), pinger(V5, "ka-ping-5"));
}

#[tokio::test]
async fn any_packet_resets_the_keep_alive_timer() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(V311, "ka-publish", true);
    connect.keep_alive = 1;
    let (mut client, _) = RawClient::connect_with(broker.addr, connect).await;
    // [MQTT-3.1.2-23] any control packet counts, not only PINGREQ.
    for n in 1..=4u16 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.publish("ka/any", b"x", QoS::AtLeastOnce, n).await;
    }
    client.ping().await;
}

// ---------------------------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn authentication_method_is_refused_with_bad_authentication_method() {
    let broker = TestBroker::start().await;
    let mut connect = v5_connect("c-auth");
    connect.properties.authentication_method = Some("SCRAM-SHA-256".to_owned());
    let ack = expect_refusal(&broker, connect).await;
    assert_eq!(ack.reason, ReasonCode::BadAuthenticationMethod);
    assert!(!ack.session_present);
    assert_eq!(broker.broker.session_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Connect timeout and connection limits

#[tokio::test]
async fn connection_without_connect_is_closed_after_connect_timeout() {
    let broker = TestBroker::start_with(|c| c.limits.connect_timeout = 1).await;
    let mut silent = RawClient::connect_tcp(broker.addr, V311).await;
    // Half a CONNECT is no better than none.
    let mut partial = RawClient::connect_tcp(broker.addr, V311).await;
    partial.send_raw(&connect_bytes(b"MQTT", 4)[..6]).await;
    assert_eq!(silent.recv_within(Duration::from_millis(500)).await, None);
    assert!(silent.recv_until_closed().await.is_empty());
    assert!(partial.recv_until_closed().await.is_empty());
}

#[tokio::test]
async fn max_connections_refuses_the_extra_connection_and_keeps_the_others() {
    let broker = TestBroker::start_with(|c| c.limits.max_connections = 2).await;
    let (mut a, _) = RawClient::connect(broker.addr, V311, "max-a", true).await;
    let (mut b, _) = RawClient::connect(broker.addr, V5, "max-b", true).await;

    let mut extra = RawClient::connect_tcp(broker.addr, V311).await;
    extra
        .send(&Packet::Connect(Box::new(connect_packet(
            V311, "max-c", true,
        ))))
        .await;
    assert_eq!(extra.recv_or_closed().await, None, "closed without CONNACK");

    a.ping().await;
    b.ping().await;
    b.subscribe("max/t", QoS::AtMostOnce).await;
    a.publish("max/t", b"still-served", QoS::AtLeastOnce, 1)
        .await;
    assert_eq!(&b.recv_publish().await.payload[..], b"still-served");

    // A freed place is given to the next connection.
    assert!(a.disconnect().await.is_empty());
    let mut replacement = connect_eventually(&broker, "max-d").await;
    replacement.ping().await;
}

#[tokio::test]
async fn listener_max_connections_limits_only_that_listener() {
    let broker = TestBroker::start_with(|c| {
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
        c.listeners = vec![
            ListenerConfig {
                max_connections: 1,
                ..ListenerConfig::tcp(any)
            },
            ListenerConfig::tcp(any),
        ];
    })
    .await;
    let (limited, open) = (broker.addrs[0], broker.addrs[1]);
    let (mut first, _) = RawClient::connect(limited, V311, "lmax-a", true).await;

    let mut extra = RawClient::connect_tcp(limited, V311).await;
    extra
        .send(&Packet::Connect(Box::new(connect_packet(
            V311, "lmax-b", true,
        ))))
        .await;
    assert_eq!(extra.recv_or_closed().await, None, "closed without CONNACK");

    let (mut other, ack) = RawClient::connect(open, V311, "lmax-c", true).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    first.ping().await;
    other.ping().await;
}

/// Connects, retrying while the broker still counts a connection that just closed.
async fn connect_eventually(broker: &TestBroker, client_id: &str) -> RawClient {
    let deadline = tokio::time::Instant::now() + common::RECV_TIMEOUT;
    loop {
        let mut client = RawClient::connect_tcp(broker.addr, V311).await;
        client
            .send(&Packet::Connect(Box::new(connect_packet(
                V311, client_id, true,
            ))))
            .await;
        match client.recv_or_closed().await {
            Some(Packet::ConnAck(ack)) if ack.reason == ReasonCode::Success => return client,
            Some(other) => panic!("expected CONNACK, got {other:?}"),
            None if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None => panic!("the freed connection place was never given out"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Real clients

#[tokio::test]
async fn rumqttc_v311_client_connects_publishes_and_pings() {
    use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet as P};
    let broker = TestBroker::start().await;
    let mut options = MqttOptions::new("rumq-v4", "127.0.0.1", broker.addr.port());
    options.set_keep_alive(Duration::from_secs(1));
    let (client, mut events) = AsyncClient::new(options, 10);
    client
        .subscribe("rumq/v4", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("queue subscribe");
    client
        .publish("rumq/v4", rumqttc::QoS::AtLeastOnce, false, "hi-v4")
        .await
        .expect("queue publish");
    let (mut connack, mut received, mut pong) = (None, None, false);
    while !pong {
        let event = tokio::time::timeout(common::RECV_TIMEOUT, events.poll())
            .await
            .expect("event in time")
            .expect("connection works");
        match event {
            Event::Incoming(P::ConnAck(ack)) => connack = Some(ack),
            Event::Incoming(P::Publish(p)) => received = Some(p),
            Event::Incoming(P::PingResp) => pong = true,
            _ => {}
        }
    }
    let connack = connack.expect("CONNACK");
    assert_eq!(connack.code, ConnectReturnCode::Success);
    assert!(!connack.session_present);
    let received = received.expect("own message came back before the ping");
    assert_eq!(received.topic, "rumq/v4");
    assert_eq!(&received.payload[..], b"hi-v4");
    client.disconnect().await.expect("queue disconnect");
}

#[tokio::test]
async fn rumqttc_v5_client_connects_publishes_and_pings_at_the_server_keep_alive() {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet as P};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    // rumqttc v5 accepts no keep alive under 5 s, but it adopts the Server Keep Alive: a 1 s
    // maximum makes it ping within a second.
    let broker = TestBroker::start_with(|c| c.limits.max_keepalive = 1).await;
    let mut options = MqttOptions::new("rumq-v5", "127.0.0.1", broker.addr.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 10);
    client
        .subscribe("rumq/v5", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .expect("queue subscribe");
    client
        .publish(
            "rumq/v5",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "hi-v5",
        )
        .await
        .expect("queue publish");
    let (mut connack, mut received, mut pong) = (None, None, false);
    while !pong {
        let event = tokio::time::timeout(common::RECV_TIMEOUT, events.poll())
            .await
            .expect("event in time")
            .expect("connection works");
        match event {
            Event::Incoming(P::ConnAck(ack)) => connack = Some(ack),
            Event::Incoming(P::Publish(p)) => received = Some(p),
            Event::Incoming(P::PingResp(_)) => pong = true,
            _ => {}
        }
    }
    let connack = connack.expect("CONNACK");
    assert_eq!(connack.code, ConnectReturnCode::Success);
    let properties = connack.properties.expect("5.0 CONNACK properties");
    assert_eq!(properties.receive_max, Some(20));
    assert_eq!(properties.topic_alias_max, Some(10));
    assert_eq!(properties.server_keep_alive, Some(1));
    let received = received.expect("own message came back before the ping");
    assert_eq!(&received.topic[..], b"rumq/v5");
    assert_eq!(&received.payload[..], b"hi-v5");
    client.disconnect().await.expect("queue disconnect");
}
