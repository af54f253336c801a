//! What must hold for any client input to the WebSocket adapter (`starling::transport::ws`),
//! shared by the fuzz target `websocket` and the property test in `tests/10_websocket.rs`.
//!
//! The adapter runs on an in-memory pipe. Every byte it reads is echoed back through its write
//! path, as the broker's output would be. Byte 0 of the input picks what the rest is:
//! - `% 3 == 0`: raw bytes after a valid upgrade request (frames, or garbage);
//! - `% 3 == 1`: a program for valid masked client frames (binary messages, fragmented or not,
//!   pings and pongs between fragments, and last maybe a text or close frame);
//! - `% 3 == 2`: a raw HTTP upgrade request, then nothing.
//!
//! Checked: nothing panics or hangs; every read returns what it appended; for the frame program,
//! the bytes read are exactly the binary payloads sent, and a text frame ends in an error; the
//! server's frames are unmasked and their binary payloads are exactly the echoed bytes; an
//! upgrade succeeds only on the paths `/mqtt` and `/`, naming only `mqtt` or `mqttv3.1`.

#![allow(dead_code)]

use std::future::poll_fn;
use std::io::IoSlice;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The largest message the adapter accepts in this harness: small, so "too big" is reachable.
pub const MAX_MESSAGE: usize = 4096;

const UPGRADE: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

/// What the client sends and, for a frame program, what the server must read.
struct Script {
    /// The upgrade request.
    bytes: Vec<u8>,
    /// Sent once the response head has come, as a client must (RFC 6455, section 4.1).
    after_upgrade: Vec<u8>,
    /// The binary payloads, concatenated, and whether a text frame follows them.
    expected: Option<(Vec<u8>, bool)>,
}

/// What happened, for tests that want to know the harness went deep.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub upgraded: bool,
    /// Bytes the adapter read.
    pub received: usize,
    /// Reading ended in an error rather than the end of the stream.
    pub read_error: bool,
}

pub fn check(data: &[u8]) -> Outcome {
    let Some((&selector, rest)) = data.split_first() else {
        return Outcome {
            upgraded: false,
            received: 0,
            read_error: false,
        };
    };
    let script = match selector % 3 {
        0 => Script {
            bytes: UPGRADE.to_vec(),
            after_upgrade: rest.to_vec(),
            expected: None,
        },
        1 => {
            let (frames, payload, text) = frame_program(rest);
            Script {
                bytes: UPGRADE.to_vec(),
                after_upgrade: frames,
                expected: Some((payload, text)),
            }
        }
        _ => Script {
            bytes: rest.to_vec(),
            after_upgrade: Vec::new(),
            expected: None,
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(run(script))
}

/// What the server side saw.
struct Served {
    upgraded: bool,
    received: Vec<u8>,
    echoed: Vec<u8>,
    read_error: bool,
    write_error: bool,
}

async fn run(script: Script) -> Outcome {
    let (client, server) = tokio::io::duplex(2048);
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let request = script.bytes.clone();
    let frames = script.after_upgrade;
    let (head_seen, head) = tokio::sync::oneshot::channel::<()>();
    let send = async move {
        let _ = to_server.write_all(&request).await;
        // With frames to send, wait for the response head (or the server closing without one);
        // with none, end at once: a server still waiting for the request must see its end.
        if !frames.is_empty() && head.await.is_ok() {
            let _ = to_server.write_all(&frames).await;
        }
        let _ = to_server.shutdown().await;
    };
    let receive = async move {
        let mut out = Vec::new();
        let mut head_seen = Some(head_seen);
        let mut chunk = [0u8; 1024];
        loop {
            match from_server.read(&mut chunk).await {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
            if head_seen.is_some() && out.windows(4).any(|w| w == b"\r\n\r\n") {
                let _ = head_seen.take().map(|tx| tx.send(()));
            }
        }
    };
    let (_, out, served) = tokio::join!(send, receive, serve(server));
    let outcome = Outcome {
        upgraded: served.upgraded,
        received: served.received.len(),
        read_error: served.read_error,
    };
    if !served.upgraded {
        assert!(served.received.is_empty());
        return outcome;
    }
    let head_end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an upgraded connection got a response head")
        + 4;
    let head = String::from_utf8_lossy(&out[..head_end]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    if let Some(line) = head.lines().find(|l| {
        l.to_ascii_lowercase()
            .starts_with("sec-websocket-protocol:")
    }) {
        let chosen = line.split_once(':').map(|(_, v)| v.trim()).unwrap_or("");
        assert!(chosen == "mqtt" || chosen == "mqttv3.1", "{line}");
    }
    let path = request_path(&script.bytes);
    assert!(path == "/mqtt" || path == "/", "upgraded on path {path:?}");

    let echoed_back = server_payloads(&out[head_end..]);
    if served.write_error {
        assert!(echoed_back.starts_with(&served.echoed));
    } else {
        assert_eq!(echoed_back, served.echoed, "the echo came back intact");
    }
    if let Some((payload, text)) = script.expected {
        assert_eq!(served.received, payload, "the binary payloads, in order");
        assert_eq!(
            served.read_error, text,
            "an error exactly when a text frame came"
        );
    }
    outcome
}

async fn serve(server: tokio::io::DuplexStream) -> Served {
    let mut served = Served {
        upgraded: false,
        received: Vec::new(),
        echoed: Vec::new(),
        read_error: false,
        write_error: false,
    };
    let Ok(mut ws) = starling::transport::ws::accept(server, MAX_MESSAGE).await else {
        return served;
    };
    served.upgraded = true;
    let mut buf = BytesMut::new();
    loop {
        let before = buf.len();
        match poll_fn(|cx| ws.poll_read_into(cx, &mut buf)).await {
            Ok(0) => break,
            Ok(n) => {
                assert_eq!(buf.len(), before + n, "a read reports what it appended");
                let fresh = buf[before..].to_vec();
                served.received.extend_from_slice(&fresh);
                if !served.write_error {
                    match echo(&mut ws, &fresh).await {
                        Ok(()) => served.echoed.extend_from_slice(&fresh),
                        Err(_) => served.write_error = true,
                    }
                }
            }
            Err(_) => {
                served.read_error = true;
                break;
            }
        }
    }
    let _ = poll_fn(|cx| ws.poll_shutdown(cx)).await;
    served
}

/// Writes `bytes` as the connection's output queue does: vectored, in two slices, then flush.
async fn echo<S>(ws: &mut starling::transport::ws::WsStream<S>, bytes: &[u8]) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let (a, b) = rest.split_at(rest.len() / 2);
        let slices = [IoSlice::new(a), IoSlice::new(b)];
        let n = poll_fn(|cx| ws.poll_write_vectored(cx, &slices)).await?;
        assert!(n > 0 && n <= rest.len());
        at += n;
    }
    poll_fn(|cx| ws.poll_flush(cx)).await
}

fn request_path(request: &[u8]) -> String {
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let target = line.split_whitespace().nth(1).unwrap_or_default();
    let target = target.split('?').next().unwrap_or_default();
    // An absolute-form target names the path after the authority.
    match target.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map_or("/".to_owned(), |i| rest[i..].to_owned()),
        None => target.to_owned(),
    }
}

/// The payloads of the server's binary and continuation frames, which must be unmasked.
fn server_payloads(mut frames: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    while frames.len() >= 2 {
        let (first, second) = (frames[0], frames[1]);
        assert_eq!(second & 0x80, 0, "server frames are not masked");
        let (len, header) = match second & 0x7F {
            126 if frames.len() >= 4 => {
                (usize::from(u16::from_be_bytes([frames[2], frames[3]])), 4)
            }
            127 if frames.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&frames[2..10]);
                (usize::try_from(u64::from_be_bytes(n)).expect("length"), 10)
            }
            126 | 127 => panic!("truncated server frame header"),
            n => (usize::from(n), 2),
        };
        let body = frames
            .get(header..header + len)
            .expect("a whole server frame");
        if matches!(first & 0x0F, 0x0 | 0x2) {
            payload.extend_from_slice(body);
        }
        frames = &frames[header + len..];
    }
    assert!(frames.is_empty(), "a partial server frame at the end");
    payload
}

