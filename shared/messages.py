"""Typed, versioned MQTT payloads: the public contract (see ``docs/mqtt.md``).

Every message is a pydantic model that rejects unknown fields. Use
:func:`parse` to turn raw bytes into a model; it returns a valid object or
raises :class:`~shared.errors.ContractError` naming the field and value.

Example::

    >>> ev = parse(Event, b'{"v": 1, "type": "new", "id": "hq-door-1-0001", "site": "hq",'
    ...            b' "node": "door-1", "ts": "2026-01-01T12:00:00Z", "label": "mask",'
    ...            b' "score": 0.98, "box": [10, 20, 64, 64], "angle": 0}')
    >>> ev.label
    'mask'
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from shared.errors import ContractError
from shared.model_transfer import MAX_MODEL_BYTES
from shared.schedule import Schedule, ScheduleStatus
from shared.topics import EVENT_ID_PATTERN, ID_PATTERN, SHA256_PATTERN
from shared.vocabulary import Label, Probability, Profile, ServoMode, StrictServoAngle

SCHEMA_VERSION: Final = 1
#: Payloads larger than this are rejected before JSON decoding (snapshots excepted).
MAX_PAYLOAD_BYTES = 64 * 1024

SiteId = Annotated[str, Field(pattern=ID_PATTERN.pattern, description="site id, [a-z0-9_-]+")]
NodeId = Annotated[str, Field(pattern=ID_PATTERN.pattern, description="node id, [a-z0-9_-]+")]
EventId = Annotated[str, Field(pattern=EVENT_ID_PATTERN.pattern, description="globally unique event id")]
Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN.pattern, description="sha256 digest, 64 lowercase hex digits")]
#: A model's name: the stem of its file (letters, digits, ``_ . -``).
ModelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="model name, the file's stem")]
HubId = Annotated[str, Field(pattern=ID_PATTERN.pattern, description="hub id, [a-z0-9_-]+")]
OutboxId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$", description="random id of one node outbox file")]
#: An outbox sequence number: the node numbers what it writes to its outbox 1, 2, 3...
Seq = Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]
#: Integers that fit the 32- and 64-bit columns of any database the hub writes to.
Int32 = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)]
Count32 = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
Count64 = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
#: The plain-text payloads of a node's ``status`` and a hub's presence, and whether each means available.
ONLINE, OFFLINE = b"online", b"offline"
AVAILABILITY: dict[bytes, bool] = {ONLINE: True, OFFLINE: False}
#: Longest error text a node reports (``delivery_error``).
MAX_ERROR_CHARS = 512
#: Deepest nesting accepted in a free-form value (a response's ``value``).
MAX_VALUE_DEPTH = 32
#: A probability as it travels: a JSON number, never a boolean or a string.
StrictProbability = Annotated[Probability, Strict()]


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range once converted to UTC") from None


#: A timezone-aware time, normalized to UTC when parsed (so it always serializes).
UtcTime = Annotated[AwareDatetime, AfterValidator(_in_utc)]


def _check_free_value(value: Any) -> Any:
    """Raise ValueError if a free-form JSON value is nested too deeply or holds NaN/Infinity."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > MAX_VALUE_DEPTH:
            raise ValueError(f"nested deeper than {MAX_VALUE_DEPTH} levels")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("NaN and Infinity are not JSON")
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, level + 1) for v in item)
    return value


