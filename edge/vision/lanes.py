"""Several copies of one model, each run by its own thread, so that small inferences run side by side.

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
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Generic, TypeVar

Copy = TypeVar("Copy")
Job = TypeVar("Job")
Result = TypeVar("Result")


class Lanes(Generic[Copy]):
    """Runs jobs on copies of a resource: the calling thread on the first copy, one worker thread on each other.

    Each lane takes the next job as soon as it is free, so one slow job does not hold up the rest.

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

    def __len__(self) -> int:
        return len(self.copies)

    def map(self, work: Callable[[Copy, Job], Result], jobs: Iterable[Job]) -> list[Result]:
        """``work(copy, job)`` for every job, on whichever copy is free; the results in the order of ``jobs``.

        If a job raises, the lanes take no further jobs and the exception is raised here once every lane has
        stopped. Not meant to be called from several threads at once.
        """
        jobs = list(jobs)
        if len(self.copies) == 1 or len(jobs) <= 1:
            return [work(self.copies[0], job) for job in jobs]
        if self._workers is None:
            self._workers = ThreadPoolExecutor(len(self.copies) - 1, self.name)
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(jobs)):
            todo.put(index)
        results: dict[int, Result] = {}

        def run_lane(copy: Copy) -> None:
            while True:
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    results[index] = work(copy, jobs[index])
                except BaseException:
                    while not todo.empty():  # the other lanes stop after their current job
                        todo.get_nowait()
                    raise

        helpers = [self._workers.submit(run_lane, copy) for copy in self.copies[1 : len(jobs)]]
        try:
            run_lane(self.copies[0])
        finally:
            wait(helpers)
        for helper in helpers:
            helper.result()
        return [results[index] for index in range(len(jobs))]
