//! What must hold for any input to the codec, shared by the property tests
//! (`tests/00_codec_properties.rs`) and the fuzz targets (`fuzz/fuzz_targets/`), so both check
//! the same things.
//!
//! - [`decode_stream`]: decoding never panics; a returned packet consumed a whole frame no larger
//!   than the limit; `Ok(None)` and errors leave the buffer as it was.
//! - [`check_round_trip`]: a decoded packet encodes again, `encoded_len` is exact, and the result
//!   decodes to the same packet.
//! - [`differential`]: where `mqttbytes` 0.6 also accepts a frame, both read the same packet
//!   type, length and key fields.
//!
//! Known, intended disagreements with mqttbytes (not bugs on either side, and excluded by the
//! callers, which assert our behaviour on them instead):
//! - DESIGN: mqttbytes rejects the 5.0 DISCONNECT with remaining length 0 (`e0 00`, what
//!   `mosquitto_pub -V 5` sends), and with 1 (a reason code alone); section 3.14.2.1 allows
//!   both, and we read them.
//! - DESIGN: mqttbytes does not speak MQTT 3.1 (`MQIsdp`, level 3); 3.1 is never compared.
//! - DESIGN: mqttbytes has no AUTH packet (type 15).
//! - DESIGN: mqttbytes reads the CONNECT password as a UTF-8 string; it is binary data (3.1.1
//!   section 3.1.3.5, 5.0 section 3.1.3.6), so we accept any bytes.
//! - BUG in mqttbytes: its 5.0 PUBLISH property reader counts the identifier byte of every
//!   Subscription Identifier twice (`cursor += 1` for each property, then `cursor += 1 + id_len`
//!   in `v5/publish.rs`), so when that overcount reaches the length of the properties still
//!   unread it stops early and takes them as payload. [`differential`] recognises exactly that
//!   shape and reports [`Verdict::MqttbytesMiscount`] instead of comparing.
//! - DESIGN: mqttbytes accepts what we refuse as malformed or a protocol error: U+0000 in topics,
//!   PUBLISH to a filter such as `a/#`, wrong fixed-header flags, non-minimal variable byte
//!   integers, duplicate properties, reserved bits, trailing bytes, and more. Where only
//!   mqttbytes accepts, nothing is compared.

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use mqttbytes::{v4, v5};
use starling::codec::{
    self, DecodeContext, MAX_PACKET_SIZE, Packet, PayloadFormat, ProtocolVersion, QoS, UserProperty,
};

/// Every version a connection can speak.
pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

/// A decoding context without a size limit beyond the protocol's.
pub fn unlimited(version: ProtocolVersion) -> DecodeContext {
    DecodeContext {
        version,
        max_packet_size: MAX_PACKET_SIZE,
    }
}

/// The decoding context a fuzz input's first byte selects: its version, and a size limit from
/// none down to one that refuses every frame.
pub fn context_from(selector: u8) -> DecodeContext {
    const LIMITS: [u32; 5] = [MAX_PACKET_SIZE, 4096, 64, 5, 1];
    let version = VERSIONS[usize::from(selector % 3)];
    let limit = LIMITS[usize::from(selector / 3 % 5)];
    DecodeContext {
        version,
        max_packet_size: limit,
    }
}

/// Decodes `bytes` frame after frame, as a connection would, checking the buffer invariants at
/// every step; returns each packet with the frame it came from.
pub fn decode_stream(bytes: &[u8], ctx: &DecodeContext) -> Vec<(Packet, Bytes)> {
    let mut buf = BytesMut::from(bytes);
    let mut packets = Vec::new();
    loop {
        let before = buf.clone();
        match codec::decode(&mut buf, ctx) {
            Ok(Some(packet)) => {
                let consumed = before.len() - buf.len();
                assert!(
                    consumed >= 2,
                    "a frame is at least two bytes, consumed {consumed}"
                );
                assert!(
                    u64::try_from(consumed).expect("fits") <= u64::from(ctx.max_packet_size),
                    "consumed {consumed} bytes past the limit {}",
                    ctx.max_packet_size
                );
                assert_eq!(
                    &before[consumed..],
                    &buf[..],
                    "only the front frame is consumed"
                );
                packets.push((packet, before.freeze().slice(..consumed)));
            }
            Ok(None) => {
                assert_eq!(before, buf, "Ok(None) consumes nothing");
                return packets;
            }
            Err(err) => {
                assert_eq!(before, buf, "{err} consumed bytes");
                return packets;
            }
        }
    }
}

