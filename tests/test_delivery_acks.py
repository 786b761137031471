"""The hub's commit acknowledges events, and nodes send only while a hub is online: real Mosquitto, real SQLite,
an in-process hub and the node's own outbox, courier and MQTT client."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.request import urlopen

import pytest
from hub_support import hub_config, make_event, publisher, running_hub

from edge.delivery.acks import HubPresence, numbered
from edge.delivery.outbox import Courier, Outbox
from hub.app import HubApp
from hub.storage.database import Store
from shared.cli import main
from shared.config import BrokerConfig
from shared.messages import Ack, Event, NodeStats, parse, utc_now
from shared.mqtt import MqttClient, Received
from shared.topics import HUB_PRESENCE_FILTER, NodeTopics, hub_presence
from tests.polling import unique_site, wait_until

OUTBOX_ID = "0123456789abcdef"
JPEG = b"\xff\xd8" + b"jpeg" * 10


class Inbox:
    """Messages of one subscription, in arrival order."""

    def __init__(self, broker: BrokerConfig, name: str, topic_filter: str) -> None:
        self.items: queue.Queue[Received] = queue.Queue()
        self.client = MqttClient(broker, name)
        self.client.subscribe(topic_filter, self.items.put, qos=1)
        self.client.start()
        assert self.client.wait_connected(5)

    def next(self, timeout: float = 10.0) -> Received:
        return self.items.get(timeout=timeout)

    def close(self) -> None:
        self.client.stop()


def metrics_page(hub: HubApp) -> str:
    """The running hub's ``/metrics`` page (auth is off in the tests' hub config)."""
    with urlopen(f"http://127.0.0.1:{hub.http_port}/metrics", timeout=10) as response:
        return response.read().decode()


def acked_seqs(acks: list[Ack]) -> set[int]:
    return {seq for ack in acks for first, last in ack.seqs for seq in range(first, last + 1)}


def test_hub_acknowledges_what_it_committed_as_ranges_and_announces_itself(
    broker_config: BrokerConfig, tmp_path: Path
) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site)
    node = NodeTopics(site, "door-1")
    acks = Inbox(broker_config, f"acks-{site}", node.ack)
    presence = Inbox(broker_config, f"presence-{site}", hub_presence(config.hub_id))
    try:
        with running_hub(config) as hub:
            assert presence.next().payload == b"online"
            client = publisher(broker_config, f"node-{site}")
            seqs = [n for n in range(1, 31) if n != 15]
            payloads = {n: numbered(make_event(site, "door-1", n, snapshot=n == 7), OUTBOX_ID)(n) for n in seqs}
            for n in seqs:
                client.publish(node.events, payloads[n], qos=1)
            client.publish(node.snapshot(make_event(site, "door-1", 7).id), JPEG, qos=1).wait_for_publish(5)
            got: list[Ack] = []
            while acked_seqs(got) != set(seqs) or not any(ack.snapshots for ack in got):
                got.append(parse(Ack, acks.next().payload))
            assert all(ack.hub == config.hub_id and ack.outbox_id in (OUTBOX_ID, None) for ack in got)
            assert [ack.snapshots for ack in got if ack.snapshots] == [[make_event(site, "door-1", 7).id]]
            assert sum(len(ack.seqs) for ack in got) <= len(got) * 2  # ranges, not one number per event

            # a repeat (the node did not get the ack in time) is acknowledged again and counted at the hub
            client.publish(node.events, payloads[3], qos=1)
            assert acked_seqs([parse(Ack, acks.next().payload)]) == {3}
            store = Store(config.db_url)
            assert wait_until(lambda: store.counters("events.") == {"events.duplicates": 1}, 10)
            assert hub.ingest is not None and hub.ingest.acks is not None
            published = hub.ingest.acks.acks  # read first: more acks may go out before the page is rendered
            counts = [
                line.split()[1]
                for line in metrics_page(hub).splitlines()
                if line.startswith("maskwatch_acks_published_total ")
            ]
            assert counts and int(float(counts[0])) >= published
            store.close()
            client.stop()
        assert presence.next().payload == b"offline"  # a clean stop publishes the hub's will itself
    finally:
        acks.close()
        presence.close()


def test_node_outbox_figures_reach_metrics_and_the_cli(
    broker_config: BrokerConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site)
    with running_hub(config) as hub:
        client = publisher(broker_config, f"stats-{site}")
        stats = NodeStats(
            site=site,
            node="door-1",
            ts=utc_now(),
            fps=1.0,
            outbox_depth=12,
            outbox_unacked=5,
            outbox_oldest_s=42.5,
            hub_online=True,
        )
        client.publish(NodeTopics(site, "door-1").stats, stats.to_json(), qos=1).wait_for_publish(5)
        store = Store(config.db_url)
        labels = f'{{site="{site}",node="door-1"}}'
        assert wait_until(lambda: f"maskwatch_node_outbox_unacked{labels} 5" in metrics_page(hub), 10)
        page = metrics_page(hub)
        assert f"maskwatch_node_outbox_depth{labels} 12" in page
        assert f"maskwatch_node_outbox_oldest_seconds{labels} 42.5" in page
        store.close()
        client.stop()
    assert main(["nodes", "--db", config.db_url, "--site", site]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert "OUTBOX_UNACKED" in header and row.split()[-3:] == ["12", "5", "42.5"]


class Node:
    """The node's delivery parts as the edge app wires them, on a real broker."""

    def __init__(self, broker: BrokerConfig, site: str, path: Path) -> None:
        self.topics = NodeTopics(site, "door-1")
        self.outbox = Outbox(path)
        self.presence = HubPresence(on_online=lambda: self.courier.reconnected())
        self.client = MqttClient(
            broker,
            f"edge-{site}",
            persistent=True,
            on_publish=lambda mid: self.courier.acknowledged(mid),
            on_refused=lambda mid, reason: self.courier.refused(mid, reason),
            on_connect=lambda: self.courier.reconnected(),
        )
        self.courier = Courier(
            self.outbox,
            lambda t, p, q: self.client.publish(t, p, qos=q),
            lambda: self.client.connected,
            topics=self.topics,
            delivery="hub",
            may_send=lambda: self.presence.online,
            resend_after_s=1,
            resend_max_s=2,
        )
        self.client.subscribe(self.topics.ack, self.courier.receive_ack)
        self.client.subscribe(HUB_PRESENCE_FILTER, self.presence.receive)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.courier.run, args=(self._stop,), name="delivery")

    def start(self) -> Node:
        self.client.start()
        assert self.client.wait_connected(5)
        self._thread.start()
        return self

    def write(self, n: int) -> None:
        event = make_event(self.topics.site, self.topics.node, n)
        self.outbox.put(self.topics.events, numbered(event, self.outbox.outbox_id))
        self.courier.notify()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.stop()
        self.outbox.close()


