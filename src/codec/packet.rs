//! Placeholder until the codec implementation lands (see the codec branch).
use bytes::BytesMut;

use super::{DecodeContext, DecodeError, EncodeError, Packet, ProtocolVersion, PublishView};

pub fn decode(_buf: &mut BytesMut, _ctx: &DecodeContext) -> Result<Option<Packet>, DecodeError> {
    todo!()
}
pub fn encode(
    _packet: &Packet,
    _version: ProtocolVersion,
    _out: &mut BytesMut,
) -> Result<(), EncodeError> {
    todo!()
}
pub fn encoded_len(_packet: &Packet, _version: ProtocolVersion) -> Result<usize, EncodeError> {
    todo!()
}
pub fn encode_publish_header(
    _view: &PublishView<'_>,
    _version: ProtocolVersion,
    _out: &mut BytesMut,
) -> Result<(), EncodeError> {
    todo!()
}
pub fn publish_encoded_len(
    _view: &PublishView<'_>,
    _version: ProtocolVersion,
) -> Result<usize, EncodeError> {
    todo!()
}
