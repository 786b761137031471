"""``maskwatch model eval``: accuracy on labelled crops or photos, and detection + decision on labelled scenes.

Everything runs through the edge's LiteRT code (:mod:`edge.vision.detector`, :mod:`edge.vision.classifier`),
never TensorFlow.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.capture.images import list_images, read_image
from edge.vision.classifier import MaskClassifier
from edge.vision.detector import FaceDetector
from models.inference import UNFILTERED, analyse
from models.scenes import SCENE_CLASSES, load_scenes, match
from shared.errors import DatasetError, ImageReadError
from shared.vocabulary import OperatingPoint, Profile, decide

log = logging.getLogger(__name__)

CLASS_FOLDERS = {"with_mask": "mask", "without_mask": "no_mask"}
#: Face size bands (shorter side, px) for recall reports.
SIZE_BANDS = ((0, 16, "<16"), (16, 24, "16-23"), (24, 48, "24-47"), (48, 10**6, ">=48"))
#: The smallest face (shorter side, px) the crowd profile promises to handle.
PROMISED_FACE_PX = 24
#: Thresholds of the no-mask decision sweeps in reports (each profile's default among them).
THRESHOLD_SWEEP = (0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)
#: Minimum face scores (1 - p_not_face) of the operating-point sweeps.
FACE_SCORE_SWEEP = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
#: Detector scores a no-mask verdict needs (:meth:`shared.vocabulary.OperatingPoint.verified`) in the
#: operating-point sweeps.
DETECTOR_SCORE_SWEEP = (0.0, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)


def _counts(truth: np.ndarray, guess: np.ndarray, positive: str) -> tuple[int, int, int]:
    """(true positives, predicted positives, actual positives)."""
    tp = int(((truth == positive) & (guess == positive)).sum())
    return tp, int((guess == positive).sum()), int((truth == positive).sum())


def _precision_recall(truth: np.ndarray, guess: np.ndarray, positive: str) -> dict:
    tp, predicted, actual = _counts(truth, guess, positive)
    return {
        "precision": round(tp / predicted, 4) if predicted else 0.0,
        "recall": round(tp / actual, 4) if actual else 0.0,
        "n": actual,
    }


def evaluate_folder(
    folder: Path,
    classifier: MaskClassifier,
    detector: FaceDetector | None = None,
    point: OperatingPoint = UNFILTERED,
) -> dict:
    """Accuracy on ``folder/with_mask`` and ``folder/without_mask`` at an operating point.

    Without a detector each image is one face crop. With one, the largest detected face is classified;
    an image without a face (or whose no-mask verdicts are all on detections weaker than the point's
    ``min_no_mask_detector_score``) counts as wrong and as ``no_face``. A crop whose face score is under the
    point's ``min_face_score`` gets no decision: wrong, counted as ``not_face``. Unreadable images are logged
    and skipped.

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
    truths, guesses, no_face, not_face, unreadable, spent = [], [], 0, 0, 0, 0.0
    for path, label in items:
        try:
            frame = read_image(path)
        except ImageReadError as exc:
            log.warning("skipped: %s", exc)
            unreadable += 1
            continue
        start = time.perf_counter()
        if detector is None:
            scores = classifier.scores([frame])
            if scores.face_score[0] < point.min_face_score:
                guess, not_face = "not_face", not_face + 1
            else:
                guess = decide(float(scores.p_no_mask[0]), point.threshold).label
        else:
            faces = analyse(frame, detector, classifier, point._replace(min_face_score=0.0)).faces
            if not faces:
                guess, no_face = "no_face", no_face + 1
            else:
                largest = max(faces, key=lambda f: f.box[2] * f.box[3])
                if largest.face_score < point.min_face_score:
                    guess, not_face = "not_face", not_face + 1
                else:
                    guess = largest.label
        spent += time.perf_counter() - start
        truths.append(label)
        guesses.append(guess)
    if not truths:
        raise DatasetError(f"{folder}: none of the {len(items)} images could be read")
    if unreadable:
        log.warning("%d unreadable image(s) skipped", unreadable)
    truth, guessed = np.array(truths), np.array(guesses)
    return {
        "n": len(truth),
        "accuracy": round(float((truth == guessed).mean()), 4),
        "per_class": {name: _precision_recall(truth, guessed, name) for name in ("mask", "no_mask")},
        "no_face": no_face,
        "not_face": not_face,
        **point._asdict(),
        "ms_per_image": round(1000 * spent / len(truth), 2),
        "model": classifier.version,
    }


