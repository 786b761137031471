"""Face tracking across frames: one person in view is one event id.

Detections are matched to tracks by IoU, then by centroid distance within a
motion gate. A track is announced (``new``) once it was seen in
``confirm_frames`` frames with a stable label, re-announced (``update``) on a
label change or a clearly better score at most every ``update_min_s``, and
closed (``end``) after ``end_frames`` frames without it. The label is the
median of the recent no-mask probabilities with hysteresis around the
threshold, so a one-frame flicker does not flip it.

Example::

    >>> from datetime import datetime, UTC
    >>> tr = Tracker(TrackerConfig(confirm_frames=2, end_frames=1), id_factory=iter(["a", "b"]).__next__)
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> tr.update([Observation((10, 10, 50, 50), 0.9)], t0, threshold=0.5)
    []
    >>> [(c.kind, c.track.label) for c in tr.update([Observation((12, 10, 50, 50), 0.8)], t0, threshold=0.5)]
    [('new', 'no_mask')]
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from edge.config import TrackerConfig
from shared.vocabulary import Label, decide, label_score

Box = tuple[int, int, int, int]
ChangeKind = Literal["new", "update", "end"]


@dataclass(frozen=True)
class Observation:
    """One face in one frame; ``p_no_mask`` is ``None`` when it was not classified this frame
    (the track it continues keeps its smoothed probability). ``face_score`` is the classifier's face
    verification (``None`` when not classified, or from a classifier without a not-a-face class)."""

    box: Box
    p_no_mask: float | None
    det_score: float = 1.0
    face_score: float | None = None


@dataclass
class Track:
    """A face followed across frames."""

    id: str
    box: Box
    first_seen: datetime
    last_seen: datetime
    history: deque[float]
    label: Label
    frames: int = 1
    misses: int = 0
    stable_frames: int = 1
    confirmed: bool = False
    last_emit: datetime | None = None
    emitted_label: Label | None = None
    emitted_score: float = 0.0
    frame_ref: Any = None
    unclassified: int = 0
    face_score: float | None = None

    @property
    def p_no_mask(self) -> float:
        """The smoothed (median) no-mask probability."""
        return statistics.median(self.history)

    @property
    def score(self) -> float:
        """Probability of the current label."""
        return label_score(self.label, self.p_no_mask)


@dataclass(frozen=True)
class Change:
    """A lifecycle step of a track that becomes an event."""

    kind: ChangeKind
    track: Track


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _centre_distance(a: Box, b: Box) -> float:
    dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
    dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    return float((dx * dx + dy * dy) ** 0.5)


class Tracker:
    """Turns per-frame observations into ``new``/``update``/``end`` changes.

    :param config: the lifecycle settings.
    :param id_factory: returns a fresh event id for each new track.
    """

    def __init__(self, config: TrackerConfig, id_factory: Callable[[], str]) -> None:
        self.config = config
        self._id_factory = id_factory
        self.tracks: list[Track] = []

    def pan(self, dx: float) -> None:
        """The camera turned: move every track by ``dx`` pixels so matching follows the faces (ego-motion)."""
        if dx:
            for track in self.tracks:
                x, y, w, h = track.box
                track.box = (round(x + dx), y, w, h)

    def needs_classification(self, boxes: Sequence[Box]) -> list[bool]:
        """For each box: whether it must be classified this frame. Faces that continue a confirmed track
        classified within the last ``reclassify_frames`` frames may reuse the track's smoothed probability."""
        wanted = [True] * len(boxes)
        for ti, bi in self._match(boxes):
            track = self.tracks[ti]
            if track.confirmed and track.unclassified + 1 < self.config.reclassify_frames:
                wanted[bi] = False
        return wanted

    def _match(self, boxes: Sequence[Box]) -> list[tuple[int, int]]:
        pairs: list[tuple[float, float, int, int]] = []
        for ti, track in enumerate(self.tracks):
            for oi, box in enumerate(boxes):
                overlap = iou(track.box, box)
                dist = _centre_distance(track.box, box)
                gate = self.config.gate_box_frac * max(track.box[2], track.box[3], box[2], box[3])
                if overlap >= self.config.iou_min or dist <= gate:
                    pairs.append((-overlap, dist, ti, oi))
        pairs.sort()
        used_t: set[int] = set()
        used_o: set[int] = set()
        matches = []
        for _neg, _dist, ti, oi in pairs:
            if ti not in used_t and oi not in used_o:
                used_t.add(ti)
                used_o.add(oi)
                matches.append((ti, oi))
        return matches

    def _relabel(self, track: Track, threshold: float) -> None:
        p = track.p_no_mask
        h = self.config.hysteresis
        if track.label == "mask" and p >= min(1.0, threshold + h):
            track.label, track.stable_frames = "no_mask", 0
        elif track.label == "no_mask" and p < max(0.0, threshold - h):
            track.label, track.stable_frames = "mask", 0
        track.stable_frames += 1

    def _emit(self, kind: ChangeKind, track: Track, ts: datetime) -> Change:
        track.last_emit = ts
        track.emitted_label = track.label
        track.emitted_score = track.score
        return Change(kind, track)

    def update(
        self, observations: Sequence[Observation], ts: datetime, *, threshold: float, frame_ref: Any = None
    ) -> list[Change]:
        """Feed the faces of one frame (taken at ``ts``); return the lifecycle changes."""
        changes: list[Change] = []
        matches = self._match([o.box for o in observations])
        matched_t = {ti for ti, _ in matches}
        matched_o = {oi for _, oi in matches}
        for ti, oi in matches:
            track, obs = self.tracks[ti], observations[oi]
            track.box, track.last_seen, track.misses = obs.box, ts, 0
            track.frames += 1
            track.frame_ref = frame_ref
            if obs.p_no_mask is None:
                track.unclassified += 1
            else:
                track.history.append(obs.p_no_mask)
                track.unclassified = 0
                track.face_score = obs.face_score if obs.face_score is not None else track.face_score
            self._relabel(track, threshold)
            if not track.confirmed:
                if track.stable_frames >= self.config.confirm_frames:
                    track.confirmed = True
                    changes.append(self._emit("new", track, ts))
            elif self._wants_update(track, ts):
                changes.append(self._emit("update", track, ts))
        for ti, track in enumerate(self.tracks):
            if ti not in matched_t:
                track.misses += 1
        for oi, obs in enumerate(observations):
            if oi in matched_o:
                continue
            if obs.p_no_mask is None:
                raise ValueError(f"a new face must be classified (box {obs.box})")
            track = Track(
                id=self._id_factory(),
                box=obs.box,
                first_seen=ts,
                last_seen=ts,
                history=deque([obs.p_no_mask], maxlen=self.config.smooth_frames),
                label=decide(obs.p_no_mask, threshold).label,
                frame_ref=frame_ref,
                face_score=obs.face_score,
            )
            self.tracks.append(track)
            if self.config.confirm_frames <= 1:
                track.confirmed = True
                changes.append(self._emit("new", track, ts))
        gone = [t for t in self.tracks if t.misses > self.config.end_frames]
        self.tracks = [t for t in self.tracks if t.misses <= self.config.end_frames]
        changes.extend(self._emit("end", t, ts) for t in gone if t.confirmed)
        return changes

    def _wants_update(self, track: Track, ts: datetime) -> bool:
        assert track.last_emit is not None
        if (ts - track.last_emit).total_seconds() < self.config.update_min_s:
            return False
        if track.label != track.emitted_label:
            return True
        return track.score >= track.emitted_score + self.config.update_score_gain

    def flush(self, ts: datetime) -> list[Change]:
        """End every confirmed track (end of stream, shutdown); forget the rest."""
        changes = [self._emit("end", t, ts) for t in self.tracks if t.confirmed]
        self.tracks = []
        return changes

    @property
    def visible(self) -> list[Track]:
        """Confirmed tracks seen in the latest frame."""
        return [t for t in self.tracks if t.confirmed and t.misses == 0]
