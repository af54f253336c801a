//! The HTTP admin API, every endpoint, through real HTTP requests and real MQTT clients: the
//! bearer token, health and readiness, broker info, clients (connected and offline, with queue
//! depth), one client's subscriptions, kicking, retained messages (listed, deleted, and deleted
//! from the store too) and publishing.

mod common;

use std::sync::Arc;

use common::flows::{retained_packet, sub_opts, subscribe_packet};
use common::http::{HttpResponse, get, request, request_with};
use common::{RawClient, TestBroker};
use serde_json::Value;
use starling::codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use starling::config::Config;
use starling::storage::{MemoryStore, Store};

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const TOKEN: &str = "s3cret-token";

fn with_http(c: &mut Config) {
    c.http.bind = Some("127.0.0.1:0".parse().expect("addr"));
    c.http.token = Some(TOKEN.to_owned());
    c.sys_interval = 0;
}

async fn api(broker: &TestBroker, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
    let http = broker.http.expect("HTTP listener");
    request(http, method, path, Some(TOKEN), body).await
}

async fn api_json(broker: &TestBroker, method: &str, path: &str, status: u16) -> Value {
    let response = api(broker, method, path, None).await;
    assert_eq!(
        response.status, status,
        "{method} {path}: {}",
        response.body
    );
    response.json()
}

#[tokio::test]
async fn every_endpoint_but_the_probes_and_the_page_needs_the_token() {
    let broker = TestBroker::start_with(with_http).await;
    let http = broker.http.expect("HTTP listener");
    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/api/broker"),
        ("GET", "/api/dashboard"),
        ("GET", "/api/clients"),
        ("GET", "/api/clients/x"),
        ("GET", "/api/clients/x/subscriptions"),
        ("POST", "/api/clients/x/kick"),
        ("GET", "/api/retained"),
        ("DELETE", "/api/retained?filter=%23"),
        ("POST", "/api/publish"),
        ("GET", "/no/such/page"),
    ] {
        for token in [
            None,
            Some("wrong"),
            Some("s3cret-toke"),
            Some("s3cret-token-"),
        ] {
            let response = request(http, method, path, token, None).await;
            assert_eq!(response.status, 401, "{method} {path} with {token:?}");
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
            assert!(response.json()["error"].is_string());
        }
    }
    let health = get(http, "/healthz", None).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = get(http, "/readyz", None).await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    let page = get(http, "/", None).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.body.contains(r#"id="connections""#));
    for asset in ["/dashboard.js", "/dashboard.css"] {
        assert_eq!(get(http, asset, None).await.status, 200, "{asset}");
    }
    // With the token, an unknown path is a 404 and the metrics render.
    assert_eq!(api(&broker, "GET", "/no/such/page", None).await.status, 404);
    let metrics = api(&broker, "GET", "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("mqtt_connections_current"));
    broker.stop().await;
}

#[tokio::test]
async fn requests_a_page_from_another_site_could_send_are_refused() {
    // With a token: a state-changing request carrying a foreign Origin.
    let broker = TestBroker::start_with(with_http).await;
    let http = broker.http.expect("HTTP listener");
    let (mut client, _) = RawClient::connect(broker.addr, V311, "victim", true).await;
    let bearer = format!("Bearer {TOKEN}");
    for origin in ["http://evil.example", "null"] {
        let headers = [("Authorization", bearer.as_str()), ("Origin", origin)];
        let response = request_with(http, "POST", "/api/clients/victim/kick", &headers, None).await;
        assert_eq!(response.status, 403, "{origin}: {}", response.body);
    }
    let same = format!("http://{http}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Origin", same.as_str()),
    ];
    let response = request_with(http, "GET", "/api/clients/victim", &headers, None).await;
    assert_eq!(response.status, 200, "{}", response.body);
    client.ping().await; // not kicked
    broker.stop().await;

    // Without a token (loopback only): a Host that is not loopback, as after DNS rebinding.
    let open = TestBroker::start_with(|c| {
        with_http(c);
        c.http.token = None;
    })
    .await;
    let http = open.http.expect("HTTP listener");
    let rebound = [("Host", "evil.example:8080")];
    let response = request_with(http, "GET", "/api/broker", &rebound, None).await;
    assert_eq!(response.status, 403, "{}", response.body);
    assert_eq!(
        get(http, "/api/broker", None).await.status,
        200,
        "a loopback Host is fine"
    );
    let localhost = [("Host", "localhost")];
    assert_eq!(
        request_with(http, "GET", "/metrics", &localhost, None)
            .await
            .status,
        200
    );
    open.stop().await;
}

