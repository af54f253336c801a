//! PINGREQ and PINGRESP (MQTT 5.0 sections 3.12 and 3.13): a fixed header alone, in every
//! version. Encoding writes nothing after the fixed header, so only decoding lives here.

use bytes::Bytes;

use crate::codec::DecodeError;
use crate::codec::wire::finish;

/// Checks that the remaining length is 0.
pub(super) fn decode(body: &Bytes) -> Result<(), DecodeError> {
    // Sections 3.12.1 and 3.13.1: no variable header and no payload.
    finish(body)
}

#[cfg(test)]
mod tests {
    use crate::codec::packet::testing::{ALL_VERSIONS, assert_wire, decode_err};
    use crate::codec::{DecodeError, Packet, ReasonCode};

    #[test]
    fn every_version_both_ways() {
        for version in ALL_VERSIONS {
            assert_wire(version, b"\xC0\x00", &Packet::PingReq);
            assert_wire(version, b"\xD0\x00", &Packet::PingResp);
        }
    }

    #[test]
    fn a_body_is_malformed() {
        for version in ALL_VERSIONS {
            for bytes in [&b"\xC0\x01\x00"[..], b"\xD0\x02\x00\x00"] {
                let err = decode_err(version, bytes);
                assert_eq!(
                    err,
                    DecodeError::Malformed("unexpected bytes after the end of the packet")
                );
                assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
            }
        }
    }
}
