//! The storage seam: a server started on a store that another server filled resumes its persistent
//! sessions (subscriptions and expiry) and retained messages. The store here is the in-memory
//! backend; database backends pass the same contract.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{RawClient, connect_packet};
use starling::codec::{
    Disconnect, Packet, PacketId, ProtocolVersion, Publish, PublishProperties, QoS, ReasonCode,
    Subscribe, SubscribeProperties, SubscriptionOptions,
};
use starling::config::ListenerConfig;
use starling::storage::{MemoryStore, Store};
use starling::topic::{TopicFilter, TopicName};
use starling::{Config, Server};
use tokio::sync::oneshot;

struct Running {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(store: &Arc<MemoryStore>) -> Running {
    let config = Config {
        listeners: vec![ListenerConfig::tcp("127.0.0.1:0".parse().expect("addr"))],
        ..Config::default()
    };
    let store: Arc<dyn Store> = store.clone();
    let server = Server::bind_with_store(config, Some(store))
        .await
        .expect("bind");
    let addr = server.local_addrs()[0];
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("runs");
    });
    Running { addr, stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task");
    }
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

async fn persistent_v5(
    addr: std::net::SocketAddr,
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

async fn subscribe(client: &mut RawClient, filter: &str) {
    client
        .send(&Packet::Subscribe(Subscribe {
            packet_id: id(1),
            properties: SubscribeProperties::default(),
            filters: vec![(
                TopicFilter::new(filter).expect("valid"),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            )],
        }))
        .await;
    assert!(matches!(client.recv().await, Packet::SubAck(_)));
}

async fn publish(client: &mut RawClient, topic: &str, payload: &'static [u8], retain: bool) {
    client
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain,
            topic: TopicName::new(topic).expect("valid"),
            packet_id: Some(id(7)),
            properties: PublishProperties::default(),
            payload: bytes::Bytes::from_static(payload),
        }))
        .await;
    assert!(matches!(client.recv().await, Packet::PubAck(_)));
}

async fn disconnect(mut client: RawClient) {
    client
        .send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    assert!(client.recv_until_closed().await.is_empty());
}

#[tokio::test]
async fn persistent_sessions_and_retained_messages_survive_a_server_restart() {
    let store = Arc::new(MemoryStore::new());
    let first = start(&store).await;
    let (mut sub, present) = persistent_v5(first.addr, "keeper", true, 300).await;
    assert!(!present);
    subscribe(&mut sub, "plant/#").await;
    disconnect(sub).await;
    let (mut passing, _) = persistent_v5(first.addr, "passer-by", true, 0).await;
    publish(&mut passing, "plant/boiler/state", b"on", true).await;
    disconnect(passing).await;
    first.stop().await;

    let second = start(&store).await;
    let (mut sub, present) = persistent_v5(second.addr, "keeper", false, 300).await;
    assert!(present, "the persistent session was restored");
    let (gone, present) = persistent_v5(second.addr, "passer-by", false, 0).await;
    assert!(
        !present,
        "a session that ended at disconnect is not restored"
    );
    disconnect(gone).await;

    let (mut publisher, _) =
        RawClient::connect(second.addr, ProtocolVersion::V311, "pub", true).await;
    publish(&mut publisher, "plant/pump/state", b"off", false).await;
    match sub.recv().await {
        Packet::Publish(p) => {
            assert_eq!(p.topic.as_str(), "plant/pump/state");
            assert_eq!(&p.payload[..], b"off");
        }
        other => panic!("expected the message via the restored subscription, got {other:?}"),
    }

    let (mut late, _) = RawClient::connect(second.addr, ProtocolVersion::V311, "late", true).await;
    subscribe(&mut late, "plant/+/state").await;
    match late.recv().await {
        Packet::Publish(p) => {
            assert_eq!(p.topic.as_str(), "plant/boiler/state");
            assert_eq!(&p.payload[..], b"on");
            assert!(p.retain, "served as a retained message");
        }
        other => panic!("expected the restored retained message, got {other:?}"),
    }
    second.stop().await;
}

#[tokio::test]
async fn a_restored_session_still_expires_on_time() {
    let store = Arc::new(MemoryStore::new());
    let first = start(&store).await;
    let (sub, _) = persistent_v5(first.addr, "brief", true, 1).await;
    disconnect(sub).await;
    first.stop().await;

    let second = start(&store).await;
    let stored = |store: &MemoryStore| {
        store
            .load()
            .expect("load")
            .sessions
            .iter()
            .any(|s| &*s.record.client_id == "brief")
    };
    assert!(stored(&store), "restored and still within its expiry");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !stored(&store),
        "expiry removes the session from the store too"
    );
    let (client, present) = persistent_v5(second.addr, "brief", false, 1).await;
    assert!(!present, "the 1 s expiry ran out after the restart");
    disconnect(client).await;
    second.stop().await;
}
