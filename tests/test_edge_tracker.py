"""The tracker's lifecycle: one id per visit, N-frame confirmation, smoothing with hysteresis, end after M misses."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from edge.config import TrackerConfig
from edge.vision.tracker import Observation, Tracker, iou

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def make(**kw: object) -> Tracker:
    counter = itertools.count(1)
    return Tracker(TrackerConfig(**kw), id_factory=lambda: f"ev-{next(counter)}")


def feed(
    tracker: Tracker, frames: list[list[Observation]], fps: float = 10.0, threshold: float = 0.5
) -> list[tuple[str, str, str]]:
    out = []
    for i, obs in enumerate(frames):
        for ch in tracker.update(obs, T0 + timedelta(seconds=i / fps), threshold=threshold):
            out.append((ch.kind, ch.track.id, ch.track.label))
    return out


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 10, 10)) == 0.0
    assert abs(iou((0, 0, 10, 10), (5, 0, 10, 10)) - 50 / 150) < 1e-9


def test_moving_face_is_one_visit_confirmed_after_n_frames_and_ended_after_m() -> None:
    tracker = make(confirm_frames=3, end_frames=2)
    frames = [[Observation((100 + 4 * i, 50, 60, 60), 0.9)] for i in range(20)] + [[]] * 3
    changes = feed(tracker, frames)
    assert changes == [("new", "ev-1", "no_mask"), ("end", "ev-1", "no_mask")]
    assert tracker.tracks == []


def test_new_comes_only_on_the_nth_frame() -> None:
    tracker = make(confirm_frames=3)
    assert tracker.update([Observation((0, 0, 50, 50), 0.1)], T0, threshold=0.5) == []
    assert tracker.update([Observation((1, 0, 50, 50), 0.1)], T0, threshold=0.5) == []
    [change] = tracker.update([Observation((2, 0, 50, 50), 0.1)], T0, threshold=0.5)
    assert (change.kind, change.track.label, change.track.frames) == ("new", "mask", 3)


def test_a_flicker_does_not_flip_the_label() -> None:
    tracker = make(confirm_frames=2, smooth_frames=5, hysteresis=0.1, update_min_s=0)
    probs = [0.1, 0.1, 0.1, 0.95, 0.1, 0.1, 0.9, 0.1, 0.1]
    changes = feed(tracker, [[Observation((10, 10, 50, 50), p)] for p in probs])
    assert changes == [("new", "ev-1", "mask")]


def test_a_real_label_change_gives_one_update_no_sooner_than_update_min_s() -> None:
    tracker = make(confirm_frames=2, smooth_frames=3, update_min_s=2.0)
    probs = [0.1] * 5 + [0.9] * 40
    changes = feed(tracker, [[Observation((10, 10, 50, 50), p)] for p in probs], fps=10)
    assert [c[0] for c in changes] == ["new", "update"]
    assert changes[1][2] == "no_mask"


def test_threshold_is_the_no_mask_probability_boundary() -> None:
    tracker = make(confirm_frames=1)
    [change] = tracker.update([Observation((0, 0, 40, 40), 0.7)], T0, threshold=0.8)
    assert change.track.label == "mask"
    assert abs(change.track.score - 0.3) < 1e-9


def test_two_faces_far_apart_are_two_tracks_and_a_jump_beyond_the_gate_is_a_new_face() -> None:
    tracker = make(confirm_frames=1, end_frames=0)
    a, b = Observation((0, 0, 40, 40), 0.1), Observation((300, 0, 40, 40), 0.9)
    first = tracker.update([a, b], T0, threshold=0.5)
    assert sorted(c.track.label for c in first) == ["mask", "no_mask"]
    jumped = tracker.update([Observation((150, 200, 40, 40), 0.1)], T0, threshold=0.5)
    kinds = sorted(c.kind for c in jumped)
    assert kinds == ["end", "end", "new"]


def test_flush_ends_confirmed_tracks_only() -> None:
    tracker = make(confirm_frames=3)
    tracker.update([Observation((0, 0, 40, 40), 0.1)], T0, threshold=0.5)
    assert tracker.flush(T0) == []
    for _ in range(3):
        tracker.update([Observation((0, 0, 40, 40), 0.1)], T0, threshold=0.5)
    assert [c.kind for c in tracker.flush(T0)] == ["end"]


def test_confirmed_faces_are_reclassified_every_k_frames_only() -> None:
    tracker = make(confirm_frames=2, reclassify_frames=3)
    box = (10, 10, 50, 50)
    assert tracker.needs_classification([box]) == [True]  # nothing tracked yet
    tracker.update([Observation(box, 0.1)], T0, threshold=0.5)
    assert tracker.needs_classification([box]) == [True]  # not confirmed yet
    tracker.update([Observation(box, 0.1)], T0, threshold=0.5)
    pattern = []
    for _ in range(6):
        [wanted] = tracker.needs_classification([box])
        pattern.append(wanted)
        tracker.update([Observation(box, 0.1 if wanted else None)], T0, threshold=0.5)
    assert pattern == [False, False, True, False, False, True]
    assert tracker.needs_classification([(400, 300, 50, 50), box]) == [True, False]
    assert tracker.tracks[0].frames == 8 and len(tracker.tracks[0].history) == 4


def test_pan_compensation_keeps_a_face_one_track_while_the_camera_turns() -> None:
    tracker = make(confirm_frames=2, end_frames=0, gate_box_frac=0.5)
    changes = []
    for i in range(6):  # the camera turns right: the face moves 120 px left per frame, beyond the gate
        if i:
            tracker.pan(-120)
        changes += tracker.update([Observation((600 - 120 * i, 100, 100, 100), 0.1)], T0, threshold=0.5)
    assert [(c.kind, c.track.id) for c in changes] == [("new", "ev-1")]
    unpanned = make(confirm_frames=1, end_frames=0, gate_box_frac=0.5)
    ids = {
        c.track.id
        for i in range(3)
        for c in unpanned.update([Observation((600 - 120 * i, 100, 100, 100), 0.1)], T0, threshold=0.5)
    }
    assert len(ids) == 3  # without it, every frame would be a new face
