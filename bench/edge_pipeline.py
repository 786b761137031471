"""Edge pipeline throughput, per-stage cost, capture-to-PUBACK latency and memory, side by side with a baseline.

* **Throughput** on 640x480 frames of the simulated camera with 0, 1 and 3 faces: the node's pipeline
  (near profile: BlazeFace one pass + int8 classifier + tracker + outbox writes) against a **baseline**
  pipeline built like the seed project's (OpenCV res10 SSD face detector + the same classifier), fed the
  same pre-rendered frames alternately, so both see the same machine load; only the pipeline is timed.
* **Latency**: the whole node (``EdgeApp``) on a private Mosquitto, camera paced at 30 fps, faces entering
  and leaving the view as the servo sweeps; for every ``new``/``update`` event: capture time of the frame
  that decided it -> PUBACK (outbox removal).
* **RSS**: peak resident memory of a node run as its own process (``maskwatch edge --source scene:builtin``),
  sampled every 0.2 s for the length of the latency run.

Writes ``bench/results/edge_pipeline.json``.

    python bench/edge_pipeline.py [--frames 150] [--seconds 15]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.common import write_result  # noqa: E402
from devsite.broker import LocalMosquitto  # noqa: E402
from edge.app import EdgeApp  # noqa: E402
from edge.capture.scene import BUILTIN_DIR, Placement, Scene, SceneCamera  # noqa: E402
from edge.capture.sources import Frame  # noqa: E402
from edge.config import EdgeConfig, load_edge_config  # noqa: E402
from edge.delivery.outbox import Outbox  # noqa: E402
from edge.pipeline import Pipeline  # noqa: E402
from edge.state import NodeRuntime  # noqa: E402
from edge.vision.classifier import MaskClassifier  # noqa: E402
from edge.vision.detector import create_detector  # noqa: E402
from shared.messages import Event, parse  # noqa: E402

log = logging.getLogger("bench.edge_pipeline")


def frames_with(faces: int, count: int, config: EdgeConfig) -> list[Frame]:
    """``count`` noisy 640x480 frames of a scene window holding ``faces`` faces."""
    from edge.capture.images import read_image

    pictures = [read_image(BUILTIN_DIR / "astronaut.jpg"), read_image(BUILTIN_DIR / "astronaut_masked.jpg")]
    angles = {0: [], 1: [0.0], 3: [-17.0, 0.0, 17.0]}[faces]
    scene = Scene(
        tuple(
            Placement(f"f{i}", pictures[i % 2], a, height_frac=0.3 if faces == 3 else 0.45)
            for i, a in enumerate(angles)
        ),
        360.0,
    )
    camera = SceneCamera(scene, config.scene, angle=lambda: 0.0)
    camera.open()
    frames = []
    for _ in range(count):
        frame = camera.read()
        assert frame is not None
        frames.append(frame)
    return frames


def side_by_side(pipelines: list[Pipeline], frames: list[Frame]) -> list[dict[str, Any]]:
    """Feed every frame to each pipeline in turn (so both see the same machine load) and time each.

    ``fps`` is frames over the summed frame times; ``fps_median`` comes from the median frame time,
    which load spikes of other processes on the machine barely move.
    """
    for pipeline in pipelines:
        for frame in frames[:5]:  # warm-up
            frame.captured = time.monotonic()
            pipeline.process(frame)
        pipeline.times.reset()
    spent: list[list[float]] = [[] for _ in pipelines]
    for frame in frames:
        for pipeline, times in zip(pipelines, spent, strict=True):
            frame.captured = time.monotonic()
            started = time.perf_counter()
            pipeline.process(frame)
            times.append(time.perf_counter() - started)
    out = []
    for pipeline, times in zip(pipelines, spent, strict=True):
        _fps, stages = pipeline.times.reset()
        stages.pop("wait", None)
        out.append(
            {
                "fps": round(len(times) / sum(times), 1),
                "fps_median": round(1 / statistics.median(times), 1),
                "stage_ms": stages,
            }
        )
    return out


def make_pipeline(config: EdgeConfig, detector: Any, classifier: MaskClassifier, folder: Path, tag: str) -> Pipeline:
    runtime = NodeRuntime(site=config.site, node=config.node, threshold=0.5, model=classifier.version)
    return Pipeline(config, detector, classifier, runtime, Outbox(folder / f"{tag}.sqlite"))


def latency(seconds: float, folder: Path) -> dict[str, Any]:
    """Run the whole node against a private broker; capture -> PUBACK for every new/update event."""
    broker = LocalMosquitto().start()
    try:
        config = load_edge_config(
            None,
            {
                "site": "bench",
                "node": "lat",
                "source": "scene:builtin",
                "pin_factory": "mock",
                "broker": {"host": broker.host, "port": broker.port},
                "delivery": "broker",  # the node alone: to PUBACK
                "outbox": {"path": str(folder / "latency.sqlite")},
                "scene": {"fps": 30},
                "tracker": {"confirm_frames": 2, "end_frames": 2},
                "servo": {"mode": "sweep", "sweep_step_deg": 30, "dwell_s": 0.2, "speed_dps": 400, "face_hold_s": 0},
                "snapshot": {"mode": "off"},
            },
        )
        app = EdgeApp(config)
        app.start()
        outbox = app.outbox
        put_ts: dict[int, datetime] = {}
        acked: list[float] = []
        original_put, original_remove = outbox.put, outbox.remove

        def put(topic: str, payload: bytes, qos: int = 1) -> int:
            seq = original_put(topic, payload, qos)
            event = parse(Event, payload)
            if event.type != "end":  # an end is stamped with the last sighting, frames before it is decided
                put_ts[seq] = event.ts
            return seq

        def remove(seq: int) -> None:
            original_remove(seq)
            if seq in put_ts:
                acked.append((datetime.now(UTC) - put_ts.pop(seq)).total_seconds() * 1000)

        outbox.put, outbox.remove = put, remove  # type: ignore[method-assign]
        time.sleep(seconds)
        stats = app.stats()
        app.close()
    finally:
        broker.close()
    acked.sort()
    return {
        "events": len(acked),
        "capture_to_puback_ms_p50": round(statistics.median(acked), 1) if acked else None,
        "capture_to_puback_ms_p99": round(acked[min(len(acked) - 1, int(0.99 * len(acked)))], 1) if acked else None,
        "node_fps": stats.fps,
        "node_stage_ms": stats.stage_ms,
        "dropped_frames": stats.dropped_frames,
    }


def node_rss(seconds: float) -> float:
    """Peak RSS (MB) of ``maskwatch edge --source scene:builtin`` running for ``seconds``."""
    import psutil

    broker = LocalMosquitto().start()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shared.cli",
                "-q",
                "edge",
                "--source",
                "scene:builtin",
                "--broker",
                broker.address,
                "--outbox",
                f"{tmp}/o.sqlite",
                "--set",
                "pin_factory=mock",
                "--set",
                "scene.fps=30",
            ]
        )
        peak = 0
        try:
            handle = psutil.Process(proc.pid)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and proc.poll() is None:
                peak = max(peak, handle.memory_info().rss)
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(30)
            broker.close()
    return round(peak / 2**20, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=150, help="frames per case")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the latency run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = load_edge_config(None, {"site": "bench", "node": "tp", "snapshot": {"mode": "off"}})
    classifier = MaskClassifier(num_threads=2)
    ours = create_detector("near", num_threads=2)
    seed = create_detector("near", "res10", num_threads=2)
    figures: dict[str, Any] = {"detector": ours.name, "classifier": classifier.version}
    baseline: dict[str, Any] = {"detector": seed.name, "classifier": classifier.version}
    ratios: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for faces in (0, 1, 3):
            frames = frames_with(faces, args.frames, config)
            mine, base = side_by_side(
                [
                    make_pipeline(config, ours, classifier, folder, f"ours{faces}"),
                    make_pipeline(config, seed, classifier, folder, f"seed{faces}"),
                ],
                frames,
            )
            figures[f"faces_{faces}"] = mine
            baseline[f"faces_{faces}"] = base
            ratios[f"fps_faces_{faces}"] = round(mine["fps"] / base["fps"], 2)
            ratios[f"fps_median_faces_{faces}"] = round(mine["fps_median"] / base["fps_median"], 2)
            print(
                f"{faces} face(s): {mine['fps']} fps, median {mine['fps_median']} (baseline {base['fps']}, "
                f"median {base['fps_median']}) stages {mine['stage_ms']}"
            )
        figures["latency"] = latency(args.seconds, folder)
        print(f"latency: {figures['latency']}")
    figures["node_rss_peak_mb"] = node_rss(args.seconds)
    print(f"node peak RSS {figures['node_rss_peak_mb']} MB")
    write_result(
        "edge_pipeline",
        "Edge pipeline: fps by faces in view, stages, latency, RSS",
        figures,
        baseline,
        ratios,
        "baseline = seed-project-style res10 SSD detector + the same int8 classifier "
        "on the same frames; ratios = Maskwatch fps / baseline fps. Target: >= 30 fps with 3 faces, "
        "RSS <= 250 MB (the node process alone).",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
