"""Durable ingest: node topics -> batches -> one transaction each -> acks.

Topics are received with QoS 1 on a persistent session (the client is created
with ``persistent=True, manual_ack=True``). With ``ingest.share_group`` set, event
and snapshot topics go through an MQTT 5 shared subscription ``$share/<group>/...``
so several hubs split the load; ``status``/``state``/``stats`` are plain
subscriptions (they are retained, and every hub keeps the whole registry).

The network thread only enqueues. The ``hub-ingest`` thread takes up to
``batch_size`` messages or whatever arrived within ``batch_ms`` and hands them
to the writer (:class:`hub.ingest.batch_core.BatchWriter`, by default in its own process,
:class:`hub.ingest.writer_process.WriterProcess`), which validates and commits them in one
transaction; only then are they acknowledged to the broker, and to the nodes
on their ``.../ack`` topics (:mod:`hub.ingest.acks`). A crash loses nothing
acknowledged, and what was not acknowledged is redelivered and de-duplicated.
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
from typing import Protocol

from hub.config import HubConfig
from hub.ingest.acks import AckPublisher
from hub.ingest.batch_core import BatchResult, Message
from hub.services.alerts import Alerter
from hub.services.feed import Feed
from hub.storage.events import EventLog
from hub.views import event_feed_json
from shared import topics
from shared.errors import BatchFailed, StorageError
from shared.messages import Alert, utc_now
from shared.mqtt import MqttClient, Received

log = logging.getLogger(__name__)


class Writer(Protocol):
    """Validates and stores one batch: :class:`hub.ingest.batch_core.BatchWriter` or
    :class:`hub.ingest.writer_process.WriterProcess`."""

    def write(self, messages: list[Message], now: datetime) -> BatchResult: ...


@dataclass
class IngestStats:
    """Running totals of this hub process (the database holds the durable counters)."""

    received: int = 0
    committed: int = 0
    batches: int = 0
    duplicates: int = 0
    storage_errors: int = 0
    failed_messages: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    last_commit: datetime | None = None
    last_batch_ms: float = 0.0


def filters(config: HubConfig) -> list[str]:
    """The topic filters the hub subscribes to (shared ones for events and snapshots with MQTT 5 and a group)."""
    out = []
    scopes: list[str | None] = list(config.sites) or [None]  # None: every site
    for site in scopes:
        for kind in ("events", "snapshot"):
            topic_filter = topics.node_filter(kind, site)
            if config.broker.protocol == 5 and config.ingest.share_group:
                topic_filter = topics.shared_subscription(config.ingest.share_group, topic_filter)
            out.append(topic_filter)
        out.extend(topics.node_filter(kind, site) for kind in ("status", "state", "stats"))
    return out


class Ingest:
    """Consumes node topics into the database.

    :param config: hub configuration (sites, batching).
    :param client: the hub's intake client, created with ``persistent=True, manual_ack=True``;
        :meth:`start` subscribes before the client is started.
    :param writer: validates and stores each batch.
    :param events: reads the touched events back for the live ``feed``.
    :param alerter: publishes the alerts of each committed batch.
    :param on_commit: optional hook called on the ingest thread after each commit with its
        :class:`hub.ingest.batch_core.BatchResult` (benchmarks measure latency with it).
    :param acks: acknowledges each committed batch to the nodes (:mod:`hub.ingest.acks`).
    """

    def __init__(
        self,
        config: HubConfig,
        client: MqttClient,
        writer: Writer,
        events: EventLog,
        alerter: Alerter,
        feed: Feed | None = None,
        on_commit: Callable[[BatchResult], None] | None = None,
        acks: AckPublisher | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.writer = writer
        self.events = events
        self.alerter = alerter
        self.feed = feed
        self.on_commit = on_commit
        self.acks = acks
        self.stats = IngestStats()
        self._queue: queue.Queue[Received] = queue.Queue(config.ingest.queue_max)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        """Messages received and not yet committed."""
        return self._queue.qsize()

    def start(self) -> None:
        """Subscribe (before the client connects) and start the ingest thread."""
        for topic_filter in filters(self.config):
            self.client.subscribe(topic_filter, self._enqueue, qos=1)
        self._thread = threading.Thread(target=self._run, name="hub-ingest", daemon=True)
        self._thread.start()

    def _enqueue(self, message: Received) -> None:  # network thread: enqueue only
        self._queue.put(message)

    def stop(self, timeout: float = 30.0) -> None:
        """Commit what is queued, stop the ingest thread; call before disconnecting the client for acks to go out."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("ingest thread did not stop within %.0f s", timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            try:
                if batch:
                    self._commit_isolating(batch)
            except Exception:  # the thread's boundary: a bug must not stop ingest
                log.exception("batch of %d messages failed after it was stored", len(batch))
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
            self._commit_with_retry(pending[start : start + size])
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

    def _commit_isolating(self, received: list[Received]) -> None:
        """Commit ``received``; when the writer fails on it for a reason other than storage (a bug), commit each
        half on its own, so a message that trips the bug holds back only itself. That message stays
        unacknowledged (the broker redelivers it after a reconnect) and is counted in ``failed_messages``.
        """
        try:
            self._commit_with_retry(received)
        except BatchFailed:
            if len(received) == 1:
                self.stats.failed_messages += 1
                log.exception(
                    "message on %s failed in the writer; left unacknowledged (redelivered after a reconnect)",
                    received[0].topic,
                )
                return
            half = len(received) // 2
            log.warning("batch of %d messages failed in the writer; committing its halves apart", len(received))
            self._commit_isolating(received[:half])
            self._commit_isolating(received[half:])

    def _commit_with_retry(self, received: list[Received]) -> None:
        delay = 0.2
        while True:
            try:
                self.process(received)
                return
            except StorageError as exc:  # database, snapshot folder or writer process: retry, drop nothing
                self.stats.storage_errors += 1
                if self._stop.is_set():
                    log.error(
                        "storage error while stopping; %d messages stay unacknowledged and will be redelivered: %s",
                        len(received),
                        exc,
                    )
                    return
                log.error("storage error, retrying the batch of %d in %.1f s: %s", len(received), delay, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def process(self, received: list[Received]) -> BatchResult:
        """Store ``received`` in one transaction, acknowledge it, then publish alerts and feed items."""
        started = time.perf_counter()
        try:
            result = self.writer.write([(message.topic, message.payload) for message in received], utc_now())
        except StorageError:
            raise
        except Exception as exc:  # nothing was stored or acknowledged
            raise BatchFailed(f"{type(exc).__name__}: {exc}") from exc
        for message in received:
            if message.qos:
                self.client.ack(message.mid, message.qos)
        self._account(result, started)
        if self.acks is not None and result.delivered:
            self.acks.publish(result.delivered)
        self.alerter.publish(result.alerts)
        if self.on_commit is not None:
            self.on_commit(result)
        if self.feed is not None and self.feed.subscribers:
            self._announce(self.feed, result.touched_events, result.touched_nodes, result.alerts)
        return result

    def _account(self, result: BatchResult, started: float) -> None:
        stats = self.stats
        stats.received += result.messages
        stats.committed += result.messages - len(result.rejected)
        stats.batches += 1
        stats.duplicates += result.duplicates
        stats.rejected.update(result.rejected)
        stats.last_commit = utc_now()
        stats.last_batch_ms = (time.perf_counter() - started) * 1000

    def _announce(self, feed: Feed, event_ids: list[str], nodes: list[tuple[str, str]], alerts: list[Alert]) -> None:
        for row in self.events.by_ids(event_ids):
            feed.publish("event", event_feed_json(row))
        for site, node in nodes:
            feed.publish("node", {"site": site, "node": node})
        for alert in alerts:
            feed.publish("alert", alert.model_dump(mode="json", exclude_none=True))
