//! Limits against misbehaving clients, each checked together with a well-behaved client that must
//! keep being served: connection rate per address, CONNECT timeout and byte trickling, packet
//! size, topic length and levels, subscriptions per client, inflight and queued messages, and a
//! flooding publisher. (Connection counts per listener and in total: tests/01_connect.rs.)

mod common;

use std::time::Duration;

use common::flows::{QUIET, sub_opts, subscribe_packet};
use common::{RawClient, TestBroker, connect_packet, publish_packet};
use starling::codec::{self, Packet, ProtocolVersion, PubResponse, QoS, ReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// A connected client that proves the broker still serves others: it pings, and a message it
/// publishes to itself comes back.
async fn still_served(client: &mut RawClient, topic: &str) {
    client.ping().await;
    assert_eq!(
        client.subscribe(topic, QoS::AtMostOnce).await,
        [ReasonCode::Success]
    );
    client.publish(topic, b"alive", QoS::AtMostOnce, 0).await;
    assert_eq!(&client.recv_publish().await.payload[..], b"alive");
}

/// Sends `bytes` one at a time, `gap` apart, until the broker closes the connection. Returns how
/// many bytes went out first; fails if the broker answers anything or never closes.
async fn trickle_until_closed(client: &mut RawClient, bytes: &[u8], gap: Duration) -> usize {
    let mut buf = [0u8; 64];
    for (sent, byte) in bytes.iter().enumerate() {
        if client.stream.write_all(&[*byte]).await.is_err() {
            return sent;
        }
        match tokio::time::timeout(gap, client.stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0) | Err(_)) => return sent + 1,
            Ok(Ok(n)) => panic!("the broker answered a partial packet: {:?}", &buf[..n]),
        }
    }
    panic!(
        "all {} bytes went out and the connection is still open",
        bytes.len()
    );
}

