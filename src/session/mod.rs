//! The MQTT session as a sans-IO state machine: packets and deliveries go in with the current
//! time, [`Action`]s come out. No sockets, clocks, locks or tokio here, so every protocol rule
//! (QoS flows, inflight windows, topic aliases, keep alive, wills) is unit-tested without a network.
//!
//! A [`Session`] outlives its network connections when the client asks for that: what belongs to
//! the session (subscriptions, unacknowledged QoS 1/2 exchanges in both directions, the will) stays
//! here, while what belongs to one connection (protocol version, the client's limits, topic
//! aliases, keep alive) is the [`Link`], replaced on every reconnect.

mod alias;
mod connect;
mod outbound;
mod subscriptions;

use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use smallvec::SmallVec;

pub use alias::{AliasError, InboundAliases, OutboundAliases, OutboundTopic};
pub use connect::{EXPIRY_NEVER, Negotiated, connack, negotiate};
pub use outbound::{AckOutcome, Outbound, OutboundState};
use subscriptions::Subscriptions;

use crate::auth::Access;
use crate::codec::{
    AckProperties, Disconnect, Packet, PacketId, PayloadFormat, ProtocolVersion, PubResponse,
    Publish, PublishProperties, PublishView, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe, Will, publish_encoded_len,
};
use crate::config::Limits;
use crate::message::{Delivery, Message, Origin, expiry_deadline};
use crate::storage::{QueuedState, StoreOp, StoredWill};
use crate::topic::{TopicFilter, TopicName};

/// A subscription as the session remembers it.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub filter: TopicFilter,
    pub options: SubscriptionOptions,
    pub id: Option<NonZeroU32>,
}

/// What the connection layer must do after the session handled an input, in order.
#[derive(Debug)]
pub enum Action {
    /// Send a control packet.
    Send(Packet),
    /// Send a PUBLISH built from a shared message.
    Publish(OutgoingPublish),
    /// Route a message the client published (and update the retained store if it is retained).
    Route(Arc<Message>),
    /// Add or replace a subscription in the router; then, if `send_retained`, feed the matching
    /// retained messages back with [`Session::enqueue_retained`].
    Subscribe {
        subscription: Subscription,
        send_retained: bool,
    },
    /// Remove a subscription from the router.
    Unsubscribe(TopicFilter),
    /// The client sent DISCONNECT: close the connection; the will goes out only if still set.
    ClientDisconnected,
    /// Record a change of the session's stored state (only for stored sessions and deliveries).
    Store(StoreOp),
}

/// Why the session wants the connection closed: a protocol violation by the client. The will is
/// published (the close is not a normal disconnect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub reason: ReasonCode,
    pub detail: &'static str,
}

impl Close {
    fn new(reason: ReasonCode, detail: &'static str) -> Self {
        Close { reason, detail }
    }
}

/// A PUBLISH on its way to this client: the shared message plus what is specific to this send.
#[derive(Debug)]
pub struct OutgoingPublish {
    pub message: Arc<Message>,
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub packet_id: Option<PacketId>,
    /// False when the topic alias alone addresses the message.
    pub send_topic: bool,
    pub topic_alias: Option<std::num::NonZeroU16>,
    pub subscription_ids: SmallVec<[NonZeroU32; 1]>,
    pub message_expiry_interval: Option<u32>,
}

impl OutgoingPublish {
    /// The borrowed form the encoder takes.
    pub fn view(&self) -> PublishView<'_> {
        PublishView {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: if self.send_topic {
                self.message.topic.as_str()
            } else {
                ""
            },
            packet_id: self.packet_id,
            properties: &self.message.properties,
            topic_alias: self.topic_alias,
            subscription_identifiers: &self.subscription_ids,
            message_expiry_interval: self.message_expiry_interval,
            payload_len: self.message.payload.len(),
        }
    }
}

/// Why a delivery was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Its Message Expiry Interval ran out while it waited ([MQTT-3.3.2-5]).
    Expired,
    /// Larger than the client's Maximum Packet Size ([MQTT-3.1.2-25]).
    TooLarge,
    /// The client's ACL does not let it read the topic.
    NotAuthorized,
}

