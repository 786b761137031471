"""Every JSON example in docs/mqtt.md parses with the model its code block names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.messages import (
    COMMANDS,
    Alert,
    CommandResponse,
    DesiredConfig,
    Event,
    NodeState,
    NodeStats,
    NodeSummary,
    parse,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "mqtt.md"
MODELS = {"event": Event, "state": NodeState, "stats": NodeStats, "response": CommandResponse,
          "desired": DesiredConfig, "alert": Alert, "summary": NodeSummary,
          **{f"cmd-{k}": v for k, v in COMMANDS.items()}}
EXAMPLES = re.findall(r"```json ([a-z-]+)\n(.*?)```", DOC.read_text(), re.S)


def test_every_message_has_an_example() -> None:
    assert {name for name, _ in EXAMPLES} == set(MODELS)


@pytest.mark.parametrize("name,body", EXAMPLES)
def test_example_parses(name: str, body: str) -> None:
    message = parse(MODELS[name], body.encode())
    assert message.v == 1
