//! One task per network connection: it reads and decodes packets, runs them through the
//! [`Session`], drains the session's mailbox into PUBLISHes, writes, and keeps the keep-alive timer.
//!
//! Reading, writing, the mailbox and the timer are polled together in one `poll_fn`, so a peer
//! that stops reading cannot stall the decoding of its own acknowledgements, and there is no second
//! task or channel per connection. Output is bounded: while more than `HIGH_WATER` bytes wait
//! for the socket, no new deliveries are taken from the mailbox (they wait there, under the queue
//! limits), and a socket that accepts nothing for `WRITE_STALL_TIMEOUT` is closed.

mod outbuf;

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::auth::{Access, Credentials, Gate};
use crate::broker::{Broker, ClientInfo, Control, SessionSlot};
use crate::codec::{
    self, ConnAck, DecodeContext, DecodeError, Disconnect, Packet, ProtocolVersion, ReasonCode,
    ReasonContext,
};
use crate::message::Delivery;
use crate::metrics::{
    AuthFailure, DisconnectReason, DropReason, Metrics, OpenConnection, RefusalReason,
};
use crate::session::{self, Action, Close, Dropped, Session};
use crate::storage::{StoreOp, Ticket};
use crate::transport::Stream;
use outbuf::OutBuf;

/// Output bytes queued beyond which no more deliveries are taken from the mailbox.
const HIGH_WATER: usize = 64 * 1024;

/// A connection whose socket takes no bytes for this long is closed and its will published: the
/// client stopped reading, and holding its output would hold memory for ever.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the last bytes (CONNACK refusal, DISCONNECT) may take to leave before the socket is
/// dropped anyway.
const FLUSH_ON_CLOSE: Duration = Duration::from_secs(2);

/// Deliveries taken from the mailbox per lock.
const BATCH: usize = 64;

/// Serves one accepted connection until it closes: handshake, serving, close. `identity` is the
/// username the transport established (a client certificate with `use_identity_as_username`); it
/// replaces the one in CONNECT. `gate` authenticates the CONNECT. `permits` are the
/// connection-limit permits this connection holds until it ends.
///
/// An idle connection's memory is mostly this task's future, which is as large as its largest
/// state, so it is kept flat: one async block (every nested async layer keeps its own copy of its
/// arguments for the task's whole life), with only the serving phase inline. The handshake and
/// the close (CONNECT, takeover wait, drain timer) run boxed, allocated only while they last.
pub fn serve(
    stream: Stream,
    peer: SocketAddr,
    identity: Option<String>,
    broker: Arc<Broker>,
    gate: Gate,
    shutdown: CancellationToken,
    permits: Permits,
) -> impl Future<Output = ()> + Send + 'static {
    // At debug level, so it costs nothing by default: a span lives as long as its connection
    // (about 0.5 KiB each in the subscriber's registry, a fifth of an idle connection), and every
    // line at info and above names its client and peer itself, as mosquitto's do.
    let span = debug_span!("conn", %peer, client = tracing::field::Empty);
    let mut connection = Connection {
        stream,
        peer,
        rbuf: BytesMut::new(),
        out: OutBuf::default(),
        decode: DecodeContext {
            version: ProtocolVersion::V311,
            max_packet_size: broker.limits().max_packet_size(),
        },
        last_write: tokio::time::Instant::now().into_std(),
        hold: Ticket::NONE,
        _open: broker.metrics().connection_opened(),
        _permits: permits
            .iter()
            .any(Option::is_some)
            .then(|| Box::new(permits)),
    };
    // Needed only by the handshake: boxed, they take 8 bytes of the task for its life, not 40.
    let for_handshake = Box::new((identity, gate));
    async move {
        debug!("new connection");
        let (broker, shutdown) = (&broker, &shutdown);
        let Some(Accepted {
            slot,
            mut session,
            mut actions,
            ended,
        }) = {
            let (identity, gate) = *for_handshake;
            Box::pin(connection.handshake(identity, broker, gate, shutdown))
        }
        .await
        else {
            return;
        };
        let ending = match ended {
            Some(ending) => ending,
            None => {
                connection
                    .serve_session(broker, &slot, &mut session, &mut actions)
                    .await
            }
        };
        Box::pin(connection.finish(broker, &slot, session, ending)).await;
    }
    .instrument(span)
}

