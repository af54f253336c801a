//! The storage seam: a server started on a store that another server filled resumes its persistent
//! sessions (subscriptions, queued messages and expiry) and retained messages. The store here is
//! the in-memory backend, restarted in-process; tests/11_persistence.rs kills real processes on
//! the database backends.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::flows::retained_packet;
use common::{RawClient, TestBroker, connect_packet};
use starling::codec::{ProtocolVersion, QoS, ReasonCode};
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
