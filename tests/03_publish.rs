//! PUBLISH through the real broker: the QoS 0/1/2 flows in both directions with their exact
//! acknowledgements, QoS downgrade, payload and topic fidelity, malformed PUBLISH packets, the
//! maximum packet size, bursts, fan-in, and 3.1.1 / 5.0 clients talking to each other.

mod common;

use bytes::Bytes;
use common::flows::{
    V4Client, V5Client, frame, pid, prefixed, publish_packet, raw_publish, recv_publishes_all,
};
use common::{RECV_TIMEOUT, RawClient, TestBroker};
use starling::codec::{
    AckProperties, Disconnect, Packet, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode,
    ReasonContext, UserProperty,
};
use tokio::io::AsyncReadExt;

use ProtocolVersion::{V5, V31, V311};

/// Connects with a clean session and checks the CONNACK.
async fn client(broker: &TestBroker, version: ProtocolVersion, id: &str) -> RawClient {
    let (client, ack) = RawClient::connect(broker.addr, version, id, true).await;
    assert_eq!(ack.reason, ReasonCode::Success, "CONNACK for {id}");
    client
}

/// A client subscribed to `filter` at `qos`.
async fn subscriber(
    broker: &TestBroker,
    version: ProtocolVersion,
    id: &str,
    filter: &str,
    qos: QoS,
) -> RawClient {
    let mut c = client(broker, version, id).await;
    c.subscribe_filters(1, &[(filter, qos)]).await;
    c
}

// QoS 0: no packet id, no acknowledgement, delivered with DUP 0 and RETAIN 0 (3.3.1).
#[tokio::test]
async fn qos0_is_delivered_once_without_packet_id_in_every_version() {
    let broker = TestBroker::start().await;
    for version in [V31, V311, V5] {
        let level = version.level();
        let topic = format!("q0/{level}");
        let mut sub = subscriber(
            &broker,
            version,
            &format!("q0-sub-{level}"),
            &topic,
            QoS::ExactlyOnce,
        )
        .await;
        let mut publisher = client(&broker, version, &format!("q0-pub-{level}")).await;
        let ack = publisher
            .publish_and_wait(publish_packet(&topic, "zero", QoS::AtMostOnce, 0))
            .await;
        assert_eq!(ack, None);
        let got = sub.recv_publish().await;
        assert_eq!(
            got,
            publish_packet(&topic, "zero", QoS::AtMostOnce, 0),
            "{version:?}"
        );
        sub.assert_quiet().await;
        drop((sub, publisher));
    }
    broker.stop().await;
}

// QoS 1 (4.3.2): PUBACK with the publisher's packet id; the subscriber gets QoS 1 with a
// packet id of the broker's choosing and DUP 0, and once it acknowledges, nothing is resent.
#[tokio::test]
async fn qos1_flow_is_acknowledged_in_both_directions() {
    let broker = TestBroker::start().await;
    for version in [V31, V311, V5] {
        let level = version.level();
        let topic = format!("q1/{level}");
        let mut sub = subscriber(
            &broker,
            version,
            &format!("q1-sub-{level}"),
            &topic,
            QoS::AtLeastOnce,
        )
        .await;
        let mut publisher = client(&broker, version, &format!("q1-pub-{level}")).await;
        let ack = publisher
            .publish_and_wait(publish_packet(&topic, "one", QoS::AtLeastOnce, 0xBEEF))
            .await;
        assert_eq!(ack, Some(PubResponse::success(pid(0xBEEF))), "{version:?}");

        let got = sub.recv_publish().await;
        let id = got.packet_id.expect("QoS 1 carries a packet id");
        assert_eq!(
            got,
            publish_packet(&topic, "one", QoS::AtLeastOnce, id.get())
        );
        sub.send(&Packet::PubAck(PubResponse::success(id))).await;
        sub.assert_quiet().await;
        drop((sub, publisher));
    }
    broker.stop().await;
}

