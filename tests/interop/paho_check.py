#!/usr/bin/env python3
"""Interop checks for Starling with the Eclipse Paho Python client (paho-mqtt 2.x).

Run by tests/13_interop.rs (and, over WebSocket and TLS, by 08_tls.rs and 10_websocket.rs)
against the built broker:

    python3 tests/interop/paho_check.py --port 1883 qos-v311
    python3 tests/interop/paho_check.py --port 8080 --transport websockets qos-v5
    python3 tests/interop/paho_check.py --port 8883 --cafile ca.crt retained

Each scenario drives real paho clients through one area and compares what comes back with what
was sent. On the first mismatch it prints `FAIL <scenario>: <what differed>` to stderr and exits 1;
on success it prints `OK <scenario>` and exits 0. A watchdog ends a hung run with exit 2.
"""

import argparse
import os
import queue
import signal
import sys
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

WAIT = 5.0  # seconds to wait for anything that should arrive
QUIET = 0.5  # seconds of silence that prove something does not arrive
WATCHDOG = 60  # seconds for a whole scenario


class Mismatch(Exception):
    """What the broker did differs from what the scenario expects."""


def expect(condition, message):
    if not condition:
        raise Mismatch(message)


def expect_eq(actual, expected, what):
    if actual != expected:
        raise Mismatch(f"{what}: expected {expected!r}, got {actual!r}")


class Client:
    """A paho client on its own network thread, with every callback's result in a queue."""

    def __init__(self, args, name, protocol):
        self.args = args
        self.v5 = protocol == mqtt.MQTTv5
        self.client_id = f"paho-{name}-{uuid.uuid4().hex[:8]}"
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            clean_session=None if self.v5 else True,
            reconnect_on_failure=False,
            transport=args.transport,
        )
        if args.transport == "websockets":
            self.c.ws_set_options(path=args.ws_path)
        if args.cafile:
            self.c.tls_set(ca_certs=args.cafile, certfile=args.certfile, keyfile=args.keyfile)
        self.connacks = queue.Queue()
        self.subacks = queue.Queue()
        self.unsubacks = queue.Queue()
        self.published = queue.Queue()
        self.messages = queue.Queue()
        self.disconnects = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, props: self.connacks.put((flags, rc, props))
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.put((mid, rcs))
        self.c.on_unsubscribe = lambda c, u, mid, rcs, props: self.unsubacks.put((mid, rcs))
        self.c.on_publish = lambda c, u, mid, rc, props: self.published.put((mid, rc))
        self.c.on_message = lambda c, u, msg: self.messages.put(msg)
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.disconnects.put(rc)

    def connect(self, properties=None):
        if self.v5:
            self.c.connect(self.args.host, self.args.port, keepalive=30, clean_start=True,
                           properties=properties)
        else:
            self.c.connect(self.args.host, self.args.port, keepalive=30)
        self.c.loop_start()
        flags, rc, props = take(self.connacks, f"CONNACK for {self.client_id}")
        expect(not rc.is_failure, f"{self.client_id} refused: {rc}")
        return flags, props

    def subscribe(self, topics, properties=None):
        """Subscribes to [(filter, qos or SubscribeOptions)]; returns the SUBACK reason codes."""
        result, mid = self.c.subscribe(topics, properties=properties)
        expect_eq(result, mqtt.MQTT_ERR_SUCCESS, "subscribe() result")
        ack_mid, rcs = take(self.subacks, "SUBACK")
        expect_eq(ack_mid, mid, "SUBACK packet id")
        return [rc.value for rc in rcs]

    def unsubscribe(self, topic):
        result, mid = self.c.unsubscribe(topic)
        expect_eq(result, mqtt.MQTT_ERR_SUCCESS, "unsubscribe() result")
        ack_mid, rcs = take(self.unsubacks, "UNSUBACK")
        expect_eq(ack_mid, mid, "UNSUBACK packet id")
        return [rc.value for rc in rcs]

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        """Publishes and waits until the QoS flow completes; returns the ack's reason code."""
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        expect_eq(info.rc, mqtt.MQTT_ERR_SUCCESS, f"publish({topic}) result")
        info.wait_for_publish(timeout=WAIT)
        expect(info.is_published(), f"QoS {qos} publish to {topic} was never acknowledged")
        mid, rc = take(self.published, "on_publish")
        expect_eq(mid, info.mid, "on_publish packet id")
        return rc.value

    def message(self, what):
        return take(self.messages, what)

    def no_message(self, what):
        try:
            msg = self.messages.get(timeout=QUIET)
        except queue.Empty:
            return
        raise Mismatch(f"{what}: got {msg.topic} {msg.payload!r}")

    def disconnect(self, reasoncode=None):
        self.c.disconnect(reasoncode=reasoncode)
        take(self.disconnects, f"disconnect of {self.client_id}")
        self.c.loop_stop()


