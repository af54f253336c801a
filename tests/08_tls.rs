//! MQTT over TLS: TLS 1.2 and 1.3 with rustls and rumqttc clients, mutual TLS (a certificate
//! from the CA accepted; none, another CA's and an expired one refused), the certificate identity
//! as username, mosquitto_pub/mosquitto_sub with `--cafile --cert --key`, Paho over TLS, and
//! certificates reloaded on SIGHUP without dropping connections.
//!
//! Certificates are made per test with rcgen in a temp dir (`common::pki`).

mod common;

use std::path::Path;
use std::sync::Arc;

use common::flows::{V4Client, V5Client};
use common::pki::{CLIENT_CN, CertFiles, TestPki, client_config, tls_connect};
use common::tools::{
    BrokerProcess, Tool, client_id, mosquitto_available, paho_available, paho_scenario, strings,
};
use common::{RECV_TIMEOUT, RawClient, TestBroker, connect_packet};
use rustls::ClientConfig;
use starling::codec::{self, ConnAck, DecodeContext, Packet, ProtocolVersion, QoS, ReasonCode};
use starling::config::{ListenerConfig, TlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V311: ProtocolVersion = ProtocolVersion::V311;

/// A broker with one TLS listener configured by `tls`.
async fn tls_broker(tls: TlsConfig) -> TestBroker {
    TestBroker::start_with(|c| {
        c.listeners = vec![ListenerConfig {
            tls: Some(tls),
            ..ListenerConfig::tcp("127.0.0.1:0".parse().expect("addr"))
        }];
    })
    .await
}

/// Connects over TLS with `config` and sends CONNECT: `Ok` with the CONNACK, or `Err` saying
/// how the broker refused (failed handshake, alert, or closed without CONNACK).
async fn try_mqtt(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
    client: &str,
) -> Result<ConnAck, String> {
    let mut tls = tls_connect(addr, config)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let connect = Packet::Connect(Box::new(connect_packet(V311, client, true)));
    let bytes = codec::encode_to_bytes(&connect, V311).expect("encode");
    // With TLS 1.3 the client's handshake ends before the server has checked its certificate:
    // a refusal shows up as an alert on the first read or write.
    if let Err(e) = tls.write_all(&bytes).await {
        return Err(format!("write: {e}"));
    }
    if let Err(e) = tls.flush().await {
        return Err(format!("flush: {e}"));
    }
    let mut buf = bytes::BytesMut::new();
    let ctx = DecodeContext::default();
    loop {
        if let Some(packet) = codec::decode(&mut buf, &ctx).expect("broker sends valid packets") {
            return match packet {
                Packet::ConnAck(ack) => Ok(ack),
                other => panic!("expected CONNACK, got {other:?}"),
            };
        }
        match tokio::time::timeout(RECV_TIMEOUT, tls.read_buf(&mut buf)).await {
            Err(_) => panic!("neither CONNACK nor a close within {RECV_TIMEOUT:?}"),
            Ok(Ok(0)) => return Err("closed without CONNACK".into()),
            Ok(Err(e)) => return Err(format!("read: {e}")),
            Ok(Ok(_)) => {}
        }
    }
}

async fn assert_accepted(addr: std::net::SocketAddr, config: Arc<ClientConfig>, client: &str) {
    match try_mqtt(addr, config, client).await {
        Ok(ack) => assert_eq!(ack.reason, ReasonCode::Success, "CONNACK for {client}"),
        Err(e) => panic!("{client} was refused: {e}"),
    }
}

async fn assert_refused(addr: std::net::SocketAddr, config: Arc<ClientConfig>, client: &str) {
    if let Ok(ack) = try_mqtt(addr, config, client).await {
        panic!("{client} got through TLS: {ack:?}");
    }
}

/// A client configuration allowing only `version`.
fn client_config_for(
    pki: &TestPki,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls::pki_types::pem::PemObject::pem_file_iter(&pki.ca.cert).expect("read CA file")
    {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[version])
            .expect("version")
            .with_root_certificates(roots)
            .with_no_client_auth();
    Arc::new(config)
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tls_1_2_and_1_3_both_carry_mqtt() {
    let pki = TestPki::new();
    let broker = tls_broker(pki.server_tls()).await;
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let tls = tls_connect(broker.addr, client_config_for(&pki, version))
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.protocol_version(), Some(expected));
        let (mut client, ack) = RawClient::over(tls, V311)
            .handshake(connect_packet(V311, &format!("tls-{expected:?}"), true))
            .await;
        assert_eq!(ack.reason, ReasonCode::Success);
        assert_eq!(
            client.subscribe("tls/v", QoS::AtLeastOnce).await,
            [ReasonCode::GrantedQoS1]
        );
        client
            .publish("tls/v", b"over tls", QoS::AtLeastOnce, 7)
            .await;
        let publish = client.recv_publish().await;
        assert_eq!(&publish.payload[..], b"over tls");
        assert_eq!(client.disconnect().await, Vec::<Packet>::new());
    }
}

