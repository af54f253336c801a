//! The storage seam: a server started on a store that another server filled resumes its persistent
//! sessions (subscriptions, queued messages and expiry) and retained messages. The store here is
//! the in-memory backend, restarted in-process; tests/11_persistence.rs kills real processes on
//! the database backends.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::flows::{eventually, publish_packet, retained_packet};
use common::{RawClient, TestBroker, connect_packet, pid};
use starling::codec::{Packet, ProtocolVersion, PubResponse, QoS, ReasonCode};
use starling::storage::{MemoryStore, Store};

async fn start(store: &Arc<MemoryStore>) -> TestBroker {
    let store: Arc<dyn Store> = store.clone();
    TestBroker::start_with_store(|_| {}, Some(store)).await
}

/// A 5.0 client with the given clean start and session expiry; returns it and Session Present.
async fn connect_v5(
    addr: SocketAddr,
    client_id: &str,
    clean: bool,
    expiry: u32,
) -> (RawClient, bool) {
    let mut connect = connect_packet(ProtocolVersion::V5, client_id, clean);
    connect.properties.session_expiry_interval = Some(expiry);
    let (client, ack) = RawClient::connect_with(addr, connect).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    (client, ack.session_present)
}

fn stored(store: &MemoryStore, client_id: &str) -> bool {
    store
        .load()
        .expect("load")
        .sessions
        .iter()
        .any(|s| &*s.record.client_id == client_id)
}

#[tokio::test]
async fn persistent_sessions_and_retained_messages_survive_a_server_restart() {
    let store = Arc::new(MemoryStore::new());
    let first = start(&store).await;
    let (mut keeper, present) = connect_v5(first.addr, "keeper", true, 300).await;
    assert!(!present);
    assert_eq!(
        keeper.subscribe("plant/#", QoS::AtLeastOnce).await,
        vec![ReasonCode::GrantedQoS1]
    );
    assert!(keeper.disconnect().await.is_empty());
    let (mut passer_by, _) = connect_v5(first.addr, "passer-by", true, 0).await;
    passer_by
        .publish_and_wait(retained_packet(
            "plant/boiler/state",
            b"on",
            QoS::AtLeastOnce,
            7,
        ))
        .await;
    assert!(passer_by.disconnect().await.is_empty());
    first.stop().await;

    let second = start(&store).await;
    let (mut keeper, present) = connect_v5(second.addr, "keeper", false, 300).await;
    assert!(present, "the persistent session was restored");
    let queued = keeper.recv_publish().await;
    assert_eq!(
        (queued.topic.as_str(), &queued.payload[..], queued.dup),
        ("plant/boiler/state", &b"on"[..], false),
        "the message queued while it was offline survived the restart, never sent before"
    );
    let (gone, present) = connect_v5(second.addr, "passer-by", false, 0).await;
    assert!(
        !present,
        "a session that ended at disconnect is not restored"
    );
    assert!(gone.disconnect().await.is_empty());

    let (mut publisher, _) =
        RawClient::connect(second.addr, ProtocolVersion::V311, "pub", true).await;
    publisher
        .publish("plant/pump/state", b"off", QoS::AtLeastOnce, 1)
        .await;
    let delivered = keeper.recv_publish().await;
    assert_eq!(
        delivered.topic.as_str(),
        "plant/pump/state",
        "via the restored subscription"
    );
    assert_eq!(&delivered.payload[..], b"off");

    let (mut late, _) = RawClient::connect(second.addr, ProtocolVersion::V311, "late", true).await;
    late.subscribe("plant/+/state", QoS::AtLeastOnce).await;
    let served = late.recv_publish().await;
    assert_eq!(served.topic.as_str(), "plant/boiler/state");
    assert_eq!(&served.payload[..], b"on");
    assert!(served.retain, "served as the restored retained message");
    second.stop().await;
}

#[tokio::test]
async fn a_restored_session_still_expires_on_time() {
    let store = Arc::new(MemoryStore::new());
    let first = start(&store).await;
    let (client, _) = connect_v5(first.addr, "brief", true, 1).await;
    assert!(client.disconnect().await.is_empty());
    first.stop().await;

    let second = start(&store).await;
    assert!(
        stored(&store, "brief"),
        "restored and still within its expiry"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !stored(&store, "brief"),
        "expiry removes the session from the store too"
    );
    let (client, present) = connect_v5(second.addr, "brief", false, 1).await;
    assert!(!present, "the 1 s expiry ran out after the restart");
    assert!(client.disconnect().await.is_empty());
    second.stop().await;
}