/// Connection-limit permits (per listener, broker-wide) a connection holds while it lives.
pub type Permits = [Option<OwnedSemaphorePermit>; 2];

/// What woke the connection up.
enum Event {
    /// New bytes are in the read buffer.
    Data,
    /// The peer closed its side.
    Eof,
    Io(std::io::Error),
    /// The mailbox has deliveries the window admits, or a control request.
    Mailbox,
    /// The store failed to apply what held output waits for.
    StoreFailed,
    Timer,
}

/// How a connection ended, which decides the will and the log line.
#[derive(Debug)]
enum Ending {
    /// DISCONNECT from the client.
    ClientDisconnect,
    /// The client broke a rule; we sent DISCONNECT with this reason where possible.
    Violation(Close),
    KeepAliveTimeout,
    WriteStalled,
    PeerClosed,
    Io(std::io::Error),
    /// Another connection took the session; signal it once the session is parked.
    TakenOver(tokio::sync::oneshot::Sender<()>),
    /// The store could not record what we were about to acknowledge: the held acknowledgements
    /// are discarded and the client will send again.
    StoreFailed,
    /// Server shutdown or administrative close.
    Closed(ReasonCode),
}

/// Vectors the serving loop reuses between inputs (so it allocates once per burst, not per
/// packet), given back while the connection is idle.
struct Scratch<'a> {
    actions: &'a mut Vec<Action>,
    batch: &'a mut Vec<Delivery>,
}

impl Scratch<'_> {
    fn release(self) {
        // Both are empty between inputs: `apply` drains the actions and `pump` the batch.
        if self.actions.capacity() != 0 {
            *self.actions = Vec::new();
        }
        if self.batch.capacity() != 0 {
            *self.batch = Vec::new();
        }
    }
}

/// A connection past its handshake.
struct Accepted {
    slot: Arc<SessionSlot>,
    session: Box<Session>,
    /// Reused for every input, so it allocates once.
    actions: Vec<Action>,
    /// Set when the connection already ended while being accepted.
    ended: Option<Ending>,
}

struct Connection {
    stream: Stream,
    peer: SocketAddr,
    rbuf: BytesMut,
    out: OutBuf,
    decode: DecodeContext,
    /// Last time the socket took bytes, or output became pending.
    last_write: Instant,
    /// Output is held back until the store has applied this ticket: what we acknowledge must be
    /// durable first (`always` mode; otherwise tickets are always settled).
    hold: Ticket,
    /// Counts the connection in `mqtt_connections_current` while it lives.
    _open: OpenConnection,
    /// `None` without connection limits.
    _permits: Option<Box<Permits>>,
}

fn now() -> Instant {
    // tokio's clock, so tests with paused time drive keep alive and expiry.
    tokio::time::Instant::now().into_std()
}

