"""What the node is doing now: the run-time settings commands change, and the retained ``state`` message."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from edge.devices.servo import PanServo, ServoPlanner
from shared.messages import NodeState, ScheduleState, ServoState, utc_now
from shared.schedule import Schedule, ScheduleStatus
from shared.vocabulary import Profile, ServoMode


@dataclass
class NodeRuntime:
    """Run-time settings (threshold, detect on/off, the schedule and its status; the servo mode lives in the
    planner).

    Commands and the hub's desired config change these; the config tree stays as loaded.
    """

    site: str
    node: str
    threshold: float
    detect: bool = True
    model: str = "unknown"
    model_sha256: str | None = None
    model_error: str | None = None
    profile: Profile = Profile.NEAR
    source: str | None = None
    servo: PanServo | None = None
    planner: ServoPlanner | None = None
    min_deg: float = -90.0
    max_deg: float = 90.0
    delivery_error: str | None = None
    camera_error: str | None = None
    schedule: Schedule | None = None
    schedule_status: ScheduleStatus | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def angle(self) -> float | None:
        """The camera's pan angle (``None`` without a servo or when switched off)."""
        if self.servo is None or (self.planner is not None and self.planner.mode == ServoMode.OFF):
            return None
        return round(self.servo.position, 2)

    @property
    def detecting(self) -> bool:
        """Inference runs now: switched on, and the schedule (if any) lets it."""
        return self.detect and (self.schedule_status is None or self.schedule_status.detect)

    @property
    def quiet(self) -> bool:
        """Quiet hours now: events are marked quiet."""
        return self.schedule_status is not None and self.schedule_status.quiet

    def state(self) -> NodeState:
        """The retained ``state`` message now."""
        mode = self.planner.mode if self.planner else ServoMode.OFF
        return NodeState(
            site=self.site,
            node=self.node,
            ts=utc_now(),
            servo=ServoState(angle=self.angle, mode=mode, min_deg=self.min_deg, max_deg=self.max_deg),
            threshold=self.threshold,
            detect=self.detect,
            model=self.model,
            model_sha256=self.model_sha256,
            model_error=self.model_error,
            profile=self.profile,
            source=self.source,
            delivery_error=self.delivery_error,
            camera_ok=self.camera_error is None,
            camera_error=self.camera_error,
            schedule=None if self.schedule_status is None else ScheduleState.of(self.schedule_status),
        )
