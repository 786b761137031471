"""How a long-running ``maskwatch`` service (``edge``, ``hub``) takes its signals.

- **SIGINT and SIGTERM** ask it to stop. The signal's number reaches a pipe through
  :func:`signal.set_wakeup_fd`, written by the C-level handler in whatever thread the kernel picked; a watcher
  thread reads it, logs it and sets the service's ``stopping`` event. The Python-level handler does nothing.
  Two ways to ignore SIGTERM are closed so: (1) Python runs a Python handler in the main thread between two
  bytecodes, maybe while that thread holds a lock, and :class:`threading.Event` holds one for a moment inside
  ``wait()``: a handler that called ``Event.set()`` there waited for its own thread forever; (2) when the kernel
  delivers the signal to another thread (it does when the main thread cannot take it, e.g. right after SIGCONT),
  a main thread blocked in ``Event.wait()`` is not woken, and a Python handler never runs.
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
        self._previous_wakeup_fd = -1
        self._dumps_stacks = False
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> ShutdownSignals:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)  # set_wakeup_fd's rule
        self._watcher = threading.Thread(target=self._watch, name="signals", daemon=True)
        self._watcher.start()
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        try:
            faulthandler.register(STACK_DUMP_SIGNAL, all_threads=True)
            self._dumps_stacks = True
        except (AttributeError, OSError, ValueError):  # stderr is no file (captured): no stack dumps then
            log.debug("SIGUSR1 stack dumps off: stderr has no file descriptor")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._dumps_stacks:
            faulthandler.unregister(STACK_DUMP_SIGNAL)
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        os.write(self._write_fd, _NO_SIGNAL)
        if self._watcher is not None:
            self._watcher.join(5.0)
        os.close(self._write_fd)
        os.close(self._read_fd)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """The Python-level handler: nothing (it replaces the default, which ends the process at once); the
        wakeup fd has carried the signal to the watcher already."""

    def _watch(self) -> None:
        """Body of the ``signals`` thread: log each stop signal and set ``stopping``, until :meth:`__exit__`."""
        while (data := os.read(self._read_fd, 1)) and data != _NO_SIGNAL:
            if data[0] not in STOP_SIGNALS:  # the wakeup fd carries every signal with a Python handler
                continue
            self.received = signal.Signals(data[0])
            log.info("%s: shutting down", self.received.name)
            self.stopping.set()
