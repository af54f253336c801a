//! The durability promise, tested on the real binary: what Starling acknowledged (PUBACK, PUBREC,
//! CONNACK with session present) survives `kill -9` in `sync = "always"` mode, for each database
//! backend; and a clean restart in `periodic` mode keeps everything.
//!
//! Persistent subscribers (3.1.1 clean session 0, and 5.0 with a session expiry) go offline;
//! publishers send QoS 1 and QoS 2 bursts without waiting for each acknowledgement; the broker is
//! killed mid-burst and restarted on the same data directory. Then every message whose
//! acknowledgement a publisher received must reach every subscriber, the QoS 2 ones exactly once
//! (the QoS 2 publisher finishes its exchanges after the restart, as a real client does), and
//! retained messages must be intact.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::flows::{publish_packet, retained_packet};
use common::{RawClient, connect_packet, pid};
use starling::codec::{self, Packet, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode};
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_starling");

/// Messages each publisher sends.
const BURST: u16 = 300;
/// Publishes a publisher keeps unacknowledged at once (below the broker's Receive Maximum, 20).
const WINDOW: usize = 16;
/// QoS 1 acknowledgements after which the broker is killed.
const KILL_AFTER: usize = 100;

/// A broker child process on a data directory, killed when dropped.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    fn start(data_dir: &Path, backend: &str, sync: &str) -> Broker {
        let mut child = Command::new(BIN)
            .args(["-l", "127.0.0.1:0", "--log-level", "warn", "--data-dir"])
            .arg(data_dir)
            .args(["--store", backend, "--sync", sync])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn starling");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Broker { child, addr }
    }

    fn kill9(&mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let _ = self.child.wait();
    }

    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "clean shutdown: {status}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 3.1.1 or 5.0 client whose session outlives its connection.
async fn connect_persistent(
    addr: SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
    clean: bool,
) -> (RawClient, bool) {
    let mut connect = connect_packet(version, client_id, clean);
    if version.is_v5() {
        connect.properties.session_expiry_interval = Some(3600);
    }
    let (client, ack) = RawClient::connect_with(addr, connect).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    (client, ack.session_present)
}

/// Writes a packet; false once the broker is gone.
async fn try_send(client: &mut RawClient, packet: &Packet) -> bool {
    let bytes = codec::encode_to_bytes(packet, client.version).expect("encode");
    client.stream.write_all(&bytes).await.is_ok()
}

/// What a publisher learned before the broker died.
#[derive(Default, Debug)]
struct Acked {
    /// Packet ids acknowledged with PUBACK (QoS 1) or PUBREC (QoS 2).
    acked: BTreeSet<u16>,
    /// QoS 2 ids whose PUBCOMP also arrived.
    completed: BTreeSet<u16>,
}