// QoS 2 inbound (4.3.3): PUBREC with the packet id, then PUBREL -> PUBCOMP. A resent PUBLISH
// with DUP before the PUBREL is acknowledged again but not delivered again (the receiver rules
// of 4.3.3); once PUBCOMP released the id, the same id is a new message.
#[tokio::test]
async fn qos2_inbound_flow_delivers_once_despite_a_duplicate_publish() {
    let broker = TestBroker::start().await;
    for version in [V31, V311, V5] {
        let level = version.level();
        let topic = format!("q2in/{level}");
        let mut sub = subscriber(
            &broker,
            version,
            &format!("q2in-sub-{level}"),
            &topic,
            QoS::ExactlyOnce,
        )
        .await;
        let mut publisher = client(&broker, version, &format!("q2in-pub-{level}")).await;

        let first = publish_packet(&topic, "once", QoS::ExactlyOnce, 0x0102);
        publisher.send(&Packet::Publish(first.clone())).await;
        assert_eq!(
            publisher.recv().await,
            Packet::PubRec(PubResponse::success(pid(0x0102)))
        );
        let resent = Publish {
            dup: true,
            ..first.clone()
        };
        publisher.send(&Packet::Publish(resent)).await;
        assert_eq!(
            publisher.recv().await,
            Packet::PubRec(PubResponse::success(pid(0x0102)))
        );
        publisher
            .send(&Packet::PubRel(PubResponse::success(pid(0x0102))))
            .await;
        assert_eq!(
            publisher.recv().await,
            Packet::PubComp(PubResponse::success(pid(0x0102)))
        );
        // The id is free again: this is a new message.
        publisher
            .publish_and_wait(publish_packet(&topic, "again", QoS::ExactlyOnce, 0x0102))
            .await;

        let got = sub.recv_publishes(2).await;
        let payloads: Vec<&[u8]> = got.iter().map(|p| &p.payload[..]).collect();
        assert_eq!(payloads, vec![&b"once"[..], b"again"], "{version:?}");
        assert!(got.iter().all(|p| p.qos == QoS::ExactlyOnce && !p.dup));
        drop((sub, publisher));
    }
    broker.stop().await;
}

// QoS 2 outbound (4.3.3): the broker sends PUBLISH, answers PUBREC with PUBREL for the same id,
// and the exchange ends with the client's PUBCOMP; nothing is resent afterwards.
#[tokio::test]
async fn qos2_outbound_flow_goes_publish_pubrec_pubrel_pubcomp() {
    let broker = TestBroker::start().await;
    for version in [V31, V311, V5] {
        let level = version.level();
        let topic = format!("q2out/{level}");
        let mut sub = subscriber(
            &broker,
            version,
            &format!("q2out-sub-{level}"),
            &topic,
            QoS::ExactlyOnce,
        )
        .await;
        let mut publisher = client(&broker, version, &format!("q2out-pub-{level}")).await;
        for round in 1..=2u16 {
            let payload = format!("m{round}");
            publisher
                .publish_and_wait(publish_packet(
                    &topic,
                    payload.clone(),
                    QoS::ExactlyOnce,
                    round,
                ))
                .await;
            let got = sub.recv_publish().await;
            let id = got.packet_id.expect("QoS 2 carries a packet id");
            assert_eq!(
                got,
                publish_packet(&topic, payload, QoS::ExactlyOnce, id.get())
            );
            sub.send(&Packet::PubRec(PubResponse::success(id))).await;
            assert_eq!(sub.recv().await, Packet::PubRel(PubResponse::success(id)));
            sub.send(&Packet::PubComp(PubResponse::success(id))).await;
        }
        // Completed exchanges are not resent.
        sub.assert_quiet().await;
        drop((sub, publisher));
    }
    broker.stop().await;
}

// 5.0 sections 3.6.2.1 and 3.7.2.1: a PUBREC or PUBREL for an id the broker does not know is
// answered with reason 0x92 Packet Identifier not found; 3.1.1 simply completes the exchange.
#[tokio::test]
async fn unknown_packet_ids_in_the_qos2_flow_are_answered_per_version() {
    let broker = TestBroker::start().await;
    let mut v5 = client(&broker, V5, "unknown-id-5").await;
    v5.send(&Packet::PubRec(PubResponse::success(pid(77))))
        .await;
    assert_eq!(
        v5.recv().await,
        Packet::PubRel(PubResponse {
            packet_id: pid(77),
            reason: ReasonCode::PacketIdentifierNotFound,
            properties: AckProperties::default(),
        })
    );
    v5.send(&Packet::PubRel(PubResponse::success(pid(78))))
        .await;
    assert_eq!(
        v5.recv().await,
        Packet::PubComp(PubResponse {
            packet_id: pid(78),
            reason: ReasonCode::PacketIdentifierNotFound,
            properties: AckProperties::default(),
        })
    );
    let mut v3 = client(&broker, V311, "unknown-id-3").await;
    v3.send(&Packet::PubRel(PubResponse::success(pid(79))))
        .await;
    assert_eq!(
        v3.recv().await,
        Packet::PubComp(PubResponse::success(pid(79)))
    );
    // A stray PUBREC in 3.1.1 has no answer and does not close the connection.
    v3.send(&Packet::PubRec(PubResponse::success(pid(80))))
        .await;
    v3.ping().await;
    drop((v5, v3));
    broker.stop().await;
}

