//! Retained messages through the real broker: storing, replacing and clearing, the RETAIN flag on
//! replay and on live delivery, QoS on replay, Retain Handling, expiry, replay beyond the inflight
//! window, `$` topics, the retained count, and a broker without retain support.

mod common;

use std::collections::BTreeSet;
use std::num::NonZeroU16;

use bytes::Bytes;
use common::flows::{
    publish_packet, recv_publishes_all, retained_packet, sub_opts, subscribe_packet, topic,
};
use common::{RawClient, TestBroker, connect_packet, connect_with_will};
use starling::codec::{
    Connect, ConnectProperties, Disconnect, Packet, PayloadFormat, ProtocolVersion, PubResponse,
    Publish, QoS, ReasonCode, RetainHandling, SubscriptionOptions, UserProperty, Will,
    WillProperties,
};

use ProtocolVersion::{V5, V31, V311};

/// Connects with a clean session and checks the CONNACK.
async fn client(broker: &TestBroker, version: ProtocolVersion, id: &str) -> RawClient {
    let (client, ack) = RawClient::connect(broker.addr, version, id, true).await;
    assert_eq!(ack.reason, ReasonCode::Success, "CONNACK for {id}");
    client
}

/// Publishes retained messages (QoS 1) from a short-lived client.
async fn retain(broker: &TestBroker, messages: &[(&str, &str)]) {
    let mut publisher = client(broker, V311, "retainer").await;
    for (n, (topic_name, payload)) in messages.iter().enumerate() {
        let id = u16::try_from(n % 60_000 + 1).expect("small");
        publisher
            .publish_and_wait(retained_packet(topic_name, payload, QoS::AtLeastOnce, id))
            .await;
    }
    assert!(publisher.disconnect().await.is_empty());
}

fn sorted_topics(publishes: &[Publish]) -> Vec<String> {
    let mut topics: Vec<String> = publishes.iter().map(|p| p.topic.to_string()).collect();
    topics.sort();
    topics
}

fn options(qos: QoS, retain_handling: RetainHandling) -> SubscriptionOptions {
    SubscriptionOptions {
        retain_handling,
        ..sub_opts(qos)
    }
}

// 3.1.1 [MQTT-3.3.1-5]/[MQTT-3.3.1-6], 5.0 [MQTT-3.3.1-5]/[MQTT-3.3.1-9]: a retained message is
// stored and sent to a new matching subscription with RETAIN 1, to exact and wildcard filters.
#[tokio::test]
async fn a_retained_message_is_sent_to_late_subscribers_with_retain_set() {
    let broker = TestBroker::start().await;
    for version in [V31, V311, V5] {
        let level = version.level();
        let topic_name = format!("late/{level}/t");
        let mut publisher = client(&broker, version, &format!("late-pub-{level}")).await;
        publisher
            .publish_and_wait(retained_packet(&topic_name, "stored", QoS::AtLeastOnce, 1))
            .await;
        drop(publisher);
        let filters = [
            topic_name.clone(),
            format!("late/{level}/#"),
            "late/+/t".into(),
        ];
        // `late/+/t` also matches what the earlier versions' rounds retained.
        let expected: Vec<Vec<String>> = vec![
            vec![topic_name.clone()],
            vec![topic_name.clone()],
            (3..=level).map(|l| format!("late/{l}/t")).collect(),
        ];
        let mut subs = Vec::new();
        for (i, filter) in filters.iter().enumerate() {
            let mut sub = client(&broker, version, &format!("late-sub-{level}-{i}")).await;
            sub.subscribe_filters(1, &[(filter, QoS::AtLeastOnce)])
                .await;
            subs.push((sub, expected[i].len()));
        }
        let received = recv_publishes_all(subs).await;
        for ((filter, expected_topics), (_, got)) in filters.iter().zip(&expected).zip(received) {
            assert_eq!(&sorted_topics(&got), expected_topics, "{filter}");
            for p in &got {
                assert!(p.retain, "replay carries RETAIN 1: {p:?}");
                assert_eq!(&p.payload[..], b"stored");
                assert_eq!(p.qos, QoS::AtLeastOnce);
            }
        }
    }
    assert_eq!(broker.broker.retained_count(), 3);
    broker.stop().await;
}

