//! The `starling` binary as an operator runs it: flags, config checks, the data-directory lock, and
//! shutdown on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::RawClient;
use starling::codec::{Packet, ProtocolVersion, ReasonCode};

const BIN: &str = env!("CARGO_BIN_EXE_starling");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run starling")
}

/// A broker child process, killed when dropped (also when a test fails).
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    fn start(args: &[&str]) -> Broker {
        let mut child = Command::new(BIN)
            .args(["-l", "127.0.0.1:0", "--log-level", "warn"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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

    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "broker did not exit in {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn print_config_shows_the_effective_configuration_as_toml() {
    let out = run(&[
        "-l",
        "127.0.0.1:2883",
        "-l",
        "127.0.0.2:2884",
        "--print-config",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let config = starling::Config::from_toml(&text).expect("printed config parses");
    let binds: Vec<String> = config
        .listeners
        .iter()
        .map(|l| l.bind.to_string())
        .collect();
    assert_eq!(binds, vec!["127.0.0.1:2883", "127.0.0.2:2884"]);
    assert_eq!(config.limits, starling::config::Limits::default());
}

#[test]
fn check_config_accepts_the_example_file_and_names_the_problem_in_a_bad_one() {
    let good = run(&[
        "-c",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/starling.toml"),
        "--check-config",
    ]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nmax_inflight = 5\n").expect("write");
    let out = run(&["-c", bad.to_str().expect("path"), "--check-config"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("max_inflight"),
        "{stderr}"
    );
}

#[test]
fn a_second_broker_cannot_use_a_locked_data_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("path");
    let _first = Broker::start(&["--data-dir", data]);
    let out = run(&["-l", "127.0.0.1:0", "--data-dir", data]);
    assert!(
        !out.status.success(),
        "the second broker must refuse to start"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another broker"), "{stderr}");
}

#[tokio::test]
async fn sigterm_sends_v5_clients_server_shutting_down_and_exits_cleanly() {
    let mut broker = Broker::start(&[]);
    let (mut v5, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "v5-client", true).await;
    let (mut v3, _) =
        RawClient::connect(broker.addr, ProtocolVersion::V311, "v3-client", true).await;
    broker.terminate();
    match v5.recv_until_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::ServerShuttingDown),
        other => panic!("expected DISCONNECT 0x8B then close, got {other:?}"),
    }
    assert!(
        v3.recv_until_closed().await.is_empty(),
        "3.1.1 has no server DISCONNECT"
    );
    let status = broker.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
}