/// The state of one network connection, fixed by its CONNECT.
#[derive(Debug)]
pub struct Link {
    pub version: ProtocolVersion,
    /// Seconds; 0 = no keep alive.
    pub keep_alive: u16,
    /// The outgoing inflight window: the client's Receive Maximum capped by ours.
    pub receive_maximum: u16,
    /// The client's Maximum Packet Size.
    pub max_packet_size: u32,
    /// The client's Topic Alias Maximum (aliases we may use towards it).
    pub topic_alias_maximum: u16,
    pub request_problem_information: bool,
    /// When the last packet arrived, for the keep alive deadline.
    pub last_received: Instant,
    pub inbound_aliases: InboundAliases,
    pub outbound_aliases: OutboundAliases,
    /// What this client may publish, subscribe to and receive (its ACL, for the user it
    /// authenticated as on this connection).
    pub access: Access,
}

impl Link {
    /// A link with the protocol defaults, before any CONNECT property is applied.
    pub fn new(version: ProtocolVersion, now: Instant) -> Self {
        Link {
            version,
            keep_alive: 0,
            receive_maximum: u16::MAX,
            max_packet_size: crate::codec::MAX_PACKET_SIZE,
            topic_alias_maximum: 0,
            request_problem_information: true,
            last_received: now,
            inbound_aliases: InboundAliases::default(),
            outbound_aliases: OutboundAliases::default(),
            access: Access::unrestricted(),
        }
    }
}

/// An MQTT session.
#[derive(Debug)]
pub struct Session {
    client_id: Arc<str>,
    /// Stamped on messages this client publishes, for No Local.
    origin: Origin,
    /// Seconds the session outlives a connection; [`EXPIRY_NEVER`] for ever.
    expiry_interval: u32,
    /// Keyed by the whole filter (share prefix included).
    subscriptions: Subscriptions,
    outbound: Outbound,
    /// Packet ids of QoS 2 messages received and routed, awaiting PUBREL (section 4.3.3: the
    /// message is delivered onward on PUBLISH and its id held until PUBREL to discard duplicates).
    inbound_qos2: BTreeSet<u16>,
    /// Boxed: most sessions have none, and it is large.
    will: Option<Box<Will>>,
    /// Retained messages matched by a new subscription, sent as the inflight window allows: never
    /// dropped for queue limits, so a late subscriber gets every retained message.
    replay: VecDeque<Delivery>,
    link: Link,
    /// Whether incoming QoS 2 packet ids are stored (a persistent session with a store).
    durable: bool,
    /// Why QoS 1/2 messages are refused right now: the store fails.
    store_fault: Option<ReasonCode>,
}

impl Session {
    /// A new, empty session for an accepted CONNECT.
    pub fn new(negotiated: Negotiated, origin: Origin) -> Self {
        Session {
            client_id: negotiated.client_id,
            origin,
            expiry_interval: negotiated.expiry_interval,
            subscriptions: Subscriptions::default(),
            outbound: Outbound::default(),
            inbound_qos2: BTreeSet::new(),
            will: negotiated.will.map(Box::new),
            replay: VecDeque::new(),
            link: negotiated.link,
            durable: false,
            store_fault: None,
        }
    }

    /// A session rebuilt from the store, offline until a connection attaches it.
    ///
    /// `inflight` holds the exchanges that were under way, in send order, and `incoming` the QoS 2
    /// packet ids still awaiting PUBREL; [`Session::resume`] picks both up on reconnect.
    pub fn restore(
        client_id: Arc<str>,
        origin: Origin,
        expiry_interval: u32,
        subscriptions: Vec<Subscription>,
        inflight: Vec<(PacketId, Delivery, OutboundState)>,
        incoming: Vec<u16>,
        now: Instant,
    ) -> Self {
        let mut outbound = Outbound::default();
        for (id, delivery, state) in inflight {
            outbound.restore(id, delivery, state);
        }
        Session {
            client_id,
            origin,
            expiry_interval,
            subscriptions: subscriptions.into_iter().collect(),
            outbound,
            inbound_qos2: incoming.into_iter().collect(),
            will: None,
            replay: VecDeque::new(),
            link: Link::new(ProtocolVersion::V311, now),
            durable: true,
            store_fault: None,
        }
    }

