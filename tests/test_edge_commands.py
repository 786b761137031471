"""Remote commands over the real broker: one answer each, servo PWM on mock pins, indicator, detect, snapshot."""

from __future__ import annotations

import json
import logging
import queue
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.commands import Dispatcher
from shared.config import BrokerConfig
from shared.messages import Command, CommandResponse, DesiredConfig, NodeState, parse
from shared.mqtt import MqttClient, Received
from shared.topics import NodeTopics
from tests import edge_node
from tests.edge_node import node_config, running_node
from tests.polling import wait_until
from tests.test_edge_servo import expected_duty

mock_pins = edge_node.mock_pins  # fixture
models = edge_node.models  # fixture


@pytest.fixture
def node(tmp_path: Path, broker_config: BrokerConfig, mock_pins: Any, models: tuple[Any, Any]) -> Any:
    """A node watching the built-in scene, servo held at 0 (an empty part of the panorama)."""
    cfg = node_config(
        broker_config,
        tmp_path,
        source="scene:builtin",
        servo={"mode": "hold", "start_deg": 0, "speed_dps": 600},
        broker={"password": "s3cret-pass", "username": "edge"},
    )
    with running_node(cfg, mock_pins, models, broker_config) as (app, listener):
        yield app, listener, mock_pins


def test_servo_angle_moves_the_duty_cycle_and_out_of_range_is_clamped(node: Any) -> None:
    app, listener, pins = node
    pin = pins.pin(app.config.servo.pin)
    answer = listener.command("servo", {"request_id": "a1", "angle": 45})
    assert (answer.status, answer.request_id) == ("ok", "a1")
    assert answer.value == {"mode": "hold", "angle": 45.0, "clamped": False}
    assert wait_until(lambda: abs(pin.state - expected_duty(app.config.servo, 45)) < 1e-6, 3)
    answer = listener.command("servo", {"request_id": "a2", "angle": 135})
    assert answer.status == "ok" and answer.value["clamped"] is True and answer.value["angle"] == 90.0
    assert wait_until(lambda: abs(pin.state - expected_duty(app.config.servo, 90)) < 1e-6, 3)
    state = parse(NodeState, listener.wait_raw(listener.topics.state, 3).payload)
    assert state.servo.mode == "hold"
    answer = listener.command("servo", {"request_id": "a3", "mode": "off"})
    assert answer.status == "ok"
    assert wait_until(lambda: pin.state == 0, 3)  # detached: no pulses


@pytest.mark.parametrize(
    ("name", "payload", "rid", "reason"),
    [
        ("threshold", b"{not json", None, "invalid JSON"),
        ("threshold", b'{"request_id": "b2", "value": 0.5, "colour": "red"}', "b2", "colour"),
        ("threshold", b'{"request_id": "b3", "value": 1.5}', "b3", "value"),
        ("servo", b'{"request_id": "b4"}', "b4", "angle"),
        ("reboot", b'{"request_id": "b5"}', "b5", "unknown command 'reboot'"),
        ("detect", b'{"request_id": "b6", "enabled": true, "v": 2}', "b6", "version"),
    ],
)
def test_bad_commands_get_one_error_answer(node: Any, name: str, payload: bytes, rid: str | None, reason: str) -> None:
    _app, listener, _pins = node
    answer = listener.command(name, payload)
    assert answer.status == "error" and answer.request_id == rid
    assert reason in (answer.error or "")
    with pytest.raises(queue.Empty):
        listener.responses.get(timeout=0.3)  # exactly one answer
    ok = listener.command("threshold", {"request_id": "after", "value": 0.6})
    assert ok.status == "ok"  # the node goes on


