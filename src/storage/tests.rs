//! The database backends against the model: random batches of ops go to the backend under test
//! and to [`MemoryStore`], and `load` must agree, before and after closing and reopening the
//! backend from its directory. Plus the cases a random sequence would rarely hit: a reopen after
//! a plain drop, a newer format, a garbage file, orphaned message bodies.

use std::num::{NonZeroU16, NonZeroU32};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;
use crate::codec::{
    PayloadFormat, PublishProperties, RetainHandling, SubscriptionOptions, UserProperty,
};

/// Opens a backend from its directory.
type Opener = fn(&Path) -> Result<Box<dyn Store>, StoreError>;

fn redb(dir: &Path) -> Result<Box<dyn Store>, StoreError> {
    Ok(Box::new(RedbStore::open(dir)?))
}

#[cfg(feature = "sled")]
fn sled(dir: &Path) -> Result<Box<dyn Store>, StoreError> {
    Ok(Box::new(SledStore::open(dir)?))
}

/// Every backend this build has, by name.
#[allow(unused_mut, reason = "sled joins under its feature")]
fn backends() -> Vec<(&'static str, Opener)> {
    let mut all: Vec<(&'static str, Opener)> = vec![("redb", redb)];
    #[cfg(feature = "sled")]
    all.push(("sled", sled));
    all
}

/// Checks two snapshots hold the same things, comparing messages as a store keeps them.
fn same(actual: &Snapshot, expected: &Snapshot) -> Result<(), String> {
    if actual.sessions != expected.sessions {
        return Err(format!(
            "sessions differ:\n  got  {:?}\n  want {:?}",
            actual.sessions, expected.sessions
        ));
    }
    let ids = |s: &Snapshot| s.messages.keys().copied().collect::<Vec<_>>();
    if ids(actual) != ids(expected) {
        return Err(format!(
            "message ids differ: got {:?}, want {:?}",
            ids(actual),
            ids(expected)
        ));
    }
    for (id, m) in &actual.messages {
        if !message_eq(m, &expected.messages[id]) {
            return Err(format!("message {id} differs: {m:?}"));
        }
    }
    let retained_same = actual.retained.len() == expected.retained.len()
        && actual
            .retained
            .iter()
            .zip(&expected.retained)
            .all(|(a, b)| message_eq(a, b));
    if !retained_same {
        return Err(format!(
            "retained differ:\n  got  {:?}\n  want {:?}",
            actual.retained, expected.retained
        ));
    }
    Ok(())
}

fn load(store: &dyn Store) -> Snapshot {
    store.load().expect("loads")
}

// ---------------------------------------------------------------------------------------------
// Generators: small pools, so ops collide on the same sessions, keys and topics.

fn client() -> impl Strategy<Value = Arc<str>> {
    // "a" prefixes "ab" and sorts right before "a\0": range deletes must stop at the boundary.
    prop_oneof![Just("a"), Just("ab"), Just("a\u{0}")].prop_map(Arc::from)
}

fn topic() -> impl Strategy<Value = TopicName> {
    prop_oneof![Just("t/1"), Just("t/2"), Just("r")].prop_map(|t| TopicName::new(t).expect("valid"))
}

fn filter() -> impl Strategy<Value = TopicFilter> {
    prop_oneof![Just("t/1"), Just("t/+"), Just("#"), Just("$share/g/t/1")]
        .prop_map(|f| TopicFilter::new(f).expect("valid"))
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn sub_id() -> impl Strategy<Value = NonZeroU32> {
    (1u32..=268_435_455).prop_map(|n| NonZeroU32::new(n).expect("nonzero"))
}

fn properties() -> impl Strategy<Value = PublishProperties> {
    (
        prop::option::of(prop_oneof![
            Just(PayloadFormat::Unspecified),
            Just(PayloadFormat::Utf8)
        ]),
        prop::option::of(any::<u32>()),
        prop::option::of((1u16..).prop_map(|n| NonZeroU16::new(n).expect("nonzero"))),
        prop::option::of(topic()),
        prop::option::of(vec(any::<u8>(), 0..4).prop_map(Bytes::from)),
        vec(("[a-z]{0,3}", "\\PC{0,3}"), 0..3),
        vec(sub_id(), 0..3),
        prop::option::of("[a-z/]{0,8}"),
    )
        .prop_map(
            |(payload_format, expiry, alias, response, correlation, users, ids, content)| {
                PublishProperties {
                    payload_format,
                    message_expiry_interval: expiry,
                    topic_alias: alias,
                    response_topic: response,
                    correlation_data: correlation,
                    user_properties: users
                        .into_iter()
                        .map(|(key, value)| UserProperty { key, value })
                        .collect(),
                    subscription_identifiers: ids,
                    content_type: content,
                }
            },
        )
}

fn message() -> impl Strategy<Value = Arc<Message>> {
    (
        topic(),
        vec(any::<u8>(), 0..16),
        qos(),
        any::<bool>(),
        properties(),
        prop::option::of(0u64..100_000),
    )
        .prop_map(|(topic, payload, qos, retain, properties, expiry)| {
            Arc::new(Message {
                topic,
                payload: Bytes::from(payload),
                qos,
                retain,
                properties,
                expires_at: expiry.map(|s| Instant::now() + Duration::from_secs(s)),
                origin: None,
                published_at: None,
            })
        })
}

fn record() -> impl Strategy<Value = SessionRecord> {
    (
        client(),
        any::<u32>(),
        prop::option::of((-1_000_000i64..4_000_000_000, 0u32..1_000_000_000)),
        prop::option::of((message(), any::<u32>())),
    )
        .prop_map(|(client_id, expiry_interval, at, will)| SessionRecord {
            client_id,
            expiry_interval,
            disconnected_at: at.map(|(secs, nanos)| {
                let base = if secs >= 0 {
                    UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
                } else {
                    UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
                };
                base + Duration::from_nanos(u64::from(nanos))
            }),
            will: will.map(|(message, delay_interval)| StoredWill {
                message,
                delay_interval,
            }),
        })
}

fn subscription() -> impl Strategy<Value = Subscription> {
    (
        filter(),
        qos(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(RetainHandling::SendAtSubscribe),
            Just(RetainHandling::SendIfNew),
            Just(RetainHandling::DoNotSend)
        ],
        prop::option::of(sub_id()),
    )
        .prop_map(
            |(filter, qos, no_local, rap, retain_handling, id)| Subscription {
                filter,
                options: SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published: rap,
                    retain_handling,
                },
                id,
            },
        )
}

fn entry() -> impl Strategy<Value = QueuedEntry> {
    (
        0u64..6,
        prop_oneof![Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)],
        any::<bool>(),
        vec(sub_id(), 0..3),
        prop_oneof![
            Just(QueuedState::Queued),
            any::<u16>().prop_map(|packet_id| QueuedState::Sent { packet_id }),
            any::<u16>().prop_map(|packet_id| QueuedState::Released { packet_id }),
        ],
    )
        .prop_map(|(message, qos, retain, ids, state)| QueuedEntry {
            message,
            qos,
            retain,
            subscription_ids: ids.into_iter().collect(),
            state,
        })
}

