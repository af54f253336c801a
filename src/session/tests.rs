//! The session driven with packets and a virtual clock: no sockets, no tokio.

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::codec::{
    ConnectProperties, DisconnectProperties, PubResponse, SubscribeProperties, WillProperties,
};

fn limits() -> Limits {
    Limits::default()
}

fn connect(version: ProtocolVersion, keep_alive: u16) -> crate::codec::Connect {
    crate::codec::Connect {
        protocol: version,
        clean_start: true,
        keep_alive,
        client_id: "c".into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn session_with(c: crate::codec::Connect, now: Instant) -> Session {
    let negotiated = negotiate(c, &limits(), now, || "auto".into()).expect("accepted");
    Session::new(negotiated, Origin(7))
}

fn session(version: ProtocolVersion, now: Instant) -> Session {
    session_with(connect(version, 60), now)
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

fn topic(s: &str) -> TopicName {
    TopicName::new(s).expect("valid topic")
}

fn publish(qos: QoS, packet_id: Option<u16>, t: &str, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic(t),
        packet_id: packet_id.map(id),
        properties: PublishProperties::default(),
        payload: Bytes::from_static(payload),
    })
}

fn message(qos: QoS, t: &str, payload: &'static [u8]) -> Arc<Message> {
    Arc::new(Message {
        topic: topic(t),
        payload: Bytes::from_static(payload),
        qos,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: None,
        origin: None,
        published_at: Some(Instant::now()),
    })
}

fn delivery(message: Arc<Message>, qos: QoS) -> Delivery {
    Delivery::new(message, qos, false, SmallVec::new())
}

fn handle(s: &mut Session, now: Instant, packet: Packet) -> Result<Vec<Action>, Close> {
    let mut out = Vec::new();
    s.handle(now, packet, &limits(), &mut out)?;
    Ok(out)
}

fn sent(actions: &[Action]) -> Vec<&Packet> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn routed(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Route(_)))
        .count()
}

fn publishes(actions: &[Action]) -> Vec<&OutgoingPublish> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

#[test]
fn keep_alive_deadline_is_one_and_a_half_times_the_interval_after_the_last_packet() {
    let t0 = Instant::now();
    let mut s = session_with(connect(ProtocolVersion::V311, 10), t0);
    assert_eq!(s.keep_alive_deadline(), Some(t0 + Duration::from_secs(15)));
    let t1 = t0 + Duration::from_secs(9);
    let out = handle(&mut s, t1, Packet::PingReq).expect("ping");
    assert_eq!(sent(&out), vec![&Packet::PingResp]);
    assert_eq!(s.keep_alive_deadline(), Some(t1 + Duration::from_secs(15)));
    let no_keep_alive = session_with(connect(ProtocolVersion::V311, 0), t0);
    assert_eq!(no_keep_alive.keep_alive_deadline(), None);
}

#[test]
fn qos1_publish_is_routed_once_and_acknowledged_with_its_packet_id() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V311, now);
    let out = handle(&mut s, now, publish(QoS::AtLeastOnce, Some(42), "a", b"x")).expect("ok");
    assert_eq!(routed(&out), 1);
    assert_eq!(
        sent(&out),
        vec![&Packet::PubAck(PubResponse::success(id(42)))]
    );
}

#[test]
fn qos2_duplicate_before_pubrel_is_acknowledged_but_not_routed_again() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5, now);
    let first = handle(&mut s, now, publish(QoS::ExactlyOnce, Some(5), "a", b"x")).expect("ok");
    assert_eq!(routed(&first), 1);
    assert_eq!(
        sent(&first),
        vec![&Packet::PubRec(PubResponse::success(id(5)))]
    );
    let again = handle(&mut s, now, publish(QoS::ExactlyOnce, Some(5), "a", b"x")).expect("ok");
    assert_eq!(
        routed(&again),
        0,
        "exactly once: the duplicate is not routed"
    );
    assert_eq!(
        sent(&again),
        vec![&Packet::PubRec(PubResponse::success(id(5)))]
    );
    let rel = handle(&mut s, now, Packet::PubRel(PubResponse::success(id(5)))).expect("ok");
    assert_eq!(
        sent(&rel),
        vec![&Packet::PubComp(PubResponse::success(id(5)))]
    );
    // After PUBREL the id is free: the same id starts a new message.
    let next = handle(&mut s, now, publish(QoS::ExactlyOnce, Some(5), "a", b"y")).expect("ok");
    assert_eq!(routed(&next), 1);
}

