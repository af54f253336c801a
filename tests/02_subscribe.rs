//! SUBSCRIBE and UNSUBSCRIBE through the real broker: granted QoS, wildcard matching, replacing
//! and overlapping subscriptions, shared subscriptions, invalid filters, fan-out, and the
//! subscription count as sessions come and go. MQTT 3.1, 3.1.1 and 5.0.

mod common;

use std::num::NonZeroU32;

use common::flows::{
    QUIET, eventually, publish_packet, raw_subscribe, retained_packet, sub_opts, subscribe_packet,
};
use common::{RawClient, TestBroker, connect_packet};
use starling::codec::{
    Disconnect, Packet, ProtocolVersion, Publish, QoS, ReasonCode, ReasonContext,
};
use tokio::task::JoinSet;

use ProtocolVersion::{V5, V31, V311};

/// Connects with a clean session and checks the CONNACK.
async fn client(broker: &TestBroker, version: ProtocolVersion, id: &str) -> RawClient {
    let (client, ack) = RawClient::connect(broker.addr, version, id, true).await;
    assert_eq!(ack.reason, ReasonCode::Success, "CONNACK for {id}");
    client
}

fn topics(publishes: &[Publish]) -> Vec<String> {
    publishes.iter().map(|p| p.topic.to_string()).collect()
}

fn payloads(publishes: &[Publish]) -> Vec<String> {
    publishes
        .iter()
        .map(|p| String::from_utf8(p.payload.to_vec()).expect("UTF-8 payload"))
        .collect()
}

/// A SUBSCRIBE for one filter carrying a Subscription Identifier (5.0).
fn subscribe_with_id(
    packet_id: u16,
    filter: &str,
    qos: QoS,
    id: u32,
) -> starling::codec::Subscribe {
    let mut subscribe = subscribe_packet(packet_id, &[(filter, sub_opts(qos))]);
    subscribe.properties.subscription_identifier = NonZeroU32::new(id);
    subscribe
}

// [MQTT-3.8.4-1] SUBACK with the SUBSCRIBE's packet id; [MQTT-3.8.4-6] / 3.1.1 [MQTT-3.9.3-1]
// one return code per filter, in order; the broker grants what was asked (it supports QoS 2).
#[tokio::test]
async fn suback_grants_the_requested_qos_for_each_filter_in_order() {
    let broker = TestBroker::start().await;
    let mut clients = Vec::new();
    for version in [V31, V311, V5] {
        let mut c = client(&broker, version, &format!("suback-{}", version.level())).await;
        let ack = c
            .subscribe_filters(
                0x1234,
                &[
                    ("s/two", QoS::ExactlyOnce),
                    ("s/zero", QoS::AtMostOnce),
                    ("s/+/one", QoS::AtLeastOnce),
                    ("s/#", QoS::ExactlyOnce),
                ],
            )
            .await;
        assert_eq!(
            ack.reasons,
            vec![
                ReasonCode::GrantedQoS2,
                ReasonCode::Success,
                ReasonCode::GrantedQoS1,
                ReasonCode::GrantedQoS2
            ],
            "{version:?}"
        );
        clients.push(c);
    }
    assert_eq!(broker.broker.subscription_count(), 12);
    drop(clients);
    broker.stop().await;
}

