//! Byte streams the broker speaks MQTT over. Today plain TCP; TLS and WebSocket join as further
//! variants of [`Stream`], so the connection task never knows which it has.
//!
//! Reading is readiness-first: a connection holds no read buffer while it waits, and allocates one
//! only once the socket has bytes for it. That keeps an idle connection small (mosquitto's model).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

/// Bytes asked for per read once a socket is readable.
const READ_CHUNK: usize = 4096;

/// A connected byte stream.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
}

impl Stream {
    /// Reads whatever is available into `buf`, growing it only once the socket is readable.
    /// `Ok(0)` means the peer closed its side.
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(tcp) => loop {
                ready!(tcp.poll_read_ready(cx))?;
                if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                    buf.reserve(READ_CHUNK);
                }
                match tcp.try_read_buf(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    result => return Poll::Ready(result),
                }
            },
        }
    }

    pub fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
        }
    }

    /// Closes the write side so the peer sees a clean end of stream after our last bytes.
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
        }
    }
}
