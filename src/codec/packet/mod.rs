//! Framing and dispatch: the fixed header (MQTT 5.0 section 2.1, 3.1.1 section 2.2) and the
//! public entry points; every packet's variable header and payload live in their own file.
//!
//! Decoding is check-then-parse. The first byte is checked as soon as it arrives; the remaining
//! length is read next, and a frame larger than the maximum packet size is refused before its
//! body is waited for or allocated. Only a complete frame is parsed, from a `Bytes` split off the
//! buffer so payloads and binary fields are slices of it, not copies. Inside a complete frame a
//! field that runs short is malformed, and bytes left over where the format has none are too.
//! The buffer is consumed only when a packet is returned: on `Ok(None)` and on every error it is
//! as the caller left it.
//!
//! Encoding measures before it writes (see `wire`), so a packet that cannot be encoded leaves
//! `out` untouched, and `encoded_len` is exact by construction.

mod auth;
mod connack;
mod connect;
mod disconnect;
mod ping;
mod publish;
mod pubresponse;
mod suback;
mod subscribe;
mod unsuback;
mod unsubscribe;

#[cfg(test)]
mod testing;

use bytes::{Bytes, BytesMut};

use super::wire::{Counter, Sink, read_u8};
use super::{
    DecodeContext, DecodeError, EncodeError, Packet, ProtocolVersion, PublishView, QoS, ReasonCode,
    ReasonContext, varint,
};

/// Packet type numbers, the high nibble of the first byte (section 2.1.2).
mod kind {
    pub(super) const CONNECT: u8 = 1;
    pub(super) const CONNACK: u8 = 2;
    pub(super) const PUBLISH: u8 = 3;
    pub(super) const PUBACK: u8 = 4;
    pub(super) const PUBREC: u8 = 5;
    pub(super) const PUBREL: u8 = 6;
    pub(super) const PUBCOMP: u8 = 7;
    pub(super) const SUBSCRIBE: u8 = 8;
    pub(super) const SUBACK: u8 = 9;
    pub(super) const UNSUBSCRIBE: u8 = 10;
    pub(super) const UNSUBACK: u8 = 11;
    pub(super) const PINGREQ: u8 = 12;
    pub(super) const PINGRESP: u8 = 13;
    pub(super) const DISCONNECT: u8 = 14;
    pub(super) const AUTH: u8 = 15;
}

/// The flags PUBREL, SUBSCRIBE and UNSUBSCRIBE must carry (section 2.1.3); every other packet
/// but PUBLISH carries 0.
const FLAGS_0010: u8 = 0b0010;

/// The PUBLISH flags of the first byte, already checked.
#[derive(Clone, Copy, Debug, PartialEq)]
struct PublishFlags {
    dup: bool,
    qos: QoS,
    retain: bool,
}

/// The first byte of a fixed header: which packet, and for PUBLISH its flags.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Header {
    Connect,
    ConnAck,
    Publish(PublishFlags),
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    PingReq,
    PingResp,
    Disconnect,
    Auth,
}

impl Header {
    /// Checks the first byte: a defined packet type for `version`, with the flags it must have.
    fn parse(byte: u8, version: ProtocolVersion) -> Result<Header, DecodeError> {
        let flags = byte & 0x0F;
        let header = match byte >> 4 {
            kind::CONNECT => Header::Connect,
            kind::CONNACK => Header::ConnAck,
            kind::PUBLISH => return publish_flags(flags),
            kind::PUBACK => Header::PubAck,
            kind::PUBREC => Header::PubRec,
            kind::PUBREL => Header::PubRel,
            kind::PUBCOMP => Header::PubComp,
            kind::SUBSCRIBE => Header::Subscribe,
            kind::SUBACK => Header::SubAck,
            kind::UNSUBSCRIBE => Header::Unsubscribe,
            kind::UNSUBACK => Header::UnsubAck,
            kind::PINGREQ => Header::PingReq,
            kind::PINGRESP => Header::PingResp,
            kind::DISCONNECT => Header::Disconnect,
            // Section 2.1.2: type 15 is AUTH in 5.0 and reserved before it.
            kind::AUTH if version.is_v5() => Header::Auth,
            kind::AUTH => return Err(DecodeError::Malformed("AUTH exists only in MQTT 5")),
            _ => return Err(DecodeError::Malformed("reserved packet type 0")),
        };
        let expected = match header {
            Header::PubRel | Header::Subscribe | Header::Unsubscribe => FLAGS_0010,
            _ => 0,
        };
        // [MQTT-2.1.3-1] (3.1.1: [MQTT-2.2.2-1]) reserved flags are exactly as section 2.1.3
        // lists them. MQTT 3.1 gave these bits other uses (DUP on a retried PUBREL, SUBSCRIBE or
        // UNSUBSCRIBE) or none, so, as mosquitto does, they are not checked for 3.1.
        if flags != expected && version != ProtocolVersion::V31 {
            return Err(DecodeError::Malformed("invalid fixed header flags"));
        }
        Ok(header)
    }
}