#[test]
fn unknown_pubrel_is_answered_with_packet_identifier_not_found_in_v5_only() {
    let now = Instant::now();
    let mut v5 = session(ProtocolVersion::V5, now);
    let out = handle(&mut v5, now, Packet::PubRel(PubResponse::success(id(9)))).expect("ok");
    match sent(&out)[..] {
        [Packet::PubComp(comp)] => assert_eq!(comp.reason, ReasonCode::PacketIdentifierNotFound),
        ref other => panic!("expected PUBCOMP, got {other:?}"),
    }
    let mut v3 = session(ProtocolVersion::V311, now);
    let out = handle(&mut v3, now, Packet::PubRel(PubResponse::success(id(9)))).expect("ok");
    assert_eq!(
        sent(&out),
        vec![&Packet::PubComp(PubResponse::success(id(9)))]
    );
}

#[test]
fn more_unreleased_qos2_messages_than_our_receive_maximum_is_refused_with_0x93() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5, now);
    let window = limits().inflight_window();
    for n in 1..=window {
        handle(&mut s, now, publish(QoS::ExactlyOnce, Some(n), "a", b"x")).expect("within window");
    }
    let close = handle(
        &mut s,
        now,
        publish(QoS::ExactlyOnce, Some(window + 1), "a", b"x"),
    )
    .expect_err("one too many");
    assert_eq!(close.reason, ReasonCode::ReceiveMaximumExceeded);
}

#[test]
fn outgoing_qos1_respects_the_window_and_frees_it_on_puback() {
    let now = Instant::now();
    let mut c = connect(ProtocolVersion::V5, 60);
    c.properties.receive_maximum = NonZeroU16::new(2);
    let mut s = session_with(c, now);
    assert_eq!(s.window_free(), 2);
    let mut out = Vec::new();
    for _ in 0..2 {
        s.deliver(
            now,
            delivery(message(QoS::AtLeastOnce, "t", b"p"), QoS::AtLeastOnce),
            &mut out,
        )
        .expect("sent");
    }
    assert_eq!(s.window_free(), 0);
    let ids: Vec<u16> = publishes(&out)
        .iter()
        .map(|p| p.packet_id.expect("id").get())
        .collect();
    assert_eq!(ids, vec![1, 2]);
    handle(&mut s, now, Packet::PubAck(PubResponse::success(id(1)))).expect("ack");
    assert_eq!(s.window_free(), 1);
    assert_eq!(s.inflight_len(), 1);
}

#[test]
fn outgoing_qos2_sends_pubrel_on_pubrec_and_completes_on_pubcomp() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V311, now);
    let mut out = Vec::new();
    s.deliver(
        now,
        delivery(message(QoS::ExactlyOnce, "t", b"p"), QoS::ExactlyOnce),
        &mut out,
    )
    .expect("sent");
    let pid = publishes(&out)[0].packet_id.expect("id");
    let rec = handle(&mut s, now, Packet::PubRec(PubResponse::success(pid))).expect("ok");
    assert_eq!(sent(&rec), vec![&Packet::PubRel(PubResponse::success(pid))]);
    assert_eq!(s.inflight_len(), 1);
    handle(&mut s, now, Packet::PubComp(PubResponse::success(pid))).expect("ok");
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn resume_resends_unacknowledged_messages_with_dup_in_order_and_pubrel_for_received_ones() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V311, now);
    let mut out = Vec::new();
    s.deliver(
        now,
        delivery(message(QoS::AtLeastOnce, "a", b"1"), QoS::AtLeastOnce),
        &mut out,
    )
    .expect("sent");
    s.deliver(
        now,
        delivery(message(QoS::ExactlyOnce, "b", b"2"), QoS::ExactlyOnce),
        &mut out,
    )
    .expect("sent");
    s.deliver(
        now,
        delivery(message(QoS::ExactlyOnce, "c", b"3"), QoS::ExactlyOnce),
        &mut out,
    )
    .expect("sent");
    // The client received the second QoS 2 message (PUBREC), then the connection dropped.
    handle(&mut s, now, Packet::PubRec(PubResponse::success(id(3)))).expect("ok");

    let mut c = connect(ProtocolVersion::V311, 60);
    c.clean_start = false;
    s.reattach(negotiate(c, &limits(), now, || "auto".into()).expect("accepted"));
    let mut resent = Vec::new();
    s.resume(now, &mut resent);
    let summary: Vec<String> = resent
        .iter()
        .map(|a| match a {
            Action::Publish(p) => format!(
                "PUBLISH {} dup={} id={}",
                p.message.topic,
                p.dup,
                p.packet_id.map_or(0, PacketId::get)
            ),
            Action::Send(Packet::PubRel(r)) => format!("PUBREL id={}", r.packet_id.get()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            "PUBLISH a dup=true id=1",
            "PUBLISH b dup=true id=2",
            "PUBREL id=3",
        ]
    );
}

