//! Sessions: clean session / clean start and Session Present, persistent sessions and their
//! offline queues (with the queue limits), redelivery on resume, takeover, 5.0 session expiry,
//! the outgoing inflight window and our Receive Maximum, ordering, and QoS 2 exactly-once.

mod common;

use std::num::NonZeroU16;
use std::time::Duration;

use common::{RawClient, TestBroker, connect_packet, pid, publish_packet, will};
use starling::codec::{
    Connect, Disconnect, DisconnectProperties, Packet, PacketId, ProtocolVersion, PubResponse,
    Publish, QoS, ReasonCode,
};
use tokio::io::AsyncReadExt;

const V31: ProtocolVersion = ProtocolVersion::V31;
const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// A short window for asserting that nothing arrives.
const QUIET: Duration = Duration::from_millis(300);

/// A CONNECT that resumes or creates a persistent session: clean session/start 0, and for 5.0 a
/// Session Expiry Interval of 60 s.
fn persistent(version: ProtocolVersion, client_id: &str) -> Connect {
    let mut connect = connect_packet(version, client_id, false);
    if version.is_v5() {
        connect.properties.session_expiry_interval = Some(60);
    }
    connect
}

/// A 5.0 CONNECT with the given clean start and session expiry.
fn v5_connect(client_id: &str, clean_start: bool, expiry: Option<u32>) -> Connect {
    let mut connect = connect_packet(V5, client_id, clean_start);
    connect.properties.session_expiry_interval = expiry;
    connect
}

/// `persistent` plus a will on `parked/<id>`. The broker publishes a will only after it has
/// parked the session, so an observer of that topic learns when the session is offline.
fn persistent_with_marker(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        will: Some(will(
            &format!("parked/{client_id}"),
            b"",
            QoS::AtMostOnce,
            false,
        )),
        ..persistent(version, client_id)
    }
}

/// Drops the connection of a client made with [`persistent_with_marker`] and waits until
/// `observer` (subscribed to its marker) sees the session parked.
async fn drop_and_wait_parked(client: RawClient, observer: &mut RawClient, client_id: &str) {
    drop(client);
    let marker = observer.recv_publish().await;
    assert_eq!(marker.topic.as_str(), format!("parked/{client_id}"));
}

/// Acknowledges a QoS 1 PUBLISH.
async fn puback(client: &mut RawClient, id: PacketId) {
    client.send(&Packet::PubAck(PubResponse::success(id))).await;
}

fn payload_of(publish: &Publish) -> String {
    String::from_utf8(publish.payload.to_vec()).expect("utf-8 payload")
}

async fn expect_quiet(client: &mut RawClient) {
    let extra = client.recv_within(QUIET).await;
    assert_eq!(extra, None, "nothing more is expected");
}

// ---------------------------------------------------------------------------------------------
// Clean session / clean start and Session Present

#[tokio::test]
async fn v311_session_present_follows_clean_session() {
    let broker = TestBroker::start().await;
    let addr = broker.addr;
    let connack_bytes = |clean: bool| async move {
        let mut client = RawClient::connect_tcp(addr, V311).await;
        client
            .send(&Packet::Connect(Box::new(connect_packet(
                V311, "sp-311", clean,
            ))))
            .await;
        let mut bytes = [0u8; 4];
        tokio::time::timeout(common::RECV_TIMEOUT, client.stream.read_exact(&mut bytes))
            .await
            .expect("CONNACK in time")
            .expect("read");
        assert!(client.disconnect().await.is_empty());
        bytes
    };
    // [MQTT-3.2.2-3] no session yet: Session Present 0.
    assert_eq!(connack_bytes(false).await, [0x20, 0x02, 0x00, 0x00]);
    // The persistent session is resumed: Session Present 1.
    assert_eq!(connack_bytes(false).await, [0x20, 0x02, 0x01, 0x00]);
    // [MQTT-3.2.2-1] clean session: Session Present 0, and the old session is discarded...
    assert_eq!(connack_bytes(true).await, [0x20, 0x02, 0x00, 0x00]);
    // ...and a clean session itself ends with its connection ([MQTT-3.1.2-6]).
    assert_eq!(connack_bytes(false).await, [0x20, 0x02, 0x00, 0x00]);
}

#[tokio::test]
async fn v5_session_present_follows_clean_start() {
    let broker = TestBroker::start().await;
    let addr = broker.addr;
    let session_present = |clean_start: bool| async move {
        let (client, ack) =
            RawClient::connect_with(addr, v5_connect("sp-5", clean_start, Some(60))).await;
        assert_eq!(ack.reason, ReasonCode::Success);
        assert!(client.disconnect().await.is_empty());
        ack.session_present
    };
    assert!(!session_present(false).await, "no session yet");
    assert!(session_present(false).await, "resumed");
    // [MQTT-3.2.2-2] clean start: Session Present 0; the new session has expiry 60 too.
    assert!(!session_present(true).await, "discarded");
    assert!(session_present(false).await, "the clean session was kept");
}

#[tokio::test]
async fn clean_session_subscriptions_do_not_survive_the_connection() {
    let broker = TestBroker::start().await;
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "clean-pub", true).await;
    for (version, id) in [(V311, "clean-311"), (V5, "clean-5")] {
        let (mut client, _) = RawClient::connect(broker.addr, version, id, true).await;
        client.subscribe("clean/t", QoS::AtLeastOnce).await;
        assert!(client.disconnect().await.is_empty());
        let (mut client, ack) = RawClient::connect_with(broker.addr, persistent(version, id)).await;
        assert!(!ack.session_present, "{version:?}");
        publisher
            .publish("clean/t", b"lost", QoS::AtLeastOnce, 1)
            .await;
        expect_quiet(&mut client).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Persistent sessions and offline queues

async fn persistent_session_keeps_subscriptions_and_queues_qos1_and_qos2(
    version: ProtocolVersion,
    id: &str,
) {
    let broker = TestBroker::start().await;
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "pq-pub", true).await;
    publisher
        .subscribe(&format!("parked/{id}"), QoS::AtMostOnce)
        .await;
    let (mut client, ack) =
        RawClient::connect_with(broker.addr, persistent_with_marker(version, id)).await;
    assert!(!ack.session_present);
    assert_eq!(
        client.subscribe("pq/t", QoS::ExactlyOnce).await,
        [ReasonCode::GrantedQoS2]
    );
    drop_and_wait_parked(client, &mut publisher, id).await;

    publisher.publish("pq/t", b"zero", QoS::AtMostOnce, 0).await;
    publisher.publish("pq/t", b"one", QoS::AtLeastOnce, 1).await;
    publisher.publish("pq/t", b"two", QoS::ExactlyOnce, 2).await;

    let (mut client, ack) = RawClient::connect_with(broker.addr, persistent(version, id)).await;
    assert!(ack.session_present);
    // The subscription survived without a new SUBSCRIBE; QoS 0 was not queued while offline.
    let one = client.recv_publish().await;
    assert_eq!(
        (payload_of(&one).as_str(), one.qos),
        ("one", QoS::AtLeastOnce)
    );
    assert!(!one.dup, "first delivery");
    let two = client.recv_publish().await;
    assert_eq!(
        (payload_of(&two).as_str(), two.qos),
        ("two", QoS::ExactlyOnce)
    );
    expect_quiet(&mut client).await;

    // Still subscribed for live messages too.
    publisher.publish("pq/t", b"live", QoS::AtMostOnce, 0).await;
    assert_eq!(payload_of(&client.recv_publish().await), "live");
}

