"""The MQTT wrapper against a real private Mosquitto: end to end, will, reconnect."""

from __future__ import annotations

import queue
import time

import paho.mqtt.client as paho
import pytest

from devsite.broker import LocalMosquitto
from shared.config import BrokerConfig
from shared.messages import Event, parse, utc_now
from shared.mqtt import MqttClient, Received, Will, _acknowledged
from shared.topics import NodeTopics, node_filter


def make_event(n: int) -> Event:
    return Event(
        type="new",
        id=f"hq-n1-{n:04d}",
        site="hq",
        node="n1",
        ts=utc_now(),
        label="mask",
        score=0.9,
        box=(1, 2, 30, 30),
        angle=0.0,
    )


def collector(client: MqttClient, topic_filter: str) -> queue.Queue[Received]:
    inbox: queue.Queue[Received] = queue.Queue()
    client.subscribe(topic_filter, inbox.put, qos=1)
    return inbox


def test_event_end_to_end(broker_config: BrokerConfig) -> None:
    topics = NodeTopics("hq", "n1")
    sub = MqttClient(broker_config, "test-sub")
    inbox = collector(sub, node_filter("events", "hq"))
    sub.start()
    pub = MqttClient(broker_config, "test-pub")
    pub.start()
    try:
        assert sub.wait_connected(5) and pub.wait_connected(5)
        time.sleep(0.2)
        sent = make_event(1)
        info = pub.publish(topics.events, sent, qos=1)
        info.wait_for_publish(5)
        got = inbox.get(timeout=5)
        assert got.topic == topics.events
        assert parse(Event, got.payload) == sent
    finally:
        pub.stop()
        sub.stop()


def test_will_on_stop_and_retained_status(broker_config: BrokerConfig) -> None:
    topics = NodeTopics("hq", "n2")
    node = MqttClient(
        broker_config,
        "test-node",
        will=Will(topics.status, b"offline"),
        on_connect=lambda: node.publish(topics.status, b"online", qos=1, retain=True),
    )
    node.start()
    assert node.wait_connected(5)
    watcher = MqttClient(broker_config, "test-watch")
    inbox = collector(watcher, topics.status)
    watcher.start()
    try:
        assert inbox.get(timeout=5).payload == b"online"
        node.stop()
        assert inbox.get(timeout=5).payload == b"offline"
    finally:
        watcher.stop()


def test_persistent_session_survives_broker_restart(restartable_mosquitto: LocalMosquitto) -> None:
    cfg = BrokerConfig(
        host=restartable_mosquitto.host, port=restartable_mosquitto.port, reconnect_min_s=0.1, reconnect_max_s=0.5
    )
    sub = MqttClient(cfg, "test-persistent", persistent=True)
    inbox = collector(sub, node_filter("events"))
    sub.start()
    assert sub.wait_connected(5)
    time.sleep(0.2)
    sub.stop(publish_will=False)
    pub = MqttClient(cfg, "test-pub-2")
    pub.start()
    assert pub.wait_connected(5)
    pub.publish(NodeTopics("hq", "n1").events, make_event(7), qos=1).wait_for_publish(5)
    pub.stop()
    restartable_mosquitto.restart()
    sub2 = MqttClient(cfg, "test-persistent", persistent=True)
    inbox = collector(sub2, node_filter("events"))
    sub2.start()
    try:
        got = inbox.get(timeout=10)
        assert parse(Event, got.payload).id == "hq-n1-0007"
        assert sub2.connects == 1
    finally:
        sub2.stop()


def test_reconnects_after_broker_restart(restartable_mosquitto: LocalMosquitto) -> None:
    cfg = BrokerConfig(
        host=restartable_mosquitto.host, port=restartable_mosquitto.port, reconnect_min_s=0.1, reconnect_max_s=0.5
    )
    client = MqttClient(cfg, "test-reconnect")
    inbox = collector(client, "maskwatch/+/+/stats")
    client.start()
    try:
        assert client.wait_connected(5)
        restartable_mosquitto.restart(down_s=0.5)
        deadline = time.monotonic() + 10
        while client.connects < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.connects == 2
        time.sleep(0.2)
        client.publish(NodeTopics("hq", "n1").stats, b"{}", qos=1)
        assert inbox.get(timeout=5).payload == b"{}"
    finally:
        client.stop()


def test_handler_errors_do_not_stop_delivery(broker_config: BrokerConfig) -> None:
    got: queue.Queue[bytes] = queue.Queue()

    def handler(msg: Received) -> None:
        if msg.payload == b"boom":
            raise ValueError("boom")
        got.put(msg.payload)

    client = MqttClient(broker_config, "test-handler")
    client.subscribe("maskwatch/hq/n9/stats", handler)
    client.start()
    try:
        assert client.wait_connected(5)
        time.sleep(0.2)
        client.publish("maskwatch/hq/n9/stats", b"boom", qos=1)
        client.publish("maskwatch/hq/n9/stats", b"fine", qos=1)
        assert got.get(timeout=5) == b"fine"
    finally:
        client.stop()


def test_refused_connection_reported(broker_config: BrokerConfig) -> None:
    with LocalMosquitto(anonymous=False) as closed:
        cfg = BrokerConfig(host=closed.host, port=closed.port, reconnect_min_s=0.2, reconnect_max_s=0.5)
        client = MqttClient(cfg, "test-refused")
        client.start()
        try:
            assert not client.wait_connected(1.5)
            assert client.last_error is not None
        finally:
            client.stop(publish_will=False)


def test_stop_delivers_what_was_published_before_it(broker_config: BrokerConfig) -> None:
    """QoS 1 messages published right before ``stop()`` reach the broker: more than paho sends at once (its
    in-flight window) are queued in the client, and a disconnect without waiting drops what is still queued."""
    topic = NodeTopics("hq", "burst").events
    sub = MqttClient(broker_config, "test-burst-sub")
    inbox = collector(sub, topic)
    sub.start()
    pub = MqttClient(broker_config, "test-burst-pub")
    pub.start()
    try:
        assert sub.wait_connected(5) and pub.wait_connected(5)
        time.sleep(0.2)
        for n in range(500):
            pub.publish(topic, f"{n}", qos=1)
        pub.stop()
        got = set()
        while len(got) < 500:
            try:
                got.add(inbox.get(timeout=5).payload)
            except queue.Empty:
                break
        assert len(got) == 500
    finally:
        sub.stop()


def test_a_publish_paho_gave_up_on_counts_as_not_acknowledged() -> None:
    """paho marks a QoS 0 message lost with its connection by setting an error ``rc``, after which its own
    ``is_published()`` raises; ``stop()`` counts such a message as lost instead of raising."""
    info = paho.MQTTMessageInfo(1)
    info.rc = paho.MQTT_ERR_CONN_LOST
    with pytest.raises(RuntimeError):
        info.is_published()
    assert _acknowledged(info) is False