// Section 4.7: each subscriber below holds one filter; every topic is published once and each
// subscriber must receive exactly the topics its filter matches, in publish order. The cases are
// the spec's own examples (4.7.1.2, 4.7.1.3, 4.7.2), including `#` matching the parent level and
// [MQTT-4.7.2-1]: filters starting with a wildcard do not match topics starting with `$`.
#[tokio::test]
async fn wildcard_filters_match_the_spec_examples_through_the_broker() {
    let broker = TestBroker::start().await;
    let topics_published = [
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "sport",
        "sport/",
        "/finance",
        "finance",
        "$SYS/monitor/Clients",
        "$SYS/uptime",
        "$foo",
        "$foo/bar",
        "sport/tennis",
    ];
    let cases: &[(&str, &[&str])] = &[
        (
            "sport/tennis/player1/#",
            &[
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon",
            ],
        ),
        (
            "sport/#",
            &[
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon",
                "sport",
                "sport/",
                "sport/tennis",
            ],
        ),
        (
            "#",
            &[
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon",
                "sport",
                "sport/",
                "/finance",
                "finance",
                "sport/tennis",
            ],
        ),
        ("sport/tennis/+", &["sport/tennis/player1"]),
        ("sport/+", &["sport/", "sport/tennis"]),
        ("+/+", &["sport/", "/finance", "sport/tennis"]),
        ("/+", &["/finance"]),
        ("+", &["sport", "finance"]),
        (
            "+/tennis/#",
            &[
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon",
                "sport/tennis",
            ],
        ),
        ("$SYS/#", &["$SYS/monitor/Clients", "$SYS/uptime"]),
        ("$SYS/+", &["$SYS/uptime"]),
        ("+/monitor/Clients", &[]),
        ("$foo/#", &["$foo", "$foo/bar"]),
        ("sport/tennis/player1", &["sport/tennis/player1"]),
    ];
    let mut subscribers = Vec::new();
    for (i, (filter, _)) in cases.iter().enumerate() {
        let version = [V311, V5, V31][i % 3];
        let mut c = client(&broker, version, &format!("match-{i}")).await;
        let ack = c.subscribe_filters(1, &[(filter, QoS::AtMostOnce)]).await;
        assert_eq!(ack.reasons, vec![ReasonCode::Success], "{filter}");
        subscribers.push(c);
    }
    let mut publisher = client(&broker, V311, "match-pub").await;
    for (i, topic) in topics_published.iter().enumerate() {
        let id = u16::try_from(i + 1).expect("small");
        publisher
            .publish_and_wait(publish_packet(topic, *topic, QoS::AtLeastOnce, id))
            .await;
    }
    let mut tasks = JoinSet::new();
    for (i, mut c) in subscribers.into_iter().enumerate() {
        let count = cases[i].1.len();
        tasks.spawn(async move { (i, topics(&c.recv_publishes(count).await)) });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, got) = done.expect("subscriber task");
        let (filter, expected) = cases[i];
        assert_eq!(got, expected.to_vec(), "filter {filter}");
    }
    drop(publisher);
    broker.stop().await;
}

// [MQTT-4.7.2-1] in 5.0 too: `#` and `+/...` miss `$` topics, `$SYS/...` filters get them.
#[tokio::test]
async fn dollar_topics_reach_only_filters_that_name_their_first_level_v5() {
    let broker = TestBroker::start().await;
    let mut wild = client(&broker, V5, "dollar-wild").await;
    wild.subscribe_filters(1, &[("#", QoS::AtMostOnce), ("+/info", QoS::AtMostOnce)])
        .await;
    let mut sys = client(&broker, V5, "dollar-sys").await;
    sys.subscribe_filters(1, &[("$SYS/#", QoS::AtMostOnce)])
        .await;
    // The rule applies to the filter inside a shared subscription too.
    let mut shared = client(&broker, V5, "dollar-shared").await;
    shared
        .subscribe_filters(1, &[("$share/g/#", QoS::AtMostOnce)])
        .await;
    let mut publisher = client(&broker, V5, "dollar-pub").await;
    publisher
        .publish_and_wait(publish_packet("$SYS/info", "s", QoS::AtLeastOnce, 1))
        .await;
    publisher
        .publish_and_wait(publish_packet("app/info", "a", QoS::AtLeastOnce, 2))
        .await;
    // One copy for `app/info` although both `#` and `+/info` match it.
    assert_eq!(topics(&wild.recv_publishes(1).await), vec!["app/info"]);
    assert_eq!(topics(&sys.recv_publishes(1).await), vec!["$SYS/info"]);
    assert_eq!(topics(&shared.recv_publishes(1).await), vec!["app/info"]);
    drop((wild, sys, shared, publisher));
    broker.stop().await;
}