fn op() -> impl Strategy<Value = StoreOp> {
    let seq = 0u64..5;
    let packet_id = 1u16..4;
    prop_oneof![
        3 => record().prop_map(StoreOp::PutSession),
        2 => client().prop_map(|client_id| StoreOp::DeleteSession { client_id }),
        3 => (client(), subscription())
            .prop_map(|(client_id, subscription)| StoreOp::PutSubscription { client_id, subscription }),
        1 => (client(), filter()).prop_map(|(client_id, filter)| StoreOp::DeleteSubscription { client_id, filter }),
        3 => (0u64..6, message()).prop_map(|(id, message)| StoreOp::PutMessage { id, message }),
        1 => (0u64..6).prop_map(StoreOp::DeleteMessage),
        3 => (client(), seq.clone(), entry())
            .prop_map(|(client_id, seq, entry)| StoreOp::PutQueued { client_id, seq, entry }),
        2 => (client(), seq).prop_map(|(client_id, seq)| StoreOp::DeleteQueued { client_id, seq }),
        2 => (client(), packet_id.clone())
            .prop_map(|(client_id, packet_id)| StoreOp::PutIncoming { client_id, packet_id }),
        1 => (client(), packet_id).prop_map(|(client_id, packet_id)| StoreOp::DeleteIncoming { client_id, packet_id }),
        2 => message().prop_map(StoreOp::PutRetained),
        1 => topic().prop_map(StoreOp::DeleteRetained),
    ]
}

/// Batches with their durability.
fn batches() -> impl Strategy<Value = Vec<(Vec<StoreOp>, bool)>> {
    vec((vec(op(), 0..12), any::<bool>()), 1..12)
}

