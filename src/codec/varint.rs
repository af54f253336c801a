//! Variable Byte Integers (MQTT 5.0 section 1.5.5, 3.1.1 section 2.2.3): seven bits per byte,
//! least significant group first, the high bit set on every byte but the last, at most four
//! bytes, so at most 268,435,455.
//!
//! They carry the remaining length, property lengths, property identifiers and Subscription
//! Identifiers. Invariants: decoding accepts only the minimal encoding ([MQTT-1.5.5-1]) and never
//! more than four bytes; encoding always writes the minimal one.

use bytes::{Buf, Bytes};

use super::DecodeError;
use super::wire::{Sink, TRUNCATED};

/// The largest value four bytes can carry.
pub(crate) const MAX: u32 = 268_435_455;

/// Parses a variable byte integer at the start of `bytes`, returning the value and how many
/// bytes it took, or `None` when `bytes` ends before the integer does.
///
/// A fourth byte with its continuation bit set, or a non-minimal encoding, is malformed at once,
/// whatever follows.
pub(crate) fn parse(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (index, &byte) in bytes.iter().take(4).enumerate() {
        let shift = 7 * index;
        value |= u32::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            // [MQTT-1.5.5-1] the minimum number of bytes: a last byte of zero after others
            // (0x80 0x00, say) pads a value that fits in fewer bytes.
            if index > 0 && byte == 0 {
                return Err(DecodeError::Malformed(
                    "variable byte integer is not minimally encoded",
                ));
            }
            return Ok(Some((value, index + 1)));
        }
    }
    if bytes.len() >= 4 {
        // [MQTT-1.5.5-1] at most four bytes: the fourth one cannot continue.
        return Err(DecodeError::Malformed(
            "variable byte integer longer than four bytes",
        ));
    }
    Ok(None)
}

/// Reads a variable byte integer inside a complete frame, where running short is malformed.
pub(crate) fn read(buf: &mut Bytes) -> Result<u32, DecodeError> {
    let (value, len) = parse(buf)?.ok_or(TRUNCATED)?;
    buf.advance(len);
    Ok(value)
}

/// `value` as a variable byte integer, or `None` if it is larger than [`MAX`].
pub(crate) fn checked(value: usize) -> Option<u32> {
    u32::try_from(value).ok().filter(|&v| v <= MAX)
}

/// How many bytes `value` takes (1 to 4 for values up to [`MAX`]).
pub(crate) fn len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value`, which must be at most [`MAX`] (see [`checked`]); larger values would need
/// a fifth byte, which no encoder here produces.
pub(crate) fn write<S: Sink>(s: &mut S, value: u32) {
    let mut rest = value;
    loop {
        let [low, ..] = rest.to_le_bytes();
        let digit = low & 0x7F;
        rest >>= 7;
        if rest == 0 {
            s.write_u8(digit);
            return;
        }
        s.write_u8(digit | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn encoded(value: u32) -> Vec<u8> {
        let mut out = BytesMut::new();
        write(&mut out, value);
        out.to_vec()
    }

    #[test]
    fn boundaries_encode_to_the_spec_table_and_back() {
        // MQTT 5.0 table 1-1: the smallest and largest value of each length.
        let cases: [(u32, &[u8]); 8] = [
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for (value, bytes) in cases {
            assert_eq!(encoded(value), bytes, "encoding {value}");
            assert_eq!(len(value), bytes.len(), "length of {value}");
            assert_eq!(
                parse(bytes),
                Ok(Some((value, bytes.len()))),
                "parsing {value}"
            );
            let mut buf = Bytes::copy_from_slice(bytes);
            assert_eq!(read(&mut buf), Ok(value));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn a_fifth_byte_is_malformed_even_before_it_arrives() {
        let err = parse(&[0xFF, 0xFF, 0xFF, 0xFF]).expect_err("four continuation bytes");
        assert!(matches!(err, DecodeError::Malformed(_)));
        assert!(parse(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).is_err());
        assert!(parse(&[0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
    }

    #[test]
    fn incomplete_integers_need_more_bytes() {
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(&[0x80]), Ok(None));
        assert_eq!(parse(&[0xFF, 0xFF, 0xFF]), Ok(None));
        let mut buf = Bytes::from_static(&[0x80]);
        assert_eq!(read(&mut buf), Err(TRUNCATED));
    }

    #[test]
    fn non_minimal_encodings_are_malformed() {
        for bytes in [
            &[0x80, 0x00][..],
            &[0xFF, 0x80, 0x00],
            &[0x80, 0x80, 0x80, 0x00],
        ] {
            let err = parse(bytes).expect_err("padded integer");
            assert_eq!(
                err,
                DecodeError::Malformed("variable byte integer is not minimally encoded")
            );
        }
    }

    #[test]
    fn checked_refuses_values_beyond_four_bytes() {
        assert_eq!(checked(268_435_455), Some(MAX));
        assert_eq!(checked(268_435_456), None);
        assert_eq!(checked(usize::MAX), None);
    }
}