#[tokio::test]
async fn rumqttc_v4_and_v5_clients_exchange_messages_over_tls() {
    let pki = TestPki::new();
    let broker = tls_broker(pki.server_tls()).await;
    let config = client_config(&pki.ca.cert, None);
    let transport =
        || rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config.clone()));
    let mut v4 = V4Client::connect(broker.addr, "rumq-tls-v4", |o| {
        o.set_transport(transport());
        o.set_max_packet_size(64 * 1024, 64 * 1024);
    })
    .await;
    let v5 = V5Client::connect(broker.addr, "rumq-tls-v5", |o| {
        o.set_transport(transport());
    })
    .await;
    v4.subscribe("tls/rumqttc/#", rumqttc::QoS::ExactlyOnce)
        .await;
    v5.client
        .publish(
            "tls/rumqttc/a",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            vec![7u8; 20_000],
        )
        .await
        .expect("publish");
    let publish = v4.next_publish().await;
    assert_eq!(publish.topic, "tls/rumqttc/a");
    assert_eq!(publish.qos, rumqttc::QoS::AtLeastOnce);
    assert_eq!(
        publish.payload.len(),
        20_000,
        "a payload of several records"
    );
    assert!(publish.payload.iter().all(|&b| b == 7));
}

#[tokio::test]
async fn a_plain_client_on_a_tls_listener_gets_no_connack_and_others_carry_on() {
    let pki = TestPki::new();
    let broker = tls_broker(pki.server_tls()).await;
    let config = client_config(&pki.ca.cert, None);
    let tls = tls_connect(broker.addr, config.clone())
        .await
        .expect("handshake");
    let (mut good, _) = RawClient::over(tls, V311)
        .handshake(connect_packet(V311, "tls-good", true))
        .await;

    let mut plain = RawClient::connect_tcp(broker.addr, V311).await;
    let bytes = codec::encode_to_bytes(
        &Packet::Connect(Box::new(connect_packet(V311, "plain", true))),
        V311,
    )
    .expect("encode");
    plain.stream.write_all(&bytes).await.expect("write");
    let mut reply = Vec::new();
    let read = tokio::time::timeout(RECV_TIMEOUT, plain.stream.read_to_end(&mut reply))
        .await
        .expect("the broker closes the plain connection");
    // Whatever came back (a TLS alert, or nothing) is not an MQTT CONNACK.
    assert!(read.is_err() || reply.first() != Some(&0x20), "{reply:?}");

    good.ping().await;
}