// [MQTT-4.3.2-1]: every unacknowledged QoS 1 delivery has its own non-zero id,
// and no more than the inflight window (max_inflight_messages) are outstanding; the rest follow
// in order as acknowledgements come in.
#[tokio::test]
async fn unacknowledged_deliveries_have_distinct_ids_and_respect_the_inflight_window() {
    let broker = TestBroker::start_with(|c| c.limits.max_inflight_messages = 5).await;
    let mut sub = subscriber(&broker, V311, "window-sub", "win/t", QoS::AtLeastOnce).await;
    let mut publisher = client(&broker, V311, "window-pub").await;
    for n in 0..8u16 {
        publisher
            .publish_and_wait(publish_packet(
                "win/t",
                n.to_string(),
                QoS::AtLeastOnce,
                n + 1,
            ))
            .await;
    }
    let mut outstanding = Vec::new();
    for n in 0..5 {
        let got = sub.recv_publish().await;
        assert_eq!(got.payload, Bytes::from(n.to_string()));
        outstanding.push(got.packet_id.expect("id"));
    }
    let mut ids: Vec<u16> = outstanding.iter().map(|id| id.get()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "distinct ids: {outstanding:?}");
    sub.assert_quiet().await;

    sub.send(&Packet::PubAck(PubResponse::success(outstanding[2])))
        .await;
    let sixth = sub.recv_publish().await;
    assert_eq!(sixth.payload, Bytes::from("5"));
    assert!(
        !outstanding.contains(&sixth.packet_id.expect("id")),
        "an id still in flight is not reused"
    );
    sub.assert_quiet().await;
    for id in outstanding.iter().filter(|&&id| id != outstanding[2]) {
        sub.send(&Packet::PubAck(PubResponse::success(*id))).await;
    }
    sub.send(&Packet::PubAck(PubResponse::success(
        sixth.packet_id.expect("id"),
    )))
    .await;
    let rest: Vec<Bytes> = sub
        .recv_publishes(2)
        .await
        .into_iter()
        .map(|p| p.payload)
        .collect();
    assert_eq!(rest, vec![Bytes::from("6"), Bytes::from("7")]);
    drop((sub, publisher));
    broker.stop().await;
}

// 3.1.1 section 3.8.4 / 5.0 section 3.8.4: a message is delivered at the lower of its own QoS and
// the subscription's granted QoS (e.g. QoS 2 to a QoS 1 subscription arrives as QoS 1, QoS 0 to a
// QoS 2 subscription as QoS 0).
#[tokio::test]
async fn delivery_qos_is_the_minimum_of_published_and_granted_qos() {
    let broker = TestBroker::start().await;
    let all = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    for version in [V311, V5] {
        let level = version.level();
        let topic = format!("min/{level}");
        let mut subs = Vec::new();
        for granted in all {
            let id = format!("min-{level}-{}", granted.as_u8());
            subs.push(subscriber(&broker, version, &id, &topic, granted).await);
        }
        let mut publisher = client(&broker, version, &format!("min-pub-{level}")).await;
        for (n, published) in all.into_iter().enumerate() {
            let n = u16::try_from(n + 1).expect("small");
            publisher
                .publish_and_wait(publish_packet(
                    &topic,
                    vec![published.as_u8()],
                    published,
                    n,
                ))
                .await;
        }
        for ((_, got), granted) in recv_publishes_all(subs.into_iter().map(|s| (s, 3)).collect())
            .await
            .into_iter()
            .zip(all)
        {
            let qos: Vec<QoS> = got.iter().map(|p| p.qos).collect();
            let expected: Vec<QoS> = all.iter().map(|&p| p.min(granted)).collect();
            assert_eq!(qos, expected, "{version:?} granted {granted:?}");
            let published: Vec<u8> = got.iter().map(|p| p.payload[0]).collect();
            assert_eq!(published, vec![0, 1, 2]);
        }
        drop(publisher);
    }
    broker.stop().await;
}