class Message(BaseModel):
    """Base of every payload: strict about unknown keys, versioned, ISO 8601 UTC times."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    v: Literal[1] = Field(SCHEMA_VERSION, description="schema version")

    @field_serializer("*", when_used="json")
    def _utc_iso(self, value: Any) -> Any:
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return value

    def to_json(self) -> bytes:
        """Compact JSON bytes, ready to publish."""
        return self.model_dump_json(exclude_none=True).encode()


class TrackInfo(BaseModel):
    """How long a tracked face has been seen."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    frames: Count32 = Field(description="frames in which the face was seen")
    first_seen: UtcTime
    last_seen: UtcTime

    @field_serializer("first_seen", "last_seen", when_used="json")
    def _iso(self, value: datetime) -> str:
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Event(Message):
    """A detection event on ``.../events``: one tracked face, with a lifecycle.

    ``new`` is sent once a face is confirmed, ``update`` when its label changes or
    its score clearly improves, ``end`` when it has left the view. All three carry
    the same ``id``.
    """

    type: Literal["new", "update", "end"]
    id: EventId
    site: SiteId
    node: NodeId
    ts: UtcTime = Field(description="UTC time of the observation")
    label: Label
    score: StrictProbability = Field(description="probability of the label")
    face_score: StrictProbability | None = Field(
        None,
        description="face verification: the classifier's probability that the box is a face at all "
        "(1 - p_not_face; absent from nodes whose classifier has no not-a-face class)",
    )
    box: tuple[Int32, Int32, Int32, Int32] = Field(description="[x, y, w, h] in frame pixels")
    angle: StrictServoAngle | None = Field(None, description="servo angle, degrees")
    frame: Count64 | Annotated[str, Field(max_length=256)] | None = Field(
        None, description="frame index, or file name for an image folder"
    )
    track: TrackInfo | None = None
    snapshot: StrictBool = Field(False, description="a JPEG is published on .../snapshot/<id>")
    seq: Seq | None = Field(
        None,
        description="the message's number in the node's outbox, acknowledged by a hub "
        "on .../ack (absent with the node's delivery: broker)",
    )
    outbox_id: OutboxId | None = Field(None, description="the outbox that numbered it (with seq)")
    quiet: StrictBool | None = Field(
        None,
        description="true: observed in the node's quiet hours (stored by the hub, raises no alert); absent otherwise",
    )

    @field_validator("box")
    @classmethod
    def _box_positive(cls, box: tuple[int, ...]) -> tuple[int, ...]:
        if box[2] <= 0 or box[3] <= 0:
            raise ValueError("box width and height must be positive")
        return box

    @model_validator(mode="after")
    def _seq_with_outbox(self) -> Event:
        if (self.seq is None) != (self.outbox_id is None):
            raise ValueError("'seq' and 'outbox_id' go together")
        return self


class ServoState(BaseModel):
    """Servo part of a node's state."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    angle: StrictServoAngle | None = Field(None, description="current angle in degrees; null (or absent) when detached")
    mode: ServoMode
    min_deg: StrictServoAngle
    max_deg: StrictServoAngle


class ScheduleState(BaseModel):
    """Schedule part of a node's state: what its schedule allows now (:class:`shared.schedule.ScheduleStatus`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detect: StrictBool = Field(description="the schedule lets detection run")
    parked: StrictBool = Field(description="outside opening hours: the servo is parked")
    quiet: StrictBool = Field(description="quiet hours: events are marked quiet and raise no alert")
    next_change: UtcTime | None = Field(None, description="when one of the three next changes (absent: not this week)")

    @field_serializer("next_change", when_used="json")
    def _iso(self, value: datetime | None) -> str | None:
        return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")

    @classmethod
    def of(cls, status: ScheduleStatus) -> ScheduleState:
        """The state message part of an evaluated schedule."""
        return cls(**status._asdict())


class NodeState(Message):
    """Retained ``.../state``: what the node is doing now."""

    site: SiteId
    node: NodeId
    ts: UtcTime
    servo: ServoState
    threshold: StrictProbability = Field(description="no-mask probability at or above which a face is no_mask")
    detect: StrictBool = Field(
        description="inference switched on (config, cmd/detect); with a schedule it runs while schedule.detect too"
    )
    model: str = Field(max_length=128, description="classifier model version: <name>@<first 12 digits of sha256>")
    model_sha256: Sha256 | None = Field(None, description="sha256 of the classifier file in use")
    model_error: str | None = Field(
        None,
        max_length=MAX_ERROR_CHARS,
        description="why the last model push was refused or rolled back (cleared by a successful one)",
    )
    profile: Profile = Profile.NEAR
    source: str | None = None
    delivery_error: str | None = Field(None, max_length=MAX_ERROR_CHARS, description="as in stats")
    camera_ok: StrictBool = Field(True, description="as in stats (absent from older nodes: read true)")
    camera_error: str | None = Field(None, max_length=MAX_ERROR_CHARS, description="as in stats")
    schedule: ScheduleState | None = Field(None, description="what the node's schedule allows now (absent: none)")