// [MQTT-3.10.4-4]/[MQTT-3.10.4-5]: UNSUBACK with the packet id even when nothing matched; the
// 3.1/3.1.1 UNSUBACK has no payload; [MQTT-3.10.4-1] deliveries stop.
#[tokio::test]
async fn unsubscribe_is_acknowledged_and_stops_delivery_v311_and_v31() {
    let broker = TestBroker::start().await;
    for version in [V311, V31] {
        let level = version.level();
        let mut sub = client(&broker, version, &format!("unsub-{level}")).await;
        sub.subscribe_filters(1, &[("u/1", QoS::AtMostOnce), ("u/2", QoS::AtMostOnce)])
            .await;
        assert_eq!(broker.broker.subscription_count(), 2);
        let ack = sub.unsubscribe(0x0A0B, &["u/1"]).await;
        assert!(ack.reasons.is_empty(), "no payload before 5.0: {ack:?}");
        assert_eq!(broker.broker.subscription_count(), 1);
        let ack = sub.unsubscribe(7, &["never/subscribed"]).await;
        assert!(ack.reasons.is_empty());

        let mut publisher = client(&broker, version, &format!("unsub-pub-{level}")).await;
        publisher
            .publish_and_wait(publish_packet("u/1", "gone", QoS::AtLeastOnce, 1))
            .await;
        publisher
            .publish_and_wait(publish_packet("u/2", "kept", QoS::AtLeastOnce, 2))
            .await;
        let got = sub.recv_publishes(1).await;
        assert_eq!(topics(&got), vec!["u/2"]);
        assert_eq!(payloads(&got), vec!["kept"]);
        assert!(sub.disconnect().await.is_empty());
        assert!(publisher.disconnect().await.is_empty());
        eventually("sessions to end", || {
            broker.broker.subscription_count() == 0
        })
        .await;
    }
    broker.stop().await;
}

// 5.0 section 3.11.3: one reason per filter; 0x11 No subscription existed for a filter that had
// none, including one just removed.
#[tokio::test]
async fn unsuback_v5_reports_no_subscription_existed_per_filter() {
    let broker = TestBroker::start().await;
    let mut c = client(&broker, V5, "unsub-v5").await;
    c.subscribe_filters(
        1,
        &[("u/a", QoS::AtLeastOnce), ("$share/g/u/b", QoS::AtMostOnce)],
    )
    .await;
    let ack = c
        .unsubscribe(2, &["u/a", "u/none", "$share/g/u/b", "u/b"])
        .await;
    assert_eq!(
        ack.reasons,
        vec![
            ReasonCode::Success,
            ReasonCode::NoSubscriptionExisted,
            ReasonCode::Success,
            ReasonCode::NoSubscriptionExisted
        ]
    );
    let again = c.unsubscribe(3, &["u/a"]).await;
    assert_eq!(again.reasons, vec![ReasonCode::NoSubscriptionExisted]);
    assert_eq!(broker.broker.subscription_count(), 0);
    drop(c);
    broker.stop().await;
}

// [MQTT-3.8.4-3]: a SUBSCRIBE for an existing filter replaces the subscription; the new maximum
// QoS applies to the next message, and there is still one subscription, so one copy.
#[tokio::test]
async fn resubscribing_replaces_the_qos_without_duplicating_delivery() {
    let broker = TestBroker::start().await;
    for version in [V311, V5] {
        let level = version.level();
        let mut sub = client(&broker, version, &format!("resub-{level}")).await;
        let mut publisher = client(&broker, version, &format!("resub-pub-{level}")).await;
        let topic = format!("resub/{level}");
        let steps = [
            (QoS::AtMostOnce, ReasonCode::Success),
            (QoS::ExactlyOnce, ReasonCode::GrantedQoS2),
            (QoS::AtLeastOnce, ReasonCode::GrantedQoS1),
        ];
        for (n, (granted, reason)) in steps.into_iter().enumerate() {
            let n = u16::try_from(n + 1).expect("small");
            let ack = sub.subscribe_filters(n, &[(&topic, granted)]).await;
            assert_eq!(ack.reasons, vec![reason]);
            assert_eq!(broker.broker.subscription_count(), 1, "{version:?}");
            publisher
                .publish_and_wait(publish_packet(&topic, format!("m{n}"), QoS::ExactlyOnce, n))
                .await;
            let got = sub.recv_publishes(1).await;
            assert_eq!(payloads(&got), vec![format!("m{n}")], "{version:?}");
            assert_eq!(got[0].qos, granted, "{version:?} step {n}");
        }
        assert!(sub.disconnect().await.is_empty());
        assert!(publisher.disconnect().await.is_empty());
        eventually("subscriptions to go", || {
            broker.broker.subscription_count() == 0
        })
        .await;
    }
    broker.stop().await;
}

