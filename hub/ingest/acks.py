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
    delivered = Delivered()
    delivered.event("hq", "door-1", "0123456789abcdef", 7)
    acks.publish(delivered)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from shared.messages import MAX_ACK_RANGES, OFFLINE, ONLINE, Ack, seq_ranges, utc_now
from shared.mqtt import Will
from shared.topics import NodeTopics, hub_presence


@dataclass
class Delivered:
    """The node outbox messages a batch holds, to acknowledge once it is committed.

    ``seqs``: ``(site, node, outbox_id)`` -> event ``seq`` numbers; ``snapshots``: ``(site, node)`` -> event ids
    whose snapshot it holds. Plain dicts of lists, so a batch's worth crosses from the writer process cheaply.
    """

    seqs: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    snapshots: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def event(self, site: str, node: str, outbox_id: str, seq: int) -> None:
        self.seqs.setdefault((site, node, outbox_id), []).append(seq)

    def snapshot(self, site: str, node: str, event_id: str) -> None:
        self.snapshots.setdefault((site, node), []).append(event_id)

    def __bool__(self) -> bool:
        return bool(self.seqs or self.snapshots)


class AckPublisher:
    """Publishes the acknowledgements of committed batches.

    :param hub_id: this hub, named in every ack.
    :param publish: ``publish(topic, payload)`` with QoS 1.
    """

    def __init__(self, hub_id: str, publish: Callable[[str, bytes], object]) -> None:
        self.hub_id = hub_id
        self._publish = publish
        self.acks = 0
        self.bytes = 0

    def publish(self, delivered: Delivered) -> None:
        """Acknowledge ``delivered`` (already committed): one ack per node outbox, snapshots with the first."""
        now = utc_now()
        snapshots = dict(delivered.snapshots)
        for (site, node, outbox_id), seqs in delivered.seqs.items():
            self._send(site, node, outbox_id, seq_ranges(seqs), snapshots.pop((site, node), []), now)
        for (site, node), event_ids in snapshots.items():
            self._send(site, node, None, [], event_ids, now)

    def _send(
        self,
        site: str,
        node: str,
        outbox_id: str | None,
        ranges: list[tuple[int, int]],
        snapshots: list[str],
        now: datetime,
    ) -> None:
        topic = NodeTopics(site, node).ack
        while True:  # more than MAX_ACK_RANGES: several acks
            chunk, ranges = ranges[:MAX_ACK_RANGES], ranges[MAX_ACK_RANGES:]
            shots, snapshots = snapshots[:MAX_ACK_RANGES], snapshots[MAX_ACK_RANGES:]
            payload = Ack(hub=self.hub_id, ts=now, outbox_id=outbox_id, seqs=chunk, snapshots=shots).to_json()
            self._publish(topic, payload)
            self.acks += 1
            self.bytes += len(payload)
            if not ranges and not snapshots:
                return


def presence_will(hub_id: str) -> Will:
    """The Last Will of a hub's intake connection: retained ``offline`` on its presence topic."""
    return Will(hub_presence(hub_id), OFFLINE)


def announce(publish: Callable[..., object], hub_id: str) -> None:
    """Publish the hub's retained ``online`` (call after every connect, once subscribed)."""
    publish(hub_presence(hub_id), ONLINE, qos=1, retain=True)
