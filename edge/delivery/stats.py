"""Counters and per-stage timings of the pipeline, turned into ``.../stats`` messages."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")


def cpu_temperature() -> float | None:
    """CPU temperature in degrees Celsius when the kernel exposes it, else ``None``."""
    try:
        return round(int(THERMAL_ZONE.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


class StageTimes:
    """Mean milliseconds per pipeline stage and frame rate over the current interval (thread-safe).

    Example::

        >>> st = StageTimes()
        >>> with st.stage("detect"):
        ...     pass
        >>> st.frame_done(); sorted(st.means())
        ['detect']
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sum: dict[str, float] = defaultdict(float)
        self._count: dict[str, int] = defaultdict(int)
        self._frames = 0
        self._since = time.monotonic()
        self.frames_total = 0
        #: frames processed since start (every frame, detecting or not) and the seconds they took
        self.processed_total = 0
        self.busy_s_total = 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the body as stage ``name``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, (time.perf_counter() - t0) * 1000.0)

    def add(self, name: str, ms: float) -> None:
        with self._lock:
            self._add(name, ms)

    def _add(self, name: str, ms: float) -> None:  # with the lock held
        self._sum[name] += ms
        self._count[name] += 1

    def processed(self, seconds: float) -> None:
        """One frame went through the pipeline in ``seconds`` (its ``total`` stage)."""
        with self._lock:
            self._add("total", seconds * 1000.0)
            self.processed_total += 1
            self.busy_s_total += seconds

    def work(self) -> tuple[int, float]:
        """(frames processed, seconds spent processing them) since start: two readings give the capacity,
        frames per busy second, the rate the node could reach if the camera gave frames without waiting."""
        with self._lock:
            return self.processed_total, self.busy_s_total

    def frame_done(self) -> None:
        with self._lock:
            self._frames += 1
            self.frames_total += 1

    def means(self) -> dict[str, float]:
        with self._lock:
            return {k: round(self._sum[k] / self._count[k], 3) for k in self._sum if self._count[k]}

    def fps(self) -> float:
        with self._lock:
            elapsed = time.monotonic() - self._since
            return round(self._frames / elapsed, 2) if elapsed > 0 else 0.0

    def reset(self) -> tuple[float, dict[str, float]]:
        """Return (fps, mean ms per stage) of the interval and start a new one."""
        fps, means = self.fps(), self.means()
        with self._lock:
            self._sum.clear()
            self._count.clear()
            self._frames = 0
            self._since = time.monotonic()
        return fps, means
