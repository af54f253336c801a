//! UTF-8 Encoded Strings and Binary Data (MQTT 5.0 sections 1.5.4 and 1.5.6), and the topic
//! names and filters built on them.
//!
//! Both carry a two-byte big-endian length, so at most 65,535 bytes. A string must be
//! well-formed UTF-8 ([MQTT-1.5.4-1]: `std::str::from_utf8` already refuses surrogates and
//! overlong forms) and must not contain U+0000 ([MQTT-1.5.4-2]); anything else, control
//! characters included, is the caller's to judge (the topic types refuse control characters).
//! A leading U+FEFF is an ordinary character and is kept ([MQTT-1.5.4-3]).
//!
//! Binary data (passwords, Will payloads, correlation and authentication data) is returned as a
//! slice of the frame, without copying.

use bytes::Bytes;

use super::wire::{Sink, TRUNCATED, read_u16};
use super::{DecodeError, EncodeError};
use crate::topic::{TopicFilter, TopicName};

/// Reads a length-prefixed run of bytes, shared with the frame.
pub(crate) fn read_binary(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = usize::from(read_u16(buf)?);
    if buf.len() < len {
        return Err(TRUNCATED);
    }
    Ok(buf.split_to(len))
}

/// Reads a UTF-8 string and hands it to `make`, so a topic is validated and stored without an
/// intermediate `String`.
pub(crate) fn read_str_with<T>(
    buf: &mut Bytes,
    make: impl FnOnce(&str) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let raw = read_binary(buf)?;
    // [MQTT-1.5.4-2] U+0000 is the only character whose UTF-8 form contains a zero byte.
    if raw.contains(&0) {
        return Err(DecodeError::Malformed("string contains U+0000"));
    }
    // [MQTT-1.5.4-1] well-formed UTF-8, no surrogates (ED A0 80..ED BF BF) and no overlongs.
    let text = std::str::from_utf8(&raw)
        .map_err(|_| DecodeError::Malformed("string is not well-formed UTF-8"))?;
    make(text)
}

/// Reads a UTF-8 string into an owned `String`.
pub(crate) fn read_string(buf: &mut Bytes) -> Result<String, DecodeError> {
    read_str_with(buf, |text| Ok(text.to_owned()))
}

/// Reads a topic name. The empty name is legal only where a topic alias may stand for it (a 5.0
/// PUBLISH); everywhere else a topic name has at least one character ([MQTT-4.7.3-1]).
pub(crate) fn read_topic_name(
    buf: &mut Bytes,
    allow_empty: bool,
) -> Result<TopicName, DecodeError> {
    read_str_with(buf, |text| {
        if allow_empty {
            TopicName::new_allow_empty(text)
        } else {
            TopicName::new(text)
        }
        .map_err(DecodeError::TopicName)
    })
}

/// Reads a topic filter, including a shared subscription's `$share/{group}/` prefix.
pub(crate) fn read_topic_filter(buf: &mut Bytes) -> Result<TopicFilter, DecodeError> {
    read_str_with(buf, |text| {
        TopicFilter::new(text).map_err(DecodeError::TopicFilter)
    })
}

/// Writes `bytes` with its two-byte length, refusing more than 65,535 bytes rather than
/// truncating; `field` names it in the error.
pub(crate) fn write_binary<S: Sink>(
    s: &mut S,
    field: &'static str,
    bytes: &[u8],
) -> Result<(), EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::StringTooLong {
        field,
        len: bytes.len(),
    })?;
    s.write_u16(len);
    s.write_slice(bytes);
    Ok(())
}