// A wildcard subscription gets every matching retained message, `#` including the parent level.
#[tokio::test]
async fn a_wildcard_subscription_gets_every_matching_retained_message() {
    let broker = TestBroker::start().await;
    retain(
        &broker,
        &[
            ("w", "parent"),
            ("w/a", "a"),
            ("w/b", "b"),
            ("w/c/d", "deep"),
            ("other/x", "other"),
        ],
    )
    .await;
    let mut hash = client(&broker, V5, "wild-hash").await;
    hash.subscribe_filters(1, &[("w/#", QoS::AtMostOnce)]).await;
    let mut plus = client(&broker, V311, "wild-plus").await;
    plus.subscribe_filters(1, &[("w/+", QoS::AtMostOnce)]).await;
    let drained = recv_publishes_all(vec![(hash, 4), (plus, 2)]).await;
    assert_eq!(
        sorted_topics(&drained[0].1),
        vec!["w", "w/a", "w/b", "w/c/d"]
    );
    assert_eq!(sorted_topics(&drained[1].1), vec!["w/a", "w/b"]);
    assert!(drained.iter().flat_map(|(_, got)| got).all(|p| p.retain));
    drop(drained);
    broker.stop().await;
}

// [MQTT-3.3.1-5]: a new retained message replaces the one stored for its topic; a message
// published without RETAIN neither replaces nor removes it (5.0 [MQTT-3.3.1-8], 3.1.1
// [MQTT-3.3.1-12]).
#[tokio::test]
async fn a_newer_retained_message_replaces_the_stored_one() {
    let broker = TestBroker::start().await;
    retain(&broker, &[("rep/t", "v1"), ("rep/t", "v2")]).await;
    assert_eq!(broker.broker.retained_count(), 1);
    let mut publisher = client(&broker, V311, "rep-plain").await;
    publisher
        .publish_and_wait(publish_packet("rep/t", "not retained", QoS::AtLeastOnce, 1))
        .await;
    assert_eq!(broker.broker.retained_count(), 1);
    let mut sub = client(&broker, V311, "rep-sub").await;
    sub.subscribe_filters(1, &[("rep/t", QoS::AtLeastOnce)])
        .await;
    let got = sub.recv_publishes(1).await;
    assert_eq!(&got[0].payload[..], b"v2");
    drop((publisher, sub));
    broker.stop().await;
}

// 3.1.1 [MQTT-3.3.1-10]/[MQTT-3.3.1-11], 5.0 [MQTT-3.3.1-6]/[MQTT-3.3.1-7]: a retained message
// with an empty payload removes the stored one and is not stored itself, but it is still
// forwarded to current subscribers like any message.
#[tokio::test]
async fn an_empty_retained_message_clears_the_topic_and_still_reaches_live_subscribers() {
    let broker = TestBroker::start().await;
    for version in [V311, V5] {
        let level = version.level();
        let topic_name = format!("clear/{level}");
        let mut live = client(&broker, version, &format!("clear-live-{level}")).await;
        live.subscribe_filters(1, &[(&topic_name, QoS::AtLeastOnce)])
            .await;
        let mut publisher = client(&broker, version, &format!("clear-pub-{level}")).await;
        publisher
            .publish_and_wait(retained_packet(&topic_name, "x", QoS::AtLeastOnce, 1))
            .await;
        assert_eq!(broker.broker.retained_count(), 1);
        publisher
            .publish_and_wait(retained_packet(
                &topic_name,
                Bytes::new(),
                QoS::AtLeastOnce,
                2,
            ))
            .await;
        assert_eq!(broker.broker.retained_count(), 0);
        // Clearing a topic with nothing stored stores nothing either.
        publisher
            .publish_and_wait(retained_packet(
                &topic_name,
                Bytes::new(),
                QoS::AtMostOnce,
                0,
            ))
            .await;
        assert_eq!(broker.broker.retained_count(), 0);

        let got = live.recv_publishes(3).await;
        let payloads: Vec<&[u8]> = got.iter().map(|p| &p.payload[..]).collect();
        assert_eq!(payloads, vec![&b"x"[..], b"", b""], "{version:?}");
        assert!(
            got.iter().all(|p| !p.retain),
            "live deliveries have RETAIN 0"
        );

        let mut late = client(&broker, version, &format!("clear-late-{level}")).await;
        late.subscribe_filters(1, &[(&topic_name, QoS::AtLeastOnce)])
            .await;
        late.assert_quiet().await;
        drop((live, publisher, late));
    }
    broker.stop().await;
}