// 3.1.1 [MQTT-3.3.5-1] / 5.0 [MQTT-3.3.4-2]: overlapping subscriptions of one client yield one
// copy at the highest granted QoS.
#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos_v311() {
    let broker = TestBroker::start().await;
    let mut sub = client(&broker, V311, "overlap-311").await;
    let ack = sub
        .subscribe_filters(
            1,
            &[
                ("o/+", QoS::AtMostOnce),
                ("o/#", QoS::ExactlyOnce),
                ("o/t", QoS::AtLeastOnce),
            ],
        )
        .await;
    assert_eq!(ack.reasons.len(), 3);
    let mut publisher = client(&broker, V311, "overlap-311-pub").await;
    publisher
        .publish_and_wait(publish_packet("o/t", "two", QoS::ExactlyOnce, 1))
        .await;
    publisher
        .publish_and_wait(publish_packet("o/t", "one", QoS::AtLeastOnce, 2))
        .await;
    publisher
        .publish_and_wait(publish_packet("o/other", "also-two", QoS::ExactlyOnce, 3))
        .await;
    let got = sub.recv_publishes(3).await;
    assert_eq!(payloads(&got), vec!["two", "one", "also-two"]);
    let qos: Vec<QoS> = got.iter().map(|p| p.qos).collect();
    assert_eq!(
        qos,
        vec![QoS::ExactlyOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
    );
    drop((sub, publisher));
    broker.stop().await;
}

// 5.0 [MQTT-3.3.4-3]/[MQTT-3.3.4-5]: the single copy carries the identifier of every matching
// subscription that has one, at the highest QoS among them.
#[tokio::test]
async fn overlapping_subscriptions_v5_carry_every_matching_subscription_identifier() {
    let broker = TestBroker::start().await;
    let mut sub = client(&broker, V5, "overlap-v5").await;
    sub.subscribe_with(subscribe_with_id(1, "ov/+", QoS::AtMostOnce, 11))
        .await;
    sub.subscribe_with(subscribe_with_id(2, "ov/#", QoS::AtLeastOnce, 22))
        .await;
    sub.subscribe_with(subscribe_with_id(3, "ov/t", QoS::AtMostOnce, 33))
        .await;
    // No identifier on this one: it matches but adds none.
    sub.subscribe_filters(4, &[("+/t", QoS::AtMostOnce)]).await;
    let mut publisher = client(&broker, V5, "overlap-v5-pub").await;
    publisher
        .publish_and_wait(publish_packet("ov/t", "x", QoS::ExactlyOnce, 1))
        .await;
    let got = sub.recv_publishes(1).await;
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    let mut ids: Vec<u32> = got[0]
        .properties
        .subscription_identifiers
        .iter()
        .map(|id| id.get())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![11, 22, 33]);
    drop((sub, publisher));
    broker.stop().await;
}

/// Connects `count` members of share group `group` on `filter` and returns them.
async fn share_members(
    broker: &TestBroker,
    version: ProtocolVersion,
    prefix: &str,
    filter: &str,
    count: usize,
) -> Vec<RawClient> {
    let mut members = Vec::new();
    for i in 0..count {
        let mut c = client(broker, version, &format!("{prefix}-{i}")).await;
        let ack = c.subscribe_filters(1, &[(filter, QoS::AtLeastOnce)]).await;
        assert_eq!(ack.reasons, vec![ReasonCode::GrantedQoS1]);
        members.push(c);
    }
    members
}

/// Publishes `count` QoS 1 messages with payloads "0", "1", ... to `topic`.
async fn publish_numbered(publisher: &mut RawClient, topic: &str, count: u16) {
    for n in 0..count {
        publisher
            .publish_and_wait(publish_packet(
                topic,
                n.to_string(),
                QoS::AtLeastOnce,
                n + 1,
            ))
            .await;
    }
}

fn numbers(publishes: &[Publish]) -> Vec<u16> {
    payloads(publishes)
        .iter()
        .map(|p| p.parse().expect("numbered payload"))
        .collect()
}