#[tokio::test]
async fn v311_persistent_session_keeps_subscriptions_and_queues_qos1_and_qos2_only() {
    persistent_session_keeps_subscriptions_and_queues_qos1_and_qos2(V311, "pq-311").await;
}

#[tokio::test]
async fn v31_persistent_session_keeps_subscriptions_and_queues_qos1_and_qos2_only() {
    persistent_session_keeps_subscriptions_and_queues_qos1_and_qos2(V31, "pq-31").await;
}

#[tokio::test]
async fn v5_persistent_session_keeps_subscriptions_and_queues_qos1_and_qos2_only() {
    persistent_session_keeps_subscriptions_and_queues_qos1_and_qos2(V5, "pq-5").await;
}

#[tokio::test]
async fn queue_qos0_messages_queues_qos0_for_offline_sessions() {
    let broker = TestBroker::start_with(|c| c.limits.queue_qos0_messages = true).await;
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "q0-pub", true).await;
    publisher.subscribe("parked/q0-sub", QoS::AtMostOnce).await;
    let (mut client, _) =
        RawClient::connect_with(broker.addr, persistent_with_marker(V311, "q0-sub")).await;
    client.subscribe("q0/t", QoS::AtLeastOnce).await;
    drop_and_wait_parked(client, &mut publisher, "q0-sub").await;

    publisher
        .publish("q0/t", b"zero-a", QoS::AtMostOnce, 0)
        .await;
    publisher.publish("q0/t", b"one", QoS::AtLeastOnce, 1).await;
    publisher
        .publish("q0/t", b"zero-b", QoS::AtMostOnce, 0)
        .await;

    let (mut client, ack) = RawClient::connect_with(broker.addr, persistent(V311, "q0-sub")).await;
    assert!(ack.session_present);
    let received: Vec<(String, QoS)> = [
        client.recv_publish().await,
        client.recv_publish().await,
        client.recv_publish().await,
    ]
    .iter()
    .map(|p| (payload_of(p), p.qos))
    .collect();
    assert_eq!(
        received,
        [
            ("zero-a".to_owned(), QoS::AtMostOnce),
            ("one".to_owned(), QoS::AtLeastOnce),
            ("zero-b".to_owned(), QoS::AtMostOnce),
        ]
    );
    expect_quiet(&mut client).await;
}

#[tokio::test]
async fn rumqttc_persistent_session_receives_what_was_published_while_offline() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet as P, QoS as Q};
    let broker = TestBroker::start().await;
    let mut options = MqttOptions::new("rq-persist", "127.0.0.1", broker.addr.port());
    options.set_clean_session(false);
    let (client, mut events) = AsyncClient::new(options.clone(), 10);
    client
        .subscribe("rq/t", Q::AtLeastOnce)
        .await
        .expect("queue");
    loop {
        let event = tokio::time::timeout(common::RECV_TIMEOUT, events.poll())
            .await
            .expect("event in time")
            .expect("connected");
        if let Event::Incoming(P::SubAck(_)) = event {
            break;
        }
    }
    client.disconnect().await.expect("queue disconnect");
    while tokio::time::timeout(common::RECV_TIMEOUT, events.poll())
        .await
        .expect("event in time")
        .is_ok()
    {}
    drop(events);

    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "rq-pub", true).await;
    for (n, payload) in [b"first", b"secnd"].iter().enumerate() {
        let id = u16::try_from(n + 1).expect("small");
        publisher
            .publish("rq/t", *payload, QoS::AtLeastOnce, id)
            .await;
    }

    let (_client, mut events) = AsyncClient::new(options, 10);
    let mut received = Vec::new();
    let mut session_present = None;
    while received.len() < 2 {
        match tokio::time::timeout(common::RECV_TIMEOUT, events.poll())
            .await
            .expect("event in time")
            .expect("connected")
        {
            Event::Incoming(P::ConnAck(ack)) => session_present = Some(ack.session_present),
            Event::Incoming(P::Publish(p)) => received.push(p.payload.to_vec()),
            _ => {}
        }
    }
    assert_eq!(session_present, Some(true));
    assert_eq!(received, [b"first".to_vec(), b"secnd".to_vec()]);
}

// ---------------------------------------------------------------------------------------------
// Queue limits

/// A persistent 3.1.1 subscriber to `topic`, taken offline (parked), and a publisher.
async fn offline_subscriber(broker: &TestBroker, id: &str, topic: &str) -> RawClient {
    let (mut publisher, _) =
        RawClient::connect(broker.addr, V311, &format!("{id}-pub"), true).await;
    publisher
        .subscribe(&format!("parked/{id}"), QoS::AtMostOnce)
        .await;
    let (mut client, _) =
        RawClient::connect_with(broker.addr, persistent_with_marker(V311, id)).await;
    client.subscribe(topic, QoS::AtLeastOnce).await;
    drop_and_wait_parked(client, &mut publisher, id).await;
    publisher
}

/// Reconnects `id`, receives until quiet while acknowledging, and returns the payloads.
async fn resume_and_drain(broker: &TestBroker, id: &str) -> Vec<String> {
    let (mut client, ack) = RawClient::connect_with(broker.addr, persistent(V311, id)).await;
    assert!(ack.session_present);
    let mut payloads = Vec::new();
    while let Some(packet) = client.recv_within(QUIET).await {
        let Packet::Publish(publish) = packet else {
            panic!("expected PUBLISH, got {packet:?}");
        };
        if let Some(id) = publish.packet_id {
            puback(&mut client, id).await;
        }
        payloads.push(payload_of(&publish));
    }
    payloads
}

#[tokio::test]
async fn max_queued_messages_drops_new_messages_when_full() {
    let broker = TestBroker::start_with(|c| c.limits.max_queued_messages = 3).await;
    let mut publisher = offline_subscriber(&broker, "mq-msgs", "mq/t").await;
    for n in 0..6u16 {
        publisher
            .publish("mq/t", format!("m{n}").as_bytes(), QoS::AtLeastOnce, n + 1)
            .await;
    }
    // The queued messages are kept; the newer ones are dropped.
    assert_eq!(
        resume_and_drain(&broker, "mq-msgs").await,
        ["m0", "m1", "m2"]
    );
}