#[tokio::test]
async fn broker_info_and_clients_with_queue_depth() {
    let broker = TestBroker::start_with(|c| {
        with_http(c);
        c.limits.max_queued_messages = 50;
    })
    .await;
    let info = api_json(&broker, "GET", "/api/broker", 200).await;
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["listeners"][0], broker.addr.to_string());
    assert_eq!(info["limits"]["max_queued_messages"], 50);
    assert_eq!(info["store_healthy"], true);

    // bob: offline, persistent, two messages waiting. alice: online over 5.0.
    let (mut bob, _) = RawClient::connect(broker.addr, V311, "bob", false).await;
    bob.subscribe("to/bob", QoS::AtLeastOnce).await;
    bob.disconnect().await;
    let (mut alice, _) = RawClient::connect(broker.addr, V5, "alice", true).await;
    alice.publish("to/bob", b"one", QoS::AtLeastOnce, 1).await;
    alice.publish("to/bob", b"three", QoS::AtLeastOnce, 2).await;
    let (dev, _) = RawClient::connect(broker.addr, V311, "dev/1", true).await;

    let list = api_json(&broker, "GET", "/api/clients", 200).await;
    assert_eq!(list["total"], 3);
    let ids: Vec<&str> = list["clients"]
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["client_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["alice", "bob", "dev/1"], "sorted by client id");
    let limited = api_json(&broker, "GET", "/api/clients?limit=1", 200).await;
    assert_eq!(limited["clients"].as_array().map(Vec::len), Some(1));
    assert_eq!(limited["total"], 3);

    let bob_info = api_json(&broker, "GET", "/api/clients/bob", 200).await;
    assert_eq!(bob_info["online"], false);
    assert_eq!(bob_info["queued"], 2);
    assert_eq!(bob_info["queued_bytes"], 8);
    assert!(bob_info.get("connection").is_none(), "{bob_info}");
    let alice_info = api_json(&broker, "GET", "/api/clients/alice", 200).await;
    assert_eq!(alice_info["online"], true);
    assert_eq!(alice_info["queued"], 0);
    assert_eq!(alice_info["connection"]["protocol"], "5.0");
    assert_eq!(alice_info["connection"]["keep_alive"], 60);
    let peer = alice.stream.local_addr().expect("local addr").to_string();
    assert_eq!(alice_info["connection"]["peer"], peer);
    let dev_info = api_json(&broker, "GET", "/api/clients/dev%2F1", 200).await;
    assert_eq!(dev_info["client_id"], "dev/1");
    let missing = api_json(&broker, "GET", "/api/clients/nobody", 404).await;
    assert!(
        missing["error"]
            .as_str()
            .is_some_and(|e| e.contains("nobody"))
    );
    drop(dev);
    broker.stop().await;
}

#[tokio::test]
async fn a_clients_subscriptions_are_listed_and_a_kick_disconnects_it() {
    let broker = TestBroker::start_with(with_http).await;
    let (mut alice, _) = RawClient::connect(broker.addr, V5, "alice", true).await;
    let ack = alice
        .subscribe_with(subscribe_packet(
            1,
            &[
                ("a/#", sub_opts(QoS::AtLeastOnce)),
                ("$share/g/jobs/+", sub_opts(QoS::AtMostOnce)),
                ("exact/topic", sub_opts(QoS::ExactlyOnce)),
            ],
        ))
        .await;
    assert_eq!(ack.reasons.len(), 3);
    let (mut other, _) = RawClient::connect(broker.addr, V311, "other", true).await;
    other.subscribe("a/#", QoS::AtMostOnce).await;

    let subs = api_json(&broker, "GET", "/api/clients/alice/subscriptions", 200).await;
    let listed: Vec<(&str, u64)> = subs["subscriptions"]
        .as_array()
        .expect("array")
        .iter()
        .map(|s| {
            (
                s["filter"].as_str().expect("filter"),
                s["qos"].as_u64().expect("qos"),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [("$share/g/jobs/+", 0), ("a/#", 1), ("exact/topic", 2)]
    );

    let kicked = api_json(&broker, "POST", "/api/clients/alice/kick", 202).await;
    assert_eq!(kicked["kicked"], true);
    let last = alice.recv_until_closed().await;
    match last.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::AdministrativeAction),
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
    // The session ended with the connection (clean start): nothing left to kick.
    common::flows::eventually("alice gone", || broker.broker.session("alice").is_none()).await;
    api_json(&broker, "POST", "/api/clients/alice/kick", 404).await;
    // An offline session cannot be kicked.
    let (bob, _) = RawClient::connect(broker.addr, V311, "bob", false).await;
    bob.disconnect().await;
    let conflict = api_json(&broker, "POST", "/api/clients/bob/kick", 409).await;
    assert!(
        conflict["error"]
            .as_str()
            .is_some_and(|e| e.contains("not connected"))
    );
    // The other client was not affected.
    other.ping().await;
    let dashboard = api_json(&broker, "GET", "/api/dashboard", 200).await;
    let reasons: Vec<&str> = dashboard["recent_disconnects"]
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["reason"].as_str().expect("reason"))
        .collect();
    assert_eq!(
        reasons,
        ["client_disconnect", "administrative"],
        "newest first"
    );
    broker.stop().await;
}

