"""A node's weekly schedule: when it detects, when it is open (servo not parked), and its quiet hours.

A :class:`Schedule` is written in a node's config (``schedule:``) or sent by the hub (``cmd/schedule``, kept in
the retained ``desired`` config). Its windows are wall-clock times of one IANA time zone, so they follow
daylight saving time; a window whose ``end`` is not after its ``start`` runs past midnight into the next day
(its ``days`` name the day it starts). :meth:`Schedule.status` evaluates it at an instant: what is allowed now
and when that next changes.

- ``detect``: windows in which the node runs detection (absent: always);
- ``open``: opening hours; outside them the servo is parked at ``park_deg`` (absent: always open);
- ``quiet``: quiet hours; events observed in them are marked ``quiet`` and raise no alert (absent: none).

Example::

    >>> from datetime import datetime, UTC
    >>> s = Schedule.model_validate({"timezone": "Europe/Berlin",
    ...     "detect": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "07:00", "end": "19:00"}],
    ...     "quiet": [{"start": "22:00", "end": "06:00"}]})
    >>> now = s.status(datetime(2026, 3, 27, 5, 30, tzinfo=UTC))  # a Friday, 06:30 in Berlin
    >>> now.detect, now.parked, now.quiet, now.next_change.isoformat()
    (False, False, False, '2026-03-27T06:00:00+00:00')
    >>> s.status(datetime(2026, 3, 28, 22, 0, tzinfo=UTC)).quiet  # Saturday 23:00
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from typing import Annotated, Literal, NamedTuple, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.vocabulary import StrictServoAngle

#: A day of the week, as a window names it.
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
#: Every day, Monday first (the index is :meth:`datetime.date.weekday`).
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)
#: A wall-clock time ``HH:MM``, 00:00 to 23:59.
ClockTime = Annotated[str, Field(pattern=r"^(?:[01]\d|2[0-3]):[0-5]\d$", description="wall-clock time HH:MM")]
#: A window's end: a :data:`ClockTime` or ``24:00`` (midnight at the end of the day).
EndTime = Annotated[
    str, Field(pattern=r"^(?:(?:[01]\d|2[0-3]):[0-5]\d|24:00)$", description="wall-clock time HH:MM, or 24:00")
]
#: Most windows of one kind in a schedule.
MAX_WINDOWS = 32
#: ``next_change`` is looked for this far ahead (a weekly schedule changes within a week, or never).
HORIZON = timedelta(days=7)


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone this machine knows, else :class:`ValueError` saying so.

    >>> check_timezone("Mars/Olympus")
    Traceback (most recent call last):
    ...
    ValueError: unknown IANA time zone 'Mars/Olympus' (e.g. Europe/Berlin, UTC)
    """
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {name!r} (e.g. Europe/Berlin, UTC)") from None
    return name


def _clock(value: str) -> tuple[time, int]:
    """``HH:MM`` as a time and a day offset (``24:00`` is 00:00 of the next day)."""
    hours, minutes = (int(part) for part in value.split(":"))
    return (time(0, 0), 1) if hours == 24 else (time(hours, minutes), 0)