#[tokio::test]
async fn max_queued_bytes_drops_new_messages_when_full() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_queued_messages = 0;
        c.limits.max_queued_bytes = 10;
    })
    .await;
    let mut publisher = offline_subscriber(&broker, "mq-bytes", "mqb/t").await;
    // 5-byte payloads: two fill the 10 bytes.
    for n in 0..5u16 {
        publisher
            .publish(
                "mqb/t",
                format!("byte{n}").as_bytes(),
                QoS::AtLeastOnce,
                n + 1,
            )
            .await;
    }
    assert_eq!(
        resume_and_drain(&broker, "mq-bytes").await,
        ["byte0", "byte1"]
    );
}

#[tokio::test]
async fn full_queue_gives_up_queued_qos0_for_qos1_but_not_for_qos0() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_queued_messages = 3;
        c.limits.queue_qos0_messages = true;
    })
    .await;
    let mut publisher = offline_subscriber(&broker, "mq-evict", "mqe/t").await;
    let steps: [(&[u8], QoS); 7] = [
        (b"a0", QoS::AtMostOnce),  // [a0]
        (b"b0", QoS::AtMostOnce),  // [a0 b0]
        (b"c1", QoS::AtLeastOnce), // [a0 b0 c1] full
        (b"d1", QoS::AtLeastOnce), // evicts a0: [b0 c1 d1]
        (b"e0", QoS::AtMostOnce),  // QoS 0 evicts nothing: dropped
        (b"f1", QoS::AtLeastOnce), // evicts b0: [c1 d1 f1]
        (b"g1", QoS::AtLeastOnce), // no QoS 0 left: dropped
    ];
    for (n, (payload, qos)) in (1u16..).zip(steps) {
        publisher.publish("mqe/t", payload, qos, n).await;
    }
    assert_eq!(
        resume_and_drain(&broker, "mq-evict").await,
        ["c1", "d1", "f1"]
    );
}

#[tokio::test]
async fn online_queue_limit_applies_beyond_the_inflight_window() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_inflight_messages = 2;
        c.limits.max_queued_messages = 3;
    })
    .await;
    let (mut sub, _) = RawClient::connect(broker.addr, V311, "mq-online", true).await;
    sub.subscribe("mqo/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "mq-online-pub", true).await;

    publisher.publish("mqo/t", b"0", QoS::AtLeastOnce, 1).await;
    publisher.publish("mqo/t", b"1", QoS::AtLeastOnce, 2).await;
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    // The window is full and unacknowledged: the next 3 wait in the queue, the rest are dropped.
    for n in 2..10u16 {
        publisher
            .publish("mqo/t", n.to_string().as_bytes(), QoS::AtLeastOnce, n + 1)
            .await;
    }
    expect_quiet(&mut sub).await;
    let mut payloads = vec![payload_of(&first), payload_of(&second)];
    puback(&mut sub, first.packet_id.expect("id")).await;
    puback(&mut sub, second.packet_id.expect("id")).await;
    while let Some(packet) = sub.recv_within(QUIET).await {
        let Packet::Publish(publish) = packet else {
            panic!("expected PUBLISH, got {packet:?}");
        };
        puback(&mut sub, publish.packet_id.expect("id")).await;
        payloads.push(payload_of(&publish));
    }
    assert_eq!(payloads, ["0", "1", "2", "3", "4"]);
}

// ---------------------------------------------------------------------------------------------
// Redelivery on resume

async fn unacked_qos1_is_redelivered_with_dup_and_the_same_ids(version: ProtocolVersion, id: &str) {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::connect_with(broker.addr, persistent(version, id)).await;
    client.subscribe("rd/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "rd-pub", true).await;
    for (n, payload) in (1u16..).zip(["a", "b", "c"]) {
        publisher
            .publish("rd/t", payload.as_bytes(), QoS::AtLeastOnce, n)
            .await;
    }
    let mut first = Vec::new();
    for _ in 0..3 {
        let publish = client.recv_publish().await;
        assert!(!publish.dup);
        first.push((publish.packet_id.expect("id"), payload_of(&publish)));
    }
    drop(client);

    // [MQTT-4.4.0-1] resent with the original packet ids, DUP 1 ([MQTT-3.3.1-1]), in the order
    // first sent ([MQTT-4.6.0-1]).
    let (mut client, ack) = RawClient::connect_with(broker.addr, persistent(version, id)).await;
    assert!(ack.session_present);
    let mut again = Vec::new();
    for _ in 0..3 {
        let publish = client.recv_publish().await;
        assert!(publish.dup, "redelivery has DUP set");
        assert_eq!(publish.qos, QoS::AtLeastOnce);
        assert_eq!(publish.topic.as_str(), "rd/t");
        again.push((publish.packet_id.expect("id"), payload_of(&publish)));
    }
    assert_eq!(again, first);
    expect_quiet(&mut client).await;
    for (packet_id, _) in &again {
        puback(&mut client, *packet_id).await;
    }
    client.ping().await;
    drop(client);

    // Acknowledged now: nothing is resent on the next resume.
    let (mut client, ack) = RawClient::connect_with(broker.addr, persistent(version, id)).await;
    assert!(ack.session_present);
    expect_quiet(&mut client).await;
}

#[tokio::test]
async fn v311_unacked_qos1_is_redelivered_with_dup_and_the_same_ids() {
    unacked_qos1_is_redelivered_with_dup_and_the_same_ids(V311, "rd-311").await;
}

#[tokio::test]
async fn v5_unacked_qos1_is_redelivered_with_dup_and_the_same_ids() {
    unacked_qos1_is_redelivered_with_dup_and_the_same_ids(V5, "rd-5").await;
}

async fn qos2_resume_resends_publish_or_pubrel_by_state(version: ProtocolVersion, id: &str) {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::connect_with(broker.addr, persistent(version, id)).await;
    client.subscribe("rd2/t", QoS::ExactlyOnce).await;
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "rd2-pub", true).await;
    publisher.publish("rd2/t", b"q1", QoS::AtLeastOnce, 1).await;
    publisher
        .publish("rd2/t", b"q2-rec", QoS::ExactlyOnce, 2)
        .await;
    publisher
        .publish("rd2/t", b"q2-new", QoS::ExactlyOnce, 3)
        .await;

    let q1 = client.recv_publish().await;
    let rec = client.recv_publish().await;
    let new = client.recv_publish().await;
    assert_eq!(
        [&q1, &rec, &new].map(payload_of),
        ["q1", "q2-rec", "q2-new"]
    );
    let rec_id = rec.packet_id.expect("id");
    client
        .send(&Packet::PubRec(PubResponse::success(rec_id)))
        .await;
    assert_eq!(
        client.recv().await,
        Packet::PubRel(PubResponse::success(rec_id))
    );
    drop(client);

    let (mut client, ack) = RawClient::connect_with(broker.addr, persistent(version, id)).await;
    assert!(ack.session_present);
    // The QoS 1 and the un-PUBREC'd QoS 2 are resent as PUBLISH with DUP; the PUBREC'd one as
    // PUBREL ([MQTT-4.4.0-1]); everything in the original order.
    let resent_q1 = client.recv_publish().await;
    assert_eq!(
        (resent_q1.dup, resent_q1.packet_id, payload_of(&resent_q1)),
        (true, q1.packet_id, "q1".to_owned())
    );
    assert_eq!(
        client.recv().await,
        Packet::PubRel(PubResponse::success(rec_id))
    );
    let resent_new = client.recv_publish().await;
    assert_eq!(
        (
            resent_new.dup,
            resent_new.qos,
            resent_new.packet_id,
            payload_of(&resent_new)
        ),
        (true, QoS::ExactlyOnce, new.packet_id, "q2-new".to_owned())
    );
    expect_quiet(&mut client).await;

    // Completing every exchange leaves nothing to resend.
    puback(&mut client, q1.packet_id.expect("id")).await;
    client
        .send(&Packet::PubComp(PubResponse::success(rec_id)))
        .await;
    let new_id = new.packet_id.expect("id");
    client
        .send(&Packet::PubRec(PubResponse::success(new_id)))
        .await;
    assert_eq!(
        client.recv().await,
        Packet::PubRel(PubResponse::success(new_id))
    );
    client
        .send(&Packet::PubComp(PubResponse::success(new_id)))
        .await;
    client.ping().await;
    drop(client);
    let (mut client, ack) = RawClient::connect_with(broker.addr, persistent(version, id)).await;
    assert!(ack.session_present);
    expect_quiet(&mut client).await;
}