/// Checks that the members' shares partition 0..total and that each got `each` messages,
/// every `members`-th one (round robin).
fn assert_round_robin(shares: &[Vec<u16>], total: u16, each: usize) {
    let mut all: Vec<u16> = shares.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..total).collect::<Vec<_>>(),
        "each message exactly once"
    );
    let members = u16::try_from(shares.len()).expect("small");
    for share in shares {
        assert_eq!(share.len(), each, "even split: {shares:?}");
        let residue = share[0] % members;
        assert!(
            share.iter().all(|n| n % members == residue),
            "round robin: {shares:?}"
        );
    }
}

// 5.0 section 4.8.2: each message matching a shared subscription goes to exactly one member; this
// broker rotates through the members (the choice is the server's, [MQTT-4.8.2-3]).
#[tokio::test]
async fn shared_subscription_splits_messages_round_robin_v5() {
    let broker = TestBroker::start().await;
    let mut members = share_members(&broker, V5, "share5", "$share/g/jobs/+", 2).await;
    let mut publisher = client(&broker, V5, "share5-pub").await;
    publish_numbered(&mut publisher, "jobs/a", 20).await;
    let mut shares = Vec::new();
    for m in &mut members {
        shares.push(numbers(&m.recv_publishes(10).await));
    }
    assert_round_robin(&shares, 20, 10);
    drop((members, publisher));
    broker.stop().await;
}

// Shared subscriptions are a 5.0 feature the broker also accepts from 3.1.1 clients.
#[tokio::test]
async fn shared_subscription_is_accepted_from_v311_clients() {
    let broker = TestBroker::start().await;
    let mut members = share_members(&broker, V311, "share3", "$share/workers/q/#", 3).await;
    assert_eq!(broker.broker.subscription_count(), 3);
    let mut publisher = client(&broker, V311, "share3-pub").await;
    publish_numbered(&mut publisher, "q/work", 21).await;
    let mut shares = Vec::new();
    for m in &mut members {
        shares.push(numbers(&m.recv_publishes(7).await));
    }
    assert_round_robin(&shares, 21, 7);
    drop((members, publisher));
    broker.stop().await;
}

// Section 4.8.2: every share group gets its own copy, and so does every non-shared subscriber.
#[tokio::test]
async fn each_share_group_and_each_plain_subscriber_gets_a_copy() {
    let broker = TestBroker::start().await;
    let mut group_a = share_members(&broker, V5, "ga", "$share/a/ev/+", 2).await;
    let mut group_b = share_members(&broker, V5, "gb", "$share/b/ev/+", 1).await;
    let mut plain = client(&broker, V311, "plain").await;
    plain
        .subscribe_filters(1, &[("ev/+", QoS::AtLeastOnce)])
        .await;
    let mut publisher = client(&broker, V5, "groups-pub").await;
    publish_numbered(&mut publisher, "ev/x", 10).await;

    let mut shares = Vec::new();
    for m in &mut group_a {
        shares.push(numbers(&m.recv_publishes(5).await));
    }
    assert_round_robin(&shares, 10, 5);
    assert_eq!(
        numbers(&group_b[0].recv_publishes(10).await),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        numbers(&plain.recv_publishes(10).await),
        (0..10).collect::<Vec<_>>()
    );
    drop((group_a, group_b, plain, publisher));
    broker.stop().await;
}

// A member whose clean session ends leaves the group: the remaining members share all messages.
#[tokio::test]
async fn share_members_that_disconnect_stop_receiving() {
    let broker = TestBroker::start().await;
    let mut members = share_members(&broker, V5, "leave", "$share/g/l/t", 3).await;
    let third = members.pop().expect("three");
    let second = members.pop().expect("two");
    assert!(second.disconnect().await.is_empty());
    eventually("the member's subscription to go", || {
        broker.broker.subscription_count() == 2
    })
    .await;
    // The third drops its TCP connection without DISCONNECT.
    drop(third);
    eventually("the dropped member's subscription to go", || {
        broker.broker.subscription_count() == 1
    })
    .await;
    let mut publisher = client(&broker, V5, "leave-pub").await;
    publish_numbered(&mut publisher, "l/t", 6).await;
    assert_eq!(
        numbers(&members[0].recv_publishes(6).await),
        (0..6).collect::<Vec<_>>()
    );
    drop((members, publisher));
    broker.stop().await;
}