#[tokio::test]
async fn the_broker_refuses_to_start_when_a_certificate_file_is_missing() {
    let pki = TestPki::new();
    let missing = pki.dir.path().join("nowhere.crt");
    let config = starling::Config {
        listeners: vec![ListenerConfig {
            tls: Some(TlsConfig {
                cert_file: missing.clone(),
                ..pki.server_tls()
            }),
            ..ListenerConfig::tcp("127.0.0.1:0".parse().expect("addr"))
        }],
        ..starling::Config::default()
    };
    let validated = config.validate().expect_err("validation names the file");
    assert!(validated.to_string().contains("nowhere.crt"), "{validated}");
    let err = starling::Server::bind(config)
        .await
        .err()
        .expect("bind fails");
    let message = err.to_string();
    assert!(
        message.contains("tls.cert_file") && message.contains(&*missing.to_string_lossy()),
        "{message}"
    );
}

#[test]
fn check_config_names_a_key_file_that_holds_no_key() {
    let pki = TestPki::new();
    let config = pki.dir.path().join("starling.toml");
    // The key file holds a certificate: readable PEM, but no key.
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[listener.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        pki.server.cert, pki.server.cert
    );
    std::fs::write(&config, toml).expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["-c", config.to_str().expect("path"), "--check-config"])
        .output()
        .expect("run starling");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls.key_file") && stderr.contains("holds no private key"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Mutual TLS
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mutual_tls_accepts_a_certificate_from_the_ca_and_refuses_the_rest() {
    let pki = TestPki::new();
    let broker = tls_broker(pki.mutual_tls(false)).await;
    let addr = broker.addr;
    let with = |files: &CertFiles| client_config(&pki.ca.cert, Some(files));

    assert_accepted(addr, with(&pki.client), "mtls-ok").await;
    assert_refused(addr, client_config(&pki.ca.cert, None), "mtls-none").await;
    assert_refused(addr, with(&pki.foreign), "mtls-foreign").await;
    assert_refused(addr, with(&pki.expired), "mtls-expired").await;
    // Refusals affect only their own connections.
    assert_accepted(addr, with(&pki.client), "mtls-ok-again").await;
}