class NodeStats(Message):
    """Periodic ``.../stats``."""

    site: SiteId
    node: NodeId
    ts: UtcTime
    fps: StrictFloat = Field(ge=0)
    stage_ms: dict[str, StrictFloat] = Field(default_factory=dict, description="mean ms per pipeline stage")
    frames: Count64 = 0
    dropped_frames: Count64 = 0
    outbox_depth: Count64 = Field(0, description="messages in the outbox: not yet acknowledged")
    outbox_dropped: Count64 = 0
    outbox_unacked: Count64 = Field(0, description="outbox messages published, awaiting their acknowledgement")
    outbox_oldest_s: StrictFloat | None = Field(None, ge=0, description="age of the oldest outbox message, seconds")
    hub_online: StrictBool | None = Field(None, description="a hub's presence is online (null with delivery: broker)")
    delivery_error: str | None = Field(
        None,
        max_length=MAX_ERROR_CHARS,
        description="why delivery is stuck (refused publish, subscription or connection), naming the topic",
    )
    events_published: Count64 = 0
    reconnects: Count64 = 0
    uptime_s: StrictFloat = Field(0, ge=0)
    cpu_temp_c: StrictFloat | None = None
    camera_ok: StrictBool = Field(
        True, description="frames are coming: the source is open and gave a frame within camera.stall_timeout_s"
    )
    camera_error: str | None = Field(
        None,
        max_length=MAX_ERROR_CHARS,
        description='why camera_ok is false, e.g. "cannot open camera \'/dev/video0\' ..." or "no frame for 12 s"',
    )
    rejected: dict[str, Count64] = Field(default_factory=dict, description="rejected commands by reason")


class Command(Message):
    """Base of every command on ``.../cmd/<name>``; ``request_id`` is echoed in the answer.

    Each subclass names itself (``name``, the last topic level), says whether the hub may send it
    (``sendable``) and which part of the node's :class:`DesiredConfig` it sets (:meth:`desired_changes`).
    """

    name: ClassVar[str]
    sendable: ClassVar[bool] = True

    request_id: str = Field(min_length=1, max_length=128)

    def desired_changes(self) -> dict[str, Any]:
        """The fields of :class:`DesiredConfig` this command changes (kept by the hub, published retained)."""
        return {}


class ServoCommand(Command):
    """``cmd/servo``: go to ``angle`` (mode becomes ``hold``) or switch ``mode``."""

    name: ClassVar[str] = "servo"

    angle: StrictServoAngle | None = Field(None, description="degrees; clamped to the node's limits")
    mode: ServoMode | None = None
    sweep_min_deg: StrictServoAngle | None = None
    sweep_max_deg: StrictServoAngle | None = None
    sweep_step_deg: StrictFloat | None = Field(None, gt=0, le=90, allow_inf_nan=False)
    dwell_s: StrictFloat | None = Field(None, ge=0, le=60, allow_inf_nan=False)

    @model_validator(mode="after")
    def _angle_or_mode(self) -> ServoCommand:
        if self.angle is None and self.mode is None:
            raise ValueError("give 'angle' or 'mode'")
        if self.angle is not None and self.mode not in (None, ServoMode.HOLD):
            raise ValueError("'angle' goes with mode 'hold' only")
        return self

    def desired_changes(self) -> dict[str, Any]:
        mode = self.mode or (ServoMode.HOLD if self.angle is not None else None)
        changes: dict[str, Any] = {"servo_mode": None if mode is None else mode.value}
        if self.angle is not None:
            changes["servo_angle"] = self.angle
        return changes