#[test]
fn expired_messages_are_not_delivered_and_others_carry_the_remaining_interval() {
    let t0 = Instant::now();
    let mut s = session(ProtocolVersion::V5, t0);
    let expiring = Arc::new(Message {
        expires_at: Some(t0 + Duration::from_secs(10)),
        ..Arc::try_unwrap(message(QoS::AtMostOnce, "t", b"p")).expect("unique")
    });
    let mut out = Vec::new();
    let t4 = t0 + Duration::from_secs(4);
    s.deliver(t4, delivery(expiring.clone(), QoS::AtMostOnce), &mut out)
        .expect("sent");
    assert_eq!(publishes(&out)[0].message_expiry_interval, Some(6));
    let t10 = t0 + Duration::from_secs(10);
    assert_eq!(
        s.deliver(t10, delivery(expiring, QoS::AtMostOnce), &mut out),
        Err(Dropped::Expired)
    );
}

#[test]
fn a_publish_larger_than_the_client_maximum_packet_size_is_dropped_without_taking_an_id() {
    let now = Instant::now();
    let mut c = connect(ProtocolVersion::V5, 60);
    c.properties.maximum_packet_size = NonZeroU32::new(20);
    let mut s = session_with(c, now);
    let mut out = Vec::new();
    let big = message(
        QoS::AtLeastOnce,
        "t",
        b"0123456789012345678901234567890123456789",
    );
    assert_eq!(
        s.deliver(now, delivery(big, QoS::AtLeastOnce), &mut out),
        Err(Dropped::TooLarge)
    );
    assert_eq!(s.inflight_len(), 0);
    s.deliver(
        now,
        delivery(message(QoS::AtLeastOnce, "t", b"ok"), QoS::AtLeastOnce),
        &mut out,
    )
    .expect("small one fits");
    assert_eq!(publishes(&out)[0].packet_id, Some(id(1)));
}

#[test]
fn outbound_topic_alias_is_set_once_then_used_alone() {
    let now = Instant::now();
    let mut c = connect(ProtocolVersion::V5, 60);
    c.properties.topic_alias_maximum = Some(1);
    let mut s = session_with(c, now);
    let mut out = Vec::new();
    for _ in 0..2 {
        s.deliver(
            now,
            delivery(
                message(QoS::AtMostOnce, "long/topic", b"p"),
                QoS::AtMostOnce,
            ),
            &mut out,
        )
        .expect("sent");
    }
    s.deliver(
        now,
        delivery(message(QoS::AtMostOnce, "other", b"p"), QoS::AtMostOnce),
        &mut out,
    )
    .expect("sent");
    let views: Vec<(String, Option<u16>)> = publishes(&out)
        .iter()
        .map(|p| {
            (
                p.view().topic.to_owned(),
                p.topic_alias.map(NonZeroU16::get),
            )
        })
        .collect();
    assert_eq!(
        views,
        vec![
            ("long/topic".to_owned(), Some(1)),
            (String::new(), Some(1)),
            ("other".to_owned(), None),
        ]
    );
}

#[test]
fn inbound_topic_alias_errors_close_with_the_spec_reasons() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5, now);
    let aliased = |alias: u16, t: &str| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: if t.is_empty() {
                TopicName::empty()
            } else {
                topic(t)
            },
            packet_id: None,
            properties: PublishProperties {
                topic_alias: NonZeroU16::new(alias),
                ..PublishProperties::default()
            },
            payload: Bytes::new(),
        })
    };
    let too_high = handle(&mut s, now, aliased(11, "a")).expect_err("above maximum 10");
    assert_eq!(too_high.reason, ReasonCode::TopicAliasInvalid);
    let unknown = handle(&mut s, now, aliased(3, "")).expect_err("never set");
    assert_eq!(unknown.reason, ReasonCode::ProtocolError);
    let set = handle(&mut s, now, aliased(3, "a/b")).expect("sets alias 3");
    assert_eq!(routed(&set), 1);
    let used = handle(&mut s, now, aliased(3, "")).expect("uses alias 3");
    match &used[..] {
        [Action::Route(m)] => assert_eq!(m.topic.as_str(), "a/b"),
        other => panic!("expected one route, got {other:?}"),
    }
}