// 5.0 section 4.8.2: "retained messages are not sent" on a shared subscription; the same filter
// without the share prefix gets them, with RETAIN set.
#[tokio::test]
async fn retained_messages_are_not_sent_on_a_shared_subscription() {
    let broker = TestBroker::start().await;
    let mut publisher = client(&broker, V5, "sr-pub").await;
    publisher
        .publish_and_wait(retained_packet("sr/t", "kept", QoS::AtLeastOnce, 1))
        .await;
    assert_eq!(broker.broker.retained_count(), 1);
    for version in [V5, V311] {
        let mut sub = client(&broker, version, &format!("sr-sub-{}", version.level())).await;
        sub.subscribe_filters(1, &[("$share/g/sr/#", QoS::AtLeastOnce)])
            .await;
        sub.assert_quiet().await;
        sub.subscribe_filters(2, &[("sr/#", QoS::AtLeastOnce)])
            .await;
        let got = sub.recv_publishes(1).await;
        assert_eq!(payloads(&got), vec!["kept"]);
        assert!(got[0].retain, "retained replay has RETAIN=1");
    }
    drop(publisher);
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

// [MQTT-4.7.1-1]/[MQTT-4.7.1-2] wildcard placement, [MQTT-4.8.2-1]/[MQTT-4.8.2-2] share names:
// a SUBSCRIBE with such a filter is a malformed packet (section 4.13): no SUBACK, the
// connection closes, and a 5.0 client first gets DISCONNECT with a reason the spec allows
// there. Starling sends 0x81 Malformed Packet.
#[tokio::test]
async fn invalid_filters_close_a_v5_connection_with_disconnect_malformed_packet() {
    let broker = TestBroker::start().await;
    for (i, bad) in [
        "a/#/b",
        "a+",
        "$share//x",
        "$share/g",
        "#/a",
        "a/b#",
        "$share/g+/x",
    ]
    .into_iter()
    .enumerate()
    {
        let bytes = raw_subscribe(true, 5, bad.as_bytes(), 1);
        let packets = rejected(&broker, V5, &format!("bad5-{i}"), &bytes).await;
        let [Packet::Disconnect(Disconnect { reason, .. })] = packets.as_slice() else {
            panic!("{bad}: expected one DISCONNECT, got {packets:?}");
        };
        assert!(reason.allowed_in(ReasonContext::Disconnect));
        assert_eq!(*reason, ReasonCode::MalformedPacket, "{bad}");
    }
    assert_eq!(broker.broker.subscription_count(), 0);
    broker.stop().await;
}

// 3.1.1 section 4.8: the server closes the connection on a protocol violation; there is no
// DISCONNECT from a 3.1.1 server. A valid filter earlier in the same SUBSCRIBE is not kept.
#[tokio::test]
async fn invalid_filters_close_a_v311_connection_without_a_packet() {
    let broker = TestBroker::start().await;
    for (i, bad) in ["a/#/b", "a+", "sport/tennis#"].into_iter().enumerate() {
        let bytes = raw_subscribe(false, 5, bad.as_bytes(), 0);
        for version in [V311, V31] {
            let packets = rejected(
                &broker,
                version,
                &format!("bad3-{i}-{}", version.level()),
                &bytes,
            )
            .await;
            assert_eq!(packets, vec![], "{bad} {version:?}");
        }
    }
    // A good filter followed by a bad one in one SUBSCRIBE.
    let mut body = vec![0x00, 0x09];
    body.extend_from_slice(&common::flows::prefixed(b"good/topic"));
    body.push(1);
    body.extend_from_slice(&common::flows::prefixed(b"bad/#/x"));
    body.push(1);
    let packets = rejected(
        &broker,
        V311,
        "bad3-mixed",
        &common::flows::frame(0x82, &body),
    )
    .await;
    assert_eq!(packets, vec![]);
    assert_eq!(broker.broker.subscription_count(), 0);
    broker.stop().await;
}

// [MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error (0x82).
#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let broker = TestBroker::start().await;
    let bytes = raw_subscribe(true, 5, b"$share/g/nl", 0b0000_0101);
    let packets = rejected(&broker, V5, "share-nolocal", &bytes).await;
    assert_eq!(
        packets,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::ProtocolError
        ))]
    );
    assert_eq!(broker.broker.subscription_count(), 0);
    broker.stop().await;
}