/// Applies `batches` to a fresh backend and to the model; their loads must agree, and again after
/// the backend is closed and reopened. Loads in between (which collect orphans) must not change
/// what later batches see.
fn check_against_model(
    open: Opener,
    batches: &[(Vec<StoreOp>, bool)],
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = MemoryStore::new();
    {
        let store = open(dir.path()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (i, (batch, durable)) in batches.iter().enumerate() {
            store
                .apply(batch, *durable)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            model.apply(batch, *durable).expect("model applies");
            if i % 3 == 2 {
                same(&load(&*store), &load(&model)).map_err(TestCaseError::fail)?;
            }
        }
        same(&load(&*store), &load(&model)).map_err(TestCaseError::fail)?;
    }
    let reopened = open(dir.path()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    same(&load(&*reopened), &load(&model))
        .map_err(|e| TestCaseError::fail(format!("after reopening: {e}")))?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn redb_matches_the_model(batches in batches()) {
        check_against_model(redb, &batches)?;
    }
}

#[cfg(feature = "sled")]
proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn sled_matches_the_model(batches in batches()) {
        check_against_model(sled, &batches)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Targeted cases

fn msg(topic: &str, payload: &'static [u8]) -> Arc<Message> {
    Arc::new(Message {
        topic: TopicName::new(topic).expect("valid"),
        payload: Bytes::from_static(payload),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties: PublishProperties {
            user_properties: vec![UserProperty {
                key: "k".into(),
                value: "v".into(),
            }],
            ..PublishProperties::default()
        },
        expires_at: Some(Instant::now() + Duration::from_secs(600)),
        origin: None,
        published_at: None,
    })
}

/// One of every op that leaves something behind.
fn everything() -> Vec<StoreOp> {
    let c: Arc<str> = Arc::from("client");
    vec![
        StoreOp::PutSession(SessionRecord {
            client_id: c.clone(),
            expiry_interval: 3600,
            disconnected_at: Some(SystemTime::now()),
            will: Some(StoredWill {
                message: msg("will/t", b"gone"),
                delay_interval: 10,
            }),
        }),
        StoreOp::PutSubscription {
            client_id: c.clone(),
            subscription: Subscription {
                filter: TopicFilter::new("a/#").expect("valid"),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
                id: NonZeroU32::new(4),
            },
        },
        StoreOp::PutMessage {
            id: 7,
            message: msg("a/b", b"queued"),
        },
        StoreOp::PutQueued {
            client_id: c.clone(),
            seq: 1,
            entry: QueuedEntry {
                message: 7,
                qos: QoS::ExactlyOnce,
                retain: false,
                subscription_ids: NonZeroU32::new(4).into_iter().collect(),
                state: QueuedState::Released { packet_id: 12 },
            },
        },
        StoreOp::PutIncoming {
            client_id: c,
            packet_id: 9,
        },
        StoreOp::PutRetained(msg("a/r", b"kept")),
    ]
}

#[test]
fn a_reopened_store_has_what_was_applied_even_without_durability_or_flush() {
    for (name, open) in backends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ops = everything();
        let model = MemoryStore::new();
        model.apply(&ops, false).expect("model applies");
        let store = open(dir.path()).expect("opens");
        store.apply(&ops, false).expect("applies");
        drop(store);
        let reopened = open(dir.path()).expect("reopens");
        let snapshot = load(&*reopened);
        assert_eq!(snapshot.sessions.len(), 1, "{name}");
        assert_eq!(snapshot.sessions[0].queue.len(), 1, "{name}");
        assert_eq!(snapshot.sessions[0].incoming, vec![9], "{name}");
        same(&snapshot, &load(&model)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn deleting_a_session_removes_its_rows_but_no_neighbour_s() {
    for (name, open) in backends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path()).expect("opens");
        let mut batch = everything();
        // A neighbour whose id the deleted one prefixes.
        for op in everything() {
            batch.push(rename(op, "client2"));
        }
        batch.push(StoreOp::DeleteSession {
            client_id: Arc::from("client"),
        });
        store.apply(&batch, true).expect("applies");
        let snapshot = load(&*store);
        let ids: Vec<&str> = snapshot
            .sessions
            .iter()
            .map(|s| &*s.record.client_id)
            .collect();
        assert_eq!(ids, vec!["client2"], "{name}");
        let left = &snapshot.sessions[0];
        assert_eq!(
            (
                left.subscriptions.len(),
                left.queue.len(),
                left.incoming.len()
            ),
            (1, 1, 1),
            "{name}"
        );
        // A session stored again starts empty: nothing of the deleted one comes back.
        store
            .apply(&[everything().swap_remove(0)], true)
            .expect("applies");
        let again = load(&*store);
        let client = again
            .sessions
            .iter()
            .find(|s| &*s.record.client_id == "client")
            .expect("stored again");
        assert!(
            client.subscriptions.is_empty()
                && client.queue.is_empty()
                && client.incoming.is_empty(),
            "{name}: {client:?}"
        );
    }
}

fn rename(op: StoreOp, to: &str) -> StoreOp {
    let to: Arc<str> = Arc::from(to);
    match op {
        StoreOp::PutSession(r) => StoreOp::PutSession(SessionRecord { client_id: to, ..r }),
        StoreOp::PutSubscription { subscription, .. } => StoreOp::PutSubscription {
            client_id: to,
            subscription,
        },
        StoreOp::PutQueued { seq, entry, .. } => StoreOp::PutQueued {
            client_id: to,
            seq,
            entry,
        },
        StoreOp::PutIncoming { packet_id, .. } => StoreOp::PutIncoming {
            client_id: to,
            packet_id,
        },
        other => other,
    }
}

#[test]
fn message_bodies_no_entry_references_are_collected_at_load() {
    for (name, open) in backends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path()).expect("opens");
        let mut batch = everything();
        batch.push(StoreOp::PutMessage {
            id: 8,
            message: msg("a/b", b"orphan"),
        });
        store.apply(&batch, true).expect("applies");
        let first = load(&*store);
        assert_eq!(
            first.messages.keys().copied().collect::<Vec<_>>(),
            vec![7],
            "{name}"
        );
        // Deleting the entry that referenced 7 orphans it too; after a reopen both are gone,
        // and a body stored again under 8 is not shadowed by the old one.
        store
            .apply(
                &[StoreOp::DeleteQueued {
                    client_id: Arc::from("client"),
                    seq: 1,
                }],
                true,
            )
            .expect("applies");
        assert!(load(&*store).messages.is_empty(), "{name}");
        drop(store);
        let store = open(dir.path()).expect("reopens");
        store
            .apply(
                &[
                    StoreOp::PutQueued {
                        client_id: Arc::from("client"),
                        seq: 2,
                        entry: QueuedEntry {
                            message: 8,
                            qos: QoS::AtLeastOnce,
                            retain: false,
                            subscription_ids: Default::default(),
                            state: QueuedState::Queued,
                        },
                    },
                    StoreOp::PutMessage {
                        id: 9,
                        message: msg("a/b", b"new"),
                    },
                ],
                true,
            )
            .expect("applies");
        let snapshot = load(&*store);
        assert!(
            snapshot.messages.is_empty(),
            "{name}: body 8 was collected, not kept for a later reference"
        );
    }
}

#[test]
fn a_garbage_file_is_reported_as_corrupt_and_left_in_place() {
    for (name, open) in backends() {
        for garbage in [&b"not a database"[..], &[0xA5; 8192][..]] {
            let dir = tempfile::tempdir().expect("temp dir");
            let file = garbage_target(name, dir.path());
            std::fs::write(&file, garbage).expect("write garbage");
            match open(dir.path()) {
                Err(StoreError::Corrupt { path, detail }) => {
                    assert!(
                        file.starts_with(&path),
                        "{name}: error names {path:?}, garbage is in {file:?} ({detail})"
                    );
                }
                Err(other) => panic!("{name}: want Corrupt, got {other}"),
                Ok(_) => panic!("{name}: opened a garbage file"),
            }
            assert_eq!(
                std::fs::read(&file).expect("still there"),
                garbage,
                "{name}"
            );
        }
    }
}

/// The file a backend keeps its data in, to overwrite with garbage.
fn garbage_target(backend: &str, dir: &Path) -> std::path::PathBuf {
    match backend {
        "redb" => dir.join(redb::FILE_NAME),
        #[cfg(feature = "sled")]
        "sled" => {
            let db = dir.join(super::sled::DIR_NAME);
            std::fs::create_dir_all(&db).expect("sled dir");
            db.join("conf")
        }
        other => unreachable!("no backend {other}"),
    }
}

#[test]
fn open_picks_the_backend_and_needs_a_directory_for_the_disk_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(StoreKind::Redb, Some(dir.path())).expect("opens redb");
    store.apply(&everything(), true).expect("applies");
    assert!(dir.path().join(redb::FILE_NAME).is_file());
    drop(store);
    assert!(matches!(
        open(StoreKind::Redb, None),
        Err(StoreError::Unavailable(_))
    ));
    let memory = open(StoreKind::Memory, None).expect("memory needs no directory");
    assert!(load(&*memory).sessions.is_empty());
    let sled = open(StoreKind::Sled, Some(dir.path()));
    #[cfg(feature = "sled")]
    assert!(sled.is_ok(), "{:?}", sled.err());
    #[cfg(not(feature = "sled"))]
    assert!(
        matches!(&sled, Err(StoreError::Unavailable(m)) if m.contains("--features sled")),
        "{:?}",
        sled.err()
    );
}

#[test]
fn store_kinds_are_named_in_lowercase_in_config() {
    #[derive(serde::Deserialize)]
    struct Config {
        store: StoreKind,
    }
    for (text, kind) in [
        ("redb", StoreKind::Redb),
        ("sled", StoreKind::Sled),
        ("memory", StoreKind::Memory),
    ] {
        let parsed: Config = toml::from_str(&format!("store = \"{text}\"")).expect("parses");
        assert_eq!(parsed.store, kind);
        let flag = <StoreKind as clap::ValueEnum>::from_str(text, false).expect("flag value");
        assert_eq!(flag, kind);
    }
    assert!(toml::from_str::<Config>("store = \"Redb\"").is_err());
}