/// Writes a UTF-8 string. Its contents are trusted: the types that hold strings validate them
/// when built, and re-checking every string on every send would tax the fan-out path.
pub(crate) fn write_str<S: Sink>(
    s: &mut S,
    field: &'static str,
    text: &str,
) -> Result<(), EncodeError> {
    write_binary(s, field, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::codec::ReasonCode;
    use crate::topic::TopicError;

    fn wire(payload: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        write_binary(&mut out, "test", payload).expect("short enough");
        out.freeze()
    }

    #[test]
    fn strings_round_trip_and_consume_exactly_their_bytes() {
        let mut buf = Bytes::from_static(&[0x00, 0x03, b'a', b'/', b'b', 0xAA]);
        assert_eq!(read_string(&mut buf).as_deref(), Ok("a/b"));
        assert_eq!(&buf[..], &[0xAA]);
        let mut out = BytesMut::new();
        write_str(&mut out, "test", "a/b").expect("short");
        assert_eq!(&out[..], &[0x00, 0x03, b'a', b'/', b'b']);
        let mut empty = Bytes::from_static(&[0x00, 0x00]);
        assert_eq!(read_string(&mut empty).as_deref(), Ok(""));
    }

    #[test]
    fn u0000_is_malformed() {
        let mut buf = wire(b"a\0b");
        let err = read_string(&mut buf).expect_err("U+0000");
        assert_eq!(err, DecodeError::Malformed("string contains U+0000"));
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    }

    #[test]
    fn invalid_utf8_surrogates_and_overlongs_are_malformed() {
        let not_utf8 = DecodeError::Malformed("string is not well-formed UTF-8");
        for bad in [
            &[0xFF][..],
            &[0xC3],                   // truncated two-byte sequence
            &[0xED, 0xA0, 0x80],       // U+D800, a surrogate
            &[0xED, 0xBF, 0xBF],       // U+DFFF, a surrogate
            &[0xC0, 0xAF],             // overlong '/'
            &[0xF4, 0x90, 0x80, 0x80], // beyond U+10FFFF
        ] {
            assert_eq!(
                read_string(&mut wire(bad)),
                Err(not_utf8.clone()),
                "{bad:02X?}"
            );
        }
    }

    #[test]
    fn a_bom_is_kept_not_stripped() {
        let mut buf = wire("\u{FEFF}a/b".as_bytes());
        assert_eq!(read_string(&mut buf).as_deref(), Ok("\u{FEFF}a/b"));
        let mut buf = wire("\u{FEFF}a/b".as_bytes());
        let topic = read_topic_name(&mut buf, false).expect("BOM is a valid character");
        assert_eq!(topic.as_str(), "\u{FEFF}a/b");
    }

    #[test]
    fn control_characters_are_left_to_the_caller() {
        assert_eq!(read_string(&mut wire(b"a\x01b")).as_deref(), Ok("a\u{1}b"));
        assert_eq!(
            read_topic_name(&mut wire(b"a\x01b"), false),
            Err(DecodeError::TopicName(TopicError::ControlCharacter))
        );
    }

    #[test]
    fn a_length_past_the_end_is_malformed() {
        assert_eq!(
            read_string(&mut Bytes::from_static(&[0x00, 0x05, b'a'])),
            Err(TRUNCATED)
        );
        assert_eq!(
            read_binary(&mut Bytes::from_static(&[0x00])),
            Err(TRUNCATED)
        );
    }

    #[test]
    fn binary_data_is_a_slice_of_the_frame() {
        let frame = wire(&[0x00, 0xFF, 0x00]);
        let start = frame.as_ptr();
        let mut buf = frame.clone();
        let data = read_binary(&mut buf).expect("complete");
        assert_eq!(&data[..], &[0x00, 0xFF, 0x00]);
        assert_eq!(data.as_ptr(), start.wrapping_add(2), "no copy");
    }

    #[test]
    fn topic_rules_map_to_their_errors() {
        assert_eq!(
            read_topic_name(&mut wire(b"a/#"), true),
            Err(DecodeError::TopicName(TopicError::WildcardInName))
        );
        assert_eq!(
            read_topic_name(&mut wire(b""), false),
            Err(DecodeError::TopicName(TopicError::Empty))
        );
        assert_eq!(
            read_topic_name(&mut wire(b""), true).map(|t| t.is_empty()),
            Ok(true)
        );
        let err = read_topic_filter(&mut wire(b"a/#/b")).expect_err("misplaced #");
        assert_eq!(
            err,
            DecodeError::TopicFilter(TopicError::MisplacedMultiLevelWildcard)
        );
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket);
    }

    #[test]
    fn over_long_fields_are_refused_not_truncated() {
        let long = vec![b'x'; 65_536];
        let mut out = BytesMut::new();
        assert_eq!(
            write_binary(&mut out, "payload", &long),
            Err(EncodeError::StringTooLong {
                field: "payload",
                len: 65_536
            })
        );
        assert!(out.is_empty());
        write_binary(&mut out, "payload", &long[..65_535]).expect("fits");
        assert_eq!(out.len(), 65_537);
    }
}