    /// Whether the session's incoming QoS 2 state is stored: set by the broker for a persistent
    /// session when a store is in use.
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
    }

    /// Tells the session whether the store works: while it fails, QoS 1/2 publishes are refused
    /// with this reason (5.0) or close the connection (3.1.1, which has no way to refuse one).
    pub fn set_store_fault(&mut self, fault: Option<ReasonCode>) {
        self.store_fault = fault;
    }

    /// The will as the store keeps it, for a persistent session's record.
    pub fn will_record(&self) -> Option<StoredWill> {
        let will = self.will.as_deref()?;
        Some(StoredWill {
            message: Arc::new(Message {
                topic: will.topic.clone(),
                payload: will.payload.clone(),
                qos: will.qos,
                retain: will.retain,
                properties: will_properties(will.properties.clone()),
                expires_at: None,
                origin: None,
                published_at: None,
            }),
            delay_interval: will.properties.will_delay_interval.unwrap_or(0),
        })
    }

    /// Attaches a resumed session to a new connection: the connection-scoped state is replaced,
    /// the session-scoped state kept. Then call [`Session::resume`].
    pub fn reattach(&mut self, negotiated: Negotiated) {
        self.expiry_interval = negotiated.expiry_interval;
        self.will = negotiated.will.map(Box::new);
        self.link = negotiated.link;
    }

    pub fn client_id(&self) -> &Arc<str> {
        &self.client_id
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    pub fn version(&self) -> ProtocolVersion {
        self.link.version
    }

    pub fn expiry_interval(&self) -> u32 {
        self.expiry_interval
    }

    pub fn subscriptions(&self) -> impl Iterator<Item = &Subscription> {
        self.subscriptions.iter()
    }

    pub fn inflight_len(&self) -> usize {
        self.outbound.len()
    }

    /// When the client must next be heard from: 1.5 times its keep alive after the last packet
    /// ([MQTT-3.1.2-22]). `None` when keep alive is off.
    pub fn keep_alive_deadline(&self) -> Option<Instant> {
        (self.link.keep_alive != 0).then(|| {
            self.link.last_received + Duration::from_millis(u64::from(self.link.keep_alive) * 1500)
        })
    }

    /// QoS 1/2 messages that may be started now.
    pub fn window_free(&self) -> usize {
        usize::from(self.link.receive_maximum).saturating_sub(self.outbound.len())
    }

    /// Handles one packet from the client.
    pub fn handle(
        &mut self,
        now: Instant,
        packet: Packet,
        limits: &Limits,
        out: &mut Vec<Action>,
    ) -> Result<(), Close> {
        self.link.last_received = now;
        match packet {
            Packet::Publish(publish) => self.handle_publish(now, publish, limits, out),
            Packet::PubAck(ack) => {
                let outcome = self.outbound.puback(ack.packet_id);
                self.finished(outcome, out);
                Ok(())
            }
            Packet::PubRec(rec) => {
                self.handle_pubrec(rec, out);
                Ok(())
            }
            Packet::PubRel(rel) => {
                self.handle_pubrel(rel, out);
                Ok(())
            }
            Packet::PubComp(comp) => {
                let outcome = self.outbound.pubcomp(comp.packet_id);
                self.finished(outcome, out);
                Ok(())
            }
            Packet::Subscribe(subscribe) => {
                self.handle_subscribe(subscribe, limits, out);
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe) => {
                self.handle_unsubscribe(unsubscribe, out);
                Ok(())
            }
            Packet::PingReq => {
                out.push(Action::Send(Packet::PingResp));
                Ok(())
            }
            Packet::Disconnect(disconnect) => self.handle_disconnect(disconnect, out),
            // [MQTT-3.1.0-2] a second CONNECT is a protocol error.
            Packet::Connect(_) => Err(Close::new(ReasonCode::ProtocolError, "second CONNECT")),
            // Section 4.12: AUTH is a protocol error unless CONNECT named an auth method, and
            // this broker accepts none.
            Packet::Auth(_) => Err(Close::new(
                ReasonCode::ProtocolError,
                "AUTH without an authentication method",
            )),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => Err(
                Close::new(ReasonCode::ProtocolError, "a packet only a server may send"),
            ),
        }
    }

    fn handle_publish(
        &mut self,
        now: Instant,
        publish: Publish,
        limits: &Limits,
        out: &mut Vec<Action>,
    ) -> Result<(), Close> {
        // [MQTT-3.3.4-6] a client must not send Subscription Identifiers in PUBLISH.
        if !publish.properties.subscription_identifiers.is_empty() {
            return Err(Close::new(
                ReasonCode::ProtocolError,
                "subscription identifier in a client PUBLISH",
            ));
        }
        // Section 3.3.1.3: RETAIN after CONNACK said Retain Available 0 is answered with 0x9A.
        if publish.retain && !limits.retain_available {
            return Err(Close::new(
                ReasonCode::RetainNotSupported,
                "retained messages are not available",
            ));
        }
        let topic = self.resolve_topic(&publish, limits)?;
        let refused = if !limits.topic_within_limits(topic.as_str()) {
            Some(ReasonCode::TopicNameInvalid)
        } else if !self.link.access.can_publish(topic.as_str()) {
            Some(ReasonCode::NotAuthorized)
        } else {
            None
        };
        if let Some(reason) = refused {
            self.refuse_publish(&publish, reason, out);
            return Ok(());
        }
        let format_ok = publish.properties.payload_format != Some(PayloadFormat::Utf8)
            || std::str::from_utf8(&publish.payload).is_ok();

        if let (Some(fault), QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) =
            (self.store_fault, publish.qos, publish.packet_id)
        {
            return self.refuse_unstorable(fault, publish.qos, id, out);
        }
        match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => {
                if format_ok {
                    out.push(Action::Route(self.message(now, topic, publish)));
                }
            }
            (QoS::AtLeastOnce, Some(id)) => {
                let reason = if format_ok {
                    out.push(Action::Route(self.message(now, topic, publish)));
                    ReasonCode::Success
                } else {
                    ReasonCode::PayloadFormatInvalid
                };
                out.push(Action::Send(Packet::PubAck(self.ack(id, reason))));
            }
            (QoS::ExactlyOnce, Some(id)) => {
                let reason = if self.inbound_qos2.contains(&id.get()) {
                    // A retransmission of a message already routed: acknowledge, never re-route.
                    ReasonCode::Success
                } else if self.link.version.is_v5()
                    && self.inbound_qos2.len() >= usize::from(limits.inflight_window())
                {
                    // Section 3.3.4: more unacknowledged QoS 2 PUBLISHes than our Receive Maximum.
                    // Only 5.0 announces one; 3.1/3.1.1 clients are bound by the 65,535 ids alone.
                    return Err(Close::new(
                        ReasonCode::ReceiveMaximumExceeded,
                        "more QoS 2 messages in flight than the Receive Maximum",
                    ));
                } else if format_ok {
                    self.inbound_qos2.insert(id.get());
                    if self.durable {
                        out.push(Action::Store(StoreOp::PutIncoming {
                            client_id: self.client_id.clone(),
                            packet_id: id.get(),
                        }));
                    }
                    out.push(Action::Route(self.message(now, topic, publish)));
                    ReasonCode::Success
                } else {
                    ReasonCode::PayloadFormatInvalid
                };
                out.push(Action::Send(Packet::PubRec(self.ack(id, reason))));
            }
            // The codec guarantees a packet id for QoS 1 and 2.
            (_, None) => {
                return Err(Close::new(
                    ReasonCode::MalformedPacket,
                    "QoS 1/2 PUBLISH without packet id",
                ));
            }
        }
        Ok(())
    }

    /// Drops a PUBLISH the client may not make. QoS 1/2 are acknowledged: with the reason in 5.0,
    /// as a success in 3.1/3.1.1, which have no way to say no ([MQTT-3.3.5-2]; mosquitto does
    /// the same). Nothing is stored, so a QoS 2 PUBREL that follows is answered as for an
    /// unknown packet id.
    fn refuse_publish(&self, publish: &Publish, reason: ReasonCode, out: &mut Vec<Action>) {
        let Some(id) = publish.packet_id else {
            return;
        };
        let reason = if self.link.version.is_v5() {
            reason
        } else {
            ReasonCode::Success
        };
        let ack = self.ack(id, reason);
        out.push(Action::Send(match publish.qos {
            QoS::ExactlyOnce => Packet::PubRec(ack),
            _ => Packet::PubAck(ack),
        }));
    }

    /// Answers a QoS 1/2 publish the store cannot take: 5.0 gets the reason in PUBACK/PUBREC
    /// (the message is not routed, and a QoS 2 exchange ends there), 3.1.1 is disconnected.
    fn refuse_unstorable(
        &mut self,
        fault: ReasonCode,
        qos: QoS,
        id: PacketId,
        out: &mut Vec<Action>,
    ) -> Result<(), Close> {
        if !self.link.version.is_v5() {
            return Err(Close::new(fault, "the store cannot record messages"));
        }
        let mut ack = self.ack(id, fault);
        if self.link.request_problem_information {
            ack.properties.reason_string = Some("the broker cannot store messages now".to_owned());
        }
        out.push(Action::Send(if qos == QoS::ExactlyOnce {
            Packet::PubRec(ack)
        } else {
            Packet::PubAck(ack)
        }));
        Ok(())
    }

    /// The topic to route: the PUBLISH's own, or the one its alias stands for (5.0).
    fn resolve_topic(&mut self, publish: &Publish, limits: &Limits) -> Result<TopicName, Close> {
        match publish.properties.topic_alias {
            Some(alias) => self
                .link
                .inbound_aliases
                .resolve(&publish.topic, alias, limits.max_topic_alias)
                .map_err(|e| match e {
                    AliasError::OutOfRange => Close::new(
                        ReasonCode::TopicAliasInvalid,
                        "topic alias above the maximum",
                    ),
                    AliasError::Unknown => {
                        Close::new(ReasonCode::ProtocolError, "unknown topic alias")
                    }
                }),
            None if publish.topic.is_empty() => Err(Close::new(
                ReasonCode::ProtocolError,
                "empty topic without a topic alias",
            )),
            None => Ok(publish.topic.clone()),
        }
    }

    /// The shared message for a PUBLISH: the payload copied once into an exact-size buffer so it
    /// does not pin the connection's read buffer, the per-hop properties removed.
    fn message(&self, now: Instant, topic: TopicName, publish: Publish) -> Arc<Message> {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        let expires_at = expiry_deadline(now, properties.message_expiry_interval);
        Arc::new(Message {
            topic,
            payload: Bytes::copy_from_slice(&publish.payload),
            qos: publish.qos,
            retain: publish.retain,
            properties: PublishProperties {
                message_expiry_interval: None,
                ..properties
            },
            expires_at,
            origin: Some(self.origin),
            published_at: Some(now),
        })
    }

    fn ack(&self, packet_id: PacketId, reason: ReasonCode) -> PubResponse {
        let mut properties = AckProperties::default();
        if reason == ReasonCode::PayloadFormatInvalid && self.link.request_problem_information {
            properties.reason_string = Some("payload is not valid UTF-8".to_owned());
        }
        PubResponse {
            packet_id,
            reason,
            properties,
        }
    }

    /// Deletes the stored entry of a finished exchange.
    fn finished(&self, outcome: AckOutcome, out: &mut Vec<Action>) {
        if let AckOutcome::Completed(Some(seq)) = outcome {
            out.push(self.delete_queued(seq));
        }
    }

    fn delete_queued(&self, seq: u64) -> Action {
        Action::Store(StoreOp::DeleteQueued {
            client_id: self.client_id.clone(),
            seq,
        })
    }

    /// Records a stored delivery's new state.
    fn put_queued(&self, delivery: &Delivery, state: QueuedState, out: &mut Vec<Action>) {
        if let Some((seq, entry)) = delivery.queued_entry(state) {
            out.push(Action::Store(StoreOp::PutQueued {
                client_id: self.client_id.clone(),
                seq,
                entry,
            }));
        }
    }

    fn handle_pubrec(&mut self, rec: PubResponse, out: &mut Vec<Action>) {
        let outcome = self.outbound.pubrec(rec.packet_id, rec.reason.is_error());
        match outcome {
            AckOutcome::SendPubRel => {
                if let Some(entry) = self.outbound.get(rec.packet_id) {
                    let state = QueuedState::Released {
                        packet_id: rec.packet_id.get(),
                    };
                    self.put_queued(&entry.delivery, state, out);
                }
                out.push(Action::Send(Packet::PubRel(PubResponse::success(
                    rec.packet_id,
                ))));
            }
            AckOutcome::Unknown if self.link.version.is_v5() => {
                out.push(Action::Send(Packet::PubRel(PubResponse {
                    packet_id: rec.packet_id,
                    reason: ReasonCode::PacketIdentifierNotFound,
                    properties: AckProperties::default(),
                })));
            }
            AckOutcome::Completed(_) => self.finished(outcome, out),
            AckOutcome::Unknown => {}
        }
    }

    fn handle_pubrel(&mut self, rel: PubResponse, out: &mut Vec<Action>) {
        // Section 4.3.3: PUBREL is always answered with PUBCOMP and the id is released.
        let known = self.inbound_qos2.remove(&rel.packet_id.get());
        if known && self.durable {
            out.push(Action::Store(StoreOp::DeleteIncoming {
                client_id: self.client_id.clone(),
                packet_id: rel.packet_id.get(),
            }));
        }
        let reason = if known || !self.link.version.is_v5() {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        out.push(Action::Send(Packet::PubComp(PubResponse {
            packet_id: rel.packet_id,
            reason,
            properties: AckProperties::default(),
        })));
    }

    fn handle_subscribe(&mut self, subscribe: Subscribe, limits: &Limits, out: &mut Vec<Action>) {
        let id = subscribe.properties.subscription_identifier;
        let mut reasons = Vec::with_capacity(subscribe.filters.len());
        for (filter, options) in subscribe.filters {
            let existed = self.subscriptions.contains(&filter);
            let refused = if !limits.topic_within_limits(filter.as_str()) {
                Some(ReasonCode::TopicFilterInvalid)
            } else if !self.link.access.can_subscribe(&filter) {
                Some(ReasonCode::NotAuthorized)
            } else if !existed
                && limits.max_subscriptions != 0
                && self.subscriptions.len() >= limits.max_subscriptions
            {
                Some(ReasonCode::QuotaExceeded)
            } else {
                None
            };
            if let Some(reason) = refused {
                reasons.push(match self.link.version {
                    // 3.1.1 has one failure code, 0x80, which the encoder writes for any.
                    ProtocolVersion::V5 | ProtocolVersion::V311 => reason,
                    // 3.1 has none: the QoS is granted and nothing is subscribed, as mosquitto
                    // does.
                    ProtocolVersion::V31 => granted(options.qos),
                });
                continue;
            }
            // Section 4.8.2: retained messages are not sent for shared subscriptions.
            let send_retained = !filter.is_shared()
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            let subscription = Subscription {
                filter: filter.clone(),
                options,
                id,
            };
            // [MQTT-3.8.4-3] an existing subscription with the same filter is replaced.
            self.subscriptions.insert(subscription.clone());
            reasons.push(granted(options.qos));
            out.push(Action::Subscribe {
                subscription,
                send_retained,
            });
        }
        // [MQTT-3.8.4-1] SUBACK with the same packet id, one reason per filter ([MQTT-3.8.4-6]).
        out.push(Action::Send(Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            properties: AckProperties::default(),
            reasons,
        })));
    }

    fn handle_unsubscribe(&mut self, unsubscribe: Unsubscribe, out: &mut Vec<Action>) {
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        for filter in unsubscribe.filters {
            if self.subscriptions.remove(&filter) {
                out.push(Action::Unsubscribe(filter));
                reasons.push(ReasonCode::Success);
            } else {
                reasons.push(ReasonCode::NoSubscriptionExisted);
            }
        }
        // [MQTT-3.10.4-4] UNSUBACK even when nothing was removed.
        out.push(Action::Send(Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            properties: AckProperties::default(),
            reasons,
        })));
    }

    fn handle_disconnect(
        &mut self,
        disconnect: Disconnect,
        out: &mut Vec<Action>,
    ) -> Result<(), Close> {
        if let Some(interval) = disconnect.properties.session_expiry_interval {
            // Section 3.14.2.2.2: a session that was to end at disconnect cannot be extended by
            // DISCONNECT; that is a protocol error.
            if self.expiry_interval == 0 && interval != 0 {
                return Err(Close::new(
                    ReasonCode::ProtocolError,
                    "DISCONNECT sets a session expiry after CONNECT set none",
                ));
            }
            self.expiry_interval = interval;
        }
        // [MQTT-3.14.4-3] a normal disconnect discards the will; 0x04 and error reasons keep it.
        if disconnect.reason == ReasonCode::Success {
            self.will = None;
        }
        out.push(Action::ClientDisconnected);
        Ok(())
    }

    /// Queues the retained messages a new subscription matched. They carry RETAIN 1
    /// ([MQTT-3.3.1-9]) and the subscription's identifier.
    pub fn enqueue_retained(
        &mut self,
        now: Instant,
        subscription: &Subscription,
        messages: Vec<Arc<Message>>,
    ) {
        for message in messages {
            if message.is_expired(now) {
                continue;
            }
            let qos = message.qos.min(subscription.options.qos);
            self.replay.push_back(Delivery::new(
                message,
                qos,
                true,
                subscription.id.into_iter().collect(),
            ));
        }
    }

    /// The next retained message to send, if the inflight window allows it.
    pub fn next_replay(&mut self) -> Option<Delivery> {
        let front = self.replay.front()?;
        if front.qos != QoS::AtMostOnce && self.window_free() == 0 {
            return None;
        }
        self.replay.pop_front()
    }

    /// Turns a delivery into a PUBLISH, or drops it. QoS 1/2 deliveries must only be offered when
    /// [`Session::window_free`] is non-zero.
    pub fn deliver(
        &mut self,
        now: Instant,
        delivery: Delivery,
        out: &mut Vec<Action>,
    ) -> Result<(), Dropped> {
        if delivery.message.is_expired(now) {
            self.forget_stored(&delivery, out);
            return Err(Dropped::Expired);
        }
        // mosquitto checks read access on every delivery, retained ones included.
        if !self
            .link
            .access
            .can_receive(delivery.message.topic.as_str())
        {
            self.forget_stored(&delivery, out);
            return Err(Dropped::NotAuthorized);
        }
        let expiry = delivery.message.remaining_expiry(now);
        let plan = if self.link.version.is_v5() {
            self.link
                .outbound_aliases
                .plan(&delivery.message.topic, self.link.topic_alias_maximum)
        } else {
            OutboundTopic::Full
        };
        let (send_topic, topic_alias) = match plan {
            OutboundTopic::Full => (true, None),
            OutboundTopic::Assign(alias) => (true, Some(alias)),
            OutboundTopic::Known(alias) => (false, Some(alias)),
        };
        let mut publish = OutgoingPublish {
            message: delivery.message.clone(),
            dup: false,
            qos: delivery.qos,
            retain: delivery.retain,
            // Any id has the right size for measuring; the real one is taken below.
            packet_id: (delivery.qos != QoS::AtMostOnce)
                .then(|| PacketId::new(1))
                .flatten(),
            send_topic,
            topic_alias,
            subscription_ids: if self.link.version.is_v5() {
                delivery.subscription_ids.clone()
            } else {
                SmallVec::new()
            },
            message_expiry_interval: expiry,
        };
        if !self.fits(&publish) {
            self.forget_stored(&delivery, out);
            return Err(Dropped::TooLarge);
        }
        if delivery.qos != QoS::AtMostOnce {
            let stored = delivery.queued_entry(QueuedState::Queued);
            // The caller checked the window, so a free id exists; if not, treat as too large
            // rather than send a PUBLISH we could not track.
            let Some(id) = self.outbound.start(delivery) else {
                if let Some((seq, _)) = stored {
                    out.push(self.delete_queued(seq));
                }
                return Err(Dropped::TooLarge);
            };
            if let Some((seq, mut entry)) = stored {
                entry.state = QueuedState::Sent {
                    packet_id: id.get(),
                };
                out.push(Action::Store(StoreOp::PutQueued {
                    client_id: self.client_id.clone(),
                    seq,
                    entry,
                }));
            }
            publish.packet_id = Some(id);
        }
        if let OutboundTopic::Assign(alias) = plan {
            self.link
                .outbound_aliases
                .commit(&publish.message.topic, alias);
        }
        out.push(Action::Publish(publish));
        Ok(())
    }

    /// Deletes the stored entry of a delivery that will never be sent.
    fn forget_stored(&self, delivery: &Delivery, out: &mut Vec<Action>) {
        if let Some(stored) = &delivery.stored {
            out.push(self.delete_queued(stored.seq));
        }
    }

    /// Whether a PUBLISH fits the client's Maximum Packet Size ([MQTT-3.1.2-24]).
    fn fits(&self, publish: &OutgoingPublish) -> bool {
        match publish_encoded_len(&publish.view(), self.link.version) {
            Ok(len) => {
                u64::try_from(len).is_ok_and(|len| len <= u64::from(self.link.max_packet_size))
            }
            Err(_) => false,
        }
    }

    /// Resends every unacknowledged exchange after the session resumed on a new connection:
    /// PUBLISH with DUP set for those awaiting PUBACK/PUBREC, PUBREL for those awaiting PUBCOMP,
    /// in the original order ([MQTT-4.4.0-1], [MQTT-4.6.0-1]).
    pub fn resume(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut abandoned = Vec::new();
        for (id, entry) in self.outbound.in_send_order() {
            match entry.state {
                OutboundState::AwaitingPubComp => {
                    out.push(Action::Send(Packet::PubRel(PubResponse::success(id))));
                }
                OutboundState::AwaitingPubAck | OutboundState::AwaitingPubRec => {
                    let delivery = &entry.delivery;
                    let publish = OutgoingPublish {
                        message: delivery.message.clone(),
                        dup: true,
                        qos: delivery.qos,
                        retain: delivery.retain,
                        packet_id: Some(id),
                        send_topic: true,
                        topic_alias: None,
                        subscription_ids: if self.link.version.is_v5() {
                            delivery.subscription_ids.clone()
                        } else {
                            SmallVec::new()
                        },
                        // Delivery has started, so an expired message still completes
                        // (section 3.3.2.3.3); never announce an interval of 0.
                        message_expiry_interval: delivery
                            .message
                            .remaining_expiry(now)
                            .map(|secs| secs.max(1)),
                    };
                    if self.fits(&publish) {
                        out.push(Action::Publish(publish));
                    } else {
                        abandoned.push(id);
                    }
                }
            }
        }
        for id in abandoned {
            if let Some(seq) = self.outbound.abandon(id) {
                out.push(self.delete_queued(seq));
            }
        }
    }

    /// Takes the will for publishing when the connection closes other than by a normal
    /// DISCONNECT. A will the client may not publish (by its ACL, now) is dropped, as mosquitto
    /// does.
    pub fn take_will(&mut self) -> Option<PendingWill> {
        let will = *self.will.take()?;
        if !self.link.access.can_publish(will.topic.as_str()) {
            return None;
        }
        let expiry_interval = will.properties.message_expiry_interval;
        let delay = will.properties.will_delay_interval.unwrap_or(0);
        let properties = PublishProperties {
            message_expiry_interval: None,
            ..will_properties(will.properties)
        };
        Some(PendingWill {
            message: Box::new(Message {
                topic: will.topic,
                payload: will.payload,
                qos: will.qos,
                retain: will.retain,
                properties,
                expires_at: None,
                origin: Some(self.origin),
                published_at: None,
            }),
            expiry_interval,
            delay,
        })
    }
}

