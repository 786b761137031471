"""Lossless delivery: a persistent SQLite outbox and the courier that drains it.

Every event is written to the :class:`Outbox` before it is published, numbered
by the outbox (``seq``), and removed only once acknowledged: by a hub's commit
(``.../ack``, the default ``delivery: hub``) or by the broker's PUBACK
(``delivery: broker``, for sites without a hub). The :class:`Courier` publishes
in order while a hub is online, and re-publishes what is not acknowledged after
a timeout with capped exponential backoff and after every reconnect
(:class:`edge.delivery.acks.AckTracker`). The outbox is bounded: beyond ``max_messages``
the oldest are dropped and counted.

Example::

    >>> box = Outbox(":memory:", max_messages=10)
    >>> box.put("maskwatch/hq/door-1/events", b"{}")
    1
    >>> box.put("maskwatch/hq/door-1/events", lambda seq: b'{"seq": %d}' % seq)
    2
    >>> [m.payload for m in box.pending()]
    [b'{}', b'{"seq": 2}']
    >>> box.remove_ranges([(1, 2)]), box.depth
    (2, 0)
"""

from __future__ import annotations

import logging
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.config import Delivery
from edge.delivery.acks import AckTracker
from shared.errors import ContractError, OutboxError
from shared.logcap import LogCap
from shared.messages import Ack, parse
from shared.mqtt import Received
from shared.topics import NodeTopics

log = logging.getLogger(__name__)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class OutboxMessage:
    """One stored message awaiting its acknowledgement."""

    seq: int
    topic: str
    payload: bytes
    qos: int


class Outbox:
    """A bounded FIFO of messages in a SQLite file, safe to use from several threads.

    :param path: the SQLite file (created with its folder), or ``":memory:"``.
    :param max_messages: bound; :meth:`put` drops the oldest beyond it and counts them in :attr:`dropped`.
    :raises OutboxError: the file cannot be opened or is not an outbox.
    """

    def __init__(self, path: str | Path, max_messages: int = 10000) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_messages = max_messages
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open the outbox {path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._depth = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            row = self._db.execute("SELECT value FROM counters WHERE name='dropped'").fetchone()
            last = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('outbox_id', ?)", (secrets.token_hex(8),))
            self.outbox_id: str = self._db.execute("SELECT value FROM meta WHERE name='outbox_id'").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise OutboxError(
                f"outbox {path} is unusable ({exc}); move it aside to start with an empty one "
                "(its undelivered events are lost then)"
            ) from exc
        self.dropped: int = row[0] if row else 0
        self._last_seq: int = last[0] if last else 0

    def put(self, topic: str, payload: bytes | Callable[[int], bytes], qos: int = 1) -> int:
        """Store a message durably; return its sequence number.

        :param payload: the bytes, or a function of the sequence number the message gets that returns them.
        """
        with self._lock:
            seq = self._last_seq + 1
            data = payload(seq) if callable(payload) else payload
            self._db.execute(
                "INSERT INTO outbox (seq, topic, payload, qos, created) VALUES (?, ?, ?, ?, ?)",
                (seq, topic, data, qos, time.time()),
            )
            self._last_seq = seq
            self._depth += 1
            excess = self._depth - self.max_messages
            if excess > 0:
                self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (excess,)
                )
                self._depth -= excess
                self.dropped += excess
                self._db.execute(
                    "INSERT INTO counters VALUES ('dropped', ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                    (self.dropped,),
                )
                log.warning("outbox full (%d): dropped the %d oldest message(s)", self.max_messages, excess)
            return seq

    def pending(self, limit: int = 1000) -> list[OutboxMessage]:
        """The oldest ``limit`` stored messages, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos FROM outbox ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [OutboxMessage(seq, topic, bytes(payload), qos) for seq, topic, payload, qos in rows]

    def remove(self, seq: int) -> None:
        """Forget a message (it was acknowledged); unknown ``seq`` is ignored."""
        self.remove_ranges([(seq, seq)])

    def remove_ranges(self, ranges: list[tuple[int, int]]) -> int:
        """Forget the messages numbered within the inclusive ``ranges``; return how many there were."""
        with self._lock:
            removed = 0
            for first, last in ranges:
                removed += self._db.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (first, last)).rowcount
            self._depth -= removed
            return removed

    def remove_topics(self, topics: list[str]) -> list[int]:
        """Forget the messages published on ``topics`` (acknowledged snapshots); return their numbers."""
        with self._lock:
            seqs = [
                seq
                for topic in topics
                for (seq,) in self._db.execute("DELETE FROM outbox WHERE topic = ? RETURNING seq", (topic,))
            ]
            self._depth -= len(seqs)
            return seqs

    def oldest_age_s(self) -> float | None:
        """Seconds since the oldest message still here was written (``None`` when empty)."""
        with self._lock:
            row = self._db.execute("SELECT MIN(created) FROM outbox").fetchone()
        return None if row[0] is None else max(0.0, time.time() - row[0])

    @property
    def depth(self) -> int:
        """How many messages await their acknowledgement."""
        return self._depth

    def close(self) -> None:
        """Close the file; idempotent."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PublishFn = Callable[[str, bytes, int], Any]


