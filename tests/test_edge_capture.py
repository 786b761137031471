"""The capture thread's health: a stall is reported until frames return; without retry it ends the run; a read
that stays blocked is given up and the camera opened again.

The camera here is a real image folder read through OpenCV, made live and held back by a gate (an Event), as a
camera whose driver stops delivering: the one piece of hardware a test cannot unplug.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.capture.frames import Frame
from edge.capture.sources import MAX_BLOCKED_READS, Capture, ImageFolderSource
from tests.polling import wait_until


class GatedCamera(ImageFolderSource):
    """A live source that gives the folder's image again and again while ``gate`` is set, and blocks otherwise."""

    live = True

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.gate = threading.Event()
        self.stop = threading.Event()
        self.opens = 0
        self._still: Frame | None = None

    def open(self) -> None:
        super().open()
        self.opens += 1

    def read(self) -> Frame | None:
        while not self.gate.wait(0.05):
            if self.stop.is_set():
                return None
        self._still = self._still or super().read()
        return self._still


@pytest.fixture
def camera(tmp_path: Path) -> Iterator[GatedCamera]:
    cv2.imwrite(str(tmp_path / "wall.png"), np.full((60, 80, 3), 128, np.uint8))
    source = GatedCamera(tmp_path)
    yield source
    source.stop.set()


def run(capture: Capture, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=capture.run, args=(stop,), daemon=True)
    thread.start()
    return thread


def test_a_stall_is_reported_until_frames_return(camera: GatedCamera) -> None:
    capture, stop = Capture(camera, stall_timeout_s=0.3), threading.Event()
    thread = run(capture, stop)
    try:
        assert wait_until(lambda: capture.error is not None, 3)
        assert (capture.error or "").startswith("no frame for") and not capture.ok
        camera.gate.set()
        assert wait_until(lambda: capture.next(0.1) is not None and capture.ok, 3)
        assert capture.error is None and capture.failure is None
        camera.gate.clear()
        assert wait_until(lambda: capture.next(0.05) is None and not capture.ok, 3)  # and down again
    finally:
        stop.set()
        camera.stop.set()
        thread.join(2)


def test_without_retry_a_stall_ends_the_run_with_its_reason(camera: GatedCamera) -> None:
    capture, stop = Capture(camera, stall_timeout_s=0.3, retry=False), threading.Event()
    thread = run(capture, stop)
    try:
        assert wait_until(lambda: capture.next(0.1) is None and capture.exhausted, 3)
        assert (capture.failure or "").startswith("no frame for")
    finally:
        stop.set()
        camera.stop.set()
        thread.join(2)


def test_a_read_that_stays_blocked_is_given_up_and_the_camera_opened_again(camera: GatedCamera) -> None:
    """A driver whose read never returns (closing does not wake it): the capture gives the read up after
    reopen_after_s and opens the camera again, keeps at most MAX_BLOCKED_READS such reads behind, and takes the
    frames of the newest read once the driver delivers."""
    capture = Capture(camera, retry_min_s=0.05, retry_max_s=0.1, stall_timeout_s=0.2, reopen_after_s=0.3)
    stop = threading.Event()
    thread = run(capture, stop)

    def readers() -> int:
        return sum(t.name == "capture-read" and t.is_alive() for t in threading.enumerate())

    try:
        assert wait_until(lambda: capture.reopened >= 1 and camera.opens >= 2, 5)
        assert wait_until(lambda: "still blocked" in (capture.failure or ""), 10)
        assert capture.reopened == MAX_BLOCKED_READS and readers() == MAX_BLOCKED_READS
        assert not capture.ok
        camera.gate.set()  # the driver delivers again: the blocked reads return, their frames are dropped
        assert wait_until(lambda: capture.next(0.1) is not None and capture.ok, 5)
        assert capture.failure is None and readers() == 1
    finally:
        stop.set()
        camera.stop.set()
        thread.join(2)