#[tokio::test]
async fn v311_qos2_resume_resends_publish_before_pubrec_and_pubrel_after() {
    qos2_resume_resends_publish_or_pubrel_by_state(V311, "rd2-311").await;
}

#[tokio::test]
async fn v5_qos2_resume_resends_publish_before_pubrec_and_pubrel_after() {
    qos2_resume_resends_publish_or_pubrel_by_state(V5, "rd2-5").await;
}

#[tokio::test]
async fn queued_messages_follow_the_redelivered_ones_on_resume() {
    let broker = TestBroker::start_with(|c| c.limits.max_inflight_messages = 2).await;
    let (mut client, _) = RawClient::connect_with(broker.addr, persistent(V311, "rdq")).await;
    client.subscribe("rdq/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "rdq-pub", true).await;
    for n in 1..=4u16 {
        publisher
            .publish("rdq/t", format!("m{n}").as_bytes(), QoS::AtLeastOnce, n)
            .await;
    }
    // Two in flight (the window), two queued.
    let first = [client.recv_publish().await, client.recv_publish().await];
    expect_quiet(&mut client).await;
    drop(client);

    let (mut client, ack) = RawClient::connect_with(broker.addr, persistent(V311, "rdq")).await;
    assert!(ack.session_present);
    let mut order = Vec::new();
    for expected in &first {
        let publish = client.recv_publish().await;
        assert!(publish.dup);
        assert_eq!(publish.packet_id, expected.packet_id);
        order.push(payload_of(&publish));
    }
    expect_quiet(&mut client).await;
    for expected in &first {
        puback(&mut client, expected.packet_id.expect("id")).await;
    }
    for _ in 0..2 {
        let publish = client.recv_publish().await;
        assert!(!publish.dup, "never sent before");
        puback(&mut client, publish.packet_id.expect("id")).await;
        order.push(payload_of(&publish));
    }
    assert_eq!(order, ["m1", "m2", "m3", "m4"]);
}

// ---------------------------------------------------------------------------------------------
// Takeover

#[tokio::test]
async fn v5_takeover_sends_session_taken_over_and_the_new_connection_resumes() {
    let broker = TestBroker::start().await;
    let (mut old, _) = RawClient::connect_with(broker.addr, persistent(V5, "to-5")).await;
    old.subscribe("to5/t", QoS::AtLeastOnce).await;

    let (mut new, ack) = RawClient::connect_with(broker.addr, persistent(V5, "to-5")).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    assert!(ack.session_present);
    // [MQTT-3.1.4-3] the existing connection is told 0x8E and closed.
    assert_eq!(
        old.recv_until_closed().await,
        [Packet::Disconnect(Disconnect::new(
            ReasonCode::SessionTakenOver
        ))]
    );
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "to-5-pub", true).await;
    publisher
        .publish("to5/t", b"moved", QoS::AtLeastOnce, 1)
        .await;
    assert_eq!(payload_of(&new.recv_publish().await), "moved");
    assert_eq!(broker.broker.session_count(), 2);
}

#[tokio::test]
async fn v311_and_v31_takeover_closes_the_old_connection_without_a_packet() {
    let broker = TestBroker::start().await;
    for (version, id) in [(V311, "to-311"), (V31, "to-31")] {
        let (mut old, _) = RawClient::connect_with(broker.addr, persistent(version, id)).await;
        old.subscribe("to3/t", QoS::AtLeastOnce).await;
        let (mut new, ack) = RawClient::connect_with(broker.addr, persistent(version, id)).await;
        assert!(ack.session_present, "{version:?}");
        assert!(old.recv_until_closed().await.is_empty(), "{version:?}");
        let (mut publisher, _) = RawClient::connect(broker.addr, V311, "to-3-pub", true).await;
        publisher
            .publish("to3/t", b"moved", QoS::AtLeastOnce, 1)
            .await;
        assert_eq!(payload_of(&new.recv_publish().await), "moved");
        assert!(publisher.disconnect().await.is_empty());
    }
}

