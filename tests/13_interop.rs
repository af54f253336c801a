//! Interop with third-party clients against the built `starling` binary: mosquitto_pub and
//! mosquitto_sub (MQTT 3.1, 3.1.1 and 5.0), and the Eclipse Paho Python client 2.x
//! (`tests/interop/paho_check.py`).
//!
//! Each test starts its own broker process on `127.0.0.1:0` and reads the real address from the
//! line it prints (`starling <version> listening on <addr>`). Every child process sits in a guard
//! that kills it when the test ends, also when it fails; a failing test prints the broker's log.
//!
//! The clients are external tools. When one is missing, its tests print a SKIPPED line to stderr
//! and pass, unless `STARLING_REQUIRE_INTEROP=1` (CI sets it): then a missing tool is a failure.
//!
//! mosquitto_sub buffers its output on a pipe and flushes only after a message, so its
//! "Subscribed" debug line cannot tell a test when to publish. Instead every subscriber also
//! subscribes, last, to a topic of its own that holds a retained probe message: the broker sends
//! retained messages once the whole SUBSCRIBE is in place and in filter order, so the probe's line
//! proves the subscriptions exist and that no retained message for the earlier filters came. The
//! probe counts towards `-C`; the helpers add it.

mod common;

use std::thread;
use std::time::Duration;

use common::tools::{
    BrokerProcess as Broker, Tool, client_id, mosquitto_available, paho_available, paho_scenario,
    strings,
};

/// Silence that shows something does not arrive.
const QUIET: Duration = Duration::from_millis(400);

// ---------------------------------------------------------------------------------------------
// mosquitto_pub and mosquitto_sub
// ---------------------------------------------------------------------------------------------

/// How received messages are printed: a marker, then fields separated by '|'.
const FORMAT: &str = "MSG|%t|%q|%r|%p";

fn common_args(broker: &Broker, version: &str, id: &str) -> Vec<String> {
    [
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port(),
        "-V",
        version,
        "-i",
        id,
        "-d",
    ]
    .map(String::from)
    .to_vec()
}