// 3.1.1 [MQTT-3.3.1-9] and 5.0 [MQTT-3.3.1-12]/[MQTT-3.3.1-13]: a message sent to an
// established subscription has RETAIN 0, unless the 5.0 subscription asked for Retain As
// Published, which keeps the flag as published.
#[tokio::test]
async fn live_delivery_has_retain_0_unless_retain_as_published() {
    let broker = TestBroker::start().await;
    let mut v3 = client(&broker, V311, "rap-311").await;
    v3.subscribe_filters(1, &[("rap/t", QoS::AtLeastOnce)])
        .await;
    let mut plain = client(&broker, V5, "rap-plain").await;
    plain
        .subscribe_filters(1, &[("rap/t", QoS::AtLeastOnce)])
        .await;
    let mut rap = client(&broker, V5, "rap-rap").await;
    let rap_options = SubscriptionOptions {
        retain_as_published: true,
        ..sub_opts(QoS::AtLeastOnce)
    };
    rap.subscribe_with(subscribe_packet(1, &[("rap/t", rap_options)]))
        .await;
    let mut publisher = client(&broker, V5, "rap-pub").await;
    publisher
        .publish_and_wait(retained_packet("rap/t", "retained", QoS::AtLeastOnce, 1))
        .await;
    publisher
        .publish_and_wait(publish_packet("rap/t", "plain", QoS::AtLeastOnce, 2))
        .await;
    let drained = recv_publishes_all(vec![(v3, 2), (plain, 2), (rap, 2)]).await;
    let flags = |i: usize| -> Vec<(bool, Bytes)> {
        drained[i]
            .1
            .iter()
            .map(|p| (p.retain, p.payload.clone()))
            .collect()
    };
    let retained = Bytes::from("retained");
    let not_retained = Bytes::from("plain");
    assert_eq!(
        flags(0),
        vec![(false, retained.clone()), (false, not_retained.clone())]
    );
    assert_eq!(
        flags(1),
        vec![(false, retained.clone()), (false, not_retained.clone())]
    );
    assert_eq!(flags(2), vec![(true, retained), (false, not_retained)]);
    drop((drained, publisher));
    broker.stop().await;
}

