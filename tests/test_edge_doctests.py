"""The examples in the edge modules' docstrings run (on mock pins and in-memory SQLite)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "edge.vision.tracker",
        "edge.delivery.outbox",
        "edge.delivery.acks",
        "edge.devices.servo",
        "edge.devices.indicator",
        "edge.delivery.stats",
        "shared.vocabulary",
        "shared.logcap",
        "hub.views",
        "shared.schedule",
        "shared.shutdown",
    ],
)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
