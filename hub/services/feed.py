"""A live feed of what the hub commits (events, alerts, node changes) for Server-Sent Events clients.

:meth:`Feed.publish` may be called from any thread; each subscriber gets its own
bounded asyncio queue (a slow client loses its oldest items, never blocks the hub).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

log = logging.getLogger(__name__)


class Feed:
    """Fan-out of ``(kind, data)`` items to async subscribers.

    :param max_queue: items kept per subscriber before the oldest are dropped.
    """

    def __init__(self, max_queue: int = 1000) -> None:
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[tuple[str, Any]]]] = []
        self.dropped = 0

    def publish(self, kind: str, data: Any) -> None:
        """Send one item to every subscriber (thread-safe, never blocks)."""
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(self._put, queue, (kind, data))
            except RuntimeError:  # the subscriber's loop is closed
                continue

    def _put(self, queue: asyncio.Queue[tuple[str, Any]], item: tuple[str, Any]) -> None:
        if queue.full():
            queue.get_nowait()
            self.dropped += 1
        queue.put_nowait(item)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[tuple[str, Any]]]:
        """Receive items in a queue for as long as the context is open."""
        entry = (asyncio.get_running_loop(), asyncio.Queue[tuple[str, Any]](self.max_queue))
        with self._lock:
            self._subscribers.append(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                self._subscribers.remove(entry)