def test_a_flood_of_bad_commands_logs_a_few_lines_and_counts_all(node: Any, caplog: pytest.LogCaptureFixture) -> None:
    app, listener, _pins = node
    with caplog.at_level(logging.WARNING, logger="edge.commands"):
        for n in range(300):
            listener.client.publish(listener.topics.cmd("threshold"), b"{bad %d" % n, qos=1)
        answers = [listener.responses.get(timeout=10) for _ in range(300)]  # one error answer each
    assert {answer.status for answer in answers} == {"error"} and app.dispatcher.rejected["json"] == 300
    lines = [r.getMessage() for r in caplog.records if r.name == "edge.commands"]
    assert len(lines) == 5 and all("invalid threshold command" in line for line in lines)
    assert listener.command("threshold", {"request_id": "after", "value": 0.6}).status == "ok"


def test_site_wide_command_and_config_read_back_without_secrets(node: Any) -> None:
    app, listener, _pins = node
    answer = listener.command("threshold", {"request_id": "c1", "value": 0.3}, site_wide=True)
    assert answer.status == "ok" and answer.node == app.config.node and app.runtime.threshold == 0.3
    config = listener.command("config", {"request_id": "c2"})
    assert config.status == "ok"
    assert config.value["broker"]["password"] == "***"
    assert "s3cret" not in str(config.value)
    assert config.value["node"] == app.config.node


def test_indicator_follows_the_faces_in_view_and_detect_off_stops_events_not_answers(node: Any) -> None:
    app, listener, pins = node
    blue, red = pins.pin(app.config.indicator.blue_pin), pins.pin(app.config.indicator.red_pin)
    assert (blue.state, red.state) == (False, False)
    listener.command("servo", {"request_id": "d1", "angle": -60})  # the unmasked astronaut
    assert wait_until(lambda: bool(red.state) and not blue.state, 5)
    new = listener.events_until(lambda evs: any(e.type == "new" for e in evs), 5)
    assert [e.label for e in new if e.type == "new"] == ["no_mask"]
    listener.command("servo", {"request_id": "d2", "angle": 60})  # the masked one
    assert wait_until(lambda: bool(blue.state) and not red.state, 5)
    answer = listener.command("detect", {"request_id": "d3", "enabled": False})
    assert answer.status == "ok" and answer.value == {"detect": False}
    drained = listener.events_until(lambda evs: any(e.type == "end" and e.label == "mask" for e in evs), 5)
    assert any(e.type == "end" and e.label == "mask" for e in drained)  # the visit open at the pause is closed
    wait_until(lambda: False, 0.3)
    while not listener.events.empty():
        listener.events.get()
    listener.command("servo", {"request_id": "d4", "angle": -60})
    assert listener.command("threshold", {"request_id": "d5", "value": 0.5}).status == "ok"
    assert listener.events_until(lambda evs: bool(evs), 1.5) == []  # no events while paused
    assert (blue.state, red.state) == (False, False)


