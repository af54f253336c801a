//! How acknowledgements follow the store, in-process with test doubles: in `always` mode a PUBACK
//! waits until its batch is applied; when the store fails, what it could not record is never
//! acknowledged, QoS 1/2 publishes are refused with a reason (5.0) while QoS 0 keeps flowing, and
//! the broker recovers by itself once the store works again.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::flows::{eventually, publish_packet};
use common::{RawClient, TestBroker, connect_packet};
use parking_lot::{Condvar, Mutex};
use starling::codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use starling::storage::{
    FailingStore, MemoryStore, Snapshot, Store, StoreError, StoreOp, SyncMode,
};

/// A store whose writes block while its gate is closed: the batch is "being written to disk".
#[derive(Default)]
struct GatedStore {
    inner: MemoryStore,
    closed: Mutex<bool>,
    opened: Condvar,
}

impl GatedStore {
    fn close(&self) {
        *self.closed.lock() = true;
    }

    fn open(&self) {
        *self.closed.lock() = false;
        self.opened.notify_all();
    }
}

impl Store for GatedStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }

    fn apply(&self, batch: &[StoreOp], durable: bool) -> Result<(), StoreError> {
        let mut closed = self.closed.lock();
        while *closed {
            self.opened.wait(&mut closed);
        }
        drop(closed);
        self.inner.apply(batch, durable)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
}

async fn start(sync: SyncMode, store: Arc<dyn Store>) -> TestBroker {
    TestBroker::start_with_store(|config| config.storage.sync = sync, Some(store)).await
}

async fn connect_v5(addr: SocketAddr, client_id: &str, expiry: u32) -> RawClient {
    let mut connect = connect_packet(ProtocolVersion::V5, client_id, true);
    connect.properties.session_expiry_interval = Some(expiry);
    let (client, ack) = RawClient::connect_with(addr, connect).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    client
}

/// A persistent subscriber to `topic`, offline, so QoS 1 messages on it must be stored.
async fn offline_subscriber(addr: SocketAddr, filter: &str) {
    let mut sub = connect_v5(addr, "keeper", 600).await;
    sub.subscribe(filter, QoS::AtLeastOnce).await;
    assert!(sub.disconnect().await.is_empty());
}

#[tokio::test]
async fn in_always_mode_puback_waits_for_the_store_and_in_periodic_mode_it_does_not() {
    for (sync, waits) in [(SyncMode::Always, true), (SyncMode::Periodic, false)] {
        let store = Arc::new(GatedStore::default());
        let broker = start(sync, store.clone()).await;
        offline_subscriber(broker.addr, "g/#").await;
        let (mut publisher, _) =
            RawClient::connect(broker.addr, ProtocolVersion::V311, "pub", true).await;
        store.close();
        publisher
            .send(&Packet::Publish(publish_packet(
                "g/1",
                b"x",
                QoS::AtLeastOnce,
                1,
            )))
            .await;
        let early = publisher.recv_within(Duration::from_millis(500)).await;
        if waits {
            // Deterministic, not a timing check: the store cannot finish while its gate is shut.
            assert!(
                early.is_none(),
                "{sync:?}: PUBACK before the store applied the message: {early:?}"
            );
            store.open();
            match publisher.recv().await {
                Packet::PubAck(ack) => assert_eq!(ack.reason, ReasonCode::Success),
                other => panic!("expected PUBACK, got {other:?}"),
            }
        } else {
            assert!(
                matches!(early, Some(Packet::PubAck(_))),
                "{sync:?}: PUBACK does not wait for the disk: {early:?}"
            );
            store.open();
        }
        eventually("the message is stored", || {
            store.load().expect("load").messages.len() == 1
        })
        .await;
        broker.stop().await;
    }
}

#[tokio::test]
async fn a_failing_store_stops_acknowledgements_keeps_qos0_flowing_and_recovers() {
    let failing = Arc::new(FailingStore::new(Arc::new(MemoryStore::new())));
    let switch = failing.switch();
    let broker = start(SyncMode::Always, failing).await;
    offline_subscriber(broker.addr, "f/#").await;
    let mut watcher = connect_v5(broker.addr, "watcher", 0).await;
    watcher.subscribe("f/#", QoS::AtMostOnce).await;

    switch.fail_all(StoreError::Full("no space left on device (test)".into()));
    // The first message meets the failure in its batch: it is never acknowledged.
    let mut first = connect_v5(broker.addr, "first", 0).await;
    first
        .send(&Packet::Publish(publish_packet(
            "f/1",
            b"lost",
            QoS::AtLeastOnce,
            1,
        )))
        .await;
    let before_close = first.recv_until_closed().await;
    assert!(
        !before_close.iter().any(|p| matches!(p, Packet::PubAck(_))),
        "a message the store could not record was acknowledged: {before_close:?}"
    );
    eventually("the broker knows the store fails", || {
        broker.broker.store_fault() == Some(ReasonCode::QuotaExceeded)
    })
    .await;

    // Now QoS 1 and 2 are refused with the reason, on a connection that stays open.
    let mut v5 = connect_v5(broker.addr, "v5", 0).await;
    let refused = v5
        .publish_and_wait(publish_packet("f/2", b"no", QoS::AtLeastOnce, 2))
        .await
        .expect("PUBACK");
    assert_eq!(refused.reason, ReasonCode::QuotaExceeded);
    let refused = v5
        .publish_and_wait(publish_packet("f/3", b"no", QoS::ExactlyOnce, 3))
        .await
        .expect("PUBREC");
    assert_eq!(refused.reason, ReasonCode::QuotaExceeded);
    // QoS 0 still flows to online subscribers.
    v5.publish_and_wait(publish_packet("f/zero", b"live", QoS::AtMostOnce, 0))
        .await;
    let mut seen = Vec::new();
    while let Some(packet) = watcher.recv_within(Duration::from_secs(2)).await {
        if let Packet::Publish(p) = packet {
            seen.push(p.topic.to_string());
            if p.topic.as_str() == "f/zero" {
                break;
            }
        }
    }
    assert!(
        seen.contains(&"f/zero".to_owned()),
        "QoS 0 kept flowing: {seen:?}"
    );
    assert!(
        !seen.iter().any(|t| t == "f/2" || t == "f/3"),
        "refused messages were not routed: {seen:?}"
    );
    // 3.1.1 cannot refuse a PUBLISH: the client is disconnected instead.
    let (mut v3, _) = RawClient::connect(broker.addr, ProtocolVersion::V311, "v3", true).await;
    v3.send(&Packet::Publish(publish_packet(
        "f/4",
        b"no",
        QoS::AtLeastOnce,
        4,
    )))
    .await;
    let closing = v3.recv_until_closed().await;
    assert!(
        !closing.iter().any(|p| matches!(p, Packet::PubAck(_))),
        "3.1.1 got no PUBACK: {closing:?}"
    );
    assert!(switch.refused() > 0);

    // Space returns: the writer notices by itself and acknowledgements resume.
    switch.recover();
    eventually("the broker sees the store work again", || {
        broker.broker.store_fault().is_none()
    })
    .await;
    let ack = v5
        .publish_and_wait(publish_packet("f/5", b"kept", QoS::AtLeastOnce, 5))
        .await
        .expect("PUBACK");
    assert_eq!(ack.reason, ReasonCode::Success);
    broker.stop().await;
}