impl Connection {
    /// Reads CONNECT, negotiates, opens (or takes over) the session and queues the CONNACK and
    /// any resent messages. `None` when the connection was refused or closed before that.
    async fn handshake(
        &mut self,
        identity: Option<String>,
        broker: &Arc<Broker>,
        gate: Gate,
        shutdown: &CancellationToken,
    ) -> Option<Accepted> {
        let timeout = Duration::from_secs(u64::from(broker.limits().connect_timeout));
        let metrics = broker.metrics();
        // Cancellation-safe: reading CONNECT only touches our own buffers, which are dropped.
        let first = tokio::select! {
            () = shutdown.cancelled() => return None,
            first = tokio::time::timeout(timeout, self.read_packet(metrics)) => first,
        };
        match &first {
            Ok(Ok(packet)) => metrics.packet_received(packet),
            Ok(Err(ReadError::Decode(e))) => metrics.decode_error(e),
            _ => {}
        }
        let refused = |reason| metrics.refused(reason);
        let (connect, (username, password, certified)) = match first {
            Err(_) => {
                refused(RefusalReason::ConnectTimeout);
                info!(peer = %self.peer, "no CONNECT within {}s, closing", timeout.as_secs());
                return None;
            }
            Ok(Err(ReadError::Closed)) => return None,
            Ok(Err(ReadError::Io(e))) => {
                debug!(error = %e, "socket error before CONNECT");
                return None;
            }
            Ok(Err(ReadError::Decode(DecodeError::UnsupportedProtocolVersion(level)))) => {
                refused(RefusalReason::UnsupportedProtocol);
                info!(
                    "Invalid protocol version {level} in CONNECT from {}.",
                    self.peer
                );
                // Section 3.2.2.2 / 3.1.1 [MQTT-3.1.2-2]: answer with return code 1, in the
                // 3.1.1 form every client version can parse.
                let refusal = ConnAck {
                    session_present: false,
                    reason: ReasonCode::UnsupportedProtocolVersion,
                    properties: Default::default(),
                };
                self.send_and_close(metrics, &Packet::ConnAck(refusal), ProtocolVersion::V311)
                    .await;
                return None;
            }
            Ok(Err(ReadError::Decode(e))) => {
                refused(RefusalReason::BadConnect);
                info!(peer = %self.peer, error = %e, "bad CONNECT, closing");
                return None;
            }
            Ok(Ok(Packet::Connect(mut connect))) => {
                let certified = identity.is_some();
                if certified {
                    // use_identity_as_username: the certificate says who the client is, and
                    // (as in mosquitto) no password is checked.
                    connect.username = identity;
                }
                let credentials = (connect.username.take(), connect.password.take(), certified);
                (*connect, credentials)
            }
            Ok(Ok(other)) => {
                // [MQTT-3.1.0-1] the first packet must be CONNECT.
                refused(RefusalReason::BadConnect);
                info!(peer = %self.peer, packet = other.name(), "first packet is not CONNECT, closing");
                return None;
            }
        };
        self.decode.version = connect.protocol;
        let version = connect.protocol;
        let (clean_start, keep_alive) = (connect.clean_start, connect.keep_alive);
        let mut negotiated = match session::negotiate(connect, &broker.limits(), now(), || {
            broker.assign_client_id()
        }) {
            Ok(negotiated) => negotiated,
            Err(refusal) => {
                refused(RefusalReason::from_connack(refusal.reason));
                info!(peer = %self.peer, reason = %refusal.reason, "connection refused");
                self.send_and_close(metrics, &Packet::ConnAck(*refusal), version)
                    .await;
                return None;
            }
        };
        let client_id = negotiated.client_id.clone();
        tracing::Span::current().record("client", &*client_id);
        let credentials = Credentials {
            username: username.as_deref(),
            password: password.as_deref(),
            certified,
        };
        negotiated.link.access = self
            .authenticate(metrics, &gate, credentials, &client_id, version, shutdown)
            .await?;

        let opened = match broker.open_session(&client_id, clean_start).await {
            Ok(opened) => opened,
            Err(e) => {
                refused(RefusalReason::ServerUnavailable);
                warn!(?e, "cannot open session for {client_id}");
                let refusal = ConnAck {
                    session_present: false,
                    reason: ReasonCode::ServerUnavailable,
                    properties: Default::default(),
                };
                self.send_and_close(metrics, &Packet::ConnAck(refusal), version)
                    .await;
                return None;
            }
        };
        let slot = opened.slot;
        metrics.connected(version);
        slot.set_client(ClientInfo {
            peer: self.peer,
            protocol: version,
            username: username.as_deref().map(Arc::from),
            keep_alive,
            connected_at: std::time::SystemTime::now(),
        });
        let session_present = opened.resumed.is_some();
        let connack = session::connack(&negotiated, session_present, &broker.limits());
        let mut session = match opened.resumed {
            Some(mut session) => {
                session.reattach(negotiated);
                session
            }
            None => Box::new(Session::new(negotiated, slot.origin())),
        };
        self.hold = broker.session_opened(&slot, &mut session);
        info!(
            "New client connected from {} as {} (p{}, c{}, k{}{}{}).",
            self.peer,
            client_id,
            version.level(),
            u8::from(clean_start),
            keep_alive,
            // As mosquitto prints it: operators grep for u'name'.
            username
                .as_deref()
                .map(|u| format!(", u'{u}'"))
                .unwrap_or_default(),
            if session_present { ", resumed" } else { "" }
        );

        let mut actions = Vec::new();
        metrics.packets_sent(1);
        let ended = if let Err(e) = self.out.push_packet(&Packet::ConnAck(connack), version) {
            Some(Ending::Violation(Close {
                reason: ReasonCode::ImplementationSpecificError,
                detail: encode_failure(&e),
            }))
        } else if shutdown.is_cancelled() {
            Some(Ending::Closed(ReasonCode::ServerShuttingDown))
        } else {
            session.resume(now(), &mut actions);
            self.apply(broker, &slot, &mut session, &mut actions).err()
        };
        Some(Accepted {
            slot,
            session,
            actions,
            ended,
        })
    }

