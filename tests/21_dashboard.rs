//! The live dashboard in a real browser: headless Chromium opens it (with the bearer token in the
//! page's `#token=` fragment) while clients publish, and the rendered DOM must show the connection
//! count and the message rate, and show them change when the workload changes. A screenshot is
//! saved in the test's temporary directory (its path is printed).
//!
//! Chromium is an external tool: without it the test prints a SKIPPED line and passes, unless
//! `STARLING_REQUIRE_INTEROP=1`.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::http::get;
use common::tools::{CHROMIUM_HEADLESS, chromium};
use common::{RawClient, TestBroker};
use starling::codec::{ProtocolVersion, QoS};

const V311: ProtocolVersion = ProtocolVersion::V311;
const TOKEN: &str = "dash-token";

/// How long one Chromium run may take before it is killed.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs headless Chromium on `url` with `extra` flags and returns its standard output. Each run
/// gets a fresh profile in `dir`.
fn browse(chromium: &str, dir: &Path, url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir_in(dir).expect("profile dir");
    let mut child = Command::new(chromium)
        .args(CHROMIUM_HEADLESS)
        // Virtual time runs the page's one-second polling a few times, fast; fetches still go
        // to the broker for real.
        .arg("--virtual-time-budget=4000")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = std::time::Instant::now() + BROWSER_TIMEOUT;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("reader")
}

/// The text inside the element with `id` in a dumped DOM.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"));
    let rest = &dom[start..];
    let open = rest.find('>').expect("tag end") + 1;
    let close = rest[open..].find('<').expect("next tag") + open;
    &rest[open..close]
}

fn attribute<'a>(dom: &'a str, id: &str, name: &str) -> &'a str {
    let start = dom.find(&format!("id=\"{id}\"")).expect("element");
    let rest = &dom[start..];
    let end = rest.find('>').expect("tag end");
    let marker = format!("{name}=\"");
    let from = rest[..end].find(&marker).expect("attribute") + marker.len();
    let to = rest[from..].find('"').expect("quote") + from;
    &rest[from..to]
}

/// Waits (bounded) until the dashboard's own JSON agrees with `want`, so the browser is shown a
/// settled state.
async fn until_dashboard(
    broker: &TestBroker,
    what: &str,
    want: impl Fn(&serde_json::Value) -> bool,
) {
    let http = broker.http.expect("HTTP listener");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let view = get(http, "/api/dashboard", Some(TOKEN)).await.json();
        if want(&view) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dashboard never showed {what}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_connections_and_rates_changing_in_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start_with(|c| {
        c.http.bind = Some("127.0.0.1:0".parse().expect("addr"));
        c.http.token = Some(TOKEN.to_owned());
        c.sys_interval = 0;
    })
    .await;
    let url = format!(
        "http://{}/#token={TOKEN}",
        broker.http.expect("HTTP listener")
    );

    // Phase 1: a subscriber and a publisher sending about 200 messages a second.
    let (mut sub, _) = RawClient::connect(broker.addr, V311, "dash-sub", true).await;
    sub.subscribe("load/#", QoS::AtMostOnce).await;
    let running = Arc::new(AtomicBool::new(true));
    let (mut publisher, _) = RawClient::connect(broker.addr, V311, "dash-pub", true).await;
    let workload = tokio::spawn({
        let running = running.clone();
        async move {
            // Bounded: at most 60 s of publishing even if the test stalls.
            for _ in 0..12_000 {
                if !running.load(Ordering::Relaxed) {
                    break;
                }
                publisher
                    .publish("load/sensor", b"21.5", QoS::AtMostOnce, 0)
                    .await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            publisher
        }
    });
    let drain = tokio::spawn(async move {
        while sub.recv_within(Duration::from_secs(3)).await.is_some() {}
        sub
    });
    until_dashboard(&broker, "messages flowing", |v| {
        v["connections"] == 2 && v["rate_in"].as_f64().is_some_and(|r| r > 10.0)
    })
    .await;
    until_dashboard(&broker, "a top topic", |v| {
        v["top_topics"][0]["topic"] == "load/sensor"
    })
    .await;

    let first = {
        let url = url.clone();
        tokio::task::spawn_blocking({
            let dir = dir.path().to_owned();
            move || browse(chromium, &dir, &url, &["--dump-dom"])
        })
        .await
        .expect("browser")
    };
    let shot = dir.path().join("dashboard.png");
    {
        let url = url.clone();
        let shot = shot.clone();
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            browse(
                chromium,
                &dir,
                &url,
                &[
                    &format!("--screenshot={}", shot.display()),
                    "--window-size=1280,900",
                ],
            )
        })
        .await
        .expect("browser");
    }
    assert_eq!(
        text_of(&first, "status"),
        "live",
        "the script ran and reached the API"
    );
    assert_eq!(text_of(&first, "connections"), "2");
    let rate: f64 = text_of(&first, "rate-in").parse().expect("a rate");
    assert!(rate > 10.0, "messages in per second: {rate}");
    assert!(text_of(&first, "updates").parse::<u32>().expect("a count") >= 1);
    assert!(
        first.contains("<td>load/sensor</td>"),
        "top topics:\n{first}"
    );
    let points = attribute(&first, "line-in", "points");
    assert!(
        points.split(' ').count() >= 2,
        "the chart has points: {points:?}"
    );

    // Phase 2: the publisher stops, three more clients connect, one leaves.
    running.store(false, Ordering::Relaxed);
    let publisher = workload.await.expect("workload");
    let mut idle = Vec::new();
    for n in 0..3 {
        idle.push(
            RawClient::connect(broker.addr, V311, &format!("idle-{n}"), true)
                .await
                .0,
        );
    }
    publisher.disconnect().await;
    until_dashboard(&broker, "the new state", |v| {
        v["connections"] == 4 && v["rate_in"].as_f64() == Some(0.0)
    })
    .await;
    let second = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || browse(chromium, &dir, &url, &["--dump-dom"])
    })
    .await
    .expect("browser");
    assert_eq!(text_of(&second, "connections"), "4", "changed from 2");
    assert_eq!(text_of(&second, "rate-in"), "0.0", "changed from {rate}");
    assert!(
        second.contains("<td>dash-pub</td>"),
        "recent disconnects:\n{second}"
    );

    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 10_000,
        "a rendered page, not a blank one: {} bytes",
        png.len()
    );
    eprintln!(
        "dashboard screenshot: {} ({} bytes)",
        shot.display(),
        png.len()
    );
    // Keep the screenshot when asked, for a person to look at.
    if let Ok(keep) = std::env::var("STARLING_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, &keep).expect("copy screenshot");
    }
    drop(drain);
    drop(idle);
    broker.stop().await;
}