/// The version a decoded packet is re-encoded in: a CONNECT carries its own.
fn version_of(packet: &Packet, decoded_in: ProtocolVersion) -> ProtocolVersion {
    match packet {
        Packet::Connect(connect) => connect.protocol,
        _ => decoded_in,
    }
}

/// Encodes a decoded packet again and decodes the result: it must be the same packet.
pub fn check_round_trip(packet: &Packet, decoded_in: ProtocolVersion) {
    let version = version_of(packet, decoded_in);
    let mut out = BytesMut::new();
    if let Err(err) = codec::encode(packet, version, &mut out) {
        panic!("a decoded packet must encode again: {err} for {packet:?}");
    }
    assert_eq!(
        codec::encoded_len(packet, version),
        Ok(out.len()),
        "encoded_len is exact"
    );
    let frame = out.clone();
    match codec::decode(&mut out, &unlimited(decoded_in)) {
        Ok(Some(again)) => {
            assert_eq!(&again, packet, "round trip through {frame:02X?}");
            assert!(out.is_empty(), "the encoding is exactly one frame");
        }
        other => panic!("re-encoded {packet:?} as {frame:02X?}, which decodes to {other:?}"),
    }
}

/// How the two decoders judged one buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Both returned a packet, and the packets agree.
    Both,
    /// Only this codec returned a packet.
    OnlyOurs,
    /// Only mqttbytes returned a packet.
    OnlyTheirs,
    /// Neither returned a packet.
    Neither,
    /// mqttbytes does not speak this version (3.1).
    NotComparable,
    /// Both returned a PUBLISH, and mqttbytes lost properties to its Subscription Identifier
    /// miscount (see the module docs); nothing is compared.
    MqttbytesMiscount,
}

/// Decodes the front frame of `bytes` with both decoders and, when both return a packet, asserts
/// that they agree on its length and key fields.
pub fn differential(bytes: &[u8], version: ProtocolVersion) -> Verdict {
    if version == ProtocolVersion::V31 {
        return Verdict::NotComparable;
    }
    let mut ours_buf = BytesMut::from(bytes);
    let ours = codec::decode(&mut ours_buf, &unlimited(version))
        .ok()
        .flatten();
    let ours_len = bytes.len() - ours_buf.len();
    let max = usize::try_from(MAX_PACKET_SIZE).expect("fits");
    let mut theirs_buf = BytesMut::from(bytes);
    // A CONNECT is read in the layout of its own level; mqttbytes has a reader per level.
    let v5_layout = match &ours {
        Some(Packet::Connect(connect)) => connect.protocol.is_v5(),
        _ => version.is_v5(),
    };
    let theirs = if v5_layout {
        v5::read(&mut theirs_buf, max)
            .ok()
            .map(|p| Theirs::V5(Box::new(p)))
    } else {
        v4::read(&mut theirs_buf, max).ok().map(Theirs::V4)
    };
    let theirs_len = bytes.len() - theirs_buf.len();
    match (ours, theirs) {
        (Some(ours), Some(theirs)) => {
            assert_eq!(ours_len, theirs_len, "frame length of {bytes:02X?}");
            if miscounted(&ours, &theirs) {
                return Verdict::MqttbytesMiscount;
            }
            if let Err(field) = agree(&ours, &theirs) {
                panic!(
                    "decoders disagree on {field} for {bytes:02X?}:\nours:   {ours:?}\ntheirs: {theirs:?}"
                );
            }
            Verdict::Both
        }
        (Some(_), None) => Verdict::OnlyOurs,
        (None, Some(_)) => Verdict::OnlyTheirs,
        (None, None) => Verdict::Neither,
    }
}

