//! Packet flows the integration tests share: SUBSCRIBE / UNSUBSCRIBE / PUBLISH exchanges for
//! [`RawClient`], hand-built frames for input the codec refuses to encode, and rumqttc clients
//! (3.1.1 and 5.0) whose event loop runs in a task and reports what arrives on a channel.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use starling::codec::{
    Packet, PubResponse, Publish, PublishProperties, QoS, SubAck, Subscribe, SubscribeProperties,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};
use starling::topic::TopicFilter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{RECV_TIMEOUT, RawClient};
pub use super::{pid, topic};

/// How long a test listens to conclude that nothing more arrives.
pub const QUIET: Duration = Duration::from_millis(300);

pub fn filter(text: &str) -> TopicFilter {
    TopicFilter::new(text).expect("valid topic filter")
}

/// Subscription options with this QoS and every 5.0 option at its default.
pub fn sub_opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

/// A SUBSCRIBE without properties.
pub fn subscribe_packet(packet_id: u16, filters: &[(&str, SubscriptionOptions)]) -> Subscribe {
    Subscribe {
        packet_id: pid(packet_id),
        properties: SubscribeProperties::default(),
        filters: filters
            .iter()
            .map(|&(text, options)| (filter(text), options))
            .collect(),
    }
}

/// A PUBLISH without properties; `packet_id` is used only for QoS 1 and 2.
pub fn publish_packet(
    topic_name: &str,
    payload: impl AsRef<[u8]>,
    qos: QoS,
    packet_id: u16,
) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic(topic_name),
        packet_id: (qos != QoS::AtMostOnce).then(|| pid(packet_id)),
        properties: PublishProperties::default(),
        payload: Bytes::copy_from_slice(payload.as_ref()),
    }
}

/// A retained PUBLISH without properties.
pub fn retained_packet(
    topic_name: &str,
    payload: impl AsRef<[u8]>,
    qos: QoS,
    packet_id: u16,
) -> Publish {
    Publish {
        retain: true,
        ..publish_packet(topic_name, payload, qos, packet_id)
    }
}

/// A whole frame: the first byte, the remaining length as a variable byte integer, the body.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// Bytes with their two-byte length prefix (an MQTT string or binary field).
pub fn prefixed(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).expect("short field");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A PUBLISH frame built by hand. `properties` is the 5.0 property block without its length,
/// or `None` for 3.1.1 (no property block at all).
pub fn raw_publish(
    first: u8,
    topic_bytes: &[u8],
    packet_id: Option<u16>,
    properties: Option<&[u8]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = prefixed(topic_bytes);
    if let Some(id) = packet_id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    if let Some(props) = properties {
        let len = u8::try_from(props.len()).expect("short property block");
        assert!(len < 128, "one-byte property length");
        body.push(len);
        body.extend_from_slice(props);
    }
    body.extend_from_slice(payload);
    frame(first, &body)
}

