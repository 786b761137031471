"""How a long-running ``maskwatch`` service (``edge``, ``hub``) takes its signals.

- **SIGINT and SIGTERM** ask it to stop. The Python signal handler only writes the signal's number to a pipe;
  a watcher thread reads it, logs it and sets the service's ``stopping`` event. A handler must not take a lock:
  Python runs it in the main thread between two bytecodes, maybe while that thread holds one, and
  :class:`threading.Event` holds one for a moment inside ``wait()``. A handler that called ``Event.set()``
  there waited for its own thread forever, and the process ignored every SIGTERM after it until SIGKILL.
- **SIGUSR1** writes the Python stack of every thread to stderr (the service's log) through :mod:`faulthandler`,
  which works even when the process hangs: ``kill -USR1 <pid>`` shows where it is stuck.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger(__name__)

#: The signals that ask a service to stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: The signal that makes a service write every thread's stack to stderr.
STACK_DUMP_SIGNAL = signal.SIGUSR1

_NO_SIGNAL = b"\0"  # written by __exit__ to end the watcher


class ShutdownSignals:
    """While active, SIGINT and SIGTERM set ``stopping`` (from a thread of its own, never from the handler),
    and SIGUSR1 dumps every thread's stack to stderr. Enter it in the main thread (Python's rule for handlers);
    on exit the previous handlers are back.

    >>> import threading
    >>> stopping = threading.Event()
    >>> with ShutdownSignals(stopping) as signals:
    ...     pass  # start the service here, then block in stopping.wait()
    >>> signals.received is None  # no signal came
    True
    """

    def __init__(self, stopping: threading.Event) -> None:
        self.stopping = stopping
        #: the last stop signal that came, if any
        self.received: signal.Signals | None = None
        self._read_fd = self._write_fd = -1
        self._previous: dict[signal.Signals, Any] = {}
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> ShutdownSignals:
        self._read_fd, self._write_fd = os.pipe()
        self._watcher = threading.Thread(target=self._watch, name="signals", daemon=True)
        self._watcher.start()
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        faulthandler.register(STACK_DUMP_SIGNAL, all_threads=True)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        faulthandler.unregister(STACK_DUMP_SIGNAL)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        os.write(self._write_fd, _NO_SIGNAL)
        if self._watcher is not None:
            self._watcher.join(5.0)
        os.close(self._write_fd)
        os.close(self._read_fd)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """The handler itself: one write to a pipe, which takes no lock and logs nothing."""
        os.write(self._write_fd, bytes([signum]))

    def _watch(self) -> None:
        """Body of the ``signals`` thread: log each stop signal and set ``stopping``, until :meth:`__exit__`."""
        while (data := os.read(self._read_fd, 1)) and data != _NO_SIGNAL:
            self.received = signal.Signals(data[0])
            log.info("%s: shutting down", self.received.name)
            self.stopping.set()