#[derive(Debug)]
enum Theirs {
    V4(v4::Packet),
    V5(Box<v5::Packet>),
}

/// Whether mqttbytes stopped reading PUBLISH properties early because of its Subscription
/// Identifier overcount: after reading `k` of them it believes it has read `k` bytes more than it
/// has, so it stops with between 1 and `k` bytes of properties unread, which it then takes as
/// the front of the payload.
fn miscounted(ours: &Packet, theirs: &Theirs) -> bool {
    let (Packet::Publish(ours), Theirs::V5(theirs)) = (ours, theirs) else {
        return false;
    };
    let v5::Packet::Publish(theirs) = theirs.as_ref() else {
        return false;
    };
    let read = theirs
        .properties
        .as_ref()
        .map_or(0, |p| p.subscription_identifiers.len());
    let unread = theirs.payload.len().saturating_sub(ours.payload.len());
    unread > 0 && unread <= read && theirs.payload.ends_with(&ours.payload)
}

/// Names the first key field on which the packets differ.
fn agree(ours: &Packet, theirs: &Theirs) -> Result<(), &'static str> {
    match theirs {
        Theirs::V4(theirs) => agree_v4(ours, theirs),
        Theirs::V5(theirs) => agree_v5(ours, theirs),
    }
}

fn check(same: bool, field: &'static str) -> Result<(), &'static str> {
    if same { Ok(()) } else { Err(field) }
}

fn qos(ours: QoS, theirs: mqttbytes::QoS) -> bool {
    ours.as_u8() == theirs as u8
}

fn pkid(ours: Option<codec::PacketId>) -> u16 {
    ours.map_or(0, codec::PacketId::get)
}

fn users(ours: &[UserProperty], theirs: &[(String, String)]) -> bool {
    ours.len() == theirs.len()
        && ours
            .iter()
            .zip(theirs)
            .all(|(o, (k, v))| o.key == *k && o.value == *v)
}

fn format(ours: Option<PayloadFormat>, theirs: Option<u8>) -> bool {
    ours.map(|f| u8::from(f == PayloadFormat::Utf8)) == theirs
}

fn agree_v4(ours: &Packet, theirs: &v4::Packet) -> Result<(), &'static str> {
    match (ours, theirs) {
        (Packet::Connect(o), v4::Packet::Connect(t)) => {
            let login = t.login.as_ref();
            let will = t.last_will.as_ref();
            agree_connect_common(
                o,
                &TheirConnect {
                    protocol: t.protocol,
                    keep_alive: t.keep_alive,
                    client_id: &t.client_id,
                    clean_session: t.clean_session,
                    login: login.map(|l| (l.username.as_str(), l.password.as_str())),
                    will: will.map(|w| (w.topic.as_str(), &w.message, w.qos, w.retain)),
                },
            )
        }
        (Packet::ConnAck(o), v4::Packet::ConnAck(t)) => {
            check(o.session_present == t.session_present, "session present")?;
            check(o.reason.to_v3_connack() == t.code as u8, "return code")
        }
        (Packet::Publish(o), v4::Packet::Publish(t)) => {
            check(o.dup == t.dup, "dup")?;
            check(qos(o.qos, t.qos), "qos")?;
            check(o.retain == t.retain, "retain")?;
            check(o.topic.as_str() == t.topic, "topic")?;
            check(pkid(o.packet_id) == t.pkid, "packet id")?;
            check(o.payload == t.payload, "payload")
        }
        (Packet::PubAck(o), v4::Packet::PubAck(t)) => check(o.packet_id.get() == t.pkid, "pkid"),
        (Packet::PubRec(o), v4::Packet::PubRec(t)) => check(o.packet_id.get() == t.pkid, "pkid"),
        (Packet::PubRel(o), v4::Packet::PubRel(t)) => check(o.packet_id.get() == t.pkid, "pkid"),
        (Packet::PubComp(o), v4::Packet::PubComp(t)) => check(o.packet_id.get() == t.pkid, "pkid"),
        (Packet::Subscribe(o), v4::Packet::Subscribe(t)) => {
            check(o.packet_id.get() == t.pkid, "pkid")?;
            check(o.filters.len() == t.filters.len(), "filter count")?;
            for ((filter, options), theirs) in o.filters.iter().zip(&t.filters) {
                check(filter.as_str() == theirs.path, "filter")?;
                check(qos(options.qos, theirs.qos), "filter qos")?;
            }
            Ok(())
        }
        (Packet::SubAck(o), v4::Packet::SubAck(t)) => {
            check(o.packet_id.get() == t.pkid, "pkid")?;
            check(o.reasons.len() == t.return_codes.len(), "code count")?;
            for (reason, code) in o.reasons.iter().zip(&t.return_codes) {
                let theirs = match code {
                    v4::SubscribeReasonCode::Success(q) => *q as u8,
                    v4::SubscribeReasonCode::Failure => 0x80,
                };
                check(reason.as_u8() == theirs, "return code")?;
            }
            Ok(())
        }
        (Packet::Unsubscribe(o), v4::Packet::Unsubscribe(t)) => {
            check(o.packet_id.get() == t.pkid, "pkid")?;
            check(
                o.filters
                    .iter()
                    .map(|f| f.as_str())
                    .eq(t.topics.iter().map(String::as_str)),
                "filters",
            )
        }
        (Packet::UnsubAck(o), v4::Packet::UnsubAck(t)) => {
            check(o.packet_id.get() == t.pkid, "pkid")
        }
        (Packet::PingReq, v4::Packet::PingReq)
        | (Packet::PingResp, v4::Packet::PingResp)
        | (Packet::Disconnect(_), v4::Packet::Disconnect) => Ok(()),
        _ => Err("packet type"),
    }
}

