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
