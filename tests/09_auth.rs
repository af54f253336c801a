//! Authentication and access control through real connections: password files made by the real
//! `mosquitto_passwd` and by `starling passwd` (and read by the real mosquitto broker), every hash
//! format, anonymous clients, the failure backoff, per-listener settings, and ACL decisions for
//! publish, subscribe, delivery, retained messages and wills.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use common::flows::{QUIET, sub_opts, subscribe_packet};
use common::tools::{Mosquitto, find_program, free_port, running_as_root, tool_available};
use common::{RawClient, TestBroker, connect_packet, connect_with_will, pid, will};
use starling::codec::{ConnAck, Packet, ProtocolVersion, PubResponse, QoS, ReasonCode};
use starling::config::{AuthConfig, ListenerConfig};

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

// Hashes computed by independent tools: Python's hashlib and the reference argon2 CLI.
const SHA512_LINE: &str = "six:$6$AQIDBAUGBwgJCgsM$k4h6DJTPKKgPqwiLW87w0j5t6eo2nkDOCc72xNQ6goxbMrAMEDvsnYteF9SSd1cyXtc8SuF5I0GVPt7YRi6Wdw==";
const PBKDF2_LINE: &str = "seven:$7$1000$FBUWFxgZGhscHR4f$tpHPin6q51margSOVBCk5Qb2OBJ+SV6D+rRPuuua5wvCbJiFf0JvdZKY5rgcZUCQxzejIqgNg/9W6JmqWoSrnw==";
const ARGON2_LINE: &str = "argon:$argon2id$v=19$m=4096,t=2,p=1$c2FsdHlzYWx0MTIzNA$Jirt5oiH+j1SrHS1OQKKryF1xZJkGwoPCycDLj0x+ZU";

/// Connects with optional credentials and returns the client and its CONNACK.
async fn connect_as(
    addr: SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
    user: Option<&str>,
    password: Option<&str>,
) -> (RawClient, ConnAck) {
    let mut connect = connect_packet(version, client_id, true);
    connect.username = user.map(str::to_owned);
    connect.password = password.map(|p| Bytes::copy_from_slice(p.as_bytes()));
    RawClient::connect_with(addr, connect).await
}

/// Expects a refusal with `reason`, and the connection closed after it.
async fn expect_refused(
    addr: SocketAddr,
    version: ProtocolVersion,
    user: Option<&str>,
    password: Option<&str>,
    reason: ReasonCode,
) {
    let (mut client, ack) = connect_as(addr, version, "refused", user, password).await;
    assert_eq!(ack.reason, reason, "user {user:?} password {password:?}");
    assert_eq!(
        client.recv_or_closed().await,
        None,
        "closed after the refusal"
    );
}