/// Runs mosquitto_pub to completion (`stdin` feeds `-l`); it must succeed. Returns its output.
fn mosquitto_pub_with(
    broker: &Broker,
    version: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Vec<String> {
    let mut all = common_args(broker, version, &client_id("p"));
    all.extend(strings(args));
    let mut publisher = Tool::spawn("mosquitto_pub", &all, stdin);
    let (status, lines) = publisher.finish();
    assert!(
        status.success(),
        "mosquitto_pub {} failed ({status}):\n{}",
        all.join(" "),
        lines.join("\n")
    );
    lines
}

fn mosquitto_pub(broker: &Broker, version: &str, args: &[&str]) -> Vec<String> {
    mosquitto_pub_with(broker, version, args, None)
}

/// A running mosquitto_sub whose subscriptions are in place.
struct Sub {
    tool: Tool,
    probe_topic: String,
}

impl Sub {
    /// Starts mosquitto_sub with `args` (topics, QoS, will, properties) printing `format`, waits
    /// for its probe, and returns. With `count`, it exits after that many messages besides the
    /// probe.
    fn start(
        broker: &Broker,
        version: &str,
        args: &[&str],
        count: Option<usize>,
        format: &str,
    ) -> Sub {
        let id = client_id("s");
        let probe_topic = format!("probe/{id}");
        mosquitto_pub(
            broker,
            "311",
            &["-t", &probe_topic, "-q", "1", "-r", "-m", "probe"],
        );
        let mut all = common_args(broker, version, &id);
        all.extend(strings(args));
        all.extend(strings(&["-t", &probe_topic, "-F", format, "-W", "30"]));
        if let Some(count) = count {
            all.extend(strings(&["-C", &(count + 1).to_string()]));
        }
        let mut tool = Tool::spawn("mosquitto_sub", &all, None);
        let probe_line = format!("MSG|{probe_topic}|");
        tool.wait_for_line("probe message", |line| line.starts_with(&probe_line));
        Sub { tool, probe_topic }
    }

    fn plain(broker: &Broker, version: &str, args: &[&str], count: Option<usize>) -> Sub {
        Sub::start(broker, version, args, count, FORMAT)
    }

    /// Waits for exit (after `-C`); it must succeed. Returns its output.
    fn finish(&mut self) -> Vec<String> {
        let (status, lines) = self.tool.finish();
        assert!(
            status.success(),
            "`{}` failed ({status}):\n{}",
            self.tool.name,
            lines.join("\n")
        );
        lines
    }

    /// The received messages other than the probe, each as its '|'-separated fields.
    fn messages(&self, lines: &[String]) -> Vec<Vec<String>> {
        let probe = format!("MSG|{}|", self.probe_topic);
        lines
            .iter()
            .filter(|line| line.starts_with("MSG|") && !line.starts_with(&probe))
            .map(|line| line["MSG|".len()..].split('|').map(String::from).collect())
            .collect()
    }
}

fn fields(values: &[&str]) -> Vec<String> {
    strings(values)
}

/// The QoS flow in mosquitto's debug output: `sending PUBLISH q1`, `received PUBACK`, ..., with
/// every acknowledgement's reason code checked to be 0 where mosquitto prints one.
fn qos_flow(lines: &[String]) -> Vec<String> {
    let mut flow = Vec::new();
    for line in lines {
        let Some(rest) = line.strip_prefix("Client ") else {
            continue;
        };
        let Some((_, event)) = rest.split_once(' ') else {
            continue;
        };
        let mut words = event.split_whitespace();
        let (Some(direction), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        if !["PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP"].contains(&kind) {
            continue;
        }
        for code in ["RC:", "rc"] {
            if let Some(at) = event.find(&format!(", {code}")) {
                let value = &event[at + 2 + code.len()..];
                assert!(value.starts_with('0'), "a non-zero reason code in `{line}`");
            }
        }
        if kind == "PUBLISH" {
            let qos = event
                .split(", ")
                .find(|part| part.starts_with('q'))
                .expect("PUBLISH shows its QoS");
            flow.push(format!("{direction} {kind} {qos}"));
        } else {
            flow.push(format!("{direction} {kind}"));
        }
    }
    flow
}

/// The flow a publisher of `qos` goes through.
fn publisher_flow(qos: u8) -> Vec<String> {
    let mut flow = vec![format!("sending PUBLISH q{qos}")];
    match qos {
        0 => {}
        1 => flow.push("received PUBACK".into()),
        _ => {
            flow.extend(["received PUBREC", "sending PUBREL", "received PUBCOMP"].map(String::from))
        }
    }
    flow
}

/// The flow a subscriber goes through receiving at `qos`.
fn subscriber_flow(qos: u8) -> Vec<String> {
    let mut flow = vec![format!("received PUBLISH q{qos}")];
    match qos {
        0 => {}
        1 => flow.push("sending PUBACK".into()),
        _ => {
            flow.extend(["sending PUBREC", "received PUBREL", "sending PUBCOMP"].map(String::from))
        }
    }
    flow
}

/// A message published at `qos` reaches a QoS 2 subscriber once, at `qos`, and both clients go
/// through exactly the QoS flow of section 4.3 with success codes.
fn round_trip(version: &str, qos: u8) {
    if !mosquitto_available() {
        return;
    }
    let broker = Broker::start();
    let mut sub = Sub::plain(&broker, version, &["-t", "rt/#", "-q", "2"], Some(1));
    let qos_arg = qos.to_string();
    let published = mosquitto_pub(
        &broker,
        version,
        &["-t", "rt/x", "-q", &qos_arg, "-m", "hello"],
    );
    assert_eq!(qos_flow(&published), publisher_flow(qos), "publisher");
    let lines = sub.finish();
    assert_eq!(
        sub.messages(&lines),
        [fields(&["rt/x", &qos_arg, "0", "hello"])]
    );
    // The probe (retained, QoS 1) comes first, then the message.
    let mut expected = subscriber_flow(1);
    expected.extend(subscriber_flow(qos));
    assert_eq!(qos_flow(&lines), expected, "subscriber");
}

macro_rules! round_trips {
    ($($name:ident: $version:expr, $qos:expr;)*) => {$(
        #[test]
        fn $name() {
            round_trip($version, $qos);
        }
    )*};
}

round_trips! {
    mosquitto_v311_qos0_round_trip: "311", 0;
    mosquitto_v311_qos1_round_trip: "311", 1;
    mosquitto_v311_qos2_round_trip: "311", 2;
    mosquitto_v5_qos0_round_trip: "5", 0;
    mosquitto_v5_qos1_round_trip: "5", 1;
    mosquitto_v5_qos2_round_trip: "5", 2;
    mosquitto_v31_qos0_round_trip: "31", 0;
    mosquitto_v31_qos1_round_trip: "31", 1;
    mosquitto_v31_qos2_round_trip: "31", 2;
}

/// A retained message reaches a late subscriber with RETAIN set; an empty retained message
/// clears it, so the next late subscriber gets only what is published live.
fn retained_for_late_subscribers(version: &str) {
    if !mosquitto_available() {
        return;
    }
    let broker = Broker::start();
    mosquitto_pub(
        &broker,
        version,
        &["-t", "kept/t", "-q", "1", "-r", "-m", "kept"],
    );
    let mut late = Sub::plain(&broker, version, &["-t", "kept/#", "-q", "1"], Some(1));
    let lines = late.finish();
    assert_eq!(
        late.messages(&lines),
        [fields(&["kept/t", "1", "1", "kept"])]
    );

    mosquitto_pub(&broker, version, &["-t", "kept/t", "-q", "1", "-r", "-n"]);
    let mut later = Sub::plain(&broker, version, &["-t", "kept/#", "-q", "1"], Some(1));
    mosquitto_pub(
        &broker,
        version,
        &["-t", "kept/live", "-q", "1", "-m", "live"],
    );
    let lines = later.finish();
    assert_eq!(
        later.messages(&lines),
        [fields(&["kept/live", "1", "0", "live"])]
    );
}

#[test]
fn mosquitto_v311_retained_message_reaches_a_late_subscriber() {
    retained_for_late_subscribers("311");
}

#[test]
fn mosquitto_v5_retained_message_reaches_a_late_subscriber() {
    retained_for_late_subscribers("5");
}

/// [MQTT-3.1.2-8]: a client killed with SIGKILL never sends DISCONNECT; its will is published.
fn will_after_kill(version: &str) {
    if !mosquitto_available() {
        return;
    }
    let broker = Broker::start();
    let mut watcher = Sub::plain(&broker, "311", &["-t", "will/#", "-q", "1"], Some(1));
    let mut doomed = Sub::plain(
        &broker,
        version,
        &[
            "-t",
            "unrelated",
            "--will-topic",
            "will/t",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
        ],
        None,
    );
    doomed.tool.kill();
    let lines = watcher.finish();
    assert_eq!(
        watcher.messages(&lines),
        [fields(&["will/t", "1", "0", "gone"])]
    );
}

#[test]
fn mosquitto_v311_will_is_published_when_a_client_is_killed() {
    will_after_kill("311");
}

#[test]
fn mosquitto_v5_will_is_published_when_a_client_is_killed() {
    will_after_kill("5");
}

/// [MQTT-3.14.4-3]: after a normal DISCONNECT the will is discarded.
#[test]
fn mosquitto_will_is_not_published_after_a_normal_disconnect() {
    if !mosquitto_available() {
        return;
    }
    let broker = Broker::start();
    let mut watcher = Sub::plain(&broker, "5", &["-t", "will/#", "-q", "1"], None);
    // Exits after its probe, with DISCONNECT.
    let mut polite = Sub::plain(
        &broker,
        "5",
        &[
            "-t",
            "unrelated",
            "--will-topic",
            "will/t",
            "--will-payload",
            "must not appear",
        ],
        Some(0),
    );
    let polite_lines = polite.finish();
    assert!(
        polite_lines
            .iter()
            .any(|l| l.ends_with("sending DISCONNECT")),
        "the polite client disconnects normally"
    );
    mosquitto_pub(
        &broker,
        "5",
        &["-t", "will/marker", "-q", "1", "-m", "marker"],
    );
    watcher
        .tool
        .wait_for_line("marker", |line| line.starts_with("MSG|will/marker|"));
    thread::sleep(QUIET);
    let lines = watcher.tool.kill();
    assert_eq!(
        watcher.messages(&lines),
        [fields(&["will/marker", "1", "0", "marker"])]
    );
}

/// `-C 3` stops after exactly three messages, in order, while five were published (a second
/// subscriber gets all five).
#[test]
fn mosquitto_sub_count_is_exact() {
    if !mosquitto_available() {
        return;
    }
    let broker = Broker::start();
    let mut three = Sub::plain(&broker, "311", &["-t", "count/t", "-q", "1"], Some(3));
    let mut five = Sub::plain(&broker, "5", &["-t", "count/t", "-q", "1"], Some(5));
    let published = mosquitto_pub_with(
        &broker,
        "311",
        &["-t", "count/t", "-q", "1", "-l"],
        Some("m1\nm2\nm3\nm4\nm5\n"),
    );
    assert_eq!(
        qos_flow(&published)
            .iter()
            .filter(|step| *step == "received PUBACK")
            .count(),
        5
    );
    let expected = |n: usize| -> Vec<Vec<String>> {
        (1..=n)
            .map(|i| fields(&["count/t", "1", "0", &format!("m{i}")]))
            .collect()
    };
    let lines = three.finish();
    assert_eq!(three.messages(&lines), expected(3));
    let lines = five.finish();
    assert_eq!(five.messages(&lines), expected(5));
}

/// User properties (repeated keys included, order kept), content type, response topic,
/// correlation data, payload format and message expiry pass through unchanged (section 3.3.2.3).
#[test]
fn mosquitto_v5_publish_properties_round_trip() {
    if !mosquitto_available() {
        return;
    }
    let broker = Broker::start();
    let mut sub = Sub::start(
        &broker,
        "5",
        &["-t", "props/#", "-q", "1"],
        Some(1),
        "MSG|%t|%P|%C|%R|%D|%F|%E|%p",
    );
    mosquitto_pub(
        &broker,
        "5",
        &[
            "-t",
            "props/t",
            "-q",
            "1",
            "-m",
            "body",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
            "-D",
            "publish",
            "user-property",
            "k",
            "v2",
            "-D",
            "publish",
            "user-property",
            "other",
            "x",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "response-topic",
            "props/reply",
            "-D",
            "publish",
            "correlation-data",
            "corr-17",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
            "-D",
            "publish",
            "message-expiry-interval",
            "60",
        ],
    );
    let lines = sub.finish();
    let messages = sub.messages(&lines);
    assert_eq!(messages.len(), 1, "{lines:?}");
    let msg = &messages[0];
    assert_eq!(
        msg[..6],
        fields(&[
            "props/t",
            "k:v k:v2 other:x",
            "text/plain",
            "props/reply",
            "corr-17",
            "1"
        ])[..]
    );
    let expiry: u32 = msg[6].parse().expect("message expiry is printed");
    assert!(
        (1..=60).contains(&expiry),
        "remaining expiry {expiry} not in 1..=60"
    );
    assert_eq!(msg[7], "body");
}

/// Section 3.8.2.1.2: a subscription's identifier comes back on every message it matches.
#[test]
fn mosquitto_v5_subscription_identifier_round_trip() {
    if !mosquitto_available() {
        return;
    }
    let broker = Broker::start();
    let mut sub = Sub::start(
        &broker,
        "5",
        &[
            "-t",
            "subid/#",
            "-D",
            "subscribe",
            "subscription-identifier",
            "42",
        ],
        Some(1),
        "MSG|%t|%S|%p",
    );
    mosquitto_pub(&broker, "311", &["-t", "subid/t", "-m", "tagged"]);
    let lines = sub.finish();
    assert_eq!(sub.messages(&lines), [fields(&["subid/t", "42", "tagged"])]);
}

/// Clients of all three versions on one topic: each receives what each publishes.
#[test]
fn mosquitto_mixed_versions_share_a_topic() {
    if !mosquitto_available() {
        return;
    }
    let broker = Broker::start();
    let versions = ["31", "311", "5"];
    let mut subs: Vec<Sub> = versions
        .iter()
        .map(|v| Sub::plain(&broker, v, &["-t", "mixed/#", "-q", "1"], Some(3)))
        .collect();
    for version in versions {
        let topic = format!("mixed/from{version}");
        mosquitto_pub(&broker, version, &["-t", &topic, "-q", "1", "-m", version]);
    }
    for (sub, version) in subs.iter_mut().zip(versions) {
        let lines = sub.finish();
        let expected: Vec<Vec<String>> = versions
            .iter()
            .map(|from| fields(&[&format!("mixed/from{from}"), "1", "0", from]))
            .collect();
        assert_eq!(sub.messages(&lines), expected, "subscriber {version}");
    }
}

/// Section 4.7: '+' matches one level, '#' the parent and every level below; other topics
/// published in between are not delivered.
#[test]
fn mosquitto_wildcard_subscriptions_match_exactly_their_topics() {
    if !mosquitto_available() {
        return;
    }
    let broker = Broker::start();
    let mut sub = Sub::plain(
        &broker,
        "311",
        &["-t", "w/+/c", "-t", "w/x/#", "-q", "1"],
        Some(3),
    );
    for topic in ["w/a/c", "w/a/d", "w/a/c/d", "w/x", "wx", "w/x/y/z"] {
        mosquitto_pub(&broker, "311", &["-t", topic, "-q", "1", "-m", topic]);
    }
    let lines = sub.finish();
    let expected: Vec<Vec<String>> = ["w/a/c", "w/x", "w/x/y/z"]
        .iter()
        .map(|t| fields(&[t, "1", "0", t]))
        .collect();
    assert_eq!(sub.messages(&lines), expected);
}

// ---------------------------------------------------------------------------------------------
// Eclipse Paho (Python)
// ---------------------------------------------------------------------------------------------

/// Runs one scenario of `tests/interop/paho_check.py` against a fresh broker.
fn paho(scenario: &str) {
    if !paho_available() {
        return;
    }
    let broker = Broker::start();
    paho_scenario(broker.addr.port(), scenario, &[]);
}

#[test]
fn paho_v311_qos_round_trip() {
    paho("qos-v311");
}

#[test]
fn paho_v5_qos_round_trip_and_downgrade() {
    paho("qos-v5");
}

#[test]
fn paho_v5_properties_round_trip_and_request_response() {
    paho("properties-v5");
}

#[test]
fn paho_retained_messages_and_retain_handling() {
    paho("retained");
}

#[test]
fn paho_v5_disconnect_with_will_message() {
    paho("will-v5");
}
