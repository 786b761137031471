"""``maskwatch model eval``: accuracy on labelled crops or photos, and detection + decision on labelled scenes.

Everything runs through the edge's LiteRT code (:mod:`edge.vision.detector`, :mod:`edge.vision.classifier`),
never TensorFlow.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from edge.capture.images import list_images, read_image
from edge.vision.classifier import MaskClassifier
from edge.vision.detector import FaceDetector
from models.inference import analyse
from models.scenes import SCENE_CLASSES, load_scenes, match
from shared.errors import DatasetError, ImageReadError
from shared.vocabulary import decide

log = logging.getLogger(__name__)

CLASS_FOLDERS = {"with_mask": "mask", "without_mask": "no_mask"}
#: Face size bands (shorter side, px) for recall reports.
SIZE_BANDS = ((0, 16, "<16"), (16, 24, "16-23"), (24, 48, "24-47"), (48, 10**6, ">=48"))
#: The smallest face (shorter side, px) the crowd profile promises to handle.
PROMISED_FACE_PX = 24
#: Thresholds of the no-mask decision sweeps in reports (each profile's default among them).
THRESHOLD_SWEEP = (0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)


def _counts(truth: np.ndarray, guess: np.ndarray, positive: str) -> tuple[int, int, int]:
    """(true positives, predicted positives, actual positives)."""
    tp = int(((truth == positive) & (guess == positive)).sum())
    return tp, int((guess == positive).sum()), int((truth == positive).sum())


def _precision_recall(truth: np.ndarray, guess: np.ndarray, positive: str) -> dict:
    tp, predicted, actual = _counts(truth, guess, positive)
    return {"precision": round(tp / predicted, 4) if predicted else 0.0,
            "recall": round(tp / actual, 4) if actual else 0.0, "n": actual}


def evaluate_folder(folder: Path, classifier: MaskClassifier, detector: FaceDetector | None = None,
                    threshold: float = 0.5) -> dict:
    """Accuracy on ``folder/with_mask`` and ``folder/without_mask``.

    Without a detector each image is one face crop. With one, the largest detected face is classified;
    an image without a face counts as wrong and as ``no_face``. Unreadable images are logged and skipped.

    :raises DatasetError: a class folder is missing, or there is no image at all.
    """
    items: list[tuple[Path, str]] = []
    for name, label in CLASS_FOLDERS.items():
        sub = folder / name
        if not sub.is_dir():
            raise DatasetError(f"{folder}: expected subfolders with_mask/ and without_mask/ ({name}/ is missing)")
        items += [(p, label) for p in list_images(sub)]
    if not items:
        raise DatasetError(f"{folder}: no images (.jpg, .png, .webp) in with_mask/ or without_mask/")
    truths, guesses, no_face, unreadable, spent = [], [], 0, 0, 0.0
    for path, label in items:
        try:
            frame = read_image(path)
        except ImageReadError as exc:
            log.warning("skipped: %s", exc)
            unreadable += 1
            continue
        start = time.perf_counter()
        if detector is None:
            p = float(classifier.no_mask_probability([frame])[0])
            guess: str = decide(p, threshold).label
        else:
            faces = analyse(frame, detector, classifier, threshold).faces
            if faces:
                guess = max(faces, key=lambda f: f.box[2] * f.box[3]).label
            else:
                guess, no_face = "no_face", no_face + 1
        spent += time.perf_counter() - start
        truths.append(label)
        guesses.append(guess)
    if not truths:
        raise DatasetError(f"{folder}: none of the {len(items)} images could be read")
    if unreadable:
        log.warning("%d unreadable image(s) skipped", unreadable)
    truth, guessed = np.array(truths), np.array(guesses)
    return {"n": len(truth), "accuracy": round(float((truth == guessed).mean()), 4),
            "per_class": {name: _precision_recall(truth, guessed, name) for name in ("mask", "no_mask")},
            "no_face": no_face, "ms_per_image": round(1000 * spent / len(truth), 2), "model": classifier.version}


def size_band(size: int) -> str:
    """The :data:`SIZE_BANDS` name of a face's shorter side."""
    return next(name for low, high, name in SIZE_BANDS if low <= size < high)


