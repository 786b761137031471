"""Helpers and fixtures of the edge tests: mock pins, the real models, a node on the real broker, a listener."""

from __future__ import annotations

import json
import queue
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from edge.config import EdgeConfig, load_edge_config
from shared.config import BrokerConfig
from shared.messages import CommandResponse, Event, parse
from shared.mqtt import MqttClient, Received
from shared.topics import NodeTopics

BUILTIN_SCENE = Path(__file__).resolve().parents[1] / "edge" / "scene"


@pytest.fixture
def mock_pins() -> Iterator[Any]:
    """gpiozero's mock pin factory with PWM pins, reset after the test (as gpiozero's own tests do)."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    factory = MockFactory(pin_class=MockPWMPin)
    yield factory
    factory.reset()


@pytest.fixture(scope="module")
def models() -> tuple[Any, Any]:
    """The real near-profile detector and the packaged int8 classifier (loaded once per module)."""
    from edge.vision.classifier import MaskClassifier
    from edge.vision.detector import create_detector

    return create_detector("near", num_threads=1), MaskClassifier(num_threads=1)


def node_config(broker_config: BrokerConfig, tmp_path: Path, **overrides: Any) -> EdgeConfig:
    """A node config for tests: the given broker, an outbox in ``tmp_path``, short intervals."""
    tree: dict[str, Any] = {
        "site": "t",
        "node": f"n{uuid.uuid4().hex[:6]}",
        "broker": {
            "host": broker_config.host,
            "port": broker_config.port,
            "keepalive_s": 10,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
        },
        "outbox": {"path": str(tmp_path / "outbox.sqlite"), "drain_timeout_s": 10},
        "stats_interval_s": 1.0,
        "pin_factory": "mock",
        "delivery": "broker",  # no hub: the PUBACK delivers
        "tracker": {"confirm_frames": 2, "end_frames": 3},
        "scene": {"fps": 10},
    }
    return load_edge_config(None, _merge(tree, overrides))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_scene(folder: Path, faces: list[tuple[Path, float, str]]) -> Path:
    """A scene folder with ``faces`` as (image, angle, label); returns it (use ``scene:<folder>``)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["faces:"]
    for i, (image, angle, label) in enumerate(faces):
        name = f"face{i}{image.suffix}"
        shutil.copy(image, folder / name)
        lines.append(f"  - {{file: {name}, angle_deg: {angle}, label: {label}}}")
    (folder / "scene.yaml").write_text("\n".join(lines) + "\n")
    return folder


class Listener:
    """A hub-side client on the real broker: collects one node's events, answers, snapshots and states."""

    def __init__(self, broker: BrokerConfig, topics: NodeTopics) -> None:
        self.topics = topics
        self.events: queue.Queue[Event] = queue.Queue()
        self.responses: queue.Queue[CommandResponse] = queue.Queue()
        self.raw: queue.Queue[Received] = queue.Queue()
        self.client = MqttClient(broker, f"listener-{uuid.uuid4().hex[:8]}")
        self.client.subscribe(f"{topics.base}/#", self._route)  # one filter: overlapping ones get copies
        self.client.start()
        assert self.client.wait_connected(5)

    def _route(self, message: Received) -> None:
        if message.topic == self.topics.events:
            self.events.put(parse(Event, message.payload))
        elif "/response/" in message.topic:
            self.responses.put(parse(CommandResponse, message.payload))
        self.raw.put(message)

    def command(
        self, name: str, payload: dict[str, Any] | bytes, *, site_wide: bool = False, timeout: float = 5.0
    ) -> CommandResponse:
        """Send a command and return its one answer."""
        from shared.topics import site_command

        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        topic = site_command(self.topics.site, name) if site_wide else self.topics.cmd(name)
        self.client.publish(topic, data, qos=1)
        return self.responses.get(timeout=timeout)

    def events_until(self, done: Callable[[list[Event]], bool], timeout: float) -> list[Event]:
        """Collect events until ``done(events)`` or ``timeout``; return them."""
        got: list[Event] = []
        deadline = time.monotonic() + timeout
        while not done(got) and time.monotonic() < deadline:
            with suppress(queue.Empty):
                got.append(self.events.get(timeout=0.1))
        return got

    def wait_raw(self, topic: str, timeout: float = 5.0) -> Received:
        """The next message on exactly ``topic``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.raw.get(timeout=0.1)
            except queue.Empty:
                continue
            if msg.topic == topic:
                return msg
        raise TimeoutError(f"nothing on {topic}")

    def close(self) -> None:
        self.client.stop()


@contextmanager
def running_node(
    config: EdgeConfig, pins: Any, models: tuple[Any, Any], broker: BrokerConfig
) -> Iterator[tuple[Any, Listener]]:
    """An in-process EdgeApp (mock pins, real models) and a listener, both on the real broker."""
    from edge.app import EdgeApp

    listener = Listener(broker, NodeTopics(config.site, config.node))
    app = EdgeApp(config, pin_factory=pins, detector=models[0], classifier=models[1])
    app.start()
    try:
        assert app.client.wait_connected(5)
        listener.wait_raw(listener.topics.state, 5)  # sent after the node's SUBSCRIBEs: commands now reach it
        yield app, listener
    finally:
        app.close()
        listener.close()
