//! The outgoing byte queue of one connection, written with vectored writes.
//!
//! Small packets are encoded back to back into one scratch buffer; a large payload is not copied
//! but queued as its own slice of the shared message, so fan-out to many subscribers costs one
//! header per subscriber and no payload copies. Nothing is allocated while the queue is empty.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use smallvec::SmallVec;

use crate::codec::{self, EncodeError, Packet, ProtocolVersion};
use crate::session::OutgoingPublish;
use crate::transport::Stream;

/// Payloads up to this size are copied next to their header: cheaper than another iovec.
const INLINE_PAYLOAD: usize = 512;

/// Slices handed to one `writev`.
const MAX_IOVECS: usize = 64;

#[derive(Debug, Default)]
pub struct OutBuf {
    /// Allocated while bytes are queued, so an idle connection carries 8 bytes here, not 64.
    queued: Option<Box<Queued>>,
    /// Bytes queued in `segments` and `scratch` together.
    len: usize,
    /// Bytes went into a stream that buffers (TLS, WebSocket) and have not been flushed yet.
    unflushed: bool,
}

#[derive(Debug, Default)]
struct Queued {
    /// Sealed byte runs, oldest first.
    segments: VecDeque<Bytes>,
    /// Where the next packets are encoded; sealed into `segments` before writing.
    scratch: BytesMut,
}

impl Queued {
    /// Moves the scratch bytes into the segment queue. `split` keeps the rest of the scratch
    /// allocation for the next packets.
    fn seal(&mut self) {
        if !self.scratch.is_empty() {
            self.segments.push_back(self.scratch.split().freeze());
        }
    }
}

impl OutBuf {
    fn queued(&mut self) -> &mut Queued {
        self.queued.get_or_insert_with(Box::default)
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing is queued here nor waiting inside the stream.
    pub fn is_empty(&self) -> bool {
        self.len == 0 && !self.unflushed
    }

    /// Discards everything queued, possibly mid-packet: only before closing the connection.
    pub fn clear(&mut self) {
        *self = OutBuf::default();
    }

    pub fn push_packet(
        &mut self,
        packet: &Packet,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
        let scratch = &mut self.queued().scratch;
        let before = scratch.len();
        codec::encode(packet, version, scratch)?;
        self.len += scratch.len() - before;
        Ok(())
    }

    pub fn push_publish(
        &mut self,
        publish: &OutgoingPublish,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
        let queued = self.queued.get_or_insert_with(Box::default);
        let before = queued.scratch.len();
        codec::encode_publish_header(&publish.view(), version, &mut queued.scratch)?;
        let header = queued.scratch.len() - before;
        let payload = &publish.message.payload;
        if payload.len() <= INLINE_PAYLOAD {
            queued.scratch.extend_from_slice(payload);
        } else {
            queued.seal();
            queued.segments.push_back(payload.clone());
        }
        self.len += header + payload.len();
        Ok(())
    }

    /// Writes until everything is out (flushed, for streams that buffer) or the socket is full.
    pub fn poll_flush(
        &mut self,
        stream: &mut Stream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while let Some(queued) = self.queued.as_mut() {
            queued.seal();
            if queued.segments.is_empty() {
                break;
            }
            let written = {
                let slices: SmallVec<[IoSlice<'_>; MAX_IOVECS]> = queued
                    .segments
                    .iter()
                    .take(MAX_IOVECS)
                    .map(|segment| IoSlice::new(segment))
                    .collect();
                ready!(stream.poll_write_vectored(cx, &slices))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unflushed |= stream.buffers_writes();
            self.consume(written);
        }
        if self.unflushed {
            ready!(stream.poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    fn consume(&mut self, mut written: usize) {
        self.len -= written;
        while written > 0 {
            let Some(front) = self.queued.as_mut().and_then(|q| q.segments.front_mut()) else {
                return;
            };
            if front.len() <= written {
                written -= front.len();
                if let Some(queued) = self.queued.as_mut() {
                    queued.segments.pop_front();
                }
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }

    /// Gives back the scratch allocation and the segment queue while nothing is queued, so an
    /// idle connection holds no write buffer.
    pub fn release_if_empty(&mut self) {
        if self.len == 0 {
            self.queued = None;
        }
    }
}