    /// Checks the CONNECT's credentials. A refusal is logged, held back by the per-address
    /// backoff (so guessing passwords is slow), then sent as CONNACK; `None` then.
    async fn authenticate(
        &mut self,
        metrics: &Metrics,
        gate: &Gate,
        credentials: Credentials<'_>,
        client_id: &Arc<str>,
        version: ProtocolVersion,
        shutdown: &CancellationToken,
    ) -> Option<Access> {
        // Cancellation-safe: a password check abandoned mid-way has no effect.
        let checked = tokio::select! {
            () = shutdown.cancelled() => return None,
            checked = gate.authenticate(self.peer, credentials, client_id) => checked,
        };
        let refusal = match checked {
            Ok(access) => return Some(access),
            Err(refusal) => refusal,
        };
        metrics.auth_failed(AuthFailure::from_connack(refusal.reason));
        metrics.refused(RefusalReason::from_connack(refusal.reason));
        warn!(
            reason = %refusal.reason,
            "Client {client_id} disconnected, not authorised: {} (from {}{}).",
            refusal.why,
            self.peer,
            credentials
                .username
                .map(|u| format!(", u'{u}'"))
                .unwrap_or_default()
        );
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(refusal.delay) => {}
        }
        let connack = ConnAck {
            session_present: false,
            reason: refusal.reason,
            properties: Default::default(),
        };
        self.send_and_close(metrics, &Packet::ConnAck(connack), version)
            .await;
        None
    }

    /// The main loop, after CONNACK: returns how the connection ended.
    async fn serve_session(
        &mut self,
        broker: &Broker,
        slot: &Arc<SessionSlot>,
        session: &mut Session,
        actions: &mut Vec<Action>,
    ) -> Ending {
        let mut batch = Vec::new();
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        // Packets that came in the same read as CONNECT are already buffered: no readiness event
        // will announce them.
        if let Err(ending) = self.handle_input(broker, slot, session, actions) {
            return ending;
        }
        loop {
            if let Err(ending) = self.pump(broker, slot, session, actions, &mut batch) {
                return ending;
            }
            slot.set_inflight(session.inflight_len());
            let deadline = self.deadline(session);
            if let Some(deadline) = deadline
                && armed.is_none_or(|at| deadline < at)
            {
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(deadline));
                armed = Some(deadline);
            }
            let window = session.window_free();
            let event = poll_fn(|cx| {
                let scratch = Scratch {
                    actions: &mut *actions,
                    batch: &mut batch,
                };
                self.poll_event(
                    cx,
                    broker,
                    slot,
                    window,
                    timer.as_mut(),
                    armed.is_some(),
                    scratch,
                )
            })
            .await;
            match event {
                Event::Data => {
                    if let Err(ending) = self.handle_input(broker, slot, session, actions) {
                        return ending;
                    }
                }
                Event::Eof => return Ending::PeerClosed,
                Event::StoreFailed => return Ending::StoreFailed,
                Event::Io(e) => return Ending::Io(e),
                Event::Mailbox => match slot.take_control() {
                    Some(Control::TakeOver(tx)) => return Ending::TakenOver(tx),
                    Some(Control::Close(reason)) => return Ending::Closed(reason),
                    None => {}
                },
                Event::Timer => {
                    armed = None;
                    let now = now();
                    if session.keep_alive_deadline().is_some_and(|at| now >= at) {
                        return Ending::KeepAliveTimeout;
                    }
                    if !self.out.is_empty() && now >= self.last_write + WRITE_STALL_TIMEOUT {
                        return Ending::WriteStalled;
                    }
                }
            }
        }
    }

    /// The earliest moment something must be checked: keep alive, or a stalled write.
    fn deadline(&self, session: &Session) -> Option<Instant> {
        let stall = (!self.out.is_empty()).then(|| self.last_write + WRITE_STALL_TIMEOUT);
        match (session.keep_alive_deadline(), stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
        broker: &Broker,
        slot: &SessionSlot,
        window: usize,
        timer: Pin<&mut Sleep>,
        timer_armed: bool,
        scratch: Scratch<'_>,
    ) -> Poll<Event> {
        if self.hold != Ticket::NONE {
            match broker.poll_settled(cx, self.hold) {
                Poll::Ready(Ok(())) => self.hold = Ticket::NONE,
                Poll::Ready(Err(_)) => return Poll::Ready(Event::StoreFailed),
                Poll::Pending => {}
            }
        }
        if !self.out.is_empty() && self.hold == Ticket::NONE {
            let before = self.out.len();
            let flushed = self.out.poll_flush(&mut self.stream, cx);
            if self.out.len() != before {
                self.last_write = now();
                broker.metrics().bytes_written(before - self.out.len());
            }
            if let Poll::Ready(Err(e)) = flushed {
                return Poll::Ready(Event::Io(e));
            }
        }
        let ready = slot.poll_ready(cx, window);
        if ready.control || (ready.deliverable && self.out.len() < HIGH_WATER) {
            return Poll::Ready(Event::Mailbox);
        }
        match self.stream.poll_read_into(cx, &mut self.rbuf) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Event::Eof),
            Poll::Ready(Ok(read)) => {
                broker.metrics().bytes_read(read);
                return Poll::Ready(Event::Data);
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Event::Io(e)),
            Poll::Pending => {}
        }
        if timer_armed && timer.poll(cx).is_ready() {
            return Poll::Ready(Event::Timer);
        }
        // Going idle: hold no buffers while waiting.
        if self.rbuf.is_empty() && self.rbuf.capacity() != 0 {
            self.rbuf = BytesMut::new();
        }
        self.out.release_if_empty();
        scratch.release();
        Poll::Pending
    }

    /// Decodes and handles every complete packet in the read buffer.
    fn handle_input(
        &mut self,
        broker: &Broker,
        slot: &Arc<SessionSlot>,
        session: &mut Session,
        actions: &mut Vec<Action>,
    ) -> Result<(), Ending> {
        loop {
            let packet = match codec::decode(&mut self.rbuf, &self.decode) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(()),
                Err(e) => {
                    broker.metrics().decode_error(&e);
                    return Err(Ending::Violation(Close {
                        reason: e.reason_code(),
                        detail: decode_failure(&e),
                    }));
                }
            };
            broker.metrics().packet_received(&packet);
            session.set_store_fault(broker.store_fault());
            if let Err(close) = session.handle(now(), packet, &broker.limits(), actions) {
                return Err(Ending::Violation(close));
            }
            self.apply(broker, slot, session, actions)?;
        }
    }

    /// Carries out the session's actions in order.
    fn apply(
        &mut self,
        broker: &Broker,
        slot: &Arc<SessionSlot>,
        session: &mut Session,
        actions: &mut Vec<Action>,
    ) -> Result<(), Ending> {
        let version = session.version();
        let was_idle = self.out.is_empty();
        let mut ending = None;
        let metrics = broker.metrics();
        let mut sent = 0;
        for action in actions.drain(..) {
            let encoded = match action {
                Action::Send(packet) => {
                    sent += 1;
                    self.out.push_packet(&packet, version)
                }
                Action::Publish(publish) => {
                    sent += 1;
                    metrics.sent(publish.qos, publish.message.payload.len());
                    self.out.push_publish(&publish, version)
                }
                Action::Route(message) => {
                    self.hold = self.hold.max(broker.route(message));
                    Ok(())
                }
                Action::Store(op) => {
                    let gates = gates_output(&op);
                    let ticket = broker.persist([op]);
                    if gates {
                        self.hold = self.hold.max(ticket);
                    }
                    Ok(())
                }
                Action::Subscribe {
                    subscription,
                    send_retained,
                } => {
                    let persistent = session.expiry_interval() != 0;
                    self.hold = self
                        .hold
                        .max(broker.subscribe(slot, &subscription, persistent));
                    if send_retained {
                        let now = now();
                        let retained = broker.retained_matching(&subscription.filter, now);
                        session.enqueue_retained(now, &subscription, retained);
                    }
                    Ok(())
                }
                Action::Unsubscribe(filter) => {
                    let persistent = session.expiry_interval() != 0;
                    self.hold = self.hold.max(broker.unsubscribe(slot, &filter, persistent));
                    Ok(())
                }
                Action::ClientDisconnected => {
                    ending = Some(Ending::ClientDisconnect);
                    Ok(())
                }
            };
            if let Err(e) = encoded {
                ending.get_or_insert(Ending::Violation(Close {
                    reason: ReasonCode::ImplementationSpecificError,
                    detail: encode_failure(&e),
                }));
            }
        }
        metrics.packets_sent(sent);
        if was_idle && !self.out.is_empty() {
            // The write-stall clock starts when output becomes pending, not at the last write.
            self.last_write = now();
        }
        ending.map_or(Ok(()), Err)
    }

    /// Sends what the inflight window and the output bound allow: retained replay first, then the
    /// mailbox, in order.
    fn pump(
        &mut self,
        broker: &Broker,
        slot: &Arc<SessionSlot>,
        session: &mut Session,
        actions: &mut Vec<Action>,
        batch: &mut Vec<Delivery>,
    ) -> Result<(), Ending> {
        let now = now();
        while self.out.len() < HIGH_WATER {
            let metrics = broker.metrics();
            if let Some(delivery) = session.next_replay() {
                if let Err(dropped) = session.deliver(now, delivery, actions) {
                    metrics.dropped(drop_reason(dropped));
                    debug!(?dropped, "retained message not sent");
                }
            } else {
                slot.pop_batch(batch, BATCH, session.window_free());
                if batch.is_empty() {
                    break;
                }
                let mut latencies = metrics.latency_batch();
                for delivery in batch.drain(..) {
                    let published_at = delivery.message.published_at;
                    match session.deliver(now, delivery, actions) {
                        Ok(()) => {
                            if let (Some(latencies), Some(at)) = (&mut latencies, published_at) {
                                latencies.add(now.saturating_duration_since(at));
                            }
                        }
                        Err(dropped) => {
                            metrics.dropped(drop_reason(dropped));
                            debug!(?dropped, "message not sent");
                        }
                    }
                }
                if let Some(latencies) = &latencies {
                    metrics.delivered_batch(latencies);
                }
            }
            self.apply(broker, slot, session, actions)?;
        }
        Ok(())
    }

    /// Sends a final DISCONNECT where the spec allows one, publishes or schedules the will, and
    /// hands the session back to the broker.
    async fn finish(
        &mut self,
        broker: &Broker,
        slot: &Arc<SessionSlot>,
        mut session: Box<Session>,
        ending: Ending,
    ) {
        let version = session.version();
        let client = session.client_id().clone();
        // What we acknowledged goes out only once it is stored.
        let stored = self.hold == Ticket::NONE
            || tokio::time::timeout(
                FLUSH_ON_CLOSE,
                poll_fn(|cx| broker.poll_settled(cx, self.hold)),
            )
            .await
            .is_ok_and(|settled| settled.is_ok());
        if !stored || matches!(ending, Ending::StoreFailed) {
            self.out.clear();
        }
        self.hold = Ticket::NONE;
        let disconnect_reason = match &ending {
            Ending::Violation(close) => Some(close.reason),
            Ending::KeepAliveTimeout => Some(ReasonCode::KeepAliveTimeout),
            Ending::TakenOver(_) => Some(ReasonCode::SessionTakenOver),
            Ending::Closed(reason) => Some(*reason),
            // The held output was discarded, perhaps mid-packet: no DISCONNECT can follow it.
            Ending::StoreFailed
            | Ending::ClientDisconnect
            | Ending::WriteStalled
            | Ending::PeerClosed
            | Ending::Io(_) => None,
        };
        broker
            .metrics()
            .disconnected(&client, disconnect_label(&ending));
        match &ending {
            Ending::ClientDisconnect => info!("Client {client} disconnected."),
            Ending::Violation(close) => {
                let what = match close.reason {
                    ReasonCode::MalformedPacket => "malformed packet",
                    ReasonCode::PacketTooLarge => "oversize packet",
                    _ => "protocol error",
                };
                info!(reason = %close.reason, detail = close.detail, "Client {client} disconnected due to {what}.")
            }
            Ending::KeepAliveTimeout => {
                info!("Client {client} has exceeded timeout, disconnecting.")
            }
            Ending::WriteStalled => info!("Client {client} stopped reading; disconnecting."),
            Ending::PeerClosed => info!("Client {client} closed its connection."),
            Ending::Io(e) => info!("Socket error on client {client}, disconnecting: {e}."),
            Ending::TakenOver(_) => {
                info!("Client {client} already connected, closing old connection.")
            }
            Ending::Closed(ReasonCode::AdministrativeAction) => {
                info!("Client {client} has been disconnected by administrative action.")
            }
            Ending::Closed(reason) => info!(%reason, "Client {client} disconnected by the broker."),
            Ending::StoreFailed => warn!(
                "Client {client} disconnected: the store could not record its messages; they \
                 were not acknowledged."
            ),
        }
        // [MQTT-4.13.2-1] a server DISCONNECT only in 5.0, and only with a reason allowed there.
        if let Some(reason) = disconnect_reason
            && version.is_v5()
            && reason.allowed_in(ReasonContext::Disconnect)
        {
            let _ = self
                .out
                .push_packet(&Packet::Disconnect(Disconnect::new(reason)), version);
        }
        // Wills: not after a normal DISCONNECT (the session already dropped it), nor when the
        // broker itself shuts down; after everything else ([MQTT-3.1.2-8]).
        let publish_will = !matches!(ending, Ending::Closed(ReasonCode::ServerShuttingDown));
        let will = if publish_will {
            session.take_will()
        } else {
            None
        };
        // The session and the will are handed over before the socket is drained below: neither
        // may wait for a client that does not close its side (a dead peer never does).
        broker.close_session(slot, session, will, now());
        if let Ending::TakenOver(tx) = ending {
            // The new connection may resume the parked session now.
            let _ = tx.send(());
        }

        // When we end the connection, the client may still be sending: drain its input after our
        // last bytes, or the kernel answers its next segment with a reset that can destroy our
        // DISCONNECT before the client reads it.
        let drain = disconnect_reason.is_some();
        let metrics = broker.metrics();
        let _ = tokio::time::timeout(FLUSH_ON_CLOSE, self.close_gracefully(metrics, drain)).await;
    }

    async fn send_and_close(
        &mut self,
        metrics: &Metrics,
        packet: &Packet,
        version: ProtocolVersion,
    ) {
        if self.out.push_packet(packet, version).is_ok() {
            metrics.packets_sent(1);
            let _ =
                tokio::time::timeout(FLUSH_ON_CLOSE, self.close_gracefully(metrics, true)).await;
        }
    }

    /// Writes what is queued, closes our side, and with `drain` reads and discards until the
    /// client closes too (the caller bounds the time).
    async fn close_gracefully(&mut self, metrics: &Metrics, drain: bool) {
        let stream = &mut self.stream;
        let out = &mut self.out;
        let pending = out.len();
        let flushed = poll_fn(|cx| out.poll_flush(stream, cx)).await;
        metrics.bytes_written(pending - out.len());
        if flushed.is_err() {
            return;
        }
        if poll_fn(|cx| stream.poll_shutdown(cx)).await.is_err() || !drain {
            return;
        }
        let rbuf = &mut self.rbuf;
        loop {
            rbuf.clear();
            match poll_fn(|cx| stream.poll_read_into(cx, rbuf)).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Reads until one packet decodes (used for CONNECT).
    async fn read_packet(&mut self, metrics: &Metrics) -> Result<Packet, ReadError> {
        loop {
            if let Some(packet) =
                codec::decode(&mut self.rbuf, &self.decode).map_err(ReadError::Decode)?
            {
                return Ok(packet);
            }
            let stream = &mut self.stream;
            let rbuf = &mut self.rbuf;
            match poll_fn(|cx| stream.poll_read_into(cx, rbuf)).await {
                Ok(0) => return Err(ReadError::Closed),
                Ok(read) => metrics.bytes_read(read),
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}

enum ReadError {
    Closed,
    Io(std::io::Error),
    Decode(DecodeError),
}

/// Whether an acknowledgement that follows this change must wait until it is durable. Not for a
/// QoS 1 send or a finished delivery: losing those in a crash only means a message is sent again,
/// which QoS 1 allows. Everything else would lose or duplicate a message.
fn gates_output(op: &StoreOp) -> bool {
    match op {
        StoreOp::PutQueued { entry, .. } => entry.qos == crate::codec::QoS::ExactlyOnce,
        StoreOp::DeleteQueued { .. } => false,
        _ => true,
    }
}

fn drop_reason(dropped: Dropped) -> DropReason {
    match dropped {
        Dropped::Expired => DropReason::Expired,
        Dropped::TooLarge => DropReason::TooLarge,
        Dropped::NotAuthorized => DropReason::NotAuthorized,
    }
}

fn disconnect_label(ending: &Ending) -> DisconnectReason {
    match ending {
        Ending::ClientDisconnect => DisconnectReason::Client,
        Ending::Violation(_) => DisconnectReason::ProtocolError,
        Ending::KeepAliveTimeout => DisconnectReason::KeepAliveTimeout,
        Ending::WriteStalled => DisconnectReason::WriteStalled,
        Ending::PeerClosed => DisconnectReason::PeerClosed,
        Ending::Io(_) => DisconnectReason::IoError,
        Ending::TakenOver(_) => DisconnectReason::TakenOver,
        Ending::StoreFailed => DisconnectReason::StoreFailed,
        Ending::Closed(ReasonCode::ServerShuttingDown) => DisconnectReason::Shutdown,
        Ending::Closed(_) => DisconnectReason::Administrative,
    }
}

fn decode_failure(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::Malformed(what) | DecodeError::Protocol(what) => what,
        DecodeError::PacketTooLarge { .. } => "packet larger than the maximum packet size",
        DecodeError::UnsupportedProtocolVersion(_) => "unsupported protocol version",
        DecodeError::UnknownProtocolName => "unknown protocol name",
        DecodeError::TopicName(_) => "invalid topic name",
        DecodeError::TopicAliasZero => "topic alias 0",
        DecodeError::TopicFilter(_) => "invalid topic filter",
    }
}

fn encode_failure(error: &codec::EncodeError) -> &'static str {
    debug!(%error, "cannot encode a packet for this client");
    "a packet for this client could not be encoded"
}
