"""The batch writer in a process of its own, so validation and SQL run on a second core.

The hub's MQTT network thread receives and acknowledges; a :class:`WriterProcess`
takes each batch as ``(topic, payload)`` pairs over a pipe, runs
:class:`hub.ingest.batch_core.BatchWriter` in a child process, and hands back the
:class:`hub.ingest.batch_core.BatchResult` together with the child's log records, which are
re-emitted by the hub's own loggers. A child that dies is started again and the
batch is retried (storage is idempotent, so nothing is stored twice).

Example::

    writer = WriterProcess(settings)
    writer.start()
    result = writer.write([("maskwatch/hq/door-1/events", payload)], utc_now())
    writer.stop()
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import signal
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from hub.ingest.batch_core import BatchResult, Message, WriterSettings
from shared.errors import MaskwatchError, StorageError

log = logging.getLogger(__name__)


class _Records(logging.Handler):
    """Keeps the child's log records, made picklable, until they are sent to the hub."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        records, self.records = self.records, []
        return records


def _serve(settings: WriterSettings, connection: Connection, log_level: int) -> None:
    """The child: write each batch received until ``None`` or the hub is gone."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # the hub stops its writer itself, after the last batch
        signal.signal(sig, signal.SIG_IGN)
    records = _Records()
    logging.basicConfig(level=log_level, handlers=[records], force=True)
    try:
        writer = settings.build()
    except Exception as exc:
        connection.send(("error", f"cannot open {settings.db_url}: {exc}", records.take()))
        return
    connection.send(("ready", None, records.take()))
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            break
        if request is None:
            break
        messages, now = request
        reply: tuple[str, Any]
        try:
            reply = ("ok", writer.write(messages, now))
        except StorageError as exc:
            reply = ("storage", str(exc))
        except Exception as exc:  # a bug: reported to the hub, the writer stays up
            log.exception("batch of %d messages failed", len(messages))
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            connection.send((*reply, records.take()))
        except OSError:
            break
    writer.store.close()


class WriterProcess:
    """Runs a :class:`hub.ingest.batch_core.BatchWriter` of ``settings`` in a child process (same ``write`` call).

    :param settings: what the child's writer is built from.
    """

    def __init__(self, settings: WriterSettings) -> None:
        self.settings = settings
        self.restarts = 0
        self._process: BaseProcess | None = None
        self._connection: Connection | None = None

    def start(self) -> None:
        """Start the child and wait until its database is open.

        :raises MaskwatchError: the child could not start or open the database.
        """
        context = mp.get_context("spawn")  # never fork a process that runs threads
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=_serve,
            name="maskwatch-hub-writer",
            daemon=True,
            args=(self.settings, child_end, logging.getLogger().getEffectiveLevel()),
        )
        process.start()
        child_end.close()
        self._process, self._connection = process, parent_end
        try:
            status, detail = self._receive()
        except (EOFError, OSError):
            status, detail = "error", f"it exited with code {process.exitcode}"
        if status != "ready":
            self.stop()
            raise MaskwatchError(f"the hub's writer process did not start: {detail}")
        log.debug("writer process %s started", process.pid)

    @property
    def pid(self) -> int | None:
        """The child's process id, while it runs."""
        return self._process.pid if self._process is not None else None

    def write(self, messages: list[Message], now: datetime) -> BatchResult:
        """Validate and store ``messages`` in the child; see :meth:`hub.ingest.batch_core.BatchWriter.write`.

        :raises StorageError: not stored (storage failed, or the child died or could not be started).
        """
        if self._connection is None:
            self._restart("it was not running")
            assert self._connection is not None
        try:
            self._connection.send((messages, now))
            status, value = self._receive()
        except (EOFError, OSError) as exc:
            code = self._process.exitcode if self._process is not None else None
            self._restart(f"it stopped (exit code {code}, {type(exc).__name__})")
            raise StorageError("the writer process stopped during a batch; it was started again") from None
        if status == "ok":
            return value
        if status == "storage":
            raise StorageError(value)
        raise RuntimeError(f"the writer process failed on a batch: {value}")

    def stop(self, timeout: float = 10.0) -> None:
        """Let the child finish its batch and exit (terminated after ``timeout`` seconds)."""
        if self._connection is not None:
            with contextlib.suppress(OSError):
                self._connection.send(None)
            self._connection.close()
            self._connection = None
        if self._process is not None:
            self._process.join(timeout)
            if self._process.is_alive():
                log.error("writer process did not stop within %.0f s; terminating it", timeout)
                self._process.terminate()
                self._process.join(5)
            self._process = None

    def _restart(self, why: str) -> None:
        log.error("the writer process is restarted: %s", why)
        self.stop(timeout=5)
        self.restarts += 1
        try:
            self.start()
        except MaskwatchError as exc:
            raise StorageError(str(exc)) from None

    def _receive(self) -> tuple[str, Any]:
        assert self._connection is not None
        status, value, records = self._connection.recv()
        for record in records:
            logging.getLogger(record.name).handle(record)
        return status, value