fn publish_flags(flags: u8) -> Result<Header, DecodeError> {
    // [MQTT-3.3.1-4] a PUBLISH with both QoS bits set is malformed.
    let qos =
        QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::Malformed("PUBLISH with QoS 3"))?;
    let dup = flags & 0b1000 != 0;
    // [MQTT-3.3.1-2] DUP must be 0 for QoS 0 messages.
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::Malformed("PUBLISH with DUP set at QoS 0"));
    }
    Ok(Header::Publish(PublishFlags {
        dup,
        qos,
        retain: flags & 0b0001 != 0,
    }))
}

/// The most `decode` reserves ahead of bytes that have arrived, for an incomplete frame.
const RESERVE_AHEAD: usize = 64 * 1024;

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)` while the frame is incomplete, having reserved room for more of it (at most
/// 64 KiB ahead) once its size is known; a frame larger than `ctx.max_packet_size` (fixed header
/// included) is refused as soon as its remaining length has arrived. Bytes are consumed only on `Ok(Some)`.
pub fn decode(buf: &mut BytesMut, ctx: &DecodeContext) -> Result<Option<Packet>, DecodeError> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let header = Header::parse(first, ctx.version)?;
    let Some((remaining, len_bytes)) = varint::parse(rest)? else {
        return Ok(None);
    };
    let header_len = 1 + len_bytes;
    let frame_len = usize::try_from(remaining)
        .unwrap_or(usize::MAX)
        .saturating_add(header_len);
    let max = usize::try_from(ctx.max_packet_size).unwrap_or(usize::MAX);
    if frame_len > max {
        // [MQTT-3.1.2-24] (and section 3.2.2.3.6 for the client side): a packet above the
        // Maximum Packet Size is refused, before its body is buffered.
        return Err(DecodeError::PacketTooLarge {
            size: u64::try_from(frame_len).unwrap_or(u64::MAX),
            max: ctx.max_packet_size,
        });
    }
    if buf.len() < frame_len {
        // Room for the rest of the frame, but never more than RESERVE_AHEAD at a time: a peer
        // announcing a huge packet must send it before we hold memory for it.
        buf.reserve((frame_len - buf.len()).min(RESERVE_AHEAD));
        return Ok(None);
    }
    let frame = buf.split_to(frame_len).freeze();
    match parse_body(header, frame.slice(header_len..), ctx.version) {
        Ok(packet) => Ok(Some(packet)),
        Err(err) => {
            put_back(buf, &frame);
            Err(err)
        }
    }
}

/// Returns a frame that failed to parse to the front of the buffer, so an error consumes nothing.
/// This copies (the frame still shares its allocation with `buf`), which is fine on a path that
/// ends the connection.
fn put_back(buf: &mut BytesMut, frame: &[u8]) {
    let mut whole = BytesMut::with_capacity(frame.len() + buf.len());
    whole.extend_from_slice(frame);
    whole.extend_from_slice(buf);
    *buf = whole;
}

fn parse_body(
    header: Header,
    body: Bytes,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    Ok(match header {
        Header::Connect => Packet::Connect(Box::new(connect::decode(body)?)),
        Header::ConnAck => Packet::ConnAck(connack::decode(body, version)?),
        Header::Publish(flags) => Packet::Publish(publish::decode(flags, body, version)?),
        Header::PubAck => Packet::PubAck(pubresponse::decode(
            body,
            version,
            ReasonContext::PubAckOrRec,
        )?),
        Header::PubRec => Packet::PubRec(pubresponse::decode(
            body,
            version,
            ReasonContext::PubAckOrRec,
        )?),
        Header::PubRel => Packet::PubRel(pubresponse::decode(
            body,
            version,
            ReasonContext::PubRelOrComp,
        )?),
        Header::PubComp => Packet::PubComp(pubresponse::decode(
            body,
            version,
            ReasonContext::PubRelOrComp,
        )?),
        Header::Subscribe => Packet::Subscribe(subscribe::decode(body, version)?),
        Header::SubAck => Packet::SubAck(suback::decode(body, version)?),
        Header::Unsubscribe => Packet::Unsubscribe(unsubscribe::decode(body, version)?),
        Header::UnsubAck => Packet::UnsubAck(unsuback::decode(body, version)?),
        Header::PingReq => {
            ping::decode(&body)?;
            Packet::PingReq
        }
        Header::PingResp => {
            ping::decode(&body)?;
            Packet::PingResp
        }
        Header::Disconnect => Packet::Disconnect(disconnect::decode(body, version)?),
        Header::Auth => Packet::Auth(auth::decode(body)?),
    })
}

/// Reads a reason code and checks that `context` allows it (the tables of sections 3.2.2.2 to
/// 3.15.2.1); an undefined or misplaced code is a Protocol Error, as mosquitto treats it.
fn read_reason(buf: &mut Bytes, context: ReasonContext) -> Result<ReasonCode, DecodeError> {
    ReasonCode::from_u8(read_u8(buf)?)
        .filter(|reason| reason.allowed_in(context))
        .ok_or(DecodeError::Protocol(
            "reason code not allowed in this packet",
        ))
}

/// Refuses to encode a reason code that `context` does not allow.
fn check_reason(reason: ReasonCode, context: ReasonContext) -> Result<(), EncodeError> {
    if reason.allowed_in(context) {
        Ok(())
    } else {
        Err(EncodeError::NotAllowed("this reason code in this packet"))
    }
}

/// Appends `packet` to `out`, in `version`'s format (a CONNECT in the format its own `protocol`
/// names). On error nothing is written.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    let first = write_body(packet, version, &mut counter)?;
    let header = FixedHeader::new(first, counter.len())?;
    out.reserve(header.frame_len());
    header.write(out);
    write_body(packet, version, out).map(|_| ())
}

/// The exact number of bytes [`encode`] writes for `packet`.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    let first = write_body(packet, version, &mut counter)?;
    Ok(FixedHeader::new(first, counter.len())?.frame_len())
}

/// Appends a PUBLISH without its payload: fixed header (whose remaining length counts
/// `view.payload_len`), topic, packet identifier and, for 5.0, properties. The caller sends the
/// payload after it, as its own slice of a vectored write. On error nothing is written.
pub fn encode_publish_header(
    view: &PublishView<'_>,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    publish::write_header(view, version, &mut counter)?;
    let header = FixedHeader::new(
        publish::first_byte(view),
        counter.len().saturating_add(view.payload_len),
    )?;
    out.reserve(header.header_len() + counter.len());
    header.write(out);
    publish::write_header(view, version, out)
}

/// The whole frame size of the PUBLISH `view` describes, payload included.
pub fn publish_encoded_len(
    view: &PublishView<'_>,
    version: ProtocolVersion,
) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    publish::write_header(view, version, &mut counter)?;
    Ok(FixedHeader::new(
        publish::first_byte(view),
        counter.len().saturating_add(view.payload_len),
    )?
    .frame_len())
}

/// Writes everything after the fixed header and returns the fixed header's first byte.
fn write_body<S: Sink>(
    packet: &Packet,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<u8, EncodeError> {
    Ok(match packet {
        Packet::Connect(connect) => {
            connect::write(connect, s)?;
            kind::CONNECT << 4
        }
        Packet::ConnAck(connack) => {
            connack::write(connack, version, s)?;
            kind::CONNACK << 4
        }
        Packet::Publish(publish) => {
            // The same encoder as `encode_publish_header`, on a view of this packet.
            let view = publish::view(publish);
            publish::write_header(&view, version, s)?;
            s.write_slice(&publish.payload);
            publish::first_byte(&view)
        }
        Packet::PubAck(ack) => {
            pubresponse::write(ack, version, ReasonContext::PubAckOrRec, s)?;
            kind::PUBACK << 4
        }
        Packet::PubRec(rec) => {
            pubresponse::write(rec, version, ReasonContext::PubAckOrRec, s)?;
            kind::PUBREC << 4
        }
        Packet::PubRel(rel) => {
            pubresponse::write(rel, version, ReasonContext::PubRelOrComp, s)?;
            kind::PUBREL << 4 | FLAGS_0010
        }
        Packet::PubComp(comp) => {
            pubresponse::write(comp, version, ReasonContext::PubRelOrComp, s)?;
            kind::PUBCOMP << 4
        }
        Packet::Subscribe(subscribe) => {
            subscribe::write(subscribe, version, s)?;
            kind::SUBSCRIBE << 4 | FLAGS_0010
        }
        Packet::SubAck(suback) => {
            suback::write(suback, version, s)?;
            kind::SUBACK << 4
        }
        Packet::Unsubscribe(unsubscribe) => {
            unsubscribe::write(unsubscribe, version, s)?;
            kind::UNSUBSCRIBE << 4 | FLAGS_0010
        }
        Packet::UnsubAck(unsuback) => {
            unsuback::write(unsuback, version, s)?;
            kind::UNSUBACK << 4
        }
        Packet::PingReq => kind::PINGREQ << 4,
        Packet::PingResp => kind::PINGRESP << 4,
        Packet::Disconnect(disconnect) => {
            disconnect::write(disconnect, version, s)?;
            kind::DISCONNECT << 4
        }
        Packet::Auth(auth) => {
            auth::write(auth, version, s)?;
            kind::AUTH << 4
        }
    })
}

/// A fixed header to write: the first byte and a remaining length known to fit four bytes.
struct FixedHeader {
    first: u8,
    remaining: u32,
    body_len: usize,
}

impl FixedHeader {
    fn new(first: u8, body_len: usize) -> Result<FixedHeader, EncodeError> {
        let remaining = varint::checked(body_len).ok_or(EncodeError::PacketTooLarge(body_len))?;
        Ok(FixedHeader {
            first,
            remaining,
            body_len,
        })
    }

    fn header_len(&self) -> usize {
        1 + varint::len(self.remaining)
    }

    fn frame_len(&self) -> usize {
        self.header_len() + self.body_len
    }

    fn write(&self, out: &mut BytesMut) {
        out.write_u8(self.first);
        varint::write(out, self.remaining);
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{ALL_VERSIONS, assert_wire, ctx, decode_err};
    use super::*;
    use crate::codec::{PacketId, PubResponse, Publish, PublishProperties};
    use crate::topic::TopicName;

    #[test]
    fn an_announced_huge_frame_reserves_only_a_bounded_amount_ahead() {
        // PUBLISH claiming a remaining length of 200,000,000 bytes, within the default maximum.
        let mut buf = BytesMut::from(&[0x30, 0x80, 0xA8, 0xAE, 0x5F][..]);
        assert_eq!(decode(&mut buf, &DecodeContext::default()), Ok(None));
        assert_eq!(buf.len(), 5, "nothing consumed");
        assert!(
            buf.capacity() <= 5 + RESERVE_AHEAD,
            "reserved {}",
            buf.capacity()
        );
    }

    /// A QoS 0 PUBLISH to "t", whose frame has 3 bytes of topic before the payload.
    fn publish_to_t(payload: Vec<u8>) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicName::new("t").expect("valid"),
            packet_id: None,
            properties: PublishProperties::default(),
            payload: Bytes::from(payload),
        })
    }

    #[test]
    fn reserved_packet_type_0_is_malformed_from_its_first_byte() {
        for version in ALL_VERSIONS {
            for bytes in [&b"\x00"[..], b"\x00\x00"] {
                assert_eq!(
                    decode_err(version, bytes),
                    DecodeError::Malformed("reserved packet type 0")
                );
            }
        }
    }

    #[test]
    fn type_15_is_malformed_before_v5() {
        for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
            assert_eq!(
                decode_err(version, b"\xF0"),
                DecodeError::Malformed("AUTH exists only in MQTT 5")
            );
        }
    }

    #[test]
    fn fixed_header_flags_must_match_section_2_1_3() {
        // [MQTT-2.1.3-1] One wrong first byte per packet type, checked before the length.
        let wrong = [
            0x11, 0x28, 0x41, 0x52, 0x60, 0x64, 0x6A, 0x74, 0x80, 0x83, 0x91, 0xA0, 0xA3, 0xB2,
            0xC1, 0xD8, 0xE1, 0xF2,
        ];
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for first in wrong {
                if first >> 4 == kind::AUTH && !version.is_v5() {
                    continue;
                }
                let err = decode_err(version, &[first]);
                assert_eq!(
                    err,
                    DecodeError::Malformed("invalid fixed header flags"),
                    "{first:02X}"
                );
                assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
            }
        }
    }

    #[test]
    fn v31_does_not_check_the_flags_of_other_packets() {
        // A 3.1 client retrying PUBREL sets DUP; 3.1 marks the flags of acknowledgements unused.
        let id = PacketId::new(1).expect("non-zero");
        let mut buf = BytesMut::from(&b"\x6A\x02\x00\x01\x41\x02\x00\x01"[..]);
        let v31 = ctx(ProtocolVersion::V31);
        assert_eq!(
            decode(&mut buf, &v31),
            Ok(Some(Packet::PubRel(PubResponse::success(id))))
        );
        assert_eq!(
            decode(&mut buf, &v31),
            Ok(Some(Packet::PubAck(PubResponse::success(id))))
        );
    }

    #[test]
    fn publish_qos_3_and_dup_at_qos_0_are_malformed() {
        for version in ALL_VERSIONS {
            // [MQTT-3.3.1-4]
            for first in [0x36, 0x37, 0x3E] {
                assert_eq!(
                    decode_err(version, &[first, 0x03, 0x00, 0x01, b't']),
                    DecodeError::Malformed("PUBLISH with QoS 3")
                );
            }
            // [MQTT-3.3.1-2]
            for first in [0x38, 0x39] {
                assert_eq!(
                    decode_err(version, &[first]),
                    DecodeError::Malformed("PUBLISH with DUP set at QoS 0")
                );
            }
        }
    }

    #[test]
    fn remaining_length_boundaries_both_ways() {
        assert_wire(ProtocolVersion::V311, b"\xC0\x00", &Packet::PingReq);
        for (remaining, header) in [
            (127usize, &[0x30, 0x7F][..]),
            (128, &[0x30, 0x80, 0x01]),
            (16_383, &[0x30, 0xFF, 0x7F]),
            (16_384, &[0x30, 0x80, 0x80, 0x01]),
            (2_097_151, &[0x30, 0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x30, 0x80, 0x80, 0x80, 0x01]),
        ] {
            let packet = publish_to_t(vec![0xA5; remaining - 3]);
            let mut out = BytesMut::new();
            encode(&packet, ProtocolVersion::V311, &mut out).expect("encodable");
            assert_eq!(&out[..header.len()], header, "remaining length {remaining}");
            assert_eq!(out.len(), header.len() + remaining);
            assert_eq!(encoded_len(&packet, ProtocolVersion::V311), Ok(out.len()));
            let decoded = decode(&mut out, &ctx(ProtocolVersion::V311));
            assert_eq!(decoded, Ok(Some(packet)), "remaining length {remaining}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn the_largest_remaining_length_waits_for_its_body() {
        let header = [0x30, 0xFF, 0xFF, 0xFF, 0x7F];
        let mut buf = BytesMut::from(&header[..]);
        assert_eq!(decode(&mut buf, &ctx(ProtocolVersion::V5)), Ok(None));
        assert_eq!(&buf[..], &header[..]);
        let mut small = ctx(ProtocolVersion::V5);
        small.max_packet_size = 1024;
        assert_eq!(
            decode(&mut buf, &small),
            Err(DecodeError::PacketTooLarge {
                size: 268_435_455 + 5,
                max: 1024
            })
        );
    }

    #[test]
    fn a_fifth_length_byte_is_malformed_at_once() {
        for version in ALL_VERSIONS {
            for bytes in [&b"\x30\xFF\xFF\xFF\xFF"[..], b"\x30\x80\x80\x80\x80\x01"] {
                assert_eq!(
                    decode_err(version, bytes),
                    DecodeError::Malformed("variable byte integer longer than four bytes")
                );
            }
        }
    }

    #[test]
    fn a_padded_remaining_length_is_malformed() {
        // [MQTT-1.5.5-1] 0 encoded in two bytes.
        assert_eq!(
            decode_err(ProtocolVersion::V5, b"\xC0\x80\x00"),
            DecodeError::Malformed("variable byte integer is not minimally encoded")
        );
    }

    #[test]
    fn an_oversized_frame_is_refused_when_only_its_fixed_header_has_arrived() {
        let mut limited = ctx(ProtocolVersion::V311);
        limited.max_packet_size = 100;
        // Remaining length 200: a 203-byte frame.
        let mut buf = BytesMut::from(&b"\x30\xC8\x01"[..]);
        let err = decode(&mut buf, &limited).expect_err("too large");
        assert_eq!(
            err,
            DecodeError::PacketTooLarge {
                size: 203,
                max: 100
            }
        );
        assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
        assert_eq!(&buf[..], b"\x30\xC8\x01");
        assert!(buf.capacity() < 203, "nothing reserved for a refused frame");
    }

    #[test]
    fn the_limit_counts_the_whole_frame() {
        let packet = publish_to_t(vec![0xA5; 95]);
        let mut bytes = BytesMut::new();
        encode(&packet, ProtocolVersion::V311, &mut bytes).expect("encodable");
        assert_eq!(bytes.len(), 100);
        let mut limited = ctx(ProtocolVersion::V311);
        limited.max_packet_size = 100;
        assert_eq!(decode(&mut bytes.clone(), &limited), Ok(Some(packet)));
        limited.max_packet_size = 99;
        assert_eq!(
            decode(&mut bytes, &limited),
            Err(DecodeError::PacketTooLarge { size: 100, max: 99 })
        );
    }

    #[test]
    fn an_incomplete_frame_reserves_room_for_the_rest() {
        let mut buf = BytesMut::from(&b"\x30\xC8\x01\x00"[..]);
        assert_eq!(decode(&mut buf, &ctx(ProtocolVersion::V311)), Ok(None));
        assert_eq!(&buf[..], b"\x30\xC8\x01\x00");
        assert!(buf.capacity() >= 203);
    }

    #[test]
    fn back_to_back_frames_decode_one_at_a_time() {
        let id = PacketId::new(5).expect("non-zero");
        let mut buf = BytesMut::from(&b"\x30\x04\x00\x01tx\x40\x02\x00\x05\xC0\x00\xD0"[..]);
        let v311 = ctx(ProtocolVersion::V311);
        assert_eq!(
            decode(&mut buf, &v311),
            Ok(Some(publish_to_t(b"x".to_vec())))
        );
        assert_eq!(&buf[..], b"\x40\x02\x00\x05\xC0\x00\xD0");
        assert_eq!(
            decode(&mut buf, &v311),
            Ok(Some(Packet::PubAck(PubResponse::success(id))))
        );
        assert_eq!(decode(&mut buf, &v311), Ok(Some(Packet::PingReq)));
        assert_eq!(decode(&mut buf, &v311), Ok(None));
        assert_eq!(&buf[..], b"\xD0");
    }

    #[test]
    fn an_error_consumes_nothing_even_with_frames_behind_it() {
        // A PUBACK with packet identifier 0, then a valid PINGREQ.
        let bytes = b"\x40\x02\x00\x00\xC0\x00";
        assert_eq!(
            decode_err(ProtocolVersion::V311, bytes),
            DecodeError::Protocol("packet identifier is zero")
        );
    }
}
