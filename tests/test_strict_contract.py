"""Contract messages take JSON types as they are: no bool or string to number, no number to string, finite only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.services.commands import build_command
from shared.errors import ContractError
from shared.messages import DesiredConfig, Event, NodeStats, ServoCommand, ThresholdCommand, parse
from tests.test_messages import EVENT

STATS: dict[str, Any] = {
    "v": 1,
    "site": "hq",
    "node": "door-1",
    "ts": "2026-01-01T12:00:00Z",
    "fps": 9.5,
    "frames": 10,
    "camera_ok": True,
}


def encode(data: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**data, **changes}).encode()


def test_valid_payloads_still_parse() -> None:
    event = parse(Event, encode(EVENT))
    assert (event.score, event.box, event.ts.year) == (0.93, (10, 20, 64, 64), 2026)
    assert parse(Event, encode(EVENT, score=1, angle=45)).score == 1.0
    assert parse(ThresholdCommand, b'{"request_id": "r", "value": 0.4}').value == 0.4
    assert parse(ServoCommand, b'{"request_id": "r", "angle": 45}').angle == 45.0
    assert parse(ServoCommand, b'{"request_id": "r", "mode": "sweep", "dwell_s": 1}').mode == "sweep"
    assert build_command("servo", {"mode": "hold", "angle": -10}, "r").angle == -10.0
    assert build_command("threshold", {"value": 1}, "r").value == 1.0
    assert DesiredConfig.model_validate({"threshold": 0.3, "servo_mode": "hold", "detect": False}).threshold == 0.3


@pytest.mark.parametrize("score", [True, False, "0.9", "1"])
def test_event_score_must_be_a_number(score: Any) -> None:
    with pytest.raises(ContractError) as info:
        parse(Event, encode(EVENT, score=score))
    assert info.value.field == "score"


@pytest.mark.parametrize(
    "field,value",
    [
        ("box", [10, 20, "64", 64]),
        ("box", [10, 20, True, 64]),
        ("box", [10, 20, 64.5, 64]),
        ("angle", "45"),
        ("angle", True),
        ("snapshot", 1),
        ("snapshot", "true"),
        ("id", 17),
        ("site", 1),
    ],
)
def test_event_fields_are_not_coerced(field: str, value: Any) -> None:
    with pytest.raises(ContractError) as info:
        parse(Event, encode(EVENT, **{field: value}))
    assert info.value.field is not None and info.value.field.startswith(field)


@pytest.mark.parametrize(
    "field,value", [("fps", "9.5"), ("frames", True), ("frames", "10"), ("camera_ok", 1), ("stage_ms", {"infer": "3"})]
)
def test_stats_fields_are_not_coerced(field: str, value: Any) -> None:
    with pytest.raises(ContractError):
        parse(NodeStats, encode(STATS, **{field: value}))


@pytest.mark.parametrize("value", [True, False, "0.5", "1"])
def test_threshold_value_must_be_a_number_on_every_path(value: Any) -> None:
    with pytest.raises(ContractError):
        parse(ThresholdCommand, encode({"request_id": "r"}, value=value))
    with pytest.raises(ContractError) as info:
        build_command("threshold", {"value": value}, "r")
    assert info.value.field == "value"
    with pytest.raises(ContractError):
        parse(DesiredConfig, encode({}, threshold=value))
    with pytest.raises(ValueError):
        DesiredConfig.model_validate({"threshold": value})


@pytest.mark.parametrize("angle", ["45", True, False])
def test_servo_angle_must_be_a_number_on_every_path(angle: Any) -> None:
    with pytest.raises(ContractError):
        parse(ServoCommand, encode({"request_id": "r"}, angle=angle))
    with pytest.raises(ContractError) as info:
        build_command("servo", {"angle": angle}, "r")
    assert info.value.field == "angle"
    with pytest.raises(ValueError):
        DesiredConfig.model_validate({"servo_angle": angle})


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_rejected(number: float) -> None:
    # json.dumps writes NaN/Infinity, which json.loads (and so parse) reads back as floats.
    with pytest.raises(ContractError):
        parse(Event, encode(EVENT, score=number))
    with pytest.raises(ContractError):
        parse(Event, encode(EVENT, angle=number))
    with pytest.raises(ContractError):
        parse(NodeStats, encode(STATS, fps=number))
    with pytest.raises(ContractError):
        build_command("servo", {"angle": number}, "r")
    with pytest.raises(ContractError):
        build_command("threshold", {"value": number}, "r")


def test_detect_enabled_must_be_a_boolean() -> None:
    with pytest.raises(ContractError):
        build_command("detect", {"enabled": 1}, "r")
    with pytest.raises(ContractError):
        parse(DesiredConfig, b'{"detect": "false"}')
    assert build_command("detect", {"enabled": False}, "r").enabled is False
