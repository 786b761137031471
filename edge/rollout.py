"""Model rollout on the node: the ``model`` command takes a classifier pushed in chunks, checks it, swaps it in.

Steps of :meth:`ModelRollout.apply`, each of which refuses the model with a clear answer:

1. gather the chunks from ``.../model/<sha256>`` (:class:`ChunkInbox`), join them, check size and sha256;
2. write the file into the model folder (temp file, fsync, ``os.replace``: :class:`ModelFolder`);
3. load it (:class:`~edge.vision.classifier.MaskClassifier` checks input and output shapes);
4. smoke inference on the built-in faces (:func:`smoke_check`): scores in 0..1, the known labels;
5. time the new and the current classifier on the smoke faces (:func:`face_costs`);
6. swap the classifier in the pipeline between two frames, watch the pipeline's capacity (frames per second of
   processing, :meth:`~edge.delivery.stats.StageTimes.work`) for ``probation_s``; when the capacity with one
   face in every frame (the measured time per frame plus one face's cost) falls under half of the same before,
   swap the old one back (rolled back). Capacity, not the frame rate: a camera that gives 5 fps keeps a node at
   5 fps whether a frame takes 10 ms or 150 ms, and would hide a model that leaves no headroom. One face's cost
   added: with no face in view the classifier does not run, and a slow model would pass unseen;
7. point the folder's ``active.json`` at the new file (temp, fsync, ``os.replace``), so a restart loads it.

A node killed at any step restarts on one whole model: the pointer names a complete, fsynced file or the old
one; temp files are removed at start.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.capture.images import read_image
from edge.capture.scene import BUILTIN_DIR
from edge.pipeline import Pipeline
from edge.state import NodeRuntime
from edge.vision.classifier import Classifier, MaskClassifier
from edge.vision.crop import crop_face
from edge.vision.detector import FaceDetector
from shared.errors import CommandRejected, ContractError, ModelError
from shared.messages import MAX_ERROR_CHARS, Command, ModelCommand
from shared.model_transfer import read_chunk, sha256_hex
from shared.mqtt import Received
from shared.topics import parse_topic
from shared.vocabulary import Label, decide

log = logging.getLogger(__name__)

#: The built-in smoke frames: photos of the built-in scene with the label a usable classifier must give.
SMOKE_FACES: tuple[tuple[str, Label], ...] = (("astronaut.jpg", "no_mask"), ("astronaut_masked.jpg", "mask"))
#: A new model that brings the pipeline's capacity (frames per busy second) under this share of the capacity
#: before is rolled back.
MIN_CAPACITY_RATIO = 0.5
#: Rounds of :func:`face_costs` (the median round counts: the pipeline runs meanwhile).
COST_ROUNDS = 5
#: Threshold of the smoke check's decision (the labels of the smoke faces are clear-cut).
SMOKE_THRESHOLD = 0.5
POINTER = "active.json"
TEMP_PREFIX = ".incoming-"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old or the whole new content."""
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class ActiveModel:
    """The pushed model a node loads at start: its file, name and sha256."""

    path: Path
    name: str
    sha256: str