def size_band(size: int) -> str:
    """The :data:`SIZE_BANDS` name of a face's shorter side."""
    return next(name for low, high, name in SIZE_BANDS if low <= size < high)


@dataclass(frozen=True)
class SceneRecord:
    """One labelled face, or one detection that matches no labelled face, and what the pipeline said of it.

    ``label`` is the VOC class, ``None`` for an unmatched detection; ``size`` the shorter side of the labelled
    box (of the detected box when unmatched); ``detected`` whether a detection matched the labelled face (always
    true for an unmatched detection); ``p_no_mask`` and ``face_score`` are the classifier's scores of that
    detection and ``detector_score`` the detector's (all 0 when nothing was detected).
    """

    label: str | None
    size: int
    detected: bool
    p_no_mask: float = 0.0
    face_score: float = 0.0
    detector_score: float = 0.0

    def kept(self, point: OperatingPoint) -> bool:
        """Whether the pipeline makes a decision on this record at an operating point: detected and
        :meth:`~shared.vocabulary.OperatingPoint.accepts`."""
        return self.detected and point.accepts(self.p_no_mask, self.face_score, self.detector_score)


@dataclass
class SceneRun:
    """Every record of a pass over labelled scenes, and what it cost."""

    records: list[SceneRecord]
    images: int
    ms_per_image: float
    model: str
    detector: str


def collect_scenes(
    folder: Path, classifier: MaskClassifier, detector: FaceDetector, min_iou: float = 0.3, only: set[str] | None = None
) -> SceneRun:
    """Run the pipeline over labelled scenes and record every labelled face and every unmatched detection.

    Detected faces are matched one-to-one to labelled ones at IoU >= ``min_iou``. No face is rejected here:
    :func:`score_scenes` applies the decision thresholds, so one pass serves every operating point.

    :param only: image file names to keep (default: all).
    :raises DatasetError: the folder is not a scenes folder, or no image could be read.
    """
    scenes = [s for s in load_scenes(folder) if only is None or s.image.name in only]
    records: list[SceneRecord] = []
    unreadable, spent = 0, 0.0
    for scene in scenes:
        try:
            frame = read_image(scene.image)
        except ImageReadError as exc:
            log.warning("skipped: %s", exc)
            unreadable += 1
            continue
        start = time.perf_counter()
        result = analyse(frame, detector, classifier)
        spent += time.perf_counter() - start
        pairs = match([f.box for f in scene.faces], [f.box for f in result.faces], min_iou)
        for i, face in enumerate(scene.faces):
            found = result.faces[pairs[i]] if i in pairs else None
            records.append(
                SceneRecord(
                    face.label,
                    face.size,
                    found is not None,
                    found.p_no_mask if found else 0.0,
                    found.face_score if found else 0.0,
                    found.detector_score if found else 0.0,
                )
            )
        matched = set(pairs.values())
        records += [
            SceneRecord(None, min(f.box[2], f.box[3]), True, f.p_no_mask, f.face_score, f.detector_score)
            for j, f in enumerate(result.faces)
            if j not in matched
        ]
    images = len(scenes) - unreadable
    if images == 0:
        raise DatasetError(f"{folder}: none of the {len(scenes)} images could be read")
    return SceneRun(
        records,
        images,
        round(1000 * spent / images, 2),
        classifier.version,
        getattr(detector, "name", type(detector).__name__),
    )


