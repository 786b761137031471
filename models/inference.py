"""One image through the edge's inference path: detect faces, crop with the training margin, classify."""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from edge.vision.classifier import CropScores, MaskClassifier
from edge.vision.crop import crop_face
from edge.vision.detector import FaceDetector
from shared.vocabulary import OperatingPoint, decide

#: Box colours of the seed's on-screen indicator (BGR): blue for a mask, red for no mask.
COLOURS = {"mask": (255, 0, 0), "no_mask": (0, 0, 255)}
CAPTIONS = {"mask": "wearing mask", "no_mask": "not wearing mask"}


@dataclass(frozen=True)
class FaceResult:
    """A detected face with its mask decision: ``score`` is the probability of ``label``, ``face_score`` the
    classifier's probability that the crop is a face at all, ``detector_score`` the detector's confidence."""

    box: tuple[int, int, int, int]
    detector_score: float
    label: str
    score: float
    p_no_mask: float
    face_score: float

    def to_json(self) -> dict:
        return {
            "box": list(self.box),
            "detector_score": round(self.detector_score, 4),
            "face_score": round(self.face_score, 4),
            "label": self.label,
            "score": round(self.score, 4),
        }


#: The operating point that keeps every detection and decides at 0.5: no face score, no detector score needed.
UNFILTERED = OperatingPoint(threshold=0.5)


@dataclass(frozen=True)
class ImageResult:
    """All faces of one image and the time spent (ms) detecting, classifying and in total."""

    faces: list[FaceResult]
    ms: dict[str, float]


def analyse(
    frame_bgr: np.ndarray,
    detector: FaceDetector,
    classifier: MaskClassifier,
    point: OperatingPoint = UNFILTERED,
) -> ImageResult:
    """Detect every face in a BGR frame and classify each crop in one batch, and decide at an operating point:
    detections whose face score is under its ``min_face_score`` (the classifier says they are no face), and
    no-mask verdicts on detections weaker than its ``min_no_mask_detector_score``, are dropped
    (:meth:`~shared.vocabulary.OperatingPoint.accepts`)."""
    start = time.perf_counter()
    faces = detector.detect(frame_bgr)
    detected = time.perf_counter()
    crops = [crop_face(frame_bgr, f.box) for f in faces]
    scores = classifier.scores(crops) if faces else CropScores(np.zeros(0), np.zeros(0))
    done = time.perf_counter()
    results = []
    for face, p_no_mask, face_score in zip(faces, scores.p_no_mask, scores.face_score, strict=True):
        if not point.accepts(float(p_no_mask), float(face_score), face.score):
            continue
        label, score = decide(float(p_no_mask), point.threshold)
        results.append(FaceResult(face.box, face.score, label, score, float(p_no_mask), float(face_score)))
    return ImageResult(
        results,
        {
            "detect": round(1000 * (detected - start), 2),
            "classify": round(1000 * (done - detected), 2),
            "total": round(1000 * (done - start), 2),
        },
    )


def annotate(frame_bgr: np.ndarray, faces: list[FaceResult]) -> np.ndarray:
    """A copy of the frame with each face boxed and captioned (blue: wearing mask, red: not wearing mask)."""
    out = frame_bgr.copy()
    thickness = max(1, round(max(out.shape[:2]) / 400))
    for face in faces:
        x, y, w, h = face.box
        colour = COLOURS[face.label]
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, thickness)
        caption = f"{CAPTIONS[face.label]} {100 * face.score:.0f}%"
        cv2.putText(out, caption, (x, max(10, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * thickness, colour, thickness)
    return out
