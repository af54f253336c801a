//! Byte streams the broker speaks MQTT over: plain TCP, TLS, WebSocket and WebSocket over TLS,
//! as variants of [`Stream`], so the connection task never knows which it has. [`Acceptor`]
//! turns an accepted TCP connection into a [`Stream`] by the listener's kind (TLS handshake,
//! HTTP upgrade).
//!
//! Reading is readiness-first: a TCP connection holds no read buffer while it waits, and
//! allocates one only once the socket has bytes for it. That keeps an idle connection small
//! (mosquitto's model). TLS and WebSocket connections hold what rustls and tungstenite need
//! (a few KiB), but the connection's own buffers still come and go the same way.

pub mod tls;
pub mod ws;
mod x509;

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::tungstenite;

use crate::config::{ListenerConfig, ListenerProtocol};
use tls::{HandshakeError, TlsAcceptor, TlsError};
use ws::WsStream;

/// Bytes asked for per read once a socket is readable.
const READ_CHUNK: usize = 4096;

/// A connected byte stream. The boxed variants keep the enum as small as a bare TCP stream.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<WsStream<TcpStream>>),
    Wss(Box<WsStream<TlsStream<TcpStream>>>),
}

impl Stream {
    /// Reads whatever is available into `buf`, growing it only once bytes are there.
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
            Stream::Tls(tls) => poll_read_tls(tls, cx, buf),
            Stream::Ws(ws) => ws.poll_read_into(cx, buf),
            Stream::Wss(ws) => ws.poll_read_into(cx, buf),
        }
    }

    /// Writes some of `bufs`. TLS and WebSocket may keep bytes back until [`Stream::poll_flush`].
    pub fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Ws(ws) => ws.poll_write_vectored(cx, bufs),
            Stream::Wss(ws) => ws.poll_write_vectored(cx, bufs),
        }
    }

    /// Whether written bytes can wait inside the stream for [`Stream::poll_flush`]; a TCP
    /// write goes straight to the kernel.
    pub fn buffers_writes(&self) -> bool {
        !matches!(self, Stream::Tcp(_))
    }

    /// Writes out bytes the stream itself still holds (TLS records, WebSocket frames).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(_) => Poll::Ready(Ok(())),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Stream::Ws(ws) => ws.poll_flush(cx),
            Stream::Wss(ws) => ws.poll_flush(cx),
        }
    }

    /// Closes the write side so the peer sees a clean end of stream after our last bytes
    /// (TLS: close_notify; WebSocket: a close frame).
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            Stream::Ws(ws) => ws.poll_shutdown(cx),
            Stream::Wss(ws) => ws.poll_shutdown(cx),
        }
    }
}

/// Reads decrypted bytes through a stack buffer, so a connection waiting on TLS holds no read
/// buffer of its own (rustls keeps the record it is assembling).
fn poll_read_tls(
    tls: &mut TlsStream<TcpStream>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let mut chunk = [0u8; READ_CHUNK];
    let mut read = ReadBuf::new(&mut chunk);
    match ready!(Pin::new(tls).poll_read(cx, &mut read)) {
        Ok(()) => {
            buf.extend_from_slice(read.filled());
            Poll::Ready(Ok(read.filled().len()))
        }
        // A peer that drops TCP without close_notify has still ended the stream: MQTT's own
        // framing shows whether anything was cut short.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(0)),
        Err(e) => Poll::Ready(Err(e)),
    }
}

/// A stream ready for MQTT, with what the transport learned about the client.
pub struct Accepted {
    pub stream: Stream,
    /// The client certificate's identity, when the listener has `use_identity_as_username`:
    /// it replaces the CONNECT username.
    pub identity: Option<String>,
}

/// Why a connection failed before MQTT began.
#[derive(Debug, Error)]
pub enum AcceptError {
    #[error(transparent)]
    Tls(#[from] HandshakeError),
    #[error("WebSocket handshake failed: {0}")]
    WebSocket(#[from] tungstenite::Error),
}

/// How one listener turns accepted TCP connections into [`Stream`]s.
#[derive(Debug)]
pub enum Acceptor {
    Mqtt,
    Tls(Arc<TlsAcceptor>),
    Ws {
        max_message: usize,
    },
    Wss {
        tls: Arc<TlsAcceptor>,
        max_message: usize,
    },
}

impl Acceptor {
    /// Reads the listener's certificates, if it has TLS. `max_packet_size` bounds WebSocket
    /// messages.
    pub fn new(listener: &ListenerConfig, max_packet_size: u32) -> Result<Acceptor, TlsError> {
        let tls = listener
            .tls
            .as_ref()
            .map(|settings| TlsAcceptor::new(settings).map(Arc::new))
            .transpose()?;
        let max_message = usize::try_from(max_packet_size).unwrap_or(usize::MAX);
        Ok(match (listener.protocol, tls) {
            (ListenerProtocol::Mqtt, None) => Acceptor::Mqtt,
            (ListenerProtocol::Mqtt, Some(tls)) => Acceptor::Tls(tls),
            (ListenerProtocol::Websockets, None) => Acceptor::Ws { max_message },
            (ListenerProtocol::Websockets, Some(tls)) => Acceptor::Wss { tls, max_message },
        })
    }

    /// The TLS side, whose certificates SIGHUP reloads.
    pub fn tls(&self) -> Option<&Arc<TlsAcceptor>> {
        match self {
            Acceptor::Tls(tls) | Acceptor::Wss { tls, .. } => Some(tls),
            Acceptor::Mqtt | Acceptor::Ws { .. } => None,
        }
    }

    /// Runs the TLS handshake and the WebSocket upgrade, as the listener needs.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Accepted, AcceptError> {
        let (stream, identity) = match self {
            Acceptor::Mqtt => (Stream::Tcp(tcp), None),
            Acceptor::Tls(tls) => {
                let (stream, identity) = tls.accept(tcp).await?;
                (Stream::Tls(Box::new(stream)), identity)
            }
            Acceptor::Ws { max_message } => {
                let ws = ws::accept(tcp, *max_message).await?;
                (Stream::Ws(Box::new(ws)), None)
            }
            Acceptor::Wss { tls, max_message } => {
                let (stream, identity) = tls.accept(tcp).await?;
                let ws = ws::accept(stream, *max_message).await?;
                (Stream::Wss(Box::new(ws)), identity)
            }
        };
        Ok(Accepted { stream, identity })
    }
}