// Section 3.8.4 (3.1.1 and 5.0): a retained message is delivered at the lower of its
// stored QoS and the subscription's granted QoS.
#[tokio::test]
async fn retained_qos_is_the_minimum_of_stored_and_granted() {
    let broker = TestBroker::start().await;
    let mut publisher = client(&broker, V5, "rq-pub").await;
    let all = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    for (n, stored) in all.into_iter().enumerate() {
        let n = u16::try_from(n + 1).expect("small");
        let name = format!("rq/{}", stored.as_u8());
        publisher
            .publish_and_wait(retained_packet(&name, "r", stored, n))
            .await;
    }
    drop(publisher);
    let mut subs = Vec::new();
    for granted in all {
        for version in [V311, V5] {
            let id = format!("rq-{}-{}", granted.as_u8(), version.level());
            let mut sub = client(&broker, version, &id).await;
            sub.subscribe_filters(1, &[("rq/+", granted)]).await;
            subs.push((granted, sub));
        }
    }
    let granted: Vec<QoS> = subs.iter().map(|(g, _)| *g).collect();
    let drained = recv_publishes_all(subs.into_iter().map(|(_, s)| (s, 3)).collect()).await;
    for (granted, (_, mut got)) in granted.into_iter().zip(drained) {
        got.sort_by(|a, b| a.topic.cmp(&b.topic));
        let qos: Vec<QoS> = got.iter().map(|p| p.qos).collect();
        let expected: Vec<QoS> = all.iter().map(|s| (*s).min(granted)).collect();
        assert_eq!(qos, expected, "granted {granted:?}");
        assert!(got.iter().all(|p| p.retain));
    }
    broker.stop().await;
}

// 3.1.1 [MQTT-3.8.4-3] and 5.0 Retain Handling 0: retained messages are sent again whenever the
// subscription is made, including a replacing one.
#[tokio::test]
async fn retained_messages_are_resent_on_resubscribe_with_retain_handling_0() {
    let broker = TestBroker::start().await;
    retain(&broker, &[("rh0/t", "kept")]).await;
    for version in [V311, V5] {
        let mut sub = client(&broker, version, &format!("rh0-{}", version.level())).await;
        for round in 1..=2u16 {
            sub.subscribe_with(subscribe_packet(
                round,
                &[(
                    "rh0/t",
                    options(QoS::AtLeastOnce, RetainHandling::SendAtSubscribe),
                )],
            ))
            .await;
            let got = sub.recv_publishes(1).await;
            assert!(got[0].retain, "{version:?} round {round}");
        }
    }
    broker.stop().await;
}

// 5.0 section 3.8.3.1, Retain Handling 1: retained messages only when the subscription did not
// exist; after an UNSUBSCRIBE it is new again.
#[tokio::test]
async fn retain_handling_1_sends_only_for_a_new_subscription() {
    let broker = TestBroker::start().await;
    retain(&broker, &[("rh1/t", "kept")]).await;
    let mut sub = client(&broker, V5, "rh1").await;
    let rh1 = options(QoS::AtLeastOnce, RetainHandling::SendIfNew);
    sub.subscribe_with(subscribe_packet(1, &[("rh1/+", rh1)]))
        .await;
    // A new subscription: the retained message comes.
    sub.recv_publishes(1).await;
    sub.subscribe_with(subscribe_packet(2, &[("rh1/+", rh1)]))
        .await;
    sub.assert_quiet().await;
    sub.unsubscribe(3, &["rh1/+"]).await;
    sub.subscribe_with(subscribe_packet(4, &[("rh1/+", rh1)]))
        .await;
    // New again after UNSUBSCRIBE.
    let got = sub.recv_publishes(1).await;
    assert!(got[0].retain);
    drop(sub);
    broker.stop().await;
}

// 5.0 section 3.8.3.1, Retain Handling 2: never send retained messages for this subscription;
// live messages still flow.
#[tokio::test]
async fn retain_handling_2_never_sends_retained_messages() {
    let broker = TestBroker::start().await;
    retain(&broker, &[("rh2/t", "kept")]).await;
    let mut sub = client(&broker, V5, "rh2").await;
    sub.subscribe_with(subscribe_packet(
        1,
        &[(
            "rh2/#",
            options(QoS::AtLeastOnce, RetainHandling::DoNotSend),
        )],
    ))
    .await;
    sub.assert_quiet().await;
    let mut publisher = client(&broker, V5, "rh2-pub").await;
    publisher
        .publish_and_wait(retained_packet("rh2/t", "live", QoS::AtLeastOnce, 1))
        .await;
    let got = sub.recv_publishes(1).await;
    assert_eq!(&got[0].payload[..], b"live");
    assert!(!got[0].retain);
    drop((sub, publisher));
    broker.stop().await;
}

