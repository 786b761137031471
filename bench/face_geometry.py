"""Landmark and geometry checks (issue 17's third candidate), measured before the classifier on every crowd
detection of the 349 scene photos.

Each detection gets a second look: BlazeFace's short range on a window around it (the box and half its size on
every side), whose best detection gives a score and six keypoints (eyes, nose tip, mouth, ears). Two checks:

* **second look**: that score is at least 0.3, 0.5 or 0.7;
* **geometry**: eyes, nose and mouth lie in the box (15 % slack), the eyes above the nose, the nose above the
  mouth, and the eyes 15-80 % of the box's width apart.

Counted on detections of 24 px and more, matched to a labelled face (IoU >= 0.3) or not, and again among those
with a detector score of at least crowd's ``min_no_mask_detector_score``, the only ones that can raise an alert.
Neither the detector nor the keypoints were trained on these photos, so no cross-validation is needed; the
classifier's own no-face rejection is in ``bench/results/model_scenes_cv.json`` (``alerts.on_no_face``).

Writes ``bench/results/face_geometry.json``.

    python bench/face_geometry.py
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.report import RESULTS, machine  # noqa: E402
from edge.capture.images import read_image  # noqa: E402
from edge.vision.detector import BlazeFaceNet, create_detector  # noqa: E402
from models.evaluation import PROMISED_FACE_PX  # noqa: E402
from models.scenes import load_scenes, match  # noqa: E402
from shared.vocabulary import Profile  # noqa: E402
from tests.conftest import SCENES  # noqa: E402

#: The window of the second look: the box and this share of its longer side on every side.
CONTEXT = 0.5
SECOND_LOOK_SCORES = (0.3, 0.5, 0.7)


class KeypointNet(BlazeFaceNet):
    """BlazeFace's best detection in an image, with its six keypoints (the edge does not decode them)."""

    def best(self, image_bgr: np.ndarray) -> tuple[float, np.ndarray]:
        """(score, keypoints (6, 2) in image pixels) of the strongest anchor."""
        scale = self._run(image_bgr)
        logits = self._interpreter.get_tensor(self._scores).reshape(-1)
        best = int(np.argmax(logits))
        raw = self._interpreter.get_tensor(self._boxes)[0, best] / self.size
        keypoints = (raw[4:16].reshape(6, 2) + self._anchors[best]) * (self.size / scale)
        return float(1 / (1 + np.exp(-np.clip(logits[best], -80, 80)))), keypoints


def geometry_ok(box: tuple[int, int, int, int], keypoints: np.ndarray) -> bool:
    """Eyes, nose and mouth in the box, in that order from the top, the eyes a plausible width apart."""
    x, y, w, h = box
    u, v = (keypoints[:4, 0] - x) / w, (keypoints[:4, 1] - y) / h
    inside = bool(((u >= -0.15) & (u <= 1.15) & (v >= -0.15) & (v <= 1.15)).all())
    ordered = (v[0] + v[1]) / 2 < v[2] < v[3] + 0.05
    return bool(inside and ordered and 0.15 <= abs(u[1] - u[0]) <= 0.8)


def detections() -> list[dict]:
    """Every crowd detection of the scene photos with its label (None: no labelled face), size and second look."""
    detector = create_detector(Profile.CROWD)
    look = KeypointNet("short", 2, min_score=0.01)
    rows = []
    for scene in tqdm(load_scenes(SCENES), desc="scene photos", unit="photo"):
        image = read_image(scene.image)
        height, width = image.shape[:2]
        faces = detector.detect(image)
        matched = {j: i for i, j in match([f.box for f in scene.faces], [f.box for f in faces]).items()}
        for j, face in enumerate(faces):
            x, y, w, h = face.box
            pad = CONTEXT * max(w, h)
            x0, y0 = max(0, round(x - pad)), max(0, round(y - pad))
            x1, y1 = min(width, round(x + w + pad)), min(height, round(y + h + pad))
            score, keypoints = look.best(image[y0:y1, x0:x1])
            label = scene.faces[matched[j]] if j in matched else None
            rows.append(
                {
                    "label": label.label if label else None,
                    "size": label.size if label else min(w, h),
                    "detector_score": face.score,
                    "second_look": score,
                    "geometry": geometry_ok(face.box, keypoints + np.array([x0, y0])),
                }
            )
    return rows


def kept(rows: list[dict], check: Callable[[dict], bool], gate: float) -> dict[str, int]:
    """How many faces, no-mask faces and non-faces of ``PROMISED_FACE_PX`` and more, with a detector score of at least
    ``gate``, the check keeps."""
    chosen = [r for r in rows if r["size"] >= PROMISED_FACE_PX and r["detector_score"] >= gate]
    groups = {
        "faces": [r for r in chosen if r["label"]],
        "no_mask_faces": [r for r in chosen if r["label"] and r["label"] != "with_mask"],
        "non_faces": [r for r in chosen if not r["label"]],
    }
    return {
        f"{name}_{part}": value
        for name, group in groups.items()
        for part, value in (("kept", int(sum(map(check, group)))), ("of", len(group)))
    }


def main() -> int:
    rows = detections()
    checks: dict[str, Callable[[dict], bool]] = {"geometry": lambda r: r["geometry"]}
    for score in SECOND_LOOK_SCORES:
        checks[f"second_look_{score}"] = lambda r, s=score: r["second_look"] >= s
        checks[f"second_look_{score}_and_geometry"] = lambda r, s=score: r["second_look"] >= s and r["geometry"]
    gate = Profile.CROWD.default_point.min_no_mask_detector_score
    figures = {
        f"{name}_{where}_{key}": value
        for name, check in checks.items()
        for where, at in (("all", 0.0), ("alert_gate", gate))
        for key, value in kept(rows, check, at).items()
    }
    result = {
        "name": "face_geometry",
        "title": "Landmark and geometry checks on every crowd detection of the scene photos (before the classifier)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": {"detections": len(rows), **figures},
        "notes": f"detections of {PROMISED_FACE_PX} px and more; alert_gate: detector score >= {gate} (crowd's "
        "min_no_mask_detector_score); X_kept of X_of",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "face_geometry.json").write_text(json.dumps(result, indent=2))
    for name, value in result["figures"].items():
        print(f"{name:60} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