def test_snapshot_returns_a_decodable_jpeg(node: Any) -> None:
    app, listener, _pins = node
    assert wait_until(lambda: app.pipeline.latest().frame is not None, 5)
    answer = listener.command("snapshot", {"request_id": "e1"})
    assert answer.status == "ok" and answer.value["topic"] == listener.topics.snapshot("e1")
    message = listener.wait_raw(listener.topics.snapshot("e1"), 5)
    image = cv2.imdecode(np.frombuffer(message.payload, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (app.config.scene.height, app.config.scene.width)
    assert answer.value["bytes"] == len(message.payload)
    bad = listener.command("snapshot", {"request_id": "no spaces/or slashes"})
    assert bad.status == "error" and "request_id" in (bad.error or "")


def test_retained_desired_config_is_applied_on_connect(
    tmp_path: Path, broker_config: BrokerConfig, mock_pins: Any, models: tuple[Any, Any]
) -> None:
    cfg = node_config(broker_config, tmp_path, source="scene:builtin", servo={"mode": "sweep"})
    hub = MqttClient(broker_config, "t-hub-desired")
    hub.start()
    assert hub.wait_connected(5)
    topics = NodeTopics(cfg.site, cfg.node)
    hub.publish(
        topics.desired, DesiredConfig(threshold=0.8, servo_mode="hold", servo_angle=170).to_json(), qos=1, retain=True
    ).wait_for_publish(5)
    try:
        with running_node(cfg, mock_pins, models, broker_config) as (app, _listener):
            assert wait_until(lambda: app.runtime.threshold == 0.8, 5)
            assert app.planner.mode == "hold" and app.planner.hold_deg == 90.0
            state = app.runtime.state()
            assert state.threshold == 0.8 and state.servo.mode == "hold"
    finally:
        hub.publish(topics.desired, b"", qos=1, retain=True).wait_for_publish(5)
        hub.stop()


def test_a_handler_that_fails_unexpectedly_still_answers_once_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in a handler used to leave the sender waiting for its timeout; now it gets an error answer."""
    sent: list[tuple[str, bytes]] = []
    topics = NodeTopics("s", "n1")

    def broken(command: Command) -> dict[str, Any]:
        raise RuntimeError("servo driver lost")

    dispatcher = Dispatcher(topics, {"servo": broken}, lambda topic, payload: sent.append((topic, payload)))
    payload = b'{"request_id": "r-1", "angle": 10}'
    with caplog.at_level(logging.ERROR, logger="edge.commands"):
        answer = dispatcher.handle(Received(topics.cmd("servo"), payload, 1, False, 1))
    assert answer is not None and answer.status == "error" and answer.request_id == "r-1"
    assert answer.error == "servo failed on the node: RuntimeError: servo driver lost"
    [(topic, published)] = sent
    assert topic == topics.response("servo") and parse(CommandResponse, published) == answer
    assert dispatcher.rejected["failed"] == 1
    assert "Traceback" in caplog.text  # the bug is logged with its stack for the developer


def test_a_model_push_runs_apart_and_the_other_commands_are_answered_meanwhile() -> None:
    """A model push may wait minutes (its chunks, its probation): it used to hold the commands thread, so a servo
    or threshold command sent meanwhile timed out. Now it runs in a thread of its own, one push at a time."""
    sent: queue.Queue[tuple[str, CommandResponse]] = queue.Queue()
    topics = NodeTopics("s", "n1")
    release = threading.Event()

    def model(command: Command) -> dict[str, Any]:
        release.wait(10)  # a push on probation
        return {"model": "new"}

    def threshold(command: Command) -> dict[str, Any]:
        return {"threshold": 0.5}

    def publish(topic: str, payload: bytes) -> None:
        sent.put((topic, parse(CommandResponse, payload)))

    dispatcher = Dispatcher(topics, {"model": model, "threshold": threshold}, publish)
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    push = {"model": "new", "sha256": "0" * 64, "size": 10, "probation_s": 0}
    try:
        dispatcher.receive(
            Received(topics.cmd("model"), json.dumps({"request_id": "m-1", **push}).encode(), 1, False, 1)
        )
        dispatcher.receive(Received(topics.cmd("threshold"), b'{"request_id": "t-1", "value": 0.5}', 1, False, 1))
        dispatcher.receive(
            Received(topics.cmd("model"), json.dumps({"request_id": "m-2", **push}).encode(), 1, False, 1)
        )
        answers = [sent.get(timeout=5) for _ in range(2)]
        assert [(topic, a.request_id, a.status) for topic, a in answers] == [
            (topics.response("threshold"), "t-1", "ok"),
            (topics.response("model"), "m-2", "error"),
        ]
        assert "(m-1) is still running" in (answers[1][1].error or "") and dispatcher.rejected["busy"] == 1
        release.set()
        topic, done = sent.get(timeout=5)
        assert (topic, done.request_id, done.status, done.value) == (
            topics.response("model"),
            "m-1",
            "ok",
            {"model": "new"},
        )
    finally:
        release.set()
        stop.set()
        thread.join(2)