// 5.0 [MQTT-3.3.2-5]: a retained message whose Message Expiry Interval has passed is not sent to
// new subscribers; one still valid is sent with the interval that remains ([MQTT-3.3.2-6]).
#[tokio::test]
async fn an_expired_retained_message_is_not_served() {
    let broker = TestBroker::start().await;
    let mut publisher = client(&broker, V5, "exp-pub").await;
    let mut short = retained_packet("exp/short", "short", QoS::AtLeastOnce, 1);
    short.properties.message_expiry_interval = Some(1);
    publisher.publish_and_wait(short).await;
    let mut long = retained_packet("exp/long", "long", QoS::AtLeastOnce, 2);
    long.properties.message_expiry_interval = Some(60);
    publisher.publish_and_wait(long).await;
    assert_eq!(broker.broker.retained_count(), 2);

    let mut early = client(&broker, V5, "exp-early").await;
    early
        .subscribe_filters(1, &[("exp/short", QoS::AtLeastOnce)])
        .await;
    // Served while still valid.
    let got = early.recv_publishes(1).await;
    assert_eq!(got[0].properties.message_expiry_interval, Some(1));

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for version in [V5, V311] {
        let mut late = client(&broker, version, &format!("exp-late-{}", version.level())).await;
        late.subscribe_filters(1, &[("exp/#", QoS::AtLeastOnce)])
            .await;
        let got = late.recv_publishes(1).await;
        assert_eq!(sorted_topics(&got), vec!["exp/long"], "{version:?}");
        if version == V5 {
            let left = got[0]
                .properties
                .message_expiry_interval
                .expect("expiry forwarded");
            assert!((50..60).contains(&left), "remaining interval {left}");
        }
    }
    // The expired message met on the way was dropped from the store.
    assert_eq!(broker.broker.retained_count(), 1);
    drop((publisher, early));
    broker.stop().await;
}

// Retained replay goes through the inflight window but is never truncated: 200 retained QoS 1
// messages reach a client whose Receive Maximum is 2, never more than 2 unacknowledged at once.
#[tokio::test]
async fn retained_replay_larger_than_the_inflight_window_arrives_complete() {
    const COUNT: usize = 200;
    let broker = TestBroker::start().await;
    let names: Vec<String> = (0..COUNT).map(|i| format!("many/{i:03}")).collect();
    let messages: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "r")).collect();
    retain(&broker, &messages).await;
    assert_eq!(broker.broker.retained_count(), COUNT);

    let connect = Connect {
        properties: ConnectProperties {
            receive_maximum: NonZeroU16::new(2),
            ..ConnectProperties::default()
        },
        ..connect_packet(V5, "many-rm2", true)
    };
    let (mut sub, _) = RawClient::connect_with(broker.addr, connect).await;
    sub.subscribe_filters(1, &[("many/#", QoS::AtLeastOnce)])
        .await;
    let mut outstanding = std::collections::VecDeque::new();
    let mut seen = BTreeSet::new();
    while seen.len() < COUNT {
        let got = sub.recv_publish().await;
        assert!(got.retain);
        assert_eq!(got.qos, QoS::AtLeastOnce);
        assert!(
            seen.insert(got.topic.to_string()),
            "duplicate {:?}",
            got.topic
        );
        outstanding.push_back(got.packet_id.expect("id"));
        if outstanding.len() == 2 {
            if seen.len() == 2 {
                // The window is full: nothing more until an acknowledgement.
                sub.assert_quiet().await;
            }
            let oldest = outstanding.pop_front().expect("two outstanding");
            sub.send(&Packet::PubAck(PubResponse::success(oldest)))
                .await;
        }
    }
    for id in outstanding {
        sub.send(&Packet::PubAck(PubResponse::success(id))).await;
    }
    sub.assert_quiet().await;
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), names);

    // A 3.1.1 client (window 20) and a QoS 0 subscription (no window) get all of them too.
    let mut v3 = client(&broker, V311, "many-311").await;
    v3.subscribe_filters(1, &[("many/+", QoS::ExactlyOnce)])
        .await;
    let mut qos0 = client(&broker, V5, "many-qos0").await;
    qos0.subscribe_filters(1, &[("many/#", QoS::AtMostOnce)])
        .await;
    for (_, got) in recv_publishes_all(vec![(v3, COUNT), (qos0, COUNT)]).await {
        assert_eq!(sorted_topics(&got), names);
    }
    drop(sub);
    broker.stop().await;
}