#[tokio::test]
async fn takeover_hands_unacknowledged_messages_to_the_new_connection() {
    let broker = TestBroker::start().await;
    let (mut old, _) = RawClient::connect_with(broker.addr, persistent(V5, "to-inflight")).await;
    old.subscribe("toi/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "toi-pub", true).await;
    publisher
        .publish("toi/t", b"pending", QoS::AtLeastOnce, 1)
        .await;
    let original = old.recv_publish().await;

    let (mut new, ack) = RawClient::connect_with(broker.addr, persistent(V5, "to-inflight")).await;
    assert!(ack.session_present);
    let resent = new.recv_publish().await;
    assert!(resent.dup);
    assert_eq!(resent.packet_id, original.packet_id);
    assert_eq!(payload_of(&resent), "pending");
}

#[tokio::test]
async fn takeover_with_clean_start_ends_the_old_session() {
    let broker = TestBroker::start().await;
    for (version, id) in [(V5, "toc-5"), (V311, "toc-311")] {
        let (mut old, _) = RawClient::connect_with(broker.addr, persistent(version, id)).await;
        old.subscribe("toc/t", QoS::AtLeastOnce).await;
        let (mut publisher, _) = RawClient::connect(broker.addr, V311, "toc-pub", true).await;
        publisher
            .publish("toc/t", b"old", QoS::AtLeastOnce, 1)
            .await;
        assert_eq!(payload_of(&old.recv_publish().await), "old");

        let mut clean = persistent(version, id);
        clean.clean_start = true;
        let (mut new, ack) = RawClient::connect_with(broker.addr, clean).await;
        assert!(!ack.session_present, "{version:?}");
        let expected: Vec<Packet> = if version.is_v5() {
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::SessionTakenOver,
            ))]
        } else {
            Vec::new()
        };
        assert_eq!(old.recv_until_closed().await, expected);
        // Neither the subscription nor the unacknowledged message came along.
        publisher
            .publish("toc/t", b"after", QoS::AtLeastOnce, 2)
            .await;
        expect_quiet(&mut new).await;
        assert!(publisher.disconnect().await.is_empty());
        assert!(new.disconnect().await.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// 5.0 session expiry

#[tokio::test]
async fn v5_session_expiry_zero_ends_the_session_at_disconnect() {
    let broker = TestBroker::start().await;
    for expiry in [None, Some(0)] {
        let (mut client, _) =
            RawClient::connect_with(broker.addr, v5_connect("exp-0", false, expiry)).await;
        client.subscribe("exp0/t", QoS::AtLeastOnce).await;
        assert!(client.disconnect().await.is_empty());
        let (mut client, ack) =
            RawClient::connect_with(broker.addr, v5_connect("exp-0", false, Some(60))).await;
        assert!(!ack.session_present, "expiry {expiry:?}");
        let (mut publisher, _) = RawClient::connect(broker.addr, V311, "exp0-pub", true).await;
        publisher
            .publish("exp0/t", b"gone", QoS::AtLeastOnce, 1)
            .await;
        expect_quiet(&mut client).await;
        // Leave with expiry 0 so the next round starts from nothing.
        client
            .send(&Packet::Disconnect(Disconnect {
                reason: ReasonCode::Success,
                properties: DisconnectProperties {
                    session_expiry_interval: Some(0),
                    ..DisconnectProperties::default()
                },
            }))
            .await;
        assert!(client.recv_until_closed().await.is_empty());
        assert!(publisher.disconnect().await.is_empty());
    }
}

#[tokio::test]
async fn v5_session_is_kept_within_its_expiry_interval() {
    let broker = TestBroker::start().await;
    let (mut client, _) =
        RawClient::connect_with(broker.addr, v5_connect("exp-kept", false, Some(3))).await;
    client.subscribe("expk/t", QoS::AtLeastOnce).await;
    assert!(client.disconnect().await.is_empty());
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "expk-pub", true).await;
    publisher
        .publish("expk/t", b"kept", QoS::AtLeastOnce, 1)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut client, ack) =
        RawClient::connect_with(broker.addr, v5_connect("exp-kept", false, Some(3))).await;
    assert!(ack.session_present);
    assert_eq!(payload_of(&client.recv_publish().await), "kept");
}

#[tokio::test]
async fn v5_session_expires_after_its_expiry_interval() {
    let broker = TestBroker::start().await;
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "expx-pub", true).await;
    let (mut client, _) =
        RawClient::connect_with(broker.addr, v5_connect("exp-gone", false, Some(1))).await;
    client.subscribe("expx/t", QoS::AtLeastOnce).await;
    assert!(client.disconnect().await.is_empty());
    publisher
        .publish("expx/t", b"queued", QoS::AtLeastOnce, 1)
        .await;
    assert_eq!(broker.broker.session_count(), 2);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    // The session, its subscription and its queue are gone.
    assert_eq!(broker.broker.session_count(), 1, "only the publisher's");
    assert_eq!(broker.broker.subscription_count(), 0);
    let (mut client, ack) =
        RawClient::connect_with(broker.addr, v5_connect("exp-gone", false, Some(1))).await;
    assert!(!ack.session_present);
    expect_quiet(&mut client).await;
}

#[tokio::test]
async fn v5_disconnect_can_end_the_session_by_setting_expiry_zero() {
    let broker = TestBroker::start().await;
    let (mut client, _) =
        RawClient::connect_with(broker.addr, v5_connect("exp-dis0", false, Some(60))).await;
    client.subscribe("expd0/t", QoS::AtLeastOnce).await;
    client
        .send(&Packet::Disconnect(Disconnect {
            reason: ReasonCode::Success,
            properties: DisconnectProperties {
                session_expiry_interval: Some(0),
                ..DisconnectProperties::default()
            },
        }))
        .await;
    assert!(client.recv_until_closed().await.is_empty());
    let (_client, ack) =
        RawClient::connect_with(broker.addr, v5_connect("exp-dis0", false, Some(60))).await;
    assert!(!ack.session_present);
    assert_eq!(broker.broker.subscription_count(), 0);
}

#[tokio::test]
async fn v5_disconnect_can_extend_the_expiry_interval() {
    let broker = TestBroker::start().await;
    let (mut client, _) =
        RawClient::connect_with(broker.addr, v5_connect("exp-dis-long", false, Some(1))).await;
    client.subscribe("expdl/t", QoS::AtLeastOnce).await;
    client
        .send(&Packet::Disconnect(Disconnect {
            reason: ReasonCode::Success,
            properties: DisconnectProperties {
                session_expiry_interval: Some(3600),
                ..DisconnectProperties::default()
            },
        }))
        .await;
    assert!(client.recv_until_closed().await.is_empty());
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let (_client, ack) =
        RawClient::connect_with(broker.addr, v5_connect("exp-dis-long", false, Some(1))).await;
    assert!(ack.session_present, "kept past the CONNECT's 1 s");
}

#[tokio::test]
async fn v5_disconnect_setting_expiry_after_connect_set_zero_is_a_protocol_error() {
    let broker = TestBroker::start().await;
    for expiry in [None, Some(0)] {
        let (mut client, _) =
            RawClient::connect_with(broker.addr, v5_connect("exp-bad", false, expiry)).await;
        client.subscribe("expb/t", QoS::AtLeastOnce).await;
        client
            .send(&Packet::Disconnect(Disconnect {
                reason: ReasonCode::Success,
                properties: DisconnectProperties {
                    session_expiry_interval: Some(30),
                    ..DisconnectProperties::default()
                },
            }))
            .await;
        // Section 3.14.2.2.2: the server answers with DISCONNECT 0x82.
        assert_eq!(
            client.recv_until_closed().await,
            [Packet::Disconnect(Disconnect::new(
                ReasonCode::ProtocolError
            ))],
            "CONNECT expiry {expiry:?}"
        );
        // The session still ended with the connection.
        let (client, ack) =
            RawClient::connect_with(broker.addr, v5_connect("exp-bad", false, None)).await;
        assert!(!ack.session_present, "CONNECT expiry {expiry:?}");
        assert!(client.disconnect().await.is_empty());
    }
}

