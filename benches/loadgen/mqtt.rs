//! The generator's MQTT client side: connect, CONNECT/CONNACK, SUBSCRIBE/SUBACK, and the
//! packets the flows write, all through Starling's codec.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{BufMut, BytesMut};
use starling::codec::{
    self, Connect, ConnectProperties, DecodeContext, Disconnect, Packet, PacketId, ProtocolVersion,
    PubResponse, PublishProperties, PublishView, QoS, ReasonCode, Subscribe, SubscribeProperties,
    SubscriptionOptions,
};
use starling::topic::TopicFilter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Keep alive announced by every client. Message flows keep connections busy; the idle scenario
/// pings well within it.
pub const KEEP_ALIVE_SECS: u16 = 60;

/// Bytes of the payload header: publisher index (u32), sequence number (u64), send time (u64,
/// nanoseconds since the run's epoch), little-endian. The rest of the payload is zeros.
pub const STAMP_LEN: usize = 20;

/// Read buffer headroom reserved before each read.
pub const READ_CHUNK: usize = 64 * 1024;

/// One connected, handshaken client.
pub struct Conn {
    pub stream: TcpStream,
    pub inbuf: BytesMut,
    pub ctx: DecodeContext,
    /// The broker's Receive Maximum (65,535 when it announces none).
    pub receive_maximum: u16,
}

impl Conn {
    /// Opens a TCP connection (from `source` when given) with TCP_NODELAY, and completes the
    /// MQTT handshake with a clean session (or a persistent one: `persistent`), within `limit`.
    pub async fn open(
        target: SocketAddr,
        source: Option<IpAddr>,
        client_id: &str,
        version: ProtocolVersion,
        persistent: bool,
        limit: Duration,
    ) -> anyhow::Result<Conn> {
        let open = Self::open_inner(target, source, client_id, version, persistent);
        tokio::time::timeout(limit, open)
            .await
            .with_context(|| format!("{client_id}: no CONNACK within {limit:?}"))?
    }