fn agree_v5(ours: &Packet, theirs: &v5::Packet) -> Result<(), &'static str> {
    match (ours, theirs) {
        (Packet::Connect(o), v5::Packet::Connect(t)) => agree_connect(o, t),
        (Packet::ConnAck(o), v5::Packet::ConnAck(t)) => {
            check(o.session_present == t.session_present, "session present")?;
            check(o.reason.as_u8() == t.code as u8, "reason")?;
            let d = v5::ConnAckProperties::new();
            let p = t.properties.as_ref().unwrap_or(&d);
            let q = &o.properties;
            check(
                q.session_expiry_interval == p.session_expiry_interval,
                "session expiry",
            )?;
            check(
                q.receive_maximum.map(|v| v.get()) == p.receive_max,
                "receive maximum",
            )?;
            check(q.maximum_qos.map(QoS::as_u8) == p.max_qos, "maximum qos")?;
            check(
                q.retain_available.map(u8::from) == p.retain_available,
                "retain available",
            )?;
            check(
                q.maximum_packet_size.map(|v| v.get()) == p.max_packet_size,
                "max packet",
            )?;
            check(
                q.assigned_client_identifier == p.assigned_client_identifier,
                "assigned client id",
            )?;
            check(
                q.topic_alias_maximum == p.topic_alias_max,
                "topic alias maximum",
            )?;
            check(q.reason_string == p.reason_string, "reason string")?;
            check(
                users(&q.user_properties, &p.user_properties),
                "user properties",
            )?;
            check(
                q.wildcard_subscription_available.map(u8::from)
                    == p.wildcard_subscription_available,
                "wildcard available",
            )?;
            check(
                q.subscription_identifiers_available.map(u8::from)
                    == p.subscription_identifiers_available,
                "subscription ids available",
            )?;
            check(
                q.shared_subscription_available.map(u8::from) == p.shared_subscription_available,
                "shared available",
            )?;
            check(
                q.server_keep_alive == p.server_keep_alive,
                "server keep alive",
            )?;
            check(
                q.response_information == p.response_information,
                "response info",
            )?;
            check(q.server_reference == p.server_reference, "server reference")?;
            check(
                q.authentication_method == p.authentication_method,
                "auth method",
            )?;
            check(q.authentication_data == p.authentication_data, "auth data")
        }
        (Packet::Publish(o), v5::Packet::Publish(t)) => {
            check(o.dup == t.dup, "dup")?;
            check(qos(o.qos, t.qos), "qos")?;
            check(o.retain == t.retain, "retain")?;
            check(o.topic.as_str() == t.topic, "topic")?;
            check(pkid(o.packet_id) == t.pkid, "packet id")?;
            check(o.payload == t.payload, "payload")?;
            let q = &o.properties;
            match &t.properties {
                None => check(*q == codec::PublishProperties::default(), "properties"),
                Some(p) => {
                    check(
                        format(q.payload_format, p.payload_format_indicator),
                        "format",
                    )?;
                    check(
                        q.message_expiry_interval == p.message_expiry_interval,
                        "expiry",
                    )?;
                    check(
                        q.topic_alias.map(|v| v.get()) == p.topic_alias,
                        "topic alias",
                    )?;
                    check(
                        q.response_topic.as_ref().map(|t| t.as_str())
                            == p.response_topic.as_deref(),
                        "response topic",
                    )?;
                    check(q.correlation_data == p.correlation_data, "correlation data")?;
                    check(
                        users(&q.user_properties, &p.user_properties),
                        "user properties",
                    )?;
                    check(
                        q.subscription_identifiers
                            .iter()
                            .map(|id| usize::try_from(id.get()).expect("fits"))
                            .eq(p.subscription_identifiers.iter().copied()),
                        "subscription identifiers",
                    )?;
                    check(q.content_type == p.content_type, "content type")
                }
            }
        }
        (Packet::PubAck(o), v5::Packet::PubAck(t)) => {
            let p = t.properties.as_ref();
            ack(
                o,
                t.pkid,
                t.reason as u8,
                p.map(|p| (&p.reason_string, &p.user_properties)),
            )
        }
        (Packet::PubRec(o), v5::Packet::PubRec(t)) => {
            let p = t.properties.as_ref();
            ack(
                o,
                t.pkid,
                t.reason as u8,
                p.map(|p| (&p.reason_string, &p.user_properties)),
            )
        }
        (Packet::PubRel(o), v5::Packet::PubRel(t)) => {
            let p = t.properties.as_ref();
            ack(
                o,
                t.pkid,
                t.reason as u8,
                p.map(|p| (&p.reason_string, &p.user_properties)),
            )
        }
        (Packet::PubComp(o), v5::Packet::PubComp(t)) => {
            let p = t.properties.as_ref();
            ack(
                o,
                t.pkid,
                t.reason as u8,
                p.map(|p| (&p.reason_string, &p.user_properties)),
            )
        }
        (Packet::Subscribe(o), v5::Packet::Subscribe(t)) => {
            check(o.packet_id.get() == t.pkid, "pkid")?;
            let (id, user) = t
                .properties
                .as_ref()
                .map_or((None, &[][..]), |p| (p.id, &p.user_properties[..]));
            check(
                o.properties
                    .subscription_identifier
                    .map(|v| usize::try_from(v.get()).expect("fits"))
                    == id,
                "subscription identifier",
            )?;
            check(
                users(&o.properties.user_properties, user),
                "user properties",
            )?;
            check(o.filters.len() == t.filters.len(), "filter count")?;
            for ((filter, options), theirs) in o.filters.iter().zip(&t.filters) {
                check(filter.as_str() == theirs.path, "filter")?;
                check(qos(options.qos, theirs.qos), "filter qos")?;
                check(options.no_local == theirs.nolocal, "no local")?;
                check(
                    options.retain_as_published == theirs.preserve_retain,
                    "retain as published",
                )?;
                let handling = match theirs.retain_forward_rule {
                    v5::RetainForwardRule::OnEverySubscribe => {
                        codec::RetainHandling::SendAtSubscribe
                    }
                    v5::RetainForwardRule::OnNewSubscribe => codec::RetainHandling::SendIfNew,
                    v5::RetainForwardRule::Never => codec::RetainHandling::DoNotSend,
                };
                check(options.retain_handling == handling, "retain handling")?;
            }
            Ok(())
        }
        (Packet::SubAck(o), v5::Packet::SubAck(t)) => {
            check(o.packet_id.get() == t.pkid, "pkid")?;
            check(
                o.reasons
                    .iter()
                    .map(|r| r.as_u8())
                    .eq(t.return_codes.iter().map(|c| *c as u8)),
                "reason codes",
            )?;
            let p = t.properties.as_ref();
            ack_properties(
                &o.properties,
                p.map(|p| (&p.reason_string, &p.user_properties)),
            )
        }
        (Packet::Unsubscribe(o), v5::Packet::Unsubscribe(t)) => {
            check(o.packet_id.get() == t.pkid, "pkid")?;
            check(
                o.filters
                    .iter()
                    .map(|f| f.as_str())
                    .eq(t.filters.iter().map(String::as_str)),
                "filters",
            )?;
            let user = t
                .properties
                .as_ref()
                .map_or(&[][..], |p| &p.user_properties[..]);
            check(users(&o.user_properties, user), "user properties")
        }
        (Packet::UnsubAck(o), v5::Packet::UnsubAck(t)) => {
            check(o.packet_id.get() == t.pkid, "pkid")?;
            check(
                o.reasons
                    .iter()
                    .map(|r| r.as_u8())
                    .eq(t.reasons.iter().map(|c| *c as u8)),
                "reason codes",
            )?;
            let p = t.properties.as_ref();
            ack_properties(
                &o.properties,
                p.map(|p| (&p.reason_string, &p.user_properties)),
            )
        }
        (Packet::Disconnect(o), v5::Packet::Disconnect(t)) => {
            check(o.reason.as_u8() == t.reason_code as u8, "reason")?;
            let q = &o.properties;
            match &t.properties {
                None => check(*q == codec::DisconnectProperties::default(), "properties"),
                Some(p) => {
                    check(
                        q.session_expiry_interval == p.session_expiry_interval,
                        "expiry",
                    )?;
                    check(q.reason_string == p.reason_string, "reason string")?;
                    check(
                        users(&q.user_properties, &p.user_properties),
                        "user properties",
                    )?;
                    check(q.server_reference == p.server_reference, "server reference")
                }
            }
        }
        (Packet::PingReq, v5::Packet::PingReq) | (Packet::PingResp, v5::Packet::PingResp) => Ok(()),
        _ => Err("packet type"),
    }
}

