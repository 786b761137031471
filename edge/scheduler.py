"""The node's schedule at work: detection on or off, the servo parked outside opening hours, quiet hours.

:class:`Scheduler` evaluates the :class:`~shared.schedule.Schedule` (from the config, ``cmd/schedule`` or the
hub's desired config) in the ``schedule`` thread at each change, keeps the result in the
:class:`~edge.state.NodeRuntime` (the pipeline reads ``detecting`` and ``quiet`` from it, the state message
reports it), and parks the servo: when the node closes the planner's mode is kept and the servo held at
``park_deg``; when it opens again the kept mode comes back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from edge.devices.servo import PanServo, ServoPlanner
from edge.state import NodeRuntime
from shared.messages import utc_now
from shared.schedule import Schedule, ScheduleStatus
from shared.vocabulary import ServoMode

log = logging.getLogger(__name__)

#: The schedule is evaluated again at least this often (a clock set forward or back is noticed then).
RECHECK = timedelta(seconds=60)


class Scheduler:
    """Applies a node's schedule to its runtime and servo.

    :param runtime: where the status is kept (``runtime.schedule`` and ``runtime.schedule_status``).
    :param servo: the pan servo (``None``: nothing to park).
    :param planner: the servo's planner.
    :param on_change: called from the ``schedule`` thread after the status changed (publish the state).
    :param clock: the current time, timezone-aware (tests freeze it).
    """

    def __init__(
        self,
        runtime: NodeRuntime,
        *,
        servo: PanServo | None = None,
        planner: ServoPlanner | None = None,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.runtime = runtime
        self.servo = servo
        self.planner = planner
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._checked: datetime | None = None
        #: the planner's mode and hold angle while parked, restored when the node opens
        self._resume: tuple[ServoMode, float | None] | None = None

    @property
    def parked(self) -> bool:
        """The servo is parked by the schedule."""
        return self._resume is not None

    def set(self, schedule: Schedule | None) -> ScheduleStatus | None:
        """Replace the schedule (``None``: none) and apply it now; return its status."""
        with self._lock:
            self.runtime.schedule = schedule
            return self._apply()

    def check(self) -> bool:
        """Apply the schedule if a change is due (or :data:`RECHECK` has passed); whether the status changed."""
        with self._lock:
            before = self.runtime.schedule_status
            now = self._clock()
            due = before is not None and before.next_change is not None and now >= before.next_change
            if not (due or self._checked is None or now - self._checked >= RECHECK):
                return False
            return self._apply() != before

    def _apply(self) -> ScheduleStatus | None:
        schedule = self.runtime.schedule
        now = self._clock()
        self._checked = now
        status = None if schedule is None else schedule.status(now)
        with self.runtime.lock:
            previous, self.runtime.schedule_status = self.runtime.schedule_status, status
        if status != previous:
            log.info("schedule status: %s", status)
        self._park(status is not None and status.parked, schedule.park_deg if schedule else 0.0)
        return status

    def _park(self, parked: bool, park_deg: float) -> None:
        if self.servo is None or self.planner is None:
            return
        if parked:
            if self._resume is None:
                self._resume = (self.planner.mode, self.planner.hold_deg)
            self.planner.set_mode(ServoMode.HOLD, angle=self.servo.clamp(park_deg)[0])
        elif self._resume is not None:
            mode, angle = self._resume
            self._resume = None
            self.planner.set_mode(mode, angle=angle)

    def set_servo(self, mode: ServoMode, angle: float | None) -> None:
        """Switch the servo (the hub's desired mode); while parked, the mode it resumes when the node opens."""
        assert self.planner is not None
        with self._lock:
            if self._resume is not None:
                self._resume = (mode, angle if angle is not None else self._resume[1])
                return
            self.planner.set_mode(mode, angle=angle)

    def run(self, stop: threading.Event) -> None:
        """Body of the ``schedule`` thread: apply each change when it is due."""
        while not stop.wait(1.0):
            try:
                if self.check() and self._on_change:
                    self._on_change()
            except Exception:  # one boundary per thread: the node goes on with the last status
                log.exception("schedule evaluation failed")
