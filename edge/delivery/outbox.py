"""Lossless delivery: a persistent SQLite outbox and the courier that drains it.

Every event is written to the :class:`Outbox` before it is published, and
removed only when the broker acknowledged it (PUBACK). After a reconnect or a
restart the :class:`Courier` re-publishes what is left, oldest first, so a
subscriber that drops repeated ids sees every event once and in order. The
outbox is bounded: beyond ``max_messages`` the oldest are dropped and counted.

Example::

    >>> box = Outbox(":memory:", max_messages=10)
    >>> box.put("maskwatch/hq/door-1/events", b"{}")
    1
    >>> [m.seq for m in box.pending()]
    [1]
    >>> box.remove(1); box.depth
    0
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import OutboxError

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
"""


@dataclass(frozen=True)
class OutboxMessage:
    """One stored message awaiting its PUBACK."""

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
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise OutboxError(f"outbox {path} is unusable ({exc}); move it aside to start with an empty one "
                              "(its undelivered events are lost then)") from exc
        self.dropped: int = row[0] if row else 0

    def put(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Store a message durably; return its sequence number."""
        with self._lock:
            cur = self._db.execute("INSERT INTO outbox (topic, payload, qos, created) VALUES (?, ?, ?, ?)",
                                   (topic, payload, qos, time.time()))
            self._depth += 1
            excess = self._depth - self.max_messages
            if excess > 0:
                self._db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
                                 (excess,))
                self._depth -= excess
                self.dropped += excess
                self._db.execute("INSERT INTO counters VALUES ('dropped', ?) "
                                 "ON CONFLICT(name) DO UPDATE SET value=excluded.value", (self.dropped,))
                log.warning("outbox full (%d): dropped the %d oldest message(s)", self.max_messages, excess)
            return int(cur.lastrowid or 0)

    def pending(self, limit: int = 1000) -> list[OutboxMessage]:
        """The oldest ``limit`` stored messages, in order."""
        with self._lock:
            rows = self._db.execute("SELECT seq, topic, payload, qos FROM outbox ORDER BY seq LIMIT ?",
                                    (limit,)).fetchall()
        return [OutboxMessage(seq, topic, bytes(payload), qos) for seq, topic, payload, qos in rows]

    def remove(self, seq: int) -> None:
        """Forget a message (it was acknowledged); unknown ``seq`` is ignored."""
        with self._lock:
            cur = self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            self._depth -= cur.rowcount

    @property
    def depth(self) -> int:
        """How many messages await their PUBACK."""
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
    """Publishes the outbox in order and removes each message on its PUBACK.

    Wire :meth:`acknowledged` to the MQTT client's ``on_publish`` and
    :meth:`reconnected` to its ``on_connect`` (both only enqueue, as network-thread
    callbacks must); :meth:`run` is the body of the ``delivery`` thread.

    :param outbox: the store.
    :param publish: ``publish(topic, payload, qos)`` returning an object with ``mid`` and ``rc``.
    :param connected: whether the client is connected now.
    :param resend_after_s: re-publish a message still unacknowledged after this many seconds.
    :param window: at most this many messages in flight.
    """

    def __init__(self, outbox: Outbox, publish: PublishFn, connected: Callable[[], bool], *,
                 resend_after_s: float = 15.0, window: int = 50) -> None:
        self.outbox = outbox
        self._publish = publish
        self._connected = connected
        self.resend_after_s = resend_after_s
        self.window = window
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._reconnected = threading.Event()
        self._mid_to_seq: dict[int, int] = {}
        self._sent: dict[int, float] = {}  # seq -> monotonic time of the last publish
        self.published = 0

    # -- network-thread callbacks: enqueue only -----------------------------

    def acknowledged(self, mid: int) -> None:
        """PUBACK for ``mid`` (called on the network thread)."""
        self._acks.put(mid)
        self._wake.set()

    def reconnected(self) -> None:
        """A (re)connect happened: everything not acknowledged is published again, in order."""
        self._reconnected.set()
        self._wake.set()

    def notify(self) -> None:
        """A new message is in the outbox."""
        self._wake.set()

    # -- the delivery thread -------------------------------------------------

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
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            seq = self._mid_to_seq.pop(mid, None)
            if seq is not None:
                self.outbox.remove(seq)
                if self._sent.pop(seq, None) is not None:
                    self.published += 1
        if self._reconnected.is_set():
            self._reconnected.clear()
            self._sent.clear()
        if not self._connected():
            return
        now = time.monotonic()
        in_flight = sum(1 for t in self._sent.values() if now - t < self.resend_after_s)
        for msg in self.outbox.pending(limit=self.window + len(self._sent)):
            sent_at = self._sent.get(msg.seq)
            if sent_at is not None and now - sent_at < self.resend_after_s:
                continue
            if in_flight >= self.window:
                break
            info = self._publish(msg.topic, msg.payload, msg.qos)
            if info.rc != 0:
                log.debug("publish of outbox #%d deferred (rc=%s)", msg.seq, info.rc)
                break
            self._mid_to_seq[info.mid] = msg.seq
            self._sent[msg.seq] = now
            in_flight += 1

    def drain(self, timeout: float) -> bool:
        """Call from the delivery thread's owner after stopping it: deliver until empty or ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.outbox.depth and time.monotonic() < deadline:
            self.step()
            self._wake.wait(0.05)
            self._wake.clear()
        return self.outbox.depth == 0