/// A SUBSCRIBE frame built by hand with one filter, for filters the codec refuses to encode.
/// `v5` adds the (empty) property block.
pub fn raw_subscribe(v5: bool, packet_id: u16, filter_bytes: &[u8], options: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(&prefixed(filter_bytes));
    body.push(options);
    frame(0x82, &body)
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// Sends SUBSCRIBE; the next packet must be its SUBACK.
    pub async fn subscribe_filters(&mut self, packet_id: u16, filters: &[(&str, QoS)]) -> SubAck {
        let filters: Vec<(&str, SubscriptionOptions)> =
            filters.iter().map(|&(f, qos)| (f, sub_opts(qos))).collect();
        self.subscribe_with(subscribe_packet(packet_id, &filters))
            .await
    }

    /// Sends a SUBSCRIBE as given; the next packet must be its SUBACK.
    pub async fn subscribe_with(&mut self, subscribe: Subscribe) -> SubAck {
        let id = subscribe.packet_id;
        self.send(&Packet::Subscribe(subscribe)).await;
        match self.recv().await {
            Packet::SubAck(ack) => {
                assert_eq!(
                    ack.packet_id, id,
                    "SUBACK carries the SUBSCRIBE's packet id"
                );
                ack
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Sends UNSUBSCRIBE; the next packet must be its UNSUBACK.
    pub async fn unsubscribe(&mut self, packet_id: u16, filters: &[&str]) -> UnsubAck {
        let unsubscribe = Unsubscribe {
            packet_id: pid(packet_id),
            user_properties: Vec::new(),
            filters: filters.iter().map(|f| filter(f)).collect(),
        };
        self.send(&Packet::Unsubscribe(unsubscribe)).await;
        match self.recv().await {
            Packet::UnsubAck(ack) => {
                assert_eq!(
                    ack.packet_id.get(),
                    packet_id,
                    "UNSUBACK carries the packet id"
                );
                ack
            }
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// Publishes and completes the flow for its QoS, so the broker has routed the message when
    /// this returns: QoS 0 is followed by a PINGREQ/PINGRESP round trip, QoS 1 waits for PUBACK,
    /// QoS 2 goes through PUBREC, PUBREL, PUBCOMP. Returns the PUBACK or PUBREC. The acks must
    /// be the next packets, so the publisher must not receive its own message meanwhile.
    pub async fn publish_and_wait(&mut self, publish: Publish) -> Option<PubResponse> {
        let (qos, id) = (publish.qos, publish.packet_id);
        self.send(&Packet::Publish(publish)).await;
        match qos {
            QoS::AtMostOnce => {
                self.ping().await;
                None
            }
            QoS::AtLeastOnce => match self.recv().await {
                Packet::PubAck(ack) if Some(ack.packet_id) == id => Some(ack),
                other => panic!("expected PUBACK for {id:?}, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                let rec = match self.recv().await {
                    Packet::PubRec(rec) if Some(rec.packet_id) == id => rec,
                    other => panic!("expected PUBREC for {id:?}, got {other:?}"),
                };
                if rec.reason.is_error() {
                    return Some(rec);
                }
                self.send(&Packet::PubRel(PubResponse::success(rec.packet_id)))
                    .await;
                match self.recv().await {
                    Packet::PubComp(comp) if comp.packet_id == rec.packet_id => {}
                    other => panic!("expected PUBCOMP for {id:?}, got {other:?}"),
                }
                Some(rec)
            }
        }
    }

    /// The next packet must be a PUBLISH; acknowledges it (PUBACK, or PUBREC/PUBREL/PUBCOMP)
    /// and returns it.
    pub async fn recv_publish_acked(&mut self) -> Publish {
        let publish = self.recv_publish().await;
        self.ack(&publish).await;
        publish
    }

    /// Receives exactly `count` PUBLISHes, each within [`RECV_TIMEOUT`], acknowledging as it
    /// goes (PUBACK; PUBREC, then PUBCOMP when the PUBREL comes) so the broker's inflight window
    /// keeps moving; then listens for [`QUIET`] to make sure no further PUBLISH follows. Any
    /// other packet fails the test.
    pub async fn recv_publishes(&mut self, count: usize) -> Vec<Publish> {
        let mut received = Vec::with_capacity(count);
        loop {
            let packet = if received.len() < count {
                self.recv().await
            } else {
                match self.recv_within(QUIET).await {
                    Some(packet) => packet,
                    None => return received,
                }
            };
            match packet {
                Packet::Publish(publish) => {
                    assert!(
                        received.len() < count,
                        "expected {count} PUBLISHes, then another: {publish:?} after {received:?}"
                    );
                    match (publish.qos, publish.packet_id) {
                        (QoS::AtMostOnce, _) => {}
                        (QoS::AtLeastOnce, Some(id)) => {
                            self.send(&Packet::PubAck(PubResponse::success(id))).await;
                        }
                        (QoS::ExactlyOnce, Some(id)) => {
                            self.send(&Packet::PubRec(PubResponse::success(id))).await;
                        }
                        (_, None) => panic!("QoS 1/2 PUBLISH without packet id: {publish:?}"),
                    }
                    received.push(publish);
                }
                Packet::PubRel(rel) => {
                    self.send(&Packet::PubComp(PubResponse::success(rel.packet_id)))
                        .await;
                }
                other => panic!("expected only PUBLISH and PUBREL, got {other:?}"),
            }
        }
    }

    /// Completes the receiver's side of a delivery's QoS flow. For QoS 2 the next packet must be
    /// the PUBREL: use [`RawClient::recv_publishes`] when more deliveries may be on their way.
    pub async fn ack(&mut self, publish: &Publish) {
        match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => {}
            (QoS::AtLeastOnce, Some(id)) => {
                self.send(&Packet::PubAck(PubResponse::success(id))).await;
            }
            (QoS::ExactlyOnce, Some(id)) => {
                self.send(&Packet::PubRec(PubResponse::success(id))).await;
                match self.recv().await {
                    Packet::PubRel(rel) if rel.packet_id == id => {}
                    other => panic!("expected PUBREL for {id:?}, got {other:?}"),
                }
                self.send(&Packet::PubComp(PubResponse::success(id))).await;
            }
            (_, None) => panic!("QoS 1/2 PUBLISH without packet id: {publish:?}"),
        }
    }

    /// Fails the test if any packet arrives within [`QUIET`].
    pub async fn assert_quiet(&mut self) {
        if let Some(packet) = self.recv_within(QUIET).await {
            panic!("expected nothing, got {packet:?}");
        }
    }
}

/// [`RawClient::recv_publishes`] on several clients at once, each expecting its own count (one
/// quiet window for all); results in the clients' order.
pub async fn recv_publishes_all(
    clients: Vec<(RawClient, usize)>,
) -> Vec<(RawClient, Vec<Publish>)> {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(mut c, count)| {
            tokio::spawn(async move {
                let got = c.recv_publishes(count).await;
                (c, got)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.expect("receiving task"));
    }
    out
}

/// Polls `condition` until it holds, failing the test after [`RECV_TIMEOUT`].
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A rumqttc 3.1.1 client whose event loop runs in its own task.
pub struct V4Client {
    pub client: rumqttc::AsyncClient,
    events: mpsc::UnboundedReceiver<rumqttc::Event>,
    task: JoinHandle<()>,
}

impl V4Client {
    /// Connects and waits for the CONNACK; `adjust` edits the options first.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        adjust: impl FnOnce(&mut rumqttc::MqttOptions),
    ) -> V4Client {
        let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        adjust(&mut options);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(event) => {
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                    // The receiver sees the channel close and reports it.
                    Err(_) => return,
                }
            }
        });
        let mut connected = V4Client {
            client,
            events,
            task,
        };
        match connected.next_incoming().await {
            rumqttc::Packet::ConnAck(ack) => {
                assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success, "CONNACK");
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        connected
    }

    /// The next packet from the broker.
    pub async fn next_incoming(&mut self) -> rumqttc::Packet {
        loop {
            match tokio::time::timeout(RECV_TIMEOUT, self.events.recv()).await {
                Ok(Some(rumqttc::Event::Incoming(packet))) => return packet,
                Ok(Some(rumqttc::Event::Outgoing(_))) => {}
                Ok(None) => panic!("rumqttc 3.1.1 connection ended"),
                Err(_) => panic!("nothing from the broker within {RECV_TIMEOUT:?}"),
            }
        }
    }

    /// The next PUBLISH, skipping acks and ping responses.
    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        loop {
            if let rumqttc::Packet::Publish(publish) = self.next_incoming().await {
                return publish;
            }
        }
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) -> rumqttc::SubAck {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("subscribe request");
        loop {
            if let rumqttc::Packet::SubAck(ack) = self.next_incoming().await {
                return ack;
            }
        }
    }
}

impl Drop for V4Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A rumqttc 5.0 client whose event loop runs in its own task.
pub struct V5Client {
    pub client: rumqttc::v5::AsyncClient,
    events: mpsc::UnboundedReceiver<rumqttc::v5::Event>,
    task: JoinHandle<()>,
}

impl V5Client {
    /// Connects and waits for the CONNACK; `adjust` edits the options first.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        adjust: impl FnOnce(&mut rumqttc::v5::MqttOptions),
    ) -> V5Client {
        let mut options =
            rumqttc::v5::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        adjust(&mut options);
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 100);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(event) => {
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let mut connected = V5Client {
            client,
            events,
            task,
        };
        match connected.next_incoming().await {
            rumqttc::v5::mqttbytes::v5::Packet::ConnAck(ack) => {
                assert_eq!(
                    ack.code,
                    rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success,
                    "CONNACK"
                );
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        connected
    }

    /// The next packet from the broker.
    pub async fn next_incoming(&mut self) -> rumqttc::v5::mqttbytes::v5::Packet {
        loop {
            match tokio::time::timeout(RECV_TIMEOUT, self.events.recv()).await {
                Ok(Some(rumqttc::v5::Event::Incoming(packet))) => return packet,
                Ok(Some(rumqttc::v5::Event::Outgoing(_))) => {}
                Ok(None) => panic!("rumqttc 5.0 connection ended"),
                Err(_) => panic!("nothing from the broker within {RECV_TIMEOUT:?}"),
            }
        }
    }

    /// The next PUBLISH, skipping acks and ping responses.
    pub async fn next_publish(&mut self) -> rumqttc::v5::mqttbytes::v5::Publish {
        loop {
            if let rumqttc::v5::mqttbytes::v5::Packet::Publish(publish) = self.next_incoming().await
            {
                return publish;
            }
        }
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::v5::mqttbytes::QoS,
    ) -> rumqttc::v5::mqttbytes::v5::SubAck {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("subscribe request");
        loop {
            if let rumqttc::v5::mqttbytes::v5::Packet::SubAck(ack) = self.next_incoming().await {
                return ack;
            }
        }
    }
}

impl Drop for V5Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}