#[tokio::test]
async fn unacknowledged_deliveries_resume_after_a_restart_with_their_packet_ids() {
    let store = Arc::new(MemoryStore::new());
    let first = start(&store).await;
    let (mut sub, _) = connect_v5(first.addr, "sub", true, 300).await;
    assert_eq!(
        sub.subscribe("t/#", QoS::ExactlyOnce).await,
        vec![ReasonCode::GrantedQoS2]
    );
    let (mut publisher, _) =
        RawClient::connect(first.addr, ProtocolVersion::V311, "pub", true).await;
    publisher.publish("t/1", b"one", QoS::AtLeastOnce, 1).await;
    publisher.publish("t/2", b"two", QoS::ExactlyOnce, 2).await;

    // QoS 1 left unacknowledged; QoS 2 acknowledged with PUBREC but its PUBREL left unanswered.
    let one = sub.recv_publish().await;
    let one_id = one.packet_id.expect("QoS 1 has an id");
    let two = sub.recv_publish().await;
    let two_id = two.packet_id.expect("QoS 2 has an id");
    sub.send(&Packet::PubRec(PubResponse::success(two_id)))
        .await;
    match sub.recv().await {
        Packet::PubRel(rel) => assert_eq!(rel.packet_id, two_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    drop(sub);
    // Queued while the subscriber is away.
    publisher
        .publish("t/3", b"three", QoS::AtLeastOnce, 3)
        .await;
    first.stop().await;

    let second = start(&store).await;
    let (mut sub, present) = connect_v5(second.addr, "sub", false, 300).await;
    assert!(present);
    let resent = sub.recv_publish().await;
    assert_eq!(
        (resent.topic.as_str(), resent.dup, resent.packet_id),
        ("t/1", true, Some(one_id)),
        "the unacknowledged QoS 1 message is resent with DUP and its packet id"
    );
    match sub.recv().await {
        Packet::PubRel(rel) => assert_eq!(rel.packet_id, two_id, "PUBREL resent, not the message"),
        other => panic!("expected PUBREL for the released QoS 2 message, got {other:?}"),
    }
    sub.send(&Packet::PubAck(PubResponse::success(one_id)))
        .await;
    sub.send(&Packet::PubComp(PubResponse::success(two_id)))
        .await;
    let queued = sub.recv_publishes(1).await;
    assert_eq!(
        (queued[0].topic.as_str(), queued[0].dup),
        ("t/3", false),
        "then the message queued while offline, once"
    );
    assert!(sub.disconnect().await.is_empty());
    second.stop().await;

    let snapshot = store.load().expect("load");
    let session = snapshot
        .sessions
        .iter()
        .find(|s| &*s.record.client_id == "sub")
        .expect("sub is stored");
    assert!(
        session.queue.is_empty(),
        "acknowledged messages left the store: {:?}",
        session.queue
    );
    assert!(snapshot.messages.is_empty(), "no body is left unreferenced");
}

#[tokio::test]
async fn an_incoming_qos2_message_awaiting_pubrel_is_not_routed_twice_after_a_restart() {
    let store = Arc::new(MemoryStore::new());
    let first = start(&store).await;
    let (mut sub, _) = connect_v5(first.addr, "reader", true, 300).await;
    sub.subscribe("q/#", QoS::ExactlyOnce).await;
    let (mut publisher, _) = connect_v5(first.addr, "writer", true, 300).await;
    publisher
        .send(&Packet::Publish(publish_packet(
            "q/x",
            b"once",
            QoS::ExactlyOnce,
            9,
        )))
        .await;
    match publisher.recv().await {
        Packet::PubRec(rec) => assert_eq!(rec.reason, ReasonCode::Success),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    assert_eq!(sub.recv_publishes(1).await.len(), 1);
    drop(publisher);
    first.stop().await;

    let second = start(&store).await;
    let (mut sub, present) = connect_v5(second.addr, "reader", false, 300).await;
    assert!(present);
    let (mut publisher, present) = connect_v5(second.addr, "writer", false, 300).await;
    assert!(present);
    let mut again = publish_packet("q/x", b"once", QoS::ExactlyOnce, 9);
    again.dup = true;
    publisher.send(&Packet::Publish(again)).await;
    match publisher.recv().await {
        Packet::PubRec(rec) => assert_eq!(rec.reason, ReasonCode::Success),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    publisher
        .send(&Packet::PubRel(PubResponse::success(pid(9))))
        .await;
    match publisher.recv().await {
        Packet::PubComp(comp) => assert_eq!(
            comp.reason,
            ReasonCode::Success,
            "the packet id awaiting PUBREL was restored"
        ),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    sub.assert_quiet().await;
    second.stop().await;
}

#[tokio::test]
async fn expired_messages_queued_for_an_offline_session_leave_the_store() {
    let store = Arc::new(MemoryStore::new());
    let broker = start(&store).await;
    let (mut sub, _) = connect_v5(broker.addr, "away", true, 300).await;
    sub.subscribe("e/#", QoS::AtLeastOnce).await;
    assert!(sub.disconnect().await.is_empty());
    let (mut publisher, _) = connect_v5(broker.addr, "pub", true, 0).await;
    let mut short = publish_packet("e/short", b"s", QoS::AtLeastOnce, 1);
    short.properties.message_expiry_interval = Some(1);
    publisher.publish_and_wait(short).await;
    publisher
        .publish_and_wait(publish_packet("e/long", b"l", QoS::AtLeastOnce, 2))
        .await;
    let queue_len = || {
        store
            .load()
            .expect("load")
            .sessions
            .iter()
            .find(|s| &*s.record.client_id == "away")
            .map_or(0, |s| s.queue.len())
    };
    eventually("both messages are stored", || queue_len() == 2).await;
    broker
        .broker
        .sweep_expired(std::time::Instant::now() + Duration::from_secs(2));
    eventually("the expired one is deleted from the store", || {
        queue_len() == 1
    })
    .await;
    assert_eq!(store.load().expect("load").messages.len(), 1);
    let (mut sub, _) = connect_v5(broker.addr, "away", false, 300).await;
    let left = sub.recv_publishes(1).await;
    assert_eq!(left[0].topic.as_str(), "e/long");
    broker.stop().await;
}
