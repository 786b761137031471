"""One batch of node messages: validate each, store all in one transaction, say what changed.

:class:`BatchWriter` is the pure "messages in, result out" core of the ingest. It
runs in the hub process or, by default, in a writer process of its own
(:mod:`hub.ingest.writer_process`), so it takes plain ``(topic, payload)`` pairs and returns a
picklable :class:`BatchResult`; acknowledging, publishing alerts and the live
feed stay with :class:`hub.ingest.consumer.Ingest`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from hub.config import DEFAULT_MAX_SKEW_S, HubConfig
from hub.ingest.acks import Delivered
from hub.services.alerts import Alerter
from hub.storage.database import Store
from hub.storage.events import EventIn, EventLog, SnapshotIn
from hub.storage.nodes import NodeUpdate, Registry, UpdateKind
from hub.storage.rejected import RejectedStore, RejectIn
from shared import topics
from shared.errors import ContractError, StorageError
from shared.logcap import LogCap
from shared.messages import AVAILABILITY, MAX_PAYLOAD_BYTES, Alert, Event, NodeState, NodeStats, parse

log = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8"
STATUS_VALUES = AVAILABILITY

#: A received message as the writer takes it.
Message = tuple[str, bytes]


@dataclass
class Batch:
    """One transaction's worth of classified messages."""

    events: list[EventIn] = field(default_factory=list)
    snapshots: list[SnapshotIn] = field(default_factory=list)
    nodes: list[NodeUpdate] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)  # nodes that sent an event (one update each)
    rejects: list[RejectIn] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    delivered: Delivered = field(default_factory=Delivered)


@dataclass
class BatchResult:
    """What one committed batch did.

    ``event_ts`` are the event timestamps (POSIX seconds) of its valid event messages and
    ``committed_at`` the :func:`time.time` of the commit: their difference is the event-to-commit latency.
    ``delivered`` are the node outbox messages it holds, to acknowledge (:mod:`hub.ingest.acks`).
    """

    messages: int
    events: int
    duplicates: int
    rejected: list[str]
    alerts: list[Alert]
    touched_events: list[str]
    touched_nodes: list[tuple[str, str]]
    event_ts: list[float]
    committed_at: float
    delivered: Delivered = field(default_factory=Delivered)


@dataclass(frozen=True)
class WriterSettings:
    """Everything a :class:`BatchWriter` needs, in a form that crosses to a writer process."""

    db_url: str
    snapshot_dir: Path
    max_snapshot_bytes: int
    rejected_max_rows: int
    alert_cooldown_s: float
    public_url: str
    alert_min_face_score: float | None = None
    max_skew_s: float = DEFAULT_MAX_SKEW_S

    @classmethod
    def from_config(cls, config: HubConfig, public_url: str) -> WriterSettings:
        """The settings of ``config``'s ingest, with snapshot links under ``public_url``."""
        return cls(
            db_url=config.db_url,
            snapshot_dir=config.snapshot_dir,
            max_snapshot_bytes=config.ingest.max_snapshot_bytes,
            rejected_max_rows=config.retention.rejected_max_rows,
            alert_cooldown_s=config.alerts.cooldown_s,
            public_url=public_url,
            alert_min_face_score=config.alerts.min_face_score,
            max_skew_s=config.clock.max_skew_s,
        )

    def build(self, store: Store | None = None) -> BatchWriter:
        """A writer on ``store`` (or on a new :class:`Store` of ``db_url``)."""
        store = store or Store(self.db_url)
        return BatchWriter(
            store,
            EventLog(store, self.snapshot_dir),
            Registry(store),
            Alerter(
                None,
                cooldown_s=self.alert_cooldown_s,
                public_url=self.public_url,
                min_face_score=self.alert_min_face_score,
            ),
            max_snapshot_bytes=self.max_snapshot_bytes,
            rejected_max_rows=self.rejected_max_rows,
            max_skew_s=self.max_skew_s,
        )


