"""Face detectors on real photos: BlazeFace (LiteRT) and res10 SSD (OpenCV), anchors, tiles, NMS, crops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.capture.images import read_image
from edge.vision.crop import TRAINING_MARGIN, crop_face, expand_box
from edge.vision.detector import Face, MultiPassDetector, create_detector, ssd_anchors, tiles, weighted_nms
from models.scenes import load_scenes, match
from shared.errors import ModelError
from tests.conftest import SCENES, need


def scenes_with_big_faces(count: int) -> list:
    scenes = [s for s in load_scenes(need(SCENES)) if s.faces and min(f.size for f in s.faces) >= 40]
    return scenes[:count]


def test_anchor_layouts_match_the_model_outputs() -> None:
    assert ssd_anchors(128, (8, 16), (2, 6)).shape == (896, 2)
    full = ssd_anchors(192, (4,), (1,))
    assert full.shape == (2304, 2)
    assert full.min() == pytest.approx(0.5 / 48) and full.max() == pytest.approx(47.5 / 48)


def test_tiles_cover_the_frame_with_overlap() -> None:
    parts = tiles(640, 480, 3, 0.3)
    assert len(parts) == 9
    assert min(p[0] for p in parts) == 0 and max(p[2] for p in parts) == 640
    assert max(p[3] for p in parts) == 480
    assert parts[0][2] > parts[1][0]  # neighbours overlap


def test_weighted_nms_merges_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    kept, scores = weighted_nms(boxes, np.array([0.9, 0.6, 0.8], np.float32), 0.3)
    assert len(kept) == 2
    assert scores.tolist() == pytest.approx([0.9, 0.8])
    assert 0 < kept[0][0] < 1  # a blend of the two merged boxes


def test_weighted_nms_drops_a_box_that_a_stronger_one_covers() -> None:
    """Two boxes of one face from two passes (IoU 0.25, the inner one wholly covered): one decision, not two."""
    outer, inner, beside = [0, 0, 20, 20], [5, 5, 15, 15], [18, 0, 38, 20]  # beside: covered by 10 % only
    boxes = np.array([outer, inner, beside], np.float32)
    kept, scores = weighted_nms(boxes, np.array([0.9, 0.6, 0.8], np.float32), 0.3, cover=0.3)
    assert kept.tolist() == [outer, beside] and scores.tolist() == pytest.approx([0.9, 0.8])
    weaker_outer, _ = weighted_nms(boxes, np.array([0.5, 0.9, 0.8], np.float32), 0.3, cover=0.3)
    assert weaker_outer.tolist() == [inner, beside]  # whichever is stronger stays, unblended
    assert len(weighted_nms(boxes, np.array([0.9, 0.6, 0.8], np.float32), 0.3, cover=1.0)[0]) == 2  # wholly inside
    assert len(weighted_nms(boxes, np.array([0.9, 0.6, 0.8], np.float32), 0.3, cover=math.inf)[0]) == 3  # no rule


@pytest.mark.parametrize("kind", ["blazeface", "res10"])
def test_detector_finds_the_labelled_faces_of_real_photos(kind: str) -> None:
    detector = create_detector("near", kind, num_threads=1)
    labelled = found = 0
    for scene in scenes_with_big_faces(8):
        faces = detector.detect(read_image(scene.image))
        assert all(isinstance(f, Face) and 0 <= f.score <= 1 for f in faces)
        labelled += len(scene.faces)
        found += len(match([f.box for f in scene.faces], [f.box for f in faces]))
    assert labelled >= 8
    assert found / labelled >= 0.6, f"{kind} found {found} of {labelled} large labelled faces"


def test_crowd_profile_finds_more_small_faces_than_near() -> None:
    scenes = [s for s in load_scenes(need(SCENES)) if sum(18 <= f.size < 40 for f in s.faces) >= 4][:6]
    counts = {}
    for profile in ("near", "crowd"):
        detector = create_detector(profile, num_threads=1)
        counts[profile] = sum(
            len(match([f.box for f in s.faces], [f.box for f in detector.detect(read_image(s.image))])) for s in scenes
        )
    assert counts["crowd"] > counts["near"]


def test_crowd_runs_its_tiles_on_one_lane_per_thread_and_finds_what_one_lane_finds() -> None:
    """Two lanes run the passes concurrently; the faces, scores and their order are those of one lane."""
    crowd = create_detector("crowd", num_threads=2)
    assert isinstance(crowd, MultiPassDetector) and len(crowd.lanes) == 2
    near = create_detector("near", num_threads=2)
    assert isinstance(near, MultiPassDetector) and len(near.lanes) == 1  # whole frame: one lane, both threads
    one_lane = MultiPassDetector("one lane", crowd.lanes.copies[:1], crowd.settings)
    scenes = [s for s in load_scenes(need(SCENES)) if len(s.faces) >= 5][:8]
    found = [crowd.detect(read_image(s.image)) for s in scenes]
    assert sum(map(len, found)) >= 40
    assert found == [one_lane.detect(read_image(s.image)) for s in scenes]
    with pytest.raises(ModelError, match="at least one"):
        MultiPassDetector("none", [], crowd.settings)
    with pytest.raises(ModelError, match="no network"):
        MultiPassDetector("half", [crowd.lanes.copies[0], {"short": crowd.lanes.copies[1]["short"]}], crowd.settings)


def test_detector_rejects_a_frame_that_is_not_bgr() -> None:
    detector = create_detector("near", num_threads=1)
    with pytest.raises(ValueError, match="BGR"):
        detector.detect(np.zeros((20, 20), np.uint8))
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []


def test_unknown_profile_or_kind_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="near, crowd"):
        create_detector("far")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="blazeface, res10"):
        create_detector("near", "yolo")


def test_crop_keeps_the_training_margin_and_clips_to_the_frame() -> None:
    frame = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3).astype(np.uint8)
    assert crop_face(frame, (50, 20, 40, 40)).shape == (52, 52, 3)
    assert expand_box((0, 0, 40, 40), TRAINING_MARGIN, 200, 100) == (0, 0, 46, 46)
    assert crop_face(frame, (190, 90, 40, 40), margin=0).shape == (10, 10, 3)
    with pytest.raises(ValueError, match="outside"):
        crop_face(frame, (300, 300, 10, 10))
    with pytest.raises(ValueError, match="margin"):
        crop_face(frame, (0, 0, 10, 10), margin=-1)