// The payload is opaque application data, forwarded byte for byte (3.3.3): empty, 1 MiB, and
// every byte value.
#[tokio::test]
async fn payloads_of_0_bytes_1_mib_and_every_byte_value_arrive_unchanged() {
    let broker = TestBroker::start().await;
    let mib: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let every_byte: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    let payloads = [Vec::new(), mib, every_byte, vec![0, 0xFF, 0, 0xC0, 0x80]];
    for version in [V311, V5] {
        let level = version.level();
        let mut sub = subscriber(
            &broker,
            version,
            &format!("pl-sub-{level}"),
            "pl/t",
            QoS::ExactlyOnce,
        )
        .await;
        let mut publisher = client(&broker, version, &format!("pl-pub-{level}")).await;
        for (n, payload) in payloads.iter().enumerate() {
            let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][n % 3];
            let id = u16::try_from(n + 1).expect("small");
            publisher
                .publish_and_wait(publish_packet("pl/t", payload.clone(), qos, id))
                .await;
        }
        let got = sub.recv_publishes(payloads.len()).await;
        for (got, sent) in got.iter().zip(&payloads) {
            assert_eq!(got.payload.len(), sent.len());
            assert!(got.payload[..] == sent[..], "{version:?}: payload changed");
        }
        drop((sub, publisher));
    }
    broker.stop().await;
}

// [MQTT-1.5.4-3]: a U+FEFF at the start of a string is kept; topics are compared as UTF-8 strings
// and forwarded unchanged.
#[tokio::test]
async fn non_ascii_topic_with_a_bom_arrives_unchanged() {
    let broker = TestBroker::start().await;
    let topic = "\u{FEFF}données/温度/🚀";
    for version in [V311, V5] {
        let level = version.level();
        let exact = subscriber(
            &broker,
            version,
            &format!("utf8-exact-{level}"),
            topic,
            QoS::AtLeastOnce,
        )
        .await;
        let wild = subscriber(
            &broker,
            version,
            &format!("utf8-wild-{level}"),
            "\u{FEFF}données/+/#",
            QoS::AtLeastOnce,
        )
        .await;
        let without_bom = subscriber(
            &broker,
            version,
            &format!("utf8-nobom-{level}"),
            "données/#",
            QoS::AtLeastOnce,
        )
        .await;
        let mut publisher = client(&broker, version, &format!("utf8-pub-{level}")).await;
        publisher
            .publish_and_wait(publish_packet(topic, "ünïcödé", QoS::AtLeastOnce, 1))
            .await;
        let drained = recv_publishes_all(vec![(exact, 1), (wild, 1), (without_bom, 0)]).await;
        for (_, got) in &drained[..2] {
            assert_eq!(got[0].topic.as_str().as_bytes(), topic.as_bytes());
            assert_eq!(&got[0].payload[..], "ünïcödé".as_bytes());
        }
        // The BOM is part of the first level, so a filter without it does not match (the third
        // subscriber expected no message).
        drop((drained, publisher));
    }
    broker.stop().await;
}

/// Sends `bytes` and returns everything the broker sends before closing the connection.
async fn rejected(
    broker: &TestBroker,
    version: ProtocolVersion,
    id: &str,
    bytes: &[u8],
) -> Vec<Packet> {
    let mut c = client(broker, version, id).await;
    c.send_raw(bytes).await;
    c.recv_until_closed().await
}

