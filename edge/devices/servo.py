"""The pan servo: a gpiozero ``AngularServo`` owner with a speed limit, and the mode planner.

Wiring: servo signal to ``servo.pin`` (GPIO17 by default), power from 5 V, ground shared with the Pi.

:class:`PanServo` owns the device: it moves in small steps no faster than
``speed_dps`` and detaches when idle so the servo does not jitter.
:class:`ServoPlanner` decides where to go in each mode:

* ``sweep``: patrol between the sweep limits in steps, dwelling at each; pause while a face is in view
  (at most ``pause_max_s``, then patrol on until the view is clear);
* ``track``: keep the largest face centred (proportional, with a dead band);
* ``hold``: go to an angle and stay;
* ``off``: detached.

Example (mock pins)::

    >>> from gpiozero.pins.mock import MockFactory, MockPWMPin
    >>> servo = PanServo(ServoConfig(), pin_factory=MockFactory(pin_class=MockPWMPin))
    >>> servo.step_towards(30, dt=1.0)
    True
    >>> servo.position
    30.0
    >>> servo.close()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.config import ServoConfig
from shared.errors import HardwareError
from shared.vocabulary import ServoMode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sighting:
    """The largest face of a frame: when (monotonic s), the servo angle at capture, its offset from centre."""

    at: float
    angle: float
    offset_deg: float


class PanServo:
    """Owns one ``AngularServo``.

    :param config: pin, limits, pulse widths, speed limit, idle detach.
    :param pin_factory: a gpiozero pin factory (``MockFactory(pin_class=MockPWMPin)`` in tests).
    :raises HardwareError: the servo cannot be set up on that pin.
    """

    def __init__(self, config: ServoConfig, pin_factory: Any = None) -> None:
        from gpiozero import AngularServo

        self.config = config
        start, _ = self.clamp(config.start_deg)
        try:
            self._device = AngularServo(
                config.pin,
                initial_angle=start,
                min_angle=config.min_deg,
                max_angle=config.max_deg,
                min_pulse_width=config.min_pulse_width_s,
                max_pulse_width=config.max_pulse_width_s,
                frame_width=config.frame_width_s,
                pin_factory=pin_factory,
            )
        except Exception as exc:  # gpiozero raises many GPIOZeroError subclasses and OSError for a busy pin
            raise HardwareError(f"cannot drive the servo on pin {config.pin}: {exc}") from exc
        self.position: float = start
        self._last_move = time.monotonic()
        self._lock = threading.Lock()

    def clamp(self, angle: float) -> tuple[float, bool]:
        """``angle`` limited to ``[min_deg, max_deg]`` and whether it had to be."""
        limited = min(self.config.max_deg, max(self.config.min_deg, float(angle)))
        return limited, limited != float(angle)

    @property
    def attached(self) -> bool:
        return self._device.value is not None

    def step_towards(self, target: float, dt: float) -> bool:
        """Move at most ``speed_dps * dt`` towards ``target`` (clamped); return whether it moved."""
        target, _ = self.clamp(target)
        with self._lock:
            delta = target - self.position
            if abs(delta) < 1e-6:
                return False
            limit = self.config.speed_dps * dt
            self.position = target if abs(delta) <= limit else self.position + limit * (1 if delta > 0 else -1)
            self._device.angle = self.position
            self._last_move = time.monotonic()
            return True

    def detach_if_idle(self) -> None:
        """Stop the pulses once the servo has not moved for ``detach_idle_s``."""
        if (
            self.config.detach_idle_s
            and self.attached
            and time.monotonic() - self._last_move >= self.config.detach_idle_s
        ):
            self.detach()

    def detach(self) -> None:
        """Stop the pulses (the servo goes limp); :attr:`position` is kept."""
        with self._lock:
            self._device.detach()

    @property
    def pin(self) -> Any:
        """The gpiozero pin (a ``MockPWMPin`` in tests: ``.state`` is the duty cycle)."""
        return self._device.pwm_device.pin

    def close(self) -> None:
        """Release the pin; idempotent."""
        self._device.close()


class ServoPlanner:
    """Where the servo should be, per mode; thread-safe, no hardware.

    :param config: limits and the defaults of every mode.
    :param clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, config: ServoConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self.mode: ServoMode = config.mode
        self.hold_deg = config.start_deg
        self.sweep_min_deg = config.min_deg if config.sweep_min_deg is None else config.sweep_min_deg
        self.sweep_max_deg = config.max_deg if config.sweep_max_deg is None else config.sweep_max_deg
        self.sweep_step_deg = config.sweep_step_deg
        self.dwell_s = config.dwell_s
        self._waypoint: float | None = None
        self._direction = 1
        self._arrived_at: float | None = None
        self._sighting: Sighting | None = None
        self._paused_at: float | None = None
        self._ignore_faces = False

    def set_mode(
        self,
        mode: ServoMode,
        *,
        angle: float | None = None,
        sweep_min_deg: float | None = None,
        sweep_max_deg: float | None = None,
        sweep_step_deg: float | None = None,
        dwell_s: float | None = None,
    ) -> dict[str, Any]:
        """Switch mode (angles already clamped by the caller); return the applied settings."""
        with self._lock:
            self.mode = mode
            if angle is not None:
                self.hold_deg = angle
            if sweep_min_deg is not None:
                self.sweep_min_deg = sweep_min_deg
            if sweep_max_deg is not None:
                self.sweep_max_deg = sweep_max_deg
            if self.sweep_min_deg > self.sweep_max_deg:
                self.sweep_min_deg, self.sweep_max_deg = self.sweep_max_deg, self.sweep_min_deg
            if sweep_step_deg is not None:
                self.sweep_step_deg = sweep_step_deg
            if dwell_s is not None:
                self.dwell_s = dwell_s
            self._waypoint = None
            self._arrived_at = None
            return self.settings()

    def settings(self) -> dict[str, Any]:
        """The mode and its parameters."""
        out: dict[str, Any] = {"mode": self.mode}
        if self.mode == ServoMode.HOLD:
            out["angle"] = self.hold_deg
        if self.mode == ServoMode.SWEEP:
            out.update(
                sweep_min_deg=self.sweep_min_deg,
                sweep_max_deg=self.sweep_max_deg,
                sweep_step_deg=self.sweep_step_deg,
                dwell_s=self.dwell_s,
            )
        return out

    def saw(self, sighting: Sighting | None) -> None:
        """The latest frame's largest face (``None``: no face); called by the inference thread."""
        if sighting is not None:
            self._sighting = sighting

    def target(self, position: float) -> float | None:
        """Where to go from ``position`` now; ``None`` means detach (mode ``off``)."""
        with self._lock:
            now = self._clock()
            seen = self._sighting
            recent = seen is not None and now - seen.at <= self.config.face_hold_s
            if self.mode == ServoMode.OFF:
                return None
            if self.mode == ServoMode.HOLD:
                return self.hold_deg
            if self.mode == ServoMode.TRACK:
                if seen is None or not recent:
                    return position
                if abs(seen.offset_deg) <= self.config.track_dead_band_deg:
                    return position
                return seen.angle + self.config.track_gain * seen.offset_deg
            return self._sweep(position, now, recent)

    def _sweep(self, position: float, now: float, face_in_view: bool) -> float:
        if not face_in_view:
            self._paused_at = None
            self._ignore_faces = False
        elif not self._ignore_faces:
            self._paused_at = self._paused_at or now
            limit = self.config.pause_max_s
            if not limit or now - self._paused_at < limit:
                self._waypoint = position
                self._arrived_at = now
                return position
            self._ignore_faces = True  # paused long enough: patrol on until the view is clear
        if self._waypoint is None:
            self._waypoint = min(self.sweep_max_deg, max(self.sweep_min_deg, position))
        if abs(position - self._waypoint) > 0.5:
            return self._waypoint
        if self._arrived_at is None:
            self._arrived_at = now
        if now - self._arrived_at >= self.dwell_s:
            nxt = self._waypoint + self._direction * self.sweep_step_deg
            if nxt > self.sweep_max_deg or nxt < self.sweep_min_deg:
                self._direction = -self._direction
                nxt = self._waypoint + self._direction * self.sweep_step_deg
            self._waypoint = min(self.sweep_max_deg, max(self.sweep_min_deg, nxt))
            self._arrived_at = None
        return self._waypoint


def drive(
    stop: threading.Event, servo: PanServo, planner: ServoPlanner, on_rest: Callable[[], None] | None = None
) -> None:
    """Body of the ``servo`` thread: step towards the planner's target every ``step_s``.

    ``on_rest`` is called whenever the servo comes to rest or is switched off (to publish the state).
    """
    period = servo.config.step_s
    last = time.monotonic()
    moving = False
    while not stop.wait(period):
        now = time.monotonic()
        dt, last = now - last, now
        target = planner.target(servo.position)
        if target is None:
            if servo.attached:
                servo.detach()
                if on_rest:
                    on_rest()
            continue
        moved = servo.step_towards(target, dt)
        if moving and not moved and on_rest:
            on_rest()
        moving = moved
        if not moved:
            servo.detach_if_idle()
