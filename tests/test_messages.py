"""Every schema: valid payloads parse, invalid ones raise ContractError naming field and reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import ContractError
from shared.messages import (
    COMMANDS,
    Alert,
    CommandResponse,
    DesiredConfig,
    Event,
    NodeState,
    NodeStats,
    ServoCommand,
    export_schemas,
    parse,
)
from shared.vocabulary import SERVO_RANGE_DEG

EVENT: dict[str, Any] = {
    "v": 1,
    "type": "new",
    "id": "hq-door-1-0001",
    "site": "hq",
    "node": "door-1",
    "ts": "2026-01-01T12:00:00Z",
    "label": "no_mask",
    "score": 0.93,
    "box": [10, 20, 64, 64],
    "angle": -30.0,
    "frame": 17,
    "track": {"frames": 5, "first_seen": "2026-01-01T11:59:59.5Z", "last_seen": "2026-01-01T12:00:00Z"},
}


def payload(**changes: Any) -> bytes:
    data = dict(EVENT)
    for key, value in changes.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return json.dumps(data).encode()


def test_valid_event_round_trip() -> None:
    event = parse(Event, payload())
    assert event.label == "no_mask" and event.box == (10, 20, 64, 64)
    again = parse(Event, event.to_json())
    assert again == event
    assert json.loads(event.to_json())["ts"] == "2026-01-01T12:00:00Z"


def test_frame_may_be_a_file_name() -> None:
    assert parse(Event, payload(frame="img_001.jpg")).frame == "img_001.jpg"


@pytest.mark.parametrize(
    "raw,field,reason,text",
    [
        (b"{not json", None, "json", "invalid JSON"),
        (b"\xff\xfe", None, "json", "invalid JSON"),
        (b"[1, 2]", None, "schema", "expected a JSON object"),
        (payload(v=2), "v", "version", "unsupported schema version v=2"),
        (payload(label="maybe"), "label", "schema", "label: Input should be 'mask' or 'no_mask'"),
        (payload(score=1.5), "score", "schema", "score: Input should be less than or equal to 1"),
        (payload(score="high"), "score", "schema", "score: Input should be a valid number"),
        (payload(box=[1, 2, 3]), "box.3", "schema", "box.3: Field required"),
        (payload(box=[1, 2, 0, 5]), "box", "schema", "box: Value error, box width and height must be positive"),
        (payload(id=...), "id", "schema", "id: Field required"),
        (payload(site="Bad Site"), "site", "schema", "site: String should match pattern"),
        (payload(ts="yesterday"), "ts", "schema", "ts: Input should be a valid datetime"),
        (payload(ts="2026-01-01T12:00:00"), "ts", "schema", "ts: Input should have timezone info"),
        (payload(type="start"), "type", "schema", "type: Input should be 'new', 'update' or 'end'"),
        (payload(extra=1), "extra", "schema", "extra: Extra inputs are not permitted"),
        (b"{" + b" " * 70000 + b"}", None, "oversize", "exceeds"),
        (b"[" * 5000 + b"]" * 5000, None, None, ""),
    ],
)
def test_invalid_event_table(raw: bytes, field: str | None, reason: str | None, text: str) -> None:
    with pytest.raises(ContractError) as info:
        parse(Event, raw)
    if reason is not None:
        assert info.value.reason == reason
        assert info.value.field == field
        assert text in str(info.value)


def test_servo_command_rules() -> None:
    assert parse(ServoCommand, b'{"request_id": "r1", "angle": 45}').angle == 45
    assert parse(ServoCommand, b'{"request_id": "r1", "mode": "sweep", "sweep_step_deg": 10}').mode == "sweep"
    with pytest.raises(ContractError, match="give 'angle' or 'mode'"):
        parse(ServoCommand, b'{"request_id": "r1"}')
    with pytest.raises(ContractError, match="'angle' goes with mode 'hold' only"):
        parse(ServoCommand, b'{"request_id": "r1", "angle": 3, "mode": "sweep"}')
    with pytest.raises(ContractError) as info:
        parse(ServoCommand, b'{"request_id": "r1", "mode": "spin"}')
    assert info.value.field == "mode"
    with pytest.raises(ContractError) as info:
        parse(ServoCommand, b'{"angle": 3}')
    assert info.value.field == "request_id"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"request_id": "r1", "angle": 1e308}', "angle"),
        (b'{"request_id": "r1", "angle": 180.5}', "angle"),
        (b'{"request_id": "r1", "mode": "sweep", "sweep_min_deg": -500}', "sweep_min_deg"),
        (b'{"request_id": "r1", "mode": "sweep", "sweep_max_deg": "90"}', "sweep_max_deg"),
    ],
)
def test_servo_angles_outside_the_servo_range_are_refused_not_clamped(payload: bytes, field: str) -> None:
    """An angle beyond SERVO_RANGE_DEG is a mistake (a typo, a unit mix-up): refused with the range named, while
    one within it but beyond a node's own limits is still clamped by that node."""
    with pytest.raises(ContractError) as info:
        parse(ServoCommand, payload)
    assert info.value.field == field
    assert parse(ServoCommand, b'{"request_id": "r1", "angle": -180}').angle == SERVO_RANGE_DEG[0]