class ModelFolder:
    """The folder of pushed models: ``<sha256>.tflite`` files and ``active.json`` naming the one in use.

    :param folder: created on first use.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def store(self, data: bytes, sha256: str) -> Path:
        """Write a verified model file (atomically); return its path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{sha256}.tflite"
        write_atomically(path, data)
        return path

    def activate(self, name: str, sha256: str) -> None:
        """Make the stored model ``sha256`` the one loaded at start (atomically), and forget the others."""
        pointer = json.dumps({"name": name, "sha256": sha256}).encode()
        write_atomically(self.folder / POINTER, pointer)
        for path in self.folder.glob("*.tflite"):
            if path.stem != sha256:
                path.unlink(missing_ok=True)

    def discard(self, sha256: str) -> None:
        """Remove the stored file ``sha256`` unless it is the active one."""
        active = self.active()
        if active is None or active.sha256 != sha256:
            (self.folder / f"{sha256}.tflite").unlink(missing_ok=True)

    def active(self) -> ActiveModel | None:
        """The model ``active.json`` names, if it is there and whole (its sha256 matches); temp files removed."""
        for temp in self.folder.glob(f"{TEMP_PREFIX}*"):
            log.warning("removing %s, left by an interrupted model write", temp)
            temp.unlink(missing_ok=True)
        pointer = self.folder / POINTER
        if not pointer.is_file():
            return None
        try:
            data = json.loads(pointer.read_bytes())
            name, sha256 = str(data["name"]), str(data["sha256"])
        except (ValueError, KeyError, TypeError) as exc:
            log.error("ignoring unreadable %s: %s", pointer, exc)
            return None
        path = self.folder / f"{sha256}.tflite"
        if not path.is_file() or sha256_hex(path.read_bytes()) != sha256:
            log.error("ignoring %s: %s is missing or does not match its sha256", pointer, path.name)
            return None
        return ActiveModel(path, name, sha256)


class ChunkInbox:
    """Gathers the chunks of pushed model files (network thread puts, the ``commands`` thread waits).

    Holds the chunks of at most ``keep`` files; a chunk of a further file drops the oldest one.
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self.rejected = 0
        self._files: dict[str, dict[int, bytes]] = {}
        self._counts: dict[str, int] = {}
        self._changed = threading.Condition()

    def receive(self, message: Received) -> None:
        """Subscription handler for ``.../model/+`` (network thread): check the header, keep the chunk."""
        try:
            sha256 = parse_topic(message.topic).name or ""
            index, count, data = read_chunk(message.payload)
        except ContractError as exc:
            self.rejected += 1
            log.warning("ignoring model chunk on %s: %s", message.topic, exc)
            return
        with self._changed:
            if sha256 not in self._files:
                while len(self._files) >= self.keep:
                    oldest = next(iter(self._files))
                    del self._files[oldest], self._counts[oldest]
                self._files[sha256], self._counts[sha256] = {}, count
            if self._counts[sha256] != count:
                self.rejected += 1
                log.warning(
                    "model chunk %d of %s says %d chunks, earlier ones %d", index, sha256, count, self._counts[sha256]
                )
                return
            self._files[sha256][index] = data
            self._changed.notify_all()

    def take(self, sha256: str, timeout_s: float) -> bytes:
        """The joined file ``sha256`` once all its chunks are in (removed from the inbox).

        :raises CommandRejected: not every chunk came in ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not self._complete(sha256):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = len(self._files.get(sha256, {}))
                    raise CommandRejected(
                        f"model file incomplete: {got} of {self._counts.get(sha256, '?')} chunk(s) "
                        f"on .../model/{sha256} within {timeout_s:g} s"
                    )
                self._changed.wait(remaining)
            parts = self._files.pop(sha256)
            self._counts.pop(sha256)
        return b"".join(parts[i] for i in range(len(parts)))

    def _complete(self, sha256: str) -> bool:
        return sha256 in self._files and len(self._files[sha256]) == self._counts[sha256]


#: A smoke face: its file, the label a usable classifier must give, its BGR crop as the pipeline cuts it.
SmokeFace = tuple[str, Label, np.ndarray]


def smoke_crops(detector: FaceDetector) -> list[SmokeFace]:
    """The built-in smoke faces as the pipeline cuts them: (file, expected label, BGR crop of the first face).

    :raises ModelError: the detector finds no face in one of them.
    """
    crops = []
    for file, expected in SMOKE_FACES:
        image = read_image(BUILTIN_DIR / file)
        faces = detector.detect(image)
        if not faces:
            raise ModelError(f"smoke check: the detector finds no face in {file}")
        crops.append((file, expected, crop_face(image, faces[0].box)))
    return crops