/// Sends `BURST` messages on `topic` with up to `WINDOW` unacknowledged, until done or the
/// connection dies. Payloads are the packet id as text.
async fn burst(mut client: RawClient, topic: &str, qos: QoS, acks: Arc<AtomicUsize>) -> Acked {
    let mut result = Acked::default();
    let mut next: u16 = 1;
    let mut open = 0usize;
    loop {
        while open < WINDOW && next <= BURST {
            let publish = publish_packet(topic, next.to_string().as_bytes(), qos, next);
            if !try_send(&mut client, &Packet::Publish(publish)).await {
                return result;
            }
            next += 1;
            open += 1;
        }
        if open == 0 {
            return result;
        }
        match client.recv_or_closed().await {
            None => return result,
            Some(Packet::PubAck(ack)) => {
                assert_eq!(ack.reason, ReasonCode::Success);
                result.acked.insert(ack.packet_id.get());
                acks.fetch_add(1, Ordering::SeqCst);
                open -= 1;
            }
            Some(Packet::PubRec(rec)) => {
                assert_eq!(rec.reason, ReasonCode::Success);
                result.acked.insert(rec.packet_id.get());
                if !try_send(
                    &mut client,
                    &Packet::PubRel(PubResponse::success(rec.packet_id)),
                )
                .await
                {
                    return result;
                }
            }
            Some(Packet::PubComp(comp)) => {
                result.completed.insert(comp.packet_id.get());
                open -= 1;
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
}

/// Receives until nothing arrives for a while, acknowledging every QoS 1/2 message; returns the
/// payloads per topic in arrival order.
async fn drain(client: &mut RawClient) -> BTreeMap<String, Vec<String>> {
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while let Some(packet) = client.recv_within(Duration::from_secs(2)).await {
        match packet {
            Packet::Publish(publish) => {
                ack(client, &publish).await;
                got.entry(publish.topic.to_string())
                    .or_default()
                    .push(String::from_utf8_lossy(&publish.payload).into_owned());
            }
            Packet::PubRel(rel) => {
                client
                    .send(&Packet::PubComp(PubResponse::success(rel.packet_id)))
                    .await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

async fn ack(client: &mut RawClient, publish: &Publish) {
    match (publish.qos, publish.packet_id) {
        (QoS::AtLeastOnce, Some(id)) => {
            client.send(&Packet::PubAck(PubResponse::success(id))).await;
        }
        (QoS::ExactlyOnce, Some(id)) => {
            client.send(&Packet::PubRec(PubResponse::success(id))).await;
        }
        _ => {}
    }
}

/// The whole scenario for one backend in `always` mode.
async fn acknowledged_messages_survive_kill_9(backend: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path(), backend, "always");

    // Subscribers: both persistent, both offline during the burst.
    let subscribers = [
        (ProtocolVersion::V311, "sub-311"),
        (ProtocolVersion::V5, "sub-5"),
    ];
    for (version, id) in subscribers {
        // 3.1.1: clean session 0 makes the session persistent; 5.0: the expiry interval does.
        let clean = version.is_v5();
        let (mut sub, _) = connect_persistent(broker.addr, version, id, clean).await;
        assert_eq!(
            sub.subscribe("burst/#", QoS::ExactlyOnce).await,
            vec![ReasonCode::GrantedQoS2]
        );
        assert!(sub.disconnect().await.is_empty());
    }
    let (mut setter, _) =
        connect_persistent(broker.addr, ProtocolVersion::V311, "setter", true).await;
    setter
        .publish_and_wait(retained_packet("state/boiler", b"on", QoS::AtLeastOnce, 1))
        .await;
    drop(setter);

    // Publishers: QoS 1 on 3.1.1, QoS 2 on a persistent 5.0 session (it resumes after the crash).
    let acks = Arc::new(AtomicUsize::new(0));
    let (q1, _) = connect_persistent(broker.addr, ProtocolVersion::V311, "pub-1", true).await;
    let (q2, _) = connect_persistent(broker.addr, ProtocolVersion::V5, "pub-2", true).await;
    let q1 = tokio::spawn(burst(q1, "burst/q1", QoS::AtLeastOnce, acks.clone()));
    let q2 = tokio::spawn(burst(q2, "burst/q2", QoS::ExactlyOnce, acks.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acks.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(tokio::time::Instant::now() < deadline, "the burst stalled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    broker.kill9();
    let q1 = q1.await.expect("QoS 1 publisher");
    let q2 = q2.await.expect("QoS 2 publisher");
    assert!(
        q1.acked.len() < usize::from(BURST),
        "killed mid-burst, after {} QoS 1 acks",
        q1.acked.len()
    );

    let broker = Broker::start(dir.path(), backend, "always");

    // The QoS 2 publisher resumes: PUBREL for what got PUBREC, the PUBLISH again (DUP) for
    // what did not. The broker must not route a message twice.
    let (mut resumed, present) =
        connect_persistent(broker.addr, ProtocolVersion::V5, "pub-2", false).await;
    assert!(present, "the publisher's session survived");
    for id in 1..=BURST {
        if q2.completed.contains(&id) {
            continue;
        }
        if q2.acked.contains(&id) {
            resumed
                .send(&Packet::PubRel(PubResponse::success(pid(id))))
                .await;
            // Success if the id was still awaiting PUBREL; 0x92 if the broker had already
            // completed the exchange and only its PUBCOMP was lost with the connection.
            match resumed.recv().await {
                Packet::PubComp(comp) => assert!(
                    matches!(
                        comp.reason,
                        ReasonCode::Success | ReasonCode::PacketIdentifierNotFound
                    ),
                    "PUBCOMP for {id}: {:?}",
                    comp.reason
                ),
                other => panic!("expected PUBCOMP, got {other:?}"),
            }
        } else {
            let mut again =
                publish_packet("burst/q2", id.to_string().as_bytes(), QoS::ExactlyOnce, id);
            again.dup = true;
            resumed.publish_and_wait(again).await;
        }
    }

    for (version, id) in subscribers {
        let (mut sub, present) = connect_persistent(broker.addr, version, id, false).await;
        assert!(present, "{id}: the subscriber's session survived");
        let got = drain(&mut sub).await;
        let q1_got: BTreeSet<u16> = got
            .get("burst/q1")
            .into_iter()
            .flatten()
            .map(|p| p.parse().expect("id"))
            .collect();
        let missing: Vec<_> = q1.acked.difference(&q1_got).collect();
        assert!(
            missing.is_empty(),
            "{id}: acknowledged QoS 1 messages lost: {missing:?}"
        );
        let q2_got: Vec<u16> = got
            .get("burst/q2")
            .into_iter()
            .flatten()
            .map(|p| p.parse().expect("id"))
            .collect();
        let q2_set: BTreeSet<u16> = q2_got.iter().copied().collect();
        assert_eq!(
            q2_got.len(),
            q2_set.len(),
            "{id}: a QoS 2 message arrived twice"
        );
        let expected: BTreeSet<u16> = (1..=BURST).collect();
        assert_eq!(
            q2_set, expected,
            "{id}: every QoS 2 message, once, after the publisher finished its exchanges"
        );
        assert!(sub.disconnect().await.is_empty());
    }

    let (mut late, _) = RawClient::connect(broker.addr, ProtocolVersion::V311, "late", true).await;
    late.subscribe("state/#", QoS::AtLeastOnce).await;
    let retained = late.recv_publish().await;
    assert_eq!(
        (
            retained.topic.as_str(),
            &retained.payload[..],
            retained.retain
        ),
        ("state/boiler", &b"on"[..], true)
    );
}

#[tokio::test]
async fn redb_keeps_acknowledged_messages_through_kill_9() {
    acknowledged_messages_survive_kill_9("redb").await;
}

#[cfg(feature = "sled")]
#[tokio::test]
async fn sled_keeps_acknowledged_messages_through_kill_9() {
    acknowledged_messages_survive_kill_9("sled").await;
}

/// `periodic` mode promises less on a crash, but a clean shutdown keeps everything: sessions,
/// queued messages and retained messages.
#[tokio::test]
async fn periodic_mode_keeps_everything_across_a_clean_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path(), "redb", "periodic");
    let (mut sub, _) = connect_persistent(broker.addr, ProtocolVersion::V5, "sub", true).await;
    sub.subscribe("p/#", QoS::AtLeastOnce).await;
    assert!(sub.disconnect().await.is_empty());
    let (mut publisher, _) =
        RawClient::connect(broker.addr, ProtocolVersion::V311, "pub", true).await;
    for id in 1..=50u16 {
        publisher
            .publish("p/x", id.to_string().as_bytes(), QoS::AtLeastOnce, id)
            .await;
    }
    publisher
        .publish_and_wait(retained_packet("p/state", b"kept", QoS::AtLeastOnce, 51))
        .await;
    drop(publisher);
    broker.terminate();

    let broker = Broker::start(dir.path(), "redb", "periodic");
    let (mut sub, present) =
        connect_persistent(broker.addr, ProtocolVersion::V5, "sub", false).await;
    assert!(present);
    let got = drain(&mut sub).await;
    let expected: Vec<String> = (1..=50).map(|i: u16| i.to_string()).collect();
    assert_eq!(got.get("p/x"), Some(&expected), "all queued, in order");
    assert_eq!(got.get("p/state").map(Vec::len), Some(1));
}
