"""Per-node summary of the event stream: faces in view now, and recent mask compliance.

:class:`NodeSummaries` folds :class:`~shared.messages.Event` messages into one
:class:`~shared.messages.NodeSummary` per node. It is pure logic (no MQTT, no
database): the caller feeds events and asks for summaries.

Example::

    >>> from shared.messages import Event
    >>> summaries = NodeSummaries(window_s=3600)
    >>> ev = Event(type="new", id="e1", site="hq", node="door-1", ts=utc_now(), label="no_mask",
    ...            score=0.9, box=(0, 0, 10, 10))
    >>> summaries.apply(ev)
    True
    >>> summaries.summary("hq", "door-1", utc_now()).no_mask_in_view
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.messages import Event, NodeSummary, utc_now


@dataclass
class _NodeFaces:
    open_labels: dict[str, str] = field(default_factory=dict)
    #: event id -> (first receipt by the hub, latest label) for events received within the window
    recent: dict[str, tuple[datetime, str]] = field(default_factory=dict)


class NodeSummaries:
    """Faces in view and compliance per node, from the events seen.

    :param window_s: compliance is computed over events first received within this many seconds (the hub's
        clock: a node whose clock is wrong cannot keep an event in the window, or out of it).
    :param open_ttl_s: an open event with no message for this long is taken as gone
        (its ``end`` was lost, e.g. the node died).
    """

    def __init__(self, window_s: float = 3600.0, open_ttl_s: float = 120.0) -> None:
        self.window = timedelta(seconds=window_s)
        self.open_ttl = timedelta(seconds=open_ttl_s)
        self._nodes: dict[tuple[str, str], _NodeFaces] = {}
        self._last_message: dict[str, datetime] = {}

    def apply(self, event: Event, received_at: datetime | None = None) -> bool:
        """Fold one event message, received at ``received_at`` (default: now), in; return whether the node's
        summary may have changed."""
        received_at = received_at or utc_now()
        faces = self._nodes.setdefault((event.site, event.node), _NodeFaces())
        first, _label = faces.recent.get(event.id, (received_at, event.label))
        faces.recent[event.id] = (min(first, received_at), event.label)
        before = dict(faces.open_labels)
        if event.type == "end":
            faces.open_labels.pop(event.id, None)
            self._last_message.pop(event.id, None)
        else:
            faces.open_labels[event.id] = event.label
            self._last_message[event.id] = received_at
        return before != faces.open_labels or event.type == "new"

    def expire(self, now: datetime) -> list[tuple[str, str]]:
        """Forget open events silent for too long and events older than the window; return changed nodes."""
        changed = []
        for key, faces in self._nodes.items():
            stale = [i for i in faces.open_labels if now - self._last_message.get(i, now) > self.open_ttl]
            for event_id in stale:
                del faces.open_labels[event_id]
                self._last_message.pop(event_id, None)
            old = [i for i, (first, _) in faces.recent.items() if now - first > self.window]
            for event_id in old:
                del faces.recent[event_id]
            if stale or old:
                changed.append(key)
        return changed

    def nodes(self) -> list[tuple[str, str]]:
        """Every ``(site, node)`` seen so far."""
        return list(self._nodes)

    def summary(self, site: str, node: str, now: datetime) -> NodeSummary:
        """The current summary of one node."""
        faces = self._nodes.get((site, node), _NodeFaces())
        labels = [label for first, label in faces.recent.values() if now - first <= self.window]
        masked = sum(1 for label in labels if label == "mask")
        return NodeSummary(
            site=site,
            node=node,
            ts=now,
            faces_in_view=len(faces.open_labels),
            no_mask_in_view="no_mask" in faces.open_labels.values(),
            window_s=self.window.total_seconds(),
            faces=len(labels),
            compliance=masked / len(labels) if labels else None,
        )