def parse_event(payload: bytes) -> Event:
    """:func:`shared.messages.parse` for events, with pydantic's JSON parser on the hot path.

    A payload that fails the fast path goes through ``parse``, which names the reason
    (``json``, ``version``, ``schema``, ``oversize``) exactly as everywhere else.
    """
    if len(payload) <= MAX_PAYLOAD_BYTES:
        try:
            return Event.model_validate_json(payload)
        except ValidationError:
            pass
    return parse(Event, payload)


def clock_offset_s(ts: datetime, now: datetime) -> float:
    """How far a node's ``ts`` is ahead of the hub's ``now`` (negative: behind), seconds."""
    return (ts - now).total_seconds()


def skewed(offset_s: float, max_skew_s: float) -> bool:
    """Whether a clock offset is too large to be delivery delay or drift (``clock.max_skew_s``)."""
    return abs(offset_s) > max_skew_s


def classify(
    topic: str, payload: bytes, batch: Batch, now: datetime, max_snapshot_bytes: int, max_skew_s: float
) -> None:
    """Validate one message and add it to ``batch`` (as data, or as a rejection with its reason).

    An event or stats message whose ``ts`` is more than ``max_skew_s`` off ``now`` (the hub's clock) is
    flagged ``clock_skewed`` (a late event may be excused later: :meth:`BatchWriter.excuse_late`); stats also
    give the node's clock offset.
    """
    try:
        info = topics.parse_topic(topic)
        if info.node is None:
            raise ContractError(f"not a node topic: {topic}", field="topic", reason="topic")
        batch.kinds[info.kind] += 1
        if info.kind == "events":
            event = parse_event(payload)
            if (event.site, event.node) != (info.site, info.node):
                raise ContractError(
                    f"event of {event.site}/{event.node} published on {topic}", field="node", reason="topic"
                )
            batch.events.append(
                EventIn(event, now, payload, clock_skewed=skewed(clock_offset_s(event.ts, now), max_skew_s))
            )
            batch.seen.add((info.site, info.node))
            if event.seq is not None and event.outbox_id is not None:
                batch.delivered.event(info.site, info.node, event.outbox_id, event.seq)
        elif info.kind == "snapshot":
            batch.delivered.snapshot(info.site, info.node, info.name or "")  # stored or rejected: acknowledged
            if len(payload) > max_snapshot_bytes:
                raise ContractError(f"snapshot of {len(payload)} bytes exceeds {max_snapshot_bytes}", reason="oversize")
            if not payload.startswith(JPEG_MAGIC):
                raise ContractError("snapshot is not a JPEG", reason="schema")
            batch.snapshots.append(SnapshotIn(info.site, info.node, info.name or "", payload, now))
        elif info.kind == "status":
            if payload not in STATUS_VALUES:
                raise ContractError(
                    f"status must be online or offline, got {payload[:32]!r}", field="status", reason="schema"
                )
            batch.nodes.append(NodeUpdate(info.site, info.node, "status", now, online=STATUS_VALUES[payload]))
        elif info.kind in ("state", "stats"):
            kind: UpdateKind = "state" if info.kind == "state" else "stats"
            data = parse(NodeState, payload) if kind == "state" else parse(NodeStats, payload)
            if (data.site, data.node) != (info.site, info.node):
                raise ContractError(
                    f"{info.kind} of {data.site}/{data.node} published on {topic}", field="node", reason="topic"
                )
            offset = clock_offset_s(data.ts, now) if kind == "stats" else None
            batch.nodes.append(
                NodeUpdate(
                    info.site,
                    info.node,
                    kind,
                    now,
                    payload=data.model_dump(mode="json", exclude_none=True),
                    clock_offset_s=offset,
                    clock_skewed=offset is not None and skewed(offset, max_skew_s),
                )
            )
        else:
            raise ContractError(f"unexpected topic {topic}", field="topic", reason="topic")
    except ContractError as exc:
        batch.rejects.append(RejectIn(topic, exc.reason, exc.field, str(exc), payload, now))


