//! Helpers for the packet tests: each drives the public entry points the way a connection does
//! and checks the invariants every frame must keep.

use bytes::BytesMut;

use crate::codec::varint;
use crate::codec::{
    DecodeContext, DecodeError, EncodeError, MAX_PACKET_SIZE, Packet, ProtocolVersion, decode,
    encode, encoded_len,
};

pub(crate) const ALL_VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

pub(crate) fn ctx(version: ProtocolVersion) -> DecodeContext {
    DecodeContext {
        version,
        max_packet_size: MAX_PACKET_SIZE,
    }
}

/// Decodes one packet from `bytes`, which must hold exactly one frame.
pub(crate) fn decode_one(version: ProtocolVersion, bytes: &[u8]) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, &ctx(version))?.expect("a complete frame");
    assert!(buf.is_empty(), "the whole frame is consumed");
    Ok(packet)
}

/// Asserts that decoding `bytes` fails, consumes nothing, and returns the error.
pub(crate) fn decode_err(version: ProtocolVersion, bytes: &[u8]) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    let err = decode(&mut buf, &ctx(version)).expect_err("the frame is invalid");
    assert_eq!(&buf[..], bytes, "an error consumes nothing");
    err
}

/// Encodes `packet`, checking that `encoded_len` predicted the length.
pub(crate) fn encoded(version: ProtocolVersion, packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out).expect("encodable");
    assert_eq!(
        encoded_len(packet, version),
        Ok(out.len()),
        "encoded_len is exact"
    );
    out.to_vec()
}

/// Asserts that encoding `packet` fails, writes nothing, and returns the error.
pub(crate) fn encode_err(version: ProtocolVersion, packet: &Packet) -> EncodeError {
    let mut out = BytesMut::from(&b"kept"[..]);
    let err = encode(packet, version, &mut out).expect_err("not encodable");
    assert_eq!(&out[..], b"kept", "a failed encode writes nothing");
    assert_eq!(encoded_len(packet, version), Err(err.clone()));
    err
}

/// Asserts that `bytes` is the wire form of `packet` in `version`, both ways: it decodes to the
/// packet, consuming exactly one frame when another follows; the packet encodes to exactly these
/// bytes; and every strict prefix decodes to `Ok(None)` and leaves the buffer untouched.
pub(crate) fn assert_wire(version: ProtocolVersion, bytes: &[u8], packet: &Packet) {
    let mut buf = BytesMut::from(bytes);
    buf.extend_from_slice(&[0xC0, 0x00]);
    let decoded = decode(&mut buf, &ctx(version));
    assert_eq!(decoded, Ok(Some(packet.clone())), "decoding {bytes:02X?}");
    assert_eq!(&buf[..], &[0xC0, 0x00], "exactly one frame consumed");
    assert_eq!(encoded(version, packet), bytes, "encoding {packet:?}");
    assert_incomplete_prefixes(version, bytes);
}

/// Asserts that every strict prefix of the frame `bytes` is incomplete, not an error.
pub(crate) fn assert_incomplete_prefixes(version: ProtocolVersion, bytes: &[u8]) {
    for end in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..end]);
        assert_eq!(
            decode(&mut buf, &ctx(version)),
            Ok(None),
            "prefix of {end} bytes"
        );
        assert_eq!(&buf[..], &bytes[..end], "prefix of {end} bytes untouched");
    }
}

/// Asserts that `bytes` decodes to `packet` in `version` (for forms the encoder does not
/// produce, such as a long form where a short one exists).
pub(crate) fn assert_decodes(version: ProtocolVersion, bytes: &[u8], packet: &Packet) {
    assert_eq!(
        decode_one(version, bytes),
        Ok(packet.clone()),
        "decoding {bytes:02X?}"
    );
}

/// Builds a frame from its first byte and body, with the remaining length between.
pub(crate) fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = BytesMut::from(&[first][..]);
    let len = varint::checked(body.len()).expect("body fits a frame");
    varint::write(&mut bytes, len);
    bytes.extend_from_slice(body);
    bytes.to_vec()
}

/// Concatenates byte pieces, so test frames can be written field by field.
pub(crate) fn cat(pieces: &[&[u8]]) -> Vec<u8> {
    pieces.concat()
}