// Fan-out: 200 subscribers (3.1, 3.1.1 and 5.0 mixed) on one filter each get the message once.
#[tokio::test]
async fn fan_out_reaches_each_of_200_subscribers_once() {
    const SUBSCRIBERS: usize = 200;
    let broker = TestBroker::start().await;
    let mut connecting = JoinSet::new();
    for i in 0..SUBSCRIBERS {
        let addr = broker.addr;
        connecting.spawn(async move {
            let version = [V311, V5, V31][i % 3];
            let (mut c, ack) = RawClient::connect(addr, version, &format!("fan-{i}"), true).await;
            assert_eq!(ack.reason, ReasonCode::Success);
            let qos = if i % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            c.subscribe_filters(1, &[("fan/out", qos)]).await;
            (c, qos)
        });
    }
    let mut subscribers = Vec::new();
    while let Some(done) = connecting.join_next().await {
        subscribers.push(done.expect("connect task"));
    }
    assert_eq!(broker.broker.subscription_count(), SUBSCRIBERS);

    let mut publisher = client(&broker, V5, "fan-pub").await;
    publisher
        .publish_and_wait(publish_packet(
            "fan/out",
            "to everyone",
            QoS::AtLeastOnce,
            1,
        ))
        .await;

    let mut receiving = JoinSet::new();
    for (mut c, granted) in subscribers {
        receiving.spawn(async move {
            let got = c.recv_publishes(1).await;
            (c, granted, got)
        });
    }
    let mut finished = Vec::new();
    while let Some(done) = receiving.join_next().await {
        let (c, granted, got) = done.expect("receive task");
        assert_eq!(got[0].topic.as_str(), "fan/out");
        assert_eq!(&got[0].payload[..], b"to everyone");
        assert_eq!(got[0].qos, granted);
        finished.push(c);
    }
    assert_eq!(finished.len(), SUBSCRIBERS);
    drop(finished);
    eventually("every subscription to go", || {
        broker.broker.subscription_count() == 0
    })
    .await;
    drop(publisher);
    broker.stop().await;
}

// A clean session's subscriptions end with it (3.1.1 section 3.1.2.4, 5.0 session expiry 0),
// however the connection ends; a persistent session keeps its subscriptions.
#[tokio::test]
async fn subscription_count_returns_to_zero_when_clean_sessions_leave() {
    let broker = TestBroker::start().await;
    let filters = [
        ("c/exact", QoS::AtMostOnce),
        ("c/+/wild", QoS::AtLeastOnce),
        ("#", QoS::ExactlyOnce),
        ("$share/g/c/#", QoS::AtLeastOnce),
    ];
    let mut by_disconnect = Vec::new();
    let mut by_drop = Vec::new();
    for version in [V31, V311, V5] {
        let level = version.level();
        let mut a = client(&broker, version, &format!("count-a-{level}")).await;
        a.subscribe_filters(1, &filters).await;
        by_disconnect.push(a);
        let mut b = client(&broker, version, &format!("count-b-{level}")).await;
        b.subscribe_filters(1, &filters).await;
        by_drop.push(b);
    }
    let (mut persistent, _) =
        RawClient::connect_with(broker.addr, connect_packet(V311, "count-persistent", false)).await;
    persistent
        .subscribe_filters(1, &[("p/t", QoS::AtLeastOnce)])
        .await;
    assert_eq!(broker.broker.subscription_count(), 6 * filters.len() + 1);

    for c in by_disconnect {
        assert!(c.disconnect().await.is_empty());
    }
    eventually("disconnected sessions' subscriptions to go", || {
        broker.broker.subscription_count() == 3 * filters.len() + 1
    })
    .await;
    drop(by_drop);
    eventually("dropped sessions' subscriptions to go", || {
        broker.broker.subscription_count() == 1
    })
    .await;
    assert!(persistent.disconnect().await.is_empty());
    // The persistent session outlives its connection, subscription included.
    tokio::time::sleep(QUIET).await;
    assert_eq!(broker.broker.subscription_count(), 1);
    assert_eq!(broker.broker.session_count(), 1);

    // Resuming it with a clean session ends it, and its subscription with it.
    let (clean, _) =
        RawClient::connect_with(broker.addr, connect_packet(V311, "count-persistent", true)).await;
    eventually("the replaced session's subscription to go", || {
        broker.broker.subscription_count() == 0
    })
    .await;
    assert!(clean.disconnect().await.is_empty());
    eventually("no session to remain", || {
        broker.broker.session_count() == 0
    })
    .await;
    broker.stop().await;
}