async fn expect_accepted(
    addr: SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
    user: Option<&str>,
    password: Option<&str>,
) -> RawClient {
    let (mut client, ack) = connect_as(addr, version, client_id, user, password).await;
    assert_eq!(ack.reason, ReasonCode::Success, "user {user:?}");
    client.ping().await;
    client
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

async fn broker_with(auth: AuthConfig) -> TestBroker {
    TestBroker::start_with(move |c| c.auth = auth).await
}

fn passwords(path: PathBuf) -> AuthConfig {
    AuthConfig {
        password_file: Some(path),
        ..AuthConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Password files

#[tokio::test]
async fn mosquitto_passwd_files_are_accepted_with_the_right_password_only() {
    let Some(tool) = find_program("mosquitto_passwd", &["/usr/sbin", "/usr/bin"]) else {
        tool_available(false, "mosquitto_passwd not found", "install mosquitto");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("passwd");
    let run = |args: &[&str]| {
        let status = Command::new(&tool)
            .args(args)
            .stdin(Stdio::null())
            .status()
            .expect("run mosquitto_passwd");
        assert!(status.success(), "mosquitto_passwd {args:?}");
    };
    let path = file.to_str().expect("utf-8 path");
    run(&["-c", "-b", path, "alice", "wonder land"]);
    run(&["-H", "sha512", "-b", path, "bob", "builder"]);
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(text.contains("alice:$7$"), "{text}");
    assert!(text.contains("bob:$6$"), "{text}");

    let broker = broker_with(passwords(file)).await;
    let alice = Some("alice");
    let mut a = expect_accepted(broker.addr, V311, "a", alice, Some("wonder land")).await;
    expect_accepted(broker.addr, V5, "b", Some("bob"), Some("builder")).await;
    expect_refused(
        broker.addr,
        V311,
        alice,
        Some("wonderland"),
        ReasonCode::BadUserNameOrPassword,
    )
    .await;
    expect_refused(
        broker.addr,
        V5,
        Some("bob"),
        Some("Builder"),
        ReasonCode::BadUserNameOrPassword,
    )
    .await;
    a.ping().await;
    broker.stop().await;
}

#[tokio::test]
async fn every_hash_format_is_accepted_with_its_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "passwd",
        &format!("# three formats\n{SHA512_LINE}\n{PBKDF2_LINE}\n{ARGON2_LINE}\n"),
    );
    let broker = broker_with(passwords(file)).await;
    for (user, password) in [
        ("six", "correct horse"),
        ("seven", "battery staple"),
        ("argon", "tr0ub4dor"),
    ] {
        expect_accepted(broker.addr, V5, user, Some(user), Some(password)).await;
        expect_refused(
            broker.addr,
            V5,
            Some(user),
            Some("nope"),
            ReasonCode::BadUserNameOrPassword,
        )
        .await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn unknown_users_and_missing_passwords_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "passwd", &format!("{SHA512_LINE}\n"));
    let broker = broker_with(passwords(file)).await;
    let bad = ReasonCode::BadUserNameOrPassword;
    expect_refused(
        broker.addr,
        V311,
        Some("nobody"),
        Some("correct horse"),
        bad,
    )
    .await;
    expect_refused(broker.addr, V311, Some("six"), None, bad).await;
    expect_refused(broker.addr, V5, Some("six"), None, bad).await;
    broker.stop().await;
}

#[tokio::test]
async fn files_written_by_starling_passwd_are_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("passwd");
    let path = file.to_str().expect("utf-8 path");
    let starling = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
            .arg("passwd")
            .args(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("run starling passwd");
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait().expect("wait")
    };
    assert!(starling(&["-c", "-b", path, "alice", "pw-a"], None).success());
    assert!(starling(&["-b", path, "bob", "pw-b"], None).success());
    assert!(
        starling(&[path, "carol"], Some("pw-c\n")).success(),
        "password from stdin"
    );
    assert!(starling(&["-D", path, "alice"], None).success());
    assert!(
        !starling(&["-D", path, "alice"], None).success(),
        "already gone"
    );
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(
        text.contains("bob:$7$101$") && text.contains("carol:$7$101$"),
        "{text}"
    );

    let broker = broker_with(passwords(file.clone())).await;
    expect_accepted(broker.addr, V311, "b", Some("bob"), Some("pw-b")).await;
    expect_accepted(broker.addr, V5, "c", Some("carol"), Some("pw-c")).await;
    let bad = ReasonCode::BadUserNameOrPassword;
    expect_refused(broker.addr, V311, Some("alice"), Some("pw-a"), bad).await;
    broker.stop().await;

    mosquitto_reads(&file, "bob", "pw-b").await;
}

/// The real mosquitto broker reads a file `starling passwd` wrote: right password accepted,
/// wrong one refused (mosquitto answers 5, Not authorized).
async fn mosquitto_reads(file: &Path, user: &str, password: &str) {
    let port = free_port();
    let dir = file.parent().expect("dir");
    let conf = write(
        dir,
        "mosquitto.conf",
        &format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n{}",
            file.display(),
            if running_as_root() { "user root\n" } else { "" }
        ),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let Some(_mosquitto) = Mosquitto::start(&conf, addr) else {
        return;
    };
    let (_, ok) = connect_as(addr, V311, "m1", Some(user), Some(password)).await;
    assert_eq!(ok.reason, ReasonCode::Success, "mosquitto accepts the hash");
    let (_, bad) = connect_as(addr, V311, "m2", Some(user), Some("wrong")).await;
    assert_eq!(bad.reason, ReasonCode::NotAuthorized, "mosquitto refuses");
}

// ---------------------------------------------------------------------------------------------
// Anonymous clients

#[tokio::test]
async fn without_a_password_file_anyone_may_connect() {
    let broker = TestBroker::start().await;
    expect_accepted(broker.addr, V311, "anon", None, None).await;
    expect_accepted(broker.addr, V5, "named", Some("whoever"), Some("x")).await;
    broker.stop().await;
}

#[tokio::test]
async fn a_password_file_turns_anonymous_clients_away_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "passwd", &format!("{PBKDF2_LINE}\n"));
    let broker = broker_with(passwords(file.clone())).await;
    expect_refused(broker.addr, V311, None, None, ReasonCode::NotAuthorized).await;
    expect_refused(broker.addr, V5, None, None, ReasonCode::NotAuthorized).await;
    broker.stop().await;

    let broker = broker_with(AuthConfig {
        allow_anonymous: Some(true),
        ..passwords(file)
    })
    .await;
    expect_accepted(broker.addr, V311, "anon", None, None).await;
    expect_refused(
        broker.addr,
        V5,
        Some("seven"),
        Some("guess"),
        ReasonCode::BadUserNameOrPassword,
    )
    .await;
    expect_accepted(
        broker.addr,
        V5,
        "seven",
        Some("seven"),
        Some("battery staple"),
    )
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn anonymous_off_without_a_password_file_refuses_everyone() {
    let broker = broker_with(AuthConfig {
        allow_anonymous: Some(false),
        ..AuthConfig::default()
    })
    .await;
    expect_refused(broker.addr, V311, None, None, ReasonCode::NotAuthorized).await;
    expect_refused(
        broker.addr,
        V5,
        Some("u"),
        Some("p"),
        ReasonCode::BadUserNameOrPassword,
    )
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn repeated_failures_are_refused_and_the_right_password_still_gets_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "passwd", &format!("{PBKDF2_LINE}\n"));
    let broker = broker_with(passwords(file)).await;
    let mut bystander = expect_accepted(
        broker.addr,
        V311,
        "bystander",
        Some("seven"),
        Some("battery staple"),
    )
    .await;
    for guess in ["a", "b", "c"] {
        expect_refused(
            broker.addr,
            V311,
            Some("seven"),
            Some(guess),
            ReasonCode::BadUserNameOrPassword,
        )
        .await;
        bystander.ping().await;
    }
    expect_accepted(
        broker.addr,
        V5,
        "late",
        Some("seven"),
        Some("battery staple"),
    )
    .await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Per-listener settings