// [MQTT-3.3.2-2]: the topic name of a PUBLISH must not contain wildcards. 3.1.1 closes the
// connection; 5.0 sends DISCONNECT 0x90 Topic Name invalid first. Nothing is delivered.
#[tokio::test]
async fn publishing_to_a_wildcard_topic_closes_the_connection() {
    let broker = TestBroker::start().await;
    let mut watcher = subscriber(&broker, V311, "wild-watch", "#", QoS::AtMostOnce).await;
    for (i, bad) in ["a/+/b", "a/#", "+", "#"].into_iter().enumerate() {
        let v3 = raw_publish(0x30, bad.as_bytes(), None, None, b"x");
        assert_eq!(
            rejected(&broker, V311, &format!("wild3-{i}"), &v3).await,
            vec![],
            "{bad}"
        );
        let v5 = raw_publish(0x32, bad.as_bytes(), Some(1), Some(&[]), b"x");
        assert_eq!(
            rejected(&broker, V5, &format!("wild5-{i}"), &v5).await,
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::TopicNameInvalid
            ))],
            "{bad}"
        );
    }
    watcher.assert_quiet().await;
    drop(watcher);
    broker.stop().await;
}

// [MQTT-3.3.1-4]: QoS bits 11 are malformed; [MQTT-3.3.1-2]: DUP must be 0 at QoS 0. Both close
// the connection (5.0: DISCONNECT 0x81 Malformed Packet).
#[tokio::test]
async fn qos3_and_dup_on_qos0_close_the_connection() {
    let broker = TestBroker::start().await;
    let mut watcher = subscriber(&broker, V311, "bad-flags-watch", "#", QoS::AtMostOnce).await;
    let cases: [(&str, u8, Option<u16>); 3] = [
        ("qos3", 0x36, Some(1)),
        ("qos3-retain", 0x37, Some(1)),
        ("dup-qos0", 0x38, None),
    ];
    for (name, first, packet_id) in cases {
        let v3 = raw_publish(first, b"flags/t", packet_id, None, b"x");
        assert_eq!(
            rejected(&broker, V311, &format!("{name}-3"), &v3).await,
            vec![],
            "{name}"
        );
        let v5 = raw_publish(first, b"flags/t", packet_id, Some(&[]), b"x");
        let packets = rejected(&broker, V5, &format!("{name}-5"), &v5).await;
        assert_eq!(
            packets,
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::MalformedPacket
            ))],
            "{name}"
        );
    }
    watcher.assert_quiet().await;
    drop(watcher);
    broker.stop().await;
}

// [MQTT-4.7.3-1]: a 3.1.1 topic name has at least one character; [MQTT-2.2.1-3]: a QoS 1 PUBLISH
// needs a non-zero packet id. Either closes the connection.
#[tokio::test]
async fn empty_topic_and_zero_packet_id_close_the_connection() {
    let broker = TestBroker::start().await;
    let empty_topic = raw_publish(0x30, b"", None, None, b"x");
    assert_eq!(
        rejected(&broker, V311, "empty-topic", &empty_topic).await,
        vec![]
    );
    let zero_id_v3 = raw_publish(0x32, b"z/t", Some(0), None, b"x");
    assert_eq!(
        rejected(&broker, V311, "zero-id-3", &zero_id_v3).await,
        vec![]
    );
    let zero_id_v5 = raw_publish(0x32, b"z/t", Some(0), Some(&[]), b"x");
    let packets = rejected(&broker, V5, "zero-id-5", &zero_id_v5).await;
    let [Packet::Disconnect(Disconnect { reason, .. })] = packets.as_slice() else {
        panic!("expected DISCONNECT, got {packets:?}");
    };
    assert_eq!(*reason, ReasonCode::ProtocolError);
    assert!(reason.allowed_in(ReasonContext::Disconnect));
    broker.stop().await;
}

