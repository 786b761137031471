"""The hub's side of delivery: acknowledge what it committed, and say that it is there.

After each commit the ingest hands the batch's :class:`Delivered` messages to :class:`AckPublisher`, which
publishes one :class:`~shared.messages.Ack` per node outbox on ``maskwatch/<site>/<node>/ack`` (QoS 1): the
committed ``seq`` numbers as ranges, and the event ids of committed snapshots. Only then does the node forget
them, so an event the broker loses (a crash before its autosave, a session gone) is sent again.

:func:`presence_will` and :func:`announce` make the hub's intake connection carry its presence, as
Sparkplug's primary host application does: a retained ``online`` on ``maskwatch/hubs/<hub_id>`` after every
connect, ``offline`` as its Last Will. Nodes send only while some hub is online.

Example::

    acks = AckPublisher("hub", lambda topic, payload: client.publish(topic, payload, qos=1))
    acks.publish([Delivered("hq", "door-1", "0123456789abcdef", 7)])
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from shared.messages import MAX_ACK_RANGES, Ack, seq_ranges, utc_now
from shared.mqtt import Will
from shared.topics import NodeTopics, hub_presence

ONLINE = b"online"
OFFLINE = b"offline"


@dataclass(frozen=True)
class Delivered:
    """A node's outbox message in a committed batch: an event's ``(outbox_id, seq)``, or a snapshot's event id."""

    site: str
    node: str
    outbox_id: str | None = None
    seq: int | None = None
    snapshot: str | None = None


class AckPublisher:
    """Publishes the acknowledgements of committed batches.

    :param hub_id: this hub, named in every ack.
    :param publish: ``publish(topic, payload)`` with QoS 1.
    """

    def __init__(self, hub_id: str, publish: Callable[[str, bytes], object]) -> None:
        self.hub_id = hub_id
        self._publish = publish
        self._lock = threading.Lock()
        self.acks = 0
        self.bytes = 0
        self.messages = 0

    def publish(self, delivered: list[Delivered]) -> None:
        """Acknowledge ``delivered`` (already committed): one ack per node outbox, snapshots with the first."""
        seqs: dict[tuple[str, str], dict[str | None, list[int]]] = defaultdict(lambda: defaultdict(list))
        snapshots: dict[tuple[str, str], list[str]] = defaultdict(list)
        for item in delivered:
            if item.snapshot is not None:
                snapshots[(item.site, item.node)].append(item.snapshot)
            elif item.seq is not None:
                seqs[(item.site, item.node)][item.outbox_id].append(item.seq)
        now = utc_now()
        for site, node in {*seqs, *snapshots}:
            by_outbox = seqs.get((site, node)) or {None: []}
            pending_snapshots = snapshots.get((site, node), [])
            for outbox_id, numbers in by_outbox.items():
                ranges = seq_ranges(numbers)
                while True:
                    chunk, ranges = ranges[:MAX_ACK_RANGES], ranges[MAX_ACK_RANGES:]
                    shots, pending_snapshots = pending_snapshots[:MAX_ACK_RANGES], pending_snapshots[MAX_ACK_RANGES:]
                    payload = Ack(hub=self.hub_id, ts=now, outbox_id=outbox_id, seqs=chunk,
                                  snapshots=shots).to_json()
                    self._publish(NodeTopics(site, node).ack, payload)
                    with self._lock:
                        self.acks += 1
                        self.bytes += len(payload)
                    if not ranges and not pending_snapshots:
                        break
        with self._lock:
            self.messages += len(delivered)


def presence_will(hub_id: str) -> Will:
    """The Last Will of a hub's intake connection: retained ``offline`` on its presence topic."""
    return Will(hub_presence(hub_id), OFFLINE)


def announce(publish: Callable[..., object], hub_id: str) -> None:
    """Publish the hub's retained ``online`` (call after every connect, once subscribed)."""
    publish(hub_presence(hub_id), ONLINE, qos=1, retain=True)