class ThresholdCommand(Command):
    """``cmd/threshold``: set the no-mask probability threshold."""

    name: ClassVar[str] = "threshold"

    value: StrictProbability

    def desired_changes(self) -> dict[str, Any]:
        return {"threshold": self.value}


class DetectCommand(Command):
    """``cmd/detect``: pause (``false``) or resume (``true``) inference; the camera stays open."""

    name: ClassVar[str] = "detect"

    enabled: StrictBool

    def desired_changes(self) -> dict[str, Any]:
        return {"detect": self.enabled}


class ScheduleCommand(Command):
    """``cmd/schedule``: replace the node's schedule (a schedule of only a ``timezone`` lifts every restriction)."""

    name: ClassVar[str] = "schedule"

    schedule: Schedule

    def desired_changes(self) -> dict[str, Any]:
        return {"schedule": self.schedule.model_dump(mode="json", exclude_none=True)}


class SnapshotCommand(Command):
    """``cmd/snapshot``: publish a JPEG of the current frame now."""

    name: ClassVar[str] = "snapshot"


class ConfigCommand(Command):
    """``cmd/config``: answer with the effective config, secrets removed (asked by hand, not sent by the hub)."""

    name: ClassVar[str] = "config"
    sendable: ClassVar[bool] = False


class ModelCommand(Command):
    """``cmd/model``: take the classifier file sent in chunks on ``.../model/<sha256>``.

    The node gathers the chunks, checks size and sha256, loads the model, runs a smoke inference on built-in faces,
    swaps it in, and watches its capacity (frames per second of processing) for ``probation_s``; a model that fails
    any step is refused or rolled back, and the answer says why. Sent by ``maskwatch model push``, not by the hub's
    API.
    """

    name: ClassVar[str] = "model"
    sendable: ClassVar[bool] = False

    model: ModelName
    sha256: Sha256
    size: StrictInt = Field(ge=1, le=MAX_MODEL_BYTES, description="file size, bytes")
    transfer_timeout_s: StrictFloat = Field(
        60.0, gt=0, le=3600, allow_inf_nan=False, description="wait for every chunk at most this long"
    )
    probation_s: StrictFloat = Field(
        5.0, ge=0, le=600, allow_inf_nan=False, description="watch the capacity this long after the swap"
    )


#: Every command by its name: the one list of the commands a node understands.
COMMANDS: dict[str, type[Command]] = {
    cls.name: cls
    for cls in (
        ServoCommand,
        ThresholdCommand,
        DetectCommand,
        ScheduleCommand,
        SnapshotCommand,
        ConfigCommand,
        ModelCommand,
    )
}
#: The commands the hub may send, in :data:`COMMANDS` order.
SENDABLE_COMMANDS: tuple[str, ...] = tuple(name for name, cls in COMMANDS.items() if cls.sendable)
#: :data:`SENDABLE_COMMANDS` as an enum (API path parameters, argparse choices).
SendableCommand = StrEnum(  # type: ignore[misc]  # mypy cannot see members derived from COMMANDS
    "SendableCommand", [(name.upper(), name) for name in SENDABLE_COMMANDS]
)


class CommandResponse(Message):
    """``.../response/<name>``: exactly one per command."""

    request_id: str | None = Field(None, description="the command's request_id; null or absent if unreadable")
    status: Literal["ok", "error"]
    site: SiteId
    node: NodeId
    ts: UtcTime
    value: Any = None
    error: str | None = None

    @field_validator("value")
    @classmethod
    def _value_json_safe(cls, value: Any) -> Any:
        return _check_free_value(value)

    @model_validator(mode="after")
    def _error_has_reason(self) -> CommandResponse:
        if self.status == "error" and not self.error:
            raise ValueError("an error response needs 'error'")
        return self


class DesiredConfig(Message):
    """Retained ``.../desired`` from the hub: applied by the node on every connect."""

    threshold: StrictProbability | None = None
    servo_mode: ServoMode | None = None
    servo_angle: StrictServoAngle | None = None
    detect: StrictBool | None = None
    schedule: Schedule | None = None