/// The reason string and user properties of an mqttbytes acknowledgement, if it has any.
type TheirAckProperties<'a> = Option<(&'a Option<String>, &'a Vec<(String, String)>)>;

fn ack(
    ours: &codec::PubResponse,
    pkid: u16,
    reason: u8,
    properties: TheirAckProperties<'_>,
) -> Result<(), &'static str> {
    check(ours.packet_id.get() == pkid, "pkid")?;
    check(ours.reason.as_u8() == reason, "reason")?;
    ack_properties(&ours.properties, properties)
}

fn ack_properties(
    ours: &codec::AckProperties,
    theirs: TheirAckProperties<'_>,
) -> Result<(), &'static str> {
    match theirs {
        None => check(*ours == codec::AckProperties::default(), "properties"),
        Some((reason_string, user)) => {
            check(ours.reason_string == *reason_string, "reason string")?;
            check(users(&ours.user_properties, user), "user properties")
        }
    }
}

/// The fields both mqttbytes CONNECT types share.
struct TheirConnect<'a> {
    protocol: mqttbytes::Protocol,
    keep_alive: u16,
    client_id: &'a str,
    clean_session: bool,
    /// User name and password; mqttbytes leaves out a login whose both parts are empty.
    login: Option<(&'a str, &'a str)>,
    will: Option<(&'a str, &'a Bytes, mqttbytes::QoS, bool)>,
}

