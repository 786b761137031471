"""The shipped Mosquitto config, ACL, logins and TLS listener, on a real broker.

Every check that something is *not* delivered ends with a sentinel: the same publisher
then sends an allowed message and the test waits for it, so anything the broker had let
through would have arrived first (one connection's messages are delivered in order).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from deploy_site import ALERTS, HOMEASSISTANT, HUB, MAKE_USERS, ShippedSite, make_certs, run_script

from shared.config import BrokerConfig
from shared.mqtt import MqttClient, Received
from shared.topics import (
    HA_STATUS,
    NodeTopics,
    alerts,
    alerts_filter,
    ha_discovery,
    hub_presence,
    node_filter,
    shared_subscription,
    site_command,
)

DOOR1, DOOR2, LAB = NodeTopics("hq", "door-1"), NodeTopics("hq", "door-2"), NodeTopics("lab", "cam-1")
NODES = ("hq/door-1", "hq/door-2", "lab/cam-1")
EVERYTHING = "#"  # the ACL, not the filter, decides what arrives


@pytest.fixture(scope="module")
def site() -> Iterator[ShippedSite]:
    shipped = ShippedSite(NODES).start()
    yield shipped
    shipped.close()


class Inbox:
    """Collects what a subscription receives; :meth:`wait_for` blocks until a topic/payload shows up."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()

    def __call__(self, msg: Received) -> None:
        with self._cond:
            self.messages.append((msg.topic, msg.payload))
            self._cond.notify_all()

    def wait_for(self, topic: str, payload: bytes, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: (topic, payload) in self.messages, timeout)

    def topics(self, *, besides: bytes = b"probe") -> set[str]:
        """Topics received, leaving out readiness probes."""
        with self._cond:
            return {topic for topic, payload in self.messages if not payload.startswith(besides)}


@contextmanager
def client(config: BrokerConfig, client_id: str, subscribe: str | None = None) -> Iterator[tuple[MqttClient, Inbox]]:
    """A connected client (asserted), optionally subscribed to one filter."""
    mqtt = MqttClient(config, client_id)
    inbox = Inbox()
    if subscribe:
        mqtt.subscribe(subscribe, inbox, qos=1)
    mqtt.start()
    try:
        assert mqtt.wait_connected(5), f"{config.username} could not connect: {mqtt.last_error}"
        yield mqtt, inbox
    finally:
        mqtt.stop()


def send(publisher: MqttClient, topic: str, payload: bytes, *, retain: bool = False) -> None:
    """Publish with QoS 1 and wait for the broker's PUBACK (also for a publish it denies)."""
    info = publisher.publish(topic, payload, qos=1, retain=retain)
    info.wait_for_publish(5)
    assert info.is_published()


def ready(inbox: Inbox, publisher: MqttClient, topic: str) -> None:
    """Wait until ``inbox``'s subscription is active, by probing ``topic`` until it arrives."""
    for attempt in range(20):
        probe = f"probe-{attempt}".encode()
        send(publisher, topic, probe)
        if inbox.wait_for(topic, probe, timeout=0.5):
            return
    raise AssertionError(f"subscription never saw {topic}")


def not_connected(config: BrokerConfig, client_id: str, timeout: float = 5.0) -> MqttClient:
    """Assert that the broker turns this client away (refused CONNACK or failed TLS handshake)."""
    mqtt = MqttClient(config, client_id)
    mqtt.start()
    deadline = time.monotonic() + timeout
    try:
        while mqtt.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mqtt.last_error is not None, "neither connected nor refused"
        assert mqtt.connects == 0 and not mqtt.connected
    finally:
        mqtt.stop()
    return mqtt


def test_anonymous_and_wrong_password_are_refused(site: ShippedSite) -> None:
    anonymous = not_connected(site.login(None), "test-anonymous")
    assert anonymous.last_error and "not authori" in anonymous.last_error.lower()
    wrong = not_connected(site.login("hq/door-1", password="guess"), "test-wrong-password")
    assert wrong.last_error and "not authori" in wrong.last_error.lower()
    # a node's password does not open another node's login
    stolen = site.credentials("hq/door-2")["MASKWATCH_BROKER__PASSWORD"]
    assert not_connected(site.login("hq/door-1", password=stolen), "test-swapped").connects == 0