#[tokio::test]
async fn connections_beyond_the_rate_from_one_address_are_closed() {
    let broker = TestBroker::start_with(|c| c.limits.max_connection_rate = 1).await;
    let (mut first, ack) = RawClient::connect(broker.addr, V311, "rate-first", true).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    let mut refused = 0;
    for n in 0..5 {
        let mut extra = RawClient::connect_tcp(broker.addr, V311).await;
        let connect = connect_packet(V311, &format!("rate-{n}"), true);
        extra.send(&Packet::Connect(Box::new(connect))).await;
        match extra.recv_or_closed().await {
            None => refused += 1,
            Some(Packet::ConnAck(_)) => {}
            Some(other) => panic!("expected CONNACK or a close, got {other:?}"),
        }
    }
    assert!(
        refused >= 1,
        "five connections at once from one address, rate 1/s"
    );
    still_served(&mut first, "rate/t").await;
    // The bucket refills: a later connection gets in.
    let deadline = tokio::time::Instant::now() + common::RECV_TIMEOUT;
    loop {
        let mut late = RawClient::connect_tcp(broker.addr, V311).await;
        late.send(&Packet::Connect(Box::new(connect_packet(
            V311,
            "rate-late",
            true,
        ))))
        .await;
        if let Some(Packet::ConnAck(ack)) = late.recv_or_closed().await {
            assert_eq!(ack.reason, ReasonCode::Success);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never admitted again"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_connect_that_is_silent_or_trickles_in_is_cut_off() {
    let broker = TestBroker::start_with(|c| c.limits.connect_timeout = 1).await;
    let (mut bystander, _) = RawClient::connect(broker.addr, V5, "ct-bystander", true).await;
    let mut silent = RawClient::connect_tcp(broker.addr, V311).await;
    let mut slow = RawClient::connect_tcp(broker.addr, V311).await;
    let connect = connect_packet(V311, &"x".repeat(100), true);
    let bytes = codec::encode_to_bytes(&Packet::Connect(Box::new(connect)), V311).expect("encode");
    // 200 ms a byte: the whole CONNECT would take over 20 s.
    let sent = trickle_until_closed(&mut slow, &bytes, Duration::from_millis(200)).await;
    assert!(sent < bytes.len());
    assert!(silent.recv_until_closed().await.is_empty());
    still_served(&mut bystander, "ct/t").await;
    broker.stop().await;
}

#[tokio::test]
async fn a_packet_trickling_in_after_connect_is_cut_off_at_the_keep_alive() {
    let broker = TestBroker::start().await;
    let (mut bystander, _) = RawClient::connect(broker.addr, V311, "sl-bystander", true).await;
    let mut connect = connect_packet(V311, "slowloris", true);
    connect.keep_alive = 1;
    let (mut slow, ack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    let publish = publish_packet("slow/t", vec![b'p'; 200], QoS::AtMostOnce, 0);
    let bytes = codec::encode_to_bytes(&Packet::Publish(publish), V311).expect("encode");
    // Bytes keep arriving, but no whole packet within 1.5 x keep alive.
    let sent = trickle_until_closed(&mut slow, &bytes, Duration::from_millis(100)).await;
    assert!(sent < bytes.len());
    still_served(&mut bystander, "sl/t").await;
    broker.stop().await;
}

#[tokio::test]
async fn an_oversized_packet_closes_only_its_connection() {
    let broker = TestBroker::start_with(|c| c.limits.max_packet_size = 128).await;
    let (mut bystander, _) = RawClient::connect(broker.addr, V311, "ps-bystander", true).await;
    let (mut big, _) = RawClient::connect(broker.addr, V5, "ps-big", true).await;
    big.send(&Packet::Publish(publish_packet(
        "ps/t",
        vec![0u8; 500],
        QoS::AtMostOnce,
        0,
    )))
    .await;
    match big.recv_until_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::PacketTooLarge),
        other => panic!("expected DISCONNECT 0x95, got {other:?}"),
    }
    still_served(&mut bystander, "ps/t").await;
    broker.stop().await;
}

#[tokio::test]
async fn topics_over_the_length_or_level_limit_are_refused() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_topic_length = 20;
        c.limits.max_topic_levels = 3;
    })
    .await;
    let (mut watch, _) = RawClient::connect(broker.addr, V311, "tl-watch", true).await;
    assert_eq!(
        watch.subscribe("#", QoS::AtLeastOnce).await,
        [ReasonCode::GrantedQoS1]
    );
    let (mut v5, _) = RawClient::connect(broker.addr, V5, "tl-v5", true).await;
    let too_deep = "a/b/c/d";
    let too_long = "abcdefghij/abcdefghij";
    for (id, topic) in [(1, too_deep), (2, too_long)] {
        v5.send(&Packet::Publish(publish_packet(
            topic,
            b"x",
            QoS::AtLeastOnce,
            id,
        )))
        .await;
        match v5.recv().await {
            Packet::PubAck(ack) => assert_eq!(ack.reason, ReasonCode::TopicNameInvalid, "{topic}"),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    let (mut v3, _) = RawClient::connect(broker.addr, V311, "tl-v3", true).await;
    v3.publish(too_deep, b"x", QoS::AtLeastOnce, 3).await;
    v3.publish("a/b/c", b"fits", QoS::AtLeastOnce, 4).await;
    let first = watch.recv_publish().await;
    assert_eq!(
        (first.topic.as_str(), &first.payload[..]),
        ("a/b/c", &b"fits"[..])
    );
    if let Some(id) = first.packet_id {
        watch.send(&Packet::PubAck(PubResponse::success(id))).await;
    }

    v5.send(&Packet::Subscribe(subscribe_packet(
        9,
        &[
            ("a/b/c/#", sub_opts(QoS::AtMostOnce)),
            ("abcdefghij/abcdefghij", sub_opts(QoS::AtMostOnce)),
            ("a/+/c", sub_opts(QoS::AtMostOnce)),
        ],
    )))
    .await;
    match v5.recv().await {
        Packet::SubAck(ack) => assert_eq!(
            ack.reasons,
            [
                ReasonCode::TopicFilterInvalid,
                ReasonCode::TopicFilterInvalid,
                ReasonCode::Success
            ]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    assert_eq!(
        v3.subscribe("a/b/c/d", QoS::AtMostOnce).await,
        [ReasonCode::UnspecifiedError]
    );
    still_served(&mut v3, "tl/ok").await;
    broker.stop().await;
}

#[tokio::test]
async fn subscriptions_beyond_the_maximum_get_quota_exceeded() {
    let broker = TestBroker::start_with(|c| c.limits.max_subscriptions = 2).await;
    let (mut v5, _) = RawClient::connect(broker.addr, V5, "ms-v5", true).await;
    let opts = sub_opts(QoS::AtMostOnce);
    v5.send(&Packet::Subscribe(subscribe_packet(
        1,
        &[
            ("ms/a", opts),
            ("ms/b", opts),
            ("ms/c", opts),
            ("ms/a", opts),
        ],
    )))
    .await;
    match v5.recv().await {
        Packet::SubAck(ack) => assert_eq!(
            ack.reasons,
            [
                ReasonCode::Success,
                ReasonCode::Success,
                ReasonCode::QuotaExceeded,
                ReasonCode::Success
            ],
            "replacing an existing subscription does not count"
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let (mut v3, _) = RawClient::connect(broker.addr, V311, "ms-v3", true).await;
    v3.subscribe("ms/x", QoS::AtMostOnce).await;
    v3.subscribe("ms/y", QoS::AtMostOnce).await;
    assert_eq!(
        v3.subscribe("ms/z", QoS::AtMostOnce).await,
        [ReasonCode::UnspecifiedError]
    );
    // The refused subscription does not exist; the granted ones work.
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "ms-pub", true).await;
    publisher.publish("ms/z", b"no", QoS::AtMostOnce, 0).await;
    publisher.publish("ms/y", b"yes", QoS::AtMostOnce, 0).await;
    assert_eq!(&v3.recv_publish().await.payload[..], b"yes");
    broker.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_never_acks_holds_its_window_and_queue_only() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_inflight_messages = 2;
        c.limits.max_queued_messages = 3;
    })
    .await;
    let (mut stuck, _) = RawClient::connect(broker.addr, V311, "iq-stuck", true).await;
    let (mut healthy, _) = RawClient::connect(broker.addr, V311, "iq-healthy", true).await;
    stuck.subscribe("iq/t", QoS::AtLeastOnce).await;
    healthy.subscribe("iq/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "iq-pub", true).await;
    for n in 1..=10u16 {
        publisher
            .publish("iq/t", &n.to_be_bytes(), QoS::AtLeastOnce, n)
            .await;
        // The healthy subscriber keeps pace, so its window never fills.
        let got = healthy.recv_publish().await;
        assert_eq!(&got.payload[..], &n.to_be_bytes());
        let id = got.packet_id.expect("QoS 1");
        healthy
            .send(&Packet::PubAck(PubResponse::success(id)))
            .await;
    }
    // The stuck one got its window of 2; 3 more wait; the rest were dropped.
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(stuck.recv_publish().await.packet_id.expect("QoS 1"));
    }
    assert_eq!(
        stuck.recv_within(QUIET).await,
        None,
        "nothing beyond the window"
    );
    let mut received = 2;
    while let Some(id) = ids.pop() {
        stuck.send(&Packet::PubAck(PubResponse::success(id))).await;
        if let Some(Packet::Publish(p)) = stuck.recv_within(QUIET).await {
            ids.push(p.packet_id.expect("QoS 1"));
            received += 1;
        }
    }
    assert_eq!(received, 5, "window 2 + queue 3 of 10 messages");
    broker.stop().await;
}

#[tokio::test]
async fn a_flooding_publisher_does_not_starve_other_clients() {
    const FLOOD: usize = 20_000;
    const EXCHANGE: u16 = 200;
    let broker = TestBroker::start().await;
    // The flood goes to a subscriber that reads it all, so routing and delivery work hard.
    let (mut sink, _) = RawClient::connect(broker.addr, V311, "fl-sink", true).await;
    sink.subscribe("flood/#", QoS::AtMostOnce).await;
    let (mut flooder, _) = RawClient::connect(broker.addr, V311, "fl-flooder", true).await;
    let one = codec::encode_to_bytes(
        &Packet::Publish(publish_packet("flood/x", vec![7u8; 64], QoS::AtMostOnce, 0)),
        V311,
    )
    .expect("encode");
    let burst: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * FLOOD)
        .collect();
    let flood = tokio::spawn(async move {
        flooder.send_raw(&burst).await;
        flooder.ping().await;
        flooder
    });
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(2), sink.stream.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
        }
    });

    let (mut receiver, _) = RawClient::connect(broker.addr, V5, "fl-receiver", true).await;
    receiver.subscribe("pair/t", QoS::AtLeastOnce).await;
    let (mut sender, _) = RawClient::connect(broker.addr, V5, "fl-sender", true).await;
    let exchange = async {
        for n in 1..=EXCHANGE {
            sender
                .publish("pair/t", &n.to_be_bytes(), QoS::AtLeastOnce, n)
                .await;
            let got = receiver.recv_publish().await;
            assert_eq!(&got.payload[..], &n.to_be_bytes(), "in order, none lost");
            let id = got.packet_id.expect("QoS 1");
            receiver
                .send(&Packet::PubAck(PubResponse::success(id)))
                .await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .expect("the pair's exchange finished while the flood ran");
    let mut flooder = tokio::time::timeout(Duration::from_secs(60), flood)
        .await
        .expect("flood finished")
        .expect("flood task");
    flooder.ping().await;
    drain.abort();
    broker.stop().await;
}
