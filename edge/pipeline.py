"""The inference thread: newest frame -> faces -> one classifier batch -> tracks -> events in the outbox.

Each frame is detected, every face is cropped with the training margin and
all crops are classified in one batch; the tracker turns the faces into
``new``/``update``/``end`` changes, which become :class:`~shared.messages.Event`
messages written to the outbox (then the courier publishes them). A no-mask
event may carry a JPEG snapshot. Stills from an image folder are not tracked:
each face gives ``new`` then ``end`` at once, with the file name as ``frame``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

import cv2
import numpy as np

from edge.capture.frames import Frame
from edge.capture.sources import Capture
from edge.config import EdgeConfig
from edge.delivery.acks import numbered
from edge.delivery.outbox import Outbox
from edge.delivery.snapshot import face_snapshot
from edge.delivery.stats import StageTimes
from edge.devices.indicator import Indicator
from edge.devices.servo import ServoPlanner, Sighting
from edge.state import NodeRuntime
from edge.view import FaceMark, View
from edge.vision.classifier import Classifier
from edge.vision.crop import crop_face
from edge.vision.detector import FaceDetector
from edge.vision.tracker import Change, Observation, Tracker
from shared.errors import SnapshotError
from shared.messages import Event, TrackInfo, utc_now
from shared.topics import NodeTopics
from shared.vocabulary import decide

log = logging.getLogger(__name__)

#: Stills (often tight face crops) get this much grey border, as a fraction of their larger side,
#: so the detector sees a whole face with context around it.
STILL_BORDER = 0.3


def _rounded(face_score: float | None) -> float | None:
    """A face score as events carry it (4 decimals), or ``None`` when the classifier gives none."""
    return None if face_score is None else round(face_score, 4)


def event_ids(site: str, node: str) -> Callable[[], str]:
    """A generator of event ids unique across restarts: ``<site>-<node>-<start ms, base 36>-<n>``."""
    stamp = np.base_repr(int(time.time() * 1000), 36).lower()
    counter = itertools.count(1)
    return lambda: f"{site}-{node}-{stamp}-{next(counter):05d}"


class Pipeline:
    """Turns frames into events.

    :param config: the node's config (tracker, snapshot, min face size, field of view).
    :param detector: finds faces (``detect(frame) -> [Face]``).
    :param classifier: ``scores(crops)`` (no-mask probability and face score) in one batch.
    :param runtime: threshold and detect switch (changed by commands).
    :param outbox: where events are written before they are published.
    :param notify: called after events were written (wakes the courier).
    :param planner: told where the largest face is (servo sweep pause and tracking).
    :param indicator: shows blue/red for the faces in view.
    """

    def __init__(
        self,
        config: EdgeConfig,
        detector: FaceDetector,
        classifier: Classifier,
        runtime: NodeRuntime,
        outbox: Outbox,
        *,
        notify: Callable[[], None] = lambda: None,
        planner: ServoPlanner | None = None,
        indicator: Indicator | None = None,
    ) -> None:
        self.config = config
        self.detector = detector
        self.classifier = classifier
        self.runtime = runtime
        self.outbox = outbox
        self.notify = notify
        self.planner = planner
        self.indicator = indicator
        self.topics = NodeTopics(config.site, config.node)
        self.new_id = event_ids(config.site, config.node)
        self.tracker = Tracker(config.tracker, self.new_id)
        self.times = StageTimes()
        self.view = View()
        self.events_written = 0
        self.frames_skipped = 0
        self._last_angle: float | None = None
        self._point = config.operating_point()  # the run-time threshold replaces its own per frame
        self._lock = threading.Lock()

    # -- per frame -------------------------------------------------------------

    def observe(self, image: np.ndarray, threshold: float, tracked: bool = False) -> list[Observation]:
        """Detect the faces of one image and classify them in one batch; keep those the config's operating point
        (:meth:`~edge.config.EdgeConfig.operating_point`) at the run-time ``threshold`` accepts
        (:meth:`~shared.vocabulary.OperatingPoint.accepts`): not those the classifier says are no face, nor the
        no-mask verdicts on detections too weak to verify them.

        With ``tracked``, faces the tracker says may reuse their track's probability are not classified.
        """
        with self.times.stage("detect"):
            faces = [f for f in self.detector.detect(image) if min(f.box[2], f.box[3]) >= self.config.min_face_px]
        if not faces:
            return []
        wanted = self.tracker.needs_classification([f.box for f in faces]) if tracked else [True] * len(faces)
        probs: list[float | None] = [None] * len(faces)
        face_scores: list[float | None] = [None] * len(faces)
        todo = [i for i, w in enumerate(wanted) if w]
        if todo:
            with self.times.stage("crop"):
                crops = [crop_face(image, faces[i].box) for i in todo]
            classifier = self.classifier  # one model per frame, even while a rollout swaps it
            with self.times.stage("classify"):
                scores = classifier.scores(crops)
                for i, p, face_score in zip(todo, scores.p_no_mask, scores.face_score, strict=True):
                    probs[i] = float(p)
                    face_scores[i] = float(face_score) if classifier.verifies_faces else None
        point = self._point._replace(threshold=threshold)
        return [
            Observation(f.box, p, f.score, face)
            for f, p, face in zip(faces, probs, face_scores, strict=True)
            if point.accepts(p, face, f.score)
        ]

    def process(self, frame: Frame) -> list[Event]:
        """Run one frame through the pipeline; write and return its events."""
        started = time.monotonic()
        self.times.add("wait", (started - frame.captured) * 1000.0)
        if frame.angle is None and not frame.still:
            frame.angle = self.runtime.angle  # a real camera on the servo: where it points now
        try:
            return self._process(frame)
        finally:
            self.times.processed(time.monotonic() - started)

    def _process(self, frame: Frame) -> list[Event]:
        with self.runtime.lock:
            detect, threshold = self.runtime.detecting, self.runtime.threshold
        if not detect:
            events = self._emit(self.tracker.flush(frame.ts), frame) if self.tracker.tracks else []
            self._show(frame, [], [])
            return events
        if frame.still:
            return self._still(frame, threshold)
        self._follow_pan(frame)
        observations = self.observe(frame.image, threshold, tracked=True)
        self._sight(frame, observations)
        with self.times.stage("track"):
            changes = self.tracker.update(observations, frame.ts, threshold=threshold, frame_ref=frame.ref)
        events = self._emit(changes, frame)
        marks = [FaceMark(t.box, t.label, t.score, t.confirmed) for t in self.tracker.tracks if t.misses == 0]
        self._show(frame, marks, [t.label for t in self.tracker.visible])
        self.times.frame_done()
        return events

    def _still(self, frame: Frame, threshold: float) -> list[Event]:
        h, w = frame.image.shape[:2]
        pad = int(STILL_BORDER * max(h, w))
        padded = cv2.copyMakeBorder(frame.image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        observations = self.observe(padded, threshold)
        events: list[Event] = []
        marks = []
        for obs in observations:
            x, y, bw, bh = obs.box
            x0, y0 = max(0, x - pad), max(0, y - pad)
            x1, y1 = min(w, x + bw - pad), min(h, y + bh - pad)
            if x1 <= x0 or y1 <= y0:
                continue
            box = (x0, y0, x1 - x0, y1 - y0)
            p = obs.p_no_mask
            assert p is not None  # stills are always classified
            label, score = decide(p, threshold)
            event_id = self.new_id()
            track = TrackInfo(frames=1, first_seen=frame.ts, last_seen=frame.ts)
            for kind in ("new", "end"):
                events.append(
                    self._write(
                        Event(
                            type=kind,
                            id=event_id,
                            site=self.config.site,
                            node=self.config.node,
                            ts=frame.ts,
                            label=label,
                            score=score,
                            face_score=_rounded(obs.face_score),
                            box=box,
                            angle=frame.angle,
                            frame=frame.ref,
                            track=track,
                        ),
                        frame,
                        box,
                    )
                )
            marks.append(FaceMark(box, label, score, True))
        self.notify()
        self._show(frame, marks, [m.label for m in marks])
        self.times.frame_done()
        return events

    def finish(self, ts: datetime | None = None) -> list[Event]:
        """End every open track (end of stream or shutdown)."""
        frame = self.view.frame
        changes = self.tracker.flush(ts or (frame.ts if frame else utc_now()))
        return self._emit(changes, frame)

    # -- helpers ------------------------------------------------------------------

    def _follow_pan(self, frame: Frame) -> None:
        """Shift the tracks by the servo's turn since the last frame (faces move the other way in the image)."""
        if frame.angle is not None and self._last_angle is not None:
            px_per_deg = frame.image.shape[1] / self.config.scene.fov_deg
            self.tracker.pan(-(frame.angle - self._last_angle) * px_per_deg)
        self._last_angle = frame.angle

    def _sight(self, frame: Frame, observations: list[Observation]) -> None:
        if self.planner is None or not observations:
            return
        largest = max(observations, key=lambda o: o.box[2] * o.box[3])
        width = frame.image.shape[1]
        offset = ((largest.box[0] + largest.box[2] / 2) - width / 2) / width * self.config.scene.fov_deg
        angle = frame.angle if frame.angle is not None else 0.0
        self.planner.saw(Sighting(at=frame.captured, angle=angle, offset_deg=offset))

    def _emit(self, changes: list[Change], frame: Frame | None) -> list[Event]:
        events = []
        with self.times.stage("publish"):
            for change in changes:
                t = change.track
                ts = t.last_seen if change.kind == "end" else (frame.ts if frame else t.last_seen)
                event = Event(
                    type=change.kind,
                    id=t.id,
                    site=self.config.site,
                    node=self.config.node,
                    ts=ts,
                    label=t.label,
                    score=round(t.score, 4),
                    face_score=_rounded(t.face_score),
                    box=t.box,
                    angle=frame.angle if frame else None,
                    frame=t.frame_ref,
                    track=TrackInfo(frames=t.frames, first_seen=t.first_seen, last_seen=t.last_seen),
                )
                snap_frame = frame if frame is not None and change.kind != "end" and t.misses == 0 else None
                events.append(self._write(event, snap_frame, t.box))
            if events:
                self.notify()
        return events

    def _write(self, event: Event, frame: Frame | None, box: tuple[int, int, int, int]) -> Event:
        if self.runtime.quiet:  # quiet hours: the hub stores it and raises no alert
            event = event.model_copy(update={"quiet": True})
        jpeg = None
        snap = self.config.snapshot
        if frame is not None and event.label == "no_mask" and event.type != "end" and snap.mode != "off":
            try:
                jpeg = face_snapshot(
                    frame.image,
                    box,
                    blur=snap.mode == "blur",
                    whole_frame=snap.include_frame,
                    max_bytes=snap.max_bytes,
                    quality=snap.quality,
                )
            except SnapshotError as exc:
                log.warning("no snapshot for %s: %s", event.id, exc)
            if jpeg is not None:
                event = event.model_copy(update={"snapshot": True})
        hub_delivery = self.config.delivery == "hub"
        self.outbox.put(self.topics.events, numbered(event, self.outbox.outbox_id) if hub_delivery else event.to_json())
        if jpeg is not None:
            self.outbox.put(self.topics.snapshot(event.id), jpeg)
        self.events_written += 1
        if event.type == "new" and event.label == "no_mask" and self.indicator:
            self.indicator.buzz()
        log.debug("event %s %s %s %.2f", event.type, event.id, event.label, event.score)
        return event

    def _show(self, frame: Frame, marks: list[FaceMark], labels: list[str]) -> None:
        if self.indicator:
            self.indicator.show(labels)
        with self._lock:
            self.view = View(frame=frame, faces=marks, fps=self.times.fps())

    def use_classifier(self, classifier: Classifier) -> Classifier:
        """Classify from the next frame on with ``classifier`` (the frame in progress finishes with the old one);
        return the old one."""
        old, self.classifier = self.classifier, classifier
        return old

    def latest(self) -> View:
        """The latest processed frame and its faces."""
        with self._lock:
            return self.view

    # -- the thread ------------------------------------------------------------------

    def run(self, stop: threading.Event, capture: Capture) -> None:
        """Body of the ``inference`` thread: until ``stop`` or the end of a finite source."""
        while not stop.is_set():
            frame = capture.next(timeout=0.2)
            if frame is None:
                if capture.exhausted:
                    break
                continue
            try:
                self.process(frame)
            except Exception:  # one boundary per thread: a bad frame must not stop the node
                self.frames_skipped += 1
                log.exception("frame %s failed", frame.ref)
        self.finish()
        self.notify()