def smoke_check(classifier: MaskClassifier, faces: list[SmokeFace]) -> list[float]:
    """Classify the smoke faces (:func:`smoke_crops`); return their no-mask probabilities.

    :raises ModelError: a probability outside 0..1 or not finite, or a face with the wrong label.
    """
    probabilities = []
    for file, expected, crop in faces:
        scores = classifier.scores([crop])
        p = float(scores.p_no_mask[0])
        if not np.isfinite(scores.p_no_mask).all() or not np.isfinite(scores.face_score).all() or not 0 <= p <= 1:
            raise ModelError(f"smoke check: no-mask probability {p} for {file} is not in 0..1")
        label = decide(p, SMOKE_THRESHOLD).label
        if label != expected:
            raise ModelError(f"smoke check: {file} is {label} (p_no_mask {p:.3f}), expected {expected}")
        probabilities.append(round(p, 4))
    return probabilities


def face_costs(classifiers: list[Classifier], faces: list[SmokeFace], rounds: int = COST_ROUNDS) -> list[float]:
    """Seconds per face of each classifier on the smoke faces: the median of ``rounds`` rounds, the classifiers
    taking turns within each round (so that load from the running pipeline falls on all of them alike)."""
    crops = [crop for _file, _label, crop in faces]
    times: list[list[float]] = [[] for _ in classifiers]
    for _ in range(rounds):
        for index, classifier in enumerate(classifiers):
            start = time.perf_counter()
            for crop in crops:
                classifier.scores([crop])
            times[index].append((time.perf_counter() - start) / len(crops))
    return [float(np.median(each)) for each in times]


@dataclass(frozen=True)
class _Rates:
    fps: float  # frames per second of wall time
    capacity: float  # frames per second of processing: the rate without waiting for the camera

    def with_face(self, cost_s: float) -> float:
        """The capacity if every frame also classified one face costing ``cost_s`` seconds."""
        return 1.0 / (1.0 / self.capacity + cost_s) if self.capacity > 0 else 0.0


@dataclass(frozen=True)
class _Reading:
    """The pipeline's counters at one moment; two readings give the rates between them."""

    at: float
    frames: int
    processed: int
    busy_s: float

    def rates_until(self, later: _Reading) -> _Rates:
        elapsed, busy = later.at - self.at, later.busy_s - self.busy_s
        return _Rates(
            fps=(later.frames - self.frames) / elapsed if elapsed > 0 else 0.0,
            capacity=(later.processed - self.processed) / busy if busy > 0 else 0.0,
        )