def take(q, what):
    try:
        return q.get(timeout=WAIT)
    except queue.Empty:
        raise Mismatch(f"no {what} within {WAIT}s") from None


def publish_properties(**values):
    props = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def qos_round_trip(args, protocol, tag):
    """Subscribes at QoS 2, publishes at QoS 0, 1 and 2: each arrives once at its own QoS; after
    UNSUBSCRIBE nothing arrives."""
    sub = Client(args, f"sub{tag}", protocol)
    pub = Client(args, f"pub{tag}", protocol)
    sub.connect()
    pub.connect()
    base = f"paho/{tag}/qos"
    expect_eq(sub.subscribe([(f"{base}/#", 2)]), [2], "granted QoS")
    for qos in (0, 1, 2):
        rc = pub.publish(f"{base}/q{qos}", f"payload at qos {qos}".encode(), qos=qos)
        expect_eq(rc, 0, f"ack reason for QoS {qos}")
        msg = sub.message(f"the QoS {qos} message")
        expect_eq(msg.topic, f"{base}/q{qos}", "topic")
        expect_eq(msg.payload, f"payload at qos {qos}".encode(), "payload")
        expect_eq(msg.qos, qos, "delivered QoS")
        expect_eq(msg.retain, False, "retain flag")
    sub.no_message("a duplicate delivery")
    sub.unsubscribe(f"{base}/#")
    pub.publish(f"{base}/q1", b"after unsubscribe", qos=1)
    sub.no_message("a message after UNSUBSCRIBE")
    sub.disconnect()
    pub.disconnect()


def scenario_qos_v311(args):
    qos_round_trip(args, mqtt.MQTTv311, "v311")


def scenario_qos_v5(args):
    qos_round_trip(args, mqtt.MQTTv5, "v5")
    # Several filters in one SUBSCRIBE: one reason code each, and delivery at the lower of the
    # published and the granted QoS.
    sub = Client(args, "downgrade", mqtt.MQTTv5)
    pub = Client(args, "downgrade-pub", mqtt.MQTTv5)
    sub.connect()
    pub.connect()
    filters = [(f"paho/v5/down/{q}", SubscribeOptions(qos=q)) for q in (0, 1, 2)]
    expect_eq(sub.subscribe(filters), [0, 1, 2], "SUBACK reason codes")
    for granted in (0, 1, 2):
        pub.publish(f"paho/v5/down/{granted}", b"at qos 2", qos=2)
        msg = sub.message(f"the message for the QoS {granted} subscription")
        expect_eq(msg.qos, granted, f"QoS through a QoS {granted} subscription")
    sub.disconnect()
    pub.disconnect()


def scenario_properties_v5(args):
    """Every PUBLISH property a client sets arrives unchanged; the subscription identifier is
    added; a request/response round trip uses Response Topic and Correlation Data."""
    sub = Client(args, "props-sub", mqtt.MQTTv5)
    pub = Client(args, "props-pub", mqtt.MQTTv5)
    sub.connect()
    pub.connect()
    sub_props = Properties(PacketTypes.SUBSCRIBE)
    sub_props.SubscriptionIdentifier = 42
    expect_eq(sub.subscribe([("paho/props/#", SubscribeOptions(qos=1))], sub_props), [1], "SUBACK")
    user = [("k", "v"), ("k", "v2"), ("unicode", "\u00e9t\u00e9 \u2603")]
    correlation = b"\x00\x01corr\xff"
    sent = publish_properties(
        UserProperty=user,
        ContentType="application/json",
        CorrelationData=correlation,
        ResponseTopic="paho/reply/1",
        PayloadFormatIndicator=1,
        MessageExpiryInterval=60,
    )
    pub.publish("paho/props/a", b'{"x": 1}', qos=1, properties=sent)
    msg = sub.message("the PUBLISH with properties")
    got = msg.properties
    expect_eq(msg.payload, b'{"x": 1}', "payload")
    expect_eq(getattr(got, "UserProperty", None), user, "user properties (order kept)")
    expect_eq(getattr(got, "ContentType", None), "application/json", "content type")
    expect_eq(getattr(got, "CorrelationData", None), correlation, "correlation data")
    expect_eq(getattr(got, "ResponseTopic", None), "paho/reply/1", "response topic")
    expect_eq(getattr(got, "PayloadFormatIndicator", None), 1, "payload format indicator")
    expiry = getattr(got, "MessageExpiryInterval", None)
    expect(expiry is not None and 1 <= expiry <= 60, f"message expiry 1..=60, got {expiry!r}")
    expect_eq(getattr(got, "SubscriptionIdentifier", None), [42], "subscription identifier")

    # A message without properties carries none of them.
    pub.publish("paho/props/b", b"plain", qos=1)
    plain = sub.message("the PUBLISH without properties").properties
    for name in ("UserProperty", "ContentType", "CorrelationData", "ResponseTopic"):
        expect(not hasattr(plain, name), f"{name} appeared on a message that had none")
    expect_eq(getattr(plain, "SubscriptionIdentifier", None), [42], "subscription identifier")

    # Request/response: the responder answers on the Response Topic with the Correlation Data.
    responder = Client(args, "responder", mqtt.MQTTv5)
    responder.connect()
    responder.subscribe([("paho/service/request", SubscribeOptions(qos=1))])
    sub.subscribe([("paho/reply/+", SubscribeOptions(qos=1))])
    pub.publish("paho/service/request", b"ping", qos=1,
                properties=publish_properties(ResponseTopic="paho/reply/7",
                                              CorrelationData=b"req-7"))
    request = responder.message("the request")
    responder.publish(request.properties.ResponseTopic, b"pong", qos=1,
                      properties=publish_properties(
                          CorrelationData=request.properties.CorrelationData))
    reply = sub.message("the reply")
    expect_eq((reply.topic, reply.payload), ("paho/reply/7", b"pong"), "reply")
    expect_eq(reply.properties.CorrelationData, b"req-7", "reply correlation data")
    for client in (sub, pub, responder):
        client.disconnect()