def evaluate_scenes(folder: Path, classifier: MaskClassifier, detector: FaceDetector, threshold: float = 0.5,
                    min_iou: float = 0.3, only: set[str] | None = None) -> dict:
    """Detection recall per class and size, detection precision, and the per-face no-mask decision.

    Detected faces are matched one-to-one to labelled ones at IoU >= ``min_iou``. The no-mask decision
    (``mask_weared_incorrect`` counts as no mask) is scored on matched faces, for all of them and for
    faces of at least :data:`PROMISED_FACE_PX`.

    :param only: image file names to keep (default: all).
    :raises DatasetError: the folder is not a scenes folder.
    """
    scenes = [s for s in load_scenes(folder) if only is None or s.image.name in only]
    found: dict[tuple[str, str], list[int]] = {}
    decisions: list[tuple[bool, bool, int]] = []  # (truly no mask, decided no mask, face size)
    probabilities: list[tuple[bool, float, int]] = []  # (truly no mask, p_no_mask, face size)
    detections = matched_detections = 0
    unreadable, spent = 0, 0.0
    for scene in scenes:
        try:
            frame = read_image(scene.image)
        except ImageReadError as exc:
            log.warning("skipped: %s", exc)
            unreadable += 1
            continue
        start = time.perf_counter()
        result = analyse(frame, detector, classifier, threshold)
        spent += time.perf_counter() - start
        pairs = match([f.box for f in scene.faces], [f.box for f in result.faces], min_iou)
        detections += len(result.faces)
        matched_detections += len(pairs)
        for i, face in enumerate(scene.faces):
            for key in ((face.label, size_band(face.size)), (face.label, "all")):
                found.setdefault(key, [0, 0])[0] += 1
                found[key][1] += i in pairs
            if face.size >= PROMISED_FACE_PX:
                found.setdefault((face.label, f">={PROMISED_FACE_PX}"), [0, 0])[0] += 1
                found[(face.label, f">={PROMISED_FACE_PX}")][1] += i in pairs
            if i in pairs:
                decisions.append((face.no_mask, result.faces[pairs[i]].label == "no_mask", face.size))
                probabilities.append((face.no_mask, result.faces[pairs[i]].p_no_mask, face.size))
    images = len(scenes) - unreadable
    if images == 0:
        raise DatasetError(f"{folder}: none of the {len(scenes)} images could be read")
    recall = {label: {band: {"recall": round(hit / n, 4), "n": n} for (lab, band), (n, hit) in sorted(found.items())
                      if lab == label} for label in SCENE_CLASSES}
    return {"images": images, "faces": sum(v[0] for (_, b), v in found.items() if b == "all"),
            "detections": detections,
            "precision": round(matched_detections / detections, 4) if detections else 0.0,
            "recall": recall,
            "no_mask_decision": {"all": _decision(decisions, 0),
                                 f">={PROMISED_FACE_PX}": _decision(decisions, PROMISED_FACE_PX)},
            "threshold_sweep": {str(t): _decision([(truth, p >= t, size) for truth, p, size in probabilities],
                                                  PROMISED_FACE_PX) for t in THRESHOLD_SWEEP},
            "ms_per_image": round(1000 * spent / images, 2), "model": classifier.version,
            "detector": getattr(detector, "name", type(detector).__name__), "threshold": threshold,
            "min_iou": min_iou}


def _decision(decisions: list[tuple[bool, bool, int]], min_size: int) -> dict:
    chosen = [(t, g) for t, g, size in decisions if size >= min_size]
    truth = np.array(["no_mask" if t else "mask" for t, _ in chosen])
    guess = np.array(["no_mask" if g else "mask" for _, g in chosen])
    figures = _precision_recall(truth, guess, "no_mask")
    figures["true_positives"], figures["predicted"], _ = _counts(truth, guess, "no_mask")
    figures["faces"] = len(chosen)
    figures["accuracy"] = round(float((truth == guess).mean()), 4) if chosen else 0.0
    return figures


def check_folder(folder: Path) -> Path:
    """The folder itself, or a :class:`DatasetError` naming it when it does not exist."""
    if not folder.is_dir():
        raise DatasetError(f"folder not found: {folder}")
    return folder
