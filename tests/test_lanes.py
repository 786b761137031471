"""Lanes: jobs run on copies side by side, results in the order of the jobs, each copy in one thread at a time."""

from __future__ import annotations

import threading
import time

import pytest

from edge.vision.lanes import Lanes


class Copy:
    """A resource that records the threads that used it and fails if two use it at once."""

    def __init__(self) -> None:
        self.busy = threading.Lock()
        self.threads: set[str] = set()

    def run(self, job: int) -> tuple[int, str]:
        if not self.busy.acquire(blocking=False):
            raise AssertionError("two threads used one copy at once")
        try:
            self.threads.add(threading.current_thread().name)
            time.sleep(0.002 * (job % 3))
            return job * job, threading.current_thread().name
        finally:
            self.busy.release()


def test_results_come_back_in_job_order_and_every_copy_works() -> None:
    copies = [Copy(), Copy(), Copy()]
    lanes = Lanes(copies, "test-lanes")
    for _ in range(3):
        results = lanes.map(Copy.run, range(30))
        assert [square for square, _thread in results] == [job * job for job in range(30)]
    assert copies[0].threads == {threading.current_thread().name}  # the caller runs the first copy
    assert all(copy.threads and all(name.startswith("test-lanes") for name in copy.threads) for copy in copies[1:])


def test_one_job_or_one_copy_runs_in_the_calling_thread() -> None:
    here = threading.current_thread().name
    assert Lanes([Copy(), Copy()], "x").map(Copy.run, [4]) == [(16, here)]
    assert Lanes([Copy()], "x").map(Copy.run, range(3)) == [(0, here), (1, here), (4, here)]
    assert Lanes([Copy(), Copy()], "x").map(Copy.run, []) == []


def test_a_failing_job_stops_the_lanes_and_its_error_is_raised() -> None:
    done: list[int] = []

    def work(copy: Copy, job: int) -> int:
        if job == 2:
            raise ValueError("job 2 failed")
        time.sleep(0.005)
        done.append(job)
        return job

    lanes = Lanes([Copy(), Copy()], "failing")
    with pytest.raises(ValueError, match="job 2 failed"):
        lanes.map(work, range(100))
    assert len(done) < 10  # the rest of the queue was dropped
    assert lanes.map(work, [0, 1]) == [0, 1]  # and the lanes still work


def test_lanes_need_a_copy() -> None:
    with pytest.raises(ValueError, match="at least one copy"):
        Lanes([], "none")
