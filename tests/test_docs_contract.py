"""Every JSON example in docs/mqtt.md parses with the model its code block names and fits its published schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from shared.messages import MESSAGES, parse

DOC = Path(__file__).resolve().parents[1] / "docs" / "mqtt.md"
SCHEMAS = DOC.parent / "schemas"
EXAMPLES = re.findall(r"```json ([a-z-]+)\n(.*?)```", DOC.read_text(), re.S)


def test_every_message_has_an_example() -> None:
    assert {name for name, _ in EXAMPLES} == set(MESSAGES)


@pytest.mark.parametrize("name,body", EXAMPLES)
def test_example_parses(name: str, body: str) -> None:
    message = parse(MESSAGES[name], body.encode())
    assert message.v == 1


def schema_validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS / f"{name}.json").read_text()))


@pytest.mark.parametrize("name,body", EXAMPLES)
def test_example_fits_its_published_schema(name: str, body: str) -> None:
    errors = [error.message for error in schema_validator(name).iter_errors(json.loads(body))]
    assert errors == []


EVENT_HEAD = {
    "v": 1,
    "type": "new",
    "id": "hq-door-1-0001",
    "site": "hq",
    "node": "door-1",
    "ts": "2026-01-01T12:00:00Z",
}
BAD_PAYLOADS: list[tuple[str, dict[str, Any]]] = [
    ("event", {**EVENT_HEAD, "label": "maybe", "score": "abc", "box": "x"}),
    ("event", {**EVENT_HEAD, "label": "mask", "score": 1.5, "box": [0, 0, 10, 10]}),
    ("event", {**EVENT_HEAD, "label": "mask", "score": 0.5, "box": [0, 0, 10]}),
    ("event", {**EVENT_HEAD, "label": "mask", "score": 0.5}),
    ("event", {**EVENT_HEAD, "label": "mask", "score": 0.5, "box": [0, 0, 10, 10], "colour": "red"}),
    ("cmd-threshold", {"request_id": "r", "value": True}),
    ("cmd-threshold", {"request_id": "r", "value": "0.5"}),
    ("cmd-servo", {"request_id": "r", "angle": "45"}),
    ("cmd-servo", {"request_id": "r", "mode": "spin"}),
    ("cmd-detect", {"request_id": "r", "enabled": "yes"}),
    ("event", {**EVENT_HEAD, "label": "mask", "score": 0.5, "box": [0, 0, 10, 10], "quiet": 1}),
    ("cmd-schedule", {"request_id": "r", "schedule": {"timezone": "UTC", "park_deg": True}}),
    ("cmd-schedule", {"request_id": "r", "schedule": {"timezone": "UTC", "park_deg": 181}}),
    (
        "cmd-schedule",
        {"request_id": "r", "schedule": {"timezone": "UTC", "open": [{"start": "25:00", "end": "01:00"}]}},
    ),
    (
        "cmd-schedule",
        {
            "request_id": "r",
            "schedule": {"timezone": "UTC", "quiet": [{"days": ["monday"], "start": "01:00", "end": "02:00"}]},
        },
    ),
    ("cmd-schedule", {"request_id": "r", "schedule": {"open": []}}),
    ("desired", {"threshold": 2}),
    ("desired", {"schedule": {"timezone": "UTC", "lunch": []}}),
    ("stats", {"site": "hq", "node": "door-1", "ts": "2026-01-01T12:00:00Z", "fps": -1}),
    ("ack", {"hub": "h", "ts": "2026-01-01T12:00:00Z", "outbox_id": "0123456789abcdef", "seqs": [[0, 3]]}),
]


@pytest.mark.parametrize("name,data", BAD_PAYLOADS)
def test_bad_payload_fails_its_published_schema(name: str, data: dict[str, Any]) -> None:
    assert not schema_validator(name).is_valid(data)