class Alert(Message):
    """``maskwatch/<site>/alerts``: published by the hub."""

    kind: Literal["no_mask", "node_offline"]
    site: SiteId
    node: NodeId
    ts: UtcTime
    event_id: EventId | None = None
    score: StrictProbability | None = None
    snapshot_url: str | None = None
    message: str | None = None


class NodeSummary(Message):
    """Retained ``.../summary`` from the hub: what a node sees now and its recent compliance.

    Derived from the node's events (for Home Assistant and other subscribers that
    want a state rather than a stream).
    """

    site: SiteId
    node: NodeId
    ts: UtcTime
    faces_in_view: StrictInt = Field(ge=0, description="open events (faces currently tracked)")
    no_mask_in_view: StrictBool = Field(description="at least one open event is labelled no_mask")
    window_s: StrictFloat = Field(gt=0, description="length of the compliance window, seconds")
    faces: StrictInt = Field(ge=0, description="events that started within the window")
    compliance: StrictProbability | None = Field(None, description="share of those faces wearing a mask; null if none")


#: Most ranges one ack carries (a hub sends several acks for a longer list).
MAX_ACK_RANGES = 1000


class Ack(Message):
    """``.../ack`` from a hub: the node's outbox messages it has committed (stored, or recognised as repeats).

    ``seqs`` are inclusive ``[first, last]`` ranges of ``seq`` numbers of the outbox ``outbox_id``;
    ``snapshots`` the event ids whose snapshot was committed. Any hub's ack counts.
    """

    hub: HubId
    ts: UtcTime
    outbox_id: OutboxId | None = None
    seqs: list[tuple[Seq, Seq]] = Field(default_factory=list, max_length=MAX_ACK_RANGES)
    snapshots: list[EventId] = Field(default_factory=list, max_length=MAX_ACK_RANGES)

    @model_validator(mode="after")
    def _ranges(self) -> Ack:
        if self.seqs and self.outbox_id is None:
            raise ValueError("'seqs' need 'outbox_id'")
        if any(first > last for first, last in self.seqs):
            raise ValueError("a range is [first, last] with first <= last")
        return self


def seq_ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges of ``seqs``.

    >>> seq_ranges([5, 1, 2, 3, 7, 6, 10])
    [(1, 3), (5, 7), (10, 10)]
    """
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], payload: bytes | str, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> M:
    """Decode and validate ``payload`` as ``model``.

    Raises :class:`ContractError` with ``reason`` one of ``oversize``, ``json``,
    ``version`` or ``schema`` and ``field`` the dotted path of the first problem.
    """
    if len(payload) > max_bytes:
        raise ContractError(f"payload of {len(payload)} bytes exceeds {max_bytes}", reason="oversize")
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ContractError(f"invalid JSON: {exc}", reason="json") from None
    if not isinstance(data, dict):
        raise ContractError(f"expected a JSON object, got {type(data).__name__}", reason="schema")
    if "v" in data and data["v"] != SCHEMA_VERSION and "v" in model.model_fields:
        raise ContractError(
            f"unsupported schema version v={data['v']!r} (this build speaks v={SCHEMA_VERSION})",
            field="v",
            reason="version",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(p) for p in err["loc"]) or None
        value = err.get("input")
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ContractError(f"{path or 'payload'}: {err['msg']} (got {shown})", field=path, reason="schema") from None
    except RecursionError:
        raise ContractError("payload nested too deeply", reason="schema") from None


#: Every public message by its short name (the stem of its file in ``docs/schemas/``).
MESSAGES: dict[str, type[Message]] = {
    "event": Event,
    "state": NodeState,
    "stats": NodeStats,
    "response": CommandResponse,
    "desired": DesiredConfig,
    "alert": Alert,
    "summary": NodeSummary,
    "ack": Ack,
    **{f"cmd-{name}": cls for name, cls in COMMANDS.items()},
}


def export_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every public message, keyed by its name in :data:`MESSAGES`."""
    return {name: cls.model_json_schema(mode="validation") for name, cls in MESSAGES.items()}