def test_node_publishes_its_own_tree_and_the_hub_reads_it(site: ShippedSite) -> None:
    own = [DOOR1.status, DOOR1.events, DOOR1.state, DOOR1.stats, DOOR1.snapshot("ev-1"), DOOR1.response("servo")]
    with (
        client(site.login(HUB), "test-hub", subscribe=EVERYTHING) as (_hub, seen),
        client(site.login("hq/door-1"), "maskwatch-edge-hq-door-1") as (node, _),
    ):
        ready(seen, node, DOOR1.stats)
        for topic in own:
            send(node, topic, b"from door-1")
        for topic in own:
            assert seen.wait_for(topic, b"from door-1"), topic


def test_node_cannot_publish_to_other_nodes_or_to_commands(site: ShippedSite, caplog: pytest.LogCaptureFixture) -> None:
    forbidden = [
        DOOR2.events,
        DOOR2.status,
        DOOR2.state,
        LAB.events,
        DOOR2.snapshot("ev-1"),
        DOOR2.response("servo"),
        DOOR1.cmd("servo"),
        DOOR2.cmd("servo"),
        site_command("hq", "servo"),
        DOOR1.desired,
        alerts("hq"),
        ha_discovery("binary_sensor", "hq_door_1_no_mask"),
    ]
    with (
        client(site.login(HUB), "test-hub", subscribe=EVERYTHING) as (_hub, seen),
        client(site.login("hq/door-1"), "maskwatch-edge-hq-door-2") as (node, _),
    ):
        # the client id of another node changes nothing: the username decides
        ready(seen, node, DOOR1.events)
        for topic in forbidden:
            send(node, topic, b"forged")
        send(node, DOOR1.events, b"sentinel")
        assert seen.wait_for(DOOR1.events, b"sentinel")
    assert seen.topics() == {DOOR1.events}
    # with MQTT 5 the publisher learns it too: one error per refused topic, naming it
    refused = [r.getMessage() for r in caplog.records if "refused publish to" in r.getMessage()]
    assert len(refused) == len(forbidden) and all("Not authorized" in message for message in refused)
    assert {message.split("publish to ")[1].split(":")[0] for message in refused} == set(forbidden)


def test_node_reads_only_its_own_and_its_sites_commands(site: ShippedSite) -> None:
    mine = {DOOR1.cmd("servo"), site_command("hq", "detect"), DOOR1.desired}
    others = [DOOR2.cmd("servo"), site_command("lab", "detect"), DOOR2.desired, alerts("hq")]
    with (
        client(site.login(HUB), "test-hub") as (hub, _),
        client(site.login("hq/door-2"), "test-door-2") as (door2, _),
        client(site.login("hq/door-1"), "test-door-1", subscribe=EVERYTHING) as (_node, seen),
    ):
        ready(seen, hub, DOOR1.cmd("threshold"))
        send(door2, DOOR2.events, b"door-2 event")
        for topic in [*others, *mine]:
            send(hub, topic, b"{}")
        send(hub, DOOR1.cmd("snapshot"), b"sentinel")
        assert seen.wait_for(DOOR1.cmd("snapshot"), b"sentinel")
    assert seen.topics() == mine | {DOOR1.cmd("snapshot")}


def test_hub_commands_nodes_and_publishes_alerts_desired_and_discovery(site: ShippedSite) -> None:
    discovery = ha_discovery("binary_sensor", "hq_door_1_no_mask")
    with (
        client(site.login("hq/door-1"), "test-door-1", subscribe=EVERYTHING) as (_node, node_seen),
        client(site.login(ALERTS), "test-alerts", subscribe=alerts_filter()) as (_reader, alerts_seen),
        client(site.login(HUB), "test-hub-ha", subscribe="homeassistant/#") as (_ha, ha_seen),
        client(site.login(HUB), "test-hub") as (hub, _),
    ):
        ready(node_seen, hub, DOOR1.cmd("detect"))
        ready(alerts_seen, hub, alerts("hq"))
        send(hub, DOOR1.cmd("servo"), b'{"angle": 10}')
        send(hub, site_command("hq", "threshold"), b'{"value": 0.6}')
        send(hub, DOOR1.desired, b'{"threshold": 0.6}', retain=True)
        send(hub, alerts("hq"), b"alert")
        send(hub, discovery, b"{}")
        assert node_seen.wait_for(DOOR1.cmd("servo"), b'{"angle": 10}')
        assert node_seen.wait_for(site_command("hq", "threshold"), b'{"value": 0.6}')
        assert node_seen.wait_for(DOOR1.desired, b'{"threshold": 0.6}')
        assert alerts_seen.wait_for(alerts("hq"), b"alert")
        assert ha_seen.wait_for(discovery, b"{}")
        send(hub, DOOR1.desired, b"", retain=True)  # clear the retained message