def alerts(records: list[SceneRecord], images: int, point: OperatingPoint) -> dict:
    """The alert figures of an operating point: every no-mask decision, judged.

    A no-mask decision is a detection kept at the operating point (:meth:`SceneRecord.kept`) with ``p_no_mask``
    at least its threshold. It is right on a labelled ``without_mask`` / ``mask_weared_incorrect`` face of at least
    :data:`PROMISED_FACE_PX`, wrong on a masked face of that size or on a detection matching no labelled face
    whose shorter side is that size or more; decisions on smaller faces or boxes count on neither side.
    ``alert_precision`` = right / (right + wrong); ``false_alerts_per_photo`` = wrong / photos; ``alert_recall`` =
    right / every labelled no-mask face of that size, found or not (the per-face no-mask recall of
    :func:`score_scenes` counts only the faces found).
    """
    right = on_masked = on_no_face = 0
    unmasked = sum(r.label is not None and SCENE_CLASSES[r.label] and r.size >= PROMISED_FACE_PX for r in records)
    for r in records:
        if not (r.kept(point) and r.p_no_mask >= point.threshold):
            continue
        if r.size < PROMISED_FACE_PX:
            continue
        if r.label is None:
            on_no_face += 1
        elif SCENE_CLASSES[r.label]:
            right += 1
        else:
            on_masked += 1
    decisions = right + on_masked + on_no_face
    wrong = on_masked + on_no_face
    return {
        "alert_precision": round(right / decisions, 4) if decisions else 0.0,
        "false_alerts_per_photo": round(wrong / images, 4) if images else 0.0,
        "alert_recall": round(right / unmasked, 4) if unmasked else 0.0,
        "alerts": decisions,
        "right": right,
        "on_masked_face": on_masked,
        "on_no_face": on_no_face,
        "photos": images,
    }


def score_scenes(records: list[SceneRecord], images: int, point: OperatingPoint) -> dict:
    """Face recall per class and size, detection precision, the per-face no-mask decision and the alerts.

    A detection counts only when it is kept at the operating point (:meth:`SceneRecord.kept`): a labelled face
    whose detection the classifier rejects, or whose no-mask verdict is not verified, is not found. The no-mask
    decision (``mask_weared_incorrect`` counts as no mask) is scored on found faces, for all of them and for faces
    of at least :data:`PROMISED_FACE_PX`; ``no_mask_recall_by_label`` splits its recall on the faces of that size
    between bare faces and incorrectly worn masks.
    """
    found: dict[tuple[str, str], list[int]] = {}
    decisions: list[tuple[bool, bool, int]] = []  # (truly no mask, decided no mask, face size)
    by_label = {label: [0, 0] for label, no_mask in SCENE_CLASSES.items() if no_mask}  # [decided no mask, faces]
    kept = [r.kept(point) for r in records]
    for record, is_kept in zip(records, kept, strict=True):
        if record.label is None:
            continue
        bands = [size_band(record.size), "all"] + ([f">={PROMISED_FACE_PX}"] if record.size >= PROMISED_FACE_PX else [])
        for band in bands:
            counts = found.setdefault((record.label, band), [0, 0])
            counts[0] += 1
            counts[1] += is_kept
        if is_kept:
            decisions.append((SCENE_CLASSES[record.label], record.p_no_mask >= point.threshold, record.size))
            if record.label in by_label and record.size >= PROMISED_FACE_PX:
                by_label[record.label][0] += record.p_no_mask >= point.threshold
                by_label[record.label][1] += 1
    detections = sum(kept)
    matched = sum(k for r, k in zip(records, kept, strict=True) if r.label is not None)
    recall = {
        label: {
            band: {"recall": round(hit / n, 4), "n": n}
            for (lab, band), (n, hit) in sorted(found.items())
            if lab == label
        }
        for label in SCENE_CLASSES
    }
    promised = [k for r, k in zip(records, kept, strict=True) if r.label is not None and r.size >= PROMISED_FACE_PX]
    return {
        "images": images,
        "faces": sum(v[0] for (_, b), v in found.items() if b == "all"),
        "detections": detections,
        "precision": round(matched / detections, 4) if detections else 0.0,
        "face_recall": round(sum(promised) / len(promised), 4) if promised else 0.0,
        "recall": recall,
        "no_mask_decision": {
            "all": _decision(decisions, 0),
            f">={PROMISED_FACE_PX}": _decision(decisions, PROMISED_FACE_PX),
        },
        "no_mask_recall_by_label": {
            label: {"recall": round(hit / n, 4) if n else 0.0, "n": n} for label, (hit, n) in by_label.items()
        },
        "alerts": alerts(records, images, point),
        **point._asdict(),
    }