#[tokio::test]
async fn each_listener_can_have_its_own_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "passwd", &format!("{PBKDF2_LINE}\n"));
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let broker = TestBroker::start_with(|c| {
        c.auth.allow_anonymous = Some(true);
        c.listeners = vec![
            ListenerConfig::tcp(any),
            ListenerConfig {
                auth: Some(passwords(file.clone())),
                ..ListenerConfig::tcp(any)
            },
        ];
    })
    .await;
    let (open, guarded) = (broker.addrs[0], broker.addrs[1]);
    let mut sub = expect_accepted(open, V311, "open-anon", None, None).await;
    expect_refused(guarded, V311, None, None, ReasonCode::NotAuthorized).await;
    let mut publisher = expect_accepted(
        guarded,
        V5,
        "guarded",
        Some("seven"),
        Some("battery staple"),
    )
    .await;
    sub.subscribe("across", QoS::AtMostOnce).await;
    publisher
        .publish("across", b"both ways", QoS::AtLeastOnce, 1)
        .await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"both ways");
    broker.stop().await;

    // Without an explicit allow_anonymous, configuring auth on any listener turns anonymous
    // clients away everywhere (mosquitto 2).
    let broker = TestBroker::start_with(|c| {
        c.listeners = vec![
            ListenerConfig::tcp(any),
            ListenerConfig {
                auth: Some(passwords(file.clone())),
                ..ListenerConfig::tcp(any)
            },
        ];
    })
    .await;
    expect_refused(broker.addrs[0], V311, None, None, ReasonCode::NotAuthorized).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Access control

const ACL: &str = "\
# anonymous clients
topic read public/#
pattern readwrite devices/%c/#

user admin
topic readwrite #

user alice
topic readwrite sensors/#
topic deny sensors/secret
topic write cmd/#
pattern read inbox/%u
";

async fn acl_broker(dir: &Path) -> TestBroker {
    let acl = write(dir, "acl", ACL);
    broker_with(AuthConfig {
        acl_file: Some(acl),
        ..AuthConfig::default()
    })
    .await
}

/// A client that may read everything, subscribed to `#`.
async fn watcher(broker: &TestBroker) -> RawClient {
    let mut admin = expect_accepted(broker.addr, V5, "watcher", Some("admin"), None).await;
    assert_eq!(
        admin.subscribe("#", QoS::AtLeastOnce).await,
        [ReasonCode::GrantedQoS1]
    );
    admin
}

/// The next message the client receives, as (topic, payload), acknowledging QoS 1.
async fn next_message(client: &mut RawClient) -> (String, Vec<u8>) {
    let publish = client.recv_publish().await;
    if let Some(id) = publish.packet_id {
        client.send(&Packet::PubAck(PubResponse::success(id))).await;
    }
    (publish.topic.to_string(), publish.payload.to_vec())
}