class Courier:
    """Publishes the outbox in order and removes each message once it is acknowledged.

    With ``delivery="hub"`` a message is removed by a hub's :class:`~shared.messages.Ack` (the broker's
    PUBACK only marks it sent), and nothing is published while ``may_send()`` is false (no hub online);
    with ``delivery="broker"`` the PUBACK removes it. A publish the broker refuses (PUBACK reason code
    >= 0x80) keeps the message, to be sent again after its timeout (the MQTT client logs the reason).

    Wire :meth:`acknowledged` / :meth:`refused` to the MQTT client's ``on_publish`` / ``on_refused``,
    :meth:`reconnected` to its ``on_connect`` and :meth:`receive_ack` to ``.../ack`` (all only enqueue, as
    network-thread callbacks must); :meth:`run` is the body of the ``delivery`` thread.

    :param outbox: the store.
    :param publish: ``publish(topic, payload, qos)`` returning an object with ``mid`` and ``rc``.
    :param connected: whether the client is connected now.
    :param topics: the node's topics (to match acknowledged snapshots).
    :param delivery: ``hub`` or ``broker``.
    :param may_send: whether to publish now (a hub is online); always with ``delivery="broker"``.
    :param resend_after_s: re-publish a message still unacknowledged after this many seconds...
    :param resend_max_s: ... doubling per attempt up to this.
    :param window: at most this many messages published and awaiting their acknowledgement.
    """

    def __init__(
        self,
        outbox: Outbox,
        publish: PublishFn,
        connected: Callable[[], bool],
        *,
        delivery: Delivery,
        topics: NodeTopics | None = None,
        may_send: Callable[[], bool] = lambda: True,
        resend_after_s: float = 15.0,
        resend_max_s: float = 120.0,
        window: int = 50,
    ) -> None:
        self.outbox = outbox
        self._publish = publish
        self._connected = connected
        self.topics = topics
        self.delivery = delivery
        self._may_send = may_send if delivery == "hub" else (lambda: True)
        self.window = window
        self.tracker = AckTracker(resend_after_s, resend_max_s)
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._reconnected = threading.Event()
        self._mid_to_msg: dict[int, OutboxMessage] = {}
        self.published = 0
        self.acknowledged_total = 0
        self._reject_log = LogCap(log, "ignored acks")

    # -- network-thread callbacks: enqueue only -----------------------------

    def acknowledged(self, mid: int) -> None:
        """PUBACK for ``mid`` (called on the network thread)."""
        self._enqueue("puback", mid)

    def refused(self, mid: int, reason: str) -> None:
        """The broker refused ``mid`` (PUBACK reason code >= 0x80)."""
        self._enqueue("refused", (mid, reason))

    def receive_ack(self, message: Received) -> None:
        """Handler of the node's ``.../ack`` topic: a hub committed these messages."""
        try:
            ack = parse(Ack, message.payload)
        except ContractError as exc:
            self._reject_log.warning(exc.reason, "ignored an ack on %s: %s", message.topic, exc)
            return
        self._enqueue("ack", ack)

    def reconnected(self) -> None:
        """A (re)connect happened, or a hub came online: everything unacknowledged is published again, in order."""
        self._reconnected.set()
        self._wake.set()

    def notify(self) -> None:
        """A new message is in the outbox."""
        self._wake.set()

    def _enqueue(self, kind: str, item: Any) -> None:
        self._inbox.put((kind, item))
        self._wake.set()

    # -- the delivery thread -------------------------------------------------

    @property
    def unacked(self) -> int:
        """Messages published and awaiting their acknowledgement."""
        return len(self.tracker)

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set."""
        while not stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            self.step()

    def step(self) -> None:
        """Process acknowledgements, then publish what is due."""
        while True:
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "ack":
                self._hub_acked(item)
            else:
                self._broker_answered(kind, item)
        if self._reconnected.is_set():
            self._reconnected.clear()
            self.tracker.rewind()
        if not self._connected() or not self._may_send():
            return
        now = time.monotonic()
        in_flight = self.tracker.waiting(now)
        for msg in self.outbox.pending(limit=self.window + len(self.tracker)):
            if not self.tracker.due(msg.seq, now):
                continue
            if in_flight >= self.window:
                break
            info = self._publish(msg.topic, msg.payload, msg.qos)
            if info.rc != 0:
                log.debug("publish of outbox #%d deferred (rc=%s)", msg.seq, info.rc)
                break
            self._mid_to_msg[info.mid] = msg
            self.tracker.sent(msg.seq, now)
            in_flight += 1

    def _broker_answered(self, kind: str, item: Any) -> None:
        mid, reason = (item, None) if kind == "puback" else item
        msg = self._mid_to_msg.pop(mid, None)
        if msg is None:  # not an outbox message (state, stats...), or one sent before a reconnect
            return
        if reason is not None:  # refused: it stays, due again after its timeout
            log.debug("outbox #%d refused by the broker: %s", msg.seq, reason)
            return
        self.published += 1
        if self.delivery == "broker":
            self.outbox.remove(msg.seq)
            self.tracker.forget(msg.seq)
            self.acknowledged_total += 1

    def _hub_acked(self, ack: Ack) -> None:
        acked = 0
        if ack.seqs and ack.outbox_id == self.outbox.outbox_id:
            acked += self.outbox.remove_ranges(ack.seqs)
            self.tracker.forget_ranges(ack.seqs)
        elif ack.seqs:
            log.debug("ack of hub %s for another outbox (%s) ignored", ack.hub, ack.outbox_id)
        if ack.snapshots and self.topics is not None:
            for seq in self.outbox.remove_topics([self.topics.snapshot(event_id) for event_id in ack.snapshots]):
                self.tracker.forget(seq)
                acked += 1
        self.acknowledged_total += acked

    def drain(self, timeout: float, blocked: Callable[[], str | None] = lambda: None) -> bool:
        """Call from the delivery thread's owner after stopping it: deliver until empty, ``timeout``, or
        ``blocked()`` names a refusal that waiting cannot heal."""
        deadline = time.monotonic() + timeout
        while self.outbox.depth and time.monotonic() < deadline and not blocked():
            self.step()
            self._wake.wait(0.05)
            self._wake.clear()
        return self.outbox.depth == 0