// [MQTT-4.7.2-1] applies to retained messages too: `$` topics are stored, but only filters that
// name their first level get them.
#[tokio::test]
async fn dollar_topics_are_retained_but_not_matched_by_leading_wildcards() {
    let broker = TestBroker::start().await;
    retain(
        &broker,
        &[
            ("$SYS/broker/uptime", "1"),
            ("$app/state", "2"),
            ("app/state", "3"),
        ],
    )
    .await;
    assert_eq!(broker.broker.retained_count(), 3);
    let mut subs = Vec::new();
    let filters = ["#", "+/state", "$SYS/#", "$app/+", "+/+/uptime"];
    for (i, filter) in filters.iter().enumerate() {
        let mut sub = client(&broker, V5, &format!("dollar-{i}")).await;
        sub.subscribe_filters(1, &[(filter, QoS::AtMostOnce)]).await;
        subs.push(sub);
    }
    let counts = [1, 1, 1, 1, 0];
    let drained = recv_publishes_all(subs.into_iter().zip(counts).collect()).await;
    let got: Vec<Vec<String>> = drained.iter().map(|(_, g)| sorted_topics(g)).collect();
    assert_eq!(
        got,
        vec![
            vec!["app/state".to_owned()],
            vec!["app/state".to_owned()],
            vec!["$SYS/broker/uptime".to_owned()],
            vec!["$app/state".to_owned()],
            vec![],
        ]
    );
    drop(drained);
    broker.stop().await;
}

// The retained count follows adds, replacements and clears across topics and QoS.
#[tokio::test]
async fn retained_count_tracks_additions_replacements_and_clears() {
    let broker = TestBroker::start().await;
    assert_eq!(broker.broker.retained_count(), 0);
    let mut publisher = client(&broker, V5, "count-pub").await;
    let steps: [(&str, &str, QoS, usize); 7] = [
        ("cnt/a", "1", QoS::AtMostOnce, 1),
        ("cnt/b", "1", QoS::AtLeastOnce, 2),
        ("cnt/c", "1", QoS::ExactlyOnce, 3),
        ("cnt/a", "2", QoS::ExactlyOnce, 3),
        ("cnt/b", "", QoS::AtMostOnce, 2),
        ("cnt/none", "", QoS::AtLeastOnce, 2),
        ("cnt/c", "", QoS::ExactlyOnce, 1),
    ];
    for (n, (name, payload, qos, count)) in steps.into_iter().enumerate() {
        let id = u16::try_from(n + 1).expect("small");
        publisher
            .publish_and_wait(retained_packet(name, payload, qos, id))
            .await;
        assert_eq!(
            broker.broker.retained_count(),
            count,
            "after {name}={payload:?}"
        );
    }
    let mut sub = client(&broker, V311, "count-sub").await;
    sub.subscribe_filters(1, &[("cnt/#", QoS::ExactlyOnce)])
        .await;
    let got = sub.recv_publishes(1).await;
    assert_eq!(sorted_topics(&got), vec!["cnt/a"]);
    assert_eq!(&got[0].payload[..], b"2");
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    drop((publisher, sub));
    broker.stop().await;
}