class BatchWriter:
    """Validates a batch and stores it in one transaction: events, snapshots, rejections, nodes, counters, alerts.

    A storage failure raises :class:`StorageError` with nothing committed; the caller retries the same
    batch, which then stores each message once. ``max_skew_s`` (``clock.max_skew_s``) decides which event and
    stats timestamps are flagged as off the hub's clock.

    Example::

        writer = settings.build()
        result = writer.write([("maskwatch/hq/door-1/events", payload)], utc_now())
    """

    def __init__(
        self,
        store: Store,
        events: EventLog,
        registry: Registry,
        alerter: Alerter,
        *,
        max_snapshot_bytes: int,
        rejected_max_rows: int,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
    ) -> None:
        self.store = store
        self.events = events
        self.registry = registry
        self.rejected = RejectedStore(store)
        self.alerter = alerter
        self.max_snapshot_bytes = max_snapshot_bytes
        self.rejected_max_rows = rejected_max_rows
        self.max_skew_s = max_skew_s
        #: rejections are logged through this cap (a few lines per reason and minute); counted exactly elsewhere
        self.reject_log = LogCap(log, "rejections")

    def excuse_late(self, session: Session, batch: Batch) -> None:
        """Clear ``clock_skewed`` on events that are late, not skewed.

        An event whose ``ts`` is more than ``max_skew_s`` behind the hub's clock, from a node whose clock was
        last measured within ``max_skew_s`` of the hub's (its stats, in this batch or before), was held back,
        e.g. in the node's outbox during an outage, and its ``ts`` is right. A node whose clock was never
        measured keeps the flag: either clock may be to blame.
        """
        behind = [item for item in batch.events if item.clock_skewed and item.event.ts < item.received_at]
        if not behind:
            return
        offsets = self.registry.clock_offsets(session, {(item.event.site, item.event.node) for item in behind})
        offsets |= {(u.site, u.node): u.clock_offset_s for u in batch.nodes if u.clock_offset_s is not None}
        for item in behind:
            offset = offsets.get((item.event.site, item.event.node))
            if offset is not None and not skewed(offset, self.max_skew_s):
                item.clock_skewed = False

    def write(self, messages: list[Message], now: datetime) -> BatchResult:
        """Validate ``messages`` (received at ``now``) and commit them; alerts are returned, not published."""
        batch = Batch()
        for topic, payload in messages:
            classify(topic, payload, batch, now, self.max_snapshot_bytes, self.max_skew_s)
        for reject in batch.rejects:
            self.reject_log.warning(
                reject.reason, "rejected message on %s (%s): %s", reject.topic, reject.reason, reject.error
            )
        self.reject_log.flush()
        try:
            with self.store.transaction() as session:
                self.excuse_late(session, batch)
                written = self.events.write(session, batch.events)
                self.events.save_snapshots(session, batch.snapshots)
                self.rejected.add(session, batch.rejects, self.rejected_max_rows)
                touched_nodes = self.registry.apply(
                    session, [*(NodeUpdate(site, node, "seen", now) for site, node in batch.seen), *batch.nodes]
                )
                self.registry.count_skewed(session, written.skewed)
                self.store.count(
                    session,
                    {**{f"messages.{k}": v for k, v in batch.kinds.items()}, "events.duplicates": written.duplicates},
                )
                claimed = self.events.claim_no_mask(session, written.no_mask, self.alerter.min_face_score)
                alerts = self.alerter.for_events(session, claimed, now)
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(f"{type(exc).__name__}: {exc}") from exc
        return BatchResult(
            messages=len(messages),
            events=len(batch.events),
            duplicates=written.duplicates,
            rejected=[r.reason for r in batch.rejects],
            alerts=alerts,
            touched_events=written.touched,
            touched_nodes=touched_nodes,
            event_ts=[item.event.ts.timestamp() for item in batch.events],
            committed_at=time.time(),
            delivered=batch.delivered,
        )