def operating_points(
    records: list[SceneRecord],
    images: int,
    thresholds: tuple[float, ...] = THRESHOLD_SWEEP,
    face_scores: tuple[float, ...] = FACE_SCORE_SWEEP,
    detector_scores: tuple[float, ...] = DETECTOR_SCORE_SWEEP,
) -> list[dict]:
    """Face recall, no-mask recall and alert figures (faces >= :data:`PROMISED_FACE_PX`) for every no-mask
    threshold, minimum face score and detector score a no-mask verdict needs: the data of the operating-point
    curves."""
    points = []
    for face in face_scores:
        for detector in detector_scores:
            for threshold in thresholds:
                points.append(_point(records, images, OperatingPoint(threshold, face, detector)))
    return points


def _point(records: list[SceneRecord], images: int, point: OperatingPoint) -> dict:
    scored = score_scenes(records, images, point)
    decision = scored["no_mask_decision"][f">={PROMISED_FACE_PX}"]
    return (
        point._asdict()
        | {
            "face_recall": scored["face_recall"],
            "no_mask_recall": decision["recall"],
            "no_mask_precision": decision["precision"],
        }
        | {k: scored["alerts"][k] for k in ("alert_precision", "false_alerts_per_photo", "alert_recall", "alerts")}
    )


#: The rules that choose each profile's operating point among :func:`operating_points` (models/MODEL_CARD.md,
#: "Operating points"): the minimum face score stays at 0.5 (a box the classifier finds more likely no face than a
#: face is no event; a higher one rejects real face crops too, and the no-mask detector score keeps the non-faces
#: it would catch from alerting), ...
CHOSEN_FACE_SCORE = 0.5
#: ... ``crowd`` (recall first) keeps face recall and no-mask recall at these, ...
CROWD_MIN_FACE_RECALL, CROWD_MIN_NO_MASK_RECALL = 0.90, 0.85
#: ... ``near`` (precision first) keeps face recall within this of the best its detector reaches.
NEAR_FACE_RECALL_SLACK = 0.02


def chosen_point(points: list[dict], profile: Profile) -> dict | None:
    """The operating point the written rule picks for ``profile``: the highest alert precision among the points
    that keep the profile's recall (ties: more alert recall, then more face recall), or ``None`` if none does."""
    faces = [p for p in points if p["min_face_score"] == CHOSEN_FACE_SCORE]
    best_recall = max((p["face_recall"] for p in faces), default=0.0)
    allowed = [
        p
        for p in faces
        if (
            p["face_recall"] >= CROWD_MIN_FACE_RECALL and p["no_mask_recall"] >= CROWD_MIN_NO_MASK_RECALL
            if profile == Profile.CROWD
            else p["face_recall"] >= best_recall - NEAR_FACE_RECALL_SLACK
        )
    ]
    return max(allowed, key=lambda p: (p["alert_precision"], p["alert_recall"], p["face_recall"]), default=None)


def evaluate_scenes(
    folder: Path,
    classifier: MaskClassifier,
    detector: FaceDetector,
    point: OperatingPoint = UNFILTERED,
    min_iou: float = 0.3,
    only: set[str] | None = None,
) -> dict:
    """:func:`collect_scenes` then :func:`score_scenes` at one operating point, with a sweep of the no-mask
    threshold at that minimum face score and detector score.

    :raises DatasetError: the folder is not a scenes folder.
    """
    run = collect_scenes(folder, classifier, detector, min_iou, only)
    return scene_report(run, point) | {"min_iou": min_iou}


def scene_report(run: SceneRun, point: OperatingPoint) -> dict:
    """:func:`score_scenes` of a run at one operating point, a sweep of the no-mask threshold at that minimum
    face score and detector score, and the run's cost, model and detector."""
    result = score_scenes(run.records, run.images, point)
    sweep = {}
    for t in THRESHOLD_SWEEP:
        scored = score_scenes(run.records, run.images, point._replace(threshold=t))
        sweep[str(t)] = scored["no_mask_decision"][f">={PROMISED_FACE_PX}"] | {
            k: scored["alerts"][k] for k in ("alert_precision", "false_alerts_per_photo", "alert_recall")
        }
    return result | {
        "threshold_sweep": sweep,
        "ms_per_image": run.ms_per_image,
        "model": run.model,
        "detector": run.detector,
    }


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
