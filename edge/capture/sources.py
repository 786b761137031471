"""Frame sources and the capture thread.

A source is opened from a ``--source`` string by :func:`open_source`:

* ``0`` (a camera index), a video file, an RTSP/HTTP URL: OpenCV ``VideoCapture``;
* a folder: every image in it (and its subfolders) as an independent still;
* ``picamera``: picamera2 on a Raspberry Pi (imported only then);
* ``scene:DIR`` or ``scene:builtin``: the simulated panoramic camera (:mod:`edge.capture.scene`).

:class:`Capture` reads a source in its own thread. For live sources it keeps
only the newest frame and counts the ones it had to drop, so latency stays
bounded when inference is slower than the camera; a camera that fails to open
or drops out is retried with backoff. Finite sources (files, folders) are read
frame by frame without dropping. A source that gives no frame for
``stall_timeout_s`` is reported down (:attr:`Capture.error`) until frames return; a live one whose read
gives nothing for ``reopen_after_s`` is closed and opened again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.capture.frames import Frame, FrameSource
from edge.capture.images import IMAGE_SUFFIXES, read_image
from edge.capture.scene import SceneCamera, load_scene
from edge.config import CameraConfig, SceneConfig
from shared.errors import HardwareError, ImageReadError
from shared.messages import MAX_ERROR_CHARS

log = logging.getLogger(__name__)

#: Given-up reads that may stay blocked in a driver at once; beyond, no new reader starts until one returns (a
#: driver that never returns costs this many threads, not one per reopen).
MAX_BLOCKED_READS = 3
#: How long a stopping capture waits for a read in progress before it closes the source, seconds.
STOPPING_READ_S = 1.0


class VideoSource:
    """A camera (index or ``/dev/`` device path), video file or stream URL through OpenCV."""

    def __init__(self, spec: str, camera: CameraConfig | None = None) -> None:
        self.spec = spec
        self.name = spec
        self.camera = camera or CameraConfig()
        self.device = spec.isdigit() or spec.startswith("/dev/")
        self.live = self.device or "://" in spec
        self._cap: Any = None
        self._index = 0

    def open(self) -> None:
        if not self.live and not Path(self.spec).is_file():
            raise HardwareError(f"video file not found: {self.spec}")
        cap = cv2.VideoCapture(int(self.spec) if self.spec.isdigit() else self.spec)
        if not cap.isOpened():
            cap.release()
            kind = "camera" if self.device else "stream" if self.live else "video"
            raise HardwareError(f"cannot open {kind} {self.spec!r} (missing, busy or unsupported)")
        if self.camera.width and self.camera.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.camera.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.camera.height)
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise HardwareError(f"{self.spec}: not open")
        ok, image = self._cap.read()
        if not ok or image is None:
            if self.live:
                raise HardwareError(f"camera {self.spec!r} stopped delivering frames")
            if self._index == 0:
                raise HardwareError(f"video {self.spec!r} has no readable frame (corrupt or unsupported)")
            return None
        frame = Frame(image=image, index=self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource:
    """Every image under a folder, by sorted relative path, each an independent still.

    Unreadable images are logged, counted in :attr:`unreadable` and skipped.
    """

    live = False

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.name = str(folder)
        self.unreadable = 0
        self._files: Iterator[Path] = iter(())
        self._index = 0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise HardwareError(f"image folder not found: {self.folder}")
        files = sorted(p for p in self.folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise HardwareError(f"no images in folder {self.folder} (suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
        self._files = iter(files)

    def read(self) -> Frame | None:
        for path in self._files:
            try:
                image = read_image(path)
            except ImageReadError as exc:
                self.unreadable += 1
                log.error("skipping unreadable image: %s", exc)
                continue
            frame = Frame(image=image, index=self._index, name=path.relative_to(self.folder).as_posix(), still=True)
            self._index += 1
            return frame
        return None

    def close(self) -> None:
        self._files = iter(())


class PicameraSource:
    """The Raspberry Pi camera through picamera2 (imported only when opened)."""

    live = True
    name = "picamera"

    def __init__(self, camera: CameraConfig | None = None) -> None:
        self.camera = camera or CameraConfig()
        self._cam: Any = None
        self._index = 0

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise HardwareError("source 'picamera' needs picamera2 (apt install python3-picamera2)") from exc
        try:
            cam = Picamera2()
            size = (self.camera.width or 640, self.camera.height or 480)
            cam.configure(cam.create_video_configuration(main={"size": size, "format": "BGR888"}))
            cam.start()
        except Exception as exc:  # picamera2 raises plain RuntimeError/IndexError when no camera is attached
            raise HardwareError(f"cannot open the Pi camera: {exc}") from exc
        self._cam = cam

    def read(self) -> Frame | None:
        if self._cam is None:
            raise HardwareError("picamera: not open")
        try:
            image = self._cam.capture_array()
        except Exception as exc:
            raise HardwareError(f"Pi camera stopped delivering frames: {exc}") from exc
        frame = Frame(image=np.ascontiguousarray(image[:, :, :3]), index=self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cam is not None:
            self._cam.close()
            self._cam = None


def open_source(
    spec: str,
    *,
    camera: CameraConfig | None = None,
    scene: SceneConfig | None = None,
    angle: Callable[[], float] | None = None,
) -> FrameSource:
    """Build (not open) the source named by ``spec``; ``angle`` is the servo position for a scene."""
    if spec.startswith("scene:"):
        cfg = scene or SceneConfig()
        return SceneCamera(load_scene(spec.removeprefix("scene:"), cfg), cfg, angle=angle or (lambda: 0.0))
    if spec == "picamera":
        return PicameraSource(camera)
    if "://" not in spec and Path(spec).is_dir():
        return ImageFolderSource(spec)
    return VideoSource(spec, camera)


class Capture:
    """Runs a source in the ``capture`` thread and hands out frames.

    Live sources: only the newest frame is kept (:attr:`dropped` counts the rest);
    failures are retried with exponential backoff between ``retry_min_s`` and
    ``retry_max_s`` while :attr:`error` says what is wrong. Finite sources: every
    frame is handed out in order; :attr:`finished` is set at the end (or when the
    source cannot be opened at all).

    :param stall_timeout_s: no frame for this long and :attr:`error` says so (``no frame for N s``) until
        frames return; a run without ``retry`` then gives up.
    :param retry: reopen a failed live source (a node); off, the first failure or stall ends the run (``--once``).
    :param reopen_after_s: with ``retry``, a live source is read in a thread of its own; when it gives no frame
        for this long, the read is given up (the source is closed, which wakes most drivers; a read that stays
        blocked is left behind and whatever it returns is dropped) and the source is opened again.
    """

    def __init__(
        self,
        source: FrameSource,
        retry_min_s: float = 0.5,
        retry_max_s: float = 30.0,
        stall_timeout_s: float = 10.0,
        *,
        retry: bool = True,
        reopen_after_s: float = 30.0,
    ) -> None:
        self.source = source
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.stall_timeout_s = stall_timeout_s
        self.retry = retry
        self.reopen_after_s = reopen_after_s
        #: how many times a live source was given up because its read gave nothing for ``reopen_after_s``
        self.reopened = 0
        self._generation = 0  # the reads of an older generation were given up: their frames are dropped
        self._blocked: list[threading.Thread] = []  # given-up readers still inside a read
        self.dropped = 0
        self.frames = 0
        #: why the source failed to open or read (cleared when it opens again); see :attr:`error`
        self.failure: str | None = None
        self.finished = threading.Event()
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._last_frame = time.monotonic()

    @property
    def error(self) -> str | None:
        """Why no frames come now: the source's failure, or no frame for ``stall_timeout_s``; ``None`` when fine."""
        if self.failure:
            return self.failure[:MAX_ERROR_CHARS]
        idle = time.monotonic() - self._last_frame
        if idle < self.stall_timeout_s:
            return None
        ended = f" (the source ended after {self.frames} frame(s))" if self.finished.is_set() else ""
        return f"no frame for {idle:.0f} s{ended}"

    @property
    def ok(self) -> bool:
        """Frames are coming (no failure, no stall)."""
        return self.error is None

    def run(self, stop: threading.Event) -> None:
        """Body of the capture thread."""
        delay = self.retry_min_s
        try:
            while not stop.is_set():
                try:
                    self.source.open()
                    if self.failure:
                        log.info("source %s is open again", self.source.name)
                    self.failure = None
                    self._last_frame = time.monotonic()
                    delay = self.retry_min_s
                    if self.source.live and self.retry:
                        self._watch(stop)
                    else:
                        self._pump(stop, self._generation)
                    return  # the end of the stream, or stopped (live devices raise instead)
                except HardwareError as exc:
                    self.failure = str(exc)
                    if not (self.source.live and self.retry):
                        log.error("source failed: %s", exc)
                        return
                    log.error("camera problem: %s; retrying in %.1f s", exc, delay)
                finally:
                    self.source.close()
                stop.wait(delay)
                delay = min(delay * 2, self.retry_max_s)
        finally:
            self.finished.set()
            with self._cond:
                self._cond.notify_all()

    def _watch(self, stop: threading.Event) -> None:
        """Read a live source in a reader thread and watch it; raise :class:`HardwareError` when it fails or
        gives no frame for ``reopen_after_s`` (then its reads are given up), return when stopped."""
        self._blocked = [thread for thread in self._blocked if thread.is_alive()]
        if len(self._blocked) >= MAX_BLOCKED_READS:
            raise HardwareError(
                f"{len(self._blocked)} reads of {self.source.name!r} are still blocked in its driver: "
                "no new read until one returns"
            )
        generation = self._generation
        failures: list[HardwareError] = []

        def read() -> None:
            try:
                self._pump(stop, generation)
            except HardwareError as exc:
                failures.append(exc)
            except Exception:
                if not stop.is_set() and generation == self._generation:
                    raise
                # the source was closed under a read that outlived its watch (stopped, or given up): no fault

        reader = threading.Thread(target=read, name="capture-read", daemon=True)
        reader.start()
        while reader.is_alive() and not stop.is_set():
            reader.join(min(0.2, self.reopen_after_s))
            idle = time.monotonic() - self._last_frame
            if reader.is_alive() and idle >= self.reopen_after_s:
                self._generation += 1
                self.reopened += 1
                self._blocked.append(reader)
                raise HardwareError(f"source {self.source.name!r} gave no frame for {idle:.0f} s: opening it again")
        if stop.is_set():
            reader.join(STOPPING_READ_S)  # a read in progress ends before the source is closed under it
        if failures:
            raise failures[0]

    def _pump(self, stop: threading.Event, generation: int) -> None:
        while not stop.is_set() and generation == self._generation:
            frame = self.source.read()
            if frame is None:
                return
            with self._cond:
                if generation != self._generation:
                    return  # given up while it read: a newer reader owns the source
                if self.source.live:
                    if self._latest is not None:
                        self.dropped += 1
                else:
                    while self._latest is not None and not stop.is_set():
                        self._cond.wait(0.1)
                self._latest = frame
                self.frames += 1
                self._last_frame = time.monotonic()
                self._cond.notify_all()

    def next(self, timeout: float = 0.5) -> Frame | None:
        """The newest frame not handed out yet, waiting up to ``timeout``; ``None`` if none.

        Without ``retry``, a stall ends the run: :attr:`failure` says why and :attr:`finished` is set.
        """
        with self._cond:
            if self._latest is None and not self.finished.is_set():
                self._cond.wait(timeout)
            frame, self._latest = self._latest, None
            if frame is not None:
                self._last_frame = time.monotonic()  # a finite source waits for its consumer: that is no stall
            elif not self.retry and not self.finished.is_set() and (stalled := self.error):
                self.failure = stalled
                self.finished.set()
            self._cond.notify_all()
            return frame

    @property
    def exhausted(self) -> bool:
        """A finite source has ended and every frame was handed out."""
        return self.finished.is_set() and self._latest is None