def scenario_retained(args):
    """A retained message reaches late subscribers of both versions with RETAIN set, honours
    5.0 Retain Handling, and is cleared by an empty retained message."""
    pub = Client(args, "retain-pub", mqtt.MQTTv311)
    pub.connect()
    pub.publish("paho/retained/t", b"kept", qos=1, retain=True)
    for protocol, tag in ((mqtt.MQTTv311, "v311"), (mqtt.MQTTv5, "v5")):
        late = Client(args, f"late-{tag}", protocol)
        late.connect()
        late.subscribe([("paho/retained/#", 1)])
        msg = late.message(f"the retained message ({tag})")
        expect_eq((msg.topic, msg.payload, msg.retain), ("paho/retained/t", b"kept", True),
                  f"retained message ({tag})")
        # A live publish to the same subscription is not marked retained.
        pub.publish("paho/retained/live", b"live", qos=1)
        live = late.message(f"the live message ({tag})")
        expect_eq((live.payload, live.retain), (b"live", False), f"live message ({tag})")
        late.disconnect()
    no_send = Client(args, "retain-handling-2", mqtt.MQTTv5)
    no_send.connect()
    no_send.subscribe([("paho/retained/#", SubscribeOptions(qos=1, retainHandling=2))])
    no_send.no_message("a retained message despite Retain Handling 2")
    no_send.disconnect()
    pub.publish("paho/retained/t", b"", qos=1, retain=True)
    after = Client(args, "after-clear", mqtt.MQTTv5)
    after.connect()
    after.subscribe([("paho/retained/#", 1)])
    after.no_message("a retained message after it was cleared")
    after.disconnect()
    pub.disconnect()


def scenario_will_v5(args):
    """DISCONNECT with reason 0x04 publishes the will; a normal DISCONNECT does not."""
    watcher = Client(args, "will-watcher", mqtt.MQTTv5)
    watcher.connect()
    watcher.subscribe([("paho/will/#", 1)])
    leaving = Client(args, "will-0x04", mqtt.MQTTv5)
    leaving.c.will_set("paho/will/a", b"left with will", qos=1)
    leaving.connect()
    leaving.disconnect(ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
    msg = watcher.message("the will after DISCONNECT 0x04")
    expect_eq((msg.topic, msg.payload), ("paho/will/a", b"left with will"), "will")
    normal = Client(args, "will-normal", mqtt.MQTTv5)
    normal.c.will_set("paho/will/b", b"must not appear", qos=1)
    normal.connect()
    normal.disconnect()
    watcher.no_message("a will after a normal DISCONNECT")
    watcher.disconnect()


SCENARIOS = {
    "qos-v311": scenario_qos_v311,
    "qos-v5": scenario_qos_v5,
    "properties-v5": scenario_properties_v5,
    "retained": scenario_retained,
    "will-v5": scenario_will_v5,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", choices=["tcp", "websockets"], default="tcp")
    parser.add_argument("--ws-path", default="/mqtt", help="WebSocket path")
    parser.add_argument("--cafile", help="use TLS, trusting this CA")
    parser.add_argument("--certfile", help="client certificate for TLS")
    parser.add_argument("--keyfile", help="client key for TLS")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    args = parser.parse_args()

    def watchdog(signum, frame):
        print(f"FAIL {args.scenario}: still running after {WATCHDOG}s", file=sys.stderr)
        sys.stderr.flush()
        os._exit(2)

    signal.signal(signal.SIGALRM, watchdog)
    signal.alarm(WATCHDOG)
    try:
        SCENARIOS[args.scenario](args)
    except Mismatch as mismatch:
        print(f"FAIL {args.scenario}: {mismatch}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"FAIL {args.scenario}: cannot talk to {args.host}:{args.port}: {error}",
              file=sys.stderr)
        return 1
    print(f"OK {args.scenario}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