#[tokio::test]
async fn retained_messages_are_listed_deleted_and_deleted_from_the_store() {
    let store = Arc::new(MemoryStore::new());
    let start = |store: &Arc<MemoryStore>| {
        TestBroker::start_with_store(
            |c| {
                with_http(c);
                c.data_dir = None;
            },
            Some(store.clone() as Arc<dyn Store>),
        )
    };
    let broker = start(&store).await;
    let (mut client, _) = RawClient::connect(broker.addr, V311, "retainer", true).await;
    for (id, (topic, payload)) in [
        ("r/1", &b"one"[..]),
        ("r/2", &[0xff, 0x00, 0xfe][..]),
        ("other/3", &b"three"[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let id = u16::try_from(id + 1).expect("small");
        client
            .publish_and_wait(retained_packet(topic, payload, QoS::AtLeastOnce, id))
            .await;
    }

    let all = api_json(&broker, "GET", "/api/retained", 200).await;
    assert_eq!(all["filter"], "#");
    assert_eq!(all["total"], 3);
    let listed = api_json(&broker, "GET", "/api/retained?filter=r%2F%2B", 200).await;
    assert_eq!(listed["total"], 2);
    assert_eq!(listed["messages"][0]["topic"], "r/1");
    assert_eq!(listed["messages"][0]["payload"], "one");
    assert_eq!(listed["messages"][1]["topic"], "r/2");
    assert_eq!(listed["messages"][1]["payload_base64"], "/wD+");
    assert_eq!(listed["messages"][1]["bytes"], 3);
    let bad = api_json(&broker, "GET", "/api/retained?filter=a%2F%23%2Fb", 400).await;
    assert!(bad["error"].is_string());

    // A subscriber to r/# sees no empty "clear" message: deleting delivers nothing.
    let (mut watcher, _) = RawClient::connect(broker.addr, V311, "watcher", true).await;
    watcher.subscribe("r/#", QoS::AtMostOnce).await;
    watcher.recv_publishes(2).await; // the retained replay
    let deleted = api_json(&broker, "DELETE", "/api/retained?filter=r%2F%23", 200).await;
    assert_eq!(deleted["deleted"], 2);
    watcher.assert_quiet().await;
    let left = api_json(&broker, "GET", "/api/retained", 200).await;
    assert_eq!(left["total"], 1);
    assert_eq!(left["messages"][0]["topic"], "other/3");
    broker.stop().await;

    // The deletion reached the store: a broker restarted from it has only other/3.
    let restarted = start(&store).await;
    assert_eq!(restarted.broker.retained_count(), 1);
    let (mut late, _) = RawClient::connect(restarted.addr, V311, "late", true).await;
    late.subscribe("#", QoS::AtMostOnce).await;
    assert_eq!(late.recv_publish().await.topic.as_str(), "other/3");
    late.assert_quiet().await;
    restarted.stop().await;
}

#[tokio::test]
async fn publishing_through_the_api_reaches_subscribers_and_the_retained_store() {
    let broker = TestBroker::start_with(with_http).await;
    let (mut sub, _) = RawClient::connect(broker.addr, V311, "sub", true).await;
    sub.subscribe("api/#", QoS::AtLeastOnce).await;

    let body = r#"{"topic": "api/text", "payload": "hello", "qos": 1}"#;
    let response = api(&broker, "POST", "/api/publish", Some(body)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["bytes"], 5);
    let got = sub.recv_publish_acked().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("api/text", &b"hello"[..])
    );
    assert_eq!(got.qos, QoS::AtLeastOnce);

    let body = r#"{"topic": "api/bin", "payload_base64": "AAEC", "retain": true}"#;
    assert_eq!(
        api(&broker, "POST", "/api/publish", Some(body))
            .await
            .status,
        200
    );
    let got = sub.recv_publish().await;
    assert_eq!(&got.payload[..], [0, 1, 2]);
    assert_eq!(got.qos, QoS::AtMostOnce);
    let retained = api_json(&broker, "GET", "/api/retained?filter=api%2Fbin", 200).await;
    assert_eq!(retained["total"], 1);

    for bad in [
        r#"{"topic": "api/+", "payload": "x"}"#,
        r#"{"topic": "api/x", "qos": 3}"#,
        r#"{"topic": "api/x", "payload": "x", "payload_base64": "eA=="}"#,
        r#"{"topic": "api/x", "payload_base64": "%%%"}"#,
        r#"{"topic": "api/x", "colour": "red"}"#,
        "not json",
    ] {
        let response = api(&broker, "POST", "/api/publish", Some(bad)).await;
        assert_eq!(response.status, 400, "{bad}: {}", response.body);
        assert!(response.json()["error"].is_string(), "{bad}");
    }
    sub.assert_quiet().await;
    broker.stop().await;
}
