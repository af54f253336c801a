//! Fixed-width integers on the wire, both directions, and the [`Sink`] every encoder writes to.
//!
//! Decoding reads from a `Bytes` that holds one complete frame, so a read that runs short is a
//! malformed packet, never "need more bytes". Encoding is written once per packet against
//! [`Sink`]: run on a [`Counter`] it measures, run on a `BytesMut` it writes. The length that
//! `encoded_len` reports and the bytes that `encode` writes therefore come from the same code, and
//! because `encode` measures first, every `EncodeError` is found before a byte is written.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{DecodeError, PacketId};

/// The error for a field that runs past the end of its frame.
pub(crate) const TRUNCATED: DecodeError =
    DecodeError::Malformed("a field runs past the end of the packet");

/// Where encoders put bytes: a buffer, or a [`Counter`] that only measures.
pub(crate) trait Sink {
    fn write_u8(&mut self, value: u8);
    fn write_u16(&mut self, value: u16);
    fn write_u32(&mut self, value: u32);
    fn write_slice(&mut self, bytes: &[u8]);
}

impl Sink for BytesMut {
    fn write_u8(&mut self, value: u8) {
        self.put_u8(value);
    }

    fn write_u16(&mut self, value: u16) {
        self.put_u16(value);
    }

    fn write_u32(&mut self, value: u32) {
        self.put_u32(value);
    }

    fn write_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A [`Sink`] that counts bytes instead of storing them.
#[derive(Debug, Default)]
pub(crate) struct Counter(usize);

impl Counter {
    /// Bytes written so far; saturates rather than wraps, so an absurd size still fails the
    /// remaining-length check instead of looking small.
    pub(crate) fn len(&self) -> usize {
        self.0
    }
}

impl Sink for Counter {
    fn write_u8(&mut self, _: u8) {
        self.0 = self.0.saturating_add(1);
    }

    fn write_u16(&mut self, _: u16) {
        self.0 = self.0.saturating_add(2);
    }

    fn write_u32(&mut self, _: u32) {
        self.0 = self.0.saturating_add(4);
    }

    fn write_slice(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
}

pub(crate) fn read_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    buf.try_get_u8().map_err(|_| TRUNCATED)
}

pub(crate) fn read_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    buf.try_get_u16().map_err(|_| TRUNCATED)
}

pub(crate) fn read_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    buf.try_get_u32().map_err(|_| TRUNCATED)
}

/// Reads a Packet Identifier, which is never zero ([MQTT-2.2.1-3]).
pub(crate) fn read_packet_id(buf: &mut Bytes) -> Result<PacketId, DecodeError> {
    // [MQTT-2.2.1-3] SUBSCRIBE, UNSUBSCRIBE and PUBLISH (QoS > 0) carry a non-zero identifier,
    // and every acknowledgement echoes one.
    PacketId::new(read_u16(buf)?).ok_or(DecodeError::Protocol("packet identifier is zero"))
}

/// Checks that a packet's parser used its whole frame: bytes left where the format has none
/// mean the remaining length and the fields disagree.
pub(crate) fn finish(buf: &Bytes) -> Result<(), DecodeError> {
    if buf.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::Malformed(
            "unexpected bytes after the end of the packet",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ReasonCode;

    #[test]
    fn counter_measures_what_a_buffer_receives() {
        fn write<S: Sink>(s: &mut S) {
            s.write_u8(1);
            s.write_u16(0x0203);
            s.write_u32(0x0405_0607);
            s.write_slice(b"89");
        }
        let mut counter = Counter::default();
        write(&mut counter);
        let mut buf = BytesMut::new();
        write(&mut buf);
        assert_eq!(counter.len(), buf.len());
        assert_eq!(&buf[..], &[1, 2, 3, 4, 5, 6, 7, b'8', b'9']);
    }

    #[test]
    fn short_reads_are_malformed_and_zero_packet_ids_are_refused() {
        let mut buf = Bytes::from_static(&[0x01]);
        assert_eq!(read_u16(&mut buf), Err(TRUNCATED));
        let mut buf = Bytes::from_static(&[0x01, 0x02, 0x03]);
        assert_eq!(read_u32(&mut buf), Err(TRUNCATED));
        let mut buf = Bytes::new();
        assert_eq!(read_u8(&mut buf), Err(TRUNCATED));
        let mut buf = Bytes::from_static(&[0x00, 0x00]);
        let err = read_packet_id(&mut buf).expect_err("zero id");
        assert_eq!(err, DecodeError::Protocol("packet identifier is zero"));
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
        let mut buf = Bytes::from_static(&[0x12, 0x34]);
        assert_eq!(read_packet_id(&mut buf).map(PacketId::get), Ok(0x1234));
        let trailing = finish(&Bytes::from_static(&[0])).expect_err("trailing byte");
        assert_eq!(trailing.reason_code(), ReasonCode::MalformedPacket);
    }
}
