//! Shared test harness: an in-process broker on 127.0.0.1:0 and a raw MQTT client that speaks
//! through Starling's own codec, for assertions on exact packets.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod flows;
pub mod http;
pub mod pki;
pub mod tools;
pub mod ws;

pub use flows::publish_packet;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use starling::Config;
use starling::auth::Security;
use starling::broker::Broker;
use starling::codec::{
    self, Connect, ConnectProperties, DecodeContext, Disconnect, Packet, PacketId, ProtocolVersion,
    PubResponse, Publish, QoS, ReasonCode, Subscribe, SubscribeProperties, SubscriptionOptions,
    Will, WillProperties,
};
use starling::config::ListenerConfig;
use starling::storage::Store;
use starling::topic::{TopicFilter, TopicName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for a packet that should arrive.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// A broker running inside the test process.
pub struct TestBroker {
    pub addr: SocketAddr,
    /// Every listener's address, in the order of `config.listeners` (`addr` is the first).
    pub addrs: Vec<SocketAddr>,
    pub broker: Arc<Broker>,
    /// The password and ACL files in force, for reload tests.
    pub security: Arc<Security>,
    /// The HTTP listener's address, when the config has `[http] bind`.
    pub http: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::start_with(|_| {}).await
    }

    /// Starts a broker with the default config adjusted by `adjust`, on a free loopback port.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestBroker {
        TestBroker::start_with_store(adjust, None).await
    }

    /// Like [`TestBroker::start_with`], keeping durable state in `store` (and loading it first).
    pub async fn start_with_store(
        adjust: impl FnOnce(&mut Config),
        store: Option<Arc<dyn Store>>,
    ) -> TestBroker {
        let mut config = Config {
            listeners: vec![ListenerConfig::tcp("127.0.0.1:0".parse().expect("addr"))],
            // No `$SYS` messages unless a test asks: they would reach its `$`-topic subscribers.
            sys_interval: 0,
            ..Config::default()
        };
        adjust(&mut config);
        let server = starling::Server::bind_with_store(config, store)
            .await
            .expect("bind");
        let addrs = server.local_addrs();
        let addr = addrs[0];
        let broker = server.broker().clone();
        let security = server.security().clone();
        let http = server.http_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server runs");
        });
        TestBroker {
            addr,
            addrs,
            broker,
            security,
            http,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Shuts the broker down and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

/// A client that sends and receives exact packets, over TCP or any other byte stream (TLS,
/// the WebSocket adapter in [`ws`]).
pub struct RawClient<S = TcpStream> {
    pub stream: S,
    pub version: ProtocolVersion,
    buf: BytesMut,
}

impl RawClient {
    pub async fn connect_tcp(addr: SocketAddr, version: ProtocolVersion) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        RawClient::over(stream, version)
    }

    /// Connects and completes the MQTT handshake; returns the client and the CONNACK.
    pub async fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        clean_start: bool,
    ) -> (RawClient, codec::ConnAck) {
        RawClient::connect_with(addr, connect_packet(version, client_id, clean_start)).await
    }

    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (RawClient, codec::ConnAck) {
        RawClient::connect_tcp(addr, connect.protocol)
            .await
            .handshake(connect)
            .await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// A client on an already connected stream, before CONNECT.
    pub fn over(stream: S, version: ProtocolVersion) -> RawClient<S> {
        RawClient {
            stream,
            version,
            buf: BytesMut::new(),
        }
    }

    /// Sends `connect` and returns the client with the CONNACK.
    pub async fn handshake(mut self, connect: Connect) -> (RawClient<S>, codec::ConnAck) {
        self.send(&Packet::Connect(Box::new(connect))).await;
        match self.recv().await {
            Packet::ConnAck(ack) => (self, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: &Packet) {
        let bytes = codec::encode_to_bytes(packet, self.version).expect("encode");
        self.send_raw(&bytes).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// The next packet, failing the test after [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> Packet {
        match self.recv_within(RECV_TIMEOUT).await {
            Some(packet) => packet,
            None => panic!("no packet within {RECV_TIMEOUT:?}"),
        }
    }

    /// The next packet, or `None` if none arrives in time. Panics if the connection closes.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Packet> {
        match tokio::time::timeout(wait, self.next_packet()).await {
            Ok(Some(packet)) => Some(packet),
            Ok(None) => panic!("connection closed while waiting for a packet"),
            Err(_) => None,
        }
    }

    /// Reads until the broker closes the connection; returns the packets that came first.
    pub async fn recv_until_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        loop {
            match tokio::time::timeout(RECV_TIMEOUT, self.next_packet()).await {
                Ok(Some(packet)) => packets.push(packet),
                Ok(None) => return packets,
                Err(_) => panic!("connection still open after {RECV_TIMEOUT:?}; got {packets:?}"),
            }
        }
    }

    /// The next packet, or `None` once the broker has closed the connection; fails the test if
    /// neither happens within [`RECV_TIMEOUT`].
    pub async fn recv_or_closed(&mut self) -> Option<Packet> {
        match tokio::time::timeout(RECV_TIMEOUT, self.next_packet()).await {
            Ok(packet) => packet,
            Err(_) => panic!("neither a packet nor a close within {RECV_TIMEOUT:?}"),
        }
    }

    async fn next_packet(&mut self) -> Option<Packet> {
        let ctx = DecodeContext {
            version: self.version,
            ..DecodeContext::default()
        };
        loop {
            if let Some(packet) =
                codec::decode(&mut self.buf, &ctx).expect("broker sent a valid packet")
            {
                return Some(packet);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

/// A CONNECT with keep alive 60 and no will.
pub fn connect_packet(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
    Connect {
        protocol: version,
        clean_start,
        keep_alive: 60,
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

/// A CONNECT carrying a will.
pub fn connect_with_will(version: ProtocolVersion, client_id: &str, will: Will) -> Connect {
    Connect {
        will: Some(will),
        ..connect_packet(version, client_id, true)
    }
}

/// A packet id for tests; panics on 0.
pub fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("packet ids are not zero")
}

/// A valid topic name for tests.
pub fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("valid topic name")
}

/// A will on `topic_name` with no properties.
pub fn will(topic_name: &str, payload: &[u8], qos: QoS, retain: bool) -> Will {
    Will {
        topic: topic(topic_name),
        payload: Bytes::copy_from_slice(payload),
        qos,
        retain,
        properties: WillProperties::default(),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// Subscribes to one filter with packet id 1 and returns the SUBACK's reason codes.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<ReasonCode> {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: SubscribeProperties::default(),
            filters: vec![(
                TopicFilter::new(filter).expect("valid filter"),
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            )],
        }))
        .await;
        match self.recv().await {
            Packet::SubAck(ack) if ack.packet_id == pid(1) => ack.reasons,
            other => panic!("expected SUBACK for packet id 1, got {other:?}"),
        }
    }

    /// Publishes and completes the QoS 1/2 exchange, so the message has been routed when this
    /// returns; for QoS 0, a PINGREQ round trip after the PUBLISH gives the same guarantee (the
    /// broker handles one connection's packets in order).
    pub async fn publish(&mut self, topic_name: &str, payload: &[u8], qos: QoS, packet_id: u16) {
        self.send(&Packet::Publish(publish_packet(
            topic_name, payload, qos, packet_id,
        )))
        .await;
        match qos {
            QoS::AtMostOnce => self.ping().await,
            QoS::AtLeastOnce => match self.recv().await {
                Packet::PubAck(ack) if ack.packet_id == pid(packet_id) => {}
                other => panic!("expected PUBACK {packet_id}, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                match self.recv().await {
                    Packet::PubRec(rec) if rec.packet_id == pid(packet_id) => {}
                    other => panic!("expected PUBREC {packet_id}, got {other:?}"),
                }
                self.send(&Packet::PubRel(PubResponse::success(pid(packet_id))))
                    .await;
                match self.recv().await {
                    Packet::PubComp(comp) if comp.packet_id == pid(packet_id) => {}
                    other => panic!("expected PUBCOMP {packet_id}, got {other:?}"),
                }
            }
        }
    }

    /// PINGREQ, and expects PINGRESP as the next packet.
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        match self.recv().await {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }

    /// The next packet, which must be a PUBLISH.
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(publish) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Sends a normal DISCONNECT and waits until the broker has closed the connection; returns
    /// whatever the broker sent before closing.
    pub async fn disconnect(mut self) -> Vec<Packet> {
        self.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
            .await;
        self.recv_until_closed().await
    }
}