class Window(BaseModel):
    """One daily window: from ``start`` to ``end`` on each of ``days`` (past midnight when ``end <= start``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: tuple[Weekday, ...] = Field(WEEKDAYS, min_length=1, max_length=7, description="days it starts on")
    start: ClockTime
    end: EndTime

    @field_validator("days")
    @classmethod
    def _distinct(cls, days: tuple[Weekday, ...]) -> tuple[Weekday, ...]:
        if len(set(days)) != len(days):
            raise ValueError("each day at most once")
        return days

    @model_validator(mode="after")
    def _not_empty(self) -> Window:
        if self.start == self.end:
            raise ValueError(f"start and end are both {self.start}: an empty window (a whole day is 00:00 to 24:00)")
        return self

    def spans(self, zone: ZoneInfo, day: date) -> tuple[datetime, datetime] | None:
        """The UTC instants the window starts and ends if it starts on local ``day``, else ``None``.

        A wall time that does not exist (skipped by a DST change) counts as the same time before the change, so
        it lands after the gap; an ambiguous one (repeated) is its first occurrence.
        """
        if WEEKDAYS[day.weekday()] not in self.days:
            return None
        start, _ = _clock(self.start)
        end, next_day = _clock(self.end)
        if not next_day and end <= start:
            next_day = 1
        begins = datetime.combine(day, start, tzinfo=zone).astimezone(UTC)
        ends = datetime.combine(day + timedelta(days=next_day), end, tzinfo=zone).astimezone(UTC)
        return begins, ends


Windows = Annotated[tuple[Window, ...], Field(max_length=MAX_WINDOWS)]


def _days(text: str) -> list[Weekday]:
    """``mon-fri,sun`` as days (ranges may wrap: ``fri-mon``); ``daily`` is every day."""
    if text == "daily":
        return list(WEEKDAYS)
    days: list[Weekday] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ValueError(f"unknown day in {part!r}: use {', '.join(WEEKDAYS)}, ranges like mon-fri, or daily")
        i, j = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        days += [WEEKDAYS[k % 7] for k in range(i, j + 1 if j >= i else j + 8)]
    return list(dict.fromkeys(days))


def window_spec(text: str) -> Window:
    """A window written on the command line: ``[DAYS ]HH:MM-HH:MM`` (days default to every day).

    >>> window_spec("mon-fri 07:00-19:00").days
    ('mon', 'tue', 'wed', 'thu', 'fri')
    >>> window_spec("fri-sun 22:00-02:00").end
    '02:00'
    >>> window_spec("07:00-19:00") == window_spec("daily 07:00-19:00")
    True

    :raises ValueError: saying what is wrong.
    """
    days, _, times = text.strip().rpartition(" ")
    start, sep, end = times.partition("-")
    if not sep or ":" not in times:
        raise ValueError(f"{text!r}: write [DAYS ]HH:MM-HH:MM, e.g. 'mon-fri 07:00-19:00'")
    fields: dict[str, object] = {"start": start, "end": end}
    if days.strip():
        fields["days"] = _days(days.strip())
    try:
        return Window.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{text!r}: {where + ': ' if where else ''}{err['msg']}") from None


class ScheduleStatus(NamedTuple):
    """What a schedule allows at one instant, and when that next changes (``None``: not within a week)."""

    detect: bool
    parked: bool
    quiet: bool
    next_change: datetime | None


#: The status without a schedule: detect, open, not quiet, for good.
UNRESTRICTED = ScheduleStatus(detect=True, parked=False, quiet=False, next_change=None)


class Schedule(BaseModel):
    """A node's weekly schedule (see the module docstring); only ``timezone`` is required, and a schedule of
    just a time zone restricts nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = Field(max_length=64, description="IANA time zone of the windows, e.g. Europe/Berlin")
    detect: Windows | None = Field(None, description="detection runs only in these windows (absent: always)")
    open: Windows | None = Field(None, description="opening hours: outside them the servo is parked (absent: always)")
    quiet: Windows = Field((), description="quiet hours: events are marked quiet and raise no alert")
    park_deg: StrictServoAngle = Field(
        0.0, description="where the servo is parked, degrees (clamped to the node's limits)"
    )

    @field_validator("timezone")
    @classmethod
    def _iana(cls, name: str) -> str:
        return check_timezone(name)

    @cached_property
    def zone(self) -> ZoneInfo:
        """The time zone of the windows."""
        return ZoneInfo(self.timezone)

    def _spans(self, windows: Sequence[Window], now: datetime) -> list[tuple[datetime, datetime]]:
        """Spans of ``windows`` that may cover ``now`` .. ``now + HORIZON`` (from the local day before)."""
        today = now.astimezone(self.zone).date()
        days = (today + timedelta(days=offset) for offset in range(-1, HORIZON.days + 2))
        return [span for day in days for window in windows if (span := window.spans(self.zone, day)) is not None]

    def status(self, now: datetime) -> ScheduleStatus:
        """What the schedule allows at ``now`` (timezone-aware) and when that next changes."""
        now = now.astimezone(UTC)
        kinds = [
            (self.detect is not None, self._spans(self.detect or (), now)),
            (self.open is not None, self._spans(self.open or (), now)),
            (True, self._spans(self.quiet, now)),
        ]

        def at(instant: datetime) -> tuple[bool, bool, bool]:
            detect, opened, quiet = (
                not limited or any(start <= instant < end for start, end in spans) for limited, spans in kinds
            )
            return detect, not opened, quiet

        current = at(now)
        edges = sorted({edge for _, spans in kinds for span in spans for edge in span if now < edge <= now + HORIZON})
        next_change = next((edge for edge in edges if at(edge) != current), None)
        return ScheduleStatus(*current, next_change=next_change)