class ModelRollout:
    """Handler of the ``model`` command (see the module's steps).

    :param folder: where pushed models are kept.
    :param inbox: the chunks received.
    :param pipeline: whose classifier is swapped.
    :param smoke_detector: makes the detector that cuts the smoke faces, once, on the first push (its own: a LiteRT
        interpreter must not run in two threads, and the pipeline's runs in the ``inference`` thread).
    :param runtime: whose ``model``, ``model_sha256`` and ``model_error`` the state reports.
    :param publish_state: publishes the retained state (after a refusal: an ``ok`` answer publishes it anyway).
    :param num_threads: LiteRT threads of the new classifier.
    """

    def __init__(
        self,
        folder: ModelFolder,
        inbox: ChunkInbox,
        pipeline: Pipeline,
        smoke_detector: Callable[[], FaceDetector],
        runtime: NodeRuntime,
        publish_state: Callable[[], None],
        num_threads: int,
        stopping: threading.Event,
    ) -> None:
        self.folder = folder
        self.inbox = inbox
        self.pipeline = pipeline
        self._make_detector = smoke_detector
        self._smoke_faces: list[SmokeFace] | None = None  # cut on the first push, then kept (the detector is not)
        self.runtime = runtime
        self._publish_state = publish_state
        self.num_threads = num_threads
        self.stopping = stopping

    def apply(self, command: Command) -> dict[str, Any]:
        """Take the model of ``command``; the applied model, or :class:`CommandRejected` saying why not."""
        assert isinstance(command, ModelCommand)
        try:
            value = self._apply(command)
        except (CommandRejected, ModelError, RuntimeError, ValueError, OSError) as exc:  # LiteRT, disk
            self.folder.discard(command.sha256)
            reason = f"model {command.model}@{command.sha256[:12]} refused: {exc}"[:MAX_ERROR_CHARS]
            with self.runtime.lock:
                self.runtime.model_error = reason
            self._publish_state()
            raise CommandRejected(reason) from exc
        with self.runtime.lock:
            self.runtime.model_error = None
        return value

    def _apply(self, command: ModelCommand) -> dict[str, Any]:
        start = self._reading()
        data = self.inbox.take(command.sha256, command.transfer_timeout_s)
        if len(data) != command.size:
            raise CommandRejected(f"size mismatch: received {len(data)} bytes, the command says {command.size}")
        digest = sha256_hex(data)
        if digest != command.sha256:
            raise CommandRejected(f"sha256 mismatch: received {digest}")
        path = self.folder.store(data, command.sha256)
        new = MaskClassifier(path, self.num_threads, name=command.model)
        if self._smoke_faces is None:
            self._smoke_faces = smoke_crops(self._make_detector())
        smoke = smoke_check(new, self._smoke_faces)
        # the current model gets an interpreter of its own: the pipeline's runs in the inference thread
        current = MaskClassifier(self.pipeline.classifier.path, self.num_threads)
        new_cost, old_cost = face_costs([new, current], self._smoke_faces)
        del current
        # the rates before: over the transfer and checks, at least probation_s long
        self.stopping.wait(max(0.0, command.probation_s - (time.monotonic() - start.at)))
        before = start.rates_until(self._reading())
        old = self.pipeline.use_classifier(new)
        try:
            swapped = self._reading()
            self.stopping.wait(command.probation_s)
            after = swapped.rates_until(self._reading())
            one_face_before, one_face_after = before.with_face(old_cost), after.with_face(new_cost)
            slowed = one_face_after < MIN_CAPACITY_RATIO * one_face_before
            if command.probation_s > 0 and before.capacity > 0 and slowed:
                raise CommandRejected(
                    f"rolled back: capacity with a face in every frame fell from {one_face_before:.1f} to "
                    f"{one_face_after:.1f} frames per second of processing (under {MIN_CAPACITY_RATIO:.0%} of "
                    f"before; measured {before.capacity:.1f} -> {after.capacity:.1f}, a face "
                    f"{old_cost * 1e3:.1f} -> {new_cost * 1e3:.1f} ms, frame rate {before.fps:.1f} -> "
                    f"{after.fps:.1f} fps)"
                )
            self.folder.activate(command.model, command.sha256)
        except BaseException:
            self.pipeline.use_classifier(old)
            raise
        with self.runtime.lock:
            self.runtime.model, self.runtime.model_sha256 = new.version, new.sha256
        log.info(
            "model %s in use (was %s); capacity %.1f -> %.1f, fps %.1f -> %.1f",
            new.version, old.version, before.capacity, after.capacity, before.fps, after.fps,
        )  # fmt: skip
        return {
            "model": new.version,
            "sha256": new.sha256,
            "previous": old.version,
            "smoke_p_no_mask": smoke,
            "fps_before": round(before.fps, 2),
            "fps_after": round(after.fps, 2),
            "capacity_fps_before": round(before.capacity, 2),
            "capacity_fps_after": round(after.capacity, 2),
            "face_ms_before": round(old_cost * 1e3, 2),
            "face_ms_after": round(new_cost * 1e3, 2),
        }

    def _reading(self) -> _Reading:
        times = self.pipeline.times
        processed, busy_s = times.work()
        return _Reading(time.monotonic(), times.frames_total, processed, busy_s)