def test_hub_acknowledges_and_announces_itself_to_nodes_that_cannot_forge_either(site: ShippedSite) -> None:
    presence = hub_presence("hub-a")
    with (
        client(site.login(HUB), "test-hub") as (hub, _),
        client(site.login("hq/door-2"), "test-door-2") as (door2, _),
        client(site.login("hq/door-1"), "test-door-1", subscribe=EVERYTHING) as (_node, seen),
    ):
        ready(seen, hub, DOOR1.ack)
        send(hub, DOOR2.ack, b"for door-2")
        send(door2, DOOR1.ack, b"forged")
        send(door2, presence, b"offline")
        send(hub, presence, b"online")
        send(hub, DOOR1.ack, b"sentinel")
        assert seen.wait_for(DOOR1.ack, b"sentinel")
        assert seen.wait_for(presence, b"online")
    assert seen.topics() == {DOOR1.ack, presence}
    assert (DOOR1.ack, b"forged") not in seen.messages and (presence, b"offline") not in seen.messages


def test_hub_reads_through_a_shared_subscription(site: ShippedSite) -> None:
    with (
        client(site.login(HUB), "test-hub-a", subscribe=shared_subscription("hubs", node_filter("events"))) as (
            _hub,
            seen,
        ),
        client(site.login("lab/cam-1"), "test-lab") as (node, _),
    ):
        ready(seen, node, LAB.events)
        send(node, LAB.events, b"event")
        assert seen.wait_for(LAB.events, b"event")


def test_alerts_reader_reads_alerts_and_nothing_else(site: ShippedSite) -> None:
    with (
        client(site.login(HUB), "test-hub", subscribe=EVERYTHING) as (hub, hub_seen),
        client(site.login("hq/door-1"), "test-door-1") as (node, _),
        client(site.login(ALERTS), "test-alerts", subscribe=EVERYTHING) as (reader, seen),
    ):
        ready(seen, hub, alerts("lab"))
        send(node, DOOR1.events, b"event")
        send(node, DOOR1.status, b"online")
        for topic in (DOOR1.cmd("servo"), DOOR1.desired, ha_discovery("sensor", "hq_door_1_fps")):
            send(hub, topic, b"{}")
        send(hub, alerts("hq"), b"alert")
        assert seen.wait_for(alerts("hq"), b"alert")
        # and it cannot publish anything, an alert included
        send(reader, alerts("hq"), b"forged alert")
        send(reader, DOOR1.cmd("servo"), b"forged command")
        send(hub, alerts("lab"), b"sentinel")
        assert hub_seen.wait_for(alerts("lab"), b"sentinel") and seen.wait_for(alerts("lab"), b"sentinel")
    assert seen.topics() == {alerts("hq"), alerts("lab")}
    assert (alerts("hq"), b"forged alert") not in hub_seen.messages
    assert DOOR1.cmd("servo") in hub_seen.topics() and (DOOR1.cmd("servo"), b"forged command") not in hub_seen.messages