#[tokio::test]
async fn v5_expiry_ffffffff_outlives_a_disconnect_with_its_queue() {
    let broker = TestBroker::start().await;
    let (mut client, _) =
        RawClient::connect_with(broker.addr, v5_connect("exp-max", false, Some(u32::MAX))).await;
    client.subscribe("expm/t", QoS::AtLeastOnce).await;
    assert!(client.disconnect().await.is_empty());
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "expm-pub", true).await;
    publisher
        .publish("expm/t", b"forever", QoS::AtLeastOnce, 1)
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Reconnecting with no expiry property (0) still finds the never-expiring session.
    let (mut client, ack) =
        RawClient::connect_with(broker.addr, v5_connect("exp-max", false, None)).await;
    assert!(ack.session_present);
    assert_eq!(payload_of(&client.recv_publish().await), "forever");
}

#[tokio::test]
async fn v311_persistent_session_expires_after_persistent_client_expiration() {
    let broker = TestBroker::start_with(|c| c.limits.persistent_client_expiration = 1).await;
    let (mut client, _) = RawClient::connect_with(broker.addr, persistent(V311, "pce")).await;
    client.subscribe("pce/t", QoS::AtLeastOnce).await;
    assert!(client.disconnect().await.is_empty());
    let (client, ack) = RawClient::connect_with(broker.addr, persistent(V311, "pce")).await;
    assert!(ack.session_present, "resumed within a second");
    assert!(client.disconnect().await.is_empty());
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let (_client, ack) = RawClient::connect_with(broker.addr, persistent(V311, "pce")).await;
    assert!(!ack.session_present, "expired");
}

// ---------------------------------------------------------------------------------------------
// Outgoing inflight window

/// Publishes `count` QoS 1 messages to `topic` (each routed before the next), then checks that
/// `sub` gets exactly `window` at first and one more per PUBACK, never more than `window`
/// outstanding, all in order.
async fn check_outgoing_window(
    broker: &TestBroker,
    sub: &mut RawClient,
    topic: &str,
    window: usize,
) {
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "win-pub", true).await;
    let count = 8u16;
    for n in 0..count {
        publisher
            .publish(topic, n.to_string().as_bytes(), QoS::AtLeastOnce, n + 1)
            .await;
    }
    let mut outstanding = std::collections::VecDeque::new();
    let mut received = Vec::new();
    for _ in 0..window {
        outstanding.push_back(sub.recv_publish().await);
    }
    expect_quiet(sub).await;
    while let Some(oldest) = outstanding.pop_front() {
        received.push(payload_of(&oldest));
        puback(sub, oldest.packet_id.expect("id")).await;
        // One acknowledgement frees exactly one place.
        if received.len() + outstanding.len() < usize::from(count) {
            outstanding.push_back(sub.recv_publish().await);
            assert_eq!(sub.recv_within(Duration::from_millis(100)).await, None);
        }
        assert!(outstanding.len() <= window);
    }
    let expected: Vec<String> = (0..count).map(|n| n.to_string()).collect();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn outgoing_window_is_the_clients_receive_maximum_when_lower() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(V5, "win-rm", true);
    connect.properties.receive_maximum = NonZeroU16::new(3);
    let (mut sub, _) = RawClient::connect_with(broker.addr, connect).await;
    sub.subscribe("win/rm", QoS::AtLeastOnce).await;
    check_outgoing_window(&broker, &mut sub, "win/rm", 3).await;
}

#[tokio::test]
async fn outgoing_window_is_max_inflight_messages_when_lower() {
    let broker = TestBroker::start_with(|c| c.limits.max_inflight_messages = 2).await;
    let mut connect = connect_packet(V5, "win-max-5", true);
    connect.properties.receive_maximum = NonZeroU16::new(10);
    let (mut sub, _) = RawClient::connect_with(broker.addr, connect).await;
    sub.subscribe("win/max5", QoS::AtLeastOnce).await;
    check_outgoing_window(&broker, &mut sub, "win/max5", 2).await;
}

#[tokio::test]
async fn v311_outgoing_window_is_max_inflight_messages() {
    let broker = TestBroker::start_with(|c| c.limits.max_inflight_messages = 2).await;
    let (mut sub, _) = RawClient::connect(broker.addr, V311, "win-max-311", true).await;
    sub.subscribe("win/max311", QoS::AtLeastOnce).await;
    check_outgoing_window(&broker, &mut sub, "win/max311", 2).await;
}

#[tokio::test]
async fn qos2_message_holds_its_window_place_until_pubcomp() {
    let broker = TestBroker::start_with(|c| c.limits.max_inflight_messages = 1).await;
    let (mut sub, _) = RawClient::connect(broker.addr, V5, "win-q2", true).await;
    sub.subscribe("win/q2", QoS::ExactlyOnce).await;
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "win-q2-pub", true).await;
    publisher
        .publish("win/q2", b"first", QoS::ExactlyOnce, 1)
        .await;
    publisher
        .publish("win/q2", b"second", QoS::ExactlyOnce, 2)
        .await;

    let first = sub.recv_publish().await;
    assert_eq!(payload_of(&first), "first");
    let id = first.packet_id.expect("id");
    expect_quiet(&mut sub).await;
    sub.send(&Packet::PubRec(PubResponse::success(id))).await;
    assert_eq!(sub.recv().await, Packet::PubRel(PubResponse::success(id)));
    // PUBREC is not the end of the exchange: the window is still full.
    expect_quiet(&mut sub).await;
    sub.send(&Packet::PubComp(PubResponse::success(id))).await;
    assert_eq!(payload_of(&sub.recv_publish().await), "second");
}

// ---------------------------------------------------------------------------------------------
// Our Receive Maximum for QoS 2

#[tokio::test]
async fn more_unacknowledged_qos2_than_our_receive_maximum_gets_disconnect_0x93() {
    let broker = TestBroker::start_with(|c| c.limits.max_inflight_messages = 2).await;
    let (mut client, ack) = RawClient::connect(broker.addr, V5, "rm-over", true).await;
    assert_eq!(ack.properties.receive_maximum, NonZeroU16::new(2));
    for n in 1..=2u16 {
        client
            .send(&Packet::Publish(publish_packet(
                "rm/t",
                b"x",
                QoS::ExactlyOnce,
                n,
            )))
            .await;
        assert_eq!(
            client.recv().await,
            Packet::PubRec(PubResponse::success(pid(n)))
        );
    }
    // A third before any PUBREL: section 3.3.4, [MQTT-3.3.4-9].
    client
        .send(&Packet::Publish(publish_packet(
            "rm/t",
            b"x",
            QoS::ExactlyOnce,
            3,
        )))
        .await;
    assert_eq!(
        client.recv_until_closed().await,
        [Packet::Disconnect(Disconnect::new(
            ReasonCode::ReceiveMaximumExceeded
        ))]
    );
}