@pytest.fixture
def node(broker_config: BrokerConfig, tmp_path: Path) -> Iterator[Node]:
    started = Node(broker_config, unique_site(), tmp_path / "outbox.sqlite").start()
    yield started
    started.close()


def test_node_keeps_events_until_a_hub_commits_them(node: Node, broker_config: BrokerConfig, tmp_path: Path) -> None:
    config = hub_config(broker_config, tmp_path, node.topics.site, hub_id=unique_site("hub"))
    events = Inbox(broker_config, f"events-{node.topics.site}", node.topics.events)
    try:
        for n in range(20):
            node.write(n)
        # no hub online: nothing is published, everything is kept
        assert not wait_until(lambda: node.courier.published > 0, 1.5)
        assert node.outbox.depth == 20 and events.items.empty()
        # an ack for another outbox (e.g. a moved-aside file) removes nothing
        publisher_client = publisher(broker_config, f"forger-{node.topics.site}")
        forged = Ack(hub="other", ts=utc_now(), outbox_id="f" * 16, seqs=[(1, 20)])
        publisher_client.publish(node.topics.ack, forged.to_json(), qos=1).wait_for_publish(5)
        assert not wait_until(lambda: node.outbox.depth < 20, 1.0)
        publisher_client.stop()

        with running_hub(config):
            assert wait_until(lambda: node.outbox.depth == 0, 30), node.outbox.depth
            assert node.courier.acknowledged_total == 20 and node.courier.unacked == 0
            for n in range(20, 30):
                node.write(n)
            assert wait_until(lambda: node.outbox.depth == 0, 30)
        # the hub left (its will): new events stay
        assert wait_until(lambda: not node.presence.online, 10)
        node.write(30)
        assert not wait_until(lambda: node.outbox.depth == 0, 1.5)
        store = Store(config.db_url)
        assert store.counters("messages.")["messages.events"] >= 30
        store.close()
    finally:
        events.close()


def test_with_two_hubs_sharing_the_load_any_hubs_ack_counts(
    node: Node, broker_config: BrokerConfig, tmp_path: Path
) -> None:
    site = node.topics.site
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = hub_config(broker_config, tmp_path / "a", site, hub_id=unique_site("hub"))
    second = hub_config(broker_config, tmp_path / "b", site, hub_id=unique_site("hub"))
    with running_hub(first) as hub_a, running_hub(second) as hub_b:
        for n in range(60):
            node.write(n)
        assert wait_until(lambda: node.outbox.depth == 0, 30), node.outbox.depth
        assert hub_a.ingest is not None and hub_b.ingest is not None
        assert hub_a.ingest.acks is not None and hub_b.ingest.acks is not None
        assert hub_a.ingest.acks.acks > 0 and hub_b.ingest.acks.acks > 0
        assert hub_a.ingest.stats.received + hub_b.ingest.stats.received >= 60


def test_unacknowledged_events_are_resent_in_order_with_backoff(node: Node, broker_config: BrokerConfig) -> None:
    """A 'hub' that announces itself and never acknowledges: the same events come again, oldest first (after 1 s,
    then 2 s: :class:`edge.delivery.acks.AckTracker`), and nothing leaves the outbox."""
    site = node.topics.site
    events = Inbox(broker_config, f"events-{site}", node.topics.events)
    fake_hub = publisher(broker_config, f"silent-hub-{site}")
    presence = hub_presence(unique_site("silent"))
    try:
        for n in range(3):
            node.write(n)
        fake_hub.publish(presence, b"online", qos=1, retain=True).wait_for_publish(5)
        ids = [parse(Event, events.next().payload).id for _ in range(9)]
        first = [make_event(site, "door-1", n).id for n in range(3)]
        assert ids == first * 3
        assert node.outbox.depth == 3 and node.courier.unacked == 3
    finally:
        fake_hub.publish(presence, b"", qos=1, retain=True).wait_for_publish(5)
        fake_hub.stop()
        events.close()
