//! One mosquitto.conf, two brokers: the real mosquitto and `starling -c mosquitto.conf` each run
//! from the same file (only the port differs) and must answer the same client actions the same
//! way: the right password in, a wrong one and an anonymous client out, an ACL-denied publish
//! dropped and an allowed one delivered.
//!
//! Needs the mosquitto broker (apt package `mosquitto`); without it the test prints SKIPPED,
//! or fails when `STARLING_REQUIRE_INTEROP=1`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use common::tools::{BrokerProcess, Mosquitto, free_port, running_as_root};
use common::{RawClient, connect_packet};
use starling::codec::{ProtocolVersion, QoS, ReasonCode};

const V311: ProtocolVersion = ProtocolVersion::V311;

/// What one broker did with the scenario's client actions.
#[derive(Debug, PartialEq)]
struct Outcome {
    right_password_accepted: bool,
    wrong_password_accepted: bool,
    anonymous_accepted: bool,
    /// SUBACK codes for `open/#` and `closed/#`, which alice may both read.
    granted: Vec<ReasonCode>,
    /// The first message the subscriber receives after `closed/x` (denied) then `open/x`
    /// (allowed) were published on one connection: `open/x` shows the denied one was dropped.
    first_delivered: String,
}

/// Connects as `user` (3.1.1, clean session); whether the broker accepted, and the client.
async fn connect(
    addr: SocketAddr,
    client_id: &str,
    user: Option<&str>,
    password: &str,
) -> (bool, RawClient) {
    let mut connect = connect_packet(V311, client_id, true);
    connect.username = user.map(str::to_owned);
    connect.password = user.map(|_| Bytes::copy_from_slice(password.as_bytes()));
    let (client, ack) = RawClient::connect_with(addr, connect).await;
    (ack.reason == ReasonCode::Success, client)
}

async fn scenario(addr: SocketAddr) -> Outcome {
    let (right_password_accepted, mut subscriber) =
        connect(addr, "sub", Some("alice"), "secret").await;
    let (wrong_password_accepted, _) = connect(addr, "wrong", Some("alice"), "guess").await;
    let (anonymous_accepted, _) = connect(addr, "anon", None, "").await;
    let mut granted = subscriber.subscribe("open/#", QoS::AtMostOnce).await;
    granted.extend(subscriber.subscribe("closed/#", QoS::AtMostOnce).await);
    let (_, mut publisher) = connect(addr, "pub", Some("alice"), "secret").await;
    publisher
        .publish("closed/x", b"denied", QoS::AtMostOnce, 0)
        .await;
    publisher
        .publish("open/x", b"allowed", QoS::AtMostOnce, 0)
        .await;
    let first = subscriber.recv_publish().await;
    Outcome {
        right_password_accepted,
        wrong_password_accepted,
        anonymous_accepted,
        granted,
        first_delivered: first.topic.to_string(),
    }
}

/// The shared mosquitto.conf with `port` filled in.
fn write_conf(dir: &Path, name: &str, port: u16) -> std::path::PathBuf {
    let conf = format!(
        "# The same file for mosquitto and Starling; only the port changes.\n\
         per_listener_settings false\n\
         listener {port} 127.0.0.1\n\
         protocol mqtt\n\
         max_connections 100\n\
         password_file {pw}\n\
         acl_file {acl}\n\
         max_inflight_messages 10\n\
         max_queued_messages 100\n\
         persistent_client_expiration 1d\n\
         log_type error\n\
         log_type information\n\
         connection_messages true\n\
         {user}",
        pw = dir.join("passwd").display(),
        acl = dir.join("acl").display(),
        // mosquitto run as root would drop to user `mosquitto`, unable to read our files.
        user = if running_as_root() { "user root\n" } else { "" },
    );
    let path = dir.join(name);
    std::fs::write(&path, conf).expect("write mosquitto.conf");
    path
}

#[tokio::test]
async fn one_mosquitto_conf_gives_the_same_results_on_mosquitto_and_starling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["passwd", "-c", "-b"])
        .arg(dir.path().join("passwd"))
        .args(["alice", "secret"])
        .stdin(Stdio::null())
        .status()
        .expect("run starling passwd");
    assert!(status.success(), "starling passwd");
    std::fs::write(
        dir.path().join("acl"),
        "user alice\ntopic readwrite open/#\ntopic read closed/#\n",
    )
    .expect("write acl");

    let mosquitto_port = free_port();
    let mosquitto_conf = write_conf(dir.path(), "mosquitto.conf", mosquitto_port);
    let mosquitto_addr = SocketAddr::from(([127, 0, 0, 1], mosquitto_port));
    let Some(mosquitto) = Mosquitto::start(&mosquitto_conf, mosquitto_addr) else {
        return;
    };
    let by_mosquitto = scenario(mosquitto_addr).await;
    drop(mosquitto);

    let starling_conf = write_conf(dir.path(), "starling.conf", free_port());
    let conf_arg = starling_conf.to_str().expect("utf-8 path");
    let starling = BrokerProcess::start_with(&["-c", conf_arg], 1);
    let by_starling = scenario(starling.addr).await;
    starling.wait_for_log("a warning for connection_messages", |line| {
        line.contains("WARN") && line.contains("`connection_messages`")
    });

    assert_eq!(by_starling, by_mosquitto);
    // And what both did is what the file asks for.
    assert_eq!(
        by_starling,
        Outcome {
            right_password_accepted: true,
            wrong_password_accepted: false,
            anonymous_accepted: false,
            granted: vec![ReasonCode::Success, ReasonCode::Success],
            first_delivered: "open/x".to_owned(),
        }
    );
}
