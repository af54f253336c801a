//! QoS 1 and 2 messages sent to the client and not yet acknowledged, with their packet ids.
//!
//! Invariants: at most one entry per packet id; `order` grows with every send, so a resumed
//! session resends in the original order ([MQTT-4.6.0-1]); an entry leaves only on its final
//! acknowledgement (PUBACK, PUBCOMP, or a PUBREC carrying an error reason).

use std::collections::BTreeMap;

use crate::codec::{PacketId, QoS};
use crate::message::Delivery;

/// Where an outgoing QoS 1/2 exchange stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundState {
    /// QoS 1 PUBLISH sent; waiting for PUBACK.
    AwaitingPubAck,
    /// QoS 2 PUBLISH sent; waiting for PUBREC.
    AwaitingPubRec,
    /// PUBREL sent; waiting for PUBCOMP. The message itself is no longer needed.
    AwaitingPubComp,
}

/// One unacknowledged outgoing message.
#[derive(Debug)]
pub struct OutboundEntry {
    pub delivery: Delivery,
    pub state: OutboundState,
    order: u64,
}

/// The outgoing inflight window.
#[derive(Debug, Default)]
pub struct Outbound {
    /// BTreeMap: compact when small, ordered ids make the id search below cheap.
    inflight: BTreeMap<u16, OutboundEntry>,
    /// Last packet id handed out; ids cycle 1..=65535 skipping those in use.
    last_id: u16,
    next_order: u64,
}

/// What an acknowledgement did.
#[derive(Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// The exchange finished; the entry is gone. Carries the stored queue entry's seq, if it
    /// was stored.
    Completed(Option<u64>),
    /// PUBREC accepted: send PUBREL now.
    SendPubRel,
    /// No exchange in the right state has this id.
    Unknown,
}

impl Outbound {
    pub fn len(&self) -> usize {
        self.inflight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    /// Records a new QoS 1/2 send and returns its packet id; `None` only if all 65,535 ids are in
    /// use, which the inflight window prevents.
    pub fn start(&mut self, delivery: Delivery) -> Option<PacketId> {
        let id = self.free_id()?;
        let state = match delivery.qos {
            QoS::ExactlyOnce => OutboundState::AwaitingPubRec,
            _ => OutboundState::AwaitingPubAck,
        };
        self.insert(id, delivery, state);
        Some(id)
    }

    /// Adds an exchange after every one already started.
    fn insert(&mut self, id: PacketId, delivery: Delivery, state: OutboundState) {
        let order = self.next_order;
        self.next_order += 1;
        self.inflight.insert(
            id.get(),
            OutboundEntry {
                delivery,
                state,
                order,
            },
        );
    }

    fn free_id(&mut self) -> Option<PacketId> {
        if self.inflight.len() >= usize::from(u16::MAX) {
            return None;
        }
        let mut candidate = self.last_id;
        loop {
            candidate = candidate.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&candidate) {
                self.last_id = candidate;
                return PacketId::new(candidate);
            }
        }
    }

    /// PUBACK from the client.
    pub fn puback(&mut self, id: PacketId) -> AckOutcome {
        self.finish_if(id, OutboundState::AwaitingPubAck)
    }

    /// PUBREC from the client. An error reason (0x80 or above) ends the exchange without PUBREL
    /// (section 4.3.3).
    pub fn pubrec(&mut self, id: PacketId, failed: bool) -> AckOutcome {
        match self.inflight.get_mut(&id.get()) {
            Some(entry) if entry.state == OutboundState::AwaitingPubRec => {
                if failed {
                    let seq = self.remove(id);
                    AckOutcome::Completed(seq)
                } else {
                    entry.state = OutboundState::AwaitingPubComp;
                    AckOutcome::SendPubRel
                }
            }
            // A repeated PUBREC after our PUBREL: answer with PUBREL again.
            Some(entry) if entry.state == OutboundState::AwaitingPubComp => AckOutcome::SendPubRel,
            _ => AckOutcome::Unknown,
        }
    }

    /// PUBCOMP from the client.
    pub fn pubcomp(&mut self, id: PacketId) -> AckOutcome {
        self.finish_if(id, OutboundState::AwaitingPubComp)
    }

    fn finish_if(&mut self, id: PacketId, state: OutboundState) -> AckOutcome {
        match self.inflight.get(&id.get()) {
            Some(entry) if entry.state == state => AckOutcome::Completed(self.remove(id)),
            _ => AckOutcome::Unknown,
        }
    }