// Section 3.2.2.3.6: the broker announces max_packet_size and refuses a larger
// packet with DISCONNECT 0x95 (5.0) or a plain close (3.1.1). A packet of exactly the maximum
// passes, and other clients carry on.
#[tokio::test]
async fn oversized_publish_closes_only_the_offender() {
    const MAX: u32 = 1024;
    let broker = TestBroker::start_with(|c| c.limits.max_packet_size = MAX).await;
    let mut sub = client(&broker, V5, "big-sub").await;
    sub.subscribe_filters(1, &[("big/#", QoS::AtMostOnce)])
        .await;

    let (mut v5, ack) = RawClient::connect(broker.addr, V5, "big-5", true).await;
    assert_eq!(
        ack.properties.maximum_packet_size.map(|m| m.get()),
        Some(MAX)
    );
    // 3.1.1 QoS 0 frame: 1 + 2 (remaining length) + 2 + 5 (topic "big/t") + payload.
    let exact_payload = usize::try_from(MAX).expect("small") - 10;
    let mut v3 = client(&broker, V311, "big-3").await;
    let fits = frame(
        0x30,
        &[prefixed(b"big/t"), vec![b'f'; exact_payload]].concat(),
    );
    assert_eq!(fits.len(), 1024);
    v3.send_raw(&fits).await;
    v3.ping().await;
    let got = sub.recv_publish().await;
    assert_eq!(got.payload.len(), exact_payload);

    let too_big = frame(
        0x30,
        &[prefixed(b"big/t"), vec![b'x'; exact_payload + 1]].concat(),
    );
    v3.send_raw(&too_big).await;
    assert_eq!(v3.recv_until_closed().await, vec![]);

    let too_big_v5 = publish_packet("big/t", vec![b'y'; 2000], QoS::AtLeastOnce, 1);
    v5.send(&Packet::Publish(too_big_v5)).await;
    assert_eq!(
        v5.recv_until_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::PacketTooLarge
        ))]
    );

    sub.assert_quiet().await;
    let mut other = client(&broker, V5, "big-other").await;
    other
        .publish_and_wait(publish_packet(
            "big/small",
            "still works",
            QoS::AtLeastOnce,
            1,
        ))
        .await;
    let got = sub.recv_publish().await;
    assert_eq!(&got.payload[..], b"still works");
    drop((sub, other, v3, v5));
    broker.stop().await;
}

// A publisher's messages reach a subscriber complete and in publish order (4.6): 10,000 QoS 1
// messages through real clients, counted exactly. The publisher keeps 100 messages in flight and
// the broker 20 towards the subscriber, so a backlog builds up; with mosquitto's default queue
// limit (1000) the overflow would be dropped by design (see the next test), so the limit is
// lifted here.
#[tokio::test]
async fn burst_of_10000_qos1_messages_arrives_complete_and_in_order() {
    const COUNT: u32 = 10_000;
    let broker = TestBroker::start_with(|c| c.limits.max_queued_messages = 0).await;
    let mut sub = V4Client::connect(broker.addr, "burst-sub", |_| {}).await;
    sub.subscribe("burst/t", rumqttc::QoS::AtLeastOnce).await;
    let publisher = V4Client::connect(broker.addr, "burst-pub", |_| {}).await;
    let sending = {
        let client = publisher.client.clone();
        tokio::spawn(async move {
            for n in 0..COUNT {
                client
                    .publish(
                        "burst/t",
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        n.to_be_bytes().to_vec(),
                    )
                    .await
                    .expect("publish request");
            }
        })
    };
    for expected in 0..COUNT {
        let got = sub.next_publish().await;
        let n = u32::from_be_bytes(got.payload[..].try_into().expect("4-byte payload"));
        assert_eq!(n, expected, "message {expected} out of order or lost");
        assert_eq!(got.qos, rumqttc::QoS::AtLeastOnce);
    }
    sending.await.expect("publisher task");
    drop((sub, publisher));
    broker.stop().await;
}

// max_queued_messages: beyond the inflight window, at most this many messages wait for a client;
// a new message for a full queue is dropped, and what was queued is delivered in order.
#[tokio::test]
async fn a_full_queue_drops_new_messages_and_keeps_the_queued_ones_in_order() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_inflight_messages = 4;
        c.limits.max_queued_messages = 3;
    })
    .await;
    let mut sub = subscriber(&broker, V311, "full-sub", "full/t", QoS::AtLeastOnce).await;
    let mut publisher = client(&broker, V311, "full-pub").await;
    for n in 0..4u16 {
        publisher
            .publish_and_wait(publish_packet(
                "full/t",
                n.to_string(),
                QoS::AtLeastOnce,
                n + 1,
            ))
            .await;
    }
    let mut inflight = Vec::new();
    for n in 0..4 {
        let got = sub.recv_publish().await;
        assert_eq!(got.payload, Bytes::from(n.to_string()));
        inflight.push(got.packet_id.expect("id"));
    }
    // The window is full: three more wait in the queue, the other three are dropped.
    for n in 4..10u16 {
        publisher
            .publish_and_wait(publish_packet(
                "full/t",
                n.to_string(),
                QoS::AtLeastOnce,
                n + 1,
            ))
            .await;
    }
    sub.assert_quiet().await;
    for id in inflight {
        sub.send(&Packet::PubAck(PubResponse::success(id))).await;
    }
    let rest: Vec<Bytes> = sub
        .recv_publishes(3)
        .await
        .into_iter()
        .map(|p| p.payload)
        .collect();
    assert_eq!(
        rest,
        vec![Bytes::from("4"), Bytes::from("5"), Bytes::from("6")]
    );
    drop((sub, publisher));
    broker.stop().await;
}