#[tokio::test]
async fn with_a_ca_but_no_requirement_a_certificate_is_optional_but_checked() {
    let pki = TestPki::new();
    let broker = tls_broker(TlsConfig {
        require_certificate: false,
        ..pki.mutual_tls(false)
    })
    .await;
    let addr = broker.addr;
    assert_accepted(addr, client_config(&pki.ca.cert, None), "opt-none").await;
    assert_accepted(
        addr,
        client_config(&pki.ca.cert, Some(&pki.client)),
        "opt-valid",
    )
    .await;
    assert_refused(
        addr,
        client_config(&pki.ca.cert, Some(&pki.foreign)),
        "opt-foreign",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// The binary: identity as username, mosquitto and Paho, SIGHUP
// ---------------------------------------------------------------------------------------------

/// Writes a config with one `[[listener]]` per entry: (protocol, TLS settings).
fn write_config(dir: &Path, listeners: &[(&str, Option<&TlsConfig>)]) -> String {
    let mut toml = String::new();
    for (protocol, tls) in listeners {
        toml.push_str(&format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"{protocol}\"\n"
        ));
        if let Some(tls) = tls {
            toml.push_str(&format!(
                "[listener.tls]\ncert_file = {:?}\nkey_file = {:?}\nrequire_certificate = {}\n\
                 use_identity_as_username = {}\n",
                tls.cert_file, tls.key_file, tls.require_certificate, tls.use_identity_as_username
            ));
            if let Some(ca) = &tls.ca_file {
                toml.push_str(&format!("ca_file = {ca:?}\n"));
            }
        }
    }
    let path = dir.join("starling.toml");
    std::fs::write(&path, toml).expect("write config");
    path.to_str().expect("utf-8 path").to_owned()
}

/// The broker's own log line for a client that connected, which names its username.
fn connected_line(broker: &BrokerProcess, client: &str) -> String {
    broker.wait_for_log(&format!("connection line for {client}"), |line| {
        line.contains("New client connected") && line.contains(&format!(" as {client} "))
    })
}

#[tokio::test]
async fn use_identity_as_username_replaces_the_connect_username_with_the_certificate_cn() {
    let pki = TestPki::new();
    let config = write_config(
        pki.dir.path(),
        &[
            ("mqtt", Some(&pki.mutual_tls(true))),
            ("mqtt", Some(&pki.mutual_tls(false))),
        ],
    );
    let broker = BrokerProcess::start_with(&["-c", &config], 2);
    let client_tls = client_config(&pki.ca.cert, Some(&pki.client));
    for (addr, client) in [
        (broker.addrs[0], "ident-on"),
        (broker.addrs[1], "ident-off"),
    ] {
        let tls = tls_connect(addr, client_tls.clone())
            .await
            .expect("handshake");
        let mut connect = connect_packet(V311, client, true);
        connect.username = Some("someone-else".into());
        connect.password = Some(bytes::Bytes::from_static(b"secret"));
        let (mut session, ack) = RawClient::over(tls, V311).handshake(connect).await;
        assert_eq!(ack.reason, ReasonCode::Success);
        session.ping().await;
    }
    let on = connected_line(&broker, "ident-on");
    assert!(on.contains(&format!("u'{CLIENT_CN}'")), "{on}");
    assert!(!on.contains("someone-else"), "{on}");
    let off = connected_line(&broker, "ident-off");
    assert!(off.contains("u'someone-else'"), "{off}");
}

#[test]
fn mutual_tls_refusals_are_logged_with_their_reason() {
    let pki = TestPki::new();
    let config = write_config(pki.dir.path(), &[("mqtt", Some(&pki.mutual_tls(false)))]);
    let broker = BrokerProcess::start_with(&["-c", &config], 1);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(assert_refused(
        broker.addr,
        client_config(&pki.ca.cert, Some(&pki.expired)),
        "expired",
    ));
    let line = broker.wait_for_log("expired certificate refusal", |line| {
        line.contains("TLS handshake failed") && line.to_lowercase().contains("expired")
    });
    assert!(line.contains("127.0.0.1"), "{line}");
}

/// mosquitto_pub stores a retained message over TLS; mosquitto_sub, also over TLS, receives it.
fn mosquitto_retained_round_trip(
    broker: &BrokerProcess,
    tls_args: &[String],
    topic: &str,
    payload: &str,
) {
    let port = broker.port();
    let mut publish = strings(&["-h", "127.0.0.1", "-p", &port, "-V", "311"]);
    publish.extend(strings(&[
        "-i",
        &client_id("tp"),
        "-t",
        topic,
        "-m",
        payload,
    ]));
    publish.extend(strings(&["-q", "1", "-r"]));
    publish.extend(tls_args.iter().cloned());
    let (status, lines) = Tool::spawn("mosquitto_pub", &publish, None).finish();
    assert!(
        status.success(),
        "mosquitto_pub failed:\n{}",
        lines.join("\n")
    );

    let mut subscribe = strings(&["-h", "127.0.0.1", "-p", &port, "-V", "5"]);
    subscribe.extend(strings(&["-i", &client_id("ts"), "-t", topic, "-C", "1"]));
    subscribe.extend(strings(&["-F", "%t|%p", "-W", "10"]));
    subscribe.extend(tls_args.iter().cloned());
    let (status, lines) = Tool::spawn("mosquitto_sub", &subscribe, None).finish();
    assert!(
        status.success(),
        "mosquitto_sub failed:\n{}",
        lines.join("\n")
    );
    assert_eq!(lines, [format!("{topic}|{payload}")]);
}

fn path_arg(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn mosquitto_clients_over_tls_with_cafile() {
    if !mosquitto_available() {
        return;
    }
    let pki = TestPki::new();
    let config = write_config(pki.dir.path(), &[("mqtt", Some(&pki.server_tls()))]);
    let broker = BrokerProcess::start_with(&["-c", &config], 1);
    let tls = vec!["--cafile".to_owned(), path_arg(&pki.ca.cert)];
    mosquitto_retained_round_trip(&broker, &tls, "tls/mosquitto", "hello over tls");

    // A client that does not trust the broker's CA refuses it.
    let mut distrust = strings(&["-h", "127.0.0.1", "-p", &broker.port(), "-t", "tls/x"]);
    distrust.extend(strings(&[
        "-m",
        "x",
        "--cafile",
        &path_arg(&pki.other_ca.cert),
    ]));
    let (status, _) = Tool::spawn("mosquitto_pub", &distrust, None).finish();
    assert!(
        !status.success(),
        "mosquitto_pub trusted a certificate from another CA"
    );
}

#[test]
fn mosquitto_clients_over_mutual_tls_with_cert_and_key() {
    if !mosquitto_available() {
        return;
    }
    let pki = TestPki::new();
    let config = write_config(pki.dir.path(), &[("mqtt", Some(&pki.mutual_tls(true)))]);
    let broker = BrokerProcess::start_with(&["-c", &config], 1);
    let identity = |files: &CertFiles| {
        vec![
            "--cafile".to_owned(),
            path_arg(&pki.ca.cert),
            "--cert".to_owned(),
            path_arg(&files.cert),
            "--key".to_owned(),
            path_arg(&files.key),
        ]
    };
    mosquitto_retained_round_trip(&broker, &identity(&pki.client), "mtls/m", "from device-7");
    assert!(
        broker.count_log(|l| l.contains(&format!("u'{CLIENT_CN}'"))) >= 2,
        "both clients connected as {CLIENT_CN}"
    );

    for (what, args) in [
        (
            "no certificate",
            vec!["--cafile".to_owned(), path_arg(&pki.ca.cert)],
        ),
        ("an expired certificate", identity(&pki.expired)),
        ("another CA's certificate", identity(&pki.foreign)),
    ] {
        let mut publish = strings(&["-h", "127.0.0.1", "-p", &broker.port(), "-t", "mtls/x"]);
        publish.extend(strings(&["-m", "x", "-q", "1"]));
        publish.extend(args);
        let (status, lines) = Tool::spawn("mosquitto_pub", &publish, None).finish();
        assert!(
            !status.success(),
            "mosquitto_pub with {what} got through:\n{}",
            lines.join("\n")
        );
    }
}

#[test]
fn paho_over_tls() {
    if !paho_available() {
        return;
    }
    let pki = TestPki::new();
    let config = write_config(pki.dir.path(), &[("mqtt", Some(&pki.mutual_tls(false)))]);
    let broker = BrokerProcess::start_with(&["-c", &config], 1);
    paho_scenario(
        broker.addr.port(),
        "qos-v5",
        &[
            "--cafile",
            &path_arg(&pki.ca.cert),
            "--certfile",
            &path_arg(&pki.client.cert),
            "--keyfile",
            &path_arg(&pki.client.key),
        ],
    );
}

/// The DER of the certificate a fresh TLS connection is served.
async fn served_certificate(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<Vec<u8>> {
    let tls = tls_connect(addr, config).await?;
    let certs = tls.get_ref().1.peer_certificates().expect("server chain");
    Ok(certs[0].to_vec())
}

fn pem_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).expect("PEM").to_vec()
}

#[tokio::test]
async fn sighup_reloads_certificates_without_dropping_connections() {
    let pki = TestPki::new();
    let dir = pki.dir.path();
    let live = CertFiles {
        cert: dir.join("live.crt"),
        key: dir.join("live.key"),
    };
    let install = |files: &CertFiles| {
        std::fs::copy(&files.cert, &live.cert).expect("copy cert");
        std::fs::copy(&files.key, &live.key).expect("copy key");
    };
    install(&pki.server);
    let settings = TlsConfig {
        cert_file: live.cert.clone(),
        key_file: live.key.clone(),
        ..pki.server_tls()
    };
    let config = write_config(dir, &[("mqtt", Some(&settings))]);
    let broker = BrokerProcess::start_with(&["-c", &config], 1);
    let addr = broker.addr;
    let trust_old = client_config(&pki.ca.cert, None);
    let trust_new = client_config(&pki.other_ca.cert, None);

    // A connection made before the reload, subscribed.
    let tls = tls_connect(addr, trust_old.clone())
        .await
        .expect("handshake");
    let (mut old, _) = RawClient::over(tls, V311)
        .handshake(connect_packet(V311, "before-reload", true))
        .await;
    assert_eq!(
        old.subscribe("reload/#", QoS::AtLeastOnce).await,
        [ReasonCode::GrantedQoS1]
    );
    assert!(served_certificate(addr, trust_new.clone()).await.is_err());

    // New certificate and key from another CA, then SIGHUP.
    let renewed = pki.other_ca.server(dir, "renewed");
    install(&renewed);
    broker.signal("HUP");
    broker.wait_for_log("reload line", |l| {
        l.contains("reloaded the certificates of listener")
    });
    assert_eq!(
        served_certificate(addr, trust_new.clone())
            .await
            .expect("new handshakes use the new certificate"),
        pem_der(&renewed.cert)
    );
    assert!(
        served_certificate(addr, trust_old.clone()).await.is_err(),
        "the old certificate is no longer served"
    );

    // A client of the new certificate publishes; the old connection still receives.
    let tls = tls_connect(addr, trust_new.clone())
        .await
        .expect("handshake");
    let (mut fresh, _) = RawClient::over(tls, V311)
        .handshake(connect_packet(V311, "after-reload", true))
        .await;
    fresh
        .publish("reload/x", b"after reload", QoS::AtLeastOnce, 1)
        .await;
    let publish = old.recv_publish().await;
    assert_eq!(&publish.payload[..], b"after reload");

    // A broken file: the reload fails, is logged, and the current certificate stays.
    std::fs::write(&live.cert, "not a certificate").expect("break cert");
    broker.signal("HUP");
    broker.wait_for_log("failed reload line", |l| {
        l.contains("keeps its previous certificates") && l.contains("live.crt")
    });
    assert_eq!(
        served_certificate(addr, trust_new)
            .await
            .expect("still served"),
        pem_der(&renewed.cert)
    );
    old.ping().await;
    fresh.ping().await;
}

/// `certs/make-test-certs.sh` (openssl, RSA keys) makes files the broker loads and mosquitto's
/// clients use for mutual TLS; the client certificate's CN becomes the username.
#[test]
fn the_certs_script_makes_a_ca_server_and_client_that_work_together() {
    let openssl = common::tools::tool_available(
        common::tools::on_path("openssl"),
        "openssl not found",
        "install openssl",
    );
    if !openssl || !mosquitto_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = path_arg(dir.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/make-test-certs.sh");
    let made = std::process::Command::new("bash")
        .args([script, &out, "device-9"])
        .output()
        .expect("run make-test-certs.sh");
    assert!(
        made.status.success(),
        "make-test-certs.sh failed:\n{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let file = |name: &str| dir.path().join(name);
    let settings = TlsConfig {
        cert_file: file("server.crt"),
        key_file: file("server.key"),
        ca_file: Some(file("ca.crt")),
        require_certificate: true,
        use_identity_as_username: true,
    };
    let config = write_config(dir.path(), &[("mqtt", Some(&settings))]);
    let broker = BrokerProcess::start_with(&["-c", &config], 1);
    let args = [
        "--cafile",
        &path_arg(&file("ca.crt")),
        "--cert",
        &path_arg(&file("client.crt")),
        "--key",
        &path_arg(&file("client.key")),
    ];
    mosquitto_retained_round_trip(&broker, &strings(&args), "script/t", "made by openssl");
    assert!(broker.count_log(|l| l.contains("u'device-9'")) >= 2);
}