fn agree_connect_common(ours: &codec::Connect, theirs: &TheirConnect) -> Result<(), &'static str> {
    let level = match theirs.protocol {
        mqttbytes::Protocol::V4 => 4,
        mqttbytes::Protocol::V5 => 5,
    };
    check(ours.protocol.level() == level, "protocol level")?;
    check(ours.keep_alive == theirs.keep_alive, "keep alive")?;
    check(ours.client_id == theirs.client_id, "client id")?;
    check(ours.clean_start == theirs.clean_session, "clean start")?;
    let (user, pass) = theirs.login.unwrap_or(("", ""));
    check(ours.username.as_deref().unwrap_or("") == user, "user name")?;
    check(
        ours.password.as_deref().unwrap_or(b"") == pass.as_bytes(),
        "password",
    )?;
    match (&ours.will, theirs.will) {
        (None, None) => Ok(()),
        (Some(o), Some((topic, message, will_qos, retain))) => {
            check(o.topic.as_str() == topic, "will topic")?;
            check(o.payload == message, "will payload")?;
            check(qos(o.qos, will_qos), "will qos")?;
            check(o.retain == retain, "will retain")
        }
        _ => Err("will"),
    }
}

fn agree_connect(ours: &codec::Connect, theirs: &v5::Connect) -> Result<(), &'static str> {
    let login = theirs.login.as_ref();
    let will = theirs.last_will.as_ref();
    agree_connect_common(
        ours,
        &TheirConnect {
            protocol: theirs.protocol,
            keep_alive: theirs.keep_alive,
            client_id: &theirs.client_id,
            clean_session: theirs.clean_session,
            login: login.map(|l| (l.username.as_str(), l.password.as_str())),
            will: will.map(|w| (w.topic.as_str(), &w.message, w.qos, w.retain)),
        },
    )?;
    if let (Some(o), Some(t)) = (&ours.will, &theirs.last_will) {
        agree_will_properties(&o.properties, t.properties.as_ref())?;
    }
    let q = &ours.properties;
    match &theirs.properties {
        None => check(*q == codec::ConnectProperties::default(), "properties"),
        Some(p) => {
            check(
                q.session_expiry_interval == p.session_expiry_interval,
                "session expiry",
            )?;
            check(
                q.receive_maximum.map(|v| v.get()) == p.receive_maximum,
                "receive max",
            )?;
            check(
                q.maximum_packet_size.map(|v| v.get()) == p.max_packet_size,
                "max packet",
            )?;
            check(
                q.topic_alias_maximum == p.topic_alias_max,
                "topic alias max",
            )?;
            check(
                q.request_response_information.map(u8::from) == p.request_response_info,
                "request response info",
            )?;
            check(
                q.request_problem_information.map(u8::from) == p.request_problem_info,
                "request problem info",
            )?;
            check(
                users(&q.user_properties, &p.user_properties),
                "user properties",
            )?;
            check(
                q.authentication_method == p.authentication_method,
                "auth method",
            )?;
            check(q.authentication_data == p.authentication_data, "auth data")
        }
    }
}

fn agree_will_properties(
    q: &codec::WillProperties,
    theirs: Option<&v5::WillProperties>,
) -> Result<(), &'static str> {
    let Some(p) = theirs else {
        return check(*q == codec::WillProperties::default(), "will properties");
    };
    check(q.will_delay_interval == p.delay_interval, "will delay")?;
    check(
        format(q.payload_format, p.payload_format_indicator),
        "will format",
    )?;
    check(
        q.message_expiry_interval == p.message_expiry_interval,
        "will expiry",
    )?;
    check(q.content_type == p.content_type, "will content type")?;
    check(
        q.response_topic.as_ref().map(|t| t.as_str()) == p.response_topic.as_deref(),
        "will response topic",
    )?;
    check(q.correlation_data == p.correlation_data, "will correlation")?;
    check(users(&q.user_properties, &p.user_properties), "will users")
}