@pytest.mark.parametrize(
    "name,body",
    [
        ("threshold", {"value": 0.4}),
        ("detect", {"enabled": False}),
        ("snapshot", {}),
        ("config", {}),
        ("servo", {"mode": "track"}),
    ],
)
def test_every_command_parses(name: str, body: dict[str, Any]) -> None:
    cmd = parse(COMMANDS[name], json.dumps({"request_id": "x", **body}).encode())
    assert cmd.request_id == "x"


def test_threshold_out_of_range() -> None:
    with pytest.raises(ContractError) as info:
        parse(COMMANDS["threshold"], b'{"request_id": "x", "value": -0.1}')
    assert info.value.field == "value"


def test_other_messages() -> None:
    state = parse(
        NodeState,
        json.dumps(
            {
                "site": "hq",
                "node": "n1",
                "ts": "2026-01-01T00:00:00Z",
                "threshold": 0.5,
                "detect": True,
                "model": "mask_classifier_int8@abc",
                "servo": {"angle": None, "mode": "off", "min_deg": -90, "max_deg": 90},
            }
        ),
    )
    assert state.servo.angle is None
    stats = parse(NodeStats, b'{"site": "hq", "node": "n1", "ts": "2026-01-01T00:00:00Z", "fps": 12.5}')
    assert stats.outbox_depth == 0
    ok = parse(
        CommandResponse,
        b'{"request_id": "r", "status": "ok", "site": "hq", "node": "n1",'
        b' "ts": "2026-01-01T00:00:00Z", "value": {"angle": 90, "clamped": true}}',
    )
    assert ok.value["clamped"] is True
    with pytest.raises(ContractError, match="an error response needs 'error'"):
        parse(
            CommandResponse,
            b'{"request_id": "r", "status": "error", "site": "hq", "node": "n1", "ts": "2026-01-01T00:00:00Z"}',
        )
    assert parse(DesiredConfig, b'{"threshold": 0.6}').threshold == 0.6
    alert = parse(
        Alert,
        b'{"kind": "no_mask", "site": "hq", "node": "n1", "ts": "2026-01-01T00:00:00Z",'
        b' "event_id": "e1", "score": 0.9}',
    )
    assert alert.kind == "no_mask"


@given(st.binary(max_size=300))
def test_random_bytes_never_escape_as_other_errors(raw: bytes) -> None:
    """Any bytes give either a valid Event or a ContractError with a known reason."""
    try:
        assert isinstance(parse(Event, raw), Event)
    except ContractError as exc:
        assert exc.reason in {"json", "schema", "version", "oversize"}


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
        max_leaves=20,
    )
)
def test_random_json_never_escapes(value: Any) -> None:
    for model in (Event, NodeState, NodeStats, CommandResponse, DesiredConfig, Alert, *COMMANDS.values()):
        try:
            assert isinstance(parse(model, json.dumps(value)), model)
        except ContractError as exc:
            assert exc.reason in {"json", "schema", "version"}


def test_schemas_exported_and_current() -> None:
    """docs/schemas/ holds the JSON Schema of every message, as generated from the code."""
    from pathlib import Path

    schemas = export_schemas()
    folder = Path(__file__).resolve().parents[1] / "docs" / "schemas"
    for name, schema in schemas.items():
        path = folder / f"{name}.json"
        assert path.exists(), f"run 'python -m shared.schemas' to write {path}"
        assert json.loads(path.read_text()) == schema, f"{path} is stale: run 'python -m shared.schemas'"