def test_home_assistant_sees_its_entities_and_sends_only_their_commands(site: ShippedSite) -> None:
    discovery = ha_discovery("number", "hq_door_1_threshold")
    with (
        client(site.login(HUB), "test-hub", subscribe=EVERYTHING) as (hub, hub_seen),
        client(site.login("hq/door-1"), "test-door-1") as (node, _),
        client(site.login(HOMEASSISTANT), "test-ha", subscribe=EVERYTHING) as (ha, seen),
    ):
        ready(seen, hub, discovery)
        for topic in (DOOR1.status, DOOR1.state, DOOR1.stats, DOOR1.events, DOOR1.snapshot("ev-1")):
            send(node, topic, b"{}")
        send(hub, DOOR1.summary, b"{}")
        send(hub, DOOR1.cmd("detect"), b"{}")
        send(ha, HA_STATUS, b"online")
        allowed = {DOOR1.cmd("threshold"), DOOR1.cmd("servo"), site_command("hq", "servo")}
        for topic in allowed:
            send(ha, topic, b"from ha")
        for topic in (DOOR1.cmd("snapshot"), site_command("hq", "detect"), DOOR1.events, alerts("hq")):
            send(ha, topic, b"forged")
        send(hub, discovery, b"sentinel")
        assert seen.wait_for(discovery, b"sentinel") and hub_seen.wait_for(discovery, b"sentinel")
    # commands are write-only for HA; snapshots (faces) stay out of its reach
    assert seen.topics() == {discovery, HA_STATUS, DOOR1.status, DOOR1.state, DOOR1.stats, DOOR1.events, DOOR1.summary}
    assert {(topic, b"from ha") for topic in allowed} <= set(hub_seen.messages)
    assert not [topic for topic, payload in hub_seen.messages if payload == b"forged"]


def test_make_users_keeps_passwords_and_revokes(site: ShippedSite, tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    run_script(MAKE_USERS, "-o", str(out), "hq/door-1")
    first = (out / "credentials" / "hq.door-1.env").read_text()
    run_script(MAKE_USERS, "-o", str(out), "hq/door-1", "hq/door-2")
    assert (out / "credentials" / "hq.door-1.env").read_text() == first
    assert len((out / "passwd").read_text().splitlines()) == 5  # hub, alerts, HA, two nodes
    assert "user hq/door-2\ntopic read maskwatch/hq/all/cmd/#" in (out / "acl").read_text()
    run_script(MAKE_USERS, "-o", str(out), "--revoke", "hq/door-2")
    assert "hq/door-2" not in (out / "passwd").read_text() + (out / "acl").read_text()
    assert oct((out / "passwd").stat().st_mode & 0o777) == "0o600"
    for bad in ("hq", "hq/all", "HQ/door", "hq/door/x", "hq/door 1", "hq\nevil/door", "hq/" + "a" * 65, "/door"):
        proc = subprocess.run(["sh", str(MAKE_USERS), "-o", str(out), bad], capture_output=True, text=True)
        assert proc.returncode == 2 and "make-users:" in proc.stderr, bad


def test_tls_listener_with_the_site_ca(site: ShippedSite) -> None:
    with (
        client(site.login(HUB, tls=True), "test-hub-tls", subscribe=node_filter("events")) as (_hub, seen),
        client(site.login("hq/door-1", tls=True, host="localhost"), "test-door-1-tls") as (node, _),
    ):
        ready(seen, node, DOOR1.events)
        send(node, DOOR1.events, b"over tls")
        assert seen.wait_for(DOOR1.events, b"over tls")
    # TLS does not bypass authentication
    not_connected(site.login(None, tls=True), "test-anonymous-tls")


def test_tls_refuses_a_server_certificate_from_another_ca(site: ShippedSite, tmp_path: Path) -> None:
    other_ca = make_certs(tmp_path / "other", "localhost", "127.0.0.1")
    mqtt = not_connected(site.login("hq/door-1", tls=True, ca=other_ca), "test-other-ca")
    assert mqtt.last_error and "CERTIFICATE_VERIFY_FAILED" in mqtt.last_error
    # and a client that insists on TLS does not fall back to the plain listener
    plain_port = site.login(HUB).port
    not_connected(site.login("hq/door-1", tls=True).model_copy(update={"port": plain_port}), "test-tls-on-plain")


def test_only_the_hub_pushes_model_chunks_and_each_node_reads_only_its_own(site: ShippedSite) -> None:
    sha = "ab" * 32
    with (
        client(site.login(HUB), "test-hub") as (hub, _),
        client(site.login("hq/door-2"), "test-door-2") as (door2, _),
        client(site.login("hq/door-1"), "test-door-1", subscribe=EVERYTHING) as (_node, seen),
    ):
        ready(seen, hub, DOOR1.cmd("model"))
        send(hub, DOOR2.model(sha), b"chunk for door-2")
        send(door2, DOOR1.model(sha), b"forged chunk")
        send(hub, DOOR1.model(sha), b"chunk")
        assert seen.wait_for(DOOR1.model(sha), b"chunk")
    assert seen.topics() == {DOOR1.model(sha)}
    assert (DOOR1.model(sha), b"forged chunk") not in seen.messages