// 3.1.1 [MQTT-3.8.3-3], 5.0 [MQTT-3.8.3-2], both [MQTT-3.10.3-2]: SUBSCRIBE and UNSUBSCRIBE
// carry at least one filter; an empty one is a Protocol Error (5.0: DISCONNECT 0x82), and
// 3.1.1 closes the connection.
#[tokio::test]
async fn subscribe_and_unsubscribe_without_filters_close_the_connection() {
    let broker = TestBroker::start().await;
    for (name, first) in [("sub", 0x82), ("unsub", 0xA2)] {
        let v3 = common::flows::frame(first, &[0x00, 0x01]);
        assert_eq!(
            rejected(&broker, V311, &format!("empty-{name}-3"), &v3).await,
            vec![],
            "{name}"
        );
        let v5 = common::flows::frame(first, &[0x00, 0x01, 0x00]);
        assert_eq!(
            rejected(&broker, V5, &format!("empty-{name}-5"), &v5).await,
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::ProtocolError
            ))],
            "{name}"
        );
    }
    broker.stop().await;
}

// 3.1.1 [MQTT-3.8.3-4]: reserved option bits set or QoS 3 is malformed; 5.0 section 3.8.3.1:
// QoS 3 is a Protocol Error (0x82) and reserved bits are malformed (0x81).
#[tokio::test]
async fn subscription_options_with_qos_3_or_reserved_bits_close_the_connection() {
    let broker = TestBroker::start().await;
    for (i, options) in [0x03u8, 0x04, 0x81].into_iter().enumerate() {
        let bytes = raw_subscribe(false, 1, b"opt/t", options);
        assert_eq!(
            rejected(&broker, V311, &format!("opt3-{i}"), &bytes).await,
            vec![],
            "options {options:#04x}"
        );
    }
    for (i, (options, reason)) in [
        (0x03u8, ReasonCode::ProtocolError),
        (0x41, ReasonCode::MalformedPacket),
        (0x80, ReasonCode::MalformedPacket),
    ]
    .into_iter()
    .enumerate()
    {
        let bytes = raw_subscribe(true, 1, b"opt/t", options);
        assert_eq!(
            rejected(&broker, V5, &format!("opt5-{i}"), &bytes).await,
            vec![Packet::Disconnect(Disconnect::new(reason))],
            "options {options:#04x}"
        );
    }
    assert_eq!(broker.broker.subscription_count(), 0);
    broker.stop().await;
}

// A share member whose persistent session is offline keeps its subscription but is skipped while
// an online member can take the message, so nothing piles up for it (section 4.8.2 leaves the
// choice of member to the server).
#[tokio::test]
async fn an_offline_share_member_is_skipped_while_others_are_online() {
    let broker = TestBroker::start().await;
    let mut online = share_members(&broker, V5, "away-on", "$share/g/away/t", 1).await;
    let persistent = |clean: bool| starling::codec::Connect {
        properties: starling::codec::ConnectProperties {
            session_expiry_interval: Some(60),
            ..Default::default()
        },
        ..connect_packet(V5, "away-off", clean)
    };
    let (mut away, _) = RawClient::connect_with(broker.addr, persistent(true)).await;
    away.subscribe_filters(1, &[("$share/g/away/t", QoS::AtLeastOnce)])
        .await;
    assert!(away.disconnect().await.is_empty());
    assert_eq!(broker.broker.subscription_count(), 2);

    let mut publisher = client(&broker, V5, "away-pub").await;
    publish_numbered(&mut publisher, "away/t", 6).await;
    assert_eq!(
        numbers(&online[0].recv_publishes(6).await),
        (0..6).collect::<Vec<_>>()
    );
    let (mut back, ack) = RawClient::connect_with(broker.addr, persistent(false)).await;
    assert!(ack.session_present);
    back.assert_quiet().await;
    drop((online, back, publisher));
    broker.stop().await;
}