#[test]
fn subscription_identifier_in_a_client_publish_is_a_protocol_error() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5, now);
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic("a"),
        packet_id: None,
        properties: PublishProperties {
            subscription_identifiers: vec![NonZeroU32::new(1).expect("non-zero")],
            ..PublishProperties::default()
        },
        payload: Bytes::new(),
    });
    assert_eq!(
        handle(&mut s, now, packet).expect_err("refused").reason,
        ReasonCode::ProtocolError
    );
}

#[test]
fn invalid_utf8_with_payload_format_1_is_refused_with_0x99_and_not_routed() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5, now);
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic("a"),
        packet_id: Some(id(1)),
        properties: PublishProperties {
            payload_format: Some(PayloadFormat::Utf8),
            ..PublishProperties::default()
        },
        payload: Bytes::from_static(&[0xC3, 0x28]),
    });
    let out = handle(&mut s, now, packet).expect("answered");
    assert_eq!(routed(&out), 0);
    match sent(&out)[..] {
        [Packet::PubAck(ack)] => assert_eq!(ack.reason, ReasonCode::PayloadFormatInvalid),
        ref other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[test]
fn subscribe_decides_retained_replay_by_retain_handling_and_sharing() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5, now);
    let subscribe = |filter: &str, handling: RetainHandling| {
        Packet::Subscribe(Subscribe {
            packet_id: id(1),
            properties: SubscribeProperties {
                subscription_identifier: NonZeroU32::new(9),
                ..SubscribeProperties::default()
            },
            filters: vec![(
                TopicFilter::new(filter).expect("valid"),
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    retain_handling: handling,
                    ..SubscriptionOptions::default()
                },
            )],
        })
    };
    let replays = |actions: &[Action]| -> Vec<bool> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Subscribe {
                    send_retained,
                    subscription,
                } => {
                    assert_eq!(subscription.id, NonZeroU32::new(9));
                    Some(*send_retained)
                }
                _ => None,
            })
            .collect()
    };
    let first = handle(&mut s, now, subscribe("a/#", RetainHandling::SendIfNew)).expect("ok");
    assert_eq!(replays(&first), vec![true]);
    match sent(&first)[..] {
        [Packet::SubAck(ack)] => assert_eq!(ack.reasons, vec![ReasonCode::GrantedQoS2]),
        ref other => panic!("expected SUBACK, got {other:?}"),
    }
    let again = handle(&mut s, now, subscribe("a/#", RetainHandling::SendIfNew)).expect("ok");
    assert_eq!(
        replays(&again),
        vec![false],
        "1: only for a new subscription"
    );
    let always = handle(
        &mut s,
        now,
        subscribe("a/#", RetainHandling::SendAtSubscribe),
    )
    .expect("ok");
    assert_eq!(replays(&always), vec![true]);
    let never = handle(&mut s, now, subscribe("b", RetainHandling::DoNotSend)).expect("ok");
    assert_eq!(replays(&never), vec![false]);
    let shared = handle(
        &mut s,
        now,
        subscribe("$share/g/c", RetainHandling::SendAtSubscribe),
    )
    .expect("ok");
    assert_eq!(
        replays(&shared),
        vec![false],
        "no retained messages on shared subscriptions"
    );
    assert_eq!(s.subscriptions().count(), 3);
}

#[test]
fn unsubscribe_reports_filters_that_did_not_exist() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5, now);
    handle(
        &mut s,
        now,
        Packet::Subscribe(Subscribe {
            packet_id: id(1),
            properties: SubscribeProperties::default(),
            filters: vec![(
                TopicFilter::new("a").expect("valid"),
                SubscriptionOptions::default(),
            )],
        }),
    )
    .expect("ok");
    let out = handle(
        &mut s,
        now,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: id(2),
            user_properties: Vec::new(),
            filters: vec![
                TopicFilter::new("a").expect("valid"),
                TopicFilter::new("b").expect("valid"),
            ],
        }),
    )
    .expect("ok");
    let removed = out
        .iter()
        .filter(|a| matches!(a, Action::Unsubscribe(_)))
        .count();
    assert_eq!(removed, 1);
    match sent(&out)[..] {
        [Packet::UnsubAck(ack)] => assert_eq!(
            ack.reasons,
            vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
        ),
        ref other => panic!("expected UNSUBACK, got {other:?}"),
    }
}

