"""Schedules (issue 18): the evaluator on a frozen clock across window edges and DST changes, the edge's
:class:`Scheduler` on mock pins, and a live node on the real broker applying ``cmd/schedule``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.commands import NodeCommands
from edge.config import ServoConfig, load_edge_config
from edge.devices.servo import PanServo, ServoPlanner
from edge.scheduler import Scheduler
from edge.state import NodeRuntime
from shared.config import BrokerConfig
from shared.errors import ConfigError, ContractError
from shared.messages import DesiredConfig, NodeState, ScheduleCommand, ScheduleState, parse
from shared.schedule import Schedule, ScheduleStatus, window_spec
from shared.vocabulary import SERVO_RANGE_DEG
from tests import edge_node
from tests.edge_node import node_config, running_node
from tests.polling import wait_until

mock_pins = edge_node.mock_pins  # fixture
models = edge_node.models  # fixture


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def berlin(**fields: Any) -> Schedule:
    return Schedule.model_validate({"timezone": "Europe/Berlin", **fields})


OFFICE = berlin(
    detect=[{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "07:00", "end": "19:00"}],
    open=[{"start": "08:00", "end": "18:00"}],
    quiet=[{"days": ["fri", "sat"], "start": "22:00", "end": "02:00"}],
    park_deg=-45,
)


# -- the evaluator ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Thursday 2026-03-26, Berlin is UTC+1 (CET)
        (utc(2026, 3, 26, 5, 59, 59), ScheduleStatus(False, True, False, utc(2026, 3, 26, 6))),
        (utc(2026, 3, 26, 6), ScheduleStatus(True, True, False, utc(2026, 3, 26, 7))),  # 07:00: detects
        (utc(2026, 3, 26, 7), ScheduleStatus(True, False, False, utc(2026, 3, 26, 17))),  # 08:00: opens
        (utc(2026, 3, 26, 16, 59), ScheduleStatus(True, False, False, utc(2026, 3, 26, 17))),
        (utc(2026, 3, 26, 17), ScheduleStatus(True, True, False, utc(2026, 3, 26, 18))),  # 18:00: parked
        (utc(2026, 3, 26, 21), ScheduleStatus(False, True, False, utc(2026, 3, 27, 6))),  # Thursday night: not quiet
        # Friday 22:00 to Saturday 02:00: quiet, past midnight
        (utc(2026, 3, 27, 21), ScheduleStatus(False, True, True, utc(2026, 3, 28, 1))),
        (utc(2026, 3, 28, 0, 59), ScheduleStatus(False, True, True, utc(2026, 3, 28, 1))),
        (utc(2026, 3, 28, 1), ScheduleStatus(False, True, False, utc(2026, 3, 28, 7))),  # Sat 02:00; opens at 08:00
    ],
)
def test_window_edges(now: datetime, expected: ScheduleStatus) -> None:
    assert OFFICE.status(now) == expected


def test_spring_forward_berlin_2026_03_29() -> None:
    daily = berlin(open=[{"start": "08:00", "end": "18:00"}])
    # Saturday 08:00 is 07:00 UTC; on Sunday, after the change at 01:00 UTC, it is 06:00 UTC
    assert daily.status(utc(2026, 3, 28, 6, 59)).next_change == utc(2026, 3, 28, 7)
    assert daily.status(utc(2026, 3, 28, 20)).next_change == utc(2026, 3, 29, 6)
    assert daily.status(utc(2026, 3, 29, 5, 59)).parked and not daily.status(utc(2026, 3, 29, 6)).parked
    # 01:00 to 03:00 on the night of the change lasts one real hour
    night = berlin(quiet=[{"days": ["sun"], "start": "01:00", "end": "03:00"}])
    assert night.status(utc(2026, 3, 29, 0)) == ScheduleStatus(True, False, True, utc(2026, 3, 29, 1))
    assert not night.status(utc(2026, 3, 29, 1)).quiet
    # 02:30 does not exist that night: the window starts after the gap, at 03:30 CEST
    gap = berlin(detect=[{"days": ["sun"], "start": "02:30", "end": "04:00"}])
    assert gap.status(utc(2026, 3, 29, 0)).next_change == utc(2026, 3, 29, 1, 30)
    assert gap.status(utc(2026, 3, 29, 1, 30)) == ScheduleStatus(True, False, False, utc(2026, 3, 29, 2))


def test_fall_back_berlin_2026_10_25() -> None:
    # Saturday 22:00 CEST to Sunday 06:00 CET lasts nine real hours
    quiet = berlin(quiet=[{"days": ["sat"], "start": "22:00", "end": "06:00"}])
    begins = quiet.status(utc(2026, 10, 24, 19)).next_change
    assert begins == utc(2026, 10, 24, 20)
    ends = quiet.status(begins).next_change
    assert ends == utc(2026, 10, 25, 5) and ends - begins == timedelta(hours=9)
    assert quiet.status(utc(2026, 10, 25, 4, 59)).quiet and not quiet.status(utc(2026, 10, 25, 5)).quiet
    # 02:30 happens twice that night: the window starts at the first one (CEST)
    twice = berlin(detect=[{"days": ["sun"], "start": "02:30", "end": "03:30"}])
    assert twice.status(utc(2026, 10, 25, 0)).next_change == utc(2026, 10, 25, 0, 30)
    assert twice.status(utc(2026, 10, 25, 0, 30)).next_change == utc(2026, 10, 25, 2, 30)  # 03:30 CET


def test_absent_windows_restrict_nothing_and_empty_ones_everything() -> None:
    now = utc(2026, 6, 1, 12)
    assert berlin().status(now) == ScheduleStatus(True, False, False, None)
    assert berlin(detect=[], open=[]).status(now) == ScheduleStatus(False, True, False, None)
    whole = berlin(quiet=[{"start": "00:00", "end": "24:00"}])
    assert whole.status(now) == ScheduleStatus(True, False, True, None)  # quiet all week: no change


def test_overlapping_windows_change_only_where_the_union_does() -> None:
    two = berlin(open=[{"start": "08:00", "end": "12:00"}, {"start": "11:00", "end": "15:00"}])
    assert two.status(utc(2026, 6, 1, 7)).next_change == utc(2026, 6, 1, 13)  # 15:00 CEST, not 12:00


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": "UTC", "quiet": [{"start": "07:00", "end": "07:00"}]}, "quiet.0"),
        ({"timezone": "UTC", "quiet": [{"start": "24:00", "end": "07:00"}]}, "quiet.0.start"),
        ({"timezone": "UTC", "quiet": [{"start": "7:00", "end": "08:00"}]}, "quiet.0.start"),
        ({"timezone": "UTC", "open": [{"days": ["mon", "mon"], "start": "07:00", "end": "08:00"}]}, "open.0.days"),
        ({"timezone": "UTC", "open": [{"days": ["monday"], "start": "07:00", "end": "08:00"}]}, "open.0.days.0"),
        ({"timezone": "UTC", "park_deg": True}, "park_deg"),
        ({"timezone": "UTC", "park_deg": "10"}, "park_deg"),
        ({"timezone": "UTC", "park_deg": SERVO_RANGE_DEG[1] + 1}, "park_deg"),
        ({"timezone": "UTC", "detect": {"start": "07:00", "end": "08:00"}}, "detect"),
        ({"timezone": "UTC", "lunch": []}, "lunch"),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(fields: dict[str, Any], where: str) -> None:
    payload = json.dumps({"v": 1, "request_id": "r", "schedule": fields})
    with pytest.raises(ContractError) as caught:
        parse(ScheduleCommand, payload)
    assert caught.value.field is not None and caught.value.field.startswith(f"schedule.{where}")


def test_window_spec_of_the_command_line() -> None:
    assert window_spec("fri-mon 22:00-02:00").days == ("fri", "sat", "sun", "mon")
    assert window_spec("mon,wed 07:00-24:00").model_dump() == {"days": ("mon", "wed"), "start": "07:00", "end": "24:00"}
    for bad, reason in (
        ("mon-fri", "write \\[DAYS \\]HH:MM-HH:MM"),
        ("someday 07:00-08:00", "unknown day in 'someday'"),
        ("07:00-07:00", "an empty window"),
        ("mon 7:00-08:00", "start: String should match pattern"),
    ):
        with pytest.raises(ValueError, match=reason):
            window_spec(bad)


# -- the edge's scheduler ----------------------------------------------------------------------------


class Clock:
    """A frozen clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_scheduler_parks_the_servo_gates_detection_and_restores_the_mode(mock_pins: Any) -> None:
    config = ServoConfig(mode="sweep", min_deg=-30, max_deg=90)
    servo, planner = PanServo(config, mock_pins), ServoPlanner(config)
    runtime = NodeRuntime(site="s", node="n", threshold=0.5, servo=servo, planner=planner)
    clock = Clock(utc(2026, 3, 26, 5))  # Thursday 06:00 in Berlin: closed, not detecting
    scheduler = Scheduler(runtime, servo=servo, planner=planner, clock=clock)
    try:
        status = scheduler.set(OFFICE)
        assert status == ScheduleStatus(False, True, False, utc(2026, 3, 26, 6))
        assert scheduler.parked and (planner.mode, planner.hold_deg) == ("hold", -30.0)  # -45 clamped to the limit
        assert not runtime.detecting and runtime.state().schedule is not None
        scheduler.set_servo("track", None)  # the hub's desired mode while parked: kept for the opening
        assert planner.mode == "hold"
        clock.now = utc(2026, 3, 26, 5, 59)
        assert scheduler.check() is False  # nothing due
        clock.now = utc(2026, 3, 26, 6)
        assert scheduler.check() is True and runtime.detecting and scheduler.parked
        clock.now = utc(2026, 3, 26, 7)
        assert scheduler.check() is True and not scheduler.parked and planner.mode == "track"
        state = NodeState.model_validate_json(runtime.state().to_json())
        assert state.schedule is not None and state.schedule.next_change == utc(2026, 3, 26, 17)
        assert scheduler.set(None) is None and runtime.state().schedule is None and runtime.detecting
    finally:
        servo.close()


