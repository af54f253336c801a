//! SIGHUP on the real binary: the config file is read again, the log level and limits change while
//! clients stay connected, what cannot change is logged as such, and a broken file changes nothing.
//! Also the JSON log format, whose lines log shippers parse.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::http::get;
use common::{RawClient, publish_packet};
use starling::codec::{Packet, ProtocolVersion, QoS};

const BIN: &str = env!("CARGO_BIN_EXE_starling");

/// The broker binary with its output lines collected by a thread; killed when dropped.
struct Broker {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    mqtt: SocketAddr,
    http: SocketAddr,
}

impl Broker {
    fn start(config: &Path) -> Broker {
        let mut child = Command::new(BIN)
            .arg("-c")
            .arg(config)
            .env_remove("STARLING_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn starling");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut broker = Broker {
            child,
            lines,
            seen: Vec::new(),
            mqtt: "0.0.0.0:0".parse().expect("addr"),
            http: "0.0.0.0:0".parse().expect("addr"),
        };
        let address = |line: &str| {
            line.trim()
                .trim_end_matches('/')
                .rsplit(['/', ' '])
                .next()
                .and_then(|a| a.parse().ok())
        };
        let line = broker.wait_for("the MQTT address", |l| l.contains(" listening on "));
        broker.mqtt = address(&line).expect("MQTT address");
        let line = broker.wait_for("the HTTP address", |l| l.contains(" HTTP on http://"));
        broker.http = address(&line).expect("HTTP address");
        broker
    }

    /// The next output line matching `want`, failing after 10 s.
    fn wait_for(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {what}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CONFIG: &str = r#"
sys_interval = 10

[[listener]]
bind = "127.0.0.1:0"

[http]
bind = "127.0.0.1:0"

[log]
level = "info"

[limits]
max_queued_messages = 1000
"#;

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_log_level_and_limits_and_keeps_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("starling.toml");
    std::fs::write(&path, CONFIG).expect("write config");
    let mut broker = tokio::task::block_in_place(|| Broker::start(&path));
    let (mut client, _) =
        RawClient::connect(broker.mqtt, ProtocolVersion::V311, "stays", true).await;
    client.subscribe("t", QoS::AtMostOnce).await;

    let changed = CONFIG
        .replace("max_queued_messages = 1000", "max_queued_messages = 5")
        .replace(r#"level = "info""#, r#"level = "debug""#)
        .replace("sys_interval = 10", "sys_interval = 3");
    std::fs::write(&path, changed).expect("rewrite config");
    broker.hangup();
    tokio::task::block_in_place(|| {
        broker.wait_for("the reload", |l| l.contains("Reloading config."));
        broker.wait_for("the new log level", |l| {
            l.contains(r#"Log level is now "debug"."#)
        });
        broker.wait_for("the limits", |l| {
            l.contains("Limits reloaded: max_queued_messages = 5")
        });
        broker.wait_for("the security files", |l| {
            l.contains("Security files reloaded.")
        });
        broker.wait_for("what needs a restart", |l| {
            l.contains("sys_interval changed in the config file: it cannot be reloaded")
        });
    });
    let info = get(broker.http, "/api/broker", None).await.json();
    assert_eq!(info["limits"]["max_queued_messages"], 5);
    assert_eq!(info["sys_interval"], 10, "still the running value");

    // The client connected before the reload is still served; debug lines now appear.
    client.ping().await;
    // Sent raw: the client is its own subscriber, so its copy and a PINGRESP (what `publish`
    // waits for at QoS 0) may come back in either order.
    client
        .send(&Packet::Publish(publish_packet(
            "t",
            b"after",
            QoS::AtMostOnce,
            0,
        )))
        .await;
    assert_eq!(&client.recv_publish().await.payload[..], b"after");
    let (_late, _) = RawClient::connect(broker.mqtt, ProtocolVersion::V311, "late", true).await;
    tokio::task::block_in_place(|| {
        broker.wait_for("a debug line", |l| {
            l.contains("DEBUG") && l.contains("new connection")
        });
    });

    // A file that does not parse changes nothing.
    std::fs::write(&path, "[limits\nbroken").expect("break config");
    broker.hangup();
    tokio::task::block_in_place(|| {
        broker.wait_for("the refusal", |l| {
            l.contains("Reload failed, keeping the running configuration")
        });
    });
    let info = get(broker.http, "/api/broker", None).await.json();
    assert_eq!(info["limits"]["max_queued_messages"], 5);
    client.ping().await;
}

#[test]
fn an_http_listener_beyond_loopback_without_a_token_is_refused() {
    let refused = Command::new(BIN)
        .args(["--http", "0.0.0.0:0", "--check-config"])
        .output()
        .expect("run starling");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("set http.token"), "{stderr}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("starling.toml");
    std::fs::write(&path, "[http]\nbind = \"0.0.0.0:0\"\ntoken = \"t\"\n").expect("write");
    let accepted = Command::new(BIN)
        .arg("-c")
        .arg(&path)
        .arg("--check-config")
        .output()
        .expect("run starling");
    assert!(accepted.status.success(), "{accepted:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("starling.toml");
    // At debug level every line is also inside its connection's span.
    let config = CONFIG.replace(r#"level = "info""#, "level = \"debug\"\nformat = \"json\"");
    std::fs::write(&path, config).expect("write config");
    let mut broker = tokio::task::block_in_place(|| Broker::start(&path));
    let (client, _) =
        RawClient::connect(broker.mqtt, ProtocolVersion::V5, "json-client", true).await;
    client.disconnect().await;
    let line = tokio::task::block_in_place(|| {
        broker.wait_for("the disconnect line", |l| {
            l.contains("Client json-client disconnected.")
        })
    });
    let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON object");
    assert_eq!(value["level"], "INFO");
    assert_eq!(
        value["fields"]["message"],
        "Client json-client disconnected."
    );
    assert_eq!(
        value["span"]["client"], "json-client",
        "the connection's span"
    );
    assert!(
        value["span"]["peer"]
            .as_str()
            .is_some_and(|peer| peer.starts_with("127.0.0.1:")),
        "{value}"
    );
}