#[test]
fn retained_replay_waits_for_the_window_and_is_never_truncated() {
    let now = Instant::now();
    let mut c = connect(ProtocolVersion::V5, 60);
    c.properties.receive_maximum = NonZeroU16::new(1);
    let mut s = session_with(c, now);
    let subscription = Subscription {
        filter: TopicFilter::new("r/#").expect("valid"),
        options: SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..SubscriptionOptions::default()
        },
        id: None,
    };
    let retained: Vec<_> = (0..5)
        .map(|_| message(QoS::AtLeastOnce, "r/x", b"v"))
        .collect();
    s.enqueue_retained(now, &subscription, retained);
    let mut out = Vec::new();
    let mut delivered = 0;
    while delivered < 5 {
        let next = s.next_replay().expect("one fits the window");
        assert!(next.retain, "retained replay carries RETAIN 1");
        s.deliver(now, next, &mut out).expect("sent");
        delivered += 1;
        assert!(s.next_replay().is_none(), "window of 1 is full");
        let pid = publishes(&out)
            .last()
            .and_then(|p| p.packet_id)
            .expect("id");
        handle(&mut s, now, Packet::PubAck(PubResponse::success(pid))).expect("ack");
    }
    assert!(s.next_replay().is_none());
}

#[test]
fn normal_disconnect_drops_the_will_and_0x04_keeps_it() {
    let now = Instant::now();
    let will = || crate::codec::Will {
        topic: topic("w"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties {
            will_delay_interval: Some(5),
            ..WillProperties::default()
        },
    };
    let with_will = || crate::codec::Connect {
        will: Some(will()),
        ..connect(ProtocolVersion::V5, 60)
    };
    let mut normal = session_with(with_will(), now);
    handle(
        &mut normal,
        now,
        Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
    )
    .expect("ok");
    assert!(normal.take_will().is_none());

    let mut with_will_reason = session_with(with_will(), now);
    let out = handle(
        &mut with_will_reason,
        now,
        Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWillMessage)),
    )
    .expect("ok");
    assert!(matches!(out[..], [Action::ClientDisconnected]));
    let will = with_will_reason.take_will().expect("will kept");
    assert_eq!(will.delay, 5);
    let message = will.publish(now);
    assert_eq!(message.topic.as_str(), "w");
    assert!(message.retain);
    assert_eq!(message.origin, Some(Origin(7)));
}

#[test]
fn disconnect_cannot_extend_a_session_that_was_to_end() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5, now);
    let extend = Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties: DisconnectProperties {
            session_expiry_interval: Some(30),
            ..DisconnectProperties::default()
        },
    });
    assert_eq!(
        handle(&mut s, now, extend).expect_err("refused").reason,
        ReasonCode::ProtocolError
    );

    let mut c = connect(ProtocolVersion::V5, 60);
    c.properties.session_expiry_interval = Some(10);
    let mut persistent = session_with(c, now);
    let shorten = Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties: DisconnectProperties {
            session_expiry_interval: Some(0),
            ..DisconnectProperties::default()
        },
    });
    handle(&mut persistent, now, shorten).expect("ok");
    assert_eq!(persistent.expiry_interval(), 0);
}

#[test]
fn packets_only_a_server_sends_and_a_second_connect_are_protocol_errors() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5, now);
    for packet in [
        Packet::PingResp,
        Packet::Connect(Box::new(connect(ProtocolVersion::V5, 60))),
        Packet::Auth(crate::codec::Auth {
            reason: ReasonCode::ReAuthenticate,
            properties: Default::default(),
        }),
    ] {
        let name = packet.name();
        let close = handle(&mut s, now, packet).expect_err(name);
        assert_eq!(close.reason, ReasonCode::ProtocolError, "{name}");
    }
}

#[test]
fn a_will_expiry_runs_from_its_publication_not_from_the_disconnect() {
    let t0 = Instant::now();
    let mut c = connect(ProtocolVersion::V5, 60);
    c.will = Some(crate::codec::Will {
        topic: topic("w"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: Some(30),
            message_expiry_interval: Some(10),
            ..WillProperties::default()
        },
    });
    let mut s = session_with(c, t0);
    let will = s.take_will().expect("will");
    // Published 30 s after the disconnect (its delay), it then lives its full 10 s.
    let published = t0 + Duration::from_secs(30);
    let message = will.publish(published);
    assert_eq!(
        message.expires_at,
        Some(published + Duration::from_secs(10))
    );
    assert_eq!(message.remaining_expiry(published), Some(10));
}
