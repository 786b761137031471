"""Several copies of one model, each run by its own worker thread, so that small inferences run side by side.

A LiteRT interpreter runs one input at a time and spreads it over its threads; a small network (a 128 px tile)
keeps a second thread poorly busy, and on a loaded machine it waits for the slower one. Two copies of one thread
each run two inputs at once instead (LiteRT releases the GIL while it runs). Results come back in the order of
the inputs, so callers get exactly what one copy would give.

Example::

    lanes = Lanes([load_interpreter(path, 1), load_interpreter(path, 1)], "tiles")
    outputs = lanes.map(run_one, tiles)   # run_one(interpreter, tile), two at a time
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Copy = TypeVar("Copy")
Job = TypeVar("Job")
Result = TypeVar("Result")


class Lanes(Generic[Copy]):
    """Runs jobs on copies of a resource, one worker thread per copy (with one copy: in the calling thread).

    :param copies: the copies; no two threads ever use one copy at once.
    :param name: prefix of the worker threads' names.
    :raises ValueError: no copies.
    """

    def __init__(self, copies: Sequence[Copy], name: str) -> None:
        if not copies:
            raise ValueError("lanes need at least one copy")
        self.copies = list(copies)
        self.name = name
        self._workers: ThreadPoolExecutor | None = None
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self.copies)

    def map(self, work: Callable[[Copy, Job], Result], jobs: Iterable[Job]) -> list[Result]:
        """``work(copy, job)`` for every job, on whichever copy is free; the results in the order of ``jobs``.

        Not meant to be called from several threads at once.
        """
        if len(self.copies) == 1:
            return [work(self.copies[0], job) for job in jobs]
        if self._workers is None:
            free: queue.SimpleQueue[Copy] = queue.SimpleQueue()
            for copy in self.copies:
                free.put(copy)
            self._workers = ThreadPoolExecutor(
                len(self.copies), self.name, initializer=self._take_copy, initargs=(free,)
            )
        return list(self._workers.map(lambda job: work(self._local.copy, job), jobs))

    def _take_copy(self, free: queue.SimpleQueue[Copy]) -> None:
        self._local.copy = free.get_nowait()
