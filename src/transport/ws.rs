//! MQTT over WebSocket (server side), as browsers and MQTT.js speak it: binary messages carry
//! the MQTT byte stream, in any cut (a packet may span several messages, a message may hold
//! several packets), so the adapter only moves bytes and the MQTT decoder does the framing.
//!
//! The handshake accepts the paths `/mqtt` and `/` (404 otherwise) and negotiates the
//! subprotocol: the first of `mqtt` or `mqttv3.1` the client offers is echoed back; a client
//! offering only others is refused, one offering none is accepted. Text messages are a protocol
//! error ([MQTT-6.0.0-1]: control packets travel in binary data frames, and any other data frame
//! closes the connection): the connection closes with WebSocket close code 1003. Pings are
//! answered and close frames acknowledged by tungstenite.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, BytesMut};
use futures_core::Stream as _;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

/// The paths MQTT clients use: `/mqtt` by convention (MQTT.js, Paho), `/` by some devices.
const PATHS: [&str; 2] = ["/mqtt", "/"];

/// Subprotocols this server speaks: `mqtt` (3.1.1 and 5.0) and `mqttv3.1` (3.1).
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// The read buffer tungstenite keeps for the life of the connection (its default is 128 KiB).
const READ_BUFFER: usize = 4096;

/// The largest WebSocket message one write makes. tungstenite's write buffer keeps its largest
/// size, so this bounds what a connection holds after a burst.
const MAX_WRITE: usize = 16 * 1024;

/// A WebSocket connection carrying MQTT, over plain TCP or TLS (`S`).
#[derive(Debug)]
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The close code to send when the connection ends because of what the client sent.
    close_code: CloseCode,
    /// The close frame has been queued.
    closing: bool,
}

/// Runs the HTTP upgrade on `stream`. Messages may be as large as `max_message` bytes (the
/// broker's maximum packet size: one message may hold one whole packet).
pub async fn accept<S>(stream: S, max_message: usize) -> Result<WsStream<S>, tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Write each message at once: the connection's own output queue does the batching.
        .write_buffer_size(0)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, negotiate, Some(config)).await?;
    Ok(WsStream {
        ws,
        close_code: CloseCode::Normal,
        closing: false,
    })
}

/// The handshake callback: checks the path and picks the subprotocol.
#[allow(clippy::result_large_err)] // the signature tungstenite's callback requires
fn negotiate(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let path = request.uri().path();
    if !PATHS.contains(&path) {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            format!("no MQTT endpoint at {path}; use /mqtt"),
        ));
    }
    let mut offered = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|protocol| !protocol.is_empty())
        .peekable();
    if offered.peek().is_none() {
        return Ok(response);
    }
    match offered.find_map(|protocol| SUBPROTOCOLS.into_iter().find(|known| *known == protocol)) {
        Some(chosen) => {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(chosen),
            );
            Ok(response)
        }
        None => Err(refusal(
            StatusCode::BAD_REQUEST,
            "no supported WebSocket subprotocol: offer mqtt or mqttv3.1".to_owned(),
        )),
    }
}

fn refusal(status: StatusCode, body: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = status;
    response
}

fn io_error(error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S> WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Appends the payload of the next binary message to `buf`. `Ok(0)` once the peer has
    /// closed (a close frame, or the end of the byte stream).
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        loop {
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                None => return Poll::Ready(Ok(0)),
                Some(Ok(Message::Binary(payload))) => {
                    // An empty message is legal and carries nothing; `Ok(0)` would mean the end.
                    if !payload.is_empty() {
                        buf.extend_from_slice(&payload);
                        return Poll::Ready(Ok(payload.len()));
                    }
                }
                Some(Ok(Message::Text(_))) => {
                    self.close_code = CloseCode::Unsupported;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket text frame: MQTT travels in binary frames only",
                    )));
                }
                // tungstenite answers pings and acknowledges a close itself; after a close, the
                // next poll reports the end.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => {}
                Some(Ok(Message::Frame(_))) => {}
                // The TCP connection ended without a close frame: for MQTT, as for plain TCP,
                // that is the end of the stream; the MQTT layer decides if anything was cut.
                Some(Err(tungstenite::Error::Protocol(
                    ProtocolError::ResetWithoutClosingHandshake,
                ))) => return Poll::Ready(Ok(0)),
                Some(Err(e)) => {
                    self.close_code = match &e {
                        tungstenite::Error::Capacity(_) => CloseCode::Size,
                        _ => CloseCode::Protocol,
                    };
                    return Poll::Ready(Err(io_error(e)));
                }
            }
        }
    }

    /// Sends the bytes of `bufs` (up to [`MAX_WRITE`]) as one binary message.
    pub fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut payload = BytesMut::with_capacity(total.min(MAX_WRITE));
        for slice in bufs {
            let room = MAX_WRITE - payload.len();
            if room == 0 {
                break;
            }
            payload.put_slice(&slice[..slice.len().min(room)]);
        }
        let written = payload.len();
        if written == 0 {
            return Poll::Ready(Ok(0));
        }
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(payload.freeze()))
            .map_err(io_error)?;
        Poll::Ready(Ok(written))
    }

    /// Writes out what tungstenite still holds.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error)
    }

    /// Sends a close frame (1000, or the code the peer's misbehaviour earned) and flushes it,
    /// with anything still queued (a pong, tungstenite's reply to the peer's own close frame).
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.closing {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
            self.closing = true;
            let frame = CloseFrame {
                code: self.close_code,
                reason: "".into(),
            };
            // Refused only when a close frame already went either way: then there is nothing
            // more to say, but what is queued must still go out.
            let _ = Pin::new(&mut self.ws).start_send(Message::Close(Some(frame)));
        }
        self.poll_flush(cx)
    }
}
