"""A cap on repeated log lines: at most a few per key per window, then one summary of what was left out.

Garbage on a topic must not flood the log: 2,000 bad messages are still counted one by one (by the caller's
counters), but logged only a few times per reason and minute.

Example::

    >>> import logging
    >>> cap = LogCap(logging.getLogger("demo"), "rejections", per_window=2, window_s=60.0, clock=lambda: 0.0)
    >>> [cap.warning("json", "rejected %s", n) for n in range(5)]
    [True, True, False, False, False]
    >>> cap.suppressed("json")
    3
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Log lines per key per window unless told otherwise.
DEFAULT_PER_WINDOW = 5
#: Length of the window, seconds.
DEFAULT_WINDOW_S = 60.0


@dataclass
class _Window:
    started: float
    logged: int = 0
    suppressed: int = 0


class LogCap:
    """Logs at most ``per_window`` lines per key in each ``window_s``; once a window with suppressed lines
    closes, one summary line says how many: ``suppressed K more 'json' rejections in the last 60 s``.

    The summary is written by the next call for any key after the window closed, or by :meth:`flush`
    (thread-safe; the clock is injectable for tests).

    :param logger: where lines go.
    :param what: plural noun of the summary line, e.g. ``rejections``.
    :param per_window: lines logged per key per window (at least 1), default 5.
    :param window_s: window length in seconds, default 60.
    :param clock: monotonic seconds, default :func:`time.monotonic`.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        per_window: int = DEFAULT_PER_WINDOW,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_window < 1 or window_s <= 0:
            raise ValueError(f"per_window must be >= 1 and window_s > 0, got {per_window} and {window_s}")
        self.logger = logger
        self.what = what
        self.per_window = per_window
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at WARNING unless ``key`` has used up its window; return whether it was logged."""
        with self._lock:
            now = self._clock()
            self._close_windows(now)
            window = self._windows.setdefault(key, _Window(now))
            if window.logged >= self.per_window:
                window.suppressed += 1
                return False
            window.logged += 1
        self.logger.warning(msg, *args, stacklevel=2)  # the record names the caller
        return True

    def flush(self) -> None:
        """Write the summaries of the windows that have closed."""
        with self._lock:
            self._close_windows(self._clock())

    def suppressed(self, key: str) -> int:
        """Lines of ``key`` left out in its current window."""
        with self._lock:
            window = self._windows.get(key)
            return window.suppressed if window else 0

    def _close_windows(self, now: float) -> None:
        for key, window in list(self._windows.items()):
            if now - window.started >= self.window_s:
                del self._windows[key]
                if window.suppressed:
                    self.logger.warning(
                        "suppressed %d more %r %s in the last %g s", window.suppressed, key, self.what, self.window_s
                    )
