"""Durable ingest: node topics -> validated batches -> one transaction each -> acks.

Topics are received with QoS 1 on a persistent session (the client is created
with ``persistent=True, manual_ack=True``). Event and snapshot topics go
through an MQTT 5 shared subscription ``$share/<group>/...`` so several hubs
split the load; ``status``/``state``/``stats`` are plain subscriptions (they are
retained, and every hub keeps the whole registry).

The network thread only enqueues. The ``hub-ingest`` worker takes up to
``batch_size`` messages or whatever arrived within ``batch_ms``, validates them
with :func:`shared.messages.parse`, writes everything in one transaction, and
only then acknowledges them to the broker: a crash loses nothing acknowledged,
and what was not acknowledged is redelivered and de-duplicated.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from hub.alerts import Alerter
from hub.config import HubConfig
from hub.events import EventIn, EventLog, RejectIn, SnapshotIn
from hub.feed import Feed
from hub.registry import NodeUpdate, Registry
from hub.store import Store
from shared import topics
from shared.errors import ContractError
from shared.messages import MAX_PAYLOAD_BYTES, Alert, Event, NodeState, NodeStats, parse, utc_now
from shared.mqtt import MqttClient, Received

log = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8"
STATUS_VALUES = {b"online": True, b"offline": False}


@dataclass
class Batch:
    """One transaction's worth of classified messages."""

    received: list[Received] = field(default_factory=list)
    events: list[EventIn] = field(default_factory=list)
    snapshots: list[SnapshotIn] = field(default_factory=list)
    nodes: list[NodeUpdate] = field(default_factory=list)
    rejects: list[RejectIn] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)


@dataclass
class IngestStats:
    """Running totals of this hub process (the database holds the durable counters)."""

    received: int = 0
    committed: int = 0
    batches: int = 0
    duplicates: int = 0
    storage_errors: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    last_commit: datetime | None = None
    last_batch_ms: float = 0.0


def filters(config: HubConfig) -> list[str]:
    """The topic filters the hub subscribes to (shared ones for events and snapshots with MQTT 5 and a group)."""
    out = []
    for site in config.sites or [None]:
        for kind in ("events", "snapshot"):
            topic_filter = topics.node_filter(kind, site)
            if config.broker.protocol == 5 and config.ingest.share_group:
                topic_filter = topics.shared_subscription(config.ingest.share_group, topic_filter)
            out.append(topic_filter)
        out.extend(topics.node_filter(kind, site) for kind in ("status", "state", "stats"))
    return out


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


def classify(message: Received, batch: Batch, now: datetime, max_snapshot_bytes: int) -> None:
    """Validate one message and add it to ``batch`` (as data, or as a rejection with its reason)."""
    try:
        info = topics.parse_topic(message.topic)
        if info.node is None:
            raise ContractError(f"not a node topic: {message.topic}", field="topic", reason="topic")
        batch.kinds[info.kind] += 1
        if info.kind == "events":
            event = parse_event(message.payload)
            if (event.site, event.node) != (info.site, info.node):
                raise ContractError(f"event of {event.site}/{event.node} published on {message.topic}",
                                    field="node", reason="topic")
            batch.events.append(EventIn(event, now, bytes(message.payload)))
            batch.nodes.append(NodeUpdate(info.site, info.node, "seen", now))
        elif info.kind == "snapshot":
            if len(message.payload) > max_snapshot_bytes:
                raise ContractError(f"snapshot of {len(message.payload)} bytes exceeds {max_snapshot_bytes}",
                                    reason="oversize")
            if not message.payload.startswith(JPEG_MAGIC):
                raise ContractError("snapshot is not a JPEG", reason="schema")
            batch.snapshots.append(SnapshotIn(info.site, info.node, info.name or "", message.payload, now))
        elif info.kind == "status":
            if message.payload not in STATUS_VALUES:
                raise ContractError(f"status must be online or offline, got {message.payload[:32]!r}",
                                    field="status", reason="schema")
            batch.nodes.append(NodeUpdate(info.site, info.node, "status", now,
                                          online=STATUS_VALUES[message.payload]))
        elif info.kind in ("state", "stats"):
            model = NodeState if info.kind == "state" else NodeStats
            data = parse(model, message.payload)
            if (data.site, data.node) != (info.site, info.node):
                raise ContractError(f"{info.kind} of {data.site}/{data.node} published on {message.topic}",
                                    field="node", reason="topic")
            batch.nodes.append(NodeUpdate(info.site, info.node, info.kind, now,
                                          payload=data.model_dump(mode="json", exclude_none=True)))
        else:
            raise ContractError(f"unexpected topic {message.topic}", field="topic", reason="topic")
    except ContractError as exc:
        log.warning("rejected message on %s (%s): %s", message.topic, exc.reason, exc)
        batch.rejects.append(RejectIn(message.topic, exc.reason, exc.field, str(exc), bytes(message.payload),
                                      now))


