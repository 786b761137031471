"""Every JSON example in docs/mqtt.md parses with the model its code block names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.messages import MESSAGES, parse

DOC = Path(__file__).resolve().parents[1] / "docs" / "mqtt.md"
EXAMPLES = re.findall(r"```json ([a-z-]+)\n(.*?)```", DOC.read_text(), re.S)


def test_every_message_has_an_example() -> None:
    assert {name for name, _ in EXAMPLES} == set(MESSAGES)


@pytest.mark.parametrize("name,body", EXAMPLES)
def test_example_parses(name: str, body: str) -> None:
    message = parse(MESSAGES[name], body.encode())
    assert message.v == 1