#[tokio::test]
async fn denied_publishes_are_dropped_and_v5_is_told_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = acl_broker(dir.path()).await;
    let mut watch = watcher(&broker).await;
    let mut alice = expect_accepted(broker.addr, V5, "alice5", Some("alice"), None).await;
    let mut alice3 = expect_accepted(broker.addr, V311, "alice3", Some("alice"), None).await;

    let publish =
        |topic: &str, qos, id| Packet::Publish(common::publish_packet(topic, b"x", qos, id));
    alice
        .send(&publish("forbidden/a", QoS::AtLeastOnce, 1))
        .await;
    match alice.recv().await {
        Packet::PubAck(ack) => assert_eq!(ack.reason, ReasonCode::NotAuthorized),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    alice
        .send(&publish("sensors/secret", QoS::ExactlyOnce, 2))
        .await;
    match alice.recv().await {
        Packet::PubRec(rec) => assert_eq!(rec.reason, ReasonCode::NotAuthorized),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    // 3.1.1 cannot be told: a normal acknowledgement, and the message goes nowhere.
    alice3
        .publish("forbidden/b", b"x", QoS::AtLeastOnce, 3)
        .await;
    alice3
        .publish("forbidden/c", b"x", QoS::AtMostOnce, 0)
        .await;
    // Allowed: published, and the first thing the watcher sees.
    alice.publish("sensors/t", b"ok", QoS::AtLeastOnce, 4).await;
    alice3.publish("cmd/go", b"ok3", QoS::AtMostOnce, 0).await;
    assert_eq!(
        next_message(&mut watch).await,
        ("sensors/t".into(), b"ok".to_vec())
    );
    assert_eq!(
        next_message(&mut watch).await,
        ("cmd/go".into(), b"ok3".to_vec())
    );
    assert_eq!(watch.recv_within(QUIET).await, None);
    broker.stop().await;
}

#[tokio::test]
async fn denied_subscriptions_get_0x87_or_0x80_and_receive_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = acl_broker(dir.path()).await;
    let mut alice = expect_accepted(broker.addr, V5, "alice5", Some("alice"), None).await;
    alice
        .send(&Packet::Subscribe(subscribe_packet(
            7,
            &[
                ("sensors/#", sub_opts(QoS::AtLeastOnce)),
                ("forbidden/#", sub_opts(QoS::AtLeastOnce)),
                ("sensors/secret", sub_opts(QoS::AtMostOnce)),
                ("#", sub_opts(QoS::AtMostOnce)),
                ("cmd/#", sub_opts(QoS::AtMostOnce)),
                ("inbox/alice", sub_opts(QoS::AtMostOnce)),
                ("inbox/bob", sub_opts(QoS::AtMostOnce)),
            ],
        )))
        .await;
    match alice.recv().await {
        Packet::SubAck(ack) => {
            assert_eq!(ack.packet_id, pid(7));
            let n = ReasonCode::NotAuthorized;
            assert_eq!(
                ack.reasons,
                [ReasonCode::GrantedQoS1, n, n, n, n, ReasonCode::Success, n]
            );
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut alice3 = expect_accepted(broker.addr, V311, "alice3", Some("alice"), None).await;
    assert_eq!(
        alice3.subscribe("forbidden/#", QoS::AtMostOnce).await,
        [ReasonCode::UnspecifiedError],
        "3.1.1 has only 0x80"
    );
    // A partial overlap is granted and filtered per message.
    assert_eq!(
        alice3.subscribe("sensors/#", QoS::AtMostOnce).await,
        [ReasonCode::Success]
    );
    let mut admin = expect_accepted(broker.addr, V5, "admin", Some("admin"), None).await;
    for topic in ["forbidden/x", "sensors/secret", "sensors/open"] {
        admin.publish(topic, b"m", QoS::AtLeastOnce, 1).await;
    }
    assert_eq!(next_message(&mut alice).await.0, "sensors/open");
    assert_eq!(next_message(&mut alice3).await.0, "sensors/open");
    assert_eq!(alice.recv_within(QUIET).await, None);
    broker.stop().await;
}

#[tokio::test]
async fn retained_messages_are_replayed_only_where_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = acl_broker(dir.path()).await;
    let mut admin = expect_accepted(broker.addr, V5, "admin", Some("admin"), None).await;
    for topic in ["sensors/secret", "sensors/r1", "public/news"] {
        admin
            .send(&Packet::Publish(common::flows::retained_packet(
                topic,
                b"kept",
                QoS::AtLeastOnce,
                1,
            )))
            .await;
        assert!(matches!(admin.recv().await, Packet::PubAck(_)));
    }
    let mut alice = expect_accepted(broker.addr, V5, "alice", Some("alice"), None).await;
    assert_eq!(
        alice.subscribe("sensors/#", QoS::AtMostOnce).await,
        [ReasonCode::Success]
    );
    let (topic, _) = next_message(&mut alice).await;
    assert_eq!(topic, "sensors/r1");
    assert_eq!(
        alice.recv_within(QUIET).await,
        None,
        "the secret is not replayed"
    );

    // An anonymous client reads public/# only, retained or not.
    let mut anon = expect_accepted(broker.addr, V311, "anon", None, None).await;
    assert_eq!(
        anon.subscribe("public/#", QoS::AtMostOnce).await,
        [ReasonCode::Success]
    );
    assert_eq!(next_message(&mut anon).await.0, "public/news");
    broker.stop().await;
}

#[tokio::test]
async fn wills_obey_the_write_acl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = acl_broker(dir.path()).await;
    let mut watch = watcher(&broker).await;
    for (id, topic) in [("w1", "forbidden/will"), ("w2", "sensors/will")] {
        let mut connect =
            connect_with_will(V311, id, will(topic, b"gone", QoS::AtLeastOnce, false));
        connect.username = Some("alice".into());
        let (client, ack) = RawClient::connect_with(broker.addr, connect).await;
        assert_eq!(ack.reason, ReasonCode::Success);
        drop(client); // abnormal close: the will is due
    }
    assert_eq!(next_message(&mut watch).await.0, "sensors/will");
    assert_eq!(
        watch.recv_within(QUIET).await,
        None,
        "the forbidden will never came"
    );
    broker.stop().await;
}

