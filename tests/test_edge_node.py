"""The edge node end to end: real Mosquitto, real models, the simulated panoramic camera, mock pins."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import pytest

from devsite.broker import free_port
from edge.app import EdgeApp
from edge.vision.tracker import iou
from shared.config import BrokerConfig
from shared.messages import Event, Message, NodeState, NodeStats, parse
from shared.mqtt import MqttClient
from shared.topics import NodeTopics
from shared.vocabulary import Profile
from tests import edge_node
from tests.conftest import FACE_MASK, need
from tests.edge_node import Listener, make_scene, node_config, running_node
from tests.polling import wait_until

#: ``maskwatch edge`` on a site without a hub: the broker's PUBACK delivers.
EDGE = [sys.executable, "-m", "shared.cli", "edge", "--set", "delivery=broker"]
M = TypeVar("M", bound=Message)
mock_pins = edge_node.mock_pins  # fixture
models = edge_node.models  # fixture


def labelled_folder(root: Path, per_class: int) -> Path:
    need(FACE_MASK)
    for cls in ("with_mask", "without_mask"):
        (root / cls).mkdir(parents=True)
        for src in sorted((FACE_MASK / cls).iterdir())[:per_class]:
            (root / cls / src.name).symlink_to(src)
    (root / "with_mask" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def test_labelled_folder_once_gives_one_event_per_face_with_the_right_labels(
    tmp_path: Path, broker_config: BrokerConfig, models: tuple[Any, Any]
) -> None:
    folder = labelled_folder(tmp_path / "faces", 25)
    topics = NodeTopics("t", "folder")
    received: list[Event] = []
    sub = MqttClient(broker_config, "t-folder-sub")
    sub.subscribe(topics.events, lambda m: received.append(parse(Event, m.payload)))
    sub.start()
    assert sub.wait_connected(5)
    run = subprocess.run(
        [
            *EDGE,
            "--once",
            "--source",
            str(folder),
            "--broker",
            broker_config.address,
            "--site",
            "t",
            "--node",
            "folder",
            "--outbox",
            str(tmp_path / "o.sqlite"),
            "--set",
            "servo.enabled=false",
            "--set",
            "indicator.enabled=false",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "broken.jpg" in run.stderr  # the unreadable image is named in a clear log line
    assert wait_until(lambda: len(received) >= 2 and received[-1].type == "end", 5)
    sub.stop()
    by_id: dict[str, list[Event]] = {}
    for ev in received:
        by_id.setdefault(ev.id, []).append(ev)
    assert all([e.type for e in evs] == ["new", "end"] for evs in by_id.values())
    # the committed classifier has a not-a-face class: every event carries its face score, at least the near
    # profile's minimum (detections under it never become events)
    _detector, classifier = models
    minimum = Profile.NEAR.default_point.min_face_score
    assert classifier.verifies_faces
    assert all(e.face_score is not None and minimum <= e.face_score <= 1 for e in received)
    per_file: dict[str, list[tuple[int, int, int, int]]] = {}
    for evs in by_id.values():
        per_file.setdefault(str(evs[0].frame), []).append(evs[0].box)
    for boxes in per_file.values():  # a face is one event: two events of one image are two different faces
        assert all(iou(a, b) < 0.3 for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert len(per_file) >= 30  # most of the 50 faces are found (recall is the detector's, see bench)
    # accuracy of the node on the faces it found, against the model alone on the same images
    correct = sum((evs[0].label == "mask") == evs[0].frame.startswith("with_mask") for evs in by_id.values())
    _detector, classifier = models
    images = [cv2.imread(str(p)) for p in sorted(folder.rglob("*.jpg")) if p.name != "broken.jpg"]
    truth = [p.parent.name == "with_mask" for p in sorted(folder.rglob("*.jpg")) if p.name != "broken.jpg"]
    probs = classifier.no_mask_probability(images)
    model_acc = float(np.mean([(p < 0.5) == t for p, t in zip(probs, truth, strict=True)]))
    assert correct / len(by_id) >= model_acc - 0.05


def test_a_face_in_view_for_5_s_is_one_event(
    tmp_path: Path, broker_config: BrokerConfig, mock_pins: Any, models: tuple[Any, Any]
) -> None:
    need(FACE_MASK)
    face = sorted((FACE_MASK / "without_mask").iterdir())[3]
    scene = make_scene(tmp_path / "scene", [(face, 0, "no_mask")])
    cfg = node_config(
        broker_config,
        tmp_path,
        source=f"scene:{scene}",
        scene={"realtime": False, "fps": 10, "duration_s": 5},
        servo={"mode": "hold", "start_deg": 0},
    )
    listener = Listener(broker_config, NodeTopics(cfg.site, cfg.node))
    app = EdgeApp(cfg, once=True, pin_factory=mock_pins, detector=models[0], classifier=models[1])
    app.start()
    assert app.wait() == 0
    events = listener.events_until(lambda evs: bool(evs) and evs[-1].type == "end", 5)
    listener.close()
    assert len({e.id for e in events}) == 1
    assert events[0].type == "new" and events[-1].type == "end"
    assert events[-1].track is not None and events[-1].track.frames >= 40
    assert (events[-1].track.last_seen - events[-1].track.first_seen).total_seconds() >= 4.5


def test_sweep_finds_a_face_at_plus_60_degrees(
    tmp_path: Path, broker_config: BrokerConfig, mock_pins: Any, models: tuple[Any, Any]
) -> None:
    need(FACE_MASK)
    face = sorted((FACE_MASK / "without_mask").iterdir())[3]
    scene = make_scene(tmp_path / "scene", [(face, 60, "no_mask")])
    cfg = node_config(
        broker_config,
        tmp_path,
        source=f"scene:{scene}",
        scene={"fps": 15, "fov_deg": 60},
        servo={"mode": "sweep", "start_deg": 0, "sweep_step_deg": 15, "dwell_s": 0.2, "speed_dps": 150},
    )
    with running_node(cfg, mock_pins, models, broker_config) as (app, listener):
        [event] = listener.events_until(lambda evs: len(evs) >= 1, 15)
        assert event.type == "new"
        assert event.angle is not None and abs(event.angle - 60) <= cfg.scene.fov_deg / 2
        assert app.planner is not None and app.planner.mode == "sweep"


def test_track_centres_an_off_centre_face_and_stops_moving(
    tmp_path: Path, broker_config: BrokerConfig, mock_pins: Any, models: tuple[Any, Any]
) -> None:
    need(FACE_MASK)
    face = sorted((FACE_MASK / "without_mask").iterdir())[3]
    scene = make_scene(tmp_path / "scene", [(face, 17, "no_mask")])
    cfg = node_config(
        broker_config,
        tmp_path,
        source=f"scene:{scene}",
        scene={"fps": 15},
        servo={"mode": "track", "start_deg": 0, "speed_dps": 60, "track_dead_band_deg": 2},
    )
    with running_node(cfg, mock_pins, models, broker_config) as (app, _listener):
        assert wait_until(lambda: abs(app.servo.position - 17) <= 3, 6)
        wait_until(lambda: False, 0.6)  # let it settle
        positions = []
        for _ in range(20):
            positions.append(app.servo.position)
            wait_until(lambda: False, 0.05)
        assert max(positions) - min(positions) <= 0.5, positions  # it stopped: no oscillation
        assert abs(positions[-1] - 17) <= 3


def test_missing_camera_is_reported_and_the_node_still_answers(
    tmp_path: Path, broker_config: BrokerConfig, mock_pins: Any, models: tuple[Any, Any]
) -> None:
    cfg = node_config(broker_config, tmp_path, source="7", camera={"retry_min_s": 0.2, "retry_max_s": 0.5})
    with running_node(cfg, mock_pins, models, broker_config) as (_app, listener):
        stats = parse(NodeStats, listener.wait_raw(listener.topics.stats, 5).payload)
        assert not stats.camera_ok and "cannot open camera '7'" in (stats.camera_error or "")
        answer = listener.command("threshold", {"request_id": "r1", "value": 0.7})
        assert answer.status == "ok" and answer.request_id == "r1"
        snap = listener.command("snapshot", {"request_id": "r2"})
        assert snap.status == "error" and "no frame" in (snap.error or "")


def test_corrupt_video_is_a_clear_error_without_a_crash(tmp_path: Path, broker_config: BrokerConfig) -> None:
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
    run = subprocess.run(
        [
            *EDGE,
            "--once",
            "--source",
            str(video),
            "--broker",
            broker_config.address,
            "--site",
            "t",
            "--node",
            "video",
            "--outbox",
            str(tmp_path / "o.sqlite"),
            "--set",
            "pin_factory=mock",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "broken.mp4" in run.stderr and "Traceback" not in run.stderr


def test_once_without_a_broker_exits_1_and_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "empty-room"
    folder.mkdir()
    cv2.imwrite(str(folder / "wall.png"), np.full((120, 160, 3), 128, np.uint8))  # no face: nothing to publish
    nobody = f"127.0.0.1:{free_port()}"
    run = subprocess.run(
        [
            *EDGE,
            "--once",
            "--source",
            str(folder),
            "--broker",
            nobody,
            "--outbox",
            str(tmp_path / "o.sqlite"),
            "--set",
            "pin_factory=mock",
            "--set",
            "outbox.drain_timeout_s=2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert f"broker {nobody} never reached" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("spec", ["scene:/no/such/dir", "/no/such/video.mp4"])
def test_bad_source_names_the_problem(tmp_path: Path, broker_config: BrokerConfig, spec: str) -> None:
    run = subprocess.run(
        [
            *EDGE,
            "--once",
            "--source",
            spec,
            "--broker",
            broker_config.address,
            "--outbox",
            str(tmp_path / "o.sqlite"),
            "--set",
            "pin_factory=mock",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode in (1, 2)
    assert "/no/such/" in run.stderr and "Traceback" not in run.stderr


def test_broker_killed_while_the_node_streams_every_event_arrives_once_in_order(
    tmp_path: Path, restartable_mosquitto: Any, mock_pins: Any, models: tuple[Any, Any]
) -> None:
    folder = labelled_folder(tmp_path / "faces", 30)
    broker = BrokerConfig(
        host=restartable_mosquitto.host,
        port=restartable_mosquitto.port,
        keepalive_s=5,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
    )
    cfg = node_config(broker, tmp_path, source=str(folder), servo={"enabled": False})
    received: list[tuple[str, str]] = []
    sub = MqttClient(broker, "t-kill-sub", persistent=True)  # its session survives the broker restart
    sub.subscribe(
        NodeTopics(cfg.site, cfg.node).events,
        lambda m: received.append((parse(Event, m.payload).id, parse(Event, m.payload).type)),
    )
    sub.start()
    assert sub.wait_connected(5)
    app = EdgeApp(cfg, once=True, pin_factory=mock_pins, detector=models[0], classifier=models[1])
    app.start()
    try:
        assert wait_until(lambda: len(received) >= 4, 20)
        restartable_mosquitto.stop()  # SIGTERM: the subscriber's session is saved
        assert app.pipeline.events_written > len(received) or wait_until(
            lambda: app.pipeline.events_written > len(received), 10
        )
        restartable_mosquitto.start()
    finally:
        assert app.wait() == 0
    assert wait_until(lambda: len(set(received)) == app.pipeline.events_written, 10)
    sub.stop()
    unique = list(dict.fromkeys(received))
    assert len(unique) == app.pipeline.events_written
    ids = list(dict.fromkeys(i for i, _ in unique))
    assert ids == sorted(ids)  # ids are minted in order: first sightings arrive in that order
    assert all([t for i2, t in unique if i2 == i] == ["new", "end"] for i in ids)


def test_sigterm_shuts_down_cleanly_with_offline(tmp_path: Path, broker_config: BrokerConfig) -> None:
    topics = NodeTopics("t", "term")
    statuses: list[bytes] = []
    sub = MqttClient(broker_config, "t-term-sub")
    sub.subscribe(topics.status, lambda m: statuses.append(m.payload))
    sub.start()
    assert sub.wait_connected(5)
    proc = subprocess.Popen(
        [
            *EDGE,
            "--source",
            "scene:builtin",
            "--broker",
            broker_config.address,
            "--site",
            "t",
            "--node",
            "term",
            "--outbox",
            str(tmp_path / "o.sqlite"),
            "--set",
            "pin_factory=mock",
            "--set",
            "outbox.drain_timeout_s=10",  # shutdown waits at most this for PUBACKs: within the 30 s below
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: statuses[-1:] == [b"online"], 30)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM: shutting down" in err
    assert wait_until(lambda: statuses[-1:] == [b"offline"], 5)
    sub.stop()


def wait_message(listener: Listener, topic: str, model: type[M], ok: Callable[[M], bool], timeout: float) -> M:
    """The first message on ``topic`` (parsed as ``model``) for which ``ok`` holds, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        message = parse(model, listener.wait_raw(topic, left).payload)
        if ok(message):
            return message
    raise TimeoutError(f"no matching message on {topic}")