def test_edge_config_yaml_schedule_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(
        "site: hq\nnode: door-1\nschedule:\n  timezone: Europe/Berlin\n"
        "  open:\n    - {days: [mon, tue], start: '08:00', end: '18:00'}\n  park_deg: 10\n"
    )
    schedule = load_edge_config(path).schedule
    assert schedule is not None and schedule.open is not None and schedule.open[0].days == ("mon", "tue")
    assert load_edge_config(None, {"site": "hq", "node": "n"}).schedule is None
    with pytest.raises(ConfigError, match=r"schedule\.timezone"):
        load_edge_config(None, {"site": "hq", "node": "n", "schedule": {"timezone": "Berlin"}})


def test_desired_schedule_and_servo_mode_applied_together(mock_pins: Any) -> None:
    config = ServoConfig(mode="sweep")
    servo, planner = PanServo(config, mock_pins), ServoPlanner(config)
    runtime = NodeRuntime(site="s", node="n", threshold=0.5, servo=servo, planner=planner)
    scheduler = Scheduler(runtime, servo=servo, planner=planner, clock=Clock(utc(2026, 3, 26, 5)))
    commands = NodeCommands(
        runtime, servo=servo, planner=planner, scheduler=scheduler, snapshot=lambda rid: {}, config=lambda: {}
    )
    try:
        commands.apply_desired(DesiredConfig(schedule=OFFICE, servo_mode="track"))
        assert scheduler.parked and planner.mode == "hold" and runtime.schedule == OFFICE
        commands.apply_desired(DesiredConfig(schedule=berlin()))  # only a time zone: every restriction lifted
        assert not scheduler.parked and planner.mode == "track"
    finally:
        servo.close()