class Ingest:
    """Consumes node topics into the database.

    :param config: hub configuration (sites, batching, retention bound of rejected payloads).
    :param client: the hub's intake client, created with ``persistent=True, manual_ack=True``;
        :meth:`start` subscribes before the client is started.
    :param on_commit: optional hook called on the worker thread after each commit with the batch
        and the commit time from :func:`time.time` (benchmarks measure latency with it).
    """

    def __init__(self, config: HubConfig, client: MqttClient, store: Store, events: EventLog,
                 registry: Registry, alerter: Alerter, feed: Feed | None = None,
                 on_commit: Callable[[Batch, float], None] | None = None) -> None:
        self.config = config
        self.client = client
        self.store = store
        self.events = events
        self.registry = registry
        self.alerter = alerter
        self.feed = feed
        self.on_commit = on_commit
        self.stats = IngestStats()
        self._queue: queue.Queue[Received] = queue.Queue(config.ingest.queue_max)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        """Messages received and not yet committed."""
        return self._queue.qsize()

    def start(self) -> None:
        """Subscribe (before the client connects) and start the writer thread."""
        for topic_filter in filters(self.config):
            self.client.subscribe(topic_filter, self._enqueue, qos=1)
        self._thread = threading.Thread(target=self._run, name="hub-ingest", daemon=True)
        self._thread.start()

    def _enqueue(self, message: Received) -> None:  # network thread: enqueue only
        self._queue.put(message)

    def stop(self, timeout: float = 30.0) -> None:
        """Commit what is queued, stop the writer; call before disconnecting the client for acks to go out."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("ingest writer did not stop within %.0f s", timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            try:
                if batch:
                    self._commit_with_retry(batch)
            except Exception:  # the thread's boundary: a bug must not stop ingest
                log.exception("batch of %d messages failed; left unacknowledged (redelivered after a reconnect)",
                              len(batch))
        self._drain()

    def _drain(self) -> None:
        """Commit what was queued when asked to stop (later arrivals are redelivered after a restart)."""
        pending: list[Received] = []
        for _ in range(self._queue.qsize()):
            try:
                pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        size = self.config.ingest.batch_size
        for start in range(0, len(pending), size):
            self._commit_with_retry(pending[start:start + size])
        if pending:
            log.info("flushed %d queued messages before stopping", len(pending))

    def _collect(self) -> list[Received]:
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        items = [first]
        deadline = time.monotonic() + self.config.ingest.batch_ms / 1000
        size = self.config.ingest.batch_size
        while len(items) < size:
            remaining = deadline - time.monotonic()
            try:
                items.append(self._queue.get_nowait() if remaining <= 0 else self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return items

    def _commit_with_retry(self, received: list[Received]) -> None:
        delay = 0.2
        while True:
            try:
                self.process(received)
                return
            except (SQLAlchemyError, OSError) as exc:  # database or snapshot folder: retry, drop nothing
                self.stats.storage_errors += 1
                if self._stop.is_set():
                    log.error("storage error while stopping; %d messages stay unacknowledged and will be "
                              "redelivered: %s", len(received), exc)
                    return
                log.error("storage error, retrying the batch of %d in %.1f s: %s", len(received), delay, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def process(self, received: list[Received]) -> Batch:
        """Validate, store in one transaction, acknowledge, then publish alerts and feed items."""
        started = time.perf_counter()
        now = utc_now()
        batch = Batch(received=received)
        for message in received:
            classify(message, batch, now, self.config.ingest.max_snapshot_bytes)
        with self.store.transaction() as session:
            written = self.events.write(session, batch.events)
            self.events.save_snapshots(session, batch.snapshots)
            self.events.reject(session, batch.rejects, self.config.retention.rejected_max_rows)
            touched_nodes = self.registry.apply(session, batch.nodes)
            self.store.count(session, {**{f"messages.{k}": v for k, v in batch.kinds.items()},
                                       "events.duplicates": written.duplicates})
            alerts = self.alerter.for_events(session, self.events.claim_no_mask(session, written.no_mask), now)
        committed = time.time()
        for message in received:
            if message.qos:
                self.client.ack(message.mid, message.qos)
        self._account(batch, written.duplicates, started)
        self.alerter.publish(alerts)
        if self.on_commit is not None:
            self.on_commit(batch, committed)
        if self.feed is not None and self.feed.subscribers:
            self._announce(self.feed, written.touched, touched_nodes, alerts)
        return batch

    def _account(self, batch: Batch, duplicates: int, started: float) -> None:
        stats = self.stats
        stats.received += len(batch.received)
        stats.committed += len(batch.received) - len(batch.rejects)
        stats.batches += 1
        stats.duplicates += duplicates
        stats.rejected.update(r.reason for r in batch.rejects)
        stats.last_commit = utc_now()
        stats.last_batch_ms = (time.perf_counter() - started) * 1000

    def _announce(self, feed: Feed, event_ids: list[str], nodes: list[tuple[str, str]],
                  alerts: list[Alert]) -> None:
        for row in self.events.by_ids(event_ids):
            feed.publish("event", {"id": row.id, "site": row.site, "node": row.node, "label": row.label,
                                   "score": row.best_score, "state": row.state,
                                   "last_seen": row.last_seen.isoformat()})
        for site, node in nodes:
            feed.publish("node", {"site": site, "node": node})
        for alert in alerts:
            feed.publish("alert", alert.model_dump(mode="json", exclude_none=True))