    async fn open_inner(
        target: SocketAddr,
        source: Option<IpAddr>,
        client_id: &str,
        version: ProtocolVersion,
        persistent: bool,
    ) -> anyhow::Result<Conn> {
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .context("cannot create a socket")?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("cannot bind the source address {ip}"))?;
        }
        let stream = socket
            .connect(target)
            .await
            .with_context(|| format!("{client_id}: cannot connect to {target}"))?;
        // Nagle would hold small publishes back waiting for the peer's delayed ACK.
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        let mut conn = Conn {
            stream,
            inbuf: BytesMut::new(),
            ctx: DecodeContext {
                version,
                ..DecodeContext::default()
            },
            receive_maximum: u16::MAX,
        };
        let connect = Packet::Connect(Box::new(Connect {
            protocol: version,
            // 5.0: clean start with an expiry is a new persistent session; 3.1.1: clean
            // session 0 is the only way to get one.
            clean_start: !persistent || version == ProtocolVersion::V5,
            keep_alive: KEEP_ALIVE_SECS,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties {
                session_expiry_interval: (persistent && version == ProtocolVersion::V5)
                    .then_some(300),
                ..ConnectProperties::default()
            },
        }));
        conn.send(&connect).await?;
        match conn.next_packet().await? {
            Packet::ConnAck(ack) if ack.reason == ReasonCode::Success => {
                if let Some(max) = ack.properties.receive_maximum {
                    conn.receive_maximum = max.get();
                }
                Ok(conn)
            }
            Packet::ConnAck(ack) => bail!("{client_id}: CONNACK refused with {:?}", ack.reason),
            other => bail!("{client_id}: expected CONNACK, got {}", other.name()),
        }
    }

    /// Subscribes to one filter and waits for a SUBACK granting it.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let filter = TopicFilter::new(filter).map_err(|e| anyhow::anyhow!("{filter}: {e:?}"))?;
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).context("packet id 1")?,
            properties: SubscribeProperties::default(),
            filters: vec![(
                filter,
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            )],
        });
        self.send(&subscribe).await?;
        loop {
            match self.next_packet().await? {
                Packet::SubAck(ack) => {
                    return match ack.reasons.first() {
                        Some(code) if !code.is_error() => Ok(()),
                        other => bail!("subscription refused: {other:?}"),
                    };
                }
                // Retained messages may arrive before the SUBACK; benchmark topics have none.
                Packet::Publish(_) => {}
                other => bail!("expected SUBACK, got {}", other.name()),
            }
        }
    }

    /// Encodes and writes one packet.
    pub async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        let bytes = codec::encode_to_bytes(packet, self.ctx.version)
            .with_context(|| format!("cannot encode {}", packet.name()))?;
        self.stream
            .write_all(&bytes)
            .await
            .with_context(|| format!("cannot send {}", packet.name()))
    }

    /// Reads until one whole packet is decoded.
    pub async fn next_packet(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(packet) = self.decode()? {
                return Ok(packet);
            }
            self.inbuf.reserve(4096);
            let n = self
                .stream
                .read_buf(&mut self.inbuf)
                .await
                .context("read")?;
            if n == 0 {
                bail!("the broker closed the connection");
            }
        }
    }

    /// Decodes the next packet already buffered, if any.
    pub fn decode(&mut self) -> anyhow::Result<Option<Packet>> {
        codec::decode(&mut self.inbuf, &self.ctx).context("undecodable packet from the broker")
    }

    /// Sends DISCONNECT and waits (briefly) for the broker to close, so the TIME_WAIT state
    /// lands on the broker's side and not on the generator's ephemeral ports.
    pub async fn close(mut self) {
        let version = self.ctx.version;
        let mut out = BytesMut::new();
        if codec::encode(
            &Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
            version,
            &mut out,
        )
        .is_err()
        {
            return;
        }
        if self.stream.write_all(&out).await.is_err() {
            return;
        }
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(n) = self.stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

/// Appends one PUBLISH whose payload carries the stamp of (`publisher`, `seq`, `sent_ns`) and is
/// padded with zeros to `payload_len`.
#[allow(clippy::too_many_arguments)]
pub fn put_publish(
    out: &mut BytesMut,
    version: ProtocolVersion,
    topic: &str,
    qos: QoS,
    id: Option<PacketId>,
    publisher: u32,
    seq: u64,
    sent_ns: u64,
    payload_len: usize,
) -> anyhow::Result<()> {
    static NO_PROPERTIES: std::sync::LazyLock<PublishProperties> =
        std::sync::LazyLock::new(PublishProperties::default);
    let view = PublishView {
        dup: false,
        qos,
        retain: false,
        topic,
        packet_id: id,
        properties: &NO_PROPERTIES,
        topic_alias: None,
        subscription_identifiers: &[],
        message_expiry_interval: None,
        payload_len,
    };
    codec::encode_publish_header(&view, version, out).context("cannot encode PUBLISH")?;
    out.reserve(payload_len);
    out.put_u32_le(publisher);
    out.put_u64_le(seq);
    out.put_u64_le(sent_ns);
    out.put_bytes(0, payload_len.saturating_sub(STAMP_LEN));
    Ok(())
}

/// Appends a PUBACK, PUBREC, PUBREL or PUBCOMP (success) for `id`.
pub fn put_response(
    out: &mut BytesMut,
    version: ProtocolVersion,
    make: fn(PubResponse) -> Packet,
    id: PacketId,
) -> anyhow::Result<()> {
    codec::encode(&make(PubResponse::success(id)), version, out)
        .context("cannot encode an acknowledgement")
}

/// Appends a PINGREQ.
pub fn put_pingreq(out: &mut BytesMut, version: ProtocolVersion) -> anyhow::Result<()> {
    codec::encode(&Packet::PingReq, version, out).context("cannot encode PINGREQ")
}

/// The stamp at the start of a payload: (publisher, sequence number, send time in ns).
pub fn read_stamp(payload: &[u8]) -> Option<(u32, u64, u64)> {
    let publisher = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?);
    let seq = u64::from_le_bytes(payload.get(4..12)?.try_into().ok()?);
    let sent = u64::from_le_bytes(payload.get(12..20)?.try_into().ok()?);
    Some((publisher, seq, sent))
}

/// Has the kernel acknowledge what was just read at once instead of on the delayed-ACK timer (up
/// to 40 ms). A broker that leaves Nagle on (mosquitto does) holds its next small segment until
/// the previous one is acknowledged, so a client with nothing to send back would stall it. Linux
/// leaves quick-ack mode as it sees fit, so this is set again after every read.
pub fn quickack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}
