"""The scene scoring rules: every no-mask decision is judged (alert precision), small faces count on no side."""

from __future__ import annotations

import pytest

from models.evaluation import PROMISED_FACE_PX, SceneRecord, alerts, chosen_point, operating_points, score_scenes
from shared.vocabulary import OperatingPoint, Profile

BIG, SMALL = PROMISED_FACE_PX, PROMISED_FACE_PX - 1

RECORDS = [
    SceneRecord("without_mask", BIG, True, 0.9, 0.95, 0.95),  # right
    SceneRecord("mask_weared_incorrect", BIG, True, 0.6, 0.9, 0.8),  # right (incorrectly worn counts as no mask)
    SceneRecord("without_mask", BIG, False),  # missed by the detector: no decision
    SceneRecord("with_mask", BIG, True, 0.7, 0.9, 0.6),  # wrong: on a masked face (a weak detection)
    SceneRecord("with_mask", BIG, True, 0.1, 0.9, 0.5),  # a mask decision: no alert
    SceneRecord(None, BIG + 10, True, 0.8, 0.97, 0.55),  # wrong: on no labelled face (a weak detection)
    SceneRecord(None, BIG, True, 0.8, 0.2, 0.9),  # the classifier says: no face
    SceneRecord(None, SMALL, True, 0.99, 0.99, 0.9),  # unmatched box under 24 px: neither side
    SceneRecord("without_mask", SMALL, True, 0.99, 0.99, 0.9),  # labelled face under 24 px: neither side
    SceneRecord("with_mask", SMALL, True, 0.99, 0.99, 0.9),  # neither side either
]


def test_every_no_mask_decision_is_judged_and_small_ones_count_on_neither_side() -> None:
    figures = alerts(RECORDS, 4, OperatingPoint(0.5))
    assert (figures["right"], figures["on_masked_face"], figures["on_no_face"]) == (2, 1, 2)
    assert figures["alert_precision"] == pytest.approx(2 / 5, abs=1e-4)
    assert figures["false_alerts_per_photo"] == pytest.approx(3 / 4)
    assert figures["alert_recall"] == pytest.approx(2 / 3, abs=1e-4)  # the missed face counts too


def test_a_minimum_face_score_rejects_non_faces_before_they_become_decisions() -> None:
    figures = alerts(RECORDS, 4, OperatingPoint(0.5, 0.5))
    assert (figures["right"], figures["on_masked_face"], figures["on_no_face"]) == (2, 1, 1)
    assert figures["alert_precision"] == pytest.approx(0.5)


def test_no_mask_verdicts_on_weak_detections_are_dropped_and_the_faces_they_cost_are_missed() -> None:
    figures = alerts(RECORDS, 4, OperatingPoint(0.5, 0.5, 0.7))
    assert (figures["right"], figures["on_masked_face"], figures["on_no_face"]) == (2, 0, 0)
    assert figures["alert_precision"] == 1.0
    scored = score_scenes(RECORDS, 4, OperatingPoint(0.5, 0.5, 0.7))
    assert scored["face_recall"] == pytest.approx(3 / 5)  # the masked face called no mask on a weak box is dropped
    strict = alerts(RECORDS, 4, OperatingPoint(0.5, 0.5, 0.85))
    assert strict["right"] == 1 and strict["alert_recall"] == pytest.approx(1 / 3, abs=1e-4)


def test_no_mask_recall_is_split_between_bare_faces_and_incorrectly_worn_masks() -> None:
    by_label = score_scenes(RECORDS, 4, OperatingPoint(0.7))["no_mask_recall_by_label"]
    # faces >= 24 px found: the bare one at 0.9 is caught, the incorrectly worn mask at 0.6 is not
    assert by_label == {"without_mask": {"recall": 1.0, "n": 1}, "mask_weared_incorrect": {"recall": 0.0, "n": 1}}


def test_rejected_faces_are_not_found_and_precision_counts_kept_detections() -> None:
    everything = score_scenes(RECORDS, 4, OperatingPoint(0.5))
    strict = score_scenes(RECORDS, 4, OperatingPoint(0.5, 0.92))
    assert everything["face_recall"] == pytest.approx(4 / 5)  # labelled faces >= 24 px found
    assert strict["face_recall"] == pytest.approx(1 / 5)  # only the 0.95 face is kept
    assert everything["detections"] == 9 and everything["precision"] == pytest.approx(6 / 9, abs=1e-4)
    decision = everything["no_mask_decision"][f">={PROMISED_FACE_PX}"]
    assert (decision["true_positives"], decision["predicted"], decision["n"]) == (2, 3, 2)


def test_operating_points_cover_every_triple() -> None:
    points = operating_points(RECORDS, 4, thresholds=(0.5, 0.95), face_scores=(0.0, 0.5), detector_scores=(0.0, 0.7))
    assert [(p["threshold"], p["min_face_score"], p["min_no_mask_detector_score"]) for p in points] == [
        (t, f, d) for f in (0.0, 0.5) for d in (0.0, 0.7) for t in (0.5, 0.95)
    ]
    assert points[1]["alerts"] == 0 and points[1]["alert_precision"] == 0.0
    assert points[6]["alert_precision"] == 1.0  # face score 0.5, detector score 0.7, threshold 0.5


def test_the_written_rules_pick_each_profiles_point() -> None:
    def point(threshold: float, face: float, face_recall: float, no_mask_recall: float, precision: float) -> dict:
        return {
            "threshold": threshold,
            "min_face_score": face,
            "min_no_mask_detector_score": 0.0,
            "face_recall": face_recall,
            "no_mask_recall": no_mask_recall,
            "alert_precision": precision,
            "alert_recall": no_mask_recall,
        }

    points = [
        point(0.3, 0.0, 0.95, 0.90, 0.99),  # best precision, but face score 0: never chosen
        point(0.3, 0.5, 0.93, 0.86, 0.70),
        point(0.5, 0.5, 0.91, 0.84, 0.90),  # crowd: no-mask recall under 0.85
        point(0.7, 0.5, 0.89, 0.80, 0.95),  # crowd: face recall under 0.90
        point(0.4, 0.5, 0.90, 0.85, 0.80),
        point(0.4, 0.6, 0.90, 0.85, 0.85),  # face score 0.6: not a point the rule takes
    ]
    assert chosen_point(points, Profile.CROWD) == points[4]
    assert chosen_point(points, Profile.NEAR) == points[2]  # within 0.02 of the best face recall at 0.5 (0.93)
    assert chosen_point(points[3:4], Profile.CROWD) is None