    /// Removes an exchange; returns its stored seq.
    fn remove(&mut self, id: PacketId) -> Option<u64> {
        self.inflight
            .remove(&id.get())
            .and_then(|entry| entry.delivery.stored.map(|stored| stored.seq))
    }

    pub fn get(&self, id: PacketId) -> Option<&OutboundEntry> {
        self.inflight.get(&id.get())
    }

    /// Puts back an exchange loaded from the store, with its packet id; call in send order.
    pub fn restore(&mut self, id: PacketId, delivery: Delivery, state: OutboundState) {
        self.last_id = id.get();
        self.insert(id, delivery, state);
    }

    /// Every unacknowledged exchange in the order it was started, for resending on resume.
    pub fn in_send_order(&self) -> Vec<(PacketId, &OutboundEntry)> {
        let mut entries: Vec<_> = self
            .inflight
            .iter()
            .filter_map(|(&id, entry)| PacketId::new(id).map(|id| (id, entry)))
            .collect();
        entries.sort_by_key(|(_, entry)| entry.order);
        entries
    }

    /// Forgets an exchange that can no longer be sent (too large for the client's new maximum);
    /// returns its stored seq.
    pub fn abandon(&mut self, id: PacketId) -> Option<u64> {
        self.remove(id)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::codec::PublishProperties;
    use crate::message::Message;
    use crate::topic::TopicName;

    fn delivery(qos: QoS) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: TopicName::new("t").expect("valid"),
                payload: bytes::Bytes::from_static(b"p"),
                qos,
                retain: false,
                properties: PublishProperties::default(),
                expires_at: None,
                origin: None,
                published_at: None,
            }),
            qos,
            retain: false,
            subscription_ids: Default::default(),
            stored: None,
        }
    }

    #[test]
    fn qos1_completes_on_puback_only_once() {
        let mut out = Outbound::default();
        let id = out.start(delivery(QoS::AtLeastOnce)).expect("id");
        assert_eq!(id.get(), 1);
        assert_eq!(out.pubcomp(id), AckOutcome::Unknown, "wrong ack kind");
        assert_eq!(out.puback(id), AckOutcome::Completed(None));
        assert_eq!(out.puback(id), AckOutcome::Unknown);
        assert!(out.is_empty());
    }

    #[test]
    fn qos2_goes_through_pubrec_then_pubcomp() {
        let mut out = Outbound::default();
        let id = out.start(delivery(QoS::ExactlyOnce)).expect("id");
        assert_eq!(out.puback(id), AckOutcome::Unknown);
        assert_eq!(out.pubrec(id, false), AckOutcome::SendPubRel);
        assert_eq!(
            out.pubrec(id, false),
            AckOutcome::SendPubRel,
            "repeat PUBREC"
        );
        assert_eq!(
            out.in_send_order()[0].1.state,
            OutboundState::AwaitingPubComp
        );
        assert_eq!(out.pubcomp(id), AckOutcome::Completed(None));
        assert!(out.is_empty());
    }

    #[test]
    fn failed_pubrec_ends_the_exchange() {
        let mut out = Outbound::default();
        let id = out.start(delivery(QoS::ExactlyOnce)).expect("id");
        assert_eq!(out.pubrec(id, true), AckOutcome::Completed(None));
        assert!(out.is_empty());
    }

    #[test]
    fn ids_skip_those_in_use_and_wrap_past_65535() {
        let mut out = Outbound {
            last_id: 65534,
            ..Outbound::default()
        };
        let a = out.start(delivery(QoS::AtLeastOnce)).expect("id");
        let b = out.start(delivery(QoS::AtLeastOnce)).expect("id");
        assert_eq!((a.get(), b.get()), (65535, 1));
        out.last_id = 65534;
        let c = out.start(delivery(QoS::AtLeastOnce)).expect("id");
        assert_eq!(c.get(), 2, "65535 and 1 are in use");
    }

    #[test]
    fn resend_order_is_send_order_not_id_order() {
        let mut out = Outbound {
            last_id: 65533,
            ..Outbound::default()
        };
        let ids: Vec<u16> = (0..4)
            .map(|_| out.start(delivery(QoS::AtLeastOnce)).expect("id").get())
            .collect();
        assert_eq!(ids, vec![65534, 65535, 1, 2]);
        let order: Vec<u16> = out.in_send_order().iter().map(|(id, _)| id.get()).collect();
        assert_eq!(order, ids);
    }
}