# -- a live node -------------------------------------------------------------------------------------


def _around(now: datetime, hours_from: int, hours_to: int) -> dict[str, str]:
    """A daily UTC window from ``now + hours_from`` to ``now + hours_to`` (it may run past midnight)."""
    return {
        "start": (now + timedelta(hours=hours_from)).strftime("%H:%M"),
        "end": (now + timedelta(hours=hours_to)).strftime("%H:%M"),
    }


def _state_until(listener: Any, done: Any) -> NodeState:
    """The first ``state`` the node publishes for which ``done(state)`` (earlier ones are skipped)."""
    while not done(state := parse(NodeState, listener.wait_raw(listener.topics.state, 5).payload)):
        pass
    return state


@pytest.mark.slow
def test_live_node_applies_the_schedule_command_answers_and_reports_it(
    tmp_path: Path, broker_config: BrokerConfig, mock_pins: Any, models: tuple[Any, Any]
) -> None:
    cfg = node_config(broker_config, tmp_path, source="scene:builtin", servo={"mode": "sweep", "speed_dps": 600})
    with running_node(cfg, mock_pins, models, broker_config) as (app, listener):
        assert parse(NodeState, listener.wait_raw(listener.topics.state, 5).payload).schedule is None
        now = datetime.now(UTC)
        schedule = {
            "timezone": "UTC",
            "open": [_around(now, 2, 3)],  # closed now: parked facing the unmasked astronaut of the scene
            "quiet": [_around(now, -2, 2)],  # quiet now
            "park_deg": -60,
        }
        answer = listener.command("schedule", {"v": 1, "request_id": "s1", "schedule": schedule})
        assert (answer.status, answer.request_id) == ("ok", "s1")
        assert answer.value["status"]["parked"] is True and answer.value["status"]["quiet"] is True
        assert answer.value["status"]["detect"] is True and "next_change" in answer.value["status"]
        state = _state_until(listener, lambda state: state.schedule is not None)
        assert state.schedule is not None and (state.schedule.parked, state.schedule.quiet) == (True, True)
        assert (state.servo.mode, app.planner.hold_deg) == ("hold", -60.0)
        refused = listener.command("servo", {"request_id": "s2", "mode": "sweep"})
        assert refused.status == "error" and "parked" in (refused.error or "")
        events = listener.events_until(lambda evs: any(e.type == "new" for e in evs), 15)
        assert events and all(e.quiet is True for e in events)  # observed in quiet hours
        # lift every restriction: the servo resumes its sweep, events are no longer quiet
        answer = listener.command("schedule", {"request_id": "s3", "schedule": {"timezone": "UTC"}})
        assert answer.status == "ok" and answer.value["status"] == {"detect": True, "parked": False, "quiet": False}
        assert wait_until(lambda: app.planner.mode == "sweep", 3)
        state = _state_until(listener, lambda state: state.schedule is not None and not state.schedule.parked)
        assert state.schedule == ScheduleState(detect=True, parked=False, quiet=False)
