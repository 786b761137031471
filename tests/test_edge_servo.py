"""Servo and indicator on gpiozero's mock pins; the mode planner with an injected clock."""

from __future__ import annotations

import time
from typing import Any

import pytest

from edge.config import IndicatorConfig, ServoConfig
from edge.devices.indicator import Indicator
from edge.devices.servo import PanServo, ServoPlanner, Sighting
from tests import edge_node
from tests.polling import wait_until

mock_pins = edge_node.mock_pins  # fixture


def expected_duty(cfg: ServoConfig, angle: float) -> float:
    frac = (angle - cfg.min_deg) / (cfg.max_deg - cfg.min_deg)
    return (cfg.min_pulse_width_s + frac * (cfg.max_pulse_width_s - cfg.min_pulse_width_s)) / cfg.frame_width_s


@pytest.mark.parametrize("angle", [-90.0, -45.0, 0.0, 30.0, 90.0])
def test_angle_sets_the_pwm_duty_cycle(mock_pins: Any, angle: float) -> None:
    cfg = ServoConfig(pin=17)
    servo = PanServo(cfg, pin_factory=mock_pins)
    try:
        servo.step_towards(angle, dt=10.0)
        assert servo.pin.state == pytest.approx(expected_duty(cfg, angle), abs=1e-6)
        assert servo.pin.frequency == pytest.approx(1 / cfg.frame_width_s)
    finally:
        servo.close()


def test_speed_limit_moves_in_small_steps_and_clamps(mock_pins: Any) -> None:
    cfg = ServoConfig(speed_dps=100)
    servo = PanServo(cfg, pin_factory=mock_pins)
    try:
        servo.step_towards(60, dt=0.1)
        assert servo.position == pytest.approx(10.0)
        for _ in range(20):
            servo.step_towards(500, dt=0.1)
        assert servo.position == 90.0
        assert servo.clamp(-400) == (-90.0, True)
        assert servo.clamp(12.5) == (12.5, False)
    finally:
        servo.close()


def test_detaches_when_idle_and_keeps_its_position(mock_pins: Any) -> None:
    servo = PanServo(ServoConfig(detach_idle_s=0.0001), pin_factory=mock_pins)
    try:
        servo.step_towards(20, dt=1)
        time.sleep(0.01)
        servo.detach_if_idle()
        assert not servo.attached
        assert servo.pin.state == 0
        assert servo.position == 20
    finally:
        servo.close()


def test_bad_pin_is_a_hardware_error(mock_pins: Any) -> None:
    from shared.errors import HardwareError

    first = PanServo(ServoConfig(pin=5), pin_factory=mock_pins)
    try:
        with pytest.raises(HardwareError, match="pin 5"):
            PanServo(ServoConfig(pin=5), pin_factory=mock_pins)
    finally:
        first.close()


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def run_sweep(planner: ServoPlanner, clock: Clock, steps: int, dt: float = 0.1) -> list[float]:
    position, seen = 0.0, []
    for _ in range(steps):
        target = planner.target(position)
        assert target is not None
        position = target  # an instantly fast servo: the planner's waypoints are what matters here
        seen.append(position)
        clock.t += dt
    return seen


def test_sweep_patrols_between_limits_dwelling_at_each_step() -> None:
    clock = Clock()
    planner = ServoPlanner(
        ServoConfig(
            mode="sweep", sweep_min_deg=-30, sweep_max_deg=30, sweep_step_deg=15, dwell_s=0.25, face_hold_s=0.5
        ),
        clock=clock,
    )
    path = run_sweep(planner, clock, 60)
    distinct = [p for i, p in enumerate(path) if i == 0 or p != path[i - 1]]
    assert distinct[:9] == [0, 15, 30, 15, 0, -15, -30, -15, 0]
    assert path.count(15) >= 3  # dwelled


def test_sweep_pauses_while_a_face_is_in_view_then_resumes() -> None:
    clock = Clock()
    planner = ServoPlanner(ServoConfig(mode="sweep", sweep_step_deg=15, dwell_s=0.1, face_hold_s=0.5), clock=clock)
    run_sweep(planner, clock, 5)
    planner.saw(Sighting(at=clock.t, angle=15, offset_deg=3))
    held = {planner.target(15.0) for _ in range(3)}
    assert held == {15.0}
    clock.t += 2.0
    assert run_sweep(planner, clock, 10)[-1] != 15.0


def test_track_is_proportional_with_a_dead_band_and_hold_and_off() -> None:
    clock = Clock()
    cfg = ServoConfig(mode="track", track_gain=0.5, track_dead_band_deg=2)
    planner = ServoPlanner(cfg, clock=clock)
    assert planner.target(10.0) == 10.0  # no face: stay
    planner.saw(Sighting(at=clock.t, angle=10, offset_deg=20))
    assert planner.target(10.0) == pytest.approx(20.0)
    planner.saw(Sighting(at=clock.t, angle=29, offset_deg=1))
    assert planner.target(29.0) == 29.0
    planner.set_mode("hold", angle=-40)
    assert planner.target(0.0) == -40
    planner.set_mode("off")
    assert planner.target(0.0) is None


def test_indicator_pins_follow_the_labels(mock_pins: Any) -> None:
    cfg = IndicatorConfig(blue_pin=22, red_pin=27, buzzer_pin=23)
    ind = Indicator(cfg, pin_factory=mock_pins)
    blue, red = mock_pins.pin(22), mock_pins.pin(27)
    try:
        for labels, expected in [
            (["mask", "mask"], (True, False)),
            (["mask", "no_mask"], (False, True)),
            ([], (False, False)),
            (["mask"], (True, False)),
        ]:
            ind.show(labels)
            assert (bool(blue.state), bool(red.state)) == expected, labels
        buzzer = mock_pins.pin(23)
        ind.buzz()
        assert wait_until(lambda: bool(buzzer.state), 1.0)
        assert wait_until(lambda: not buzzer.state, 2.0)
    finally:
        ind.close()


def test_sweep_resumes_after_pause_max_and_pauses_again_only_after_a_clear_view() -> None:
    clock = Clock()
    planner = ServoPlanner(
        ServoConfig(mode="sweep", sweep_step_deg=15, dwell_s=0.1, face_hold_s=0.2, pause_max_s=1.0), clock=clock
    )
    position = 15.0
    planner.saw(Sighting(at=clock.t, angle=15, offset_deg=0))
    assert planner.target(position) == 15.0  # paused at the face
    for _ in range(12):  # the face stays for 1.2 s
        clock.t += 0.1
        planner.saw(Sighting(at=clock.t, angle=15, offset_deg=0))
    moved = planner.target(position)
    assert moved is not None and moved != 15.0  # patrols on although the face is still there
    clock.t += 1.0  # the view is clear for longer than face_hold_s
    planner.target(moved)
    planner.saw(Sighting(at=clock.t, angle=moved, offset_deg=0))
    assert planner.target(moved) == moved  # a new face pauses it again