// Fan-in: several publishers (3.1.1 and 5.0) to one subscriber; every message arrives once and
// each publisher's messages keep their order.
#[tokio::test]
async fn fan_in_from_several_publishers_keeps_each_publishers_order() {
    const PUBLISHERS: usize = 6;
    const EACH: u16 = 150;
    let broker = TestBroker::start().await;
    let mut sub = V4Client::connect(broker.addr, "fanin-sub", |_| {}).await;
    sub.subscribe("fanin/+", rumqttc::QoS::AtLeastOnce).await;
    let mut tasks = Vec::new();
    let mut keep = Vec::new();
    for p in 0..PUBLISHERS {
        let topic = format!("fanin/{p}");
        if p % 2 == 0 {
            let publisher = V4Client::connect(broker.addr, &format!("fanin-{p}"), |_| {}).await;
            let client = publisher.client.clone();
            keep.push(Box::new(publisher) as Box<dyn std::any::Any + Send>);
            tasks.push(tokio::spawn(async move {
                for n in 0..EACH {
                    client
                        .publish(
                            &topic,
                            rumqttc::QoS::AtLeastOnce,
                            false,
                            n.to_be_bytes().to_vec(),
                        )
                        .await
                        .expect("publish request");
                }
            }));
        } else {
            let publisher = V5Client::connect(broker.addr, &format!("fanin-{p}"), |_| {}).await;
            let client = publisher.client.clone();
            keep.push(Box::new(publisher));
            tasks.push(tokio::spawn(async move {
                for n in 0..EACH {
                    client
                        .publish(
                            topic.clone(),
                            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                            false,
                            n.to_be_bytes().to_vec(),
                        )
                        .await
                        .expect("publish request");
                }
            }));
        }
    }
    let mut next = [0u16; PUBLISHERS];
    for _ in 0..PUBLISHERS * usize::from(EACH) {
        let got = sub.next_publish().await;
        let topic = got.topic.clone();
        let p: usize = topic["fanin/".len()..].parse().expect("publisher number");
        let n = u16::from_be_bytes(got.payload[..].try_into().expect("2-byte payload"));
        assert_eq!(n, next[p], "publisher {p} out of order");
        next[p] += 1;
    }
    assert_eq!(next, [EACH; PUBLISHERS]);
    for task in tasks {
        task.await.expect("publisher task");
    }
    drop((sub, keep));
    broker.stop().await;
}

// Cross-version delivery with real clients: a rumqttc 5.0 client and a rumqttc 3.1.1 client
// exchange messages both ways; properties the 5.0 side attaches do not disturb the 3.1.1 side.
#[tokio::test]
async fn rumqttc_v311_and_v5_clients_exchange_messages() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let broker = TestBroker::start().await;
    let mut old = V4Client::connect(broker.addr, "cross-v4", |_| {}).await;
    old.subscribe("to/v4", rumqttc::QoS::ExactlyOnce).await;
    let mut new = V5Client::connect(broker.addr, "cross-v5", |_| {}).await;
    new.subscribe("to/v5", rumqttc::v5::mqttbytes::QoS::ExactlyOnce)
        .await;

    let properties = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(3600),
        response_topic: Some("to/v5".into()),
        correlation_data: Some(Bytes::from_static(b"corr")),
        user_properties: vec![("k".into(), "v".into())],
        content_type: Some("text/plain".into()),
        ..PublishProperties::default()
    };
    new.client
        .publish_with_properties(
            "to/v4",
            rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
            false,
            "hello 3.1.1",
            properties,
        )
        .await
        .expect("publish request");
    let got = old.next_publish().await;
    assert_eq!(got.topic, "to/v4");
    assert_eq!(&got.payload[..], b"hello 3.1.1");
    assert_eq!(got.qos, rumqttc::QoS::ExactlyOnce);

    old.client
        .publish("to/v5", rumqttc::QoS::AtLeastOnce, false, "hello 5.0")
        .await
        .expect("publish request");
    let got = new.next_publish().await;
    assert_eq!(&got.topic[..], b"to/v5");
    assert_eq!(&got.payload[..], b"hello 5.0");
    assert_eq!(got.qos, rumqttc::v5::mqttbytes::QoS::AtLeastOnce);
    let user_properties = got
        .properties
        .map(|p| p.user_properties)
        .unwrap_or_default();
    assert!(
        user_properties.is_empty(),
        "a 3.1.1 message has no user properties"
    );
    drop((old, new));
    broker.stop().await;
}

