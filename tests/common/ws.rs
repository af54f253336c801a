//! A WebSocket client for the tests: tokio-tungstenite's client, wrapped as a byte stream so
//! [`RawClient`](super::RawClient) can speak MQTT over it. Each write is sent as one binary
//! message, so a test chooses the framing: one `send_raw` per frame.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::Stream as _;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

/// MQTT over a client WebSocket: binary messages in, binary messages out.
pub struct WsIo<S> {
    pub ws: WebSocketStream<S>,
    /// The rest of the last binary message received.
    pending: Bytes,
    /// Every non-binary message received, in order (pongs, close frames, text).
    pub others: Vec<Message>,
}

/// Opens a WebSocket to `path` on `addr` over `stream`, offering `subprotocols` (none if
/// empty). Returns the server's HTTP response too.
pub async fn handshake<S>(
    stream: S,
    addr: SocketAddr,
    path: &str,
    subprotocols: &[&str],
) -> Result<(WsIo<S>, Response), tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    if !subprotocols.is_empty() {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(&subprotocols.join(", ")).expect("header value"),
        );
    }
    let (ws, response) = tokio_tungstenite::client_async(request, stream).await?;
    Ok((
        WsIo {
            ws,
            pending: Bytes::new(),
            others: Vec::new(),
        },
        response,
    ))
}

/// A plain `ws://` connection to `/mqtt` offering `mqtt`; panics if refused.
pub async fn connect(addr: SocketAddr) -> WsIo<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (ws, response) = handshake(tcp, addr, "/mqtt", &["mqtt"])
        .await
        .expect("WebSocket handshake");
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some("mqtt")
    );
    ws
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsIo<S> {
    /// Sends one message of any kind and flushes it.
    pub async fn send_message(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        let ws = &mut self.ws;
        std::future::poll_fn(|cx| Pin::new(&mut *ws).poll_ready(cx)).await?;
        Pin::new(&mut *ws).start_send(message)?;
        std::future::poll_fn(|cx| Pin::new(&mut *ws).poll_flush(cx)).await
    }
}

fn io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(payload))) => self.pending = payload,
                Some(Ok(other)) => {
                    let closed = matches!(other, Message::Close(_));
                    self.others.push(other);
                    if closed {
                        return Poll::Ready(Ok(()));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        let chunk = self.pending.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(io_error)
    }
}
