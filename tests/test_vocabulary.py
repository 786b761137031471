"""The shared vocabulary: command list, sendable commands, desired changes, edge handlers, profiles, decision."""

from __future__ import annotations

import pytest

from edge.commands import NodeCommands
from edge.scheduler import Scheduler
from edge.state import NodeRuntime
from shared.errors import ConfigError
from shared.messages import (
    COMMANDS,
    SENDABLE_COMMANDS,
    DetectCommand,
    SendableCommand,
    ServoCommand,
    ThresholdCommand,
)
from shared.vocabulary import (
    DEFAULT_OPERATING_POINTS,
    OperatingPoint,
    Profile,
    check_threshold,
    decide,
)


def test_command_names_sendable_set_and_enum_come_from_the_classes() -> None:
    assert list(COMMANDS) == ["servo", "threshold", "detect", "schedule", "snapshot", "config", "model"]
    assert all(COMMANDS[name].name == name for name in COMMANDS)
    assert SENDABLE_COMMANDS == ("servo", "threshold", "detect", "schedule", "snapshot")
    assert [member.value for member in SendableCommand] == list(SENDABLE_COMMANDS)


def test_every_command_has_an_edge_handler() -> None:
    runtime = NodeRuntime(site="s", node="n", threshold=0.5)
    commands = NodeCommands(
        runtime,
        servo=None,
        planner=None,
        scheduler=Scheduler(runtime),
        snapshot=lambda rid: {},
        config=lambda: {},
    )
    assert set(commands.table()) == set(COMMANDS)


def test_each_command_declares_its_desired_changes() -> None:
    assert ThresholdCommand(request_id="r", value=0.3).desired_changes() == {"threshold": 0.3}
    assert DetectCommand(request_id="r", enabled=False).desired_changes() == {"detect": False}
    assert ServoCommand(request_id="r", angle=10).desired_changes() == {"servo_mode": "hold", "servo_angle": 10}
    assert ServoCommand(request_id="r", mode="sweep").desired_changes() == {"servo_mode": "sweep"}
    assert COMMANDS["snapshot"](request_id="r").desired_changes() == {}


def test_decision_and_profile_defaults() -> None:
    assert decide(0.5, 0.5) == ("no_mask", 0.5)
    assert decide(0.25, 0.5) == ("mask", 0.75)
    for profile in Profile:
        assert Profile(profile.value).default_point == DEFAULT_OPERATING_POINTS[profile]
        assert OperatingPoint.of(profile.default_point._asdict() | {"other": 1}) == profile.default_point
    assert check_threshold(0.0) == 0.0 and check_threshold(1.0) == 1.0
    for bad in (-0.01, 1.01, float("nan")):
        with pytest.raises(ConfigError, match="between 0 and 1"):
            check_threshold(bad)