#[tokio::test]
async fn patterns_and_the_anonymous_section_apply_to_clients_without_a_section() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = acl_broker(dir.path()).await;
    let mut watch = watcher(&broker).await;
    let mut dev = expect_accepted(broker.addr, V5, "dev1", None, None).await;
    dev.send(&Packet::Publish(common::publish_packet(
        "devices/dev2/x",
        b"no",
        QoS::AtLeastOnce,
        1,
    )))
    .await;
    match dev.recv().await {
        Packet::PubAck(ack) => assert_eq!(ack.reason, ReasonCode::NotAuthorized),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    dev.send(&Packet::Publish(common::publish_packet(
        "public/x",
        b"no",
        QoS::AtLeastOnce,
        2,
    )))
    .await;
    match dev.recv().await {
        Packet::PubAck(ack) => assert_eq!(ack.reason, ReasonCode::NotAuthorized, "read only"),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    dev.publish("devices/dev1/status", b"up", QoS::AtLeastOnce, 3)
        .await;
    assert_eq!(
        next_message(&mut watch).await,
        ("devices/dev1/status".into(), b"up".to_vec())
    );
    // A username with no section of its own still gets the patterns, not the anonymous rules.
    let mut carol = expect_accepted(broker.addr, V5, "dev9", Some("carol"), None).await;
    assert_eq!(
        carol.subscribe("devices/dev9/#", QoS::AtMostOnce).await,
        [ReasonCode::Success]
    );
    assert_eq!(
        carol.subscribe("public/#", QoS::AtMostOnce).await,
        [ReasonCode::NotAuthorized]
    );
    broker.stop().await;
}

#[tokio::test]
async fn a_reloaded_acl_applies_to_connected_clients_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = acl_broker(dir.path()).await;
    let mut alice = expect_accepted(broker.addr, V5, "alice", Some("alice"), None).await;
    assert_eq!(
        alice.subscribe("news/#", QoS::AtMostOnce).await,
        [ReasonCode::NotAuthorized]
    );

    write(dir.path(), "acl", &format!("{ACL}topic read news/#\n"));
    broker.security.reload().expect("reload");
    assert_eq!(
        alice.subscribe("news/#", QoS::AtMostOnce).await,
        [ReasonCode::Success]
    );

    write(dir.path(), "acl", "topic sometimes news/#\n");
    assert!(
        broker.security.reload().is_err(),
        "a broken file is refused"
    );
    let mut admin = expect_accepted(broker.addr, V5, "admin", Some("admin"), None).await;
    admin
        .publish("news/today", b"still", QoS::AtLeastOnce, 1)
        .await;
    assert_eq!(
        next_message(&mut alice).await.0,
        "news/today",
        "old rules stay in force"
    );
    broker.stop().await;
}