// 5.0 section 3.2.2.3.5: with retain_available = false the CONNACK says Retain Available 0, a
// retained PUBLISH is answered with DISCONNECT 0x9A Retain not supported (section 3.3.1.3), and a
// CONNECT with a retained will is refused with 0x9A. A 3.1.1 client is simply disconnected.
// Messages without RETAIN still flow.
#[tokio::test]
async fn without_retain_support_retained_publishes_are_refused() {
    let broker = TestBroker::start_with(|c| c.limits.retain_available = false).await;
    let mut watcher = client(&broker, V5, "noret-watch").await;
    watcher
        .subscribe_filters(1, &[("noret/#", QoS::AtLeastOnce)])
        .await;

    let (mut v5, ack) = RawClient::connect(broker.addr, V5, "noret-5", true).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    assert_eq!(ack.properties.retain_available, Some(false));
    v5.publish_and_wait(publish_packet("noret/plain", "ok", QoS::AtLeastOnce, 1))
        .await;
    v5.send(&Packet::Publish(retained_packet(
        "noret/r",
        "no",
        QoS::AtLeastOnce,
        2,
    )))
    .await;
    assert_eq!(
        v5.recv_until_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::RetainNotSupported
        ))]
    );

    let mut v3 = client(&broker, V311, "noret-3").await;
    v3.send(&Packet::Publish(retained_packet(
        "noret/r",
        "no",
        QoS::AtMostOnce,
        0,
    )))
    .await;
    assert_eq!(v3.recv_until_closed().await, vec![]);

    let will = Will {
        topic: topic("noret/will"),
        payload: Bytes::from_static(b"w"),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: WillProperties::default(),
    };
    let mut refused = RawClient::connect_tcp(broker.addr, V5).await;
    refused
        .send(&Packet::Connect(Box::new(connect_with_will(
            V5,
            "noret-will",
            will,
        ))))
        .await;
    match refused.recv_until_closed().await.as_slice() {
        [Packet::ConnAck(ack)] => assert_eq!(ack.reason, ReasonCode::RetainNotSupported),
        other => panic!("expected a refusing CONNACK, got {other:?}"),
    }

    let got = watcher.recv_publishes(1).await;
    let payloads: Vec<&[u8]> = got.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(payloads, vec![&b"ok"[..]]);
    assert_eq!(broker.broker.retained_count(), 0);
    drop((watcher, v5, v3, refused));
    broker.stop().await;
}

// [MQTT-3.3.2-4], [MQTT-3.3.2-15]..[MQTT-3.3.2-20]: the properties of a retained message (payload format, content type,
// response topic, correlation data, user properties) are stored with it and replayed unchanged.
#[tokio::test]
async fn a_retained_message_keeps_its_properties_on_replay() {
    let broker = TestBroker::start().await;
    let mut publisher = client(&broker, V5, "props-pub").await;
    let mut message = retained_packet("props/t", "{\"on\":true}", QoS::AtLeastOnce, 1);
    message.properties.payload_format = Some(PayloadFormat::Utf8);
    message.properties.content_type = Some("application/json".into());
    message.properties.response_topic = Some(topic("props/reply"));
    message.properties.correlation_data = Some(Bytes::from_static(&[0, 1, 2, 0xFF]));
    message.properties.user_properties = vec![
        UserProperty {
            key: "b".into(),
            value: "2".into(),
        },
        UserProperty {
            key: "a".into(),
            value: "1".into(),
        },
        UserProperty {
            key: "b".into(),
            value: "2".into(),
        },
    ];
    let sent = message.properties.clone();
    publisher.publish_and_wait(message).await;
    let mut sub = client(&broker, V5, "props-sub").await;
    sub.subscribe_filters(1, &[("props/#", QoS::AtLeastOnce)])
        .await;
    let got = sub.recv_publishes(1).await;
    assert_eq!(got[0].properties, sent);
    assert_eq!(&got[0].payload[..], b"{\"on\":true}");
    drop((publisher, sub));
    broker.stop().await;
}