/// One masked client frame.
fn client_frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// Reads `rest` as a program of valid client frames. Returns the frames, the binary payloads
/// in order, and whether the program ends with a text frame.
fn frame_program(rest: &[u8]) -> (Vec<u8>, Vec<u8>, bool) {
    let mut input = rest.iter().copied();
    let mut next = move || input.next();
    let mut frames = Vec::new();
    let mut payload = Vec::new();
    let mut counter = 0u8;
    while let Some(op) = next() {
        let mask = [next().unwrap_or(0), next().unwrap_or(1), 0x5A, op];
        match op % 8 {
            0..=4 => {
                // A binary message of up to 1275 bytes in up to 3 fragments, with a ping or a
                // pong maybe between the fragments.
                let len = usize::from(next().unwrap_or(0)) * usize::from(op % 5 + 1);
                let body: Vec<u8> = (0..len)
                    .map(|_| {
                        counter = counter.wrapping_add(1);
                        next().unwrap_or(counter)
                    })
                    .collect();
                let fragments = usize::from(op / 8 % 3) + 1;
                let size = body.len().div_ceil(fragments).max(1);
                let chunks: Vec<&[u8]> = if body.is_empty() {
                    vec![&[]]
                } else {
                    body.chunks(size).collect()
                };
                for (i, chunk) in chunks.iter().enumerate() {
                    let opcode = if i == 0 { 0x2 } else { 0x0 };
                    client_frame(&mut frames, i + 1 == chunks.len(), opcode, chunk, mask);
                    if op & 0x40 != 0 && i + 1 < chunks.len() {
                        client_frame(&mut frames, true, 0x9, b"between", mask);
                    }
                }
                payload.extend_from_slice(&body);
            }
            5 => {
                let len = usize::from(next().unwrap_or(0) % 126);
                client_frame(&mut frames, true, 0x9, &vec![op; len], mask);
            }
            6 => client_frame(&mut frames, true, 0xA, b"unsolicited", mask),
            _ => {
                if op & 0x80 != 0 {
                    client_frame(&mut frames, true, 0x1, b"text", mask);
                    return (frames, payload, true);
                }
                client_frame(&mut frames, true, 0x8, &[0x03, 0xE8], mask);
                return (frames, payload, false);
            }
        }
    }
    (frames, payload, false)
}