#[tokio::test]
async fn qos2_within_our_receive_maximum_is_accepted_as_exchanges_complete() {
    let broker = TestBroker::start_with(|c| c.limits.max_inflight_messages = 2).await;
    let (mut sub, _) = RawClient::connect(broker.addr, V5, "rm-ok-sub", true).await;
    sub.subscribe("rmok/t", QoS::AtMostOnce).await;
    let (mut client, _) = RawClient::connect(broker.addr, V5, "rm-ok", true).await;
    for n in 1..=2u16 {
        client
            .send(&Packet::Publish(publish_packet(
                "rmok/t",
                n.to_string().as_bytes(),
                QoS::ExactlyOnce,
                n,
            )))
            .await;
        assert_eq!(
            client.recv().await,
            Packet::PubRec(PubResponse::success(pid(n)))
        );
    }
    client
        .send(&Packet::PubRel(PubResponse::success(pid(1))))
        .await;
    assert_eq!(
        client.recv().await,
        Packet::PubComp(PubResponse::success(pid(1)))
    );
    // One place is free again.
    client
        .send(&Packet::Publish(publish_packet(
            "rmok/t",
            b"3",
            QoS::ExactlyOnce,
            3,
        )))
        .await;
    assert_eq!(
        client.recv().await,
        Packet::PubRec(PubResponse::success(pid(3)))
    );
    // QoS 1 is not limited by the QoS 2 count.
    client.publish("rmok/t", b"4", QoS::AtLeastOnce, 4).await;
    let mut delivered = Vec::new();
    for _ in 0..4 {
        delivered.push(payload_of(&sub.recv_publish().await));
    }
    assert_eq!(delivered, ["1", "2", "3", "4"]);
    expect_quiet(&mut sub).await;
}

#[tokio::test]
async fn v311_client_is_not_held_to_a_receive_maximum_it_was_never_told() {
    let broker = TestBroker::start_with(|c| c.limits.max_inflight_messages = 2).await;
    let (mut sub, _) = RawClient::connect(broker.addr, V311, "rm-311-sub", true).await;
    sub.subscribe("rm311/t", QoS::AtMostOnce).await;
    // 3.1.1 has no Receive Maximum: a client may have any number of QoS 2 messages awaiting
    // PUBREL, and the broker's limit (announced only to 5.0 clients) does not apply.
    let (mut client, _) = RawClient::connect(broker.addr, V311, "rm-311", true).await;
    for n in 1..=5u16 {
        client
            .send(&Packet::Publish(publish_packet(
                "rm311/t",
                n.to_string().as_bytes(),
                QoS::ExactlyOnce,
                n,
            )))
            .await;
        assert_eq!(
            client.recv().await,
            Packet::PubRec(PubResponse::success(pid(n)))
        );
    }
    for n in 1..=5u16 {
        client
            .send(&Packet::PubRel(PubResponse::success(pid(n))))
            .await;
        assert_eq!(
            client.recv().await,
            Packet::PubComp(PubResponse::success(pid(n)))
        );
    }
    let mut delivered = Vec::new();
    for _ in 0..5 {
        delivered.push(payload_of(&sub.recv_publish().await));
    }
    assert_eq!(delivered, ["1", "2", "3", "4", "5"]);
}

#[tokio::test]
async fn rumqttc_v311_qos2_burst_completes() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet as P, QoS as Q};
    let broker = TestBroker::start().await;
    let (mut sub, _) = RawClient::connect(broker.addr, V311, "rq-q2-sub", true).await;
    sub.subscribe("rqq2/t", QoS::AtMostOnce).await;
    // rumqttc keeps up to 100 messages in flight by default, more than the broker's default
    // window of 20: a 3.1.1 client cannot know that window.
    let (client, mut events) = AsyncClient::new(
        MqttOptions::new("rq-q2", "127.0.0.1", broker.addr.port()),
        100,
    );
    let count = 60;
    for n in 0..count {
        client
            .publish("rqq2/t", Q::ExactlyOnce, false, n.to_string())
            .await
            .expect("queue publish");
    }
    let mut completed = 0;
    while completed < count {
        let event = tokio::time::timeout(common::RECV_TIMEOUT, events.poll())
            .await
            .expect("event in time")
            .expect("the connection stays up");
        if let Event::Incoming(P::PubComp(_)) = event {
            completed += 1;
        }
    }
    let mut received = Vec::new();
    for _ in 0..count {
        received.push(payload_of(&sub.recv_publish().await));
    }
    let expected: Vec<String> = (0..count).map(|n| n.to_string()).collect();
    assert_eq!(received, expected);
}

// ---------------------------------------------------------------------------------------------
// Ordering

async fn qos1_burst_keeps_order(window: u16, id: &str) {
    let broker = TestBroker::start_with(|c| c.limits.max_inflight_messages = window).await;
    let (mut sub, _) = RawClient::connect(broker.addr, V311, id, true).await;
    sub.subscribe("burst/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) =
        RawClient::connect(broker.addr, V311, &format!("{id}-pub"), true).await;
    let count = 200u16;
    // The publisher pipelines the whole burst before reading any PUBACK.
    for n in 0..count {
        publisher
            .send(&Packet::Publish(publish_packet(
                "burst/t",
                n.to_string().as_bytes(),
                QoS::AtLeastOnce,
                n + 1,
            )))
            .await;
    }
    let mut received = Vec::new();
    let mut acks = 0;
    while received.len() < usize::from(count) {
        tokio::select! {
            publish = sub.recv_publish() => {
                puback(&mut sub, publish.packet_id.expect("id")).await;
                received.push(payload_of(&publish));
            }
            packet = publisher.recv() => {
                assert!(matches!(packet, Packet::PubAck(_)), "{packet:?}");
                acks += 1;
            }
        }
    }
    while acks < count {
        assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
        acks += 1;
    }
    let expected: Vec<String> = (0..count).map(|n| n.to_string()).collect();
    assert_eq!(received, expected);
    expect_quiet(&mut sub).await;
}

#[tokio::test]
async fn qos1_burst_on_one_topic_arrives_in_order() {
    qos1_burst_keeps_order(20, "burst-20").await;
}

#[tokio::test]
async fn qos1_burst_keeps_order_through_a_one_message_window() {
    qos1_burst_keeps_order(1, "burst-1").await;
}

#[tokio::test]
async fn rumqttc_qos1_burst_arrives_in_order() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet as P, QoS as Q};
    let broker = TestBroker::start().await;
    let (sub, mut sub_events) = AsyncClient::new(
        MqttOptions::new("rq-burst-sub", "127.0.0.1", broker.addr.port()),
        10,
    );
    sub.subscribe("rqb/t", Q::AtLeastOnce).await.expect("queue");
    loop {
        let event = tokio::time::timeout(common::RECV_TIMEOUT, sub_events.poll())
            .await
            .expect("event in time")
            .expect("connected");
        if let Event::Incoming(P::SubAck(_)) = event {
            break;
        }
    }
    let (publisher, mut pub_events) = AsyncClient::new(
        MqttOptions::new("rq-burst-pub", "127.0.0.1", broker.addr.port()),
        100,
    );
    let count = 100;
    let driver = tokio::spawn(async move {
        for n in 0..count {
            publisher
                .publish("rqb/t", Q::AtLeastOnce, false, n.to_string())
                .await
                .expect("queue publish");
        }
        let mut acked = 0;
        while acked < count {
            if let Event::Incoming(P::PubAck(_)) = pub_events.poll().await.expect("connected") {
                acked += 1;
            }
        }
    });
    let mut received = Vec::new();
    while received.len() < count {
        let event = tokio::time::timeout(common::RECV_TIMEOUT, sub_events.poll())
            .await
            .expect("event in time")
            .expect("connected");
        if let Event::Incoming(P::Publish(p)) = event {
            received.push(String::from_utf8(p.payload.to_vec()).expect("utf-8"));
        }
    }
    let expected: Vec<String> = (0..count).map(|n| n.to_string()).collect();
    assert_eq!(received, expected);
    tokio::time::timeout(common::RECV_TIMEOUT, driver)
        .await
        .expect("publisher finished")
        .expect("publisher task");
}

