//! MQTT 5.0 features end to end: topic aliases both ways, message expiry, subscription
//! identifiers, No Local, Retain As Published, forwarded properties, payload format validation,
//! the client's Maximum Packet Size and Receive Maximum, Request Problem Information, and the
//! protocol errors only 5.0 has (AUTH without a method, a client-sent subscription identifier).

mod common;

use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use bytes::Bytes;
use common::flows::{
    QUIET, V5Client, pid, publish_packet, raw_publish, raw_subscribe, recv_publishes_all,
    retained_packet, sub_opts, subscribe_packet, topic,
};
use common::{RawClient, TestBroker, connect_packet, connect_with_will};
use starling::codec::{
    AckProperties, Auth, AuthProperties, Connect, ConnectProperties, Disconnect, Packet,
    PayloadFormat, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions, UserProperty, Will, WillProperties,
};
use starling::topic::TopicName;

use ProtocolVersion::{V5, V311};

/// Connects a 5.0 client with a clean start and checks the CONNACK.
async fn client(broker: &TestBroker, id: &str) -> RawClient {
    let (client, ack) = RawClient::connect(broker.addr, V5, id, true).await;
    assert_eq!(ack.reason, ReasonCode::Success, "CONNACK for {id}");
    client
}

/// Connects a 5.0 client whose CONNECT properties are `properties`.
async fn client_with(broker: &TestBroker, id: &str, properties: ConnectProperties) -> RawClient {
    let connect = Connect {
        properties,
        ..connect_packet(V5, id, true)
    };
    let (client, ack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(ack.reason, ReasonCode::Success, "CONNACK for {id}");
    client
}

/// A 5.0 client subscribed to `filter` at `qos`.
async fn subscriber(broker: &TestBroker, id: &str, filter: &str, qos: QoS) -> RawClient {
    let mut c = client(broker, id).await;
    c.subscribe_filters(1, &[(filter, qos)]).await;
    c
}

/// A PUBLISH addressed by topic alias: `topic_name` may be empty.
fn aliased(topic_name: &str, alias: u16, payload: &str, qos: QoS, packet_id: u16) -> Publish {
    let mut publish = publish_packet("placeholder", payload, qos, packet_id);
    publish.topic = TopicName::new_allow_empty(topic_name).expect("valid topic");
    publish.properties.topic_alias = NonZeroU16::new(alias);
    publish
}

fn subscribe_with_id(packet_id: u16, filter: &str, qos: QoS, id: Option<u32>) -> Subscribe {
    let mut subscribe = subscribe_packet(packet_id, &[(filter, sub_opts(qos))]);
    subscribe.properties.subscription_identifier = id.and_then(NonZeroU32::new);
    subscribe
}

fn ids(publish: &Publish) -> Vec<u32> {
    publish
        .properties
        .subscription_identifiers
        .iter()
        .map(|id| id.get())
        .collect()
}

fn user(key: &str, value: &str) -> UserProperty {
    UserProperty {
        key: key.into(),
        value: value.into(),
    }
}

/// Sends `bytes` on a fresh 5.0 connection and returns what the broker sends before closing.
async fn rejected(broker: &TestBroker, id: &str, bytes: &[u8]) -> Vec<Packet> {
    let mut c = client(broker, id).await;
    c.send_raw(bytes).await;
    c.recv_until_closed().await
}

fn disconnect(reason: ReasonCode) -> Vec<Packet> {
    vec![Packet::Disconnect(Disconnect::new(reason))]
}

// Section 3.3.2.3.4: a PUBLISH with a topic and an alias sets the alias; one with an empty topic
// and a known alias is routed to the alias's topic; a new topic for the same alias replaces the
// mapping. The alias is per connection and is not forwarded to subscribers.
#[tokio::test]
async fn inbound_topic_alias_is_set_reused_and_remapped() {
    let broker = TestBroker::start().await;
    let mut sub = subscriber(&broker, "alias-in-sub", "alias/#", QoS::AtLeastOnce).await;
    let (mut publisher, ack) = RawClient::connect(broker.addr, V5, "alias-in-pub", true).await;
    assert_eq!(ack.properties.topic_alias_maximum, Some(10));
    let steps = [
        ("alias/one", 1, "a"),
        ("", 1, "b"),
        ("alias/two", 1, "c"),
        ("", 1, "d"),
        ("alias/ten", 10, "e"),
        ("", 10, "f"),
        ("", 1, "g"),
    ];
    for (n, (name, alias, payload)) in steps.into_iter().enumerate() {
        let id = u16::try_from(n + 1).expect("small");
        let ack = publisher
            .publish_and_wait(aliased(name, alias, payload, QoS::AtLeastOnce, id))
            .await;
        assert_eq!(ack, Some(PubResponse::success(pid(id))));
    }
    let got: Vec<(String, String, Option<NonZeroU16>)> = sub
        .recv_publishes(7)
        .await
        .into_iter()
        .map(|p| {
            (
                p.topic.to_string(),
                String::from_utf8(p.payload.to_vec()).expect("UTF-8"),
                p.properties.topic_alias,
            )
        })
        .collect();
    let expected: Vec<(String, String, Option<NonZeroU16>)> = [
        ("alias/one", "a"),
        ("alias/one", "b"),
        ("alias/two", "c"),
        ("alias/two", "d"),
        ("alias/ten", "e"),
        ("alias/ten", "f"),
        ("alias/two", "g"),
    ]
    .into_iter()
    .map(|(t, p)| (t.to_owned(), p.to_owned(), None))
    .collect();
    assert_eq!(got, expected);
    drop((sub, publisher));
    broker.stop().await;
}

// Section 3.3.4: "A Topic Alias value of 0 or greater than the Maximum Topic Alias is a Protocol
// Error, the receiver uses DISCONNECT with Reason Code of 0x94 (Topic Alias invalid)".
#[tokio::test]
async fn topic_alias_0_or_above_the_maximum_is_refused_with_0x94() {
    let broker = TestBroker::start().await;
    let mut watcher = subscriber(&broker, "alias-bad-watch", "#", QoS::AtMostOnce).await;
    let zero = raw_publish(0x30, b"a/t", None, Some(&[0x23, 0x00, 0x00]), b"x");
    assert_eq!(
        rejected(&broker, "alias-zero", &zero).await,
        disconnect(ReasonCode::TopicAliasInvalid)
    );
    let above = raw_publish(0x30, b"a/t", None, Some(&[0x23, 0x00, 11]), b"x");
    assert_eq!(
        rejected(&broker, "alias-11", &above).await,
        disconnect(ReasonCode::TopicAliasInvalid)
    );
    watcher.assert_quiet().await;
    drop(watcher);
    broker.stop().await;
}

// With max_topic_alias = 0 the CONNACK announces no Topic Alias Maximum (absent means 0,
// section 3.2.2.3.8) and any alias is above it.
#[tokio::test]
async fn with_aliases_disabled_any_inbound_alias_is_refused() {
    let broker = TestBroker::start_with(|c| c.limits.max_topic_alias = 0).await;
    let (mut c, ack) = RawClient::connect(broker.addr, V5, "alias-off", true).await;
    assert_eq!(ack.properties.topic_alias_maximum, None);
    c.send(&Packet::Publish(aliased("a/t", 1, "x", QoS::AtMostOnce, 0)))
        .await;
    assert_eq!(
        c.recv_until_closed().await,
        disconnect(ReasonCode::TopicAliasInvalid)
    );
    drop(c);
    broker.stop().await;
}

// Section 3.3.2.3.4: an empty topic with an alias that has no mapping, or with no alias at all,
// is a Protocol Error (0x82).
#[tokio::test]
async fn empty_topic_without_a_known_alias_is_a_protocol_error() {
    let broker = TestBroker::start().await;
    let mut c = client(&broker, "alias-unknown").await;
    c.publish_and_wait(aliased("alias/set", 2, "x", QoS::AtLeastOnce, 1))
        .await;
    c.send(&Packet::Publish(aliased("", 3, "y", QoS::AtLeastOnce, 2)))
        .await;
    assert_eq!(
        c.recv_until_closed().await,
        disconnect(ReasonCode::ProtocolError)
    );
    let no_alias = raw_publish(0x30, b"", None, Some(&[]), b"x");
    assert_eq!(
        rejected(&broker, "alias-none", &no_alias).await,
        disconnect(ReasonCode::ProtocolError)
    );
    drop(c);
    broker.stop().await;
}

// [MQTT-3.3.2-7]: topic alias mappings last only for the network connection, even when the
// session continues.
#[tokio::test]
async fn topic_aliases_do_not_survive_a_reconnect() {
    let broker = TestBroker::start().await;
    let persistent = |clean: bool| Connect {
        properties: ConnectProperties {
            session_expiry_interval: Some(60),
            ..ConnectProperties::default()
        },
        ..connect_packet(V5, "alias-reconnect", clean)
    };
    let (mut c, _) = RawClient::connect_with(broker.addr, persistent(true)).await;
    c.publish_and_wait(aliased("alias/r", 1, "x", QoS::AtLeastOnce, 1))
        .await;
    c.publish_and_wait(aliased("", 1, "y", QoS::AtLeastOnce, 2))
        .await;
    assert!(c.disconnect().await.is_empty());
    let (mut again, ack) = RawClient::connect_with(broker.addr, persistent(false)).await;
    assert!(ack.session_present, "the session itself continues");
    again
        .send(&Packet::Publish(aliased("", 1, "z", QoS::AtLeastOnce, 3)))
        .await;
    assert_eq!(
        again.recv_until_closed().await,
        disconnect(ReasonCode::ProtocolError)
    );
    drop(again);
    broker.stop().await;
}

// Section 3.3.2.3.4 / [MQTT-3.3.2-11]: the broker may alias topics towards a client up to the
// client's Topic Alias Maximum: the first PUBLISH carries topic and alias, later ones the alias
// with an empty topic. Once every alias is taken, further topics go out in full.
#[tokio::test]
async fn outbound_aliases_are_assigned_up_to_the_clients_maximum() {
    let broker = TestBroker::start().await;
    let mut sub = client_with(
        &broker,
        "alias-out",
        ConnectProperties {
            topic_alias_maximum: Some(2),
            ..ConnectProperties::default()
        },
    )
    .await;
    sub.subscribe_filters(1, &[("oa/+", QoS::AtLeastOnce)])
        .await;
    let mut publisher = client(&broker, "alias-out-pub").await;
    let sent = ["oa/a", "oa/a", "oa/b", "oa/c", "oa/b", "oa/a", "oa/c"];
    for (n, name) in sent.into_iter().enumerate() {
        let id = u16::try_from(n + 1).expect("small");
        publisher
            .publish_and_wait(publish_packet(name, n.to_string(), QoS::AtLeastOnce, id))
            .await;
    }
    let got: Vec<(String, Option<u16>, String)> = sub
        .recv_publishes(7)
        .await
        .into_iter()
        .map(|p| {
            (
                p.topic.to_string(),
                p.properties.topic_alias.map(NonZeroU16::get),
                String::from_utf8(p.payload.to_vec()).expect("UTF-8"),
            )
        })
        .collect();
    let expected: Vec<(String, Option<u16>, String)> = [
        ("oa/a", Some(1)),
        ("", Some(1)),
        ("oa/b", Some(2)),
        ("oa/c", None),
        ("", Some(2)),
        ("", Some(1)),
        ("oa/c", None),
    ]
    .into_iter()
    .enumerate()
    .map(|(n, (t, a))| (t.to_owned(), a, n.to_string()))
    .collect();
    assert_eq!(got, expected);
    drop((sub, publisher));
    broker.stop().await;
}

// [MQTT-3.3.2-11]: a client that sends no Topic Alias Maximum (or 0) gets no aliases.
#[tokio::test]
async fn no_outbound_aliases_when_the_client_allows_none() {
    let broker = TestBroker::start().await;
    let absent = subscriber(&broker, "alias-none-absent", "na/t", QoS::AtMostOnce).await;
    let mut zero = client_with(
        &broker,
        "alias-none-zero",
        ConnectProperties {
            topic_alias_maximum: Some(0),
            ..ConnectProperties::default()
        },
    )
    .await;
    zero.subscribe_filters(1, &[("na/t", QoS::AtMostOnce)])
        .await;
    let mut publisher = client(&broker, "alias-none-pub").await;
    for n in 0..3u16 {
        publisher
            .publish_and_wait(publish_packet("na/t", "x", QoS::AtLeastOnce, n + 1))
            .await;
    }
    for (_, got) in recv_publishes_all(vec![(absent, 3), (zero, 3)]).await {
        for p in got {
            assert_eq!(p.topic.as_str(), "na/t");
            assert_eq!(p.properties.topic_alias, None);
        }
    }
    drop(publisher);
    broker.stop().await;
}

// A real 5.0 client that allows aliases gets the right topics back.
#[tokio::test]
async fn rumqttc_v5_client_with_topic_aliases_receives_the_right_topics() {
    let broker = TestBroker::start().await;
    let mut sub = V5Client::connect(broker.addr, "alias-rumqttc", |o| {
        o.set_topic_alias_max(Some(5));
    })
    .await;
    sub.subscribe("ra/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;
    let mut publisher = client(&broker, "alias-rumqttc-pub").await;
    let sent = ["ra/x", "ra/y", "ra/x", "ra/y", "ra/x"];
    for (n, name) in sent.into_iter().enumerate() {
        let id = u16::try_from(n + 1).expect("small");
        publisher
            .publish_and_wait(publish_packet(name, n.to_string(), QoS::AtLeastOnce, id))
            .await;
    }
    // rumqttc reports the PUBLISH as received, so the application resolves aliases itself.
    let mut aliases = std::collections::HashMap::new();
    let mut on_the_wire = Vec::new();
    for (n, name) in sent.into_iter().enumerate() {
        let got = sub.next_publish().await;
        let alias = got.properties.as_ref().and_then(|p| p.topic_alias);
        on_the_wire.push((got.topic.clone(), alias));
        let resolved = match alias {
            Some(alias) if got.topic.is_empty() => {
                aliases.get(&alias).cloned().expect("known alias")
            }
            Some(alias) => {
                aliases.insert(alias, got.topic.clone());
                got.topic.clone()
            }
            None => got.topic.clone(),
        };
        assert_eq!(resolved, name, "message {n}");
        assert_eq!(got.payload, Bytes::from(n.to_string()));
    }
    let x = Bytes::from_static(b"ra/x");
    let y = Bytes::from_static(b"ra/y");
    assert_eq!(
        on_the_wire,
        vec![
            (x, Some(1)),
            (y, Some(2)),
            (Bytes::new(), Some(1)),
            (Bytes::new(), Some(2)),
            (Bytes::new(), Some(1)),
        ]
    );
    drop((sub, publisher));
    broker.stop().await;
}

// [MQTT-3.3.2-5]: a message whose expiry interval passes while it is queued for an offline
// session is not delivered; [MQTT-3.3.2-6]: one that is delivered carries the remaining interval.
#[tokio::test]
async fn messages_that_expire_while_queued_are_not_delivered() {
    let broker = TestBroker::start().await;
    let persistent = |clean: bool| Connect {
        properties: ConnectProperties {
            session_expiry_interval: Some(60),
            ..ConnectProperties::default()
        },
        ..connect_packet(V5, "expiry-offline", clean)
    };
    let (mut sub, _) = RawClient::connect_with(broker.addr, persistent(true)).await;
    sub.subscribe_filters(1, &[("exp/#", QoS::AtLeastOnce)])
        .await;
    assert!(sub.disconnect().await.is_empty());

    let mut publisher = client(&broker, "expiry-pub").await;
    for (n, (name, expiry)) in [
        ("exp/short", Some(1)),
        ("exp/long", Some(60)),
        ("exp/none", None),
    ]
    .into_iter()
    .enumerate()
    {
        let id = u16::try_from(n + 1).expect("small");
        let mut message = publish_packet(name, "m", QoS::AtLeastOnce, id);
        message.properties.message_expiry_interval = expiry;
        publisher.publish_and_wait(message).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (mut sub, ack) = RawClient::connect_with(broker.addr, persistent(false)).await;
    assert!(ack.session_present);
    let got = sub.recv_publishes(2).await;
    let topics: Vec<&str> = got.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, vec!["exp/long", "exp/none"]);
    let left = got[0]
        .properties
        .message_expiry_interval
        .expect("remaining interval forwarded");
    assert!(
        (50..60).contains(&left),
        "less than the 60 s sent after waiting: {left}"
    );
    assert_eq!(got[1].properties.message_expiry_interval, None);
    drop((sub, publisher));
    broker.stop().await;
}

// [MQTT-3.3.2-6]: a live delivery carries the interval that remains (at most what was sent).
#[tokio::test]
async fn a_live_delivery_carries_the_remaining_expiry_interval() {
    let broker = TestBroker::start().await;
    let mut sub = subscriber(&broker, "expiry-live", "live/t", QoS::AtMostOnce).await;
    let mut publisher = client(&broker, "expiry-live-pub").await;
    let mut message = publish_packet("live/t", "m", QoS::AtLeastOnce, 1);
    message.properties.message_expiry_interval = Some(30);
    publisher.publish_and_wait(message).await;
    let got = sub.recv_publish().await;
    let left = got.properties.message_expiry_interval.expect("forwarded");
    assert!((25..=30).contains(&left), "{left}");
    drop((sub, publisher));
    broker.stop().await;
}

// Section 3.3.2.3.8: a delivery carries the identifier of the matching subscription, live and on
// retained replay; a resubscription replaces the identifier ([MQTT-3.8.4-3] replaces the whole
// subscription), and one without an identifier removes it.
#[tokio::test]
async fn subscription_identifiers_are_delivered_and_updated_on_resubscribe() {
    let broker = TestBroker::start().await;
    let mut publisher = client(&broker, "sid-pub").await;
    publisher
        .publish_and_wait(retained_packet("sidr/r", "retained", QoS::AtLeastOnce, 1))
        .await;
    let mut sub = client(&broker, "sid-sub").await;
    sub.subscribe_with(subscribe_with_id(1, "sidr/#", QoS::AtLeastOnce, Some(9)))
        .await;
    let replay = sub.recv_publishes(1).await;
    assert!(replay[0].retain);
    assert_eq!(ids(&replay[0]), vec![9], "retained replay carries the id");

    let steps = [Some(7), Some(268_435_455), None, Some(1)];
    let mut got_ids: Vec<Vec<u32>> = Vec::new();
    for (n, id) in steps.into_iter().enumerate() {
        let n = u16::try_from(n + 2).expect("small");
        sub.subscribe_with(subscribe_with_id(n, "sid/t", QoS::AtLeastOnce, id))
            .await;
        publisher
            .publish_and_wait(publish_packet("sid/t", n.to_string(), QoS::AtLeastOnce, n))
            .await;
        let got = sub.recv_publish_acked().await;
        got_ids.push(ids(&got));
    }
    let expected: Vec<Vec<u32>> = steps
        .iter()
        .map(|id| id.map(|i| vec![i]).unwrap_or_default())
        .collect();
    assert_eq!(got_ids, expected);
    assert_eq!(broker.broker.subscription_count(), 2);
    drop((sub, publisher));
    broker.stop().await;
}

// Section 3.8.2.1.2: a Subscription Identifier of 0 is a Protocol Error.
#[tokio::test]
async fn subscription_identifier_0_is_a_protocol_error() {
    let broker = TestBroker::start().await;
    let mut body = vec![0x00, 0x01, 0x02, 0x0B, 0x00];
    body.extend_from_slice(&common::flows::prefixed(b"sid/zero"));
    body.push(1);
    let bytes = common::flows::frame(0x82, &body);
    assert_eq!(
        rejected(&broker, "sid-zero", &bytes).await,
        disconnect(ReasonCode::ProtocolError)
    );
    assert_eq!(broker.broker.subscription_count(), 0);
    broker.stop().await;
}

// [MQTT-3.8.3-3]: with No Local, a client's own messages are not sent back to it on that
// subscription; others still get them, and its other subscriptions are unaffected.
#[tokio::test]
async fn no_local_keeps_a_clients_own_messages_from_it() {
    let broker = TestBroker::start().await;
    let mut me = client(&broker, "nl-me").await;
    let no_local = SubscriptionOptions {
        no_local: true,
        ..sub_opts(QoS::AtLeastOnce)
    };
    me.subscribe_with(subscribe_packet(
        1,
        &[("nl/t", no_local), ("nl/echo", sub_opts(QoS::AtLeastOnce))],
    ))
    .await;
    let mut other = subscriber(&broker, "nl-other", "nl/+", QoS::AtLeastOnce).await;

    me.publish_and_wait(publish_packet("nl/t", "mine", QoS::AtLeastOnce, 1))
        .await;
    me.assert_quiet().await;
    me.send(&Packet::Publish(publish_packet(
        "nl/echo",
        "echo",
        QoS::AtMostOnce,
        0,
    )))
    .await;
    let echoed = me.recv_publish().await;
    assert_eq!(&echoed.payload[..], b"echo");
    let seen: Vec<Bytes> = other
        .recv_publishes(2)
        .await
        .into_iter()
        .map(|p| p.payload)
        .collect();
    assert_eq!(seen, vec![Bytes::from("mine"), Bytes::from("echo")]);
    // No Local is about the client's own messages only.
    other
        .send(&Packet::Publish(publish_packet(
            "nl/t",
            "theirs",
            QoS::AtMostOnce,
            0,
        )))
        .await;
    let got = me.recv_publishes(1).await;
    assert_eq!(&got[0].payload[..], b"theirs");
    drop((me, other));
    broker.stop().await;
}

// [MQTT-3.3.1-12]/[MQTT-3.3.1-13] with [MQTT-3.3.1-9]: Retain As Published keeps RETAIN on live
// deliveries as published; retained replay always has RETAIN 1, with or without it.
#[tokio::test]
async fn retain_as_published_keeps_the_flag_on_live_deliveries() {
    let broker = TestBroker::start().await;
    let mut publisher = client(&broker, "rap-pub").await;
    publisher
        .publish_and_wait(retained_packet("rap/old", "old", QoS::AtLeastOnce, 1))
        .await;
    let mut subs = Vec::new();
    for (i, rap) in [true, false].into_iter().enumerate() {
        let mut c = client(&broker, &format!("rap-{i}")).await;
        let options = SubscriptionOptions {
            retain_as_published: rap,
            ..sub_opts(QoS::AtLeastOnce)
        };
        c.subscribe_with(subscribe_packet(1, &[("rap/+", options)]))
            .await;
        subs.push(c);
    }
    publisher
        .publish_and_wait(retained_packet("rap/new", "new", QoS::AtLeastOnce, 2))
        .await;
    publisher
        .publish_and_wait(publish_packet("rap/new", "plain", QoS::AtLeastOnce, 3))
        .await;
    let drained = recv_publishes_all(subs.into_iter().map(|c| (c, 3)).collect()).await;
    let flags = |i: usize| -> Vec<(String, bool)> {
        drained[i]
            .1
            .iter()
            .map(|p| {
                (
                    String::from_utf8(p.payload.to_vec()).expect("UTF-8"),
                    p.retain,
                )
            })
            .collect()
    };
    let own = |v: &[(&str, bool)]| -> Vec<(String, bool)> {
        v.iter().map(|(p, r)| ((*p).to_owned(), *r)).collect()
    };
    assert_eq!(
        flags(0),
        own(&[("old", true), ("new", true), ("plain", false)])
    );
    assert_eq!(
        flags(1),
        own(&[("old", true), ("new", false), ("plain", false)])
    );
    drop((drained, publisher));
    broker.stop().await;
}

// [MQTT-3.3.2-4], [MQTT-3.3.2-15]..[MQTT-3.3.2-18], [MQTT-3.3.2-20]: Payload Format Indicator,
// Response Topic, Correlation Data, User Properties (order and duplicates kept) and Content Type
// reach the subscriber unchanged, at every QoS.
#[tokio::test]
async fn publish_properties_are_forwarded_unchanged() {
    let broker = TestBroker::start().await;
    let mut sub = subscriber(&broker, "props-sub", "props/#", QoS::ExactlyOnce).await;
    let mut publisher = client(&broker, "props-pub").await;
    let variants = [
        (QoS::AtMostOnce, Some(PayloadFormat::Utf8)),
        (QoS::AtLeastOnce, Some(PayloadFormat::Unspecified)),
        (QoS::ExactlyOnce, None),
    ];
    let mut sent = Vec::new();
    for (n, (qos, format)) in variants.into_iter().enumerate() {
        let id = u16::try_from(n + 1).expect("small");
        let mut message = publish_packet("props/t", format!("payload {n}"), qos, id);
        message.properties.payload_format = format;
        message.properties.response_topic = Some(topic("props/reply/ü"));
        message.properties.correlation_data =
            Some(Bytes::from(vec![0, 0xFF, u8::try_from(n).expect("small")]));
        message.properties.content_type = Some("text/plain; charset=utf-8".into());
        message.properties.user_properties = vec![
            user("z", "last"),
            user("a", "1"),
            user("a", "1"),
            user("a", "2"),
            user("", ""),
            user("ключ", "значение"),
        ];
        sent.push(message.properties.clone());
        publisher.publish_and_wait(message).await;
    }
    let got = sub.recv_publishes(sent.len()).await;
    let got_properties: Vec<_> = got.iter().map(|p| p.properties.clone()).collect();
    assert_eq!(got_properties, sent);
    drop((sub, publisher));
    broker.stop().await;
}

// Section 3.3.2.3.2: a PUBLISH marked as UTF-8 (Payload Format Indicator 1) whose
// payload is not valid UTF-8 is answered with 0x99 Payload format invalid and not delivered; the
// connection stays up. A valid UTF-8 payload goes through.
#[tokio::test]
async fn invalid_utf8_with_payload_format_1_is_refused_with_0x99() {
    let broker = TestBroker::start().await;
    let mut sub = subscriber(&broker, "pfi-sub", "pfi/#", QoS::ExactlyOnce).await;
    let mut publisher = client(&broker, "pfi-pub").await;
    let invalid = |qos: QoS, id: u16| {
        let mut message = publish_packet("pfi/t", vec![b'o', b'k', 0xFF, 0xFE], qos, id);
        message.properties.payload_format = Some(PayloadFormat::Utf8);
        message
    };
    let refused = |id: u16| PubResponse {
        packet_id: pid(id),
        reason: ReasonCode::PayloadFormatInvalid,
        properties: AckProperties {
            reason_string: Some("payload is not valid UTF-8".into()),
            user_properties: Vec::new(),
        },
    };
    publisher
        .send(&Packet::Publish(Publish {
            retain: true,
            ..invalid(QoS::AtLeastOnce, 1)
        }))
        .await;
    assert_eq!(publisher.recv().await, Packet::PubAck(refused(1)));
    publisher
        .send(&Packet::Publish(invalid(QoS::ExactlyOnce, 2)))
        .await;
    assert_eq!(publisher.recv().await, Packet::PubRec(refused(2)));
    publisher
        .send(&Packet::Publish(invalid(QoS::AtMostOnce, 0)))
        .await;
    publisher.ping().await;

    let mut valid = publish_packet("pfi/t", "grüße", QoS::AtLeastOnce, 3);
    valid.properties.payload_format = Some(PayloadFormat::Utf8);
    publisher.publish_and_wait(valid).await;
    // Only the valid message arrives.
    let got = sub.recv_publishes(1).await;
    assert_eq!(got[0].payload, Bytes::from("grüße"));
    assert_eq!(got[0].properties.payload_format, Some(PayloadFormat::Utf8));
    // The refused message was retained: it is not stored either.
    assert_eq!(broker.broker.retained_count(), 0);
    drop((sub, publisher));
    broker.stop().await;
}

// Section 3.1.2.11.7: with Request Problem Information 0 the broker sends no Reason String on
// acknowledgements; the reason code itself is unchanged.
#[tokio::test]
async fn request_problem_information_0_suppresses_reason_strings() {
    let broker = TestBroker::start().await;
    let mut quiet = client_with(
        &broker,
        "rpi-0",
        ConnectProperties {
            request_problem_information: Some(false),
            ..ConnectProperties::default()
        },
    )
    .await;
    for (qos, id) in [(QoS::AtLeastOnce, 1), (QoS::ExactlyOnce, 2)] {
        let mut message = publish_packet("rpi/t", vec![0xC3], qos, id);
        message.properties.payload_format = Some(PayloadFormat::Utf8);
        quiet.send(&Packet::Publish(message)).await;
        let expected = PubResponse {
            packet_id: pid(id),
            reason: ReasonCode::PayloadFormatInvalid,
            properties: AckProperties::default(),
        };
        let got = quiet.recv().await;
        match qos {
            QoS::AtLeastOnce => assert_eq!(got, Packet::PubAck(expected)),
            _ => assert_eq!(got, Packet::PubRec(expected)),
        }
    }
    drop(quiet);
    broker.stop().await;
}

// [MQTT-3.1.2-24]/[MQTT-3.1.2-25]: a message larger than a client's Maximum Packet Size is not
// sent to that client (it is discarded for it alone) and delivery to it continues; a packet of
// exactly the maximum is sent. Other subscribers get everything.
#[tokio::test]
async fn a_message_too_big_for_one_subscriber_is_dropped_for_that_subscriber_only() {
    const MAX: u32 = 64;
    let broker = TestBroker::start().await;
    let small = client_with(
        &broker,
        "mps-small",
        ConnectProperties {
            maximum_packet_size: NonZeroU32::new(MAX),
            ..ConnectProperties::default()
        },
    )
    .await;
    let mut subs = vec![small, client(&broker, "mps-big").await];
    for s in &mut subs {
        s.subscribe_filters(1, &[("mps/t", QoS::AtLeastOnce)]).await;
    }
    let mut publisher = client(&broker, "mps-pub").await;
    // A QoS 1 PUBLISH to "mps/t" without properties is 12 bytes plus the payload.
    let fits = 52;
    let payloads = [
        vec![b'a'; 4],
        vec![b'b'; fits + 1],
        vec![b'c'; fits],
        vec![b'd'; 500],
        vec![b'e'; 4],
    ];
    for (n, payload) in payloads.iter().enumerate() {
        let id = u16::try_from(n + 1).expect("small");
        publisher
            .publish_and_wait(publish_packet(
                "mps/t",
                payload.clone(),
                QoS::AtLeastOnce,
                id,
            ))
            .await;
    }
    let drained = recv_publishes_all(subs.into_iter().zip([3, 5]).collect()).await;
    let firsts = |i: usize| -> Vec<(u8, usize)> {
        drained[i]
            .1
            .iter()
            .map(|p| (p.payload[0], p.payload.len()))
            .collect()
    };
    assert_eq!(firsts(0), vec![(b'a', 4), (b'c', fits), (b'e', 4)]);
    assert_eq!(
        firsts(1),
        vec![
            (b'a', 4),
            (b'b', fits + 1),
            (b'c', fits),
            (b'd', 500),
            (b'e', 4)
        ]
    );
    drop((drained, publisher));
    broker.stop().await;
}

// [MQTT-3.3.4-9]: the broker never has more unacknowledged QoS 1/2 PUBLISHes towards a client
// than the client's Receive Maximum.
#[tokio::test]
async fn the_broker_respects_the_clients_receive_maximum() {
    let broker = TestBroker::start().await;
    let mut sub = client_with(
        &broker,
        "rm-sub",
        ConnectProperties {
            receive_maximum: NonZeroU16::new(3),
            ..ConnectProperties::default()
        },
    )
    .await;
    sub.subscribe_filters(1, &[("rm/t", QoS::ExactlyOnce)])
        .await;
    let mut publisher = client(&broker, "rm-pub").await;
    for n in 0..6u16 {
        let qos = if n % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        publisher
            .publish_and_wait(publish_packet("rm/t", n.to_string(), qos, n + 1))
            .await;
    }
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(sub.recv_publish().await);
    }
    sub.assert_quiet().await;
    // Completing one QoS 2 exchange frees one slot only after PUBCOMP.
    let qos2 = first
        .iter()
        .find(|p| p.qos == QoS::ExactlyOnce)
        .expect("a QoS 2 delivery")
        .packet_id
        .expect("id");
    sub.send(&Packet::PubRec(PubResponse::success(qos2))).await;
    assert_eq!(sub.recv().await, Packet::PubRel(PubResponse::success(qos2)));
    sub.assert_quiet().await;
    sub.send(&Packet::PubComp(PubResponse::success(qos2))).await;
    let fourth = sub.recv_publish().await;
    assert_eq!(fourth.payload, Bytes::from("3"));
    sub.assert_quiet().await;
    for p in first.iter().filter(|p| p.qos == QoS::AtLeastOnce) {
        sub.send(&Packet::PubAck(PubResponse::success(
            p.packet_id.expect("id"),
        )))
        .await;
    }
    let mut rest = vec![fourth];
    rest.extend(sub.recv_publishes(2).await);
    let payloads: Vec<Bytes> = rest.iter().map(|p| p.payload.clone()).collect();
    assert_eq!(
        payloads,
        vec![Bytes::from("3"), Bytes::from("4"), Bytes::from("5")]
    );
    drop((sub, publisher));
    broker.stop().await;
}

// [MQTT-3.3.4-7] / section 3.3.4: a client that has more unacknowledged QoS 2 PUBLISHes in flight
// than the broker's Receive Maximum is disconnected with 0x93 Receive Maximum exceeded.
#[tokio::test]
async fn exceeding_the_brokers_receive_maximum_is_refused_with_0x93() {
    let broker = TestBroker::start_with(|c| c.limits.max_inflight_messages = 4).await;
    let (mut c, ack) = RawClient::connect(broker.addr, V5, "rm-exceed", true).await;
    assert_eq!(ack.properties.receive_maximum, NonZeroU16::new(4));
    for id in 1..=4u16 {
        c.send(&Packet::Publish(publish_packet(
            "rmx/t",
            "x",
            QoS::ExactlyOnce,
            id,
        )))
        .await;
        assert_eq!(
            c.recv().await,
            Packet::PubRec(PubResponse::success(pid(id)))
        );
    }
    c.send(&Packet::Publish(publish_packet(
        "rmx/t",
        "x",
        QoS::ExactlyOnce,
        5,
    )))
    .await;
    assert_eq!(
        c.recv_until_closed().await,
        disconnect(ReasonCode::ReceiveMaximumExceeded)
    );
    drop(c);
    broker.stop().await;
}

// Section 4.12: AUTH is only valid after a CONNECT with an Authentication Method; without one it
// is a Protocol Error (0x82).
#[tokio::test]
async fn an_auth_packet_without_an_authentication_method_is_a_protocol_error() {
    let broker = TestBroker::start().await;
    let mut c = client(&broker, "auth").await;
    c.send(&Packet::Auth(Auth {
        reason: ReasonCode::ReAuthenticate,
        properties: AuthProperties {
            authentication_method: Some("SCRAM-SHA-256".into()),
            ..AuthProperties::default()
        },
    }))
    .await;
    assert_eq!(
        c.recv_until_closed().await,
        disconnect(ReasonCode::ProtocolError)
    );
    drop(c);
    broker.stop().await;
}

// [MQTT-3.3.4-6]: a PUBLISH from a client must not contain a Subscription Identifier; the broker
// treats it as a Protocol Error and does not route the message.
#[tokio::test]
async fn a_client_publish_with_a_subscription_identifier_is_a_protocol_error() {
    let broker = TestBroker::start().await;
    let mut watcher = subscriber(&broker, "pub-sid-watch", "psid/#", QoS::AtMostOnce).await;
    let mut c = client(&broker, "pub-sid").await;
    let mut message = publish_packet("psid/t", "x", QoS::AtLeastOnce, 1);
    message.properties.subscription_identifiers = vec![NonZeroU32::new(5).expect("non-zero")];
    c.send(&Packet::Publish(message)).await;
    assert_eq!(
        c.recv_until_closed().await,
        disconnect(ReasonCode::ProtocolError)
    );
    watcher.assert_quiet().await;
    drop((watcher, c));
    broker.stop().await;
}

/// A 5.0 client with a will on `will/{id}`; returns it and the watcher subscribed to it.
async fn with_will(broker: &TestBroker, id: &str) -> (RawClient, RawClient) {
    let watcher = subscriber(
        broker,
        &format!("{id}-watch"),
        &format!("will/{id}"),
        QoS::AtLeastOnce,
    )
    .await;
    let will = Will {
        topic: topic(&format!("will/{id}")),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties::default(),
    };
    let (c, ack) = RawClient::connect_with(broker.addr, connect_with_will(V5, id, will)).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    (c, watcher)
}

// Section 3.14.2.1: a DISCONNECT with Remaining Length 0 (`e0 00`) means reason 0x00, a normal
// disconnection: the will is discarded ([MQTT-3.14.4-3]). Reason 0x04 and a dropped connection
// publish it.
#[tokio::test]
async fn short_disconnect_is_a_normal_disconnect_without_the_will() {
    let broker = TestBroker::start().await;
    let (mut short, mut watcher) = with_will(&broker, "short").await;
    short.send_raw(&[0xE0, 0x00]).await;
    assert_eq!(short.recv_until_closed().await, vec![]);
    if let Some(packet) = watcher.recv_within(QUIET * 2).await {
        panic!("no will after a normal disconnect, got {packet:?}");
    }

    let (mut with_reason, mut watcher4) = with_will(&broker, "reason4").await;
    with_reason
        .send(&Packet::Disconnect(Disconnect::new(
            ReasonCode::DisconnectWithWillMessage,
        )))
        .await;
    assert_eq!(with_reason.recv_until_closed().await, vec![]);
    let will = watcher4.recv_publish().await;
    assert_eq!(will.topic.as_str(), "will/reason4");
    assert_eq!(&will.payload[..], b"gone");

    let (dropped, mut watcher_drop) = with_will(&broker, "dropped").await;
    drop(dropped);
    let will = watcher_drop.recv_publish().await;
    assert_eq!(will.topic.as_str(), "will/dropped");
    drop((watcher, watcher4, watcher_drop));
    broker.stop().await;
}

// A 3.1.1 subscriber of a 5.0 message is unaffected by 5.0-only delivery state: no alias, no
// subscription identifier, no expiry on the wire (checked by decoding as 3.1.1).
#[tokio::test]
async fn v5_features_do_not_leak_to_a_v311_subscriber() {
    let broker = TestBroker::start().await;
    let (mut old, _) = RawClient::connect(broker.addr, V311, "leak-311", true).await;
    old.subscribe_filters(1, &[("leak/+", QoS::AtLeastOnce)])
        .await;
    let mut publisher = client(&broker, "leak-pub").await;
    publisher
        .publish_and_wait(aliased("leak/t", 1, "first", QoS::AtLeastOnce, 1))
        .await;
    let mut second = aliased("", 1, "second", QoS::AtLeastOnce, 2);
    second.properties.message_expiry_interval = Some(100);
    second.properties.user_properties = vec![user("k", "v")];
    publisher.publish_and_wait(second).await;
    let got = old.recv_publishes(2).await;
    let seen: Vec<(&str, &[u8])> = got
        .iter()
        .map(|p| (p.topic.as_str(), &p.payload[..]))
        .collect();
    assert_eq!(seen, vec![("leak/t", &b"first"[..]), ("leak/t", b"second")]);
    drop((old, publisher));
    broker.stop().await;
}

// The rumqttc 5.0 client sees properties forwarded from a raw 5.0 publisher.
#[tokio::test]
async fn rumqttc_v5_client_receives_forwarded_properties() {
    let broker = TestBroker::start().await;
    let mut sub = V5Client::connect(broker.addr, "rum-props", |_| {}).await;
    sub.subscribe("rp/t", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;
    let mut publisher = client(&broker, "rum-props-pub").await;
    let mut message = publish_packet("rp/t", "x", QoS::AtLeastOnce, 1);
    message.properties.user_properties = vec![user("a", "1"), user("a", "2")];
    message.properties.content_type = Some("text/plain".into());
    message.properties.response_topic = Some(topic("rp/reply"));
    message.properties.correlation_data = Some(Bytes::from_static(b"id-1"));
    publisher.publish_and_wait(message).await;
    let got = sub.next_publish().await;
    let properties = got.properties.expect("properties forwarded");
    assert_eq!(
        properties.user_properties,
        vec![
            ("a".to_owned(), "1".to_owned()),
            ("a".to_owned(), "2".to_owned())
        ]
    );
    assert_eq!(properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(properties.response_topic.as_deref(), Some("rp/reply"));
    assert_eq!(
        properties.correlation_data,
        Some(Bytes::from_static(b"id-1"))
    );
    drop((sub, publisher));
    broker.stop().await;
}

// Section 3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3."
#[tokio::test]
async fn a_subscribe_with_retain_handling_3_is_a_protocol_error() {
    let broker = TestBroker::start().await;
    let bytes = raw_subscribe(true, 1, b"rh/three", 0b0011_0001);
    assert_eq!(
        rejected(&broker, "rh3", &bytes).await,
        disconnect(ReasonCode::ProtocolError)
    );
    broker.stop().await;
}

// [MQTT-3.1.2-25] with section 3.3.2.3.4: a PUBLISH dropped as too large for the client does not
// use up a topic alias, so the next message on that topic still carries the topic with its alias
// (the client never saw the first one).
#[tokio::test]
async fn a_dropped_oversized_message_does_not_consume_a_topic_alias() {
    let broker = TestBroker::start().await;
    let mut sub = client_with(
        &broker,
        "mps-alias",
        ConnectProperties {
            maximum_packet_size: NonZeroU32::new(64),
            topic_alias_maximum: Some(5),
            ..ConnectProperties::default()
        },
    )
    .await;
    sub.subscribe_filters(1, &[("mpsa/t", QoS::AtMostOnce)])
        .await;
    let mut publisher = client(&broker, "mps-alias-pub").await;
    for (n, size) in [200usize, 4, 4].into_iter().enumerate() {
        let id = u16::try_from(n + 1).expect("small");
        publisher
            .publish_and_wait(publish_packet(
                "mpsa/t",
                vec![b'x'; size],
                QoS::AtLeastOnce,
                id,
            ))
            .await;
    }
    let got: Vec<(String, Option<u16>, usize)> = sub
        .recv_publishes(2)
        .await
        .into_iter()
        .map(|p| {
            (
                p.topic.to_string(),
                p.properties.topic_alias.map(NonZeroU16::get),
                p.payload.len(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("mpsa/t".to_owned(), Some(1), 4),
            (String::new(), Some(1), 4)
        ]
    );
    drop((sub, publisher));
    broker.stop().await;
}

// Retained replay obeys the same per-client rules as live delivery: a retained message too large
// for the client's Maximum Packet Size is skipped and the others still come, carrying the
// subscription identifier.
#[tokio::test]
async fn retained_replay_skips_messages_too_large_for_the_client() {
    let broker = TestBroker::start().await;
    let mut publisher = client(&broker, "mps-ret-pub").await;
    for (n, (name, size)) in [("mr/a", 4usize), ("mr/b", 300), ("mr/c", 4)]
        .into_iter()
        .enumerate()
    {
        let id = u16::try_from(n + 1).expect("small");
        publisher
            .publish_and_wait(retained_packet(
                name,
                vec![b'r'; size],
                QoS::AtLeastOnce,
                id,
            ))
            .await;
    }
    let mut sub = client_with(
        &broker,
        "mps-ret",
        ConnectProperties {
            maximum_packet_size: NonZeroU32::new(100),
            ..ConnectProperties::default()
        },
    )
    .await;
    sub.subscribe_with(subscribe_with_id(1, "mr/+", QoS::AtLeastOnce, Some(3)))
        .await;
    let mut got = sub.recv_publishes(2).await;
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    let summary: Vec<(&str, bool, Vec<u32>)> = got
        .iter()
        .map(|p| (p.topic.as_str(), p.retain, ids(p)))
        .collect();
    assert_eq!(
        summary,
        vec![("mr/a", true, vec![3]), ("mr/c", true, vec![3])]
    );
    drop((sub, publisher));
    broker.stop().await;
}

// [MQTT-3.3.2-7] towards the client too: after a reconnect the broker starts its aliases afresh,
// so the first message on a topic carries the topic again.
#[tokio::test]
async fn outbound_aliases_start_afresh_after_a_reconnect() {
    let broker = TestBroker::start().await;
    let connect = |clean: bool| Connect {
        properties: ConnectProperties {
            session_expiry_interval: Some(60),
            topic_alias_maximum: Some(3),
            ..ConnectProperties::default()
        },
        ..connect_packet(V5, "alias-again", clean)
    };
    let (mut sub, _) = RawClient::connect_with(broker.addr, connect(true)).await;
    sub.subscribe_filters(1, &[("again/+", QoS::AtLeastOnce)])
        .await;
    let mut publisher = client(&broker, "alias-again-pub").await;
    publisher
        .publish_and_wait(publish_packet("again/b", "0", QoS::AtLeastOnce, 1))
        .await;
    publisher
        .publish_and_wait(publish_packet("again/a", "1", QoS::AtLeastOnce, 2))
        .await;
    let first: Vec<(String, Option<u16>)> = sub
        .recv_publishes(2)
        .await
        .iter()
        .map(|p| {
            (
                p.topic.to_string(),
                p.properties.topic_alias.map(NonZeroU16::get),
            )
        })
        .collect();
    assert_eq!(
        first,
        vec![
            ("again/b".to_owned(), Some(1)),
            ("again/a".to_owned(), Some(2))
        ]
    );
    assert!(sub.disconnect().await.is_empty());

    let (mut sub, ack) = RawClient::connect_with(broker.addr, connect(false)).await;
    assert!(ack.session_present);
    publisher
        .publish_and_wait(publish_packet("again/a", "2", QoS::AtLeastOnce, 3))
        .await;
    publisher
        .publish_and_wait(publish_packet("again/a", "3", QoS::AtLeastOnce, 4))
        .await;
    let after: Vec<(String, Option<u16>)> = sub
        .recv_publishes(2)
        .await
        .iter()
        .map(|p| {
            (
                p.topic.to_string(),
                p.properties.topic_alias.map(NonZeroU16::get),
            )
        })
        .collect();
    assert_eq!(
        after,
        vec![("again/a".to_owned(), Some(1)), (String::new(), Some(1))]
    );
    drop((sub, publisher));
    broker.stop().await;
}

// Section 4.3.3 / 3.5.2.1: a PUBREC with an error reason (0x80 or above) ends the QoS 2 exchange:
// no PUBREL follows, and the slot in the client's Receive Maximum is free again.
#[tokio::test]
async fn a_pubrec_with_an_error_reason_ends_the_exchange() {
    let broker = TestBroker::start().await;
    let mut sub = client_with(
        &broker,
        "pubrec-err",
        ConnectProperties {
            receive_maximum: NonZeroU16::new(1),
            ..ConnectProperties::default()
        },
    )
    .await;
    sub.subscribe_filters(1, &[("prerr/t", QoS::ExactlyOnce)])
        .await;
    let mut publisher = client(&broker, "pubrec-err-pub").await;
    for n in 1..=2u16 {
        publisher
            .publish_and_wait(publish_packet(
                "prerr/t",
                n.to_string(),
                QoS::ExactlyOnce,
                n,
            ))
            .await;
    }
    let first = sub.recv_publish().await;
    assert_eq!(first.payload, Bytes::from("1"));
    sub.send(&Packet::PubRec(PubResponse {
        packet_id: first.packet_id.expect("id"),
        reason: ReasonCode::QuotaExceeded,
        properties: AckProperties::default(),
    }))
    .await;
    // The next packet is the second message, not a PUBREL for the first.
    let second = sub.recv_publish().await;
    assert_eq!(second.payload, Bytes::from("2"));
    assert!(!second.dup);
    sub.ack(&second).await;
    sub.assert_quiet().await;
    drop((sub, publisher));
    broker.stop().await;
}
