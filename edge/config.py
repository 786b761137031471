"""Configuration of an edge node: one typed tree, loaded by :func:`load_edge_config`.

Every key can come from a YAML file, a ``MASKWATCH_*`` variable or ``--set``::

    maskwatch edge --config node.yaml --set servo.max_deg=45 --set tracker.confirm_frames=2

Run-time changes (threshold, servo mode, detect on/off) live in
:class:`edge.state.NodeRuntime`, never in this tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from shared.config import BrokerConfig, Identifier, StrictModel, load_config, parse_host_port
from shared.schedule import Schedule
from shared.vocabulary import (
    SERVO_RANGE_DEG,
    OperatingPoint,
    Probability,
    Profile,
    ServoAngle,
    ServoMode,
    Threshold,
    describe_profile_defaults,
)

#: Who acknowledges an outbox message: a hub's commit (``.../ack``) or the broker's PUBACK.
Delivery = Literal["hub", "broker"]


class TrackerConfig(StrictModel):
    """How detections become tracked events (Frigate-like lifecycle)."""

    confirm_frames: int = Field(3, ge=1, le=100, description="frames with a stable label before `new`")
    end_frames: int = Field(8, ge=0, le=1000, description="frames without the face before `end`")
    iou_min: float = Field(0.25, ge=0, le=1, description="IoU at or above which a detection continues a track")
    gate_box_frac: float = Field(
        0.6, gt=0, le=5, description="motion gate: max centre jump as a fraction of the box size"
    )
    smooth_frames: int = Field(7, ge=1, le=100, description="median window over the no-mask probability")
    hysteresis: float = Field(0.1, ge=0, le=0.5, description="margin around the threshold to flip a label")
    update_min_s: float = Field(3.0, ge=0, description="at most one `update` per track this often")
    update_score_gain: float = Field(0.1, ge=0, le=1, description="score gain that counts as clearly better")
    reclassify_frames: int = Field(
        3,
        ge=1,
        le=100,
        description="classify a confirmed face every this many "
        "frames (1: every frame); in between its smoothed probability is kept",
    )


class OutboxConfig(StrictModel):
    """The persistent outbox (SQLite) that makes delivery lossless."""

    path: Path | None = Field(None, description="SQLite file; default in ~/.local/state/maskwatch/")
    max_messages: int = Field(10000, ge=10, description="bound; the oldest are dropped (and counted) beyond it")
    resend_after_s: float = Field(15.0, gt=0, description="re-publish a message not acknowledged after this ...")
    resend_max_s: float = Field(
        120.0, gt=0, description="... doubling per attempt up to this (also re-published after every reconnect)"
    )
    drain_timeout_s: float = Field(30.0, ge=0, description="--once / shutdown: how long to wait for acknowledgements")


class SnapshotConfig(StrictModel):
    """JPEG snapshots of no-mask faces on ``.../snapshot/<event id>``."""

    mode: Literal["off", "on", "blur"] = Field("on", description="off, as is, or with the face blurred")
    include_frame: bool = Field(False, description="publish the whole frame instead of the face crop")
    max_bytes: int = Field(60_000, ge=2_000, le=1_000_000, description="size cap; quality is lowered to fit")
    quality: int = Field(85, ge=10, le=100)


class ServoConfig(StrictModel):
    """The pan servo (gpiozero ``AngularServo``)."""

    enabled: bool = True
    pin: int | str = Field(17, description="GPIO of the servo signal")
    min_deg: float = Field(-90, ge=SERVO_RANGE_DEG[0], le=0)
    max_deg: float = Field(90, ge=0, le=SERVO_RANGE_DEG[1])
    min_pulse_width_s: float = Field(0.001, gt=0, le=0.005)
    max_pulse_width_s: float = Field(0.002, gt=0, le=0.005)
    frame_width_s: float = Field(0.02, gt=0, le=0.1)
    speed_dps: float = Field(120.0, gt=0, le=2000, description="speed limit, degrees per second")
    step_s: float = Field(0.02, gt=0, le=1, description="control period (one small step per period)")
    detach_idle_s: float = Field(1.0, ge=0, description="detach after this long without a move (0: never)")
    mode: ServoMode = Field(ServoMode.SWEEP, description="mode at start")
    start_deg: ServoAngle = 0.0
    sweep_min_deg: ServoAngle | None = Field(None, description="default: min_deg")
    sweep_max_deg: ServoAngle | None = Field(None, description="default: max_deg")
    sweep_step_deg: float = Field(15.0, gt=0, le=90)
    dwell_s: float = Field(0.5, ge=0, le=60, description="pause at each sweep step")
    face_hold_s: float = Field(1.5, ge=0, description="sweep resumes this long after the last face")
    pause_max_s: float = Field(
        10.0,
        ge=0,
        description="sweep resumes after pausing this long at faces that "
        "stay, and pauses again only once the view was clear (0: no limit)",
    )
    track_gain: float = Field(0.6, gt=0, le=1, description="proportional gain of `track`")
    track_dead_band_deg: float = Field(3.0, ge=0, le=45, description="no move for smaller errors")

    @model_validator(mode="after")
    def _pulses(self) -> ServoConfig:
        if self.min_pulse_width_s >= self.max_pulse_width_s:
            raise ValueError("min_pulse_width_s must be below max_pulse_width_s")
        if self.max_pulse_width_s >= self.frame_width_s:
            raise ValueError("max_pulse_width_s must be below frame_width_s")
        return self


class IndicatorConfig(StrictModel):
    """Blue (all masked) / red (someone unmasked) LEDs and an optional buzzer."""

    enabled: bool = True
    blue_pin: int | str = 22
    red_pin: int | str = 27
    buzzer_pin: int | str | None = Field(None, description="buzz on a new no-mask event; none: no buzzer")
    buzz_s: float = Field(0.2, gt=0, le=5)


class SceneConfig(StrictModel):
    """The simulated panoramic camera (``--source scene:DIR`` or ``scene:builtin``)."""

    fov_deg: float = Field(
        60.0,
        gt=5,
        le=180,
        description="horizontal field of view; with a real camera "
        "set it too: servo tracking and pan compensation of the tracker use it",
    )
    span_deg: float = Field(360.0, gt=10, le=360, description="panorama width in degrees")
    width: int = Field(640, ge=64, le=4096)
    height: int = Field(480, ge=48, le=4096)
    fps: float = Field(15.0, gt=0, le=240)
    noise: float = Field(3.0, ge=0, le=50, description="std of Gaussian pixel noise (light noise)")
    face_height_frac: float = Field(0.45, gt=0.05, le=1, description="face height relative to the frame")
    realtime: bool = Field(
        True,
        description="pace frames at fps like a camera (false: every frame is "
        "processed, timestamps from a virtual clock at fps)",
    )
    duration_s: float | None = Field(None, gt=0, description="end the scene after this long (none: never)")
    seed: int = 0


class CameraConfig(StrictModel):
    """Capture of a live source."""

    width: int | None = Field(None, description="requested width (camera index / picamera)")
    height: int | None = None
    retry_min_s: float = Field(0.5, gt=0, le=3600, description="first wait before reopening a failed camera")
    retry_max_s: float = Field(30.0, gt=0, le=3600, description="longest wait between reopen attempts (doubling)")
    stall_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="no frame for this long: the camera is reported down (camera_ok false) until frames return",
    )
    reopen_after_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="a live camera whose read gives nothing for this long (a driver that hangs, a USB camera that "
        "re-enumerated) is closed and opened again; at least stall_timeout_s",
    )

    @model_validator(mode="after")
    def _retry_order(self) -> CameraConfig:
        if self.retry_min_s > self.retry_max_s:
            raise ValueError(f"retry_min_s ({self.retry_min_s}) must not exceed retry_max_s ({self.retry_max_s})")
        if self.reopen_after_s < self.stall_timeout_s:
            raise ValueError(
                f"reopen_after_s ({self.reopen_after_s}) must not be under stall_timeout_s ({self.stall_timeout_s})"
            )
        return self


class PreviewConfig(StrictModel):
    """The optional live MJPEG preview."""

    bind: str | None = Field(None, description="HOST:PORT; off when unset; loopback recommended")
    fps: float = Field(10.0, gt=0, le=60)
    quality: int = Field(75, ge=10, le=100)


class EdgeConfig(StrictModel):
    """Everything an edge node needs."""

    site: Identifier = "site"
    node: Identifier = "node-1"
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    delivery: Delivery = Field(
        "hub",
        description="who acknowledges an event so the outbox forgets it: hub (a hub's commit on .../ack; "
        "sent while a hub is online) or broker (its PUBACK: a site without a hub)",
    )
    source: str = Field("0", description="camera index, video file, URL, image folder, picamera, scene:DIR")
    profile: Profile = Profile.NEAR
    detector: str | None = Field(None, description="detector kind (default: the profile's)")
    classifier_path: Path | None = Field(None, description="default: the packaged int8 classifier")
    model_dir: Path | None = Field(
        None,
        description="where models pushed by 'maskwatch model push' are kept (the active one wins over "
        "classifier_path); default ~/.local/state/maskwatch/models-<site>-<node>",
    )
    num_threads: int = Field(
        2,
        ge=1,
        le=16,
        description="CPU threads for inference; the crowd detector's tiles, and the classifier's crops and their "
        "mirror images, run side by side on copies of the networks, one per thread",
    )
    threshold: Threshold | None = Field(
        None,
        description="no-mask probability at or above which: no_mask "
        f"(default: the profile's, {describe_profile_defaults('threshold')})",
    )
    min_face_score: Probability | None = Field(
        None,
        description="face score (1 - the classifier's "
        "not-face probability) under which a detection is dropped (default: "
        f"the profile's, {describe_profile_defaults('min_face_score')})",
    )
    min_no_mask_detector_score: Probability | None = Field(
        None,
        description="detector score a no-mask verdict needs; a weaker detection that the classifier calls no mask "
        "is dropped as unverified, most often no face or a masked face seen badly (default: the profile's, "
        f"{describe_profile_defaults('min_no_mask_detector_score')})",
    )
    detect: bool = Field(True, description="inference running at start")
    schedule: Schedule | None = Field(
        None, description="when the node detects, is open (servo not parked) and is quiet (see docs/edge.md)"
    )
    min_face_px: int = Field(16, ge=4, description="smaller detections are ignored")
    stats_interval_s: float = Field(10.0, gt=0)
    pin_factory: Literal["auto", "mock", "lgpio", "pigpio", "rpigpio", "native"] = Field(
        "auto", description="auto: gpiozero's default on a Raspberry Pi, the mock factory elsewhere"
    )
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)
    servo: ServoConfig = Field(default_factory=ServoConfig)
    indicator: IndicatorConfig = Field(default_factory=IndicatorConfig)
    scene: SceneConfig = Field(default_factory=SceneConfig)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    preview: PreviewConfig = Field(default_factory=PreviewConfig)

    @model_validator(mode="after")
    def _check(self) -> EdgeConfig:
        if self.preview.bind:
            parse_host_port(self.preview.bind, 8090)
        return self

    def operating_point(self) -> OperatingPoint:
        """The profile's default operating point (:attr:`Profile.default_point`) with the settings this config
        gives (``threshold``, ``min_face_score``, ``min_no_mask_detector_score``) in place of its own."""
        return self.profile.default_point.with_settings(
            self.threshold, self.min_face_score, self.min_no_mask_detector_score
        )

    def outbox_path(self) -> Path:
        """The outbox file, defaulting to one per site/node under ~/.local/state/maskwatch."""
        if self.outbox.path:
            return self.outbox.path.expanduser()
        return Path.home() / ".local" / "state" / "maskwatch" / f"outbox-{self.site}-{self.node}.sqlite"

    def model_path(self) -> Path:
        """The folder of pushed models, defaulting to one per site/node under ~/.local/state/maskwatch."""
        if self.model_dir:
            return self.model_dir.expanduser()
        return Path.home() / ".local" / "state" / "maskwatch" / f"models-{self.site}-{self.node}"

    def client_id(self) -> str:
        return self.broker.client_id or f"maskwatch-edge-{self.site}-{self.node}"


def load_edge_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> EdgeConfig:
    """Load the node's config (YAML, then ``MASKWATCH_*``, then ``overrides``); raises ConfigError."""
    return load_config(EdgeConfig, path, overrides=overrides)