// ---------------------------------------------------------------------------------------------
// QoS 2 exactly once (inbound)

async fn qos2_duplicate_publish_is_acknowledged_but_not_routed_twice(version: ProtocolVersion) {
    let broker = TestBroker::start().await;
    let (mut sub, _) = RawClient::connect(broker.addr, V311, "eo-sub", true).await;
    sub.subscribe("eo/t", QoS::ExactlyOnce).await;
    let (mut client, _) = RawClient::connect(broker.addr, version, "eo-pub", true).await;
    let publish = publish_packet("eo/t", b"once", QoS::ExactlyOnce, 7);
    client.send(&Packet::Publish(publish.clone())).await;
    assert_eq!(
        client.recv().await,
        Packet::PubRec(PubResponse::success(pid(7)))
    );
    // Section 4.3.3: the retransmission is answered with PUBREC again but not delivered again.
    client
        .send(&Packet::Publish(Publish {
            dup: true,
            ..publish.clone()
        }))
        .await;
    assert_eq!(
        client.recv().await,
        Packet::PubRec(PubResponse::success(pid(7)))
    );
    client
        .send(&Packet::PubRel(PubResponse::success(pid(7))))
        .await;
    assert_eq!(
        client.recv().await,
        Packet::PubComp(PubResponse::success(pid(7)))
    );

    let delivered = sub.recv_publish().await;
    assert_eq!(payload_of(&delivered), "once");
    expect_quiet(&mut sub).await;

    // After PUBCOMP the id is free: the same id now carries a new message.
    client
        .send(&Packet::Publish(publish_packet(
            "eo/t",
            b"next",
            QoS::ExactlyOnce,
            7,
        )))
        .await;
    assert_eq!(
        client.recv().await,
        Packet::PubRec(PubResponse::success(pid(7)))
    );
    assert_eq!(payload_of(&sub.recv_publish().await), "next");
}

#[tokio::test]
async fn v311_qos2_duplicate_publish_is_acknowledged_but_not_routed_twice() {
    qos2_duplicate_publish_is_acknowledged_but_not_routed_twice(V311).await;
}

#[tokio::test]
async fn v5_qos2_duplicate_publish_is_acknowledged_but_not_routed_twice() {
    qos2_duplicate_publish_is_acknowledged_but_not_routed_twice(V5).await;
}

#[tokio::test]
async fn qos2_duplicate_after_reconnect_is_not_routed_twice() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = RawClient::connect(broker.addr, V311, "eor-sub", true).await;
    sub.subscribe("eor/t", QoS::ExactlyOnce).await;
    let (mut client, _) = RawClient::connect_with(broker.addr, persistent(V5, "eor-pub")).await;
    let publish = publish_packet("eor/t", b"once", QoS::ExactlyOnce, 9);
    client.send(&Packet::Publish(publish.clone())).await;
    assert_eq!(
        client.recv().await,
        Packet::PubRec(PubResponse::success(pid(9)))
    );
    drop(client);

    // The packet id awaiting PUBREL belongs to the session, so it survives the reconnect.
    let (mut client, ack) = RawClient::connect_with(broker.addr, persistent(V5, "eor-pub")).await;
    assert!(ack.session_present);
    client
        .send(&Packet::Publish(Publish {
            dup: true,
            ..publish
        }))
        .await;
    assert_eq!(
        client.recv().await,
        Packet::PubRec(PubResponse::success(pid(9)))
    );
    client
        .send(&Packet::PubRel(PubResponse::success(pid(9))))
        .await;
    assert_eq!(
        client.recv().await,
        Packet::PubComp(PubResponse::success(pid(9)))
    );

    assert_eq!(payload_of(&sub.recv_publish().await), "once");
    expect_quiet(&mut sub).await;
}

#[tokio::test]
async fn qos2_id_awaiting_pubrel_is_forgotten_with_a_clean_session() {
    let broker = TestBroker::start().await;
    let (mut sub, _) = RawClient::connect(broker.addr, V311, "eoc-sub", true).await;
    sub.subscribe("eoc/t", QoS::ExactlyOnce).await;
    let (mut client, _) = RawClient::connect_with(broker.addr, persistent(V311, "eoc-pub")).await;
    client
        .send(&Packet::Publish(publish_packet(
            "eoc/t",
            b"first",
            QoS::ExactlyOnce,
            5,
        )))
        .await;
    assert_eq!(
        client.recv().await,
        Packet::PubRec(PubResponse::success(pid(5)))
    );
    drop(client);

    // A new session knows nothing of id 5: the same id is a new message.
    let (mut client, ack) = RawClient::connect(broker.addr, V311, "eoc-pub", true).await;
    assert!(!ack.session_present);
    client
        .send(&Packet::Publish(publish_packet(
            "eoc/t",
            b"second",
            QoS::ExactlyOnce,
            5,
        )))
        .await;
    assert_eq!(
        client.recv().await,
        Packet::PubRec(PubResponse::success(pid(5)))
    );

    assert_eq!(payload_of(&sub.recv_publish().await), "first");
    assert_eq!(payload_of(&sub.recv_publish().await), "second");
}