def test_empty_folder_on_a_live_node_is_camera_down_in_state_and_stats(
    tmp_path: Path, broker_config: BrokerConfig, mock_pins: Any, models: tuple[Any, Any]
) -> None:
    """Issue 16 probe: a source that yields nothing left the node 'healthy' (camera_ok true at 0 fps)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = node_config(broker_config, tmp_path, source=str(empty))
    with running_node(cfg, mock_pins, models, broker_config) as (_app, listener):
        state = wait_message(listener, listener.topics.state, NodeState, lambda s: not s.camera_ok, 5)
        assert f"no images in folder {empty}" in (state.camera_error or "")
        stats = parse(NodeStats, listener.wait_raw(listener.topics.stats, 5).payload)
        assert not stats.camera_ok and stats.camera_error == state.camera_error


def test_a_source_that_stops_giving_frames_is_camera_down_within_the_stall_time(
    tmp_path: Path, broker_config: BrokerConfig, mock_pins: Any, models: tuple[Any, Any]
) -> None:
    """The simulated camera ends after 0.5 s: no frame for camera.stall_timeout_s (1 s) turns camera_ok false."""
    cfg = node_config(
        broker_config,
        tmp_path,
        source="scene:builtin",
        scene={"duration_s": 0.5},
        camera={"stall_timeout_s": 1.0},
        stats_interval_s=30,  # the state and an immediate stats message report it, not the periodic stats
    )
    with running_node(cfg, mock_pins, models, broker_config) as (app, listener):
        # the end (0.5 s) + the stall time (1 s) + one health check, with slack for a loaded machine
        state = wait_message(listener, listener.topics.state, NodeState, lambda s: not s.camera_ok, 1.5 + 4)
        error = state.camera_error or ""
        assert error.startswith("no frame for") and "(the source ended after" in error, error
        stats = wait_message(listener, listener.topics.stats, NodeStats, lambda s: not s.camera_ok, 2)
        assert (stats.camera_error or "").startswith("no frame for")
        assert app.capture.frames > 0


def test_missing_video_device_is_retried_and_reported(
    tmp_path: Path, broker_config: BrokerConfig, mock_pins: Any, models: tuple[Any, Any]
) -> None:
    """A /dev/ path is a camera: a missing one is retried with backoff, named in the retained state."""
    device = "/dev/video-maskwatch-missing"
    cfg = node_config(broker_config, tmp_path, source=device, camera={"retry_min_s": 0.1, "retry_max_s": 0.2})
    with running_node(cfg, mock_pins, models, broker_config) as (app, listener):
        state = wait_message(listener, listener.topics.state, NodeState, lambda s: not s.camera_ok, 5)
        assert f"cannot open camera '{device}'" in (state.camera_error or "")
        assert not app.capture.finished.is_set()  # still retrying
        answer = listener.command("detect", {"request_id": "r1", "enabled": False})
        assert answer.status == "ok"


@pytest.mark.parametrize("kind", ["device", "empty folder"])
def test_once_with_a_dead_source_exits_1_naming_the_reason(
    kind: str, tmp_path: Path, broker_config: BrokerConfig
) -> None:
    if kind == "device":
        source, reason = "/dev/video-maskwatch-missing", "cannot open camera '/dev/video-maskwatch-missing'"
    else:
        (tmp_path / "empty").mkdir()
        source, reason = str(tmp_path / "empty"), "no images in folder"
    run = subprocess.run(
        [
            *EDGE,
            "--once",
            "--source",
            source,
            "--broker",
            broker_config.address,
            "--site",
            "t",
            "--node",
            "dead",
            "--outbox",
            str(tmp_path / "o.sqlite"),
            "--set",
            "pin_factory=mock",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stderr[-2000:]
    assert f"source failed: {reason}" in run.stderr and "Traceback" not in run.stderr


def test_a_no_mask_verdict_on_a_weak_detection_is_dropped_and_a_mask_verdict_is_kept(
    tmp_path: Path, broker_config: BrokerConfig, models: tuple[Any, Any]
) -> None:
    from edge.capture.images import read_image
    from edge.delivery.outbox import Outbox
    from edge.pipeline import Pipeline
    from edge.state import NodeRuntime

    need(FACE_MASK)
    detector, classifier = models
    photos = {
        cls: [
            cv2.copyMakeBorder(read_image(p), 60, 60, 60, 60, cv2.BORDER_CONSTANT, value=(128, 128, 128))
            for p in sorted((FACE_MASK / cls).iterdir())[:12]
        ]
        for cls in ("with_mask", "without_mask")
    }
    seen: dict[float, dict[str, list[Any]]] = {}
    for needed in (0.0, 1.0):
        config = node_config(broker_config, tmp_path, min_no_mask_detector_score=needed)
        with Outbox(tmp_path / f"o{needed}.sqlite") as outbox:
            pipeline = Pipeline(config, detector, classifier, NodeRuntime("t", config.node, 0.5), outbox)
            seen[needed] = {
                cls: [o for image in images for o in pipeline.observe(image, 0.5)] for cls, images in photos.items()
            }

    def called(observations: list[Any], no_mask: bool) -> list[Any]:
        return [o for o in observations if o.p_no_mask is not None and (o.p_no_mask >= 0.5) == no_mask]

    bare = called(seen[0.0]["without_mask"], no_mask=True)
    assert len(bare) >= 6 and all(o.det_score < 1.0 for o in bare)  # bare faces called no mask
    assert not called(seen[1.0]["without_mask"], no_mask=True)  # no detection scores 1: every verdict dropped
    masked = called(seen[0.0]["with_mask"], no_mask=False)
    assert masked and len(called(seen[1.0]["with_mask"], no_mask=False)) == len(masked)  # mask verdicts stay