/// A will's properties as a PUBLISH carries them. The Message Expiry Interval is kept here (a
/// stored will needs it); [`PendingWill`] keeps it apart and applies it at publication.
fn will_properties(properties: crate::codec::WillProperties) -> PublishProperties {
    PublishProperties {
        payload_format: properties.payload_format,
        message_expiry_interval: properties.message_expiry_interval,
        topic_alias: None,
        response_topic: properties.response_topic,
        correlation_data: properties.correlation_data,
        user_properties: properties.user_properties,
        subscription_identifiers: Vec::new(),
        content_type: properties.content_type,
    }
}

/// A will on its way out: published now, after its delay, or when its session ends.
#[derive(Debug)]
pub struct PendingWill {
    /// The message, without an expiry deadline yet; boxed so a parked session's slot stays small.
    message: Box<Message>,
    /// The will's Message Expiry Interval, which runs from publication (section 3.1.3.2.4).
    expiry_interval: Option<u32>,
    /// Will Delay Interval in seconds.
    pub delay: u32,
}

impl PendingWill {
    /// A will loaded from the store (see [`Session::will_record`]).
    pub fn from_stored(will: StoredWill) -> Self {
        let mut message = Message::clone_fields(&will.message);
        let expiry_interval = message.properties.message_expiry_interval.take();
        PendingWill {
            message: Box::new(message),
            expiry_interval,
            delay: will.delay_interval,
        }
    }

    /// The will as the store keeps it.
    pub fn to_stored(&self) -> StoredWill {
        let mut message = Message::clone_fields(&self.message);
        message.properties.message_expiry_interval = self.expiry_interval;
        message.origin = None;
        StoredWill {
            message: Arc::new(message),
            delay_interval: self.delay,
        }
    }

    /// The message to route, its expiry counted from `now`, the moment it is published.
    pub fn publish(self, now: Instant) -> Arc<Message> {
        Arc::new(Message {
            expires_at: expiry_deadline(now, self.expiry_interval),
            published_at: Some(now),
            ..*self.message
        })
    }
}

/// The SUBACK reason granting a QoS.
fn granted(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::Success,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

#[cfg(test)]
mod tests;
