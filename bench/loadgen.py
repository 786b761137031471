"""Simulated Maskwatch nodes: lightweight publishers of the real contract, for fault tests and scale benchmarks.

Each simulated node has its own topics (``NodeTopics(site, "<prefix>-NNN")``), publishes a retained ``online``
on every connect, and QoS 1 ``new`` events (optionally followed by ``end``) with unique ids and ``ts`` stamped at
publish time. Nodes ride on ``connections`` MQTT connections (one per node by default, each then with its own
Last Will ``offline``; fewer connections make a hundred nodes cheap). Everything goes through
:class:`shared.mqtt.MqttClient`, so paho re-sends what the broker did not acknowledge after a reconnect.

Example::

    gen = LoadGen(BrokerConfig(port=1883), "sim", nodes=100, rate_per_node=10, connections=10)
    gen.start()
    gen.run(seconds=60)
    gen.wait_acked(30)
    gen.stop()

From the shell (writes the ids it sent, one per line, when ``--ids`` is given)::

    python bench/loadgen.py --broker 127.0.0.1:1883 --site sim --nodes 100 --rate 10 --seconds 60
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.config import BrokerConfig, parse_host_port
from shared.messages import Event, utc_now
from shared.mqtt import MqttClient, Will
from shared.topics import NodeTopics

log = logging.getLogger(__name__)


class Connection:
    """One MQTT connection carrying one or more simulated nodes; counts publishes and PUBACKs."""

    def __init__(self, broker: BrokerConfig, client_id: str, nodes: list[NodeTopics], *, persistent: bool) -> None:
        self.nodes = nodes
        self.published = 0
        self.acked = 0
        self._lock = threading.Lock()
        will = Will(nodes[0].status, b"offline") if len(nodes) == 1 else None
        self.client = MqttClient(
            broker, client_id, will=will, persistent=persistent, on_connect=self._announce, on_publish=self._on_ack
        )

    def _announce(self) -> None:  # network thread: publish only, never wait
        for topics in self.nodes:
            self.publish(topics.status, b"online", retain=True)

    def _on_ack(self, mid: int) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        with self._lock:
            self.published += 1
        self.client.publish(topic, payload, qos=1, retain=retain)

    @property
    def pending(self) -> int:
        """Messages published and not yet acknowledged (including ``online`` announcements)."""
        with self._lock:
            return self.published - self.acked

    def stop(self, *, clean: bool) -> None:
        if clean and len(self.nodes) > 1:
            for topics in self.nodes:
                self.client.publish(topics.status, b"offline", qos=1, retain=True)
        self.client.stop(publish_will=clean)


class LoadGen:
    """Simulated nodes publishing events at a steady rate.

    :param broker: the broker to publish to.
    :param site: site id of every simulated node.
    :param nodes: how many nodes; they are named ``<prefix>-000`` ... .
    :param rate_per_node: events per second per node in :meth:`run`.
    :param connections: MQTT connections to spread the nodes over (default: one per node).
    :param prefix: node id prefix.
    :param lifecycle: also publish an ``end`` for each event id (two messages, one stored row).
    :param persistent: persistent MQTT sessions (so the broker keeps in-flight state across restarts).
    :param no_mask_every: every n-th event is ``no_mask`` (0: never), so alerts flow too.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        site: str,
        nodes: int,
        *,
        rate_per_node: float = 1.0,
        connections: int | None = None,
        prefix: str = "sim",
        lifecycle: bool = False,
        persistent: bool = False,
        no_mask_every: int = 10,
    ) -> None:
        self.site = site
        self.node_topics = [NodeTopics(site, f"{prefix}-{i:03d}") for i in range(nodes)]
        self.rate_per_node = rate_per_node
        self.lifecycle = lifecycle
        self.no_mask_every = no_mask_every
        count = max(1, min(connections or nodes, nodes))
        tag = uuid.uuid4().hex[:6]
        self.connections = [
            Connection(broker, f"loadgen-{site}-{tag}-{c}", self.node_topics[c::count], persistent=persistent)
            for c in range(count)
        ]
        self._route = {t.node: conn for conn in self.connections for t in conn.nodes}
        self.ids: list[str] = []
        self._run_tag = tag
        self._stop = threading.Event()

    @property
    def nodes(self) -> list[str]:
        return [t.node for t in self.node_topics]

    def start(self, timeout: float = 10.0) -> LoadGen:
        """Connect every connection (each announces its nodes ``online``)."""
        for conn in self.connections:
            conn.client.start()
        for conn in self.connections:
            if not conn.client.wait_connected(timeout):
                raise TimeoutError(f"loadgen connection {conn.client.client_id} did not connect in {timeout} s")
        return self

    def event(self, topics: NodeTopics, kind: str = "new", event_id: str | None = None) -> tuple[str, bytes]:
        """A valid event of ``topics``' node (a fresh id unless given), stamped now."""
        n = len(self.ids)
        event_id = event_id or f"{topics.node}-{self._run_tag}-{n:07d}"
        label = "no_mask" if self.no_mask_every and n % self.no_mask_every == 0 else "mask"
        payload = Event(
            type=kind,
            id=event_id,
            site=self.site,
            node=topics.node,
            ts=utc_now(),
            label=label,
            score=0.9,
            box=(10, 20, 64, 64),
            angle=0.0,
            frame=n,
        ).to_json()
        return event_id, payload

    def publish_event(self, node: str | None = None) -> str:
        """Publish one event (``new``, and ``end`` with ``lifecycle``) of ``node`` (round robin by default)."""
        topics = (
            next(t for t in self.node_topics if t.node == node)
            if node
            else self.node_topics[len(self.ids) % len(self.node_topics)]
        )
        event_id, payload = self.event(topics)
        conn = self._route[topics.node]
        conn.publish(topics.events, payload)
        if self.lifecycle:
            conn.publish(topics.events, self.event(topics, "end", event_id)[1])
        self.ids.append(event_id)
        return event_id

    def run(self, seconds: float | None = None, *, count: int | None = None) -> int:
        """Publish at ``rate_per_node`` per node for ``seconds`` or until ``count`` events; return how many.

        Paced on a monotonic clock in ticks of 10 ms; stops early when :meth:`halt` is called.
        """
        rate = self.rate_per_node * len(self.node_topics)
        started = time.monotonic()
        sent = 0
        while not self._stop.is_set():
            elapsed = time.monotonic() - started
            if (seconds is not None and elapsed >= seconds) or (count is not None and sent >= count):
                break
            due = int(elapsed * rate) + 1
            if count is not None:
                due = min(due, count)
            while sent < due:
                self.publish_event()
                sent += 1
            self._stop.wait(0.01)
        return sent

    def run_in_background(self, seconds: float | None = None, *, count: int | None = None) -> threading.Thread:
        """:meth:`run` in a daemon thread (``halt()`` then ``join()`` to stop it early)."""
        thread = threading.Thread(
            target=self.run, kwargs={"seconds": seconds, "count": count}, name="loadgen", daemon=True
        )
        thread.start()
        return thread

    def halt(self) -> None:
        """Make a running :meth:`run` return."""
        self._stop.set()

    @property
    def pending(self) -> int:
        """Messages not yet acknowledged by the broker, over every connection."""
        return sum(conn.pending for conn in self.connections)

    def wait_acked(self, timeout: float) -> bool:
        """Wait until the broker acknowledged every message published so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pending == 0:
                return True
            time.sleep(0.05)
        return self.pending == 0

    def stop(self, *, clean: bool = True) -> None:
        """Disconnect; ``clean`` publishes ``offline`` for every node first."""
        self.halt()
        for conn in self.connections:
            conn.stop(clean=clean)


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Publish events from simulated Maskwatch nodes.")
    parser.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT")
    parser.add_argument("--site", default="sim")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1.0, help="events per second per node")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, help="MQTT connections (default: one per node)")
    parser.add_argument("--ids", type=Path, help="write the event ids sent here, one per line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = parse_host_port(args.broker)
    gen = LoadGen(
        BrokerConfig(host=host, port=port), args.site, args.nodes, rate_per_node=args.rate, connections=args.connections
    ).start()
    sent = gen.run(args.seconds)
    acked = gen.wait_acked(30)
    gen.stop()
    if args.ids:
        _write_lines(args.ids, gen.ids)
    print(f"published {sent} events from {args.nodes} nodes; all acknowledged: {acked}")
    return 0 if acked else 1


if __name__ == "__main__":
    sys.exit(main())