// The exact bytes a 3.1.1 (and 3.1) subscriber receives for a 5.0 PUBLISH full of properties:
// the 3.1.1 encoding, with no property block (3.1.1 section 3.3).
#[tokio::test]
async fn a_v5_publish_with_properties_reaches_v311_subscribers_without_them() {
    let broker = TestBroker::start().await;
    let mut subs = Vec::new();
    for version in [V311, V31] {
        subs.push(
            subscriber(
                &broker,
                version,
                &format!("bytes-{}", version.level()),
                "x/t",
                QoS::AtMostOnce,
            )
            .await,
        );
    }
    let mut publisher = client(&broker, V5, "bytes-pub").await;
    let mut message = publish_packet("x/t", "payload", QoS::AtMostOnce, 0);
    message.properties.user_properties = vec![UserProperty {
        key: "k".into(),
        value: "v".into(),
    }];
    message.properties.content_type = Some("text/plain".into());
    message.properties.correlation_data = Some(Bytes::from_static(b"c"));
    message.properties.message_expiry_interval = Some(60);
    message.properties.response_topic = Some(common::flows::topic("r/t"));
    publisher.publish_and_wait(message).await;

    let expected = frame(0x30, &[prefixed(b"x/t"), b"payload".to_vec()].concat());
    for sub in &mut subs {
        let mut bytes = vec![0; expected.len()];
        tokio::time::timeout(RECV_TIMEOUT, sub.stream.read_exact(&mut bytes))
            .await
            .expect("bytes in time")
            .expect("read");
        assert_eq!(bytes, expected);
        sub.assert_quiet().await;
    }
    drop((subs, publisher));
    broker.stop().await;
}

// A publish nobody subscribed to is still acknowledged. 5.0 would also allow 0x10 No matching
// subscribers here; Starling answers 0x00.
#[tokio::test]
async fn publish_without_subscribers_is_still_acknowledged() {
    let broker = TestBroker::start().await;
    for version in [V311, V5] {
        let mut publisher = client(&broker, version, &format!("nosub-{}", version.level())).await;
        let ack = publisher
            .publish_and_wait(publish_packet("nobody/home", "x", QoS::AtLeastOnce, 3))
            .await;
        assert_eq!(ack, Some(PubResponse::success(pid(3))));
        let rec = publisher
            .publish_and_wait(publish_packet("nobody/home", "x", QoS::ExactlyOnce, 4))
            .await;
        assert_eq!(rec, Some(PubResponse::success(pid(4))));
        drop(publisher);
    }
    broker.stop().await;
}

// Without No Local (3.1.1 has none), a client subscribed to its own topic gets its own message.
#[tokio::test]
async fn a_v311_client_receives_its_own_publish() {
    let broker = TestBroker::start().await;
    let mut c = subscriber(&broker, V311, "echo", "echo/t", QoS::AtLeastOnce).await;
    c.send(&Packet::Publish(publish_packet(
        "echo/t",
        "me",
        QoS::AtLeastOnce,
        9,
    )))
    .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(c.recv().await);
    }
    assert!(
        got.contains(&Packet::PubAck(PubResponse::success(pid(9)))),
        "{got:?}"
    );
    let delivered = got
        .iter()
        .find_map(|p| match p {
            Packet::Publish(publish) => Some(publish.clone()),
            _ => None,
        })
        .expect("own message delivered");
    assert_eq!(&delivered.payload[..], b"me");
    c.ack(&delivered).await;
    c.assert_quiet().await;
    drop(c);
    broker.stop().await;
}
